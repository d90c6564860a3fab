"""Pure parts of the anomaly store: precedence, episode rows, alerts, and the root-cause tables."""
from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta

import pytest

from processors.aggregation.sketch import BinMapping, encode_sketch
from schemas.codec import decode, encode
from schemas.samples import sample
from sinks.anomaly_rootcause import explain_rows, metric_for, tabulate
from sinks.anomaly_store import (
    EVENT_COLUMNS,
    alert_id,
    build_alert,
    due_alerts,
    episode_row,
    newest,
    precedence,
)

T0 = datetime(2025, 6, 1, 12, tzinfo=UTC)
GRAFANA = "http://grafana.test"


def event(**overrides) -> dict:
    base = {"anomaly_id": "error_rate{project=a}|error_rate|1748779200", "series": "error_rate{project=a}",
            "metric": "error_rate", "dimensions": {"project": "a"}, "severity": "warning",
            "observed": 0.2, "expected": 0.02, "lower": 0.01, "upper": 0.04, "started_at": T0,
            "window_start": T0, "points": 1}
    return sample("anomaly", **{**base, **overrides})


def episode(alerts_sent=(), root_cause=None, recommendation=None, trace_links=(), **overrides) -> dict:
    row = dict(zip(EVENT_COLUMNS, episode_row(event(**overrides))))
    row["dimensions"] = json.loads(row["dimensions"])
    if "peak_severity" in overrides:
        row["peak_severity"] = overrides["peak_severity"]
    return {**row, "alerts_sent": list(alerts_sent), "root_cause": root_cause,
            "recommendation": recommendation, "trace_links": list(trace_links)}


# ---------------------------------------------------------------- precedence


@pytest.mark.parametrize(("older", "newer"), [
    ({"points": 1}, {"points": 2}),
    ({"points": 9, "window_start": T0}, {"points": 2, "window_start": T0 + timedelta(minutes=5)}),
    ({"points": 9, "window_start": T0 + timedelta(hours=1)}, {"status": "resolved", "points": 1}),
    ({"status": "resolved", "points": 9}, {"status": "false_positive", "points": 1}),
])
def test_newer_states_win_whatever_the_arrival_order(older, newer):
    a, b = event(**older), event(**newer)
    assert precedence(a) < precedence(b)
    assert newest([a, b])[a["anomaly_id"]] is b
    assert newest([b, a])[a["anomaly_id"]] is b, "a redelivered older event never wins"


def test_a_redelivery_is_a_tie_and_keeps_the_first():
    a, b = event(), event()
    assert precedence(a) == precedence(b)
    assert newest([a, b])[a["anomaly_id"]] is a


def test_newest_keeps_episodes_apart():
    got = newest([event(), event(anomaly_id="other", points=3), event(points=2)])
    assert {k: v["points"] for k, v in got.items()} == {event()["anomaly_id"]: 2, "other": 3}


# ---------------------------------------------------------------- rows


def test_closed_episodes_get_an_end_and_open_ones_none():
    row = dict(zip(EVENT_COLUMNS, episode_row(event(status="resolved", points=3,
                                                    window_start=T0 + timedelta(minutes=2)))))
    assert row["ended_at"] == T0 + timedelta(minutes=3)
    given = T0 + timedelta(minutes=10)
    assert dict(zip(EVENT_COLUMNS, episode_row(event(status="resolved", ended_at=given))))["ended_at"] == given
    assert dict(zip(EVENT_COLUMNS, episode_row(event(ended_at=given))))["ended_at"] is None


@pytest.mark.parametrize("bad", [{"observed": float("nan")}, {"upper": float("inf")}])
def test_non_finite_values_are_refused_by_name(bad):
    with pytest.raises(ValueError, match=next(iter(bad))):
        episode_row(event(**bad))


# ---------------------------------------------------------------- alerts


def test_firing_alert_carries_the_numbers_root_cause_and_links():
    ep = episode(root_cause="error rate +900% is fully explained by model=x",
                 recommendation="consider routing back to model=y (2.0%)",
                 trace_links=["http://grafana.test/d/llmpulse-traces/llmpulse-traces?var-trace_id=t1"])
    alert = build_alert(ep, "firing", "warning", GRAFANA)
    assert decode(encode("alert", alert), expected="alert") == alert, "a valid alert v2 record"
    assert alert["alert_id"] == alert_id(ep["anomaly_id"], "firing", "warning")
    assert (alert["episode_id"], alert["project"], alert["kind"], alert["time"]) == (
        ep["anomaly_id"], "a", "anomaly", T0)
    assert alert["facts"]["observed"] == "20.0%" and alert["facts"]["band"] == "1.0% – 4.0%"
    assert alert["facts"]["recommendation"] == ep["recommendation"]
    assert alert["facts"]["root_cause"].startswith("error rate +900%")
    assert "Root cause" not in alert["text"]  # a fact, rendered once by the notifier
    feed, traces, example = alert["links"]
    assert feed.startswith(f"{GRAFANA}/d/llmpulse-anomalies/") and "var-anomaly=error_rate" in feed
    assert "var-project=a" in traces and "var-errors_only=error" in traces
    assert example.endswith("var-trace_id=t1")


