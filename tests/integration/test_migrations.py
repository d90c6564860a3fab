"""Migrations against a real PostgreSQL server.

Every test gets its own freshly created database (dropped afterwards), so no
test depends on another's leftovers. DATABASE_URL points at a server where the
user may CREATE DATABASE; it defaults to the `make services` one.
"""

from __future__ import annotations

import os
import shutil
import threading
import uuid
from datetime import UTC, datetime, timedelta
from importlib.resources import as_file, files
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

import psycopg
import pytest
from click.testing import CliRunner
from psycopg import errors, sql
from psycopg.conninfo import make_conninfo

from sinks.db_cli import db
from sinks.migrate import (
    LOCK_KEY,
    MigrationError,
    load_migrations,
    migrate,
    rollback,
    status,
)

pytestmark = pytest.mark.integration

T0 = datetime(2024, 5, 1, 12, 0, tzinfo=UTC)

#: The packaged versions; tests that add migrations number them after these.
ALL = [m.version for m in load_migrations()]
LATEST = ALL[-1]
NEXT = LATEST + 1


# ---------------------------------------------------------------- fixtures


def _with_dbname(url: str, dbname: str) -> str:
    if "://" in url:
        return urlunsplit(urlsplit(url)._replace(path="/" + dbname))
    return make_conninfo(url, dbname=dbname)


@pytest.fixture
def database_factory(database_url):
    """Create fresh, uniquely named databases; drop them at teardown.

    ``database_url`` (conftest) reads DATABASE_URL and fails, never skips, when
    the server does not answer. Unlike conftest's ``fresh_database`` this keeps
    URL form (the CLI tests put a password into it) and allows several
    databases per test.
    """
    created: list[str] = []

    def make() -> str:
        name = f"llmpulse_test_{uuid.uuid4().hex[:12]}"
        with psycopg.connect(database_url, autocommit=True) as conn:
            conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
        created.append(name)
        return _with_dbname(database_url, name)

    yield make
    with psycopg.connect(database_url, autocommit=True) as conn:
        for name in created:
            conn.execute(
                sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name))
            )


@pytest.fixture
def db_url(database_factory) -> str:
    """URL of a fresh, empty database for this test."""
    return database_factory()


@pytest.fixture
def migrated(db_url) -> str:
    assert migrate(db_url) == [m.version for m in load_migrations()]
    return db_url


@pytest.fixture
def source_factory(tmp_path):
    """Copy the packaged migrations to a directory a test may extend."""

    def make(extra: dict[str, str] | None = None) -> Path:
        root = tmp_path / f"migrations_{uuid.uuid4().hex[:6]}"
        with as_file(files("sinks") / "migrations") as packaged:
            shutil.copytree(packaged, root)
        for rel, text in (extra or {}).items():
            (root / rel).write_text(text)
        return root

    return make


def _query(url: str, query: str, params=None) -> list[tuple]:
    with psycopg.connect(url) as conn:
        return conn.execute(query, params).fetchall()


def _tables(url: str) -> set[str]:
    rows = _query(url, "SELECT tablename FROM pg_tables WHERE schemaname = current_schema()")
    return {r[0] for r in rows}


def _functions(url: str) -> set[str]:
    rows = _query(
        url,
        "SELECT p.proname FROM pg_proc p JOIN pg_namespace n ON n.oid = p.pronamespace "
        "WHERE n.nspname = current_schema() AND p.proname LIKE 'llmpulse%'",
    )
    return {r[0] for r in rows}


def _span(trace_id="t1", span_id="s1", **overrides) -> dict:
    row = {
        "trace_id": trace_id,
        "span_id": span_id,
        "parent_span_id": None,
        "name": "chat",
        "kind": "llm",
        "start_time": T0,
        "end_time": T0 + timedelta(milliseconds=1500),
        "status": "ok",
        "project": "demo",
        "user_id": None,
        "session_id": None,
        "provider": None,
        "request_model": None,
        "response_model": None,
        "input_tokens": None,
        "output_tokens": None,
        "cost_usd": None,
    }
    row.update(overrides)
    return row


def _insert_span(conn: psycopg.Connection, **overrides) -> None:
    row = _span(**overrides)
    columns = sql.SQL(", ").join(map(sql.Identifier, row))
    values = sql.SQL(", ").join(map(sql.Placeholder, row))
    conn.execute(sql.SQL("INSERT INTO spans ({}) VALUES ({})").format(columns, values), row)


