"""The metrics store against a real PostgreSQL: partials from several partitions merge exactly.

The partials are made the way the metrics processor makes them: one real
:class:`WindowAggregator` per simulated source partition, fed with generated
traffic routed by trace id, flushed every few events. A single aggregator
fed with *all* events is the reference: the store's merged rows must equal
its windows exactly (counts, nano-dollar costs, sketch bins), at 1 minute,
1 hour and 1 day.
"""
from __future__ import annotations

import zlib
from collections import defaultdict
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from decimal import Decimal

import numpy as np
import psycopg
import pytest

from sinks.migration_plan import load_migrations

from processors.aggregation import WindowAggregator, WindowSnapshot, series_key, span_dimensions
from processors.generator import TrafficModel
from schemas.codec import decode, encode
from schemas.samples import sample
from sinks.metrics_store import (
    COUNTERS,
    MetricsStore,
    MetricsStoreError,
    merge_windows,
    metrics_store_sink,
)
from sinks.migrate import migrate, rollback
from tests.avro_versions import encode_version

PARTITIONS = 3
# 22:30 UTC, three hours: the traffic crosses midnight, so two UTC days.
START = datetime(2025, 6, 1, 22, 30, tzinfo=UTC)
HOURS = 3
EMIT0 = datetime(2025, 6, 2, 6, 0, tzinfo=UTC)
FLUSH_EVERY = 25  # events per partition between two flushes
ALPHA = 0.01  # the aggregators' relative accuracy
SUMS = (*COUNTERS, "cost_usd", "rating_sum")
QUANTILES = ("p50_ms", "p90_ms", "p95_ms", "p99_ms")


def to_part(snapshot: WindowSnapshot, partition: int, emitted_at: datetime) -> dict:
    """A ``metric_window`` record from a 1-minute snapshot, as the processor sends it."""
    record = {
        "series": snapshot.series,
        "resolution": snapshot.resolution,
        "window_start": snapshot.window_start,
        "window_seconds": snapshot.window_seconds,
        "partition": partition,
        **snapshot.dims,
        **{name: getattr(snapshot, name) for name in (*SUMS, *QUANTILES, "sketch", "final")},
        "emitted_at": emitted_at,
    }
    # Through the codec, as the sink receives it.
    return decode(encode("metric_window", record), expected="metric_window")


@dataclass
class Simulation:
    parts: list[dict]  # in emission order
    reference: dict[tuple[str, str, datetime], WindowSnapshot]  # (resolution, series, start) -> final
    latencies: dict[tuple[str, datetime], list[float]]  # (series, minute) -> raw span latencies (ms)


def simulate(seed: int = 1, hours: float = HOURS, traces_per_second: float = 0.3) -> Simulation:
    model = TrafficModel(seed=seed, start=START, traces_per_second=traces_per_second, feedback_rate=0.4)
    events = []
    while model.clock < START + timedelta(hours=hours):
        trace = model.trace()
        events.extend((span["end_time"], 0, span, None) for span in trace)
        feedback = model.feedback_for(trace)
        if feedback is not None:
            events.append((feedback["time"], 1, feedback, trace[0]))
    # In event-time order, so neither the partitions nor the reference see
    # late events and all of them must agree exactly.
    events.sort(key=lambda e: (e[0], e[1]))

    def aggregator() -> WindowAggregator:
        return WindowAggregator(lateness=timedelta(minutes=2), relative_accuracy=ALPHA)

    aggs = [aggregator() for _ in range(PARTITIONS)]
    reference = aggregator()
    parts: list[dict] = []
    seen = [0] * PARTITIONS
    latencies: dict[tuple[str, datetime], list[float]] = defaultdict(list)

    def emit(partition: int) -> None:
        for snap in aggs[partition].flush():
            if snap.resolution == "1m":
                parts.append(to_part(snap, partition, EMIT0 + timedelta(milliseconds=len(parts))))

    for _, kind, event, root in events:
        partition = zlib.crc32(event["trace_id"].encode()) % PARTITIONS  # Kafka-style: by trace id
        for agg in (aggs[partition], reference):
            if kind == 0:
                agg.add_span(event)
            else:
                agg.add_feedback(event, dims=agg.dimensions(root))
        if kind == 0:
            end = event["end_time"]
            minute = end - timedelta(seconds=end.second, microseconds=end.microsecond)
            latency = (end - event["start_time"]) / timedelta(milliseconds=1)
            latencies[(series_key(span_dimensions(event)), minute)].append(latency)
        seen[partition] += 1
        if seen[partition] % FLUSH_EVERY == 0:
            emit(partition)
    later = START + timedelta(days=3)
    for partition, agg in enumerate(aggs):
        agg.advance(later)
        emit(partition)
    reference.advance(later)
    final = {(s.resolution, s.series, s.window_start): s for s in reference.flush()}
    assert all(s.final for s in final.values())
    return Simulation(parts, final, dict(latencies))


