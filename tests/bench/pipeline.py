"""Throughput of the real workers: ingest, then trace store, each one process.

    python -m tests.bench.pipeline [--spans 200000]

Publishes realistic traffic to ``llm.spans`` while no worker runs, then lets
each worker drain its backlog alone and times it:

- raw: a bare confluent-kafka consumer reading the same ``llm.spans`` backlog
  (the ceiling: what the broker and client give with no work at all);
- ingest: ``llmpulse run ingest`` (faust) until ``llm.spans.enriched`` holds
  every span (decode, PII masking, cost, encode, produce);
- trace store: ``llmpulse run trace-store`` until its consumer group has
  committed the whole ``llm.spans.enriched`` backlog (decode, COPY, upsert,
  trace summaries) into a fresh database;
- metrics: ``llmpulse run metrics`` until its group has committed the same
  ``llm.spans.enriched`` backlog (decode, windowed aggregation, partials);
- metrics store: ``llmpulse run metrics-store`` over a replay of the partial
  windows the metrics worker just emitted (published again until there are
  ``--replay-rows``, 300,000 by default: the emitted ones alone are a few
  thousand rows, a drain shorter than the progress poll can time). The store
  appends (binary COPY into ``metric_window_inbox``); it drains the replay
  ``--sink-rounds`` times (its offsets rewound each time). Next to it, the
  same rows COPYed into the same table (emptied first) four ways, before the
  first drain and after each (all averaged: COPY speed on this shared
  machine drifts by tens of percent in minutes): decoded beforehand and written by
  psycopg (a client's raw binary COPY: the target's baseline), decoded from
  their messages on the way, as COPY bytes made beforehand (no client work
  at all: what one server backend alone takes), and those bytes over as
  many connections at once as the sink writes with (its
  ``metrics_store_streams``: what the server takes on every core);
- metrics compactor: ``llmpulse run metrics-compactor`` until the inbox holds
  none of the emitted partials (dedupe by rank, merge partials and sketches,
  upsert minutes, queue and roll up hours and days); it runs before the
  replay, whose rows are then dropped (they repeat merged partials).

Rates are steady-state: from the worker's first output to the end of the
backlog; the wall time including start-up is reported next to them.

Results go to ``docs/benchmarks/pipeline.json``.
"""
from __future__ import annotations

import argparse
import dataclasses
import gc
import json
import os
import platform
import signal
import statistics
import subprocess
import sys
import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

import psycopg
from confluent_kafka import Consumer, Producer, TopicPartition

from processors.generator import TrafficModel
from processors.kafka_runtime import FETCH_TUNING
from processors.settings import Settings
from processors.topics import METRIC_WINDOWS, SPANS, SPANS_ENRICHED
from schemas.codec import encode

OUT = Path(__file__).resolve().parents[2] / "docs" / "benchmarks" / "pipeline.json"


def _partitions(consumer: Consumer, topic: str) -> list[TopicPartition]:
    meta = consumer.list_topics(topic, timeout=15).topics[topic]
    return [TopicPartition(topic, p) for p in sorted(meta.partitions)]


def _ends(consumer: Consumer, topic: str) -> dict[int, int]:
    return {tp.partition: consumer.get_watermark_offsets(tp, timeout=15)[1] for tp in _partitions(consumer, topic)}


_PROBES: dict[str, Consumer] = {}


def _committed(bootstrap: str, group: str, topic: str) -> dict[int, int]:
    # One probe per group for the whole run: a new client per poll (every
    # 0.1 s) would cost the worker being measured a share of the two cores.
    probe = _PROBES.get(group)
    if probe is None:
        probe = _PROBES[group] = Consumer({"bootstrap.servers": bootstrap, "group.id": group,
                                           "enable.auto.commit": False})
    parts = probe.committed(_partitions(probe, topic), timeout=15)
    # No commit yet means the group starts at the beginning of the log.
    low = {tp.partition: probe.get_watermark_offsets(tp, timeout=15)[0] for tp in parts}
    return {tp.partition: (tp.offset if tp.offset >= 0 else low[tp.partition]) for tp in parts}


