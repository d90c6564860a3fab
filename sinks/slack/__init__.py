"""Slack alert notifier: ``llm.alerts`` to Slack incoming webhooks, via an outbox.

==================  ===========================================================
module              job
==================  ===========================================================
``blocks``          Block Kit rendering (open, escalation, resolve)
``routing``         routes file: project / kind / min severity -> webhook
``episodes``        one post per episode: open, escalate, resolve, suppress
``webhook``         the HTTP POST, answer classification, Retry-After, backoff
``outbox``          alerts -> outbox rows, one transaction per batch
``delivery``        outbox -> Slack, FIFO per webhook, rate-limited, retried
``notifier``        the ``slack-notifier`` worker (:func:`run_slack_notifier`)
==================  ===========================================================

See docs/slack.md for set-up, routing and delivery guarantees.
"""
from sinks.slack.notifier import SlackNotifier, run_slack_notifier
from sinks.slack.routing import Routing, SlackRoutesError

__all__ = ["Routing", "SlackNotifier", "SlackRoutesError", "run_slack_notifier"]
