"""The compiled metric_window -> COPY row translator gives the Python path's rows, or declines."""
from __future__ import annotations

import doctest
import math
import random
import struct
from datetime import UTC, datetime, timedelta
from decimal import Decimal

import pytest

from schemas.catalog import Catalog
from schemas.codec import MAGIC, SerializationError, decode, encode
from schemas.samples import sample
from tests.avro_versions import encode_version
from sinks.metrics_store import (
    APPEND_COLUMNS,
    INBOX_COLUMNS,
    MetricsStoreError,
    _current_header,
    _inbox_row,
    check_part,
    inbox_record,
)

try:
    from sinks import _inbox_copy as inbox_copy
except ImportError:  # every test below then fails, naming the fix
    inbox_copy = None


@pytest.fixture(autouse=True)
def _extension_built():
    # Optional at install time (no C compiler: the Python path), required here.
    assert inbox_copy is not None, "sinks._inbox_copy is not built: pip install -e . (needs a C compiler)"

SCHEMA = Catalog.shipped().current("metric_window")
HEADER = MAGIC + SCHEMA.fingerprint
_PG_EPOCH = datetime(2000, 1, 1, tzinfo=UTC)
_TYPES = {
    "series": "text", "window_start": "timestamptz", "partition": "int4", "cost_usd": "numeric",
    "sketch": "bytea", "final": "bool", "emitted_at": "timestamptz",
    **dict.fromkeys(("project", "model", "provider", "prompt_version", "kind", "cohort", "variant"), "text"),
    **dict.fromkeys(("rating_sum", "cost_sq_sum", "rating_sq_sum", "latency_ms_sum", "latency_ms_sq_sum",
                     "p50_ms", "p90_ms", "p95_ms", "p99_ms"), "float8"),
}


def _numeric(data: bytes) -> Decimal:
    ndigits, weight, sign, dscale = struct.unpack(">hhHh", data[:8])
    digits = struct.unpack(f">{ndigits}h", data[8:])
    value = sum((Decimal(d) * Decimal(10000) ** (weight - i) for i, d in enumerate(digits)), Decimal(0))
    return (-value if sign == 0x4000 else value).quantize(Decimal(1).scaleb(-dscale))


def parse_row(row: bytes) -> list:
    """A binary COPY tuple back to Python values, by PostgreSQL's binary formats."""
    (count,), at, values = struct.unpack_from(">h", row), 2, []
    for column in APPEND_COLUMNS[:count]:
        (size,) = struct.unpack_from(">i", row, at)
        at += 4
        if size < 0:
            values.append(None)
            continue
        data, at = row[at:at + size], at + size
        kind = _TYPES.get(column, "int8")
        values.append(
            data.decode() if kind == "text" else data if kind == "bytea" else data == b"\x01" if kind == "bool"
            else struct.unpack(">d", data)[0] if kind == "float8" else _numeric(data) if kind == "numeric"
            else _PG_EPOCH + timedelta(microseconds=struct.unpack(">q", data)[0]) if kind == "timestamptz"
            else int.from_bytes(data, "big", signed=True)
        )
    assert at == len(row) and count == len(APPEND_COLUMNS)
    return values


def _same(a: list, b: list) -> bool:
    # NaN quantiles are passed through; NaN != NaN.
    return all(x == y or (isinstance(x, float) and math.isnan(x) and math.isnan(y)) for x, y in zip(a, b, strict=True))


def random_partials(n: int, seed: int = 11) -> list[dict]:
    rng = random.Random(seed)
    out = []
    for _ in range(n):
        part = sample("metric_window")
        minute = rng.choice([0, rng.randrange(0, 4_200_000_000)]) * 60  # 1970 .. 9955
        part.update(
            window_start=datetime(1970, 1, 1, tzinfo=UTC) + timedelta(seconds=minute),
            emitted_at=datetime(1970, 1, 1, tzinfo=UTC) + timedelta(microseconds=rng.randrange(0, 253_402_300_799_000_000)),
            partition=rng.choice([0, 1, 2**31 - 1, rng.randrange(1000)]),
            final=rng.random() < 0.5,
            cost_usd=rng.choice([0.0, -0.0, 1e-9, rng.randrange(10**17) / 1e9, -rng.randrange(10**12) / 1e9,
                                 123.000000001, 999_999_999.999999]),
            sketch=rng.randbytes(rng.randrange(0, 300)),
            series=rng.choice(["", "project=a|model=b", "x" * 500]),
            model=rng.choice(["gpt-4o", "", "claude-3-5-haiku-20241022"]),
        )
        for column in ("request_count", "error_count", "input_tokens", "late_events"):
            part[column] = rng.choice([0, 1, -1, 2**63 - 1, -(2**63), rng.randrange(10**9)])
        for column in ("rating_sum", "latency_ms_sum", "latency_ms_sq_sum"):
            part[column] = rng.choice([0.0, rng.uniform(-1e300, 1e300), 5e-324])
        for column in ("p50_ms", "p90_ms", "p95_ms", "p99_ms"):
            part[column] = rng.choice([None, rng.uniform(0, 1e6), float("nan"), float("inf")])
        out.append(part)
    return out


