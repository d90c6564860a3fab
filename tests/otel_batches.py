"""Realistic OTLP trace batches, made with the real OpenTelemetry SDK.

The bytes are what the Collector's Kafka exporter (``encoding: otlp_proto``)
would put in one message: an ``ExportTraceServiceRequest`` encoded by the
SDK's own OTLP encoder from spans the SDK's tracer recorded. Unit tests feed
them to :func:`processors.otlp.spans_from_otlp`; end-to-end tests produce them
to ``otlp_spans`` and use the returned expected facts to check what arrives.

Everything is deterministic: ids come from ``seed``, times from ``start``.
"""

from __future__ import annotations

import json
import random
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from typing import Any, Mapping, Sequence

from opentelemetry import trace
from opentelemetry.exporter.otlp.proto.common.trace_encoder import encode_spans
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.sdk.trace.id_generator import IdGenerator
from opentelemetry.trace import Status, StatusCode

__all__ = ["T0", "SpanSpec", "otlp_request", "otlp_agent_trace", "combine"]

#: Default start of every generated trace.
T0 = datetime(2025, 6, 1, 12, 0, 0, tzinfo=timezone.utc)
_EPOCH = datetime(1970, 1, 1, tzinfo=timezone.utc)
# Sub-microsecond noise on every timestamp: llmpulse keeps microseconds, so
# expected times are the whole microseconds and the nanos must be dropped.
_NANO_NOISE = 789


class _SeededIds(IdGenerator):
    """Reproducible trace and span ids (the SDK default is os.urandom-like)."""

    def __init__(self, seed: int) -> None:
        self._rng = random.Random(seed)

    def generate_span_id(self) -> int:
        return self._rng.getrandbits(64) or 1

    def generate_trace_id(self) -> int:
        return self._rng.getrandbits(128) or 1


def _ns(at: datetime) -> int:
    delta = at - _EPOCH
    return (delta.days * 86_400 + delta.seconds) * 1_000_000_000 + delta.microseconds * 1_000 + _NANO_NOISE


@dataclass(frozen=True)
class SpanSpec:
    """One span for :func:`otlp_request`.

    ``parent`` is the index of an earlier spec (None: root). Times are
    microsecond offsets from the request's ``start``. ``status`` is
    ``("ok" | "error", description)``; ``events`` are ``(name, attributes)``;
    ``exception`` is recorded with ``Span.record_exception``.

    Examples
    --------
    >>> SpanSpec("chat gpt-4o", {"gen_ai.operation.name": "chat"}, parent=0).duration_us
    1000
    """

    name: str
    attributes: Mapping[str, Any] = field(default_factory=dict)
    parent: int | None = None
    start_us: int = 0
    duration_us: int = 1_000
    status: tuple[str, str | None] | None = None
    events: Sequence[tuple[str, Mapping[str, Any]]] = ()
    exception: BaseException | None = None


def otlp_request(
    specs: Sequence[SpanSpec],
    *,
    resource: Mapping[str, Any] | None = None,
    scope: tuple[str, str] = ("llmpulse.tests", "0.1.0"),
    seed: int = 0,
    start: datetime = T0,
) -> tuple[bytes, list[dict[str, Any]]]:
    """Record ``specs`` with the SDK and encode them as one OTLP request.

    Returns
    -------
    bytes, list of dict
        The ``ExportTraceServiceRequest`` bytes, and per spec (in ``specs``
        order) its ``trace_id``, ``span_id``, ``parent_span_id``, ``name``,
        ``start_time`` and ``end_time`` as llmpulse must report them.

    Examples
    --------
    >>> data, ids = otlp_request([SpanSpec("root"), SpanSpec("child", parent=0)])
    >>> ids[1]["parent_span_id"] == ids[0]["span_id"], len(ids[0]["trace_id"])
    (True, 32)
    """
    exporter = InMemorySpanExporter()
    provider = TracerProvider(
        resource=Resource({"telemetry.sdk.language": "python", **(resource or {})}),
        id_generator=_SeededIds(seed),
        shutdown_on_exit=False,
    )
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    tracer = provider.get_tracer(scope[0], scope[1])
    started: list[trace.Span] = []
    facts: list[dict[str, Any]] = []
    for spec in specs:
        begin = start + timedelta(microseconds=spec.start_us)
        end = begin + timedelta(microseconds=spec.duration_us)
        context = None if spec.parent is None else trace.set_span_in_context(started[spec.parent])
        span = tracer.start_span(
            spec.name, context=context, attributes=dict(spec.attributes), start_time=_ns(begin)
        )
        for name, attributes in spec.events:
            span.add_event(name, dict(attributes), timestamp=_ns(begin))
        if spec.exception is not None:
            span.record_exception(spec.exception, timestamp=_ns(end))
        if spec.status is not None:
            code = StatusCode.ERROR if spec.status[0] == "error" else StatusCode.OK
            span.set_status(Status(code, spec.status[1] if code is StatusCode.ERROR else None))
        started.append(span)
        ctx = span.get_span_context()
        parent = None if spec.parent is None else facts[spec.parent]["span_id"]
        facts.append(
            {
                "trace_id": format(ctx.trace_id, "032x"),
                "span_id": format(ctx.span_id, "016x"),
                "parent_span_id": parent,
                "name": spec.name,
                "start_time": begin,
                "end_time": end,
            }
        )
    # Children end before their parents, as they would in a real program.
    for spec, span in reversed(list(zip(specs, started))):
        span.end(end_time=_ns(start + timedelta(microseconds=spec.start_us + spec.duration_us)))
    data = encode_spans(exporter.get_finished_spans()).SerializeToString()
    provider.shutdown()
    return data, facts


