"""A specialised Avro binary reader, generated once per schema.

Why: fastavro's ``schemaless_reader`` spends most of its time on per-value
Python calls into a file-like object (about 23 us for a complete span, under
the 50k/s per core the processors need). Reading straight from ``bytes`` with
code generated for one schema, with every varint and field inlined, is about
twice as fast. It only handles the no-resolution case (writer schema ==
reader schema); older writer versions still go through fastavro. Its output
is checked against fastavro's on random data for every shipped schema
(``tests/unit/test_codec.py``).
"""

from __future__ import annotations

import struct
from datetime import datetime, timedelta, timezone
from typing import Any, Callable

__all__ = ["CorruptData", "compile_reader"]

Reader = Callable[[bytes, int], "tuple[Any, int]"]

_EPOCH = datetime(1970, 1, 1, tzinfo=timezone.utc)


class CorruptData(ValueError):
    """The bytes are not a valid encoding of the schema.

    Examples
    --------
    >>> raise CorruptData("negative length")
    Traceback (most recent call last):
    ...
    schemas.fastread.CorruptData: negative length
    """


def _long_slow(data: bytes, pos: int, first: int) -> tuple[int, int]:
    # Multi-byte varints are rare for field values (lengths < 64, small
    # counts), so only the first byte is inlined in generated code.
    n = first & 0x7F
    shift = 7
    while True:
        b = data[pos]
        pos += 1
        if shift == 63 and b > 1:
            raise CorruptData("varint overflows 64 bits")
        n |= (b & 0x7F) << shift
        if b < 0x80:
            return (n >> 1) ^ -(n & 1), pos
        shift += 7
        if shift > 63:
            raise CorruptData("varint longer than 10 bytes")


def compile_reader(schema: Any, keep: Any = None, *, micros: bool = False, compiled: bool = True) -> Reader:
    """Generate a reader for data written with exactly ``schema``.

    Parameters
    ----------
    schema
        Schema parsed by :func:`fastavro.parse_schema`. Supported logical
        type: timestamp-micros (others raise NotImplementedError).
    keep
        Top-level record fields to return; the others are skipped without
        building their values (a projection: a consumer that needs 15 of a
        span's 36 fields does not decode its prompt and response text).
        A mapping ``{field: None | keys}`` also narrows a map field to the
        given keys (the other entries are skipped undecoded). None returns
        every field.
    micros
        Return timestamp-micros values as integer microseconds since the
        epoch instead of datetimes (a consumer that only subtracts and
        buckets times saves two object allocations per timestamp).
    compiled
        Use the compiled (Cython) reader when one was built for exactly
        this schema and projection (:mod:`schemas.cyreaders`); False always
        generates the Python one.

    Returns
    -------
    callable
        ``read(data, pos) -> (value, end)``. Corrupt or truncated input
        raises CorruptData, IndexError, struct.error, UnicodeDecodeError or
        OverflowError.

    Examples
    --------
    >>> import fastavro, io
    >>> schema = fastavro.parse_schema({"type": "record", "name": "P", "fields": [
    ...     {"name": "n", "type": "long"}, {"name": "s", "type": ["null", "string"]}]})
    >>> buf = io.BytesIO()
    >>> fastavro.schemaless_writer(buf, schema, {"n": -3, "s": "hi"})
    >>> read = compile_reader(schema)
    >>> read(buf.getvalue(), 0)
    ({'n': -3, 's': 'hi'}, 5)
    >>> compile_reader(schema, keep=frozenset({"n"}))(buf.getvalue(), 0)
    ({'n': -3}, 5)
    >>> m = fastavro.parse_schema({"type": "record", "name": "M", "fields": [
    ...     {"name": "a", "type": {"type": "map", "values": "string"}}]})
    >>> buf = io.BytesIO()
    >>> fastavro.schemaless_writer(buf, m, {"a": {"x": "1", "y": "2"}})
    >>> compile_reader(m, keep={"a": frozenset({"y"})})(buf.getvalue(), 0)[0]
    {'a': {'y': '2'}}
    >>> t = fastavro.parse_schema({"type": "record", "name": "T", "fields": [
    ...     {"name": "at", "type": {"type": "long", "logicalType": "timestamp-micros"}}]})
    >>> buf = io.BytesIO()
    >>> fastavro.schemaless_writer(buf, t, {"at": 1_700_000_000_000_001})
    >>> compile_reader(t, micros=True)(buf.getvalue(), 0)[0]
    {'at': 1700000000000001}
    """
    if compiled:
        from schemas.cyreaders import compiled_reader, reader_key  # it imports this module

        fast = compiled_reader(reader_key(schema, keep, micros))
        if fast is not None:
            return fast
    gen = _Gen(keep, micros=micros)
    entry = gen.function_for(schema)
    source = "\n".join(gen.lines)
    namespace = dict(gen.consts)
    exec(compile(source, f"<avro reader {entry}>", "exec"), namespace)  # noqa: S102
    return namespace[entry]