# ---------------------------------------------------------------- up / down


def test_up_down_up(db_url):
    assert migrate(db_url) == ALL
    assert {"spans", "traces", "schema_migrations"} <= _tables(db_url)
    assert {"llmpulse_trace_spans", "llmpulse_refresh_traces"} <= _functions(db_url)

    assert rollback(db_url, to=0) == ALL[::-1]
    assert _tables(db_url) == {"schema_migrations"}
    # The down file's CASCADE took the idempotent functions with the tables,
    # and the re-apply after rollback skipped them (they need version 1).
    assert _functions(db_url) == set()
    assert _query(db_url, "SELECT count(*) FROM schema_migrations") == [(0,)]

    assert migrate(db_url) == ALL
    assert {"spans", "traces"} <= _tables(db_url)
    assert {"llmpulse_trace_spans", "llmpulse_refresh_traces"} <= _functions(db_url)


def test_second_migrate_applies_nothing_but_restores_idempotent_objects(migrated):
    with psycopg.connect(migrated, autocommit=True) as conn:
        conn.execute("DROP FUNCTION llmpulse_trace_spans(text)")
    assert migrate(migrated) == []
    assert "llmpulse_trace_spans" in _functions(migrated)


def test_schema_migrations_rows(migrated):
    rows = _query(migrated, "SELECT version, name, checksum, applied_at FROM schema_migrations")
    expected = [(m.version, m.name, m.checksum) for m in load_migrations()]
    assert [r[:3] for r in rows] == expected
    assert all(isinstance(r[3], datetime) for r in rows)


def test_status_reports_versions(db_url):
    before = status(db_url)
    assert (before.version, before.pending) == (0, tuple(ALL))
    assert _tables(db_url) == set(), "status must not create anything"
    migrate(db_url)
    after = status(db_url)
    assert (after.version, after.latest, after.pending, after.problems) == (LATEST, LATEST, (), ())
    assert after.migrations[0].state == "applied"
    assert after.migrations[0].applied_at is not None
    installed = _query(db_url, "SELECT count(*) FROM pg_extension WHERE extname = 'timescaledb'")
    assert after.timescaledb_installed == (installed == [(1,)])


def test_spans_is_a_hypertable_exactly_when_timescaledb_is_installed(migrated):
    if status(migrated).timescaledb_installed:
        rows = _query(migrated, "SELECT hypertable_name FROM timescaledb_information.hypertables")
        assert rows == [("spans",)]
    else:
        assert _query(migrated, "SELECT relkind FROM pg_class WHERE relname = 'spans'") == [("r",)]


def test_rollback_on_empty_database_is_a_no_op(db_url):
    assert rollback(db_url) == []


def test_migrate_accepts_an_open_connection(db_url):
    with psycopg.connect(db_url) as conn:
        assert migrate(conn) == ALL
        assert conn.autocommit is False, "the caller's autocommit setting is restored"
        assert conn.execute("SELECT count(*) FROM spans").fetchone() == (0,)
        conn.rollback()
        assert status(conn).version == LATEST


def test_migrate_refuses_a_connection_inside_a_transaction(db_url):
    with psycopg.connect(db_url) as conn:
        conn.execute("SELECT 1")
        with pytest.raises(MigrationError, match="inside a transaction"):
            migrate(conn)


# ---------------------------------------------------------------- constraints


@pytest.mark.parametrize(
    "overrides",
    [
        {"kind": "banana"},
        {"status": "failed"},
        {"input_tokens": -1},
        {"output_tokens": -5},
        {"cost_usd": -0.01},
        {"end_time": T0 - timedelta(seconds=1)},
        {"project": None},
    ],
    ids=["kind", "status", "input_tokens", "output_tokens", "cost", "end_before_start", "project"],
)
def test_bad_spans_are_rejected(migrated, overrides):
    with psycopg.connect(migrated) as conn:
        with pytest.raises((errors.CheckViolation, errors.NotNullViolation)):
            _insert_span(conn, **overrides)


@pytest.mark.parametrize("column", ["cache_read_input_tokens", "cache_creation_input_tokens"])
def test_negative_cache_tokens_are_rejected(migrated, column):
    with psycopg.connect(migrated) as conn, pytest.raises(errors.CheckViolation):
        conn.execute(
            sql.SQL(
                "INSERT INTO spans (trace_id, span_id, name, start_time, end_time, project, {})"
                " VALUES ('t', 's', 'n', now(), now(), 'p', -1)"
            ).format(sql.Identifier(column))
        )


