"""The anomaly feed dashboard: every panel's SQL, expanded as Grafana expands it, on seeded episodes.

The database holds an incident (one model of one project failing and
slowing down, 1-minute and 1-hour windows, spans) and three episodes
written by the real anomaly store (so root causes, segments and trace links
are the sink's own): an open error-rate episode, a resolved latency one and
a false positive in another project. Each panel runs for the last 6 hours
and 7 days, with the variables at their defaults and at one concrete value,
and must return what its panel type needs (the rules of test_dashboards.py).
"""
from __future__ import annotations

import json
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import psycopg
import pytest
from confluent_kafka import Producer

from sinks.anomaly_store import AnomalyStore, format_value
from sinks.migrate import migrate
from tests.integration.anomaly_seed import (
    Incident,
    anomaly_event,
    incident_spans,
    incident_windows,
    insert_spans,
    insert_windows,
)
from tests.integration.grafana_sql import ALL, TimeRange, panels, render, resolve_variables
from tests.integration.test_dashboards import DATASOURCE, PANEL_RULES, TIMESCALEDB

DASHBOARD = json.loads((Path(__file__).resolve().parents[2] / "deploy/grafana/dashboards/anomalies.json").read_text())
TARGETS = [(p, t) for p in panels(DASHBOARD) for t in p.get("targets", [])]
RANGES = {"6h": timedelta(hours=6), "7d": timedelta(days=7)}


class Seeded:
    def __init__(self, url: str, now: datetime, incident: Incident, ids: dict[str, str]) -> None:
        self.url, self.now, self.incident, self.ids = url, now, incident, ids


def _hourly(conn: psycopg.Connection) -> None:
    """1-hour rows from the 1-minute ones, as the metrics store rolls them up."""
    conn.execute("""
        INSERT INTO metric_windows
        SELECT '1h', date_trunc('hour', window_start), 3600, series, project, model, provider, prompt_version,
               kind, cohort, variant, sum(request_count), sum(error_count), sum(input_tokens), sum(output_tokens),
               sum(cached_tokens), sum(usage_count), sum(cost_usd), sum(cost_count), sum(feedback_count),
               sum(rating_sum), sum(rating_count), sum(thumbs_up), sum(thumbs_count), sum(late_events),
               max(p50_ms), max(p90_ms), max(p95_ms), max(p99_ms), (array_agg(sketch))[1], count(*), bool_and(final)
        FROM metric_windows WHERE resolution = '1m'
        GROUP BY 2, series, project, model, provider, prompt_version, kind, cohort, variant""")
    conn.commit()


