"""The codec: round trips, JSON input, error messages, schema evolution."""

from __future__ import annotations

import copy
import io
import itertools
import json
import pickle
import random
from contextlib import contextmanager
from datetime import datetime, timedelta, timezone
from pathlib import Path

import fastavro
import pytest
from fastavro.utils import generate_many

from schemas import (
    Codec,
    SerializationError,
    check_backward_compatible,
    decode,
    encode,
    encode_json,
)
from schemas.catalog import SHIPPED_DIR, Catalog, load_schema
from schemas.codec import MAGIC
from schemas.fastread import compile_reader
from schemas.fastwrite import compile_writer
from schemas.samples import SAMPLE_NAMES, sample

UTC = timezone.utc


@pytest.fixture(scope="module")
def codec() -> Codec:
    return Codec()


@pytest.fixture
def schema_dir_factory(tmp_path: Path):
    """Write ``{name: [v1, v2, ...]}`` schemas into a fresh folder per call."""
    counter = itertools.count()

    def make(schemas: dict[str, list[dict]]) -> Path:
        root = tmp_path / f"schemas{next(counter)}"
        for name, versions in schemas.items():
            (root / name).mkdir(parents=True)
            for number, schema in enumerate(versions, start=1):
                (root / name / f"v{number}.avsc").write_text(json.dumps(schema))
        return root

    return make


def raw_schema(name: str, version: int = 1) -> dict:
    return json.loads((SHIPPED_DIR / name / f"v{version}.avsc").read_text())


def span_v2() -> dict:
    schema = raw_schema("span")
    schema["fields"].append(
        {"name": "region", "type": ["null", "string"], "default": None, "doc": "Cloud region."}
    )
    return schema


@contextmanager
def expect_error(field: str | None, *fragments: str):
    """Expect a SerializationError naming ``field`` and containing ``fragments``."""
    with pytest.raises(SerializationError) as info:
        yield info
    err = info.value
    assert err.field == field, str(err)
    for fragment in fragments:
        assert fragment in str(err), str(err)
    if field is not None:
        assert str(err).startswith(f"{field}: ")


# -- round trips ------------------------------------------------------------


def test_samples_cover_every_shipped_record(codec):
    assert SAMPLE_NAMES == codec.catalog.names()
    assert set(SAMPLE_NAMES) == {
        "span", "feedback", "user_profile", "experiment",
        "exposure", "metric_point", "metric_window", "alert", "dead_letter", "anomaly", "anomaly_feedback",
    }


@pytest.mark.parametrize("name", SAMPLE_NAMES)
def test_avro_round_trip(codec, name):
    data = codec.encode(name, sample(name))
    assert data[:2] == MAGIC
    assert data[2:10] == codec.catalog.current(name).fingerprint
    assert codec.decode(data, name) == sample(name)
    assert codec.decode(data) == sample(name)


@pytest.mark.parametrize("name", SAMPLE_NAMES)
def test_json_round_trip_equals_avro_decode(codec, name):
    from_json = codec.decode(codec.encode_json(name, sample(name)), name)
    from_avro = codec.decode(codec.encode(name, sample(name)), name)
    assert from_json == from_avro == sample(name)
    assert all(type(from_json[k]) is type(from_avro[k]) for k in from_avro)


def test_natural_json_fills_defaults_and_matches_avro(codec):
    text = b"""  {
        "trace_id": "4bf92f3577b34da6a3ce929d0e0e4736",
        "span_id": "00f067aa0ba902b7",
        "name": "chat gpt-4o-mini",
        "kind": "llm",
        "start_time": "2025-06-01T14:00:00+02:00",
        "end_time": 1748779201500000,
        "status": "ok",
        "project": "support-bot",
        "parent_span_id": null,
        "input_tokens": 812,
        "cost_usd": 0,
        "attributes": {"http.route": "/v1/chat"}
    }"""
    record = codec.decode(text, "span")
    assert record["start_time"] == datetime(2025, 6, 1, 12, 0, tzinfo=UTC)
    assert record["end_time"] == datetime(2025, 6, 1, 12, 0, 1, 500000, tzinfo=UTC)
    assert record["start_time"].tzinfo is UTC and record["end_time"].tzinfo is UTC
    assert record["cost_usd"] == 0.0 and type(record["cost_usd"]) is float
    assert record["experiments"] == {} and record["finish_reasons"] == []
    assert record["output_tokens"] is None
    assert codec.decode(codec.encode("span", record), "span") == record


