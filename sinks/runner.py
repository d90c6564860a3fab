"""Run a batching sink as a Kafka consumer group: consume, write, then commit.

Offsets are committed only after the batch is in the database, so a crash
replays at most the batches in flight (the writes are idempotent). One batch
is written on a writer thread while the next is consumed and decoded (a sink
whose writes commute may have several written at once). When the
database is unreachable the runner pauses its partitions, backs off
(exponential with jitter) and retries the *same* batch until it is written:
nothing is lost and nothing is skipped. A message that cannot be decoded, or
a row the database rejects on its own, goes to the dead-letter topic.

faust is not used here: a sink needs manual commits after a database write
and pause/resume while retrying, which a plain librdkafka consumer gives
directly and faster.
"""
from __future__ import annotations

import logging
import operator
import sys
import threading
import time
from collections import Counter as Tally
from collections import deque
from collections.abc import Callable, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from itertools import repeat
from typing import Any, Generic, TypeVar

import psycopg
from confluent_kafka import Consumer, KafkaError, Message, Producer, TopicPartition
from prometheus_client import CollectorRegistry, Counter, Histogram
from tenacity import Retrying, retry_if_exception_type, wait_exponential_jitter

from processors.deadletter import SourceMessage, encode_dead_letter
from processors.kafka_runtime import FETCH_TUNING, tune_gc_for_streaming
from processors.metrics import ProcessorMetrics
from processors.settings import Settings
from processors.topics import DEADLETTER

log = logging.getLogger(__name__)
Record = TypeVar("Record")


@dataclass
class BatchSink(Generic[Record]):
    """What a sink provides: how to read one message, how to write a batch.

    ``write`` raises :class:`psycopg.OperationalError` for transient failures
    (retried) and anything else when the batch itself is bad (the runner then
    writes its records one by one to find and dead-letter the bad ones).
    """

    name: str
    topics: tuple[str, ...]
    decode: Callable[[bytes], Record]
    write: Callable[[Sequence[Record]], Any]
    #: Optional ``message -> record`` for sinks that need the key too (a
    #: tombstone on a compacted topic says which key to delete).
    decode_message: Callable[[Any], Record] | None = None
    #: Optional work to do when no message came (e.g. deferred rollups);
    #: transient database errors are logged and retried on the next idle turn.
    idle: Callable[[], Any] | None = None
    #: Most messages per batch when running as a worker (``run_sink``).
    batch_size: int = 2000
    #: Optional ``values -> records`` for a whole batch in one call (a
    #: compiled decoder); a ``None`` in its answer means "use ``decode`` for
    #: this one", which also names the error of a bad message.
    decode_many: Callable[[list[bytes]], list[Record | None]] | None = None
    #: Batches a worker may write at once, each on its own writer thread
    #: (``write`` must then be safe to call from several threads, e.g. one
    #: connection per thread). Only for writes that commute, such as
    #: appends the database merges later: a later batch may land first.
    #: Offsets are still committed in batch order. One PostgreSQL backend
    #: runs a COPY on one core; a second stream uses the second.
    write_streams: int = 1


#: Messages per consume or batch-decode call (see SinkRunner._next_batch).
_CHUNK = 1000


@dataclass
class _Batch(Generic[Record]):
    """A consumed batch: what decoded, and the next offset of each (topic, partition)."""

    messages: list[Message]  # messages[i] is where records[i] came from
    records: list[Record]
    next_offsets: dict[tuple[str, int], int]


@dataclass
class _Pending(Generic[Record]):
    """A batch whose write runs on the writer thread (``future`` is None when nothing decoded)."""

    batch: _Batch[Record]
    future: Future[float] | None  # the write's seconds

    def done(self) -> bool:
        return self.future is None or self.future.done()


