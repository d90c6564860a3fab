"""Experiment results without services: verdict paths, rows, decision alerts, the CLI's rendering."""
from __future__ import annotations

import json
from dataclasses import asdict
from datetime import UTC, datetime, timedelta

import pytest

from processors.experiments.results import (
    METRIC_SOURCES,
    DesignError,
    ExperimentDesign,
    VariantSums,
    compute_results,
)
from processors.experiments.results_alerts import PreviousDecision, decision_alerts
from processors.experiments.results_cli import render_json, render_text
from processors.experiments.definitions import KNOWN_METRICS
from schemas.codec import decode, encode

AT = datetime(2025, 6, 1, 12, tzinfo=UTC)


def arm(n: int, thumbs_up: float = 0.10, error_rate: float = 0.01, latency: float = 900.0,
        latency_sd: float = 400.0) -> VariantSums:
    """Sums of ``n`` LLM calls (half of them with a thumb) with the given means."""
    thumbs = n // 2
    return VariantSums(
        requests=n, errors=round(n * error_rate),
        latency_ms_sum=n * latency, latency_ms_sq_sum=(n - 1) * latency_sd**2 + n * latency**2,
        thumbs_count=thumbs, thumbs_up=round(thumbs * thumbs_up),
    )


def design(**kw) -> ExperimentDesign:
    base = dict(key="tone", variants=(("control", 0.5), ("friendly", 0.5)), primary="thumbs_up_ratio",
                guardrails=("error_rate", "latency_p95_ms"), min_sample_size=100, project="support-bot")
    return ExperimentDesign(**{**base, **kw})


USERS = {"control": 5000, "friendly": 5000}


# ---------------------------------------------------------------- verdict paths


def test_keep_running_says_how_many_units_remain():
    r = compute_results(design(), {"control": arm(2000), "friendly": arm(2000, thumbs_up=0.105)}, USERS, AT)
    assert r.decision == r.verdict == "keep_running"
    assert r.analysis.units_remaining > 0
    assert f"{r.analysis.units_remaining:,} more units needed" in r.reason
    assert all(row.units_remaining == r.analysis.units_remaining for row in r.rows)


def test_ship_the_variant_that_wins_on_the_primary_metric():
    r = compute_results(design(), {"control": arm(40000), "friendly": arm(40000, thumbs_up=0.125)}, USERS, AT)
    assert (r.decision, r.verdict, r.verdict_variant) == ("ship", "ship", "friendly")
    row = r.row("thumbs_up_ratio", "friendly")
    assert row.lift_rel == pytest.approx(0.25, abs=1e-9)
    assert row.lift_abs == pytest.approx(0.025, abs=1e-9)
    assert row.lift_rel_low < row.lift_rel < row.lift_rel_high
    # The confidence sequence is wider than the fixed-horizon interval: the price of peeking.
    assert row.seq_lift_low < row.lift_rel_low and row.seq_lift_high > row.lift_rel_high
    assert row.significant and row.direction == "better" and row.chance_to_beat_control > 0.99
    assert r.row("thumbs_up_ratio", "control").lift_rel is None


def test_no_difference_when_the_interval_excludes_the_mde():
    r = compute_results(design(), {"control": arm(400000), "friendly": arm(400000)}, USERS, AT)
    assert r.decision == "no_difference", r.reason
    assert "no variant moves thumbs_up_ratio by 5% or more" in r.reason


def test_srm_invalidates_a_winner():
    sums = {"control": arm(40000), "friendly": arm(40000, thumbs_up=0.125)}
    r = compute_results(design(), sums, {"control": 5000, "friendly": 4500}, AT)
    assert (r.decision, r.verdict, r.verdict_variant) == ("srm", "invalid", None)
    assert r.srm.flagged and r.reason.startswith("sample ratio mismatch")
    assert all(row.srm_flagged and row.srm_p_value < 0.001 for row in r.rows)
    # The winner's numbers are still there to look at, just not acted upon.
    assert r.row("thumbs_up_ratio", "friendly").significant


def test_guardrail_breach_overrides_a_winner():
    sums = {"control": arm(40000), "friendly": arm(40000, thumbs_up=0.125, latency=1100.0)}
    r = compute_results(design(), sums, USERS, AT)
    assert (r.decision, r.verdict) == ("guardrail_breached", "invalid")
    assert "latency_p95_ms" in r.reason
    row = r.row("latency_p95_ms", "friendly")
    assert row.direction == "worse" and row.chance_to_beat_control < 0.01


def test_a_verdict_waits_for_the_minimum_users_per_variant():
    sums = {"control": arm(40000), "friendly": arm(40000, thumbs_up=0.125)}
    r = compute_results(design(min_sample_size=6000), sums, USERS, AT)
    assert (r.decision, r.verdict_variant) == ("keep_running", None)
    assert "would be ship" in r.reason and "5,000 users of the 6,000" in r.reason


def test_holm_corrects_the_primary_metric_across_variants():
    three = design(variants=(("control", 1 / 3), ("b", 1 / 3), ("c", 1 / 3)))
    sums = {"control": arm(30000), "b": arm(30000, thumbs_up=0.108), "c": arm(30000, thumbs_up=0.104)}
    r = compute_results(three, sums, {"control": 3000, "b": 3000, "c": 3000}, AT)
    b, c = r.row("thumbs_up_ratio", "b"), r.row("thumbs_up_ratio", "c")
    assert b.p_holm == pytest.approx(2 * b.p_value) and c.p_holm >= c.p_value
    assert b.seq_p_holm >= b.seq_p_value


