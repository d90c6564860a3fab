"""``llmpulse demo``: the whole pipeline on live services with realistic traffic.

Creates the topics, migrates the database, starts every worker as its own
process, publishes synthetic agent traffic (including malformed messages,
which must reach the dead-letter topic), waits until every span is stored,
prints a summary and one trace's waterfall, and stops the workers.
"""
from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from typing import Any

import click
import psycopg
from confluent_kafka import Consumer, TopicPartition

from processors.generate_cli import produce_traffic
from processors.generator import TrafficModel
from processors.settings import Settings
from processors.topics import DEADLETTER
from schemas.codec import decode
from sinks.trace_query import fetch_trace
from sinks.waterfall import render_waterfall


class RecordingModel:
    """A :class:`TrafficModel` that remembers the trace ids it handed out.

    >>> model = RecordingModel(TrafficModel(seed=1))
    >>> _ = model.trace()
    >>> len(model.trace_ids)
    1
    """

    def __init__(self, model: TrafficModel) -> None:
        self._model = model
        self.trace_ids: list[str] = []

    def trace(self) -> list[dict[str, Any]]:
        spans = self._model.trace()
        self.trace_ids.append(spans[0]["trace_id"])
        return spans

    def traces(self, n: int) -> Iterator[list[dict[str, Any]]]:
        for _ in range(n):
            yield self.trace()

    def __getattr__(self, name: str) -> Any:
        return getattr(self._model, name)


def _dead_letter_reader(settings: Settings) -> Consumer:
    consumer = Consumer({
        "bootstrap.servers": settings.kafka_bootstrap_servers,
        "group.id": f"llmpulse-demo-{uuid.uuid4().hex}",
        "enable.auto.commit": False,
    })
    topic = DEADLETTER.name
    ends = []
    for p in consumer.list_topics(topic, timeout=15).topics[topic].partitions:
        _low, high = consumer.get_watermark_offsets(TopicPartition(topic, p), timeout=15)
        ends.append(TopicPartition(topic, p, high))
    consumer.assign(ends)  # only what this run dead-letters
    return consumer


def _stored(conn: psycopg.Connection, trace_ids: list[str]) -> int:
    return conn.execute("SELECT count(*) FROM spans WHERE trace_id = ANY(%s)", (trace_ids,)).fetchone()[0]


def _wait_stored(conn, trace_ids, expected: int, timeout_s: float, workers: subprocess.Popen) -> int:
    deadline = time.monotonic() + timeout_s
    stored = 0
    with click.progressbar(length=expected, label="stored in PostgreSQL ") as bar:
        while stored < expected and time.monotonic() < deadline:
            if workers.poll() is not None:
                raise click.ClickException("the workers stopped; see their log above")
            now = _stored(conn, trace_ids)
            bar.update(now - stored)
            stored = now
            time.sleep(0.5)
    return stored


def _dead_letters(consumer: Consumer, expected: int, timeout_s: float) -> list[dict]:
    found: list[dict] = []
    deadline = time.monotonic() + timeout_s
    while len(found) < expected and time.monotonic() < deadline:
        msg = consumer.poll(0.5)
        if msg is not None and not msg.error():
            found.append(decode(msg.value(), expected="dead_letter"))
    return found


def _summary(conn, trace_ids: list[str]) -> None:
    by_model = conn.execute(
        """SELECT coalesce(request_model, '(none)'), count(*), sum(input_tokens), sum(output_tokens),
                  sum(cost_usd), count(*) FILTER (WHERE cost_usd IS NULL)
           FROM spans WHERE trace_id = ANY(%s) AND kind IN ('llm', 'embedding')
           GROUP BY 1 ORDER BY 5 DESC NULLS LAST""",
        (trace_ids,),
    ).fetchall()
    click.echo("\ncost by model:")
    click.echo(f"  {'model':<28} {'calls':>6} {'tokens in':>11} {'tokens out':>10} {'cost USD':>11}")
    for model, calls, tin, tout, cost, unpriced in by_model:
        note = f"  ({unpriced} without cost: no usage or unknown model)" if unpriced else ""
        click.echo(f"  {model:<28} {calls:>6} {tin or 0:>11,} {tout or 0:>10,} {float(cost or 0):>11.4f}{note}")
    total, errors = conn.execute(
        "SELECT sum(cost_usd), count(*) FILTER (WHERE status = 'error') FROM traces WHERE trace_id = ANY(%s)",
        (trace_ids,),
    ).fetchone()
    click.echo(f"  total ${float(total or 0):.4f}; traces with errors: {errors}")


