"""Ingest: validate producer spans and forward them, self-identifying, downstream.

Producers may send Avro (single-object encoding) or plain JSON; everything
after ingest reads one format, the current Avro ``span`` schema.
"""
from __future__ import annotations

from processors.contract import Output
from processors.deadletter import SourceMessage
from processors.topics import SPANS, SPANS_ENRICHED
from schemas.codec import decode, encode


class IngestProcessor:
    """Decode a span (Avro or JSON), validate it, re-encode it as Avro.

    The message key becomes the trace id when the producer sent none, so all
    spans of a trace land in one partition of ``llm.spans.enriched``.

    Examples
    --------
    >>> from schemas.samples import sample
    >>> from schemas.codec import encode_json
    >>> msg = SourceMessage("llm.spans", 0, 0, None, encode_json("span", sample("span")))
    >>> [out] = IngestProcessor().process(msg)
    >>> out.topic, out.key == sample("span")["trace_id"].encode()
    ('llm.spans.enriched', True)
    """

    name = "ingest"
    sources = (SPANS.name,)

    def process(self, message: SourceMessage) -> list[Output]:
        if message.value is None:
            raise ValueError("empty message value (tombstone) on a span topic")
        span = decode(message.value, expected="span")
        key = message.key or span["trace_id"].encode()
        return [Output(SPANS_ENRICHED.name, key, encode("span", span))]