def test_every_kind_is_accepted_and_defaults_apply(migrated):
    kinds = ["llm", "tool", "retrieval", "agent", "chain", "embedding", "other"]
    with psycopg.connect(migrated) as conn:
        for i, kind in enumerate(kinds):
            _insert_span(conn, span_id=f"s{i}", kind=kind)
        row = conn.execute(
            "SELECT attributes, variants, ingested_at IS NOT NULL, duration_ms"
            " FROM spans WHERE span_id = 's0'"
        ).fetchone()
    assert row == ({}, {}, True, 1500.0)


def test_bad_traces_are_rejected(migrated):
    with psycopg.connect(migrated) as conn, pytest.raises(errors.CheckViolation):
        conn.execute(
            "INSERT INTO traces (trace_id, project, start_time, end_time, input_tokens)"
            " VALUES ('t', 'p', now(), now(), -3)"
        )


def test_primary_key_rejects_duplicates_and_supports_upsert(migrated):
    with psycopg.connect(migrated) as conn:
        _insert_span(conn, name="first")
        conn.commit()
        with pytest.raises(errors.UniqueViolation):
            _insert_span(conn, name="again")
        conn.rollback()
        conn.execute(
            "INSERT INTO spans (trace_id, span_id, name, start_time, end_time, project, status)"
            " VALUES ('t1', 's1', 'replayed', %s, %s, 'demo', 'error')"
            " ON CONFLICT (trace_id, span_id, start_time)"
            " DO UPDATE SET name = EXCLUDED.name, status = EXCLUDED.status",
            [T0, T0 + timedelta(seconds=2)],
        )
        rows = conn.execute("SELECT name, status, duration_ms FROM spans").fetchall()
    # The generated duration still follows the original end_time: the upsert
    # did not touch it.
    assert rows == [("replayed", "error", 1500.0)]


def test_expected_indexes_exist(migrated):
    rows = _query(
        migrated,
        "SELECT tablename, indexname, indexdef FROM pg_indexes"
        " WHERE tablename IN ('spans', 'traces')",
    )
    defs = {name: (table, definition) for table, name, definition in rows}
    expected = {
        "spans_pkey": ("spans", "(trace_id, span_id, start_time)"),
        "spans_start_time_idx": ("spans", "(start_time DESC)"),
        "spans_project_start_time_idx": ("spans", "(project, start_time DESC)"),
        "spans_user_start_time_idx": (
            "spans",
            "(user_id, start_time DESC) WHERE (user_id IS NOT NULL)",
        ),
        "spans_errors_idx": ("spans", "(project, start_time DESC) WHERE (status = 'error'::text)"),
        "traces_pkey": ("traces", "(trace_id)"),
        "traces_project_start_time_idx": ("traces", "(project, start_time DESC, trace_id DESC)"),
        "traces_start_time_idx": ("traces", "(start_time DESC)"),
        "traces_user_start_time_idx": (
            "traces",
            "(user_id, start_time DESC) WHERE (user_id IS NOT NULL)",
        ),
        "traces_errors_idx": (
            "traces",
            "(project, start_time DESC) WHERE (status = 'error'::text)",
        ),
    }
    for name, (table, tail) in expected.items():
        assert name in defs, f"missing index {name}"
        assert defs[name][0] == table
        assert defs[name][1].endswith(tail), defs[name][1]
    assert "UNIQUE" in defs["spans_pkey"][1]


def test_trace_pagination_uses_the_cursor_index(migrated):
    with psycopg.connect(migrated) as conn:
        conn.execute("SET enable_seqscan = off")
        plan = conn.execute(
            "EXPLAIN SELECT trace_id FROM traces WHERE project = 'p'"
            " AND (start_time, trace_id) < (now(), 'z')"
            " ORDER BY start_time DESC, trace_id DESC LIMIT 50"
        ).fetchall()
    text = "\n".join(r[0] for r in plan)
    assert "traces_project_start_time_idx" in text
    assert "Sort" not in text, text


# ---------------------------------------------------------------- functions


