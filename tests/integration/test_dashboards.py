"""Grafana dashboards as code: static checks, and every panel's SQL run on a seeded real database.

The database is seeded the way production fills it: generated traffic goes
through the real ingest processor (PII masking, pricing), the trace store,
the feedback store, and the metrics store fed with per-partition
``WindowAggregator`` partials. Each panel query is then expanded the way
Grafana expands it (``tests/integration/grafana_sql.py``) for the last 6
hours and the last 7 days, with the variables at "All" and at one concrete
value, run, and its result checked against what the panel type needs.
Tests are parametrized by dashboard and panel, so a failure names the panel.
"""
from __future__ import annotations

import functools
import json
import re
import uuid
import zlib
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import psycopg
import pytest
import yaml

from processors.aggregation import WindowAggregator
from processors.cohort_stats import CohortRate, compare_rates
from processors.deadletter import SourceMessage
from processors.generator import TrafficModel
from processors.ingest import IngestProcessor
from processors.metrics_processor import window_record
from processors.pii import PiiMasker
from processors.pricing import PriceTable
from schemas.codec import decode, encode_json
from sinks.feedback_store import FeedbackStore
from sinks.metrics_store import MetricsStore
from sinks.migrate import migrate
from sinks.trace_store import TraceStore
from tests.integration.anomaly_seed import seed_feed
from tests.integration.experiment_seed import seed_dashboard_experiments
from tests.integration.grafana_sql import (
    ALL,
    GrafanaSqlError,
    TimeRange,
    Variable,
    calculate_interval,
    expand_macros,
    interpolate,
    options,
    panels,
    render,
    resolve_variables,
)

ROOT = Path(__file__).resolve().parents[2]
DASHBOARD_DIR = ROOT / "deploy/grafana/dashboards"
PROVISIONING = ROOT / "deploy/grafana/provisioning"
DATASOURCE = {"type": "grafana-postgresql-datasource", "uid": "llmpulse-pg"}
EXPECTED_UIDS = {"llmpulse-overview", "llmpulse-traces", "llmpulse-cohorts", "llmpulse-feedback",
                 "llmpulse-anomalies", "llmpulse-experiments"}
# Variables that choose one thing to look at rather than filter every panel.
NOT_FILTERS = {"trace_id", "reference", "anomaly", "experiment"}

RANGES = {"6h": timedelta(hours=6), "7d": timedelta(days=7)}
MODES = ("all", "one")

# PostgreSQL type OIDs, grouped the way Grafana's SQL datasource converts them.
TIME_OIDS = {1082, 1114, 1184}  # date, timestamp, timestamptz
NUMERIC_OIDS = {20, 21, 23, 700, 701, 1700}  # int8, int2, int4, float4, float8, numeric
TEXT_OIDS = {18, 19, 25, 1042, 1043}  # char, name, text, bpchar, varchar
JSON_OIDS = {114, 3802}
TRACE_COLUMNS = {"traceID", "spanID", "parentSpanID", "serviceName", "operationName", "startTime", "duration", "tags"}


def _provisioned_datasource() -> dict:
    [source] = yaml.safe_load((PROVISIONING / "datasources/llmpulse.yaml").read_text())["datasources"]
    return source


# The macro engine depends on this flag ($__timeGroup becomes time_bucket()).
TIMESCALEDB = bool(_provisioned_datasource().get("jsonData", {}).get("timescaledb"))


def _load(path: Path) -> dict | None:
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return None  # test_dashboard_files_are_valid reports it


DASHBOARD_FILES = sorted(DASHBOARD_DIR.glob("*.json"))
DASHBOARDS: dict[str, dict] = {p.name: d for p in DASHBOARD_FILES if (d := _load(p)) is not None}


def _slug(text: str) -> str:
    return re.sub(r"[^a-z0-9]+", "-", text.lower()).strip("-")[:40]


@dataclass(frozen=True)
class PanelTarget:
    file: str
    uid: str
    panel: dict
    target: dict

    @property
    def id(self) -> str:
        board = self.uid.removeprefix("llmpulse-")
        return f"{board}/{self.panel['id']}-{_slug(self.panel.get('title', ''))}/{self.target.get('refId')}"


PANEL_TARGETS = [
    PanelTarget(name, d.get("uid", name), panel, target)
    for name, d in DASHBOARDS.items()
    for panel in panels(d)
    for target in panel.get("targets", [])
]


def _walk(node: Any, path: str = "") -> Iterator[tuple[str, Any, Any]]:
    """(path, key, value) of every key in a JSON document."""
    if isinstance(node, dict):
        for key, value in node.items():
            yield f"{path}.{key}", key, value
            yield from _walk(value, f"{path}.{key}")
    elif isinstance(node, list):
        for i, value in enumerate(node):
            yield from _walk(value, f"{path}[{i}]")


