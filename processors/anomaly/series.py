"""One metric series: its detectors, its open episode, and what feedback did to it.

:class:`SeriesWatch` reads a series' points in time order and returns the
``anomaly`` records to emit. Two detectors watch it, as in the incident
suite: :func:`~processors.anomaly.ensemble.production_detector`
(``ensemble-v1``) and :func:`~processors.anomaly.ensemble.drift_detector`
(``drift-v1``, slow creep), each scored then taught, river-style.

* **open**: a detector's score reaches the series' threshold, the
  departure goes the bad way for the metric, the point has enough events
  behind it, the series is past its warm-up, and no false positive is
  suppressing it;
* **stay open**: the ensemble damps repeats (one incident, one high score),
  so whether an episode goes on is judged apart from the score: a point is
  still anomalous while it lies outside the band frozen at the opening,
  re-centred on what the detector expects *now* (the daily rhythm moves
  on); a drift episode while the drift score stays at the threshold. While
  open, the detectors' baselines do not learn from anomalous points (for up
  to ``max_protected`` in a row: then a lasting change becomes normal);
* **resolve**: after ``resolve_after`` normal windows in a row; points with
  too few events count neither way.

Everything is plain, picklable state: the processor checkpoints it whole.
"""
from __future__ import annotations

import math
from collections import deque
from dataclasses import dataclass
from typing import Any

from processors.anomaly.band import Band, expected_band, level_band
from processors.anomaly.config import AnomalyConfig, MetricWatch
from processors.anomaly.ensemble import drift_detector, production_detector

DETECTORS = ("ensemble-v1", "drift-v1")
SEVERITIES = ("info", "warning", "critical")
_US = 1_000_000
# Enough to recognise a redelivered verdict; verdicts are rare.
_FEEDBACK_MEMORY = 64


@dataclass(frozen=True)
class Point:
    """One window of one series, as scored (possibly aggregated from minutes)."""

    window_us: int
    window_seconds: int
    value: float
    count: int


def widened_threshold(threshold: float, factor: float, times: int) -> float:
    """The threshold after ``times`` false positives.

    A breakout score ``s`` is ``d / (d + tol)``, with ``d`` the distance beyond
    the normal range; ``s >= t`` means ``d >= tol * t / (1 - t)``. Multiplying
    the odds ``t / (1 - t)`` by ``factor`` therefore widens the margin beyond
    the range by ``factor``.

    >>> widened_threshold(0.5, 1.5, 0), widened_threshold(0.5, 1.5, 1), round(widened_threshold(0.5, 2.0, 2), 3)
    (0.5, 0.6, 0.8)
    """
    odds = threshold / (1.0 - threshold) * factor**times
    return odds / (1.0 + odds)


def severity_level(score: float, impact: float, watch: MetricWatch, config: AnomalyConfig) -> int:
    """0 info, 1 warning, 2 critical, from the score and the business impact.

    Without impact thresholds the score decides. With them, critical needs
    impact: a critical impact, or a critical score with a warning impact.

    >>> cfg = AnomalyConfig.load()
    >>> cost = cfg.watch("cost_per_request")
    >>> severity_level(0.95, 0.1, cost, cfg), severity_level(0.95, 1.0, cost, cfg), severity_level(0.6, 9.0, cost, cfg)
    (1, 2, 2)
    """
    policy = config.severity
    by_score = 2 if score >= policy.critical_score else 1 if score >= policy.warning_score else 0
    if watch.impact_warning is None and watch.impact_critical is None:
        return by_score
    crit, warn = watch.impact_critical, watch.impact_warning
    by_impact = 2 if crit is not None and impact >= crit else 1 if warn is not None and impact >= warn else 0
    if by_impact == 2 or (by_score == 2 and by_impact >= 1):
        return 2
    return 1 if max(by_score, by_impact) >= 1 else 0


def impact_of(watch: MetricWatch, observed: float, expected: float, count: int) -> float:
    """Business impact of one anomalous window (units in :class:`MetricWatch`).

    >>> impact_of(MetricWatch(impact="excess"), 0.2, 0.01, 500)
    95.0
    """
    if watch.impact == "volume":
        return float(count)
    gap = abs(observed - expected)
    return gap * count if watch.impact == "excess" else gap


