"""Slack Block Kit messages for alerts: the opening post, an escalation, the resolve.

Incoming webhooks cannot edit a message they posted (``chat.update`` needs a
bot token), so an episode's "update" on resolve is a second message whose
header names the opening title and says how long the episode lasted.

Slack limits are enforced here, because a payload that breaks one is answered
``400 invalid_blocks`` and would never be delivered: header text <= 150
characters, section text <= 3000, a field <= 2000, at most 10 fields, and
button text <= 75.
"""
from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any
from urllib.parse import urlsplit

__all__ = [
    "SEVERITY_EMOJI", "Opening", "format_duration", "link_label", "render_escalation",
    "render_firing", "render_resolved", "to_mrkdwn",
]

SEVERITY_EMOJI = {"info": ":large_blue_circle:", "warning": ":large_orange_circle:", "critical": ":red_circle:"}
RESOLVED_EMOJI = ":white_check_mark:"

#: Facts shown as side-by-side fields, in this order, under these labels.
_FIELD_FACTS = (("observed", "Observed"), ("expected", "Expected"), ("band", "Normal band"),
                ("verdict", "Verdict"))
#: Facts that get a section of their own (longer prose).
_PROSE_FACTS = (("root_cause", "Root cause"), ("recommendation", "Recommendation"))
_MAX_BUTTONS = 5
_HEADER_MAX, _SECTION_MAX, _FIELD_MAX, _BUTTON_MAX = 150, 3000, 2000, 75


@dataclass(frozen=True)
class Opening:
    """What the resolve message needs to know about the episode's first post.

    >>> Opening("latency up", datetime(2025, 6, 1, 12, 5)).title
    'latency up'
    """

    title: str
    opened_at: datetime


def _cut(text: str, limit: int) -> str:
    return text if len(text) <= limit else text[: limit - 1] + "…"


def _escape(text: str) -> str:
    # Slack's mrkdwn reads &, < and > as control characters.
    return text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


_MD_LINK = re.compile(r"\[([^\]]+)\]\((https?://[^)\s]+)\)")
_MD_BOLD = re.compile(r"\*\*(.+?)\*\*")


def to_mrkdwn(markdown: str) -> str:
    """Alert text (Markdown) in Slack's mrkdwn dialect: links, bold, escaping.

    >>> to_mrkdwn("**p95** 5 s > 1.5 s, see [panel](http://g/d/x)")
    '*p95* 5 s &gt; 1.5 s, see <http://g/d/x|panel>'
    """
    text = _escape(markdown)
    text = _MD_LINK.sub(lambda m: f"<{m.group(2)}|{m.group(1)}>", text)
    return _MD_BOLD.sub(r"*\1*", text)


def format_duration(delta: timedelta) -> str:
    """A short human duration.

    >>> [format_duration(timedelta(seconds=s)) for s in (42, 300, 3900, 93600)]
    ['42 s', '5 min', '1 h 05 min', '1 d 2 h']
    """
    seconds = max(0, int(delta.total_seconds()))
    if seconds < 60:
        return f"{seconds} s"
    minutes = seconds // 60
    if minutes < 60:
        return f"{minutes} min"
    hours, minutes = divmod(minutes, 60)
    if hours < 24:
        return f"{hours} h {minutes:02d} min"
    days, hours = divmod(hours, 24)
    return f"{days} d {hours} h"


def _when(moment: datetime) -> str:
    return moment.strftime("%Y-%m-%d %H:%M UTC")


def link_label(url: str) -> str:
    """The button text for a link: what it opens, guessed from the URL.

    >>> link_label("http://localhost:3000/d/llmpulse-overview?viewPanel=4")
    'Grafana panel'
    >>> link_label("http://localhost:3000/explore?trace=ab12"), link_label("https://runbooks.example.com/x")
    ('Trace', 'runbooks.example.com')
    """
    parts = urlsplit(url)
    lowered = url.lower()
    if "trace" in lowered:
        return "Trace"
    if "/d/" in parts.path or "grafana" in lowered:
        return "Grafana panel" if "viewpanel" in lowered else "Grafana dashboard"
    return parts.hostname or "Link"


def _links(links: list[str]) -> list[dict[str, Any]]:
    usable = [u for u in links if urlsplit(u).scheme in ("http", "https")][:_MAX_BUTTONS]
    if not usable:
        return []
    return [{
        "type": "actions",
        "elements": [
            {"type": "button", "action_id": f"link-{i}", "url": url,
             "text": {"type": "plain_text", "text": _cut(link_label(url), _BUTTON_MAX)}}
            for i, url in enumerate(usable)
        ],
    }]


def _context(alert: Mapping[str, Any]) -> dict[str, Any]:
    bits = [f"*{alert['severity'].upper()}*", alert["kind"]]
    if alert.get("project"):
        bits.append(f"project `{_escape(alert['project'])}`")
    bits.append(_when(alert["time"]))
    return {"type": "context", "elements": [{"type": "mrkdwn", "text": " · ".join(bits)}]}


