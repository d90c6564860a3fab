"""Spans from independent clients through ingest and the trace store into PostgreSQL."""
from __future__ import annotations

import subprocess
import uuid
from datetime import datetime, timedelta, timezone
from decimal import Decimal

import psycopg
import pytest

from processors.topics import DEADLETTER, OTLP_SPANS, SPANS, SPANS_ENRICHED
from schemas.codec import decode, encode, encode_json
from schemas.samples import sample
from sinks.migrate import migrate
from tests.integration.helpers import consume, skip_backlog
from tests.integration.workers import WorkerProcess, wait_until, worker_env
from tests.otel_batches import otlp_agent_trace

T0 = datetime(2026, 11, 20, 12, 0, tzinfo=timezone.utc)
PII = ("jane.doe@example.com", "+1 415 555 0132", "4111 1111 1111 1111")


@pytest.fixture
def pipeline(bootstrap, fresh_database, tmp_path):
    migrate(fresh_database)
    skip_backlog(bootstrap, "llmpulse-ingest", [SPANS.name, OTLP_SPANS.name])
    skip_backlog(bootstrap, "llmpulse-trace-store", [SPANS_ENRICHED.name])
    env = worker_env(bootstrap, fresh_database, tmp_path / "state")
    workers = [WorkerProcess(name, env, tmp_path).start() for name in ("ingest", "trace-store")]
    yield fresh_database, workers
    for worker in workers:
        worker.stop()


def _span(trace_id: str, i: int, **fields) -> dict:
    """A gpt-4o-mini call with PII in its prompt and no cost of its own."""
    start = T0 + timedelta(seconds=i)
    return sample(
        "span",
        trace_id=trace_id,
        span_id=f"{i:016x}",
        parent_span_id=None if i == 0 else f"{0:016x}",
        start_time=start,
        end_time=start + timedelta(milliseconds=800),
        input=f"Customer {PII[i % 3]} asks about order {1000 + i}",
        output="Sure, I can help.",
        status_message=None,
        status="ok",
        cost_usd=None,
        request_model="gpt-4o-mini",
        response_model="gpt-4o-mini-2024-07-18",
        input_tokens=1000,
        output_tokens=100,
        cache_read_input_tokens=200,
        cache_creation_input_tokens=None,
        **fields,
    )


# gpt-4o-mini list price per million tokens: input 0.15, cached input 0.075, output 0.60.
# (1000 - 200) * 0.15 + 200 * 0.075 + 100 * 0.60 = 120 + 15 + 60 = 195 per million
EXPECTED_COST = Decimal("0.000195")


def _count_spans(dsn: str, trace_ids: list[str]) -> int:
    with psycopg.connect(dsn) as conn:
        return conn.execute("SELECT count(*) FROM spans WHERE trace_id = ANY(%s)", (trace_ids,)).fetchone()[0]