def publish(bootstrap: str, spans: int, seed: int) -> int:
    """Publish about ``spans`` spans as Avro, in end-time order; return the exact count."""
    producer = Producer({"bootstrap.servers": bootstrap, "linger.ms": 20, "enable.idempotence": True,
                         "compression.type": "lz4"})
    # Three minutes of traffic from eight minutes ago (about eight spans a
    # trace): agent spans run for up to eight minutes and must not end more
    # than five minutes in the future (the metrics processor refuses those),
    # and the metrics worker, started a minute or two later, re-reads and
    # emits the windows of the last ~11 minutes (default lateness).
    model = TrafficModel(seed=seed, start=datetime.now(UTC) - timedelta(minutes=8),
                         traces_per_second=spans / 8 / 180)
    batch: list[dict] = []
    for trace in model.traces(10**9):
        batch += trace
        if len(batch) >= spans:
            break
    # Producers export a span when it ends, so a topic is in end-time order
    # (give or take); publishing whole traces in start order instead would
    # make most spans after a long agent run late for the metrics processor.
    batch.sort(key=lambda span: span["end_time"])
    for sent, span in enumerate(batch, 1):
        producer.produce(SPANS.name, key=span["trace_id"].encode(), value=encode("span", span))
        if sent % 10_000 == 0:
            producer.poll(0)
    producer.flush(120)
    return len(batch)


def raw_consume_rate(bootstrap: str, start: dict[int, int], end: dict[int, int]) -> tuple[int, float]:
    """Messages/s of a bare consumer over the [start, end) backlog of llm.spans."""
    consumer = Consumer({"bootstrap.servers": bootstrap, "group.id": f"bench-raw-{uuid.uuid4().hex}",
                         "enable.auto.commit": False, **FETCH_TUNING})  # as the workers fetch
    consumer.assign([TopicPartition(SPANS.name, p, o) for p, o in start.items()])
    total = sum(end[p] - start[p] for p in start)
    seen = 0
    began = time.perf_counter()
    while seen < total:
        # Never more than is left: consume() waits out its timeout for a
        # batch it cannot fill, which would add a second to the ceiling.
        seen += sum(1 for m in consumer.consume(min(5000, total - seen), timeout=1.0) if not m.error())
    elapsed = time.perf_counter() - began
    consumer.close()
    return total, elapsed


def _worker(name: str, env: dict[str, str], log: Path) -> subprocess.Popen:
    with open(log, "ab") as out:
        return subprocess.Popen([sys.executable, "-m", "processors.cli", "run", name, "--metrics-port", "-1"],
                                env=env, stdout=out, stderr=subprocess.STDOUT)


def _stop(proc: subprocess.Popen) -> None:
    proc.send_signal(signal.SIGTERM)
    try:
        proc.wait(timeout=60)
    except subprocess.TimeoutExpired:
        proc.kill()


@dataclass
class Drained:
    """How long a worker took over a backlog: wall time from start, and the
    steady rate once its first output appeared (start-up and group join excluded)."""

    wall_s: float
    steady_per_s: float


def drain(name: str, env: dict[str, str], log: Path, progress, total: int) -> Drained:
    """Start worker ``name``; wait until ``progress()`` reaches ``total``."""
    # What earlier phases wrote (PostgreSQL's heap and WAL, Kafka's log:
    # gigabytes, in the page cache) the kernel writes back about 30 s later,
    # on these same two cores; flushed first, no phase pays for the one before.
    os.sync()
    began = time.perf_counter()
    proc = _worker(name, env, log)
    first: tuple[float, int] | None = None
    try:
        while (done := progress()) < total:
            if proc.poll() is not None:
                raise RuntimeError(f"{name} exited; see {log}")
            if first is None and done > 0:
                first = (time.perf_counter(), done)
            time.sleep(0.1)
        ended = time.perf_counter()
        t0, n0 = first or (began, 0)
        return Drained(ended - began, (total - n0) / max(ended - t0, 1e-9))
    finally:
        _stop(proc)


