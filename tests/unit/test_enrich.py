"""Enricher: cohorts and variants per span, and the per-user cache behind them.

The cache must never change a result: every test here compares with what an
enricher without a cache (``user_cache_size=0``) computes, or checks that a
changed profile, project or experiment definition is seen on the next span.
"""
from __future__ import annotations

import copy
from datetime import UTC, datetime, timedelta

import pytest

from processors.cohorts import PRIMARY_ATTR, CohortConfig, CohortTagger
from processors.enrich import MISMATCH_ATTR, Enricher
from processors.experiments import prompt_ab
from processors.generator import TrafficModel
from schemas.samples import sample

T0 = datetime(2026, 1, 1, tzinfo=UTC)


@pytest.fixture
def enricher_factory():
    """``make(profiles, **kwargs)``: an enricher reading the ``profiles`` dict."""

    def make(profiles: dict, **kwargs) -> Enricher:
        return Enricher(CohortTagger(CohortConfig.load()), profiles.get, **kwargs)

    return make


def _profile(user_id: str, plan: str, at: datetime = T0) -> dict:
    return {"user_id": user_id, "plan": plan, "country": "DE", "updated_at": at}


def _child(user_id: str, project: str = "support-bot", **fields) -> dict:
    return sample("span", **{"user_id": user_id, "project": project, "experiments": {}, **fields})


def _root(user_id: str, project: str = "support-bot", **fields) -> dict:
    return _child(user_id, project, parent_span_id=None, **fields)


def _pro_only(key: str = "tone", **options):
    """Running for users on the pro plan only, everyone enrolled in treatment."""
    options = {"status": "running", "targeting": '{"plan": "pro"}', "weights": [0.0, 1.0], **options}
    return prompt_ab(key, "ml@example.com", "v1", "v2", **options)


def test_changed_profile_object_is_seen_on_the_next_span(enricher_factory):
    profiles = {"u1": _profile("u1", "free")}
    enricher = enricher_factory(profiles)
    enricher.set_experiment("tone", _pro_only())
    span, exposures = enricher.span(_child("u1"))
    assert span["attributes"][PRIMARY_ATTR] == "free"
    assert span["experiments"] == {} and exposures == []

    profiles["u1"] = _profile("u1", "pro", T0 + timedelta(seconds=1))  # the table stores a new object
    span, exposures = enricher.span(_child("u1"))
    assert span["attributes"][PRIMARY_ATTR] == "pro"
    assert span["experiments"] == {"tone": "treatment"}
    assert [(e["experiment_key"], e["variant"]) for e in exposures] == [("tone", "treatment")]


def test_new_profile_object_with_the_same_updated_at_is_seen(enricher_factory):
    # A re-sent profile with the same updated_at wins in the table (newer()
    # breaks ties for the incoming one): identity, not only the time, keys the cache.
    profiles = {"u1": _profile("u1", "free")}
    enricher = enricher_factory(profiles)
    enricher.set_experiment("tone", _pro_only())
    assert enricher.span(_child("u1"))[0]["experiments"] == {}
    profiles["u1"] = _profile("u1", "pro")
    assert enricher.span(_child("u1"))[0]["experiments"] == {"tone": "treatment"}


def test_profile_edited_in_place_with_a_new_updated_at_is_seen(enricher_factory):
    profile = _profile("u1", "free")
    enricher = enricher_factory({"u1": profile})
    enricher.set_experiment("tone", _pro_only())
    assert enricher.span(_child("u1"))[0]["experiments"] == {}
    profile.update(plan="pro", updated_at=T0 + timedelta(minutes=1))
    span = enricher.span(_child("u1"))[0]
    assert span["experiments"] == {"tone": "treatment"}
    assert span["attributes"][PRIMARY_ATTR] == "pro"


def test_deleted_profile_makes_the_user_unknown_again(enricher_factory):
    profiles = {"u1": _profile("u1", "pro")}
    enricher = enricher_factory(profiles)
    assert enricher.span(_child("u1"))[0]["attributes"][PRIMARY_ATTR] == "pro"
    del profiles["u1"]
    assert enricher.span(_child("u1"))[0]["attributes"][PRIMARY_ATTR] == "unknown"
    assert enricher.unknown_users == 1


def test_changed_experiment_definition_is_seen_on_the_next_span(enricher_factory):
    enricher = enricher_factory({"u1": _profile("u1", "pro")})
    enricher.set_experiment("tone", _pro_only())
    assert enricher.span(_child("u1"))[0]["experiments"] == {"tone": "treatment"}

    # Same key, everyone now in control.
    enricher.set_experiment("tone", prompt_ab("tone", "ml@example.com", "v1", "v2", status="running",
                                              weights=[1.0, 0.0]))
    assert enricher.span(_child("u1"))[0]["experiments"] == {"tone": "control"}

    enricher.set_experiment("tone", None)  # deleted
    assert enricher.span(_child("u1"))[0]["experiments"] == {}

    enricher.set_experiment("other", _pro_only("other"))  # a new one
    assert enricher.span(_child("u1"))[0]["experiments"] == {"other": "treatment"}


def test_stopped_experiment_stops_assigning(enricher_factory):
    enricher = enricher_factory({"u1": _profile("u1", "pro")})
    enricher.set_experiment("tone", _pro_only())
    assert enricher.span(_child("u1"))[0]["experiments"] == {"tone": "treatment"}
    enricher.set_experiment("tone", _pro_only(status="stopped"))
    assert enricher.span(_child("u1"))[0]["experiments"] == {}


