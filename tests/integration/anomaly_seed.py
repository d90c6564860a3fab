"""Seed data for the anomaly tests: fine metric windows with one degrading model, spans, episodes."""
from __future__ import annotations

import hashlib
import json
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

import psycopg

from processors.aggregation.dimensions import series_key
from processors.aggregation.sketch import BinMapping, encode_sketch
from schemas.samples import sample
from sinks.trace_store import TraceStore

MAPPING = BinMapping(0.01)
WINDOW_COLUMNS = (
    "resolution", "window_start", "window_seconds", "series", "project", "model", "provider",
    "prompt_version", "kind", "cohort", "variant", "request_count", "error_count", "input_tokens",
    "output_tokens", "cached_tokens", "usage_count", "cost_usd", "cost_count", "feedback_count",
    "rating_sum", "rating_count", "thumbs_up", "thumbs_count", "late_events", "p50_ms", "p90_ms",
    "p95_ms", "p99_ms", "sketch", "partitions", "final",
)


@dataclass(frozen=True)
class Incident:
    """``bad_model`` of ``project`` fails (and slows down) from ``start`` for ``minutes``."""

    project: str
    start: datetime
    minutes: int
    bad_model: str = "gpt-x"
    good_model: str = "gpt-y"


def window_row(at: datetime, project: str, model: str, prompt_version: str, requests: int, errors: int,
               latency_ms: float, resolution: str = "1m") -> tuple[Any, ...]:
    """One fine metric_windows row: every request took ``latency_ms``."""
    seconds = {"1m": 60, "1h": 3600, "1d": 86400}[resolution]
    dims = (project, model, "openai", prompt_version, "llm", "free", "none")
    sketch = encode_sketch({MAPPING.key(latency_ms): requests}, 0, MAPPING)
    cost = round(requests * 0.002, 9)
    return (resolution, at, seconds, series_key(dims), *dims, requests, errors, requests * 100, requests * 50,
            0, requests, cost, requests, 0, 0.0, 0, 0, 0, 0, latency_ms, latency_ms, latency_ms,
            latency_ms, sketch, 1, True)


def incident_windows(incident: Incident, baseline_minutes: int = 60) -> list[tuple[Any, ...]]:
    """A baseline hour where both models fail 2 % at 400 ms, then the bad model fails 40 % at 2 s."""
    rows = []
    for minute in range(-baseline_minutes, incident.minutes):
        at = incident.start + timedelta(minutes=minute)
        during = minute >= 0
        for version in ("v1", "v2"):
            rows.append(window_row(at, incident.project, incident.good_model, version, 50, 1, 400.0))
            rows.append(window_row(at, incident.project, incident.bad_model, version, 50,
                                   20 if during else 1, 2000.0 if during else 400.0))
    return rows


def insert_windows(conn: psycopg.Connection, rows: Sequence[tuple[Any, ...]]) -> None:
    with conn.cursor() as cur, cur.copy(f"COPY metric_windows ({', '.join(WINDOW_COLUMNS)}) FROM STDIN") as copy:
        for row in rows:
            copy.write_row(row)
    conn.commit()


def incident_spans(incident: Incident, traces: int = 4) -> list[dict]:
    """Failed traces of the bad model and healthy ones of the good model, during the incident."""
    spans = []
    for i in range(traces):
        at = incident.start + timedelta(seconds=20 + i)
        for model, status in ((incident.bad_model, "error"), (incident.good_model, "ok")):
            spans.append(sample(
                "span", trace_id=hashlib.md5(f"{model}-{i}".encode()).hexdigest(), span_id=f"{i:016x}",
                parent_span_id=None,
                project=incident.project, response_model=model, request_model=model, status=status,
                error_type="RateLimitError" if status == "error" else None, prompt_version="v1",
                start_time=at, end_time=at + timedelta(seconds=2), first_token_time=None))
    return spans


def insert_spans(url: str, spans: Sequence[dict]) -> None:
    store = TraceStore(url)
    try:
        store.write(list(spans))
    finally:
        store.close()


def anomaly_event(incident: Incident, *, metric: str = "error_rate", status: str = "open",
                  severity: str = "warning", points: int = 1, observed: float = 0.21,
                  expected: float = 0.02) -> dict:
    """An ``anomaly`` record of the incident's project-level series after ``points`` windows."""
    series = f"{metric}{{project={incident.project}}}"
    window_start = incident.start + timedelta(minutes=points - 1)
    return sample(
        "anomaly", anomaly_id=f"{series}|{metric}|{int(incident.start.timestamp())}", series=series,
        metric=metric, dimensions={"project": incident.project}, status=status, severity=severity,
        observed=observed, expected=expected, lower=expected / 2, upper=expected * 2, count=200,
        window_start=window_start, window_seconds=60, started_at=incident.start, points=points,
        ended_at=None if status == "open" else window_start + timedelta(minutes=1), detector="test-detector",
    )


def insert_episode(conn: psycopg.Connection, event: dict, **extra: Any) -> None:
    """An anomalies row written directly (dashboard and CLI tests), plus ``extra`` columns."""
    from sinks.anomaly_store import EVENT_COLUMNS, episode_row

    values = dict(zip(EVENT_COLUMNS, episode_row(event)))
    values.update({k: json.dumps(v) if k == "segments" else v for k, v in extra.items()})
    columns = list(values)
    conn.execute(f"INSERT INTO anomalies ({', '.join(columns)}) VALUES ({', '.join(['%s'] * len(columns))})",
                 list(values.values()))
    conn.commit()


def seed_feed(url: str, project: str, now: datetime) -> dict[str, str]:
    """An open episode of ``project`` (with a root cause) and a resolved one, for dashboard tests.

    Returns the anomaly feed's concrete variable values. The episodes are
    written directly (no Kafka); their metric is drawn from whatever
    ``metric_windows`` holds for the project.
    """
    started = (now - timedelta(minutes=90)).replace(second=0, microsecond=0)
    opened = anomaly_event(Incident(project, started, 30), points=30, severity="critical")
    closed = anomaly_event(Incident(project, started - timedelta(hours=3), 10), metric="latency_p95_ms",
                           status="resolved", points=10, observed=5020.0, expected=1480.0)
    segment = {"filters": {"model": "gpt-x"}, "explanatory_power": 0.86, "surprise": 0.2, "baseline": 0.02,
               "observed": 0.3, "change": 14.0, "alternative": "gpt-y",
               "sentence": "error rate +950% is 86% explained by model=gpt-x (2.0% → 30.0%)"}
    with psycopg.connect(url) as conn:
        insert_episode(conn, opened, root_cause=segment["sentence"], recommendation="consider routing back to "
                       "model=gpt-y (2.0%)", segments=[segment])
        insert_episode(conn, closed)
    return {"project": project, "status": "open", "anomaly": opened["anomaly_id"]}
