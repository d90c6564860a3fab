"""Posting to a Slack incoming webhook, and what each answer means for the retry.

=====================================  ==============================================
answer                                 what happens
=====================================  ==============================================
2xx                                    sent
429                                    wait ``Retry-After`` (whole webhook), retry
5xx, 408, timeout, connection error    exponential backoff with jitter, retry
400 (``invalid_payload``, ...)         failed: this message will never be accepted
403/404/410 (``invalid_token``,        failed, and the webhook is *broken*: its other
``no_service``, ``channel_not_found``,  messages fail at once instead of each being
``channel_is_archived``)               sent to a dead URL
other 4xx, redirects                   failed
=====================================  ==============================================

urllib is used because httpx is not a dependency; one POST per second per
webhook needs nothing more. Redirects are not followed: a webhook that
redirects is misconfigured, and urllib would turn the POST into a GET.
"""
from __future__ import annotations

import json
import random
import socket
import time
import urllib.error
import urllib.request
from dataclasses import dataclass
from datetime import UTC, datetime
from email.utils import parsedate_to_datetime
from typing import Any, Literal

__all__ = ["BROKEN_WEBHOOK_STATUSES", "PostResult", "RateLimiter", "backoff_delay", "classify",
           "parse_retry_after", "post_json"]

Outcome = Literal["sent", "retry", "rate_limited", "failed"]

#: Answers that say the URL itself is dead, not just this message.
BROKEN_WEBHOOK_STATUSES = frozenset({403, 404, 410})
#: A Retry-After beyond this is treated as this: an hour-long pause from one
#: bogus header would hold every alert of the webhook.
MAX_RETRY_AFTER_S = 900.0


@dataclass(frozen=True)
class PostResult:
    """The outcome of one POST.

    >>> PostResult("failed", 404, "HTTP 404 no_service").broken_webhook
    True
    """

    outcome: Outcome
    status: int | None
    reason: str
    retry_after_s: float | None = None

    @property
    def broken_webhook(self) -> bool:
        return self.outcome == "failed" and self.status in BROKEN_WEBHOOK_STATUSES


def parse_retry_after(value: str | None, now: datetime | None = None) -> float | None:
    """Seconds to wait from a ``Retry-After`` header (delta-seconds or HTTP-date).

    Returns None when the header is missing or unreadable; caps at 15 minutes.

    >>> parse_retry_after("1"), parse_retry_after(" 2.5 "), parse_retry_after("soon"), parse_retry_after(None)
    (1.0, 2.5, None, None)
    >>> parse_retry_after("Sun, 01 Jun 2025 12:00:30 GMT", now=datetime(2025, 6, 1, 12, 0, tzinfo=UTC))
    30.0
    >>> parse_retry_after("86400")
    900.0
    """
    if value is None or not value.strip():
        return None
    text = value.strip()
    try:
        seconds = float(text)
    except ValueError:
        try:
            moment = parsedate_to_datetime(text)
        except (TypeError, ValueError):
            return None
        if moment.tzinfo is None:
            moment = moment.replace(tzinfo=UTC)
        seconds = (moment - (now or datetime.now(UTC))).total_seconds()
    if seconds != seconds:  # NaN
        return None
    return min(MAX_RETRY_AFTER_S, max(0.0, seconds))


def backoff_delay(attempt: int, base_s: float = 1.0, cap_s: float = 300.0,
                  rng: random.Random | None = None) -> float:
    """Delay before retry number ``attempt`` (1-based): exponential, capped, jittered.

    The jitter ("equal jitter": half fixed, half random) spreads retries of
    many rows and many notifier replicas so a recovering Slack is not hit by
    all of them in the same second, while never retrying sooner than half
    the nominal delay.

    >>> rng = random.Random(7)
    >>> [(2 ** (a - 2) <= backoff_delay(a, 1.0, 10.0, rng) <= 2 ** (a - 1)) for a in (1, 2, 3, 4)]
    [True, True, True, True]
    >>> 5.0 <= backoff_delay(30, 1.0, 10.0, rng) <= 10.0
    True
    """
    rng = rng or random
    nominal = min(cap_s, base_s * 2 ** max(0, attempt - 1))
    return nominal / 2 + rng.uniform(0, nominal / 2)


