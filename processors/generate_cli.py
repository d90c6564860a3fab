"""``llmpulse generate``: publish synthetic LLM traffic to Kafka.

:func:`produce_traffic` sends what a :class:`~processors.generator.TrafficModel`
makes: spans to ``llm.spans`` (key = trace id), feedback to ``llm.feedback``,
and on request malformed messages to ``llm.spans`` so the dead-letter path
has work. ``docs/generator.md`` describes the traffic.
"""

from __future__ import annotations

import random
import time
from collections import Counter
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from typing import Any

import click
from confluent_kafka import KafkaError, KafkaException, Producer

from processors.generator import TrafficModel
from processors.settings import DEFAULT_BOOTSTRAP
from processors.topics import FEEDBACK, SPANS
from schemas.codec import encode, encode_json

__all__ = ["FORMATS", "DeliveryError", "Stats", "generate", "produce_traffic"]

FORMATS = ("avro", "json", "mixed")

# Throughput over latency: the generator is a bulk producer. Idempotence
# keeps librdkafka's own retries from duplicating spans; a 30 s message
# timeout turns an unreachable broker into a delivery error, not a hang.
_PRODUCER_DEFAULTS = {
    "linger.ms": 20,
    "compression.type": "lz4",
    "enable.idempotence": True,
    "message.timeout.ms": 30_000,
}


class DeliveryError(RuntimeError):
    """Kafka did not accept a message; ``kafka_error`` is librdkafka's error (or None on a timeout).

    Examples
    --------
    >>> str(DeliveryError("delivery to llm.spans failed"))
    'delivery to llm.spans failed'
    """

    def __init__(self, message: str, kafka_error: KafkaError | None = None) -> None:
        super().__init__(message)
        self.kafka_error = kafka_error


@dataclass
class Stats:
    """What :func:`produce_traffic` sent.

    ``by_model`` counts model calls (LLM and embedding spans) per requested
    model; ``bytes`` is the size of all message values.

    Examples
    --------
    >>> s = Stats(traces=2, spans=9, elapsed_s=0.5)
    >>> s.messages, s.messages_per_s
    (9, 18.0)
    """

    traces: int = 0
    spans: int = 0
    feedback: int = 0
    malformed: int = 0
    bytes: int = 0
    error_spans: int = 0
    by_model: Counter = field(default_factory=Counter)
    by_project: Counter = field(default_factory=Counter)
    elapsed_s: float = 0.0

    @property
    def messages(self) -> int:
        """Messages produced (spans, feedback and malformed)."""
        return self.spans + self.feedback + self.malformed

    @property
    def messages_per_s(self) -> float:
        """Produce throughput over the whole run, flush included."""
        return self.messages / self.elapsed_s if self.elapsed_s > 0 else 0.0


