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
