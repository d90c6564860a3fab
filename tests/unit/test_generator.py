"""The synthetic traffic model and its Kafka producer (no broker: a fake producer)."""

from __future__ import annotations

import re
import statistics
import time
from collections import Counter
from datetime import timedelta

import pytest
from click.testing import CliRunner
from confluent_kafka import KafkaError

from processors import generate_cli
from processors.generate_cli import DeliveryError, produce_traffic
from processors.generator import (
    DEFAULT_PROJECTS,
    DEFAULT_START,
    MALFORMED_KINDS,
    MODELS,
    Incident,
    ProjectSpec,
    TrafficModel,
)
from processors.pii import PiiMasker
from processors.pricing import PriceTable
from processors.topics import FEEDBACK, SPANS
from schemas.codec import SerializationError, decode, encode, encode_json

N_TRACES = 2000
_IDS = ("trace_id", "span_id", "parent_span_id", "session_id", "response_id")


@pytest.fixture(scope="module")
def model() -> TrafficModel:
    return TrafficModel(seed=0, start=DEFAULT_START)


@pytest.fixture(scope="module")
def traces(model: TrafficModel) -> list[list[dict]]:
    return list(model.traces(N_TRACES))


@pytest.fixture(scope="module")
def spans(traces: list[list[dict]]) -> list[dict]:
    return [s for t in traces for s in t]


def _q(values: list[float], p: float) -> float:
    ordered = sorted(values)
    return ordered[int(p * (len(ordered) - 1))]


def _ms(span: dict) -> float:
    return (span["end_time"] - span["start_time"]).total_seconds() * 1000


# ------------------------------------------------------------------ determinism


def test_same_seed_and_start_give_the_same_traffic() -> None:
    a, b = TrafficModel(seed=42, start=DEFAULT_START), TrafficModel(seed=42, start=DEFAULT_START)
    ta, tb = list(a.traces(200)), list(b.traces(200))
    assert ta == tb
    assert [a.feedback_for(t) for t in ta] == [b.feedback_for(t) for t in tb]
    assert a.malformed(16) == b.malformed(16)


def test_other_seed_gives_other_traffic() -> None:
    a = list(TrafficModel(seed=1, start=DEFAULT_START).traces(20))
    b = list(TrafficModel(seed=2, start=DEFAULT_START).traces(20))
    assert a != b


def test_later_start_same_content_shifted_times_fresh_ids() -> None:
    shift = timedelta(hours=5)
    a = list(TrafficModel(seed=9, start=DEFAULT_START).traces(100))
    b = list(TrafficModel(seed=9, start=DEFAULT_START + shift).traces(100))
    strip = {"start_time", "end_time", "first_token_time", *_IDS}

    def content(span: dict) -> dict:
        out = {k: v for k, v in span.items() if k not in strip}
        out["attributes"] = {k: v for k, v in span["attributes"].items() if k != "gen_ai.tool.call.id"}
        return out

    for ta, tb in zip(a, b):
        assert ta[0]["trace_id"] != tb[0]["trace_id"]
        for sa, sb in zip(ta, tb):
            assert sb["start_time"] - sa["start_time"] == shift
            assert content(sa) == content(sb)
    fa = TrafficModel(seed=9, start=DEFAULT_START, feedback_rate=1.0).feedback_for(a[0])
    fb = TrafficModel(seed=9, start=DEFAULT_START + shift, feedback_rate=1.0).feedback_for(b[0])
    assert fa["feedback_id"] != fb["feedback_id"] and fb["time"] - fa["time"] == shift
    assert (fa["rating"], fa["thumbs"], fa["comment"]) == (fb["rating"], fb["thumbs"], fb["comment"])


def test_traces_is_a_stream() -> None:
    whole = list(TrafficModel(seed=3, start=DEFAULT_START).traces(5))
    parts = TrafficModel(seed=3, start=DEFAULT_START)
    assert list(parts.traces(3)) + list(parts.traces(2)) == whole


def test_feedback_and_malformed_do_not_disturb_the_traces() -> None:
    plain = list(TrafficModel(seed=4, start=DEFAULT_START).traces(30))
    busy = TrafficModel(seed=4, start=DEFAULT_START)
    mixed = []
    for _ in range(30):
        trace = busy.trace()
        busy.feedback_for(trace)
        busy.malformed(2)
        mixed.append(trace)
    assert mixed == plain


# --------------------------------------------------------------------- schema