@pytest.fixture(scope="module")
def sim() -> Simulation:
    return simulate()


@pytest.fixture
def db(fresh_database) -> str:
    migrate(fresh_database)
    return fresh_database


@pytest.fixture
def store(db):
    s = MetricsStore(db)
    yield s
    s.close()


def batches(parts: list[dict], size: int = 2000) -> list[list[dict]]:
    return [parts[i:i + size] for i in range(0, len(parts), size)]


def rows(url: str, table: str = "metric_windows", where: str = "TRUE") -> list[dict]:
    with psycopg.connect(url) as conn, conn.cursor(row_factory=psycopg.rows.dict_row) as cur:
        return cur.execute(f"SELECT * FROM {table} WHERE {where} ORDER BY 1, 2, 3, 4").fetchall()


def windows(url: str) -> dict[tuple[str, str, datetime], dict]:
    return {(r["resolution"], r["series"], r["window_start"]): r for r in rows(url)}


def assert_same_values(row: dict, snap: WindowSnapshot) -> None:
    key = (row["resolution"], row["series"], row["window_start"])
    for name in COUNTERS:
        assert row[name] == getattr(snap, name), (key, name)
    assert row["cost_usd"] == Decimal(round(snap.cost_usd * 1e9)).scaleb(-9), key
    assert row["rating_sum"] == snap.rating_sum, key
    assert bytes(row["sketch"]) == snap.sketch, key  # same bins, same canonical bytes
    for name in QUANTILES:
        assert row[name] == getattr(snap, name), (key, name)
    assert [row[d] for d in ("project", "model", "provider", "prompt_version", "kind", "cohort", "variant")] == list(
        snap.dims.values()
    )
    assert row["window_seconds"] == snap.window_seconds
    assert row["final"] is True


# ---------------------------------------------------------------- merging


def test_partials_from_three_partitions_merge_exactly(store, db, sim):
    assert {p["partition"] for p in sim.parts} == set(range(PARTITIONS))
    results = [store.write(batch) for batch in batches(sim.parts)]
    assert sum(r.parts_received for r in results) == len(sim.parts)

    got = windows(db)
    assert set(got) == set(sim.reference), "one row per reference window, at every resolution"
    assert {k[0] for k in got} == {"1m", "1h", "1d"}
    assert len({k[2] for k in got if k[0] == "1d"}) == 2, "the traffic crosses a UTC midnight"
    for key, snap in sim.reference.items():
        assert_same_values(got[key], snap)

    # Some minutes really were split over partitions.
    split = [r for r in got.values() if r["resolution"] == "1m" and r["partitions"] == PARTITIONS]
    assert len(split) > 50
    parts = rows(db, "metric_window_parts")
    assert len(parts) == len({(p["series"], p["window_start"], p["partition"]) for p in sim.parts})
    assert all(p["final"] for p in parts)


def test_quantiles_are_within_sketch_accuracy_of_the_raw_latencies(store, db, sim):
    for batch in batches(sim.parts):
        store.write(batch)
    checked = 0
    for row in rows(db, where="resolution = '1m' AND request_count >= 20"):
        raw = np.sort(np.array(sim.latencies[(row["series"], row["window_start"])]))
        assert len(raw) == row["request_count"]
        for q, name in zip((0.5, 0.9, 0.95, 0.99), QUANTILES):
            # DDSketch answers for the element at rank floor(q * (n - 1)).
            expected = np.quantile(raw, q, method="lower")
            assert abs(row[name] - expected) <= ALPHA * expected + 1e-9, (row["series"], name)
        checked += 1
    assert checked > 20


