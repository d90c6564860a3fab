"""Windowed aggregates (processors/aggregation): exact counts, sketches, rollups, lateness, bounds.

Event time only: every test builds its own stream, so runs are identical and
a simulated day takes well under a second.
"""
from __future__ import annotations

import math
import pickle
import random
from collections import defaultdict
from collections.abc import Iterable
from datetime import datetime, timedelta, timezone
from typing import Any
from urllib.parse import unquote

import numpy as np
import pytest
from ddsketch import DDSketch
from ddsketch.mapping import LogarithmicMapping

from processors.aggregation import (
    DIMENSIONS,
    METRICS,
    WindowAggregator,
    WindowSnapshot,
    decode_sketch,
    merge_sketches,
    series_key,
    span_dimensions,
)
from processors.aggregation.bench import make_events
from processors.aggregation.sketch import BinMapping
from schemas.codec import decode, encode
from schemas.samples import sample

T0 = datetime(2025, 6, 1, 12, 0, 0, tzinfo=timezone.utc)
FAR = timedelta(days=3)


def span_at(seconds: float, latency_ms: float = 1000.0, **overrides: Any) -> dict[str, Any]:
    """The sample span, ending ``seconds`` after T0 and lasting ``latency_ms``."""
    end = T0 + timedelta(seconds=seconds)
    return sample("span", end_time=end, start_time=end - timedelta(milliseconds=latency_ms), **overrides)


def feedback_at(seconds: float, **overrides: Any) -> dict[str, Any]:
    return sample("feedback", time=T0 + timedelta(seconds=seconds), **overrides)


@pytest.fixture(scope="module")
def stream() -> tuple[list[dict], list[tuple]]:
    """Realistic spans (arrival order) and (feedback, root span) pairs: ~25 min of traffic."""
    return make_events(30_000, traces_per_second=3.0)


def run(agg: WindowAggregator, spans: Iterable[dict], flush_every: int = 997) -> dict[tuple, WindowSnapshot]:
    """Feed ``spans``, flushing now and then, close everything; latest snapshot per window."""
    latest: dict[tuple, WindowSnapshot] = {}

    def take(snaps: list[WindowSnapshot]) -> None:
        for s in snaps:
            key = (s.resolution, s.window_start, s.series)
            assert not (key in latest and latest[key].final), f"snapshot after final: {key}"
            latest[key] = s

    last = None
    for i, span in enumerate(spans, 1):
        agg.add_span(span)
        last = span["end_time"]
        if i % flush_every == 0:
            take(agg.flush())
    if last is not None:
        agg.advance(last + FAR)
    take(agg.flush())
    return latest


def by_res(snaps: dict[tuple, WindowSnapshot], res: str) -> list[WindowSnapshot]:
    return [s for k, s in snaps.items() if k[0] == res]


# -- counts, sums, quantiles ----------------------------------------------------


def test_counts_and_sums_are_exact(stream):
    spans, _ = stream
    snaps = run(WindowAggregator(), spans)
    assert all(s.final for s in snaps.values())
    expected: dict[tuple, dict[str, float]] = defaultdict(lambda: defaultdict(float))
    for span in spans:
        end = span["end_time"]
        start = end.replace(second=0, microsecond=0)
        e = expected[(start, series_key(span_dimensions(span)))]
        e["request_count"] += 1
        e["error_count"] += span["status"] == "error"
        e["input_tokens"] += span["input_tokens"] or 0
        e["output_tokens"] += span["output_tokens"] or 0
        e["cached_tokens"] += span["cache_read_input_tokens"] or 0
        e["usage_count"] += span["input_tokens"] is not None or span["output_tokens"] is not None
        e["cost_nanos"] += round((span["cost_usd"] or 0) * 1e9)
        e["cost_count"] += span["cost_usd"] is not None
    minutes = {(s.window_start, s.series): s for s in by_res(snaps, "1m")}
    assert minutes.keys() == expected.keys()
    for key, e in expected.items():
        s = minutes[key]
        for field in ("request_count", "error_count", "input_tokens", "output_tokens", "cached_tokens",
                      "usage_count", "cost_count"):
            assert getattr(s, field) == e[field], (key, field)
        assert round(s.cost_usd * 1e9) == e["cost_nanos"]
        assert s.late_events == 0
    assert sum(s.request_count for s in by_res(snaps, "1d")) == len(spans)


