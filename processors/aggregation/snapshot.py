"""The full current value of one window of one series, and its metric points."""
from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from processors.aggregation.dimensions import metric_series_key

__all__ = ["METRICS", "WindowSnapshot"]

#: Metric names :meth:`WindowSnapshot.metric_points` can emit, in emit order.
#: Names follow the ones experiments already use (``latency_p95_ms``,
#: ``rating_mean``, ``thumbs_up_rate``, ``cost_usd``).
METRICS: tuple[str, ...] = (
    "request_count",
    "error_rate",
    "latency_p50_ms",
    "latency_p90_ms",
    "latency_p95_ms",
    "latency_p99_ms",
    "cost_usd",
    "cost_per_request",
    "input_tokens",
    "output_tokens",
    "cached_tokens",
    "feedback_count",
    "rating_mean",
    "thumbs_up_rate",
    "late_events",
)


@dataclass(frozen=True, slots=True)
class WindowSnapshot:
    """Full current value of one window of one series (not a delta).

    Writing a snapshot is an idempotent upsert on ``(resolution, series,
    window_start)``: a later snapshot of the same window replaces an earlier
    one. ``final`` is True on the last snapshot of a window, emitted when the
    watermark closes it.

    Attributes
    ----------
    resolution
        ``"1m"``, ``"1h"`` or ``"1d"``.
    window_start
        Start of the tumbling window (UTC, inclusive).
    window_seconds
        Window length; the window ends (exclusive) at ``window_start + window_seconds``.
    series
        Series key, ``project=...|model=...|...`` (see :func:`~processors.aggregation.dimensions.series_key`).
    dims
        Dimension name -> value (after the cardinality guard).
    request_count, error_count
        Spans, and spans with status ``error``.
    input_tokens, output_tokens, cached_tokens
        Token sums (``cached_tokens`` = cache-read input tokens).
    usage_count
        Spans that reported token usage.
    cost_usd, cost_count
        Sum of known span costs (exact to 1e-9 USD), and how many spans had one.
    feedback_count, rating_sum, rating_count, thumbs_up, thumbs_count
        Feedback events; rating sum and count; thumbs-up votes and all thumbs votes.
    late_events
        Events of this series that arrived in this window after their own
        window had closed (counted here, never applied there).
    p50_ms, p90_ms, p95_ms, p99_ms
        Span latency quantiles (end - start) from the sketch; None without spans.
    sketch
        The latency DDSketch, serialized (``DDSketch`` protobuf message).
    final
        True when the window is closed and this is its last snapshot.

    Examples
    --------
    >>> from processors.aggregation import WindowAggregator
    >>> from schemas.samples import sample
    >>> agg = WindowAggregator()
    >>> agg.add_span(sample("span"))
    >>> snap = agg.changed()[0]
    >>> snap.resolution, snap.request_count, snap.error_rate
    ('1m', 1, 0.0)
    >>> abs(snap.p50_ms - 1482.731) / 1482.731 <= 0.01
    True
    """

    resolution: str
    window_start: datetime
    window_seconds: int
    series: str
    dims: Mapping[str, str]
    request_count: int
    error_count: int
    input_tokens: int
    output_tokens: int
    cached_tokens: int
    usage_count: int
    cost_usd: float
    cost_count: int
    feedback_count: int
    rating_sum: float
    rating_count: int
    thumbs_up: int
    thumbs_count: int
    late_events: int
    p50_ms: float | None
    p90_ms: float | None
    p95_ms: float | None
    p99_ms: float | None
    sketch: bytes
    final: bool = False
    #: Sums of squares (and the latency sum) behind means with a variance:
    #: cost per costed span, rating per rating, latency per span.
    cost_sq_sum: float = 0.0
    rating_sq_sum: float = 0.0
    latency_ms_sum: float = 0.0
    latency_ms_sq_sum: float = 0.0

    @property
    def error_rate(self) -> float | None:
        """Errors per span; None without spans."""
        return self.error_count / self.request_count if self.request_count else None

    @property
    def cost_per_request(self) -> float | None:
        """Mean cost of the spans whose cost is known; None when none is."""
        return self.cost_usd / self.cost_count if self.cost_count else None

    @property
    def rating_mean(self) -> float | None:
        """Mean rating (1..5); None without ratings."""
        return self.rating_sum / self.rating_count if self.rating_count else None

    @property
    def thumbs_up_rate(self) -> float | None:
        """Share of thumbs votes that are up; None without votes."""
        return self.thumbs_up / self.thumbs_count if self.thumbs_count else None

    def metric_points(self) -> list[dict[str, Any]]:
        """One ``metric_point`` record per metric that is defined for this window.

        A metric is left out when it has no data (no spans: no latency or
        error rate; no ratings: no ``rating_mean``; ...), so detectors never
        learn from placeholder zeros. ``count`` is how many events the value
        aggregates. Names are in :data:`METRICS`.

        Examples
        --------
        >>> from processors.aggregation import WindowAggregator
        >>> from schemas.codec import encode
        >>> from schemas.samples import sample
        >>> agg = WindowAggregator()
        >>> agg.add_span(sample("span"))
        >>> points = agg.changed()[0].metric_points()
        >>> [p["metric"] for p in points][:3]
        ['request_count', 'error_rate', 'latency_p50_ms']
        >>> points[0]["series"].split(",")[0]
        'request_count{cohort=unknown'
        >>> all(encode("metric_point", p) for p in points)
        True
        """
        rows: list[tuple[str, float, int]] = []
        n = self.request_count
        if n:
            rows.append(("request_count", n, n))
            rows.append(("error_rate", self.error_count / n, n))
            for name, value in (
                ("latency_p50_ms", self.p50_ms),
                ("latency_p90_ms", self.p90_ms),
                ("latency_p95_ms", self.p95_ms),
                ("latency_p99_ms", self.p99_ms),
            ):
                rows.append((name, value, n))
        if self.cost_count:
            rows.append(("cost_usd", self.cost_usd, self.cost_count))
            rows.append(("cost_per_request", self.cost_usd / self.cost_count, self.cost_count))
        if self.usage_count:
            rows.append(("input_tokens", self.input_tokens, self.usage_count))
            rows.append(("output_tokens", self.output_tokens, self.usage_count))
            rows.append(("cached_tokens", self.cached_tokens, self.usage_count))
        if self.feedback_count:
            rows.append(("feedback_count", self.feedback_count, self.feedback_count))
        if self.rating_count:
            rows.append(("rating_mean", self.rating_sum / self.rating_count, self.rating_count))
        if self.thumbs_count:
            rows.append(("thumbs_up_rate", self.thumbs_up / self.thumbs_count, self.thumbs_count))
        if self.late_events:
            rows.append(("late_events", self.late_events, self.late_events))
        dims = dict(self.dims)
        return [
            {
                "series": metric_series_key(metric, dims),
                "metric": metric,
                "dimensions": dict(dims),
                "window_start": self.window_start,
                "window_seconds": self.window_seconds,
                "value": float(value),
                "count": count,
            }
            for metric, value, count in rows
        ]
