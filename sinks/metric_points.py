"""Metric points: merged 1-minute windows from the database to ``llm.metrics``.

The detectors need one value per metric per minute for the series people
care about, computed from *all* partitions' partials; the database has
exactly that once the metrics store has merged them. This worker reads
each minute once it has settled (``settle`` after its end: partials from
every partition have arrived; events later than that still update the
table, but are not re-scored), rolls the fine series up to the
aggregate levels the detectors watch (:data:`LEVELS`: per project, and per
project and model), and produces one ``metric_point`` per metric to
``llm.metrics`` keyed by series.

A series that had traffic within the last ``memory`` minutes and none in
this minute gets a ``request_count`` point of 0, so a volume collapse is
visible to the detectors (rates stay undefined: no point).

Progress is the newest ``window_start`` on ``llm.metrics`` itself, read on
start: no cursor table, and a crash between producing and recording can
only re-send a minute, which the detectors ignore (stale point).
"""
from __future__ import annotations

import logging
import threading
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from processors.aggregation.snapshot import WindowSnapshot
from sinks.metrics_store import COUNTERS, FLOAT_SUMS, merge_windows

log = logging.getLogger(__name__)

__all__ = ["LEVELS", "PointsBuilder", "points_for_minute", "run_metric_points"]

#: Dimension sets the detectors watch, coarsest first.
LEVELS: tuple[tuple[str, ...], ...] = (("project",), ("project", "model"))

_COLUMNS = ("project", "model", *COUNTERS, "cost_usd", *FLOAT_SUMS, "sketch", "partitions", "final")
_MINUTE = timedelta(minutes=1)


def points_for_minute(start: datetime, rows: Sequence[Mapping[str, Any]],
                      levels: Sequence[Sequence[str]] = LEVELS) -> list[dict[str, Any]]:
    """The ``metric_point`` records of one minute, from its fine ``metric_windows`` rows.

    Examples
    --------
    >>> from schemas.samples import sample
    >>> row = {**sample("metric_window"), "partitions": 1}
    >>> points = points_for_minute(row["window_start"], [row, {**row, "model": "gpt-4o"}])
    >>> sorted({p["series"] for p in points if p["metric"] == "request_count"})
    ['request_count{model=gpt-4o,project=support-bot}', 'request_count{model=gpt-4o-mini-2024-07-18,project=support-bot}', 'request_count{project=support-bot}']
    >>> next(p["value"] for p in points if p["series"] == "request_count{project=support-bot}")
    6.0
    """
    points: list[dict[str, Any]] = []
    for level in levels:
        groups: dict[tuple[str, ...], list[Mapping[str, Any]]] = {}
        for row in rows:
            groups.setdefault(tuple(row[d] for d in level), []).append(row)
        for values, members in sorted(groups.items()):
            merged = merge_windows(members)
            snapshot = WindowSnapshot(
                resolution="1m", window_start=start, window_seconds=60, series="",
                dims=dict(zip(level, values)),
                **{name: merged[name] for name in COUNTERS},
                cost_usd=float(merged["cost_usd"]),
                **{name: merged[name] for name in FLOAT_SUMS},
                p50_ms=merged["p50_ms"], p90_ms=merged["p90_ms"], p95_ms=merged["p95_ms"], p99_ms=merged["p99_ms"],
                sketch=merged["sketch"], final=merged["final"],
            )
            points += snapshot.metric_points()
    return points


@dataclass
class PointsBuilder:
    """Points per minute plus zero-volume points for series that went quiet.

    Examples
    --------
    >>> from schemas.samples import sample
    >>> b = PointsBuilder(memory_minutes=5)
    >>> row = {**sample("metric_window"), "partitions": 1}
    >>> t = row["window_start"]
    >>> len(b.build(t, [row])) > 0
    True
    >>> [(p["series"], p["value"]) for p in b.build(t + _MINUTE, [])][:1]
    [('request_count{model=gpt-4o-mini-2024-07-18,project=support-bot}', 0)]
    """

    memory_minutes: int = 60

    def __post_init__(self) -> None:
        self._last_seen: dict[str, tuple[datetime, dict[str, str]]] = {}

    def build(self, start: datetime, rows: Sequence[Mapping[str, Any]]) -> list[dict[str, Any]]:
        """Points of the minute starting at ``start``; call once per minute, in order."""
        points = points_for_minute(start, rows)
        seen = {p["series"] for p in points if p["metric"] == "request_count"}
        horizon = start - timedelta(minutes=self.memory_minutes)
        for series, (last, dims) in sorted(self._last_seen.items()):
            if series not in seen and last >= horizon:
                points.append({"series": series, "metric": "request_count", "dimensions": dict(dims),
                               "window_start": start, "window_seconds": 60, "value": 0, "count": 0})
        for p in points:
            if p["metric"] == "request_count" and p["count"]:
                self._last_seen[p["series"]] = (start, p["dimensions"])
        self._last_seen = {s: v for s, v in self._last_seen.items() if v[0] >= horizon}
        return points


