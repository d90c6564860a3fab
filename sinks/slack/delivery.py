"""The delivery loop: send due outbox rows to Slack, oldest first per webhook.

Each webhook is a FIFO: only its oldest pending row is tried, so an episode's
resolve never overtakes its opening, and a webhook in backoff (Slack down,
429) holds back only its own messages. Rows leave ``pending`` only as
``sent`` (2xx) or ``failed`` (an answer that retrying cannot fix, or
``give_up_after_s`` of transient failures); nothing is dropped.

One loop delivers at a time across all replicas: it holds a PostgreSQL
advisory lock for as long as its connection lives, so the per-webhook rate
limit and the FIFO order hold however many notifiers run. The others idle
and take over when that connection goes away.

The only window for a duplicate post is between Slack's 2xx and the UPDATE
that marks the row sent (a crash or a lost database connection there); and a
5xx after Slack did post (rare) is retried like any 5xx. See docs/slack.md.
"""
from __future__ import annotations

import logging
import random
import threading
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import psycopg
from psycopg.rows import class_row

from sinks.slack.metrics import SlackMetrics
from sinks.slack.routing import Routing
from sinks.slack.webhook import PostResult, RateLimiter, backoff_delay, post_json

__all__ = ["DELIVERY_LOCK_KEY", "DeliveryLoop", "OutboxRow"]

log = logging.getLogger(__name__)

#: Advisory lock key of the delivery leader: "llmslack" read as a bigint.
DELIVERY_LOCK_KEY = int.from_bytes(b"llmslack", "big")


@dataclass
class OutboxRow:
    """The oldest pending post of one webhook, with timings from the database clock."""

    id: int
    alert_id: str
    webhook: str
    payload: Any
    attempts: int
    due_in_s: float  # <= 0 when due
    age_s: float  # since it was queued


_HEADS = (
    "SELECT DISTINCT ON (webhook) id, alert_id, webhook, payload, attempts, "
    "extract(epoch FROM next_attempt_at - now())::float8 AS due_in_s, "
    "extract(epoch FROM now() - created_at)::float8 AS age_s "
    "FROM alert_outbox WHERE state = 'pending' ORDER BY webhook, id"
)
_MARK_SENT = (
    "UPDATE alert_outbox SET state = 'sent', sent_at = now(), attempts = attempts + 1, last_error = NULL "
    "WHERE id = %s AND state = 'pending'"
)
_MARK_FAILED = (
    "UPDATE alert_outbox SET state = 'failed', attempts = attempts + %s, last_error = %s "
    "WHERE id = %s AND state = 'pending'"
)
_MARK_RETRY = (
    "UPDATE alert_outbox SET attempts = attempts + 1, last_error = %s, "
    "next_attempt_at = now() + make_interval(secs => %s) WHERE id = %s AND state = 'pending'"
)
_PENDING = "SELECT webhook, count(*) FROM alert_outbox WHERE state = 'pending' GROUP BY webhook"


