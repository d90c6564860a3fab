"""Reading traces back (sinks.trace_query, sinks.trace_cli) against real PostgreSQL.

Each test gets its own migrated database (``trace_db``); spans go in with
plain INSERTs and summaries are built by ``llmpulse_refresh_traces``, as the
writer does.
"""

from __future__ import annotations

import json
import shlex
from base64 import urlsafe_b64encode
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from decimal import Decimal

import psycopg
import pytest
from click.testing import CliRunner

from sinks.migrate import migrate
from sinks.trace_cli import trace as trace_cli
from sinks.trace_query import (
    Page,
    fetch_trace,
    list_traces,
    list_traces_sql,
)
from sinks.waterfall import render_trace_list, render_waterfall

pytestmark = pytest.mark.integration

T0 = datetime(2024, 5, 1, 12, 0, tzinfo=UTC)
MS = timedelta(milliseconds=1)

_SPAN_DEFAULTS = {
    "parent_span_id": None,
    "name": "step",
    "kind": "other",
    "status": "ok",
    "status_message": None,
    "error_type": None,
    "project": "support",
    "user_id": None,
    "session_id": None,
    "request_model": None,
    "response_model": None,
    "tool_name": None,
    "input_tokens": None,
    "output_tokens": None,
    "cost_usd": None,
    "input": None,
    "output": None,
}


@pytest.fixture
def trace_db(fresh_database: str) -> str:
    migrate(fresh_database)
    return fresh_database


@pytest.fixture
def conn(trace_db: str) -> Iterator[psycopg.Connection]:
    with psycopg.connect(trace_db, autocommit=True) as c:
        yield c


@pytest.fixture
def add_spans(conn: psycopg.Connection) -> Callable[..., None]:
    """Insert spans (dicts; defaults above), then refresh their traces' summaries."""

    def add(*spans: dict, refresh: bool = True) -> None:
        rows = []
        for s in spans:
            row = {**_SPAN_DEFAULTS, **s}
            row.setdefault("end_time", row["start_time"])
            rows.append(row)
        columns = list(rows[0])
        with conn.transaction(), conn.cursor() as cur:
            cur.executemany(
                f"INSERT INTO spans ({', '.join(columns)}) "
                f"VALUES ({', '.join(f'%({c})s' for c in columns)})",
                rows,
            )
            if refresh:
                cur.execute(
                    "SELECT llmpulse_refresh_traces(%s)", (sorted({r["trace_id"] for r in rows}),)
                )

    return add


def _one_span_trace(trace_id: str, start: datetime, **extra) -> dict:
    return {"trace_id": trace_id, "span_id": "root", "start_time": start,
            "end_time": start + 100 * MS, **extra}


# ------------------------------------------------------------------ fetch_trace


def test_fetch_trace_returns_summary_and_spans_by_start_time(conn, add_spans) -> None:
    add_spans(
        {"trace_id": "t1", "span_id": "llm", "parent_span_id": "root", "name": "chat", "kind": "llm",
         "start_time": T0 + 200 * MS, "end_time": T0 + 700 * MS, "request_model": "gpt-4o",
         "input_tokens": 120, "output_tokens": 30, "cost_usd": Decimal("0.000450000"),
         "input": "What is\nthe refund policy?", "output": "30 days."},
        {"trace_id": "t1", "span_id": "root", "name": "agent", "kind": "agent",
         "start_time": T0, "end_time": T0 + 900 * MS, "user_id": "u-1"},
        {"trace_id": "t1", "span_id": "tool", "parent_span_id": "root", "name": "search",
         "kind": "tool", "start_time": T0 + 50 * MS, "end_time": T0 + 150 * MS,
         "tool_name": "web.search", "status": "error", "status_message": "timeout"},
        {"trace_id": "other", "span_id": "root", "start_time": T0},
    )
    trace = fetch_trace(conn, "t1")
    assert trace is not None and trace.summary is not None
    assert [s.span_id for s in trace.spans] == ["root", "tool", "llm"]
    assert trace.summary.root_span_id == "root" and trace.summary.span_count == 3
    assert trace.status == "error" and trace.error_count == 1
    assert trace.total_tokens == 150 and trace.cost_usd == Decimal("0.00045")
    assert trace.duration_ms == 900.0 and trace.user_id == "u-1"
    assert trace.orphans == ()
    llm = trace.spans[2]
    assert (llm.label, llm.input_tokens, llm.cost_usd) == ("gpt-4o", 120, Decimal("0.000450000"))
    assert llm.duration_ms == 500.0

    text = render_waterfall(trace, width=100)
    assert text.splitlines()[0].startswith("trace t1 · project support · user u-1")
    assert "├─ search" in text and "└─ chat" in text and "✗ timeout" in text
    assert "in  What is the refund policy?" in text