def _what_changed(alert: Mapping[str, Any]) -> list[dict[str, Any]]:
    subject = alert.get("series") or ", ".join(f"{k}={v}" for k, v in sorted(alert.get("dimensions", {}).items()))
    text = to_mrkdwn(alert.get("text") or "")
    if subject:
        text = f"*What changed:* `{_escape(subject)}`\n{text}"
    return [{"type": "section", "text": {"type": "mrkdwn", "text": _cut(text or alert["title"], _SECTION_MAX)}}]


def _facts(facts: Mapping[str, str]) -> list[dict[str, Any]]:
    blocks: list[dict[str, Any]] = []
    fields = [{"type": "mrkdwn", "text": _cut(f"*{label}*\n{to_mrkdwn(facts[key])}", _FIELD_MAX)}
              for key, label in _FIELD_FACTS if facts.get(key)]
    if fields:
        blocks.append({"type": "section", "fields": fields})
    for key, label in _PROSE_FACTS:
        if facts.get(key):
            text = _cut(f"*{label}:* {to_mrkdwn(facts[key])}", _SECTION_MAX)
            blocks.append({"type": "section", "text": {"type": "mrkdwn", "text": text}})
    return blocks


def _message(header: str, fallback: str, blocks: list[dict[str, Any]]) -> dict[str, Any]:
    head = {"type": "header", "text": {"type": "plain_text", "text": _cut(header, _HEADER_MAX), "emoji": True}}
    # "text" is what notifications and screen readers show; Slack asks for it.
    return {"text": _cut(fallback, _SECTION_MAX), "blocks": [head, *blocks]}


def render_firing(alert: Mapping[str, Any]) -> dict[str, Any]:
    """The message that opens an episode.

    Examples
    --------
    >>> from schemas.samples import sample
    >>> msg = render_firing(sample("alert"))
    >>> msg["blocks"][0]["text"]["text"]
    ':large_orange_circle: latency_ms up 3.4x for gpt-4o-mini'
    >>> [b["type"] for b in msg["blocks"]]
    ['header', 'context', 'section', 'section', 'actions']
    """
    emoji = SEVERITY_EMOJI[alert["severity"]]
    blocks = [_context(alert), *_what_changed(alert), *_facts(alert.get("facts") or {}),
              *_links(list(alert.get("links") or []))]
    return _message(f"{emoji} {alert['title']}", f"[{alert['severity']}] {alert['title']}", blocks)


def render_escalation(alert: Mapping[str, Any], opening: Opening) -> dict[str, Any]:
    """A later firing of an open episode whose severity rose.

    >>> from schemas.samples import sample
    >>> msg = render_escalation(sample("alert", severity="critical"), Opening("p95 up", sample("alert")["time"]))
    >>> msg["blocks"][0]["text"]["text"]
    ':red_circle: Escalated to CRITICAL: latency_ms up 3.4x for gpt-4o-mini'
    """
    message = render_firing(alert)
    emoji = SEVERITY_EMOJI[alert["severity"]]
    message["blocks"][0]["text"]["text"] = _cut(
        f"{emoji} Escalated to {alert['severity'].upper()}: {alert['title']}", _HEADER_MAX)
    message["blocks"].insert(2, {"type": "context", "elements": [{
        "type": "mrkdwn",
        "text": f"Open since {_when(opening.opened_at)} as “{_escape(opening.title)}”",
    }]})
    message["text"] = f"[{alert['severity']}] escalated: {alert['title']}"
    return message


def render_resolved(alert: Mapping[str, Any], opening: Opening | None) -> dict[str, Any]:
    """The message that closes an episode, naming its opening and duration.

    ``opening`` is None when the notifier never saw the episode open (it
    started later, or the opening went to a webhook that was removed).

    Examples
    --------
    >>> from datetime import timedelta
    >>> from schemas.samples import sample
    >>> opened = sample("alert")
    >>> resolved = sample("alert", status="resolved", time=opened["time"] + timedelta(minutes=42))
    >>> msg = render_resolved(resolved, Opening(opened["title"], opened["time"]))
    >>> msg["blocks"][0]["text"]["text"]
    ':white_check_mark: Resolved: latency_ms up 3.4x for gpt-4o-mini'
    >>> msg["blocks"][1]["text"]["text"].split("\\n")[0]
    '*Resolved after 42 min* (firing since 2025-06-01 12:05 UTC)'
    """
    title = opening.title if opening else alert["title"]
    if opening:
        summary = (f"*Resolved after {format_duration(alert['time'] - opening.opened_at)}* "
                   f"(firing since {_when(opening.opened_at)})")
    else:
        summary = f"*Resolved* at {_when(alert['time'])} (the opening alert was not seen by this notifier)"
    body = to_mrkdwn(alert.get("text") or "")
    blocks: list[dict[str, Any]] = [
        {"type": "section", "text": {"type": "mrkdwn", "text": _cut(f"{summary}\n{body}".strip(), _SECTION_MAX)}},
        _context(alert),
        *_facts(alert.get("facts") or {}),
        *_links(list(alert.get("links") or [])),
    ]
    return _message(f"{RESOLVED_EMOJI} Resolved: {title}", f"[resolved] {title}", blocks)
