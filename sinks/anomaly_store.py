"""The anomaly store: episodes from ``llm.anomalies`` into ``anomalies``, alerts to ``llm.alerts``.

One batch is written in three steps, each safe to repeat:

1. **Upsert** the newest event per episode. Events are ordered by
   :func:`precedence` (status, then window, then points): a closed episode
   is never reopened by a redelivered older ``open`` event, and a person's
   ``false_positive`` outranks the detector's ``resolved``.
2. **Root cause**, once per episode, from ``metric_windows``
   (:mod:`sinks.anomaly_rootcause`), in its own transaction: a drill-down
   that fails is logged and retried with the episode's next event, never a
   reason to drop the episode.
3. **Alerts**: the alerts an episode's state calls for (:func:`due_alerts`)
   minus those already delivered (``anomalies.alerts_sent``) are produced,
   the producer is flushed, and only then are their ids recorded. Alert ids
   are deterministic (episode, status, severity), so a crash between produce
   and record re-sends the same id, which notifiers treat as the same alert.

A Kafka delivery failure raises :class:`AlertDeliveryError`, an
``OperationalError`` so that :class:`sinks.runner.SinkRunner` backs off and
retries the batch instead of dead-lettering good anomaly events.
"""
from __future__ import annotations

import json
import logging
import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any
from urllib.parse import urlencode

import psycopg
from psycopg.rows import dict_row

from sinks.errors import explain

if TYPE_CHECKING:
    from confluent_kafka import Producer

    from processors.settings import Settings
    from sinks.anomaly_rootcause import RootCause
    from sinks.runner import BatchSink

log = logging.getLogger(__name__)

__all__ = [
    "AlertDeliveryError",
    "AnomalyStore",
    "AnomalyStoreError",
    "AnomalyWriteResult",
    "UnknownAnomalyError",
    "alert_episodes",
    "alert_id",
    "build_alert",
    "deliver_alerts",
    "due_alerts",
    "episode_row",
    "feed_url",
    "format_value",
    "newest",
    "precedence",
    "record_verdict",
    "anomaly_store_sink",
    "trace_list_url",
]

#: Episode states by rank: a higher rank is never replaced by a lower one.
STATUS_RANK: Mapping[str, int] = {"open": 0, "resolved": 1, "false_positive": 2}
SEVERITY_RANK: Mapping[str, int] = {"info": 0, "warning": 1, "critical": 2}

#: Columns of ``anomalies`` the detector's events set, in statement order.
EVENT_COLUMNS: tuple[str, ...] = (
    "anomaly_id", "series", "metric", "dimensions", "project", "status", "severity", "peak_severity",
    "score", "observed", "expected", "lower", "upper", "count", "window_start", "window_seconds",
    "started_at", "ended_at", "points", "detector",
)
_RANK_SQL = "array_position(ARRAY['open','resolved','false_positive'], {}.status)"
_SEV_SQL = "array_position(ARRAY['info','warning','critical'], {})"
_UPDATED = [c for c in EVENT_COLUMNS if c not in ("anomaly_id", "started_at", "peak_severity")]
_UPSERT = (
    f"INSERT INTO anomalies AS a ({', '.join(EVENT_COLUMNS)}) "
    f"VALUES ({', '.join(['%s'] * len(EVENT_COLUMNS))}) "
    "ON CONFLICT (anomaly_id) DO UPDATE SET "
    + ", ".join(f"{c} = EXCLUDED.{c}" for c in _UPDATED)
    + ", peak_severity = CASE WHEN " + _SEV_SQL.format("EXCLUDED.severity") + " > "
    + _SEV_SQL.format("a.peak_severity") + " THEN EXCLUDED.severity ELSE a.peak_severity END"
    + ", updated_at = now()"
    # Newest state wins; equal precedence (a redelivery) changes nothing.
    + f" WHERE ({_RANK_SQL.format('EXCLUDED')}, EXCLUDED.window_start, EXCLUDED.points)"
    + f" > ({_RANK_SQL.format('a')}, a.window_start, a.points)"
    + " RETURNING (xmax = 0)"
)


