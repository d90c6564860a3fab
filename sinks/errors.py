"""Turning a database error into a message an operator can act on."""
from __future__ import annotations

import psycopg


def explain(exc: psycopg.Error) -> str:
    """The server's message and detail for a non-transient error, plus what to do.

    >>> explain(psycopg.errors.UndefinedTable("relation spans does not exist"))
    '42P01 relation spans does not exist; is the database migrated (llmpulse db migrate)?'
    """
    diag = exc.diag
    text = f"{exc.sqlstate} {diag.message_primary or str(exc).strip()}"
    if diag.message_detail:
        text += f" ({diag.message_detail.rstrip('.')})"
    state = exc.sqlstate or ""
    if state.startswith("23"):  # integrity constraint violation: the data, not the database
        return text + f"; a record breaks {diag.constraint_name or 'a constraint'}: fix its producer"
    if state in ("42P01", "42703"):  # undefined table / column
        return text + "; is the database migrated (llmpulse db migrate)?"
    return text
