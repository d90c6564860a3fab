"""Windowed metrics per series: the pure core of the metrics processor.

Spans and feedback go in (:class:`WindowAggregator`); full-value window
snapshots come out (:class:`WindowSnapshot`), ready for idempotent upserts
and, via :meth:`WindowSnapshot.metric_points`, for the ``llm.metrics`` topic.
No I/O here: a stream agent wraps it. See ``docs/metrics.md``.

>>> from schemas.samples import sample
>>> agg = WindowAggregator()
>>> agg.add_span(sample("span"))
>>> len(agg.changed())
3
"""
from processors.aggregation.aggregator import RESOLUTIONS, WindowAggregator
from processors.aggregation.dimensions import (
    DEFAULT_CAPS,
    DIMENSIONS,
    metric_series_key,
    series_key,
    span_dimensions,
)
from processors.aggregation.sketch import decode_sketch, merge_sketches
from processors.aggregation.snapshot import METRICS, WindowSnapshot

__all__ = [
    "DEFAULT_CAPS",
    "DIMENSIONS",
    "METRICS",
    "RESOLUTIONS",
    "WindowAggregator",
    "WindowSnapshot",
    "decode_sketch",
    "merge_sketches",
    "metric_series_key",
    "series_key",
    "span_dimensions",
]