class AnomalyStoreError(RuntimeError):
    """A batch could not be written for a reason retrying will not fix."""


class AlertDeliveryError(psycopg.OperationalError):
    """Alerts could not be delivered to Kafka; retry the batch.

    An ``OperationalError`` on purpose: the sink runner retries those (with
    back-off) instead of dead-lettering the batch's anomaly events.
    """


class UnknownAnomalyError(LookupError):
    """No episode has this id."""


@dataclass(frozen=True)
class AnomalyWriteResult:
    """What one batch did: events received, episodes inserted/updated, root causes found, alerts sent."""

    received: int
    inserted: int
    updated: int
    explained: int
    alerts: int


# ------------------------------------------------------------------ pure: episodes


def precedence(event: Mapping[str, Any]) -> tuple[int, datetime, int]:
    """Order of two events of one episode: the greater one is the newer state.

    Examples
    --------
    >>> from schemas.samples import sample
    >>> opened = sample("anomaly")
    >>> later = sample("anomaly", points=3)
    >>> closed = sample("anomaly", status="resolved")
    >>> precedence(opened) < precedence(later) < precedence(closed)
    True
    """
    return STATUS_RANK[event["status"]], event["window_start"], int(event["points"])


def newest(events: Iterable[Mapping[str, Any]]) -> dict[str, Mapping[str, Any]]:
    """The newest event per ``anomaly_id`` (first one kept on a tie).

    >>> from schemas.samples import sample
    >>> got = newest([sample("anomaly", status="resolved"), sample("anomaly")])
    >>> [e["status"] for e in got.values()]
    ['resolved']
    """
    out: dict[str, Mapping[str, Any]] = {}
    for event in events:
        kept = out.get(event["anomaly_id"])
        if kept is None or precedence(event) > precedence(kept):
            out[event["anomaly_id"]] = event
    return out


def window_end(event: Mapping[str, Any]) -> datetime:
    """End (exclusive) of the episode's latest window."""
    return event["window_start"] + timedelta(seconds=int(event["window_seconds"]))


def episode_row(event: Mapping[str, Any]) -> tuple[Any, ...]:
    """The :data:`EVENT_COLUMNS` values of one decoded ``anomaly`` event.

    A closed event without ``ended_at`` ends with its latest window; an
    ``open`` one never has an end. Bad values raise :class:`ValueError`.

    Examples
    --------
    >>> from schemas.samples import sample
    >>> row = dict(zip(EVENT_COLUMNS, episode_row(sample("anomaly", status="resolved"))))
    >>> row["project"], row["ended_at"].isoformat(), row["peak_severity"]
    ('support-bot', '2025-06-01T12:01:00+00:00', 'warning')
    """
    status = event["status"]
    if status not in STATUS_RANK or event["severity"] not in SEVERITY_RANK:
        raise ValueError(f"anomaly {event['anomaly_id']}: unknown status or severity")
    for name in ("score", "observed", "expected", "lower", "upper"):
        if not math.isfinite(float(event[name])):
            raise ValueError(f"anomaly {event['anomaly_id']}: {name} is {event[name]}")
    dims = dict(event.get("dimensions") or {})
    ended = None if status == "open" else (event.get("ended_at") or window_end(event))
    return (
        event["anomaly_id"], event["series"], event["metric"], json.dumps(dims, sort_keys=True),
        dims.get("project") or "unknown", status, event["severity"], event["severity"],
        float(event["score"]), float(event["observed"]), float(event["expected"]),
        float(event["lower"]), float(event["upper"]), int(event["count"]),
        event["window_start"], int(event["window_seconds"]), event["started_at"], ended,
        int(event["points"]), event["detector"],
    )


