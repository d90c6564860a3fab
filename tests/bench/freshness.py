"""End-to-end freshness: a span produced -> its 1-minute window row visible.

    python -m tests.bench.freshness [--rate 5000] [--seconds 60]

Runs the real chain as separate processes (``ingest``, ``metrics``,
``metrics-store``, ``metrics-compactor``) on a fresh database, produces realistic traffic at
``--rate`` spans/s with current timestamps, and ten times a second (after ``--warmup``
seconds) a *marker* span whose project is new (``fresh-<n>``). Freshness of a marker is the time
from its production until a ``metric_windows`` row for its project is
visible to a reader polling every 50 ms (so it includes every hop: broker,
ingest, the metrics worker's 1 s tick, the store's append, the compactor's
merge and commit).

Results go to ``docs/benchmarks/freshness.json``.
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import threading
import time
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path

import psycopg
from confluent_kafka import Producer

from processors.generator import TrafficModel
from processors.settings import Settings
from processors.topics import METRIC_WINDOWS, SPANS, SPANS_ENRICHED
from schemas.codec import encode
from tests.bench.pipeline import _stop, _worker
from tests.integration.helpers import skip_backlog

OUT = Path(__file__).resolve().parents[2] / "docs" / "benchmarks" / "freshness.json"
WORKERS = ("ingest", "metrics", "metrics-store", "metrics-compactor")


def _quantile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def _fresh_db(admin_url: str, name: str) -> str:
    with psycopg.connect(admin_url, autocommit=True) as conn:
        conn.execute(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")
        conn.execute(f"CREATE DATABASE {name}")
    url = psycopg.conninfo.make_conninfo(**(psycopg.conninfo.conninfo_to_dict(admin_url) | {"dbname": name}))
    subprocess.run([sys.executable, "-m", "processors.cli", "db", "migrate", "--database-url", url],
                   check=True, stdout=subprocess.DEVNULL)
    return url


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rate", type=int, default=5000, help="spans per second")
    parser.add_argument("--seconds", type=int, default=60)
    parser.add_argument("--warmup", type=float, default=20.0,
                        help="seconds at the start whose markers are not counted (workers catching up with "
                             "the metrics worker's replay of the last minutes)")
    args = parser.parse_args(argv)
    settings = Settings()
    bootstrap = settings.kafka_bootstrap_servers
    db_url = _fresh_db(settings.database_url.get_secret_value(), "llmpulse_bench_freshness")
    logs = Path(settings.state_dir) / "bench"
    logs.mkdir(parents=True, exist_ok=True)
    # Lateness 60 s (the traffic has current times and no trace over 20 s):
    # on assignment the metrics worker re-reads lateness + 2 min of its input,
    # and with the default 10 min that would include earlier benchmark runs,
    # whose re-processing then overlaps the measured minute. Windows are
    # emitted every tick whatever the lateness, so freshness is unchanged.
    env = {**os.environ, "DATABASE_URL": db_url, "LLMPULSE_LOG_LEVEL": "WARNING",
           "LLMPULSE_METRICS_LATENESS_S": "60"}

    # Only what this run produces is timed: every worker starts at the end of its input.
    skip_backlog(bootstrap, "llmpulse-ingest", [SPANS.name, "otlp_spans", "llm.feedback"])
    skip_backlog(bootstrap, "llmpulse-metrics", [SPANS_ENRICHED.name, "llm.feedback.enriched"])
    skip_backlog(bootstrap, "llmpulse-metrics-store", [METRIC_WINDOWS.name])
    procs = [_worker(name, env, logs / f"freshness-{name}.log") for name in WORKERS]
    producer = Producer({"bootstrap.servers": bootstrap, "linger.ms": 5, "enable.idempotence": True,
                         "compression.type": "lz4"})
    try:
        time.sleep(8)  # group joins; markers sent before the workers run would measure start-up
        lead = 5.0
        start = datetime.now(UTC) + timedelta(seconds=lead)
        model = TrafficModel(seed=11, start=start)
        print(f"generating {args.rate * args.seconds} spans ...", flush=True)
        spans: list[dict] = []
        long_traces = 0
        for trace in model.traces(10**9):
            if max(s["end_time"] for s in trace) - min(s["start_time"] for s in trace) > timedelta(seconds=20):
                long_traces += 1  # would only be sent after the run; the rate is what is measured
                continue
            # The model's own clock follows daily traffic patterns; re-time each
            # trace so that spans start at exactly --rate per second.
            shift = start + timedelta(seconds=len(spans) / args.rate) - min(s["start_time"] for s in trace)
            for span in trace:
                span["start_time"] += shift
                span["end_time"] += shift
                if span.get("first_token_time"):
                    span["first_token_time"] += shift
            spans += trace
            if len(spans) >= args.rate * args.seconds:
                break
        spans.sort(key=lambda s: s["end_time"])
        # Unique per run: the metrics worker replays the last minutes, earlier runs' markers included.
        run_id = uuid.uuid4().hex[:6]
        sent_at: dict[str, float] = {}
        seen: dict[str, float] = {}
        done_at = float("inf")

        def poll() -> None:
            # Concurrently with producing: a marker is seen when a reader could first see it.
            with psycopg.connect(db_url, autocommit=True) as conn:
                while time.monotonic() < done_at and not (sent_at and len(seen) >= len(sent_at) and i >= len(spans)):
                    rows = conn.execute("SELECT DISTINCT project FROM metric_windows WHERE resolution = '1m'"
                                        " AND project LIKE %s", (f"fresh-{run_id}-%",)).fetchall()
                    t = time.monotonic()
                    for (project,) in rows:
                        seen.setdefault(project, t)
                    time.sleep(0.05)

        poller = threading.Thread(target=poll, daemon=True)
        marker = 0
        began = time.monotonic()
        next_marker = began + args.warmup
        i = 0
        poller.start()
        print(f"producing at {args.rate} spans/s for {args.seconds} s ...", flush=True)
        while i < len(spans):
            now = datetime.now(UTC)
            while i < len(spans) and spans[i]["end_time"] <= now:
                span = spans[i]
                producer.produce(SPANS.name, key=span["trace_id"].encode(), value=encode("span", span))
                i += 1
            if time.monotonic() >= next_marker:
                project = f"fresh-{run_id}-{marker}"
                span = {**spans[max(i - 1, 0)], "project": project, "trace_id": f"{marker:032x}",
                        "start_time": now - timedelta(milliseconds=300), "end_time": now}
                producer.produce(SPANS.name, key=span["trace_id"].encode(), value=encode("span", span))
                sent_at[project] = time.monotonic()
                marker += 1
                next_marker += 0.1
            producer.poll(0)
            time.sleep(0.002)
        producer.flush(60)
        done_at = time.monotonic() + 60
        poller.join()
        for proc in procs:
            if proc.poll() is not None:
                raise RuntimeError(f"a worker exited; see {logs}")
    finally:
        for proc in procs:
            _stop(proc)
    lags = [seen[p] - sent_at[p] for p in sent_at if p in seen]
    result = {
        "rate_spans_per_s": args.rate,
        "seconds": args.seconds,
        "warmup_s": args.warmup,
        "markers": len(sent_at),
        "markers_seen": len(lags),
        "long_traces_left_out": long_traces,
        "freshness_p50_s": round(_quantile(lags, 0.50), 2) if lags else None,
        "freshness_p99_s": round(_quantile(lags, 0.99), 2) if lags else None,
        "freshness_max_s": round(max(lags), 2) if lags else None,
        "note": "span produced -> its metric_windows row visible to a reader polling every 50 ms; "
                "ingest, metrics, metrics-store and metrics-compactor as separate processes, broker and PostgreSQL on the same machine",
        "machine": f"{os.cpu_count()} cores, {platform.python_implementation()} {platform.python_version()}",
        "date": time.strftime("%Y-%m-%d"),
    }
    OUT.parent.mkdir(parents=True, exist_ok=True)
    OUT.write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps(result, indent=2))
    return result


if __name__ == "__main__":
    main()