def read_values(bootstrap: str, topic: str, start: dict[int, int], end: dict[int, int]) -> list[bytes]:
    """The message values of ``topic`` in [start, end)."""
    consumer = Consumer({"bootstrap.servers": bootstrap, "group.id": f"bench-read-{uuid.uuid4().hex}",
                         "enable.auto.commit": False})
    consumer.assign([TopicPartition(topic, p, o) for p, o in start.items()])
    total = sum(end[p] - start[p] for p in start)
    values: list[bytes] = []
    while len(values) < total:
        values += [m.value() for m in consumer.consume(min(5000, total - len(values)), timeout=1.0) if not m.error()]
    consumer.close()
    return values[:total]


def replay_partials(bootstrap: str, values: list[bytes], rows: int) -> int:
    """Publish ``values`` (partials) again and again to ``llm.metric_windows`` until ``rows`` are out.

    What the metrics-store sink sees after its offsets are reset: the same
    partials once more (the compactor keeps one of each). Enough rows for a
    rate that start-up and the 0.1 s progress poll do not distort.
    """
    from schemas.codec import decode

    producer = Producer({"bootstrap.servers": bootstrap, "linger.ms": 20, "enable.idempotence": True,
                         "compression.type": "lz4"})
    keys = [decode(v, expected="metric_window")["series"].encode() for v in values]
    sent = 0
    while sent < rows:
        for key, value in zip(keys, values, strict=True):
            while True:
                try:
                    producer.produce(METRIC_WINDOWS.name, key=key, value=value)
                    break
                except BufferError:  # the local queue is full: let it drain
                    producer.poll(0.1)
            sent += 1
    producer.flush(120)
    return sent


@dataclass
class CopyRates:
    """Seconds for a binary COPY of the sink's rows into its table, four ways."""

    decoded: float   # rows decoded beforehand, psycopg writes each (a client's raw binary COPY)
    decoding: float  # the same, decoding each row from its message on the way
    encoded: float   # the rows' COPY bytes made beforehand, written as they are (one backend's ceiling)
    parallel: float  # the same bytes in 10,000-row COPYs over the sink's number of connections at once


