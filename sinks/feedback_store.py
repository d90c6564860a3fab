"""The feedback store: ``feedback`` records into PostgreSQL, one batch per transaction.

A batch is COPYed into a temporary staging table and upserted into
``feedback`` on its key ``(feedback_id, time)``. A redelivered event finds
its row and, when nothing changed, leaves it untouched (``ingested_at``
included); a corrected event with the same id and time replaces the values.
"""
from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import psycopg

from sinks.errors import explain

if TYPE_CHECKING:
    from processors.settings import Settings
    from sinks.runner import BatchSink

__all__ = ["FEEDBACK_COLUMNS", "FeedbackStore", "FeedbackStoreError", "FeedbackWriteResult",
           "feedback_row", "feedback_store_sink"]

#: feedback columns written by the sink, in COPY order (``ingested_at`` is
#: left to the database).
FEEDBACK_COLUMNS: tuple[str, ...] = (
    "feedback_id", "trace_id", "span_id", "user_id", "project", "time",
    "rating", "thumbs", "comment", "attributes",
)

_STAGE = "llmpulse_feedback_stage"
_COLUMN_LIST = ", ".join(FEEDBACK_COLUMNS)
_VALUES = FEEDBACK_COLUMNS[2:]  # everything but the key
_UPSERT = (
    f"INSERT INTO feedback AS f ({_COLUMN_LIST}) SELECT {_COLUMN_LIST} FROM {_STAGE} "
    "ON CONFLICT (feedback_id, time) DO UPDATE SET "
    + ", ".join(f"{c} = EXCLUDED.{c}" for c in ("trace_id", *_VALUES))
    + " WHERE (" + ", ".join(f"f.{c}" for c in ("trace_id", *_VALUES)) + ") IS DISTINCT FROM ("
    + ", ".join(f"EXCLUDED.{c}" for c in ("trace_id", *_VALUES)) + ")"
    # xmax is 0 only on a freshly inserted row version: tells inserts from updates.
    " RETURNING (xmax = 0)"
)


class FeedbackStoreError(RuntimeError):
    """A batch could not be written for a reason retrying will not fix."""


@dataclass(frozen=True)
class FeedbackWriteResult:
    """What one batch did: events received, new rows, and rows whose values changed."""

    received: int
    inserted: int
    updated: int


def feedback_row(feedback: Mapping[str, Any]) -> tuple[Any, ...]:
    """The COPY row of one decoded ``feedback`` record.

    Examples
    --------
    >>> from schemas.samples import sample
    >>> row = feedback_row(sample("feedback"))
    >>> len(row) == len(FEEDBACK_COLUMNS), row[6], row[-1]
    (True, 4.0, '{"surface": "web-widget"}')
    """
    get = feedback.get
    return (
        feedback["feedback_id"], feedback["trace_id"], get("span_id"), feedback["user_id"],
        feedback["project"], feedback["time"], get("rating"), get("thumbs"), get("comment"),
        json.dumps(get("attributes") or {}, sort_keys=True),
    )


class FeedbackStore:
    """Writes batches of feedback over one connection (reconnects when it breaks).

    Transient failures (server down, connection lost) raise
    :class:`psycopg.OperationalError` so the caller can back off and retry the
    same batch; anything else is a :class:`FeedbackStoreError` naming the batch.

    Parameters
    ----------
    conninfo
        libpq URL or ``key=value`` string of a migrated database.

    Examples
    --------
    >>> from schemas.samples import sample
    >>> store = FeedbackStore("postgresql://llmpulse@127.0.0.1:15432/llmpulse")
    >>> store.write([sample("feedback")])  # doctest: +SKIP
    FeedbackWriteResult(received=1, inserted=1, updated=0)
    >>> store.write([])
    FeedbackWriteResult(received=0, inserted=0, updated=0)
    """

    def __init__(self, conninfo: str) -> None:
        self._conninfo = conninfo
        self._conn: psycopg.Connection | None = None

    def _connection(self) -> psycopg.Connection:
        if self._conn is None or self._conn.closed or self._conn.broken:
            conn = psycopg.connect(self._conninfo, connect_timeout=10)
            try:
                # Once per connection; ON COMMIT DELETE ROWS empties it after each batch.
                conn.execute(
                    f"CREATE TEMP TABLE IF NOT EXISTS {_STAGE} "
                    "(LIKE feedback INCLUDING DEFAULTS) ON COMMIT DELETE ROWS"
                )
                conn.commit()
            except BaseException:
                conn.close()  # e.g. not migrated: the next write starts afresh
                raise
            self._conn = conn
        return self._conn

    def write(self, feedback: Sequence[Mapping[str, Any]]) -> FeedbackWriteResult:
        """Write one batch in one transaction; idempotent.

        Parameters
        ----------
        feedback
            ``feedback`` records as :func:`schemas.codec.decode` returns them.
            When one batch holds the same ``(feedback_id, time)`` twice, the
            later record wins.

        Returns
        -------
        FeedbackWriteResult

        Raises
        ------
        psycopg.OperationalError
            The database is unreachable; retry the same batch.
        FeedbackStoreError
            A record breaks a constraint (rating outside 1..5, ...) or the
            database is not migrated.
        """
        if not feedback:
            return FeedbackWriteResult(0, 0, 0)
        # ON CONFLICT cannot touch one row twice in a statement.
        latest = {(f["feedback_id"], f["time"]): f for f in feedback}
        try:
            conn = self._connection()
            with conn.transaction(), conn.cursor() as cur:
                with cur.copy(f"COPY {_STAGE} ({_COLUMN_LIST}) FROM STDIN") as copy:
                    for record in latest.values():
                        copy.write_row(feedback_row(record))
                cur.execute(_UPSERT)
                flags = [inserted for (inserted,) in cur.fetchall()]
        except psycopg.OperationalError:
            self.close()
            raise
        except psycopg.Error as exc:
            ids = sorted(k[0] for k in latest)
            named = ", ".join(ids[:3]) + (f" and {len(ids) - 3} more" if len(ids) > 3 else "")
            raise FeedbackStoreError(
                f"writing a batch of {len(feedback)} feedback events ({named}) failed: "
                f"{explain(exc)}"
            ) from exc
        inserted = sum(flags)
        return FeedbackWriteResult(len(feedback), inserted, len(flags) - inserted)

    def close(self) -> None:
        """Close the connection; the next write opens a new one."""
        if self._conn is not None:
            try:
                self._conn.close()
            finally:
                self._conn = None


def feedback_store_sink(settings: Settings) -> BatchSink[dict]:
    """The feedback store as a :class:`sinks.runner.BatchSink` over ``llm.feedback.enriched``.

    Examples
    --------
    >>> from processors.settings import Settings
    >>> sink = feedback_store_sink(Settings())
    >>> sink.name, sink.topics
    ('feedback-store', ('llm.feedback.enriched',))
    """
    from processors.topics import FEEDBACK_ENRICHED
    from schemas.codec import decode
    from sinks.runner import BatchSink  # noqa: F811 (runtime import; runner imports processors)

    store = FeedbackStore(settings.database_url.get_secret_value())
    return BatchSink(
        name="feedback-store",
        topics=(FEEDBACK_ENRICHED.name,),
        decode=lambda value: decode(value, expected="feedback"),
        write=store.write,
    )
