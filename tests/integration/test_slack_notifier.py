"""The Slack notifier end to end: real Kafka, real PostgreSQL, a real HTTP server as the webhook.

The server (http.server on 127.0.0.1, random port) answers each path as the
test scripts it: 200, 503 during an outage, 429 with Retry-After, 404
no_service. Each path is one "webhook".
"""
from __future__ import annotations

import json
import logging
import threading
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import psycopg
import pytest

from processors.settings import Settings
from schemas.codec import encode
from schemas.samples import sample
from sinks.migrate import migrate
from sinks.slack.notifier import SlackNotifier
from sinks.slack.routing import Routing

T0 = datetime(2025, 6, 1, 12, 0, tzinfo=UTC)

Answer = tuple[int, dict[str, str], bytes]


@dataclass
class Request:
    path: str
    at: float  # time.monotonic() on arrival
    status: int
    payload: dict


@dataclass
class FakeSlack:
    """Webhooks on a local HTTP server; ``answer[path](n)`` scripts the n-th request to a path."""

    base_url: str = ""
    answer: dict[str, Callable[[int], Answer]] = field(default_factory=dict)
    requests: list[Request] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def url(self, path: str) -> str:
        return self.base_url + path

    def handle(self, path: str, body: bytes) -> Answer:
        with self.lock:
            n = sum(1 for r in self.requests if r.path == path)
            status, headers, reply = self.answer.get(path, lambda n: (200, {}, b"ok"))(n)
            self.requests.append(Request(path, time.monotonic(), status, json.loads(body)))
        return status, headers, reply

    def delivered(self, path: str = "/team") -> list[dict]:
        with self.lock:
            return [r.payload for r in self.requests if r.path == path and r.status == 200]

    def to(self, path: str) -> list[Request]:
        with self.lock:
            return [r for r in self.requests if r.path == path]


@pytest.fixture
def slack():
    fake = FakeSlack()

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self):  # noqa: N802 - http.server API
            body = self.rfile.read(int(self.headers["Content-Length"]))
            status, headers, reply = fake.handle(self.path, body)
            self.send_response(status)
            for key, value in headers.items():
                self.send_header(key, value)
            self.send_header("Content-Length", str(len(reply)))
            self.end_headers()
            self.wfile.write(reply)

        def log_message(self, *args):
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    fake.base_url = f"http://127.0.0.1:{server.server_address[1]}"
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield fake
    server.shutdown()
    server.server_close()


@pytest.fixture
def db(fresh_database) -> str:
    migrate(fresh_database)
    return fresh_database


@pytest.fixture
def notifiers(bootstrap, db, topic_factory):
    """Start notifiers on a private topic; all are stopped at the end (before the topic is deleted)."""
    started: list[SlackNotifier] = []

    def start(topic: str, routing: Routing, group_id: str | None = None) -> SlackNotifier:
        notifier = SlackNotifier(
            Settings(kafka_bootstrap_servers=bootstrap, database_url=db), routing, topic=topic,
            group_id=group_id or f"test-slack-{uuid.uuid4().hex}",
            runner_options={"batch_size": 100, "max_wait_s": 0.2, "max_backoff_s": 1.0},
            # Fast test timings; the production defaults are 1 s spacing and 2 s..5 min backoff.
            interval_s=0.05, backoff_base_s=0.2, backoff_cap_s=0.8, poll_s=0.2, seed=3,
        ).start()
        started.append(notifier)
        return notifier

    yield start
    for notifier in started:
        notifier.stop()


def team_routing(slack: FakeSlack) -> Routing:
    return Routing.from_config({}, slack.url("/team"))


def alert(alert_id: str, episode: str | None, **fields) -> dict:
    return sample("alert", **{"alert_id": alert_id, "episode_id": episode, "title": f"title of {alert_id}",
                              "time": T0, **fields})


def produce(producer, topic: str, *alerts: dict) -> None:
    for a in alerts:
        producer.produce(topic, key=(a["episode_id"] or a["alert_id"]).encode(), value=encode("alert", a))
    producer.flush(30)


