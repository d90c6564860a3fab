"""Which metrics the anomaly processor watches, and how (``processors/data/anomaly.json``).

The shipped file is the default; ``LLMPULSE_ANOMALY_FILE`` names a file that
replaces it whole. The format is in ``docs/anomaly-processor.md``. Every
problem raises :class:`AnomalyConfigError` naming the file, the metric and
the bad key, so a typo stops the worker at start-up instead of silently
watching nothing.
"""
from __future__ import annotations

import json
import math
import os
from dataclasses import dataclass, field, fields, replace
from importlib import resources
from os import PathLike
from pathlib import Path
from typing import Any, Mapping

#: Environment variable naming a config file that replaces the shipped one.
ANOMALY_FILE_ENV = "LLMPULSE_ANOMALY_FILE"

DIRECTIONS = ("up", "down", "both")
EVIDENCE = ("count", "value")
IMPACTS = ("volume", "excess", "delta")


class AnomalyConfigError(ValueError):
    """An anomaly config that cannot be used.

    >>> AnomalyConfig.from_dict({"version": 1, "metrics": {"p95": {"direction": "sideways"}}}, where="x.json")
    Traceback (most recent call last):
    ...
    processors.anomaly.config.AnomalyConfigError: x.json: metrics.p95.direction: must be one of up, down, both, got 'sideways'
    """


@dataclass(frozen=True)
class MetricWatch:
    """How one metric's points are judged.

    Parameters
    ----------
    direction
        Which way is bad: ``up`` (latency, errors, cost), ``down`` (rating,
        volume) or ``both`` (tokens). Departures the other way are scored
        and learned from but never open an episode.
    threshold
        Detector score (0..1, every llmpulse detector puts 0.5 at its
        tolerance) at or above which a point is anomalous.
    min_count
        Evidence guard: a point needs this many events behind it (see
        ``evidence``) to open or extend an episode.
    evidence
        ``count``: the value is a mean, rate or quantile of ``count`` events;
        the guard reads ``count`` and the detector weighs the point by it.
        ``value``: the value is itself a total (requests, tokens); the guard
        reads the larger of the point's count and the series' typical count,
        so a drop to zero on a busy series can alert and a series of three
        requests a minute cannot.
    impact, impact_warning, impact_critical
        Business impact of one anomalous window: ``volume`` = events in it,
        ``excess`` = |observed - expected| x count (extra errors, extra USD),
        ``delta`` = |observed - expected| (missing requests, extra tokens).
        Thresholds in those units; ``None`` = severity from the score alone.
    max_protected
        Anomalous points in a row kept out of the detector's baseline; after
        that it learns again, so a lasting change becomes the new normal.
    aggregate_seconds
        Score sums over windows of this length instead of the published
        minutes (sparse metrics such as ratings); ``None`` = as published.

    >>> MetricWatch().direction, MetricWatch().threshold
    ('both', 0.5)
    """

    direction: str = "both"
    threshold: float = 0.5
    min_count: int = 10
    evidence: str = "count"
    impact: str = "volume"
    impact_warning: float | None = None
    impact_critical: float | None = None
    max_protected: int = 24
    aggregate_seconds: int | None = None


@dataclass(frozen=True)
class EpisodePolicy:
    """When episodes open, update and close.

    ``resolve_after`` normal windows in a row close an episode; while open an
    update is emitted when severity rises or every ``update_every`` anomalous
    windows; nothing opens before ``warmup_hours`` of a series' stream time
    *and* ``warmup_points`` points (cold start); after an ``ensemble-v1``
    episode no ``drift-v1`` episode opens for ``drift_quiet_hours`` (a shift
    the ensemble reported keeps looking like drift until the day's median
    has caught up with it).

    >>> EpisodePolicy().resolve_after
    5
    """

    resolve_after: int = 5
    update_every: int = 15
    warmup_hours: float = 24.0
    warmup_points: int = 120
    drift_quiet_hours: float = 24.0


@dataclass(frozen=True)
class FeedbackPolicy:
    """What a false positive does to its series.

    Each false positive multiplies the detector's margin beyond the normal
    range by ``widen_factor`` (at most ``max_widenings`` times) and keeps the
    series from opening a new episode for ``suppress_minutes`` of stream time.

    >>> FeedbackPolicy().widen_factor
    1.5
    """

    widen_factor: float = 1.5
    max_widenings: int = 4
    suppress_minutes: float = 60.0