def test_resolved_alert_says_how_it_ended():
    ep = episode(status="false_positive", points=4, window_start=T0 + timedelta(minutes=3))
    alert = build_alert(ep, "resolved", "critical", GRAFANA)
    assert alert["title"].startswith("Marked a false positive: error_rate")
    assert alert["time"] == T0 + timedelta(minutes=4) and alert["facts"]["duration"] == "0:04:00"
    assert alert["alert_id"].endswith("|resolved|critical")


def test_one_firing_alert_per_severity_rise_and_one_resolved():
    ep = episode()
    [first] = due_alerts(ep, GRAFANA)
    assert (first["status"], first["severity"]) == ("firing", "warning")
    ep["alerts_sent"] = [first["alert_id"]]
    assert due_alerts(ep, GRAFANA) == []
    ep["peak_severity"] = "critical"
    [rise] = due_alerts(ep, GRAFANA)
    assert (rise["status"], rise["severity"]) == ("firing", "critical")
    ep["alerts_sent"].append(rise["alert_id"])
    ep.update(severity="info")  # calmer again: nothing new
    assert due_alerts(ep, GRAFANA) == []
    ep.update(status="resolved", ended_at=T0 + timedelta(minutes=9))
    [done] = due_alerts(ep, GRAFANA)
    assert (done["status"], done["severity"]) == ("resolved", "critical")
    ep["alerts_sent"].append(done["alert_id"])
    ep.update(status="false_positive")
    assert due_alerts(ep, GRAFANA) == [], "one resolved alert per episode, however it closed"


def test_an_episode_seen_only_closed_fires_then_resolves():
    assert [a["status"] for a in due_alerts(episode(status="resolved"), GRAFANA)] == ["firing", "resolved"]


def test_a_false_positive_before_any_alert_alerts_nobody():
    assert due_alerts(episode(status="false_positive"), GRAFANA) == []


# ---------------------------------------------------------------- root-cause tables


def test_metric_names_map_to_rootcause_metrics():
    assert metric_for("error_rate")[0].name == "error_rate"
    assert metric_for("latency_p99_ms")[0].proxy == "of requests over the baseline p99"
    assert metric_for("cost_per_request")[0].components == ("cost", "costed")
    assert metric_for("thumbs_up_rate")[0].lower_is_better is False
    assert metric_for("nonsense") is None


def _row(model, version, n, errors, latency, at=T0):
    m = BinMapping(0.01)
    return {"project": "a", "model": model, "provider": "openai", "prompt_version": version, "kind": "llm",
            "cohort": "free", "variant": "none", "request_count": n, "error_count": errors,
            "cost_usd": n * 0.001, "cost_count": n, "sketch": encode_sketch({m.key(latency): n}, 0, m)}


def test_latency_is_explained_by_requests_over_the_baseline_quantile():
    baseline = [_row(mo, v, 50, 1, 400.0) for mo in ("x", "y") for v in ("v1", "v2")] * 60
    observed = [_row("x", v, 50, 1, 2000.0) for v in ("v1", "v2")] + [_row("y", v, 50, 1, 400.0) for v in ("v1", "v2")]
    ep = {"metric": "latency_p95_ms", "dimensions": {"project": "a"}, "observed": 2000.0, "expected": 400.0,
          "started_at": T0, "window_start": T0, "window_seconds": 60}
    rc = explain_rows(ep, baseline, observed)
    assert rc.found and rc.causes[0].filters == {"model": "x"}
    assert rc.text.startswith("p95 latency +400% is fully explained by model=x")
    table = tabulate(observed, ["model"], threshold=400.0)
    assert table["model"]["x"]["slow"] == 100 and table["model"]["y"]["slow"] == 0


def test_count_baselines_are_scaled_to_the_anomalous_period():
    baseline = [_row("x", "v1", 10, 0, 100.0), _row("y", "v1", 10, 0, 100.0)] * 60
    observed = [_row("x", "v1", 10, 0, 100.0), _row("y", "v1", 1, 0, 100.0)]
    ep = {"metric": "request_count", "dimensions": {"project": "a"}, "observed": 11.0, "expected": 20.0,
          "started_at": T0, "window_start": T0, "window_seconds": 60}
    rc = explain_rows(ep, baseline, observed)
    assert rc.causes[0].filters == {"model": "y"} and rc.causes[0].baseline == pytest.approx(10.0)


def test_no_windows_yet_is_not_an_answer_and_unknown_metrics_say_why():
    ep = {"metric": "error_rate", "dimensions": {}, "observed": 1, "expected": 0, "started_at": T0,
          "window_start": T0, "window_seconds": 60}
    assert explain_rows(ep, [_row("x", "v1", 1, 0, 1.0)], []).found is False
    unknown = explain_rows({**ep, "metric": "late_events"}, [], [])
    assert unknown.found and unknown.text is None and "late_events" in unknown.note
