"""`llmpulse run ingest` as a real faust worker process against the real broker."""
from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
import uuid

import pytest

from processors.topics import DEADLETTER, OTLP_SPANS, SPANS, SPANS_ENRICHED
from schemas.codec import decode, encode, encode_json
from schemas.samples import sample
from tests.integration.helpers import consume, skip_backlog


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.fixture(params=["faust", "kafka"])
def ingest_worker(request, bootstrap, tmp_path):
    skip_backlog(bootstrap, "llmpulse-ingest", [SPANS.name, OTLP_SPANS.name])
    port = _free_port()
    env = {**os.environ, "KAFKA_BOOTSTRAP_SERVERS": bootstrap, "LLMPULSE_STATE_DIR": str(tmp_path)}
    log = open(tmp_path / "worker.log", "wb")
    proc = subprocess.Popen(
        [sys.executable, "-m", "processors.cli", "run", "ingest", "--metrics-port", str(port),
         "--engine", request.param],
        env=env, stdout=log, stderr=subprocess.STDOUT,
    )
    yield proc, port
    proc.send_signal(signal.SIGTERM)
    try:
        proc.wait(timeout=60)
    except subprocess.TimeoutExpired:
        proc.kill()
    log.close()


def test_worker_forwards_good_spans_and_dead_letters_bad_ones(bootstrap, producer, ingest_worker, tmp_path):
    proc, metrics_port = ingest_worker
    trace_ids = {uuid.uuid4().hex for _ in range(3)}
    bad_key = f"bad-{uuid.uuid4().hex}".encode()
    delivered: dict[bytes, tuple[int, int]] = {}

    def remember(err, msg):
        assert err is None, err
        delivered[msg.value()] = (msg.partition(), msg.offset())

    for i, trace_id in enumerate(sorted(trace_ids)):
        span = {**sample("span"), "trace_id": trace_id}
        value = encode("span", span) if i % 2 else encode_json("span", span)
        producer.produce(SPANS.name, key=trace_id.encode(), value=value, on_delivery=remember)
    bad_values = [b"\x00\x01 not a span", b'{"trace_id": "only this"}']
    for value in bad_values:
        producer.produce(SPANS.name, key=bad_key, value=value, on_delivery=remember)
    producer.flush(30)

    forwarded = consume(bootstrap, SPANS_ENRICHED.name, 3, timeout_s=120,
                        where=lambda m: m.key().decode() in trace_ids)
    assert proc.poll() is None, (tmp_path / "worker.log").read_text()
    assert {decode(m.value(), expected="span")["trace_id"] for m in forwarded} == trace_ids

    dead = consume(bootstrap, DEADLETTER.name, 2, timeout_s=60, where=lambda m: m.key() == bad_key)
    records = sorted((decode(m.value(), expected="dead_letter") for m in dead), key=lambda r: r["offset"])
    assert [r["original"] for r in records] == bad_values
    for record in records:
        assert record["processor"] == "ingest"
        assert record["topic"] == SPANS.name
        assert (record["partition"], record["offset"]) == delivered[record["original"]]
        assert record["error_type"] == "SerializationError"
    assert "trace_id" in records[1]["error"] or "span." in records[1]["error"]

    # The worker survived the poison messages and says so on /metrics.
    deadline = time.monotonic() + 30
    while True:
        text = urllib.request.urlopen(f"http://127.0.0.1:{metrics_port}/metrics", timeout=5).read().decode()
        line = next((l for l in text.splitlines() if l.startswith("llmpulse_dead_letters_total{")), "")
        if line and float(line.rsplit(" ", 1)[1]) >= 2 or time.monotonic() > deadline:
            break
        time.sleep(0.5)
    assert float(line.rsplit(" ", 1)[1]) >= 2, text
    assert "llmpulse_events_out_total" in text and "llmpulse_consumer_lag" in text
    assert proc.poll() is None