@dataclass(frozen=True)
class SeverityPolicy:
    """Score levels: ``warning_score`` and ``critical_score`` (see docs).

    >>> SeverityPolicy().critical_score
    0.9
    """

    warning_score: float = 0.75
    critical_score: float = 0.9


@dataclass(frozen=True)
class AnomalyConfig:
    """The whole anomaly-processor configuration.

    Examples
    --------
    >>> cfg = AnomalyConfig.load()
    >>> cfg.watch("error_rate").direction, cfg.watch("latency_p50_ms") is None
    ('up', True)
    """

    version: int
    metrics: Mapping[str, MetricWatch]
    episodes: EpisodePolicy = EpisodePolicy()
    feedback: FeedbackPolicy = FeedbackPolicy()
    severity: SeverityPolicy = SeverityPolicy()
    period_seconds: float = 86400.0
    source: str = "<config>"
    defaults: MetricWatch = field(default_factory=MetricWatch)

    def watch(self, metric: str) -> MetricWatch | None:
        """How ``metric`` is watched, or ``None`` if it is not."""
        return self.metrics.get(metric)

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> AnomalyConfig:
        """The file named by ``LLMPULSE_ANOMALY_FILE``, else the shipped default.

        >>> AnomalyConfig.from_env({}).source
        'processors/data/anomaly.json'
        """
        path = (os.environ if environ is None else environ).get(ANOMALY_FILE_ENV) or None
        return cls.load(path)

    @classmethod
    def load(cls, path: str | PathLike[str] | None = None) -> AnomalyConfig:
        """Read the shipped default (``path`` None) or a user file.

        >>> AnomalyConfig.load("/nonexistent/anomaly.json")
        Traceback (most recent call last):
        ...
        processors.anomaly.config.AnomalyConfigError: /nonexistent/anomaly.json: cannot read anomaly config: No such file or directory
        """
        if path is None:
            where = "processors/data/anomaly.json"
            res: Any = resources.files("processors").joinpath("data/anomaly.json")
        else:
            where, res = str(path), Path(path)
        try:
            text = res.read_text(encoding="utf-8")
        except OSError as e:
            raise AnomalyConfigError(f"{where}: cannot read anomaly config: {e.strerror or e}") from None
        try:
            doc = json.loads(text)
        except json.JSONDecodeError as e:
            raise AnomalyConfigError(f"{where}: not valid JSON: {e}") from None
        return cls.from_dict(doc, where=where)

    @classmethod
    def from_dict(cls, doc: Any, *, where: str = "<config>") -> AnomalyConfig:
        """Validate an already-parsed document; each metric entry overrides ``defaults``.

        >>> cfg = AnomalyConfig.from_dict({"version": 1, "defaults": {"min_count": 3},
        ...                                "metrics": {"error_rate": {"direction": "up"}}})
        >>> cfg.watch("error_rate").min_count
        3
        """
        if not isinstance(doc, dict):
            raise AnomalyConfigError(f"{where}: the top level must be a JSON object")
        _only(doc, {"version", "notes", "defaults", "metrics", "episodes", "feedback", "severity",
                    "period_seconds"}, where, "")
        version = doc.get("version")
        if not isinstance(version, int) or isinstance(version, bool) or version < 1:
            raise AnomalyConfigError(f"{where}: 'version' is required: an integer >= 1, bumped on every change")
        defaults = _section(MetricWatch(), doc.get("defaults", {}), where, "defaults")
        raw_metrics = doc.get("metrics")
        if not isinstance(raw_metrics, dict) or not raw_metrics:
            raise AnomalyConfigError(f"{where}: 'metrics' is required: an object of metric name -> settings")
        metrics = {name: _section(defaults, spec, where, f"metrics.{name}") for name, spec in raw_metrics.items()}
        period = _number(doc.get("period_seconds", 86400.0), where, "period_seconds", low=60.0)
        return cls(
            version=version,
            metrics=metrics,
            episodes=_section(EpisodePolicy(), doc.get("episodes", {}), where, "episodes"),
            feedback=_section(FeedbackPolicy(), doc.get("feedback", {}), where, "feedback"),
            severity=_section(SeverityPolicy(), doc.get("severity", {}), where, "severity"),
            period_seconds=period,
            source=where,
            defaults=defaults,
        )


# -- validation ------------------------------------------------------------

