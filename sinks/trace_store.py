"""The trace store: enriched spans into PostgreSQL, one batch per transaction.

A batch is COPYed straight into ``spans``; a batch that overlaps stored rows
(a replay) is COPYed into a staging table instead and inserted into ``spans``
with ``ON CONFLICT DO NOTHING`` (a span's key is ``(trace_id, span_id,
start_time)``), and the summaries of the batch's traces are recomputed from
``spans`` by ``llmpulse_refresh_traces``. Recomputing rather than adding is
what makes a replayed batch, a span that arrives before its parent, or a
trace split over several batches all end in the same rows.
"""
from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from operator import itemgetter
from typing import TYPE_CHECKING, Any

import orjson
import psycopg

if TYPE_CHECKING:
    from processors.settings import Settings
    from sinks.runner import BatchSink

#: spans columns written by the sink, in COPY order (generated columns and
#: ``ingested_at`` are left to the database).
SPAN_COLUMNS: tuple[str, ...] = (
    "trace_id", "span_id", "parent_span_id", "name", "kind", "start_time", "end_time",
    "status", "status_message", "error_type", "project", "service_name", "environment",
    "user_id", "session_id", "prompt_version", "operation", "provider", "request_model",
    "response_model", "response_id", "finish_reasons", "temperature", "max_tokens",
    "tool_name", "agent_name", "first_token_time", "input_tokens", "output_tokens",
    "cache_read_input_tokens", "cache_creation_input_tokens", "cost_usd", "input", "output",
    "attributes", "variants",
)

_STAGE = "llmpulse_spans_stage"
_COLUMN_LIST = ", ".join(SPAN_COLUMNS)


class TraceStoreError(RuntimeError):
    """A batch could not be written for a reason retrying will not fix."""


# The span field of every column (the column ``variants`` holds ``experiments``).
_FIELDS = tuple("experiments" if c == "variants" else c for c in SPAN_COLUMNS)
_FIELDS_OF = itemgetter(*_FIELDS)
_FINISH_REASONS, _ATTRIBUTES, _VARIANTS = (_FIELDS.index(f) for f in ("finish_reasons", "attributes", "experiments"))


def span_row(span: Mapping[str, Any]) -> list[Any]:
    """The COPY row of one decoded span.

    Examples
    --------
    >>> from schemas.samples import sample
    >>> row = span_row(sample("span"))
    >>> len(row) == len(SPAN_COLUMNS), row[0] == sample("span")["trace_id"]
    (True, True)
    >>> span_row({"trace_id": "t", "attributes": {"llmpulse.cohort": "pro"}})[_ATTRIBUTES]
    '{"llmpulse.cohort":"pro"}'
    """
    try:  # a decoded span has every field: one C call instead of 36 lookups
        row = list(_FIELDS_OF(span))
    except KeyError:
        row = [span.get(f) for f in _FIELDS]
    row[_FINISH_REASONS] = list(row[_FINISH_REASONS] or ())
    row[_ATTRIBUTES] = orjson.dumps(row[_ATTRIBUTES] or {}).decode()
    row[_VARIANTS] = orjson.dumps(row[_VARIANTS] or {}).decode()
    return row


@dataclass(frozen=True)
class WriteResult:
    """What one batch did: spans new to the table, and traces summarised."""

    spans_received: int
    spans_inserted: int
    traces_refreshed: int


class TraceStore:
    """Writes batches of spans over one connection (reconnects when it breaks).

    Transient failures (server down, connection lost) raise
    :class:`psycopg.OperationalError` so the caller can back off and retry the
    same batch; anything else is a :class:`TraceStoreError`.
    """

    def __init__(self, conninfo: str) -> None:
        self._conninfo = conninfo
        self._conn: psycopg.Connection | None = None

    def _connection(self) -> psycopg.Connection:
        if self._conn is None or self._conn.closed or self._conn.broken:
            self._conn = psycopg.connect(self._conninfo, connect_timeout=10)
            # Created once per connection; ON COMMIT DELETE ROWS empties it after each batch.
            self._conn.execute(
                f"CREATE TEMP TABLE IF NOT EXISTS {_STAGE} "
                f"(LIKE spans INCLUDING DEFAULTS) ON COMMIT DELETE ROWS"
            )
            self._conn.commit()
        return self._conn

    def write(self, spans: Sequence[Mapping[str, Any]]) -> WriteResult:
        """Write one batch in one transaction; idempotent."""
        if not spans:
            return WriteResult(0, 0, 0)
        conn = self._connection()
        rows = [span_row(span) for span in spans]
        try:
            with conn.transaction(), conn.cursor() as cur:
                inserted = self._copy_new(conn, cur, rows)
                trace_ids = sorted({s["trace_id"] for s in spans})
                cur.execute("SELECT llmpulse_refresh_traces(%s)", (trace_ids,))
                (refreshed,) = cur.fetchone()
        except psycopg.OperationalError:
            self.close()
            raise
        except psycopg.Error as exc:
            raise TraceStoreError(
                f"writing {len(spans)} spans failed: {exc.sqlstate} {exc}; "
                "is the database migrated (llmpulse db migrate)?"
            ) from exc
        return WriteResult(len(spans), inserted, refreshed)

    @staticmethod
    def _copy_new(conn: psycopg.Connection, cur: psycopg.Cursor, rows: list[list[Any]]) -> int:
        """Insert rows not stored yet; returns how many were new.

        Straight COPY into ``spans`` first: it is the common case and costs
        half of staging + upserting. A batch holding a span already stored (a
        replay after a crash or rebalance) fails that COPY as a whole; the
        savepoint undoes it and the batch goes through the staging table with
        ``ON CONFLICT DO NOTHING`` instead.
        """
        try:
            with conn.transaction():
                with cur.copy(f"COPY spans ({_COLUMN_LIST}) FROM STDIN") as copy:
                    for row in rows:
                        copy.write_row(row)
            return len(rows)
        except psycopg.errors.UniqueViolation:
            pass
        with cur.copy(f"COPY {_STAGE} ({_COLUMN_LIST}) FROM STDIN") as copy:
            for row in rows:
                copy.write_row(row)
        cur.execute(
            f"INSERT INTO spans ({_COLUMN_LIST}) SELECT {_COLUMN_LIST} FROM {_STAGE} "
            "ON CONFLICT (trace_id, span_id, start_time) DO NOTHING"
        )
        return cur.rowcount

    def close(self) -> None:
        """Close the connection; the next write opens a new one."""
        if self._conn is not None:
            try:
                self._conn.close()
            finally:
                self._conn = None



def trace_store_sink(settings: Settings) -> BatchSink[dict]:
    """The trace store as a :class:`sinks.runner.BatchSink` over ``llm.spans.enriched``."""
    from processors.topics import SPANS_ENRICHED
    from schemas.codec import decode
    from sinks.runner import BatchSink  # noqa: F811 (runtime import; runner imports processors)

    store = TraceStore(settings.database_url.get_secret_value())
    return BatchSink(
        name="trace-store",
        topics=(SPANS_ENRICHED.name,),
        decode=lambda value: decode(value, expected="span"),
        write=store.write,
        # Bigger batches: fewer commits, and a trace split over two batches
        # (summaries recomputed twice) is rarer.
        batch_size=10_000,
    )