def _small_trace(conn: psycopg.Connection) -> None:
    _insert_span(
        conn,
        span_id="root",
        name="agent run",
        kind="agent",
        user_id="u1",
        session_id="sess",
        end_time=T0 + timedelta(seconds=3),
    )
    _insert_span(
        conn,
        span_id="llm1",
        parent_span_id="root",
        name="chat gpt-4o",
        start_time=T0 + timedelta(milliseconds=250),
        end_time=T0 + timedelta(milliseconds=1250),
        provider="openai",
        request_model="gpt-4o",
        response_model="gpt-4o-2024-08-06",
        input_tokens=100,
        output_tokens=20,
        cost_usd=0.0012,
        status="error",
    )
    _insert_span(
        conn,
        span_id="tool1",
        parent_span_id="root",
        name="search",
        kind="tool",
        start_time=T0 + timedelta(milliseconds=1500),
        end_time=T0 + timedelta(milliseconds=2000),
        status="unset",
    )


def test_grafana_trace_function_shape(migrated):
    with psycopg.connect(migrated) as conn:
        _small_trace(conn)
        _insert_span(conn, trace_id="other", span_id="x")
        cur = conn.execute("SELECT * FROM llmpulse_trace_spans(%s)", ["t1"])
        columns = [c.name for c in cur.description]
        rows = [dict(zip(columns, r, strict=True)) for r in cur.fetchall()]

    assert columns == [
        "traceID",
        "spanID",
        "parentSpanID",
        "serviceName",
        "operationName",
        "startTime",
        "duration",
        "tags",
        "statusCode",
        "statusMessage",
    ]
    assert [r["spanID"] for r in rows] == ["root", "llm1", "tool1"]
    root, llm, tool = rows
    assert root["parentSpanID"] is None and llm["parentSpanID"] == "root"
    assert {r["traceID"] for r in rows} == {"t1"}
    assert root["serviceName"] == "demo" and llm["operationName"] == "chat gpt-4o"
    assert root["startTime"] == T0.timestamp() * 1000
    assert llm["startTime"] == T0.timestamp() * 1000 + 250
    assert (root["duration"], llm["duration"], tool["duration"]) == (3000.0, 1000.0, 500.0)
    assert [r["statusCode"] for r in rows] == [1, 2, 0]

    tags = {t["key"]: t["value"] for t in llm["tags"]}
    assert all(set(t) == {"key", "value"} for t in llm["tags"])
    assert tags == {
        "kind": "llm",
        "status": "error",
        "model": "gpt-4o-2024-08-06",
        "provider": "openai",
        "tokens": 120,
        "input_tokens": 100,
        "output_tokens": 20,
        "cost_usd": 0.0012,
    }
    # Absent values are left out rather than sent as nulls.
    assert {t["key"] for t in tool["tags"]} == {"kind", "status"}


def test_grafana_trace_function_unknown_trace_is_empty(migrated):
    assert _query(migrated, "SELECT * FROM llmpulse_trace_spans('nope')") == []


def test_refresh_traces_summarises_and_is_replay_safe(migrated):
    with psycopg.connect(migrated) as conn:
        _small_trace(conn)
        assert conn.execute("SELECT llmpulse_refresh_traces(%s)", [["t1"]]).fetchone() == (1,)
        conn.execute("SELECT llmpulse_refresh_traces(%s)", [["t1", "missing"]])
        row = conn.execute(
            "SELECT project, root_span_id, root_name, start_time, duration_ms, status,"
            " span_count, error_count, input_tokens, output_tokens, total_tokens,"
            " cost_usd::float8, user_id, session_id FROM traces"
        ).fetchall()
    assert row == [
        ("demo", "root", "agent run", T0, 3000.0, "error", 3, 1, 100, 20, 120, 0.0012, "u1", "sess")
    ]


def test_refresh_traces_waits_for_a_late_root(migrated):
    with psycopg.connect(migrated) as conn:
        _insert_span(
            conn,
            span_id="child",
            parent_span_id="root",
            start_time=T0 + timedelta(seconds=1),
            end_time=T0 + timedelta(seconds=2),
        )
        conn.execute("SELECT llmpulse_refresh_traces(ARRAY['t1'])")
        early = conn.execute("SELECT root_span_id, span_count, start_time FROM traces").fetchone()
        _insert_span(conn, span_id="root", name="late root", end_time=T0 + timedelta(seconds=3))
        conn.execute("SELECT llmpulse_refresh_traces(ARRAY['t1'])")
        late = conn.execute("SELECT root_span_id, span_count, start_time FROM traces").fetchone()
    assert early == (None, 1, T0 + timedelta(seconds=1))
    assert late == ("root", 2, T0)


