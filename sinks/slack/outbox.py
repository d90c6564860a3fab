"""The outbox: alerts in, Slack posts queued, in one transaction per batch.

:meth:`AlertOutbox.write` is a :class:`sinks.runner.BatchSink` ``write``: the
runner commits the Kafka offsets only after it returns, so an alert is either
queued (or knowingly suppressed) in the database or will be consumed again.
Consuming it again is harmless: ``alert_seen`` holds every alert_id, and a
redelivery stops there.
"""
from __future__ import annotations

import logging
from collections import Counter
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import psycopg
from psycopg.types.json import Jsonb

from sinks.errors import explain
from sinks.slack.blocks import Opening, render_escalation, render_firing, render_resolved
from sinks.slack.episodes import Decision, EpisodeState, decide, episode_key
from sinks.slack.routing import Routing

__all__ = ["AlertOutbox", "EnqueueResult", "SlackOutboxError", "render_post"]

log = logging.getLogger(__name__)


class SlackOutboxError(RuntimeError):
    """A batch could not be queued for a reason retrying will not fix."""


@dataclass(frozen=True)
class EnqueueResult:
    """What one batch did: alerts received, and how many of each decision.

    >>> EnqueueResult(2, {"open": 1, "duplicate": 1}).posts_queued
    0
    """

    received: int
    decisions: Mapping[str, int] = field(default_factory=dict)
    posts_queued: int = 0


def render_post(decision: Decision, alert: Mapping[str, Any], before: EpisodeState | None) -> dict[str, Any]:
    """The Slack message for a posting decision.

    >>> from schemas.samples import sample
    >>> d = decide(None, sample("alert"), "team")
    >>> render_post(d, sample("alert"), None)["text"]
    '[warning] latency_ms up 3.4x for gpt-4o-mini'
    """
    opening = Opening(before.title, before.opened_at) if before else None
    if decision.action == "open":
        return render_firing(alert)
    if decision.action == "escalate":
        assert opening is not None  # escalation needs an open episode
        return render_escalation(alert, opening)
    return render_resolved(alert, opening)


_EPISODE_COLUMNS = "episode_id, status, severity, title, opened_at, resolved_at, webhooks"
_SELECT_EPISODE = f"SELECT {_EPISODE_COLUMNS} FROM alert_episodes WHERE episode_id = %s FOR UPDATE"
_UPSERT_EPISODE = (
    f"INSERT INTO alert_episodes ({_EPISODE_COLUMNS}) VALUES (%s, %s, %s, %s, %s, %s, %s) "
    "ON CONFLICT (episode_id) DO UPDATE SET status = EXCLUDED.status, severity = EXCLUDED.severity, "
    "title = EXCLUDED.title, opened_at = EXCLUDED.opened_at, resolved_at = EXCLUDED.resolved_at, "
    "webhooks = EXCLUDED.webhooks, updated_at = now()"
)
_INSERT_SEEN = (
    "INSERT INTO alert_seen (alert_id, episode_id, status, severity, decision, reason, alert_time) "
    "VALUES (%s, %s, %s, %s, %s, %s, %s) ON CONFLICT (alert_id) DO NOTHING"
)
_INSERT_POST = (
    "INSERT INTO alert_outbox (alert_id, episode_id, webhook, action, payload) VALUES (%s, %s, %s, %s, %s) "
    "ON CONFLICT (alert_id, webhook) DO NOTHING"
)


class AlertOutbox:
    """Queues Slack posts for alerts over one connection (reconnects when it breaks).

    Parameters
    ----------
    conninfo
        libpq URL of a migrated database.
    routing
        Picks the webhook of each alert.
    on_queued
        Called after a batch that queued posts has committed (wakes the
        delivery loop so it does not wait for its next poll).
    on_decision
        Called with each decision name, for metrics.

    Examples
    --------
    >>> outbox = AlertOutbox("postgresql://llmpulse@127.0.0.1:15432/llmpulse",
    ...                      Routing.from_config({}, "https://hooks.example/x"))
    >>> outbox.write([])
    EnqueueResult(received=0, decisions={}, posts_queued=0)
    """

    def __init__(self, conninfo: str, routing: Routing, on_queued: Callable[[], None] | None = None,
                 on_decision: Callable[[str], None] | None = None) -> None:
        self._conninfo = conninfo
        self._routing = routing
        self._on_queued = on_queued or (lambda: None)
        self._on_decision = on_decision or (lambda name: None)
        self._conn: psycopg.Connection | None = None

    def _connection(self) -> psycopg.Connection:
        if self._conn is None or self._conn.closed or self._conn.broken:
            self._conn = psycopg.connect(self._conninfo, connect_timeout=10)
        return self._conn

    def write(self, alerts: Sequence[Mapping[str, Any]]) -> EnqueueResult:
        """Decide and queue a batch of decoded alerts in one transaction; idempotent.

        Raises
        ------
        psycopg.OperationalError
            The database is unreachable; retry the same batch.
        SlackOutboxError
            The database rejected the batch (not migrated, a constraint).
        """
        if not alerts:
            return EnqueueResult(0)
        decisions: Counter[str] = Counter()
        queued = 0
        try:
            conn = self._connection()
            with conn.transaction(), conn.cursor() as cur:
                for alert in alerts:
                    name, posts = self._enqueue_one(cur, alert)
                    decisions[name] += 1
                    queued += posts
        except psycopg.OperationalError:
            self.close()
            raise
        except psycopg.Error as exc:
            ids = ", ".join(a["alert_id"] for a in alerts[:3])
            ids += f" and {len(alerts) - 3} more" if len(alerts) > 3 else ""
            raise SlackOutboxError(f"queueing alerts {ids} failed: {explain(exc)}") from exc
        for name in decisions.elements():  # counted only once the batch is committed
            self._on_decision(name)
        if queued:
            self._on_queued()
        return EnqueueResult(len(alerts), dict(decisions), queued)

    def _enqueue_one(self, cur: psycopg.Cursor, alert: Mapping[str, Any]) -> tuple[str, int]:
        alert_id, episode = alert["alert_id"], episode_key(alert)
        if cur.execute("SELECT 1 FROM alert_seen WHERE alert_id = %s", (alert_id,)).fetchone():
            return "duplicate", 0
        row = cur.execute(_SELECT_EPISODE, (episode,)).fetchone()
        before = EpisodeState(*row[:6], tuple(row[6])) if row else None
        decision = decide(before, alert, self._routing.route(alert))
        name = decision.action
        if decision.posts and not decision.targets:
            name = "unrouted"
            log.error("slack: alert %s (%s, project %s) matches no route and there is no default webhook; "
                      "it is recorded in alert_seen but posted nowhere",
                      alert_id, alert["severity"], alert.get("project"))
        cur.execute(_INSERT_SEEN, (alert_id, episode, alert["status"], alert["severity"], name, decision.reason,
                                   alert["time"]))
        if cur.rowcount == 0:  # another replica took it between our check and insert
            return "duplicate", 0
        if decision.state is not None and decision.state != before:
            s = decision.state
            cur.execute(_UPSERT_EPISODE, (s.episode_id, s.status, s.severity, s.title, s.opened_at, s.resolved_at,
                                          list(s.webhooks)))
        if not decision.posts:
            return name, 0
        payload = Jsonb(render_post(decision, alert, before))
        for webhook in decision.targets:
            cur.execute(_INSERT_POST, (alert_id, episode, webhook, decision.action, payload))
        return name, len(decision.targets)

    def close(self) -> None:
        """Close the connection; the next write opens a new one."""
        if self._conn is not None:
            try:
                self._conn.close()
            finally:
                self._conn = None