def test_hour_is_the_merge_of_its_minutes_and_day_of_its_hours(store, db, sim):
    for batch in batches(sim.parts):
        store.write(batch)
    got = windows(db)
    children = defaultdict(list)
    for (res, series, start), row in got.items():
        if res == "1m":
            children[("1h", series, start.replace(minute=0))].append(row)
        elif res == "1h":
            children[("1d", series, start.replace(hour=0))].append(row)
    full_hours = 0
    for (res, series, start), row in got.items():
        if res == "1m":
            continue
        kids = children[(res, series, start)]
        assert 1 <= len(kids) <= (60 if res == "1h" else 24)
        full_hours += res == "1h" and len(kids) == 60
        merged = merge_windows(kids)
        for name in (*SUMS, *QUANTILES, "partitions", "final"):
            assert row[name] == merged[name], (res, series, start, name)
        assert bytes(row["sketch"]) == merged["sketch"]
        assert row["partitions"] == sum(k["partitions"] for k in kids)
    assert full_hours >= 1, "at least one series has traffic in all 60 minutes of an hour"


# ---------------------------------------------------------------- replays and order


def _snapshot_tables(url: str) -> tuple[list[dict], list[dict]]:
    return rows(url), rows(url, "metric_window_parts")


def test_replaying_batches_changes_nothing(store, db, sim):
    chunks = batches(sim.parts[:6000], 1000)
    for chunk in chunks:
        store.write(chunk)
    before = _snapshot_tables(db)  # updated_at included

    again = [store.write(chunk) for chunk in chunks]  # the whole stream again, in order
    again.append(store.write(chunks[2]))  # an old batch redelivered after newer ones
    again.append(store.write(list(reversed(sim.parts[:6000]))))  # everything at once, any order
    assert [r.parts_changed for r in again] == [0] * len(again)
    assert [(r.minutes, r.hours, r.days) for r in again] == [(0, 0, 0)] * len(again)
    assert _snapshot_tables(db) == before


def test_arrival_order_does_not_matter(store, db, sim, fresh_database):
    subset = sim.parts[:5000]
    for chunk in batches(subset, 700):
        store.write(chunk)
    in_order = windows(db)

    shuffled = list(subset)
    np.random.default_rng(3).shuffle(shuffled)
    rollback(db, to=0)
    migrate(db)
    other = MetricsStore(db)
    try:
        for chunk in batches(shuffled, 300):
            other.write(chunk)
    finally:
        other.close()
    strip = lambda w: {k: {c: v for c, v in r.items() if c != "updated_at"} for k, r in w.items()}  # noqa: E731
    assert strip(windows(db)) == strip(in_order)


def test_a_later_fuller_partial_replaces_an_earlier_one(store, db):
    base = sample("metric_window", final=False, feedback_count=0, rating_sum=0.0, rating_count=0,
                  thumbs_up=0, thumbs_count=0)
    start, series = base["window_start"], base["series"]
    small = {**base, "request_count": 1, "error_count": 0, "emitted_at": base["emitted_at"]}
    fuller = {**base, "emitted_at": base["emitted_at"] + timedelta(seconds=5)}
    final = {**fuller, "final": True, "emitted_at": fuller["emitted_at"] + timedelta(seconds=60)}
    other = {**base, "partition": 0, "final": True}

    store.write([small, other])
    minute = windows(db)[("1m", series, start)]
    assert (minute["request_count"], minute["partitions"], minute["final"]) == (4, 2, False)

    assert store.write([fuller]).parts_changed == 1
    assert windows(db)[("1m", series, start)]["request_count"] == 6

    assert store.write([final]).parts_changed == 1
    got = windows(db)
    assert (got[("1m", series, start)]["final"], got[("1h", series, start)]["final"]) == (True, True)

    # A processor that restarted re-emits smaller partials of this window
    # while it replays its partition: they must not take the values back.
    late_small = {**small, "emitted_at": final["emitted_at"] + timedelta(hours=1)}
    result = store.write([late_small, {**fuller, "emitted_at": late_small["emitted_at"]}])
    assert result.parts_changed == 0
    assert windows(db) == got


def test_the_fullest_partial_in_one_batch_wins(store, db):
    first = sample("metric_window", final=False)
    second = {**first, "request_count": 7, "final": True, "emitted_at": first["emitted_at"] + timedelta(seconds=9)}
    store.write([second, first])  # arrival order inside a batch does not matter
    row = windows(db)[("1m", first["series"], first["window_start"])]
    assert (row["request_count"], row["final"], row["partitions"]) == (7, True, 1)


