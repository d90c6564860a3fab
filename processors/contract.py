"""The contract between plain processor logic and the streaming runtime.

A processor is a plain object: ``process(message) -> [Output, ...]``. It does
no I/O, so unit tests and benchmarks call it directly; the faust agent in
:mod:`processors.runtime` only moves bytes around it. Raising from
``process`` means "this message is bad": the runtime dead-letters it.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

from processors.deadletter import SourceMessage


@dataclass(frozen=True)
class Output:
    """A message to produce.

    >>> Output("llm.spans.enriched", b"trace-1", b"...").topic
    'llm.spans.enriched'
    """

    topic: str
    key: bytes | None
    value: bytes


class Processor(Protocol):
    """What :func:`processors.runtime.build_app` runs.

    ``name`` names the consumer group (``llmpulse-<name>``), so two workers
    of the same processor share its partitions and two different processors
    each see every message.
    """

    name: str
    sources: tuple[str, ...]

    def process(self, message: SourceMessage) -> list[Output]:
        """Turn one consumed message into the messages to produce."""
        ...  # pragma: no cover
