"""Dead letters: a message a processor cannot handle, kept whole with its error.

Bad input never stops a processor and is never silently dropped: the original
bytes, the error, and where the message came from go to ``llm.deadletter`` so
it can be inspected and replayed once the cause is fixed.
"""
from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timezone

from schemas.codec import encode


@dataclass(frozen=True)
class SourceMessage:
    """A consumed message and its coordinates.

    >>> SourceMessage("llm.spans", 0, 42, b"k", b"{}").offset
    42
    """

    topic: str
    partition: int
    offset: int
    key: bytes | None
    value: bytes | None


def dead_letter_record(processor: str, message: SourceMessage, error: BaseException) -> dict:
    """The ``dead_letter`` record for ``message`` that failed with ``error``.

    Examples
    --------
    >>> msg = SourceMessage("llm.spans", 1, 7, None, b"not json")
    >>> rec = dead_letter_record("ingest", msg, ValueError("bad"))
    >>> rec["error_type"], rec["offset"], rec["original"]
    ('ValueError', 7, b'not json')
    """
    return {
        "original": message.value if message.value is not None else b"",
        "error": str(error) or repr(error),
        "error_type": type(error).__name__,
        "processor": processor,
        "topic": message.topic,
        "partition": message.partition,
        "offset": message.offset,
        "key": message.key,
        "time": datetime.now(timezone.utc),
    }


def encode_dead_letter(processor: str, message: SourceMessage, error: BaseException) -> bytes:
    """Encode the dead-letter record (Avro, self-identifying) for producing."""
    return encode("dead_letter", dead_letter_record(processor, message, error))
