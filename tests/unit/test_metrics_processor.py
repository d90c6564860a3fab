from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from processors.deadletter import SourceMessage
from processors.metrics_processor import MetricsProcessor
from schemas.codec import SerializationError, decode, encode
from schemas.samples import sample

SPAN = sample("span")
T = SPAN["end_time"]



def _span_msg(partition: int, minute: int, *, trace: str = "a" * 32, **fields):
    end = T + timedelta(minutes=minute)
    span = {**SPAN, "trace_id": trace, "start_time": end - timedelta(milliseconds=500), "end_time": end, **fields}
    return SourceMessage("llm.spans.enriched", partition, 0, None, encode("span", span))


def _records(outputs) -> list[dict]:
    return [decode(o.value, expected="metric_window") for o in outputs]


def test_each_partition_emits_its_own_partial_minute_windows() -> None:
    proc = MetricsProcessor(clock_skew=timedelta(0))
    proc.process(_span_msg(0, 0))  # no assignment hook: each partition is read whole
    proc.process(_span_msg(0, 0))
    proc.process(_span_msg(1, 0))
    records = _records(proc.tick())
    assert {r["resolution"] for r in records} == {"1m"}  # hours and days are rolled up downstream
    assert sorted((r["partition"], r["request_count"]) for r in records) == [(0, 2), (1, 1)]
    assert records[0]["series"] == records[1]["series"]
    assert proc.tick() == []  # nothing changed since


def test_windows_older_than_the_replay_start_are_never_emitted() -> None:
    lateness, skew = timedelta(minutes=10), timedelta(seconds=5)
    proc = MetricsProcessor(lateness=lateness, clock_skew=skew)
    # Assigned so that the replay starts in the middle of minute 0's window.
    minute0 = T.replace(second=0, microsecond=0)
    proc.on_assign([0], now=minute0 + timedelta(seconds=30) + lateness + timedelta(minutes=1))
    assert proc.replay_from() + skew == minute0 + timedelta(seconds=30)
    proc.process(_span_msg(0, 0))  # minute 0 cannot have been read whole
    proc.process(_span_msg(0, 1))
    records = _records(proc.tick())
    assert {r["window_start"] for r in records} == {minute0 + timedelta(minutes=1)}
    assert proc.suppressed == 1


def test_feedback_joins_its_traces_dimensions_in_the_same_partition() -> None:
    proc = MetricsProcessor(clock_skew=timedelta(0), feedback_hold=timedelta(0))
    proc.process(_span_msg(0, 0, trace="b" * 32, parent_span_id=None))
    fb = {**sample("feedback"), "trace_id": "b" * 32, "time": T + timedelta(seconds=5), "rating": 4.0}
    proc.process(SourceMessage("llm.feedback.enriched", 0, 1, None, encode("feedback", fb)))
    unknown = {**fb, "trace_id": "c" * 32}
    proc.process(SourceMessage("llm.feedback.enriched", 0, 2, None, encode("feedback", unknown)))
    records = {r["model"]: r for r in _records(proc.tick())}
    joined = records[SPAN["response_model"]]
    assert (joined["request_count"], joined["feedback_count"], joined["rating_sum"]) == (1, 1, 4.0)
    assert records["unknown"]["feedback_count"] == 1 and records["unknown"]["project"] == fb["project"]


def test_revoked_partitions_are_forgotten() -> None:
    proc = MetricsProcessor()
    proc.on_assign([0, 1])
    proc.process(_span_msg(1, 0))
    proc.on_revoke([1])
    assert set(proc.partitions) == {0}


def test_bad_input_raises_for_the_dead_letter_path() -> None:
    with pytest.raises(SerializationError):
        MetricsProcessor().process(SourceMessage("llm.spans.enriched", 0, 0, None, b"junk"))


def test_events_from_the_future_are_refused_not_allowed_to_move_the_watermark() -> None:
    proc = MetricsProcessor(now=lambda: T)
    with pytest.raises(ValueError, match="in the future"):
        proc.process(_span_msg(0, 10))  # ten minutes ahead of the clock
    proc.process(_span_msg(0, 0))
    [record] = [r for r in _records(proc.tick())]
    assert record["request_count"] == 1 and record["late_events"] == 0


def test_feedback_read_before_its_trace_waits_for_it_then_counts_as_unknown() -> None:
    clock = [datetime.now(UTC)]
    proc = MetricsProcessor(clock_skew=timedelta(0), now=lambda: clock[0], feedback_hold=timedelta(seconds=30))
    early = {**sample("feedback"), "trace_id": "d" * 32, "time": T + timedelta(seconds=5), "rating": 5.0}
    orphan = {**early, "feedback_id": "f-orphan", "trace_id": "e" * 32, "rating": 1.0}
    proc.process(SourceMessage("llm.feedback.enriched", 0, 1, None, encode("feedback", early)))
    proc.process(SourceMessage("llm.feedback.enriched", 0, 2, None, encode("feedback", orphan)))
    assert _records(proc.tick()) == []  # both wait for their traces
    proc.process(_span_msg(0, 0, trace="d" * 32, parent_span_id=None))
    joined = {r["model"]: r for r in _records(proc.tick())}[SPAN["response_model"]]
    assert (joined["feedback_count"], joined["rating_sum"]) == (1, 5.0)
    clock[0] += timedelta(seconds=31)
    unknown = {r["model"]: r for r in _records(proc.tick())}["unknown"]
    assert (unknown["feedback_count"], unknown["rating_sum"]) == (1, 1.0)
