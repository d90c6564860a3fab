"""OTLP -> span mapping (processors/otlp.py), on bytes made by the real OTel SDK."""

from __future__ import annotations

import json
import random
from datetime import datetime, timedelta, timezone
from typing import Any

import pytest
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest
from opentelemetry.proto.common.v1.common_pb2 import AnyValue

from processors.otlp import any_value_text, spans_from_otlp
from schemas.codec import SerializationError, decode, encode, encode_json
from schemas.samples import sample
from tests.otel_batches import T0, SpanSpec, combine, otlp_agent_trace, otlp_request


def one(attributes: dict[str, Any], resource: dict[str, Any] | None = None, **spec: Any) -> dict[str, Any]:
    """The single span record for one SDK span with ``attributes``."""
    data, _ = otlp_request([SpanSpec("op", attributes, **spec)], resource=resource or {"service.name": "svc"})
    [span] = spans_from_otlp(data)
    return span


def raw_request(**span_fields: Any) -> ExportTraceServiceRequest:
    """A hand-built request, for what the SDK refuses to emit (bad ids, kvlists, bytes)."""
    req = ExportTraceServiceRequest()
    fields = {
        "trace_id": bytes.fromhex("4bf92f3577b34da6a3ce929d0e0e4736"),
        "span_id": bytes.fromhex("00f067aa0ba902b7"),
        "name": "raw",
        "start_time_unix_nano": 1_748_779_200_000_000_000,
        "end_time_unix_nano": 1_748_779_201_000_000_000,
        **span_fields,
    }
    req.resource_spans.add().scope_spans.add().spans.add(**fields)
    return req


def assert_encodes(spans: list[dict[str, Any]]) -> None:
    for span in spans:
        assert decode(encode("span", span), "span") == span


# -- whole traces -------------------------------------------------------------


@pytest.mark.parametrize("legacy", [False, True])
@pytest.mark.parametrize("error", [False, True])
def test_agent_trace_matches_expected_facts(legacy: bool, error: bool) -> None:
    data, expected = otlp_agent_trace("support-bot", 3, legacy_names=legacy, error=error)
    spans = spans_from_otlp(data)
    assert len(spans) == len(expected) == 6  # agent, 3 chats, 2 tools
    by_id = {s["span_id"]: s for s in spans}
    for facts in expected:
        got = by_id[facts["span_id"]]
        assert {k: got[k] for k in facts} == facts
    assert_encodes(spans)


@pytest.mark.parametrize("error", [False, True])
def test_current_and_legacy_names_map_to_identical_records(error: bool) -> None:
    current = spans_from_otlp(otlp_agent_trace("p", 3, error=error)[0])
    legacy = spans_from_otlp(otlp_agent_trace("p", 3, legacy_names=True, error=error)[0])
    assert current == legacy


def test_several_resources_in_one_message_keep_their_own_project() -> None:
    a, exp_a = otlp_agent_trace("alpha", 1, seed=1)
    b, exp_b = otlp_agent_trace("beta", 2, seed=2)
    spans = spans_from_otlp(combine(a, b))
    assert [s["project"] for s in spans] == ["alpha"] * len(exp_a) + ["beta"] * len(exp_b)
    assert {s["trace_id"] for s in spans} == {exp_a[0]["trace_id"], exp_b[0]["trace_id"]}


def test_every_record_is_complete_and_in_schema_field_order() -> None:
    spans = spans_from_otlp(otlp_agent_trace("p", 2)[0])
    assert all(list(s) == list(sample("span")) for s in spans)


# -- ids, times, status ---------------------------------------------------------


def test_ids_are_lowercase_hex_and_root_has_no_parent() -> None:
    data, ids = otlp_request([SpanSpec("root"), SpanSpec("child", parent=0)], seed=7)
    root, child = spans_from_otlp(data)[::-1]  # the child ends (and is exported) first
    assert root["parent_span_id"] is None
    assert child["parent_span_id"] == root["span_id"] == ids[0]["span_id"]
    for s in (root, child):
        assert len(s["trace_id"]) == 32 and len(s["span_id"]) == 16
        assert s["trace_id"] == s["trace_id"].lower()
        int(s["trace_id"], 16), int(s["span_id"], 16)


