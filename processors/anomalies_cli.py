"""``llmpulse anomalies``: read anomaly episodes and give verdicts on them.

``list`` and ``show`` read the ``anomalies`` table; ``ack`` and
``false-positive`` update it and publish an ``anomaly_feedback`` record to
``llm.anomaly_feedback`` (key = series), so the detector that owns the
series learns from the verdict. A false positive also closes the episode's
alert (a resolved alert on ``llm.alerts``), as if the detector had resolved
it. Register with ``main.add_command(anomalies)``.
"""
from __future__ import annotations

import getpass
import os
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta
from typing import Any

import click
import psycopg
from psycopg.rows import dict_row

from processors.topics import ALERTS, ANOMALY_FEEDBACK
from sinks.anomaly_store import UnknownAnomalyError, format_value, record_verdict
from sinks.db_cli import database_url_option
from sinks.dburl import mask_password, redact
from sinks.trace_cli import When

__all__ = ["anomalies", "feedback_record", "format_episode", "format_row"]

STATUSES = ("open", "resolved", "false_positive", "all")


@contextmanager
def _connect(database_url: str) -> Iterator[psycopg.Connection]:
    """A connection whose errors become messages without the password."""
    where = mask_password(database_url)
    try:
        conn = psycopg.connect(database_url, connect_timeout=10, autocommit=True,
                               application_name="llmpulse-anomalies")
    except psycopg.Error as e:
        raise click.ClickException(
            f"cannot connect to the database at {where}: {redact(str(e).strip(), database_url)}") from e
    try:
        with conn:
            yield conn
    except (psycopg.errors.UndefinedTable, psycopg.errors.UndefinedColumn) as e:
        raise click.ClickException(
            f"the database at {where} has no anomalies table: run `llmpulse db migrate`") from e
    except psycopg.Error as e:
        raise click.ClickException(f"query failed on {where}: {redact(str(e).strip(), database_url)}") from e


def _iso(at: datetime | None) -> str:
    return "-" if at is None else at.astimezone(UTC).strftime("%Y-%m-%d %H:%M:%SZ")


def _duration(row: Mapping[str, Any], now: datetime) -> str:
    seconds = int(((row["ended_at"] or now) - row["started_at"]).total_seconds())
    hours, rest = divmod(max(seconds, 0), 3600)
    return f"{hours}h{rest // 60:02d}m" if hours else f"{rest // 60}m{rest % 60:02d}s"


def _scope(dimensions: Mapping[str, str]) -> str:
    return ",".join(f"{k}={v}" for k, v in sorted(dimensions.items())) or "all"


def format_row(row: Mapping[str, Any], now: datetime) -> str:
    """One line of ``anomalies list``.

    Examples
    --------
    >>> t = datetime(2025, 6, 1, 12, tzinfo=UTC)
    >>> row = {"anomaly_id": "project=a|error_rate|1", "status": "open", "severity": "critical",
    ...        "metric": "error_rate", "dimensions": {"project": "a"}, "observed": 0.2,
    ...        "expected": 0.02, "started_at": t, "ended_at": None, "root_cause": None}
    >>> format_row(row, t + timedelta(minutes=7))
    'critical  open            error_rate        project=a                 20.0% vs 2.0%          2025-06-01 12:00:00Z   7m00s  project=a|error_rate|1'
    """
    values = f"{format_value(row['metric'], row['observed'])} vs {format_value(row['metric'], row['expected'])}"
    return (f"{row['severity']:<9} {row['status']:<15} {row['metric']:<17} {_scope(row['dimensions']):<25} "
            f"{values:<22} {_iso(row['started_at']):<21} {_duration(row, now):>6}  {row['anomaly_id']}")


