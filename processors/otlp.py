"""OTLP traces -> llmpulse spans.

The OpenTelemetry Collector's Kafka exporter (``encoding: otlp_proto``) writes
one ``ExportTraceServiceRequest`` per Kafka message. :func:`spans_from_otlp`
turns such a message into ``span`` records (``schemas/avro/span/v1.avsc``):
identifiers, times and status from the OTLP span, typed fields from the
OpenTelemetry GenAI semantic conventions (current and older attribute names)
plus the OpenInference and OpenLLMetry (Traceloop) conventions, and every
attribute it did not map kept as a string in ``attributes``.

Pure: no I/O, no global state; the mapping tables below are the whole policy
(``docs/otlp.md`` renders them as a table).
"""

from __future__ import annotations

import json
import math
from base64 import b64encode
from datetime import datetime, timedelta, timezone
from typing import Any

from google.protobuf.message import DecodeError
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest

from schemas.errors import SerializationError

__all__ = ["spans_from_otlp", "any_value_text"]

_EPOCH = datetime(1970, 1, 1, tzinfo=timezone.utc)
_LONG_MIN, _LONG_MAX = -(2**63), 2**63 - 1
_STATUS = ("unset", "ok", "error")  # OTLP Status.StatusCode 0, 1, 2
_UNKNOWN_SERVICE = "unknown_service"  # SDK default service.name: not a real project
_BAD = object()  # a converter's "wrong type": the attribute stays in ``attributes``

# Attributes set on the resource lose to the same field set on the span: a
# span is the more specific statement (e.g. a per-request user.id).
_RESOURCE_PENALTY = 100


# --------------------------------------------------------------------------
# AnyValue conversion
# --------------------------------------------------------------------------


def _native(v: Any) -> Any:
    """AnyValue -> JSON-ready Python value (for arrays and kvlists)."""
    kind = v.WhichOneof("value")
    if kind == "string_value":
        return v.string_value
    if kind == "int_value":
        return v.int_value
    if kind == "double_value":
        d = v.double_value
        # JSON has no NaN/Infinity; OTLP/JSON spells them as strings too.
        return d if math.isfinite(d) else str(d)
    if kind == "bool_value":
        return v.bool_value
    if kind == "array_value":
        return [_native(x) for x in v.array_value.values]
    if kind == "kvlist_value":
        return {kv.key: _native(kv.value) for kv in v.kvlist_value.values}
    if kind == "bytes_value":
        return b64encode(v.bytes_value).decode("ascii")
    return None


# Compact and unescaped (UTF-8 text stays readable in attributes and payloads);
# one encoder instance, as json.dumps would build a new one per call.
_json = json.JSONEncoder(ensure_ascii=False, separators=(",", ":")).encode


def any_value_text(v: Any) -> str | None:
    """The string stored in ``attributes`` for an OTLP ``AnyValue``.

    Strings as they are; ints and doubles as Python prints them; booleans as
    ``true``/``false`` (JSON spelling); bytes as base64; arrays and kvlists as
    compact JSON. An empty AnyValue (no value set) gives None.

    Parameters
    ----------
    v
        An ``opentelemetry.proto.common.v1.common_pb2.AnyValue``.

    Examples
    --------
    >>> from opentelemetry.proto.common.v1.common_pb2 import AnyValue
    >>> any_value_text(AnyValue(bool_value=True)), any_value_text(AnyValue(double_value=0.5))
    ('true', '0.5')
    >>> arr = AnyValue()
    >>> _ = arr.array_value.values.add(string_value="stop")
    >>> _ = arr.array_value.values.add(int_value=3)
    >>> any_value_text(arr)
    '["stop",3]'
    """
    kind = v.WhichOneof("value")
    if kind == "string_value":
        return v.string_value
    if kind == "int_value":
        return str(v.int_value)
    if kind == "bool_value":
        return "true" if v.bool_value else "false"
    if kind == "double_value":
        return str(v.double_value)
    if kind == "bytes_value":
        return b64encode(v.bytes_value).decode("ascii")
    if kind is None:
        return None
    return _json(_native(v))  # array_value, kvlist_value


# Converters for typed fields: value -> field value; None = empty (attribute
# consumed, field stays null); _BAD = wrong type (attribute kept as text).
# Instrumentations disagree on types (token counts as strings, temperatures
# as ints), so numbers are accepted in any lossless spelling.