def test_times_are_utc_datetimes_truncated_to_microseconds() -> None:
    # otlp_request adds 789 ns to every timestamp; llmpulse keeps microseconds.
    span = one({}, start_us=1_500_001, duration_us=250_333)
    assert span["start_time"] == T0 + timedelta(microseconds=1_500_001)
    assert span["end_time"] == T0 + timedelta(microseconds=1_750_334)
    assert span["start_time"].tzinfo is timezone.utc


def test_time_to_first_chunk_gives_first_token_time() -> None:
    span = one({"gen_ai.response.time_to_first_chunk": 0.391204}, duration_us=1_000_000)
    assert span["first_token_time"] - span["start_time"] == timedelta(microseconds=391_204)
    assert "gen_ai.response.time_to_first_chunk" not in span["attributes"]


@pytest.mark.parametrize("seconds", [-0.1, 5.0, float("inf"), 1e300])
def test_time_to_first_chunk_outside_the_span_is_kept_raw(seconds: float) -> None:
    span = one({"gen_ai.response.time_to_first_chunk": seconds}, duration_us=1_000_000)
    assert span["first_token_time"] is None
    assert span["attributes"]["gen_ai.response.time_to_first_chunk"] == str(seconds)


@pytest.mark.parametrize(
    "status, expected",
    [(None, ("unset", None)), (("ok", None), ("ok", None)), (("error", "boom"), ("error", "boom"))],
)
def test_status(status: Any, expected: tuple) -> None:
    span = one({}, status=status)
    assert (span["status"], span["status_message"]) == expected


def test_error_type_from_error_type_attribute_beats_exception_event() -> None:
    span = one({"error.type": "rate_limit"}, status=("error", "429"), exception=ValueError("x"))
    assert span["error_type"] == "rate_limit"
    assert "error.type" not in span["attributes"]


def test_error_type_and_message_from_exception_event() -> None:
    class RateLimitError(Exception):
        pass

    span = one({}, status=("error", None), exception=RateLimitError("slow down"))
    assert span["error_type"].endswith("RateLimitError")
    assert span["status_message"] == "slow down"  # the status had no description


def test_handled_exception_sets_error_type_but_not_status() -> None:
    span = one({}, exception=KeyError("k"))
    assert (span["status"], span["status_message"], span["error_type"]) == ("unset", None, "KeyError")


# -- resource attributes and project ----------------------------------------------


def test_resource_attributes_map_and_the_rest_are_kept() -> None:
    span = one(
        {},
        resource={
            "service.name": "support-api",
            "deployment.environment.name": "staging",
            "deployment.environment": "old-name-loses",
            "host.name": "web-1",
        },
    )
    assert (span["service_name"], span["environment"], span["project"]) == ("support-api", "staging", "support-api")
    assert span["attributes"]["host.name"] == "web-1"
    assert span["attributes"]["deployment.environment"] == "old-name-loses"
    assert "service.name" not in span["attributes"]
    assert span["attributes"]["otel.scope.name"] == "llmpulse.tests"


@pytest.mark.parametrize(
    "resource, attributes, project",
    [
        ({"service.name": "api", "llmpulse.project": "res-proj"}, {}, "res-proj"),
        ({"service.name": "api", "llmpulse.project": "res-proj"}, {"llmpulse.project": "span-proj"}, "span-proj"),
        ({"service.name": "api"}, {}, "api"),
        ({"service.name": "unknown_service:python"}, {}, "default"),
        ({"host.name": "h"}, {}, "default"),
    ],
)
def test_project_resolution(resource: dict, attributes: dict, project: str) -> None:
    span = one(attributes, resource=resource)
    assert span["project"] == project
    assert "llmpulse.project" not in span["attributes"]


def test_span_attribute_overrides_resource_for_the_same_field() -> None:
    span = one({"user.id": "span-user"}, resource={"service.name": "s", "enduser.id": "res-user"})
    assert span["user_id"] == "span-user"
    assert span["attributes"]["enduser.id"] == "res-user"  # the loser stays visible


# -- GenAI fields -----------------------------------------------------------------

