"""IngestProcessor with an enricher: masked, costed, tagged spans and one
exposure per (user, experiment), with profile and definition changes seen by
the next message (the enricher's per-user cache must not hide them)."""
from __future__ import annotations

from datetime import UTC, datetime, timedelta

from processors.cohorts import PRIMARY_ATTR, CohortConfig, CohortTagger
from processors.deadletter import SourceMessage
from processors.enrich import Enricher
from processors.experiments import prompt_ab
from processors.ingest import IngestProcessor
from processors.pii import PiiMasker
from processors.pricing import PriceTable
from schemas.codec import decode, encode
from schemas.samples import sample

T0 = datetime(2026, 1, 1, tzinfo=UTC)


def _message(offset: int, **fields) -> SourceMessage:
    span = sample("span", **{"user_id": "u1", "experiments": {}, "input": "mail ann@example.com", **fields})
    return SourceMessage("llm.spans", 0, offset, None, encode("span", span))


def test_profile_and_definition_changes_reach_the_next_span():
    profiles = {"u1": {"user_id": "u1", "plan": "free", "updated_at": T0}}
    enricher = Enricher(CohortTagger(CohortConfig.load()), profiles.get)
    enricher.set_experiment("tone", prompt_ab("tone", "ml@example.com", "v1", "v2", status="running",
                                              targeting='{"plan": "pro"}'))
    ingest = IngestProcessor(PriceTable.load(), PiiMasker(), enricher=enricher)

    [out] = ingest.process(_message(0))
    span = decode(out.value, expected="span")
    assert span["input"] == "mail <EMAIL>"
    assert span["attributes"][PRIMARY_ATTR] == "free" and span["experiments"] == {}

    profiles["u1"] = {"user_id": "u1", "plan": "pro", "updated_at": T0 + timedelta(seconds=1)}
    outs = ingest.process(_message(1))
    assert [o.topic for o in outs] == ["llm.spans.enriched", "llm.exposures"]
    span = decode(outs[0].value, expected="span")
    assert span["attributes"][PRIMARY_ATTR] == "pro" and set(span["experiments"]) == {"tone"}
    assert outs[1].key == b"tone|u1"

    # Exposure once per (user, experiment); a deleted experiment stops tagging.
    assert [o.topic for o in ingest.process(_message(2))] == ["llm.spans.enriched"]
    enricher.set_experiment("tone", None)
    span = decode(ingest.process(_message(3))[0].value, expected="span")
    assert span["experiments"] == {}
    assert ingest.masked["EMAIL"] == 4