def _to_str(v: Any) -> Any:
    kind = v.WhichOneof("value")
    if kind == "string_value":
        return v.string_value or None
    if kind is None:
        return None
    return any_value_text(v)


def _to_int(v: Any) -> Any:
    kind = v.WhichOneof("value")
    if kind == "int_value":
        return v.int_value
    if kind == "double_value":
        d = v.double_value
        return int(d) if d.is_integer() and _LONG_MIN <= d <= _LONG_MAX else _BAD
    if kind == "string_value":
        s = v.string_value.strip()
        if not s:
            return None
        try:
            n = int(s)
        except ValueError:
            return _BAD
        return n if _LONG_MIN <= n <= _LONG_MAX else _BAD
    return None if kind is None else _BAD


def _to_float(v: Any) -> Any:
    kind = v.WhichOneof("value")
    if kind == "double_value":
        return v.double_value
    if kind == "int_value":
        return float(v.int_value)
    if kind == "string_value":
        s = v.string_value.strip()
        if not s:
            return None
        try:
            return float(s)
        except ValueError:
            return _BAD
    return None if kind is None else _BAD


def _to_count(v: Any) -> Any:
    # Token counts and max_tokens: a negative "count" is a bug upstream, and the
    # spans table rejects it (CHECK >= 0); keep it visible, not in the column.
    n = _to_int(v)
    return _BAD if type(n) is int and n < 0 else n


# numeric(18, 9) in the spans table holds < 1e9; anything near that per span
# is a unit mix-up (cents, micro-dollars), not a cost.
_MAX_COST_USD = 1e9


def _to_cost(v: Any) -> Any:
    c = _to_float(v)
    if type(c) is float and not (0.0 <= c < _MAX_COST_USD):
        return _BAD  # also NaN and infinities
    return c


def _to_str_list(v: Any) -> Any:
    kind = v.WhichOneof("value")
    if kind == "array_value":
        out = [any_value_text(x) for x in v.array_value.values]
        return [s for s in out if s is not None]
    if kind == "string_value":
        s = v.string_value
        if s.startswith("["):  # some SDKs can only set strings, so they send JSON
            try:
                items = json.loads(s)
            except ValueError:
                return [s]
            if isinstance(items, list):
                return [i if isinstance(i, str) else _json(i) for i in items]
        return [s] if s else None
    return None if kind is None else _BAD


# --------------------------------------------------------------------------
# Mapping tables: attribute key -> (field, priority, converter, keep)
# Lower priority wins when several names for one field are present; a losing
# name stays in ``attributes`` so nothing is lost. ``keep`` marks attributes
# that only *inform* a field (kind hints) and so also stay in ``attributes``.
# Fields starting with "_" are internal (not span schema fields).
# --------------------------------------------------------------------------

_MAP: dict[str, tuple[str, int, Any, bool]] = {}


def _names(field: str, conv: Any, *keys: str, keep: bool = False) -> None:
    for prio, key in enumerate(keys):
        _MAP[key] = (field, prio, conv, keep)


_names("project", _to_str, "llmpulse.project")
_names("service_name", _to_str, "service.name")
_names("environment", _to_str, "deployment.environment.name", "deployment.environment")
_names("user_id", _to_str, "user.id", "enduser.id", "langfuse.user.id")
_names("session_id", _to_str, "gen_ai.conversation.id", "session.id", "langfuse.session.id")
_names(
    "prompt_version",
    _to_str,
    "llmpulse.prompt_version",
    "gen_ai.prompt.version",
    "traceloop.prompt.version",
    "llm.prompt_template.version",
    "langfuse.observation.prompt.version",
)
_names("operation", _to_str, "gen_ai.operation.name")
_names("provider", _to_str, "gen_ai.provider.name", "gen_ai.system", "llm.provider", "llm.system")
_names("request_model", _to_str, "gen_ai.request.model", "llm.model_name")
_names("response_model", _to_str, "gen_ai.response.model")
_names("response_id", _to_str, "gen_ai.response.id")
_names("finish_reasons", _to_str_list, "gen_ai.response.finish_reasons")
_names("temperature", _to_float, "gen_ai.request.temperature")
_names("max_tokens", _to_count, "gen_ai.request.max_tokens")
_names("tool_name", _to_str, "gen_ai.tool.name", "tool.name")
_names("agent_name", _to_str, "gen_ai.agent.name", "agent.name")
_names(
    "input_tokens", _to_count, "gen_ai.usage.input_tokens", "gen_ai.usage.prompt_tokens", "llm.token_count.prompt"
)
_names(
    "output_tokens",
    _to_count,
    "gen_ai.usage.output_tokens",
    "gen_ai.usage.completion_tokens",
    "llm.token_count.completion",
)
_names(
    "cache_read_input_tokens",
    _to_count,
    "gen_ai.usage.cache_read.input_tokens",
    "gen_ai.usage.cache_read_input_tokens",
    "llm.token_count.prompt_details.cache_read",
)
_names(
    "cache_creation_input_tokens",
    _to_count,
    "gen_ai.usage.cache_creation.input_tokens",
    "gen_ai.usage.cache_creation_input_tokens",
    "llm.token_count.prompt_details.cache_write",
)
_names("cost_usd", _to_cost, "llmpulse.cost_usd", "gen_ai.usage.cost", "llm.cost.total")
_names("error_type", _to_str, "error.type")
_names("_ttfc", _to_float, "gen_ai.response.time_to_first_chunk")  # seconds after start
# Payloads. Priorities leave gaps for the span-event sources (see _EVENT_PAYLOADS).
for _key, _prio in (
    ("gen_ai.input.messages", 0),
    ("gen_ai.prompt", 2),
    ("input.value", 5),  # OpenInference
    ("gen_ai.tool.call.arguments", 6),
    ("traceloop.entity.input", 7),  # OpenLLMetry workflow/task spans
):
    _MAP[_key] = ("input", _prio, _to_str, False)