CURRENT = {
    "gen_ai.provider.name": "anthropic",
    "gen_ai.operation.name": "chat",
    "gen_ai.request.model": "claude-sonnet-4",
    "gen_ai.response.model": "claude-sonnet-4-20250514",
    "gen_ai.response.id": "msg_01",
    "gen_ai.response.finish_reasons": ("end_turn",),
    "gen_ai.request.temperature": 0.7,
    "gen_ai.request.max_tokens": 1024,
    "gen_ai.usage.input_tokens": 1200,
    "gen_ai.usage.output_tokens": 88,
    "gen_ai.usage.cache_read.input_tokens": 1000,
    "gen_ai.usage.cache_creation.input_tokens": 150,
    "gen_ai.conversation.id": "conv-1",
    "user.id": "u-1",
    "gen_ai.agent.name": "helper",
    "llmpulse.prompt_version": "v12",
    "llmpulse.cost_usd": 0.0123,
}
LEGACY = {
    "gen_ai.system": "anthropic",
    "gen_ai.operation.name": "chat",
    "gen_ai.request.model": "claude-sonnet-4",
    "gen_ai.response.model": "claude-sonnet-4-20250514",
    "gen_ai.response.id": "msg_01",
    "gen_ai.response.finish_reasons": ("end_turn",),
    "gen_ai.request.temperature": 0.7,
    "gen_ai.request.max_tokens": 1024,
    "gen_ai.usage.prompt_tokens": 1200,
    "gen_ai.usage.completion_tokens": 88,
    "gen_ai.usage.cache_read_input_tokens": 1000,
    "gen_ai.usage.cache_creation_input_tokens": 150,
    "session.id": "conv-1",
    "enduser.id": "u-1",
    "gen_ai.agent.name": "helper",
    "gen_ai.prompt.version": "v12",
    "gen_ai.usage.cost": 0.0123,
}
FIELDS = {
    "provider": "anthropic",
    "operation": "chat",
    "kind": "llm",
    "request_model": "claude-sonnet-4",
    "response_model": "claude-sonnet-4-20250514",
    "response_id": "msg_01",
    "finish_reasons": ["end_turn"],
    "temperature": 0.7,
    "max_tokens": 1024,
    "input_tokens": 1200,
    "output_tokens": 88,
    "cache_read_input_tokens": 1000,
    "cache_creation_input_tokens": 150,
    "session_id": "conv-1",
    "user_id": "u-1",
    "agent_name": "helper",
    "prompt_version": "v12",
    "cost_usd": 0.0123,
}


@pytest.mark.parametrize("attributes", [CURRENT, LEGACY], ids=["current", "legacy"])
def test_genai_fields_from_current_and_legacy_names(attributes: dict) -> None:
    span = one(attributes)
    assert {k: span[k] for k in FIELDS} == FIELDS
    assert set(span["attributes"]) == {"telemetry.sdk.language", "otel.scope.name", "otel.scope.version"}


def test_openinference_fields() -> None:
    span = one(
        {
            "openinference.span.kind": "LLM",
            "llm.model_name": "gpt-4o",
            "llm.provider": "openai",
            "llm.token_count.prompt": 30,
            "llm.token_count.completion": 7,
            "llm.token_count.prompt_details.cache_read": 10,
            "llm.cost.total": 0.002,
            "input.value": "hi",
            "output.value": "hello",
            "session.id": "s",
            "llm.invocation_parameters": '{"temperature": 0}',
        }
    )
    assert (span["kind"], span["request_model"], span["provider"]) == ("llm", "gpt-4o", "openai")
    assert (span["input_tokens"], span["output_tokens"], span["cache_read_input_tokens"]) == (30, 7, 10)
    assert (span["input"], span["output"], span["cost_usd"], span["session_id"]) == ("hi", "hello", 0.002, "s")
    assert span["attributes"]["openinference.span.kind"] == "LLM"  # kind hints stay
    assert span["attributes"]["llm.invocation_parameters"] == '{"temperature": 0}'


def test_current_name_wins_and_the_older_one_stays_in_attributes() -> None:
    span = one({"gen_ai.usage.input_tokens": 10, "gen_ai.usage.prompt_tokens": 11})
    assert span["input_tokens"] == 10
    assert span["attributes"]["gen_ai.usage.prompt_tokens"] == "11"