# ======================================================================= static checks


def test_every_expected_dashboard_exists_once():
    uids = [d.get("uid") for d in DASHBOARDS.values()]
    assert sorted(uids) == sorted(EXPECTED_UIDS), "one file per dashboard, stable uids"
    titles = [d.get("title") for d in DASHBOARDS.values()]
    assert len(set(titles)) == len(titles)


def test_the_dashboards_use_the_provisioned_datasource_uid():
    source = _provisioned_datasource()
    assert {"type": source["type"], "uid": source["uid"]} == DATASOURCE


@pytest.mark.parametrize("path", DASHBOARD_FILES, ids=lambda p: p.name)
def test_dashboard_files_are_valid(path):
    dashboard = json.loads(path.read_text())  # raises with the position of a syntax error
    assert dashboard["uid"] in EXPECTED_UIDS
    assert path.name == dashboard["uid"].removeprefix("llmpulse-") + ".json"
    assert dashboard["schemaVersion"] >= 39
    assert dashboard["editable"] is False, "provisioned read-only: the repo is the source"
    assert dashboard["time"] == {"from": "now-6h", "to": "now"}
    assert dashboard["refresh"] == "30s"
    assert dashboard.get("id") is None, "ids are per Grafana instance; uids are stable"

    all_panels = panels(dashboard)
    ids = [p["id"] for p in all_panels]
    assert len(ids) == len(set(ids)), f"duplicate panel ids: {sorted(i for i in ids if ids.count(i) > 1)}"
    cells = set()
    for panel in all_panels:
        grid = panel["gridPos"]
        assert grid["x"] >= 0 and grid["w"] > 0 and grid["x"] + grid["w"] <= 24, panel["title"]
        xs, ys = range(grid["x"], grid["x"] + grid["w"]), range(grid["y"], grid["y"] + grid["h"])
        mine = {(x, y) for x in xs for y in ys}
        assert not mine & cells, f"panel {panel['title']!r} overlaps another"
        cells |= mine
        if panel["type"] == "row":
            continue
        assert panel.get("title") and panel.get("description"), f"panel {panel['id']} needs a title and description"
        assert panel["type"] in PANEL_RULES, f"{panel['title']}: no column rule for panel type {panel['type']!r}"
        refs = [t["refId"] for t in panel["targets"]]
        assert refs and len(refs) == len(set(refs)), panel["title"]
        for target in panel["targets"]:
            assert target["rawSql"].strip() and target.get("rawQuery") is True and target["editorMode"] == "code"
            assert target["format"] in {"table", "time_series"}, panel["title"]

    names = [v["name"] for v in dashboard["templating"]["list"]]
    assert len(names) == len(set(names))


@pytest.mark.parametrize("path", DASHBOARD_FILES, ids=lambda p: p.name)
def test_every_datasource_reference_is_llmpulse_pg(path):
    dashboard = json.loads(path.read_text())
    for where, key, value in _walk(dashboard):
        if key == "datasource":
            assert value == DATASOURCE, f"{path.name}{where}: {value!r}"
    for panel in panels(dashboard):
        if panel["type"] == "row":
            continue
        assert panel.get("datasource") == DATASOURCE, panel["title"]
        for target in panel["targets"]:
            assert target.get("datasource") == DATASOURCE, panel["title"]
    for variable in dashboard["templating"]["list"]:
        if variable["type"] == "query":
            assert variable.get("datasource") == DATASOURCE, variable["name"]


@pytest.mark.parametrize("path", DASHBOARD_FILES, ids=lambda p: p.name)
def test_every_panel_filters_on_every_filter_variable(path):
    dashboard = json.loads(path.read_text())
    filters = [v["name"] for v in dashboard["templating"]["list"]
               if v.get("hide") != 2 and v["name"] not in NOT_FILTERS]
    for variable in dashboard["templating"]["list"]:
        if variable["type"] == "query" and variable["name"] in filters:
            assert variable["multi"] and variable["includeAll"], f"{variable['name']}: multi-select with All"
            assert variable["current"]["value"] == [ALL], f"{variable['name']} starts at All"
    for panel in panels(dashboard):
        for target in panel.get("targets", []):
            for name in filters:
                used = re.search(rf"\$\{{?{name}\b|\[\[{name}\b", target["rawSql"])
                assert used, f"panel {panel['title']!r} ignores ${name}"


