"""The one codec: Avro single-object encoding out, Avro or natural JSON in.

Wire format (Avro specification, "Single-object encoding")::

    C3 01 | 8-byte little-endian CRC-64-AVRO fingerprint | Avro binary body

The fingerprint names the exact writer schema, so messages written with any
shipped version decode side by side into the current (newest) version.
Messages that start with ``{`` are natural JSON, validated against the
current schema of the expected record.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from functools import cache
from io import BytesIO
from pathlib import Path
from typing import Any

from fastavro import schemaless_reader, schemaless_writer

from schemas.catalog import SHIPPED_DIR, Catalog
from schemas.compat import check_backward_compatible
from schemas.errors import SerializationError
from schemas.fastread import compile_reader
from schemas.fastwrite import compile_writer
from schemas.normalize import compile_normalizer

__all__ = [
    "MAGIC",
    "Codec",
    "SerializationError",
    "check_backward_compatible",
    "decode",
    "default_codec",
    "encode",
    "encode_json",
]

#: First two bytes of every Avro single-object encoded message.
MAGIC = b"\xc3\x01"
_HEADER_SIZE = 10
_JSON_WHITESPACE = b" \t\r\n"


@dataclass(frozen=True, slots=True)
class _Incoming:
    """How to decode messages written with one schema version."""

    name: str
    version: int
    writer: dict
    reader: dict | None  # None when the writer is the current version
    read: Any  # generated reader when the writer is current, else None


_EPOCH = datetime(1970, 1, 1, tzinfo=timezone.utc)
_ONE_US = timedelta(microseconds=1)
_MICROSECOND = timedelta(microseconds=1)


@dataclass(frozen=True, slots=True)
class _Current:
    """Everything needed to encode, or to read JSON for, one record name."""

    schema: dict
    header: bytes
    to_avro: Any
    write: Any  # generated writer, or None to use fastavro's
    to_json: Any
    from_json: Any
    # Top-level timestamp fields, or None when a timestamp hides in a nested
    # type (then encode_decoded falls back to the validating path).
    timestamps: tuple[str, ...] | None = None


class Codec:
    """Encode and decode llmpulse records.

    Parameters
    ----------
    catalog
        The schemas to use; default: the shipped ones.

    Examples
    --------
    >>> from schemas.samples import sample
    >>> codec = Codec()
    >>> data = codec.encode("exposure", sample("exposure"))
    >>> data[:2].hex()
    'c301'
    >>> codec.decode(data, "exposure") == sample("exposure")
    True
    """

    def __init__(self, catalog: Catalog | None = None) -> None:
        self._catalog = catalog if catalog is not None else Catalog.shipped()
        self._current: dict[str, _Current] = {}
        self._incoming: dict[bytes, _Incoming] = {}
        # Everything is compiled up front so no message pays for parsing or
        # schema resolution set-up, and a bad schema fails at start-up.
        for name in self._catalog.names():
            current = self._catalog.current(name)
            schema = current.schema
            self._current[name] = _Current(
                schema=schema,
                header=MAGIC + current.fingerprint,
                to_avro=compile_normalizer(schema, target="avro", root=name),
                write=_writer_or_none(schema),
                to_json=compile_normalizer(schema, target="json", root=name),
                from_json=compile_normalizer(schema, target="python", json_input=True, root=name),
                timestamps=_top_level_timestamps(schema),
            )
            read_current = compile_reader(schema)
            for v in self._catalog.versions(name):
                if v.fingerprint == current.fingerprint:
                    incoming = _Incoming(name, v.version, v.schema, None, read_current)
                else:
                    incoming = _Incoming(name, v.version, v.schema, schema, None)
                self._incoming.setdefault(v.fingerprint, incoming)

    @classmethod
    def from_directory(cls, root: str | Path) -> Codec:
        """A codec over the schemas in ``root`` (``<root>/<name>/v<N>.avsc``).

        Examples
        --------
        >>> from schemas.catalog import SHIPPED_DIR
        >>> Codec.from_directory(SHIPPED_DIR).catalog.current("span").name
        'span'
        """
        return cls(Catalog.from_directory(root))

    @property
    def catalog(self) -> Catalog:
        """The schemas this codec knows.

        Examples
        --------
        >>> "alert" in Codec().catalog.names()
        True
        """
        return self._catalog

    def encode(self, name: str, record: Any) -> bytes:
        """Validate ``record`` and encode it with the current schema of ``name``.

        Parameters
        ----------
        name
            Record name, e.g. ``"span"``.
        record
            Mapping of field values; missing fields with defaults are filled.
            Timestamps may be datetimes, ISO-8601 strings or int microseconds.

        Returns
        -------
        bytes
            Avro single-object encoding.

        Raises
        ------
        SerializationError
            If the record does not fit the schema; ``field`` names the field.
        KeyError
            If ``name`` is not a known record.

        Examples
        --------
        >>> from schemas.samples import sample
        >>> len(Codec().encode("metric_point", sample("metric_point"))) > 10
        True
        >>> Codec().encode("metric_point", {**sample("metric_point"), "count": "7"})
        Traceback (most recent call last):
        ...
        schemas.errors.SerializationError: metric_point.count: expected long, got str ('7')
        """
        current = self._lookup(name)
        value = current.to_avro(record)
        if current.write is not None:
            out = bytearray(current.header)
            current.write(value, out)
            return bytes(out)
        buf = BytesIO()
        buf.write(current.header)
        schemaless_writer(buf, current.schema, value)
        return buf.getvalue()

    def encode_decoded(self, name: str, record: Mapping[str, Any]) -> bytes:
        """Encode a record that :meth:`decode` produced, skipping validation.

        For hot paths that decode, change a few values in place (strings,
        numbers) and re-encode: the record is already in the schema's shape, so
        only timestamps are converted. Anything else must use :meth:`encode`.

        Examples
        --------
        >>> from schemas.samples import sample
        >>> codec = Codec()
        >>> data = codec.encode("span", sample("span"))
        >>> codec.encode_decoded("span", codec.decode(data, "span")) == data
        True
        """
        current = self._lookup(name)
        if current.write is None or current.timestamps is None:
            return self.encode(name, record)
        value = dict(record)
        for field_name in current.timestamps:
            at = value.get(field_name)
            if at is not None:
                value[field_name] = (at - _EPOCH) // _MICROSECOND
        out = bytearray(current.header)
        current.write(value, out)
        return bytes(out)

    def encode_json(self, name: str, record: Any) -> bytes:
        """Validate ``record`` and encode it as UTF-8 natural JSON.

        Timestamps become ISO-8601 strings in UTC (``...Z``), bytes become
        base64. Handy for producers in other languages and for ``kcat``;
        :meth:`decode` reads it back.

        Examples
        --------
        >>> from schemas.samples import sample
        >>> Codec().encode_json("exposure", sample("exposure"))[:32]
        b'{"experiment_key":"prompt-tone",'
        """
        return json.dumps(
            self._lookup(name).to_json(record), ensure_ascii=False, separators=(",", ":")
        ).encode("utf-8")

    def decode(self, data: bytes, expected: str | None = None) -> dict:
        """Decode one message into a plain dict in the current schema's shape.

        Parameters
        ----------
        data
            Avro single-object encoding (any shipped version), or a natural
            JSON object.
        expected
            Record name the message must be. Required for JSON, which carries
            no schema id.

        Returns
        -------
        dict
            Field values; timestamps are timezone-aware UTC datetimes.

        Raises
        ------
        SerializationError
            Unknown wire format or fingerprint, corrupt or truncated body,
            a different record than ``expected``, or JSON that does not fit.

        Examples
        --------
        >>> codec = Codec()
        >>> codec.decode(b'{"experiment_key": "k", "variant": "a", "user_id": "u",'
        ...              b' "project": "p", "time": "2025-06-01T12:00:00Z",'
        ...              b' "source": "producer"}', "exposure")["time"].isoformat()
        '2025-06-01T12:00:00+00:00'
        >>> codec.decode(b"\\x00\\x01garbage")  # doctest: +ELLIPSIS
        Traceback (most recent call last):
        ...
        schemas.errors.SerializationError: unknown wire format: starts with 00 01 (...)
        """
        if type(data) is not bytes:
            data = bytes(data)
        if data[:2] == MAGIC:
            return self._decode_avro(data, expected)
        if data[:1] == b"{" or data.lstrip(_JSON_WHITESPACE)[:1] == b"{":
            return self._decode_json(data, expected)
        if not data:
            raise SerializationError("empty message", field=expected)
        raise SerializationError(
            f"unknown wire format: starts with {data[:2].hex(' ').upper()} "
            "(expected Avro single-object encoding C3 01 or a JSON object)",
            field=expected,
        )

    def _decode_avro(self, data: bytes, expected: str | None) -> dict:
        if len(data) < _HEADER_SIZE:
            raise SerializationError("truncated single-object header", field=expected)
        fp = data[2:_HEADER_SIZE]
        incoming = self._incoming.get(fp)
        if incoming is None:
            raise SerializationError(
                f"unknown schema fingerprint {fp.hex()}: written with a schema this "
                "codec does not ship (deploy consumers before producers)",
                field=expected,
            )
        name = incoming.name
        if expected is not None and name != expected:
            self._lookup(expected)  # an unknown name is a KeyError, not bad data
            raise SerializationError(
                f"expected a {expected} message, got {name} v{incoming.version}", field=expected
            )
        try:
            if incoming.read is not None:
                record, end = incoming.read(data, _HEADER_SIZE)
            else:
                # Older writer versions are rare (only during a rollout), so
                # they take fastavro's slower path with schema resolution.
                body = BytesIO(data)
                body.seek(_HEADER_SIZE)
                record = schemaless_reader(body, incoming.writer, incoming.reader)
                end = body.tell()
        except Exception as e:
            # Corrupt input surfaces as whatever broke first (EOFError,
            # IndexError, UnicodeDecodeError...); all of it is one poison message.
            raise SerializationError(
                f"corrupt or truncated Avro body ({type(e).__name__}: {e})", field=name
            ) from e
        if end != len(data):
            raise SerializationError(
                f"{len(data) - end} trailing bytes after the record "
                "(corrupt message or wrong schema)",
                field=name,
            )
        return record

    def projection(
        self, name: str, fields: Iterable[str] | Mapping[str, Iterable[str] | None], *, micros: bool = False
    ) -> Callable[[bytes], dict]:
        """A decoder for ``name`` messages that returns only ``fields``.

        ``fields`` may map a map-typed field to the keys wanted from it
        (``{"attributes": ["llmpulse.cohort"]}``); other entries are skipped.
        With ``micros`` the (top-level) timestamps are integer microseconds
        since the epoch, for consumers that only bucket and subtract times.

        Messages written with the current schema are read by a generated
        reader that skips the other fields without building them; older
        versions and JSON are decoded whole (and validated) and then cut
        down. Errors are the same :class:`SerializationError` as
        :meth:`decode`.

        Examples
        --------
        >>> from schemas.samples import sample
        >>> codec = Codec()
        >>> read = codec.projection("span", ["trace_id", "status"])
        >>> read(codec.encode("span", sample("span")))
        {'trace_id': '4bf92f3577b34da6a3ce929d0e0e4736', 'status': 'ok'}
        """
        current = self._lookup(name)
        # A mapping narrows map fields to some keys: {"attributes": {"llmpulse.cohort"}}.
        subsets = {k: frozenset(v) for k, v in fields.items() if v is not None} if isinstance(fields, Mapping) else {}
        keep = frozenset(fields)
        unknown = keep - {f["name"] for f in current.schema["fields"]}
        if unknown:
            raise KeyError(f"{name} has no field(s) {', '.join(sorted(unknown))}")
        read = compile_reader(current.schema, {k: subsets.get(k) for k in keep} if subsets else keep, micros=micros)
        fingerprint = current.header[2:]

        def decode_projected(data: bytes) -> dict:
            if type(data) is bytes and data[2:_HEADER_SIZE] == fingerprint and data[:2] == MAGIC:
                try:
                    record, end = read(data, _HEADER_SIZE)
                except Exception as e:  # noqa: BLE001 - any failure here is one corrupt message
                    raise SerializationError(
                        f"corrupt or truncated Avro body ({type(e).__name__}: {e})", field=name
                    ) from e
                if end != len(data):
                    raise SerializationError(f"{len(data) - end} trailing bytes after the record", field=name)
                return record
            full = self.decode(data, expected=name)
            out = {k: full[k] for k in keep}
            for k, wanted in subsets.items():
                if out[k] is not None:
                    out[k] = {key: v for key, v in out[k].items() if key in wanted}
            if micros:
                for k, v in out.items():
                    if isinstance(v, datetime):
                        out[k] = (v - _EPOCH) // _ONE_US
            return out

        return decode_projected

    def _decode_json(self, data: bytes, expected: str | None) -> dict:
        if expected is None:
            raise SerializationError(
                "JSON messages carry no schema id; pass expected=<record name>"
            )
        current = self._lookup(expected)
        try:
            value = json.loads(data)
        except (UnicodeDecodeError, json.JSONDecodeError) as e:
            raise SerializationError(f"invalid JSON: {e}", field=expected) from e
        return current.from_json(value)

    def _lookup(self, name: str) -> _Current:
        try:
            return self._current[name]
        except KeyError:
            raise KeyError(f"unknown record {name!r}; known: {', '.join(self._current)}") from None


def _writer_or_none(schema: dict) -> Any:
    try:
        return compile_writer(schema)
    except NotImplementedError:
        # Unions other than [null, X] need fastavro's branch guessing.
        return None


@cache
def default_codec() -> Codec:
    """The codec over the shipped schemas, built on first use.

    Examples
    --------
    >>> default_codec() is default_codec()
    True
    """
    return Codec(Catalog.from_directory(SHIPPED_DIR))


def _top_level_timestamps(schema: dict) -> tuple[str, ...] | None:
    """Names of top-level timestamp fields; None if one hides deeper.

    >>> _top_level_timestamps({"type": "record", "name": "r", "fields": [
    ...     {"name": "t", "type": {"type": "long", "logicalType": "timestamp-micros"}}]})
    ('t',)
    """

    def is_ts(t: Any) -> bool:
        return isinstance(t, dict) and t.get("logicalType") == "timestamp-micros"

    def nested_ts(t: Any) -> bool:
        if isinstance(t, list):
            return any(nested_ts(b) for b in t)
        if isinstance(t, dict):
            if is_ts(t):
                return True
            kind = t.get("type")
            if kind == "record":
                return any(nested_ts(f["type"]) for f in t["fields"])
            if kind == "array":
                return nested_ts(t["items"])
            if kind == "map":
                return nested_ts(t["values"])
        return False

    found = []
    for f in schema["fields"]:
        branches = f["type"] if isinstance(f["type"], list) else [f["type"]]
        if any(is_ts(b) for b in branches):
            found.append(f["name"])
        elif nested_ts(f["type"]):
            return None
    return tuple(found)


def encode(name: str, record: Any) -> bytes:
    """:meth:`Codec.encode` with the :func:`default_codec`.

    Examples
    --------
    >>> from schemas.samples import sample
    >>> encode("alert", sample("alert"))[:2]
    b'\\xc3\\x01'
    """
    return default_codec().encode(name, record)


def encode_decoded(name: str, record: Mapping[str, Any]) -> bytes:
    """:meth:`Codec.encode_decoded` with the :func:`default_codec`.

    >>> from schemas.samples import sample
    >>> encode_decoded("span", decode(encode("span", sample("span")), "span"))[:2]
    b'\\xc3\\x01'
    """
    return default_codec().encode_decoded(name, record)


def encode_json(name: str, record: Any) -> bytes:
    """:meth:`Codec.encode_json` with the :func:`default_codec`.

    Examples
    --------
    >>> from schemas.samples import sample
    >>> encode_json("alert", sample("alert")).startswith(b'{"alert_id":')
    True
    """
    return default_codec().encode_json(name, record)


def decode(data: bytes, expected: str | None = None) -> dict:
    """:meth:`Codec.decode` with the :func:`default_codec`.

    Examples
    --------
    >>> from schemas.samples import sample
    >>> decode(encode("alert", sample("alert")), "alert")["severity"]
    'warning'
    """
    return default_codec().decode(data, expected)