def test_numbers_in_other_spellings_are_accepted_and_garbage_kept() -> None:
    span = one(
        {
            "gen_ai.usage.input_tokens": "812",
            "gen_ai.usage.output_tokens": 12.0,
            "gen_ai.request.temperature": 1,
            "gen_ai.request.max_tokens": "n/a",
        }
    )
    assert (span["input_tokens"], span["output_tokens"], span["temperature"]) == (812, 12, 1.0)
    assert span["max_tokens"] is None
    assert span["attributes"]["gen_ai.request.max_tokens"] == "n/a"
    assert_encodes([span])


@pytest.mark.parametrize(
    "key, value, field",
    [
        ("gen_ai.usage.input_tokens", -5, "input_tokens"),
        ("gen_ai.request.max_tokens", -1, "max_tokens"),
        ("gen_ai.usage.output_tokens", 2**70, "output_tokens"),
        ("llmpulse.cost_usd", -0.01, "cost_usd"),
        ("llmpulse.cost_usd", float("nan"), "cost_usd"),
        ("llmpulse.cost_usd", 5e12, "cost_usd"),
    ],
)
def test_values_the_spans_table_would_reject_stay_in_attributes(key: str, value: Any, field: str) -> None:
    if isinstance(value, int) and value > 2**63:
        value = str(value)  # the SDK cannot carry it as an int
    span = one({key: value})
    assert span[field] is None
    assert span["attributes"][key] == str(value)


def test_finish_reasons_as_json_string() -> None:
    assert one({"gen_ai.response.finish_reasons": '["stop","length"]'})["finish_reasons"] == ["stop", "length"]


def test_experiments_from_prefixed_attributes() -> None:
    span = one({"llmpulse.experiment.prompt-tone": "friendly"})
    assert span["experiments"] == {"prompt-tone": "friendly"}
    assert not any(k.startswith("llmpulse.") for k in span["attributes"])


# -- kinds --------------------------------------------------------------------------


@pytest.mark.parametrize(
    "attributes, kind",
    [
        ({"gen_ai.operation.name": "chat"}, "llm"),
        ({"gen_ai.operation.name": "text_completion"}, "llm"),
        ({"gen_ai.operation.name": "generate_content"}, "llm"),
        ({"gen_ai.operation.name": "embeddings"}, "embedding"),
        ({"gen_ai.operation.name": "execute_tool"}, "tool"),
        ({"gen_ai.operation.name": "invoke_agent"}, "agent"),
        ({"gen_ai.operation.name": "create_agent"}, "agent"),
        ({"gen_ai.operation.name": "retrieval"}, "retrieval"),
        ({"openinference.span.kind": "LLM"}, "llm"),
        ({"openinference.span.kind": "TOOL"}, "tool"),
        ({"openinference.span.kind": "RETRIEVER"}, "retrieval"),
        ({"openinference.span.kind": "AGENT"}, "agent"),
        ({"openinference.span.kind": "CHAIN"}, "chain"),
        ({"openinference.span.kind": "EMBEDDING"}, "embedding"),
        ({"openinference.span.kind": "RERANKER"}, "other"),
        ({"openinference.span.kind": "GUARDRAIL"}, "other"),
        ({"openinference.span.kind": "EVALUATOR"}, "other"),
        ({"traceloop.span.kind": "workflow"}, "chain"),
        ({"traceloop.span.kind": "task"}, "chain"),
        ({"traceloop.span.kind": "agent"}, "agent"),
        ({"traceloop.span.kind": "tool"}, "tool"),
        ({"llm.request.type": "chat"}, "llm"),
        ({"llm.request.type": "embedding"}, "embedding"),
        # gen_ai.operation.name beats the other conventions; unknown values fall through
        ({"gen_ai.operation.name": "embeddings", "openinference.span.kind": "LLM"}, "embedding"),
        ({"gen_ai.operation.name": "custom_op", "traceloop.span.kind": "task"}, "chain"),
        ({"openinference.span.kind": "CHAIN", "traceloop.span.kind": "agent"}, "chain"),
        # no convention: inferred, else other
        ({"gen_ai.tool.name": "search"}, "tool"),
        ({"gen_ai.request.model": "gpt-4o"}, "llm"),
        ({"gen_ai.agent.name": "a"}, "agent"),
        ({"http.route": "/x"}, "other"),
        ({"openinference.span.kind": "UNKNOWN"}, "other"),
    ],
)
def test_kind(attributes: dict, kind: str) -> None:
    assert one(attributes)["kind"] == kind


