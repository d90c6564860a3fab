"""The feedback store against a real PostgreSQL: idempotent upserts, constraint errors as domain errors."""
from __future__ import annotations

from datetime import UTC, datetime, timedelta

import psycopg
import pytest

from processors.generator import TrafficModel
from schemas.codec import encode
from schemas.samples import sample
from sinks.feedback_store import FeedbackStore, FeedbackStoreError, feedback_store_sink
from sinks.migrate import migrate

START = datetime(2025, 6, 1, 9, 0, tzinfo=UTC)


@pytest.fixture
def db(fresh_database) -> str:
    migrate(fresh_database)
    return fresh_database


@pytest.fixture
def store(db):
    s = FeedbackStore(db)
    yield s
    s.close()


def generated_feedback(n: int, seed: int = 5) -> list[dict]:
    model = TrafficModel(seed=seed, start=START, feedback_rate=1.0)
    out: list[dict] = []
    while len(out) < n:
        fb = model.feedback_for(model.trace())
        if fb is not None:
            out.append(fb)
    return out


def table(url: str) -> list[tuple]:
    with psycopg.connect(url) as conn:
        return conn.execute("SELECT * FROM feedback ORDER BY feedback_id, time").fetchall()


def test_generated_feedback_round_trips(store, db):
    events = generated_feedback(300)
    result = store.write(events)
    assert (result.received, result.inserted, result.updated) == (300, 300, 0)
    with psycopg.connect(db) as conn, conn.cursor(row_factory=psycopg.rows.dict_row) as cur:
        got = {r["feedback_id"]: r for r in cur.execute("SELECT * FROM feedback")}
    for fb in events:
        row = got[fb["feedback_id"]]
        assert {k: row[k] for k in fb} == fb
    assert any(r["rating"] is None for r in got.values()), "thumbs-only feedback has no rating"
    assert any(r["thumbs"] is None for r in got.values())


def test_replaying_a_batch_changes_nothing(store, db):
    events = generated_feedback(200)
    store.write(events[:150])
    before = table(db)  # ingested_at included
    assert store.write(events[:150]) == store.write(events[:150])
    assert store.write(events[:150]).inserted == 0
    assert store.write(events[:150]).updated == 0
    assert table(db) == before
    result = store.write(events[100:])  # overlapping batch: only the new ones are added
    assert (result.inserted, result.updated) == (50, 0)
    assert len(table(db)) == 200


def test_a_corrected_event_replaces_the_values(store, db):
    store.write([sample("feedback")])
    (ingested,) = [r[-1] for r in table(db)]
    result = store.write([sample("feedback", rating=2.0, thumbs=False, comment="Actually wrong.")])
    assert (result.inserted, result.updated) == (0, 1)
    with psycopg.connect(db) as conn:
        row = conn.execute("SELECT rating, thumbs, comment, ingested_at FROM feedback").fetchone()
    assert row == (2.0, False, "Actually wrong.", ingested)


def test_duplicates_in_one_batch_keep_the_last(store, db):
    first, second = sample("feedback", rating=1.0), sample("feedback", rating=5.0)
    result = store.write([first, second])
    assert (result.received, result.inserted) == (2, 1)
    with psycopg.connect(db) as conn:
        assert conn.execute("SELECT rating FROM feedback").fetchall() == [(5.0,)]


@pytest.mark.parametrize(
    ("overrides", "constraint"),
    [
        ({"rating": 7.0}, "feedback_rating_check"),
        ({"rating": 0.5}, "feedback_rating_check"),
    ],
)
def test_constraint_errors_are_domain_errors_naming_the_batch(store, db, overrides, constraint):
    good = sample("feedback", feedback_id="fb-good")
    bad = sample("feedback", feedback_id="fb-bad", **overrides)
    with pytest.raises(FeedbackStoreError, match=rf"batch of 2 feedback events \(fb-bad, fb-good\).*{constraint}") as info:
        store.write([good, bad])
    assert isinstance(info.value.__cause__, psycopg.errors.CheckViolation)
    assert table(db) == [], "the whole batch was rolled back"
    assert store.write([good]).inserted == 1, "the store recovers on the same connection"


def test_boundary_ratings_are_accepted(store, db):
    events = [sample("feedback", feedback_id=f"fb-{r}", rating=r) for r in (1.0, 5.0, None)]
    assert store.write(events).inserted == 3


def test_unmigrated_database_is_a_domain_error(fresh_database):
    store = FeedbackStore(fresh_database)
    with pytest.raises(FeedbackStoreError, match="llmpulse db migrate"):
        store.write([sample("feedback")])
    migrate(fresh_database)
    assert store.write([sample("feedback")]).inserted == 1
    store.close()


def test_unreachable_database_is_transient():
    with pytest.raises(psycopg.OperationalError):
        FeedbackStore("postgresql://llmpulse@127.0.0.1:1/x").write([sample("feedback")])


def test_indexes_serve_trace_and_project_lookups(db):
    with psycopg.connect(db) as conn:
        indexes = {r[0] for r in conn.execute("SELECT indexname FROM pg_indexes WHERE tablename = 'feedback'")}
    assert {"feedback_pkey", "feedback_trace_id_idx", "feedback_project_time_idx"} <= indexes


def test_sink_decodes_and_writes(db):
    from pydantic import SecretStr

    from processors.settings import Settings

    sink = feedback_store_sink(Settings(database_url=SecretStr(db)))
    assert sink.name == "feedback-store" and sink.topics == ("llm.feedback.enriched",)
    events = generated_feedback(20)
    decoded = [sink.decode(encode("feedback", fb)) for fb in events]
    assert decoded == events
    assert sink.write(decoded).inserted == 20
    assert sink.write(decoded).inserted == 0
    later = sample("feedback", time=START + timedelta(days=1))
    assert sink.write([sink.decode(encode("feedback", later))]).inserted == 1