@dataclass
class Episode:
    """An open episode (mutable: it grows while the series stays anomalous)."""

    anomaly_id: str
    detector: int
    started_us: int
    last_us: int
    window_seconds: int
    points: int
    score: float
    severity: int
    observed: float
    expected: float
    lower: float
    upper: float
    count: int
    reach_low: float  # expected - lower at the opening
    reach_high: float  # upper - expected at the opening
    normal_run: int = 0
    since_emit: int = 0


class _Bucket:
    """Sums minutes into ``seconds``-long windows (``aggregate_seconds``)."""

    def __init__(self, seconds: int) -> None:
        self.seconds = seconds
        self.start_us: int | None = None
        self.weighted = self.total = 0.0
        self.count = 0

    def add(self, point: Point, by_count: bool) -> Point | None:
        """Add a point; return the bucket it closed, if any."""
        start = point.window_us - point.window_us % (self.seconds * _US)
        closed = None
        if self.start_us is not None and start != self.start_us:
            closed = self._close(by_count)
        if self.start_us is None or closed is not None:
            self.start_us, self.weighted, self.total, self.count = start, 0.0, 0.0, 0
        self.weighted += point.value * point.count
        self.total += point.value
        self.count += point.count
        return closed

    def _close(self, by_count: bool) -> Point:
        value = self.weighted / self.count if by_count and self.count > 0 else self.total
        return Point(self.start_us, self.seconds, value, self.count)


