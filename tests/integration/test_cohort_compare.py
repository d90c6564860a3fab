"""llmpulse_cohort_compare (SQL, for Grafana) against the CLI's scipy statistics, on real PostgreSQL.

One seeded database: minute windows of four cohorts with known effects
(pro: fewer errors, higher cost, better ratings; team: the same as free;
trial: 40 requests, small enough for Fisher's exact test), plus their
hourly rollups, ending at a time that is not on a minute or hour boundary.
"""
from __future__ import annotations

import json
import math
import uuid
from collections import defaultdict
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from decimal import Decimal

import numpy as np
import psycopg
import pytest
from click.testing import CliRunner
from scipy import stats

from processors.cohort_compare import compare_cohorts, fetch_sums
from processors.cohorts_cli import cohorts
from sinks.migrate import migrate

PROJECT = "support"
SPAN = timedelta(hours=5, minutes=40)   # seeded minutes end at `end`, start SPAN before
SINCE = timedelta(hours=5)              # the compared range: starts inside the data
# cohort: (requests per minute, error rate, log-cost mean, rating probabilities for 1..5)
COHORTS = {
    "free": (20, 0.05, -7.0, (0.10, 0.10, 0.20, 0.30, 0.30)),
    "pro": (8, 0.02, -6.5, (0.02, 0.03, 0.10, 0.35, 0.50)),
    "team": (6, 0.05, -7.0, (0.10, 0.10, 0.20, 0.30, 0.30)),
}
TRIAL_REQUESTS = 40
METRICS = ("success_rate", "cost", "rating")


@dataclass
class Seeded:
    url: str
    end: datetime
    minutes: dict[tuple[str, datetime], dict]  # (cohort, minute) -> sums of kind 'llm' rows


def _minute_sums(rng: np.random.Generator, requests: int, err: float, mu: float, probs) -> dict:
    errors = int(rng.binomial(requests, err))
    # Costs in whole nano-dollars, as numeric(18, 9) stores them: sums are exact.
    costs = [Decimal(int(c)) / Decimal(10**9) for c in rng.lognormal(mu, 0.8, requests) * 1e9]
    rated = int(rng.binomial(requests, 0.3))
    ratings = rng.choice([1, 2, 3, 4, 5], size=rated, p=probs).astype(float)
    return {
        "request_count": requests, "error_count": errors,
        "cost_usd": sum(costs, Decimal(0)), "cost_count": requests,
        "cost_sq_sum": math.fsum(float(c) ** 2 for c in costs),
        "rating_sum": float(ratings.sum()), "rating_count": rated,
        "rating_sq_sum": float((ratings ** 2).sum()),
    }


def _row(resolution: str, start: datetime, cohort: str, kind: str, sums: dict) -> dict:
    return {"resolution": resolution, "window_start": start, "series": f"{PROJECT}|{cohort}|{kind}",
            "project": PROJECT, "cohort": cohort, "kind": kind, **sums}


_INSERT = """
INSERT INTO metric_windows (
    resolution, window_start, window_seconds, series, project, model, provider, prompt_version, kind,
    cohort, variant, request_count, error_count, input_tokens, output_tokens, cached_tokens,
    usage_count, cost_usd, cost_count, feedback_count, rating_sum, rating_count, thumbs_up,
    thumbs_count, late_events, sketch, partitions, final, cost_sq_sum, rating_sq_sum)
VALUES (
    %(resolution)s, %(window_start)s, 60, %(series)s, %(project)s, 'gpt-4o', 'openai', 'v1', %(kind)s,
    %(cohort)s, 'none', %(request_count)s, %(error_count)s, 0, 0, 0, 0, %(cost_usd)s, %(cost_count)s,
    %(rating_count)s, %(rating_sum)s, %(rating_count)s, 0, 0, 0, '', 1, true, %(cost_sq_sum)s,
    %(rating_sq_sum)s)
"""