@pytest.mark.parametrize(
    "value",
    [
        1748779200000000,
        "2025-06-01T12:00:00Z",
        "2025-06-01T12:00:00.000000Z",
        "2025-06-01T14:00:00+02:00",
        "2025-06-01T12:00:00",  # naive means UTC
        datetime(2025, 6, 1, 12, 0),  # naive means UTC
        datetime(2025, 6, 1, 7, 0, tzinfo=timezone(timedelta(hours=-5))),
    ],
)
def test_timestamp_forms_are_equivalent(codec, value):
    expected = datetime(2025, 6, 1, 12, 0, tzinfo=UTC)
    record = sample("exposure", time=value)
    decoded = codec.decode(codec.encode("exposure", record), "exposure")
    assert decoded["time"] == expected and decoded["time"].tzinfo is UTC
    if not isinstance(value, datetime):
        as_json = json.dumps(record).encode()
        assert codec.decode(as_json, "exposure")["time"] == expected


def test_encode_json_is_natural_json(codec):
    doc = json.loads(codec.encode_json("dead_letter", sample("dead_letter")))
    assert doc["time"] == "2025-06-01T12:00:01.000000Z"
    assert doc["key"] == "c3VwcG9ydC1ib3Q="  # base64 of b"support-bot"
    doc = json.loads(codec.encode_json("span", sample("span", parent_span_id=None)))
    assert doc["parent_span_id"] is None  # no Avro-JSON union wrapper


def test_decode_accepts_bytes_like(codec):
    data = codec.encode("alert", sample("alert"))
    assert codec.decode(bytearray(data)) == codec.decode(memoryview(data)) == sample("alert")


def test_module_level_functions_use_shipped_schemas():
    data = encode("feedback", sample("feedback"))
    assert decode(data, "feedback") == sample("feedback")
    assert decode(encode_json("feedback", sample("feedback")), "feedback") == sample("feedback")


def test_defaults_are_fresh_objects(codec):
    text = b"""{"alert_id": "a1", "kind": "drift", "severity": "info", "title": "t",
               "text": "x", "time": "2025-06-01T12:00:00Z"}"""
    first, second = codec.decode(text, "alert"), codec.decode(text, "alert")
    first["links"].append("x")
    first["dimensions"]["k"] = "v"
    assert second["links"] == [] and second["dimensions"] == {}


def test_encode_does_not_mutate_input(codec):
    record = sample("experiment")
    before = copy.deepcopy(record)
    codec.encode("experiment", record)
    codec.encode_json("experiment", record)
    assert record == before


# -- error cases: every message names the field --------------------------------


def span_json(**changes) -> dict:
    """The sample span as natural JSON, with fields changed (None deletes)."""
    doc = json.loads(Codec().encode_json("span", sample("span")))
    for key, value in changes.items():
        if value is None:
            del doc[key]
        else:
            doc[key] = value
    return doc


def test_missing_required_field(codec):
    record = sample("span")
    del record["trace_id"]
    with expect_error("span.trace_id", "required field missing"):
        codec.encode("span", record)
    with expect_error("span.trace_id", "required field missing"):
        codec.decode(json.dumps(span_json(trace_id=None)).encode(), "span")