# ---------------------------------------------------------------- versions


# Two migrations after the packaged ones, and a view that needs the first.
SCORE = f"{NEXT:04d}_span_score"
EXTRA = {
    f"versions/{SCORE}.up.sql": "ALTER TABLE spans ADD COLUMN score double precision;\n",
    f"versions/{SCORE}.down.sql": "ALTER TABLE spans DROP COLUMN score CASCADE;\n",
    f"versions/{NEXT + 1:04d}_reviews.up.sql": "CREATE TABLE reviews (id bigint PRIMARY KEY);\n",
    f"versions/{NEXT + 1:04d}_reviews.down.sql": "DROP TABLE reviews CASCADE;\n",
    "idempotent/9900_scored.sql": (
        f"-- requires-version: {NEXT}\n"
        "CREATE OR REPLACE VIEW scored_spans AS SELECT trace_id, score FROM spans;\n"
    ),
}


def _views(url: str) -> set[str]:
    rows = _query(url, "SELECT viewname FROM pg_views WHERE schemaname = current_schema()")
    return {r[0] for r in rows}


def test_rollback_to_a_version(db_url, source_factory):
    source = source_factory(EXTRA)
    assert migrate(db_url, source=source) == [*ALL, NEXT, NEXT + 1]
    assert "scored_spans" in _views(db_url)

    assert rollback(db_url, source=source) == [NEXT + 1]
    assert "reviews" not in _tables(db_url)
    assert rollback(db_url, to=LATEST, source=source) == [NEXT]
    assert rollback(db_url, to=NEXT + 5, source=source) == []
    assert status(db_url, source=source).version == LATEST
    assert _query(db_url, "SELECT version FROM schema_migrations ORDER BY 1") == [(v,) for v in ALL]
    # The view needs version NEXT: dropped by its down file's CASCADE and not
    # re-created; the packaged functions survived and were re-applied.
    assert "scored_spans" not in _views(db_url)
    assert "llmpulse_trace_spans" in _functions(db_url)

    assert migrate(db_url, source=source) == [NEXT, NEXT + 1]
    assert "scored_spans" in _views(db_url)


def test_failed_migration_rolls_back_only_itself(db_url, source_factory):
    source = source_factory(
        {
            f"versions/{NEXT:04d}_broken.up.sql": (
                "CREATE TABLE half_done (id int);\n-- a comment\nSELEC 1;\n"
            ),
            f"versions/{NEXT:04d}_broken.down.sql": "DROP TABLE half_done;\n",
        }
    )
    with pytest.raises(MigrationError) as info:
        migrate(db_url, source=source)
    message = str(info.value)
    assert f"{NEXT:04d}_broken.up.sql (line 3)" in message
    assert 'syntax error at or near "SELEC"' in message
    assert "rolled back" in info.value.hint
    assert "half_done" not in _tables(db_url)
    assert status(db_url, source=source).version == LATEST


def test_tampered_checksum_is_refused(migrated):
    with psycopg.connect(migrated) as conn:
        conn.execute("UPDATE schema_migrations SET checksum = 'tampered' WHERE version = 1")
    for action in (migrate, rollback):
        with pytest.raises(MigrationError, match="0001_spans_traces changed") as info:
            action(migrated)
        assert "never edited" in info.value.hint
    assert status(migrated).problems[0].state == "changed"
    assert "spans" in _tables(migrated), "nothing was rolled back"


def test_edited_file_is_refused(db_url, source_factory):
    source = source_factory(EXTRA)
    migrate(db_url, source=source)
    path = source / "versions" / f"{SCORE}.up.sql"
    path.write_text(path.read_text() + "-- harmless?\n")
    with pytest.raises(MigrationError, match=f"{SCORE} changed"):
        migrate(db_url, source=source)


def test_missing_file_is_refused(db_url, source_factory):
    migrate(db_url, source=source_factory(EXTRA))
    with pytest.raises(MigrationError, match=f"{SCORE} file missing"):
        migrate(db_url)
    with pytest.raises(MigrationError, match="file missing"):
        rollback(db_url)
    assert {s.state for s in status(db_url).problems} == {"missing"}


