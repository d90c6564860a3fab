"""Backward-compatibility check between two versions of a schema."""

from __future__ import annotations

import random
from io import BytesIO
from typing import Any, Iterator

import fastavro
from fastavro.utils import generate_many

from schemas.errors import SerializationError
from schemas.normalize import default_root

__all__ = ["check_backward_compatible"]


def check_backward_compatible(
    old_schema: Any, new_schema: Any, *, samples: int = 200, seed: int = 0, name: str | None = None
) -> None:
    """Raise unless data written with ``old_schema`` can be read with ``new_schema``.

    Two checks: every record field the new schema adds has a default and no
    enum loses a symbol without the new enum having a default (static, so
    rarely-generated branches are covered); then ``samples`` random records
    written with the old schema are decoded with the new one as reader.

    Parameters
    ----------
    old_schema, new_schema
        Schemas as JSON-like data, parsed or not.
    samples
        Number of random records to round-trip.
    seed
        Seed for the random records, so a failure reproduces. The global
        ``random`` state is restored afterwards.
    name
        Root of the field paths in errors; default
        :func:`~schemas.normalize.default_root`.

    Raises
    ------
    SerializationError
        Naming the first incompatible field, when one is found.

    Examples
    --------
    >>> old = {"type": "record", "name": "Ping", "fields": [{"name": "n", "type": "long"}]}
    >>> new = {"type": "record", "name": "Ping", "fields": [
    ...     {"name": "n", "type": "long"},
    ...     {"name": "tag", "type": "string", "default": ""}]}
    >>> check_backward_compatible(old, new, samples=5)
    >>> del new["fields"][1]["default"]
    >>> check_backward_compatible(old, new, samples=5)  # doctest: +ELLIPSIS
    Traceback (most recent call last):
    ...
    schemas.errors.SerializationError: ping.tag: added without a default, ...
    """
    old = fastavro.parse_schema(old_schema)
    new = fastavro.parse_schema(new_schema)
    root = name or default_root(new)
    _check_static(old, new, root)

    state = random.getstate()
    random.seed(seed)
    try:
        records = list(generate_many(old, samples))
    finally:
        random.setstate(state)
    for record in records:
        buf = BytesIO()
        fastavro.schemaless_writer(buf, old, record)
        buf.seek(0)
        try:
            fastavro.schemaless_reader(buf, old, new)
        except Exception as e:
            raise SerializationError(
                f"data written with the old schema cannot be read with the new one "
                f"({type(e).__name__}: {e})",
                field=root,
            ) from e


def _short(full_name: str) -> str:
    return full_name.rsplit(".", 1)[-1]


def _named(schema: Any, path: str) -> Iterator[tuple[str, dict]]:
    """Yield (path, named schema) for every record and enum defined in ``schema``."""
    if isinstance(schema, list):
        for branch in schema:
            yield from _named(branch, path)
    elif isinstance(schema, dict):
        kind = schema["type"]
        if kind in ("record", "error"):
            yield path, schema
            for f in schema["fields"]:
                yield from _named(f["type"], f"{path}.{f['name']}")
        elif kind == "enum":
            yield path, schema
        elif kind == "array":
            yield from _named(schema["items"], f"{path}[]")
        elif kind == "map":
            yield from _named(schema["values"], f"{path}[]")


def _check_static(old: Any, new: Any, root: str) -> None:
    old_named = {_short(s["name"]): s for _, s in _named(old, root)}
    for path, schema in _named(new, root):
        previous = old_named.get(_short(schema["name"]))
        if previous is None or previous["type"] != schema["type"]:
            continue
        if schema["type"] == "enum":
            removed = [s for s in previous["symbols"] if s not in schema["symbols"]]
            if removed and "default" not in schema:
                raise SerializationError(
                    f"enum symbols {removed} removed without an enum default", field=path
                )
            continue
        old_fields = {f["name"] for f in previous["fields"]}
        for f in schema["fields"]:
            names = {f["name"], *f.get("aliases", ())}
            if not names & old_fields and "default" not in f:
                raise SerializationError(
                    "added without a default, so older data cannot be read",
                    field=f"{path}.{f['name']}",
                )