@pytest.mark.parametrize(
    ("field", "value", "fragments"),
    [
        ("input_tokens", "812", ["expected long or null", "got str ('812')"]),
        ("input_tokens", True, ["expected long or null", "got bool"]),
        ("input_tokens", 1.5, ["expected long or null", "got float"]),
        ("input_tokens", 2**63, ["does not fit in an Avro long"]),
        ("cost_usd", "0.1", ["expected double or null"]),
        ("name", 42, ["expected string, got int (42)"]),
        ("finish_reasons", "stop", ["expected array"]),
        ("attributes", ["a"], ["expected object (map)"]),
        ("kind", "llama", ["'llama' is not one of: llm, tool, retrieval, agent, chain, embedding"]),
        ("status", None, ["expected one of: unset, ok, error"]),
        ("start_time", "yesterday", ["expected timestamp", "ISO-8601", "got str ('yesterday')"]),
        ("start_time", 10**20, ["outside the years 1..9999"]),
        ("end_time", 1.7e15, ["expected timestamp"]),
        ("trace_id", "4BF92F35", ["does not match ^[0-9a-f]{32}$"]),
    ],
)
def test_bad_value_names_field(codec, field, value, fragments):
    with expect_error(f"span.{field}", *fragments):
        codec.encode("span", sample("span", **{field: value}))


def test_nested_paths(codec):
    with expect_error("span.attributes[http.route]", "expected string, got int (200)"):
        codec.encode("span", sample("span", attributes={"http.route": 200}))
    with expect_error("span.finish_reasons[1]", "expected string"):
        codec.encode("span", sample("span", finish_reasons=["stop", None]))
    variants = sample("experiment")["variants"]
    variants[1]["weight"] = "half"
    with expect_error("experiment.variants[1].weight", "expected double"):
        codec.encode("experiment", sample("experiment", variants=variants))
    with expect_error("experiment.namespace.range_end", "required field missing"):
        codec.encode("experiment", sample("experiment", namespace={"name": "n", "range_start": 0}))
    namespace_error = "expected object (record llmpulse.Namespace) or null"
    with expect_error("experiment.namespace", namespace_error):
        codec.encode("experiment", sample("experiment", namespace="prompts"))
    with expect_error("user_profile.feature_flags[streaming]", "expected boolean, got int"):
        codec.encode("user_profile", sample("user_profile", feature_flags={"streaming": 1}))


def test_unknown_fields_are_rejected(codec):
    with expect_error("span.ouput_tokens", "unknown field", "llmpulse.Span"):
        codec.encode("span", sample("span", ouput_tokens=5))
    with expect_error("span", "unknown fields 'a', 'b'"):
        codec.decode(json.dumps(span_json(a=1, b=2)).encode(), "span")


def test_bytes_fields(codec):
    with expect_error("dead_letter.original", "expected bytes, got str"):
        codec.encode("dead_letter", sample("dead_letter", original="text"))
    doc = json.loads(codec.encode_json("dead_letter", sample("dead_letter")))
    doc["original"] = "not base64!"
    with expect_error("dead_letter.original", "base64"):
        codec.decode(json.dumps(doc).encode(), "dead_letter")


def test_record_must_be_a_mapping(codec):
    with expect_error("span", "expected object (record llmpulse.Span), got list"):
        codec.encode("span", [])
    with expect_error("span", "expected object (record llmpulse.Span), got str"):
        codec.encode("span", "x")


def test_truncated_avro_body(codec):
    data = codec.encode("span", sample("span"))
    for cut in range(10, len(data)):
        with expect_error("span", "corrupt or truncated Avro body"):
            codec.decode(data[:cut], "span")
    with expect_error("span", "truncated single-object header"):
        codec.decode(data[:6], "span")


def test_trailing_bytes(codec):
    data = codec.encode("exposure", sample("exposure"))
    with expect_error("exposure", "2 trailing bytes"):
        codec.decode(data + b"\x00\x00", "exposure")


@pytest.mark.parametrize("data", [b"\x00\x01garbage", b"\xc3", b"hello", b"  [1]", b"\xff\xfe{"])
def test_garbage_bytes(codec, data):
    with expect_error("span", "unknown wire format", "C3 01"):
        codec.decode(data, "span")


def test_empty_message(codec):
    with expect_error(None, "empty message"):
        codec.decode(b"")


