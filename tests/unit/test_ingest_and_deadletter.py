from __future__ import annotations

import pytest

from processors.catalog import make_processor
from processors.deadletter import SourceMessage, encode_dead_letter
from processors.ingest import IngestProcessor
from processors.settings import Settings
from schemas.codec import SerializationError, decode, encode, encode_json
from schemas.samples import sample


def _message(value: bytes | None, key: bytes | None = None) -> SourceMessage:
    return SourceMessage("llm.spans", 2, 99, key, value)


@pytest.mark.parametrize("wire", [encode, encode_json], ids=["avro", "json"])
def test_ingest_forwards_a_valid_span_as_avro(wire) -> None:
    span = sample("span")
    [out] = IngestProcessor().process(_message(wire("span", span)))
    assert out.topic == "llm.spans.enriched"
    assert out.key == span["trace_id"].encode()
    assert out.value[:2] == b"\xc3\x01"  # Avro single-object encoding downstream
    assert decode(out.value, expected="span") == span


def test_ingest_keeps_the_producers_key() -> None:
    [out] = IngestProcessor().process(_message(encode("span", sample("span")), key=b"custom"))
    assert out.key == b"custom"


@pytest.mark.parametrize(
    "value, match",
    [
        (b"garbage", "wire format"),
        (b'{"trace_id": "x"}', "span."),
        (encode("feedback", sample("feedback")), "span"),
    ],
)
def test_ingest_rejects_bad_input_with_a_serialization_error(value, match) -> None:
    with pytest.raises(SerializationError, match=match):
        IngestProcessor().process(_message(value))


def test_ingest_rejects_tombstones() -> None:
    with pytest.raises(ValueError, match="tombstone"):
        IngestProcessor().process(_message(None))


def test_dead_letter_keeps_original_bytes_and_coordinates() -> None:
    message = _message(b"\xff\xfe", key=b"k")
    record = decode(encode_dead_letter("ingest", message, SerializationError("span.kind: bad")), "dead_letter")
    assert record["original"] == b"\xff\xfe"
    assert record["key"] == b"k"
    assert (record["topic"], record["partition"], record["offset"]) == ("llm.spans", 2, 99)
    assert record["error_type"] == "SerializationError"
    assert "span.kind" in record["error"]


def test_catalog_builds_known_processors_and_names_unknown_ones() -> None:
    assert make_processor("ingest", Settings()).sources == ("llm.spans",)
    with pytest.raises(KeyError, match="known: ingest"):
        make_processor("nope", Settings())