def test_every_span_and_feedback_fits_the_schemas(model: TrafficModel, traces, spans) -> None:
    for span in spans:
        assert decode(encode("span", span), expected="span") == span
    for span in spans[::10]:  # JSON is the slower path; a tenth covers every shape
        assert decode(encode_json("span", span), expected="span") == span
    feedback = [f for f in map(model.feedback_for, traces) if f is not None]
    assert feedback
    for fb in feedback:
        assert decode(encode("feedback", fb), expected="feedback") == fb
        assert decode(encode_json("feedback", fb), expected="feedback") == fb


def test_models_are_priced_with_matching_providers() -> None:
    table = PriceTable.load()
    used = {m for p in DEFAULT_PROJECTS for m, _ in p.models} | {"text-embedding-3-small", "gpt-4.1-nano"}
    for name in used:
        spec = MODELS[name]
        for model_name in (spec.request_model, spec.response_model):
            price = table.price_for(model_name, spec.provider)
            assert price is not None, model_name
            assert (price.id, price.provider) == (spec.price_id, spec.provider), model_name


# --------------------------------------------------------------------- trees


def test_tree_invariants(traces) -> None:
    hex32, hex16 = re.compile(r"[0-9a-f]{32}"), re.compile(r"[0-9a-f]{16}")
    trace_ids = [t[0]["trace_id"] for t in traces]
    assert len(set(trace_ids)) == len(trace_ids)
    for trace in traces:
        assert 3 <= len(trace) <= 50
        roots = [s for s in trace if s["parent_span_id"] is None]
        assert len(roots) == 1 and roots[0] is trace[0] and roots[0]["kind"] == "agent"
        by_id = {s["span_id"]: s for s in trace}
        assert len(by_id) == len(trace)
        assert len({s["trace_id"] for s in trace}) == 1 and hex32.fullmatch(trace[0]["trace_id"])
        assert len({(s["user_id"], s["session_id"], s["project"], s["prompt_version"]) for s in trace}) == 1
        for span in trace:
            assert hex16.fullmatch(span["span_id"])
            assert span["start_time"] <= span["end_time"]
            if span["parent_span_id"] is not None:
                parent = by_id[span["parent_span_id"]]
                assert parent["start_time"] <= span["start_time"] and span["end_time"] <= parent["end_time"]
            if span["first_token_time"] is not None:
                assert span["start_time"] <= span["first_token_time"] <= span["end_time"]


def test_trace_shapes(traces, spans) -> None:
    kinds = Counter(s["kind"] for s in spans)
    assert set(kinds) == {"agent", "llm", "retrieval", "tool", "chain", "embedding"}
    # Sequential and parallel tool calls: siblings that overlap in time.
    overlapping = 0
    for trace in traces:
        tools = [s for s in trace if s["kind"] == "tool"]
        overlapping += any(
            a["parent_span_id"] == b["parent_span_id"] and b["start_time"] < a["end_time"]
            for a, b in zip(tools, tools[1:])
        )
    assert 0.02 * N_TRACES < overlapping < 0.5 * N_TRACES
    assert max(len(t) for t in traces) >= 25  # some long agent loops
    assert {s["tool_name"] for s in spans if s["kind"] == "tool"} >= {"get_order", "run_sql", "search_web"}


# -------------------------------------------------------------- distributions


def test_errors_are_rare_and_described(traces, spans) -> None:
    work = [s for s in spans if s["kind"] in ("llm", "tool", "retrieval", "embedding")]
    errors = [s for s in work if s["status"] == "error"]
    assert 0.01 < len(errors) / len(work) < 0.04
    assert 0.005 < sum(t[0]["status"] == "error" for t in traces) / len(traces) < 0.04
    assert all(s["status_message"] and s["error_type"] for s in spans if s["status"] == "error")
    types = {s["error_type"] for s in errors}
    assert {"RateLimitError", "timeout"} <= types and len(types) > 8


def test_latency_is_heavy_tailed(traces, spans) -> None:
    llm = [_ms(s) for s in spans if s["kind"] == "llm" and s["status"] == "ok"]
    assert _q(llm, 0.99) / _q(llm, 0.5) > 3
    roots = [_ms(t[0]) for t in traces]
    assert _q(roots, 0.99) / _q(roots, 0.5) > 3
    assert 300 < _q(llm, 0.5) < 5000