def test_quantiles_within_relative_accuracy_and_equal_to_ddsketch():
    rng = np.random.default_rng(3)
    latencies = rng.lognormal(mean=7.0, sigma=0.8, size=5000)
    agg = WindowAggregator(relative_accuracy=0.01)
    reference = DDSketch(relative_accuracy=0.01)
    for i, ms in enumerate(latencies):
        agg.add_span(span_at(10 + i * 0.001, latency_ms=float(ms)))
        # same latency the aggregator computes from the timestamps (µs precision)
        reference.add(timedelta(milliseconds=float(ms)) / timedelta(milliseconds=1))
    snap = agg.changed()[0]
    assert snap.request_count == 5000
    for q, value in zip((0.5, 0.9, 0.95, 0.99), (snap.p50_ms, snap.p90_ms, snap.p95_ms, snap.p99_ms)):
        exact = np.quantile(latencies, q, method="lower")
        assert abs(value - exact) <= 0.01 * exact + 1e-3, q
        assert value == reference.get_quantile_value(q)


def test_bin_keys_match_the_library_mapping():
    ours, lib = BinMapping(0.01), LogarithmicMapping(0.01)
    for v in np.geomspace(1e-4, 1e7, 5000):
        assert ours.key(float(v)) == lib.key(float(v))
    assert ours.key(0.0) is None and ours.key(-5.0) is None


def test_zero_and_negative_latency_go_to_the_zero_bin():
    agg = WindowAggregator()
    agg.add_span(span_at(1, latency_ms=0.0))
    agg.add_span(span_at(2, latency_ms=-5.0))  # end before start: clock skew
    agg.add_span(span_at(3, latency_ms=100.0))
    snap = agg.changed()[0]
    assert (snap.request_count, snap.p50_ms) == (3, 0.0)
    assert decode_sketch(snap.sketch).count == 3
    assert agg.stats()["negative_latency"] == 1


# -- rollups and sketches -------------------------------------------------------


def test_rollups_are_exact_merges_of_their_minutes(stream):
    spans, feedback = stream
    agg = WindowAggregator()
    for fb, root in feedback:  # feedback before its spans arrive is fine within lateness
        agg.add_feedback(fb, agg.dimensions(root))
    snaps = run(agg, spans)
    minutes = by_res(snaps, "1m")
    fields = ("request_count", "error_count", "input_tokens", "output_tokens", "cached_tokens", "usage_count",
              "cost_count", "feedback_count", "rating_count", "thumbs_up", "thumbs_count", "late_events")
    for res, width in (("1h", timedelta(hours=1)), ("1d", timedelta(days=1))):
        rollups = by_res(snaps, res)
        assert rollups
        for roll in rollups:
            parts = [m for m in minutes
                     if m.series == roll.series and roll.window_start <= m.window_start < roll.window_start + width]
            for field in fields:
                assert getattr(roll, field) == sum(getattr(m, field) for m in parts), (res, field)
            assert round(roll.cost_usd * 1e9) == sum(round(m.cost_usd * 1e9) for m in parts)
            assert roll.rating_sum == pytest.approx(sum(m.rating_sum for m in parts))
            merged = merge_sketches(m.sketch for m in parts)
            assert merged == roll.sketch  # identical bins, canonical bytes
            sketch = decode_sketch(merged)
            if roll.request_count:
                assert sketch.count == roll.request_count
                # same bin; the decoded mapping recomputes its multiplier from
                # gamma, so the bin's value may differ in the last bits
                assert sketch.get_quantile_value(0.95) == pytest.approx(roll.p95_ms, rel=1e-12)
                assert sketch.get_quantile_value(0.99) == pytest.approx(roll.p99_ms, rel=1e-12)


def test_sketch_round_trip_and_merge():
    agg = WindowAggregator(relative_accuracy=0.02)
    for i, ms in enumerate([0.0, 3.0, 40.0, 40.5, 900.0, 12_000.0]):
        agg.add_span(span_at(i, latency_ms=ms))
    snap = agg.changed()[0]
    sketch = decode_sketch(snap.sketch)
    assert sketch.count == 6
    assert sketch._relative_accuracy == pytest.approx(0.02)
    for q, value in zip((0.5, 0.9, 0.95, 0.99), (snap.p50_ms, snap.p90_ms, snap.p95_ms, snap.p99_ms)):
        assert sketch.get_quantile_value(q) == pytest.approx(value, rel=1e-12)
    assert merge_sketches([snap.sketch]) == snap.sketch
    twice = decode_sketch(merge_sketches([snap.sketch, snap.sketch]))
    assert twice.count == 12 and twice.get_quantile_value(0.5) == pytest.approx(snap.p50_ms, rel=1e-12)
    assert decode_sketch(merge_sketches([])).count == 0
    other = WindowAggregator(relative_accuracy=0.01)
    other.add_span(span_at(1))
    with pytest.raises(ValueError, match="different mappings"):
        merge_sketches([snap.sketch, other.changed()[0].sketch])