def raw_copy_rates(db_url: str, values: list[bytes], streams: int) -> CopyRates:
    """:class:`CopyRates` of these ``metric_window`` messages' rows, COPYed into the (emptied) inbox.

    The sink's own table, emptied before each COPY, so a baseline and the
    sink start from the same state; the caller empties it before the sink
    runs too. ``streams``: connections of the parallel baseline (the sink's
    ``metrics_store_streams``).
    """
    from schemas.codec import decode
    from sinks.metrics_store import _APPEND as statement  # the sink's own COPY statement
    from sinks.metrics_store import _COPY_SIGNATURE, APPEND_COLUMNS, _inbox_row, inbox_record

    def copy_rows(conn: psycopg.Connection, types: list[str], rows: list[tuple] | None) -> float:
        # ``rows``: decoded beforehand (a client's raw COPY of rows it has);
        # None: each decoded from its message on the way. Not decoded in
        # untimed pauses between chunks: the server would go on with what is
        # buffered meanwhile, off the clock (10-20 % faster than it is).
        began = time.perf_counter()
        with conn.transaction(), conn.cursor() as cur, cur.copy(statement) as copy:
            copy.set_types(types)
            for row in rows if rows is not None else (
                    _inbox_row(decode(v, expected="metric_window")) for v in values):
                copy.write_row(row)
        return time.perf_counter() - began

    def copy_bytes(conn: psycopg.Connection, rows: list[bytes]) -> float:
        began = time.perf_counter()
        with conn.transaction(), conn.cursor() as cur, cur.copy(statement) as copy:
            copy.write(_COPY_SIGNATURE)
            for at in range(0, len(rows), 10_000):
                copy.write(memoryview(b"".join(rows[at:at + 10_000])))  # as the sink writes
        return time.perf_counter() - began

    def copy_parallel(rows: list[bytes]) -> float:
        # What the sink does with its write streams, without Kafka or
        # decoding: batches of 10,000 rows, each stream its own connection.
        batches = [rows[at:at + 10_000] for at in range(0, len(rows), 10_000)]

        def copy_every(nth: int, conn: psycopg.Connection) -> None:
            for batch in batches[nth::streams]:
                with conn.transaction(), conn.cursor() as cur, cur.copy(statement) as copy:
                    copy.write(memoryview(b"".join([_COPY_SIGNATURE, *batch])))

        conns = [psycopg.connect(db_url, autocommit=True) for _ in range(streams)]
        try:
            began = time.perf_counter()
            with ThreadPoolExecutor(streams) as pool:
                for done in [pool.submit(copy_every, i, c) for i, c in enumerate(conns)]:
                    done.result()
            return time.perf_counter() - began
        finally:
            for c in conns:
                c.close()

    with psycopg.connect(db_url, autocommit=True) as conn:
        types = [r[0].split("(")[0] for r in conn.execute(  # numeric(18,9) -> numeric
            "SELECT format_type(atttypid, atttypmod) FROM pg_attribute"
            " WHERE attrelid = 'metric_window_inbox'::regclass"
            " AND attname = ANY(%s) ORDER BY array_position(%s, attname::text)",
            (list(APPEND_COLUMNS), list(APPEND_COLUMNS))).fetchall()]
        encoded = [inbox_record(v) for v in values]
        if not all(type(r) is bytes for r in encoded):
            raise RuntimeError("sinks._inbox_copy is not built (pip install -e .)")
        # Without the cyclic collector: it would re-scan the rows held here
        # on every collection and make these baselines look slower than they are.
        gc.disable()
        try:
            decoded = [_inbox_row(decode(v, expected="metric_window")) for v in values]
            rates = []
            for run in (lambda: copy_rows(conn, types, decoded),
                        lambda: copy_rows(conn, types, None),
                        lambda: copy_bytes(conn, encoded),
                        lambda: copy_parallel(encoded)):
                conn.execute("TRUNCATE metric_window_inbox")
                os.sync()  # as in drain()
                rates.append(run())
        finally:
            decoded = None  # freed before the collector is back
            gc.enable()
        conn.execute("TRUNCATE metric_window_inbox")
    return CopyRates(*rates)


def _mean_rates(rounds: list[CopyRates]) -> CopyRates:
    return CopyRates(*map(statistics.mean, zip(*map(dataclasses.astuple, rounds), strict=True)))


def _rewind(group: str, bootstrap: str, offsets: dict[int, int]) -> None:
    """Set ``group``'s committed offsets on ``llm.metric_windows`` (no member may be running)."""
    consumer = Consumer({"bootstrap.servers": bootstrap, "group.id": group, "enable.auto.commit": False})
    try:
        consumer.commit(offsets=[TopicPartition(METRIC_WINDOWS.name, p, o) for p, o in offsets.items()],
                        asynchronous=False)
    finally:
        consumer.close()


def _inbox_rows(db_url: str) -> int:
    with psycopg.connect(db_url) as conn:
        return conn.execute("SELECT count(*) FROM metric_window_inbox").fetchone()[0]


