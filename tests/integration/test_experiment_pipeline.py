"""An A/B experiment end to end on real services, as a team would run it.

The producer asks the library (:class:`ExperimentClient`, definitions read
from ``llm.experiments``) for each user's variant *before* the LLM call and
records it on the span; real workers do the rest: ``ingest`` (checks the
variant, emits exposures), ``metrics`` and ``metrics-store`` (per-variant
sums), ``experiments-store`` and ``exposures-store`` (tables) and
``experiment-results`` (the statistics, every few seconds).

Two experiments run at once: one where the treatment really fails less
(the engine must say "ship" it), and one where a bug loses 45 % of the
treatment's users before they reach the LLM (the engine must flag the
sample ratio mismatch and not declare a winner).
"""
from __future__ import annotations

import random
import socket
import uuid
from datetime import UTC, datetime, timedelta

import psycopg

from processors.experiments import prompt_ab
from processors.experiments.client import ExperimentClient
from processors.topics import (
    EXPERIMENTS,
    EXPOSURES,
    FEEDBACK,
    FEEDBACK_ENRICHED,
    METRIC_WINDOWS,
    OTLP_SPANS,
    SPANS,
    SPANS_ENRICHED,
)
from schemas.codec import encode
from schemas.samples import sample
from sinks.migrate import migrate
from tests.integration.helpers import skip_backlog
from tests.integration.workers import WorkerProcess, wait_until, worker_env

WORKERS = ("ingest", "metrics", "metrics-store", "metrics-compactor", "experiments-store", "exposures-store",
           "experiment-results")


def _port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _latest(db: str, key: str) -> tuple[str, str, bool] | None:
    with psycopg.connect(db) as conn:
        row = conn.execute(
            "SELECT decision, verdict_variant, srm_flagged FROM experiment_results"
            " WHERE experiment_key = %s ORDER BY computed_at DESC LIMIT 1", (key,)).fetchone()
    return row


def test_an_injected_effect_is_shipped_and_an_injected_srm_is_flagged(bootstrap, producer, fresh_database, tmp_path):
    migrate(fresh_database)
    run = uuid.uuid4().hex[:8]
    effect = prompt_ab(f"e2e-effect-{run}", "ml@example.com", "v1", "v2", primary_metric="success_rate",
                       secondary_metrics=(), guardrail_metrics=(), min_sample_size=100, status="running")
    srm = prompt_ab(f"e2e-srm-{run}", "ml@example.com", "v1", "v2", primary_metric="success_rate",
                    secondary_metrics=(), guardrail_metrics=(), min_sample_size=100, status="running")
    for exp in (effect, srm):
        producer.produce(EXPERIMENTS.name, key=exp.key.encode(), value=encode("experiment", exp.to_record()))
    producer.flush(30)

    for group, topics in (("ingest", [SPANS.name, OTLP_SPANS.name, FEEDBACK.name]),
                          ("metrics", [SPANS_ENRICHED.name, FEEDBACK_ENRICHED.name]),
                          ("metrics-store", [METRIC_WINDOWS.name]),
                          ("exposures-store", [EXPOSURES.name])):
        skip_backlog(bootstrap, f"llmpulse-{group}", topics)
    env = worker_env(bootstrap, fresh_database, tmp_path, LLMPULSE_RESULTS_INTERVAL_S="3")
    workers = [WorkerProcess(name, env, tmp_path, _port()).start() for name in WORKERS]
    try:
        client = ExperimentClient.from_kafka(bootstrap)  # what an application does at start-up
        assert client.variant(effect.key, "anyone") in ("control", "treatment")
        rng = random.Random(5)
        sent = 0
        for u in range(1200):
            user = f"user-{run}-{u}"
            variants = client.experiments_for(user)
            variants = {k: v for k, v in variants.items() if k in (effect.key, srm.key)}
            if variants.get(srm.key) == "treatment" and rng.random() < 0.45:
                continue  # the bug: these users never reach the LLM, so are never exposed
            for _ in range(4):
                p_error = 0.20 if variants.get(effect.key) == "control" else 0.08
                now = datetime.now(UTC)
                trace_id = uuid.uuid4().hex
                span = sample("span", trace_id=trace_id, user_id=user, experiments=variants, parent_span_id=None,
                              status="error" if rng.random() < p_error else "ok",
                              start_time=now - timedelta(seconds=1), end_time=now)
                producer.produce(SPANS.name, key=trace_id.encode(), value=encode("span", span))
                sent += 1
            producer.poll(0)
        producer.flush(60)

        wait_until(lambda: (_latest(fresh_database, effect.key) or ("",))[0] == "ship"
                   and (_latest(fresh_database, srm.key) or ("", "", False))[2],
                   240, "a ship verdict for the effect and an SRM flag", workers)
        decision, variant, flagged = _latest(fresh_database, effect.key)
        assert (decision, variant, flagged) == ("ship", "treatment", False)
        decision, variant, flagged = _latest(fresh_database, srm.key)
        assert flagged and decision == "srm" and variant is None
        with psycopg.connect(fresh_database) as conn:
            exposed = dict(conn.execute(
                "SELECT variant, count(*) FROM exposures WHERE experiment_key = %s GROUP BY 1", (srm.key,)).fetchall())
        assert exposed["treatment"] < 0.7 * exposed["control"]
    finally:
        for worker in workers:
            worker.stop()
        for exp in (effect, srm):  # tombstones: no later run keeps assigning to them
            producer.produce(EXPERIMENTS.name, key=exp.key.encode(), value=None)
        producer.flush(30)