# -- lateness and the watermark ---------------------------------------------------


def minute(snaps: list[WindowSnapshot], seconds: int) -> WindowSnapshot | None:
    start = T0 + timedelta(seconds=seconds)
    return next((s for s in snaps if s.resolution == "1m" and s.window_start == start), None)


def test_late_within_lateness_updates_the_window():
    agg = WindowAggregator(lateness=timedelta(minutes=10))
    agg.add_span(span_at(30))
    agg.add_span(span_at(9 * 60))
    assert agg.closed() == []
    agg.changed()
    agg.add_span(span_at(10))  # 9 min late: still within lateness
    first = minute(agg.changed(), 0)
    assert first is not None and first.request_count == 2 and not first.final


def test_window_closes_when_the_watermark_reaches_its_end():
    agg = WindowAggregator(lateness=timedelta(minutes=10))
    agg.add_span(span_at(59.999))
    agg.add_span(span_at(11 * 60 - 0.000001))  # watermark just short of 12:01
    assert minute(agg.closed(), 0) is None
    agg.add_span(span_at(0.5))  # still accepted
    agg.add_span(span_at(11 * 60))  # watermark == window end: closed
    final = minute(agg.closed(), 0)
    assert final is not None and final.final and final.request_count == 2


def test_late_beyond_lateness_is_counted_and_not_applied():
    agg = WindowAggregator(lateness=timedelta(minutes=10))
    agg.add_span(span_at(30))
    agg.add_span(span_at(12 * 60 + 30))
    closed = agg.closed()
    assert minute(closed, 0).request_count == 1
    agg.changed()
    agg.add_span(span_at(40))  # its minute is closed
    agg.add_feedback(feedback_at(20), agg.dimensions(span_at(0)))
    changed = agg.changed()
    assert minute(changed, 0) is None  # the closed window is never touched again
    now = minute(changed, 12 * 60)  # counted where it arrived: the latest minute of its series
    assert (now.request_count, now.late_events) == (1, 2)
    hour = next(s for s in changed if s.resolution == "1h")
    # the hour is still open, but late events are applied nowhere, so the
    # hour stays the exact sum of its minutes
    assert (hour.request_count, hour.feedback_count, hour.late_events) == (2, 0, 2)
    assert agg.stats()["late_events"] == 2


def test_lateness_zero_accepts_only_the_current_minute():
    agg = WindowAggregator(lateness=timedelta(0))
    agg.add_span(span_at(61))
    agg.add_span(span_at(60))  # same minute: fine
    agg.add_span(span_at(59))  # previous minute ended at the watermark
    assert agg.stats()["late_events"] == 1


def test_advance_closes_windows_without_events():
    agg = WindowAggregator()
    agg.add_span(span_at(5))
    agg.advance(T0 + timedelta(minutes=5))
    assert agg.closed() == []
    agg.advance(T0)  # never backwards
    agg.advance(T0 + timedelta(minutes=11))
    assert [s.resolution for s in agg.closed()] == ["1m"]
    assert agg.stats()["watermark"] == T0 + timedelta(minutes=1)


# -- emitting ---------------------------------------------------------------------


def test_changed_returns_only_changed_windows_with_their_latest_full_value():
    agg = WindowAggregator()
    assert agg.changed() == []
    agg.add_span(span_at(5))
    agg.add_span(span_at(6, status="error"))
    first = agg.changed()
    assert [(s.resolution, s.request_count, s.error_count) for s in first] == [
        ("1m", 2, 1), ("1h", 2, 1), ("1d", 2, 1)]
    assert agg.changed() == []
    agg.add_span(span_at(65))  # the next minute, same hour and day
    second = agg.changed()
    assert [(s.resolution, s.window_start, s.request_count) for s in second] == [
        ("1m", T0 + timedelta(minutes=1), 1), ("1h", T0, 3), ("1d", T0.replace(hour=0), 3)]
    agg.add_span(span_at(70, response_model="x"))  # another series
    third = agg.changed()
    assert len({s.series for s in third}) == 1 and [s.request_count for s in third] == [1, 1, 1]


def test_closed_emits_each_window_once_and_changed_skips_it():
    agg = WindowAggregator(lateness=timedelta(minutes=1))
    agg.add_span(span_at(5))
    agg.add_span(span_at(3 * 60))
    closed = agg.closed()
    assert [(s.resolution, s.final) for s in closed] == [("1m", True)]
    assert all(s.final is False for s in agg.changed())
    assert agg.closed() == []
    assert minute(agg.flush(), 0) is None


