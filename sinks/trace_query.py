"""Read traces back: one trace with its spans, or a page of trace summaries.

Plain functions over an open psycopg connection, so the CLI, tests and the
benchmark call the same code. Nothing here writes: summaries are built by
``llmpulse_refresh_traces()`` when spans are stored.

The trace list is paginated with a cursor (keyset pagination), never
``OFFSET``: a page is one range scan of ``traces_project_start_time_idx``
(``project, start_time DESC, trace_id DESC``) that starts where the previous
page ended, so page 1,000 costs the same as page 1 and traces arriving while
someone pages do not shift the rows they have not seen yet.
"""

from __future__ import annotations

import base64
import binascii
import json
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from decimal import Decimal

import psycopg

__all__ = [
    "MAX_LIMIT",
    "Page",
    "Span",
    "Trace",
    "TraceSummary",
    "decode_cursor",
    "encode_cursor",
    "fetch_trace",
    "list_traces",
    "list_traces_sql",
]

#: Largest page ``list_traces`` accepts; a bigger page is an export, not a list.
MAX_LIMIT = 1000


@dataclass(frozen=True, slots=True)
class Span:
    """One stored span, with the columns a reader needs (not ``attributes``).

    Examples
    --------
    >>> t0 = datetime(2024, 5, 1, 12, 0, tzinfo=UTC)
    >>> s = Span("s1", None, "chat", "llm", t0, t0 + timedelta(milliseconds=250),
    ...          request_model="gpt-4o-mini", input_tokens=12, output_tokens=3)
    >>> s.duration_ms, s.label, s.total_tokens
    (250.0, 'gpt-4o-mini', 15)
    """

    span_id: str
    parent_span_id: str | None
    name: str
    kind: str
    start_time: datetime
    end_time: datetime
    status: str = "unset"
    status_message: str | None = None
    error_type: str | None = None
    project: str | None = None
    user_id: str | None = None
    operation: str | None = None
    provider: str | None = None
    request_model: str | None = None
    response_model: str | None = None
    tool_name: str | None = None
    agent_name: str | None = None
    input_tokens: int | None = None
    output_tokens: int | None = None
    cost_usd: Decimal | None = None
    input: str | None = None
    output: str | None = None

    @property
    def duration_ms(self) -> float:
        """End minus start in milliseconds (the stored column is computed the same way)."""
        return (self.end_time - self.start_time) / timedelta(milliseconds=1)

    @property
    def label(self) -> str | None:
        """What ran: the model of an LLM call, else the tool or agent name."""
        return self.response_model or self.request_model or self.tool_name or self.agent_name

    @property
    def total_tokens(self) -> int | None:
        """Input plus output tokens; ``None`` when the span counts neither."""
        if self.input_tokens is None and self.output_tokens is None:
            return None
        return (self.input_tokens or 0) + (self.output_tokens or 0)


@dataclass(frozen=True, slots=True)
class TraceSummary:
    """One row of the ``traces`` table.

    Examples
    --------
    >>> t0 = datetime(2024, 5, 1, 12, 0, tzinfo=UTC)
    >>> s = TraceSummary("t1", "bot", t0, t0 + timedelta(seconds=2), status="ok")
    >>> s.duration_ms, s.total_tokens
    (2000.0, 0)
    """

    trace_id: str
    project: str
    start_time: datetime
    end_time: datetime
    status: str = "unset"
    root_span_id: str | None = None
    root_name: str | None = None
    span_count: int = 0
    error_count: int = 0
    input_tokens: int = 0
    output_tokens: int = 0
    cost_usd: Decimal = Decimal(0)
    user_id: str | None = None
    session_id: str | None = None

    @property
    def duration_ms(self) -> float:
        """End minus start in milliseconds."""
        return (self.end_time - self.start_time) / timedelta(milliseconds=1)

    @property
    def total_tokens(self) -> int:
        """Input plus output tokens of every span."""
        return self.input_tokens + self.output_tokens


