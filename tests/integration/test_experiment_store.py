"""Experiment definitions and exposures: CLI -> Kafka -> sinks -> tables, on the real services."""
from __future__ import annotations

import dataclasses
import json
import threading
import time
import uuid
from datetime import UTC, datetime, timedelta

import psycopg
import pytest
from click.testing import CliRunner
from pydantic import SecretStr

from processors.experiments.cli import experiments
from processors.settings import Settings
from schemas.codec import decode, encode
from schemas.samples import sample
from sinks.experiment_store import (
    ExperimentStore,
    ExperimentStoreError,
    ExposureStore,
    decode_experiment_message,
    experiments_store_sink,
    exposures_store_sink,
)
from sinks.migrate import migrate
from sinks.runner import SinkRunner
from tests.integration.helpers import consume

T0 = datetime(2025, 6, 1, 9, 0, tzinfo=UTC)


@pytest.fixture
def db(fresh_database) -> str:
    migrate(fresh_database)
    return fresh_database


@pytest.fixture
def settings(bootstrap, db) -> Settings:
    return Settings(kafka_bootstrap_servers=bootstrap, database_url=SecretStr(db))


@pytest.fixture
def topic(topic_factory) -> str:
    # A private compacted topic, like llm.experiments, so other tests' definitions stay out.
    return topic_factory("experiments", partitions=2, config={"cleanup.policy": "compact"})


@pytest.fixture
def sink_running(settings, topic):
    """The experiments-store sink consuming ``topic`` in a thread, as `llmpulse run` would."""
    sink = dataclasses.replace(experiments_store_sink(settings), topics=(topic,))
    runner = SinkRunner(sink, settings, batch_size=100, max_wait_s=0.2, group_id=f"test-{uuid.uuid4().hex}")
    thread = threading.Thread(target=runner.run, daemon=True)
    thread.start()
    yield runner
    runner.stop()
    thread.join(30)


@pytest.fixture
def cli(bootstrap, db, topic):
    def invoke(*args: str):
        return CliRunner().invoke(
            experiments, [*args, "--bootstrap", bootstrap, "--database-url", db, "--topic", topic])
    return invoke


def rows(db: str, sql: str, *params) -> list[tuple]:
    with psycopg.connect(db) as conn:
        return conn.execute(sql, params).fetchall()


def wait_for(condition, what: str, timeout_s: float = 20.0) -> None:
    deadline = time.monotonic() + timeout_s
    while not condition():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.1)


def status_of(db: str, key: str) -> str | None:
    found = rows(db, "SELECT status FROM experiments WHERE key = %s", key)
    return found[0][0] if found else None


def create_tone(cli, key: str = "tone", *extra: str):
    return cli("create", "--template", "prompt-ab", "--key", key, "--owner", "ml@example.com",
               "--control", "support-v11", "--treatment", "support-v12", *extra)


# -- the whole workflow -----------------------------------------------------------


def test_create_start_stop_round_trip(bootstrap, cli, db, topic, sink_running):
    created = create_tone(cli, "tone", "--weights", "0.8,0.2")
    assert created.exit_code == 0, created.output
    assert "tone: created draft (control 80% / treatment 20%" in created.output

    (msg,) = consume(bootstrap, topic, 1, timeout_s=20)
    assert msg.key() == b"tone"
    record = decode(msg.value(), expected="experiment")
    assert record["status"] == "draft" and [v["weight"] for v in record["variants"]] == [0.8, 0.2]

    wait_for(lambda: status_of(db, "tone") == "draft", "the draft in the table")
    again = create_tone(cli)
    assert again.exit_code == 1 and "already exists (draft, owner ml@example.com); use --replace" in again.output

    started = cli("start", "tone")
    assert started.exit_code == 0, started.output
    assert "tone: draft -> running" in started.output
    wait_for(lambda: status_of(db, "tone") == "running", "running")
    (started_at,) = rows(db, "SELECT started_at FROM experiments WHERE key = 'tone'")[0]
    assert started_at is not None

    listed = cli("list")
    assert listed.exit_code == 0, listed.output
    line = next(l for l in listed.output.splitlines() if l.startswith("tone "))
    assert "running" in line and "control 80% / treatment 20%" in line and "thumbs_up_ratio" in line
    assert started_at.astimezone(UTC).strftime("%Y-%m-%d %H:%M UTC") in line

    replaced = create_tone(cli, "tone", "--replace")
    assert replaced.exit_code == 1 and "is running; only drafts can be replaced" in replaced.output

    stopped = cli("stop", "tone")
    assert stopped.exit_code == 0, stopped.output
    wait_for(lambda: status_of(db, "tone") == "stopped", "stopped")
    restart = cli("start", "tone")
    assert restart.exit_code == 1 and "is stopped and cannot restart" in restart.output

    history = rows(db, "SELECT status, definition->>'status' FROM experiment_versions "
                       "WHERE key = 'tone' ORDER BY updated_at")
    assert history == [("draft", "draft"), ("running", "running"), ("stopped", "stopped")]
    (lifecycle,) = rows(db, "SELECT started_at, stopped_at, created_at < updated_at FROM experiments")
    assert lifecycle[0] == started_at and lifecycle[1] > started_at and lifecycle[2]


