"""Streaming anomaly detection for metric series.

Detectors follow river's contract (``score_one(x)`` then ``learn_one(x)``,
higher is more anomalous, scores in ``[0, 1)`` with the alert level at 0.5);
:class:`AlertFilter` turns scores into alerts. See ``docs/anomaly-detection.md``.

>>> det = AlertFilter(production_detector())
>>> det.update({"value": 1.0, "t": 0.0, "count": 10}).alert
False
"""
from processors.anomaly.alerts import DEFAULT_RULES, AlertFilter, AlertRule, MetricRules, Verdict
from processors.anomaly.detectors import CUSUM, EWMAZ, LocalDeviation, RangeBreakout, SeasonalBaseline
from processors.anomaly.ensemble import Ensemble, drift_detector, production_detector

__all__ = [
    "CUSUM",
    "DEFAULT_RULES",
    "EWMAZ",
    "AlertFilter",
    "AlertRule",
    "Ensemble",
    "LocalDeviation",
    "MetricRules",
    "RangeBreakout",
    "SeasonalBaseline",
    "Verdict",
    "drift_detector",
    "production_detector",
]
