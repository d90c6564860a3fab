"""Seed experiments, exposures and metric windows the way the stores fill them.

Used by the experiment-results tests and the Experiments dashboard test (and
callable from tests/integration/test_dashboards.py's seeded database):
:func:`seed_experiment` writes one running experiment, its exposures and its
``'1d'`` metric windows with a chosen effect, from seeded random draws, so
the sums carry real variances.
"""
from __future__ import annotations

import json
import zlib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace
from datetime import datetime, timedelta

import numpy as np
import psycopg

from processors.experiments.results import VariantSums, compute_results
from processors.experiments.results_db import design_of, load_exposures, running_experiments, write_result

__all__ = ["ArmTruth", "seed_dashboard_experiments", "seed_experiment", "set_exposures"]


@dataclass(frozen=True)
class ArmTruth:
    """True per-request behaviour of one arm, and how many users and requests it gets."""

    users: int
    requests: int
    thumbs_up_rate: float = 0.10
    error_rate: float = 0.01
    latency_ms: float = 900.0
    cost_usd: float = 0.002
    rating: float = 4.0


def _insert_experiment(conn: psycopg.Connection, key: str, arms: Sequence[str], started_at: datetime,
                       primary: str, guardrails: Sequence[str], secondary: Sequence[str],
                       min_sample_size: int, weights: Sequence[float] | None) -> None:
    weights = list(weights or [1 / len(arms)] * len(arms))
    variants = [{"name": a, "weight": w, "payload": {"prompt_version": f"{key}-{a}"}}
                for a, w in zip(arms, weights)]
    conn.execute(
        """INSERT INTO experiments (key, hypothesis, variants, coverage, primary_metric,
               secondary_metrics, guardrail_metrics, min_sample_size, status, owner, seed,
               hash_version, created_at, updated_at, started_at)
           VALUES (%s, %s, %s, 1.0, %s, %s, %s, %s, 'running', 'ml@example.com', '', 2, %s, %s, %s)""",
        (key, f"{arms[-1]} beats {arms[0]}", json.dumps(variants), primary, list(secondary),
         list(guardrails), min_sample_size, started_at, started_at, started_at),
    )


def set_exposures(conn: psycopg.Connection, key: str, users: Mapping[str, int], started_at: datetime,
                  project: str = "support-bot", inconsistent: int = 0) -> None:
    """Replace the exposures of ``key``: ``users[variant]`` users, spread over time since ``started_at``.

    ``inconsistent`` extra users were seen in two variants (left out of the analysis).
    """
    conn.execute("DELETE FROM exposures WHERE experiment_key = %s", (key,))
    arms = list(users)
    for arm, n in users.items():
        conn.execute(
            """INSERT INTO exposures (experiment_key, user_id, variant, project, source,
                   first_exposed_at, last_exposed_at, exposure_count, variants_seen)
               SELECT %(key)s, %(arm)s || '-u' || i, %(arm)s, %(project)s, 'processor',
                      %(t0)s + (i %% 240) * interval '1 minute', %(t0)s + interval '5 hours', 3,
                      ARRAY[%(arm)s]
               FROM generate_series(1, %(n)s) AS i""",
            {"key": key, "arm": arm, "project": project, "t0": started_at, "n": n},
        )
    if inconsistent and len(arms) > 1:
        conn.execute(
            """INSERT INTO exposures (experiment_key, user_id, variant, project, source,
                   first_exposed_at, last_exposed_at, exposure_count, variants_seen)
               SELECT %s, 'mixed-u' || i, %s, %s, 'processor', %s, %s, 2, %s
               FROM generate_series(1, %s) AS i""",
            (key, arms[0], project, started_at, started_at, sorted(arms[:2]), inconsistent),
        )


_WINDOW = """INSERT INTO metric_windows (
    resolution, window_start, window_seconds, series, project, model, provider, prompt_version, kind,
    cohort, variant, request_count, error_count, input_tokens, output_tokens, cached_tokens, usage_count,
    cost_usd, cost_count, feedback_count, rating_sum, rating_count, thumbs_up, thumbs_count, late_events,
    sketch, partitions, final, cost_sq_sum, rating_sq_sum, latency_ms_sum, latency_ms_sq_sum)
VALUES ('1d', %(day)s, 86400, %(series)s, %(project)s, 'gpt-4o-mini', 'openai', %(pv)s, %(kind)s,
    'unknown', %(variant)s, %(requests)s, %(errors)s, %(tokens)s, %(tokens)s, 0, %(requests)s,
    %(cost)s, %(requests)s, %(thumbs)s, %(rating_sum)s, %(ratings)s, %(up)s, %(thumbs)s, 0,
    ''::bytea, 1440, false, %(cost_sq)s, %(rating_sq)s, %(lat)s, %(lat_sq)s)"""


def _draw(truth: ArmTruth, rng: np.random.Generator) -> VariantSums:
    """Sums of ``truth.requests`` simulated LLM calls, half with a thumb, a quarter rated."""
    n = truth.requests
    lat = rng.lognormal(np.log(truth.latency_ms), 0.5, n)
    cost = rng.gamma(4.0, truth.cost_usd / 4.0, n)
    thumbs, ratings = n // 2, n // 4
    rating = np.clip(np.round(rng.normal(truth.rating, 0.9, ratings)), 1, 5)
    return VariantSums(
        requests=n, errors=int(rng.binomial(n, truth.error_rate)),
        latency_ms_sum=float(lat.sum()), latency_ms_sq_sum=float((lat**2).sum()),
        cost_count=n, cost_usd=float(cost.sum()), cost_sq_sum=float((cost**2).sum()),
        usage_count=n, tokens=600 * n,
        rating_count=ratings, rating_sum=float(rating.sum()), rating_sq_sum=float((rating**2).sum()),
        thumbs_count=thumbs, thumbs_up=int(rng.binomial(thumbs, truth.thumbs_up_rate)),
    )