def test_feedback_only_window_has_no_quantiles_and_null_safe_rates(store, db):
    from processors.aggregation.sketch import merge_sketches

    feedback_only = sample(
        "metric_window", request_count=0, error_count=0, input_tokens=0, output_tokens=0, cached_tokens=0,
        usage_count=0, cost_usd=0.0, cost_count=0, p50_ms=None, p90_ms=None, p95_ms=None, p99_ms=None,
        sketch=merge_sketches([]),
    )
    store.write([feedback_only])
    with psycopg.connect(db) as conn:
        got = conn.execute(
            "SELECT resolution, p50_ms, p99_ms, error_rate, cost_per_request, rating_mean, thumbs_up_rate"
            " FROM metric_windows_rates ORDER BY window_seconds"
        ).fetchall()
    assert got == [(res, None, None, None, None, 4.0, 1.0) for res in ("1m", "1h", "1d")]


def test_rates_view_matches_the_snapshot_properties(store, db, sim):
    store.write(sim.parts[:3000])
    with psycopg.connect(db) as conn, conn.cursor(row_factory=psycopg.rows.dict_row) as cur:
        view = cur.execute("SELECT * FROM metric_windows_rates WHERE resolution = '1m'").fetchall()
    for row in view:
        n = row["request_count"]
        assert row["error_rate"] == (row["error_count"] / n if n else None)
        assert row["rating_mean"] == (row["rating_sum"] / row["rating_count"] if row["rating_count"] else None)
        assert row["thumbs_up_rate"] == (row["thumbs_up"] / row["thumbs_count"] if row["thumbs_count"] else None)
        if row["cost_count"]:
            assert row["cost_per_request"] == pytest.approx(float(row["cost_usd"]) / row["cost_count"], rel=1e-12)
        else:
            assert row["cost_per_request"] is None
    assert any(r["error_rate"] is None for r in view) and any(r["thumbs_up_rate"] for r in view)


# ---------------------------------------------------------------- errors


def test_a_part_that_is_not_a_minute_is_a_domain_error(store, db):
    bad = sample("metric_window", resolution="1h", window_seconds=3600)
    with pytest.raises(MetricsStoreError, match="only 1-minute partials"):
        store.write([sample("metric_window"), bad])
    misaligned = sample("metric_window", window_start=sample("metric_window")["window_start"] + timedelta(seconds=1))
    with pytest.raises(MetricsStoreError, match="not a UTC minute boundary"):
        store.write([misaligned])
    assert rows(db, "metric_window_parts") == []


def test_constraint_violation_is_a_domain_error_naming_the_batch(store, db):
    good = sample("metric_window", partition=0)
    bad = sample("metric_window", error_count=9)  # more errors than requests
    with pytest.raises(MetricsStoreError, match=r"batch of 2 metric_window partials .*metric_window_parts_counts_check") as info:
        store.write([good, bad])
    assert isinstance(info.value.__cause__, psycopg.errors.CheckViolation)
    assert rows(db, "metric_window_parts") == [], "the whole batch was rolled back"
    assert store.write([good]).parts_changed == 1, "the store recovers on the same connection"


def test_unmergeable_sketches_are_a_domain_error(store, db):
    from processors.aggregation.sketch import BinMapping, encode_sketch

    coarse = BinMapping(0.05)
    other = sample("metric_window", partition=0, sketch=encode_sketch({coarse.key(1500.0): 3}, 0, coarse))
    with pytest.raises(MetricsStoreError, match="different mappings"):
        store.write([sample("metric_window"), other])


def test_unmigrated_database_is_a_domain_error(fresh_database):
    store = MetricsStore(fresh_database)
    with pytest.raises(MetricsStoreError, match="migrate"):
        store.write([sample("metric_window")])
    migrate(fresh_database)
    assert store.write([sample("metric_window")]).parts_changed == 1
    store.close()


def test_unreachable_database_is_transient():
    with pytest.raises(psycopg.OperationalError):
        MetricsStore("postgresql://llmpulse@127.0.0.1:1/x").write([sample("metric_window")])


# ---------------------------------------------------------------- schema lifecycle and sink


def test_migration_up_down_up_keeps_spans_and_drops_metrics(store, db):
    store.write([sample("metric_window")])
    with psycopg.connect(db) as conn:
        conn.execute(
            "INSERT INTO spans (trace_id, span_id, name, start_time, end_time, project)"
            " VALUES ('t', 's', 'chat', now(), now(), 'demo')"
        )
    store.close()
    later = [m.version for m in reversed(load_migrations()) if m.version > 1]  # every migration after 0001, newest first
    assert rollback(db, to=1) == later
    with psycopg.connect(db) as conn:
        names = {r[0] for r in conn.execute(
            "SELECT relname FROM pg_class WHERE relnamespace = 'public'::regnamespace AND relkind IN ('r', 'v')"
        )}
        assert names == {"spans", "traces", "schema_migrations"}
        assert conn.execute("SELECT count(*) FROM spans").fetchone() == (1,)
    assert migrate(db) == later[::-1]
    assert rows(db) == []
    assert store.write([sample("metric_window")]).minutes == 1


