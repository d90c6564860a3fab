"""A specialised Avro binary writer, generated once per schema.

Why: fastavro's ``schemaless_writer`` takes about 21 us for a complete span;
code generated for one schema that appends to a ``bytearray`` is about twice
as fast. The writer trusts its input: it expects records already checked by
:func:`schemas.normalize.compile_normalizer` with ``target="avro"`` (ints in
range, floats, int microseconds, known enum symbols). Its output is compared
byte for byte with fastavro's in ``tests/unit/test_codec.py``.
"""

from __future__ import annotations

import struct
from typing import Any, Callable

__all__ = ["compile_writer"]

Writer = Callable[[Any, bytearray], None]


def _long(out: bytearray, n: int) -> None:
    n = (n << 1) ^ (n >> 63)
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
            for f in schema["fields"]:
                v = self.var()
                body.append(f"    {v} = value[{f['name']!r}]")
                self.emit(f["type"], v, body, 1)
        else:
            self.emit(schema, "value", body, 1)
        self.lines.append(f"def {fname}(value, out):")
        self.lines.extend(body or ["    pass"])
        self.lines.append("")
        return fname

    def emit_long(self, value: str, out: list[str], ind: int) -> None:
        pad = "    " * ind
        # Small non-negative values (lengths, counts, enum indexes) are one byte.
        out.append(f"{pad}if 0 <= {value} < 64: out.append({value} << 1)")
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
            out.append(f"{pad}out.append(1 if {value} else 0)")
        elif kind in ("int", "long"):
            self.emit_long(value, out, ind)
        elif kind == "double":
            out.append(f"{pad}out += _pack_double({value})")
        elif kind == "float":
            out.append(f"{pad}out += _pack_float({value})")
        elif kind in ("string", "bytes"):
            raw, n = self.var("raw"), self.var("n")
            encode = ".encode()" if kind == "string" else ""
            out.append(f"{pad}{raw} = {value}{encode}; {n} = len({raw})")
            self.emit_long(n, out, ind)
            out.append(f"{pad}out += {raw}")
        elif kind == "fixed":
            self.named[schema["name"]] = schema
            out.append(f"{pad}out += {value}")
        elif kind == "enum":
            self.named[schema["name"]] = schema
            index = f"_INDEX{len(self.consts)}"
            self.consts[index] = {s: i for i, s in enumerate(schema["symbols"])}
            i = self.var("i")
            out.append(f"{pad}{i} = {index}[{value}]")
            self.emit_long(i, out, ind)
        elif kind in ("record", "error"):
            out.append(f"{pad}{self.function_for(schema)}({value}, out)")
        elif kind in ("array", "map"):
            n = self.var("n")
            out.append(f"{pad}{n} = len({value})")
            out.append(f"{pad}if {n}:")
            # One block holding every item, then the empty end block, as
            # fastavro writes it.
            self.emit_long(n, out, ind + 1)
            item = self.var("it")
            if kind == "array":
                out.append(f"{pad}    for {item} in {value}:")
            else:
                key = self.var("k")
                out.append(f"{pad}    for {key}, {item} in {value}.items():")
                self.emit("string", key, out, ind + 2)
            self.emit(schema["items"] if kind == "array" else schema["values"], item, out, ind + 2)
            out.append(f"{pad}out.append(0)")
        else:
            raise ValueError(f"unknown Avro type {kind!r}")
        return None

    def emit_union(self, branches: list, value: str, out: list[str], ind: int) -> None:
        pad = "    " * ind
        if len(branches) != 2 or "null" not in branches:
            raise NotImplementedError("only [null, X] unions are supported")
        null_index = branches.index("null")
        other = branches[1 - null_index]
        out.append(f"{pad}if {value} is None:")
        out.append(f"{pad}    out.append({2 * null_index})")
        out.append(f"{pad}else:")
        out.append(f"{pad}    out.append({2 * (1 - null_index)})")
        self.emit(other, value, out, ind + 1)