def _fresh_database(admin_url: str, name: str) -> str:
    with psycopg.connect(admin_url, autocommit=True) as conn:
        conn.execute(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")
        conn.execute(f"CREATE DATABASE {name}")
    info = psycopg.conninfo.conninfo_to_dict(admin_url) | {"dbname": name}
    url = psycopg.conninfo.make_conninfo(**info)
    subprocess.run([sys.executable, "-m", "processors.cli", "db", "migrate", "--database-url", url],
                   check=True, stdout=subprocess.DEVNULL)
    return url


def _total(offsets: dict[int, int]) -> int:
    return sum(offsets.values())


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--spans", type=int, default=200_000)
    parser.add_argument("--replay-rows", type=int, default=300_000,
                        help="partials the metrics-store sink is timed on (the emitted ones, replayed)")
    parser.add_argument("--sink-rounds", type=int, default=2,
                        help="times the metrics-store sink drains the replay, each followed by the COPY baselines")
    args = parser.parse_args(argv)
    settings = Settings()
    bootstrap = settings.kafka_bootstrap_servers
    admin_url = settings.database_url.get_secret_value()
    bench_url = _fresh_database(admin_url, "llmpulse_bench_pipeline")

    logs = Path(settings.state_dir) / "bench"
    logs.mkdir(parents=True, exist_ok=True)
    # Default lateness (10 min): on assignment the metrics worker re-reads the
    # last ~12 minutes of its input, so on a machine where another run
    # published in that time the metrics rate also pays for re-reading it.
    env = {**os.environ, "DATABASE_URL": bench_url, "LLMPULSE_LOG_LEVEL": "WARNING"}

    # Let each worker catch up with what is already there, so the timed
    # backlog is exactly what this run publishes.
    probe = Consumer({"bootstrap.servers": bootstrap, "group.id": "bench-probe"})
    for name, topic, group in (("ingest", SPANS.name, "llmpulse-ingest"),
                               ("trace-store", SPANS_ENRICHED.name, "llmpulse-trace-store"),
                               ("metrics", SPANS_ENRICHED.name, "llmpulse-metrics"),
                               ("metrics-store", METRIC_WINDOWS.name, "llmpulse-metrics-store")):
        backlog_start = _total(_committed(bootstrap, group, topic))
        backlog = _total(_ends(probe, topic)) - backlog_start
        drain(name, env, logs / f"{name}.log",
              lambda: _total(_committed(bootstrap, group, topic)) - backlog_start, backlog)

    start = _ends(probe, SPANS.name)
    print(f"publishing ~{args.spans} spans ...", flush=True)
    published = publish(bootstrap, args.spans, seed=int(time.time()))
    end = _ends(probe, SPANS.name)
    raw_n, raw_s = raw_consume_rate(bootstrap, start, end)

    enriched_start = _total(_ends(probe, SPANS_ENRICHED.name))
    ingest = drain("ingest", env, logs / "ingest.log",
                   lambda: _total(_ends(probe, SPANS_ENRICHED.name)) - enriched_start, published)
    store_start = _total(_committed(bootstrap, "llmpulse-trace-store", SPANS_ENRICHED.name))
    store = drain("trace-store", env, logs / "trace-store.log",
                  lambda: _total(_committed(bootstrap, "llmpulse-trace-store", SPANS_ENRICHED.name)) - store_start,
                  _total(_ends(probe, SPANS_ENRICHED.name)) - store_start)
    metrics_start = _total(_committed(bootstrap, "llmpulse-metrics", SPANS_ENRICHED.name))
    windows_start = _ends(probe, METRIC_WINDOWS.name)
    metrics = drain("metrics", env, logs / "metrics.log",
                    lambda: _total(_committed(bootstrap, "llmpulse-metrics", SPANS_ENRICHED.name)) - metrics_start,
                    _total(_ends(probe, SPANS_ENRICHED.name)) - metrics_start)
    windows_end = _ends(probe, METRIC_WINDOWS.name)
    partials = _total(windows_end) - _total(windows_start)
    def store_committed() -> int:
        return _total(_committed(bootstrap, "llmpulse-metrics-store", METRIC_WINDOWS.name))

    sink_start = store_committed()
    drain("metrics-store", env, logs / "metrics-store.log", lambda: store_committed() - sink_start,
          _total(windows_end) - sink_start)
    inbox = _inbox_rows(bench_url)
    compactor = drain("metrics-compactor", env, logs / "metrics-compactor.log",
                      lambda: inbox - _inbox_rows(bench_url), inbox)

    # The sink's rate, on a replay of those partials big enough to time,
    # drained --sink-rounds times between rounds of the COPY baselines into
    # the same (emptied) table: COPY speed on a shared machine drifts by tens
    # of percent in minutes.
    emitted = read_values(bootstrap, METRIC_WINDOWS.name, windows_start, windows_end)
    print(f"replaying {len(emitted)} partials to {args.replay_rows} rows ...", flush=True)
    replay_start = _ends(probe, METRIC_WINDOWS.name)
    replay_partials(bootstrap, emitted, args.replay_rows)
    replay_end = _ends(probe, METRIC_WINDOWS.name)
    replayed = read_values(bootstrap, METRIC_WINDOWS.name, replay_start, replay_end)
    streams = settings.metrics_store_streams
    # Autovacuum's pass over the inbox after 300,000 inserts would land in
    # whichever timed phase is running (a whole core for seconds); the bench
    # database is dropped afterwards.
    with psycopg.connect(bench_url, autocommit=True) as conn:
        conn.execute("ALTER TABLE metric_window_inbox SET (autovacuum_enabled = false)")
    copies = [raw_copy_rates(bench_url, replayed, streams)]
    sinks = []
    for _ in range(args.sink_rounds):
        _rewind("llmpulse-metrics-store", bootstrap, replay_start)
        sinks.append(drain("metrics-store", env, logs / "metrics-store.log",
                           lambda: store_committed() - _total(replay_start), _total(replay_end) - _total(replay_start)))
        copies.append(raw_copy_rates(bench_url, replayed, streams))  # leaves the inbox empty
    copy = _mean_rates(copies)
    sink = Drained(statistics.mean(d.wall_s for d in sinks), statistics.mean(d.steady_per_s for d in sinks))
    copy_n = len(replayed)
    probe.close()
    for client in _PROBES.values():
        client.close()

    raw = raw_n / raw_s
    result = {
        "spans": published,
        "raw_consume_spans_per_s": round(raw),
        "ingest_spans_per_s": round(ingest.steady_per_s),
        "trace_store_spans_per_s": round(store.steady_per_s),
        "ingest_vs_raw": round(ingest.steady_per_s / raw, 3),
        "trace_store_vs_raw": round(store.steady_per_s / raw, 3),
        "metrics_spans_per_s": round(metrics.steady_per_s),
        "metrics_vs_raw": round(metrics.steady_per_s / raw, 3),
        "metrics_partials": partials,
        "metrics_store_rows_per_s": round(sink.steady_per_s),
        "metrics_store_rounds_rows_per_s": [round(d.steady_per_s) for d in sinks],
        "metrics_store_rows": copy_n,
        "raw_binary_copy_rows_per_s": round(copy_n / copy.decoded),
        "metrics_store_vs_copy": round(sink.steady_per_s / (copy_n / copy.decoded), 3),
        "decode_and_binary_copy_rows_per_s": round(copy_n / copy.decoding),
        "metrics_store_vs_decode_and_copy": round(sink.steady_per_s / (copy_n / copy.decoding), 3),
        "preencoded_copy_rows_per_s": round(copy_n / copy.encoded),
        "metrics_store_vs_preencoded_copy": round(sink.steady_per_s / (copy_n / copy.encoded), 3),
        "metrics_store_streams": streams,
        "parallel_preencoded_copy_rows_per_s": round(copy_n / copy.parallel),
        "metrics_store_vs_parallel_preencoded_copy": round(sink.steady_per_s / (copy_n / copy.parallel), 3),
        "metrics_compactor_partials_per_s": round(compactor.steady_per_s),
        "metrics_compactor_wall_s": round(compactor.wall_s, 1),
        "ingest_wall_s": round(ingest.wall_s, 1),
        "trace_store_wall_s": round(store.wall_s, 1),
        "metrics_wall_s": round(metrics.wall_s, 1),
        "metrics_store_wall_s": round(sink.wall_s, 1),
        "note": "rates from the first output to the end of the backlog (start-up and group join excluded; "
                "*_wall_s include them); one worker process each, run one after the other",
        "machine": f"{os.cpu_count()} cores, {platform.python_implementation()} {platform.python_version()}",
        "date": time.strftime("%Y-%m-%d"),
    }
    OUT.parent.mkdir(parents=True, exist_ok=True)
    OUT.write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps(result, indent=2))
    return result


if __name__ == "__main__":
    main()
