"""Every versioned Avro schema on disk, indexed by record name and fingerprint.

Layout: ``<root>/<name>/v<N>.avsc``, one folder per record, versions numbered
from 1 without gaps. The highest version is the current (reader) schema.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable

import fastavro
from fastavro.schema import fingerprint as _fastavro_fingerprint
from fastavro.schema import to_parsing_canonical_form

__all__ = ["SHIPPED_DIR", "Catalog", "SchemaVersion", "fingerprint", "load_schema"]

#: Folder of the schemas shipped with llmpulse (package data).
SHIPPED_DIR = Path(__file__).resolve().parent / "avro"

_VERSION_FILE = re.compile(r"^v([1-9][0-9]*)\.avsc$")


def fingerprint(schema: Any) -> bytes:
    """CRC-64-AVRO (Rabin) fingerprint of a schema's Parsing Canonical Form.

    The 8 bytes are little-endian, exactly as they appear in an Avro
    single-object encoding header.

    Parameters
    ----------
    schema
        A schema as JSON-like Python data, parsed or not.

    Returns
    -------
    bytes
        8-byte fingerprint.

    Examples
    --------
    The test vector for ``"int"`` from the Avro specification:

    >>> fingerprint("int").hex()
    '8f5c393f1ad57572'
    """
    canonical = to_parsing_canonical_form(schema)
    # fastavro already returns the little-endian byte order used on the wire.
    return bytes.fromhex(_fastavro_fingerprint(canonical, "CRC-64-AVRO"))


def load_schema(path: str | Path) -> dict:
    """Read and parse one ``.avsc`` file.

    Parameters
    ----------
    path
        File to read.

    Returns
    -------
    dict
        The schema as parsed by :func:`fastavro.parse_schema`.

    Raises
    ------
    ValueError
        If the file is not valid JSON or not a valid Avro schema.

    Examples
    --------
    >>> schema = load_schema(SHIPPED_DIR / "exposure" / "v1.avsc")
    >>> schema["name"]
    'llmpulse.Exposure'
    """
    path = Path(path)
    try:
        raw = json.loads(path.read_text(encoding="utf-8"))
        return fastavro.parse_schema(raw)
    except Exception as e:
        # fastavro signals bad schemas with several unrelated exception types.
        raise ValueError(f"{path}: not a valid Avro schema: {e}") from e


@dataclass(frozen=True)
class SchemaVersion:
    """One version of one record schema.

    Parameters
    ----------
    name
        Catalog name (the folder), e.g. ``"span"``.
    version
        Version number N from ``vN.avsc``.
    schema
        Parsed schema (:func:`fastavro.parse_schema`).
    fingerprint
        8-byte CRC-64-AVRO fingerprint, see :func:`fingerprint`.
    path
        File the schema came from, if any.

    Examples
    --------
    >>> v = SchemaVersion.from_schema("ping", 1, {"type": "record", "name": "Ping",
    ...     "fields": [{"name": "n", "type": "long"}]})
    >>> v.version, len(v.fingerprint)
    (1, 8)
    """

    name: str
    version: int
    schema: dict = field(repr=False, compare=False)
    fingerprint: bytes
    path: Path | None = None

    @classmethod
    def from_schema(
        cls, name: str, version: int, schema: Any, path: Path | None = None
    ) -> SchemaVersion:
        """Parse ``schema`` and compute its fingerprint.

        Examples
        --------
        >>> SchemaVersion.from_schema("n", 1, {"type": "record", "name": "N",
        ...     "fields": []}).schema["name"]
        'N'
        """
        parsed = fastavro.parse_schema(schema)
        return cls(name, version, parsed, fingerprint(parsed), path)

    @property
    def record_name(self) -> str:
        """Full Avro name of the record, e.g. ``"llmpulse.Span"``.

        Examples
        --------
        >>> Catalog.shipped().current("span").record_name
        'llmpulse.Span'
        """
        return self.schema["name"]


class Catalog:
    """All versions of all record schemas.

    Parameters
    ----------
    versions
        Schema versions; for each name they must be numbered 1..N without gaps
        and describe records with the same full name (Avro resolution matches
        records by name).

    Raises
    ------
    ValueError
        If the versions are inconsistent (gap, duplicate, renamed record, or the
        same fingerprint under two names).

    Examples
    --------
    >>> catalog = Catalog.shipped()
    >>> "span" in catalog.names()
    True
    >>> current = catalog.current("span")
    >>> catalog.by_fingerprint(current.fingerprint) == current
    True
    """

    def __init__(self, versions: Iterable[SchemaVersion]) -> None:
        by_name: dict[str, list[SchemaVersion]] = {}
        for v in versions:
            by_name.setdefault(v.name, []).append(v)
        self._versions: dict[str, tuple[SchemaVersion, ...]] = {}
        self._by_fingerprint: dict[bytes, SchemaVersion] = {}
        for name, vs in sorted(by_name.items()):
            vs.sort(key=lambda v: v.version)
            numbers = [v.version for v in vs]
            if numbers != list(range(1, len(vs) + 1)):
                # A gap usually means a shipped version was deleted, and data
                # written with it would become unreadable.
                raise ValueError(f"{name}: versions must be 1..N without gaps, got {numbers}")
            record_names = {v.record_name for v in vs}
            if len(record_names) != 1:
                raise ValueError(
                    f"{name}: every version must describe the same record, "
                    f"got {sorted(record_names)}"
                )
            self._versions[name] = tuple(vs)
            for v in vs:
                other = self._by_fingerprint.get(v.fingerprint)
                if other is not None and other.name != name:
                    raise ValueError(
                        f"{name} v{v.version} has the same fingerprint as {other.name}"
                    )
                # Versions that differ only in docs share a fingerprint; the
                # oldest wins, which is harmless because they resolve identically.
                self._by_fingerprint.setdefault(v.fingerprint, v)

    @classmethod
    def from_directory(cls, root: str | Path) -> Catalog:
        """Load every ``<root>/<name>/v<N>.avsc``.

        Parameters
        ----------
        root
            Folder holding one sub-folder per record.

        Examples
        --------
        >>> Catalog.from_directory(SHIPPED_DIR).current("alert").version >= 1
        True
        """
        root = Path(root)
        if not root.is_dir():
            raise ValueError(f"{root}: schema directory not found")
        versions = []
        for folder in sorted(p for p in root.iterdir() if p.is_dir()):
            for path in sorted(folder.iterdir()):
                match = _VERSION_FILE.match(path.name)
                if match is None:
                    continue
                versions.append(
                    SchemaVersion.from_schema(
                        folder.name, int(match.group(1)), load_schema(path), path
                    )
                )
        return cls(versions)

    @classmethod
    def shipped(cls) -> Catalog:
        """The schemas shipped with llmpulse (``schemas/avro``).

        Examples
        --------
        >>> sorted(Catalog.shipped().names())[:3]
        ['alert', 'anomaly', 'anomaly_feedback']
        """
        return cls.from_directory(SHIPPED_DIR)

    def names(self) -> tuple[str, ...]:
        """Record names, sorted.

        Examples
        --------
        >>> "feedback" in Catalog.shipped().names()
        True
        """
        return tuple(self._versions)

    def versions(self, name: str) -> tuple[SchemaVersion, ...]:
        """All versions of ``name``, oldest first.

        Raises
        ------
        KeyError
            If ``name`` is not in the catalog.

        Examples
        --------
        >>> Catalog.shipped().versions("span")[0].version
        1
        """
        try:
            return self._versions[name]
        except KeyError:
            raise KeyError(f"unknown record {name!r}; known: {', '.join(self._versions)}") from None

    def current(self, name: str) -> SchemaVersion:
        """Newest version of ``name``: the reader schema for decoding.

        Examples
        --------
        >>> Catalog.shipped().current("span").name
        'span'
        """
        return self.versions(name)[-1]

    def by_fingerprint(self, fp: bytes) -> SchemaVersion | None:
        """The version with fingerprint ``fp``, or None if unknown.

        Examples
        --------
        >>> Catalog.shipped().by_fingerprint(bytes(8)) is None
        True
        """
        return self._by_fingerprint.get(fp)
