"""A specialised Avro binary writer, generated once per schema.

Why: fastavro's ``schemaless_writer`` takes about 21 us for a complete span;
code generated for one schema that appends to a ``bytearray`` is about twice
as fast. The writer trusts its input: it expects records already checked by
:func:`schemas.normalize.compile_normalizer` with ``target="avro"`` (ints in
range, floats, int microseconds, known enum symbols). Its output is compared
byte for byte with fastavro's in ``tests/unit/test_codec.py`` and, on the
edges of each fast path below, in ``tests/unit/test_fastwrite.py``.
"""

from __future__ import annotations

import operator
import struct
from typing import Any, Callable

__all__ = ["compile_writer"]

Writer = Callable[[Any, bytearray], None]


_pack8 = struct.Struct("8B").pack


def _long(out: bytearray, n: int) -> None:
    n = (n << 1) ^ (n >> 63)
    if 0x2000000000000 <= n < 0x100000000000000:
        # Eight bytes (a time in microseconds written as a plain long, or a
        # negative one): one pack is ~2x faster than the loop.
        out += _pack8(
            n & 127 | 128, n >> 7 & 127 | 128, n >> 14 & 127 | 128, n >> 21 & 127 | 128,
            n >> 28 & 127 | 128, n >> 35 & 127 | 128, n >> 42 & 127 | 128, n >> 49,
        )
        return
    while n > 127:
        out.append((n & 127) | 128)
        n >>= 7
    out.append(n)


def compile_writer(schema: Any) -> Writer:
    """Generate a writer for ``schema``.

    Parameters
    ----------
    schema
        Schema parsed by :func:`fastavro.parse_schema`. Unions must be
        ``["null", X]`` (either order): a Python value carries no branch tag,
        so other unions raise NotImplementedError and callers fall back to
        fastavro.

    Returns
    -------
    callable
        ``write(value, out)`` appending the Avro binary encoding to ``out``.

    Examples
    --------
    >>> import fastavro
    >>> schema = fastavro.parse_schema({"type": "record", "name": "P", "fields": [
    ...     {"name": "n", "type": "long"}, {"name": "s", "type": ["null", "string"]}]})
    >>> out = bytearray()
    >>> compile_writer(schema)({"n": -3, "s": "hi"}, out)
    >>> bytes(out)
    b'\\x05\\x02\\x04hi'
    """
    gen = _Gen()
    entry = gen.function_for(schema)
    namespace = dict(gen.consts)
    exec(compile("\n".join(gen.lines), f"<avro writer {entry}>", "exec"), namespace)  # noqa: S102
    return namespace[entry]


