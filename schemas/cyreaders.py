"""Compiled (Cython) versions of the hottest generated Avro readers.

Why: walking a span's 36 fields costs about 9 µs in pure Python even when
almost all of them are skipped (the bytecode per field, not the data), which
alone caps a processor near 50,000 spans/s per core. The same generated
code with C integers and a C varint loop walks a span in well under a
microsecond; only building the kept values is left.

:data:`HOT_READERS` names the readers worth compiling. ``python -m
schemas.cyreaders`` writes them to ``schemas/_hot_readers.pyx``, which the
package build compiles (``pyproject.toml``, an optional extension: without
a C compiler the install still succeeds). :func:`schemas.fastread.compile_reader`
uses a compiled reader when one exists for exactly the same schema,
projection and timestamp form (:func:`reader_key`), and its generated
Python reader otherwise, so a schema change can never be read by a stale
compiled reader (``tests/unit/test_cyreaders.py`` also fails until the
``.pyx`` is regenerated).
"""
from __future__ import annotations

import hashlib
import json
import re
import sys
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from schemas.fastread import _Gen

__all__ = ["HOT_READERS", "METRICS_SPAN_FIELDS", "compiled_reader", "generate", "reader_key"]

PYX = Path(__file__).with_name("_hot_readers.pyx")

#: The span fields the metrics processor reads; prompt and response text and
#: every attribute but the cohort are skipped unread.
METRICS_SPAN_FIELDS: dict[str, frozenset[str] | None] = {
    **dict.fromkeys((
        "trace_id", "parent_span_id", "start_time", "end_time", "status", "project", "response_model",
        "request_model", "provider", "prompt_version", "kind", "experiments", "input_tokens",
        "output_tokens", "cache_read_input_tokens", "cost_usd",
    )),
    "attributes": frozenset({"llmpulse.cohort"}),
}

#: (record name, kept fields or None for all, timestamps as micros): the
#: span read whole (ingest, trace store) and as the metrics processor reads
#: it, and the partial windows the metrics store reads.
HOT_READERS: tuple[tuple[str, Mapping[str, Any] | None, bool], ...] = (
    ("span", None, False),
    ("span", METRICS_SPAN_FIELDS, True),
    ("metric_window", None, False),
)


def _plain(schema: Any) -> Any:
    """``schema`` without fastavro's bookkeeping keys (``__fastavro_parsed`` ...)."""
    if isinstance(schema, dict):
        return {k: _plain(v) for k, v in schema.items() if not k.startswith("__")}
    if isinstance(schema, list):
        return [_plain(v) for v in schema]
    return schema


def _keep_form(keep: Any) -> Any:
    if keep is None:
        return None
    if isinstance(keep, Mapping):
        return {k: (sorted(v) if v is not None else None) for k, v in sorted(keep.items())}
    return {k: None for k in sorted(keep)}


def reader_key(schema: Any, keep: Any = None, micros: bool = False) -> str:
    """A stable name for the reader of ``schema`` with projection ``keep``.

    >>> s = {"type": "record", "name": "P", "fields": [{"name": "n", "type": "long"}]}
    >>> reader_key(s) == reader_key({**s, "__fastavro_parsed": True})
    True
    >>> reader_key(s) == reader_key(s, keep=["n"]), reader_key(s, keep=["n"]) == reader_key(s, keep={"n": None})
    (False, True)
    """
    text = json.dumps([_plain(schema), _keep_form(keep), bool(micros)], sort_keys=True)
    return "r_" + hashlib.sha256(text.encode()).hexdigest()[:20]


_INT_VAR = re.compile(r"^(b|c|n|e|u|i|us|x|cnt|blk)\d+$")


