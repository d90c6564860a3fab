"""One Slack post per episode: the decision for each incoming alert, as a pure function.

An episode (``episode_id``; an alert without one is its own episode) is
posted when it opens, again only if its severity rises, and once more when it
resolves. Everything else is suppressed, with the reason recorded:

=====================  =========================  ===================================
episode state          alert                      decision
=====================  =========================  ===================================
unknown                firing                     open
open                   firing, higher severity    escalate
open                   firing, same or lower      suppress (already posted)
open / unknown         resolved                   resolve (unknown: said so)
resolved               resolved                   suppress (already resolved)
resolved               firing, after the resolve  open (the episode came back)
resolved               firing, before the resolve suppress (late redelivery)
=====================  =========================  ===================================

A resolve goes to every webhook the episode was posted to, whatever the
routes say about the resolved alert itself: its severity is often lower, and
it belongs in the channel that saw the opening.
"""
from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, replace
from datetime import datetime
from typing import Any, Literal

from sinks.slack.routing import SEVERITY_RANK

__all__ = ["Decision", "EpisodeState", "decide", "episode_key"]

Action = Literal["open", "escalate", "resolve", "suppress"]


def episode_key(alert: Mapping[str, Any]) -> str:
    """The episode an alert belongs to.

    >>> episode_key({"alert_id": "a1", "episode_id": None}), episode_key({"alert_id": "a1", "episode_id": "e"})
    ('a1', 'e')
    """
    return alert.get("episode_id") or alert["alert_id"]


@dataclass(frozen=True)
class EpisodeState:
    """What the notifier remembers about an episode (a row of ``alert_episodes``)."""

    episode_id: str
    status: Literal["open", "resolved"]
    severity: str  # the highest severity posted so far
    title: str  # the opening post's title
    opened_at: datetime
    resolved_at: datetime | None = None
    webhooks: tuple[str, ...] = ()  # where the episode was posted


@dataclass(frozen=True)
class Decision:
    """What to do with one alert: the action, where to post, why, and the episode afterwards."""

    action: Action
    targets: tuple[str, ...]
    reason: str
    state: EpisodeState | None

    @property
    def posts(self) -> bool:
        return self.action != "suppress"


def _opened(alert: Mapping[str, Any], routed: str | None) -> EpisodeState:
    return EpisodeState(episode_key(alert), "open", alert["severity"], alert["title"], alert["time"],
                        None, (routed,) if routed else ())


def decide(state: EpisodeState | None, alert: Mapping[str, Any], routed: str | None) -> Decision:
    """Decide what ``alert`` does to its episode.

    Parameters
    ----------
    state
        The episode as known before this alert, None if never seen.
    alert
        A decoded ``alert`` v2 record.
    routed
        The webhook the routes pick for this alert (None: no route, no default).

    Examples
    --------
    >>> from datetime import timedelta
    >>> from schemas.samples import sample
    >>> first = sample("alert")
    >>> d = decide(None, first, "team")
    >>> d.action, d.targets
    ('open', ('team',))
    >>> decide(d.state, sample("alert", alert_id="a2"), "team").action
    'suppress'
    >>> decide(d.state, sample("alert", alert_id="a3", severity="critical"), "oncall").targets
    ('oncall',)
    >>> late = first["time"] + timedelta(minutes=9)
    >>> decide(d.state, sample("alert", alert_id="a4", status="resolved", time=late), None).targets
    ('team',)
    """
    if alert["status"] == "resolved":
        return _on_resolved(state, alert, routed)
    if state is None:
        return Decision("open", _targets(routed), "first alert of the episode", _opened(alert, routed))
    if state.status == "resolved":
        if state.resolved_at is not None and alert["time"] > state.resolved_at:
            return Decision("open", _targets(routed), "fired again after it resolved", _opened(alert, routed))
        return Decision("suppress", (), "firing older than the episode's resolve (late delivery)", state)
    if SEVERITY_RANK[alert["severity"]] > SEVERITY_RANK[state.severity]:
        webhooks = state.webhooks if routed is None or routed in state.webhooks else (*state.webhooks, routed)
        escalated = replace(state, severity=alert["severity"], webhooks=webhooks)
        return Decision("escalate", _targets(routed), f"severity rose from {state.severity} to {alert['severity']}",
                        escalated)
    return Decision("suppress", (), f"episode already posted at {state.severity}", state)


def _on_resolved(state: EpisodeState | None, alert: Mapping[str, Any], routed: str | None) -> Decision:
    if state is not None and state.status == "resolved":
        return Decision("suppress", (), "episode already resolved", state)
    if state is None:
        closed = replace(_opened(alert, routed), status="resolved", resolved_at=alert["time"])
        return Decision("resolve", _targets(routed), "resolve of an episode this notifier never saw open", closed)
    targets = state.webhooks or _targets(routed)
    closed = replace(state, status="resolved", resolved_at=alert["time"], webhooks=targets)
    return Decision("resolve", targets, "episode resolved", closed)


def _targets(routed: str | None) -> tuple[str, ...]:
    return (routed,) if routed else ()