def produce_traffic(
    producer_config: Mapping[str, Any],
    model: TrafficModel,
    *,
    traces: int,
    rate: float | None = None,
    fmt: str = "avro",
    malformed: int = 0,
    on_progress: Callable[[int], Any] | None = None,
    producer: Any = None,
    flush_timeout_s: float = 60.0,
) -> Stats:
    """Produce ``traces`` traces from ``model``, their feedback, and ``malformed`` poison messages.

    Spans of a trace are sent in end-time order, children before parents, as
    an OpenTelemetry SDK exports them. Feedback follows its trace, in the
    same format. Malformed messages are spread evenly through the run.

    Parameters
    ----------
    producer_config
        librdkafka settings, e.g. ``{"bootstrap.servers": "127.0.0.1:19092"}``;
        they override the defaults (lz4, linger 20 ms, idempotence, 30 s
        message timeout).
    model
        The traffic to send; it is advanced by ``traces`` traces.
    traces
        Number of traces.
    rate
        Traces per second (wall clock); None: as fast as the broker takes them.
    fmt
        ``"avro"`` (single-object encoding), ``"json"`` or ``"mixed"`` (each
        trace one or the other, like a fleet of differently configured producers).
    malformed
        Poison messages for ``llm.spans`` (see :meth:`TrafficModel.malformed`).
    on_progress
        Called with the number of traces just produced (1), e.g. a progress bar's ``update``.
    producer
        Something with ``confluent_kafka.Producer``'s ``produce``, ``poll``
        and ``flush``; default: ``Producer(producer_config)``. For tests.
    flush_timeout_s
        How long to wait for outstanding deliveries at the end.

    Returns
    -------
    Stats

    Raises
    ------
    DeliveryError
        The first failed delivery (with its Kafka error), or messages still
        undelivered after ``flush_timeout_s``.

    Examples
    --------
    >>> from processors.generator import DEFAULT_START
    >>> class Sink:  # stands in for confluent_kafka.Producer
    ...     def __init__(self): self.sent = []
    ...     def produce(self, topic, value, key=None, on_delivery=None): self.sent.append(topic)
    ...     def poll(self, timeout=0): return 0
    ...     def flush(self, timeout=None): return 0
    >>> sink = Sink()
    >>> stats = produce_traffic({}, TrafficModel(seed=1, start=DEFAULT_START), traces=20,
    ...                         malformed=2, producer=sink)
    >>> stats.traces, stats.malformed, stats.messages == len(sink.sent)
    (20, 2, True)
    """
    if fmt not in FORMATS:
        raise ValueError(f"fmt must be one of {', '.join(FORMATS)}, got {fmt!r}")
    if rate is not None and rate <= 0:
        raise ValueError(f"rate must be > 0 traces/s, got {rate}")
    if producer is None:
        producer = Producer({**_PRODUCER_DEFAULTS, **producer_config})
    failures: list[tuple[str, KafkaError]] = []

    def delivered(err: KafkaError | None, msg: Any) -> None:
        if err is not None:
            failures.append((msg.topic() if msg is not None else "?", err))

    def check() -> None:
        if failures:
            topic, err = failures[0]
            more = f" (and {len(failures) - 1} more)" if len(failures) > 1 else ""
            raise DeliveryError(f"delivery to {topic} failed: {err}{more}", err)

    def send(topic: str, key: bytes | None, value: bytes) -> None:
        while True:
            try:
                producer.produce(topic, value, key=key, on_delivery=delivered)
                break
            except BufferError:
                # librdkafka's local queue is full: serve delivery reports until there is room.
                producer.poll(0.1)
                check()
        stats.bytes += len(value)

    stats = Stats()
    poison = model.malformed(malformed) if malformed else []
    fmt_rng = random.Random(f"{model.seed}/format")
    started = time.monotonic()
    for i in range(traces):
        if rate is not None:
            while (wait := started + i / rate - time.monotonic()) > 0:
                producer.poll(min(wait, 0.1))
        # Malformed messages spread through the run, not bunched at one end.
        while stats.malformed < len(poison) * (i + 1) // traces:
            send(SPANS.name, None, poison[stats.malformed])
            stats.malformed += 1
        trace = model.trace()
        wire = encode if fmt == "avro" or (fmt == "mixed" and fmt_rng.random() < 0.5) else encode_json
        key = trace[0]["trace_id"].encode()
        for span in sorted(trace, key=lambda s: s["end_time"]):
            send(SPANS.name, key, wire("span", span))
            if span["kind"] in ("llm", "embedding"):
                stats.by_model[span["request_model"]] += 1
            stats.error_spans += span["status"] == "error"
        stats.spans += len(trace)
        stats.traces += 1
        stats.by_project[trace[0]["project"]] += 1
        feedback = model.feedback_for(trace)
        if feedback is not None:
            send(FEEDBACK.name, key, wire("feedback", feedback))
            stats.feedback += 1
        producer.poll(0)
        check()
        if on_progress is not None:
            on_progress(1)
    for message in poison[stats.malformed :]:  # all of them when traces == 0
        send(SPANS.name, None, message)
        stats.malformed += 1
    remaining = producer.flush(flush_timeout_s)
    check()
    if remaining:
        raise DeliveryError(f"{remaining} messages still undelivered after {flush_timeout_s:g} s")
    stats.elapsed_s = time.monotonic() - started
    return stats


