"""Validate natural JSON / Python records against an Avro schema.

Producers send natural JSON (``{"parent_span_id": null}``), not Avro's JSON
encoding (``{"parent_span_id": {"string": ...}}``), so fastavro's JSON reader
does not fit. A schema is compiled once into a tree of small closures; the hot
path then does no schema lookups and builds no strings unless a value is bad.

Rules, applied the same way on every path:

- missing field: its default (a fresh copy), or an error if it has none;
- unknown field: an error. Silently dropping it would hide producer bugs such
  as a misspelt ``ouput_tokens`` that would otherwise vanish without trace;
- int/long: Python ``int`` in range, never ``bool``; float/double: ``int`` or
  ``float``, never ``bool``;
- timestamp-micros: int microseconds since the epoch, ISO-8601 string (``Z``
  or an offset; naive means UTC) or ``datetime`` (naive means UTC);
- bytes: ``bytes``-like from Python, base64 text from JSON;
- nullable unions: None or a value of the other branch;
- a field may carry ``"pattern"`` (a regular expression) that string values
  must fully match; Avro ignores the property.
"""

from __future__ import annotations

import base64
import binascii
import copy
import re
from collections.abc import Mapping
from datetime import datetime, timedelta, timezone
from typing import Any, Callable

from schemas.errors import SerializationError

__all__ = ["Normalizer", "TARGETS", "compile_normalizer", "default_root"]

#: Output flavours: ``python`` (decode result: datetimes, bytes), ``avro``
#: (ready for an Avro writer: int microseconds) and ``json`` (ready for
#: ``json.dumps``: ISO strings, base64).
TARGETS = ("python", "avro", "json")

Normalizer = Callable[[Any], Any]

_UTC = timezone.utc
_EPOCH = datetime(1970, 1, 1, tzinfo=_UTC)
_ONE_US = timedelta(microseconds=1)
# Timestamps must fit a datetime, or decoding them later would fail.
_MIN_US = (datetime(1, 1, 1, tzinfo=_UTC) - _EPOCH) // _ONE_US
_MAX_US = (datetime(9999, 12, 31, 23, 59, 59, 999999, tzinfo=_UTC) - _EPOCH) // _ONE_US
_INT_RANGE = (-(2**31), 2**31 - 1)
_LONG_RANGE = (-(2**63), 2**63 - 1)


class _Invalid(Exception):
    """Internal: a bad value. ``parts`` collects the path innermost first, so
    the success path never formats a path string."""

    __slots__ = ("reason", "parts")

    def __init__(self, reason: str, part: str | None = None) -> None:
        self.reason = reason
        self.parts = [] if part is None else [part]


def _show(value: Any) -> str:
    text = repr(value)
    if len(text) > 40:
        text = text[:37] + "..."
    return f"{type(value).__name__} ({text})"


def _mismatch(expected: str, value: Any) -> _Invalid:
    return _Invalid(f"expected {expected}, got {_show(value)}")


def compile_normalizer(schema: Any, *, target: str = "python", json_input: bool = False,
                       root: str | None = None) -> Callable[[Any], Any]:
    """Compile a parsed Avro schema into a function that validates a record.

    Parameters
    ----------
    schema
        Schema parsed by :func:`fastavro.parse_schema`.
    target
        One of :data:`TARGETS`: the form of the returned value.
    json_input
        True if values come from ``json.loads`` (bytes arrive as base64 text).
    root
        Name the error paths start with, e.g. ``"span"``; defaults to
        :func:`default_root`.

    Returns
    -------
    callable
        ``f(value) -> normalised value``; raises
        :class:`~schemas.errors.SerializationError` naming the field.

    Examples
    --------
    >>> import fastavro
    >>> schema = fastavro.parse_schema({"type": "record", "name": "Ping", "fields": [
    ...     {"name": "n", "type": "long"},
    ...     {"name": "tag", "type": ["null", "string"], "default": None}]})
    >>> check = compile_normalizer(schema, root="ping")
    >>> check({"n": 1})
    {'n': 1, 'tag': None}
    >>> check({"n": True})
    Traceback (most recent call last):
    ...
    schemas.errors.SerializationError: ping.n: expected long, got bool (True)
    """
    if target not in TARGETS:
        raise ValueError(f"target must be one of {TARGETS}, got {target!r}")
    compiler = _Compiler(target, json_input)
    inner = compiler.compile(schema)
    if root is None:
        root = default_root(schema)

    def normalize(value: Any) -> Any:
        try:
            return inner(value)
        except _Invalid as e:
            path = root + "".join(reversed(e.parts))
            raise SerializationError(e.reason, field=path) from None

    return normalize