class SinkRunner(Generic[Record]):
    """Consume ``sink.topics`` as group ``llmpulse-<sink.name>`` and write batches."""

    def __init__(
        self,
        sink: BatchSink[Record],
        settings: Settings,
        registry: CollectorRegistry | None = None,
        *,
        batch_size: int = 2000,
        max_wait_s: float = 0.5,
        max_backoff_s: float = 30.0,
        group_id: str | None = None,
    ) -> None:
        self.sink = sink
        self.batch_size = batch_size
        self.max_wait_s = max_wait_s
        self.max_backoff_s = max_backoff_s
        self.stopping = threading.Event()
        registry = registry or CollectorRegistry()
        self.metrics = ProcessorMetrics(sink.name, registry)
        self.retries = Counter(
            "llmpulse_sink_retries", "Batch writes retried after a transient database error.",
            ["processor"], registry=registry,
        )
        self.batch_seconds = Histogram(
            "llmpulse_sink_batch_seconds", "Time to write one batch, retries excluded.",
            ["processor"], registry=registry,
        )
        self.group_id = group_id or f"llmpulse-{sink.name}"
        self.consumer = Consumer({
            "bootstrap.servers": settings.kafka_bootstrap_servers,
            "group.id": self.group_id,
            "enable.auto.commit": False,
            "auto.offset.reset": "earliest",
            "session.timeout.ms": int(settings.kafka_session_timeout_s * 1000),
            **FETCH_TUNING,
        })
        self.producer = Producer({"bootstrap.servers": settings.kafka_bootstrap_servers, "enable.idempotence": True})

    # -- the loop ---------------------------------------------------------

    def run(self) -> None:
        """Consume and write until :meth:`stop` is called.

        Pipelined: while batch N is written (its COPY mostly waits on the
        server) the next batch is consumed and decoded. With one write
        stream (the default) N's offsets are committed once N is in the
        database, before batch N+1's write starts, so writes stay in order.
        With ``sink.write_streams`` > 1 that many batches are written at
        once; offsets are still committed in batch order, each only once
        its batch and every earlier one are written. Either way a crash
        replays only uncommitted batches. A write that fails is redone
        here, on this thread, synchronously (retries while the database is
        down, one by one to dead-letter a bad row).
        """
        self.consumer.subscribe(list(self.sink.topics))
        log.info("%s: consuming %s", self.sink.name, ", ".join(self.sink.topics))
        streams = max(1, self.sink.write_streams)
        writer = ThreadPoolExecutor(streams, thread_name_prefix=f"{self.sink.name}-writer")
        in_flight: deque[_Pending] = deque()
        try:
            while not self.stopping.is_set():
                messages = self._next_batch()
                batch = self._prepare(messages) if messages else None
                # Oldest first: when a stream is needed, when idle, or as soon
                # as it is done (its offsets need not wait for a full pipeline).
                while in_flight and (batch is None or len(in_flight) >= streams or in_flight[0].done()):
                    self._finish(in_flight.popleft())
                if batch is not None:
                    in_flight.append(self._start(batch, writer))
                elif self.sink.idle is not None:
                    self._idle()
            while in_flight:
                self._finish(in_flight.popleft())
        finally:
            writer.shutdown(wait=True)
            self.consumer.close()
            self.producer.flush(30)

    def _next_batch(self) -> list:
        """What has arrived, up to ``batch_size`` messages; waits up to ``max_wait_s`` only for the first.

        Adaptive batching: a sink that keeps up writes small batches as soon
        as they come (low latency), one that is behind takes big batches from
        the prefetched queue (few transactions, and the metrics store keeps
        only the newest of the partials a batch repeats). Taken 1,000 at a
        time: one long call holds the GIL, and the writer thread waits.
        """
        messages = self.consumer.consume(1, timeout=self.max_wait_s)
        while messages and len(messages) < self.batch_size:
            more = self.consumer.consume(min(_CHUNK, self.batch_size - len(messages)), timeout=0)
            if not more:
                break
            messages += more
        return messages

    def _idle(self) -> None:
        try:
            self.sink.idle()
        except psycopg.OperationalError as exc:
            log.warning("%s: idle work failed (%s); will retry", self.sink.name, exc)

    def stop(self) -> None:
        """Ask the loop to finish the batch in hand and return."""
        self.stopping.set()

    def _prepare(self, messages: list[Message]) -> _Batch:
        """Count, decode (dead-lettering what does not decode) and note the offsets to commit."""
        live = [msg for msg in messages if not msg.error()]
        if len(live) < len(messages):
            for msg in messages:
                if msg.error() and msg.error().code() != KafkaError._PARTITION_EOF:
                    log.warning("%s: consumer error %s", self.sink.name, msg.error())
        # A batch is in offset order per partition: the last message of each wins.
        next_offsets = {(msg.topic(), msg.partition()): msg.offset() + 1 for msg in live}
        counts = Tally(msg.topic() for msg in live) if len(self.sink.topics) > 1 else {self.sink.topics[0]: len(live)}
        for topic, count in counts.items():
            if count:
                self.metrics.events_in.labels(self.sink.name, topic).inc(count)
        return _Batch(*self._decode(live), next_offsets)

    def _start(self, batch: _Batch, writer: ThreadPoolExecutor) -> _Pending:
        """Begin writing ``batch`` on the writer thread."""
        return _Pending(batch, writer.submit(self._timed_write, batch.records) if batch.records else None)

    def _timed_write(self, records: list[Record]) -> float:
        started = time.perf_counter()
        self.sink.write(records)
        return time.perf_counter() - started

    def _finish(self, pending: _Pending) -> None:
        """Wait for a started write (redo it here if it failed), then commit its offsets."""
        batch = pending.batch
        if pending.future is not None:
            try:
                seconds = pending.future.result()
            except Exception as exc:  # noqa: BLE001 - the synchronous path sorts transient from bad
                log.info("%s: background write failed (%s); redoing it", self.sink.name, exc)
                self._write_all(batch.messages, batch.records)
            else:
                self.batch_seconds.labels(self.sink.name).observe(seconds)
                self.metrics.events_out.labels(self.sink.name, "database").inc(len(batch.records))
        self.producer.flush(30)  # dead letters are durable before their offsets are committed
        self._commit(batch.next_offsets)

    def _decode(self, live: list[Message]) -> tuple[list[Message], list[Record]]:
        """The messages that decode and their records, in step; the others are dead-lettered."""
        sink = self.sink
        decoded: list[Record | None] = [None] * len(live)
        if sink.decode_many is not None and sink.decode_message is None and live:
            values = [msg.value() for msg in live]
            try:  # in chunks, so that the writer thread gets the GIL in between
                decoded = [r for at in range(0, len(values), _CHUNK) for r in sink.decode_many(values[at:at + _CHUNK])]
            except Exception:  # a bug there must not stop the sink: decode one by one instead
                log.exception("%s: batch decode failed; decoding this batch one message at a time", sink.name)
                decoded = [None] * len(live)
            if not any(map(operator.is_, decoded, repeat(None))):  # the usual case, checked in C
                return live, decoded
        messages, records = [], []
        for msg, record in zip(live, decoded, strict=True):
            if record is None:
                try:
                    record = sink.decode_message(msg) if sink.decode_message else sink.decode(msg.value())
                except Exception as exc:  # a message we cannot read is that message's fault
                    self._dead_letter(msg, exc)
                    continue
            messages.append(msg)
            records.append(record)
        return messages, records

    def _write_all(self, messages: list[Message], records: list[Record]) -> None:
        started = time.perf_counter()
        try:
            self._write_retrying(records)
        except (psycopg.OperationalError, InterruptedError):
            raise
        except Exception as exc:
            # One bad row fails the whole batch; find it by writing one at a time.
            log.warning("%s: batch of %d rejected (%s); writing one by one", self.sink.name, len(records), exc)
            for msg, record in zip(messages, records, strict=True):
                try:
                    self._write_retrying([record])
                except (psycopg.OperationalError, InterruptedError):
                    raise
                except Exception as row_exc:
                    self._dead_letter(msg, row_exc)
        self.batch_seconds.labels(self.sink.name).observe(time.perf_counter() - started)
        self.metrics.events_out.labels(self.sink.name, "database").inc(len(records))

    def _write_retrying(self, batch: Sequence[Record]) -> None:
        retrying = Retrying(
            retry=retry_if_exception_type(psycopg.OperationalError),
            wait=wait_exponential_jitter(multiplier=0.5, max=self.max_backoff_s),
            sleep=self._sleep_paused,
            before_sleep=self._log_retry,
            reraise=True,
        )
        for attempt in retrying:
            with attempt:
                self.sink.write(batch)
        self._resume()

    def _sleep_paused(self, seconds: float) -> None:
        # Stay in the group while waiting: poll with partitions paused, so the
        # broker sees a live member and no messages pile up in memory.
        assignment = self.consumer.assignment()
        if assignment:
            self.consumer.pause(assignment)
        deadline = time.monotonic() + seconds
        while time.monotonic() < deadline:
            if self.stopping.is_set():
                raise InterruptedError(f"{self.sink.name}: stopped while the database was unavailable")
            self.consumer.poll(min(0.5, max(0.0, deadline - time.monotonic())))

    def _resume(self) -> None:
        assignment = self.consumer.assignment()
        if assignment:
            self.consumer.resume(assignment)

    def _log_retry(self, state: Any) -> None:
        self.retries.labels(self.sink.name).inc()
        log.warning(
            "%s: database unavailable (%s); retry %d in %.1fs",
            self.sink.name, state.outcome.exception(), state.attempt_number, state.next_action.sleep,
        )

    def _dead_letter(self, msg: Message, exc: BaseException) -> None:
        source = SourceMessage(msg.topic(), msg.partition(), msg.offset(), msg.key(), msg.value())
        log.warning("%s: dead-lettering %s[%d]@%d: %s", self.sink.name, msg.topic(), msg.partition(), msg.offset(), exc)
        self.producer.produce(DEADLETTER.name, key=msg.key(), value=encode_dead_letter(self.sink.name, source, exc))
        self.metrics.dead_letters.labels(self.sink.name, msg.topic(), type(exc).__name__).inc()

    def _commit(self, next_offsets: dict[tuple[str, int], int]) -> None:
        """Commit the next offset of each (topic, partition) handled, and publish the lag left."""
        if not next_offsets:
            return
        try:
            self.consumer.commit(
                offsets=[TopicPartition(t, p, o) for (t, p), o in next_offsets.items()], asynchronous=False
            )
        except Exception as exc:  # partitions moved during a long retry: the new owner replays them
            log.warning("%s: commit failed (%s); the batch will be replayed, writes are idempotent", self.sink.name, exc)
        for (topic, partition), offset in next_offsets.items():
            try:
                _low, high = self.consumer.get_watermark_offsets(TopicPartition(topic, partition), cached=True)
            except Exception:
                continue
            if high is not None and high >= 0:
                self.metrics.consumer_lag.labels(self.sink.name, topic, str(partition)).set(max(0, high - offset))


def run_sink(sink: BatchSink[Any], settings: Settings) -> None:
    """Run ``sink`` in this process until SIGTERM/SIGINT, serving /metrics."""
    import signal

    from processors.metrics import serve_metrics

    registry = CollectorRegistry()
    serve_metrics(settings.metrics_port, registry)
    runner = SinkRunner(sink, settings, registry, batch_size=sink.batch_size)
    tune_gc_for_streaming()  # a batch of 10,000 records is that many young objects
    # The writer thread needs the GIL for moments only (to push the next
    # chunk of a COPY); with the default 5 ms switch interval it waits for
    # the decoding thread and the server runs dry.
    sys.setswitchinterval(0.0005)
    signal.signal(signal.SIGTERM, lambda *_: runner.stop())
    signal.signal(signal.SIGINT, lambda *_: runner.stop())
    try:
        runner.run()
    except InterruptedError as exc:
        log.warning("%s", exc)
