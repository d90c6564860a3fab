"""Every shipped schema: parses, is documented, and evolves compatibly."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from schemas import Codec, check_backward_compatible
from schemas.catalog import SHIPPED_DIR, Catalog, load_schema

SCHEMA_FILES = sorted(SHIPPED_DIR.glob("*/*.avsc"))
EXPECTED_RECORDS = {
    "span", "feedback", "user_profile", "experiment",
    "exposure", "metric_point", "metric_window", "alert", "dead_letter", "anomaly", "anomaly_feedback",
}


def _id(path: Path) -> str:
    return f"{path.parent.name}/{path.name}"


def _named_types(schema, path):
    """Yield (path, schema) for every record and enum, and (path, field) for every field."""
    if isinstance(schema, list):
        for branch in schema:
            yield from _named_types(branch, path)
    elif isinstance(schema, dict):
        kind = schema["type"]
        if kind == "record":
            yield path, schema
            for f in schema["fields"]:
                yield f"{path}.{f['name']}", f
                yield from _named_types(f["type"], f"{path}.{f['name']}")
        elif kind == "enum":
            yield path, schema
        elif kind == "array":
            yield from _named_types(schema["items"], f"{path}[]")
        elif kind == "map":
            yield from _named_types(schema["values"], f"{path}[]")
        elif isinstance(kind, (dict, list)):
            yield from _named_types(kind, path)


def test_every_record_is_shipped():
    assert {p.parent.name for p in SCHEMA_FILES} == EXPECTED_RECORDS
    assert set(Catalog.shipped().names()) == EXPECTED_RECORDS


def test_only_versioned_schema_files():
    for folder in SHIPPED_DIR.iterdir():
        assert folder.is_dir(), f"{folder}: only one folder per record belongs in {SHIPPED_DIR}"
        for path in folder.iterdir():
            assert re.fullmatch(r"v[1-9][0-9]*\.avsc", path.name), f"{path}: expected vN.avsc"


@pytest.mark.parametrize("path", SCHEMA_FILES, ids=_id)
def test_schema_parses(path):
    schema = load_schema(path)
    assert schema["type"] == "record"
    raw = json.loads(path.read_text())
    assert raw["namespace"] == "llmpulse", "every record lives in the llmpulse namespace"


@pytest.mark.parametrize("path", SCHEMA_FILES, ids=_id)
def test_every_field_and_type_has_a_doc(path):
    raw = json.loads(path.read_text())
    nodes = _named_types(raw, path.parent.name)
    undocumented = [p for p, node in nodes if not node.get("doc", "").strip()]
    assert not undocumented, f"missing doc: {undocumented}"


@pytest.mark.parametrize("path", SCHEMA_FILES, ids=_id)
def test_nullable_fields_default_to_null(path):
    # A nullable field without a default would be required, which is never
    # what "nullable" means to a producer.
    raw = json.loads(path.read_text())
    for field_path, node in _named_types(raw, path.parent.name):
        if "name" in node and isinstance(node.get("type"), list) and "null" in node["type"]:
            assert node.get("default", "missing") is None, f"{field_path}: no default null"


def test_every_schema_compiles_into_the_codec():
    codec = Codec()
    assert set(codec.catalog.names()) == EXPECTED_RECORDS


def test_consecutive_versions_are_backward_compatible():
    # One test looping over all pairs, not a parametrised one: while every
    # record has only v1 there are no pairs, and an empty parameter set would
    # show up as a skip.
    catalog = Catalog.shipped()
    for name in catalog.names():
        versions = catalog.versions(name)
        for old, new in zip(versions, versions[1:]):
            check_backward_compatible(old.schema, new.schema, name=name)


def test_fingerprints_are_unique():
    catalog = Catalog.shipped()
    fingerprints = [v.fingerprint for n in catalog.names() for v in catalog.versions(n)]
    assert len(fingerprints) == len(set(fingerprints))
