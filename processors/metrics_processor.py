"""Metrics: spans and feedback into 1-minute partial windows, one set per partition.

Spans and feedback are keyed by trace id, so one series (project, model, ...)
spreads over every partition. Each partition therefore gets its own
:class:`~processors.aggregation.WindowAggregator`; its 1-minute windows leave
as *partials* on ``llm.metric_windows`` (full values, keyed by series), and
the metrics store merges the partials of a window, and rolls minutes up into
hours and days, in the database (:mod:`sinks.metrics_store`).

Restarts stay exact without transactions: on assignment a partition is
re-read from a little before its open windows began (``replay``), and windows
that started before the first message re-read are never emitted, because
they cannot be complete. Everything emitted is a full value, so a replay
rewrites the same rows.

Feedback joins the dimensions of its trace from the spans seen in the same
partition (llm.feedback.enriched and llm.spans.enriched are co-partitioned by trace
id: same key, same partition count). Feedback on a trace this worker has not
seen (or has forgotten, see ``max_traces``) counts under its project with
the other dimensions ``unknown``.
"""
from __future__ import annotations

from collections import OrderedDict
from collections.abc import Mapping
from datetime import UTC, datetime, timedelta
from typing import Any

from processors.aggregation import WindowAggregator
from processors.aggregation.snapshot import WindowSnapshot
from processors.contract import Output
from processors.deadletter import SourceMessage
from processors.topics import FEEDBACK_ENRICHED, METRIC_WINDOWS, SPANS_ENRICHED
from schemas.codec import decode, default_codec, encode
# The fields read (prompt and response text are skipped unread); defined with
# the compiled readers so that this projection is one of them.
from schemas.cyreaders import METRICS_SPAN_FIELDS

_MINUTE_US = 60_000_000
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


def parse_caps(text: str | None) -> dict[str, int] | None:
    """``"model=200,prompt_version=500"`` -> caps per dimension (``LLMPULSE_METRICS_CAPS``).

    >>> parse_caps("model=200, kind=8")
    {'model': 200, 'kind': 8}
    >>> parse_caps(None) is None
    True
    >>> parse_caps("colour=3")
    Traceback (most recent call last):
    ...
    ValueError: LLMPULSE_METRICS_CAPS: unknown dimension 'colour'; known: project, model, provider, prompt_version, kind, cohort, variant
    """
    if not text:
        return None
    from processors.aggregation.dimensions import DIMENSIONS

    caps = {}
    for item in text.split(","):
        name, _, value = item.strip().partition("=")
        if name not in DIMENSIONS:
            raise ValueError(f"LLMPULSE_METRICS_CAPS: unknown dimension {name!r}; known: {', '.join(DIMENSIONS)}")
        if not value.strip().isdigit() or int(value) < 1:
            raise ValueError(f"LLMPULSE_METRICS_CAPS: {name} needs a positive integer, got {value!r}")
        caps[name] = int(value)
    return caps


def window_record(snapshot: WindowSnapshot, partition: int, emitted_at: datetime) -> dict[str, Any]:
    """The ``metric_window`` record of one partial window.

    >>> from schemas.samples import sample
    >>> agg = WindowAggregator()
    >>> agg.add_span(sample("span"))
    >>> rec = window_record(agg.changed()[0], 3, datetime(2026, 1, 1, tzinfo=UTC))
    >>> rec["partition"], rec["request_count"], rec["project"]
    (3, 1, 'support-bot')
    """
    record = {name: getattr(snapshot, name) for name in _SNAPSHOT_FIELDS}
    record.update(snapshot.dims)
    record["partition"] = partition
    record["emitted_at"] = emitted_at
    return record


_SNAPSHOT_FIELDS = (
    "resolution", "window_start", "window_seconds", "series", "request_count", "error_count",
    "input_tokens", "output_tokens", "cached_tokens", "usage_count", "cost_usd", "cost_count",
    "feedback_count", "rating_sum", "rating_count", "thumbs_up", "thumbs_count", "late_events",
    "p50_ms", "p90_ms", "p95_ms", "p99_ms", "sketch", "final",
    "cost_sq_sum", "rating_sq_sum", "latency_ms_sum", "latency_ms_sq_sum",
)