def test_closed_windows_are_evicted_and_memory_stays_bounded():
    agg = WindowAggregator(lateness=timedelta(minutes=10))
    models = ["m1", "m2", "m3", "m4", "m5"]
    finals: dict[str, int] = defaultdict(int)
    peak = 0
    for i in range(3 * 24 * 180):  # three days, one span every 20 s
        agg.add_span(span_at(i * 20, response_model=models[i % 5]))
        if i % 30 == 0:
            for s in agg.flush():
                finals[s.resolution] += s.final
            peak = max(peak, agg.stats()["open_windows"]["1m"])
    agg.advance(T0 + timedelta(days=10))
    for s in agg.flush():
        finals[s.resolution] += s.final
    stats = agg.stats()
    assert stats["open_windows"] == {"1m": 0, "1h": 0, "1d": 0}
    # 10 min lateness + the flush interval + the current minute, 5 series
    assert peak <= 5 * 14
    # 12:00 on day one to 12:00 on day four touches four UTC days
    assert finals == {"1m": 3 * 24 * 60 * 3, "1h": 3 * 24 * 5, "1d": 4 * 5}
    assert stats["windows_closed"] == sum(finals.values())
    assert len(agg._dirty) == 0 and stats["series"] <= 5


# -- dimensions and the cardinality guard ---------------------------------------


def test_dimensions_of_a_span():
    dims = dict(zip(DIMENSIONS, span_dimensions(sample("span", attributes={"llmpulse.cohort": "pro"}))))
    assert dims == {"project": "support-bot", "model": "gpt-4o-mini-2024-07-18", "provider": "openai",
                    "prompt_version": "support-v12", "kind": "llm", "cohort": "pro",
                    "variant": "prompt-tone:friendly"}
    bare = span_dimensions(sample("span", response_model=None, request_model=None, provider=None,
                                  prompt_version=None, experiments={"b": "2", "a": "1"}))
    assert bare[1:4] == ("none", "none", "none") and bare[6] == "a:1,b:2"


def test_cardinality_cap_folds_into_other():
    agg = WindowAggregator(caps={"model": 2})
    for i, model in enumerate(["a", "b", "c", "d", "a", "c", None]):
        agg.add_span(span_at(i, response_model=model, request_model=None))
    snaps = [s for s in agg.changed() if s.resolution == "1m"]
    counts = {s.dims["model"]: s.request_count for s in snaps}
    assert counts == {"a": 2, "b": 1, "other": 3, "none": 1}  # "none" takes no slot
    stats = agg.stats()
    assert stats["folded_events"]["model"] == 3
    assert stats["folded_values"]["model"] == 2
    assert stats["folded_events"]["project"] == 0


def test_cap_slots_expire_with_idle_series():
    agg = WindowAggregator(caps={"model": 2}, cap_ttl=timedelta(days=1))
    for i, model in enumerate(["a", "b", "c"]):
        agg.add_span(span_at(i, response_model=model))
    # two days later only "a" is still used; "b"'s slot is free for "c"
    agg.add_span(span_at(2 * 86400, response_model="a"))
    agg.flush()  # closes day one's windows, then forgets idle series
    agg.add_span(span_at(2 * 86400 + 1, response_model="c"))
    agg.add_span(span_at(2 * 86400 + 2, response_model="b"))  # now "b" is the one beyond the cap
    models = {s.dims["model"]: s.request_count for s in agg.changed() if s.resolution == "1m"}
    assert models == {"c": 1, "other": 1}  # ("a" was emitted by the flush)


def test_series_keys_are_escaped_and_reversible():
    dims = ("p|1", "m=2", "x,y", "{v}", "llm", "100%", "e:a")
    key = series_key(dims)
    parts = key.split("|")
    assert [p.split("=")[0] for p in parts] == list(DIMENSIONS)
    assert tuple(unquote(p.split("=", 1)[1]) for p in parts) == dims


def test_bad_settings_are_rejected():
    with pytest.raises(ValueError, match="unknown dimensions"):
        WindowAggregator(caps={"colour": 3})
    with pytest.raises(ValueError, match="cap_ttl"):
        WindowAggregator(cap_ttl=timedelta(hours=1))
    with pytest.raises(ValueError, match="lateness"):
        WindowAggregator(lateness=timedelta(seconds=-1))
    with pytest.raises(ValueError, match="relative_accuracy"):
        WindowAggregator(relative_accuracy=0)


# -- feedback ---------------------------------------------------------------------