@dataclass(frozen=True, slots=True)
class Trace:
    """A trace: its summary row (``None`` if not built yet) and its spans.

    The aggregate properties read the summary when there is one (so ``show``
    agrees with ``list``) and otherwise compute the same values from the
    spans, which is what ``llmpulse_refresh_traces()`` would store.

    Examples
    --------
    >>> t0 = datetime(2024, 5, 1, 12, 0, tzinfo=UTC)
    >>> ms = timedelta(milliseconds=1)
    >>> trace = Trace("t1", None, (
    ...     Span("a", None, "agent", "agent", t0, t0 + 900 * ms, status="ok", project="bot"),
    ...     Span("b", "gone", "chat", "llm", t0 + 100 * ms, t0 + 400 * ms, status="error",
    ...          input_tokens=10, output_tokens=5, cost_usd=Decimal("0.0001")),
    ... ))
    >>> trace.project, trace.status, trace.span_count, trace.total_tokens, trace.cost_usd
    ('bot', 'error', 2, 15, Decimal('0.0001'))
    >>> [s.span_id for s in trace.orphans]
    ['b']
    """

    trace_id: str
    summary: TraceSummary | None
    spans: tuple[Span, ...] = field(default_factory=tuple)

    @property
    def orphans(self) -> tuple[Span, ...]:
        """Spans whose parent is not (yet) stored in this trace."""
        ids = {s.span_id for s in self.spans}
        return tuple(s for s in self.spans if s.parent_span_id is not None and s.parent_span_id not in ids)

    @property
    def project(self) -> str | None:
        if self.summary is not None:
            return self.summary.project
        roots = [s for s in self.spans if s.parent_span_id is None] or list(self.spans)
        return roots[0].project if roots else None

    @property
    def user_id(self) -> str | None:
        if self.summary is not None:
            return self.summary.user_id
        return next((s.user_id for s in self.spans if s.user_id is not None), None)

    @property
    def start_time(self) -> datetime | None:
        if self.summary is not None:
            return self.summary.start_time
        return min((s.start_time for s in self.spans), default=None)

    @property
    def end_time(self) -> datetime | None:
        if self.summary is not None:
            return self.summary.end_time
        return max((s.end_time for s in self.spans), default=None)

    @property
    def duration_ms(self) -> float:
        start, end = self.start_time, self.end_time
        return 0.0 if start is None or end is None else (end - start) / timedelta(milliseconds=1)

    @property
    def status(self) -> str:
        if self.summary is not None:
            return self.summary.status
        statuses = {s.status for s in self.spans}
        return "error" if "error" in statuses else "ok" if "ok" in statuses else "unset"

    @property
    def span_count(self) -> int:
        return self.summary.span_count if self.summary is not None else len(self.spans)

    @property
    def error_count(self) -> int:
        if self.summary is not None:
            return self.summary.error_count
        return sum(s.status == "error" for s in self.spans)

    @property
    def total_tokens(self) -> int:
        if self.summary is not None:
            return self.summary.total_tokens
        return sum(s.total_tokens or 0 for s in self.spans)

    @property
    def cost_usd(self) -> Decimal:
        if self.summary is not None:
            return self.summary.cost_usd
        return sum((s.cost_usd for s in self.spans if s.cost_usd is not None), Decimal(0))


@dataclass(frozen=True, slots=True)
class Page:
    """One page of trace summaries, newest first.

    ``next_cursor`` is ``None`` on the last page; otherwise pass it to
    :func:`list_traces` (with the same filters) for the following page.
    ``since``/``until`` are the resolved absolute window, so a caller can
    repeat it exactly even when it was given as "the last hour".
    """

    items: tuple[TraceSummary, ...]
    next_cursor: str | None
    since: datetime | None = None
    until: datetime | None = None


# --------------------------------------------------------------------- cursor


def encode_cursor(start_time: datetime, trace_id: str) -> str:
    """Opaque, URL-safe token for the position after ``(start_time, trace_id)``.

    Examples
    --------
    >>> token = encode_cursor(datetime(2024, 5, 1, 12, 0, 0, 123456, tzinfo=UTC), "t-9")
    >>> decode_cursor(token)
    (datetime.datetime(2024, 5, 1, 12, 0, 0, 123456, tzinfo=datetime.timezone.utc), 't-9')
    """
    # Microsecond precision matters: timestamptz has it, and a cursor that
    # rounded would skip or repeat traces that started in the same second.
    payload = json.dumps([start_time.astimezone(UTC).isoformat(), trace_id], separators=(",", ":"))
    return base64.urlsafe_b64encode(payload.encode()).decode().rstrip("=")