def test_fetch_unknown_trace_is_none(conn, add_spans) -> None:
    add_spans({"trace_id": "t1", "span_id": "root", "start_time": T0})
    assert fetch_trace(conn, "nope") is None


def test_trace_without_summary_row_is_computed_from_spans(conn, add_spans) -> None:
    add_spans(
        {"trace_id": "t1", "span_id": "root", "start_time": T0, "end_time": T0 + 2000 * MS,
         "project": "bot", "user_id": "u-9"},
        {"trace_id": "t1", "span_id": "a", "parent_span_id": "root", "start_time": T0 + 10 * MS,
         "input_tokens": 5, "output_tokens": 7, "cost_usd": Decimal("0.01")},
        refresh=False,
    )
    trace = fetch_trace(conn, "t1")
    assert trace is not None and trace.summary is None
    assert (trace.project, trace.user_id, trace.span_count) == ("bot", "u-9", 2)
    assert (trace.total_tokens, trace.cost_usd, trace.duration_ms) == (12, Decimal("0.01"), 2000.0)
    assert "no summary row" in render_waterfall(trace)


def test_spans_whose_parent_has_not_arrived_are_orphans_at_top_level(conn, add_spans) -> None:
    # The root span ends last, so it is often written last: until then the
    # children point at a parent that is not stored.
    add_spans(
        {"trace_id": "t1", "span_id": "a", "parent_span_id": "root", "name": "plan",
         "start_time": T0 + 10 * MS, "end_time": T0 + 50 * MS},
        {"trace_id": "t1", "span_id": "b", "parent_span_id": "a", "name": "lookup",
         "start_time": T0 + 20 * MS, "end_time": T0 + 30 * MS},
        {"trace_id": "t1", "span_id": "c", "parent_span_id": "root", "name": "answer",
         "start_time": T0 + 60 * MS, "end_time": T0 + 90 * MS},
    )
    trace = fetch_trace(conn, "t1")
    assert trace is not None and trace.summary is not None
    assert trace.summary.root_span_id is None
    assert [s.span_id for s in trace.orphans] == ["a", "c"]
    lines = render_waterfall(trace, width=100).splitlines()
    body = lines[next(i for i, line in enumerate(lines) if line.startswith("span ")) + 1:]
    names = [line.split("  ")[0] for line in body]
    assert names == ["plan (orphan)", "└─ lookup", "answer (orphan)"]


def test_summary_whose_spans_are_gone_still_shows(conn, add_spans) -> None:
    add_spans({"trace_id": "t1", "span_id": "root", "start_time": T0})
    conn.execute("DELETE FROM spans")  # e.g. span retention shorter than summaries
    trace = fetch_trace(conn, "t1")
    assert trace is not None and trace.spans == () and trace.span_count == 1
    assert render_waterfall(trace).endswith("(no spans stored for this trace)")


# ------------------------------------------------------------------ list_traces


def _walk_pages(conn, limit: int, **filters) -> list[Page]:
    pages, cursor = [], None
    while True:
        page = list_traces(conn, limit=limit, cursor=cursor, **filters)
        pages.append(page)
        cursor = page.next_cursor
        if cursor is None:
            return pages
        assert len(pages) < 1000, "pagination does not end"