class _Compiler:
    def __init__(self, target: str, json_input: bool) -> None:
        self.target = target
        self.json_input = json_input
        # Named types seen so far; a list cell lets a record refer to itself.
        self.named: dict[str, list[Normalizer]] = {}

    def compile(
        self, schema: Any, *, or_null: bool = False, pattern: str | None = None
    ) -> Normalizer:
        suffix = " or null" if or_null else ""
        if isinstance(schema, list):
            return self._union(schema, pattern)
        if isinstance(schema, str):
            if schema in self.named:
                cell = self.named[schema]
                return lambda v: cell[0](v)
            return self._primitive(schema, suffix, pattern)
        kind = schema["type"]
        logical = schema.get("logicalType")
        if logical is not None:
            if kind == "long" and logical == "timestamp-micros":
                return self._timestamp_micros(suffix)
            # Anything else would decode differently from fastavro's binary
            # path; fail loudly at start-up rather than diverge quietly.
            raise NotImplementedError(f"logicalType {logical!r} on {kind!r} is not supported")
        if kind == "record" or kind == "error":
            return self._record(schema, suffix)
        if kind == "enum":
            return self._enum(schema, suffix)
        if kind == "array":
            return self._array(schema, suffix)
        if kind == "map":
            return self._map(schema, suffix)
        if kind == "fixed":
            return self._fixed(schema, suffix)
        return self.compile(kind, or_null=or_null, pattern=pattern)

    # -- primitives -------------------------------------------------------

    def _primitive(self, kind: str, suffix: str, pattern: str | None) -> Normalizer:
        if kind == "null":
            def null(v):
                if v is not None:
                    raise _mismatch("null", v)
                return None
            return null
        if kind == "boolean":
            want = "boolean" + suffix
            def boolean(v):
                if v is True or v is False:
                    return v
                raise _mismatch(want, v)
            return boolean
        if kind in ("int", "long"):
            lo, hi = _INT_RANGE if kind == "int" else _LONG_RANGE
            want = kind + suffix
            def integer(v):
                if type(v) is not int:
                    if isinstance(v, bool) or not isinstance(v, int):
                        raise _mismatch(want, v)
                    v = int(v)
                if not lo <= v <= hi:
                    raise _Invalid(f"{v} does not fit in an Avro {kind}")
                return v
            return integer
        if kind in ("float", "double"):
            want = kind + suffix
            def floating(v):
                if type(v) is float:
                    return v
                if isinstance(v, bool) or not isinstance(v, (int, float)):
                    raise _mismatch(want, v)
                return float(v)
            return floating
        if kind == "string":
            want = "string" + suffix
            if pattern is None:
                def string(v):
                    if type(v) is str:
                        return v
                    if isinstance(v, str):
                        return str(v)
                    raise _mismatch(want, v)
                return string
            match = re.compile(pattern).fullmatch
            def string_pattern(v):
                if not isinstance(v, str):
                    raise _mismatch(want, v)
                if match(v) is None:
                    raise _Invalid(f"{v[:40]!r} does not match {pattern}")
                return str(v)
            return string_pattern
        if kind == "bytes":
            return self._bytes("bytes" + suffix, None)
        raise ValueError(f"unknown Avro type {kind!r}")

    def _bytes(self, want: str, size: int | None) -> Normalizer:
        json_input, to_json = self.json_input, self.target == "json"
        if json_input:
            want = f"{want} as base64 text"

        def raw_bytes(v):
            if json_input:
                if not isinstance(v, str):
                    raise _mismatch(want, v)
                try:
                    data = base64.b64decode(v, validate=True)
                except (binascii.Error, ValueError):
                    raise _Invalid(f"expected {want}, got invalid base64") from None
            elif isinstance(v, (bytes, bytearray, memoryview)):
                data = bytes(v)
            else:
                raise _mismatch(want, v)
            if size is not None and len(data) != size:
                raise _Invalid(f"expected {size} bytes, got {len(data)}")
            return base64.b64encode(data).decode("ascii") if to_json else data

        return raw_bytes

    def _fixed(self, schema: dict, suffix: str) -> Normalizer:
        fn = self._bytes(f"fixed({schema['size']})" + suffix, schema["size"])
        self.named[schema["name"]] = [fn]
        return fn

    def _timestamp_micros(self, suffix: str) -> Normalizer:
        want = "timestamp (int epoch microseconds, ISO-8601 string or datetime)" + suffix
        target = self.target

        def to_datetime(v):
            if isinstance(v, datetime):
                dt = v
            elif isinstance(v, str):
                try:
                    dt = datetime.fromisoformat(v)
                except ValueError:
                    raise _mismatch(want, v) from None
            elif type(v) is int or (isinstance(v, int) and not isinstance(v, bool)):
                if not _MIN_US <= v <= _MAX_US:
                    raise _Invalid(f"{v} microseconds is outside the years 1..9999")
                return v if target == "avro" else _EPOCH + timedelta(microseconds=v)
            else:
                raise _mismatch(want, v)
            if dt.tzinfo is None:
                return dt.replace(tzinfo=_UTC)
            if dt.tzinfo is not _UTC:
                try:
                    return dt.astimezone(_UTC)
                except OverflowError:
                    raise _Invalid(f"{v!r} is outside the years 1..9999 in UTC") from None
            return dt

        if target == "python":
            return to_datetime
        if target == "avro":
            def to_micros(v):
                dt = to_datetime(v)
                return dt if type(dt) is int else (dt - _EPOCH) // _ONE_US
            return to_micros

        def to_iso(v):
            dt = to_datetime(v)
            if type(dt) is int:
                dt = _EPOCH + timedelta(microseconds=dt)
            return dt.replace(tzinfo=None).isoformat(timespec="microseconds") + "Z"
        return to_iso

    # -- named and complex types -------------------------------------------

    def _enum(self, schema: dict, suffix: str) -> Normalizer:
        symbols = tuple(schema["symbols"])
        allowed = frozenset(symbols)
        listing = ", ".join(symbols)

        def enum(v):
            if type(v) is str and v in allowed:
                return v
            if isinstance(v, str):
                raise _Invalid(f"{v[:40]!r} is not one of: {listing}{suffix}")
            raise _mismatch(f"one of: {listing}{suffix}", v)

        self.named[schema["name"]] = [enum]
        return enum

    def _record(self, schema: dict, suffix: str) -> Normalizer:
        full_name = schema["name"]
        cell: list[Normalizer] = []
        # Registered before the fields are compiled so recursive types work.
        self.named[full_name] = cell
        specs = []
        for f in schema["fields"]:
            fn = self.compile(f["type"], pattern=f.get("pattern"))
            if "default" in f:
                try:
                    default = fn(f["default"])
                except _Invalid as e:
                    raise ValueError(f"{full_name}.{f['name']}: bad default: {e.reason}") from None
                specs.append((f["name"], fn, _default_factory(default)))
            else:
                specs.append((f["name"], fn, None))
        specs = tuple(specs)
        known = frozenset(name for name, _, _ in specs)
        want = f"object (record {full_name})" + suffix

        def record(v):
            if type(v) is not dict and not isinstance(v, Mapping):
                raise _mismatch(want, v)
            out = {}
            seen = 0
            for name, fn, default in specs:
                if name in v:
                    seen += 1
                    try:
                        out[name] = fn(v[name])
                    except _Invalid as e:
                        e.parts.append("." + name)
                        raise
                elif default is None:
                    raise _Invalid("required field missing", "." + name)
                else:
                    out[name] = default()
            if seen != len(v):
                raise _unknown_fields(v, known, full_name)
            return out

        cell.append(record)
        return record

    def _array(self, schema: dict, suffix: str) -> Normalizer:
        item = self.compile(schema["items"])
        want = "array" + suffix

        def array(v):
            if type(v) is not list and not isinstance(v, (list, tuple)):
                raise _mismatch(want, v)
            out = []
            for i, x in enumerate(v):
                try:
                    out.append(item(x))
                except _Invalid as e:
                    e.parts.append(f"[{i}]")
                    raise
            return out

        return array

    def _map(self, schema: dict, suffix: str) -> Normalizer:
        value = self.compile(schema["values"])
        want = "object (map)" + suffix

        def map_(v):
            if type(v) is not dict and not isinstance(v, Mapping):
                raise _mismatch(want, v)
            out = {}
            for k, x in v.items():
                if not isinstance(k, str):
                    raise _Invalid(f"map keys must be strings, got {_show(k)}")
                try:
                    out[k] = value(x)
                except _Invalid as e:
                    e.parts.append(f"[{k}]")
                    raise
            return out

        return map_

    def _union(self, branches: list, pattern: str | None) -> Normalizer:
        others = [b for b in branches if b != "null"]
        if len(others) == 1 and len(branches) == 2:
            inner = self.compile(others[0], or_null=True, pattern=pattern)

            def nullable(v):
                return None if v is None else inner(v)

            return nullable
        fns = [self.compile(b, pattern=pattern) for b in branches]
        names = ", ".join(_type_name(b) for b in branches)

        def union(v):
            # Python values carry no branch tag; the first branch that accepts
            # the value wins, as in fastavro's writer.
            for fn in fns:
                try:
                    return fn(v)
                except _Invalid:
                    continue
            raise _mismatch(f"one of [{names}]", v)

        return union