# ------------------------------------------------------------------ pure: alerts


def format_value(metric: str, value: float | None) -> str:
    """A metric value the way a person reads it.

    >>> format_value("error_rate", 0.1234), format_value("latency_p95_ms", 5020.4)
    ('12.3%', '5020 ms')
    >>> format_value("cost_per_request", 0.00213), format_value("request_count", 1234.0)
    ('$0.0021', '1,234')
    >>> format_value("rating_mean", 4.25)
    '4.25'
    """
    if value is None or not math.isfinite(value):
        return "n/a"
    if metric.endswith("_rate"):
        return f"{value:.1%}"
    if metric.endswith("_ms"):
        return f"{value:.0f} ms"
    if metric.startswith("cost"):
        return f"${value:.4f}" if metric == "cost_per_request" else f"${value:,.2f}"
    if metric.endswith(("_count", "_tokens", "_events")):
        return f"{value:,.0f}"
    return f"{value:.2f}"


def _epoch_ms(at: datetime) -> int:
    return int(at.timestamp() * 1000)


def trace_list_url(grafana_url: str, project: str, start: datetime, end: datetime, *,
                   errors: bool = False, trace_id: str | None = None) -> str:
    """The Traces dashboard filtered to one project and time range (and one trace).

    >>> t = datetime(2025, 6, 1, 12, tzinfo=UTC)
    >>> trace_list_url("http://g:3000/", "support", t, t + timedelta(minutes=5), errors=True)
    'http://g:3000/d/llmpulse-traces/llmpulse-traces?from=1748779200000&to=1748779500000&var-project=support&var-errors_only=error'
    """
    params = {"from": _epoch_ms(start), "to": _epoch_ms(end), "var-project": project,
              "var-errors_only": "error" if errors else "all"}
    if trace_id:
        params["var-trace_id"] = trace_id
    return f"{grafana_url.rstrip('/')}/d/llmpulse-traces/llmpulse-traces?{urlencode(params)}"


def feed_url(grafana_url: str, anomaly_id: str, start: datetime, end: datetime) -> str:
    """The anomaly feed with this episode selected, around its time.

    >>> t = datetime(2025, 6, 1, 12, tzinfo=UTC)
    >>> feed_url("http://g:3000", "project=a|error_rate|1", t, t)[:60]
    'http://g:3000/d/llmpulse-anomalies/llmpulse-anomalies?from=1'
    """
    params = {"from": _epoch_ms(start - timedelta(hours=1)), "to": _epoch_ms(end + timedelta(minutes=30)),
              "var-anomaly": anomaly_id}
    return f"{grafana_url.rstrip('/')}/d/llmpulse-anomalies/llmpulse-anomalies?{urlencode(params)}"


def alert_id(anomaly_id: str, status: str, severity: str) -> str:
    """Deterministic alert id: a redelivered episode change is the same alert.

    >>> alert_id("project=a|error_rate|1", "firing", "warning")
    'project=a|error_rate|1|firing|warning'
    """
    return f"{anomaly_id}|{status}|{severity}"


def _scope(dimensions: Mapping[str, str]) -> str:
    return ", ".join(f"{k}={v}" for k, v in sorted(dimensions.items())) or "all traffic"