class _CyGen(_Gen):
    """:class:`~schemas.fastread._Gen` emitting Cython with C integers and bounds checks."""

    def emit_long(self, target: str, out: list[str], ind: int) -> None:
        out.append(f"{'    ' * ind}{target} = _long(p, &pos, size)")

    def _byte(self, target: str, out: list[str], ind: int) -> None:
        pad = "    " * ind
        out.append(f"{pad}if pos >= size: raise _CorruptData('truncated')")
        out.append(f"{pad}{target} = p[pos]; pos += 1")

    def emit_slice(self, target: str, out: list[str], ind: int, decode: bool) -> None:
        pad = "    " * ind
        n, end = self.var("n"), self.var("e")
        self.emit_long(n, out, ind)
        out.append(f"{pad}{end} = pos + {n}")
        out.append(f"{pad}if {n} < 0 or {end} > size: raise _CorruptData('bad length')")
        value = f"(<const char*>p)[pos:{end}].decode('utf-8')" if decode else f"data[pos:{end}]"
        out.append(f"{pad}{target} = {value}; pos = {end}")

    def emit(self, schema: Any, target: str, out: list[str], ind: int) -> None:
        kind = schema if isinstance(schema, str) else (schema.get("type") if isinstance(schema, dict) else None)
        pad = "    " * ind
        if kind in ("double", "float") and not (isinstance(schema, dict) and schema.get("logicalType")):
            width, ctype = (8, "double") if kind == "double" else (4, "float")
            out.append(f"{pad}if pos + {width} > size: raise _CorruptData('truncated {kind}')")
            out.append(f"{pad}memcpy(&{ctype}_tmp, p + pos, {width}); pos += {width}")
            out.append(f"{pad}{target} = {ctype}_tmp")
            return None
        if kind == "boolean":
            b = self.var("b")
            self._byte(b, out, ind)
            out.append(f"{pad}if {b} > 1: raise _CorruptData('bad boolean')")
            out.append(f"{pad}{target} = {b} == 1")
            return None
        return super().emit(schema, target, out, ind)

    def emit_union(self, branches: list, target: str, out: list[str], ind: int) -> None:
        if len(branches) > 64:
            return super().emit_union(branches, target, out, ind)
        pad = "    " * ind
        b = self.var("u")
        # One zigzag byte, compared raw, as the Python reader does (so both
        # refuse the same corrupt input).
        self._byte(b, out, ind)
        for index, branch in enumerate(branches):
            out.append(f"{pad}{'if' if index == 0 else 'elif'} {b} == {2 * index}:")
            self.emit(branch, target, out, ind + 1)
        out.append(f"{pad}else:")
        out.append(f"{pad}    raise _CorruptData('bad union index')")
        return None

    def function_for(self, schema: Any) -> str:
        start = len(self.lines)
        name = super().function_for(schema)
        # Functions are appended whole (nested records first), so each
        # "def" in the new lines starts one; declare its C integers.
        lines = self.lines[start:]
        out: list[str] = []
        for line in lines:
            if line.startswith("def "):
                fname = line[4:line.index("(")]
                out.append(f"cdef tuple {fname}(bytes data, Py_ssize_t pos):")
                out.append("    cdef const unsigned char* p = data")
                out.append("    cdef double double_tmp")
                out.append("    cdef float float_tmp")
                out.append("    cdef Py_ssize_t size")
                out.append("__DECLARE__")
                continue
            out.append(line)
        # One declaration line per function, of the integer variables its body uses.
        result: list[str] = []
        pending: list[str] = []
        for line in out + ["def "]:  # sentinel flushes the last function
            if line.startswith(("cdef tuple ", "def ")) and pending:
                body = "\n".join(pending)
                names = sorted({v for v in re.findall(r"\b[a-z]+\d+\b", body) if _INT_VAR.match(v)})
                decl = f"    cdef int64_t {', '.join(names)}" if names else ""
                result += [decl if x == "__DECLARE__" else x for x in pending if x != "__DECLARE__" or decl]
                pending = []
            if line != "def ":
                pending.append(line)
        self.lines[start:] = result
        return name


_PRELUDE = '''\
# cython: language_level=3
# Bounds checks stay on: Python containers (enum symbols) are indexed with
# numbers read from the message. The bytes are read through a pointer, every
# read checked against the size by the generated code.
# Generated by `python -m schemas.cyreaders` from the shipped schemas: do not edit.
from libc.stdint cimport int64_t, uint64_t
from libc.string cimport memcpy
from datetime import datetime, timedelta, timezone

from schemas.fastread import CorruptData as _CorruptData

_EPOCH = datetime(1970, 1, 1, tzinfo=timezone.utc)
_timedelta = timedelta


cdef inline int64_t _long(const unsigned char* p, Py_ssize_t* pos, Py_ssize_t size) except? -1:
    cdef uint64_t n = 0
    cdef uint64_t b
    cdef int shift = 0
    while True:
        if pos[0] >= size:
            raise _CorruptData("truncated varint")
        b = p[pos[0]]
        pos[0] += 1
        if shift == 63 and b > 1:
            raise _CorruptData("varint overflows 64 bits")
        n |= (b & 0x7F) << shift
        if b < 0x80:
            return <int64_t>((n >> 1) ^ (0 - (n & 1)))
        shift += 7
        if shift > 63:
            raise _CorruptData("varint longer than 10 bytes")
'''


def generate() -> str:
    """The Cython source of every reader in :data:`HOT_READERS` (deterministic).

    >>> "cdef tuple" in generate() and "READERS = {" in generate()
    True
    """
    from schemas.codec import default_codec

    codec = default_codec()
    parts = [_PRELUDE]
    table = []
    for name, keep, micros in HOT_READERS:
        schema = codec._lookup(name).schema
        key = reader_key(schema, keep, micros)
        gen = _CyGen({k: (frozenset(v) if v is not None else None) for k, v in keep.items()}
                     if isinstance(keep, Mapping) else keep, micros=micros)
        entry = gen.function_for(schema)
        # Function and constant names are made unique per reader.
        source = "\n".join(gen.lines)
        source = re.sub(r"\b(_read_\d+)\b", rf"{key}\1", source)
        consts = [f"{key}{c} = {v!r}" for c, v in gen.consts.items()
                  if c.startswith(("_SYMBOLS", "_KEYS"))]
        for c in (c for c in gen.consts if c.startswith(("_SYMBOLS", "_KEYS"))):
            source = re.sub(rf"(?<![\w]){re.escape(c)}\b", f"{key}{c}", source)
        parts += consts + ["", source, f"def {key}(data, pos):\n    return {key}{entry}(data, pos)\n"]
        table.append(f"    {key!r}: {key},")
    parts.append("READERS = {\n" + "\n".join(table) + "\n}\n")
    return "\n".join(parts)


def compiled_reader(key: str) -> Any:
    """The compiled reader named ``key``, or None (not built, or no such reader).

    >>> compiled_reader("r_no_such_reader") is None
    True
    """
    try:
        from schemas import _hot_readers  # type: ignore[attr-defined]
    except ImportError:
        return None
    return _hot_readers.READERS.get(key)


if __name__ == "__main__":
    PYX.write_text(generate())
    print(f"wrote {PYX} ({len(HOT_READERS)} readers)", file=sys.stderr)
