"""The generated Avro writer: byte-for-byte what fastavro writes, on the edges
of each of its fast paths (one/two-byte lengths, union branch + length in one
step, eight-byte timestamps, one field fetched for all)."""
from __future__ import annotations

import io

import fastavro
import pytest

from schemas.fastwrite import compile_writer


def _both(schema: dict, record: dict) -> tuple[bytes, bytes]:
    parsed = fastavro.parse_schema(schema)
    expected = io.BytesIO()
    fastavro.schemaless_writer(expected, parsed, record)
    ours = bytearray()
    compile_writer(parsed)(record, ours)
    return bytes(ours), expected.getvalue()


_EDGES = [2**48 - 1, 2**48, 2**55 - 1, 2**55, 1_764_000_000_123_456]
_LONGS = [0, 63, 64, -64, -65, 8191, 8192, 2**62, 2**63 - 1, -(2**63)]


@pytest.mark.parametrize("value", _EDGES + [-v for v in _EDGES] + [-v - 1 for v in _EDGES] + _LONGS)
def test_longs_and_timestamps_match_fastavro(value):
    schema = {"type": "record", "name": "T", "fields": [
        {"name": "n", "type": "long"},
        {"name": "at", "type": {"type": "long", "logicalType": "timestamp-micros"}},
        {"name": "maybe", "type": ["null", {"type": "long", "logicalType": "timestamp-micros"}]},
    ]}
    ours, expected = _both(schema, {"n": value, "at": value, "maybe": value})
    assert ours == expected


@pytest.mark.parametrize("length", [0, 1, 63, 64, 65, 8191, 8192, 20_000])
@pytest.mark.parametrize("null_first", [True, False])
def test_strings_and_optional_strings_match_fastavro(length, null_first):
    def optional(kind):
        return ["null", kind] if null_first else [kind, "null"]

    schema = {"type": "record", "name": "S", "fields": [
        {"name": "s", "type": "string"},
        {"name": "o", "type": optional("string")},
        {"name": "none", "type": optional("string")},
        {"name": "b", "type": optional("bytes")},
        {"name": "m", "type": {"type": "map", "values": "string"}},
        {"name": "a", "type": {"type": "array", "items": "string"}},
    ]}
    text = ("ü" * length)[:length] if length % 2 else "x" * length
    record = {"s": text, "o": text, "none": None, "b": b"y" * length,
              "m": {f"k{i}": text for i in range(3)}, "a": [text] * (length % 70)}
    ours, expected = _both(schema, record)
    assert ours == expected


def test_single_field_record_and_nested_records():
    schema = {"type": "record", "name": "Outer", "fields": [
        {"name": "inner", "type": {"type": "record", "name": "Inner", "fields": [{"name": "x", "type": "int"}]}},
        {"name": "again", "type": ["null", "Inner"]},
    ]}
    ours, expected = _both(schema, {"inner": {"x": -5}, "again": {"x": 300}})
    assert ours == expected


def test_missing_field_raises_key_error_naming_it():
    parsed = fastavro.parse_schema({"type": "record", "name": "P", "fields": [
        {"name": "a", "type": "long"}, {"name": "b", "type": "string"}]})
    with pytest.raises(KeyError, match="b"):
        compile_writer(parsed)({"a": 1}, bytearray())
