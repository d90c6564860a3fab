"""The Experiments dashboard: every panel's SQL on a database with experiment results.

tests/integration/test_dashboards.py checks the other dashboards on a
database seeded with traffic; this one seeds what the Experiments dashboard
reads (experiments, exposures, experiment_results written by the real
results code at several computation times, see
:func:`~tests.integration.experiment_seed.seed_dashboard_experiments`) and runs each panel the way
Grafana would, with the same per-panel-type rules.
"""
from __future__ import annotations

import uuid
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta

import psycopg
import pytest

from sinks.migrate import migrate
from tests.integration.experiment_seed import seed_dashboard_experiments
from tests.integration.grafana_sql import TimeRange, panels, render, resolve_variables
from tests.integration.test_dashboards import DASHBOARDS, NUMERIC_OIDS, PANEL_RULES, TIMESCALEDB, _run

FILE = "experiments.json"
DASHBOARD = DASHBOARDS[FILE]
TARGETS = [(p, t) for p in panels(DASHBOARD) for t in p.get("targets", [])]
RANGES = {"6h": timedelta(hours=6), "7d": timedelta(days=7)}
KEY = "tone"
COMPUTATIONS = 5


@pytest.fixture(scope="module")
def seeded(database_url: str) -> Iterator[tuple[str, datetime]]:
    name = f"test_{uuid.uuid4().hex[:12]}"
    with psycopg.connect(database_url, autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    info = psycopg.conninfo.conninfo_to_dict(database_url)
    info["dbname"] = name
    url = psycopg.conninfo.make_conninfo(**info)
    now = datetime.now(UTC).replace(microsecond=0)
    try:
        migrate(url)
        with psycopg.connect(url) as conn:
            assert seed_dashboard_experiments(conn, now, COMPUTATIONS) == KEY
        yield url, now
    finally:
        with psycopg.connect(database_url, autocommit=True) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


@pytest.fixture(scope="module")
def db(seeded) -> Iterator[psycopg.Connection]:
    with psycopg.connect(seeded[0], autocommit=True) as conn:
        conn.execute("SET statement_timeout = '20s'")
        yield conn


def _variables(db, now, range_name):
    def run(sql):
        names, _, rows = _run(db, sql)
        return names, rows

    def choose(definition, found):
        values = [o.value for o in found]
        assert KEY in values, f"${definition['name']}: {values}"
        return KEY

    tr = TimeRange.last(RANGES[range_name], now)
    return tr, resolve_variables(DASHBOARD, tr, run, choose, timescaledb=TIMESCALEDB)


def test_the_experiment_variable_lists_running_experiments(seeded, db):
    _, resolved = _variables(db, seeded[1], "6h")
    assert [o.value for o in resolved["experiment"].options] == sorted([KEY, "older"])


@pytest.mark.parametrize("range_name", RANGES)
@pytest.mark.parametrize(("panel", "target"), TARGETS, ids=[f"{p['id']}-{p['title'][:30]}" for p, _ in TARGETS])
def test_panel_query_returns_what_the_panel_needs(seeded, db, panel, target, range_name):
    tr, resolved = _variables(db, seeded[1], range_name)
    sql = render(target["rawSql"], tr, resolved, timescaledb=TIMESCALEDB)
    names, oids, rows = _run(db, sql)
    context = f"\n--- expanded SQL ---\n{sql}"
    assert rows, f"no rows{context}"
    assert len(names) == len(set(names)), names
    problems = PANEL_RULES[panel["type"]](panel, target, names, oids, rows)
    numbers = [i for i, o in enumerate(oids) if o in NUMERIC_OIDS and names[i] != "time"]
    if panel["type"] != "table" and all(r[i] is None for r in rows for i in numbers):
        problems.append("every value is null")
    for override in panel.get("fieldConfig", {}).get("overrides", []):
        matcher = override["matcher"]
        if matcher["id"] == "byName" and matcher["options"] not in names:
            problems.append(f"override for column {matcher['options']!r}, which the query does not return")
    assert not problems, "; ".join(problems) + context


def _panel_rows(db, now, title: str) -> list[dict]:
    [(panel, target)] = [(p, t) for p, t in TARGETS if p["title"].startswith(title)]
    tr, resolved = _variables(db, now, "6h")
    names, _, rows = _run(db, render(target["rawSql"], tr, resolved, timescaledb=TIMESCALEDB))
    return [dict(zip(names, r)) for r in rows]


def test_verdict_and_srm_panels_show_the_latest_computation(seeded, db):
    [verdict] = _panel_rows(db, seeded[1], "Verdict")
    assert verdict["verdict"] == "SHIP friendly" and "friendly beats control" in verdict["reason"]
    [srm] = _panel_rows(db, seeded[1], "SRM check")
    assert 0.001 < srm["SRM p-value"] <= 1


def test_metrics_table_matches_the_latest_rows(seeded, db):
    rows = _panel_rows(db, seeded[1], "Per-variant metrics")
    assert [r["role"] for r in rows][:2] == ["primary", "primary"]
    friendly = next(r for r in rows if r["metric"] == "thumbs_up_ratio" and r["variant"] == "friendly")
    assert friendly["users"] == 3000 and friendly["result"] == "better"
    assert friendly["CS low"] < friendly["lift"] < friendly["CS high"]


def test_lift_over_time_has_one_point_per_computation(seeded, db):
    rows = _panel_rows(db, seeded[1], "Primary metric: lift")
    assert len(rows) == COMPUTATIONS and {r["variant"] for r in rows} == {"friendly"}
    widths = [r["CS high"] - r["CS low"] for r in rows]
    assert widths == sorted(widths, reverse=True), "the sequence narrows as data accumulate"


def test_cumulative_exposures_end_at_the_user_counts(seeded, db):
    rows = _panel_rows(db, seeded[1], "Users exposed per variant")
    last = {}
    for r in rows:
        last[r["variant"]] = r["users"]
    assert last == {"control": 3000, "friendly": 3000}
