"""Helpers for integration tests that talk to the real broker."""
from __future__ import annotations

import time
import uuid
from collections.abc import Callable

from confluent_kafka import Consumer, Message


def consume(bootstrap: str, topic: str, count: int, timeout_s: float = 60.0, *, start: str = "earliest",
            where: Callable[[object], bool] = lambda m: True) -> list[Message]:
    """Read ``count`` matching messages from ``topic`` with an independent consumer."""
    consumer = Consumer({
        "bootstrap.servers": bootstrap,
        "group.id": f"test-{uuid.uuid4().hex}",
        "auto.offset.reset": start,
        "enable.auto.commit": False,
    })
    consumer.subscribe([topic])
    found = []
    deadline = time.monotonic() + timeout_s
    try:
        while len(found) < count and time.monotonic() < deadline:
            msg = consumer.poll(0.5)
            if msg is None or msg.error():
                continue
            if where(msg):
                found.append(msg)
    finally:
        consumer.close()
    return found


def skip_backlog(bootstrap: str, group: str, topics: list[str]) -> None:
    """Commit ``group``'s offsets at the end of ``topics``.

    Workers in tests use their real consumer groups; what earlier runs left
    unread on this broker is not the test's business and would only delay it.
    The group must have no active member.
    """
    from confluent_kafka import TopicPartition

    consumer = Consumer({"bootstrap.servers": bootstrap, "group.id": group, "enable.auto.commit": False})
    try:
        ends = []
        for topic in topics:
            for partition in consumer.list_topics(topic, timeout=15).topics[topic].partitions:
                _low, high = consumer.get_watermark_offsets(TopicPartition(topic, partition), timeout=15)
                ends.append(TopicPartition(topic, partition, high))
        consumer.commit(offsets=ends, asynchronous=False)
    finally:
        consumer.close()