def test_unknown_fingerprint(codec):
    data = MAGIC + bytes.fromhex("0011223344556677") + b"\x00"
    with expect_error("span", "unknown schema fingerprint 0011223344556677"):
        codec.decode(data, "span")


def test_wrong_record(codec):
    data = codec.encode("feedback", sample("feedback"))
    with expect_error("span", "expected a span message, got feedback v1"):
        codec.decode(data, "span")


def test_json_errors(codec):
    with expect_error(None, "pass expected=<record name>"):
        codec.decode(b'{"a": 1}')
    with expect_error("span", "invalid JSON"):
        codec.decode(b'{"trace_id": ', "span")
    with expect_error("span", "invalid JSON"):
        codec.decode(b'{"name": "\xff"}', "span")


def test_unknown_record_name_is_a_programming_error(codec):
    with pytest.raises(KeyError, match="unknown record 'spam'"):
        codec.encode("spam", {})
    with pytest.raises(KeyError, match="unknown record 'spam'"):
        codec.decode(b"{}", "spam")
    with pytest.raises(KeyError, match="unknown record 'spam'"):
        codec.decode(codec.encode("span", sample("span")), "spam")


def test_random_corruption_only_raises_serialization_error(codec):
    rng = random.Random(7)
    for name in SAMPLE_NAMES:
        data = bytearray(codec.encode(name, sample(name)))
        for _ in range(300):
            broken = bytearray(data)
            for _ in range(rng.randint(1, 4)):
                broken[rng.randrange(10, len(broken))] = rng.randrange(256)
            try:
                codec.decode(bytes(broken), name)
            except SerializationError as e:
                assert e.field == name


def test_serialization_error_pickles():
    err = pickle.loads(pickle.dumps(SerializationError("required field missing", "span.x")))
    assert (err.field, str(err)) == ("span.x", "span.x: required field missing")


# -- generated reader and writer agree with fastavro ----------------------------


def _edge_span() -> dict:
    """Values that take the multi-byte varint and block paths."""
    epoch = datetime(1970, 1, 1, tzinfo=UTC)
    record = sample(
        "span",
        input="ü" * 300,
        input_tokens=-(2**63),
        output_tokens=2**63 - 1,
        max_tokens=64,
        cost_usd=-0.0,
        attributes={f"k{i}": "v" * i for i in range(200)},
        finish_reasons=["stop"] * 70,
        experiments={},
    )
    for key in ("start_time", "end_time", "first_token_time"):
        record[key] = (record[key] - epoch) // timedelta(microseconds=1)
    return record


@pytest.mark.parametrize("name", SAMPLE_NAMES)
def test_generated_reader_and_writer_match_fastavro(name):
    schema = Catalog.shipped().current(name).schema
    read, write = compile_reader(schema), compile_writer(schema)
    state = random.getstate()
    random.seed(name)
    try:
        records = list(generate_many(schema, 150))
    finally:
        random.setstate(state)
    if name == "span":
        records.append(_edge_span())
    for record in records:
        expected = io.BytesIO()
        fastavro.schemaless_writer(expected, schema, record)
        ours = bytearray()
        write(record, ours)
        assert bytes(ours) == expected.getvalue()
        value, end = read(expected.getvalue(), 0)
        assert end == len(ours)
        assert value == fastavro.schemaless_reader(io.BytesIO(expected.getvalue()), schema, None)


def test_generated_reader_handles_sized_blocks():
    # Other Avro writers (e.g. Java) may write a negative item count followed
    # by the block's byte size; fastavro itself never does.
    schema = fastavro.parse_schema({"type": "map", "values": "long"})
    data = bytes([0x01, 0x06, 0x02]) + b"a" + bytes([0x04, 0x00])  # count -1, 3 bytes
    assert compile_reader(schema)(data, 0) == ({"a": 2}, len(data))
    assert fastavro.schemaless_reader(io.BytesIO(data), schema) == {"a": 2}


# -- evolution -----------------------------------------------------------------


