"""The sink runner against the real broker and a real database that goes away."""
from __future__ import annotations

import contextlib
import threading
import time
import uuid
from collections.abc import Iterator
from datetime import timedelta

import psycopg
import pytest
from confluent_kafka import Consumer, TopicPartition

from processors.settings import Settings
from processors.topics import DEADLETTER
from schemas.codec import decode, encode
from schemas.samples import sample
from sinks.migrate import migrate
from sinks.runner import BatchSink, SinkRunner
from sinks.trace_store import TraceStore
from tests.integration.helpers import consume


def _spans(n: int) -> list[dict]:
    trace_id = uuid.uuid4().hex
    return [sample("span", trace_id=trace_id, span_id=f"{i:016x}", parent_span_id=None if i == 0 else f"{0:016x}")
            for i in range(n)]


@pytest.fixture
def store_db(fresh_database):
    migrate(fresh_database)
    return fresh_database


def _runner(bootstrap, topic, dsn, registry=None) -> SinkRunner:
    sink = BatchSink("test-store", (topic,), lambda v: decode(v, expected="span"), TraceStore(dsn).write)
    return SinkRunner(sink, Settings(kafka_bootstrap_servers=bootstrap), registry, batch_size=50,
                      max_wait_s=0.2, max_backoff_s=1.0, group_id=f"test-{uuid.uuid4().hex}")


def _retries(runner: SinkRunner) -> float:
    value = runner.metrics.registry.get_sample_value("llmpulse_sink_retries_total", {"processor": "test-store"})
    return value or 0.0


def _count(dsn: str) -> int:
    with psycopg.connect(dsn) as conn:
        return conn.execute("SELECT count(*) FROM spans").fetchone()[0]


def _set_connections(admin_url: str, dbname: str, allowed: bool) -> None:
    with psycopg.connect(admin_url, autocommit=True) as conn:
        conn.execute(f'ALTER DATABASE "{dbname}" ALLOW_CONNECTIONS {str(allowed).lower()}')
        if not allowed:
            conn.execute("SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = %s", (dbname,))


def _wait(condition, timeout_s: float, what: str) -> None:
    deadline = time.monotonic() + timeout_s
    while not condition():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.2)


def test_waits_out_a_database_outage_and_loses_nothing(bootstrap, producer, topic_factory, store_db, database_url):
    topic = topic_factory("sink", partitions=2)
    dbname = psycopg.conninfo.conninfo_to_dict(store_db)["dbname"]
    spans = _spans(300)
    _set_connections(database_url, dbname, allowed=False)
    for span in spans:
        producer.produce(topic, key=span["trace_id"].encode(), value=encode("span", span))
    producer.flush(30)

    runner = _runner(bootstrap, topic, store_db)
    thread = threading.Thread(target=runner.run, daemon=True)
    thread.start()
    try:
        _wait(lambda: _retries(runner) >= 2, 60, "retries")
        time.sleep(2)  # the outage goes on; the runner must keep waiting, not skip
        _set_connections(database_url, dbname, allowed=True)
        _wait(lambda: _count(store_db) == len(spans), 60, "every span after the outage")
    finally:
        _set_connections(database_url, dbname, allowed=True)
        runner.stop()
        thread.join(30)
    with psycopg.connect(store_db) as conn:
        assert conn.execute("SELECT span_count FROM traces").fetchall() == [(300,)]
    assert not thread.is_alive()
    assert _retries(runner) >= 2
    # Offsets were committed once the rows were in: a restart would not replay them.
    probe = Consumer({"bootstrap.servers": bootstrap, "group.id": runner.group_id})
    try:
        parts = probe.committed([TopicPartition(topic, p) for p in (0, 1)], timeout=15)
        ends = [probe.get_watermark_offsets(TopicPartition(topic, p), timeout=15)[1] for p in (0, 1)]
        # (all spans share a key, so one partition holds them; the other has no offset to commit)
        assert [tp.offset for tp, end in zip(parts, ends) if end > 0] == [e for e in ends if e > 0] == [300]
    finally:
        probe.close()


def test_a_row_the_database_rejects_is_dead_lettered_and_the_rest_stored(bootstrap, producer, topic_factory, store_db):
    topic = topic_factory("sink", partitions=1)
    spans = _spans(20)
    bad = spans[7]
    bad["end_time"] = bad["start_time"] - timedelta(seconds=1)  # the codec allows it; the table does not
    for span in spans:
        producer.produce(topic, key=f'{span["trace_id"]}/{span["span_id"]}'.encode(), value=encode("span", span))
    producer.flush(30)

    runner = _runner(bootstrap, topic, store_db)
    thread = threading.Thread(target=runner.run, daemon=True)
    thread.start()
    try:
        _wait(lambda: _count(store_db) == 19, 60, "19 good spans")
    finally:
        runner.stop()
        thread.join(30)
    [dead] = consume(bootstrap, DEADLETTER.name, 1, timeout_s=30, where=lambda m: m.key() == f'{bad["trace_id"]}/{bad["span_id"]}'.encode())
    record = decode(dead.value(), expected="dead_letter")
    assert record["processor"] == "test-store" and record["topic"] == topic
    assert "spans_time_order_check" in record["error"]


