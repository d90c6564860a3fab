"""The demo's scenario pieces: experiments agree with generated traffic; profiles are stable."""
from __future__ import annotations

from datetime import UTC, datetime

import pytest

from processors.demo_scenarios import experiment_for, incident_points, incident_spans, profile_for
from processors.experiments import assign
from processors.generator import DEFAULT_PROJECTS, TrafficModel


def test_generated_variants_are_what_the_running_definition_assigns():
    experiments = {p.name: experiment_for(p) for p in DEFAULT_PROJECTS}
    checked = 0
    for trace in TrafficModel(seed=3).traces(300):
        root = trace[0]
        exp = experiments[root["project"]]
        assert root["experiments"][exp.key] == assign(exp, root["user_id"]).variant
        checked += 1
    assert checked == 300


def test_profiles_are_stable_per_user_and_spread_over_plans():
    at = datetime(2026, 1, 1, tzinfo=UTC)
    assert profile_for("u-1", "p", at) == profile_for("u-1", "p", at)
    plans = {profile_for(f"u-{i}", "p", at)["plan"] for i in range(200)}
    assert plans == {"free", "pro", "enterprise"}


def test_incident_points_are_healthy_then_bursting():
    start = datetime(2026, 1, 2, tzinfo=UTC)
    points = incident_points("p", start, 5, history_hours=2)
    before = [p["value"] for p in points if p["window_start"] < start]
    assert len(before) == 120 and max(before) < 0.08
    assert [p["value"] for p in points if p["window_start"] >= start] == [0.21] * 5


def test_child_spans_carry_only_the_primary_cohort_and_roots_carry_all():
    from processors.cohorts import CohortConfig, CohortTagger
    from processors.enrich import Enricher
    from schemas.samples import sample

    profile = {"user_id": "u1", "plan": "pro", "country": "DE", "updated_at": datetime(2026, 1, 1, tzinfo=UTC)}
    enricher = Enricher(CohortTagger(CohortConfig.load()), {"u1": profile}.get)
    root, _ = enricher.span(sample("span", user_id="u1", parent_span_id=None))
    child, _ = enricher.span(sample("span", user_id="u1"))
    assert root["attributes"]["llmpulse.cohort.country"] == "DE" and root["attributes"]["llmpulse.cohort"] == "pro"
    assert child["attributes"]["llmpulse.cohort"] == "pro"
    assert not any(k.startswith("llmpulse.cohort.") for k in child["attributes"])


@pytest.mark.parametrize("seed", range(8))
def test_the_incident_root_cause_names_the_failing_model_not_a_variant(seed):
    """The demo's incident, tagged with every running experiment as ingest does, drills to model=gpt-4o."""
    from collections import Counter
    from datetime import timedelta

    from processors.aggregation.dimensions import DIMENSIONS, span_dimensions
    from sinks.anomaly_rootcause import explain_rows

    start = datetime(2026, 1, 2, 12, tzinfo=UTC)
    experiments = [experiment_for(p) for p in DEFAULT_PROJECTS]
    rows: dict[tuple, Counter] = {}
    for span in incident_spans("incident", start, 3, baseline_minutes=5, seed=seed):
        span["experiments"] = {e.key: assign(e, span["user_id"]).variant for e in experiments}
        minute = span["end_time"].replace(second=0, microsecond=0)
        counts = rows.setdefault((minute, span_dimensions(span)), Counter())
        counts["request_count"] += 1
        counts["error_count"] += span["status"] == "error"
    windows = [{"window_start": m, **dict(zip(DIMENSIONS, dims, strict=True)), **c} for (m, dims), c in rows.items()]
    episode = {"metric": "error_rate", "dimensions": {"project": "incident"}, "observed": 0.21, "expected": 0.02,
               "started_at": start, "window_start": start + timedelta(minutes=2), "window_seconds": 60}
    cause = explain_rows(episode, [w for w in windows if w["window_start"] < start],
                         [w for w in windows if w["window_start"] >= start]).causes[0]
    assert cause.filters == {"model": "gpt-4o"}
