"""The ``slack-notifier`` worker: a sink runner that fills the outbox, plus the delivery loop.

Two threads, two jobs. The :class:`sinks.runner.SinkRunner` consumes
``llm.alerts``, queues posts in one transaction per batch and commits the
offsets after it (it already retries through database outages and
dead-letters undecodable messages). The :class:`DeliveryLoop` drains the
outbox to Slack at its own pace. Slack being down therefore never stalls
consumption, and a crash loses nothing: queued posts are in PostgreSQL,
unqueued alerts are still uncommitted in Kafka.
"""
from __future__ import annotations

import logging
import threading
from typing import Any

from prometheus_client import CollectorRegistry

from processors.settings import Settings
from sinks.runner import BatchSink, SinkRunner
from sinks.slack.delivery import DeliveryLoop
from sinks.slack.metrics import SlackMetrics
from sinks.slack.outbox import AlertOutbox
from sinks.slack.routing import Routing, SlackRoutesError

__all__ = ["NAME", "SlackNotifier", "routing_from_settings", "run_slack_notifier"]

log = logging.getLogger(__name__)

NAME = "slack-notifier"


def routing_from_settings(settings: Settings) -> Routing:
    """The routing that ``LLMPULSE_SLACK_ROUTES`` and ``LLMPULSE_SLACK_WEBHOOK_URL`` describe.

    >>> routing_from_settings(Settings(slack_webhook_url="https://hooks.example/x")).route(
    ...     {"severity": "info", "kind": "anomaly", "project": None})
    'default'
    """
    default = settings.slack_webhook_url.get_secret_value() if settings.slack_webhook_url else None
    return Routing.load(settings.slack_routes, default)


class SlackNotifier:
    """Consume alerts into the outbox and deliver the outbox to Slack.

    Parameters
    ----------
    settings
        Broker and database.
    routing
        Webhooks and routes; :func:`routing_from_settings` by default.
    topic
        The alerts topic (tests use a private one).
    registry
        Prometheus registry for all metrics.
    group_id
        Consumer group (``llmpulse-slack-notifier`` by default).
    delivery
        Keyword arguments for :class:`DeliveryLoop` (rate, backoff...).

    Examples
    --------
    >>> n = SlackNotifier(Settings(), Routing.from_config({}, "https://hooks.example/x"))
    >>> n.runner.sink.name, n.runner.sink.topics
    ('slack-notifier', ('llm.alerts',))
    """

    def __init__(self, settings: Settings, routing: Routing | None = None, *, topic: str | None = None,
                 registry: CollectorRegistry | None = None, group_id: str | None = None,
                 runner_options: dict[str, Any] | None = None, **delivery: Any) -> None:
        from processors.topics import ALERTS
        from schemas.codec import decode

        self.registry = registry or CollectorRegistry()
        self.metrics = SlackMetrics(self.registry)
        self.routing = routing or routing_from_settings(settings)
        conninfo = settings.database_url.get_secret_value()
        self.delivery = DeliveryLoop(conninfo, self.routing, self.metrics, **delivery)
        self.outbox = AlertOutbox(conninfo, self.routing, on_queued=self.delivery.wake.set,
                                  on_decision=lambda name: self.metrics.alerts.labels(name).inc())
        sink = BatchSink(NAME, (topic or ALERTS.name,), lambda value: decode(value, expected="alert"),
                         self.outbox.write)
        self.runner = SinkRunner(sink, settings, self.registry, group_id=group_id, **(runner_options or {}))
        self._threads: list[threading.Thread] = []

    def start(self) -> SlackNotifier:
        """Run consumer and delivery in background threads (tests; the worker uses :meth:`run`)."""
        self._threads = [threading.Thread(target=self._consume, name=f"{NAME}-consume", daemon=True),
                         threading.Thread(target=self.delivery.run, name=f"{NAME}-deliver", daemon=True)]
        for thread in self._threads:
            thread.start()
        return self

    def run(self) -> None:
        """Deliver in a thread, consume in this one, until :meth:`stop`."""
        deliver = threading.Thread(target=self.delivery.run, name=f"{NAME}-deliver", daemon=True)
        deliver.start()
        try:
            self._consume()
        finally:
            self.delivery.stop()
            deliver.join(30)
            self.outbox.close()

    def stop(self, timeout_s: float = 30.0) -> None:
        """Stop both loops (the batch and the post in hand are finished first)."""
        self.runner.stop()
        self.delivery.stop()
        for thread in self._threads:
            thread.join(timeout_s)
        self._threads = []

    def _consume(self) -> None:
        try:
            self.runner.run()
        except InterruptedError as exc:  # stopped while the database was down: nothing committed
            log.warning("%s", exc)


def run_slack_notifier(settings: Settings) -> None:
    """Run the ``slack-notifier`` worker until SIGTERM/SIGINT, serving /metrics.

    Fails at once, with the reason, when the routes file or webhook URL is
    unusable (:class:`sinks.slack.routing.SlackRoutesError`).
    """
    import signal

    from processors.metrics import serve_metrics

    try:
        routing = routing_from_settings(settings)  # fail before anything starts
    except SlackRoutesError as exc:
        raise SystemExit(f"{NAME}: {exc}") from None
    notifier = SlackNotifier(settings, routing)
    serve_metrics(settings.metrics_port, notifier.registry)
    signal.signal(signal.SIGTERM, lambda *_: notifier.runner.stop())
    signal.signal(signal.SIGINT, lambda *_: notifier.runner.stop())
    log.info("%s: webhooks %s", NAME, ", ".join(sorted(notifier.routing.webhooks)))
    notifier.run()