class _Partition:
    """One partition's aggregator, its trace dimensions, and what it may emit."""

    def __init__(self, lateness: timedelta, max_traces: int, caps: Mapping[str, int] | None = None) -> None:
        # Minutes only: hours and days are rolled up from complete minutes in the store.
        self.aggregator = WindowAggregator(lateness=lateness, caps=caps, resolutions=("1m",))
        self.trace_dims: OrderedDict[str, tuple[str, ...]] = OrderedDict()
        self.max_traces = max_traces
        self.emit_from_us = -(2**62)  # windows starting earlier are incomplete (set on replay)
        # Feedback whose trace has not been seen yet, by trace id: (arrival, feedback).
        self.waiting: OrderedDict[str, list[tuple[datetime, dict]]] = OrderedDict()

    def feedback(self, feedback: dict, arrived: datetime, hold: timedelta) -> None:
        """Count feedback under its trace's dimensions, or wait up to ``hold`` for the trace."""
        dims = self.trace_dims.get(feedback["trace_id"])
        if dims is not None or hold <= timedelta(0):
            self.aggregator.add_feedback(feedback, dims)
            return
        self.waiting.setdefault(feedback["trace_id"], []).append((arrived, feedback))
        if len(self.waiting) > self.max_traces:  # bounded: the oldest count as unknown now
            for _, held in self.waiting.popitem(last=False)[1]:
                self.aggregator.add_feedback(held, None)

    def release(self, trace_id: str) -> None:
        """The trace's span arrived: count the feedback that waited for it."""
        held = self.waiting.pop(trace_id, None)
        if held:
            dims = self.trace_dims[trace_id]
            for _, feedback in held:
                self.aggregator.add_feedback(feedback, dims)

    def expire(self, before: datetime) -> None:
        """Feedback that waited since before ``before`` counts under unknown dimensions."""
        while self.waiting:
            trace_id, held = next(iter(self.waiting.items()))
            if held[0][0] >= before:
                return
            del self.waiting[trace_id]
            for _, feedback in held:
                self.aggregator.add_feedback(feedback, None)

    def remember(self, span: dict) -> None:
        trace_id = span["trace_id"]
        # The root span names the trace; until it arrives, the first span does.
        if trace_id in self.trace_dims and span.get("parent_span_id") is not None:
            self.trace_dims.move_to_end(trace_id)
            return
        self.trace_dims[trace_id] = self.aggregator.dimensions(span)
        self.trace_dims.move_to_end(trace_id)
        if len(self.trace_dims) > self.max_traces:
            self.trace_dims.popitem(last=False)