class _Gen:
    def __init__(self) -> None:
        self.lines: list[str] = []
        self.consts: dict[str, Any] = {
            "_long": _long,
            "_pack_double": struct.Struct("<d").pack,
            "_pack_float": struct.Struct("<f").pack,
            "_pack8": _pack8,
        }
        self.named: dict[str, Any] = {}
        self.functions: dict[str, str] = {}
        self.counter = 0

    def var(self, prefix: str = "v") -> str:
        self.counter += 1
        return f"{prefix}{self.counter}"

    def function_for(self, schema: Any) -> str:
        key = schema["name"] if isinstance(schema, dict) and "name" in schema else None
        if key is not None and key in self.functions:
            return self.functions[key]
        fname = self.var("_write_")
        if key is not None:
            self.functions[key] = fname
        body: list[str] = []
        if isinstance(schema, dict) and schema["type"] in ("record", "error"):
            self.named[key] = schema
            fields = schema["fields"]
            names = [self.var() for _ in fields]
            if len(fields) > 1:
                # One C call fetches every field (a KeyError names a missing
                # one, as value[...] would): ~25 ns less per field.
                getter = f"_FIELDS{len(self.consts)}"
                self.consts[getter] = operator.itemgetter(*(f["name"] for f in fields))
                body.append(f"    {', '.join(names)}, = {getter}(value)")
            elif fields:
                body.append(f"    {names[0]} = value[{fields[0]['name']!r}]")
            for f, v in zip(fields, names):
                self.emit(f["type"], v, body, 1)
        else:
            self.emit(schema, "value", body, 1)
        self.lines.append(f"def {fname}(value, out):")
        # A local bound method: most fields append a byte or two, and a
        # method lookup per append costs ~10 % of the writer.
        self.lines.append("    append = out.append")
        self.lines.extend(body)
        self.lines.append("")
        return fname

    def emit_long(self, value: str, out: list[str], ind: int) -> None:
        pad = "    " * ind
        # Small non-negative values (counts, token numbers) are one or two
        # bytes, inline: zigzag of n >= 0 is n << 1.
        out.append(f"{pad}if 0 <= {value} < 64: append({value} << 1)")
        out.append(f"{pad}elif 0 <= {value} < 8192: append({value} << 1 & 127 | 128); append({value} >> 6)")
        out.append(f"{pad}else: _long(out, {value})")

    def emit_timestamp(self, value: str, out: list[str], ind: int) -> None:
        pad = "    " * ind
        # Microseconds since 1978 and before 3111 are eight varint bytes
        # (zigzag n << 1 in [2**49, 2**56)); inline, as _long would write them.
        out.append(f"{pad}if 0x1000000000000 <= {value} < 0x80000000000000:")
        out.append(f"{pad}    out += _pack8({value} << 1 & 127 | 128, {value} >> 6 & 127 | 128, "
                   f"{value} >> 13 & 127 | 128, {value} >> 20 & 127 | 128, {value} >> 27 & 127 | 128, "
                   f"{value} >> 34 & 127 | 128, {value} >> 41 & 127 | 128, {value} >> 48)")
        out.append(f"{pad}else: _long(out, {value})")

    def emit_size(self, value: str, out: list[str], ind: int, *, over_63: bool = False) -> None:
        """A value known to be >= 0 (a length, a count or an enum index);
        ``over_63`` when the caller has handled the one-byte values."""
        pad = "    " * ind
        if not over_63:
            out.append(f"{pad}if {value} < 64: append({value} << 1)")
        # Two bytes for 64..8191 (prompts, completions): zigzag is n << 1.
        out.append(f"{pad}{'if' if over_63 else 'elif'} {value} < 8192: "
                   f"append({value} << 1 & 127 | 128); append({value} >> 6)")
        out.append(f"{pad}else: _long(out, {value})")

    def emit(self, schema: Any, value: str, out: list[str], ind: int) -> None:
        pad = "    " * ind
        if isinstance(schema, list):
            return self.emit_union(schema, value, out, ind)
        if isinstance(schema, str):
            if schema in self.named:
                return self.emit(self.named[schema], value, out, ind)
            kind, logical = schema, None
        else:
            kind, logical = schema["type"], schema.get("logicalType")
            if isinstance(kind, (dict, list)):
                return self.emit(kind, value, out, ind)
        if logical is not None and not (kind == "long" and logical == "timestamp-micros"):
            raise NotImplementedError(f"logicalType {logical!r} is not supported")
        if kind == "null":
            out.append(f"{pad}pass")
        elif kind == "boolean":
            out.append(f"{pad}append(1 if {value} else 0)")
        elif logical is not None:  # timestamp-micros
            self.emit_timestamp(value, out, ind)
        elif kind in ("int", "long"):
            self.emit_long(value, out, ind)
        elif kind == "double":
            out.append(f"{pad}out += _pack_double({value})")
        elif kind == "float":
            out.append(f"{pad}out += _pack_float({value})")
        elif kind in ("string", "bytes"):
            self.emit_string(kind, value, out, ind)
        elif kind == "fixed":
            self.named[schema["name"]] = schema
            out.append(f"{pad}out += {value}")
        elif kind == "enum":
            self.named[schema["name"]] = schema
            index = f"_INDEX{len(self.consts)}"
            self.consts[index] = {s: i for i, s in enumerate(schema["symbols"])}
            i = self.var("i")
            out.append(f"{pad}{i} = {index}[{value}]")
            self.emit_size(i, out, ind)
        elif kind in ("record", "error"):
            out.append(f"{pad}{self.function_for(schema)}({value}, out)")
        elif kind in ("array", "map"):
            n = self.var("n")
            out.append(f"{pad}{n} = len({value})")
            out.append(f"{pad}if {n}:")
            # One block holding every item, then the empty end block, as
            # fastavro writes it.
            self.emit_size(n, out, ind + 1)
            item = self.var("it")
            if kind == "array":
                out.append(f"{pad}    for {item} in {value}:")
            else:
                key = self.var("k")
                out.append(f"{pad}    for {key}, {item} in {value}.items():")
                self.emit("string", key, out, ind + 2)
            self.emit(schema["items"] if kind == "array" else schema["values"], item, out, ind + 2)
            out.append(f"{pad}append(0)")
        else:
            raise ValueError(f"unknown Avro type {kind!r}")
        return None

    def emit_string(self, kind: str, value: str, out: list[str], ind: int, tag: int | None = None) -> None:
        """A string or bytes value, after the union branch ``tag`` if not None."""
        pad = "    " * ind
        raw, n = self.var("raw"), self.var("n")
        encode = ".encode()" if kind == "string" else ""
        out.append(f"{pad}{raw} = {value}{encode}; {n} = len({raw})")
        if tag is None:
            self.emit_size(n, out, ind)
        else:
            # Branch and a one-byte length in one step: most optional strings
            # (ids, names, models) are short.
            table = f"_TAGGED{tag}"
            self.consts[table] = tuple(bytes((tag, i << 1)) for i in range(64))
            out.append(f"{pad}if {n} < 64: out += {table}[{n}]")
            out.append(f"{pad}else:")
            out.append(f"{pad}    append({tag})")
            self.emit_size(n, out, ind + 1, over_63=True)
        out.append(f"{pad}out += {raw}")

    def emit_union(self, branches: list, value: str, out: list[str], ind: int) -> None:
        pad = "    " * ind
        if len(branches) != 2 or "null" not in branches:
            raise NotImplementedError("only [null, X] unions are supported")
        null_index = branches.index("null")
        other = branches[1 - null_index]
        tag = 2 * (1 - null_index)
        out.append(f"{pad}if {value} is None:")
        out.append(f"{pad}    append({2 * null_index})")
        out.append(f"{pad}else:")
        if other in ("string", "bytes"):
            self.emit_string(other, value, out, ind + 1, tag)
            return
        out.append(f"{pad}    append({tag})")
        self.emit(other, value, out, ind + 1)