def test_replacing_a_draft_and_namespace_overlap_on_start(cli, db, sink_running):
    assert create_tone(cli, "a", "--namespace", "prompts:0-0.6").exit_code == 0
    assert create_tone(cli, "b", "--namespace", "prompts:0.5-1").exit_code == 0
    wait_for(lambda: status_of(db, "a") == status_of(db, "b") == "draft", "two drafts")
    assert cli("start", "a").exit_code == 0
    wait_for(lambda: status_of(db, "a") == "running", "a running")

    refused = cli("start", "b")
    assert refused.exit_code == 1
    assert "cannot start 'b'" in refused.output
    assert "'a' and 'b' overlap in namespace 'prompts' on [0.5, 0.6)" in refused.output
    assert status_of(db, "b") == "draft"

    (created_at,) = rows(db, "SELECT created_at FROM experiments WHERE key = 'b'")[0]
    fixed = create_tone(cli, "b", "--namespace", "prompts:0.6-1", "--replace")
    assert fixed.exit_code == 0, fixed.output
    assert "b: replaced draft" in fixed.output
    wait_for(lambda: rows(db, "SELECT namespace_start FROM experiments WHERE key = 'b'") == [(0.6,)], "replaced")
    assert rows(db, "SELECT created_at FROM experiments WHERE key = 'b'") == [(created_at,)]
    assert cli("start", "b").exit_code == 0


def test_show_prints_the_definition_and_exposures_per_variant(cli, db, settings, sink_running):
    assert create_tone(cli, "tone", "--min-sample-size", "2").exit_code == 0
    wait_for(lambda: status_of(db, "tone") == "draft", "the draft")
    exposures = exposures_store_sink(settings)
    events = [sample("exposure", experiment_key="tone", variant="control", user_id=f"u{i}",
                     time=T0 + timedelta(minutes=i)) for i in range(3)]
    events.append(sample("exposure", experiment_key="tone", variant="treatment", user_id="u0", time=T0))
    exposures.write([exposures.decode(encode("exposure", e)) for e in events])

    shown = cli("show", "tone")
    assert shown.exit_code == 0, shown.output
    assert shown.output.startswith("tone  (draft, owner ml@example.com)")
    assert "control          weight 0.5  prompt_version=support-v11  (control)" in shown.output
    assert "guardrail metrics: latency_p95_ms, cost_per_request, error_rate" in shown.output
    control = next(l for l in shown.output.splitlines() if l.startswith("  control ") and "users" in l)
    assert control.split()[1:5] == ["3", "users", "4", "exposures"]  # u0 twice: treatment first, then control
    assert "1 of them also saw another variant" in shown.output
    assert "below min_sample_size 2: treatment" in shown.output

    as_json = cli("show", "tone", "--json")
    assert json.loads(as_json.output)["key"] == "tone"
    missing = cli("show", "nope")
    assert missing.exit_code == 1 and "no experiment 'nope'" in missing.output


# -- the experiments store ----------------------------------------------------------


@pytest.fixture
def store(db):
    s = ExperimentStore(db)
    yield s
    s.close()


def version(status: str, hours: int, **overrides) -> dict:
    return sample("experiment", status=status, updated_at=T0 + timedelta(hours=hours), **overrides)


def test_newest_updated_at_wins_whatever_the_order(store, db):
    draft, running, stopped = version("draft", 0), version("running", 1), version("stopped", 2)
    result = store.write([stopped])
    assert (result.inserted, result.updated) == (1, 0)
    assert store.write([running, draft]).updated == 0, "older versions never replace a newer one"
    (row,) = rows(db, "SELECT status, updated_at, started_at, stopped_at FROM experiments")
    assert row == ("stopped", T0 + timedelta(hours=2), T0 + timedelta(hours=1), T0 + timedelta(hours=2))
    assert rows(db, "SELECT count(*) FROM experiment_versions") == [(3,)]


def test_redelivery_changes_nothing(store, db):
    batch = [version("draft", 0), version("running", 1)]
    store.write(batch)
    before = rows(db, "SELECT * FROM experiments"), rows(db, "SELECT * FROM experiment_versions")
    result = store.write(batch)
    assert (result.inserted, result.updated) == (0, 0)
    assert (rows(db, "SELECT * FROM experiments"), rows(db, "SELECT * FROM experiment_versions")) == before