def build_alert(episode: Mapping[str, Any], status: str, severity: str, grafana_url: str) -> dict[str, Any]:
    """One ``alert`` v2 record for an episode change.

    Parameters
    ----------
    episode
        An ``anomalies`` row (dict): the event columns plus ``root_cause``,
        ``recommendation``, ``trace_links``.
    status
        ``"firing"`` (opened, or severity rose) or ``"resolved"`` (resolved
        or marked a false positive).
    severity
        The alert's severity.

    Examples
    --------
    >>> from schemas.samples import sample
    >>> ep = dict(zip(EVENT_COLUMNS, episode_row(sample("anomaly"))))
    >>> ep["dimensions"] = json.loads(ep["dimensions"])
    >>> a = build_alert(ep, "firing", "warning", "http://g:3000")
    >>> a["title"]
    'p95_ms 5020 ms, expected 1480 ms · project=support-bot'
    >>> a["facts"]["band"], a["alert_id"].endswith("|firing|warning")
    ('1210 ms – 1750 ms', True)
    """
    metric = episode["metric"]
    dims = episode["dimensions"] if isinstance(episode["dimensions"], Mapping) else json.loads(episode["dimensions"])
    fmt = lambda v: format_value(metric, v)  # noqa: E731
    scope = _scope(dims)
    end = episode.get("ended_at") or window_end(episode)
    facts = {
        "observed": fmt(episode["observed"]),
        "expected": fmt(episode["expected"]),
        "band": f"{fmt(episode['lower'])} – {fmt(episode['upper'])}",
        "score": f"{episode['score']:.2f}",
        "started_at": episode["started_at"].astimezone(UTC).isoformat(),
        "points": str(episode["points"]),
        "status": episode["status"],
    }
    if episode.get("root_cause"):
        facts["root_cause"] = episode["root_cause"]
    if episode.get("recommendation"):
        facts["recommendation"] = episode["recommendation"]
    if status == "firing":
        # No severity prefix: notifiers show severity themselves.
        title = f"{metric} {fmt(episode['observed'])}, expected {fmt(episode['expected'])} · {scope}"
        at = episode["started_at"] if episode["points"] <= 1 else episode["window_start"]
        head = (f"**{metric}** on `{scope}` is {fmt(episode['observed'])}, outside its expected band "
                f"{facts['band']} (expected {fmt(episode['expected'])}, score {facts['score']}), "
                f"since {facts['started_at']} ({episode['points']} window(s) of {episode['window_seconds']} s).")
    else:
        verdict = "marked a false positive" if episode["status"] == "false_positive" else "resolved"
        title = f"{verdict.capitalize()}: {metric} · {scope}"
        at = end
        facts["ended_at"] = end.astimezone(UTC).isoformat()
        facts["duration"] = str(end - episode["started_at"])
        head = f"**{metric}** on `{scope}` {verdict} after {facts['duration']} (peak severity {severity})."
    # Root cause and recommendation travel as facts (notifiers render them
    # as their own sections), not repeated in the text.
    lines = [head]
    project = dims.get("project")
    links = [feed_url(grafana_url, episode["anomaly_id"], episode["started_at"], end)]
    if project:
        links.append(trace_list_url(grafana_url, project, episode["started_at"], end,
                                    errors=metric == "error_rate"))
    links.extend(link for link in episode.get("trace_links") or () if link not in links)
    return {
        "alert_id": alert_id(episode["anomaly_id"], status, severity),
        "kind": "anomaly",
        "severity": severity,
        "title": title,
        "text": "\n\n".join(lines),
        "series": episode["series"],
        "dimensions": {str(k): str(v) for k, v in dims.items()},
        "time": at,
        "links": links,
        "episode_id": episode["anomaly_id"],
        "status": status,
        "project": project,
        "facts": facts,
    }


