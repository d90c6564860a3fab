"""The compiled Avro readers: current, built, and identical to the generated Python ones."""
from __future__ import annotations

import io
import random
from collections.abc import Mapping

import fastavro
import pytest
from fastavro.utils import generate_many

from schemas.catalog import Catalog
from schemas.cyreaders import HOT_READERS, PYX, compiled_reader, generate, reader_key
from schemas.fastread import compile_reader
from schemas.codec import encode

SPAN = Catalog.shipped().current("span").schema


def _keep(keep):
    # The form codec.projection passes: a mapping when some map is narrowed.
    return {k: (frozenset(v) if v is not None else None) for k, v in keep.items()} if isinstance(keep, Mapping) else keep


def test_the_committed_pyx_is_what_the_generator_writes_now():
    # A schema change without `python -m schemas.cyreaders` would leave the
    # compiled readers unused (their keys no longer match): fail loudly here.
    assert PYX.read_text() == generate(), "run: python -m schemas.cyreaders"


@pytest.mark.parametrize(("name", "keep", "micros"), HOT_READERS)
def test_every_hot_reader_is_built_and_used(name, keep, micros):
    schema = Catalog.shipped().current(name).schema
    fast = compiled_reader(reader_key(schema, _keep(keep), micros))
    assert fast is not None, "the extension is not built: pip install -e . (needs a C compiler)"
    assert compile_reader(schema, _keep(keep), micros=micros) is fast


def realistic_spans(n: int) -> list[bytes]:
    """Avro bodies (no single-object header) of generated traffic: text, tokens, attributes."""
    from processors.generator import TrafficModel

    spans = [s for trace in TrafficModel(seed=3).traces(n // 4 + 1) for s in trace][:n]
    header = len(encode("span", spans[0])) - len(_body(spans[0]))
    return [encode("span", s)[header:] for s in spans]


def _body(span: dict) -> bytes:
    from schemas.codec import default_codec

    buf = io.BytesIO()
    fastavro.schemaless_writer(buf, SPAN, default_codec()._lookup("span").to_avro(span))
    return buf.getvalue()


def _random_records(name: str, n: int) -> list[bytes]:
    """Avro bodies of ``n`` random ``name`` records (and realistic ones for spans)."""
    schema = Catalog.shipped().current(name).schema
    state = random.getstate()
    random.seed(f"cyreaders-{name}")
    try:
        records = list(generate_many(schema, n))
    finally:
        random.setstate(state)
    out = []
    for record in records:
        buf = io.BytesIO()
        fastavro.schemaless_writer(buf, schema, record)
        out.append(buf.getvalue())
    return out + (realistic_spans(200) if name == "span" else [])


@pytest.mark.parametrize(("name", "keep", "micros"), HOT_READERS)
def test_compiled_and_python_readers_agree_on_random_and_realistic_records(name, keep, micros):
    schema = Catalog.shipped().current(name).schema
    python = compile_reader(schema, _keep(keep), micros=micros, compiled=False)
    compiled = compile_reader(schema, _keep(keep), micros=micros)
    assert compiled is not python
    for data in _random_records(name, 300):
        assert compiled(data, 0) == python(data, 0)


@pytest.mark.parametrize(("name", "keep", "micros"), HOT_READERS)
def test_compiled_readers_refuse_truncated_and_corrupt_bytes_like_python(name, keep, micros):
    schema = Catalog.shipped().current(name).schema
    python = compile_reader(schema, _keep(keep), micros=micros, compiled=False)
    compiled = compile_reader(schema, _keep(keep), micros=micros)
    rng = random.Random(7)
    for data in _random_records(name, 20):
        cases = [data[:cut] for cut in range(0, len(data), max(1, len(data) // 40))]
        for _ in range(30):
            flipped = bytearray(data)
            flipped[rng.randrange(len(data))] = rng.randrange(256)
            cases.append(bytes(flipped))
        for case in cases:
            try:
                expected = python(case, 0)
            except Exception:  # noqa: BLE001 - any refusal; the compiled one must refuse too
                with pytest.raises(Exception):  # noqa: B017, PT011
                    compiled(case, 0)
            else:
                # A read that "succeeds" on cut bytes ends before len(case);
                # the codec rejects that, and both readers must agree on it.
                assert compiled(case, 0) == expected