class _Gen:
    def __init__(self, keep: frozenset[str] | None = None, micros: bool = False) -> None:
        self.keep = keep
        self.micros = micros
        self.lines: list[str] = []
        self.consts: dict[str, Any] = {
            "_long_slow": _long_slow,
            "_CorruptData": CorruptData,
            "_EPOCH": _EPOCH,
            "_timedelta": timedelta,
            "_unpack_double": struct.Struct("<d").unpack_from,
            "_unpack_float": struct.Struct("<f").unpack_from,
        }
        self.named: dict[str, Any] = {}
        self.functions: dict[str, str] = {}
        self.counter = 0

    def var(self, prefix: str = "v") -> str:
        self.counter += 1
        return f"{prefix}{self.counter}"

    def const(self, value: Any, prefix: str = "C") -> str:
        name = f"_{prefix}{len(self.consts)}"
        self.consts[name] = value
        return name

    def function_for(self, schema: Any) -> str:
        """Name of a generated ``f(data, pos) -> (value, pos)`` for ``schema``."""
        key = schema["name"] if isinstance(schema, dict) and "name" in schema else None
        if key is not None and key in self.functions:
            return self.functions[key]
        fname = self.var("_read_")
        if key is not None:
            # Registered first so recursive records call themselves.
            self.functions[key] = fname
        body: list[str] = []
        out = self.var()
        if isinstance(schema, dict) and schema["type"] in ("record", "error"):
            self.named[key] = schema
            keep, self.keep = self.keep, None  # a projection applies to the top-level record only
            fields = []
            for f in schema["fields"]:
                if keep is not None and f["name"] not in keep:
                    self.skip(f["type"], body, 1)
                    continue
                v = self.var()
                keys = keep.get(f["name"]) if isinstance(keep, dict) else None
                if keys is not None:
                    self.emit_map_subset(f["type"], frozenset(keys), v, body, 1)
                else:
                    self.emit(f["type"], v, body, 1)
                fields.append(f"{f['name']!r}: {v}")
            # A dict display with constant keys is the fastest way to build it.
            body.append(f"    {out} = {{{', '.join(fields)}}}")
        else:
            self.emit(schema, out, body, 1)
        self.lines.append(f"def {fname}(data, pos):")
        self.lines.append("    size = len(data)")
        self.lines.extend(body)
        self.lines.append(f"    return {out}, pos")
        self.lines.append("")
        return fname

    def emit_long(self, target: str, out: list[str], ind: int) -> None:
        pad = "    " * ind
        b, c = self.var("b"), self.var("c")
        out.append(f"{pad}{b} = data[pos]; pos += 1")
        out.append(f"{pad}if {b} < 128:")
        out.append(f"{pad}    {target} = ({b} >> 1) ^ -({b} & 1)")
        # Two bytes inline too: string lengths of 64..8191 (prompts, responses).
        out.append(f"{pad}elif ({c} := data[pos]) < 128:")
        out.append(f"{pad}    pos += 1; {c} = ({b} & 127) | ({c} << 7)")
        out.append(f"{pad}    {target} = ({c} >> 1) ^ -({c} & 1)")
        out.append(f"{pad}else:")
        out.append(f"{pad}    {target}, pos = _long_slow(data, pos, {b})")

    def emit_slice(self, target: str, out: list[str], ind: int, decode: bool) -> None:
        pad = "    " * ind
        n, end = self.var("n"), self.var("e")
        self.emit_long(n, out, ind)
        out.append(f"{pad}{end} = pos + {n}")
        out.append(f"{pad}if {n} < 0 or {end} > size: raise _CorruptData('bad length')")
        suffix = ".decode()" if decode else ""
        out.append(f"{pad}{target} = data[pos:{end}]{suffix}; pos = {end}")

    def emit(self, schema: Any, target: str, out: list[str], ind: int) -> None:
        pad = "    " * ind
        if isinstance(schema, list):
            return self.emit_union(schema, target, out, ind)
        if isinstance(schema, str):
            if schema in self.named:
                return self.emit(self.named[schema], target, out, ind)
            kind, logical = schema, None
        else:
            kind, logical = schema["type"], schema.get("logicalType")
            if isinstance(kind, (dict, list)):
                return self.emit(kind, target, out, ind)
        if logical is not None:
            if kind == "long" and logical == "timestamp-micros":
                if self.micros:
                    self.emit_long(target, out, ind)
                    return None
                us = self.var("us")
                self.emit_long(us, out, ind)
                # Positional arguments: noticeably cheaper than microseconds=.
                out.append(f"{pad}{target} = _EPOCH + _timedelta(0, 0, {us})")
                return None
            raise NotImplementedError(f"logicalType {logical!r} is not supported")
        if kind == "null":
            out.append(f"{pad}{target} = None")
        elif kind == "boolean":
            b = self.var("b")
            out.append(f"{pad}{b} = data[pos]; pos += 1")
            out.append(f"{pad}if {b} > 1: raise _CorruptData('bad boolean')")
            out.append(f"{pad}{target} = {b} == 1")
        elif kind in ("int", "long"):
            self.emit_long(target, out, ind)
        elif kind == "double":
            out.append(f"{pad}{target} = _unpack_double(data, pos)[0]; pos += 8")
        elif kind == "float":
            out.append(f"{pad}{target} = _unpack_float(data, pos)[0]; pos += 4")
        elif kind == "string":
            self.emit_slice(target, out, ind, decode=True)
        elif kind == "bytes":
            self.emit_slice(target, out, ind, decode=False)
        elif kind == "fixed":
            self.named[schema["name"]] = schema
            size = int(schema["size"])
            end = self.var("e")
            out.append(f"{pad}{end} = pos + {size}")
            out.append(f"{pad}if {end} > size: raise _CorruptData('truncated fixed')")
            out.append(f"{pad}{target} = data[pos:{end}]; pos = {end}")
        elif kind == "enum":
            self.named[schema["name"]] = schema
            symbols = self.const(tuple(schema["symbols"]), "SYMBOLS")
            i = self.var("i")
            self.emit_long(i, out, ind)
            out.append(f"{pad}if {i} < 0: raise _CorruptData('bad enum index')")
            out.append(f"{pad}{target} = {symbols}[{i}]")
        elif kind in ("record", "error"):
            fname = self.function_for(schema)
            out.append(f"{pad}{target}, pos = {fname}(data, pos)")
        elif kind in ("array", "map"):
            self.emit_blocks(schema, kind, target, out, ind)
        else:
            raise ValueError(f"unknown Avro type {kind!r}")
        return None

    def emit_blocks(self, schema: dict, kind: str, target: str, out: list[str], ind: int) -> None:
        pad = "    " * ind
        acc, count, skip = self.var("acc"), self.var("cnt"), self.var("blk")
        out.append(f"{pad}{acc} = {'[]' if kind == 'array' else '{}'}")
        self.emit_long(count, out, ind)
        out.append(f"{pad}while {count}:")
        out.append(f"{pad}    if {count} < 0:")
        # A negative count is followed by the block's byte size, which only
        # matters for skipping.
        out.append(f"{pad}        {count} = -{count}")
        self.emit_long(skip, out, ind + 2)
        out.append(f"{pad}    for _ in range({count}):")
        item = self.var("it")
        if kind == "array":
            self.emit(schema["items"], item, out, ind + 2)
            out.append(f"{pad}        {acc}.append({item})")
        else:
            key = self.var("k")
            self.emit_slice(key, out, ind + 2, decode=True)
            self.emit(schema["values"], item, out, ind + 2)
            out.append(f"{pad}        {acc}[{key}] = {item}")
        self.emit_long(count, out, ind + 1)
        out.append(f"{pad}{target} = {acc}")

    def emit_union(self, branches: list, target: str, out: list[str], ind: int) -> None:
        pad = "    " * ind
        b = self.var("u")
        # Union indexes below 64 are one zigzag byte: 0, 2, 4, ...
        if len(branches) <= 64:
            out.append(f"{pad}{b} = data[pos]; pos += 1")
        else:
            self.emit_long(b, out, ind)
        for index, branch in enumerate(branches):
            tag = 2 * index if len(branches) <= 64 else index
            out.append(f"{pad}{'if' if index == 0 else 'elif'} {b} == {tag}:")
            self.emit(branch, target, out, ind + 1)
        out.append(f"{pad}else:")
        out.append(f"{pad}    raise _CorruptData('bad union index')")

    def skip(self, schema: Any, out: list[str], ind: int) -> None:
        """Advance ``pos`` past a value of ``schema`` without building it."""
        pad = "    " * ind
        if isinstance(schema, list):
            b = self.var("u")
            self.emit_long(b, out, ind)
            for index, branch in enumerate(schema):
                out.append(f"{pad}{'if' if index == 0 else 'elif'} {b} == {index}:")
                self.skip(branch, out, ind + 1)
                out.append(f"{pad}    pass")
            out.append(f"{pad}else:")
            out.append(f"{pad}    raise _CorruptData('bad union index')")
            return
        if isinstance(schema, str) and schema in self.named:
            return self.skip(self.named[schema], out, ind)
        kind = schema if isinstance(schema, str) else schema["type"]
        if isinstance(kind, (dict, list)):
            return self.skip(kind, out, ind)
        if kind in ("int", "long", "enum"):
            if isinstance(schema, dict) and kind == "enum":
                self.named[schema["name"]] = schema
            self.emit_long(self.var("x"), out, ind)
        elif kind == "boolean":
            out.append(f"{pad}pos += 1")
        elif kind == "double":
            out.append(f"{pad}pos += 8")
        elif kind == "float":
            out.append(f"{pad}pos += 4")
        elif kind in ("string", "bytes"):
            n = self.var("n")
            self.emit_long(n, out, ind)
            out.append(f"{pad}if {n} < 0 or pos + {n} > size: raise _CorruptData('bad length')")
            out.append(f"{pad}pos += {n}")
        elif kind == "fixed":
            self.named[schema["name"]] = schema
            out.append(f"{pad}pos += {int(schema['size'])}")
        elif kind == "null":
            pass
        elif kind in ("record", "error"):
            self.named[schema["name"]] = schema
            for f in schema["fields"]:
                self.skip(f["type"], out, ind)
        elif kind in ("array", "map"):
            count, blk = self.var("cnt"), self.var("blk")
            self.emit_long(count, out, ind)
            out.append(f"{pad}while {count}:")
            out.append(f"{pad}    if {count} < 0:")
            out.append(f"{pad}        {count} = -{count}")
            self.emit_long(blk, out, ind + 2)
            out.append(f"{pad}    for _ in range({count}):")
            if kind == "map":
                self.skip("string", out, ind + 2)
            self.skip(schema["items"] if kind == "array" else schema["values"], out, ind + 2)
            out.append(f"{pad}        pass")
            self.emit_long(count, out, ind + 1)
        else:
            raise ValueError(f"unknown Avro type {kind!r}")
        return None

    def emit_map_subset(self, schema: Any, keys: frozenset[str], target: str, out: list[str], ind: int) -> None:
        """Read a map, keeping only ``keys``: other entries are skipped, their values never decoded."""
        if not (isinstance(schema, dict) and schema.get("type") == "map"):
            raise ValueError(f"a key subset needs a map field, not {schema!r}")
        pad = "    " * ind
        wanted = self.const(frozenset(k.encode() for k in keys), "KEYS")
        acc, count, blk = self.var("acc"), self.var("cnt"), self.var("blk")
        key, value = self.var("k"), self.var("it")
        out.append(f"{pad}{acc} = {{}}")
        self.emit_long(count, out, ind)
        out.append(f"{pad}while {count}:")
        out.append(f"{pad}    if {count} < 0:")
        out.append(f"{pad}        {count} = -{count}")
        self.emit_long(blk, out, ind + 2)
        out.append(f"{pad}    for _ in range({count}):")
        self.emit_slice(key, out, ind + 2, decode=False)
        out.append(f"{pad}        if {key} in {wanted}:")
        self.emit(schema["values"], value, out, ind + 3)
        out.append(f"{pad}            {acc}[{key}.decode()] = {value}")
        out.append(f"{pad}        else:")
        self.skip(schema["values"], out, ind + 3)
        out.append(f"{pad}            pass")
        self.emit_long(count, out, ind + 1)
        out.append(f"{pad}{target} = {acc}")
