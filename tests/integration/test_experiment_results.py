"""The experiment-results job on a real database and a real Kafka topic.

A fresh, migrated database is seeded with running experiments, their
exposures and ``'1d'`` metric windows drawn with a known effect; the job
(:class:`ResultsJob`) computes them, writes ``experiment_results`` and
produces decision alerts to a topic of the test's own.
"""
from __future__ import annotations

import json
import threading
from datetime import UTC, datetime, timedelta

import psycopg
import pytest
from click.testing import CliRunner
from confluent_kafka import Consumer, Producer, TopicPartition
from prometheus_client import CollectorRegistry

from processors.experiments.results_cli import results
from processors.experiments.results_db import latest_results, load_exposures, load_sums
from processors.experiments.results_worker import ResultsJob, run_experiment_results
from processors.settings import Settings
from schemas.codec import decode
from sinks.migrate import migrate
from tests.integration.experiment_seed import ArmTruth, seed_experiment, set_exposures
from tests.integration.helpers import consume
from tests.integration.workers import wait_until

T0 = datetime.now(UTC).replace(microsecond=0) - timedelta(hours=6)
WINNER = {"control": ArmTruth(users=3000, requests=40000),
          "friendly": ArmTruth(users=3000, requests=40000, thumbs_up_rate=0.13)}


class Clock:
    """The computation time, moved by the test."""

    def __init__(self, at: datetime) -> None:
        self.at = at

    def __call__(self) -> datetime:
        return self.at


@pytest.fixture
def db(fresh_database):
    migrate(fresh_database)
    return fresh_database


@pytest.fixture
def job_factory(db, bootstrap, topic_factory):
    def make(clock: Clock) -> tuple[ResultsJob, str, CollectorRegistry]:
        topic = topic_factory("alerts", partitions=1)
        registry = CollectorRegistry()
        producer = Producer({"bootstrap.servers": bootstrap, "enable.idempotence": True})
        return ResultsJob(db, producer, registry, alerts_topic=topic, clock=clock), topic, registry
    return make


def _alerts(bootstrap: str, topic: str) -> list[dict]:
    """Every alert on the one-partition ``topic``: as many as its end offset says, read in order."""
    consumer = Consumer({"bootstrap.servers": bootstrap, "group.id": f"test-{topic}"})
    try:
        _, end = consumer.get_watermark_offsets(TopicPartition(topic, 0), timeout=10)
    finally:
        consumer.close()
    messages = consume(bootstrap, topic, end, timeout_s=30)
    assert len(messages) == end
    assert all(m.key() == b"tone" for m in messages)
    return [decode(m.value(), expected="alert") for m in messages]


def _rows(url: str, key: str) -> dict[tuple[str, str], dict]:
    with psycopg.connect(url) as conn:
        return {(r["metric"], r["variant"]): r for r in latest_results(conn, key)}


def test_loader_splits_multi_experiment_variants_and_drops_inconsistent_users(db):
    with psycopg.connect(db) as conn:
        seed_experiment(conn, "tone", WINNER, started_at=T0)
        set_exposures(conn, "tone", {"control": 3000, "friendly": 2990}, T0, inconsistent=25)
        sums = load_sums(conn, "tone", T0)
        exposures = load_exposures(conn, "tone")
        (requests,) = conn.execute(
            "SELECT sum(request_count) FROM metric_windows WHERE kind = 'llm' AND variant LIKE '%%tone:friendly%%'"
        ).fetchone()
    assert set(sums) == {"control", "friendly"}, "other-exp's tag is not a variant of tone"
    assert sums["friendly"].requests == requests == 40000 + 200
    assert sums["friendly"].thumbs_count == 20000 + 100, "feedback counted under root spans of any kind"
    assert exposures.users == {"control": 3000, "friendly": 2990}
    assert exposures.inconsistent == 25 and exposures.project == "support-bot"


def test_injected_effect_is_found_and_alerted_once(db, bootstrap, job_factory):
    with psycopg.connect(db) as conn:
        seed_experiment(conn, "tone", WINNER, started_at=T0)
        seed_experiment(conn, "flat", {"control": ArmTruth(users=2000, requests=600),
                                       "b": ArmTruth(users=2000, requests=600)}, started_at=T0)
    clock = Clock(T0 + timedelta(hours=5))
    job, topic, registry = job_factory(clock)

    results = {r.design.key: r for r in job.run_once()}
    assert set(results) == {"tone", "flat"}
    assert results["tone"].decision == "ship" and results["tone"].verdict_variant == "friendly"
    assert results["flat"].decision == "keep_running", results["flat"].reason

    rows = _rows(db, "tone")
    row = rows[("thumbs_up_ratio", "friendly")]
    assert row["computed_at"] == clock.at and row["decision"] == "ship"
    assert 0.13 / 0.10 - 1 == pytest.approx(row["lift_rel"], abs=0.1)
    assert 0 < row["seq_lift_low"] <= row["lift_rel"] <= row["seq_lift_high"]
    assert row["p_value"] < 1e-6 and row["seq_p_holm"] < 0.05 and row["chance_to_beat_control"] > 0.99
    assert rows[("thumbs_up_ratio", "control")]["lift_rel"] is None
    assert rows[("latency_p95_ms", "friendly")]["note"].startswith("tested on mean latency")
    assert {r["role"] for r in rows.values()} == {"primary", "guardrail", "secondary"}
    assert len(rows) == 2 * 5

    # A second pass with the same decision writes rows but no alert.
    clock.at += timedelta(minutes=1)
    job.run_once()
    alerts = _alerts(bootstrap, topic)
    assert len(alerts) == 1, "one alert per change of decision"
    [alert] = alerts
    assert alert["kind"] == "experiment" and alert["status"] == "firing"
    assert alert["episode_id"] == "experiment:tone:ship"
    assert alert["project"] == "support-bot"
    assert alert["facts"]["verdict"] == "ship" and alert["facts"]["variant"] == "friendly"
    assert {"lift", "p", "srm_p"} <= set(alert["facts"])
    with psycopg.connect(db) as conn:
        (computations,) = conn.execute(
            "SELECT count(DISTINCT computed_at) FROM experiment_results WHERE experiment_key = 'tone'").fetchone()
    assert computations == 2
    assert registry.get_sample_value("llmpulse_experiment_results_computations_total", {"outcome": "ok"}) == 4
    assert registry.get_sample_value("llmpulse_experiments_srm") == 0