def test_trace_list_links_to_the_trace_view_of_the_same_dashboard():
    dashboard = next(d for d in DASHBOARDS.values() if d["uid"] == "llmpulse-traces")
    [trace_view] = [p for p in panels(dashboard) if p["type"] == "traces"]
    assert "llmpulse_trace_spans(" in trace_view["targets"][0]["rawSql"]
    assert "${trace_id" in trace_view["targets"][0]["rawSql"]
    links = [
        link["url"]
        for panel in panels(dashboard) if panel["type"] == "table"
        for override in panel["fieldConfig"]["overrides"]
        if override["matcher"] == {"id": "byName", "options": "trace_id"}
        for prop in override["properties"] if prop["id"] == "links"
        for link in prop["value"]
    ]
    assert links, "the trace list's trace_id column links to the trace"
    for url in links:
        assert url.startswith("/d/llmpulse-traces/")
        assert "var-trace_id=${__value.raw}" in url
        assert "${__url_time_range}" in url


def test_no_panel_groups_with_timegroup_macros():
    # The datasource is provisioned with timescaledb: true, so Grafana turns
    # $__timeGroup into time_bucket(), which plain PostgreSQL (the local
    # services, and a server where TimescaleDB could not be installed) lacks.
    # Panels read pre-windowed metric_windows rows, or bucket raw rows with
    # date_bin('$resolution'::interval, ...), which works on both.
    for pt in PANEL_TARGETS:
        assert "$__timeGroup" not in pt.target["rawSql"], pt.id
        assert "$__unixEpochGroup" not in pt.target["rawSql"], pt.id


# ---------------------------------------------------------------- the expansion helper

TR = TimeRange(datetime(2025, 6, 1, 6, 0, 0, 123456, tzinfo=UTC), datetime(2025, 6, 1, 12, 0, tzinfo=UTC))


def test_time_macros_expand_as_grafana_does():
    sql = "WHERE $__timeFilter(t.start_time) AND x > $__timeFrom() AND x < $__timeTo()"
    assert expand_macros(sql, TR) == (
        "WHERE t.start_time BETWEEN '2025-06-01T06:00:00.123Z' AND '2025-06-01T12:00:00Z'"
        " AND x > '2025-06-01T06:00:00.123Z' AND x < '2025-06-01T12:00:00Z'"
    )
    assert expand_macros("$__unixEpochFilter(ts) $__unixEpochFrom() $__unixEpochTo()", TR) == (
        "ts >= 1748757600 AND ts <= 1748779200 1748757600 1748779200"
    )
    assert expand_macros("SELECT $__time(ts), $__timeEpoch(ts)", TR) == (
        'SELECT ts AS "time", extract(epoch from ts) as "time"'
    )


def test_time_group_macros_expand_as_grafana_does():
    assert expand_macros("SELECT $__timeGroupAlias(ts, 5m)", TR) == (
        'SELECT floor(extract(epoch from ts)/300)*300 AS "time"')
    assert expand_macros("SELECT $__timeGroup(ts, '1h') AS t", TR) == (
        "SELECT floor(extract(epoch from ts)/3600)*3600 AS t")
    # Pre-5.3 usage, still honoured by Grafana: followed by a comma, it aliases itself.
    assert expand_macros("SELECT $__timeGroup(ts,30s), v", TR) == (
        'SELECT floor(extract(epoch from ts)/30)*30 AS "time", v')
    assert expand_macros("$__timeGroup(ts, '1d')", TR, timescaledb=True) == "time_bucket('86400.000s',ts)"
    assert expand_macros("$__unixEpochGroupAlias(epoch, 1w)", TR) == 'floor((epoch)/604800)*604800 AS "time"'
    with pytest.raises(GrafanaSqlError, match="fill"):
        expand_macros("$__timeGroup(ts, 5m, 0)", TR)
    with pytest.raises(GrafanaSqlError, match="months or years"):
        expand_macros("$__timeGroup(ts, 1M)", TR)


def test_unknown_macros_and_variables_raise():
    with pytest.raises(GrafanaSqlError, match=r"unknown macro \$__timeFiltr"):
        render("WHERE $__timeFiltr(ts)", TR)
    with pytest.raises(GrafanaSqlError, match=r"\$projct is not a declared variable"):
        render("WHERE project IN ($projct)", TR, [Variable("project", "a")])
    with pytest.raises(GrafanaSqlError, match="format 'lucene'"):
        render("WHERE p = ${project:lucene}", TR, [Variable("project", "a")])
    with pytest.raises(GrafanaSqlError, match=r"\$__rate_interval"):
        render("SELECT $__rate_interval", TR)


