"""Prometheus metrics of the Slack notifier.

Labels carry webhook *names* (never URLs: they hold a token). The delivery
delay buckets run from a second to a day because the interesting values are
"as fast as the rate limit allows" and "Slack was down for hours".
"""
from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

__all__ = ["SlackMetrics"]

DELIVERY_BUCKETS = (0.5, 1, 2, 5, 10, 30, 60, 300, 900, 3600, 4 * 3600, 24 * 3600)


class SlackMetrics:
    """Counters and gauges of one notifier process.

    >>> m = SlackMetrics(CollectorRegistry())
    >>> m.sent.labels("team").inc()
    >>> m.value("llmpulse_slack_posts_sent_total", webhook="team")
    1.0
    """

    def __init__(self, registry: CollectorRegistry) -> None:
        self.registry = registry
        self.alerts = Counter(
            "llmpulse_slack_alerts", "Alerts consumed, by what the notifier decided "
            "(open, escalate, resolve, suppress, unrouted, duplicate).", ["decision"], registry=registry)
        self.sent = Counter("llmpulse_slack_posts_sent", "Slack posts answered 2xx.", ["webhook"], registry=registry)
        self.failed = Counter(
            "llmpulse_slack_posts_failed", "Slack posts given up on (bad webhook, rejected payload, too old); "
            "they stay in alert_outbox with state failed.", ["webhook", "status"], registry=registry)
        self.retried = Counter(
            "llmpulse_slack_posts_retried", "Slack posts scheduled for another attempt, by cause "
            "(rate_limited, server_error, connection).", ["webhook", "cause"], registry=registry)
        self.pending = Gauge(
            "llmpulse_slack_outbox_pending", "Slack posts waiting in alert_outbox.", ["webhook"], registry=registry)
        self.delivery_seconds = Histogram(
            "llmpulse_slack_delivery_seconds", "From queueing a post to Slack accepting it, retries included.",
            ["webhook"], buckets=DELIVERY_BUCKETS, registry=registry)
        self._pending_webhooks: set[str] = set()

    def set_pending(self, counts: dict[str, int]) -> None:
        """Publish pending counts; webhooks that drained go to 0 rather than keep a stale value."""
        for webhook in self._pending_webhooks - counts.keys():
            self.pending.labels(webhook).set(0)
        for webhook, count in counts.items():
            self.pending.labels(webhook).set(count)
        self._pending_webhooks |= counts.keys()

    def value(self, name: str, **labels: str) -> float:
        """Current value of a sample (0 if absent), for tests."""
        found = self.registry.get_sample_value(name, labels)
        return found if found is not None else 0.0