@pytest.fixture
def many_traces(add_spans) -> list[tuple[datetime, str]]:
    """23 traces in project `a` (groups of 4 share a start time), 5 in `b`."""
    spans, keys = [], []
    for i in range(23):
        start = T0 + timedelta(seconds=i // 4)
        keys.append((start, f"a-{i:02d}"))
        spans.append(_one_span_trace(f"a-{i:02d}", start, project="a"))
    for i in range(5):
        spans.append(_one_span_trace(f"b-{i}", T0 + timedelta(seconds=i), project="b"))
    add_spans(*spans)
    return sorted(keys, reverse=True)


@pytest.mark.parametrize("limit", [1, 4, 5, 23, 50])
def test_pages_visit_every_trace_once_in_order_with_ties(conn, many_traces, limit) -> None:
    pages = _walk_pages(conn, limit, project="a", since=T0 - timedelta(hours=1))
    seen = [(t.start_time, t.trace_id) for p in pages for t in p.items]
    assert seen == many_traces
    assert all(len(p.items) == limit for p in pages[:-1])
    # The last page has no cursor rather than leading to an empty page.
    assert len(pages) == -(-23 // limit) and pages[-1].items


def test_keyset_pages_do_not_shift_when_new_traces_arrive(conn, add_spans, many_traces) -> None:
    first = list_traces(conn, project="a", since=T0 - timedelta(hours=1), limit=10)
    add_spans(_one_span_trace("a-new", T0 + timedelta(hours=1), project="a"))
    rest = _walk_pages(conn, 10, project="a", since=T0 - timedelta(hours=1))
    second = list_traces(conn, project="a", since=T0 - timedelta(hours=1), limit=10,
                         cursor=first.next_cursor)
    ids = [t.trace_id for t in first.items + second.items]
    assert ids == [tid for _, tid in many_traces[:20]]
    assert rest[0].items[0].trace_id == "a-new"


def test_filters_project_user_errors_and_window(conn, add_spans) -> None:
    add_spans(
        _one_span_trace("ok-1", T0, project="p", user_id="alice"),
        _one_span_trace("err-1", T0 + timedelta(minutes=1), project="p", user_id="bob",
                        status="error"),
        _one_span_trace("err-2", T0 + timedelta(minutes=2), project="q", user_id="alice",
                        status="error"),
        _one_span_trace("ok-2", T0 + timedelta(minutes=3), project="q"),
        _one_span_trace("old", T0 - timedelta(days=2), project="p", user_id="alice"),
    )

    def ids(**kw) -> list[str]:
        kw.setdefault("project", None)
        kw.setdefault("since", T0 - timedelta(hours=1))
        return [t.trace_id for p in _walk_pages(conn, 2, **kw) for t in p.items]

    assert ids() == ["ok-2", "err-2", "err-1", "ok-1"]
    assert ids(project="p") == ["err-1", "ok-1"]
    assert ids(errors_only=True) == ["err-2", "err-1"]
    assert ids(project="q", errors_only=True) == ["err-2"]
    assert ids(user_id="alice") == ["err-2", "ok-1"]
    assert ids(user_id="alice", since=T0 - timedelta(days=3)) == ["err-2", "ok-1", "old"]
    # since is inclusive, until exclusive.
    assert ids(since=T0 + timedelta(minutes=1), until=T0 + timedelta(minutes=3)) == ["err-2", "err-1"]
    # Relative windows count back from `now`.
    assert ids(since=timedelta(seconds=90), now=T0 + timedelta(minutes=3)) == ["ok-2", "err-2"]
    assert ids(project="nobody") == []


def _cursor(payload: object) -> str:
    return urlsafe_b64encode(json.dumps(payload).encode()).decode()


@pytest.mark.parametrize(
    "cursor",
    ["", "!!!", "bm90IGpzb24", _cursor([1, 2]), _cursor(["2024-05-01T12:00:00", "t1"]),
     _cursor({"a": 1}), _cursor({"2024-05-01T12:00:00+00:00": 1, "t1": 2}),
     _cursor(["yesterday", "t1"]), _cursor(["2024-05-01T12:00:00+00:00", 5]),
     _cursor(["2024-05-01T12:00:00+00:00", "t1", "extra"])],
)
def test_bad_cursor_is_a_clear_value_error(conn, cursor) -> None:
    with pytest.raises(ValueError, match="invalid cursor .*next_cursor of a previous page"):
        list_traces(conn, project="a", since=timedelta(days=1), cursor=cursor)


def test_bad_arguments(conn) -> None:
    with pytest.raises(ValueError, match="limit"):
        list_traces(conn, project=None, since=timedelta(days=1), limit=0)
    with pytest.raises(ValueError, match="timezone-aware"):
        list_traces(conn, project=None, since=datetime(2024, 5, 1))


# ------------------------------------------------------------------ query plans


def _plan_nodes(plan: dict) -> Iterator[dict]:
    yield plan
    for child in plan.get("Plans", ()):
        yield from _plan_nodes(child)


def _explain(conn, query: str, params) -> list[dict]:
    (doc,) = conn.execute("EXPLAIN (FORMAT JSON) " + query, params).fetchone()
    return list(_plan_nodes(doc[0]["Plan"]))


@pytest.fixture
def large_database(conn) -> psycopg.Connection:
    """20,000 traces (60,000 spans) over 30 days: enough that a wrong plan would show.

    One dominant project (half the traces), ten small ones (5 % each) and
    a rare one (1 %), ties on start_time, 5 % failed traces, one heavy user with a quarter of
    all traces, many light users, some anonymous.
    """
    conn.execute(
        """
        INSERT INTO spans (trace_id, span_id, parent_span_id, name, kind, start_time, end_time,
                           status, project, user_id, input, output)
        SELECT format('trace-%%s', lpad(t::text, 6, '0')), format('s%%s', s),
               CASE WHEN s = 0 THEN NULL ELSE 's0' END, 'step', 'llm',
               %(t0)s + (t / 2) * interval '2 minutes' + s * interval '1 second',
               %(t0)s + (t / 2) * interval '2 minutes' + (s + 1) * interval '1 second',
               CASE WHEN t %% 19 = 0 AND s = 1 THEN 'error' ELSE 'ok' END,
               CASE WHEN t %% 100 = 3 THEN 'rare'
                    ELSE format('project-%%s', CASE WHEN t %% 2 = 0 THEN 0 ELSE t %% 20 END) END,
               CASE WHEN t %% 4 = 1 THEN 'heavy' WHEN t %% 10 = 0 THEN NULL
                    ELSE format('user-%%s', t %% 997) END,
               repeat('prompt ', 40), repeat('answer ', 40)
        FROM generate_series(1, 20000) AS t, generate_series(0, 2) AS s
        """,
        {"t0": T0 - timedelta(days=30)},
    )
    conn.execute("SELECT llmpulse_refresh_traces(array_agg(DISTINCT trace_id)) FROM spans")
    conn.execute("VACUUM ANALYZE spans, traces")
    return conn


def _page_params(**kw) -> dict:
    return {"since": T0 - timedelta(days=30), "limit": 51, "project": None, "user_id": None,
            "cursor_start": T0 - timedelta(days=10), "cursor_trace": "trace-012345", **kw}


@pytest.mark.parametrize("after_cursor", [False, True], ids=["first-page", "next-page"])
def test_project_page_is_one_index_range_scan_without_sort(large_database, after_cursor) -> None:
    # A project with 1 % of the traces: reading the time index and filtering
    # would touch ~100 rows per row returned, so this is where the project
    # index must serve the whole page, cursor included, with no sort at all.
    query = list_traces_sql(project="rare", after_cursor=after_cursor)
    nodes = _explain(large_database, query, _page_params(project="rare"))
    types = [n["Node Type"] for n in nodes]
    assert types == ["Limit", "Index Scan"], types
    assert nodes[1]["Index Name"] == "traces_project_start_time_idx"
    assert "Filter" not in nodes[1]
    if after_cursor:
        # The cursor is an index bound, not a filter over skipped rows.
        assert "ROW(start_time, trace_id) <" in nodes[1]["Index Cond"]


@pytest.mark.parametrize(
    "filters",
    [
        {"project": "project-0"},
        {"project": "project-3"},
        {"project": "project-0", "errors_only": True},
        {"user_id": "heavy"},
        {},
    ],
    ids=["big-project", "small-project", "errors", "heavy-user", "all-projects"],
)
def test_other_pages_use_indexes_and_never_sort_the_window(large_database, filters) -> None:
    # For a project with 5-50 % of the traces PostgreSQL may rather walk
    # traces_start_time_idx (traces are inserted in time order, so its heap
    # access is sequential) and filter; traces_user_start_time_idx and
    # traces_errors_idx end at start_time. Ties on start_time then need an
    # Incremental Sort, which sorts one start_time at a time and stops at the
    # LIMIT. What must never appear is a Seq Scan or a full Sort: both read
    # the whole window before returning the first row.
    for after_cursor in (False, True):
        query = list_traces_sql(after_cursor=after_cursor, **filters)
        nodes = _explain(large_database, query, _page_params(**filters))
        types = [n["Node Type"] for n in nodes]
        assert "Seq Scan" not in types and "Sort" not in types, types
        assert types[:2] in (["Limit", "Index Scan"], ["Limit", "Incremental Sort"]), types
        assert any(n.get("Index Name", "").startswith("traces_") for n in nodes), types


def test_fetch_trace_queries_use_primary_keys(large_database) -> None:
    from sinks.trace_query import _SPANS_SQL, _SUMMARY_SQL

    for query, index in ((_SPANS_SQL, "spans_pkey"), (_SUMMARY_SQL, "traces_pkey")):
        nodes = _explain(large_database, query, ("trace-004242",))
        assert "Seq Scan" not in [n["Node Type"] for n in nodes]
        assert index in [n.get("Index Name") for n in nodes]


# ------------------------------------------------------------------ CLI


def _run(trace_db: str, *args: str):
    return CliRunner().invoke(trace_cli, [*args, "--database-url", trace_db])


def test_cli_show_draws_the_waterfall(trace_db, add_spans) -> None:
    add_spans(
        {"trace_id": "t1", "span_id": "root", "name": "agent", "start_time": T0,
         "end_time": T0 + 500 * MS, "user_id": "u-1"},
        {"trace_id": "t1", "span_id": "c", "parent_span_id": "root", "name": "chat", "kind": "llm",
         "start_time": T0 + 100 * MS, "end_time": T0 + 300 * MS, "request_model": "gpt-4o",
         "input": "secret prompt", "status": "error", "status_message": "boom"},
    )
    result = _run(trace_db, "show", "t1", "--width", "100")
    assert result.exit_code == 0, result.output
    assert result.output.startswith("trace t1 · project support · user u-1")
    assert "└─ chat" in result.output and "✗ boom" in result.output
    assert "secret prompt" in result.output and "\x1b[" not in result.output

    quiet = _run(trace_db, "show", "t1", "--no-payloads", "--width", "100")
    assert quiet.exit_code == 0 and "secret prompt" not in quiet.output and "✗ boom" in quiet.output
    colored = _run(trace_db, "show", "t1", "--color")
    assert "\x1b[31m" in colored.output


def test_cli_show_unknown_trace_exits_1(trace_db) -> None:
    result = _run(trace_db, "show", "missing")
    assert result.exit_code == 1
    assert "trace 'missing' not found" in result.output


def test_cli_list_pages_with_the_printed_command(trace_db, many_traces) -> None:
    args = ["list", "--project", "a", "--since", "2024-05-01T11:00:00Z", "--limit", "10"]
    seen: list[str] = []
    for _ in range(10):
        result = _run(trace_db, *args)
        assert result.exit_code == 0, result.output
        lines = result.output.splitlines()
        assert lines[0].split()[:3] == ["start", "(UTC)", "trace"]
        seen += [line.split()[2] for line in lines[1:] if line.startswith("2024-")]
        if "(last page)" in result.output:
            break
        command = shlex.split(lines[-1])
        assert command[:3] == ["llmpulse", "trace", "list"]
        args = command[2:]
    assert seen == [tid for _, tid in many_traces]


def test_cli_list_filters_and_empty_result(trace_db, add_spans) -> None:
    add_spans(_one_span_trace("e1", T0, status="error", user_id="bob"),
              _one_span_trace("o1", T0, user_id="bob"))
    result = _run(trace_db, "list", "--since", "2024-05-01T00:00", "--errors", "--user", "bob")
    assert result.exit_code == 0, result.output
    assert "e1" in result.output and "o1" not in result.output
    empty = _run(trace_db, "list", "--since", "15m")
    assert empty.exit_code == 0 and empty.output.strip() == "No traces match."


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["list", "--cursor", "garbage"], "Invalid value for '--cursor': invalid cursor"),
        (["list", "--since", "yesterday"], "neither a duration like 15m"),
        (["list", "--limit", "0"], "Invalid value for '--limit'"),
    ],
)
def test_cli_rejects_bad_options(trace_db, args, message) -> None:
    result = _run(trace_db, *args)
    assert result.exit_code == 2 and message in result.output


def test_cli_names_the_masked_url_when_the_database_is_unreachable() -> None:
    url = "postgresql://llmpulse:s3cret@127.0.0.1:1/llmpulse"
    for args in (["show", "t1"], ["list"]):
        result = CliRunner().invoke(trace_cli, [*args, "--database-url", url])
        assert result.exit_code == 1
        assert "cannot connect to the database at postgresql://llmpulse:***@127.0.0.1:1/llmpulse" in result.output
        assert "s3cret" not in result.output


def test_cli_on_an_unmigrated_database_says_to_migrate(fresh_database) -> None:
    result = CliRunner().invoke(trace_cli, ["show", "t1", "--database-url", fresh_database])
    assert result.exit_code == 1 and "llmpulse db migrate" in result.output


def test_render_trace_list_of_a_real_page(conn, many_traces) -> None:
    page = list_traces(conn, project="a", since=T0 - timedelta(hours=1), limit=3)
    lines = render_trace_list(page).splitlines()
    assert len(lines) == 4 and lines[1].split()[2] == "a-22"
