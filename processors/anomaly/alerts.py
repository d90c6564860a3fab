"""From scores to alerts: thresholds per metric, kept apart from the detectors.

:class:`AlertFilter` is a river ``AnomalyFilter``: ``classify(score)`` is the
threshold, and with ``protect_anomaly_detector`` the detector does not learn
from points it flagged, so an incident does not teach it that incidents are
normal. Two things river's filters lack, and metric series need:

* a series that moved for good (a model swap tripled the cost) must become
  the new normal: after ``max_protected`` flagged points in a row the
  detector learns again;
* an alert needs enough events behind it (``min_count``) and one incident
  should page once (``cooldown``).
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Mapping

from river import base

from processors.anomaly.detectors import COUNT


@dataclass(frozen=True)
class AlertRule:
    """How one metric's scores become alerts.

    Parameters
    ----------
    threshold
        Score at or above which a point is anomalous. Every llmpulse detector
        puts its own alert level at 0.5; on NAB the best corpus-wide threshold
        for the production ensemble is close to it.
    min_count
        Points aggregating fewer events never alert (they are still scored).
    cooldown
        Unflagged points in a row that close an open alert. While an alert
        is open no new one is raised: an incident pages once, however long
        it lasts, and again only after it has been quiet for ``cooldown``.
    max_protected
        Flagged points in a row the detector is kept from learning; after
        that it learns again, so a lasting change becomes the new normal.

    >>> AlertRule(threshold=0.6).threshold
    0.6
    """

    threshold: float = 0.5
    min_count: int = 0
    cooldown: int = 12
    max_protected: int = 24
    protect: bool = True


@dataclass(frozen=True)
class MetricRules:
    """Alert rules per metric name, with a default.

    >>> rules = MetricRules(per_metric={"rating": AlertRule(min_count=5)})
    >>> rules.for_metric("rating").min_count, rules.for_metric("latency_ms").min_count
    (5, 0)
    """

    default: AlertRule = AlertRule()
    per_metric: Mapping[str, AlertRule] = field(default_factory=dict)

    def for_metric(self, metric: str) -> AlertRule:
        return self.per_metric.get(metric, self.default)


# A mean, rate or quantile over a handful of events is noise: by default a
# point needs 10 events behind it to page anyone. Count metrics (requests)
# carry no "count" and are their own evidence. Set thresholds per metric by
# adding entries to per_metric.
DEFAULT_RULES = MetricRules(default=AlertRule(min_count=10))


@dataclass(frozen=True)
class Verdict:
    """What :meth:`AlertFilter.update` decided for one point."""

    score: float
    flagged: bool  # score >= threshold
    alert: bool  # flagged, enough events, and not cooling down
    learned: bool  # whether the detector learned from the point


class AlertFilter(base.AnomalyFilter):
    """Threshold a detector's scores into alerts, protecting it from what it flags.

    Parameters
    ----------
    anomaly_detector
        Any river anomaly detector.
    threshold, min_count, cooldown, max_protected
        As in :class:`AlertRule`.
    protect_anomaly_detector
        Do not learn from flagged points (up to ``max_protected`` in a row).

    Examples
    --------
    >>> from processors.anomaly.detectors import RangeBreakout
    >>> f = AlertFilter(RangeBreakout(grace=3), threshold=0.5, cooldown=2)
    >>> for v in (10.0, 11.0, 10.5, 10.2):
    ...     _ = f.update({"value": v})
    >>> [f.update({"value": v}).alert for v in (30.0, 31.0, 10.4)]
    [True, False, False]
    """

    def __init__(
        self,
        anomaly_detector: base.AnomalyDetector,
        threshold: float = 0.5,
        protect_anomaly_detector: bool = True,
        min_count: int = 0,
        cooldown: int = 12,
        max_protected: int = 24,
    ) -> None:
        super().__init__(anomaly_detector, protect_anomaly_detector)
        self.threshold = threshold
        self.min_count = min_count
        self.cooldown = cooldown
        self.max_protected = max_protected
        self._protected_run = 0
        self._quiet: int | None = None  # unflagged points since the open alert; None = none open
        self._last: tuple | None = None

    @classmethod
    def from_rule(cls, anomaly_detector: base.AnomalyDetector, rule: AlertRule) -> "AlertFilter":
        """Build from an :class:`AlertRule`."""
        return cls(
            anomaly_detector,
            threshold=rule.threshold,
            min_count=rule.min_count,
            cooldown=rule.cooldown,
            max_protected=rule.max_protected,
            protect_anomaly_detector=rule.protect,
        )

    def classify(self, score: float) -> bool:
        return score >= self.threshold

    def score_one(self, x: dict) -> float:
        score = self.anomaly_detector.score_one(x)
        self._last = (x, score)
        return score

    def learn_one(self, x: dict) -> None:
        # river's AnomalyFilter scores again here; reuse the score of this x.
        last, self._last = self._last, None
        score = last[1] if last is not None and last[0] is x else self.anomaly_detector.score_one(x)
        self._learn(x, self.classify(score))

    def _learn(self, x: dict, flagged: bool) -> bool:
        if flagged and self.protect_anomaly_detector and self._protected_run < self.max_protected:
            self._protected_run += 1
            # llmpulse detectors can learn a flagged point partly (its range,
            # not its baseline); any other river detector skips it.
            learn_flagged = getattr(self.anomaly_detector, "learn_flagged", None)
            if learn_flagged is not None:
                learn_flagged(x)
            return False
        self._protected_run = 0
        self.anomaly_detector.learn_one(x)
        return True

    def update(self, x: dict) -> Verdict:
        """Score ``x``, decide whether to alert, then learn (or not) from it."""
        score = self.anomaly_detector.score_one(x)
        flagged = self.classify(score)
        count = x.get(COUNT)
        enough = count is None or count >= self.min_count
        alert = False
        if flagged and enough:
            alert = self._quiet is None
            self._quiet = 0
        elif self._quiet is not None:
            self._quiet += 1
            if self._quiet >= self.cooldown:
                self._quiet = None
        learned = self._learn(x, flagged)
        return Verdict(score, flagged, alert, learned)

    @property
    def alert_open(self) -> bool:
        """Whether an alert is open (raised and not yet quiet for ``cooldown`` points)."""
        return self._quiet is not None

    def __getstate__(self) -> dict:
        state = self.__dict__.copy()
        state["_last"] = None
        return state
