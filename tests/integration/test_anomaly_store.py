"""The anomaly store and CLI against real Kafka and PostgreSQL: episodes, root cause, alerts, verdicts."""
from __future__ import annotations

import dataclasses
import threading
import time
import uuid
from datetime import UTC, datetime, timedelta

import psycopg
import pytest
from click.testing import CliRunner
from confluent_kafka import Consumer, Producer, TopicPartition
from psycopg.rows import dict_row

from processors.anomalies_cli import anomalies
from processors.settings import Settings
from schemas.codec import decode, encode
from sinks.anomaly_store import AnomalyStore, anomaly_store_sink
from sinks.migrate import migrate
from sinks.runner import SinkRunner
from tests.integration.anomaly_seed import (
    Incident,
    anomaly_event,
    incident_spans,
    incident_windows,
    insert_episode,
    insert_spans,
    insert_windows,
)
from tests.integration.helpers import consume

START = datetime(2025, 6, 1, 12, 0, tzinfo=UTC)
INCIDENT = Incident("support", START, minutes=5)


@pytest.fixture
def db(fresh_database) -> str:
    migrate(fresh_database)
    with psycopg.connect(fresh_database) as conn:
        insert_windows(conn, incident_windows(INCIDENT))
    insert_spans(fresh_database, incident_spans(INCIDENT))
    return fresh_database


def _episodes(url: str) -> list[dict]:
    with psycopg.connect(url) as conn, conn.cursor(row_factory=dict_row) as cur:
        return cur.execute("SELECT * FROM anomalies ORDER BY anomaly_id").fetchall()


def _messages(bootstrap: str, topic: str) -> int:
    """Messages ever written to a test topic (all partitions), from its watermarks."""
    consumer = Consumer({"bootstrap.servers": bootstrap, "group.id": f"test-{uuid.uuid4().hex}"})
    try:
        partitions = consumer.list_topics(topic, timeout=15).topics[topic].partitions
        return sum(consumer.get_watermark_offsets(TopicPartition(topic, p), timeout=15)[1] for p in partitions)
    finally:
        consumer.close()


def _alerts(bootstrap: str, topic: str) -> list[dict]:
    """Every alert on a test topic; the watermarks make sure none is missed or extra."""
    total = _messages(bootstrap, topic)
    return [decode(m.value(), expected="alert") for m in consume(bootstrap, topic, total, timeout_s=20)]


def _wait(condition, timeout_s: float, what: str) -> None:
    deadline = time.monotonic() + timeout_s
    while not condition():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.2)


def _produce(producer: Producer, topic: str, events: list[dict]) -> None:
    for event in events:
        producer.produce(topic, key=event["anomaly_id"].encode(), value=encode("anomaly", event))
    producer.flush(30)


def test_an_episode_through_kafka_is_one_row_one_firing_and_one_resolved_alert(
        bootstrap, producer, topic_factory, db):
    source, alerts = topic_factory("anomalies", partitions=1), topic_factory("alerts", partitions=1)
    opened = anomaly_event(INCIDENT, points=1)
    events = [opened, anomaly_event(INCIDENT, points=3, observed=0.23),
              anomaly_event(INCIDENT, points=5, status="resolved")]
    settings = Settings(kafka_bootstrap_servers=bootstrap, database_url=db, grafana_url="http://grafana.test")
    sink = dataclasses.replace(anomaly_store_sink(settings, alerts_topic=alerts), topics=(source,))
    runner = SinkRunner(sink, settings, batch_size=1, max_wait_s=0.2, group_id=f"test-{uuid.uuid4().hex}")
    thread = threading.Thread(target=runner.run, daemon=True)
    thread.start()
    try:
        _produce(producer, source, events)
        _wait(lambda: [e["status"] for e in _episodes(db)] == ["resolved"], 30, "the resolved episode")
        _produce(producer, source, [opened, events[1]])  # redelivered older events
        _wait(lambda: runner.metrics.registry.get_sample_value(
            "llmpulse_events_in_total", {"processor": "anomaly-store", "topic": source}) == 5, 30, "redeliveries")
    finally:
        runner.stop()
        thread.join(30)

    [row] = _episodes(db)
    assert (row["status"], row["points"], row["ended_at"]) == ("resolved", 5, START + timedelta(minutes=5))
    assert row["root_cause"].startswith("error rate") and "model=gpt-x" in row["root_cause"]
    assert row["recommendation"] == "consider routing back to model=gpt-y (2.0%)"
    assert row["segments"][0]["filters"] == {"model": "gpt-x"}
    assert row["trace_links"] and all("var-trace_id=" in link for link in row["trace_links"])

    got = _alerts(bootstrap, alerts)
    assert [(a["status"], a["severity"]) for a in got] == [("firing", "warning"), ("resolved", "warning")]
    firing, resolved = got
    assert firing["episode_id"] == resolved["episode_id"] == opened["anomaly_id"]
    assert firing["project"] == "support" and firing["facts"]["observed"] == "21.0%"
    assert "model=gpt-x" in firing["facts"]["root_cause"]
    assert firing["links"][0].startswith("http://grafana.test/d/llmpulse-anomalies/")
    assert any("var-errors_only=error" in link for link in firing["links"])
    assert resolved["facts"]["ended_at"] == "2025-06-01T12:05:00+00:00"