_ROLLUP = """
INSERT INTO metric_windows (
    resolution, window_start, window_seconds, series, project, model, provider, prompt_version, kind,
    cohort, variant, request_count, error_count, input_tokens, output_tokens, cached_tokens,
    usage_count, cost_usd, cost_count, feedback_count, rating_sum, rating_count, thumbs_up,
    thumbs_count, late_events, sketch, partitions, final, cost_sq_sum, rating_sq_sum)
SELECT '1h', date_trunc('hour', window_start, 'UTC'), 3600, series, project, model, provider,
       prompt_version, kind, cohort, variant, sum(request_count), sum(error_count), 0, 0, 0, 0,
       sum(cost_usd), sum(cost_count), sum(feedback_count), sum(rating_sum), sum(rating_count),
       0, 0, 0, '', count(*), true, sum(cost_sq_sum), sum(rating_sq_sum)
FROM metric_windows WHERE resolution = '1m'
GROUP BY 2, series, project, model, provider, prompt_version, kind, cohort, variant
"""


@pytest.fixture(scope="module")
def seeded(database_url: str) -> Iterator[Seeded]:
    name = f"test_{uuid.uuid4().hex[:12]}"
    with psycopg.connect(database_url, autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    info = psycopg.conninfo.conninfo_to_dict(database_url)
    info["dbname"] = name
    url = psycopg.conninfo.make_conninfo(**info)
    try:
        migrate(url)
        now = datetime.now(UTC)
        end = now.replace(second=30, microsecond=0) - timedelta(minutes=10)
        rng = np.random.default_rng(20250601)
        minutes: dict[tuple[str, datetime], dict] = {}
        rows = []
        first = (end - SPAN).replace(second=0) + timedelta(minutes=1)
        count = int((end - first).total_seconds() // 60) + 1
        trial_minutes = set(rng.choice(count, size=TRIAL_REQUESTS, replace=False).tolist())
        for i in range(count):
            start = first + timedelta(minutes=i)
            for cohort, (rate, err, mu, probs) in COHORTS.items():
                sums = _minute_sums(rng, int(rng.poisson(rate)), err, mu, probs)
                minutes[(cohort, start)] = sums
                rows.append(_row("1m", start, cohort, "llm", sums))
            if i in trial_minutes:
                sums = _minute_sums(rng, 1, 0.05, -7.0, COHORTS["free"][3])
                minutes[("trial", start)] = sums
                rows.append(_row("1m", start, "trial", "llm", sums))
            # Tool spans fail often; success_rate (kind 'llm') must not see them.
            tool = {"request_count": 5, "error_count": 4, "cost_usd": Decimal(0), "cost_count": 0,
                    "cost_sq_sum": 0.0, "rating_sum": 0.0, "rating_count": 0, "rating_sq_sum": 0.0}
            rows.append(_row("1m", start, "free", "tool", tool))
        with psycopg.connect(url) as conn:
            with conn.cursor() as cur:
                cur.executemany(_INSERT, rows)
            conn.execute(_ROLLUP)
        yield Seeded(url, end, minutes)
    finally:
        with psycopg.connect(database_url, autocommit=True) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


@pytest.fixture
def conn(seeded: Seeded) -> Iterator[psycopg.Connection]:
    with psycopg.connect(seeded.url, autocommit=True) as c:
        yield c


def _expected_sums(seeded: Seeded, metric: str, since: timedelta) -> dict[str, tuple]:
    """Sums straight from the generated minutes whose start is in [end - since, end)."""
    key = {"success_rate": ("request_count", None, None), "cost": ("cost_count", "cost_usd", "cost_sq_sum"),
           "rating": ("rating_count", "rating_sum", "rating_sq_sum")}[metric]
    out: dict[str, list] = defaultdict(lambda: [0, Decimal(0), 0.0])
    for (cohort, start), s in seeded.minutes.items():
        if seeded.end - since <= start < seeded.end:
            acc = out[cohort]
            acc[0] += s[key[0]]
            acc[1] += Decimal(s["request_count"] - s["error_count"]) if key[1] is None else Decimal(s[key[1]])
            acc[2] += 0.0 if key[2] is None else s[key[2]]
    return {c: (n, float(t), sq) for c, (n, t, sq) in out.items()}


def _sql_rows(conn, metric: str, until: datetime, **kw) -> dict[str, dict]:
    args = ", ".join(f"{k} => %({k})s" for k in kw)
    sql = (f"SELECT * FROM llmpulse_cohort_compare(%(metric)s, %(since)s, until => %(until)s"
           f"{', ' + args if args else ''})")
    with conn.cursor(row_factory=psycopg.rows.dict_row) as cur:
        rows = cur.execute(sql, {"metric": metric, "since": SINCE, "until": until, **kw}).fetchall()
    return {r["cohort"]: r for r in rows}


def _close(a, b, abs_tol: float) -> bool:
    if a is None or b is None:
        return a is None and b is None
    return math.isclose(a, b, rel_tol=1e-9, abs_tol=abs_tol)


@pytest.mark.parametrize("metric", METRICS)
def test_the_window_selection_reads_exactly_the_minutes_of_the_range(seeded, conn, metric):
    expected = _expected_sums(seeded, metric, SINCE)
    got = {s.cohort: s for s in fetch_sums(conn, metric, SINCE, until=seeded.end)}
    assert set(got) == set(expected) == {"free", "pro", "team", "trial"}
    for cohort, (n, total, total_sq) in expected.items():
        assert got[cohort].n == n, cohort
        assert got[cohort].total == pytest.approx(total, rel=1e-12)
        if metric != "success_rate":
            assert got[cohort].total_sq == pytest.approx(total_sq, rel=1e-12)
        assert got[cohort].skipped == 0


def test_whole_hours_come_from_the_hourly_rows(seeded):
    # In a copy of the minutes of whole hours inside the range, the hourly
    # rows alone must carry them: delete those minutes, the sums stay.
    with psycopg.connect(seeded.url) as conn:
        before = fetch_sums(conn, "cost", SINCE, until=seeded.end)
        h_from = (seeded.end - SINCE).replace(minute=0, second=0) + timedelta(hours=1)
        h_to = seeded.end.replace(minute=0, second=0)
        deleted = conn.execute(
            "DELETE FROM metric_windows WHERE resolution = '1m' AND window_start >= %s AND window_start < %s",
            (h_from, h_to)).rowcount
        assert deleted > 0
        after = fetch_sums(conn, "cost", SINCE, until=seeded.end)
        conn.rollback()
    assert [(s.cohort, s.n, s.total) for s in after] == [(s.cohort, s.n, s.total) for s in before]
    # Sums of squares are float8: added in another order, they may differ in the last bits.
    assert [s.total_sq for s in after] == pytest.approx([s.total_sq for s in before], rel=1e-13)


@pytest.mark.parametrize("metric", METRICS)
def test_sql_function_equals_the_scipy_comparison(seeded, conn, metric):
    cmp = compare_cohorts(fetch_sums(conn, metric, SINCE, until=seeded.end), metric)
    sql = _sql_rows(conn, metric, seeded.end)
    assert set(sql) == {r.name for r in cmp.rows}
    holm = ", Holm-adjusted" if cmp.n_comparisons >= 2 else ""
    for r in cmp.rows:
        s = sql[r.name]
        assert s["n"] == r.n and s["is_reference"] == (r.name == cmp.reference)
        for mine, theirs in (("value", r.value), ("ci_low", r.ci_low), ("ci_high", r.ci_high),
                             ("diff", r.diff), ("diff_low", r.diff_ci_low), ("diff_high", r.diff_ci_high)):
            assert _close(s[mine], theirs, 1e-15), (r.name, mine, s[mine], theirs)
        assert _close(s["p_value"], r.p_value, 1e-12), (r.name, s["p_value"], r.p_value)
        assert _close(s["p_holm"], r.p_adjusted, 1e-12), (r.name, s["p_holm"], r.p_adjusted)
        assert s["significant"] == r.significant
        assert s["test"] == (r.test + holm if r.test else None)
        assert s["note"] == r.note
    if metric == "success_rate":
        assert sql["trial"]["test"].startswith("Fisher's exact test"), "40 requests: the exact test"


@pytest.mark.parametrize("metric", METRICS)
def test_a_real_difference_is_significant_and_an_equal_cohort_is_not(seeded, conn, metric):
    sql = _sql_rows(conn, metric, seeded.end)
    assert sql["free"]["is_reference"], "the largest cohort is the default reference"
    assert sql["pro"]["significant"] is True and sql["pro"]["p_holm"] < 1e-6
    assert sql["team"]["significant"] is False
    assert sql["team"]["p_holm"] > 0.05


def test_reference_alpha_and_project_arguments(seeded, conn):
    sql = _sql_rows(conn, "rating", seeded.end, reference="team", alpha=0.01)
    assert sql["team"]["is_reference"] and sql["team"]["p_value"] is None
    cmp = compare_cohorts(fetch_sums(conn, "rating", SINCE, until=seeded.end), "rating", reference="team", alpha=0.01)
    free = cmp.row("free")
    assert sql["free"]["ci_low"] == pytest.approx(free.ci_low, rel=1e-9)
    # Mean rating of one cohort: a 99 % t interval, by hand.
    n, total, total_sq = _expected_sums(seeded, "rating", SINCE)["free"]
    mean, sd = total / n, math.sqrt((total_sq - total * total / n) / (n - 1))
    assert sql["free"]["ci_high"] == pytest.approx(mean + stats.t.ppf(0.995, n - 1) * sd / math.sqrt(n), rel=1e-9)
    assert _sql_rows(conn, "rating", seeded.end, project="elsewhere") == {}
    assert set(_sql_rows(conn, "rating", seeded.end, projects=[PROJECT, "x"])) == {"free", "pro", "team", "trial"}


def test_distribution_functions_match_scipy(conn):
    for x in (-12.0, -3.0, -1.0, 0.0, 0.5, 2.0, 8.0):
        (got,) = conn.execute("SELECT llmpulse_norm_cdf(%s)", (x,)).fetchone()
        assert got == pytest.approx(stats.norm.cdf(x), rel=1e-12, abs=1e-300)
    for df in (1.0, 2.5, 7.0, 30.0, 456.7, 1e5):
        for t in (-20.0, -2.0, -0.3, 0.0, 1.0, 2.2, 6.0):
            (got,) = conn.execute("SELECT llmpulse_t_cdf(%s, %s)", (t, df)).fetchone()
            assert got == pytest.approx(stats.t.cdf(t, df), rel=1e-10, abs=1e-12), (t, df)


@pytest.mark.parametrize("call", [
    "SELECT * FROM llmpulse_cohort_compare('latency')",
    "SELECT * FROM llmpulse_cohort_sums('nope')",
])
def test_an_unknown_metric_is_a_clear_sql_error(conn, call):
    with pytest.raises(psycopg.errors.InvalidParameterValue) as err:
        conn.execute(call)
    assert "unknown cohort metric" in str(err.value)
    assert "success_rate, cost, rating" in err.value.diag.message_hint


def test_an_unknown_reference_is_a_clear_sql_error(seeded, conn):
    with pytest.raises(psycopg.errors.InvalidParameterValue, match="reference cohort 'gold' is not among"):
        _sql_rows(conn, "cost", seeded.end, reference="gold")


def test_cli_prints_the_test_and_every_cohort(seeded):
    runner = CliRunner()
    result = runner.invoke(cohorts, ["compare", "--metric", "cost", "--by", "plan", "--since", "7d",
                                     "--database-url", seeded.url])
    assert result.exit_code == 0, result.output
    assert "Welch's t-test, Holm-adjusted" in result.output
    for cohort in ("free", "pro", "team", "trial"):
        assert cohort in result.output
    assert "pro: cost per span is" in result.output and "significant after Holm correction" in result.output

    result = runner.invoke(cohorts, ["compare", "--metric", "success_rate", "--since", "7d", "--format", "json",
                                     "--database-url", seeded.url])
    assert result.exit_code == 0, result.output
    doc = json.loads(result.output)
    assert doc["by"] == "plan" and doc["reference"] == "free" and doc["kind"] == "llm"
    assert "two-proportion z-test" in doc["test"] and "Fisher's exact test" in doc["test"]
    rows = {r["name"]: r for r in doc["cohorts"]}
    assert rows["pro"]["significant"] is True and rows["team"]["significant"] is False


@pytest.mark.parametrize(("args", "message"), [
    (["--metric", "latency"], "'latency' is not one of 'success_rate', 'cost', 'rating'"),
    (["--metric", "cost", "--by", "country"], "the primary cohort 'plan'"),
    (["--metric", "cost", "--reference", "gold"], "reference cohort 'gold' is not among"),
    (["--metric", "cost", "--since", "7 days"], "use a whole number and one unit"),
])
def test_cli_errors_are_clear(seeded, args, message):
    result = CliRunner().invoke(cohorts, ["compare", *args, "--database-url", seeded.url])
    assert result.exit_code != 0
    assert message in result.output, result.output
