"""Event-time windowed aggregates per series: the pure core of the metrics processor."""
from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from datetime import datetime, timedelta, timezone
from typing import Any

from processors.aggregation.dimensions import (
    DIMENSIONS,
    as_dimensions,
    series_key,
    span_dimensions,
    unknown_trace_dimensions,
)
from processors.aggregation.guard import CardinalityGuard
from processors.aggregation.sketch import BinMapping, encode_sketch, quantiles
from processors.aggregation.snapshot import WindowSnapshot

__all__ = ["RESOLUTIONS", "WindowAggregator"]

#: (name, seconds) of each resolution; each divides the next, so every
#: 1-minute window lies in exactly one 1-hour and one 1-day window (UTC days).
RESOLUTIONS: tuple[tuple[str, int], ...] = (("1m", 60), ("1h", 3600), ("1d", 86400))

_EPOCH = datetime(1970, 1, 1, tzinfo=timezone.utc)
_US = timedelta(microseconds=1)
_MINUTE_US = 60_000_000
_QUANTILES = (0.5, 0.9, 0.95, 0.99)
_NEVER = -(1 << 62)  # max event time before the first event
# Raw dimension tuples -> series; cleared when it reaches this size, since
# values folded into "other" can be unbounded (a request id in a dimension).
_RAW_CACHE_MAX = 100_000


def _micros(at: datetime) -> int:
    return (at - _EPOCH) // _US


def _time(us: int) -> datetime:
    return _EPOCH + timedelta(microseconds=us)


class _Series:
    """One series after the cardinality guard; the identity windows are keyed by."""

    __slots__ = ("dims", "last_us", "key")

    def __init__(self, dims: tuple[str, ...]) -> None:
        self.dims = dims
        self.last_us = _NEVER  # latest event time applied; decides expiry
        self.key = ""  # series key, built on first snapshot


class _Acc:
    """Running totals of one window of one series (plain ints; bins by sketch key)."""

    __slots__ = (
        "level", "start", "series", "n", "errors", "zero", "bins", "in_tok", "out_tok", "cached",
        "usage", "cost_nanos", "cost_n", "fb", "rating_sum", "rating_n", "up", "thumbs_n", "late", "dirty",
        "cost_sq", "rating_sq", "lat_sum", "lat_sq",
    )

    def __init__(self, level: int, start: int, series: _Series) -> None:
        self.level = level
        self.start = start
        self.series = series
        self.n = self.errors = self.zero = 0
        self.bins: dict[int, int] = {}
        self.in_tok = self.out_tok = self.cached = self.usage = 0
        self.cost_nanos = self.cost_n = 0
        self.fb = self.rating_n = self.up = self.thumbs_n = self.late = 0
        self.cost_sq = self.lat_sum = self.lat_sq = 0  # nano-dollars^2, us, us^2: exact ints
        self.rating_sum = self.rating_sq = 0.0
        self.dirty = False