def test_feedback_joins_its_trace_dimensions():
    agg = WindowAggregator()
    span = span_at(5)
    agg.add_span(span)
    dims = agg.dimensions(span)
    agg.add_feedback(feedback_at(20, rating=4.0, thumbs=True), dims)
    agg.add_feedback(feedback_at(30, rating=None, thumbs=False), dict(zip(DIMENSIONS, dims)))
    agg.add_feedback(feedback_at(40, rating=2.0, thumbs=None), dims)
    (snap,) = [s for s in agg.changed() if s.resolution == "1m"]
    assert snap.series == series_key(dims) and snap.request_count == 1
    assert (snap.feedback_count, snap.rating_count, snap.rating_mean) == (3, 2, 3.0)
    assert (snap.thumbs_up, snap.thumbs_count, snap.thumbs_up_rate) == (1, 2, 0.5)


def test_feedback_on_an_unknown_trace_counts_under_project_and_unknown():
    agg = WindowAggregator()
    agg.add_feedback(feedback_at(5, project="demo"))
    (snap,) = [s for s in agg.changed() if s.resolution == "1m"]
    assert snap.dims == {name: ("demo" if name == "project" else "unknown") for name in DIMENSIONS}
    assert snap.request_count == 0 and snap.feedback_count == 1 and snap.p50_ms is None
    assert agg.stats()["feedback_unknown_trace"] == 1


def test_feedback_mapping_without_project_uses_the_feedbacks():
    agg = WindowAggregator()
    agg.add_feedback(feedback_at(5, project="demo"), {"model": "m"})
    snap = agg.changed()[0]
    assert (snap.dims["project"], snap.dims["model"], snap.dims["kind"]) == ("demo", "m", "unknown")


# -- metric points --------------------------------------------------------------


def test_metric_points_encode_and_are_only_the_defined_ones(stream):
    spans, feedback = stream
    agg = WindowAggregator()
    for span in spans[:3000]:
        agg.add_span(span)
    for fb, root in feedback[:200]:
        agg.add_feedback(fb, agg.dimensions(root))
    agg.add_feedback(feedback_at(5, project="demo", rating=None, thumbs=True))
    seen: set[str] = set()
    for snap in agg.changed():
        points = snap.metric_points()
        for p in points:
            assert decode(encode("metric_point", p), "metric_point") == p
            assert p["series"].startswith(p["metric"] + "{") and p["count"] > 0
            assert math.isfinite(p["value"])
            assert p["window_seconds"] == snap.window_seconds
        names = [p["metric"] for p in points]
        seen.update(names)
        assert ("latency_p95_ms" in names) == (snap.request_count > 0)
        assert ("rating_mean" in names) == (snap.rating_count > 0)
        assert ("input_tokens" in names) == (snap.usage_count > 0)
    assert seen <= set(METRICS)
    assert {"request_count", "error_rate", "latency_p99_ms", "cost_per_request", "thumbs_up_rate"} <= seen


# -- determinism, failures, state ---------------------------------------------------


def test_same_input_same_output(stream):
    spans, _ = stream
    assert run(WindowAggregator(), spans[:8000]) == run(WindowAggregator(), spans[:8000])


def test_arrival_order_within_lateness_does_not_change_results(stream):
    spans, _ = stream
    spans = spans[:8000]
    shuffled = list(spans)
    rng = random.Random(5)
    for i in range(0, len(shuffled), 200):  # ~1 min of traffic per block, lateness 10 min
        block = shuffled[i:i + 200]
        rng.shuffle(block)
        shuffled[i:i + 200] = block
    a, b = run(WindowAggregator(), spans), run(WindowAggregator(), shuffled)
    assert a == b
    assert all(s.late_events == 0 for s in a.values())


@pytest.mark.parametrize("bad", [
    {"cost_usd": float("nan")},
    {"end_time": "2025-06-01T12:00:00Z"},
    {"project": None, "kind": None, "experiments": 5},
])
def test_an_event_that_raises_changes_nothing(bad):
    agg = WindowAggregator()
    agg.add_span(span_at(5))
    agg.changed()
    before = agg.stats()
    with pytest.raises((TypeError, ValueError, AttributeError)):
        agg.add_span({**span_at(7), **bad})
    assert agg.stats() == before and agg.changed() == []
    with pytest.raises(ValueError, match="finite"):
        agg.add_feedback(feedback_at(6, rating=float("inf")))
    assert agg.stats() == before


def test_pickled_state_continues_identically(stream):
    spans, _ = stream
    head, tail = spans[:4000], spans[4000:8000]
    agg = WindowAggregator()
    for span in head:
        agg.add_span(span)
    agg.flush()
    clone = pickle.loads(pickle.dumps(agg))
    assert run(clone, tail) == run(agg, tail)
