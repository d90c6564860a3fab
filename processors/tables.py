"""Tables over compacted topics: the latest value per key, in memory.

``llm.users`` and ``llm.experiments`` are compacted topics keyed by user id
and experiment key: each is its own changelog. A :class:`CompactedTable`
reads one from the beginning when a worker starts (``restore``: up to the
end offsets seen at that moment, so a restarted worker has every profile
before it tags its first span), then follows it (``poll``, called between
batches). Every worker reads every partition: spans are keyed by trace,
profiles by user, so any worker may need any profile (what faust calls a
*global table*).

Records that do not decode are not applied; they are returned from
``restore``/``poll`` so that the processor dead-letters them.

Examples
--------
>>> table = CompactedTable("127.0.0.1:1", "llm.users", decode=bytes.decode)
>>> table.apply_record(b"u1", b"pro"), table.get("u1"), len(table)
(None, 'pro', 1)
>>> table.apply_record(b"u1", None), table.get("u1")
(None, None)
"""
from __future__ import annotations

import logging
import time
from collections.abc import Callable
from typing import Any, Generic, TypeVar

from confluent_kafka import OFFSET_BEGINNING, Consumer, KafkaError, KafkaException, TopicPartition

from processors.deadletter import SourceMessage

log = logging.getLogger(__name__)

V = TypeVar("V")


class TableRestoreError(RuntimeError):
    """The topic could not be read to its end in time (broker down, topic missing)."""


class CompactedTable(Generic[V]):
    """Latest decoded value per key of one compacted topic.

    Parameters
    ----------
    bootstrap
        Kafka bootstrap servers.
    topic
        The compacted topic.
    decode
        ``bytes -> value``; raises on a bad record.
    merge
        ``(current or None, incoming) -> value to keep``; default keeps the
        incoming one. Lets a table ignore an older version that a producer
        sent late (newest ``updated_at`` wins).
    on_change
        ``(key, value or None) -> None``, called after every applied record
        (e.g. to recompile a changed experiment).
    """

    def __init__(
        self,
        bootstrap: str,
        topic: str,
        decode: Callable[[bytes], V],
        merge: Callable[[V | None, V], V] | None = None,
        on_change: Callable[[str, V | None], None] | None = None,
    ) -> None:
        self.bootstrap = bootstrap
        self.topic = topic
        self.decode = decode
        self.merge = merge
        self.on_change = on_change
        self.data: dict[str, V] = {}
        self.applied = 0
        self._consumer: Consumer | None = None

    # -- state -------------------------------------------------------------

    def get(self, key: str) -> V | None:
        """The latest value for ``key``, or None."""
        return self.data.get(key)

    def __len__(self) -> int:
        return len(self.data)

    def apply_record(self, key: bytes | None, value: bytes | None) -> None:
        """Apply one record: a tombstone (``None``) deletes; raises if it does not decode."""
        if key is None:
            raise ValueError(f"record on compacted topic {self.topic} has no key")
        name = key.decode()
        if value is None:
            self.data.pop(name, None)
        else:
            decoded = self.decode(value)
            self.data[name] = self.merge(self.data.get(name), decoded) if self.merge else decoded
        self.applied += 1
        if self.on_change is not None:
            self.on_change(name, self.data.get(name))

    # -- reading the topic ---------------------------------------------------

    def restore(self, timeout_s: float = 60.0) -> list[tuple[SourceMessage, Exception]]:
        """Read the topic from the beginning up to its current end.

        Returns the records that failed to decode, with their errors.
        Raises :class:`TableRestoreError` when the end is not reached within
        ``timeout_s`` (a worker must not start tagging with half a table).
        """
        consumer = self._open()
        metadata = consumer.list_topics(self.topic, timeout=10)
        topic_md = metadata.topics.get(self.topic)
        if topic_md is None or topic_md.error is not None:
            raise TableRestoreError(
                f"cannot read table topic {self.topic}: {topic_md.error if topic_md else 'missing'}; "
                "create it with `llmpulse topics create`"
            )
        ends: dict[int, int] = {}
        for p in topic_md.partitions:
            low, high = consumer.get_watermark_offsets(TopicPartition(self.topic, p), timeout=10)
            if high > low:
                ends[p] = high
        consumer.assign([TopicPartition(self.topic, p, OFFSET_BEGINNING) for p in topic_md.partitions])
        bad: list[tuple[SourceMessage, Exception]] = []
        deadline = time.monotonic() + timeout_s
        while ends:
            if time.monotonic() > deadline:
                raise TableRestoreError(
                    f"table {self.topic} not restored within {timeout_s:.0f} s; still behind on partitions "
                    + ", ".join(str(p) for p in sorted(ends))
                )
            for msg in consumer.consume(1000, timeout=0.5):
                if msg.error():
                    self._check(msg.error())
                    continue
                bad += self._apply(msg)
                if msg.offset() + 1 >= ends.get(msg.partition(), 1 << 62):
                    ends.pop(msg.partition(), None)
        log.info("table %s restored: %d keys from %d records", self.topic, len(self.data), self.applied)
        return bad

    def poll(self, max_records: int = 5000) -> list[tuple[SourceMessage, Exception]]:
        """Apply records published since the last call (does not block)."""
        if self._consumer is None:
            return []
        bad: list[tuple[SourceMessage, Exception]] = []
        for msg in self._consumer.consume(max_records, timeout=0):
            if msg.error():
                self._check(msg.error())
                continue
            bad += self._apply(msg)
        return bad

    def close(self) -> None:
        """Stop following the topic."""
        if self._consumer is not None:
            self._consumer.close()
            self._consumer = None

    def _open(self) -> Consumer:
        if self._consumer is None:
            # No group: offsets are never committed, every start re-reads the
            # whole (compacted, so small) topic.
            self._consumer = Consumer({
                "bootstrap.servers": self.bootstrap,
                "group.id": f"llmpulse-table-{self.topic}",
                "enable.auto.commit": False,
                "enable.partition.eof": False,
            })
        return self._consumer

    def _apply(self, msg: Any) -> list[tuple[SourceMessage, Exception]]:
        try:
            self.apply_record(msg.key(), msg.value())
        except Exception as exc:  # noqa: BLE001 - any decode failure is this record's fault
            source = SourceMessage(msg.topic(), msg.partition(), msg.offset(), msg.key(), msg.value())
            return [(source, exc)]
        return []

    def _check(self, error: KafkaError) -> None:
        if error.fatal():
            raise KafkaException(error)
        log.warning("table %s: %s", self.topic, error)