def _summary(stats: Stats, seed: int, fmt: str) -> str:
    mb = stats.bytes / 1e6
    lines = [
        f"produced {stats.traces:,} traces: {stats.spans:,} spans, {stats.feedback:,} feedback, "
        f"{stats.malformed:,} malformed ({mb:.1f} MB, {fmt}) in {stats.elapsed_s:.1f} s "
        f"= {stats.messages_per_s:,.0f} msg/s",
        f"error spans: {stats.error_spans:,} ({stats.error_spans / max(stats.spans, 1):.1%})",
        "projects: " + ", ".join(f"{p} {n:,}" for p, n in stats.by_project.most_common()),
        "models: " + ", ".join(f"{m} {n:,}" for m, n in stats.by_model.most_common()),
        f"seed: {seed} (repeat this traffic with --seed {seed})",
    ]
    return "\n".join(lines)


@click.command()
@click.option("--traces", "-n", type=click.IntRange(min=0), default=1000, show_default=True, help="Traces to send.")
@click.option(
    "--rate", type=click.FloatRange(min=0, min_open=True), default=None,
    help="Traces per second; default: as fast as the broker takes them (timestamps then end at now).",
)  # fmt: skip
@click.option("--seed", type=int, default=None, help="Random seed; default: a new one, printed at the end.")
@click.option(
    "--format", "fmt", type=click.Choice(FORMATS), default="avro", show_default=True,
    help="Wire format: Avro single-object, JSON, or a mix per trace.",
)  # fmt: skip
@click.option(
    "--malformed", type=click.IntRange(min=0), default=0, show_default=True,
    help="Poison messages to mix into llm.spans (they must reach the dead-letter topic).",
)  # fmt: skip
@click.option(
    "--error-rate", type=click.FloatRange(0, 1), default=0.02, show_default=True,
    help="Chance that one model, tool or retrieval call fails.",
)  # fmt: skip
@click.option(
    "--bootstrap-servers", envvar="KAFKA_BOOTSTRAP_SERVERS", default=DEFAULT_BOOTSTRAP, show_default=True,
    help="Kafka bootstrap servers (env KAFKA_BOOTSTRAP_SERVERS).",
)  # fmt: skip
def generate(
    traces: int, rate: float | None, seed: int | None, fmt: str, malformed: int, error_rate: float,
    bootstrap_servers: str,
) -> None:  # fmt: skip
    """Send realistic synthetic LLM traffic (agent traces and feedback) to Kafka.

    Four applications (support-bot, code-assistant, search-rag, sales-agent)
    with Zipf-distributed users, prompt experiments and real model names.
    With --rate the span times follow the wall clock; without it the traffic
    is back-dated so that it ends about now.
    """
    if seed is None:
        seed = random.SystemRandom().randrange(2**31)
    now = datetime.now(timezone.utc)
    if rate is None:
        # Simulated at 10 traces/s, ending now: realistic gaps between a
        # user's turns even when the broker swallows everything in a second.
        model = TrafficModel(seed, start=now - timedelta(seconds=traces / 10.0), error_rate=error_rate)
    else:
        model = TrafficModel(seed, start=now, error_rate=error_rate, traces_per_second=rate)
    config = {"bootstrap.servers": bootstrap_servers, "client.id": "llmpulse-generate"}
    try:
        with click.progressbar(length=traces, label="producing traces") as bar:
            stats = produce_traffic(
                config, model, traces=traces, rate=rate, fmt=fmt, malformed=malformed, on_progress=bar.update
            )
    except (DeliveryError, KafkaException) as exc:
        raise click.ClickException(f"{exc} (broker: {bootstrap_servers})") from exc
    click.echo(_summary(stats, seed, fmt))
