"""Messages as a producer still on an older schema version writes them."""
from __future__ import annotations

import io

import fastavro

from schemas.catalog import Catalog
from schemas.codec import MAGIC


def encode_version(name: str, version: int, record: dict) -> bytes:
    """``record`` framed and encoded with shipped schema ``version`` of ``name``.

    >>> from schemas.codec import decode
    >>> from schemas.samples import sample
    >>> decode(encode_version("metric_window", 1, sample("metric_window")), expected="metric_window")["partition"]
    2
    """
    shipped = Catalog.shipped().versions(name)[version - 1]
    out = io.BytesIO(MAGIC + shipped.fingerprint)
    out.seek(0, io.SEEK_END)
    fastavro.schemaless_writer(out, fastavro.parse_schema(shipped.schema), record)
    return out.getvalue()