for _key, _prio in (
    ("gen_ai.output.messages", 0),
    ("gen_ai.completion", 2),
    ("output.value", 5),
    ("gen_ai.tool.call.result", 6),
    ("traceloop.entity.output", 7),
):
    _MAP[_key] = ("output", _prio, _to_str, False)

# Kind hints: conventions other than gen_ai.operation.name. They stay in
# ``attributes`` because the mapping is lossy (workflow and task both -> chain).
_OPERATION_KIND = {
    "chat": "llm",
    "text_completion": "llm",
    "generate_content": "llm",
    "embeddings": "embedding",
    "execute_tool": "tool",
    "invoke_agent": "agent",
    "create_agent": "agent",
    "retrieval": "retrieval",
    "invoke_workflow": "chain",
}
_OPENINFERENCE_KIND = {
    "LLM": "llm",
    "TOOL": "tool",
    "RETRIEVER": "retrieval",
    "AGENT": "agent",
    "CHAIN": "chain",
    "EMBEDDING": "embedding",
    "RERANKER": "other",
    "GUARDRAIL": "other",
    "EVALUATOR": "other",
    "PROMPT": "other",
}
_TRACELOOP_KIND = {"workflow": "chain", "task": "chain", "agent": "agent", "tool": "tool"}
_LLM_REQUEST_TYPE_KIND = {"chat": "llm", "completion": "llm", "embedding": "embedding", "rerank": "other"}


def _kind_from(table: dict[str, str]) -> Any:
    def convert(v: Any) -> Any:
        s = v.string_value if v.WhichOneof("value") == "string_value" else ""
        return table.get(s) or table.get(s.upper()) or table.get(s.lower()) or _BAD

    return convert


_MAP["openinference.span.kind"] = ("_kind", 1, _kind_from(_OPENINFERENCE_KIND), True)
_MAP["traceloop.span.kind"] = ("_kind", 2, _kind_from(_TRACELOOP_KIND), True)
_MAP["llm.request.type"] = ("_kind", 3, _kind_from(_LLM_REQUEST_TYPE_KIND), True)

# Span events carrying payloads: event name -> (attribute, field, priority).
_EVENT_PAYLOADS: dict[str, tuple[tuple[str, str, int], ...]] = {
    "gen_ai.client.inference.operation.details": (
        ("gen_ai.input.messages", "input", 1),
        ("gen_ai.output.messages", "output", 1),
    ),
    "gen_ai.content.prompt": (("gen_ai.prompt", "input", 3),),
    "gen_ai.content.completion": (("gen_ai.completion", "output", 3),),
}
_INDEXED_PRIO = 4  # OpenLLMetry gen_ai.prompt.<i>.<part>, gen_ai.completion.<i>.<part>
_EXCEPTION_PRIO = 50  # an exception event's type loses to an explicit error.type
_EXPERIMENT_PREFIX = "llmpulse.experiment."
_SPECIAL_PREFIXES = ("gen_ai.prompt.", "gen_ai.completion.", _EXPERIMENT_PREFIX)