def test_redelivery_and_severity_rise(bootstrap, topic_factory, db):
    alerts = topic_factory("alerts", partitions=1)
    store = AnomalyStore(db, Producer({"bootstrap.servers": bootstrap}), alerts_topic=alerts)
    try:
        first = store.write([anomaly_event(INCIDENT, points=1)])
        assert (first.inserted, first.explained, first.alerts) == (1, 1, 1)
        again = store.write([anomaly_event(INCIDENT, points=1)])
        assert (again.inserted, again.updated, again.alerts) == (0, 0, 0), "a redelivery changes nothing"
        worse = store.write([anomaly_event(INCIDENT, points=2, severity="critical")])
        assert (worse.updated, worse.alerts) == (1, 1)
        calmer = store.write([anomaly_event(INCIDENT, points=3, severity="warning")])
        assert (calmer.updated, calmer.alerts) == (1, 0), "a falling severity alerts nobody"
        # A batch holding the close and an older redelivered open: the close wins.
        closed = store.write([anomaly_event(INCIDENT, points=4, status="false_positive"),
                              anomaly_event(INCIDENT, points=1)])
        assert closed.alerts == 1
        assert store.write([anomaly_event(INCIDENT, points=6)]).updated == 0, "never reopened"
    finally:
        store.close()
    [row] = _episodes(db)
    assert (row["status"], row["severity"], row["peak_severity"], row["points"]) == (
        "false_positive", "warning", "critical", 4)
    got = _alerts(bootstrap, alerts)
    assert [(a["status"], a["severity"]) for a in got] == [
        ("firing", "warning"), ("firing", "critical"), ("resolved", "critical")]
    assert len({a["alert_id"] for a in got}) == 3


def test_latency_root_cause_counts_slow_requests_from_the_sketches(bootstrap, topic_factory, db):
    store = AnomalyStore(db, Producer({"bootstrap.servers": bootstrap}), alerts_topic=topic_factory("alerts"))
    try:
        store.write([anomaly_event(INCIDENT, metric="latency_p95_ms", observed=2000.0, expected=400.0)])
    finally:
        store.close()
    [row] = _episodes(db)
    assert row["root_cause"].startswith("p95 latency +400% is")
    assert "model=gpt-x" in row["root_cause"] and "of requests over the baseline p95" in row["root_cause"]
    assert row["segments"][0]["filters"] == {"model": "gpt-x"}


def test_root_cause_waits_for_metric_windows(bootstrap, topic_factory, fresh_database):
    migrate(fresh_database)
    store = AnomalyStore(fresh_database, Producer({"bootstrap.servers": bootstrap}),
                         alerts_topic=topic_factory("alerts"))
    try:
        assert store.write([anomaly_event(INCIDENT)]).explained == 0
        assert _episodes(fresh_database)[0]["root_cause"] is None
        with psycopg.connect(fresh_database) as conn:
            insert_windows(conn, incident_windows(INCIDENT))
        assert store.write([anomaly_event(INCIDENT, points=2)]).explained == 1
    finally:
        store.close()
    assert "model=gpt-x" in _episodes(fresh_database)[0]["root_cause"]


def test_cli_list_show_and_false_positive_publish_feedback(bootstrap, topic_factory, db, monkeypatch):
    feedback, alerts = topic_factory("feedback", partitions=1), topic_factory("alerts", partitions=1)
    event = anomaly_event(INCIDENT, points=2)
    store = AnomalyStore(db, Producer({"bootstrap.servers": bootstrap}), alerts_topic=alerts)
    try:
        store.write([event])
    finally:
        store.close()
    with psycopg.connect(db) as conn:
        other = anomaly_event(Incident("billing", START - timedelta(hours=2), 3), metric="cost_per_request",
                              status="resolved", observed=0.01, expected=0.002)
        insert_episode(conn, other, root_cause="cost per request +400% ...")
    monkeypatch.setenv("KAFKA_BOOTSTRAP_SERVERS", bootstrap)
    cli = CliRunner()
    common = ["--database-url", db]

    listed = cli.invoke(anomalies, ["list", "--since", "2025-06-01T00:00", *common])
    assert listed.exit_code == 0, listed.output
    lines = listed.output.splitlines()
    assert len(lines) == 3 and lines[1].startswith("warning   open") and event["anomaly_id"] in lines[1]
    only = cli.invoke(anomalies, ["list", "--status", "resolved", "--project", "billing",
                                  "--since", "2025-05-01", *common])
    assert only.exit_code == 0 and other["anomaly_id"] in only.output and event["anomaly_id"] not in only.output

    shown = cli.invoke(anomalies, ["show", event["anomaly_id"], *common])
    assert shown.exit_code == 0, shown.output
    assert "band 1.0% – 4.0%" in shown.output and "model=gpt-x" in shown.output
    assert "consider routing back to model=gpt-y" in shown.output and "var-trace_id=" in shown.output

    missing = cli.invoke(anomalies, ["show", "nope", *common])
    assert missing.exit_code != 0 and "no anomaly with id 'nope'" in missing.output
    missing_fp = cli.invoke(anomalies, ["false-positive", "nope", "--feedback-topic", feedback, *common])
    assert missing_fp.exit_code != 0 and "no anomaly with id 'nope'" in missing_fp.output

    marked = cli.invoke(anomalies, ["false-positive", event["anomaly_id"], "--user", "oncall", "--note",
                                    "load test", "--feedback-topic", feedback, "--alerts-topic", alerts, *common])
    assert marked.exit_code == 0, marked.output
    assert _messages(bootstrap, feedback) == 1
    [msg] = consume(bootstrap, feedback, 1)
    record = decode(msg.value(), expected="anomaly_feedback")
    assert msg.key() == event["series"].encode()
    assert (record["anomaly_id"], record["verdict"], record["user"], record["note"]) == (
        event["anomaly_id"], "false_positive", "oncall", "load test")
    row = next(r for r in _episodes(db) if r["anomaly_id"] == event["anomaly_id"])
    assert (row["status"], row["acked_by"], row["feedback_note"]) == ("false_positive", "oncall", "load test")
    assert row["ended_at"] is not None
    assert [a["status"] for a in _alerts(bootstrap, alerts)] == ["firing", "resolved"]