# -- payloads ------------------------------------------------------------------------


def test_payloads_from_current_attributes() -> None:
    span = one({"gen_ai.input.messages": '[{"role":"user"}]', "gen_ai.output.messages": '[{"role":"assistant"}]'})
    assert (span["input"], span["output"]) == ('[{"role":"user"}]', '[{"role":"assistant"}]')


def test_payloads_from_older_attributes_and_events() -> None:
    span = one({"gen_ai.prompt": "p", "gen_ai.completion": "c"})
    assert (span["input"], span["output"]) == ("p", "c")
    span = one(
        {},
        events=[
            ("gen_ai.content.prompt", {"gen_ai.prompt": "ep"}),
            ("gen_ai.content.completion", {"gen_ai.completion": "ec"}),
        ],
    )
    assert (span["input"], span["output"]) == ("ep", "ec")
    span = one(
        {},
        events=[
            (
                "gen_ai.client.inference.operation.details",
                {"gen_ai.input.messages": "in", "gen_ai.output.messages": "out"},
            )
        ],
    )
    assert (span["input"], span["output"]) == ("in", "out")


def test_openllmetry_indexed_messages_are_reassembled() -> None:
    span = one(
        {
            "gen_ai.prompt.0.role": "system",
            "gen_ai.prompt.0.content": "be brief",
            "gen_ai.prompt.1.role": "user",
            "gen_ai.prompt.1.content": "hi",
            "gen_ai.completion.0.role": "assistant",
            "gen_ai.completion.0.content": "hello",
            "gen_ai.completion.0.finish_reason": "stop",
            "gen_ai.prompt.name": "greeting",  # a real attribute, not a message part
        }
    )
    assert json.loads(span["input"]) == [{"role": "system", "content": "be brief"}, {"role": "user", "content": "hi"}]
    assert json.loads(span["output"]) == [{"role": "assistant", "content": "hello", "finish_reason": "stop"}]
    assert span["attributes"]["gen_ai.prompt.name"] == "greeting"
    assert not any(k.startswith(("gen_ai.prompt.0", "gen_ai.completion.")) for k in span["attributes"])


def test_current_payload_beats_event_and_event_is_dropped() -> None:
    span = one({"gen_ai.input.messages": "new"}, events=[("gen_ai.content.prompt", {"gen_ai.prompt": "old"})])
    assert span["input"] == "new"


def test_event_payload_beats_older_attribute_which_stays_visible() -> None:
    span = one(
        {"input.value": "openinference"},
        events=[("gen_ai.client.inference.operation.details", {"gen_ai.input.messages": "semconv"})],
    )
    assert span["input"] == "semconv"
    assert span["attributes"]["input.value"] == "openinference"


def test_tool_arguments_and_result_are_the_payloads_of_a_tool_span() -> None:
    span = one({"gen_ai.tool.name": "search", "gen_ai.tool.call.arguments": "{}", "gen_ai.tool.call.result": "[]"})
    assert (span["kind"], span["input"], span["output"]) == ("tool", "{}", "[]")


# -- attributes map -------------------------------------------------------------------


def test_unknown_attributes_are_kept_as_strings() -> None:
    span = one({"http.route": "/v1/chat", "retries": 2, "cached": True, "top_p": 0.9, "tags": ("a", "b")})
    attrs = span["attributes"]
    assert (attrs["http.route"], attrs["retries"], attrs["cached"], attrs["top_p"]) == ("/v1/chat", "2", "true", "0.9")
    assert attrs["tags"] == '["a","b"]'


def test_any_value_kinds_the_sdk_cannot_emit() -> None:
    req = raw_request()
    span = req.resource_spans[0].scope_spans[0].spans[0]
    kv = span.attributes.add(key="kv")
    inner = kv.value.kvlist_value.values.add(key="a")
    inner.value.array_value.values.add(int_value=1)
    inner.value.array_value.values.add(double_value=float("nan"))
    span.attributes.add(key="blob").value.bytes_value = b"\x00\xff"
    span.attributes.add(key="empty")  # AnyValue with nothing set
    span.attributes.add(key="unicode").value.string_value = "héllo ✓"
    [rec] = spans_from_otlp(req.SerializeToString())
    assert rec["attributes"]["kv"] == '{"a":[1,"nan"]}'
    assert rec["attributes"]["blob"] == "AP8="
    assert "empty" not in rec["attributes"]
    assert rec["attributes"]["unicode"] == "héllo ✓"
    assert_encodes([rec])