def test_llm_latency_follows_output_tokens(spans) -> None:
    llm = [s for s in spans if s["kind"] == "llm" and s["status"] == "ok" and s["request_model"] == "gpt-4o-mini"]
    short = [_ms(s) for s in llm if s["output_tokens"] < 60]
    long = [_ms(s) for s in llm if s["output_tokens"] > 300]
    assert statistics.median(long) > 2 * statistics.median(short)


def test_token_and_model_mix(spans) -> None:
    llm = [s for s in spans if s["kind"] == "llm" and s["status"] == "ok"]
    assert 300 < statistics.median(s["input_tokens"] for s in llm) < 10_000
    assert 10 < statistics.median(s["output_tokens"] for s in llm) < 1_000
    assert all(s["first_token_time"] is not None and s["finish_reasons"] for s in llm)
    assert all(s["input_tokens"] >= (s["cache_read_input_tokens"] or 0) + (s["cache_creation_input_tokens"] or 0)
               for s in llm)  # fmt: skip
    cached = sum(bool(s["cache_read_input_tokens"]) for s in llm) / len(llm)
    assert 0.1 < cached < 0.9
    assert any(s["cache_creation_input_tokens"] for s in llm)
    assert len({s["request_model"] for s in llm}) >= 8
    assert {s["provider"] for s in llm} >= {"openai", "anthropic", "gcp.gemini"}
    assert {s["project"] for s in spans} == {p.name for p in DEFAULT_PROJECTS}
    assert {s["finish_reasons"][0] for s in llm} >= {"stop", "tool_calls", "end_turn", "tool_use", "STOP"}
    # cost_usd is ingest's job, except for a few producer-priced spans.
    priced = [s for s in spans if s["cost_usd"] is not None]
    assert 0 < len(priced) < 0.1 * len(llm) and all(s["cost_usd"] > 0 for s in priced)


def test_users_sessions_and_experiments(traces) -> None:
    roots = [t[0] for t in traces]
    per_user = Counter(r["user_id"] for r in roots)
    assert per_user.most_common(1)[0][1] > 10 * statistics.median(per_user.values())  # Zipf-like
    assert len({r["session_id"] for r in roots}) < len(roots)  # multi-turn sessions
    variants: dict[str, set[str]] = {}
    for r in roots:
        variants.setdefault(r["user_id"], set()).add(r["prompt_version"])
    assert all(len(v) == 1 for v in variants.values())  # a user keeps their variant
    assert len({r["prompt_version"] for r in roots}) == 8


def test_some_payloads_carry_pii(traces, spans) -> None:
    masker = PiiMasker()
    found = Counter(f.type for s in spans for text in (s["input"], s["output"]) if text for f in masker.find(text))
    assert {"EMAIL", "PHONE", "CREDIT_CARD", "IBAN"} <= set(found)
    with_pii = sum(bool(masker.find(t[0]["input"])) for t in traces) / len(traces)
    assert 0.02 < with_pii < 0.2


def test_feedback_follows_the_experience(model: TrafficModel, traces) -> None:
    pairs = [(t, model.feedback_for(t)) for t in traces]
    given = [(t, f) for t, f in pairs if f is not None]
    assert 0.15 < len(given) / len(traces) < 0.45
    for trace, fb in given:
        assert fb["trace_id"] == trace[0]["trace_id"] and fb["user_id"] == trace[0]["user_id"]
        assert fb["time"] > trace[0]["end_time"]
        assert fb["rating"] is None or 1 <= fb["rating"] <= 5
        assert fb["span_id"] in {s["span_id"] for s in trace}

    def up_rate(group):
        votes = [f["thumbs"] for _, f in group if f["thumbs"] is not None]
        return sum(votes) / len(votes)

    failed = [(t, f) for t, f in given if t[0]["status"] == "error"]
    fine = [(t, f) for t, f in given if t[0]["status"] != "error"]
    assert up_rate(failed) < up_rate(fine) - 0.3
    assert any(f["comment"] for _, f in given)


def test_feedback_needs_a_root(model: TrafficModel, traces) -> None:
    assert model.feedback_for(traces[0][1:]) is None


# ------------------------------------------------------------------ malformed


def test_malformed_messages_are_all_rejected() -> None:
    bad = TrafficModel(seed=5, start=DEFAULT_START).malformed(4 * len(MALFORMED_KINDS))
    assert len(bad) == 32 and len(set(bad)) == 32
    for message in bad:
        with pytest.raises(SerializationError):
            decode(message, expected="span")


# ------------------------------------------------------------- incidents, config