@click.command()
@click.option("--traces", default=300, show_default=True, help="Agent traces to publish.")
@click.option("--malformed", default=8, show_default=True, help="Malformed messages to mix in.")
@click.option("--seed", default=None, type=int, help="Traffic seed (default: random).")
@click.option("--timeout", default=300.0, show_default=True, help="Seconds to wait for the pipeline.")
def demo(traces: int, malformed: int, seed: int | None, timeout: float) -> None:
    """Run the whole pipeline on live services with synthetic traffic."""
    settings = Settings()
    seed = seed if seed is not None else int(time.time())
    env = os.environ.copy()
    llmpulse = [sys.executable, "-m", "processors.cli"]
    subprocess.run([*llmpulse, "topics", "create"], check=True, env=env, stdout=subprocess.DEVNULL)
    subprocess.run([*llmpulse, "db", "migrate"], check=True, env=env)
    dead_reader = _dead_letter_reader(settings)

    # Worker logs at WARNING: dead letters still show, the faust start-up banner does not.
    workers = subprocess.Popen(
        [*llmpulse, "run", "all"], env={**env, "LLMPULSE_METRICS_PORT": "0", "LLMPULSE_LOG_LEVEL": "WARNING"}
    )
    try:
        model = RecordingModel(TrafficModel(seed=seed))
        with click.progressbar(length=traces, label="publishing traces   ") as bar:
            stats = produce_traffic(
                {"bootstrap.servers": settings.kafka_bootstrap_servers}, model,
                traces=traces, fmt="mixed", malformed=malformed, on_progress=bar.update,
            )
        with psycopg.connect(settings.database_url.get_secret_value(), autocommit=True) as conn:
            stored = _wait_stored(conn, model.trace_ids, stats.spans, timeout, workers)
            dead = _dead_letters(dead_reader, stats.malformed, timeout_s=60)
            stored_traces = conn.execute(
                "SELECT count(*) FROM traces WHERE trace_id = ANY(%s)", (model.trace_ids,)
            ).fetchone()[0]
            click.echo(f"\nseed {seed}")
            click.echo(f"spans published:   {stats.spans:,} in {stats.traces:,} traces (Avro and JSON, "
                       f"{len(stats.by_project)} projects)")
            click.echo(f"feedback published: {stats.feedback:,}")
            click.echo(f"spans stored:      {stored:,}")
            click.echo(f"traces stored:     {stored_traces:,}")
            click.echo(f"malformed sent:    {stats.malformed}; dead letters: {len(dead)}")
            for record in dead[:4]:
                click.echo(f"  {record['error_type']}: {record['error'][:90]}")
            _summary(conn, model.trace_ids)
            showcase = conn.execute(
                "SELECT trace_id FROM traces WHERE trace_id = ANY(%s) "
                "ORDER BY (status = 'error') DESC, span_count DESC LIMIT 1",
                (model.trace_ids,),
            ).fetchone()
            if showcase:
                click.echo("\n" + render_waterfall(fetch_trace(conn, showcase[0]), width=120))
                click.echo(f"\n(read any trace with: llmpulse trace show {showcase[0]})")
    finally:
        workers.send_signal(signal.SIGTERM)
        workers.wait(timeout=60)
        dead_reader.close()
    if stored != stats.spans or len(dead) != stats.malformed:
        raise click.ClickException("the pipeline did not account for every message; see the worker logs above")