def _minute_rows(conn: Any, start: datetime) -> list[dict[str, Any]]:
    cur = conn.execute(
        f"SELECT {', '.join(_COLUMNS)} FROM metric_windows WHERE resolution = '1m' AND window_start = %s",
        (start,),
    )
    return [dict(zip(_COLUMNS, row)) for row in cur.fetchall()]


def _last_published(bootstrap: str, topic: str) -> datetime | None:
    """Newest ``window_start`` on ``topic`` (its last message per partition)."""
    from confluent_kafka import Consumer, TopicPartition

    from schemas.codec import decode

    consumer = Consumer({"bootstrap.servers": bootstrap, "group.id": "llmpulse-metric-points-probe",
                         "enable.auto.commit": False})
    newest: datetime | None = None
    try:
        partitions = consumer.list_topics(topic, timeout=15).topics[topic].partitions
        for p in partitions:
            low, high = consumer.get_watermark_offsets(TopicPartition(topic, p), timeout=15)
            if high <= low:
                continue
            consumer.assign([TopicPartition(topic, p, high - 1)])
            msg = consumer.poll(10)
            if msg is not None and not msg.error():
                at = decode(msg.value(), expected="metric_point")["window_start"]
                newest = at if newest is None or at > newest else newest
    finally:
        consumer.close()
    return newest


def _floor_minute(at: datetime) -> datetime:
    return at.replace(second=0, microsecond=0)


def publish_until(conn: Any, producer: Any, builder: PointsBuilder, cursor: datetime, until: datetime,
                  topic: str) -> tuple[datetime, int]:
    """Produce the points of every minute in ``[cursor, until)``; returns the new cursor and points sent."""
    from schemas.codec import encode

    sent = 0
    while cursor < until:
        for point in builder.build(cursor, _minute_rows(conn, cursor)):
            producer.produce(topic, key=point["series"].encode(), value=encode("metric_point", point))
            sent += 1
        producer.flush(30)
        cursor += _MINUTE
    return cursor, sent


def run_metric_points(settings: Any, *, stop: threading.Event | None = None,
                      settle: timedelta | None = None, backfill: timedelta = timedelta(hours=6),
                      interval_s: float = 5.0) -> None:
    """Publish settled minutes every ``interval_s`` until SIGTERM (or ``stop``)."""
    import psycopg
    from confluent_kafka import Producer
    from prometheus_client import CollectorRegistry, Counter, Gauge

    from processors.kafka_runtime import stop_on_signals
    from processors.metrics import serve_metrics
    from processors.topics import METRICS

    registry = CollectorRegistry()
    published = Counter("llmpulse_metric_points_published", "Metric points produced to llm.metrics.",
                        registry=registry)
    behind = Gauge("llmpulse_metric_points_behind_seconds",
                   "How far the newest published minute is behind now (settle time included).", registry=registry)
    serve_metrics(settings.metrics_port, registry)
    stop = stop_on_signals(stop)
    settle = settle if settle is not None else timedelta(seconds=settings.points_settle_s)
    producer = Producer({"bootstrap.servers": settings.kafka_bootstrap_servers, "enable.idempotence": True,
                         "linger.ms": 20})
    last = _last_published(settings.kafka_bootstrap_servers, METRICS.name)
    cursor = last + _MINUTE if last else _floor_minute(datetime.now(UTC) - backfill)
    builder = PointsBuilder()
    log.info("metric-points: publishing from %s (settle %s)", cursor.isoformat(), settle)
    conn = None
    while not stop.is_set():
        try:
            if conn is None or conn.closed:
                conn = psycopg.connect(settings.database_url.get_secret_value(), autocommit=True)
            # A minute is settled once it ended at least `settle` ago.
            until = _floor_minute(datetime.now(UTC) - settle)
            cursor, sent = publish_until(conn, producer, builder, cursor, until, METRICS.name)
            published.inc(sent)
            behind.set((datetime.now(UTC) - cursor).total_seconds())
            if sent:
                log.info("metric-points: %d points up to %s", sent, cursor.isoformat())
        except psycopg.OperationalError as exc:
            log.warning("metric-points: database unavailable (%s); retrying", exc)
            conn = None
        stop.wait(interval_s)
    producer.flush(30)