def _window_rows(key: str, arm: str, sums: VariantSums, day: datetime, project: str,
                 other: str | None) -> list[dict]:
    """An llm row (calls, latency, cost) and a root-span row (feedback) holding ``sums``."""
    llm = {"kind": "llm", "requests": sums.requests, "errors": sums.errors, "tokens": sums.tokens / 2,
           "cost": sums.cost_usd, "cost_sq": sums.cost_sq_sum, "lat": sums.latency_ms_sum,
           "lat_sq": sums.latency_ms_sq_sum, "thumbs": 0, "up": 0, "ratings": 0, "rating_sum": 0.0,
           "rating_sq": 0.0}
    # Feedback is counted under the trace's root span, here an agent span.
    root = {"kind": "agent", "requests": sums.requests, "errors": 0, "tokens": 0, "cost": 0.0,
            "cost_sq": 0.0, "lat": 0.0, "lat_sq": 0.0, "thumbs": sums.thumbs_count, "up": sums.thumbs_up,
            "ratings": sums.rating_count, "rating_sum": sums.rating_sum, "rating_sq": sums.rating_sq_sum}
    variant = ",".join(sorted([f"{key}:{arm}"] + ([other] if other else [])))
    return [{**part, "day": day, "series": f"project={project}|kind={part['kind']}|variant={variant}",
             "project": project, "pv": f"{key}-{arm}", "variant": variant} for part in (llm, root)]


def seed_experiment(
    conn: psycopg.Connection,
    key: str,
    truths: Mapping[str, ArmTruth],
    *,
    started_at: datetime,
    primary: str = "thumbs_up_ratio",
    guardrails: Sequence[str] = ("error_rate", "latency_p95_ms"),
    secondary: Sequence[str] = ("rating", "cost_per_request"),
    min_sample_size: int = 100,
    weights: Sequence[float] | None = None,
    project: str = "support-bot",
    seed: int = 7,
    windows: bool = True,
) -> dict[str, VariantSums]:
    """One running experiment with exposures and ``'1d'`` windows; the first arm is control.

    Half of each arm's requests are also tagged with a second, unrelated
    experiment (``"other-exp:a,<key>:<arm>"``), as spans in two experiments
    are, so readers must split the variant dimension. Returns each arm's
    total sums; ``windows=False`` draws them without writing metric_windows
    (a database shared with other dashboards' checks keeps its traffic as is).
    """
    rng = np.random.default_rng(seed + zlib.crc32(key.encode()))
    arms = list(truths)
    _insert_experiment(conn, key, arms, started_at, primary, guardrails, secondary, min_sample_size, weights)
    set_exposures(conn, key, {a: t.users for a, t in truths.items()}, started_at, project)
    day = started_at.replace(hour=0, minute=0, second=0, microsecond=0)
    rows, totals = [], {}
    for arm, truth in truths.items():
        half = replace(truth, requests=truth.requests // 2)
        parts = [(_draw(half, rng), day, None), (_draw(half, rng), day, "other-exp:a"),
                 # The next day too, so that sums over several 1d windows are exercised.
                 (_draw(replace(truth, requests=200), rng), day + timedelta(days=1), None)]
        totals[arm] = sum((p for p, _, _ in parts), VariantSums())
        for sums, when, other in parts:
            rows += _window_rows(key, arm, sums, when, project, other)
    if windows:
        with conn.cursor() as cur:
            cur.executemany(_WINDOW, rows)
    return totals


def seed_dashboard_experiments(conn: psycopg.Connection, now: datetime, computations: int = 5) -> str:
    """Two running experiments with results computed hourly up to ``now``; returns the winner's key.

    ``"tone"`` has a real effect (friendly ships), ``"older"`` too little
    data for any verdict. The results come from the real code
    (:func:`~processors.experiments.results.compute_results`), on sums that
    grow with each computation as a running experiment's do.
    """
    start = now - timedelta(hours=computations)
    truths = {
        "tone": {"control": ArmTruth(users=3000, requests=40000),
                 "friendly": ArmTruth(users=3000, requests=40000, thumbs_up_rate=0.13)},
        "older": {"control": ArmTruth(users=500, requests=900), "b": ArmTruth(users=500, requests=900)},
    }
    for key, arms in truths.items():
        sums = seed_experiment(conn, key, arms, started_at=start, windows=False)
        [row] = [r for r in running_experiments(conn) if r["key"] == key]
        exposures = load_exposures(conn, key)
        design = design_of(row, exposures)
        for i in range(1, computations + 1):
            k = i / computations
            scaled = {v: VariantSums(**{f: x * k for f, x in arm.__dict__.items()}) for v, arm in sums.items()}
            users = {v: round(n * k) for v, n in exposures.users.items()}
            write_result(conn, compute_results(design, scaled, users,
                                               now - timedelta(hours=computations - i, minutes=1)))
    return "tone"