def test_interval_follows_the_range_and_the_minimum():
    now = datetime(2025, 6, 1, tzinfo=UTC)
    assert calculate_interval(TimeRange.last(timedelta(hours=6), now), 1000) == timedelta(minutes=1)
    assert calculate_interval(TimeRange.last(timedelta(hours=1), now), 1000) == timedelta(minutes=1)  # min 1m
    assert calculate_interval(TimeRange.last(timedelta(hours=1), now), 1000, "1s") == timedelta(seconds=5)
    assert calculate_interval(TimeRange.last(timedelta(days=7), now), 1000) == timedelta(minutes=10)
    tr = TimeRange.last(timedelta(days=7), now)
    assert render("$__interval $__interval_ms ${__interval}", tr) == "10m 600000 10m"
    assert render("$__from $__to", tr) == "1748131200000 1748736000000"


def test_variables_expand_as_the_sql_datasource_does():
    opts = options("support-bot", "o'brien")
    multi = Variable("project", ("support-bot",), opts, multi=True, include_all=True)
    every = Variable("project", ALL, opts, multi=True, include_all=True)
    custom_all = Variable("project", ALL, opts, multi=True, include_all=True, all_value=".*")
    single = Variable("user", "o'brien", type="textbox")
    assert interpolate("IN ($project) [[project]] ${project}", [multi]) == (
        "IN ('support-bot') 'support-bot' 'support-bot'")
    assert interpolate("IN ($project)", [every]) == "IN ('support-bot','o''brien')"
    assert interpolate("${project:csv}|${project:sqlstring}|${project:text}", [every]) == (
        "support-bot,o'brien|'support-bot','o''brien'|All"
    )
    assert interpolate("${project:singlequote} [[project:doublequote]]", [every]) == (
        "'support-bot','o\\'brien' \"support-bot\",\"o'brien\""
    )
    assert interpolate("x ~ '$project' AND ${project:csv}", [custom_all]) == "x ~ '.*' AND .*"
    # A single-value variable: unquoted, ' doubled; with :sqlstring, quoted too.
    assert interpolate("u = '$user' OR u = ${user:sqlstring}", [single]) == "u = 'o''brien' OR u = 'o''brien'"
    assert interpolate('x = ${user:sqlstring}', [Variable("user", 'say "hi"')]) == "x = 'say \\\"hi\\\"'"
    # Macros are left for the backend step.
    assert interpolate("$__timeFilter(ts) AND p IN ($project)", [multi]) == "$__timeFilter(ts) AND p IN ('support-bot')"


def test_variable_refresh_runs_queries_in_order_with_earlier_values():
    dashboard = {"templating": {"list": [
        {"name": "project", "type": "query", "query": "SELECT p FROM x WHERE $__timeFilter(t)", "multi": True,
         "includeAll": True, "sort": 1},
        {"name": "model", "type": "query", "query": "SELECT m AS __value, upper(m) AS __text WHERE p IN ($project)",
         "multi": True, "includeAll": True},
        {"name": "show", "type": "custom", "query": "All : any, Errors only : error, a\\,b"},
        {"name": "user", "type": "textbox", "query": ""},
    ]}}
    seen = []

    def run(sql):
        seen.append(sql)
        if sql.startswith("SELECT p"):
            return ["p"], [("b",), ("a",), ("b",)]
        return ["__value", "__text"], [("m1", "M1")]

    got = resolve_variables(dashboard, TR, run, lambda d, opts: ALL if d.get("includeAll") else opts[-1].value)
    assert seen[0] == "SELECT p FROM x WHERE t BETWEEN '2025-06-01T06:00:00.123Z' AND '2025-06-01T12:00:00Z'"
    assert seen[1] == "SELECT m AS __value, upper(m) AS __text WHERE p IN ('a','b')"
    assert [o.value for o in got["project"].options] == ["a", "b"], "sorted, duplicates dropped"
    assert [(o.text, o.value) for o in got["model"].options] == [("M1", "m1")]
    assert [(o.text, o.value) for o in got["show"].options] == [
        ("All", "any"), ("Errors only", "error"), ("a,b", "a,b")]
    assert got["user"].current == ""


# ======================================================================= the seeded database

PARTITIONS = 3
HOURS = 4


@dataclass(frozen=True)
class Seeded:
    url: str
    now: datetime
    # concrete variable values per dashboard uid, for the "one" mode
    concrete: dict[str, dict[str, str]]
    anchor_trace: str  # a failed trace (the Traces dashboard's concrete values)
    anchor_feedback: str  # trace id of rated, commented feedback (the feedback dashboards' values)
    answered_by: dict[str, str]  # feedback's trace id -> model of the LLM call that answered


def _cohort_of(user_id: str | None) -> str:
    """A stable plan per user, the way the cohort processor would tag it."""
    bucket = zlib.crc32((user_id or "").encode()) % 10
    return "free" if bucket < 6 else "pro" if bucket < 9 else "enterprise"


