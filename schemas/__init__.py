"""Avro schemas for every llmpulse record, and the one codec that reads and writes them.

Examples
--------
>>> from schemas import decode, encode
>>> from schemas.samples import sample
>>> decode(encode("span", sample("span")), "span") == sample("span")
True
"""

from schemas.catalog import Catalog, SchemaVersion
from schemas.codec import Codec, decode, default_codec, encode, encode_json
from schemas.compat import check_backward_compatible
from schemas.errors import SerializationError

__all__ = [
    "Catalog",
    "Codec",
    "SchemaVersion",
    "SerializationError",
    "check_backward_compatible",
    "decode",
    "default_codec",
    "encode",
    "encode_json",
]