@pytest.fixture(scope="module")
def seeded(database_url: str, bootstrap: str, admin) -> Iterator[Seeded]:
    name = f"test_{uuid.uuid4().hex[:12]}"
    alerts = f"alerts.{uuid.uuid4().hex[:10]}"
    with psycopg.connect(database_url, autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    info = psycopg.conninfo.conninfo_to_dict(database_url)
    info["dbname"] = name
    url = psycopg.conninfo.make_conninfo(**info)
    try:
        migrate(url)
        now = datetime.now(UTC).replace(second=0, microsecond=0)
        incident = Incident("support", now - timedelta(minutes=40), minutes=5)
        with psycopg.connect(url) as conn:
            insert_windows(conn, incident_windows(incident))
            _hourly(conn)
        insert_spans(url, incident_spans(incident))
        events = {
            "open": anomaly_event(incident, points=3, severity="critical", observed=0.21),
            "latency": anomaly_event(incident, metric="latency_p95_ms", status="resolved", points=5,
                                     observed=2000.0, expected=400.0),
            "false_positive": anomaly_event(Incident("billing", now - timedelta(hours=2), 3), metric="cost_per_request",
                                            status="false_positive", points=2, observed=0.01, expected=0.002),
        }
        store = AnomalyStore(url, Producer({"bootstrap.servers": bootstrap}), alerts_topic=alerts)
        try:
            store.write(list(events.values()))
        finally:
            store.close()
        yield Seeded(url, now, incident, {k: e["anomaly_id"] for k, e in events.items()})
    finally:
        with psycopg.connect(database_url, autocommit=True) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        admin.delete_topics([alerts])


@pytest.fixture(scope="module")
def db(seeded: Seeded) -> Iterator[psycopg.Connection]:
    with psycopg.connect(seeded.url, autocommit=True) as conn:
        conn.execute("SET statement_timeout = '20s'")
        yield conn


def _run(conn: psycopg.Connection, sql: str) -> tuple[list[str], list[int], list[tuple]]:
    with conn.cursor() as cur:
        try:
            cur.execute(sql)
        except psycopg.Error as exc:
            raise AssertionError(f"{exc.sqlstate} {exc}\n--- expanded SQL ---\n{sql}") from exc
        return [c.name for c in cur.description], [c.type_code for c in cur.description], cur.fetchall()


def _variables(seeded: Seeded, db: psycopg.Connection, range_name: str, mode: str):
    concrete = {"project": "support", "status": "open", "anomaly": seeded.ids["open"]}

    def choose(definition, found):
        values = [o.value for o in found]
        if definition["type"] in ("query", "custom"):
            assert values, f"${definition['name']} has no options"
        if mode == "one":
            want = concrete[definition["name"]]
            if definition["type"] != "textbox":
                assert want in values, f"${definition['name']}: {want!r} not among {values}"
            return (want,) if definition.get("multi") else want
        if definition.get("includeAll"):
            return ALL
        return definition["current"]["value"]

    def run(sql):
        names, _, rows = _run(db, sql)
        return names, rows

    tr = TimeRange.last(RANGES[range_name], seeded.now)
    return tr, resolve_variables(DASHBOARD, tr, run, choose, timescaledb=TIMESCALEDB)


def _query(seeded, db, title_start: str, range_name="6h", mode="all") -> tuple[list[str], list[tuple]]:
    [(panel, target)] = [(p, t) for p, t in TARGETS if p["title"].startswith(title_start)]
    tr, variables = _variables(seeded, db, range_name, mode)
    names, _, rows = _run(db, render(target["rawSql"], tr, variables, timescaledb=TIMESCALEDB))
    return names, rows


def test_the_dashboard_is_provisioned_read_only_on_the_llmpulse_datasource():
    assert DASHBOARD["uid"] == "llmpulse-anomalies" and DASHBOARD["editable"] is False
    assert DASHBOARD["time"] == {"from": "now-6h", "to": "now"} and DASHBOARD["refresh"] == "30s"
    for panel, target in TARGETS:
        assert panel["datasource"] == target["datasource"] == DATASOURCE, panel["title"]
        assert panel["type"] in PANEL_RULES and panel.get("description"), panel["title"]
        assert target["rawQuery"] is True and target["editorMode"] == "code"
        assert "$__timeGroup" not in target["rawSql"]


CASES = [(p, t, r, m) for p, t in TARGETS for r in RANGES for m in ("all", "one")]


@pytest.mark.parametrize(("panel", "target", "range_name", "mode"), CASES,
                         ids=[f"{p['id']}-{p['title'][:24]}/{r}/{m}" for p, _, r, m in CASES])
def test_panel_query_returns_what_the_panel_needs(seeded, db, panel, target, range_name, mode):
    tr, variables = _variables(seeded, db, range_name, mode)
    sql = render(target["rawSql"], tr, variables, timescaledb=TIMESCALEDB)
    names, oids, rows = _run(db, sql)
    assert rows, f"no rows\n{sql}"
    problems = PANEL_RULES[panel["type"]](panel, target, names, oids, rows)
    for override in panel.get("fieldConfig", {}).get("overrides", []):
        if override["matcher"]["id"] == "byName" and override["matcher"]["options"] not in names:
            problems.append(f"override for missing column {override['matcher']['options']!r}")
    assert not problems, "; ".join(problems) + f"\n{sql}"


def test_the_list_shows_open_episodes_first_with_their_numbers_and_trace_link(seeded, db):
    names, rows = _query(seeded, db, "Anomalies", "7d")
    got = [dict(zip(names, r)) for r in rows]
    assert [g["anomaly_id"] for g in got] == [seeded.ids["open"], seeded.ids["latency"], seeded.ids["false_positive"]]
    first = got[0]
    assert (first["severity"], first["status"], first["observed"], first["expected"], first["band"]) == (
        "critical", "open", "21.0%", "2.0%", "1.0% – 4.0%")
    assert "model=gpt-x" in first["root cause"] and first["recommendation"].startswith("consider routing back")
    start_ms = int(seeded.incident.start.timestamp() * 1000)
    assert first["trace_url"] == (f"/d/llmpulse-traces/llmpulse-traces?from={start_ms}&to={start_ms + 180_000}"
                                  "&var-project=support&var-errors_only=error")
    assert got[1]["observed"] == "2000 ms" and got[2]["observed"] == "$0.0100"
    _, only_support = _query(seeded, db, "Anomalies", "7d", "one")
    assert [r[-1] for r in only_support] == [seeded.ids["open"]]


def test_the_chart_marks_the_anomalous_windows(seeded, db):
    names, rows = _query(seeded, db, "The anomaly's metric")
    got = [dict(zip(names, r)) for r in rows]
    during = [g for g in got if g["in episode"] is not None]
    assert len(during) == seeded.incident.minutes, "the open episode runs to the last window stored"
    assert all(g["observed"] == pytest.approx(0.21) for g in during)
    assert all(g["observed"] == pytest.approx(0.02) for g in got if g["in episode"] is None)
    assert {(g["expected"], g["band low"], g["band high"]) for g in got} == {(0.02, 0.01, 0.04)}


def test_counts_by_severity_and_open_now(seeded, db):
    assert _query(seeded, db, "Episodes by severity", "7d")[1] == [("critical", 1), ("warning", 2), ("info", 0)]
    assert _query(seeded, db, "Open now", "7d")[1] == [(1,)]


def test_root_cause_segments_of_the_picked_anomaly(seeded, db):
    names, rows = _query(seeded, db, "Root cause of the picked anomaly", mode="one")
    first = dict(zip(names, rows[0]))
    assert (first["rank"], first["segment"]) == (1, "model=gpt-x")
    assert first["explains"] == pytest.approx(1.0, abs=0.05) and first["during"] == pytest.approx(0.4)


@pytest.mark.parametrize(("metric", "value"), [
    ("error_rate", 0.1234), ("thumbs_up_rate", 1.0), ("latency_p95_ms", 5020.4), ("p95_ms", 0.4),
    ("cost_per_request", 0.00213), ("cost_usd", 1234.5), ("request_count", 1234567.0), ("output_tokens", 3.0),
    ("rating_mean", 4.25), ("error_rate", float("nan")),
])
def test_sql_formats_values_as_alerts_and_the_cli_do(db, metric, value):
    [(text,)] = db.execute("SELECT llmpulse_metric_text(%s, %s)", [metric, value]).fetchall()
    assert text == format_value(metric, value)
