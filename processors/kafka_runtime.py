"""The librdkafka runtime for stateless processors: consume, call, produce, commit.

Same contract as the faust runtime (:mod:`processors.runtime`): a plain
processor, one consumer group ``llmpulse-<name>`` per processor, dead letters
for bad input, the same Prometheus metrics. It exists because per-message
overhead matters on the ingest path: faust's pure-Python client and
per-message ``send`` futures cost more than the whole ingest logic
(docs/benchmarks/pipeline.json has both measured), while confluent-kafka
batches in C. Processors that keep state in faust tables stay on faust.

Delivery is at-least-once: a batch's outputs (and dead letters) are flushed to
the broker before the batch's offsets are committed.
"""
from __future__ import annotations

import gc
import logging
import signal
import threading
import time

from confluent_kafka import (
    OFFSET_END,
    OFFSET_INVALID,
    Consumer,
    KafkaError,
    Message,
    Producer,
    TopicPartition,
)
from prometheus_client import CollectorRegistry

from processors.contract import Output, Processor
from processors.deadletter import SourceMessage, encode_dead_letter
from processors.metrics import ProcessorMetrics, ProcessorSamples, serve_metrics
from processors.settings import Settings
from processors.topics import DEADLETTER

log = logging.getLogger(__name__)

#: Fetch settings of every worker's and sink's consumer.
FETCH_TUNING = {
    # Large batches are consumed together; the default 1 MiB per partition
    # would cut them short.
    "max.partition.fetch.bytes": 8 * 1024 * 1024,
    # Once a partition's prefetch queue is full, librdkafka waits this long
    # before fetching it again (default 1 s); a worker that empties the
    # queue sooner then idles for the rest. With 20 ms a bare consumer reads
    # a backlog of 1.5 KB partials at ~660,000 instead of ~125,000 msgs/s
    # (docs/benchmarks.md).
    "fetch.queue.backoff.ms": 20,
}