def test_old_and_new_versions_decode_side_by_side(schema_dir_factory):
    root = schema_dir_factory({"span": [raw_schema("span"), span_v2()]})
    evolved = Codec.from_directory(root)
    only_v1 = Codec.from_directory(schema_dir_factory({"span": [raw_schema("span")]}))
    assert [v.version for v in evolved.catalog.versions("span")] == [1, 2]

    old_bytes = only_v1.encode("span", sample("span"))
    new_bytes = evolved.encode("span", sample("span", region="eu-west-1"))
    assert old_bytes[2:10] == evolved.catalog.versions("span")[0].fingerprint
    assert new_bytes[2:10] == evolved.catalog.current("span").fingerprint

    # v1 data read with the v2 reader: the new field gets its default.
    assert evolved.decode(old_bytes, "span") == {**sample("span"), "region": None}
    assert evolved.decode(new_bytes, "span")["region"] == "eu-west-1"
    # A consumer that only ships v1 cannot read v2 data: deploy consumers first.
    with expect_error("span", "unknown schema fingerprint"):
        only_v1.decode(new_bytes, "span")
    # ...and the evolved codec rejects v1 corruption the same way as v2's.
    with expect_error("span", "corrupt or truncated"):
        evolved.decode(old_bytes[:-3], "span")
    # JSON is always read with the current version.
    assert evolved.decode(only_v1.encode_json("span", sample("span")), "span")["region"] is None
    check_backward_compatible(raw_schema("span"), span_v2())


def test_field_without_default_breaks_compatibility(schema_dir_factory):
    bad = span_v2()
    bad["fields"][-1] = {"name": "region", "type": "string", "doc": "Cloud region."}
    with expect_error("span.region", "added without a default"):
        check_backward_compatible(raw_schema("span"), bad)
    narrowed = raw_schema("span")
    narrowed["fields"][1]["type"] = "int"  # span_id string -> int cannot be read
    with expect_error("span", "cannot be read with the new one"):
        check_backward_compatible(raw_schema("span"), narrowed, samples=5)


def test_removed_enum_symbol_needs_enum_default():
    old = raw_schema("alert")
    new = raw_schema("alert")
    new["fields"][1]["type"]["symbols"].remove("pipeline")
    with expect_error("alert.kind", "removed without an enum default"):
        check_backward_compatible(old, new)


def test_catalog_rejects_gaps_and_renames(schema_dir_factory):
    root = schema_dir_factory({"span": [raw_schema("span"), span_v2()]})
    (root / "span" / "v1.avsc").unlink()
    with pytest.raises(ValueError, match="without gaps"):
        Catalog.from_directory(root)
    renamed = span_v2()
    renamed["name"] = "Trace"
    with pytest.raises(ValueError, match="same record"):
        Catalog.from_directory(schema_dir_factory({"span": [raw_schema("span"), renamed]}))


def test_load_schema_reports_the_file(tmp_path):
    path = tmp_path / "v1.avsc"
    path.write_text('{"type": "record", "name": "X", "fields": [{"name": "a", "type": "nope"}]}')
    with pytest.raises(ValueError, match="v1.avsc: not a valid Avro schema"):
        load_schema(path)


def test_general_unions_fall_back_to_fastavro(schema_dir_factory):
    # No shipped schema has a union other than [null, X]; the generated writer
    # refuses them, so the codec must fall back to fastavro's writer.
    schema = {
        "type": "record", "name": "Probe", "namespace": "llmpulse", "doc": "Test record.",
        "fields": [{"name": "value", "type": ["null", "string", "long"], "default": None}],
    }
    codec = Codec.from_directory(schema_dir_factory({"probe": [schema]}))
    for value in (None, "x", 5):
        assert codec.decode(codec.encode("probe", {"value": value})) == {"value": value}
        assert codec.decode(codec.encode_json("probe", {"value": value}), "probe") == {"value": value}
    with expect_error("probe.value", "expected one of [null, string, long], got float"):
        codec.encode("probe", {"value": 1.5})


@pytest.mark.parametrize("name", SAMPLE_NAMES)
def test_encode_decoded_matches_the_validating_encoder(name) -> None:
    codec = Codec()
    data = codec.encode(name, sample(name))
    assert codec.encode_decoded(name, codec.decode(data, name)) == data