# Every optional span field, in schema order; a record starts as a copy.
_TEMPLATE: dict[str, Any] = dict.fromkeys(
    (
        "trace_id span_id parent_span_id name kind start_time end_time status status_message "
        "error_type project service_name environment user_id session_id prompt_version operation "
        "provider request_model response_model response_id finish_reasons temperature max_tokens "
        "tool_name agent_name input_tokens output_tokens cache_read_input_tokens "
        "cache_creation_input_tokens cost_usd first_token_time input output experiments attributes"
    ).split()
)


# --------------------------------------------------------------------------
# Attribute collection
# --------------------------------------------------------------------------


def _collect(
    kvs: Any, best: dict[str, tuple], attrs: dict[str, str], penalty: int, extras: list | None
) -> None:
    """Sort ``kvs`` into mapped fields (``best``) and kept ``attrs``.

    ``best[field] = (priority, key, value, raw)``; ``extras`` collects the
    prefix-matched keys (indexed prompts, experiments) for the caller.
    """
    lookup = _MAP.get
    for kv in kvs:
        key = kv.key
        spec = lookup(key)
        if spec is None:
            if extras is not None and key.startswith(_SPECIAL_PREFIXES):
                extras.append(kv)
                continue
            text = any_value_text(kv.value)
            if text is not None:
                attrs[key] = text
            continue
        field, prio, conv, keep = spec
        raw = kv.value
        value = conv(raw)
        if value is None:
            continue
        if value is _BAD or keep:
            text = any_value_text(raw)
            if text is not None:
                attrs[key] = text
            if value is _BAD:
                continue
        prio += penalty
        cur = best.get(field)
        if cur is None or prio < cur[0]:
            best[field] = (prio, key, value, raw)
            # The loser stays visible in ``attributes`` unless it is the same
            # key (a span attribute overriding its resource default).
            if cur is not None and cur[1] is not None and cur[1] != key and not _MAP[cur[1]][3]:
                attrs[cur[1]] = any_value_text(cur[3])
        elif not keep:
            attrs[key] = any_value_text(raw)


def _offer(best: dict[str, tuple], attrs: dict[str, str], field: str, prio: int, value: Any) -> None:
    """A candidate from a span event (no attribute key of its own)."""
    cur = best.get(field)
    if cur is None or prio < cur[0]:
        best[field] = (prio, None, value, None)
        if cur is not None and cur[1] is not None:
            attrs[cur[1]] = any_value_text(cur[3])


def _extras(extras: list, best: dict[str, tuple], attrs: dict[str, str], experiments: dict[str, str]) -> None:
    """Experiments (llmpulse.experiment.<key>) and OpenLLMetry indexed messages."""
    messages: dict[str, dict[int, dict[str, Any]]] = {}
    indexed: list = []
    for kv in extras:
        key = kv.key
        if key.startswith(_EXPERIMENT_PREFIX):
            text = any_value_text(kv.value)
            if text is not None:
                experiments[key[len(_EXPERIMENT_PREFIX) :]] = text
            continue
        head, _, rest = key.partition(".")[2].partition(".")  # "prompt", "0.content"
        index, _, part = rest.partition(".")
        if not index.isdecimal() or not part:
            text = any_value_text(kv.value)  # e.g. gen_ai.prompt.name: a plain attribute
            if text is not None:
                attrs[key] = text
            continue
        # Payload parts are the largest values in a span: read each once.
        value = _native(kv.value)
        if value is not None:
            messages.setdefault(head, {}).setdefault(int(index), {})[part] = value
            indexed.append(kv)
    for head, field in (("prompt", "input"), ("completion", "output")):
        by_index = messages.get(head)
        if by_index is None:
            continue
        cur = best.get(field)
        if cur is None or _INDEXED_PRIO < cur[0]:
            best[field] = (_INDEXED_PRIO, None, _json([by_index[i] for i in sorted(by_index)]), None)
            if cur is not None and cur[1] is not None:
                attrs[cur[1]] = any_value_text(cur[3])
        else:
            prefix = f"gen_ai.{head}."
            for kv in indexed:
                if kv.key.startswith(prefix):
                    attrs[kv.key] = any_value_text(kv.value)


# --------------------------------------------------------------------------
# Spans
# --------------------------------------------------------------------------