# key -> (check, message); each check gets the value after the type check.
_RULES: dict[str, tuple[Any, str]] = {
    "direction": (lambda v: v in DIRECTIONS, f"must be one of {', '.join(DIRECTIONS)}"),
    "evidence": (lambda v: v in EVIDENCE, f"must be one of {', '.join(EVIDENCE)}"),
    "impact": (lambda v: v in IMPACTS, f"must be one of {', '.join(IMPACTS)}"),
    "threshold": (lambda v: 0.0 < v < 1.0, "must be a number between 0 and 1 (exclusive)"),
    "min_count": (lambda v: v >= 0, "must be an integer >= 0"),
    "impact_warning": (lambda v: v is None or v > 0, "must be a number > 0 or null"),
    "impact_critical": (lambda v: v is None or v > 0, "must be a number > 0 or null"),
    "max_protected": (lambda v: v >= 0, "must be an integer >= 0"),
    "aggregate_seconds": (lambda v: v is None or v >= 60, "must be an integer >= 60 or null"),
    "resolve_after": (lambda v: v >= 1, "must be an integer >= 1"),
    "update_every": (lambda v: v >= 1, "must be an integer >= 1"),
    "warmup_hours": (lambda v: v >= 0, "must be a number >= 0"),
    "warmup_points": (lambda v: v >= 0, "must be an integer >= 0"),
    "drift_quiet_hours": (lambda v: v >= 0, "must be a number >= 0"),
    "widen_factor": (lambda v: v >= 1.0, "must be a number >= 1"),
    "max_widenings": (lambda v: v >= 0, "must be an integer >= 0"),
    "suppress_minutes": (lambda v: v >= 0, "must be a number >= 0"),
    "warning_score": (lambda v: 0.0 < v < 1.0, "must be a number between 0 and 1 (exclusive)"),
    "critical_score": (lambda v: 0.0 < v < 1.0, "must be a number between 0 and 1 (exclusive)"),
}


def _section(base: Any, spec: Any, where: str, path: str) -> Any:
    if not isinstance(spec, dict):
        raise AnomalyConfigError(f"{where}: {path}: must be a JSON object")
    names = {f.name: f for f in fields(base)}
    _only(spec, set(names), where, path + ".")
    values = {}
    for key, value in spec.items():
        current = getattr(base, key)
        values[key] = _typed(value, current, names[key].type, where, f"{path}.{key}")
        check, message = _RULES[key]
        if not check(values[key]):
            raise AnomalyConfigError(f"{where}: {path}.{key}: {message}, got {value!r}")
    out = replace(base, **values)
    if isinstance(out, MetricWatch) and out.impact_warning and out.impact_critical \
            and out.impact_critical < out.impact_warning:
        raise AnomalyConfigError(f"{where}: {path}: impact_critical must be >= impact_warning")
    if isinstance(out, SeverityPolicy) and out.critical_score < out.warning_score:
        raise AnomalyConfigError(f"{where}: {path}: critical_score must be >= warning_score")
    return out


def _typed(value: Any, current: Any, annotation: str, where: str, path: str) -> Any:
    optional = "None" in str(annotation)
    if value is None:
        if optional:
            return None
        raise AnomalyConfigError(f"{where}: {path}: must not be null")
    if "str" in str(annotation):
        if not isinstance(value, str):
            raise AnomalyConfigError(f"{where}: {path}: must be a string, got {value!r}")
        return value
    if "int" in str(annotation) and "float" not in str(annotation):
        if not isinstance(value, int) or isinstance(value, bool):
            raise AnomalyConfigError(f"{where}: {path}: must be an integer, got {value!r}")
        return value
    return _number(value, where, path)


def _number(value: Any, where: str, path: str, low: float | None = None) -> float:
    if not isinstance(value, (int, float)) or isinstance(value, bool) or not math.isfinite(value):
        raise AnomalyConfigError(f"{where}: {path}: must be a finite number, got {value!r}")
    if low is not None and value < low:
        raise AnomalyConfigError(f"{where}: {path}: must be >= {low:g}, got {value!r}")
    return float(value)


def _only(doc: dict, allowed: set[str], where: str, path: str) -> None:
    unknown = sorted(set(doc) - allowed)
    if unknown:
        raise AnomalyConfigError(
            f"{where}: {path}{unknown[0]}: unknown key (allowed: {', '.join(sorted(allowed))})"
        )
