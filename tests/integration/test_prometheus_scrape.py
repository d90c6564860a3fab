"""A real Prometheus server scrapes a running worker; the metric comes back through its HTTP API."""
from __future__ import annotations

import json
import socket
import subprocess
import time
import urllib.parse
import urllib.request
import uuid

import pytest

from processors.topics import OTLP_SPANS, SPANS
from schemas.codec import encode
from schemas.samples import sample
from tests.integration.helpers import skip_backlog
from tests.integration.workers import WorkerProcess, worker_env


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.fixture
def prometheus(tmp_path):
    def start(targets: list[str]) -> str:
        port = _free_port()
        config = tmp_path / "prometheus.yml"
        config.write_text(
            "global: {scrape_interval: 1s}\n"
            "scrape_configs:\n"
            f"  - job_name: llmpulse\n    static_configs: [{{targets: {json.dumps(targets)}}}]\n"
        )
        log = open(tmp_path / "prometheus.log", "wb")
        proc = subprocess.Popen(
            ["prometheus", f"--config.file={config}", f"--storage.tsdb.path={tmp_path / 'tsdb'}",
             f"--web.listen-address=127.0.0.1:{port}"],
            stdout=log, stderr=subprocess.STDOUT,
        )
        started.append((proc, log))
        return f"http://127.0.0.1:{port}"

    started: list = []
    yield start
    for proc, log in started:
        proc.terminate()
        proc.wait(timeout=30)
        log.close()


def _query(base: str, promql: str) -> list[dict]:
    url = f"{base}/api/v1/query?{urllib.parse.urlencode({'query': promql})}"
    try:
        with urllib.request.urlopen(url, timeout=5) as response:
            return json.load(response)["data"]["result"]
    except OSError:
        return []  # not up yet


def test_prometheus_reads_a_workers_counters(bootstrap, database_url, producer, prometheus, tmp_path):
    skip_backlog(bootstrap, "llmpulse-ingest", [SPANS.name, OTLP_SPANS.name])
    metrics_port = _free_port()
    env = worker_env(bootstrap, database_url, tmp_path / "state")
    worker = WorkerProcess("ingest", env, tmp_path, metrics_port=metrics_port).start()
    try:
        trace_id = uuid.uuid4().hex
        for i in range(5):
            span = sample("span", trace_id=trace_id, span_id=f"{i:016x}")
            producer.produce(SPANS.name, key=trace_id.encode(), value=encode("span", span))
        producer.produce(SPANS.name, key=b"bad", value=b"not a span")
        producer.flush(30)

        base = prometheus([f"127.0.0.1:{metrics_port}"])
        deadline = time.monotonic() + 90
        result: list[dict] = []
        while time.monotonic() < deadline:
            result = _query(base, 'llmpulse_events_out_total{processor="ingest", topic="llm.spans.enriched"}')
            dead = _query(base, 'sum(llmpulse_dead_letters_total{processor="ingest"})')
            if result and float(result[0]["value"][1]) >= 5 and dead and float(dead[0]["value"][1]) >= 1:
                break
            assert worker.alive(), worker.log()
            time.sleep(1)
        assert result, f"Prometheus never returned the metric; worker log:\n{worker.log()}"
        assert float(result[0]["value"][1]) >= 5
        assert float(dead[0]["value"][1]) >= 1
        up = _query(base, 'up{job="llmpulse"}')
        assert up and up[0]["value"][1] == "1"
    finally:
        worker.stop()