def _generate(now: datetime) -> tuple[list[list[dict]], list[dict]]:
    """Traces (ingested: masked and priced) and feedback over the last few hours."""
    start = now - timedelta(hours=HOURS)
    model = TrafficModel(seed=23, start=start, traces_per_second=500 / (HOURS * 3600), feedback_rate=0.6)
    ingest = IngestProcessor(PriceTable.load(), PiiMasker())
    traces, feedback = [], []
    while model.clock < now - timedelta(minutes=20):
        trace = model.trace()
        cohort = _cohort_of(trace[0].get("user_id"))
        for span in trace:
            span["attributes"] = {**(span.get("attributes") or {}), "llmpulse.cohort": cohort}
        enriched = [
            decode(out.value, expected="span")
            for i, span in enumerate(trace)
            for out in ingest.process(SourceMessage("llm.spans", 0, i, None, encode_json("span", span)))
        ]
        traces.append(enriched)
        fb = model.feedback_for(trace)
        if fb is not None:
            feedback.append(fb)
    return traces, feedback


def _metric_parts(traces: list[list[dict]], feedback: list[dict], now: datetime) -> list[dict]:
    """1-minute partials as the metrics processor emits them: one aggregator per partition."""
    roots = {t[0]["trace_id"]: next(s for s in t if s["parent_span_id"] is None) for t in traces}
    events = [(s["end_time"], 0, s) for t in traces for s in t] + [(f["time"], 1, f) for f in feedback]
    events.sort(key=lambda e: (e[0], e[1]))
    aggs = [WindowAggregator(lateness=timedelta(minutes=2)) for _ in range(PARTITIONS)]
    parts: list[dict] = []

    def emit(p: int) -> None:
        for snap in aggs[p].flush():
            if snap.resolution == "1m":
                parts.append(window_record(snap, p, now + timedelta(microseconds=len(parts))))

    for n, (_, kind, event) in enumerate(events):
        p = zlib.crc32(event["trace_id"].encode()) % PARTITIONS  # keyed by trace id, as in Kafka
        if kind == 0:
            aggs[p].add_span(event)
        else:
            aggs[p].add_feedback(event, dims=aggs[p].dimensions(roots[event["trace_id"]]))
        if n % 300 == 299:  # the processor emits on a timer, not per event
            for q in range(PARTITIONS):
                emit(q)
    for p, agg in enumerate(aggs):
        agg.advance(now + timedelta(days=2))
        emit(p)
    return parts


def _answered_by(trace: list[dict], fb: dict) -> str:
    """The model a feedback event rates: the LLM call it names, else the trace's last successful one."""
    calls = [s for s in trace if s["kind"] == "llm"]
    named = [s for s in calls if s["span_id"] == fb["span_id"]]
    ok = [s for s in calls if s["status"] != "error"]
    pick = named[0] if named else max(ok or calls, key=lambda s: s["end_time"], default=None)
    return (pick.get("response_model") or pick.get("request_model")) if pick else "none"


def _concrete(traces: list[list[dict]], feedback: list[dict], now: datetime) -> tuple[dict, str, str, dict]:
    """One real value per variable, chosen from the generated data (not from the panels' SQL)."""
    by_id = {t[0]["trace_id"]: t for t in traces}
    # Feedback with a rating, a thumb and a comment, naming a priced LLM call:
    # every feedback panel has something to show for its dimensions.
    anchors = []
    for fb in feedback:
        trace = by_id[fb["trace_id"]]
        span = next(s for s in trace if s["span_id"] == fb["span_id"])
        if (None not in (fb["rating"], fb["thumbs"], fb["comment"]) and span["kind"] == "llm"
                and span["status"] != "error" and span.get("cost_usd") is not None and fb["time"] < now):
            anchors.append((fb, trace, span))
    assert anchors, "the seed should produce rated, commented feedback on an LLM answer"
    fb, trace, span = anchors[-1]
    root = trace[0]
    dims = {
        "project": root["project"],
        "model": span.get("response_model") or span.get("request_model"),
        "prompt_version": root["prompt_version"],
        "cohort": root["attributes"]["llmpulse.cohort"],
    }
    failed = [t for t in traces if any(s["status"] == "error" for s in t) and t[0].get("user_id")]
    assert failed, "the seed should produce failed traces"
    bad = failed[-1][0]
    concrete = {
        "llmpulse-overview": dims,
        "llmpulse-feedback": dims,
        "llmpulse-cohorts": {k: dims[k] for k in ("project", "prompt_version", "cohort")},
        "llmpulse-traces": {"project": bad["project"], "user": bad["user_id"], "errors_only": "error",
                            "search": bad["name"], "trace_id": bad["trace_id"]},
    }
    answered_by = {f["trace_id"]: _answered_by(by_id[f["trace_id"]], f) for f in feedback}
    return concrete, bad["trace_id"], fb["trace_id"], answered_by


