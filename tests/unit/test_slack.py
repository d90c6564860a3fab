"""The Slack notifier's pure parts: rendering, routing, episode decisions, HTTP answers, backoff."""
from __future__ import annotations

import json
import random
import threading
from datetime import UTC, datetime, timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from schemas.samples import sample
from sinks.slack.blocks import Opening, render_escalation, render_firing, render_resolved
from sinks.slack.episodes import EpisodeState, decide
from sinks.slack.routing import Routing, SlackRoutesError, Webhook
from sinks.slack.webhook import RateLimiter, backoff_delay, classify, parse_retry_after, post_json

T0 = datetime(2025, 6, 1, 12, 0, tzinfo=UTC)
FACTS = {"observed": "5020 ms", "expected": "1480 ms", "band": "1210-1750 ms",
         "root_cause": "model gpt-4o-mini in eu-west", "recommendation": "fail over to us-east"}


def alert(**overrides):
    base = {"alert_id": "a1", "episode_id": "ep1", "time": T0, "facts": FACTS,
            "links": ["http://grafana:3000/d/llmpulse-overview?viewPanel=4", "http://grafana:3000/explore?traceId=ab"]}
    return sample("alert", **{**base, **overrides})


def texts(message) -> str:
    return json.dumps(message["blocks"], ensure_ascii=False)


# ---------------------------------------------------------------- rendering


@pytest.mark.parametrize(("severity", "emoji"), [("info", ":large_blue_circle:"), ("warning", ":large_orange_circle:"),
                                                 ("critical", ":red_circle:")])
def test_header_carries_the_severity_emoji_and_title(severity, emoji):
    message = render_firing(alert(severity=severity, title="cost up 3x"))
    assert message["blocks"][0] == {"type": "header", "text": {"type": "plain_text", "text": f"{emoji} cost up 3x",
                                                                "emoji": True}}
    assert message["text"] == f"[{severity}] cost up 3x"


def test_firing_shows_what_changed_numbers_root_cause_and_links():
    message = render_firing(alert())
    sections = [b for b in message["blocks"] if b["type"] == "section"]
    assert "*What changed:* `latency_ms{model=gpt-4o-mini,project=support-bot}`" in sections[0]["text"]["text"]
    fields = [f["text"] for f in sections[1]["fields"]]
    assert fields == ["*Observed*\n5020 ms", "*Expected*\n1480 ms", "*Normal band*\n1210-1750 ms"]
    assert sections[2]["text"]["text"] == "*Root cause:* model gpt-4o-mini in eu-west"
    assert sections[3]["text"]["text"] == "*Recommendation:* fail over to us-east"
    (actions,) = [b for b in message["blocks"] if b["type"] == "actions"]
    assert [(e["text"]["text"], e["url"]) for e in actions["elements"]] == [
        ("Grafana panel", "http://grafana:3000/d/llmpulse-overview?viewPanel=4"),
        ("Trace", "http://grafana:3000/explore?traceId=ab"),
    ]
    assert len({e["action_id"] for e in actions["elements"]}) == 2, "action_ids must be unique in a block"


def test_context_names_severity_kind_project_and_time():
    (context,) = [b for b in render_firing(alert(severity="critical"))["blocks"] if b["type"] == "context"]
    assert context["elements"][0]["text"] == "*CRITICAL* · anomaly · project `support-bot` · 2025-06-01 12:00 UTC"


def test_alert_without_facts_or_links_has_no_empty_blocks():
    message = render_firing(alert(facts={}, links=[], series=None, dimensions={}))
    assert [b["type"] for b in message["blocks"]] == ["header", "context", "section"]


def test_slack_limits_are_respected():
    message = render_firing(alert(title="x" * 400, text="y" * 5000, facts={"observed": "z" * 3000},
                                  links=[f"https://e.example/{i}" for i in range(9)] + ["javascript:alert(1)"]))
    header = message["blocks"][0]["text"]["text"]
    assert len(header) == 150 and header.endswith("…")
    for block in message["blocks"]:
        if block["type"] == "section" and "text" in block:
            assert len(block["text"]["text"]) <= 3000
        for field in block.get("fields", []):
            assert len(field["text"]) <= 2000
    (actions,) = [b for b in message["blocks"] if b["type"] == "actions"]
    assert len(actions["elements"]) == 5
    assert all(e["url"].startswith("https://") for e in actions["elements"])