def classify(status: int, body: str = "", retry_after: str | None = None) -> PostResult:
    """Turn an HTTP answer into an outcome.

    >>> classify(200, "ok").outcome
    'sent'
    >>> r = classify(429, "rate_limited", "3")
    >>> r.outcome, r.retry_after_s
    ('rate_limited', 3.0)
    >>> classify(503, "").outcome, classify(404, "no_service").reason
    ('retry', 'HTTP 404 no_service')
    """
    reason = f"HTTP {status} {body.strip()[:200]}".strip()
    if 200 <= status < 300:
        return PostResult("sent", status, reason)
    if status == 429:
        return PostResult("rate_limited", status, reason, parse_retry_after(retry_after))
    if status >= 500 or status == 408:
        return PostResult("retry", status, reason, parse_retry_after(retry_after))
    if 300 <= status < 400:
        return PostResult("failed", status, f"{reason} (the webhook redirects; use the URL Slack gave)")
    return PostResult("failed", status, reason)


class _NoRedirect(urllib.request.HTTPRedirectHandler):
    def redirect_request(self, *args: Any, **kwargs: Any) -> None:
        return None  # the 3xx surfaces as an HTTPError and is classified


_OPENER = urllib.request.build_opener(_NoRedirect)


def post_json(url: str, payload: Any, timeout_s: float = 10.0) -> PostResult:
    """POST ``payload`` as JSON to ``url`` and classify the answer; never raises for HTTP or network errors.

    >>> post_json("http://127.0.0.1:1/hook", {"text": "hi"}, timeout_s=2).outcome
    'retry'
    """
    request = urllib.request.Request(
        url, data=json.dumps(payload).encode(), method="POST",
        headers={"Content-Type": "application/json; charset=utf-8", "User-Agent": "llmpulse-slack-notifier"},
    )
    try:
        with _OPENER.open(request, timeout=timeout_s) as response:
            return classify(response.status, response.read(1000).decode(errors="replace"))
    except urllib.error.HTTPError as exc:
        body = exc.read(1000).decode(errors="replace") if exc.fp else ""
        return classify(exc.code, body, exc.headers.get("Retry-After") if exc.headers else None)
    except (urllib.error.URLError, socket.timeout, ConnectionError, OSError) as exc:
        # Connection refused, DNS, TLS, timeouts: Slack (or the network) may come back.
        cause = getattr(exc, "reason", exc)
        return PostResult("retry", None, f"connection error: {cause}")


class RateLimiter:
    """At most one post per ``interval_s`` per webhook, plus holds from 429 answers.

    Slack allows about one message per second per incoming webhook, with
    short bursts; spacing posts evenly avoids the 429 in the first place.

    >>> limiter = RateLimiter(1.0, clock=lambda: 100.0)
    >>> limiter.wait_s("team")
    0.0
    >>> limiter.note_post("team"); limiter.wait_s("team"), limiter.wait_s("oncall")
    (1.0, 0.0)
    >>> limiter.hold("oncall", 30.0); limiter.wait_s("oncall")
    30.0
    """

    def __init__(self, interval_s: float = 1.0, clock: Any = time.monotonic) -> None:
        self.interval_s = interval_s
        self._clock = clock
        self._next: dict[str, float] = {}

    def wait_s(self, webhook: str) -> float:
        """Seconds until ``webhook`` may be posted to again."""
        return max(0.0, self._next.get(webhook, 0.0) - self._clock())

    def note_post(self, webhook: str) -> None:
        """Record a post (whatever its answer: each one counts against Slack's limit)."""
        self._next[webhook] = max(self._next.get(webhook, 0.0), self._clock() + self.interval_s)

    def hold(self, webhook: str, seconds: float) -> None:
        """Post nothing to ``webhook`` for ``seconds`` (a 429's Retry-After)."""
        self._next[webhook] = max(self._next.get(webhook, 0.0), self._clock() + seconds)