def _committed(bootstrap: str, group: str, topic: str) -> int:
    probe = Consumer({"bootstrap.servers": bootstrap, "group.id": group})
    try:
        [tp] = probe.committed([TopicPartition(topic, 0)], timeout=15)
        return max(tp.offset, 0)
    finally:
        probe.close()


@contextlib.contextmanager
def _running(sink: BatchSink, bootstrap: str) -> Iterator[SinkRunner]:
    """A runner over ``sink`` (batches of up to 10) on its own thread; stopped and joined on exit."""
    runner = SinkRunner(sink, Settings(kafka_bootstrap_servers=bootstrap), batch_size=10, max_wait_s=0.2,
                        group_id=f"test-{uuid.uuid4().hex}")
    thread = threading.Thread(target=runner.run, daemon=True)
    thread.start()
    try:
        yield runner
    finally:
        runner.stop()
        thread.join(30)


def _publish_numbers(producer, topic: str, n: int) -> None:
    for i in range(n):
        producer.produce(topic, key=b"k", value=str(i).encode())
    producer.flush(30)


def test_offsets_wait_for_the_background_write_and_writes_stay_in_order(bootstrap, producer, topic_factory):
    """While batch N is written on the writer thread the next is consumed, but N's offsets are
    committed only once N is written, and N+1 is written only after N."""
    topic = topic_factory("sink", partitions=1)
    _publish_numbers(producer, topic, 30)
    release, written, started = threading.Event(), [], threading.Event()

    def write(batch: list[int]) -> None:
        started.set()
        assert release.wait(30)
        written.extend(batch)

    sink = BatchSink("test-order", (topic,), lambda v: int(v.decode()), write)
    with _running(sink, bootstrap) as runner:
        try:
            assert started.wait(30)
            time.sleep(1.0)  # the loop has consumed the next batch by now, and must still be waiting
            assert written == [] and _committed(bootstrap, runner.group_id, topic) == 0
            release.set()
            _wait(lambda: _committed(bootstrap, runner.group_id, topic) == 30, 30, "all offsets committed")
        finally:
            release.set()
    assert written == list(range(30))


def test_with_two_write_streams_a_later_batch_is_written_meanwhile_but_offsets_stay_in_order(
        bootstrap, producer, topic_factory):
    """``write_streams=2``: while the first batch's write is held, the next batch is written on the
    second stream, yet nothing is committed until the first is in; then everything is."""
    topic = topic_factory("sink", partitions=1)
    _publish_numbers(producer, topic, 30)
    release, written, later_written = threading.Event(), [], threading.Event()
    lock = threading.Lock()

    def write(batch: list[int]) -> None:
        if 0 in batch:
            assert release.wait(30)
        with lock:
            written.extend(batch)
        if 0 not in batch:
            later_written.set()

    sink = BatchSink("test-streams", (topic,), lambda v: int(v.decode()), write, write_streams=2)
    with _running(sink, bootstrap) as runner:
        try:
            assert later_written.wait(30), "the second stream never wrote while the first was held"
            time.sleep(1.0)  # time enough to commit the later batch, which must not happen
            assert 0 not in written and _committed(bootstrap, runner.group_id, topic) == 0
            release.set()
            _wait(lambda: _committed(bootstrap, runner.group_id, topic) == 30, 30, "all offsets committed")
        finally:
            release.set()
    assert sorted(written) == list(range(30))


def test_batch_decoder_declines_go_through_decode_and_bad_ones_are_dead_lettered(bootstrap, producer, topic_factory):
    """``decode_many`` answers what it can; a None is decoded by ``decode``, which names a bad message."""
    topic = topic_factory("sink", partitions=1)
    values = [b"fast:1", b"2", b"bad", b"fast:4", b"5"]
    for value in values:
        producer.produce(topic, key=value, value=value)
    producer.flush(30)
    written: list[int] = []
    sink = BatchSink(
        "test-many", (topic,), decode=lambda v: int(v.decode()),  # ValueError for b"bad"
        write=written.extend,
        decode_many=lambda vs: [int(v[5:]) if v.startswith(b"fast:") else None for v in vs],
    )
    with _running(sink, bootstrap) as runner:
        _wait(lambda: _committed(bootstrap, runner.group_id, topic) == len(values), 30, "all offsets committed")
    assert sorted(written) == [1, 2, 4, 5]
    [dead] = consume(bootstrap, DEADLETTER.name, 1, timeout_s=30, where=lambda m: m.value() and b"test-many" in m.value()
                     and topic.encode() in m.value())
    record = decode(dead.value(), expected="dead_letter")
    assert record["processor"] == "test-many" and record["offset"] == 2 and "'bad'" in record["error"]


def test_trace_store_replays_and_partial_overlaps_change_nothing(store_db):
    store = TraceStore(store_db)
    spans = _spans(30)
    assert store.write(spans[:20]).spans_inserted == 20  # fast path: straight COPY
    # A replay overlapping what is stored takes the upsert path: only the 10 new spans count.
    assert store.write(spans[10:]).spans_inserted == 10
    assert store.write(spans).spans_inserted == 0
    with psycopg.connect(store_db) as conn:
        assert conn.execute("SELECT count(*) FROM spans").fetchone()[0] == 30
        assert conn.execute("SELECT span_count FROM traces").fetchall() == [(30,)]