def decode_cursor(cursor: str) -> tuple[datetime, str]:
    """Inverse of :func:`encode_cursor`; a malformed token raises ``ValueError``.

    Examples
    --------
    >>> decode_cursor("not a cursor")
    Traceback (most recent call last):
    ...
    ValueError: invalid cursor 'not a cursor': pass the next_cursor of a previous page unchanged
    """
    error = ValueError(
        f"invalid cursor {cursor[:40]!r}: pass the next_cursor of a previous page unchanged"
    )
    try:
        raw = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4))
        position = json.loads(raw.decode())
        if not isinstance(position, list) or len(position) != 2:
            raise error
        when, trace_id = position
        start_time = datetime.fromisoformat(when)
    except (binascii.Error, UnicodeDecodeError, ValueError, TypeError) as e:
        raise error from e
    if start_time.tzinfo is None or not isinstance(trace_id, str):
        raise error
    return start_time, trace_id


# ---------------------------------------------------------------------- reads

_SPAN_COLUMNS = (
    "span_id, parent_span_id, name, kind, start_time, end_time, status, status_message, "
    "error_type, project, user_id, operation, provider, request_model, response_model, "
    "tool_name, agent_name, input_tokens, output_tokens, cost_usd, input, output"
)
_SUMMARY_COLUMNS = (
    "trace_id, project, start_time, end_time, status, root_span_id, root_name, span_count, "
    "error_count, input_tokens, output_tokens, cost_usd, user_id, session_id"
)
# spans_pkey (trace_id, span_id, start_time) finds the rows; sorting one
# trace's spans (tens to hundreds) is cheaper than another index on spans.
_SPANS_SQL = (
    f"SELECT {_SPAN_COLUMNS} FROM spans WHERE trace_id = %s ORDER BY start_time, span_id"
)
_SUMMARY_SQL = f"SELECT {_SUMMARY_COLUMNS} FROM traces WHERE trace_id = %s"


def fetch_trace(conn: psycopg.Connection, trace_id: str) -> Trace | None:
    """Load one trace: its summary row and all its spans by start time.

    Parameters
    ----------
    conn
        An open psycopg connection (its transaction state is left as is).
    trace_id
        The trace to read.

    Returns
    -------
    Trace or None
        ``None`` when neither a summary nor a span exists. A trace whose
        summary was not built yet has ``summary=None``; spans whose parent has
        not arrived are listed in :attr:`Trace.orphans`.

    Examples
    --------
    Needs a database; see ``tests/integration/test_trace_query.py``:

    >>> fetch_trace  # doctest: +ELLIPSIS
    <function fetch_trace at ...>
    """
    with conn.cursor() as cur:
        cur.execute(_SUMMARY_SQL, (trace_id,))
        row = cur.fetchone()
        summary = TraceSummary(*row) if row else None
        cur.execute(_SPANS_SQL, (trace_id,))
        spans = tuple(Span(*r) for r in cur.fetchall())
    if summary is None and not spans:
        return None
    return Trace(trace_id, summary, spans)


def _resolve(when: timedelta | datetime, now: datetime, name: str) -> datetime:
    if isinstance(when, timedelta):
        return now - when
    if isinstance(when, datetime):
        if when.tzinfo is None:
            # psycopg would send a naive value as `timestamp`, which the server
            # reads in its own TimeZone: a silent shift. Refuse instead.
            raise ValueError(f"{name} must be timezone-aware (got {when.isoformat()})")
        return when
    raise TypeError(f"{name} must be a timedelta or a datetime, not {type(when).__name__}")