def format_episode(row: Mapping[str, Any], now: datetime) -> str:
    """The ``anomalies show`` text of one episode.

    >>> t = datetime(2025, 6, 1, 12, tzinfo=UTC)
    >>> row = {"anomaly_id": "x", "status": "open", "severity": "warning", "peak_severity": "warning",
    ...        "metric": "latency_p95_ms", "series": "s", "dimensions": {"project": "a"},
    ...        "observed": 900.0, "expected": 300.0, "lower": 250.0, "upper": 350.0, "score": 0.9,
    ...        "count": 120, "started_at": t, "ended_at": None, "points": 3, "detector": "d",
    ...        "root_cause": "p95 latency +200% ...", "recommendation": "consider ...",
    ...        "segments": [], "trace_links": ["http://g/t1"], "acked_by": None, "acked_at": None,
    ...        "feedback_note": None}
    >>> print(format_episode(row, t).splitlines()[3])
    observed      900 ms (expected 300 ms, band 250 ms – 350 ms)
    """
    fmt = lambda v: format_value(row["metric"], v)  # noqa: E731
    lines = [
        f"anomaly       {row['anomaly_id']}",
        f"status        {row['status']} ({row['severity']}, peak {row['peak_severity']})",
        f"metric        {row['metric']} on {_scope(row['dimensions'])} (series {row['series']})",
        f"observed      {fmt(row['observed'])} (expected {fmt(row['expected'])}, "
        f"band {fmt(row['lower'])} – {fmt(row['upper'])})",
        f"score         {row['score']:.2f} over {row['count']} events, {row['points']} anomalous window(s), "
        f"detector {row['detector']}",
        f"started       {_iso(row['started_at'])}   ended {_iso(row['ended_at'])}   "
        f"duration {_duration(row, now)}",
        f"root cause    {row['root_cause'] or '(not computed yet)'}",
        f"recommend     {row['recommendation'] or '-'}",
    ]
    for i, seg in enumerate(row.get("segments") or [], start=1):
        ep = seg.get("explanatory_power")
        lines.append(f"  segment {i}   {_scope(seg['filters'])}: explains "
                     f"{'?' if ep is None else f'{ep:.0%}'}, surprise {seg.get('surprise') or 0:.3f}")
    for link in row.get("trace_links") or []:
        lines.append(f"trace         {link}")
    if row.get("acked_by"):
        lines.append(f"verdict by    {row['acked_by']} at {_iso(row['acked_at'])}"
                     + (f": {row['feedback_note']}" if row.get("feedback_note") else ""))
    return "\n".join(lines)


def feedback_record(row: Mapping[str, Any], verdict: str, user: str, note: str | None,
                    at: datetime) -> dict[str, Any]:
    """The ``anomaly_feedback`` record of a verdict on episode ``row``.

    >>> from schemas.codec import encode
    >>> t = datetime(2025, 6, 1, 12, tzinfo=UTC)
    >>> rec = feedback_record({"anomaly_id": "x", "series": "s", "metric": "m"}, "false_positive", "me", None, t)
    >>> rec["verdict"], bool(encode("anomaly_feedback", rec))
    ('false_positive', True)
    """
    return {"anomaly_id": row["anomaly_id"], "series": row["series"], "metric": row["metric"],
            "verdict": verdict, "user": user, "note": note, "time": at}


@click.group("anomalies")
def anomalies() -> None:
    """Anomaly episodes: list, show, acknowledge, mark false positives."""


@anomalies.command("list")
@click.option("--status", type=click.Choice(STATUSES), default="all", show_default=True)
@click.option("--since", type=When(), default="24h", show_default=True,
              help="Episodes started (or still open) after this: a duration back from now or an ISO time.")
@click.option("--project", default=None, help="Only this project.")
@click.option("--limit", type=click.IntRange(1, 10_000), default=100, show_default=True)
@database_url_option
def list_command(status: str, since: timedelta | datetime, project: str | None, limit: int,
                 database_url: str) -> None:
    """Open episodes first, then the newest."""
    now = datetime.now(UTC)
    start = now - since if isinstance(since, timedelta) else since
    with _connect(database_url) as conn, conn.cursor(row_factory=dict_row) as cur:
        rows = cur.execute(
            "SELECT * FROM anomalies WHERE (started_at >= %(start)s OR status = 'open' AND %(all)s)"
            " AND (%(status)s = 'all' OR status = %(status)s)"
            " AND (%(project)s::text IS NULL OR project = %(project)s)"
            " ORDER BY status = 'open' DESC, started_at DESC LIMIT %(limit)s",
            {"start": start, "status": status, "project": project, "limit": limit,
             "all": status in ("open", "all")},
        ).fetchall()
    if not rows:
        click.echo(f"no {'' if status == 'all' else status.replace('_', ' ') + ' '}anomalies since {_iso(start)}")
        return
    click.echo(f"{'SEVERITY':<9} {'STATUS':<15} {'METRIC':<17} {'SCOPE':<25} {'OBSERVED VS EXPECTED':<22} "
               f"{'STARTED':<21} {'FOR':>6}  ID")
    for row in rows:
        click.echo(format_row(row, now))