@pytest.fixture(scope="module")
def seeded(database_url: str) -> Iterator[Seeded]:
    # Module-scoped twin of conftest's fresh_database: seeding once serves
    # every parametrized panel test (hundreds of queries, read only).
    name = f"test_{uuid.uuid4().hex[:12]}"
    with psycopg.connect(database_url, autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    info = psycopg.conninfo.conninfo_to_dict(database_url)
    info["dbname"] = name
    url = psycopg.conninfo.make_conninfo(**info)
    try:
        migrate(url)
        now = datetime.now(UTC).replace(microsecond=0)
        traces, feedback = _generate(now)
        spans = [s for t in traces for s in t]
        store = TraceStore(url)
        for i in range(0, len(spans), 2000):
            store.write(spans[i:i + 2000])
        store.close()
        fb_store = FeedbackStore(url)
        fb_store.write(feedback)
        fb_store.close()
        parts = _metric_parts(traces, feedback, now)
        metrics = MetricsStore(url)
        for i in range(0, len(parts), 2000):
            metrics.write(parts[i:i + 2000])
        metrics.close()
        concrete, *anchors = _concrete(traces, feedback, now)
        concrete["llmpulse-anomalies"] = seed_feed(url, concrete["llmpulse-overview"]["project"], now)
        with psycopg.connect(url) as conn:
            concrete["llmpulse-experiments"] = {"experiment": seed_dashboard_experiments(conn, now)}
        yield Seeded(url, now, concrete, *anchors)
    finally:
        with psycopg.connect(database_url, autocommit=True) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


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
        if cur.description is None:
            raise AssertionError(f"the query returns no result set\n--- expanded SQL ---\n{sql}")
        return [c.name for c in cur.description], [c.type_code for c in cur.description], cur.fetchall()


def _chooser(mode: str, concrete: dict[str, str]):
    def choose(definition: dict, found: tuple) -> str | tuple[str, ...]:
        name, values = definition["name"], [o.value for o in found]
        if definition["type"] in ("query", "custom"):
            assert values, f"variable ${name} has no options"
        if mode == "one" and name in concrete:
            want = concrete[name]
            if definition["type"] in ("query", "custom"):
                assert want in values, f"variable ${name}: {want!r} is not among its options {values[:30]}"
            return (want,) if definition.get("multi") else want
        if definition.get("includeAll"):
            return ALL
        if definition["type"] == "textbox":
            return definition.get("query", "")
        current = (definition.get("current") or {}).get("value")
        return current if current in values else values[0]

    return choose


@pytest.fixture(scope="module")
def variables(seeded: Seeded, db: psycopg.Connection):
    @functools.cache
    def resolve(file: str, range_name: str, mode: str) -> dict[str, Variable]:
        dashboard = DASHBOARDS[file]
        tr = TimeRange.last(RANGES[range_name], seeded.now)
        concrete = seeded.concrete.get(dashboard["uid"], {})

        def run(sql):
            names, _, rows = _run(db, sql)
            return names, rows

        return resolve_variables(dashboard, tr, run, _chooser(mode, concrete), timescaledb=TIMESCALEDB)

    return resolve


CASES = [(f, r, m) for f in DASHBOARDS for r in RANGES for m in MODES]


@pytest.mark.parametrize(("file", "range_name", "mode"), CASES, ids=[f"{f[:-5]}/{r}/{m}" for f, r, m in CASES])
def test_every_variable_query_runs_and_has_options(variables, file, range_name, mode):
    resolved = variables(file, range_name, mode)
    assert set(resolved) == {v["name"] for v in DASHBOARDS[file]["templating"]["list"]}
    for var in resolved.values():
        if var.type == "query":
            assert var.options, f"${var.name} found no values"


@pytest.mark.parametrize(("span", "expected"), [("6h", "1m"), ("7d", "1h"), ("30d", "1d"), ("90d", "1d")])
def test_resolution_follows_the_time_range(seeded, db, span, expected):
    dashboard = DASHBOARDS["overview.json"]
    [definition] = [v for v in dashboard["templating"]["list"] if v["name"] == "resolution"]
    length = timedelta(hours=int(span[:-1])) if span.endswith("h") else timedelta(days=int(span[:-1]))
    _, _, rows = _run(db, expand_macros(definition["query"], TimeRange.last(length, seeded.now)))
    assert rows == [(expected,)]


PANEL_CASES = [(pt, r, m) for pt in PANEL_TARGETS for r in RANGES for m in MODES]


@pytest.mark.parametrize(("pt", "range_name", "mode"), PANEL_CASES,
                         ids=[f"{pt.id}/{r}/{m}" for pt, r, m in PANEL_CASES])
def test_panel_query_returns_what_the_panel_needs(seeded, db, variables, pt, range_name, mode):
    resolved = variables(pt.file, range_name, mode)
    tr = TimeRange.last(RANGES[range_name], seeded.now)
    sql = render(pt.target["rawSql"], tr, resolved, timescaledb=TIMESCALEDB)
    names, oids, rows = _run(db, sql)
    context = f"\n--- expanded SQL ---\n{sql}"
    assert rows, f"{pt.id}: no rows{context}"
    assert len(names) == len(set(names)), f"{pt.id}: duplicate column names {names}"
    problems = PANEL_RULES[pt.panel["type"]](pt.panel, pt.target, names, oids, rows)
    numbers = [i for i, o in enumerate(oids) if o in NUMERIC_OIDS and names[i] != "time"]
    if pt.panel["type"] not in ("table", "traces") and all(r[i] is None for r in rows for i in numbers):
        problems.append("every value is null: Grafana would show No data")
    for override in pt.panel.get("fieldConfig", {}).get("overrides", []):
        matcher = override["matcher"]
        if matcher["id"] == "byName" and matcher["options"] not in names:
            problems.append(f"override for column {matcher['options']!r}, which the query does not return")
    assert not problems, f"{pt.id}: " + "; ".join(problems) + f"\ncolumns: {list(zip(names, oids))}{context}"


# ---------------------------------------------------------------- what each panel type needs


def _kinds(names, oids):
    numeric = [n for n, o in zip(names, oids) if o in NUMERIC_OIDS]
    text = [n for n, o in zip(names, oids) if o in TEXT_OIDS]
    return numeric, text


def _time_series(target, names, oids, rows) -> list[str]:
    """What Grafana's SQL backend needs to build time series (sqleng processFrame, LongToWide)."""
    problems = []
    if target["format"] != "time_series":
        problems.append("a time series panel needs format time_series")
    if "time" not in names:
        return problems + ["no column named time"]
    t = names.index("time")
    if oids[t] not in TIME_OIDS:
        problems.append(f"column time has type oid {oids[t]}, not a timestamp")
    times = [r[t] for r in rows]
    if any(v is None for v in times):
        problems.append("null times")
    elif times != sorted(times):
        problems.append("rows not sorted by time (Grafana refuses to convert long series)")
    values = [(n, o) for i, (n, o) in enumerate(zip(names, oids)) if i != t]
    if not any(o in NUMERIC_OIDS for _, o in values):
        problems.append("no numeric value column")
    for n, o in values:
        if o not in NUMERIC_OIDS | TEXT_OIDS:
            problems.append(f"column {n} (oid {o}) is neither a number nor a label")
    return problems


def _timeseries(panel, target, names, oids, rows):
    return _time_series(target, names, oids, rows)


def _barchart(panel, target, names, oids, rows):
    if target["format"] == "time_series":
        return _time_series(target, names, oids, rows)
    numeric, text = _kinds(names, oids)
    problems = [] if numeric and text else ["a bar chart needs a label column and a numeric column"]
    x = panel["options"].get("xField")
    if x and x not in names:
        problems.append(f"xField {x!r} is not a column")
    return problems


def _single_values(panel, target, names, oids, rows):
    numeric, text = _kinds(names, oids)
    problems = [] if numeric else ["no numeric column"]
    if panel["options"].get("reduceOptions", {}).get("values") and not text:
        problems.append("one bar per row needs a label column to name it")
    return problems


def _piechart(panel, target, names, oids, rows):
    numeric, text = _kinds(names, oids)
    return [] if numeric and text else ["a pie chart needs a label column and a numeric column"]


def _table(panel, target, names, oids, rows):
    return [] if names else ["no columns"]


def _traces(panel, target, names, oids, rows):
    problems = [f"missing column {c}" for c in sorted(TRACE_COLUMNS - set(names))]
    types = dict(zip(names, oids))
    for column in ("startTime", "duration"):
        if column in types and types[column] not in NUMERIC_OIDS:
            problems.append(f"{column} must be numeric (milliseconds)")
    if "tags" in types and types["tags"] not in JSON_OIDS:
        problems.append("tags must be JSON")
    if len({r[names.index("traceID")] for r in rows}) != 1:
        problems.append("the trace view shows one trace")
    return problems


PANEL_RULES = {
    "timeseries": _timeseries,
    "barchart": _barchart,
    "stat": _single_values,
    "gauge": _single_values,
    "bargauge": _single_values,
    "piechart": _piechart,
    "table": _table,
    "traces": _traces,
}


# ---------------------------------------------------------------- panel semantics


def _panel(uid: str, panel_type: str, title_start: str) -> PanelTarget:
    [pt] = [pt for pt in PANEL_TARGETS
            if pt.uid == uid and pt.panel["type"] == panel_type and pt.panel["title"].startswith(title_start)]
    return pt


def _rendered(seeded, db, variables, pt: PanelTarget, mode: str = "all") -> tuple[list[str], list[tuple]]:
    tr = TimeRange.last(RANGES["6h"], seeded.now)
    names, _, rows = _run(db, render(pt.target["rawSql"], tr, variables(pt.file, "6h", mode),
                                     timescaledb=TIMESCALEDB))
    return names, rows


def test_trace_view_shows_the_picked_trace(seeded, db, variables):
    names, rows = _rendered(seeded, db, variables, _panel("llmpulse-traces", "traces", "Trace"), "one")
    assert {r[names.index("traceID")] for r in rows} == {seeded.anchor_trace}
    assert 2 in [r[names.index("statusCode")] for r in rows], "the failed span is flagged"
    with psycopg.connect(seeded.url) as conn:
        (count,) = conn.execute("SELECT count(*) FROM spans WHERE trace_id = %s", (seeded.anchor_trace,)).fetchone()
    assert len(rows) == count


def test_wilson_intervals_match_the_cli_statistics(seeded, db, variables):
    names, rows = _rendered(seeded, db, variables, _panel("llmpulse-cohorts", "table", "Success rate"))
    got = {r[0]: dict(zip(names, r)) for r in rows}
    with psycopg.connect(seeded.url) as conn:
        counts = conn.execute(
            "SELECT cohort, sum(request_count - error_count)::bigint, sum(request_count)::bigint FROM metric_windows"
            " WHERE resolution = '1m' AND kind = 'llm' AND window_start BETWEEN %s AND %s GROUP BY cohort",
            (seeded.now - RANGES["6h"], seeded.now),
        ).fetchall()
    assert len(counts) >= 2, "the seed tags several cohorts"
    cmp = compare_rates([CohortRate(c, ok, n) for c, ok, n in counts])
    assert variables("cohorts.json", "6h", "all")["reference"].current == cmp.reference, "same default reference"
    ref = cmp.row(cmp.reference)
    for row in cmp.rows:
        mine = got[row.name]
        assert mine["LLM calls"] == row.n
        assert mine["success rate"] == pytest.approx(row.value, rel=1e-12)
        assert mine["95% low"] == pytest.approx(row.ci_low, abs=1e-7)
        assert mine["95% high"] == pytest.approx(row.ci_high, abs=1e-7)
        overlap = row.ci_low <= ref.ci_high and ref.ci_low <= row.ci_high
        expected = "reference" if row.name == cmp.reference else (
            "intervals overlap" if overlap else "intervals do not overlap")
        assert mine["vs reference (screen only)"] == expected


def test_trace_list_filters(seeded, db, variables):
    pt = _panel("llmpulse-traces", "table", "Traces")
    names, rows = _rendered(seeded, db, variables, pt, "all")
    with psycopg.connect(seeded.url) as conn:
        (total,) = conn.execute("SELECT count(*) FROM traces WHERE start_time BETWEEN %s AND %s",
                                (seeded.now - RANGES["6h"], seeded.now)).fetchone()
    assert len(rows) == total, "at All, every trace of the range is listed"
    assert {r[names.index("status")] for r in rows} >= {"ok", "error"}
    names, rows = _rendered(seeded, db, variables, pt, "one")
    values = [dict(zip(names, r)) for r in rows]
    assert seeded.anchor_trace in {v["trace_id"] for v in values}
    concrete = seeded.concrete["llmpulse-traces"]
    assert all(v["status"] == "error" and v["user"] == concrete["user"] for v in values)


def test_feedback_attribution_follows_the_answering_model(seeded, db, variables):
    pt = _panel("llmpulse-feedback", "table", "Latest comments")
    names, rows = _rendered(seeded, db, variables, pt, "all")
    got = {r[names.index("trace_id")]: r[names.index("model")] for r in rows}
    assert len(got) > 20
    assert got == {t: seeded.answered_by[t] for t in got}
    assert len(set(got.values())) > 3
    names, rows = _rendered(seeded, db, variables, pt, "one")
    dims = seeded.concrete["llmpulse-feedback"]
    # The anchor feedback names an LLM call of the concrete model: it must be listed under it.
    assert seeded.anchor_feedback in [r[names.index("trace_id")] for r in rows]
    for row in rows:
        values = dict(zip(names, row))
        assert (values["project"], values["model"], values["prompt version"], values["cohort"]) == (
            dims["project"], dims["model"], dims["prompt_version"], dims["cohort"])
        assert values["comment"]