def test_sample_ratio_mismatch_invalidates_the_winner(db, bootstrap, job_factory):
    with psycopg.connect(db) as conn:
        seed_experiment(conn, "tone", WINNER, started_at=T0)
    clock = Clock(T0 + timedelta(hours=5))
    job, topic, registry = job_factory(clock)
    [first] = job.run_once()
    assert first.decision == "ship"

    with psycopg.connect(db) as conn:
        set_exposures(conn, "tone", {"control": 3000, "friendly": 2600}, T0)
    clock.at += timedelta(minutes=1)
    [second] = job.run_once()
    assert second.decision == "srm" and second.srm.flagged
    assert "sample ratio mismatch" in second.reason
    rows = _rows(db, "tone")
    assert all(r["srm_flagged"] and r["verdict"] == "invalid" and r["verdict_variant"] is None
               for r in rows.values())
    assert registry.get_sample_value("llmpulse_experiments_srm") == 1

    alerts = _alerts(bootstrap, topic)
    assert [(a["episode_id"], a["status"]) for a in alerts] == [
        ("experiment:tone:ship", "firing"),
        ("experiment:tone:ship", "resolved"),
        ("experiment:tone:srm", "firing"),
    ]
    assert alerts[2]["severity"] == "critical"


def test_guardrail_breach_and_a_bad_definition(db, job_factory):
    worse = {"control": ArmTruth(users=3000, requests=40000),
             "fast": ArmTruth(users=3000, requests=40000, thumbs_up_rate=0.13, error_rate=0.03)}
    with psycopg.connect(db) as conn:
        seed_experiment(conn, "fast", worse, started_at=T0)
        seed_experiment(conn, "broken", WINNER, started_at=T0)
        conn.execute("UPDATE experiments SET variants = '[{\"name\": \"only\"}]' WHERE key = 'broken'")
    job, _, registry = job_factory(Clock(T0 + timedelta(hours=5)))
    [result] = job.run_once()
    assert result.design.key == "fast"
    assert result.decision == "guardrail_breached" and "error_rate" in result.reason
    assert registry.get_sample_value("llmpulse_experiment_results_computations_total", {"outcome": "error"}) == 1
    row = _rows(db, "fast")[("error_rate", "fast")]
    assert row["significant"] and row["direction"] == "worse" and row["seq_lift_low"] > 0


def test_results_command_prints_the_latest_computation(db, job_factory):
    with psycopg.connect(db) as conn:
        seed_experiment(conn, "tone", WINNER, started_at=T0)
    clock = Clock(T0 + timedelta(hours=5))
    job, _, _ = job_factory(clock)
    job.run_once()
    clock.at += timedelta(minutes=1)
    job.run_once()
    runner = CliRunner()
    text = runner.invoke(results, ["tone", "--database-url", db])
    assert text.exit_code == 0, text.output
    assert "Verdict: SHIP friendly" in text.output and "SRM: ok" in text.output
    assert clock.at.strftime("%H:%M") in text.output, "the newest computation"
    doc = json.loads(runner.invoke(results, ["tone", "--format", "json", "--database-url", db]).output)
    assert doc["decision"] == "ship" and len(doc["rows"]) == 10
    missing = runner.invoke(results, ["nope", "--database-url", db])
    assert missing.exit_code == 1 and "no results for experiment 'nope'" in missing.output


def test_the_worker_loop_computes_on_its_interval_until_stopped(db, bootstrap, topic_factory):
    with psycopg.connect(db) as conn:
        seed_experiment(conn, "tone", WINNER, started_at=T0)
    topic = topic_factory("alerts", partitions=1)
    settings = Settings(database_url=db, kafka_bootstrap_servers=bootstrap, metrics_port=-1,
                        results_interval_s=0.2)
    stop = threading.Event()
    worker = threading.Thread(target=run_experiment_results, args=(settings,),
                              kwargs={"stop": stop, "alerts_topic": topic})
    worker.start()
    try:
        def passes() -> int:
            with psycopg.connect(db) as conn:
                return conn.execute("SELECT count(DISTINCT computed_at) FROM experiment_results").fetchone()[0]
        wait_until(lambda: passes() >= 3, 20, "three passes of the results loop", [])
    finally:
        stop.set()
        worker.join(10)
    assert not worker.is_alive(), "stops when asked"
    assert [a["episode_id"] for a in _alerts(bootstrap, topic)] == ["experiment:tone:ship"]