def _fetch(conn: psycopg.Connection, anomaly_id: str) -> dict[str, Any]:
    with conn.cursor(row_factory=dict_row) as cur:
        row = cur.execute("SELECT * FROM anomalies WHERE anomaly_id = %s", [anomaly_id]).fetchone()
    if row is None:
        raise click.ClickException(_unknown(conn, anomaly_id))
    return row


def _unknown(conn: psycopg.Connection, anomaly_id: str) -> str:
    similar = [r[0] for r in conn.execute(
        "SELECT anomaly_id FROM anomalies WHERE anomaly_id LIKE %s ORDER BY started_at DESC LIMIT 3",
        ["%" + anomaly_id.replace("%", "").replace("_", r"\_")[:40] + "%"]).fetchall()]
    hint = f"; did you mean {', '.join(similar)}?" if similar else "; `llmpulse anomalies list` shows the ids"
    return f"no anomaly with id {anomaly_id!r}{hint}"


@anomalies.command("show")
@click.argument("anomaly_id")
@database_url_option
def show_command(anomaly_id: str, database_url: str) -> None:
    """Numbers, band, root cause, recommendation and example traces of ANOMALY_ID."""
    with _connect(database_url) as conn:
        row = _fetch(conn, anomaly_id)
    click.echo(format_episode(row, datetime.now(UTC)))


def _default_user() -> str:
    try:
        return os.environ.get("LLMPULSE_USER") or getpass.getuser()
    except Exception:  # no login name in some containers
        return "unknown"


def _verdict_options(func):  # type: ignore[no-untyped-def]
    func = click.option("--note", default=None, help="Why (stored and sent to the detector).")(func)
    func = click.option("--user", default=_default_user, show_default="$LLMPULSE_USER or login name",
                        help="Who gives the verdict.")(func)
    func = click.option("--feedback-topic", default=ANOMALY_FEEDBACK.name, show_default=True, hidden=True)(func)
    func = click.option("--alerts-topic", default=ALERTS.name, show_default=True, hidden=True)(func)
    return database_url_option(click.argument("anomaly_id")(func))


def _give_verdict(verdict: str, anomaly_id: str, user: str, note: str | None, feedback_topic: str,
                  alerts_topic: str, database_url: str) -> dict[str, Any]:
    from confluent_kafka import Producer

    from processors.settings import Settings
    from schemas.codec import encode
    from sinks.anomaly_store import AlertDeliveryError, alert_episodes

    settings = Settings()
    at = datetime.now(UTC)
    producer = Producer({"bootstrap.servers": settings.kafka_bootstrap_servers, "enable.idempotence": True})
    with _connect(database_url) as conn:
        try:
            row = record_verdict(conn, anomaly_id, verdict, user, note, at)
        except UnknownAnomalyError:
            raise click.ClickException(_unknown(conn, anomaly_id)) from None
        record = feedback_record(row, verdict, user, note, at)
        producer.produce(feedback_topic, key=row["series"].encode(), value=encode("anomaly_feedback", record))
        if producer.flush(30):
            raise click.ClickException(
                f"the verdict is stored, but Kafka at {settings.kafka_bootstrap_servers} did not take the "
                f"feedback record for {feedback_topic}: run the command again once Kafka is up")
        if verdict == "false_positive":
            try:
                alert_episodes(conn, [anomaly_id], producer, alerts_topic, settings.grafana_url)
            except AlertDeliveryError as e:
                raise click.ClickException(f"the verdict is stored, but the resolved alert was not sent: {e}") from e
    return row


@anomalies.command("ack")
@_verdict_options
def ack_command(anomaly_id: str, user: str, note: str | None, feedback_topic: str, alerts_topic: str,
                database_url: str) -> None:
    """Acknowledge ANOMALY_ID: real, and someone is on it."""
    _give_verdict("acknowledged", anomaly_id, user, note, feedback_topic, alerts_topic, database_url)
    click.echo(f"acknowledged {anomaly_id} as {user}")


@anomalies.command("false-positive")
@_verdict_options
def false_positive_command(anomaly_id: str, user: str, note: str | None, feedback_topic: str,
                           alerts_topic: str, database_url: str) -> None:
    """Mark ANOMALY_ID a false positive: closes it and tells the detector."""
    row = _give_verdict("false_positive", anomaly_id, user, note, feedback_topic, alerts_topic, database_url)
    click.echo(f"marked {anomaly_id} a false positive as {user}; the detector for {row['series']} "
               "will learn from it")
