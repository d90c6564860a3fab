from __future__ import annotations

import pytest

from processors.catalog import make_processor
from processors.deadletter import SourceMessage, encode_dead_letter
from processors.ingest import IngestProcessor
from processors.pii import PiiMasker
from processors.pricing import PriceTable
from processors.sampling import TraceSampler
from processors.settings import Settings
from schemas.codec import SerializationError, decode, encode, encode_json
from schemas.samples import sample
from tests.otel_batches import otlp_agent_trace


def _message(value: bytes | None, key: bytes | None = None, topic: str = "llm.spans") -> SourceMessage:
    return SourceMessage(topic, 2, 99, key, value)


@pytest.fixture
def ingest() -> IngestProcessor:
    return IngestProcessor(PriceTable.load(), PiiMasker())


@pytest.mark.parametrize("wire", [encode, encode_json], ids=["avro", "json"])
def test_forwards_a_valid_span_as_avro(ingest, wire) -> None:
    span = sample("span")
    [out] = ingest.process(_message(wire("span", span)))
    assert out.topic == "llm.spans.enriched"
    assert out.key == span["trace_id"].encode()
    assert out.value[:2] == b"\xc3\x01"  # Avro single-object encoding downstream
    assert decode(out.value, expected="span") == span  # sample has no PII and its own cost


def test_keys_by_trace_id_whatever_the_producer_used(ingest) -> None:
    [out] = ingest.process(_message(encode("span", sample("span")), key=b"custom"))
    assert out.key == sample("span")["trace_id"].encode()


def test_masks_pii_and_prices_the_span(ingest) -> None:
    span = sample("span", input="card 4111 1111 1111 1111, mail a.b@example.org", cost_usd=None,
                  request_model="gpt-4o-mini", response_model=None, input_tokens=1000, output_tokens=100,
                  cache_read_input_tokens=200, cache_creation_input_tokens=None)
    [out] = ingest.process(_message(encode_json("span", span)))
    enriched = decode(out.value, expected="span")
    assert enriched["input"] == "card <CREDIT_CARD>, mail <EMAIL>"
    # gpt-4o-mini: 800 uncached at 0.15, 200 cached at 0.075, 100 out at 0.60 per million
    assert enriched["cost_usd"] == pytest.approx(195e-6)
    samples = {(name, tuple(labels.values())): v for name, _doc, labels, v in ingest.samples()}
    assert samples[("llmpulse_pii_masked", ("CREDIT_CARD",))] == 1
    assert samples[("llmpulse_cost_source", ("table",))] == 1


def test_counts_unknown_models_without_guessing(ingest) -> None:
    span = sample("span", cost_usd=None, request_model="acme-llm-9", response_model=None)
    [out] = ingest.process(_message(encode("span", span)))
    assert decode(out.value, expected="span")["cost_usd"] is None
    assert ("llmpulse_unknown_model_spans", "Spans whose model has no price.", {"model": "acme-llm-9"}, 1.0) in (
        ingest.samples()
    )


def test_splits_otlp_batches_into_spans(ingest) -> None:
    data, expected = otlp_agent_trace("support-bot", 2)
    outs = ingest.process(_message(data, topic="otlp_spans"))
    spans = [decode(o.value, expected="span") for o in outs]
    assert sorted(s["span_id"] for s in spans) == sorted(e["span_id"] for e in expected)
    assert all(o.key == expected[0]["trace_id"].encode() for o in outs)
    assert all(s["cost_usd"] for s in spans if s["kind"] == "llm")


def test_sampler_drops_whole_traces_over_budget() -> None:
    clock = [0.0]
    sampler = TraceSampler({"p": 1.0}, default_budget=None, slow_ms=60_000, now=lambda: clock[0])
    ingest = IngestProcessor(PriceTable.load(), PiiMasker(), sampler)
    forwarded: dict[str, int] = {}
    for t in range(200):
        trace_id = f"{t:032x}"
        root = f"{t:016x}"
        for i, parent in enumerate([root, root, None]):  # root span arrives last
            span = sample("span", trace_id=trace_id, span_id=f"{t:08x}{i:08x}" if parent else root,
                          parent_span_id=parent, project="p", status="ok")
            for out in ingest.process(_message(encode("span", span))):
                forwarded[trace_id] = forwarded.get(trace_id, 0) + 1
        clock[0] += 0.05
    clock[0] += 3600
    for out in ingest.tick():
        tid = decode(out.value, expected="span")["trace_id"]
        forwarded[tid] = forwarded.get(tid, 0) + 1
    assert 0 < len(forwarded) < 200
    assert set(forwarded.values()) == {3}  # never half a trace


@pytest.mark.parametrize(
    "value, match",
    [
        (b"garbage", "wire format"),
        (b'{"trace_id": "x"}', "span."),
        (encode("feedback", sample("feedback")), "span"),
    ],
)
def test_rejects_bad_input_with_a_serialization_error(ingest, value, match) -> None:
    with pytest.raises(SerializationError, match=match):
        ingest.process(_message(value))


def test_rejects_bad_otlp(ingest) -> None:
    with pytest.raises(SerializationError):
        ingest.process(_message(b"\xff\xff\xff", topic="otlp_spans"))


def test_rejects_tombstones(ingest) -> None:
    with pytest.raises(ValueError, match="tombstone"):
        ingest.process(_message(None))


def test_dead_letter_keeps_original_bytes_and_coordinates() -> None:
    message = _message(b"\xff\xfe", key=b"k")
    record = decode(encode_dead_letter("ingest", message, SerializationError("span.kind: bad")), "dead_letter")
    assert record["original"] == b"\xff\xfe"
    assert record["key"] == b"k"
    assert (record["topic"], record["partition"], record["offset"]) == ("llm.spans", 2, 99)
    assert record["error_type"] == "SerializationError"
    assert "span.kind" in record["error"]


def test_catalog_builds_processors_from_settings() -> None:
    processor = make_processor("ingest", Settings(sampling_budgets="p=10,*=100"))
    assert processor.sources == ("llm.spans", "otlp_spans", "llm.feedback")
    assert processor.sampler is not None
    with pytest.raises(KeyError, match="known: ingest"):
        make_processor("nope", Settings())


def test_drain_decides_every_held_trace() -> None:
    clock = [0.0]
    sampler = TraceSampler({"p": 1.0}, default_budget=None, slow_ms=60_000, now=lambda: clock[0])
    ingest = IngestProcessor(PriceTable.load(), PiiMasker(), sampler)
    for t in range(100):  # children only: no root arrives, so dropped-by-hash traces stay held
        span = sample("span", trace_id=f"{t:032x}", span_id=f"{t:016x}", parent_span_id="f" * 16, project="p")
        ingest.process(_message(encode("span", span)))
        clock[0] += 0.01
    assert sampler.pending_traces > 0
    released = ingest.drain()
    assert sampler.pending_traces == 0
    assert all(decode(o.value, expected="span")["project"] == "p" for o in released)