class DeliveryLoop:
    """Sends pending outbox rows until stopped.

    Parameters
    ----------
    conninfo
        libpq URL of the migrated database.
    routing
        Resolves webhook names (stored in the outbox) to URLs.
    metrics
        Where counts go.
    interval_s
        Minimum spacing of posts per webhook (Slack: about 1 per second).
    backoff_base_s, backoff_cap_s
        Exponential backoff after a 5xx or connection error.
    give_up_after_s
        A row still failing transiently this long after it was queued is
        marked failed: a webhook host that never answers is reported, not
        retried forever.
    poll_s
        How often to look for new rows when nothing woke the loop.
    post
        ``post(url, payload) -> PostResult``; the real HTTP POST by default.

    Examples
    --------
    >>> from prometheus_client import CollectorRegistry
    >>> loop = DeliveryLoop("postgresql://llmpulse@127.0.0.1:15432/llmpulse",
    ...                     Routing.from_config({}, "https://hooks.example/x"), SlackMetrics(CollectorRegistry()))
    >>> loop.wake.set(); loop.stop(); loop.stopping.is_set()
    True
    """

    def __init__(self, conninfo: str, routing: Routing, metrics: SlackMetrics, *, interval_s: float = 1.0,
                 backoff_base_s: float = 2.0, backoff_cap_s: float = 300.0, give_up_after_s: float = 24 * 3600.0,
                 poll_s: float = 1.0, timeout_s: float = 10.0,
                 post: Callable[[str, Any], PostResult] | None = None, seed: int | None = None) -> None:
        self._conninfo = conninfo
        self.routing = routing
        self.metrics = metrics
        self.limiter = RateLimiter(interval_s)
        self.backoff_base_s = backoff_base_s
        self.backoff_cap_s = backoff_cap_s
        self.give_up_after_s = give_up_after_s
        self.poll_s = poll_s
        self._post = post or (lambda url, payload: post_json(url, payload, timeout_s))
        self._rng = random.Random(seed)
        self._conn: psycopg.Connection | None = None
        self._leader = False
        self._broken: dict[str, str] = {}  # webhook -> why Slack said it is dead
        self.stopping = threading.Event()
        self.wake = threading.Event()

    # -- the loop ---------------------------------------------------------

    def run(self) -> None:
        """Deliver until :meth:`stop`; database outages are waited out, not fatal."""
        failures = 0
        while not self.stopping.is_set():
            try:
                sleep_s = self.run_once()
                failures = 0
            except psycopg.OperationalError as exc:
                failures += 1
                self._close()
                sleep_s = backoff_delay(failures, 0.5, 30.0, self._rng)
                log.warning("slack delivery: database unavailable (%s); retrying in %.1fs", exc, sleep_s)
            self.wake.wait(sleep_s)
            self.wake.clear()
        self._close()

    def stop(self) -> None:
        """Finish the post in hand and return from :meth:`run`."""
        self.stopping.set()
        self.wake.set()

    def run_once(self) -> float:
        """Send every row that is due and allowed now; return seconds until the next may be."""
        conn = self._connection()
        if not self._leader:
            self._leader = conn.execute("SELECT pg_try_advisory_lock(%s)", (DELIVERY_LOCK_KEY,)).fetchone()[0]
            if not self._leader:
                return self.poll_s  # another notifier delivers; take over if it goes away
        sleep_s = self.poll_s
        with conn.cursor(row_factory=class_row(OutboxRow)) as cur:
            heads = cur.execute(_HEADS).fetchall()
        for row in heads:
            if self.stopping.is_set():
                break
            wait_s = max(row.due_in_s, self.limiter.wait_s(row.webhook))
            if wait_s > 0:
                sleep_s = min(sleep_s, wait_s)
                continue
            self._deliver(conn, row)
            sleep_s = min(sleep_s, self.limiter.interval_s)  # the webhook's next row may be waiting
        self.metrics.set_pending(dict(conn.execute(_PENDING).fetchall()))
        return max(0.01, sleep_s)

    # -- one row ----------------------------------------------------------

    def _deliver(self, conn: psycopg.Connection, row: OutboxRow) -> None:
        url = self.routing.url(row.webhook)
        if url is None:
            self._fail(conn, row, f"webhook {row.webhook!r} is not configured any more (routes changed)", "unknown",
                       attempted=False)
            return
        if row.webhook in self._broken:
            self._fail(conn, row, f"not sent: webhook rejected an earlier post ({self._broken[row.webhook]})",
                       "broken", attempted=False)
            return
        self.limiter.note_post(row.webhook)
        result = self._post(url, row.payload)
        if result.outcome == "sent":
            conn.execute(_MARK_SENT, (row.id,))
            self.metrics.sent.labels(row.webhook).inc()
            self.metrics.delivery_seconds.labels(row.webhook).observe(max(0.0, row.age_s))
            return
        if result.outcome == "failed":
            if result.broken_webhook:
                self._broken[row.webhook] = result.reason
            self._fail(conn, row, result.reason, str(result.status))
            return
        self._retry(conn, row, result)

    def _retry(self, conn: psycopg.Connection, row: OutboxRow, result: PostResult) -> None:
        if row.age_s >= self.give_up_after_s:
            self._fail(conn, row, f"gave up after {row.attempts + 1} attempts over {row.age_s / 3600:.1f} h; "
                                  f"last: {result.reason}", "gave_up")
            return
        if result.outcome == "rate_limited":
            # Slack rate-limits the webhook, not the message: hold all its rows.
            delay = result.retry_after_s if result.retry_after_s is not None else self.limiter.interval_s * 5
            self.limiter.hold(row.webhook, delay)
            cause = "rate_limited"
        else:
            delay = backoff_delay(row.attempts + 1, self.backoff_base_s, self.backoff_cap_s, self._rng)
            if result.retry_after_s is not None:  # a 503 with Retry-After: the server knows best
                delay = max(delay, result.retry_after_s)
            cause = "server_error" if result.status else "connection"
        conn.execute(_MARK_RETRY, (result.reason, delay, row.id))
        self.metrics.retried.labels(row.webhook, cause).inc()
        log.warning("slack: post %d (alert %s) to webhook %r not delivered (%s); retry in %.1fs",
                    row.id, row.alert_id, row.webhook, result.reason, delay)

    def _fail(self, conn: psycopg.Connection, row: OutboxRow, reason: str, status: str, *,
              attempted: bool = True) -> None:
        conn.execute(_MARK_FAILED, (1 if attempted else 0, reason, row.id))
        self.metrics.failed.labels(row.webhook, status).inc()
        # The failed row is the dead letter: it keeps the payload for a manual
        # re-send (docs/slack.md); this line is what an operator greps for.
        log.error("slack: post %d (alert %s) to webhook %r FAILED and will not be retried: %s",
                  row.id, row.alert_id, row.webhook, reason)

    # -- connection -------------------------------------------------------

    def _connection(self) -> psycopg.Connection:
        if self._conn is None or self._conn.closed or self._conn.broken:
            self._leader = False  # the lock went with the old session
            self._conn = psycopg.connect(self._conninfo, autocommit=True, connect_timeout=10)
        return self._conn

    def _close(self) -> None:
        if self._conn is not None:
            try:
                self._conn.close()
            finally:
                self._conn = None
                self._leader = False