def test_columns_hold_the_definition(store, db):
    store.write([version("running", 1, targeting='{"plan": "pro"}')])
    with psycopg.connect(db) as conn, conn.cursor(row_factory=psycopg.rows.dict_row) as cur:
        row = cur.execute("SELECT * FROM experiments").fetchone()
    assert row["variants"][1] == {"name": "friendly", "weight": 0.5, "payload": {"prompt_version": "support-v12"}}
    assert (row["namespace_name"], row["namespace_start"], row["namespace_end"]) == ("prompts", 0.0, 0.5)
    assert row["guardrail_metrics"] == ["latency_p95_ms", "cost_usd"]
    assert row["targeting"] == '{"plan": "pro"}' and row["seed"] == "prompt-tone-1"


def test_a_tombstone_deletes_the_definition_but_keeps_history(store, db):
    store.write([version("draft", 0), sample("experiment", key="other")])
    tombstone = decode_experiment_message(b"prompt-tone", None)
    assert store.write([tombstone]).deleted == 1
    assert rows(db, "SELECT key FROM experiments") == [("other",)]
    assert rows(db, "SELECT count(*) FROM experiment_versions WHERE key = 'prompt-tone'") == [(1,)]
    # A definition after the tombstone in the same batch brings the key back.
    result = store.write([tombstone, version("running", 3)])
    assert (result.inserted, result.deleted) == (1, 0)
    assert status_of(db, "prompt-tone") == "running"


def test_a_tombstone_without_the_key_is_an_error_not_a_silent_drop(settings):
    with pytest.raises(ValueError, match="tombstone"):
        experiments_store_sink(settings).decode(None)


def test_a_row_the_database_rejects_is_a_domain_error(store, db):
    with pytest.raises(ExperimentStoreError, match=r"prompt-tone.*experiments_min_sample_size_check"):
        store.write([version("draft", 0, min_sample_size=0)])
    assert rows(db, "SELECT count(*) FROM experiment_versions") == [(0,)], "rolled back"
    assert store.write([version("draft", 0)]).inserted == 1


# -- the exposures store --------------------------------------------------------------


def exposure(user: str, minutes: int, variant: str = "control", **overrides) -> dict:
    return sample("exposure", user_id=user, variant=variant, time=T0 + timedelta(minutes=minutes), **overrides)


def test_exposures_upsert_first_and_last(db):
    store = ExposureStore(db)
    result = store.write([exposure("u1", 10), exposure("u2", 5), exposure("u1", 20)])
    assert (result.received, result.inserted, result.updated) == (3, 2, 0)
    result = store.write([exposure("u1", 1, "friendly", project="other", source="producer"), exposure("u1", 30)])
    assert (result.inserted, result.updated) == (0, 1)
    (u1,) = rows(db, "SELECT variant, project, source, first_exposed_at, last_exposed_at, exposure_count, "
                     "variants_seen FROM exposures WHERE user_id = 'u1'")
    assert u1 == ("friendly", "other", "producer", T0 + timedelta(minutes=1), T0 + timedelta(minutes=30), 4,
                  ["control", "friendly"])
    store.close()


def test_redelivered_exposures_keep_everything_but_the_count(db):
    store = ExposureStore(db)
    batch = [exposure("u1", 10), exposure("u1", 12, "friendly"), exposure("u2", 5)]
    store.write(batch)
    columns = "user_id, variant, project, source, first_exposed_at, last_exposed_at, variants_seen"
    before = rows(db, f"SELECT {columns} FROM exposures ORDER BY user_id")
    store.write(batch)
    assert rows(db, f"SELECT {columns} FROM exposures ORDER BY user_id") == before
    assert rows(db, "SELECT exposure_count FROM exposures ORDER BY user_id") == [(4,), (2,)], "an upper bound"
    store.close()


def test_exposures_sink_reads_the_topic(settings, producer, bootstrap, topic_factory, db):
    topic = topic_factory("exposures")
    for i in range(50):
        e = exposure(f"u{i % 20}", i, "control" if i % 20 < 10 else "friendly")
        producer.produce(topic, key=e["user_id"].encode(), value=encode("exposure", e))
    producer.flush(30)
    sink = exposures_store_sink(settings)
    assert sink.topics == ("llm.exposures",)
    messages = consume(bootstrap, topic, 50, timeout_s=20)
    sink.write([sink.decode(m.value()) for m in messages])
    assert rows(db, "SELECT variant, count(*), sum(exposure_count)::bigint FROM exposures GROUP BY variant "
                    "ORDER BY variant") == [("control", 10, 30), ("friendly", 10, 20)]