def test_metrics_without_sufficient_statistics_are_reported_not_tested():
    d = design(primary="conversion", guardrails=(), secondary=("tokens_per_request",))
    r = compute_results(d, {"control": arm(1000), "friendly": arm(1000)}, USERS, AT)
    assert r.decision == "keep_running" and "conversion" in r.reason
    row = r.row("tokens_per_request", "friendly")
    assert row.n is None and row.p_value is None and "not tested" in row.note


def test_every_known_metric_has_a_source():
    assert set(METRIC_SOURCES) == set(KNOWN_METRICS)


def test_no_data_at_all_is_keep_running_not_a_crash():
    r = compute_results(design(), {}, {}, AT)
    assert r.decision == "keep_running" and r.srm.p_value == 1.0
    assert all(row.n == 0 for row in r.rows)


@pytest.mark.parametrize(("row", "message"), [
    ({"variants": [{"name": "a", "weight": 1.0}]}, "at least two variants"),
    ({"variants": "a,b"}, "variants must be"),
    ({"primary_metric": "revenue"}, "unknown metric"),
    ({"guardrail_metrics": "error_rate"}, "guardrail_metrics must be a list"),
])
def test_bad_definitions_are_design_errors(row, message):
    base = {"key": "t", "primary_metric": "rating", "min_sample_size": 10,
            "variants": [{"name": "a", "weight": 0.5}, {"name": "b", "weight": 0.5}]}
    with pytest.raises(DesignError, match=message):
        ExperimentDesign.from_row({**base, **row})


def test_a_zero_weight_is_a_design_error_not_a_crash():
    d = design(variants=(("control", 1.0), ("friendly", 0.0)))
    with pytest.raises(DesignError, match="weight"):
        compute_results(d, {}, USERS, AT)


def test_bad_sums_are_rejected():
    with pytest.raises(ValueError, match="requests"):
        VariantSums(requests=-1)
    assert VariantSums(requests=None).requests == 0.0


# ---------------------------------------------------------------- decision alerts

WIN = {"control": arm(40000), "friendly": arm(40000, thumbs_up=0.125)}


def test_alert_on_a_new_winner_then_silence():
    r = compute_results(design(), WIN, USERS, AT)
    [alert] = decision_alerts(r, previous=PreviousDecision("keep_running", None))
    assert decode(encode("alert", alert), expected="alert")["episode_id"] == "experiment:tone:ship"
    assert alert["status"] == "firing" and alert["severity"] == "info" and alert["project"] == "support-bot"
    assert alert["facts"]["verdict"] == "ship" and alert["facts"]["metric"] == "thumbs_up_ratio"
    assert alert["facts"]["lift"].startswith("+25.0%")
    assert "var-experiment=tone" in alert["links"][0]
    assert decision_alerts(r, previous=PreviousDecision("ship", "friendly")) == []


def test_no_alert_for_decisions_nobody_acts_on():
    r = compute_results(design(), {"control": arm(2000), "friendly": arm(2000)}, USERS, AT)
    assert r.decision == "keep_running"
    assert decision_alerts(r, previous=None) == []
    assert decision_alerts(r, previous=PreviousDecision("no_difference", None)) == []


def test_srm_resolves_the_winner_episode_and_fires_its_own():
    r = compute_results(design(), WIN, {"control": 5000, "friendly": 4500}, AT)
    alerts = decision_alerts(r, previous=PreviousDecision("ship", "friendly"))
    assert [(a["episode_id"], a["status"], a["severity"]) for a in alerts] == [
        ("experiment:tone:ship", "resolved", "info"),
        ("experiment:tone:srm", "firing", "critical"),
    ]
    assert alerts[0]["alert_id"] != alerts[1]["alert_id"]


def test_a_different_winner_is_a_change_in_the_same_episode():
    r = compute_results(design(), WIN, USERS, AT)
    [alert] = decision_alerts(r, previous=PreviousDecision("ship", "other"))
    assert (alert["episode_id"], alert["status"]) == ("experiment:tone:ship", "firing")


def test_guardrail_alert_names_the_breached_metric():
    sums = {"control": arm(40000), "friendly": arm(40000, latency=1100.0)}
    r = compute_results(design(), sums, USERS, AT)
    [alert] = decision_alerts(r, previous=None)
    assert alert["episode_id"] == "experiment:tone:guardrail_breached"
    assert alert["facts"]["metric"] == "latency_p95_ms" and alert["severity"] == "critical"


# ---------------------------------------------------------------- CLI rendering


def _as_db_rows(result) -> list[dict]:
    return [asdict(r) for r in result.rows]


def test_text_report_has_the_verdict_srm_and_every_metric():
    r = compute_results(design(secondary=("tokens_per_request",)), WIN, USERS, AT)
    text = render_text(_as_db_rows(r))
    assert "Verdict: SHIP friendly" in text
    assert "friendly beats control" in text
    assert "SRM: ok" in text and "control 5,000 / friendly 5,000" in text
    for metric in ("thumbs_up_ratio", "error_rate", "latency_p95_ms", "tokens_per_request"):
        assert metric in text
    assert "+25.0%" in text and "note: not tested" in text


def test_json_report_round_trips():
    r = compute_results(design(), WIN, {"control": 5000, "friendly": 4500}, AT + timedelta(minutes=1))
    doc = json.loads(render_json(_as_db_rows(r)))
    assert doc["decision"] == "srm" and doc["srm_flagged"] is True
    assert doc["computed_at"] == "2025-06-01T12:01:00+00:00"
    assert len(doc["rows"]) == len(r.rows) and "decision" not in doc["rows"][0]
