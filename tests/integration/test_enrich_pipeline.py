"""Cohorts and variants on real topics: profiles and experiments from compacted
topics, spans and feedback tagged by a real ingest worker, one exposure per
(user, experiment), mismatches flagged, and the tables rebuilt after a restart."""
from __future__ import annotations

import socket
import uuid
from datetime import UTC, datetime, timedelta

import pytest

from processors.experiments import prompt_ab
from processors.topics import (
    EXPERIMENTS,
    EXPOSURES,
    FEEDBACK,
    FEEDBACK_ENRICHED,
    OTLP_SPANS,
    SPANS,
    SPANS_ENRICHED,
    USERS,
)
from schemas.codec import decode, encode
from schemas.samples import sample
from tests.integration.helpers import consume, skip_backlog
from tests.integration.workers import WorkerProcess, worker_env


def _port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _profile(user_id: str, plan: str, at: datetime) -> dict:
    return {**sample("user_profile"), "user_id": user_id, "plan": plan, "updated_at": at}


@pytest.fixture
def run_id():
    return uuid.uuid4().hex[:10]


@pytest.fixture
def experiment(producer, run_id):
    exp = prompt_ab(f"enrich-test-{run_id}", "ml@example.com", "v1", "v2", status="running")
    producer.produce(EXPERIMENTS.name, key=exp.key.encode(), value=encode("experiment", exp.to_record()))
    producer.flush(30)
    yield exp
    # A tombstone: later runs (and the demo) must not keep assigning to it.
    producer.produce(EXPERIMENTS.name, key=exp.key.encode(), value=None)
    producer.flush(30)


def _send_span(producer, user_id: str, experiments: dict | None = None) -> str:
    trace_id = uuid.uuid4().hex
    span = sample("span", trace_id=trace_id, user_id=user_id, experiments=experiments or {}, parent_span_id=None,
                  start_time=datetime.now(UTC) - timedelta(seconds=2), end_time=datetime.now(UTC))
    producer.produce(SPANS.name, key=trace_id.encode(), value=encode("span", span))
    return trace_id


def _enriched(bootstrap: str, trace_ids: set[str]) -> dict[str, dict]:
    found = consume(bootstrap, SPANS_ENRICHED.name, len(trace_ids), timeout_s=90,
                    where=lambda m: m.key().decode() in trace_ids)
    return {m.key().decode(): decode(m.value(), expected="span") for m in found}


def test_spans_and_feedback_get_cohorts_variants_and_one_exposure(bootstrap, producer, tmp_path, run_id, experiment):
    known, unknown = f"user-{run_id}-a", f"user-{run_id}-b"
    now = datetime.now(UTC)
    producer.produce(USERS.name, key=known.encode(), value=encode("user_profile", _profile(known, "pro", now)))
    producer.flush(30)
    skip_backlog(bootstrap, "llmpulse-ingest", [SPANS.name, OTLP_SPANS.name, FEEDBACK.name])
    worker = WorkerProcess("ingest", worker_env(bootstrap, "", tmp_path), tmp_path, _port()).start()
    try:
        traces = [_send_span(producer, known), _send_span(producer, known), _send_span(producer, unknown)]
        fb = sample("feedback", feedback_id=uuid.uuid4().hex, trace_id=traces[0], user_id=known,
                    comment="call me on ann@example.com")
        producer.produce(FEEDBACK.name, key=traces[0].encode(), value=encode("feedback", fb))
        producer.flush(30)
        spans = _enriched(bootstrap, set(traces))
        assert len(spans) == 3, worker.log()
        computed = {t: spans[t]["experiments"][experiment.key] for t in traces}
        assert computed[traces[0]] == computed[traces[1]]  # sticky
        assert spans[traces[0]]["attributes"]["llmpulse.cohort"] == "pro"
        assert spans[traces[0]]["attributes"]["llmpulse.cohort.plan"] == "pro"
        assert spans[traces[2]]["attributes"]["llmpulse.cohort"] == "unknown"

        exposures = consume(bootstrap, EXPOSURES.name, 3, timeout_s=20,
                            where=lambda m: decode(m.value(), expected="exposure")["experiment_key"] == experiment.key)
        pairs = sorted((e["user_id"], e["variant"]) for e in (decode(m.value(), expected="exposure") for m in exposures))
        assert pairs == sorted([(known, computed[traces[0]]), (unknown, computed[traces[2]])])

        [tagged] = consume(bootstrap, FEEDBACK_ENRICHED.name, 1, timeout_s=30,
                           where=lambda m: decode(m.value(), expected="feedback")["feedback_id"] == fb["feedback_id"])
        tagged_fb = decode(tagged.value(), expected="feedback")
        assert tagged_fb["attributes"]["llmpulse.cohort"] == "pro"
        assert tagged_fb["attributes"][f"llmpulse.experiment.{experiment.key}"] == computed[traces[0]]
        assert "ann@example.com" not in tagged_fb["comment"]

        # A producer that served the other variant keeps it, flagged and counted.
        other = next(v.name for v in experiment.variants if v.name != computed[traces[0]])
        wrong = _send_span(producer, known, {experiment.key: other})
        producer.flush(30)
        span = _enriched(bootstrap, {wrong})[wrong]
        assert span["experiments"][experiment.key] == other
        assert span["attributes"][f"llmpulse.variant_mismatch.{experiment.key}"] == f"{other} != {computed[traces[0]]}"

        # The profile changes while the worker is down; the restarted worker
        # rebuilds its table from the compacted topic and sees the change.
        worker.stop()
        later = now + timedelta(seconds=1)
        producer.produce(USERS.name, key=known.encode(), value=encode("user_profile", _profile(known, "enterprise", later)))
        producer.flush(30)
        worker.start()
        after = _send_span(producer, known)
        producer.flush(30)
        assert _enriched(bootstrap, {after})[after]["attributes"]["llmpulse.cohort"] == "enterprise", worker.log()
    finally:
        worker.stop()
        producer.produce(USERS.name, key=known.encode(), value=None)
        producer.flush(30)