def due_alerts(episode: Mapping[str, Any], grafana_url: str) -> list[dict[str, Any]]:
    """Alerts the episode's state calls for that ``alerts_sent`` does not list yet.

    * a **firing** alert at the peak severity, unless one at that severity
      or higher went out (so: one when it opens, one more per rise);
    * a **resolved** alert once it is closed, if a firing one went out.

    An episode marked a false positive before anyone was alerted alerts nobody.

    Examples
    --------
    >>> from schemas.samples import sample
    >>> ep = dict(zip(EVENT_COLUMNS, episode_row(sample("anomaly"))), alerts_sent=[])
    >>> [a["alert_id"].split("|")[-2:] for a in due_alerts(ep, "http://g")]
    [['firing', 'warning']]
    >>> ep["alerts_sent"] = [alert_id(ep["anomaly_id"], "firing", "warning")]
    >>> due_alerts(ep, "http://g")
    []
    >>> ep.update(status="resolved", ended_at=ep["window_start"])
    >>> [a["status"] for a in due_alerts(ep, "http://g")]
    ['resolved']
    """
    sent = set(episode.get("alerts_sent") or ())
    prefix = episode["anomaly_id"] + "|firing|"
    fired = [SEVERITY_RANK[s[len(prefix):]] for s in sent if s.startswith(prefix) and s[len(prefix):] in SEVERITY_RANK]
    peak = episode["peak_severity"]
    out = []
    if not (episode["status"] == "false_positive" and not fired):
        if not fired or max(fired) < SEVERITY_RANK[peak]:
            out.append(build_alert(episode, "firing", peak, grafana_url))
            fired.append(SEVERITY_RANK[peak])
    resolved_prefix = episode["anomaly_id"] + "|resolved|"
    if episode["status"] != "open" and fired and not any(s.startswith(resolved_prefix) for s in sent):
        out.append(build_alert(episode, "resolved", peak, grafana_url))
    return out


# ------------------------------------------------------------------ the store