class KafkaRuntime:
    """Runs ``processor`` over its source topics with confluent-kafka."""

    def __init__(
        self,
        processor: Processor,
        settings: Settings,
        registry: CollectorRegistry | None = None,
        *,
        group_id: str | None = None,
        batch_size: int = 2000,
        tick_interval_s: float = 1.0,
        catch_up_tick_s: float = 5.0,
        catch_up_lag: int = 50_000,
    ) -> None:
        self.processor = processor
        self.batch_size = batch_size
        self.tick_interval_s = tick_interval_s
        # While far behind (consumer lag above catch_up_lag), tick less
        # often: each tick of the metrics processor re-emits every window
        # that changed, and when a second of processing covers minutes of
        # event time that is most windows, again and again. Live traffic,
        # even a busy one, keeps the 1 s tick (freshness).
        self.catch_up_tick_s = catch_up_tick_s
        self.catch_up_lag = catch_up_lag
        self._lag = 0
        self.stopping = threading.Event()
        self.failed: KafkaError | None = None
        self.metrics = ProcessorMetrics(processor.name, registry or CollectorRegistry())
        if hasattr(processor, "samples"):
            self.metrics.registry.register(ProcessorSamples(processor))
        self._processing = self.metrics.processing_seconds.labels(processor.name)
        self._children: dict = {}
        self._in_counts: dict[str, int] = {}
        self._out_counts: dict[str, int] = {}
        self._seen = 0
        self._positions: dict[tuple[str, int], int] = {}
        self.consumer = Consumer({
            "bootstrap.servers": settings.kafka_bootstrap_servers,
            "group.id": group_id or f"llmpulse-{processor.name}",
            "enable.auto.commit": False,
            "auto.offset.reset": "earliest",
            "session.timeout.ms": int(settings.kafka_session_timeout_s * 1000),
            **FETCH_TUNING,
        })
        self.producer = Producer({
            "bootstrap.servers": settings.kafka_bootstrap_servers,
            "enable.idempotence": True,  # retries inside librdkafka never duplicate or reorder
            "linger.ms": 5,
            "compression.type": "lz4",
        })

    def run(self) -> None:
        """Process until :meth:`stop`; the batch in hand is finished first."""
        # Tables (profiles, experiments) are read whole before the first
        # message, so nothing is tagged against half a table.
        for out in getattr(self.processor, "start", lambda: [])():
            self._produce(out)
        self.consumer.subscribe(list(self.processor.sources), on_assign=self._on_assign, on_revoke=self._on_revoke)
        log.info("%s: consuming %s", self.processor.name, ", ".join(self.processor.sources))
        next_tick = time.monotonic() + self.tick_interval_s
        try:
            while not self.stopping.is_set():
                messages = self.consumer.consume(self.batch_size, timeout=0.2)
                for msg in messages:
                    self._handle(msg)
                self._count_batch()
                if time.monotonic() >= next_tick:
                    self._tick()
                    behind = self._lag > self.catch_up_lag
                    next_tick = time.monotonic() + (self.catch_up_tick_s if behind else self.tick_interval_s)
                if self._positions:
                    self._flush_and_commit()
            # Spans a processor holds back (sampling) leave with it, not with the process.
            for out in getattr(self.processor, "drain", lambda: [])():
                self._produce(out)
        finally:
            self.producer.flush(30)
            self.consumer.close()

    def stop(self) -> None:
        """Ask :meth:`run` to return after the current batch."""
        self.stopping.set()

    def _handle(self, msg: Message) -> None:
        if msg.error():
            if msg.error().code() != KafkaError._PARTITION_EOF:
                log.warning("%s: consumer error %s", self.processor.name, msg.error())
            return
        message = SourceMessage(msg.topic(), msg.partition(), msg.offset(), msg.key(), msg.value())
        # The batch's next offsets, kept here rather than by a second pass over the batch.
        self._positions[(message.topic, message.partition)] = message.offset + 1
        counts = self._in_counts
        counts[message.topic] = counts.get(message.topic, 0) + 1
        # Timing every message costs more than a fast processor's own work
        # (two clock reads and a locked histogram update): time 1 in 16.
        self._seen += 1
        timed = not self._seen & 15
        started = time.perf_counter() if timed else 0.0
        try:
            produced = self.processor.process(message)
        except Exception as exc:  # any failure of pure logic on one message is that message's fault
            log.warning("dead-lettering %s[%d]@%d: %s: %s", message.topic, message.partition, message.offset,
                        type(exc).__name__, exc)
            self._produce(Output(DEADLETTER.name, message.key, encode_dead_letter(self.processor.name, message, exc)))
            self.metrics.dead_letters.labels(self.processor.name, message.topic, type(exc).__name__).inc()
            return
        finally:
            if timed:
                self._processing.observe(time.perf_counter() - started)
        for out in produced:
            self._produce(out)
            self._out_counts[out.topic] = self._out_counts.get(out.topic, 0) + 1

    def _count_batch(self) -> None:
        """Add the batch's per-topic message counts to the Prometheus counters (once per batch)."""
        for counts, metric in ((self._in_counts, self.metrics.events_in), (self._out_counts, self.metrics.events_out)):
            for topic, n in counts.items():
                self._child(metric, topic).inc(n)
            counts.clear()

    def _child(self, metric, topic: str):  # noqa: ANN001, ANN202 - a prometheus_client metric and its child
        # labels() hashes and locks on every call; at tens of thousands of
        # messages a second that is a measurable share of the runtime's cost.
        key = (id(metric), topic)
        child = self._children.get(key)
        if child is None:
            child = self._children[key] = metric.labels(self.processor.name, topic)
        return child

    def _on_assign(self, consumer: Consumer, partitions: list[TopicPartition]) -> None:
        """Tell a stateful processor, and start where its state can be rebuilt."""
        hook = getattr(self.processor, "on_assign", None)
        if hook is None:
            return  # stateless: resume from the committed offsets
        hook(sorted({tp.partition for tp in partitions}))
        start_offsets = getattr(self.processor, "start_offsets", None)
        if start_offsets is not None:
            # The processor restored a checkpoint and says where to resume.
            committed = {(tp.topic, tp.partition): tp.offset for tp in consumer.committed(partitions, timeout=15)}
            ends = {(tp.topic, tp.partition): consumer.get_watermark_offsets(tp, timeout=15)[1] for tp in partitions}
            starts = [TopicPartition(t, p, o) for (t, p), o in start_offsets(committed, ends).items()]
            consumer.assign(starts)
            log.info("%s: resuming %s", self.processor.name, ", ".join(f"{t.topic}[{t.partition}]@{t.offset}" for t in starts))
            return
        replay = getattr(self.processor, "replay_from", None)
        if replay is None:
            return
        at_ms = int(replay().timestamp() * 1000)
        by_time = consumer.offsets_for_times(
            [TopicPartition(tp.topic, tp.partition, at_ms) for tp in partitions], timeout=15
        )
        committed = {(tp.topic, tp.partition): tp.offset for tp in consumer.committed(partitions, timeout=15)}
        starts = []
        for tp in by_time:
            done = committed.get((tp.topic, tp.partition), OFFSET_INVALID)
            recent = tp.offset if tp.offset >= 0 else OFFSET_END  # none that recent: only new ones
            if done < 0:
                # Never committed: anything older than the replay point could
                # not be emitted anyway, so do not read it.
                starts.append(TopicPartition(tp.topic, tp.partition, recent))
            elif recent == OFFSET_END:
                starts.append(TopicPartition(tp.topic, tp.partition, done))
            else:  # never skip ahead of what was committed, only go back to rebuild
                starts.append(TopicPartition(tp.topic, tp.partition, min(done, recent)))
        consumer.assign(starts)
        log.info("%s: replaying %s", self.processor.name, ", ".join(f"{t.topic}[{t.partition}]@{t.offset}" for t in starts))

    def _on_revoke(self, consumer: Consumer, partitions: list[TopicPartition]) -> None:
        hook = getattr(self.processor, "on_revoke", None)
        if hook is not None:
            hook(sorted({tp.partition for tp in partitions}))

    def _tick(self) -> None:
        tick = getattr(self.processor, "tick", None)
        for out in tick() if tick else ():
            self._produce(out)
            self.metrics.events_out.labels(self.processor.name, out.topic).inc()

    def _produce(self, out: Output) -> None:
        while True:
            try:
                self.producer.produce(out.topic, key=out.key, value=out.value, on_delivery=self._delivered)
                return
            except BufferError:  # local queue full: let librdkafka send some, then retry
                self.producer.poll(0.05)

    def _delivered(self, err: KafkaError | None, _msg: Message) -> None:
        if err is not None:
            # Idempotent producer retries transient errors itself; reaching here
            # is fatal for the batch, so stop rather than commit past it.
            log.error("%s: delivery failed: %s; stopping without committing", self.processor.name, err)
            self.failed = err
            self.stop()

    def _flush_and_commit(self) -> None:
        remaining = self.producer.flush(60)
        if remaining or self.failed is not None:
            raise RuntimeError(f"{self.processor.name}: {remaining} messages undelivered ({self.failed}); "
                               "offsets not committed, the batch will be replayed")
        offsets, self._positions = self._positions, {}
        self.consumer.commit(offsets=[TopicPartition(t, p, o) for (t, p), o in offsets.items()], asynchronous=True)
        lag = 0
        for (topic, partition), offset in offsets.items():
            _low, high = self.consumer.get_watermark_offsets(TopicPartition(topic, partition), cached=True)
            if high is not None and high >= 0:
                self.metrics.consumer_lag.labels(self.processor.name, topic, str(partition)).set(max(0, high - offset))
                lag += max(0, high - offset)
        self._lag = lag  # of the partitions in this batch: enough to tell a backlog from live traffic