def test_markdown_is_converted_and_control_characters_escaped():
    message = render_firing(alert(text="**p95** <b> & [runbook](https://r.example/x)", series=None, dimensions={}))
    assert message["blocks"][2]["text"]["text"] == "*p95* &lt;b&gt; &amp; <https://r.example/x|runbook>"


def test_resolved_references_the_opening_title_and_duration():
    resolved = alert(alert_id="a9", status="resolved", title="latency back to normal",
                     time=T0 + timedelta(hours=1, minutes=5), text="p95 1500 ms")
    message = render_resolved(resolved, Opening("latency up 3.4x", T0))
    assert message["blocks"][0]["text"]["text"] == ":white_check_mark: Resolved: latency up 3.4x"
    summary = message["blocks"][1]["text"]["text"]
    assert summary == "*Resolved after 1 h 05 min* (firing since 2025-06-01 12:00 UTC)\np95 1500 ms"
    assert message["text"] == "[resolved] latency up 3.4x"


def test_resolved_without_a_known_opening_says_so():
    message = render_resolved(alert(status="resolved", title="t"), None)
    assert message["blocks"][0]["text"]["text"] == ":white_check_mark: Resolved: t"
    assert "not seen by this notifier" in message["blocks"][1]["text"]["text"]


def test_escalation_names_the_new_severity_and_the_opening():
    message = render_escalation(alert(severity="critical", title="latency up 6x"), Opening("latency up 3x", T0))
    assert message["blocks"][0]["text"]["text"] == ":red_circle: Escalated to CRITICAL: latency up 6x"
    assert "Open since 2025-06-01 12:00 UTC as “latency up 3x”" in texts(message)


# ---------------------------------------------------------------- routing

ROUTES = {
    "webhooks": {"oncall": "https://hooks.example/oncall", "support": {"url": "https://hooks.example/support"},
                 "exp": {"url_env": "EXP_HOOK"}},
    "routes": [
        {"min_severity": "critical", "webhook": "oncall"},
        {"project": ["support-bot", "faq-bot"], "min_severity": "warning", "webhook": "support"},
        {"kind": "experiment", "webhook": "exp"},
    ],
}


def routed(routing, **fields):
    return routing.route({"severity": "info", "kind": "anomaly", "project": None, **fields})


def test_first_matching_rule_wins_and_default_catches_the_rest():
    routing = Routing.from_config(ROUTES, "https://hooks.example/all", environ={"EXP_HOOK": "https://hooks.example/e"})
    assert routed(routing, severity="critical", project="support-bot") == "oncall"
    assert routed(routing, severity="warning", project="faq-bot") == "support"
    assert routed(routing, severity="info", project="support-bot") == "default"  # below the rule's minimum
    assert routed(routing, kind="experiment", project="other") == "exp"
    assert routed(routing, project=None) == "default"
    assert routing.url("exp") == "https://hooks.example/e"
    assert routing.url("nope") is None


def test_no_default_means_unrouted():
    routing = Routing.from_config(ROUTES, None, environ={"EXP_HOOK": "https://hooks.example/e"})
    assert routed(routing, project="elsewhere") is None


def test_file_default_wins_over_the_environment_url():
    routing = Routing.from_config({"webhooks": {"team": "https://hooks.example/t"}, "default": "team"},
                                  "https://hooks.example/env")
    assert routed(routing) == "team"


def test_webhook_repr_hides_the_url():
    assert "secret" not in repr(Webhook("x", "https://hooks.example/secret"))
    assert "secret" not in repr(Routing.from_config({}, "https://hooks.example/secret"))


@pytest.mark.parametrize(("config", "message"), [
    ({"webhooks": {"a": "https://h/a"}, "routes": [{"webhook": "a", "min_severty": "info"}]},
     r"routes\[0\]: unknown key\(s\) min_severty"),
    ({"webhooks": {"a": "https://h/a"}, "routes": [{"webhook": "a", "min_severity": "urgent"}]},
     r"routes\[0\].min_severity: 'urgent' is not one of info, warning, critical"),
    ({"webhooks": {"a": "https://h/a"}, "routes": [{"webhook": "b"}]},
     r"routes\[0\].webhook: 'b' is not a configured webhook \(known: a\)"),
    ({"webhooks": {"a": "https://h/a"}, "routes": [{"webhook": "a", "kind": "anomalies"}]},
     r"routes\[0\].kind: 'anomalies' is not one of"),
    ({"webhooks": {"a": "https://h/a"}, "routes": [{"webhook": "a", "project": []}]},
     r"routes\[0\].project: must be a non-empty string or list"),
    ({"webhooks": {"a": "https://h/a"}, "default": "z"}, r"default: 'z' is not a configured webhook"),
    ({"webhooks": {"a": {"url_env": "UNSET_HOOK"}}}, r"webhooks.a: environment variable 'UNSET_HOOK' is not set"),
    ({"webhooks": {}}, r"no webhook configured"),
    ({"routes": {"webhook": "a"}}, r"routes: must be a list"),
    (["not", "an", "object"], r"must hold a JSON object"),
])
def test_bad_routes_are_rejected_with_the_place_named(config, message):
    with pytest.raises(SlackRoutesError, match=message):
        Routing.from_config(config, None, environ={})