def combine(*requests: bytes) -> bytes:
    """Several requests as one (what an exporter batch without per-trace split looks like).

    Protobuf merges concatenated messages by appending repeated fields, so
    the concatenation is one request holding every ``resource_spans``.

    Examples
    --------
    >>> a, _ = otlp_request([SpanSpec("a")], seed=1)
    >>> b, _ = otlp_request([SpanSpec("b")], seed=2)
    >>> from processors.otlp import spans_from_otlp
    >>> [s["name"] for s in spans_from_otlp(combine(a, b))]
    ['a', 'b']
    """
    return b"".join(requests)


def _messages(role: str, text: str) -> str:
    return json.dumps([{"role": role, "parts": [{"type": "text", "content": text}]}])


def otlp_agent_trace(
    project: str,
    n_llm_calls: int,
    legacy_names: bool = False,
    error: bool = False,
    *,
    seed: int = 0,
    start: datetime = T0,
    user_id: str = "user-1042",
    environment: str = "prod",
    provider: str = "openai",
    model: str = "gpt-4o-mini",
    agent: str = "support-agent",
) -> tuple[bytes, list[dict[str, Any]]]:
    """One agent trace: an ``invoke_agent`` root, ``n_llm_calls`` chat spans, a tool call between each two.

    Parameters
    ----------
    project
        Set as resource attribute ``llmpulse.project``; ``service.name`` is
        ``<project>-api``.
    n_llm_calls
        Number of chat spans (>= 1); ``n_llm_calls - 1`` tool spans sit between them.
    legacy_names
        Use the older GenAI names (``gen_ai.system``, ``gen_ai.usage.prompt_tokens``
        / ``completion_tokens``, prompt and completion as ``gen_ai.content.*``
        span events, ``session.id``, ``enduser.id``, ``deployment.environment``)
        instead of the current ones. The expected facts are the same either way.
    error
        The last chat call fails with a ``TimeoutError`` (status error, an
        ``exception`` event) and so does the agent span.

    Returns
    -------
    bytes, list of dict
        The request bytes, and for every span (root first, then in time order)
        the span record fields llmpulse must produce: ids, name, kind, times,
        status, project, service and GenAI fields, payloads, error_type.

    Examples
    --------
    >>> data, expected = otlp_agent_trace("support-bot", 2)
    >>> [e["kind"] for e in expected]
    ['agent', 'llm', 'tool', 'llm']
    >>> from processors.otlp import spans_from_otlp
    >>> got = {s["span_id"]: s for s in spans_from_otlp(data)}
    >>> all(got[e["span_id"]][k] == v for e in expected for k, v in e.items())
    True
    """
    if n_llm_calls < 1:
        raise ValueError("n_llm_calls must be >= 1")
    session = f"conv-{seed:04d}"
    env_key = "deployment.environment" if legacy_names else "deployment.environment.name"
    resource = {
        "service.name": f"{project}-api",
        "service.version": "1.4.2",
        "llmpulse.project": project,
        env_key: environment,
    }
    ident = (
        {"session.id": session, "enduser.id": user_id}
        if legacy_names
        else {"gen_ai.conversation.id": session, "user.id": user_id}
    )
    provider_key = "gen_ai.system" if legacy_names else "gen_ai.provider.name"
    common = {
        "service_name": f"{project}-api",
        "project": project,
        "environment": environment,
        "user_id": user_id,
        "session_id": session,
    }

    specs: list[SpanSpec] = []
    expected: list[dict[str, Any]] = []
    step_us = 1_000_000  # one second per chat call, 200 ms per tool call
    tool_us = 200_000
    total_us = n_llm_calls * step_us + (n_llm_calls - 1) * tool_us + 50_000
    specs.append(
        SpanSpec(
            f"invoke_agent {agent}",
            {
                "gen_ai.operation.name": "invoke_agent",
                "gen_ai.agent.name": agent,
                provider_key: provider,
                **ident,
            },
            start_us=0,
            duration_us=total_us,
            status=("error", "agent run failed") if error else ("ok", None),
            exception=TimeoutError("Request timed out.") if error else None,
        )
    )
    expected.append(
        {
            "name": f"invoke_agent {agent}",
            "kind": "agent",
            "operation": "invoke_agent",
            "agent_name": agent,
            "provider": provider,
            "status": "error" if error else "ok",
            "status_message": "agent run failed" if error else None,
            "error_type": "TimeoutError" if error else None,
            **common,
        }
    )
    at = 25_000
    for i in range(n_llm_calls):
        last = i == n_llm_calls - 1
        failed = error and last
        question = f"Step {i}: what is the weather in Paris?"
        answer = "It is sunny in Paris." if last else "Calling get_weather."
        reasons = ["stop"] if last else ["tool_calls"]
        in_tokens, out_tokens = 500 + 100 * i, 40 + 10 * i
        attrs: dict[str, Any] = {
            "gen_ai.operation.name": "chat",
            provider_key: provider,
            "gen_ai.request.model": model,
            "gen_ai.request.temperature": 0.2,
            "gen_ai.request.max_tokens": 512,
            "gen_ai.request.top_p": 1.0,
            "server.address": "api.openai.com",
            "gen_ai.agent.name": agent,
            **ident,
        }
        events: list[tuple[str, dict[str, Any]]] = []
        if legacy_names:
            attrs["gen_ai.usage.prompt_tokens"] = in_tokens
            events.append(("gen_ai.content.prompt", {"gen_ai.prompt": _messages("user", question)}))
        else:
            attrs["gen_ai.usage.input_tokens"] = in_tokens
            attrs["gen_ai.input.messages"] = _messages("user", question)
        if not failed:
            attrs["gen_ai.response.model"] = f"{model}-2024-07-18"
            attrs["gen_ai.response.id"] = f"chatcmpl-{seed:04d}{i:03d}"
            attrs["gen_ai.response.finish_reasons"] = reasons
            attrs["gen_ai.usage.cache_read.input_tokens"] = 256 if i else 0
            if legacy_names:
                attrs["gen_ai.usage.completion_tokens"] = out_tokens
                events.append(("gen_ai.content.completion", {"gen_ai.completion": _messages("assistant", answer)}))
            else:
                attrs["gen_ai.usage.output_tokens"] = out_tokens
                attrs["gen_ai.output.messages"] = _messages("assistant", answer)
        elif not legacy_names:
            attrs["error.type"] = "TimeoutError"
        specs.append(
            SpanSpec(
                f"chat {model}",
                attrs,
                parent=0,
                start_us=at,
                duration_us=step_us - 1_000,
                status=("error", "Request timed out.") if failed else None,
                events=events,
                exception=TimeoutError("Request timed out.") if failed else None,
            )
        )
        expected.append(
            {
                "name": f"chat {model}",
                "kind": "llm",
                "operation": "chat",
                "provider": provider,
                "request_model": model,
                "response_model": None if failed else f"{model}-2024-07-18",
                "response_id": None if failed else f"chatcmpl-{seed:04d}{i:03d}",
                "finish_reasons": [] if failed else reasons,
                "temperature": 0.2,
                "max_tokens": 512,
                "agent_name": agent,
                "input_tokens": in_tokens,
                "output_tokens": None if failed else out_tokens,
                "cache_read_input_tokens": None if failed else (256 if i else 0),
                "input": _messages("user", question),
                "output": None if failed else _messages("assistant", answer),
                "status": "error" if failed else "unset",
                "status_message": "Request timed out." if failed else None,
                "error_type": "TimeoutError" if failed else None,
                **common,
            }
        )
        at += step_us
        if not last:
            args = json.dumps({"city": "Paris"})
            result = json.dumps({"forecast": "sunny", "temp_c": 24})
            specs.append(
                SpanSpec(
                    "execute_tool get_weather",
                    {
                        "gen_ai.operation.name": "execute_tool",
                        "gen_ai.tool.name": "get_weather",
                        "gen_ai.tool.call.id": f"call_{seed:04d}{i:03d}",
                        "gen_ai.tool.call.arguments": args,
                        "gen_ai.tool.call.result": result,
                        **ident,
                    },
                    parent=0,
                    start_us=at,
                    duration_us=tool_us - 1_000,
                )
            )
            expected.append(
                {
                    "name": "execute_tool get_weather",
                    "kind": "tool",
                    "operation": "execute_tool",
                    "tool_name": "get_weather",
                    "input": args,
                    "output": result,
                    "status": "unset",
                    **common,
                }
            )
            at += tool_us
    data, ids = otlp_request(specs, resource=resource, seed=seed, start=start)
    for facts, id_facts in zip(expected, ids):
        facts.update(id_facts)
    return data, expected