def test_incident_slows_its_model_in_its_window() -> None:
    incident = Incident(0, 3600, latency_factor=5.0, error_rate=0.2, model="gpt-4o-mini", project="support-bot")
    calm = TrafficModel(seed=6, start=DEFAULT_START, error_rate=0.0)
    storm = TrafficModel(seed=6, start=DEFAULT_START, error_rate=0.0, incidents=[incident])

    def llm(m):
        return [s for t in m.traces(300) for s in t if s["request_model"] == "gpt-4o-mini" and s["kind"] == "llm"]

    calm_spans, storm_spans = llm(calm), llm(storm)
    ok = [_ms(s) for s in storm_spans if s["status"] == "ok"]
    assert statistics.median(ok) > 3 * statistics.median(_ms(s) for s in calm_spans)
    assert 0.1 < sum(s["status"] == "error" for s in storm_spans) / len(storm_spans) < 0.35


@pytest.mark.parametrize(
    "kwargs",
    [{"error_rate": 1.5}, {"pii_rate": -0.1}, {"traces_per_second": 0}, {"projects": ()},
     {"start": DEFAULT_START.replace(tzinfo=None)}],
)  # fmt: skip
def test_bad_settings_are_refused(kwargs) -> None:
    with pytest.raises(ValueError):
        TrafficModel(**{"start": DEFAULT_START, **kwargs})


def test_unknown_model_is_refused() -> None:
    spec = DEFAULT_PROJECTS[0]
    bad = ProjectSpec(**{**spec.__dict__, "models": (("gpt-99", 1.0),)})
    with pytest.raises(ValueError, match="gpt-99"):
        TrafficModel(projects=[bad], start=DEFAULT_START)


def test_generation_is_fast() -> None:
    model = TrafficModel(seed=8, start=DEFAULT_START)
    began = time.perf_counter()
    n = sum(len(t) for t in model.traces(10_000))
    took = time.perf_counter() - began
    # ~1.5 s on a laptop core; the bound only catches an accidental O(n^2).
    assert took < 10, f"10k traces ({n} spans) took {took:.1f} s"


# ------------------------------------------------------------------- producer


class FakeProducer:
    """confluent_kafka.Producer's surface: records messages, reports deliveries on poll/flush."""

    def __init__(self, fail_on: int | None = None, buffer_full_every: int = 0, undelivered: int = 0) -> None:
        """``fail_on``: 1-based number of the message whose delivery fails."""
        self.sent: list[tuple[str, bytes | None, bytes]] = []
        self.pending: list = []
        self.fail_on = fail_on
        self.buffer_full_every = buffer_full_every
        self.undelivered = undelivered
        self.buffer_errors = 0
        self.refused_last = False

    def produce(self, topic, value, key=None, on_delivery=None):
        # Every n-th message is refused once, as librdkafka does when its queue is full.
        if self.buffer_full_every and len(self.sent) % self.buffer_full_every == 1 and not self.refused_last:
            self.refused_last = True
            self.buffer_errors += 1
            raise BufferError("Local: Queue full")
        self.refused_last = False
        self.sent.append((topic, key, value))
        self.pending.append((len(self.sent), topic, on_delivery))

    def poll(self, timeout=0):
        for number, topic, callback in self.pending:
            err = KafkaError(KafkaError.TOPIC_AUTHORIZATION_FAILED) if number == self.fail_on else None
            callback(err, _Msg(topic))
        n, self.pending = len(self.pending), []
        return n

    def flush(self, timeout=None):
        self.poll()
        return self.undelivered


class _Msg:
    def __init__(self, topic: str) -> None:
        self._topic = topic

    def topic(self) -> str:
        return self._topic


def test_produce_sends_spans_feedback_and_malformed() -> None:
    fake, progress = FakeProducer(), []
    stats = produce_traffic({}, TrafficModel(seed=1, start=DEFAULT_START), traces=100, malformed=10,
                            producer=fake, on_progress=progress.append)  # fmt: skip
    expected = list(TrafficModel(seed=1, start=DEFAULT_START).traces(100))
    assert stats.traces == 100 == len(progress) and stats.malformed == 10
    assert stats.spans == sum(map(len, expected))
    assert stats.messages == len(fake.sent) and stats.bytes == sum(len(v) for _, _, v in fake.sent)
    assert sum(stats.by_project.values()) == 100 and stats.by_model
    topics = Counter(t for t, _, _ in fake.sent)
    assert topics[FEEDBACK.name] == stats.feedback > 0
    assert topics[SPANS.name] == stats.spans + stats.malformed
    # Malformed spread through the run, keyless; spans keyed by trace, children before parents.
    positions = [i for i, (_, key, _) in enumerate(fake.sent) if key is None]
    assert len(positions) == 10 and positions[-1] - positions[0] > len(fake.sent) / 2
    first = [decode(v, "span") for t, k, v in fake.sent if t == SPANS.name and k == expected[0][0]["trace_id"].encode()]
    assert first[-1]["parent_span_id"] is None and len(first) == len(expected[0])
    assert [s["end_time"] for s in first] == sorted(s["end_time"] for s in first)