def test_a_bad_url_is_reported_without_echoing_it():
    with pytest.raises(SlackRoutesError, match=r"webhooks.a: the URL must be an http\(s\) URL") as info:
        Routing.from_config({"webhooks": {"a": "hooks.slack.com/services/T/B/sekrit"}}, None)
    assert "sekrit" not in str(info.value)


def test_load_reads_a_file_and_names_it_in_errors(tmp_path):
    good = tmp_path / "routes.json"
    good.write_text(json.dumps({"webhooks": {"a": "https://h/a"}, "default": "a"}))
    assert routed(Routing.load(good)) == "a"
    bad = tmp_path / "bad.json"
    bad.write_text("{not json")
    with pytest.raises(SlackRoutesError, match="bad.json is not valid JSON"):
        Routing.load(bad)
    with pytest.raises(SlackRoutesError, match="cannot read the routes file .*missing.json"):
        Routing.load(tmp_path / "missing.json")
    with pytest.raises(SlackRoutesError, match="LLMPULSE_SLACK_WEBHOOK_URL or LLMPULSE_SLACK_ROUTES"):
        Routing.load(None, None)


# ---------------------------------------------------------------- episode decisions


def state(**overrides) -> EpisodeState:
    base = dict(episode_id="ep1", status="open", severity="warning", title="latency up", opened_at=T0,
                resolved_at=None, webhooks=("team",))
    return EpisodeState(**{**base, **overrides})


def test_first_firing_opens_the_episode():
    d = decide(None, alert(), "team")
    assert (d.action, d.targets) == ("open", ("team",))
    assert d.state == state(title=alert()["title"])


@pytest.mark.parametrize("severity", ["info", "warning"])
def test_a_later_firing_at_the_same_or_lower_severity_is_not_posted(severity):
    d = decide(state(), alert(alert_id="a2", severity=severity), "team")
    assert (d.action, d.targets, d.state) == ("suppress", (), state())


def test_a_rising_severity_is_posted_once_more_where_the_routes_say():
    d = decide(state(), alert(alert_id="a2", severity="critical"), "oncall")
    assert (d.action, d.targets) == ("escalate", ("oncall",))
    assert d.state.severity == "critical" and d.state.webhooks == ("team", "oncall")
    assert d.state.title == "latency up", "the opening title is kept for the resolve"
    assert decide(d.state, alert(alert_id="a3", severity="critical"), "oncall").action == "suppress"


def test_resolve_goes_to_every_webhook_that_saw_the_episode():
    d = decide(state(webhooks=("team", "oncall")), alert(alert_id="a4", status="resolved", severity="info"), "other")
    assert (d.action, d.targets) == ("resolve", ("team", "oncall"))
    assert d.state.status == "resolved" and d.state.resolved_at == T0


def test_a_second_resolve_is_not_posted():
    closed = state(status="resolved", resolved_at=T0)
    assert decide(closed, alert(alert_id="a5", status="resolved"), "team").action == "suppress"


def test_resolve_of_an_unknown_episode_is_posted_not_dropped():
    d = decide(None, alert(status="resolved"), "team")
    assert (d.action, d.targets, d.state.status) == ("resolve", ("team",), "resolved")


def test_firing_after_the_resolve_reopens_and_an_older_one_is_a_late_redelivery():
    closed = state(status="resolved", resolved_at=T0 + timedelta(minutes=10))
    assert decide(closed, alert(alert_id="late", time=T0 + timedelta(minutes=5)), "team").action == "suppress"
    again = decide(closed, alert(alert_id="new", time=T0 + timedelta(minutes=30)), "team")
    assert (again.action, again.state.status, again.state.opened_at) == ("open", "open", T0 + timedelta(minutes=30))


def test_an_alert_without_episode_is_its_own_episode():
    d = decide(None, alert(episode_id=None, alert_id="solo"), "team")
    assert d.state.episode_id == "solo"