def test_any_value_text_of_nothing_is_none() -> None:
    assert any_value_text(AnyValue()) is None


# -- bad input ------------------------------------------------------------------------


@pytest.mark.parametrize(
    "data",
    [
        b"",
        b"not protobuf",
        b"\xff\xff\xff\xff",
        b'{"resourceSpans": []}',
        encode("span", sample("span")),
        encode_json("span", sample("span")),
        otlp_agent_trace("p", 1)[0][:-7],  # truncated
    ],
    ids=["empty", "text", "ff", "otlp-json", "avro-span", "json-span", "truncated"],
)
def test_garbage_raises_serialization_error(data: bytes) -> None:
    with pytest.raises(SerializationError) as info:
        spans_from_otlp(data)
    assert info.value.field == "otlp"
    assert "ExportTraceServiceRequest" in str(info.value) or "empty" in str(info.value)


@pytest.mark.parametrize(
    "fields, reason",
    [
        ({"trace_id": b"\x01\x02\x03"}, "trace_id must be 16"),
        ({"trace_id": bytes(16)}, "trace_id must be 16 non-zero"),
        ({"span_id": b""}, "span_id must be 8"),
        ({"parent_span_id": b"\x01"}, "parent_span_id must be 8"),
        ({"end_time_unix_nano": 0}, "required"),
        ({"end_time_unix_nano": 1_748_779_199_000_000_000}, "ends before it starts"),
    ],
)
def test_one_bad_span_fails_the_whole_batch_and_is_named(fields: dict, reason: str) -> None:
    good, _ = otlp_agent_trace("p", 2)
    bad = raw_request(name="the-bad-one", **fields).SerializeToString()
    with pytest.raises(SerializationError) as info:
        spans_from_otlp(combine(good, bad))
    assert reason in str(info.value)
    assert "'the-bad-one'" in str(info.value)
    assert info.value.field == "otlp.resource_spans[1].scope_spans[0].spans[0]"


def test_unknown_status_code_reads_as_unset() -> None:
    req = raw_request()
    req.resource_spans[0].scope_spans[0].spans[0].status.code = 7
    [rec] = spans_from_otlp(req.SerializeToString())
    assert rec["status"] == "unset"


def test_fuzzed_input_raises_only_serialization_error_or_gives_valid_spans() -> None:
    # Corrupted real messages must never crash with anything but the poison-
    # message error, and whatever they decode to must still fit the schema.
    rng = random.Random(42)
    good, _ = otlp_agent_trace("p", 2, error=True)
    outcomes = {"ok": 0, "error": 0}
    for i in range(1500):
        data = bytearray(good)
        if i % 3 == 0:
            data = data[: rng.randrange(1, len(data))]
        for _ in range(rng.randint(1, 4)):
            data[rng.randrange(len(data))] = rng.randrange(256)
        if i % 5 == 0:
            data = bytearray(rng.randbytes(rng.randint(1, 64)))
        try:
            spans = spans_from_otlp(bytes(data))
        except SerializationError:
            outcomes["error"] += 1
            continue
        outcomes["ok"] += 1
        for span in spans:
            encode("span", span)
    assert outcomes["ok"] and outcomes["error"]


def test_accepts_bytearray_and_memoryview() -> None:
    data, _ = otlp_agent_trace("p", 1)
    assert spans_from_otlp(bytearray(data)) == spans_from_otlp(memoryview(data)) == spans_from_otlp(data)


def test_times_far_from_now_still_encode() -> None:
    req = raw_request(start_time_unix_nano=1, end_time_unix_nano=2**64 - 1)
    [rec] = spans_from_otlp(req.SerializeToString())
    assert rec["end_time"] > datetime(2500, 1, 1, tzinfo=timezone.utc)
    assert_encodes([rec])
