"""Which Slack webhook an alert goes to: rules on project, kind and minimum severity.

The routes file (JSON, named by ``LLMPULSE_SLACK_ROUTES``)::

    {
      "webhooks": {
        "oncall":  {"url_env": "SLACK_ONCALL_WEBHOOK"},
        "support": "https://hooks.slack.com/services/T000/B000/XXXX"
      },
      "routes": [
        {"min_severity": "critical", "webhook": "oncall"},
        {"project": ["support-bot", "faq-bot"], "webhook": "support"},
        {"kind": "experiment", "webhook": "support"}
      ],
      "default": "support"
    }

Rules are tried in order and the first match wins; an alert no rule matches
goes to ``default``. Without a ``default`` in the file,
``LLMPULSE_SLACK_WEBHOOK_URL`` is the default (webhook name ``default``).
Unknown keys are errors: a misspelt ``min_severty`` would otherwise route
everything silently. Webhook URLs carry a token, so only webhook *names* ever
appear in errors, logs and the outbox table.
"""
from __future__ import annotations

import json
import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

__all__ = ["DEFAULT_WEBHOOK", "SEVERITY_RANK", "Route", "Routing", "SlackRoutesError", "Webhook"]

SEVERITY_RANK = {"info": 0, "warning": 1, "critical": 2}
KINDS = ("anomaly", "drift", "experiment", "pipeline")
DEFAULT_WEBHOOK = "default"


class SlackRoutesError(ValueError):
    """The routing configuration is unusable; the message says where and why."""


@dataclass(frozen=True)
class Webhook:
    """A named incoming-webhook URL; the URL never shows in ``repr``.

    >>> Webhook("oncall", "https://hooks.slack.com/services/T/B/secret")
    Webhook(name='oncall')
    """

    name: str
    url: str = field(repr=False)


@dataclass(frozen=True)
class Route:
    """One rule: alerts matching all its conditions go to ``webhook``.

    ``projects``/``kinds`` of None match anything (including alerts without a
    project).

    >>> r = Route("oncall", min_severity="critical")
    >>> r.matches({"severity": "critical", "kind": "anomaly", "project": None})
    True
    >>> r.matches({"severity": "warning", "kind": "anomaly", "project": None})
    False
    """

    webhook: str
    projects: frozenset[str] | None = None
    kinds: frozenset[str] | None = None
    min_severity: str = "info"

    def matches(self, alert: Mapping[str, Any]) -> bool:
        if SEVERITY_RANK[alert["severity"]] < SEVERITY_RANK[self.min_severity]:
            return False
        if self.projects is not None and alert.get("project") not in self.projects:
            return False
        return self.kinds is None or alert["kind"] in self.kinds


@dataclass(frozen=True)
class Routing:
    """Named webhooks, ordered rules and a default.

    Examples
    --------
    >>> routing = Routing.from_config(
    ...     {"webhooks": {"oncall": "https://hooks.example/oncall"},
    ...      "routes": [{"min_severity": "critical", "webhook": "oncall"}]},
    ...     default_url="https://hooks.example/all")
    >>> routing.route({"severity": "critical", "kind": "anomaly", "project": "p"})
    'oncall'
    >>> routing.route({"severity": "info", "kind": "anomaly", "project": "p"})
    'default'
    """

    webhooks: Mapping[str, Webhook]
    routes: tuple[Route, ...] = ()
    default: str | None = None

    def route(self, alert: Mapping[str, Any]) -> str | None:
        """The webhook name for ``alert``, or None when nothing matches and there is no default."""
        for rule in self.routes:
            if rule.matches(alert):
                return rule.webhook
        return self.default

    def url(self, webhook: str) -> str | None:
        """The URL of ``webhook``; None if it is not (any longer) configured."""
        found = self.webhooks.get(webhook)
        return found.url if found else None

    @classmethod
    def from_config(cls, config: Any, default_url: str | None = None,
                    environ: Mapping[str, str] | None = None) -> Routing:
        """Validate a parsed routes file; raise :class:`SlackRoutesError` naming the bad entry.

        >>> Routing.from_config({"routes": [{"webhook": "nope"}]}, "https://h/x")
        Traceback (most recent call last):
        ...
        sinks.slack.routing.SlackRoutesError: routes[0].webhook: 'nope' is not a configured webhook (known: default)
        """
        environ = os.environ if environ is None else environ
        if not isinstance(config, Mapping):
            raise SlackRoutesError("the routes file must hold a JSON object")
        _no_unknown_keys(config, {"webhooks", "routes", "default"}, "top level")
        raw_hooks = config.get("webhooks", {})
        if not isinstance(raw_hooks, Mapping):
            raise SlackRoutesError("webhooks: must be an object of name -> URL")
        webhooks = {name: Webhook(name, _webhook_url(name, spec, environ)) for name, spec in raw_hooks.items()}
        default = config.get("default")
        if default_url and DEFAULT_WEBHOOK not in webhooks:
            webhooks[DEFAULT_WEBHOOK] = Webhook(DEFAULT_WEBHOOK, _checked_url(DEFAULT_WEBHOOK, default_url))
            default = default or DEFAULT_WEBHOOK
        if default is not None and (not isinstance(default, str) or default not in webhooks):
            raise SlackRoutesError(f"default: {default!r} is not a configured webhook{_known(webhooks)}")
        raw_routes = config.get("routes", [])
        if not isinstance(raw_routes, list):
            raise SlackRoutesError("routes: must be a list of rules")
        routes = tuple(_route(i, rule, webhooks) for i, rule in enumerate(raw_routes))
        if not webhooks:
            raise SlackRoutesError("no webhook configured: add one under 'webhooks' or set LLMPULSE_SLACK_WEBHOOK_URL")
        return cls(webhooks, routes, default)

    @classmethod
    def load(cls, path: str | Path | None, default_url: str | None = None) -> Routing:
        """Read the routes file at ``path`` (or only ``default_url`` when there is none)."""
        if path is None:
            if not default_url:
                raise SlackRoutesError("no Slack webhook configured: set LLMPULSE_SLACK_WEBHOOK_URL "
                                       "or LLMPULSE_SLACK_ROUTES (a routes file, see docs/slack.md)")
            return cls.from_config({}, default_url)
        try:
            config = json.loads(Path(path).read_text())
        except OSError as exc:
            raise SlackRoutesError(f"cannot read the routes file {path}: {exc.strerror}") from exc
        except json.JSONDecodeError as exc:
            raise SlackRoutesError(f"{path} is not valid JSON: {exc}") from exc
        try:
            return cls.from_config(config, default_url)
        except SlackRoutesError as exc:
            raise SlackRoutesError(f"{path}: {exc}") from exc


