"""Apply, roll back and inspect the llmpulse SQL schema.

Every versioned migration runs in its own transaction together with its
``schema_migrations`` row, so a failure leaves the schema at the previous
version. A session-level advisory lock serialises concurrent runs (several
processor replicas starting at once). Idempotent files run in one transaction
after the versioned ones, but only those whose ``requires-version`` is at most
the schema's version: after a rollback they are skipped instead of failing on
tables that no longer exist (down files drop dependent objects with CASCADE).

The functions accept a conninfo string (URL or key=value) or an open, idle
:class:`psycopg.Connection`. File discovery, checks and planning live in
:mod:`sinks.migration_plan` and are re-exported here.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator, Sequence
from contextlib import contextmanager

import psycopg
from psycopg import errors as pg_errors
from psycopg.pq import TransactionStatus

from sinks.dburl import mask_password, redact
from sinks.migration_plan import (
    AppliedMigration,
    IdempotentScript,
    Migration,
    MigrationError,
    MigrationFile,
    MigrationState,
    Source,
    Status,
    checksum,
    compare,
    load_idempotent,
    load_migrations,
    parse_migration_filename,
    plan_migrate,
    plan_rollback,
    verify,
)

__all__ = [
    "DEFAULT_LOCK_TIMEOUT",
    "LOCK_KEY",
    "AppliedMigration",
    "IdempotentScript",
    "Migration",
    "MigrationError",
    "MigrationFile",
    "MigrationState",
    "Status",
    "checksum",
    "compare",
    "load_idempotent",
    "load_migrations",
    "migrate",
    "parse_migration_filename",
    "plan_migrate",
    "plan_rollback",
    "rollback",
    "status",
    "verify",
]

log = logging.getLogger(__name__)

#: Advisory lock key: the bytes of "llmpulse" read as a (positive) bigint, so
#: it cannot collide with small integer keys other tools tend to use.
LOCK_KEY = int.from_bytes(b"llmpulse", "big")

#: Seconds to wait for another migrate/rollback to finish before giving up.
DEFAULT_LOCK_TIMEOUT = 60.0

_APPLICATION_NAME = "llmpulse-migrate"

Target = str | psycopg.Connection


# --------------------------------------------------------------------------
# Database


@contextmanager
def _session(target: Target) -> Iterator[psycopg.Connection]:
    """An autocommit connection: each step opens its own transaction."""
    if isinstance(target, psycopg.Connection):
        if target.info.transaction_status != TransactionStatus.IDLE:
            raise MigrationError(
                "the connection passed to the migrator is inside a transaction",
                hint="commit or roll back first; every migration runs in its own transaction",
            )
        previous = target.autocommit
        target.autocommit = True
        try:
            yield target
        finally:
            if not target.closed and target.info.transaction_status == TransactionStatus.IDLE:
                target.autocommit = previous
        return
    try:
        conn = psycopg.connect(
            target, autocommit=True, application_name=_APPLICATION_NAME, connect_timeout=10
        )
    except psycopg.Error as e:
        raise MigrationError(
            f"cannot connect to {mask_password(target)}: {redact(str(e).strip(), target)}",
            hint="check DATABASE_URL / --database-url and that PostgreSQL is running "
            "(make services)",
        ) from e
    with conn:
        yield conn


@contextmanager
def _db_errors(doing: str, target: Target) -> Iterator[None]:
    """Re-raise driver errors outside a migration file as MigrationError."""
    try:
        yield
    except MigrationError:
        raise
    except psycopg.Error as e:
        text = str(e).strip()
        if isinstance(target, str):
            text = redact(text, target)
        raise MigrationError(
            f"{doing} failed: {text}",
            hint="check that the database user may create tables and that the server is up",
        ) from e


@contextmanager
def _locked(conn: psycopg.Connection, timeout: float | None) -> Iterator[None]:
    """Hold the migration advisory lock for the whole run.

    Session-level, not transaction-level: it has to span the separate
    transactions of several migrations.
    """
    previous = conn.execute("SELECT current_setting('lock_timeout')").fetchone()[0]
    wait = "0" if timeout is None else f"{max(int(timeout * 1000), 1)}ms"
    conn.execute("SELECT set_config('lock_timeout', %s, false)", [wait])
    try:
        conn.execute("SELECT pg_advisory_lock(%s)", [LOCK_KEY])
    except pg_errors.LockNotAvailable as e:
        raise MigrationError(
            f"another migrate or rollback held the migration lock for {timeout:g}s",
            hint=f"wait for it to finish; it shows as application_name "
            f"'{_APPLICATION_NAME}' in pg_stat_activity (advisory lock key {LOCK_KEY})",
        ) from e
    finally:
        conn.execute("SELECT set_config('lock_timeout', %s, false)", [previous])
    try:
        yield
    finally:
        # Closing the session releases the lock too; an unlock failure must
        # not hide the error that got us here.
        if not conn.closed and conn.info.transaction_status == TransactionStatus.IDLE:
            try:
                conn.execute("SELECT pg_advisory_unlock(%s)", [LOCK_KEY])
            except psycopg.Error:
                log.debug("could not release the migration lock", exc_info=True)


def _timescaledb(conn: psycopg.Connection) -> tuple[bool, bool]:
    row = conn.execute(
        "SELECT EXISTS (SELECT 1 FROM pg_available_extensions WHERE name = 'timescaledb'),"
        "       EXISTS (SELECT 1 FROM pg_extension WHERE extname = 'timescaledb')"
    ).fetchone()
    return bool(row[0]), bool(row[1])


def _ensure_timescaledb(conn: psycopg.Connection) -> bool:
    """Install TimescaleDB when the server offers it; report if it is in use.

    Migrations check pg_extension, so installing first is what turns spans
    into a hypertable. Failing to install (not in shared_preload_libraries,
    no privilege) falls back to plain tables rather than blocking the schema.
    """
    available, installed = _timescaledb(conn)
    if installed or not available:
        return installed
    try:
        with conn.transaction():
            conn.execute("CREATE EXTENSION IF NOT EXISTS timescaledb")
    except psycopg.Error as e:
        log.warning(
            "TimescaleDB is available but could not be installed (%s); "
            "using plain PostgreSQL tables",
            str(e).strip(),
        )
        return False
    log.info("installed the timescaledb extension")
    return True


def _ensure_table(conn: psycopg.Connection) -> None:
    conn.execute(
        "CREATE TABLE IF NOT EXISTS schema_migrations ("
        " version integer PRIMARY KEY,"
        " name text NOT NULL,"
        " applied_at timestamptz NOT NULL DEFAULT now(),"
        " checksum text NOT NULL)"
    )


def _read_applied(conn: psycopg.Connection) -> list[AppliedMigration]:
    exists = conn.execute("SELECT to_regclass('schema_migrations') IS NOT NULL").fetchone()[0]
    if not exists:
        return []
    rows = conn.execute(
        "SELECT version, name, checksum, applied_at FROM schema_migrations ORDER BY version"
    ).fetchall()
    return [AppliedMigration(*row) for row in rows]


def _file_error(e: psycopg.Error, filename: str, sql: str) -> MigrationError:
    diag = e.diag
    where = ""
    if diag.statement_position:
        line = sql.count("\n", 0, int(diag.statement_position) - 1) + 1
        where = f" (line {line})"
    message = f"{filename}{where}: {diag.message_primary or str(e).strip()}"
    if diag.context:
        message += f"\n{diag.context.strip()}"
    hints = [h for h in (diag.message_detail, diag.message_hint) if h]
    hints.append(
        "the transaction was rolled back; fix the new file (never one that has "
        "landed) and run migrate again"
    )
    return MigrationError(message, hint="; ".join(hints))


def _run_file(conn: psycopg.Connection, filename: str, sql: str, then: tuple) -> None:
    """Run one SQL file plus its bookkeeping statement in one transaction."""
    try:
        with conn.transaction():
            # No parameters: psycopg sends the text as one simple query, so a
            # file may hold many statements and DO blocks.
            conn.execute(sql.encode("utf-8"))
            conn.execute(*then)
    except psycopg.Error as e:
        raise _file_error(e, filename, sql) from e


def _apply_idempotent(
    conn: psycopg.Connection, scripts: Sequence[IdempotentScript], version: int
) -> list[str]:
    """Re-apply idempotent files whose tables exist at ``version``.

    One transaction: dashboards see either all new views or all old ones.
    """
    run = [s for s in scripts if s.requires_version <= version]
    for skipped in (s for s in scripts if s.requires_version > version):
        log.info("skipped %s (needs schema version %d)", skipped.filename, skipped.requires_version)
    current = None
    try:
        with conn.transaction():
            for current in run:
                conn.execute(current.sql.encode("utf-8"))
    except psycopg.Error as e:
        if current is None:
            raise
        raise _file_error(e, current.filename, current.sql) from e
    for script in run:
        log.info("applied %s", script.filename)
    return [s.filename for s in run]


def migrate(
    target: Target, *, source: Source = None, lock_timeout: float | None = DEFAULT_LOCK_TIMEOUT
) -> list[int]:
    """Apply every pending migration, then re-apply the idempotent files.

    Parameters
    ----------
    target
        A conninfo string (``postgresql://...`` or ``key=value``) or an open,
        idle psycopg connection (left open; its autocommit setting restored).
    source
        Migrations directory; defaults to the packaged one.
    lock_timeout
        Seconds to wait for a concurrent migrate/rollback; ``None`` waits forever.

    Returns
    -------
    list of int
        Versions applied by this call, ascending; empty when up to date.

    Raises
    ------
    MigrationError
        When the database is unreachable, a file changed or is missing, the
        lock was not obtained, or a migration failed (it is rolled back;
        earlier ones in the same call stay applied).

    Examples
    --------
    What a fresh database would get (planning needs no database):

    >>> [m.label for m in plan_migrate(load_migrations(), applied=[])][:1]
    ['0001_spans_traces']
    >>> migrate("postgresql://llmpulse@127.0.0.1:15432/llmpulse")  # doctest: +SKIP
    [1]
    """
    migrations = load_migrations(source)
    scripts = load_idempotent(source)
    done: list[int] = []
    with _session(target) as conn, _db_errors("migrate", target), _locked(conn, lock_timeout):
        _ensure_timescaledb(conn)
        _ensure_table(conn)
        applied = _read_applied(conn)
        verify(migrations, applied)
        for m in plan_migrate(migrations, [a.version for a in applied]):
            _run_file(
                conn,
                m.up_filename,
                m.up_sql,
                (
                    "INSERT INTO schema_migrations (version, name, checksum) VALUES (%s, %s, %s)",
                    [m.version, m.name, m.checksum],
                ),
            )
            log.info("applied %s", m.label)
            done.append(m.version)
        version = max([a.version for a in applied] + done, default=0)
        _apply_idempotent(conn, scripts, version)
    return done


def rollback(
    target: Target,
    to: int | None = None,
    *,
    source: Source = None,
    lock_timeout: float | None = DEFAULT_LOCK_TIMEOUT,
) -> list[int]:
    """Undo migrations down to version ``to``, newest first.

    Each down file runs in its own transaction with the removal of its
    ``schema_migrations`` row. Afterwards the idempotent files that still fit
    the remaining schema are re-applied (a down file's CASCADE may have
    dropped views that depended on a changed table).

    Parameters
    ----------
    target
        A conninfo string or an open, idle psycopg connection.
    to
        Version to end at; ``None`` undoes only the latest migration, ``0``
        undoes everything (drops all data in llmpulse tables).
    source
        Migrations directory; defaults to the packaged one.
    lock_timeout
        Seconds to wait for a concurrent migrate/rollback; ``None`` waits forever.

    Returns
    -------
    list of int
        Versions rolled back, newest first; empty when nothing to do.

    Raises
    ------
    MigrationError
        As :func:`migrate`, or if ``to`` is negative.

    Examples
    --------
    >>> [m.label for m in plan_rollback(load_migrations(), applied=[1], to=0)]
    ['0001_spans_traces']
    >>> rollback("postgresql://llmpulse@127.0.0.1:15432/llmpulse", to=0)  # doctest: +SKIP
    [1]
    """
    migrations = load_migrations(source)
    scripts = load_idempotent(source)
    if to is not None and to < 0:
        raise MigrationError(f"cannot roll back to version {to}", hint="use --to 0 or higher")
    done: list[int] = []
    with _session(target) as conn, _db_errors("rollback", target), _locked(conn, lock_timeout):
        applied = _read_applied(conn)
        if not applied:
            return done
        verify(migrations, applied)
        for m in plan_rollback(migrations, [a.version for a in applied], to):
            _run_file(
                conn,
                m.down_filename,
                m.down_sql,
                ("DELETE FROM schema_migrations WHERE version = %s", [m.version]),
            )
            log.info("rolled back %s", m.label)
            done.append(m.version)
        remaining = [a.version for a in applied if a.version not in done]
        _apply_idempotent(conn, scripts, max(remaining, default=0))
    return done


def status(target: Target, *, source: Source = None) -> Status:
    """Report the schema version, pending migrations and file problems.

    Read-only: creates nothing, takes no lock, and reports (rather than
    raises on) changed or missing files.

    Parameters
    ----------
    target
        A conninfo string or an open, idle psycopg connection.
    source
        Migrations directory; defaults to the packaged one.

    Returns
    -------
    Status

    Raises
    ------
    MigrationError
        When the database is unreachable or the files are malformed.

    Examples
    --------
    >>> states = compare(load_migrations(), applied=[])
    >>> (states[0].version, states[0].state)
    (1, 'pending')
    >>> status("postgresql://llmpulse@127.0.0.1:15432/llmpulse").pending  # doctest: +SKIP
    ()
    """
    migrations = load_migrations(source)
    with _session(target) as conn, _db_errors("status", target):
        applied = _read_applied(conn)
        available, installed = _timescaledb(conn)
    return Status(
        version=max((a.version for a in applied), default=0),
        latest=max((m.version for m in migrations), default=0),
        timescaledb_available=available,
        timescaledb_installed=installed,
        migrations=compare(migrations, applied),
    )
