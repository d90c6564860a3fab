"""The faust runtime around a plain processor: consume, call, produce, dead-letter.

Each processor runs as its own faust app, which is its own consumer group
(``llmpulse-<name>``) with its own Prometheus endpoint. Scale out by starting
more workers of the same processor, on any machine that reaches the broker:
Kafka spreads the partitions among them.

Delivery is at-least-once: faust commits an offset only after the agent has
handled the message and the producer has flushed what it sent (faust
``Consumer._commit_tps`` flushes the producer before committing).
"""
from __future__ import annotations

import logging
import time
from pathlib import Path

import faust
from prometheus_client import CollectorRegistry

from processors.contract import Processor
from processors.deadletter import SourceMessage, encode_dead_letter
from processors.metrics import ProcessorMetrics, ProcessorSamples, serve_metrics
from processors.settings import Settings
from processors.topics import DEADLETTER

log = logging.getLogger(__name__)


def _raw_topic(app: faust.App, *names: str) -> faust.TopicT:
    # Bytes in, bytes out: decoding is the processor's job, so a message faust
    # cannot deserialize can still reach the dead-letter path whole.
    return app.topic(*names, key_type=bytes, value_type=bytes, key_serializer="raw", value_serializer="raw")


def build_app(
    processor: Processor,
    settings: Settings,
    registry: CollectorRegistry | None = None,
    *,
    app_id: str | None = None,
) -> tuple[faust.App, ProcessorMetrics]:
    """A faust app running ``processor`` over its source topics.

    ``app_id`` defaults to ``llmpulse-<processor.name>`` and is the consumer
    group id; tests pass a unique one so runs never share offsets.
    """
    app_id = app_id or f"llmpulse-{processor.name}"
    datadir = Path(settings.state_dir) / app_id
    datadir.mkdir(parents=True, exist_ok=True)  # faust does not create missing parents
    app = faust.App(
        app_id,
        broker=settings.kafka_url,
        store="memory://",
        datadir=str(datadir),
        autodiscover=False,
        web_enabled=False,  # metrics are served by prometheus_client instead
        topic_partitions=settings.topic_partitions,
        topic_replication_factor=settings.replication_factor,
        broker_session_timeout=settings.kafka_session_timeout_s,
        broker_heartbeat_interval=max(1.0, settings.kafka_session_timeout_s / 3),
        consumer_auto_offset_reset="earliest",
        producer_acks=-1,
    )
    metrics = ProcessorMetrics(processor.name, registry or CollectorRegistry())
    sources = _raw_topic(app, *processor.sources)
    dead_letters = _raw_topic(app, DEADLETTER.name)
    outputs: dict[str, faust.TopicT] = {}

    async def send(produced: list) -> None:
        for out in produced:
            topic = outputs.get(out.topic) or outputs.setdefault(out.topic, _raw_topic(app, out.topic))
            await topic.send(key=out.key, value=out.value)
            metrics.events_out.labels(processor.name, out.topic).inc()

    async def handle(event: faust.EventT) -> None:
        raw = event.message
        message = SourceMessage(raw.topic, raw.partition, raw.offset, raw.key, raw.value)
        metrics.events_in.labels(processor.name, raw.topic).inc()
        started = time.perf_counter()
        try:
            produced = processor.process(message)
        except Exception as exc:  # any failure of pure logic on one message is that message's fault
            metrics.processing_seconds.labels(processor.name).observe(time.perf_counter() - started)
            log.warning(
                "dead-lettering %s[%d]@%d: %s: %s", raw.topic, raw.partition, raw.offset, type(exc).__name__, exc
            )
            await dead_letters.send(key=raw.key, value=encode_dead_letter(processor.name, message, exc))
            metrics.dead_letters.labels(processor.name, raw.topic, type(exc).__name__).inc()
            return
        metrics.processing_seconds.labels(processor.name).observe(time.perf_counter() - started)
        await send(produced)
        _record_lag(app, metrics, processor.name, raw)

    @app.agent(sources, name=processor.name)
    async def agent(stream: faust.StreamT) -> None:
        async for event in stream.events():
            await handle(event)

    # Tables (profiles, experiments) are read whole before the app starts;
    # what could not be read (dead letters) leaves with the first tick.
    pending = list(getattr(processor, "start", lambda: [])())
    tick = getattr(processor, "tick", None)
    if tick is not None or pending:
        # Time-driven work (releasing held traces) must happen even when no
        # message arrives.
        @app.timer(interval=1.0)
        async def on_tick() -> None:
            if pending:
                await send(pending[:])
                pending.clear()
            await send(tick() if tick is not None else [])

    if hasattr(processor, "samples"):
        metrics.registry.register(ProcessorSamples(processor))

    return app, metrics


def _record_lag(app: faust.App, metrics: ProcessorMetrics, name: str, raw: faust.types.Message) -> None:
    try:
        highwater = app.consumer.highwater(raw.tp)
    except Exception:  # not known until the first fetch response; next message will tell
        return
    if highwater is not None:
        metrics.consumer_lag.labels(name, raw.topic, str(raw.partition)).set(max(0, highwater - raw.offset - 1))


def run_worker(processor: Processor, settings: Settings) -> None:
    """Run ``processor`` as a faust worker in this process until stopped."""
    registry = CollectorRegistry()
    serve_metrics(settings.metrics_port, registry)
    app, _metrics = build_app(processor, settings, registry)
    worker = faust.Worker(app, loglevel=settings.log_level.lower(), quiet=True)
    worker.execute_from_commandline()
