"""Spans and feedback through the metrics processor and the metrics store into PostgreSQL."""
from __future__ import annotations

import os
import subprocess
import time
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path

import psycopg
import pytest

from processors.topics import FEEDBACK_ENRICHED, METRIC_WINDOWS, SPANS_ENRICHED
from schemas.codec import encode
from schemas.samples import sample
from sinks.migrate import migrate
from tests.integration.helpers import skip_backlog
from tests.integration.workers import WorkerProcess, wait_until, worker_env

N_SPANS = 3000


@pytest.fixture
def metrics_pipeline(bootstrap, fresh_database, tmp_path):
    migrate(fresh_database)
    # Earlier runs' partials and feedback are not this test's business (the
    # metrics processor still replays the last minutes of spans by design).
    skip_backlog(bootstrap, "llmpulse-metrics-store", [METRIC_WINDOWS.name])
    skip_backlog(bootstrap, "llmpulse-feedback-store", [FEEDBACK_ENRICHED.name])
    env = worker_env(bootstrap, fresh_database, tmp_path / "state")
    names = ("metrics", "metrics-store", "metrics-compactor", "feedback-store")
    workers = [WorkerProcess(name, env, tmp_path).start() for name in names]
    yield fresh_database, workers
    for worker in workers:
        worker.stop()


def _traffic(project: str, now: datetime) -> tuple[list[dict], list[dict]]:
    """N_SPANS spans over the last three minutes (one error in ten) and feedback on some traces."""
    spans, feedback = [], []
    for i in range(N_SPANS):
        end = now - timedelta(seconds=180) + timedelta(seconds=180 * i / N_SPANS)
        trace_id = uuid.uuid4().hex
        spans.append(sample(
            "span", trace_id=trace_id, span_id=f"{i:016x}", parent_span_id=None, project=project,
            start_time=end - timedelta(milliseconds=200 + i % 500), end_time=end,
            status="error" if i % 10 == 0 else "ok", cost_usd=0.001,
        ))
        if i % 30 == 0:
            feedback.append({**sample("feedback"), "feedback_id": f"fb-{trace_id}", "trace_id": trace_id,
                             "project": project, "time": end + timedelta(seconds=1), "rating": 4.0})
    return spans, feedback


def _totals(dsn: str, project: str, resolution: str) -> tuple:
    with psycopg.connect(dsn) as conn:
        return conn.execute(
            "SELECT coalesce(sum(request_count), 0), coalesce(sum(error_count), 0), coalesce(sum(feedback_count), 0),"
            " coalesce(sum(cost_usd), 0) FROM metric_windows WHERE project = %s AND resolution = %s",
            (project, resolution),
        ).fetchone()


def _feedback_rows(dsn: str, project: str) -> int:
    with psycopg.connect(dsn) as conn:
        return conn.execute("SELECT count(*) FROM feedback WHERE project = %s", (project,)).fetchone()[0]


def _produce(producer, spans, feedback) -> None:
    for span in spans:
        producer.produce(SPANS_ENRICHED.name, key=span["trace_id"].encode(), value=encode("span", span))
    for fb in feedback:
        producer.produce(FEEDBACK_ENRICHED.name, key=fb["trace_id"].encode(), value=encode("feedback", fb))
    producer.flush(60)


def test_windows_are_exact_in_every_resolution(metrics_pipeline, producer):
    dsn, workers = metrics_pipeline
    project = f"metrics-{uuid.uuid4().hex[:8]}"
    spans, feedback = _traffic(project, datetime.now(UTC))
    _produce(producer, spans, feedback)
    expected = (N_SPANS, N_SPANS // 10, len(feedback))

    wait_until(lambda: _totals(dsn, project, "1m")[:3] == expected, 120, f"1m windows {expected}", workers)
    wait_until(lambda: _totals(dsn, project, "1h")[:3] == expected, 60, "1h rollups", workers)
    wait_until(lambda: _totals(dsn, project, "1d")[:3] == expected, 60, "1d rollups", workers)
    assert float(_totals(dsn, project, "1m")[3]) == pytest.approx(N_SPANS * 0.001)
    with psycopg.connect(dsn) as conn:
        p95 = conn.execute(
            "SELECT max(p95_ms), min(p50_ms) FROM metric_windows WHERE project = %s AND resolution = '1d'", (project,)
        ).fetchone()
        assert 600 <= p95[0] <= 720 and 400 <= p95[1] <= 480  # latencies are 200..699 ms, uniform
    wait_until(lambda: _feedback_rows(dsn, project) == len(feedback), 60, "feedback rows", workers)


def test_a_killed_metrics_worker_rebuilds_its_windows_exactly(metrics_pipeline, producer):
    dsn, workers = metrics_pipeline
    metrics = workers[0]
    project = f"metrics-{uuid.uuid4().hex[:8]}"
    spans, feedback = _traffic(project, datetime.now(UTC))
    half = len(spans) // 2
    _produce(producer, spans[:half], [])
    wait_until(lambda: _totals(dsn, project, "1m")[0] > 0, 120, "the first windows", workers)
    metrics.kill()
    _produce(producer, spans[half:], feedback)
    metrics.start()
    expected = (N_SPANS, N_SPANS // 10, len(feedback))
    wait_until(lambda: _totals(dsn, project, "1m")[:3] == expected, 180, f"1m windows {expected} after restart", workers)
    wait_until(lambda: _totals(dsn, project, "1d")[:3] == expected, 60, "1d rollups after restart", workers)


def _services(command: str, dsn: str) -> None:
    """Stop or start the real PostgreSQL server that `make services` runs."""
    port = str(psycopg.conninfo.conninfo_to_dict(dsn).get("port") or 5432)
    script = Path(__file__).resolve().parents[2] / "deploy" / "local" / "services.sh"
    result = subprocess.run([str(script), command], env={**os.environ, "LLMPULSE_PG_PORT": port},
                            capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stdout + result.stderr


def test_a_30_second_database_outage_loses_nothing(metrics_pipeline, producer):
    dsn, workers = metrics_pipeline
    project = f"metrics-{uuid.uuid4().hex[:8]}"
    spans, feedback = _traffic(project, datetime.now(UTC))
    half = len(spans) // 2
    _produce(producer, spans[:half], [])
    wait_until(lambda: _totals(dsn, project, "1m")[0] > 0, 120, "the first windows", workers)

    _services("pg-stop", dsn)
    try:
        _produce(producer, spans[half:], feedback)  # arrives while the database is down
        time.sleep(30)
        for worker in workers:
            assert worker.alive(), f"{worker.name} died during the outage:\n{worker.log()}"
    finally:
        _services("pg-start", dsn)

    expected = (N_SPANS, N_SPANS // 10, len(feedback))
    wait_until(lambda: _totals(dsn, project, "1m")[:3] == expected, 180, f"1m windows {expected} after the outage",
               workers)
    wait_until(lambda: _totals(dsn, project, "1h")[:3] == expected, 60, "1h rollups after the outage", workers)
    wait_until(lambda: _totals(dsn, project, "1d")[:3] == expected, 60, "1d rollups after the outage", workers)
    # The feedback store backs off up to 30 s between tries, so it may still be waiting.
    wait_until(lambda: _feedback_rows(dsn, project) == len(feedback), 90, "feedback rows after the outage", workers)
    assert "database unavailable" in workers[1].log()  # the store really waited, it did not skip
