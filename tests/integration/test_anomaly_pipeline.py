"""An incident from metric points to a Slack message, through real workers.

``llm.metrics`` points (a day of normal error rate, then an error burst on
one model) -> ``anomalies`` worker -> ``llm.anomalies`` -> ``anomaly-store``
(episode row, root cause from ``metric_windows``, alert) -> ``llm.alerts`` ->
``slack-notifier`` -> a real local HTTP server standing in for Slack.
"""
from __future__ import annotations

import random
import socket
import uuid
from datetime import UTC, datetime, timedelta

import psycopg

from processors.topics import ALERTS, ANOMALIES, ANOMALY_FEEDBACK, METRICS
from schemas.codec import encode
from sinks.migrate import migrate
from tests.integration.anomaly_seed import Incident, incident_windows, insert_windows
from tests.integration.helpers import skip_backlog
from tests.integration.test_slack_notifier import FakeSlack, slack  # noqa: F401 - the fixture
from tests.integration.workers import WorkerProcess, wait_until, worker_env


def _port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _point(project: str, at: datetime, rate: float, n: int = 200) -> dict:
    return {"series": f"error_rate{{project={project}}}", "metric": "error_rate", "dimensions": {"project": project},
            "window_start": at, "window_seconds": 60, "value": rate, "count": n}


def test_an_error_burst_reaches_slack_once_with_its_root_cause_and_resolves(
        bootstrap, producer, fresh_database, tmp_path, slack: FakeSlack):  # noqa: F811 - fixture
    migrate(fresh_database)
    project = f"e2e-{uuid.uuid4().hex[:8]}"
    now = datetime.now(UTC).replace(second=0, microsecond=0)
    incident = Incident(project, start=now - timedelta(minutes=20), minutes=8)
    with psycopg.connect(fresh_database) as conn:
        insert_windows(conn, incident_windows(incident))

    skip_backlog(bootstrap, "llmpulse-anomaly-store", [ANOMALIES.name])
    skip_backlog(bootstrap, "llmpulse-slack-notifier", [ALERTS.name])
    skip_backlog(bootstrap, "llmpulse-anomalies", [METRICS.name, ANOMALY_FEEDBACK.name])
    env = worker_env(bootstrap, fresh_database, tmp_path, LLMPULSE_SLACK_WEBHOOK_URL=slack.url("/hook"))
    workers = [WorkerProcess(name, env, tmp_path, _port()).start()
               for name in ("anomalies", "anomaly-store", "slack-notifier")]
    try:
        rng = random.Random(7)
        # 26 hours of a healthy 2 % error rate (binomial noise over 200 requests/minute) ...
        t = incident.start - timedelta(hours=26)
        while t < incident.start:
            rate = sum(rng.random() < 0.02 for _ in range(200)) / 200
            producer.produce(METRICS.name, key=f"error_rate{{project={project}}}".encode(),
                             value=encode("metric_point", _point(project, t, rate)))
            t += timedelta(minutes=1)
        # ... then 8 minutes at 21 % (the bad model fails 40 % of its half), then healthy again.
        for minute in range(20):
            rate = 0.21 if minute < incident.minutes else sum(rng.random() < 0.02 for _ in range(200)) / 200
            producer.produce(METRICS.name, key=f"error_rate{{project={project}}}".encode(),
                             value=encode("metric_point", _point(project, t, rate)))
            t += timedelta(minutes=1)
        producer.flush(30)

        def posts() -> list[dict]:
            return [p for p in slack.delivered("/hook") if project in str(p)]

        wait_until(lambda: len(posts()) >= 2, 180, "the opening and the resolving Slack post", workers)
        opening, resolving = posts()[:2]
        text = str(opening)
        assert "error" in text.lower() and "gpt-x" in text, text  # what changed, and the root cause
        assert "resolved" in str(resolving).lower()
        with psycopg.connect(fresh_database) as conn:
            rows = conn.execute("SELECT status, root_cause, started_at FROM anomalies WHERE project = %s",
                                (project,)).fetchall()
        assert len(rows) == 1, rows  # one episode, not one row per minute
        status, root_cause, started_at = rows[0]
        assert status == "resolved"
        assert "model=gpt-x" in root_cause
        assert incident.start <= started_at <= incident.start + timedelta(minutes=2)
        # Nothing more arrives: one message per open, one per resolve.
        for worker in workers:
            assert worker.alive(), worker.log()
        assert len(posts()) == 2
    finally:
        for worker in workers:
            worker.stop()
