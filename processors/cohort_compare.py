"""Compare cohorts over a time range of ``metric_windows``: the CLI's data side.

The per-cohort sufficient statistics come from the SQL function
``llmpulse_cohort_sums`` (``sinks/migrations/idempotent/0300_cohort_compare.sql``),
the same window selection that ``llmpulse_cohort_compare`` (the Grafana
function) reads, so the CLI and the dashboard can never look at different
windows. The statistics themselves are :mod:`processors.cohort_stats`
(scipy, statsmodels).

Examples
--------
>>> parse_since("7d"), parse_since("90m")
(datetime.timedelta(days=7), datetime.timedelta(seconds=5400))
>>> METRICS["cost"].label, METRICS["success_rate"].kind
('cost per span', 'rate')
"""
from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Literal

import psycopg

from processors.cohort_stats import (
    CohortRate,
    CohortStats,
    Comparison,
    compare_means,
    compare_rates,
)

__all__ = [
    "METRICS",
    "CohortSums",
    "Metric",
    "compare_cohorts",
    "fetch_sums",
    "parse_since",
]

# Longer than any retention of metric_windows, short enough that
# now() - since stays a valid timestamp.
MAX_SINCE = timedelta(days=3660)
_SINCE = re.compile(r"\s*(\d+)\s*([mhdw])\s*")
_UNIT = {"m": "minutes", "h": "hours", "d": "days", "w": "weeks"}


@dataclass(frozen=True, slots=True)
class Metric:
    """A comparable metric: its name in SQL, how to show it, and its kind.

    Examples
    --------
    >>> METRICS["rating"]
    Metric(name='rating', label='rating', unit='', kind='mean', counts='ratings')
    """

    name: str
    label: str
    unit: str
    kind: Literal["mean", "rate"]
    counts: str


#: The metrics ``llmpulse_cohort_sums`` knows, in the order the CLI lists them.
METRICS: dict[str, Metric] = {
    m.name: m
    for m in (
        Metric("success_rate", "success rate", "", "rate", "requests"),
        Metric("cost", "cost per span", "USD", "mean", "spans with a cost"),
        Metric("rating", "rating", "", "mean", "ratings"),
    )
}


@dataclass(frozen=True, slots=True)
class CohortSums:
    """One cohort's row of ``llmpulse_cohort_sums``.

    For ``success_rate`` ``total`` is the number of successes (an integer)
    and ``total_sq`` is None. ``skipped`` counts values left out because
    their windows predate the sums of squares (migration 0003).

    Examples
    --------
    >>> CohortSums("pro", 10, 9.0, None, 0).to_input("success_rate")
    CohortRate(name='pro', successes=9, trials=10)
    >>> CohortSums("pro", 2, 3.0, 5.0, 0).to_input("rating")
    CohortStats(name='pro', n=2, total=3.0, total_sq=5.0)
    """

    cohort: str
    n: int
    total: float
    total_sq: float | None
    skipped: int

    def to_input(self, metric: str) -> CohortRate | CohortStats:
        """The :mod:`processors.cohort_stats` input for ``metric``."""
        if METRICS[metric].kind == "rate":
            return CohortRate(self.cohort, int(self.total), self.n)
        return CohortStats(self.cohort, self.n, self.total, self.total_sq or 0.0)


def parse_since(text: str) -> timedelta:
    """A look-back such as ``90m``, ``24h``, ``7d`` or ``2w`` as a timedelta.

    Examples
    --------
    >>> parse_since(" 24h ")
    datetime.timedelta(days=1)
    >>> parse_since("7 days")
    Traceback (most recent call last):
    ...
    ValueError: cannot read --since '7 days': use a whole number and one unit, m (minutes), h (hours), d (days) or w (weeks), e.g. 90m, 24h, 7d
    """
    match = _SINCE.fullmatch(text)
    if not match:
        raise ValueError(
            f"cannot read --since {text!r}: use a whole number and one unit, m (minutes), "
            "h (hours), d (days) or w (weeks), e.g. 90m, 24h, 7d"
        )
    amount, unit = int(match.group(1)), match.group(2)
    if amount == 0:
        raise ValueError(f"--since {text!r} is an empty range: use a positive amount, e.g. 7d")
    try:
        since = timedelta(**{_UNIT[unit]: amount})
    except OverflowError:
        since = MAX_SINCE * 2
    if since > MAX_SINCE:
        raise ValueError(f"--since {text!r} is longer than {MAX_SINCE.days} days")
    return since


def check_metric(metric: str) -> Metric:
    """The :class:`Metric` called ``metric``; ValueError listing the valid ones.

    Examples
    --------
    >>> check_metric("latency")
    Traceback (most recent call last):
    ...
    ValueError: unknown metric 'latency': use one of success_rate, cost, rating
    """
    try:
        return METRICS[metric]
    except KeyError:
        raise ValueError(f"unknown metric {metric!r}: use one of {', '.join(METRICS)}") from None


_SUMS_SQL = (
    "SELECT cohort, n, total, total_sq, skipped FROM llmpulse_cohort_sums("
    "%(metric)s, %(since)s, project => %(project)s, kind => %(kind)s, until => %(until)s)"
)


def fetch_sums(
    conn: psycopg.Connection,
    metric: str,
    since: timedelta,
    *,
    project: str | None = None,
    kind: str = "llm",
    until: datetime | None = None,
) -> list[CohortSums]:
    """Per-cohort sums of ``metric`` over ``[until - since, until)`` (``until``: now).

    Cohorts come ordered by name (C collation), which decides ties for the
    default reference exactly as in SQL. ``kind`` filters ``success_rate``
    only; cost and rating count every kind of span.
    """
    check_metric(metric)
    rows = conn.execute(
        _SUMS_SQL,
        {"metric": metric, "since": since, "project": project, "kind": kind, "until": until},
    ).fetchall()
    return [CohortSums(c, int(n), float(t), None if sq is None else float(sq), int(s))
            for c, n, t, sq, s in rows]


def compare_cohorts(
    sums: Sequence[CohortSums],
    metric: str,
    *,
    reference: str | None = None,
    alpha: float = 0.05,
) -> Comparison:
    """The :mod:`processors.cohort_stats` comparison of fetched sums.

    Examples
    --------
    >>> sums = [CohortSums("free", 1000, 900.0, None, 0), CohortSums("pro", 500, 480.0, None, 0)]
    >>> cmp = compare_cohorts(sums, "success_rate")
    >>> cmp.reference, cmp.row("pro").significant
    ('free', True)
    """
    inputs = [s.to_input(metric) for s in sums]
    if check_metric(metric).kind == "rate":
        return compare_rates(inputs, reference=reference, alpha=alpha)
    return compare_means(inputs, reference=reference, alpha=alpha)