def query(url: str, sql: str) -> list[tuple]:
    with psycopg.connect(url) as conn:
        return conn.execute(sql).fetchall()


def wait_for(condition: Callable[[], bool], timeout_s: float, what: str) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if condition():
            return
        time.sleep(0.1)
    raise AssertionError(f"timed out after {timeout_s}s waiting for {what}")


def headers(payloads: list[dict]) -> list[str]:
    return [p["blocks"][0]["text"]["text"] for p in payloads]


# ---------------------------------------------------------------- (a) one post per open, one per resolve


def test_one_post_per_episode_open_and_one_per_resolve(slack, notifiers, topic_factory, producer, db):
    topic = topic_factory("alerts")
    notifier = notifiers(topic, team_routing(slack))
    facts = {"observed": "5020 ms", "expected": "1480 ms", "root_cause": "provider eu-west degraded"}
    produce(producer, topic,
            alert("a1", "ep1", severity="warning", facts=facts),
            alert("a2", "ep1", severity="warning", time=T0 + timedelta(minutes=1), facts={"observed": "5400 ms"}),
            alert("b1", "ep2", severity="critical", project="faq-bot"),
            alert("a3", "ep1", status="resolved", severity="info", time=T0 + timedelta(minutes=12)))
    wait_for(lambda: len(query(db, "SELECT 1 FROM alert_seen")) == 4, 30, "4 alerts consumed")
    wait_for(lambda: len(slack.delivered()) >= 3, 15, "3 posts")
    time.sleep(0.5)  # anything else queued would go out now

    posts = slack.delivered()
    assert len(posts) == 3, headers(posts)
    by_header = dict(zip(headers(posts), posts))
    opened = by_header[":large_orange_circle: title of a1"]
    assert {"type": "mrkdwn", "text": "*Observed*\n5020 ms"} in opened["blocks"][3]["fields"]
    assert opened["blocks"][4]["text"]["text"] == "*Root cause:* provider eu-west degraded"
    assert opened["blocks"][-1]["elements"][0]["url"] == "http://localhost:3000/d/llmpulse-overview"
    resolved = by_header[":white_check_mark: Resolved: title of a1"]
    assert resolved["blocks"][1]["text"]["text"].startswith("*Resolved after 12 min* (firing since 2025-06-01 12:00")
    assert ":red_circle: title of b1" in by_header
    ep1 = [h for h in headers(posts) if h.endswith("title of a1")]
    assert ep1 == [":large_orange_circle: title of a1", ":white_check_mark: Resolved: title of a1"], "FIFO order"

    assert sorted(query(db, "SELECT alert_id, decision FROM alert_seen")) == [
        ("a1", "open"), ("a2", "suppress"), ("a3", "resolve"), ("b1", "open")]
    assert query(db, "SELECT DISTINCT state, attempts FROM alert_outbox") == [("sent", 1)]
    assert notifier.metrics.value("llmpulse_slack_posts_sent_total", webhook="default") == 3
    assert notifier.metrics.value("llmpulse_slack_alerts_total", decision="suppress") == 1


# ---------------------------------------------------------------- (b) outage, restart, recovery