def _bad_span(where: str, span: Any, reason: str) -> SerializationError:
    sid = span.span_id.hex() or "-"
    return SerializationError(f"span {span.name!r} (span_id {sid}): {reason}", field=where)


def _time(ns: int) -> datetime:
    # Integer microseconds: a float of the epoch seconds loses precision.
    return _EPOCH + timedelta(microseconds=ns // 1000)


def _span(
    span: Any,
    where: str,
    res_best: dict[str, tuple],
    base_attrs: dict[str, str],
) -> dict[str, Any]:
    trace_id = span.trace_id
    if len(trace_id) != 16 or not any(trace_id):
        raise _bad_span(where, span, f"trace_id must be 16 non-zero bytes, got {trace_id.hex() or 'none'}")
    span_id = span.span_id
    if len(span_id) != 8 or not any(span_id):
        raise _bad_span(where, span, f"span_id must be 8 non-zero bytes, got {span_id.hex() or 'none'}")
    parent = span.parent_span_id
    if parent and len(parent) != 8:
        raise _bad_span(where, span, f"parent_span_id must be 8 bytes or empty, got {parent.hex()}")
    start_ns = span.start_time_unix_nano
    end_ns = span.end_time_unix_nano
    if not start_ns or not end_ns:
        raise _bad_span(where, span, "start_time_unix_nano and end_time_unix_nano are required")
    if end_ns < start_ns:
        raise _bad_span(where, span, f"ends before it starts ({end_ns} < {start_ns} ns)")

    best = dict(res_best)
    attrs = dict(base_attrs)
    extras: list = []
    _collect(span.attributes, best, attrs, 0, extras)

    status = span.status
    code = status.code
    status_message = status.message or None
    experiments: dict[str, str] = {}
    if extras:
        _extras(extras, best, attrs, experiments)

    for event in span.events:
        name = event.name
        if name == "exception":
            exc_type = exc_message = None
            for kv in event.attributes:
                if kv.key == "exception.type":
                    exc_type = _to_str(kv.value)
                elif kv.key == "exception.message":
                    exc_message = _to_str(kv.value)
            if exc_type:
                _offer(best, attrs, "error_type", _EXCEPTION_PRIO, exc_type)
            if code == 2 and status_message is None and exc_message:
                status_message = exc_message
            continue
        sources = _EVENT_PAYLOADS.get(name)
        if sources is None:
            continue
        for kv in event.attributes:
            for attr_key, field, prio in sources:
                if kv.key == attr_key:
                    value = _to_str(kv.value)
                    if isinstance(value, str):
                        _offer(best, attrs, field, prio, value)

    record = _TEMPLATE.copy()
    for field, entry in best.items():
        record[field] = entry[2]

    hinted = record.pop("_kind", None)
    kind = _OPERATION_KIND.get(record["operation"]) or hinted
    if kind is None:
        # No convention named the kind: infer what a bare span most likely is.
        if record["tool_name"] is not None:
            kind = "tool"
        elif (
            record["request_model"] is not None
            or record["input_tokens"] is not None
            or record["output_tokens"] is not None
        ):
            kind = "llm"
        elif record["agent_name"] is not None:
            kind = "agent"
        else:
            kind = "other"

    start = _time(start_ns)
    end = _time(end_ns)
    ttfc = record.pop("_ttfc", None)
    if ttfc is not None:
        # A first chunk before the start or after the end is a broken clock or
        # unit (ms for s); keep the raw value visible rather than invent a time.
        if math.isfinite(ttfc) and 0 <= ttfc * 1e9 <= end_ns - start_ns:
            first = start + timedelta(microseconds=round(ttfc * 1_000_000))
            record["first_token_time"] = first if first <= end else end  # rounding
        else:
            attrs[best["_ttfc"][1]] = any_value_text(best["_ttfc"][3])

    project = record["project"]
    if project is None:
        service = record["service_name"]
        project = service if service and not service.startswith(_UNKNOWN_SERVICE) else "default"

    record["trace_id"] = trace_id.hex()
    record["span_id"] = span_id.hex()
    record["parent_span_id"] = parent.hex() if parent else None
    record["name"] = span.name
    record["kind"] = kind
    record["start_time"] = start
    record["end_time"] = end
    record["status"] = _STATUS[code] if 0 <= code <= 2 else "unset"
    record["status_message"] = status_message
    record["project"] = project
    if record["finish_reasons"] is None:
        record["finish_reasons"] = []
    record["experiments"] = experiments
    record["attributes"] = attrs
    return record


def spans_from_otlp(data: bytes) -> list[dict[str, Any]]:
    """Decode one OTLP ``ExportTraceServiceRequest`` into ``span`` records.

    Parameters
    ----------
    data
        Protobuf bytes, as the Collector's Kafka exporter writes them with
        ``encoding: otlp_proto``.

    Returns
    -------
    list of dict
        One complete ``span`` record per OTLP span, in message order; each
        passes ``schemas.codec.encode("span", record)``.

    Raises
    ------
    SerializationError
        The bytes are not an ``ExportTraceServiceRequest``, or any span in
        it is unusable (bad ids or times). ``field`` locates the span, e.g.
        ``otlp.resource_spans[0].scope_spans[0].spans[3]``, and the message
        names it. One bad span fails the whole message on purpose: the
        message is one batch of traces, and half a trace is worse than a
        dead-lettered one that can be fixed and replayed.

    Examples
    --------
    >>> from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import (
    ...     ExportTraceServiceRequest)
    >>> req = ExportTraceServiceRequest()
    >>> rs = req.resource_spans.add()
    >>> rs.resource.attributes.add(key="service.name").value.string_value = "support-api"
    >>> span = rs.scope_spans.add().spans.add(
    ...     trace_id=bytes.fromhex("4bf92f3577b34da6a3ce929d0e0e4736"),
    ...     span_id=bytes.fromhex("00f067aa0ba902b7"), name="chat gpt-4o",
    ...     start_time_unix_nano=1_748_779_200_000_000_000,
    ...     end_time_unix_nano=1_748_779_201_482_731_999)
    >>> span.attributes.add(key="gen_ai.operation.name").value.string_value = "chat"
    >>> span.attributes.add(key="gen_ai.usage.prompt_tokens").value.int_value = 812
    >>> [rec] = spans_from_otlp(req.SerializeToString())
    >>> rec["kind"], rec["project"], rec["input_tokens"], rec["parent_span_id"]
    ('llm', 'support-api', 812, None)
    >>> rec["end_time"].isoformat()
    '2025-06-01T12:00:01.482731+00:00'
    >>> spans_from_otlp(b"not protobuf")  # doctest: +ELLIPSIS
    Traceback (most recent call last):
    ...
    schemas.errors.SerializationError: otlp: not an OTLP ExportTraceServiceRequest: invalid protobuf (...)
    """
    if not data:
        raise SerializationError("empty message", field="otlp")
    if type(data) is not bytes:
        data = bytes(data)
    try:
        request = ExportTraceServiceRequest.FromString(data)
    except DecodeError as e:
        # The protobuf runtime's wording differs between its implementations;
        # the cause stays attached for logs.
        raise SerializationError(
            f"not an OTLP ExportTraceServiceRequest: invalid protobuf (corrupt wire format "
            f"or a string that is not UTF-8; {len(data)} bytes, starting {data[:4].hex(' ')})",
            field="otlp",
        ) from e
    if not request.resource_spans:
        # Non-empty bytes that parse to nothing are only unknown fields: some
        # other message type that happened to be valid protobuf wire format.
        raise SerializationError(
            "not an OTLP ExportTraceServiceRequest (no resource_spans; only unknown fields)", field="otlp"
        )
    out: list[dict[str, Any]] = []
    for r, resource_spans in enumerate(request.resource_spans):
        res_best: dict[str, tuple] = {}
        res_attrs: dict[str, str] = {}
        _collect(resource_spans.resource.attributes, res_best, res_attrs, _RESOURCE_PENALTY, None)
        for s, scope_spans in enumerate(resource_spans.scope_spans):
            spans = scope_spans.spans
            if not spans:
                continue
            base_best = res_best
            base_attrs = dict(res_attrs)
            scope = scope_spans.scope
            if scope.attributes:
                base_best = dict(res_best)
                _collect(scope.attributes, base_best, base_attrs, _RESOURCE_PENALTY // 2, None)
            # otel.scope.* are the names OTel uses when flattening the scope
            # into attributes (Zipkin/Jaeger exporters).
            if scope.name:
                base_attrs["otel.scope.name"] = scope.name
            if scope.version:
                base_attrs["otel.scope.version"] = scope.version
            prefix = f"otlp.resource_spans[{r}].scope_spans[{s}].spans"
            for k, span in enumerate(spans):
                out.append(_span(span, f"{prefix}[{k}]", base_best, base_attrs))
    return out