class AnomalyStore:
    """Writes batches of anomaly events, their root causes, and their alerts.

    Parameters
    ----------
    conninfo
        libpq URL of a migrated database.
    producer
        A confluent-kafka ``Producer`` for alerts.
    alerts_topic
        Where alerts go (``llm.alerts``).
    grafana_url
        Base URL of Grafana, for links.

    Examples
    --------
    >>> from confluent_kafka import Producer
    >>> store = AnomalyStore("postgresql://llmpulse@127.0.0.1:15432/llmpulse",
    ...                      Producer({"bootstrap.servers": "127.0.0.1:19092"}))
    >>> store.write([])
    AnomalyWriteResult(received=0, inserted=0, updated=0, explained=0, alerts=0)
    """

    def __init__(self, conninfo: str, producer: Producer, *, alerts_topic: str = "llm.alerts",
                 grafana_url: str = "http://localhost:3000", flush_timeout_s: float = 30.0) -> None:
        self._conninfo = conninfo
        self._conn: psycopg.Connection | None = None
        self.producer = producer
        self.alerts_topic = alerts_topic
        self.grafana_url = grafana_url
        self.flush_timeout_s = flush_timeout_s

    def _connection(self) -> psycopg.Connection:
        if self._conn is None or self._conn.closed or self._conn.broken:
            # autocommit: each conn.transaction() below is a real transaction
            # (not a savepoint of an implicit one), committed when it ends.
            self._conn = psycopg.connect(self._conninfo, connect_timeout=10, autocommit=True)
        return self._conn

    def write(self, events: Sequence[Mapping[str, Any]]) -> AnomalyWriteResult:
        """Upsert, explain and alert one batch; idempotent.

        Raises
        ------
        psycopg.OperationalError
            Database unreachable, or :class:`AlertDeliveryError`: retry the batch.
        AnomalyStoreError
            A record the database rejects, or an unmigrated database.
        """
        if not events:
            return AnomalyWriteResult(0, 0, 0, 0, 0)
        latest = newest(events)
        try:
            rows = [episode_row(e) for e in latest.values()]
        except (KeyError, TypeError, ValueError) as exc:
            raise AnomalyStoreError(f"bad anomaly event in a batch of {len(events)}: {exc}") from exc
        try:
            conn = self._connection()
            with conn.transaction(), conn.cursor() as cur:
                flags = []
                for row in rows:
                    cur.execute(_UPSERT, row)
                    result = cur.fetchone()
                    if result is not None:
                        flags.append(result[0])
            explained = self._explain(conn, list(latest))
            alerts = len(self._alert(conn, list(latest)))
        except psycopg.OperationalError:
            self.close()
            raise
        except psycopg.Error as exc:
            ids = sorted(latest)
            named = ", ".join(ids[:3]) + (f" and {len(ids) - 3} more" if len(ids) > 3 else "")
            raise AnomalyStoreError(
                f"writing a batch of {len(events)} anomaly events ({named}) failed: {explain(exc)}"
            ) from exc
        inserted = sum(flags)
        return AnomalyWriteResult(len(events), inserted, len(flags) - inserted, explained, alerts)

    def _episodes(self, conn: psycopg.Connection, ids: list[str], where: str = "") -> list[dict]:
        with conn.cursor(row_factory=dict_row) as cur:
            return cur.execute(f"SELECT * FROM anomalies WHERE anomaly_id = ANY(%s){where} ORDER BY anomaly_id",
                               [ids]).fetchall()

    def _explain(self, conn: psycopg.Connection, ids: list[str]) -> int:
        from sinks.anomaly_rootcause import root_cause

        done = 0
        for episode in self._episodes(conn, ids, " AND root_cause_at IS NULL"):
            try:
                with conn.transaction():
                    found = root_cause(conn, episode)
                    if not found.found:
                        continue  # no windows stored yet: try again with the next event
                    links = self._trace_links(conn, episode, found)
                    conn.execute(
                        "UPDATE anomalies SET root_cause = %s, recommendation = %s, segments = %s,"
                        " trace_links = %s, root_cause_at = now() WHERE anomaly_id = %s",
                        [found.text or found.note, found.recommendation,
                         json.dumps(found.as_segments()), links, episode["anomaly_id"]],
                    )
                    done += 1
            except psycopg.OperationalError:
                raise
            except Exception as exc:  # a drill-down bug must not lose the episode
                log.warning("anomaly %s: root cause failed (%s); retried with its next event",
                            episode["anomaly_id"], exc)
        return done

    def _trace_links(self, conn: psycopg.Connection, episode: Mapping[str, Any], found: RootCause) -> list[str]:
        from sinks.anomaly_rootcause import example_traces

        start, end = episode["started_at"], window_end(episode)
        project = (episode["dimensions"] or {}).get("project") or episode["project"]
        errors = episode["metric"] == "error_rate"
        filters = list(found.trace_filters) or [dict(episode["dimensions"] or {})]
        links: list[str] = []
        for trace_id in example_traces(conn, filters[0], start, end):
            links.append(trace_list_url(self.grafana_url, project, start, end, errors=errors, trace_id=trace_id))
        return links

    def _alert(self, conn: psycopg.Connection, ids: list[str]) -> list[dict[str, Any]]:
        return alert_episodes(conn, ids, self.producer, self.alerts_topic, self.grafana_url,
                              self.flush_timeout_s)

    def close(self) -> None:
        """Close the connection; the next write opens a new one."""
        if self._conn is not None:
            try:
                self._conn.close()
            finally:
                self._conn = None


def alert_episodes(conn: psycopg.Connection, ids: Sequence[str], producer: Producer, topic: str,
                   grafana_url: str, timeout_s: float = 30.0) -> list[dict[str, Any]]:
    """Send the :func:`due_alerts` of episodes ``ids``, then record them as sent.

    Shared by the sink and the CLI (a false positive closes the episode's
    alert). Recording happens only after Kafka acknowledged every alert.
    """
    with conn.cursor(row_factory=dict_row) as cur:
        episodes = cur.execute("SELECT * FROM anomalies WHERE anomaly_id = ANY(%s) ORDER BY anomaly_id",
                               [list(ids)]).fetchall()
    conn.commit()  # end the read's implicit transaction before waiting on Kafka
    pending = [alert for episode in episodes for alert in due_alerts(episode, grafana_url)]
    deliver_alerts(producer, topic, pending, timeout_s)
    _mark_sent(conn, pending)
    return pending


