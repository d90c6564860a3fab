"""Metric points from the merged windows in a real database to a real topic."""
from __future__ import annotations

from datetime import UTC, datetime, timedelta

import psycopg

from processors.aggregation import WindowAggregator
from processors.metrics_processor import window_record
from schemas.codec import decode
from schemas.samples import sample
from sinks.metric_points import PointsBuilder, _last_published, publish_until
from sinks.metrics_store import MetricsStore
from sinks.migrate import migrate
from tests.integration.helpers import consume

T0 = datetime(2026, 3, 2, 10, 0, tzinfo=UTC)


def _spans(minute: int, model: str, n: int, latency_ms: int, errors: int = 0):
    start = T0 + timedelta(minutes=minute, seconds=5)
    for i in range(n):
        yield sample("span", response_model=model, status="error" if i < errors else "ok",
                     start_time=start, end_time=start + timedelta(milliseconds=latency_ms + i))


def _store(db: str, spans_by_partition: dict[int, list[dict]]) -> None:
    migrate(db)
    store = MetricsStore(db)
    parts = []
    for partition, spans in spans_by_partition.items():
        agg = WindowAggregator()
        for span in spans:
            agg.add_span(span)
        parts += [window_record(s, partition, T0) for s in agg.changed() if s.resolution == "1m"]
    store.write(parts)
    store.close()


def test_points_merge_partitions_roll_up_models_and_mark_silence(fresh_database, topic_factory, producer, bootstrap):
    _store(fresh_database, {
        0: [*_spans(0, "gpt-4o", 30, 800, errors=3), *_spans(0, "claude-3-5-haiku", 10, 300)],
        1: [*_spans(0, "gpt-4o", 20, 1200, errors=2), *_spans(1, "claude-3-5-haiku", 5, 300)],
    })
    topic = topic_factory(partitions=2)
    builder = PointsBuilder()
    with psycopg.connect(fresh_database, autocommit=True) as conn:
        cursor, sent = publish_until(conn, producer, builder, T0, T0 + timedelta(minutes=2), topic)
    assert cursor == T0 + timedelta(minutes=2)
    points = [decode(m.value(), expected="metric_point") for m in consume(bootstrap, topic, sent, timeout_s=30)]
    assert len(points) == sent
    by = {(p["series"], p["window_start"]): p for p in points}
    minute0, minute1 = T0, T0 + timedelta(minutes=1)
    project = sample("span")["project"]
    # 30 + 20 gpt-4o spans from two partitions, merged; 10 more of another model at project level.
    assert by[(f"request_count{{model=gpt-4o,project={project}}}", minute0)]["value"] == 50
    assert by[(f"request_count{{project={project}}}", minute0)]["value"] == 60
    assert by[(f"error_rate{{model=gpt-4o,project={project}}}", minute0)]["value"] == 5 / 50
    p95 = by[(f"latency_p95_ms{{model=gpt-4o,project={project}}}", minute0)]["value"]
    assert 1150 < p95 < 1260  # the slower partition's spans dominate the tail
    # gpt-4o went quiet in minute 1: a zero-volume point, and no rate points.
    silent = by[(f"request_count{{model=gpt-4o,project={project}}}", minute1)]
    assert (silent["value"], silent["count"]) == (0, 0)
    assert (f"error_rate{{model=gpt-4o,project={project}}}", minute1) not in by
    assert _last_published(bootstrap, topic) == minute1