def test_encode_decoded_on_generated_spans_with_changed_values() -> None:
    from processors.generator import TrafficModel

    codec = Codec()
    for trace in TrafficModel(seed=5).traces(50):
        for span in trace:
            decoded = codec.decode(codec.encode("span", span), "span")
            decoded["input"] = "<EMAIL> asked"
            decoded["cost_usd"] = 0.25
            assert codec.encode_decoded("span", decoded) == codec.encode("span", decoded)


@pytest.mark.parametrize("name", SAMPLE_NAMES)
def test_projection_equals_the_full_decode_cut_down(codec, name):
    record = sample(name)
    data = codec.encode(name, record)
    full = codec.decode(data, name)
    fields = sorted(full)
    for keep in (fields[::2], fields[1::2], fields[:1], fields):
        assert codec.projection(name, keep)(data) == {k: full[k] for k in keep}


def test_projection_rejects_corrupt_data_and_unknown_fields(codec):
    read = codec.projection("span", ["trace_id"])
    data = codec.encode("span", sample("span"))
    with pytest.raises(SerializationError):
        read(data[:-3])
    with pytest.raises(SerializationError):
        read(data + b"\x00")
    with pytest.raises(KeyError, match="nope"):
        codec.projection("span", ["nope"])
    # JSON and other versions go through the full, validating decoder.
    assert read(codec.encode_json("span", sample("span"))) == {"trace_id": sample("span")["trace_id"]}


def test_projection_narrows_a_map_to_some_keys(codec):
    span = sample("span", attributes={"llmpulse.cohort": "pro", "http.route": "/v1", "x": "y"})
    read = codec.projection("span", {"trace_id": None, "attributes": ["llmpulse.cohort", "absent"]})
    expected = {"trace_id": span["trace_id"], "attributes": {"llmpulse.cohort": "pro"}}
    assert read(codec.encode("span", span)) == expected
    assert read(codec.encode_json("span", span)) == expected  # the validating fallback cuts the same way
    assert read(codec.encode("span", sample("span", attributes={}))) == {**expected, "attributes": {}}
    with pytest.raises(ValueError, match="map"):
        codec.projection("span", {"trace_id": ["a"]})


def test_projection_in_micros_reads_timestamps_as_integer_microseconds(codec):
    span = sample("span")
    read = codec.projection("span", ["start_time", "end_time"], micros=True)
    as_micros = {k: (span[k] - datetime(1970, 1, 1, tzinfo=timezone.utc)) // timedelta(microseconds=1)
                 for k in ("start_time", "end_time")}
    assert read(codec.encode("span", span)) == as_micros
    assert read(codec.encode_json("span", span)) == as_micros  # the fallback converts the same way


@pytest.mark.parametrize("value", [0, -1, 63, -64, 64, 8191, -8192, 8192, 2**31, -(2**40), 2**62, -(2**63)])
def test_generated_reader_reads_varints_of_every_length(value):
    schema = fastavro.parse_schema({"type": "record", "name": "L", "fields": [
        {"name": "n", "type": "long"}, {"name": "s", "type": "string"}]})
    buf = io.BytesIO()
    text = "x" * (abs(value) % 9000)  # string lengths of one and two varint bytes
    fastavro.schemaless_writer(buf, schema, {"n": value, "s": text})
    assert compile_reader(schema)(buf.getvalue(), 0) == ({"n": value, "s": text}, len(buf.getvalue()))


def test_generated_reader_refuses_varints_beyond_64_bits():
    from schemas.fastread import CorruptData

    schema = fastavro.parse_schema({"type": "record", "name": "L", "fields": [{"name": "n", "type": "long"}]})
    assert compile_reader(schema)(b"\xfe" + b"\xff" * 8 + b"\x01", 0)[0] == {"n": 2**63 - 1}
    with pytest.raises(CorruptData, match="64 bits"):
        compile_reader(schema)(b"\xff" * 9 + b"\x02", 0)