def test_an_unrouted_opening_has_no_targets():
    d = decide(None, alert(), None)
    assert d.posts and d.targets == ()


# ---------------------------------------------------------------- answers, Retry-After, backoff


@pytest.mark.parametrize(("status", "outcome"), [
    (200, "sent"), (204, "sent"), (429, "rate_limited"), (500, "retry"), (503, "retry"), (408, "retry"),
    (400, "failed"), (403, "failed"), (404, "failed"), (410, "failed"), (302, "failed"),
])
def test_classify(status, outcome):
    assert classify(status, "body").outcome == outcome


def test_only_url_level_errors_mark_the_webhook_broken():
    assert classify(404, "no_service").broken_webhook
    assert classify(403, "invalid_token").broken_webhook
    assert classify(410, "channel_is_archived").broken_webhook
    assert not classify(400, "invalid_blocks").broken_webhook
    assert not classify(503).broken_webhook


@pytest.mark.parametrize(("header", "seconds"), [
    ("1", 1.0), ("0", 0.0), ("-5", 0.0), ("120", 120.0), ("1e9", 900.0), ("nan", None), ("", None), ("abc", None),
    ("Sun, 01 Jun 2025 12:02:00 GMT", 120.0), ("Sun, 01 Jun 2025 11:00:00 GMT", 0.0),
])
def test_parse_retry_after(header, seconds):
    assert parse_retry_after(header, now=T0) == seconds


def test_backoff_grows_is_capped_and_jittered():
    rng = random.Random(1)
    delays = [[backoff_delay(a, 1.0, 60.0, rng) for a in range(1, 12)] for _ in range(50)]
    for run in delays:
        for attempt, delay in enumerate(run, start=1):
            nominal = min(60.0, 2.0 ** (attempt - 1))
            assert nominal / 2 <= delay <= nominal
    assert len({round(run[5], 6) for run in delays}) > 40, "jitter spreads retries"


def test_rate_limiter_spaces_posts_per_webhook_and_honours_holds():
    now = [0.0]
    limiter = RateLimiter(1.0, clock=lambda: now[0])
    limiter.note_post("a")
    assert limiter.wait_s("a") == 1.0 and limiter.wait_s("b") == 0.0
    limiter.hold("a", 5.0)
    now[0] = 2.0
    assert limiter.wait_s("a") == 3.0
    limiter.hold("a", 1.0)  # a shorter hold does not shorten a longer one
    assert limiter.wait_s("a") == 3.0
    now[0] = 10.0
    assert limiter.wait_s("a") == 0.0


# ---------------------------------------------------------------- the POST itself


class _Scripted(BaseHTTPRequestHandler):
    answers: dict[str, tuple[int, dict[str, str], bytes]] = {}
    bodies: list[bytes] = []

    def do_POST(self):  # noqa: N802 - http.server API
        self.bodies.append(self.rfile.read(int(self.headers["Content-Length"])))
        status, headers, body = self.answers[self.path]
        self.send_response(status)
        for key, value in headers.items():
            self.send_header(key, value)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args):
        pass


@pytest.fixture
def scripted_server():
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Scripted)
    _Scripted.bodies = []
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()
    server.server_close()


def test_post_json_reads_status_body_and_retry_after(scripted_server):
    _Scripted.answers = {
        "/ok": (200, {}, b"ok"),
        "/slow": (429, {"Retry-After": "7"}, b"rate_limited"),
        "/gone": (404, {}, b"no_service"),
        "/moved": (302, {"Location": "/ok"}, b""),
        "/down": (503, {}, b""),
    }
    assert post_json(scripted_server + "/ok", {"text": "hi"}).outcome == "sent"
    assert json.loads(_Scripted.bodies[-1]) == {"text": "hi"}
    slow = post_json(scripted_server + "/slow", {})
    assert (slow.outcome, slow.retry_after_s) == ("rate_limited", 7.0)
    gone = post_json(scripted_server + "/gone", {})
    assert (gone.outcome, gone.reason, gone.broken_webhook) == ("failed", "HTTP 404 no_service", True)
    moved = post_json(scripted_server + "/moved", {})
    assert moved.outcome == "failed" and "redirects" in moved.reason
    assert len(_Scripted.bodies) == 4, "a redirect is not followed"
    assert post_json(scripted_server + "/down", {}).outcome == "retry"


def test_post_json_connection_errors_are_retried():
    result = post_json("http://127.0.0.1:1/nothing-listens", {}, timeout_s=2)
    assert result.outcome == "retry" and result.status is None and "connection error" in result.reason
