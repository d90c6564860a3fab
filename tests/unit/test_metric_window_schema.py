"""The ``metric_window`` record: carries every WindowSnapshot field, round-trips, is documented."""
from __future__ import annotations

import dataclasses
import json
from datetime import timedelta

import pytest

from processors.aggregation import DIMENSIONS, WindowAggregator, WindowSnapshot
from processors.aggregation.sketch import decode_sketch
from schemas.catalog import SHIPPED_DIR, Catalog
from schemas.codec import SerializationError, decode, encode, encode_json
from schemas.samples import sample
from sinks.metrics_store import check_part, merge_windows, sketch_quantiles

SCHEMA_PATH = SHIPPED_DIR / "metric_window" / "v2.avsc"
FIELDS = [f["name"] for f in json.loads(SCHEMA_PATH.read_text())["fields"]]


def _record(snap: WindowSnapshot, partition: int = 0) -> dict:
    values = {f.name: getattr(snap, f.name) for f in dataclasses.fields(snap) if f.name != "dims"}
    return {**values, **snap.dims, "partition": partition, "emitted_at": snap.window_start + timedelta(seconds=75)}


def _snapshot() -> WindowSnapshot:
    agg = WindowAggregator()
    for i, ms in enumerate((310.0, 1480.0, 2950.0)):
        span = sample("span", span_id=f"{i:016x}", status="error" if i == 1 else "ok")
        span["end_time"] = span["start_time"] + timedelta(milliseconds=ms)
        agg.add_span(span)
    agg.add_feedback(sample("feedback", time=sample("span")["end_time"]), dims=agg.dimensions(sample("span")))
    return agg.changed()[0]


def test_every_snapshot_field_is_carried():
    snapshot_fields = {f.name for f in dataclasses.fields(WindowSnapshot)} - {"dims"}
    assert set(FIELDS) == snapshot_fields | set(DIMENSIONS) | {"partition", "emitted_at"}
    assert len(FIELDS) == len(set(FIELDS))


def test_every_field_is_documented():
    raw = json.loads(SCHEMA_PATH.read_text())
    assert raw["namespace"] == "llmpulse" and raw["doc"].strip()
    undocumented = [f["name"] for f in raw["fields"] if not f.get("doc", "").strip()]
    assert undocumented == []


def test_nullable_quantiles_default_to_null():
    raw = {f["name"]: f for f in json.loads(SCHEMA_PATH.read_text())["fields"]}
    for name in ("p50_ms", "p90_ms", "p95_ms", "p99_ms"):
        assert raw[name]["type"] == ["null", "double"] and raw[name]["default"] is None


def test_the_schema_is_shipped():
    assert Catalog.shipped().current("metric_window").version == 2


def test_a_real_snapshot_round_trips():
    snap = _snapshot()
    record = _record(snap, partition=4)
    data = encode("metric_window", record)
    assert data[:2] == b"\xc3\x01"
    back = decode(data, expected="metric_window")
    assert back == record
    assert decode_sketch(back["sketch"]).count == 3.0
    assert (back["request_count"], back["error_count"], back["feedback_count"]) == (3, 1, 1)
    check_part(back)


def test_json_round_trip_keeps_the_sketch_bytes():
    record = _record(_snapshot())
    assert decode(encode_json("metric_window", record), expected="metric_window") == record


def test_feedback_only_window_has_null_quantiles():
    agg = WindowAggregator()
    agg.add_feedback(sample("feedback"))
    record = _record(agg.changed()[0])
    back = decode(encode("metric_window", record), expected="metric_window")
    assert back["p50_ms"] is None and back["request_count"] == 0


def test_sample_is_consistent():
    part = sample("metric_window")
    assert decode(encode("metric_window", part), "metric_window") == part
    assert decode_sketch(part["sketch"]).count == part["request_count"]
    assert sketch_quantiles(part["sketch"]) == [part["p50_ms"], part["p90_ms"], part["p95_ms"], part["p99_ms"]]


@pytest.mark.parametrize("missing", ["series", "partition", "sketch", "emitted_at", "variant"])
def test_required_fields_are_required(missing):
    part = sample("metric_window")
    del part[missing]
    with pytest.raises(SerializationError, match=missing):
        encode("metric_window", part)


def test_other_records_are_not_metric_windows():
    with pytest.raises(SerializationError, match="expected a metric_window message"):
        decode(encode("metric_point", sample("metric_point")), expected="metric_window")


def test_merged_quantiles_equal_the_aggregators_bit_for_bit():
    # The store rebuilds the aggregator's own mapping from the sketch, so a
    # window merged from one partial reports exactly the partial's quantiles.
    snap = _snapshot()
    merged = merge_windows([_record(snap)])
    assert [merged[q] for q in ("p50_ms", "p90_ms", "p95_ms", "p99_ms")] == [
        snap.p50_ms, snap.p90_ms, snap.p95_ms, snap.p99_ms,
    ]
    assert merged["sketch"] == snap.sketch