def test_sink_decodes_messages_and_writes_them(db, sim):
    from processors.settings import Settings
    from pydantic import SecretStr

    sink = metrics_store_sink(Settings(database_url=SecretStr(db)))
    parts = sim.parts[:500]
    records = [sink.decode(encode("metric_window", p)) for p in parts]
    assert all(type(r) is bytes for r in records)  # COPY rows from sinks._inbox_copy
    # An older schema version takes the Python path: decoded, checked, then COPYed.
    older = sink.decode(encode_version("metric_window", 1, parts[0]))
    assert type(older) is dict and older["series"] == parts[0]["series"]
    assert sink.write([*records, older]) == 501  # appended to the inbox; the compactor merges
    assert rows(db) == []
    result = MetricsStore(db).compact()
    assert result.parts_received == 501 and result.minutes > 0
    direct = MetricsStore(db)
    expected = _windows(db)
    with psycopg.connect(db, autocommit=True) as conn:
        conn.execute("TRUNCATE metric_windows, metric_window_parts")
    direct.write(parts)
    direct.close()
    assert _windows(db) == expected
    with pytest.raises(MetricsStoreError):
        sink.decode(encode("metric_window", sample("metric_window", resolution="1d", window_seconds=86400)))


def _windows(url: str) -> list[tuple]:
    with psycopg.connect(url) as conn:
        return conn.execute(
            "SELECT resolution, series, window_start, request_count, error_count, cost_usd, rating_sum,"
            " p50_ms, p99_ms, sketch, partitions, final FROM metric_windows ORDER BY 1, 2, 3"
        ).fetchall()


def test_appended_and_compacted_partials_give_the_windows_of_direct_writes(sim, fresh_database, database_url):
    """The sink's path (append, then the compactor) ends exactly where writing directly does,
    replayed and out-of-order partials included."""
    name = f"{psycopg.conninfo.conninfo_to_dict(fresh_database)['dbname']}_inbox"
    inbox_db = psycopg.conninfo.make_conninfo(fresh_database, dbname=name)
    with psycopg.connect(database_url, autocommit=True) as admin:
        admin.execute(f'CREATE DATABASE "{name}"')
    try:
        migrate(fresh_database)
        migrate(inbox_db)
        direct = MetricsStore(fresh_database)
        for batch in batches(sim.parts):
            direct.write(batch)
        direct.idle()
        store = MetricsStore(inbox_db, rollup_every_s=5.0)
        shuffled = sim.parts[::-1] + sim.parts[: len(sim.parts) // 3]  # reversed, and a third replayed
        for batch in batches(shuffled, 3000):
            assert store.append(batch) == len(batch)
        taken = 0
        while (result := store.compact(limit=5000)) is not None:
            taken += result.parts_received
        store.idle()
        assert taken == len(shuffled)
        assert store.compact() is None, "the inbox is empty"
        assert _windows(inbox_db) == _windows(fresh_database) != []
        store.close()
        direct.close()
    finally:
        with psycopg.connect(database_url, autocommit=True) as admin:
            admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def test_a_partial_that_cannot_be_merged_is_rejected_not_left_to_block_the_inbox(store, db):
    from processors.aggregation.sketch import BinMapping, encode_sketch

    coarse = BinMapping(0.05)
    good = sample("metric_window", partition=0)
    bad = sample("metric_window", partition=1, sketch=encode_sketch({coarse.key(1500.0): 3}, 0, coarse))
    bad_counts = sample("metric_window", partition=2, series="s-bad-counts", request_count=1, error_count=5)
    store.append([good, bad, bad_counts])
    rejected = []
    result = store.compact(on_reject=lambda part, exc: rejected.append((part["partition"], type(exc).__name__)))
    assert sorted(rejected) == [(1, "ValueError"), (2, "CheckViolation")]
    assert result.parts_received == 1
    assert store.compact() is None
    assert [r["request_count"] for r in rows(db, where="resolution = '1m'")] == [good["request_count"]]