def test_an_outage_delays_but_loses_and_duplicates_nothing(slack, notifiers, topic_factory, producer, db):
    topic = topic_factory("alerts")
    down = threading.Event()
    down.set()
    slack.answer["/team"] = lambda n: (503, {}, b"service unavailable") if down.is_set() else (200, {}, b"ok")
    group = f"test-slack-{uuid.uuid4().hex}"
    first = notifiers(topic, team_routing(slack), group_id=group)
    alerts = [alert(f"o{i}", f"ep-o{i}") for i in range(5)]
    produce(producer, topic, *alerts)
    wait_for(lambda: len(query(db, "SELECT 1 FROM alert_outbox WHERE state = 'pending'")) == 5, 30, "5 queued")
    wait_for(lambda: len(slack.to("/team")) >= 3, 15, "retries during the outage")
    assert slack.delivered() == []
    assert first.metrics.value("llmpulse_slack_posts_retried_total", webhook="default", cause="server_error") >= 3

    # The notifier restarts mid-outage: the queue is in PostgreSQL, not in its memory.
    first.stop()
    errors = query(db, "SELECT DISTINCT last_error FROM alert_outbox WHERE attempts > 0")
    assert errors == [("HTTP 503 service unavailable",)]
    second = notifiers(topic, team_routing(slack), group_id=group)
    wait_for(lambda: len(slack.to("/team")) >= 5, 15, "retries after the restart")
    down.clear()

    wait_for(lambda: len(slack.delivered()) >= 5, 20, "all 5 delivered after recovery")
    time.sleep(0.6)
    assert sorted(headers(slack.delivered())) == sorted(f":large_orange_circle: title of o{i}" for i in range(5))
    assert query(db, "SELECT DISTINCT state FROM alert_outbox") == [("sent",)]
    assert query(db, "SELECT count(*) FROM alert_seen") == [(5,)], "the restart consumed nothing twice"
    assert second.metrics.value("llmpulse_slack_outbox_pending", webhook="default") == 0


# ---------------------------------------------------------------- (c) 429 and Retry-After


def test_a_429_waits_at_least_retry_after(slack, notifiers, topic_factory, producer, db):
    topic = topic_factory("alerts", partitions=1)  # r1 is queued before r2
    slack.answer["/team"] = lambda n: (429, {"Retry-After": "1"}, b"rate_limited") if n == 0 else (200, {}, b"ok")
    notifier = notifiers(topic, team_routing(slack))
    produce(producer, topic, alert("r1", "ep-r1"), alert("r2", "ep-r2"))
    wait_for(lambda: len(slack.delivered()) == 2, 30, "both delivered")

    limited, *rest = slack.to("/team")
    assert limited.status == 429 and [r.status for r in rest] == [200, 200]
    assert rest[0].at - limited.at >= 1.0, "retried before Retry-After"
    assert rest[0].payload == limited.payload, "the rate-limited post goes first"
    assert rest[1].at - limited.at >= 1.0, "the webhook's other posts wait too"
    assert notifier.metrics.value("llmpulse_slack_posts_retried_total", webhook="default", cause="rate_limited") == 1
    assert query(db, "SELECT alert_id, attempts FROM alert_outbox ORDER BY id") == [("r1", 2), ("r2", 1)]


# ---------------------------------------------------------------- (d) a dead webhook


def test_a_404_webhook_fails_its_rows_once_and_others_are_still_served(
        slack, notifiers, topic_factory, producer, db, caplog):
    topic = topic_factory("alerts")
    slack.answer["/gone"] = lambda n: (404, {}, b"no_service")
    routing = Routing.from_config({"webhooks": {"broken": slack.url("/gone")},
                                   "routes": [{"project": "bad", "webhook": "broken"}]}, slack.url("/team"))
    with caplog.at_level(logging.ERROR, logger="sinks.slack.delivery"):
        notifier = notifiers(topic, routing)
        produce(producer, topic, alert("bad1", "ep-b1", project="bad"), alert("good1", "ep-g1", project="ok"),
                alert("bad2", "ep-b2", project="bad"), alert("good2", "ep-g2", project="ok"))
        wait_for(lambda: len(query(db, "SELECT 1 FROM alert_outbox WHERE state = 'failed'")) == 2, 30, "2 failed")
        wait_for(lambda: len(slack.delivered()) == 2, 15, "the good webhook served")
        time.sleep(1.0)  # nothing is retried

    assert len(slack.to("/gone")) == 1, "a dead URL is not hit again"
    # The two bad alerts are on different partitions: either may be queued first.
    failed = query(db, "SELECT alert_id, webhook, attempts, last_error FROM alert_outbox "
                       "WHERE state = 'failed' ORDER BY id")
    assert {f[0] for f in failed} == {"bad1", "bad2"}
    assert failed[0][1:] == ("broken", 1, "HTTP 404 no_service")
    assert failed[1][1:3] == ("broken", 0) and "rejected an earlier post (HTTP 404 no_service)" in failed[1][3]
    assert sorted(headers(slack.delivered())) == [":large_orange_circle: title of good1",
                                                  ":large_orange_circle: title of good2"]
    assert notifier.metrics.value("llmpulse_slack_posts_failed_total", webhook="broken", status="404") == 1
    assert notifier.metrics.value("llmpulse_slack_posts_failed_total", webhook="broken", status="broken") == 1
    logged = [r.getMessage() for r in caplog.records if "FAILED" in r.getMessage()]
    assert any("'broken'" in m and "no_service" in m for m in logged), logged
    assert all(slack.base_url not in m for m in caplog.messages), "webhook URLs never reach the log"