def list_traces_sql(
    *,
    project: str | None = None,
    errors_only: bool = False,
    user_id: str | None = None,
    until: bool = False,
    after_cursor: bool = False,
) -> str:
    """The page query :func:`list_traces` runs for a combination of filters.

    Exposed so tests can ``EXPLAIN`` exactly what runs. Parameters are named
    (``%(since)s``, ``%(limit)s``, ...).

    Examples
    --------
    >>> print(list_traces_sql(project="p", after_cursor=True))  # doctest: +ELLIPSIS
    SELECT trace_id, ... FROM traces
    WHERE start_time >= %(since)s
      AND project = %(project)s
      AND (start_time, trace_id) < (%(cursor_start)s, %(cursor_trace)s)
    ORDER BY start_time DESC, trace_id DESC LIMIT %(limit)s
    """
    where = ["start_time >= %(since)s"]
    if until:
        where.append("start_time < %(until)s")
    if project is not None:
        where.append("project = %(project)s")
    if user_id is not None:
        where.append("user_id = %(user_id)s")
    if errors_only:
        # A literal, not a parameter: the planner can only match the partial
        # index traces_errors_idx (WHERE status = 'error') against a constant.
        where.append("status = 'error'")
    if after_cursor:
        # A row comparison, not `start_time < $2 OR (start_time = $2 AND ...)`:
        # PostgreSQL turns it into one index range bound.
        where.append("(start_time, trace_id) < (%(cursor_start)s, %(cursor_trace)s)")
    return (
        f"SELECT {_SUMMARY_COLUMNS} FROM traces\n"
        "WHERE " + "\n  AND ".join(where) + "\n"
        "ORDER BY start_time DESC, trace_id DESC LIMIT %(limit)s"
    )


def list_traces(
    conn: psycopg.Connection,
    *,
    project: str | None,
    since: timedelta | datetime,
    until: timedelta | datetime | None = None,
    errors_only: bool = False,
    user_id: str | None = None,
    limit: int = 50,
    cursor: str | None = None,
    now: datetime | None = None,
) -> Page:
    """One page of trace summaries, newest first, filtered.

    Parameters
    ----------
    conn
        An open psycopg connection.
    project
        Only this project; ``None`` for all projects.
    since, until
        The window on the trace start time: ``since <= start_time < until``.
        A ``timedelta`` means "that long before ``now``"; datetimes must be
        timezone-aware. ``until=None`` means no upper bound.
    errors_only
        Only traces where some span failed.
    user_id
        Only this user's traces.
    limit
        Page size, 1 to :data:`MAX_LIMIT`.
    cursor
        ``next_cursor`` of the previous page; ``None`` for the first page.
    now
        Reference time for relative windows (default: the current time).

    Returns
    -------
    Page
        The items and the cursor of the next page (``None`` on the last page).

    Raises
    ------
    ValueError
        Bad cursor, limit, or a naive datetime.

    Examples
    --------
    Needs a database; the cursor alone can be checked offline:

    >>> list_traces(None, project="p", since=timedelta(hours=1), cursor="x")
    Traceback (most recent call last):
    ...
    ValueError: invalid cursor 'x': pass the next_cursor of a previous page unchanged
    """
    if not 1 <= limit <= MAX_LIMIT:
        raise ValueError(f"limit must be between 1 and {MAX_LIMIT}, got {limit}")
    position = decode_cursor(cursor) if cursor is not None else None
    now = now or datetime.now(UTC)
    params: dict[str, object] = {
        "since": _resolve(since, now, "since"),
        "project": project,
        "user_id": user_id,
        # One extra row tells whether a next page exists, so the last page
        # has no cursor instead of leading to an empty page.
        "limit": limit + 1,
    }
    if until is not None:
        params["until"] = _resolve(until, now, "until")
    if position is not None:
        params["cursor_start"], params["cursor_trace"] = position
    query = list_traces_sql(
        project=project,
        errors_only=errors_only,
        user_id=user_id,
        until=until is not None,
        after_cursor=position is not None,
    )
    with conn.cursor() as cur:
        cur.execute(query, params)
        rows = [TraceSummary(*r) for r in cur.fetchall()]
    items = tuple(rows[:limit])
    next_cursor = None
    if len(rows) > limit:
        last = items[-1]
        next_cursor = encode_cursor(last.start_time, last.trace_id)
    return Page(items, next_cursor, params["since"], params.get("until"))  # type: ignore[arg-type]