def test_the_extension_is_built_and_used():
    # The sink falls back to the Python path without it, several times slower.
    from sinks import metrics_store

    assert metrics_store._copy_row is inbox_copy.copy_row, "pip install -e . (needs a C compiler)"
    assert _current_header() == HEADER


def test_columns_and_fields_are_those_of_the_schema_and_the_inbox():
    assert inbox_copy.COLUMNS == APPEND_COLUMNS
    assert sorted(APPEND_COLUMNS) == sorted(INBOX_COLUMNS)

    def avro_type(field: dict) -> str:
        t = field["type"]
        if isinstance(t, list):
            return "|".join(t)
        return t.get("logicalType", t["type"]) if isinstance(t, dict) else t

    assert inbox_copy.AVRO_FIELDS == tuple((f["name"], avro_type(f)) for f in SCHEMA.schema["fields"])


def test_docstring_examples():
    assert doctest.testmod(inbox_copy).failed == 0


def test_rows_are_the_python_paths_rows_value_for_value():
    for part in random_partials(3000):
        value = encode("metric_window", part)
        row = inbox_copy.copy_row(value, HEADER)
        assert row is not None, part
        assert _same(parse_row(row), _inbox_row(decode(value, expected="metric_window")))


@pytest.mark.parametrize(("change", "why"), [
    ({"resolution": "1h", "window_seconds": 3600}, "only 1-minute partials"),
    ({"window_seconds": 61}, "only 1-minute partials"),
    ({"window_start": datetime(2025, 6, 1, 12, 0, 30, tzinfo=UTC)}, "minute boundary"),
    ({"partition": -1}, "negative"),
    ({"cost_usd": float("inf")}, "finite"),
    ({"rating_sum": float("nan")}, "finite"),
    ({"latency_ms_sq_sum": float("-inf")}, "finite"),
])
def test_what_check_part_refuses_takes_the_python_path_and_is_refused_there(change, why):
    value = encode("metric_window", sample("metric_window", **change))
    assert inbox_copy.copy_row(value, HEADER) is None
    with pytest.raises(MetricsStoreError, match=why):
        inbox_record(value)


@pytest.mark.parametrize("change", [
    {"project": "café"},             # non-ASCII: the Python path validates UTF-8
    {"series": "a\x00b"},            # NUL: PostgreSQL text cannot hold it
    {"window_start": datetime(1969, 12, 31, 23, 59, tzinfo=UTC)},
    {"cost_usd": 1e9},               # beyond numeric(18,9)
])
def test_values_the_fast_path_does_not_vouch_for_take_the_python_path(change):
    value = encode("metric_window", sample("metric_window", **change))
    assert inbox_copy.copy_row(value, HEADER) is None
    try:
        record = inbox_record(value)
    except (MetricsStoreError, SerializationError):
        return
    assert type(record) is dict


def test_other_schema_versions_take_the_python_path():
    v1 = encode_version("metric_window", 1, sample("metric_window"))
    assert inbox_copy.copy_row(v1, HEADER) is None
    assert inbox_record(v1)["series"] == sample("metric_window")["series"]


def test_truncated_and_corrupt_messages_give_no_row_the_python_path_would_refuse():
    rng = random.Random(5)
    for part in random_partials(60, seed=3):
        data = encode("metric_window", part)
        cases = [data[:cut] for cut in range(len(data))] + [data + b"\x00"]
        for _ in range(200):
            flipped = bytearray(data)
            flipped[rng.randrange(10, len(data))] = rng.randrange(256)
            cases.append(bytes(flipped))
        for case in cases:
            row = inbox_copy.copy_row(case, HEADER)
            if row is None:
                continue
            # A row means the Python path accepts the same bytes, with the same values.
            decoded = decode(case, expected="metric_window")
            check_part(decoded)
            assert _same(parse_row(row), _inbox_row(decoded))