class MetricsProcessor:
    """Aggregate spans and feedback per partition; emit 1-minute partials every tick.

    Examples
    --------
    >>> from schemas.samples import sample
    >>> proc = MetricsProcessor()
    >>> span = sample("span")
    >>> proc.process(SourceMessage("llm.spans.enriched", 0, 0, None, encode("span", span)))
    []
    >>> [out.topic for out in proc.tick()]
    ['llm.metric_windows']
    """

    name = "metrics"
    sources = (SPANS_ENRICHED.name, FEEDBACK_ENRICHED.name)

    def __init__(
        self,
        lateness: timedelta = timedelta(minutes=10),
        clock_skew: timedelta = timedelta(minutes=1),
        max_traces: int = 200_000,
        max_future: timedelta = timedelta(minutes=5),
        now=lambda: datetime.now(UTC),  # noqa: ANN001 - the clock, injectable for tests
        caps: Mapping[str, int] | None = None,
        feedback_hold: timedelta = timedelta(seconds=30),
    ) -> None:
        self.caps = caps
        # Feedback consumed before its trace's spans (they are on another
        # topic) waits this long for them, then counts as "unknown".
        self.feedback_hold = feedback_hold
        self.max_future = max_future
        self._now = now
        self.lateness = lateness
        self.clock_skew = clock_skew
        self.max_traces = max_traces
        self.partitions: dict[int, _Partition] = {}
        self.suppressed = 0
        self._replay_at = datetime.now(UTC)
        # Times as integer microseconds: the aggregator only buckets and subtracts them.
        self._decode_span = default_codec().projection("span", METRICS_SPAN_FIELDS, micros=True)
        # Spans ending after this (µs) may be from the future; re-checked against the clock.
        self._future_us = -(2**62)

    # -- the runtime's hooks ---------------------------------------------

    def on_assign(self, partitions: list[int], now: datetime | None = None) -> None:
        """Fresh state for partitions this worker now owns; the runtime then
        re-reads them from :meth:`replay_from`.

        Every event with a broker timestamp at or after the replay point is
        read again, and an event's timestamp is at or after its window's start
        (a span is produced after it ends) give or take ``clock_skew``; so a
        window starting at or after replay point + skew is rebuilt whole, and
        earlier ones, which cannot be, are never emitted.
        """
        now = now or datetime.now(UTC)
        self._replay_at = now - self.lateness - self.clock_skew - timedelta(minutes=1)
        complete_from_us = (self._replay_at + self.clock_skew - _EPOCH) // timedelta(microseconds=1)
        emit_from_us = -(-complete_from_us // _MINUTE_US) * _MINUTE_US  # next minute boundary
        for p in partitions:
            part = self.partitions[p] = _Partition(self.lateness, self.max_traces, self.caps)
            part.emit_from_us = emit_from_us

    def replay_from(self) -> datetime:
        """Where the partitions of the last :meth:`on_assign` are re-read from (broker time)."""
        return self._replay_at

    def on_revoke(self, partitions: list[int]) -> None:
        """Forget partitions another worker now owns (it replays them)."""
        for p in partitions:
            self.partitions.pop(p, None)

    # -- per message -----------------------------------------------------

    def process(self, message: SourceMessage) -> list[Output]:
        if message.value is None:
            raise ValueError(f"empty message value (tombstone) on {message.topic}")
        part = self.partitions.get(message.partition)
        if part is None:  # a runtime without assignment hooks reads each partition whole
            part = self.partitions[message.partition] = _Partition(self.lateness, self.max_traces, self.caps)
        if message.topic == FEEDBACK_ENRICHED.name:
            feedback = decode(message.value, expected="feedback")
            self._check_not_future(feedback["time"])
            part.feedback(feedback, self._now(), self.feedback_hold)
        else:
            span = self._decode_span(message.value)
            if span["end_time"] > self._future_us:  # the clock is read only when the cached bound is passed
                self._future_us = (self._now() + self.max_future - _EPOCH) // timedelta(microseconds=1)
                self._check_not_future(_EPOCH + timedelta(microseconds=span["end_time"]))
            part.aggregator.add_span(span)
            part.remember(span)
            if part.waiting:
                part.release(span["trace_id"])
        return []

    def _check_not_future(self, at: datetime) -> None:
        # One event from a producer whose clock runs ahead would move the
        # watermark and make every honest event late; it goes to the dead
        # letters instead.
        if at > self._now() + self.max_future:
            raise ValueError(f"event time {at.isoformat()} is more than {self.max_future} in the future")

    def tick(self) -> list[Output]:
        """Emit the 1-minute partials changed or closed since the last tick."""
        now = datetime.now(UTC)
        outputs = []
        expired = self._now() - self.feedback_hold
        for number, part in self.partitions.items():
            part.expire(expired)
            for snapshot in part.aggregator.flush():
                start_us = int(snapshot.window_start.timestamp()) * 1_000_000
                if start_us < part.emit_from_us:
                    self.suppressed += 1
                    continue
                outputs.append(Output(
                    METRIC_WINDOWS.name, snapshot.series.encode(),
                    encode("metric_window", window_record(snapshot, number, now)),
                ))
        return outputs

    def samples(self) -> list[tuple[str, str, dict[str, str], float]]:
        """Counters for Prometheus: late events, folded values, suppressed partials."""
        out = [("llmpulse_metrics_suppressed_partials", "Partial windows not emitted because a replay "
                "could not rebuild them whole.", {}, float(self.suppressed))]
        for number, part in self.partitions.items():
            stats = part.aggregator.stats()
            out.append(("llmpulse_metrics_late_events", "Events whose window had closed (counted, not applied).",
                        {"partition": str(number)}, float(stats.get("late_events", 0))))
            for dim, n in (stats.get("folded_events") or {}).items():
                out.append(("llmpulse_metrics_folded_events", "Events whose dimension value was folded into 'other'.",
                            {"partition": str(number), "dimension": dim}, float(n)))
        return out