# ---------------------------------------------------------------- (e) redelivered alert ids


def test_a_redelivered_alert_is_not_posted_again(slack, notifiers, topic_factory, producer, db):
    topic = topic_factory("alerts")
    notifier = notifiers(topic, team_routing(slack))
    first = alert("d1", "ep-d1")
    produce(producer, topic, first, first)  # twice in one batch
    wait_for(lambda: len(slack.delivered()) == 1, 30, "the first post")
    produce(producer, topic, first, alert("d2", None))  # again later, then a marker
    wait_for(lambda: len(slack.delivered()) >= 2, 20, "the marker")
    time.sleep(0.5)
    assert headers(slack.delivered()) == [":large_orange_circle: title of d1", ":large_orange_circle: title of d2"]
    assert notifier.metrics.value("llmpulse_slack_alerts_total", decision="duplicate") == 2

    # A second consumer group replays the whole topic: every alert is a duplicate now.
    replay = notifiers(topic, team_routing(slack))
    wait_for(lambda: replay.metrics.value("llmpulse_slack_alerts_total", decision="duplicate") == 4, 30, "replay")
    time.sleep(0.5)
    assert len(slack.delivered()) == 2
    assert query(db, "SELECT alert_id, state FROM alert_outbox ORDER BY id") == [("d1", "sent"), ("d2", "sent")]


# ---------------------------------------------------------------- escalation and unrouted alerts


def test_escalation_goes_where_routes_say_and_the_resolve_to_both(slack, notifiers, topic_factory, producer, db):
    topic = topic_factory("alerts")
    routing = Routing.from_config({
        "webhooks": {"team": slack.url("/team"), "oncall": slack.url("/oncall")},
        "routes": [{"min_severity": "critical", "webhook": "oncall"}, {"project": "support-bot", "webhook": "team"}],
    })  # no default: other projects are unrouted
    notifier = notifiers(topic, routing)
    produce(producer, topic,
            alert("e1", "ep-e", severity="warning"),
            alert("e2", "ep-e", severity="critical", time=T0 + timedelta(minutes=3)),
            alert("e3", "ep-e", severity="critical", time=T0 + timedelta(minutes=4)),
            alert("e4", "ep-e", status="resolved", severity="info", time=T0 + timedelta(minutes=30)),
            alert("x1", "ep-x", severity="warning", project="elsewhere"))
    wait_for(lambda: len(query(db, "SELECT 1 FROM alert_seen")) == 5, 30, "5 alerts consumed")
    wait_for(lambda: len(slack.delivered("/team")) == 2 and len(slack.delivered("/oncall")) == 2, 15, "4 posts")
    time.sleep(0.5)

    assert headers(slack.delivered("/team")) == [":large_orange_circle: title of e1",
                                                  ":white_check_mark: Resolved: title of e1"]
    assert headers(slack.delivered("/oncall")) == [":red_circle: Escalated to CRITICAL: title of e2",
                                                    ":white_check_mark: Resolved: title of e1"]
    assert sorted(query(db, "SELECT alert_id, decision FROM alert_seen")) == [
        ("e1", "open"), ("e2", "escalate"), ("e3", "suppress"), ("e4", "resolve"), ("x1", "unrouted")]
    assert notifier.metrics.value("llmpulse_slack_alerts_total", decision="unrouted") == 1
