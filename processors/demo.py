"""``llmpulse demo``: the pipeline on live services, start to finish.

Creates the topics, migrates the database, starts every processor as its own
worker process, publishes traffic (including malformed messages, which must
reach the dead-letter topic), waits for the pipeline to catch up, prints a
summary and stops the workers.
"""
from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
import uuid
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field

import click
from confluent_kafka import Consumer, Producer, TopicPartition

from processors.settings import Settings
from processors.topics import DEADLETTER, SPANS, SPANS_ENRICHED
from schemas.codec import decode, encode, encode_json
from schemas.samples import sample

MALFORMED = (b"\x00\x00 definitely not a span", b'{"trace_id": "abc"}', b'{"name": 42}')


@dataclass
class Tally:
    """What came out of the pipeline, counted by an independent consumer."""

    forwarded: int = 0
    dead_letters: int = 0
    errors: Counter = field(default_factory=Counter)


def demo_spans(traces: int, seed: str = "") -> Iterator[tuple[bytes, bytes]]:
    """(key, value) pairs for ``traces`` small traces, alternating JSON and Avro.

    >>> pairs = list(demo_spans(2))
    >>> len(pairs), pairs[0][1][:1], pairs[3][1][:2]
    (6, b'{', b'\\xc3\\x01')
    """
    base = sample("span")
    for t in range(traces):
        trace_id = uuid.uuid5(uuid.NAMESPACE_OID, f"{seed}{t}").hex
        root = f"{t:08x}root0000"[:16]
        for s, kind in enumerate(("agent", "retrieval", "llm")):
            span = {
                **base,
                "trace_id": trace_id,
                "span_id": root if s == 0 else f"{t:08x}{s:08x}",
                "parent_span_id": None if s == 0 else root,
                "kind": kind,
                "name": f"{kind}-step",
            }
            wire = encode_json if t % 2 == 0 else encode
            yield trace_id.encode(), wire("span", span)


def _end_offsets(consumer: Consumer, topic: str) -> list[TopicPartition]:
    partitions = consumer.list_topics(topic, timeout=15).topics[topic].partitions
    ends = []
    for p in partitions:
        _low, high = consumer.get_watermark_offsets(TopicPartition(topic, p), timeout=15)
        ends.append(TopicPartition(topic, p, high))
    return ends


def _reader(settings: Settings, topic: str) -> Consumer:
    consumer = Consumer({
        "bootstrap.servers": settings.kafka_bootstrap_servers,
        "group.id": f"llmpulse-demo-{uuid.uuid4().hex}",
        "enable.auto.commit": False,
    })
    # Only what this run produces: start at today's end of the topic.
    consumer.assign(_end_offsets(consumer, topic))
    return consumer


def _count(consumer: Consumer, tally: Tally, expected: int, timeout_s: float, workers: subprocess.Popen) -> None:
    deadline = time.monotonic() + timeout_s
    with click.progressbar(length=expected, label="through the pipeline") as bar:
        while tally.forwarded + tally.dead_letters < expected and time.monotonic() < deadline:
            if workers.poll() is not None:
                raise click.ClickException("the workers stopped; see their log above")
            msg = consumer.poll(0.5)
            if msg is None or msg.error():
                continue
            if msg.topic() == DEADLETTER.name:
                record = decode(msg.value(), expected="dead_letter")
                tally.dead_letters += 1
                tally.errors[f"{record['error_type']}: {record['error'][:70]}"] += 1
            else:
                tally.forwarded += 1
            bar.update(1)


@click.command()
@click.option("--traces", default=200, show_default=True, help="Traces to publish.")
@click.option("--timeout", default=180.0, show_default=True, help="Seconds to wait for the pipeline.")
def demo(traces: int, timeout: float) -> None:
    """Run the whole pipeline on live services with synthetic traffic."""
    settings = Settings()
    env = os.environ.copy()
    llmpulse = [sys.executable, "-m", "processors.cli"]
    subprocess.run([*llmpulse, "topics", "create"], check=True, env=env, stdout=subprocess.DEVNULL)
    subprocess.run([*llmpulse, "db", "migrate"], check=True, env=env)

    consumer = _reader(settings, SPANS_ENRICHED.name)
    dead = _end_offsets(consumer, DEADLETTER.name)
    consumer.assign(consumer.assignment() + dead)

    # Worker logs at WARNING: dead letters still show, the faust start-up banner does not.
    workers = subprocess.Popen(
        [*llmpulse, "run", "all"], env={**env, "LLMPULSE_METRICS_PORT": "0", "LLMPULSE_LOG_LEVEL": "WARNING"}
    )
    try:
        producer = Producer({"bootstrap.servers": settings.kafka_bootstrap_servers, "enable.idempotence": True})
        pairs = list(demo_spans(traces, seed=uuid.uuid4().hex))
        with click.progressbar(pairs, label="publishing spans") as bar:
            for key, value in bar:
                producer.produce(SPANS.name, key=key, value=value)
                producer.poll(0)
        for value in MALFORMED:
            producer.produce(SPANS.name, key=b"demo-malformed", value=value)
        producer.flush(30)

        tally = Tally()
        _count(consumer, tally, len(pairs) + len(MALFORMED), timeout, workers)
    finally:
        workers.send_signal(signal.SIGTERM)
        workers.wait(timeout=60)
        consumer.close()

    click.echo("")
    click.echo(f"spans published:      {len(pairs)} ({traces} traces, JSON and Avro)")
    click.echo(f"spans through ingest: {tally.forwarded}")
    click.echo(f"malformed published:  {len(MALFORMED)}")
    click.echo(f"dead letters:         {tally.dead_letters}")
    for error, n in tally.errors.most_common():
        click.echo(f"  {n} x {error}")
    if tally.forwarded != len(pairs) or tally.dead_letters != len(MALFORMED):
        raise click.ClickException("the pipeline did not account for every message; see the worker logs above")