class WindowAggregator:
    """Tumbling 1-minute windows with 1-hour and 1-day rollups, per series, in event time.

    Spans are windowed by ``end_time``, feedback by ``time``. Each event
    updates its window at all three resolutions, so a rollup holds exactly
    the sum (and the merged sketch) of its 1-minute windows.

    Parameters
    ----------
    lateness
        Allowed out-of-orderness. The watermark is the latest event time seen
        minus ``lateness``; a window closes once the watermark reaches its
        end. An event whose 1-minute window is closed is late: it is counted
        (``late_events``) and not applied, at any resolution.
    caps
        Distinct values allowed per dimension (overrides :data:`DEFAULT_CAPS`);
        later values fold into ``"other"``.
    relative_accuracy
        Relative accuracy of the latency quantiles (DDSketch alpha).
    cap_ttl
        A value keeps its cap slot while one of its series saw an event within
        this much event time of the watermark (at least one day).
    dimensions
        ``span -> tuple`` of raw values in ``DIMENSIONS`` order
        (default :func:`~processors.aggregation.dimensions.span_dimensions`).
    resolutions
        Names from :data:`RESOLUTIONS` to aggregate (default all three);
        ``("1m",)`` keeps minutes only.

    Examples
    --------
    >>> from datetime import timedelta
    >>> from schemas.samples import sample
    >>> agg = WindowAggregator(lateness=timedelta(minutes=10))
    >>> agg.add_span(sample("span"))
    >>> agg.add_span(sample("span", status="error"))
    >>> [(s.resolution, s.request_count, s.error_count) for s in agg.changed()]
    [('1m', 2, 1), ('1h', 2, 1), ('1d', 2, 1)]
    >>> agg.changed()
    []
    >>> t = sample("span")["end_time"] + timedelta(days=2)
    >>> agg.add_span(sample("span", start_time=t, end_time=t))
    >>> [(s.resolution, s.final) for s in agg.closed()]
    [('1m', True), ('1h', True), ('1d', True)]
    >>> minutes = WindowAggregator(resolutions=("1m",))
    >>> minutes.add_span(sample("span"))
    >>> [s.resolution for s in minutes.changed()], minutes.stats()["open_windows"]
    (['1m'], {'1m': 1})
    """

    def __init__(
        self,
        lateness: timedelta = timedelta(minutes=10),
        caps: Mapping[str, int] | None = None,
        relative_accuracy: float = 0.01,
        *,
        cap_ttl: timedelta = timedelta(days=1),
        dimensions: Callable[[Mapping[str, Any]], tuple[str, ...]] = span_dimensions,
        resolutions: Sequence[str] = tuple(name for name, _ in RESOLUTIONS),
    ) -> None:
        if lateness < timedelta(0):
            raise ValueError(f"lateness must be >= 0, got {lateness}")
        if cap_ttl < timedelta(days=1):
            # A series may only be forgotten once all its windows (1 day the
            # longest) are closed, else a new one could split a window.
            raise ValueError(f"cap_ttl must be at least one day, got {cap_ttl}")
        self.lateness = lateness
        self.guard = CardinalityGuard(caps)
        self.mapping = BinMapping(relative_accuracy)
        self._dimensions = dimensions
        self._lateness_us = lateness // _US
        self._ttl_us = cap_ttl // _US
        # per resolution: (index, width in µs, {window_start_us: {series: acc}})
        unknown = set(resolutions) - {name for name, _ in RESOLUTIONS}
        if unknown or not resolutions:
            raise ValueError(f"resolutions must be some of {[n for n, _ in RESOLUTIONS]}, got {list(resolutions)}")
        # Only the resolutions asked for are kept: the metrics processor
        # emits minutes alone (the store rolls them up), and every level
        # costs a dictionary update per event.
        self._levels: list[tuple[int, int, dict[int, dict[_Series, _Acc]]]] = [
            (level, seconds * 1_000_000, {})
            for level, (name, seconds) in enumerate(RESOLUTIONS) if name in resolutions
        ]
        self._max_us = _NEVER
        self._watermark_us = _NEVER
        self._raw: dict[tuple[str, ...], tuple[_Series, tuple[int, ...]]] = {}
        self._series: dict[tuple[str, ...], _Series] = {}
        self._dirty: list[_Acc] = []
        self._next_sweep_us = _NEVER
        self._counts = {"spans": 0, "feedback": 0, "feedback_unknown_trace": 0, "late_events": 0,
                        "negative_latency": 0, "snapshots": 0, "windows_closed": 0}
        self._folded_events = [0] * len(DIMENSIONS)

    # -- hot path -----------------------------------------------------------

    def add_span(self, span: Mapping[str, Any]) -> None:
        """Add one span (as decoded by :func:`schemas.codec.decode`).

        ``start_time`` and ``end_time`` are datetimes, or integer
        microseconds since the epoch (a projection with ``micros=True``,
        which spares the hot path two datetimes per span).
        An event that raises (bad field types) leaves the aggregator unchanged.
        """
        end = span["end_time"]
        if type(end) is int:
            t = end
            duration_us = end - span["start_time"]
        else:
            t = (end - _EPOCH) // _US
            duration_us = (end - span["start_time"]) // _US
        latency = duration_us / 1000  # ms; exactly timedelta / timedelta(milliseconds=1)
        m = self.mapping
        key = int(math.ceil(math.log(latency, 2) * m.multiplier) + m.offset) if latency > m.min_possible else None
        cost = span.get("cost_usd")
        if cost is not None:
            cost = round(cost * 1e9)  # nano-dollars: exact, order-independent sums
            cost_sq = cost * cost
        # Integer microseconds, like cost in nano-dollars, so the sums and
        # sums of squares are exact whatever order events arrive in. Clock
        # skew (end before start) counts as 0, as in the sketch.
        lat = max(duration_us, 0)
        latency_sq = lat * lat
        in_tok = span.get("input_tokens")
        out_tok = span.get("output_tokens")
        usage = in_tok is not None or out_tok is not None
        if usage:
            in_tok = in_tok or 0
            out_tok = out_tok or 0
            cached = span.get("cache_read_input_tokens") or 0
        error = span["status"] == "error"
        raw = self._dimensions(span)
        entry = self._raw.get(raw)
        if entry is None:
            entry = self._resolve(raw)
        series, folded = entry
        if folded:
            for i in folded:
                self._folded_events[i] += 1
        # Validation is over; from here on the state changes.
        self._counts["spans"] += 1
        if t > self._max_us:
            self._max_us = t
            self._watermark_us = t - self._lateness_us
        if t - t % _MINUTE_US + _MINUTE_US <= self._watermark_us:
            self._count_late(series)
            return
        if key is None and latency < 0:
            self._counts["negative_latency"] += 1
        if t > series.last_us:
            series.last_us = t
        dirty = self._dirty
        for level, width, windows in self._levels:
            start = t - t % width
            bucket = windows.get(start)
            if bucket is None:
                bucket = windows[start] = {}
            acc = bucket.get(series)
            if acc is None:
                acc = bucket[series] = _Acc(level, start, series)
            acc.n += 1
            acc.lat_sum += lat
            acc.lat_sq += latency_sq
            if error:
                acc.errors += 1
            if key is None:
                acc.zero += 1
            else:
                bins = acc.bins
                bins[key] = bins.get(key, 0) + 1
            if usage:
                acc.usage += 1
                acc.in_tok += in_tok
                acc.out_tok += out_tok
                acc.cached += cached
            if cost is not None:
                acc.cost_nanos += cost
                acc.cost_n += 1
                acc.cost_sq += cost_sq
            if not acc.dirty:
                acc.dirty = True
                dirty.append(acc)

    def add_feedback(
        self, feedback: Mapping[str, Any], dims: Mapping[str, str] | Sequence[str] | None = None
    ) -> None:
        """Add one feedback event under the dimensions of its trace.

        Parameters
        ----------
        feedback
            A decoded ``feedback`` record; windowed by its ``time``.
        dims
            Dimensions of the trace the feedback is about (a tuple from
            :meth:`dimensions` or a mapping); None when the trace is unknown:
            the feedback then counts under its project with every other
            dimension ``"unknown"``.

        Examples
        --------
        >>> from schemas.samples import sample
        >>> agg = WindowAggregator()
        >>> agg.add_feedback(sample("feedback"))
        >>> s = agg.changed()[0]
        >>> s.dims["project"], s.dims["model"], s.rating_mean, s.thumbs_up_rate
        ('support-bot', 'unknown', 4.0, 1.0)
        """
        t = (feedback["time"] - _EPOCH) // _US
        rating = feedback.get("rating")
        if rating is not None and not math.isfinite(rating):
            raise ValueError(f"feedback rating must be finite, got {rating!r}")
        thumbs = feedback.get("thumbs")
        project = feedback.get("project") or "unknown"
        raw = unknown_trace_dimensions(project) if dims is None else as_dimensions(dims, project)
        entry = self._raw.get(raw) or self._resolve(raw)
        series, folded = entry
        for i in folded:
            self._folded_events[i] += 1
        self._counts["feedback"] += 1
        if dims is None:
            self._counts["feedback_unknown_trace"] += 1
        if t > self._max_us:
            self._max_us = t
            self._watermark_us = t - self._lateness_us
        if t - t % _MINUTE_US + _MINUTE_US <= self._watermark_us:
            self._count_late(series)
            return
        series.last_us = max(series.last_us, t)
        for acc in self._accs(series, t):
            acc.fb += 1
            if rating is not None:
                acc.rating_sum += rating
                acc.rating_sq += rating * rating
                acc.rating_n += 1
            if thumbs is not None:
                acc.thumbs_n += 1
                if thumbs:
                    acc.up += 1

    def dimensions(self, span: Mapping[str, Any]) -> tuple[str, ...]:
        """Raw dimensions of ``span``, e.g. to remember per trace for feedback.

        >>> from schemas.samples import sample
        >>> WindowAggregator().dimensions(sample("span"))[0]
        'support-bot'
        """
        return self._dimensions(span)

    def advance(self, now: datetime) -> None:
        """Move event time forward to ``now`` without an event (idle input).

        Without events the watermark stands still and windows never close;
        a processor calls this from a timer (e.g. wall clock minus expected
        delay). Never moves time backwards.
        """
        t = _micros(now)
        if t > self._max_us:
            self._max_us = t
            self._watermark_us = t - self._lateness_us

    # -- emitting -----------------------------------------------------------

    def changed(self) -> list[WindowSnapshot]:
        """Snapshots of the open windows changed since the last call; marks them clean.

        Sorted by resolution, window start and series key.
        """
        dirty, self._dirty = self._dirty, []
        out = []
        for acc in dirty:
            if acc.dirty:  # False once closed() emitted and evicted it
                acc.dirty = False
                out.append(self._snapshot(acc, final=False))
        return self._sorted(out)

    def closed(self) -> list[WindowSnapshot]:
        """Final snapshots of windows the watermark has passed; evicts them.

        Every window gets exactly one final snapshot, changed or not, so a
        reader can tell a complete value from a partial one.
        """
        wm = self._watermark_us
        out = []
        for _, width, windows in self._levels:
            for start in [s for s in windows if s + width <= wm]:
                for acc in windows.pop(start).values():
                    acc.dirty = False
                    out.append(self._snapshot(acc, final=True))
        self._counts["windows_closed"] += len(out)
        if wm >= self._next_sweep_us:
            self._sweep(wm)
        return self._sorted(out)

    def flush(self) -> list[WindowSnapshot]:
        """:meth:`closed` then :meth:`changed`: everything to write, each window once."""
        return self.closed() + self.changed()

    def stats(self) -> dict[str, Any]:
        """Counters and gauges for monitoring.

        ``folded_events`` counts events per dimension whose value became
        ``"other"``; ``folded_values`` counts distinct folded values since the
        last cap expiry sweep (saturates at 10,000).

        >>> WindowAggregator().stats()["open_windows"]
        {'1m': 0, '1h': 0, '1d': 0}
        """
        return {
            **self._counts,
            "folded_events": dict(zip(DIMENSIONS, self._folded_events)),
            "folded_values": self.guard.folded_values(),
            "series": len(self._series),
            "open_windows": {
                RESOLUTIONS[level][0]: sum(len(b) for b in windows.values())
                for level, _, windows in self._levels
            },
            "max_event_time": None if self._max_us == _NEVER else _time(self._max_us),
            "watermark": None if self._max_us == _NEVER else _time(self._watermark_us),
        }

    # -- internals ----------------------------------------------------------

    def _accs(self, series: _Series, t: int) -> list[_Acc]:
        """The accumulators of ``series`` at time ``t``, created and marked dirty."""
        out = []
        for level, width, windows in self._levels:
            start = t - t % width
            bucket = windows.setdefault(start, {})
            acc = bucket.get(series)
            if acc is None:
                acc = bucket[series] = _Acc(level, start, series)
            if not acc.dirty:
                acc.dirty = True
                self._dirty.append(acc)
            out.append(acc)
        return out

    def _count_late(self, series: _Series) -> None:
        # Counted in the series' windows that hold the latest event time:
        # those are open, and a dashboard shows when late data arrived.
        self._counts["late_events"] += 1
        t = self._max_us
        series.last_us = max(series.last_us, t)
        for acc in self._accs(series, t):
            acc.late += 1

    def _resolve(self, raw: tuple[str, ...]) -> tuple[_Series, tuple[int, ...]]:
        """Series of a raw dimension tuple, through the cardinality guard (cache miss)."""
        dims, folded = self.guard.fold(raw)
        series = self._series.get(dims)
        if series is None:
            series = self._series[dims] = _Series(dims)
        if len(self._raw) >= _RAW_CACHE_MAX:
            self._raw.clear()
        entry = self._raw[raw] = (series, folded)
        return entry

    def _sweep(self, wm: int) -> None:
        """Forget series idle for ``cap_ttl``; their values free their cap slots."""
        horizon = wm - self._ttl_us
        self._series = {k: s for k, s in self._series.items() if s.last_us > horizon}
        self.guard.reset(self._series)
        self._raw.clear()  # cached fold decisions may change now
        self._next_sweep_us = wm - wm % 3_600_000_000 + 3_600_000_000  # at most hourly

    def _snapshot(self, acc: _Acc, final: bool) -> WindowSnapshot:
        series = acc.series
        if not series.key:
            series.key = series_key(series.dims)
        name, seconds = RESOLUTIONS[acc.level]
        p50, p90, p95, p99 = quantiles(acc.bins, acc.zero, _QUANTILES, self.mapping)
        self._counts["snapshots"] += 1
        return WindowSnapshot(
            resolution=name,
            window_start=_time(acc.start),
            window_seconds=seconds,
            series=series.key,
            dims=dict(zip(DIMENSIONS, series.dims)),
            request_count=acc.n,
            error_count=acc.errors,
            input_tokens=acc.in_tok,
            output_tokens=acc.out_tok,
            cached_tokens=acc.cached,
            usage_count=acc.usage,
            cost_usd=acc.cost_nanos / 1e9,
            cost_count=acc.cost_n,
            feedback_count=acc.fb,
            rating_sum=acc.rating_sum,
            cost_sq_sum=acc.cost_sq / 1e18,
            rating_sq_sum=acc.rating_sq,
            latency_ms_sum=acc.lat_sum / 1e3,
            latency_ms_sq_sum=acc.lat_sq / 1e6,
            rating_count=acc.rating_n,
            thumbs_up=acc.up,
            thumbs_count=acc.thumbs_n,
            late_events=acc.late,
            p50_ms=p50,
            p90_ms=p90,
            p95_ms=p95,
            p99_ms=p99,
            sketch=encode_sketch(acc.bins, acc.zero, self.mapping),
            final=final,
        )

    @staticmethod
    def _sorted(snapshots: list[WindowSnapshot]) -> list[WindowSnapshot]:
        order = {name: i for i, (name, _) in enumerate(RESOLUTIONS)}
        snapshots.sort(key=lambda s: (order[s.resolution], s.window_start, s.series))
        return snapshots
