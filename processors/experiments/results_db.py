"""Database side of experiment results: read the inputs, write the rows.

Reads ``experiments`` (running definitions), ``exposures`` (users per
variant, for the SRM test) and ``metric_windows`` (the sums behind every
metric), writes ``experiment_results`` (migration 0007). Each function takes
an open :class:`psycopg.Connection`; the caller owns transactions.

Sums come from the ``'1d'`` rows of ``metric_windows``: the metrics store
recomputes them from the minute rows on every write, so they hold the whole
experiment in a few rows per series. A span tagged with several experiments
has a ``variant`` such as ``"exp-a:control,exp-b:v2"``; each experiment
counts it under its own arm. Request-level metrics (errors, latency, cost)
use ``kind = 'llm'`` rows; ratings and thumbs are counted under the trace's
root span, whatever its kind, so they use every row.
"""
from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

import psycopg
from psycopg.rows import dict_row

from processors.experiments.results import ExperimentDesign, ExperimentResult, ResultRow, VariantSums
from processors.experiments.results_alerts import PreviousDecision

__all__ = [
    "ExposureCounts",
    "design_of",
    "latest_results",
    "load_exposures",
    "load_sums",
    "previous_decision",
    "running_experiments",
    "write_result",
]

_RUNNING = """
SELECT key, variants, primary_metric, secondary_metrics, guardrail_metrics,
       min_sample_size, started_at
FROM experiments
WHERE status = 'running'
ORDER BY key
"""

_SUMS = """
SELECT substr(arm, length(%(key)s) + 2) AS arm,
       sum(request_count)     FILTER (WHERE kind = 'llm') AS requests,
       sum(error_count)       FILTER (WHERE kind = 'llm') AS errors,
       sum(latency_ms_sum)    FILTER (WHERE kind = 'llm') AS latency_ms_sum,
       sum(latency_ms_sq_sum) FILTER (WHERE kind = 'llm') AS latency_ms_sq_sum,
       sum(cost_count)        FILTER (WHERE kind = 'llm') AS cost_count,
       sum(cost_usd)          FILTER (WHERE kind = 'llm') AS cost_usd,
       sum(cost_sq_sum)       FILTER (WHERE kind = 'llm') AS cost_sq_sum,
       sum(usage_count)       FILTER (WHERE kind = 'llm') AS usage_count,
       sum(input_tokens + output_tokens) FILTER (WHERE kind = 'llm') AS tokens,
       sum(rating_count)  AS rating_count,
       sum(rating_sum)    AS rating_sum,
       sum(rating_sq_sum) AS rating_sq_sum,
       sum(thumbs_count)  AS thumbs_count,
       sum(thumbs_up)     AS thumbs_up
FROM metric_windows
CROSS JOIN LATERAL unnest(string_to_array(variant, ',')) AS arm
WHERE resolution = '1d'
  AND left(arm, length(%(key)s) + 1) = %(key)s || ':'
  -- Whole days from the start day: 1d windows begin at midnight UTC, and a
  -- span carries the experiment's tag only once the experiment runs.
  AND (%(since)s::timestamptz IS NULL
       OR window_start >= date_trunc('day', %(since)s::timestamptz, 'UTC'))
GROUP BY 1
"""

_EXPOSURES = """
SELECT variant,
       count(*) FILTER (WHERE cardinality(variants_seen) = 1) AS users,
       count(*) FILTER (WHERE cardinality(variants_seen) > 1) AS inconsistent,
       mode() WITHIN GROUP (ORDER BY project) AS project
FROM exposures
WHERE experiment_key = %s
GROUP BY variant
"""

_PREVIOUS = """
SELECT decision, verdict_variant
FROM experiment_results
WHERE experiment_key = %s AND computed_at < %s
ORDER BY computed_at DESC
LIMIT 1
"""


def running_experiments(conn: psycopg.Connection) -> list[dict[str, Any]]:
    """``experiments`` rows with status ``running``, by key."""
    with conn.cursor(row_factory=dict_row) as cur:
        return list(cur.execute(_RUNNING))


