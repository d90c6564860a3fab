"""``llmpulse trace``: read traces back from the database.

``show`` draws one trace as a waterfall, ``list`` prints a page of trace
summaries and the command for the next page. Register with the main CLI via
``main.add_command(trace)``. The database URL comes from ``--database-url`` or
``DATABASE_URL``; it is printed with its password masked.
"""

from __future__ import annotations

import re
import shlex
import shutil
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta

import click
import psycopg

from sinks.db_cli import database_url_option
from sinks.dburl import mask_password, redact
from sinks.trace_query import MAX_LIMIT, decode_cursor, fetch_trace, list_traces
from sinks.waterfall import render_trace_list, render_waterfall

__all__ = ["parse_when", "trace"]


_UNITS = {"s": "seconds", "m": "minutes", "h": "hours", "d": "days", "w": "weeks"}
_DURATION = re.compile(r"(\d+(?:\.\d+)?)([smhdw])")


def parse_when(text: str) -> timedelta | datetime:
    """A duration back from now (``15m``, ``1h``, ``7d``, ``1h30m``) or an ISO time.

    ISO times without an offset are read as UTC, as every time in the output is.

    Examples
    --------
    >>> parse_when("15m"), parse_when("1h30m")
    (datetime.timedelta(seconds=900), datetime.timedelta(seconds=5400))
    >>> parse_when("2024-05-01T12:00")
    datetime.datetime(2024, 5, 1, 12, 0, tzinfo=datetime.timezone.utc)
    >>> parse_when("yesterday")
    Traceback (most recent call last):
    ...
    ValueError: 'yesterday' is neither a duration like 15m, 1h, 7d nor an ISO time like 2024-05-01T12:00Z
    """
    value = text.strip().lower()
    if value and _DURATION.sub("", value) == "":
        return sum(
            (timedelta(**{_UNITS[unit]: float(n)}) for n, unit in _DURATION.findall(value)),
            timedelta(),
        )
    try:
        when = datetime.fromisoformat(text.strip())
    except ValueError:
        raise ValueError(
            f"{text!r} is neither a duration like 15m, 1h, 7d nor an ISO time like 2024-05-01T12:00Z"
        ) from None
    return when if when.tzinfo else when.replace(tzinfo=UTC)


class When(click.ParamType):
    """A click option type: a duration back from now (``90m``, ``24h``) or a time.

    >>> When().convert("2h", None, None)
    datetime.timedelta(seconds=7200)
    """

    name = "DURATION|TIME"

    def convert(self, value, param, ctx):  # type: ignore[no-untyped-def]
        if isinstance(value, timedelta | datetime):
            return value
        try:
            return parse_when(value)
        except ValueError as e:
            self.fail(str(e), param, ctx)


@contextmanager
def _connect(database_url: str) -> Iterator[psycopg.Connection]:
    """A read-only connection; driver errors become messages without the password."""
    where = mask_password(database_url)
    try:
        conn = psycopg.connect(
            database_url, connect_timeout=10, autocommit=True, application_name="llmpulse-trace"
        )
    except psycopg.Error as e:
        raise click.ClickException(
            f"cannot connect to the database at {where}: {redact(str(e).strip(), database_url)}"
        ) from e
    try:
        with conn:
            # Reading only; a mistake here must never write.
            conn.execute("SET default_transaction_read_only = on")
            yield conn
    except (psycopg.errors.UndefinedTable, psycopg.errors.UndefinedColumn) as e:
        raise click.ClickException(
            f"the database at {where} has no llmpulse schema (or an old one): "
            "run `llmpulse db migrate`"
        ) from e
    except psycopg.Error as e:
        raise click.ClickException(
            f"query failed on {where}: {redact(str(e).strip(), database_url)}"
        ) from e


def _iso(dt: datetime) -> str:
    return dt.astimezone(UTC).isoformat().replace("+00:00", "Z")


@click.group("trace")
def trace() -> None:
    """Read traces back: one as a waterfall, or a page of recent ones."""


@trace.command("show")
@click.argument("trace_id")
@click.option(
    "--width",
    type=click.IntRange(min=40, max=1000),
    default=None,
    help="Line width. Default: the terminal's (100 when not a terminal).",
)
@click.option("--no-payloads", is_flag=True, help="Hide span inputs and outputs.")
@click.option(
    "--color/--no-color",
    default=None,
    help="ANSI colours. Default: when writing to a terminal.",
)
@database_url_option
def show_command(
    trace_id: str, width: int | None, no_payloads: bool, color: bool | None, database_url: str
) -> None:
    """Draw TRACE_ID as a waterfall: span tree, timing bars, tokens, cost, errors."""
    with _connect(database_url) as conn:
        found = fetch_trace(conn, trace_id)
    if found is None:
        raise click.ClickException(
            f"trace {trace_id!r} not found in the database at {mask_password(database_url)}"
        )
    if width is None:
        width = shutil.get_terminal_size((100, 24)).columns
    if color is None:
        color = click.get_text_stream("stdout").isatty()
    click.echo(
        render_waterfall(found, width=width, color=color, payloads=not no_payloads), color=color
    )


@trace.command("list")
@click.option("--project", default=None, help="Only this project (default: all).")
@click.option(
    "--since",
    type=When(),
    default="1h",
    show_default=True,
    help="Traces that started after this: a duration back from now (15m, 1h, 7d) or an ISO time.",
)
@click.option("--until", type=When(), default=None, help="...and before this (default: now).")
@click.option("--errors", is_flag=True, help="Only traces with a failed span.")
@click.option("--user", "user_id", default=None, help="Only this user's traces.")
@click.option(
    "--limit", type=click.IntRange(1, MAX_LIMIT), default=50, show_default=True, help="Page size."
)
@click.option("--cursor", default=None, help="Continue after the page that printed this cursor.")
@database_url_option
def list_command(
    project: str | None,
    since: timedelta | datetime,
    until: timedelta | datetime | None,
    errors: bool,
    user_id: str | None,
    limit: int,
    cursor: str | None,
    database_url: str,
) -> None:
    """List traces newest first, one page at a time; prints the next page's command."""
    if cursor is not None:
        try:
            decode_cursor(cursor)
        except ValueError as e:
            raise click.BadParameter(str(e), param_hint="'--cursor'") from e
    with _connect(database_url) as conn:
        page = list_traces(
            conn,
            project=project,
            since=since,
            until=until,
            errors_only=errors,
            user_id=user_id,
            limit=limit,
            cursor=cursor,
        )
    click.echo(render_trace_list(page))
    if page.next_cursor is None:
        if cursor is not None or page.items:
            click.echo("(last page)")
        return
    # The next page repeats the window as absolute times: "--since 1h" typed
    # a minute later would be a different window.
    args = ["llmpulse", "trace", "list"]
    if project is not None:
        args += ["--project", project]
    args += ["--since", _iso(page.since)] if page.since else []
    args += ["--until", _iso(page.until)] if page.until else []
    args += ["--errors"] if errors else []
    args += ["--user", user_id] if user_id is not None else []
    args += ["--limit", str(limit), "--cursor", page.next_cursor]
    click.echo("\nNext page:\n  " + shlex.join(args))
