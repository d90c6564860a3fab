"""What ``llmpulse demo`` adds to plain traffic: profiles, experiments, an incident, a webhook.

Each piece is small and testable on its own; :mod:`processors.demo` wires
them to live services.

Examples
--------
>>> from processors.generator import DEFAULT_PROJECTS
>>> exp = experiment_for(DEFAULT_PROJECTS[0])
>>> exp.key, [v.name for v in exp.variants], exp.status
('support-prompt', ['control', 'concise'], 'running')
>>> profile_for("user-100042", "support-bot")["plan"] in dict(PLANS)
True
"""
from __future__ import annotations

import json
import random
import threading
import zlib
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from processors.experiments import Experiment, Variant
from processors.generator import ProjectSpec

__all__ = ["PLANS", "ProfiledModel", "WebhookReceiver", "experiment_for", "incident_points", "incident_spans",
           "profile_for"]

#: Plans of demo users, with their shares.
PLANS: tuple[tuple[str, float], ...] = (("free", 0.6), ("pro", 0.3), ("enterprise", 0.1))


def experiment_for(spec: ProjectSpec, primary_metric: str = "cost_per_request",
                   now: datetime | None = None) -> Experiment:
    """The running definition of a generated project's prompt experiment.

    Same key (the hash seed), variants and weights as the generator, so the
    variants ingest computes agree with the ones the generated spans carry.
    """
    now = now or datetime.now(UTC)
    total = sum(v.weight for v in spec.variants)
    return Experiment(
        key=spec.experiment,
        hypothesis=f"{spec.variants[-1].name} changes answer quality and length in {spec.name}",
        variants=tuple(Variant(v.name, v.weight / total, {"prompt_version": v.prompt_version})
                       for v in spec.variants),
        coverage=1.0, targeting=None, namespace=None, primary_metric=primary_metric,
        secondary_metrics=("rating", "success_rate"), guardrail_metrics=("latency_p95_ms",),
        min_sample_size=50, status="running", owner="demo@llmpulse.dev", seed=spec.experiment,
        hash_version=2, created_at=now, updated_at=now,
    )


def profile_for(user_id: str, project: str, now: datetime | None = None) -> dict[str, Any]:
    """A stable ``user_profile`` record for a generated user (plan, country, signup month, flags)."""
    h = zlib.crc32(user_id.encode())
    rng = random.Random(h)
    pick, plan = rng.random(), PLANS[-1][0]
    for name, share in PLANS:
        if pick < share:
            plan = name
            break
        pick -= share
    now = now or datetime.now(UTC)
    return {
        "user_id": user_id, "project": project, "plan": plan,
        "signup_time": now - timedelta(days=rng.randint(1, 400)),
        "country": rng.choice(("US", "DE", "FR", "GB", "IN", "BR", "JP")),
        "feature_flags": {"streaming": rng.random() < 0.5},
        "properties": {"seats": str(rng.choice((1, 5, 20, 80)))},
        "updated_at": now,
    }


class ProfiledModel:
    """Wraps a traffic model: publishes each new user's profile before their first span.

    ``publish(profile)`` is called once per user, before the trace is returned.
    """

    def __init__(self, model: Any, publish: Any) -> None:
        self._model = model
        self._publish = publish
        self.users: set[str] = set()

    def trace(self) -> list[dict[str, Any]]:
        spans = self._model.trace()
        user_id = spans[0].get("user_id")
        if user_id and user_id not in self.users:
            self.users.add(user_id)
            self._publish(profile_for(user_id, spans[0]["project"]))
        return spans

    def traces(self, n: int) -> Iterator[list[dict[str, Any]]]:
        for _ in range(n):
            yield self.trace()

    def __getattr__(self, name: str) -> Any:
        return getattr(self._model, name)


def incident_points(project: str, start: datetime, minutes: int, history_hours: int = 26,
                    seed: int = 1) -> list[dict[str, Any]]:
    """``error_rate{project=...}`` per minute: a healthy day (2 %), then ``minutes`` at 21 %.

    >>> pts = incident_points("p", datetime(2026, 1, 2, tzinfo=UTC), 3, history_hours=1)
    >>> len(pts), pts[-1]["value"]
    (63, 0.21)
    """
    rng = random.Random(seed)
    points = []
    t = start - timedelta(hours=history_hours)
    end = start + timedelta(minutes=minutes)
    while t < end:
        rate = 0.21 if t >= start else sum(rng.random() < 0.02 for _ in range(200)) / 200
        points.append({"series": f"error_rate{{project={project}}}", "metric": "error_rate",
                       "dimensions": {"project": project}, "window_start": t, "window_seconds": 60,
                       "value": rate, "count": 200})
        t += timedelta(minutes=1)
    return points


def incident_spans(project: str, start: datetime, minutes: int, per_minute: int = 100,
                   baseline_minutes: int = 10, seed: int = 1) -> list[dict[str, Any]]:
    """Real spans behind the incident: ``gpt-4o`` fails 40 % from ``start``; ``claude`` stays healthy.

    ``baseline_minutes`` of healthy traffic before ``start`` let the root cause compare before and during.
    Ingest tags these spans with every running experiment's variant, assigned
    per user, so the variant dimension splits the traffic into many small
    segments. At 20 spans a minute some of those held so few requests that
    by chance they looked as surprising as the failing model, and the
    demo's root cause named a variant; at 100 it names the model for every
    seed tried (tests/unit/test_demo_scenarios.py). Users are drawn
    independently of the model, as in real traffic.
    """
    from schemas.samples import sample

    rng = random.Random(seed)
    spans = []
    for minute in range(-baseline_minutes, minutes):
        at = start + timedelta(minutes=minute)
        for i in range(per_minute):
            model = "gpt-4o" if i % 2 else "claude-3-5-haiku"
            failing = minute >= 0 and model == "gpt-4o"
            error = rng.random() < (0.4 if failing else 0.02)
            end = at + timedelta(seconds=(i + 0.5) * 60 / per_minute)  # spread over the minute
            spans.append(sample(
                "span", trace_id=f"{rng.getrandbits(128):032x}", span_id=f"{rng.getrandbits(64):016x}",
                parent_span_id=None, project=project, request_model=model, response_model=model,
                provider="openai" if model == "gpt-4o" else "anthropic", experiments={},
                status="error" if error else "ok", error_type="RateLimitError" if error else None,
                start_time=end - timedelta(milliseconds=900), end_time=end, first_token_time=None,
                user_id=f"user-incident-{rng.randrange(per_minute)}"))
    return spans


class WebhookReceiver:
    """A local HTTP server standing in for a Slack incoming webhook; keeps what it receives.

    >>> with WebhookReceiver() as hook:
    ...     hook.url.startswith("http://127.0.0.1:")
    True
    """

    def __init__(self) -> None:
        self.posts: list[dict[str, Any]] = []
        received = self.posts

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:  # noqa: N802 - http.server's name
                body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
                received.append(json.loads(body or b"{}"))
                self.send_response(200)
                self.send_header("Content-Length", "2")
                self.end_headers()
                self.wfile.write(b"ok")

            def log_message(self, *args: Any) -> None:
                pass

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self._server.server_address[1]}/demo-webhook"
        threading.Thread(target=self._server.serve_forever, daemon=True).start()

    def __enter__(self) -> WebhookReceiver:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        """Stop serving."""
        self._server.shutdown()
        self._server.server_close()