def default_root(schema: Any) -> str:
    """Error-path root for a schema: its short record name in snake_case.

    Examples
    --------
    >>> default_root({"type": "record", "name": "llmpulse.UserProfile", "fields": []})
    'user_profile'
    """
    name = schema.get("name", "record") if isinstance(schema, dict) else str(schema)
    return re.sub(r"(?<!^)(?=[A-Z])", "_", name.rsplit(".", 1)[-1]).lower()


def _type_name(schema: Any) -> str:
    if isinstance(schema, str):
        return schema
    if isinstance(schema, dict):
        return schema.get("name") or schema.get("logicalType") or schema["type"]
    return "union"


def _default_factory(default: Any) -> Callable[[], Any]:
    if default is None or isinstance(default, (str, int, float, bool, bytes)):
        return lambda: default
    if default == {} and isinstance(default, dict):
        return dict
    if default == [] and isinstance(default, list):
        return list
    # Mutable defaults are copied so one record's edits never leak into another.
    return lambda: copy.deepcopy(default)


def _unknown_fields(v: Mapping, known: frozenset, record_name: str) -> _Invalid:
    extra = [k for k in v if k not in known]
    shown = ", ".join(repr(k) for k in extra[:5]) + (", ..." if len(extra) > 5 else "")
    if len(extra) == 1:
        return _Invalid(f"unknown field (not in schema {record_name})", "." + str(extra[0]))
    return _Invalid(f"unknown fields {shown} (not in schema {record_name})")