def deliver_alerts(producer: Producer, topic: str, alerts: Sequence[Mapping[str, Any]],
                   timeout_s: float = 30.0) -> None:
    """Produce ``alerts`` (key = episode id) and wait until Kafka has them all.

    Raises :class:`AlertDeliveryError` when any is not acknowledged in time.
    """
    from schemas.codec import encode

    if not alerts:
        return
    failures: list[str] = []

    def on_delivery(err: Any, msg: Any) -> None:
        if err is not None:
            failures.append(str(err))

    for alert in alerts:
        producer.produce(topic, key=alert["episode_id"].encode(), value=encode("alert", dict(alert)),
                         on_delivery=on_delivery)
    left = producer.flush(timeout_s)
    if left or failures:
        raise AlertDeliveryError(
            f"{len(alerts)} alerts to {topic}: {left} unacknowledged after {timeout_s:.0f}s"
            + (f", errors: {'; '.join(failures[:3])}" if failures else "")
        )


def _mark_sent(conn: psycopg.Connection, alerts: Sequence[Mapping[str, Any]]) -> None:
    if not alerts:
        return
    with conn.transaction(), conn.cursor() as cur:
        for alert in alerts:
            cur.execute(
                "UPDATE anomalies SET alerts_sent = array_append(alerts_sent, %s)"
                " WHERE anomaly_id = %s AND NOT %s = ANY(alerts_sent)",
                [alert["alert_id"], alert["episode_id"], alert["alert_id"]],
            )


def record_verdict(conn: psycopg.Connection, anomaly_id: str, verdict: str, user: str,
                   note: str | None, at: datetime) -> dict[str, Any]:
    """Store a person's verdict on an episode and return the updated row.

    ``acknowledged`` sets who acked it and when; ``false_positive`` also
    closes the episode (status ``false_positive``, ending now if it was
    open), which no later detector event undoes (:func:`precedence`).

    Raises
    ------
    UnknownAnomalyError
        No episode has ``anomaly_id``.
    """
    if verdict not in ("acknowledged", "false_positive"):
        raise ValueError(f"verdict must be acknowledged or false_positive, not {verdict!r}")
    closing = ""
    if verdict == "false_positive":
        closing = ", status = 'false_positive', ended_at = coalesce(ended_at, %(at)s)"
    with conn.transaction(), conn.cursor(row_factory=dict_row) as cur:
        row = cur.execute(
            "UPDATE anomalies SET acked_by = %(user)s, acked_at = %(at)s,"
            " feedback_note = coalesce(%(note)s, feedback_note), updated_at = now()"
            + closing + " WHERE anomaly_id = %(id)s RETURNING *",
            {"user": user, "at": at, "note": note, "id": anomaly_id},
        ).fetchone()
    if row is None:
        raise UnknownAnomalyError(anomaly_id)
    return row


def anomaly_store_sink(settings: Settings, *, alerts_topic: str | None = None) -> BatchSink[dict]:
    """The anomaly store as a :class:`sinks.runner.BatchSink` over ``llm.anomalies``.

    Examples
    --------
    >>> from processors.settings import Settings
    >>> sink = anomaly_store_sink(Settings())
    >>> sink.name, sink.topics
    ('anomaly-store', ('llm.anomalies',))
    """
    from confluent_kafka import Producer

    from processors.topics import ALERTS, ANOMALIES
    from schemas.codec import decode
    from sinks.runner import BatchSink  # noqa: F811 (runtime import; runner imports processors)

    producer = Producer({"bootstrap.servers": settings.kafka_bootstrap_servers, "enable.idempotence": True})
    store = AnomalyStore(settings.database_url.get_secret_value(), producer,
                         alerts_topic=alerts_topic or ALERTS.name, grafana_url=settings.grafana_url)
    return BatchSink(
        name="anomaly-store",
        topics=(ANOMALIES.name,),
        decode=lambda value: decode(value, expected="anomaly"),
        write=store.write,
    )