def test_project_is_part_of_the_cached_result(enricher_factory):
    enricher = enricher_factory({"u1": _profile("u1", "pro")})
    enricher.set_experiment("tone", prompt_ab("tone", "ml@example.com", "v1", "v2", status="running",
                                              targeting='{"project": "support-bot"}'))
    assert "tone" in enricher.span(_child("u1", project="support-bot"))[0]["experiments"]
    assert enricher.span(_child("u1", project="search"))[0]["experiments"] == {}
    assert "tone" in enricher.span(_child("u1", project="support-bot"))[0]["experiments"]


def test_feedback_uses_current_profile_and_definitions(enricher_factory):
    profiles = {"u1": _profile("u1", "free")}
    enricher = enricher_factory(profiles)
    enricher.set_experiment("tone", _pro_only())
    fb = sample("feedback", user_id="u1", attributes={})
    assert "llmpulse.experiment.tone" not in enricher.feedback(fb)["attributes"]
    profiles["u1"] = _profile("u1", "pro", T0 + timedelta(seconds=1))
    assert enricher.feedback(fb)["attributes"]["llmpulse.experiment.tone"] == "treatment"


def test_cache_is_bounded_and_can_be_disabled(enricher_factory):
    profiles = {f"u{i}": _profile(f"u{i}", "pro") for i in range(5)}
    bounded = enricher_factory(profiles, user_cache_size=2)
    off = enricher_factory(profiles, user_cache_size=0)
    for e in (bounded, off):
        e.set_experiment("tone", _pro_only())
        for uid in profiles:
            e.span(_child(uid))
    assert len(bounded._users) == 2
    assert len(off._users) == 0
    with pytest.raises(ValueError, match="user_cache_size"):
        enricher_factory({}, user_cache_size=-1)


def test_cached_results_equal_uncached_on_generated_traffic(enricher_factory):
    spans = [s for trace in TrafficModel(seed=11, start=T0).traces(150) for s in trace]
    users = sorted({s["user_id"] for s in spans if s.get("user_id")})
    plans = ("free", "pro", "team")
    profiles = {u: _profile(u, plans[i % 3]) for i, u in enumerate(users)}
    cached, uncached = enricher_factory(profiles), enricher_factory(profiles, user_cache_size=0)
    for e in (cached, uncached):
        e.set_experiment("tone", prompt_ab("tone", "ml@example.com", "v1", "v2", status="running",
                                           targeting='{"plan": {"$in": ["pro", "team"]}}'))
        e.set_experiment("len", prompt_ab("len", "ml@example.com", "v1", "v2", status="running", coverage=0.5))
    for i, span in enumerate(spans):
        if i == len(spans) // 2:  # half way: profiles and a definition change
            for u in users[::2]:
                profiles[u] = _profile(u, "pro", T0 + timedelta(hours=1))
            for e in (cached, uncached):
                e.set_experiment("len", None)
        assert cached.span(copy.deepcopy(span)) == uncached.span(copy.deepcopy(span))
    assert cached.samples() == uncached.samples()
    assert cached.unknown_users == uncached.unknown_users


def test_mismatched_producer_variant_is_kept_and_flagged(enricher_factory):
    enricher = enricher_factory({"u1": _profile("u1", "pro")})
    enricher.set_experiment("tone", _pro_only())
    for _ in range(2):  # the second span takes the cached path
        span, _ = enricher.span(_child("u1", experiments={"tone": "control"}))
        assert span["experiments"] == {"tone": "control"}
        assert span["attributes"][MISMATCH_ATTR + "tone"] == "control != treatment"
    assert enricher.mismatches["tone"] == 2


@pytest.mark.parametrize("root", [True, False])
def test_copy_false_tags_the_span_itself_and_never_changes_nested_dicts(enricher_factory, root):
    enricher = enricher_factory({"u1": _profile("u1", "pro")})
    enricher.set_experiment("tone", _pro_only())
    attributes, experiments = {"http.route": "/v1/chat"}, {}
    span = (_root if root else _child)("u1", attributes=attributes, experiments=experiments)
    tagged, _ = enricher.span(span, copy=False)
    assert tagged is span
    assert tagged["attributes"][PRIMARY_ATTR] == "pro" and tagged["experiments"] == {"tone": "treatment"}
    assert attributes == {"http.route": "/v1/chat"} and experiments == {}


@pytest.mark.parametrize("root", [True, False])
def test_default_leaves_the_input_span_unchanged(enricher_factory, root):
    enricher = enricher_factory({"u1": _profile("u1", "pro")})
    enricher.set_experiment("tone", _pro_only())
    span = (_root if root else _child)("u1", attributes={"http.route": "/v1/chat"})
    before = copy.deepcopy(span)
    tagged, _ = enricher.span(span)
    assert span == before and tagged is not span
    assert tagged["attributes"][PRIMARY_ATTR] == "pro"


def test_root_spans_carry_every_cohort_and_children_only_the_primary(enricher_factory):
    enricher = enricher_factory({"u1": _profile("u1", "pro")})
    root = enricher.span(_root("u1", attributes={}))[0]["attributes"]
    child = enricher.span(_child("u1", attributes={}))[0]["attributes"]
    assert root["llmpulse.cohort.plan"] == "pro" and root[PRIMARY_ATTR] == "pro"
    assert child == {PRIMARY_ATTR: "pro"}