def load_sums(conn: psycopg.Connection, key: str, since: datetime | None = None) -> dict[str, VariantSums]:
    """Per-variant sums of experiment ``key`` from the ``'1d'`` windows since ``since``'s day."""
    with conn.cursor(row_factory=dict_row) as cur:
        rows = cur.execute(_SUMS, {"key": key, "since": since}).fetchall()
    return {r.pop("arm"): VariantSums(**r) for r in rows}


@dataclass(frozen=True)
class ExposureCounts:
    """Users per variant with a consistent assignment, and what was left out.

    ``inconsistent`` counts users seen in several variants; ``project`` is
    the project most users were exposed in (alerts are routed by it).

    >>> ExposureCounts({"a": 10, "b": 12}).users["b"]
    12
    """

    users: dict[str, int] = field(default_factory=dict)
    inconsistent: int = 0
    project: str | None = None


def load_exposures(conn: psycopg.Connection, key: str) -> ExposureCounts:
    """Users per variant of experiment ``key``; users seen in several variants are left out.

    A user exposed to two variants (changed seed, a buggy producer) belongs
    to neither arm; counting them would bias both.
    """
    users: dict[str, int] = {}
    inconsistent = 0
    projects: dict[str, int] = {}
    for variant, n, bad, project in conn.execute(_EXPOSURES, (key,)):
        users[variant] = int(n)
        inconsistent += int(bad)
        projects[project] = projects.get(project, 0) + int(n) + int(bad)
    project = max(sorted(projects), key=projects.__getitem__) if projects else None
    return ExposureCounts(users, inconsistent, project)


def previous_decision(conn: psycopg.Connection, key: str, before: datetime) -> PreviousDecision | None:
    """Decision of the newest computation of ``key`` before ``before``; None if none."""
    row = conn.execute(_PREVIOUS, (key, before)).fetchone()
    return None if row is None else PreviousDecision(row[0], row[1])


def write_result(conn: psycopg.Connection, result: ExperimentResult) -> int:
    """Insert every row of ``result``; returns the number written.

    A recomputation with the same ``computed_at`` (a retried batch) replaces
    nothing and fails nothing: rows are immutable history.
    """
    columns = ResultRow.columns()
    sql = (f"INSERT INTO experiment_results ({', '.join(columns)}) "
           f"VALUES ({', '.join(['%s'] * len(columns))}) ON CONFLICT DO NOTHING")
    with conn.cursor() as cur:
        cur.executemany(sql, [r.values() for r in result.rows])
    return len(result.rows)


def latest_results(conn: psycopg.Connection, key: str) -> list[dict[str, Any]]:
    """Rows of the newest computation of ``key`` ([] when never computed).

    Reads the table rather than ``experiment_results_latest`` so that the
    results of an experiment whose definition was deleted stay readable.
    """
    with conn.cursor(row_factory=dict_row) as cur:
        return list(cur.execute(
            "SELECT * FROM experiment_results WHERE experiment_key = %(k)s AND computed_at = "
            "(SELECT max(computed_at) FROM experiment_results WHERE experiment_key = %(k)s) "
            "ORDER BY CASE role WHEN 'primary' THEN 0 WHEN 'guardrail' THEN 1 ELSE 2 END, "
            "metric, NOT is_control, variant",
            {"k": key},
        ))


def design_of(row: Mapping[str, Any], exposures: ExposureCounts) -> ExperimentDesign:
    """The analysis design of an ``experiments`` row, routed to the exposures' project.

    >>> row = {"key": "t", "primary_metric": "rating", "min_sample_size": 5,
    ...        "variants": [{"name": "a", "weight": 0.5}, {"name": "b", "weight": 0.5}]}
    >>> design_of(row, ExposureCounts(project="bot")).project
    'bot'
    """
    return ExperimentDesign.from_row(row, project=exposures.project)