def tune_gc_for_streaming() -> None:
    """Freeze what start-up allocated and collect the young generation less often.

    A worker allocates a few dicts per message that die young, next to
    long-lived state (tables, open windows) that the cyclic collector would
    otherwise re-scan again and again: with the default thresholds that
    costs about a tenth of a fast processor's time. Reference counting still
    frees almost everything at once; only cycles wait a little longer.

    >>> import gc
    >>> before = gc.get_threshold()
    >>> tune_gc_for_streaming(); gc.get_threshold()[0]
    50000
    >>> gc.unfreeze(); gc.set_threshold(*before)
    """
    gc.freeze()
    gc.set_threshold(50_000, 50, 50)


def stop_on_signals(stop: threading.Event | None = None) -> threading.Event:
    """``stop`` (or a new event), set by SIGTERM/SIGINT when called from the main thread.

    What every job's loop waits on; a test passes its own event and, off the
    main thread, no handler is installed.

    >>> event = threading.Event()
    >>> stop_on_signals(event) is event
    True
    """
    stop = stop or threading.Event()
    if threading.current_thread() is threading.main_thread():
        signal.signal(signal.SIGTERM, lambda *_: stop.set())
        signal.signal(signal.SIGINT, lambda *_: stop.set())
    return stop


def run_kafka_worker(processor: Processor, settings: Settings) -> None:
    """Run ``processor`` in this process until SIGTERM/SIGINT, serving /metrics."""
    tune_gc_for_streaming()
    registry = CollectorRegistry()
    serve_metrics(settings.metrics_port, registry)
    runtime = KafkaRuntime(processor, settings, registry)
    signal.signal(signal.SIGTERM, lambda *_: runtime.stop())
    signal.signal(signal.SIGINT, lambda *_: runtime.stop())
    runtime.run()