def test_concurrent_migrate_is_safe(db_url, source_factory):
    # pg_sleep widens the race window; CREATE TABLE fails if run twice.
    source = source_factory(
        {
            f"versions/{NEXT:04d}_slow.up.sql": (
                "SELECT pg_sleep(0.5);\nCREATE TABLE slow_marker (id int);\n"
            ),
            f"versions/{NEXT:04d}_slow.down.sql": "DROP TABLE slow_marker;\n",
        }
    )
    workers = 4
    barrier = threading.Barrier(workers)
    results: list[list[int]] = []
    failures: list[BaseException] = []

    def run() -> None:
        barrier.wait()
        try:
            results.append(migrate(db_url, source=source))
        except BaseException as e:  # noqa: BLE001 - reported below
            failures.append(e)

    threads = [threading.Thread(target=run) for _ in range(workers)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=60)
    assert not failures, failures
    assert sorted(results) == [[]] * (workers - 1) + [[*ALL, NEXT]]
    assert _query(db_url, "SELECT version FROM schema_migrations ORDER BY 1") == [(v,) for v in (*ALL, NEXT)]


def test_lock_timeout_gives_a_clear_error(db_url):
    with psycopg.connect(db_url, autocommit=True) as holder:
        holder.execute("SELECT pg_advisory_lock(%s)", [LOCK_KEY])
        with pytest.raises(MigrationError, match="held the migration lock") as info:
            migrate(db_url, lock_timeout=0.3)
        assert "pg_stat_activity" in info.value.hint
    assert migrate(db_url) == ALL


# ---------------------------------------------------------------- CLI


def _url_with_password(url: str) -> tuple[str, str]:
    """Return a URL that carries a password, and that password."""
    if "://" not in url:
        pytest.fail("the CLI test needs DATABASE_URL in URL form", pytrace=False)
    parts = urlsplit(url)
    if parts.password:
        return url, parts.password
    if os.environ.get("PGPASSWORD"):
        return url, os.environ["PGPASSWORD"]
    # Servers that do not ask for a password ignore one that is sent.
    netloc = f"{parts.username or ''}:cli-s3cret@{parts.hostname}"
    if parts.port:
        netloc += f":{parts.port}"
    return urlunsplit(parts._replace(netloc=netloc)), "cli-s3cret"


def test_cli_migrate_status_rollback(db_url):
    url, password = _url_with_password(db_url)
    runner = CliRunner()
    env = {"DATABASE_URL": url}
    outputs = []

    def invoke(args, **kwargs):
        result = runner.invoke(db, args, env=env, **kwargs)
        outputs.append(result.output)
        return result

    result = invoke(["status"])
    assert result.exit_code == 0, result.output
    assert "0001_spans_traces" in result.output and "pending" in result.output

    result = invoke(["migrate"])
    assert result.exit_code == 0, result.output
    assert "Applied 0001_spans_traces" in result.output
    assert f"Schema version: {LATEST} (latest {LATEST})" in result.output
    assert "Backend: " in result.output

    result = invoke(["migrate"])
    assert result.exit_code == 0 and "Already up to date." in result.output

    result = invoke(["rollback"], input="n\n")
    assert result.exit_code == 1 and "Aborted" in result.output
    assert "spans" in _tables(db_url)

    result = invoke(["rollback", "--to", "0", "--yes"])
    assert result.exit_code == 0, result.output
    assert "Rolled back 0001_spans_traces" in result.output
    assert "Schema version: 0" in result.output

    result = invoke(["rollback", "--yes"])
    assert result.exit_code == 0 and "Nothing to roll back" in result.output

    assert all(password not in o for o in outputs)


def test_cli_never_prints_the_password(db_url):
    url, password = _url_with_password(db_url)
    runner = CliRunner()
    combined = ""
    for args in (["migrate"], ["status"], ["rollback", "--yes"]):
        result = runner.invoke(db, [*args, "--database-url", url])
        assert result.exit_code == 0, result.output
        combined += result.output
    assert "***" in combined
    assert password not in combined


def test_cli_reports_problems_with_exit_code(migrated):
    with psycopg.connect(migrated) as conn:
        conn.execute("UPDATE schema_migrations SET checksum = 'tampered'")
    runner = CliRunner()
    result = runner.invoke(db, ["status", "--database-url", migrated])
    assert result.exit_code == 1
    assert "changed" in result.output
    result = runner.invoke(db, ["migrate", "--database-url", migrated])
    assert result.exit_code == 1
    assert "Hint:" in result.output
