"""Realistic sample records for tests, benchmarks and the demo.

Every sample is complete (all fields present, timestamps as UTC datetimes),
so ``decode(encode(name, sample(name))) == sample(name)`` holds exactly.
"""

from __future__ import annotations

import copy
from datetime import datetime, timedelta, timezone
from typing import Any

__all__ = ["sample", "SAMPLE_NAMES"]

_T0 = datetime(2025, 6, 1, 12, 0, 0, tzinfo=timezone.utc)
_TRACE = "4bf92f3577b34da6a3ce929d0e0e4736"


def _at(seconds: float) -> datetime:
    return _T0 + timedelta(seconds=seconds)


_SAMPLES: dict[str, dict[str, Any]] = {
    "span": {
        "trace_id": _TRACE,
        "span_id": "00f067aa0ba902b7",
        "parent_span_id": "53995c3f42cd8ad8",
        "name": "chat gpt-4o-mini",
        "kind": "llm",
        "start_time": _at(0.0),
        "end_time": _at(1.482731),
        "status": "ok",
        "status_message": None,
        "error_type": None,
        "project": "support-bot",
        "service_name": "support-api",
        "environment": "prod",
        "user_id": "user-1042",
        "session_id": "conv-7f3a",
        "prompt_version": "support-v12",
        "operation": "chat",
        "provider": "openai",
        "request_model": "gpt-4o-mini",
        "response_model": "gpt-4o-mini-2024-07-18",
        "response_id": "chatcmpl-9a8b7c",
        "finish_reasons": ["stop"],
        "temperature": 0.2,
        "max_tokens": 512,
        "tool_name": None,
        "agent_name": "support-agent",
        "input_tokens": 812,
        "output_tokens": 164,
        "cache_read_input_tokens": 512,
        "cache_creation_input_tokens": 0,
        "cost_usd": 0.0002214,
        "first_token_time": _at(0.391204),
        "input": '[{"role": "user", "content": "How do I reset my password?"}]',
        "output": "Go to Settings > Security and choose 'Reset password'.",
        "experiments": {"prompt-tone": "friendly"},
        "attributes": {"gen_ai.request.top_p": "1.0", "http.route": "/v1/chat"},
    },
    "feedback": {
        "feedback_id": "fb-000193",
        "trace_id": _TRACE,
        "span_id": "00f067aa0ba902b7",
        "user_id": "user-1042",
        "project": "support-bot",
        "time": _at(95.0),
        "rating": 4.0,
        "thumbs": True,
        "comment": "Worked, thanks!",
        "attributes": {"surface": "web-widget"},
    },
    "user_profile": {
        "user_id": "user-1042",
        "project": "support-bot",
        "plan": "pro",
        "signup_time": datetime(2024, 11, 3, 9, 15, tzinfo=timezone.utc),
        "country": "DE",
        "feature_flags": {"streaming": True, "beta_tools": False},
        "properties": {"company_size": "51-200", "language": "de"},
        "updated_at": _at(-3600.0),
    },
    "experiment": {
        "key": "prompt-tone",
        "hypothesis": "A friendlier system prompt raises the thumbs-up rate without raising cost.",
        "variants": [
            {"name": "control", "weight": 0.5, "payload": {"prompt_version": "support-v11"}},
            {"name": "friendly", "weight": 0.5, "payload": {"prompt_version": "support-v12"}},
        ],
        "coverage": 0.8,
        "targeting": "plan in ('pro', 'enterprise')",
        "namespace": {"name": "prompts", "range_start": 0.0, "range_end": 0.5},
        "primary_metric": "thumbs_up_rate",
        "secondary_metrics": ["rating_mean"],
        "guardrail_metrics": ["latency_p95_ms", "cost_usd"],
        "min_sample_size": 2000,
        "status": "running",
        "owner": "ml-platform@example.com",
        "seed": "prompt-tone-1",
        "hash_version": 2,
        "created_at": datetime(2025, 5, 20, 8, 0, tzinfo=timezone.utc),
        "updated_at": datetime(2025, 5, 21, 8, 0, tzinfo=timezone.utc),
    },
    "exposure": {
        "experiment_key": "prompt-tone",
        "variant": "friendly",
        "user_id": "user-1042",
        "project": "support-bot",
        "time": _at(0.0),
        "source": "processor",
    },
    "metric_point": {
        "series": "latency_ms{model=gpt-4o-mini,project=support-bot}",
        "metric": "latency_ms",
        "dimensions": {"model": "gpt-4o-mini", "project": "support-bot"},
        "window_start": _T0,
        "window_seconds": 60,
        "value": 1483.5,
        "count": 212,
    },
    "metric_window": {
        "series": (
            "project=support-bot|model=gpt-4o-mini-2024-07-18|provider=openai"
            "|prompt_version=support-v12|kind=llm|cohort=unknown|variant=prompt-tone:friendly"
        ),
        "resolution": "1m",
        "window_start": _T0,
        "window_seconds": 60,
        "partition": 2,
        "project": "support-bot",
        "model": "gpt-4o-mini-2024-07-18",
        "provider": "openai",
        "prompt_version": "support-v12",
        "kind": "llm",
        "cohort": "unknown",
        "variant": "prompt-tone:friendly",
        "request_count": 3,
        "error_count": 1,
        "input_tokens": 2436,
        "output_tokens": 492,
        "cached_tokens": 1536,
        "usage_count": 3,
        "cost_usd": 0.0006642,
        "cost_count": 3,
        "feedback_count": 1,
        "rating_sum": 4.0,
        "rating_count": 1,
        "thumbs_up": 1,
        "thumbs_count": 1,
        "late_events": 0,
        "p50_ms": 1525.6782518737336,
        "p90_ms": 1525.6782518737336,
        "p95_ms": 1525.6782518737336,
        "p99_ms": 1525.6782518737336,
        # Three latencies (1483, 1515, 1530 ms) as a DDSketch protobuf, 1 % accuracy.
        "sketch": (
            b"\n\t\t\xfdJ\x81Z\xbfR\xf0?\x12\x15\x12\x10\x00\x00\x00\x00\x00\x00\xf0?"
            b"\x00\x00\x00\x00\x00\x00\x00@\x18\xdc\x05\x1a\x00"
        ),
        "final": False,
        "emitted_at": _at(62.5),
        "cost_sq_sum": 1.4705e-07,
        "rating_sq_sum": 16.0,
        "latency_ms_sum": 4528.0,
        "latency_ms_sq_sum": 6835414.0,
    },
    "alert": {
        "alert_id": "al-20250601-0007",
        "kind": "anomaly",
        "severity": "warning",
        "title": "latency_ms up 3.4x for gpt-4o-mini",
        "text": "p50 latency 5020 ms over the last 5 min vs 1480 ms expected (score 0.97).",
        "series": "latency_ms{model=gpt-4o-mini,project=support-bot}",
        "dimensions": {"model": "gpt-4o-mini", "project": "support-bot"},
        "time": _at(300.0),
        "links": ["http://localhost:3000/d/llmpulse-overview"],
        "episode_id": "latency_ms{model=gpt-4o-mini,project=support-bot}|p95_ms|1748736000",
        "status": "firing",
        "project": "support-bot",
        "facts": {"observed": "5020 ms", "expected": "1480 ms (1210-1750)"},
    },
    "anomaly": {
        "anomaly_id": "project=support-bot|p95_ms|1748736000",
        "series": "project=support-bot",
        "metric": "p95_ms",
        "dimensions": {"project": "support-bot"},
        "status": "open",
        "severity": "warning",
        "score": 0.97,
        "observed": 5020.0,
        "expected": 1480.0,
        "lower": 1210.0,
        "upper": 1750.0,
        "count": 212,
        "window_start": _T0,
        "window_seconds": 60,
        "started_at": _T0,
        "ended_at": None,
        "points": 1,
        "detector": "ensemble-v1",
    },
    "anomaly_feedback": {
        "anomaly_id": "project=support-bot|p95_ms|1748736000",
        "series": "project=support-bot",
        "metric": "p95_ms",
        "verdict": "false_positive",
        "user": "oncall@example.com",
        "note": "planned load test",
        "time": _at(900.0),
    },
    "dead_letter": {
        "original": b'{"trace_id": "4bf92f35", "kind": "llm"}',
        "error": "span.trace_id: '4bf92f35' does not match ^[0-9a-f]{32}$",
        "error_type": "SerializationError",
        "processor": "span-enricher",
        "topic": "llmpulse.spans",
        "partition": 3,
        "offset": 48213,
        "key": b"support-bot",
        "time": _at(1.0),
    },
}

#: Names that :func:`sample` knows, one per shipped record.
SAMPLE_NAMES = tuple(sorted(_SAMPLES))


def sample(name: str, /, **overrides: Any) -> dict[str, Any]:
    """A fresh, complete, realistic record of type ``name``.

    Parameters
    ----------
    name
        Record name, e.g. ``"span"``.
    **overrides
        Field values to replace (``name`` is positional-only, so a field
        called ``name`` can be overridden too).

    Returns
    -------
    dict
        A new dict each call; mutating it never changes later samples.

    Examples
    --------
    >>> sample("span")["kind"]
    'llm'
    >>> sample("span", status="error", status_message="timeout")["status"]
    'error'
    >>> sample("span", name="embed query")["name"]
    'embed query'
    """
    try:
        record = copy.deepcopy(_SAMPLES[name])
    except KeyError:
        raise KeyError(f"no sample for {name!r}; known: {', '.join(SAMPLE_NAMES)}") from None
    record.update(overrides)
    return record