def test_spans_from_kcat_confluent_and_otel_are_stored_exactly_once(pipeline, bootstrap, producer):
    dsn, workers = pipeline
    json_trace, avro_trace = uuid.uuid4().hex, uuid.uuid4().hex

    # 1. JSON lines through kcat, an independent client.
    lines = "".join(f"{json_trace}|{encode_json('span', _span(json_trace, i)).decode()}\n" for i in range(5))
    subprocess.run(["kcat", "-b", bootstrap, "-t", SPANS.name, "-P", "-K", "|"],
                   input=lines, text=True, check=True, timeout=30)
    # 2. Avro through confluent-kafka; one span carries its own cost, which must be kept.
    for i in range(5):
        extra = {"cost_usd": 0.5} if i == 4 else {}
        producer.produce(SPANS.name, key=avro_trace.encode(), value=encode("span", {**_span(avro_trace, i), **extra}))
    # 3. OTLP batches built by the OpenTelemetry SDK: current and legacy GenAI names.
    otlp_ids, otlp_total = [], 0
    for n, legacy in ((3, False), (2, True)):
        data, expected = otlp_agent_trace("support-bot", n, legacy_names=legacy, seed=int(uuid.uuid4().int % 10**6))
        otlp_ids.append(expected[0]["trace_id"])
        otlp_total += len(expected)
        producer.produce(OTLP_SPANS.name, value=data)
    # 4. Malformed input, which must end in the dead-letter topic.
    bad_key = f"bad-{uuid.uuid4().hex}".encode()
    for value in (b"\x00garbage", b'{"trace_id": 1}'):
        producer.produce(SPANS.name, key=bad_key, value=value)
    producer.produce(OTLP_SPANS.name, key=bad_key, value=b"\xff\xff not protobuf")
    producer.flush(30)
    assert otlp_total == 6 + 4  # root + n chat calls + (n - 1) tool calls, per trace

    trace_ids = [json_trace, avro_trace, *otlp_ids]
    total = 10 + otlp_total
    wait_until(lambda: _count_spans(dsn, trace_ids) >= total, 120, f"{total} spans in the database", workers)

    with psycopg.connect(dsn) as conn:
        assert _count_spans(dsn, trace_ids) == total
        costs = conn.execute(
            "SELECT trace_id, span_id, cost_usd FROM spans WHERE trace_id = ANY(%s) ORDER BY 1, 2",
            ([json_trace, avro_trace],),
        ).fetchall()
        for trace_id, span_id, cost in costs:
            expected = Decimal("0.5") if (trace_id, span_id) == (avro_trace, f"{4:016x}") else EXPECTED_COST
            assert cost == expected, (trace_id, span_id)
        leaked = conn.execute(
            "SELECT count(*) FROM spans WHERE trace_id = ANY(%s) AND ("
            " input LIKE '%%example.com%%' OR input LIKE '%%555 0132%%' OR input LIKE '%%1111 1111%%')",
            (trace_ids,),
        ).fetchone()[0]
        assert leaked == 0
        masked = conn.execute(
            "SELECT count(*) FROM spans WHERE trace_id = %s AND input ~ '<(EMAIL|PHONE|CREDIT_CARD)>'", (json_trace,)
        ).fetchone()[0]
        assert masked == 5
        summaries = dict(conn.execute(
            "SELECT trace_id, span_count FROM traces WHERE trace_id = ANY(%s)", (trace_ids,)
        ).fetchall())
        assert summaries == {json_trace: 5, avro_trace: 5, otlp_ids[0]: 6, otlp_ids[1]: 4}
        otlp_models = conn.execute(
            "SELECT DISTINCT provider, request_model FROM spans WHERE trace_id = ANY(%s) AND kind = 'llm'",
            (otlp_ids,),
        ).fetchall()
        assert otlp_models == [("openai", "gpt-4o-mini")]  # legacy gen_ai.system mapped like the current name

    dead = consume(bootstrap, DEADLETTER.name, 3, timeout_s=60, where=lambda m: m.key() == bad_key)
    records = [decode(m.value(), expected="dead_letter") for m in dead]
    assert sorted(r["topic"] for r in records) == sorted([OTLP_SPANS.name, SPANS.name, SPANS.name])
    assert {r["original"] for r in records} == {b"\x00garbage", b'{"trace_id": 1}', b"\xff\xff not protobuf"}


def test_killing_workers_mid_stream_loses_and_duplicates_nothing(pipeline, bootstrap, producer):
    dsn, workers = pipeline
    ingest, store = workers
    trace_ids = [uuid.uuid4().hex for _ in range(2000)]
    for t, trace_id in enumerate(trace_ids):
        for i in range(10):
            producer.produce(SPANS.name, key=trace_id.encode(), value=encode("span", _span(trace_id, i)))
        producer.poll(0)
    producer.flush(60)
    total = len(trace_ids) * 10

    wait_until(lambda: _count_spans(dsn, trace_ids) > 0, 120, "the first stored spans", workers, interval_s=0.05)
    ingest.kill()
    store.kill()
    stored_at_crash = _count_spans(dsn, trace_ids)
    assert stored_at_crash < total, "the crash came after the end; the test proves nothing"
    ingest.start()
    store.start()
    wait_until(lambda: _count_spans(dsn, trace_ids) >= total, 180, f"{total} spans after restart", workers)

    with psycopg.connect(dsn) as conn:
        assert _count_spans(dsn, trace_ids) == total
        dupes = conn.execute(
            "SELECT count(*) FROM (SELECT trace_id, span_id FROM spans WHERE trace_id = ANY(%s)"
            " GROUP BY 1, 2 HAVING count(*) > 1) d", (trace_ids,),
        ).fetchone()[0]
        assert dupes == 0
        counts = conn.execute(
            "SELECT min(span_count), max(span_count), count(*) FROM traces WHERE trace_id = ANY(%s)", (trace_ids,)
        ).fetchone()
        assert counts == (10, 10, len(trace_ids))
    print(f"stored before the crash: {stored_at_crash} of {total}")