def _known(webhooks: Mapping[str, Webhook]) -> str:
    return f" (known: {', '.join(sorted(webhooks))})" if webhooks else " (none configured)"


def _no_unknown_keys(obj: Mapping[str, Any], allowed: set[str], where: str) -> None:
    unknown = sorted(set(obj) - allowed)
    if unknown:
        raise SlackRoutesError(f"{where}: unknown key(s) {', '.join(unknown)}; allowed: {', '.join(sorted(allowed))}")


def _checked_url(name: str, url: Any) -> str:
    parts = urlsplit(url) if isinstance(url, str) else None
    if parts is None or parts.scheme not in ("http", "https") or not parts.hostname:
        # Never echo the value: it may be a real webhook URL with its token.
        raise SlackRoutesError(f"webhooks.{name}: the URL must be an http(s) URL with a host")
    return url


def _webhook_url(name: Any, spec: Any, environ: Mapping[str, str]) -> str:
    if not isinstance(name, str) or not name:
        raise SlackRoutesError(f"webhooks: names must be non-empty strings, got {name!r}")
    if isinstance(spec, Mapping):
        _no_unknown_keys(spec, {"url", "url_env"}, f"webhooks.{name}")
        if "url_env" in spec:
            variable = spec["url_env"]
            if not isinstance(variable, str) or not environ.get(variable):
                raise SlackRoutesError(f"webhooks.{name}: environment variable {variable!r} is not set")
            spec = environ[variable]
        else:
            spec = spec.get("url")
    return _checked_url(name, spec)


def _names(value: Any, where: str, allowed: tuple[str, ...] | None = None) -> frozenset[str] | None:
    if value is None:
        return None
    items = [value] if isinstance(value, str) else value
    if not isinstance(items, list) or not items or not all(isinstance(v, str) and v for v in items):
        raise SlackRoutesError(f"{where}: must be a non-empty string or list of strings")
    if allowed is not None:
        bad = [v for v in items if v not in allowed]
        if bad:
            raise SlackRoutesError(f"{where}: {bad[0]!r} is not one of {', '.join(allowed)}")
    return frozenset(items)


def _route(index: int, rule: Any, webhooks: Mapping[str, Webhook]) -> Route:
    where = f"routes[{index}]"
    if not isinstance(rule, Mapping):
        raise SlackRoutesError(f"{where}: must be an object")
    _no_unknown_keys(rule, {"webhook", "project", "kind", "min_severity"}, where)
    webhook = rule.get("webhook")
    if not isinstance(webhook, str) or webhook not in webhooks:
        raise SlackRoutesError(f"{where}.webhook: {webhook!r} is not a configured webhook{_known(webhooks)}")
    severity = rule.get("min_severity", "info")
    if severity not in SEVERITY_RANK:
        raise SlackRoutesError(f"{where}.min_severity: {severity!r} is not one of {', '.join(SEVERITY_RANK)}")
    return Route(webhook, _names(rule.get("project"), f"{where}.project"),
                 _names(rule.get("kind"), f"{where}.kind", KINDS), severity)