class SeriesWatch:
    """Detectors and episode state of one (series, metric).

    Examples
    --------
    >>> cfg = AnomalyConfig.load()
    >>> w = SeriesWatch("error_rate{project=p}", "error_rate", {"project": "p"}, cfg, step=60)
    >>> w.observe(Point(0, 60, 0.01, 100), cfg)
    []
    >>> w.points
    1
    """

    def __init__(self, series: str, metric: str, dimensions: dict, config: AnomalyConfig, step: int) -> None:
        self.series = series
        self.metric = metric
        self.dimensions = dict(dimensions)
        self.step = step
        self.detectors = [production_detector(step=step, period=config.period_seconds), drift_detector(step=step)]
        self.protected = [0, 0]
        self.first_us: int | None = None
        self.last_us: int | None = None  # latest published window seen (stale guard)
        self.points = 0
        self.typical_count: float | None = None
        self.episode: Episode | None = None
        self.last_closed: dict | None = None
        self.widenings = 0
        self.suppressed_until_us = -(2**62)
        self.drift_quiet_until_us = -(2**62)
        self.feedback_seen: deque = deque(maxlen=_FEEDBACK_MEMORY)
        watch = config.watch(metric)
        self.bucket = _Bucket(watch.aggregate_seconds) if watch and watch.aggregate_seconds else None

    # -- points ------------------------------------------------------------

    def observe(self, point: Point, config: AnomalyConfig) -> list[dict]:
        """Score, decide, learn; return the ``anomaly`` records to emit (usually none)."""
        watch = config.watch(self.metric)
        if watch is None:
            return []
        self.last_us = point.window_us
        if self.bucket is not None:
            closed = self.bucket.add(point, watch.evidence == "count")
            if closed is None:
                return []
            point = closed
        return self._score(point, watch, config)

    def _score(self, point: Point, watch: MetricWatch, config: AnomalyConfig) -> list[dict]:
        if self.first_us is None:
            self.first_us = point.window_us
        self.points += 1
        x: dict[str, Any] = {"value": point.value, "t": point.window_us / _US}
        if watch.evidence == "count":
            x["count"] = point.count
        threshold = self.threshold(watch, config)
        damped = [d.score_one(x) for d in self.detectors]
        raw = [max(d._last[2]) for d in self.detectors]  # undamped member scores of this x
        flagged = [s >= threshold for s in damped]
        enough = self._enough(point, watch)
        out: list[dict] = []
        anomalous = False
        ep = self.episode
        if ep is None:
            out, anomalous = self._maybe_open(point, x, watch, config, threshold, damped, raw, enough)
        elif enough:
            out, anomalous = self._continue(ep, point, x, watch, config, threshold, raw)
        self._learn(x, watch, flagged, anomalous)
        self._learn_count(point)
        return out

    def _enough(self, point: Point, watch: MetricWatch) -> bool:
        if watch.evidence == "count":
            return point.count >= watch.min_count
        return max(point.count, self.typical_count or 0.0) >= watch.min_count

    def _warm(self, point: Point, config: AnomalyConfig) -> bool:
        policy = config.episodes
        age_us = point.window_us - (self.first_us or point.window_us)
        return self.points > policy.warmup_points and age_us >= policy.warmup_hours * 3600 * _US

    def _maybe_open(self, point, x, watch, config, threshold, damped, raw, enough) -> tuple[list[dict], bool]:
        if not (enough and self._warm(point, config) and point.window_us >= self.suppressed_until_us):
            return [], False
        for k, det in enumerate(self.detectors):
            if damped[k] < threshold or (k == 1 and point.window_us < self.drift_quiet_until_us):
                continue
            band = expected_band(det, x, threshold) if k == 0 else level_band(det, threshold)
            if band is None or not self._bad_way(watch, k, point.value, band):
                continue
            score = raw[k]
            level = severity_level(score, impact_of(watch, point.value, band.expected, point.count), watch, config)
            started_s = point.window_us // _US
            self.episode = Episode(
                anomaly_id=f"{self.series}|{self.metric}|{started_s}", detector=k,
                started_us=point.window_us, last_us=point.window_us, window_seconds=point.window_seconds,
                points=1, score=score, severity=level, observed=point.value, expected=band.expected,
                lower=band.lower, upper=band.upper, count=point.count,
                reach_low=max(band.expected - band.lower, 0.0), reach_high=max(band.upper - band.expected, 0.0),
            )
            return [self._record("open")], True
        return [], False

    def _bad_way(self, watch: MetricWatch, k: int, value: float, band: Band) -> bool:
        if watch.direction == "both":
            return True
        if k == 1:
            # The drift statistic is (last hour's mean - the day's median): its sign is the direction.
            member = self.detectors[1].detectors[0]
            pending = member._pending
            up = pending is not None and pending[1] is not None and pending[1] > 0.0
        elif value > band.upper or value < band.lower:
            up = value > band.upper
        else:
            up = value > band.expected
        return up == (watch.direction == "up")

    def _continue(self, ep: Episode, point, x, watch, config, threshold, raw) -> tuple[list[dict], bool]:
        if ep.detector == 1:
            band = level_band(self.detectors[1], threshold)
            outside = raw[1] >= threshold and band is not None and self._bad_way(watch, 1, point.value, band)
        else:
            live = expected_band(self.detectors[0], x, threshold)
            centre = live.expected if live is not None else ep.expected
            band = Band(centre, centre - ep.reach_low, centre + ep.reach_high)
            outside = (point.value > band.upper or point.value < band.lower) and self._bad_way(
                watch, 0, point.value, band)
        if not outside:
            ep.normal_run += 1
            if ep.normal_run >= config.episodes.resolve_after:
                return [self._close("resolved", config)], False
            return [], False
        score = raw[ep.detector]
        level = severity_level(score, impact_of(watch, point.value, band.expected, point.count), watch, config)
        ep.normal_run = 0
        ep.points += 1
        ep.since_emit += 1
        ep.last_us, ep.window_seconds = point.window_us, point.window_seconds
        ep.observed, ep.expected, ep.lower, ep.upper, ep.count = (
            point.value, band.expected, band.lower, band.upper, point.count)
        ep.score = max(ep.score, score)
        rose = level > ep.severity
        ep.severity = max(ep.severity, level)
        if rose or ep.since_emit >= config.episodes.update_every:
            ep.since_emit = 0
            return [self._record("open")], True
        return [], True

    def _learn(self, x: dict, watch: MetricWatch, flagged: list[bool], anomalous: bool) -> None:
        # A point the detector flagged, or one inside an open episode, joins
        # the ranges but not the baselines: an incident must not become what
        # the series is compared with - until it lasts max_protected points.
        for k, det in enumerate(self.detectors):
            protect = flagged[k] or anomalous
            if protect and self.protected[k] < watch.max_protected:
                self.protected[k] += 1
                det.learn_flagged(x)
                continue
            # Past max_protected the change is learned for as long as it
            # lasts; a normal-looking point inside an episode (noise) does
            # not restart the count, or a lasting shift would never be learned.
            det.learn_one(x)
            if not protect and self.episode is None:
                self.protected[k] = 0

    def _learn_count(self, point: Point) -> None:
        n = self.typical_count
        c = float(point.count)
        self.typical_count = c if n is None else n + 0.01 * (c - n)

    # -- feedback ----------------------------------------------------------

    def threshold(self, watch: MetricWatch, config: AnomalyConfig) -> float:
        """The series' threshold: the metric's, widened by its false positives."""
        return widened_threshold(watch.threshold, config.feedback.widen_factor, self.widenings)

    def false_positive(self, anomaly_id: str, config: AnomalyConfig) -> list[dict]:
        """Apply a false-positive verdict once: close, suppress, widen.

        Closes the open episode (or re-marks the last closed one) when it is
        the one the verdict names; either way the series' threshold widens
        and it opens nothing new for ``suppress_minutes`` of its stream time.
        A redelivered verdict (same ``anomaly_id``) changes nothing.
        """
        if anomaly_id in self.feedback_seen:
            return []
        self.feedback_seen.append(anomaly_id)
        policy = config.feedback
        self.widenings = min(self.widenings + 1, policy.max_widenings)
        if self.last_us is not None:
            until = self.last_us + int(policy.suppress_minutes * 60 * _US)
            self.suppressed_until_us = max(self.suppressed_until_us, until)
        if self.episode is not None and self.episode.anomaly_id == anomaly_id:
            return [self._close("false_positive", config)]
        if self.last_closed is not None and self.last_closed["anomaly_id"] == anomaly_id \
                and self.last_closed["status"] != "false_positive":
            self.last_closed = {**self.last_closed, "status": "false_positive"}
            return [dict(self.last_closed)]
        return []

    # -- records -----------------------------------------------------------

    def _close(self, status: str, config: AnomalyConfig) -> dict:
        record = self._record(status)
        ep = self.episode
        if ep is not None and ep.detector == 0:
            # A lasting shift that the ensemble saw and then accepted still
            # looks like drift until the day's median has caught up with it:
            # that is the same incident, not a new one.
            quiet = ep.last_us + int(config.episodes.drift_quiet_hours * 3600 * _US)
            self.drift_quiet_until_us = max(self.drift_quiet_until_us, quiet)
        self.last_closed = record
        self.episode = None
        return dict(record)

    def _record(self, status: str) -> dict:
        ep = self.episode
        assert ep is not None
        closed = status != "open"
        return {
            "anomaly_id": ep.anomaly_id,
            "series": self.series,
            "metric": self.metric,
            "dimensions": dict(self.dimensions),
            "status": status,
            "severity": SEVERITIES[ep.severity],
            "score": float(ep.score),
            "observed": float(ep.observed),
            "expected": float(ep.expected),
            # llmpulse metrics are never negative: a band below zero says "any low value".
            "lower": max(_finite(ep.lower), 0.0) if ep.expected >= 0.0 else _finite(ep.lower),
            "upper": _finite(ep.upper),
            "count": int(ep.count),
            "window_start": ep.last_us,
            "window_seconds": ep.window_seconds,
            "started_at": ep.started_us,
            "ended_at": ep.last_us + ep.window_seconds * _US if closed else None,
            "points": ep.points,
            "detector": DETECTORS[ep.detector],
        }

    @property
    def open(self) -> bool:
        """Whether an episode is open."""
        return self.episode is not None


def _finite(v: float) -> float:
    # Avro doubles take infinities, but JSON consumers and the database do not.
    return float(v) if math.isfinite(v) else float(math.copysign(1e308, v))