@pytest.mark.parametrize("fmt, prefixes", [("avro", {b"\xc3"}), ("json", {b"{"}), ("mixed", {b"\xc3", b"{"})])
def test_produce_formats(fmt: str, prefixes: set[bytes]) -> None:
    fake = FakeProducer()
    produce_traffic({}, TrafficModel(seed=2, start=DEFAULT_START), traces=40, fmt=fmt, producer=fake)
    assert {v[:1] for _, _, v in fake.sent} == prefixes


def test_failed_delivery_raises_with_the_kafka_error() -> None:
    with pytest.raises(DeliveryError, match="TOPIC_AUTHORIZATION_FAILED") as info:
        produce_traffic({}, TrafficModel(seed=3, start=DEFAULT_START), traces=50, producer=FakeProducer(fail_on=30))
    assert info.value.kafka_error.code() == KafkaError.TOPIC_AUTHORIZATION_FAILED


def test_undelivered_after_flush_raises() -> None:
    with pytest.raises(DeliveryError, match="7 messages still undelivered"):
        produce_traffic({}, TrafficModel(seed=3, start=DEFAULT_START), traces=5, producer=FakeProducer(undelivered=7))


def test_full_local_queue_is_waited_out() -> None:
    fake = FakeProducer(buffer_full_every=7)
    stats = produce_traffic({}, TrafficModel(seed=4, start=DEFAULT_START), traces=20, producer=fake)
    assert fake.buffer_errors > 0 and stats.messages == len(fake.sent)


def test_rate_limits_traces_per_second() -> None:
    began = time.monotonic()
    produce_traffic({}, TrafficModel(seed=5, start=DEFAULT_START), traces=21, rate=100.0, producer=FakeProducer())
    assert time.monotonic() - began >= 0.19


def test_only_malformed() -> None:
    fake = FakeProducer()
    stats = produce_traffic({}, TrafficModel(seed=6, start=DEFAULT_START), traces=0, malformed=3, producer=fake)
    assert (stats.traces, stats.malformed, len(fake.sent)) == (0, 3, 3)


def test_bad_arguments() -> None:
    model = TrafficModel(seed=0, start=DEFAULT_START)
    with pytest.raises(ValueError, match="fmt"):
        produce_traffic({}, model, traces=1, fmt="xml", producer=FakeProducer())
    with pytest.raises(ValueError, match="rate"):
        produce_traffic({}, model, traces=1, rate=0, producer=FakeProducer())


# ------------------------------------------------------------------------ CLI


def test_cli_produces_and_summarises(monkeypatch) -> None:
    fakes: list[FakeProducer] = []
    configs: list[dict] = []

    def factory(config):
        configs.append(config)
        fakes.append(FakeProducer())
        return fakes[-1]

    monkeypatch.setattr(generate_cli, "Producer", factory)
    result = CliRunner().invoke(
        generate_cli.generate,
        ["--traces", "30", "--seed", "7", "--format", "mixed", "--malformed", "4"],
        env={"KAFKA_BOOTSTRAP_SERVERS": "kafka-test:9092"},
    )
    assert result.exit_code == 0, result.output
    assert "produced 30 traces" in result.output and "4 malformed" in result.output
    assert "--seed 7" in result.output
    assert configs[0]["bootstrap.servers"] == "kafka-test:9092"
    assert len(fakes[0].sent) > 30


def test_cli_reports_delivery_failure(monkeypatch) -> None:
    monkeypatch.setattr(generate_cli, "Producer", lambda config: FakeProducer(fail_on=3))
    result = CliRunner().invoke(generate_cli.generate, ["--traces", "5", "--bootstrap-servers", "k:1"])
    assert result.exit_code == 1
    assert "TOPIC_AUTHORIZATION_FAILED" in result.output and "broker: k:1" in result.output


def test_cli_refuses_unknown_format() -> None:
    result = CliRunner().invoke(generate_cli.generate, ["--format", "xml"])
    assert result.exit_code == 2
