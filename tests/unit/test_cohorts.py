"""Cohort config validation, predicate operators, tagging, profile-table rules."""
from __future__ import annotations

import copy
import json
import time
from datetime import date, datetime, timedelta, timezone

import pytest

from processors.cohorts import (
    ATTR_PREFIX,
    PRIMARY_ATTR,
    UNKNOWN,
    VERSION_ATTR,
    CohortConfig,
    CohortConfigError,
    CohortTagger,
    ProfileStore,
    apply_update,
    newer,
    primary_cohort,
)
from schemas.samples import sample

UTC = timezone.utc


@pytest.fixture
def config_factory():
    """Build a config from cohort entries; ``plan`` is added unless present."""

    def make(*cohorts, version=1, **top):
        entries = list(cohorts)
        if "primary" not in top and not any(c.get("name") == "plan" for c in entries if isinstance(c, dict)):
            entries.insert(0, {"name": "plan", "by": "plan"})
        return CohortConfig.from_dict({"version": version, "cohorts": entries, **top}, where="test.json")

    return make


@pytest.fixture
def member(config_factory):
    """``member(predicate, profile)`` -> the predicate cohort's value."""

    def check(where, profile):
        tagger = CohortTagger(config_factory({"name": "c", "where": where}), cache_size=0)
        return tagger.cohorts_for(profile)["c"]

    return check


def profile(**overrides):
    return sample("user_profile", **overrides)


# -- validation -------------------------------------------------------------------


@pytest.mark.parametrize(
    ("doc", "expected"),
    [
        ({"cohorts": [{"name": "plan", "by": "plan"}]}, "'version' is required"),
        ({"version": "3", "cohorts": [{"name": "plan", "by": "plan"}]}, "'version' must be an integer >= 1"),
        ({"version": True, "cohorts": [{"name": "plan", "by": "plan"}]}, "'version' must be an integer"),
        ({"version": 0, "cohorts": [{"name": "plan", "by": "plan"}]}, "'version' must be an integer >= 1"),
        ({"version": 1, "cohorts": []}, "'cohorts' must be a non-empty list"),
        ({"version": 1, "cohort": []}, "unknown key(s) 'cohort'"),
        ([1, 2], "expected a JSON object"),
        ({"version": 1, "cohorts": [{"name": "plan", "by": "plan"}, {"name": "plan", "by": "country"}]},
         "cohort 'plan' (cohorts[1]): duplicate name, first used by cohorts[0]"),
        ({"version": 1, "cohorts": [{"name": "tier", "by": "plan"}]},
         "primary cohort 'plan' is not configured; add it, or set 'primary' to one of: tier"),
        ({"version": 1, "primary": "tier", "cohorts": [{"name": "plan", "by": "plan"}]},
         "primary cohort 'tier' is not configured; set 'primary' to one of: plan"),
    ],
)
def test_document_errors_name_the_problem(doc, expected):
    with pytest.raises(CohortConfigError) as e:
        CohortConfig.from_dict(doc, where="test.json")
    assert str(e.value).startswith("test.json: ")
    assert expected in str(e.value)


@pytest.mark.parametrize(
    ("entry", "expected"),
    [
        ({"name": "x", "by": "tier"}, "cohort 'x' (cohorts[1]): by: unknown field 'tier'; known: user_id"),
        ({"name": "x", "by": "feature_flags"}, "by: unknown field 'feature_flags': name an entry"),
        ({"name": "x", "by": "plan.sub"}, "by: unknown field 'plan.sub'"),
        ({"name": "x", "by": "signup_time", "bucket": "fortnight"},
         "cohort 'x' (cohorts[1]): bucket: unknown bucket 'fortnight'; known: day, week, month, quarter, year"),
        ({"name": "x", "by": "signup_time"}, "bucket: 'signup_time' is a time: give a bucket"),
        ({"name": "x", "by": "plan", "bucket": "month"}, "bucket: 'bucket' applies to times"),
        ({"name": "x", "by": "user_id"}, "by: one cohort per user is no cohort"),
        ({"name": "x", "by": "feature_flags.a", "values": ["true"]}, "values: 'values' applies to string fields"),
        ({"name": "x", "by": "plan", "values": []}, "values: 'values' must be a non-empty list"),
        ({"name": "x", "by": "plan", "where": {"field": "plan", "exists": True}}, "give exactly one of 'by'"),
        ({"name": "x"}, "cohort 'x' (cohorts[1]): give exactly one of 'by'"),
        ({"name": "x", "by": "plan", "bukcet": "month"}, "cohort 'x' (cohorts[1]): unknown key(s) 'bukcet'"),
        ({"name": "x", "where": {"field": "plan", "eq": "a"}, "bucket": "day"},
         "bucket: 'bucket' applies to dimension cohorts"),
        ({"name": "bad name", "by": "plan"}, "cohorts[1]: name: name must be 1-64 characters"),
        ({"by": "plan"}, "cohorts[1]: name: name must be"),
        ("plan", "cohorts[1]: expected an object"),
        # predicates
        ({"name": "x", "where": {"field": "plan", "gtee": 1}},
         "cohort 'x' (cohorts[1]): where: unknown operator 'gtee'; known: after, before, eq"),
        ({"name": "x", "where": {"all": [{"field": "plan", "eq": "a"}, {"field": "plan", "gte": 1}]}},
         "where.all[1]: operator 'gte' does not apply to 'plan' (a string); use one of: eq, ne, in, exists"),
        ({"name": "x", "where": {"field": "seats", "gte": 1}}, "where.field: unknown field 'seats'"),
        ({"name": "x", "where": {"field": "plan"}}, "where: a condition on 'plan' needs exactly one operator, got none"),
        ({"name": "x", "where": {"field": "plan", "eq": "a", "ne": "b"}}, "needs exactly one operator, got 'eq', 'ne'"),
        ({"name": "x", "where": {"all": []}}, "where.all: 'all' needs a non-empty list"),
        ({"name": "x", "where": {"any": {"field": "plan", "eq": "a"}}}, "where.any: 'any' needs a non-empty list"),
        ({"name": "x", "where": {"not": [1]}}, "where.not: expected an object"),
        ({"name": "x", "where": {"nor": []}}, "where: expected one of all, any, not, or field + operator"),
        ({"name": "x", "where": {"field": "signup_time", "after": "2026-13-01"}},
         "where.after: 'after' needs an ISO date or time"),
        ({"name": "x", "where": {"field": "signup_time", "after": 20260101}}, "where.after: 'after' needs an ISO"),
        ({"name": "x", "where": {"field": "properties.seats", "gte": "50"}}, "where.gte: 'gte' needs a number"),
        ({"name": "x", "where": {"field": "properties.seats", "gte": True}}, "where.gte: 'gte' needs a number"),
        ({"name": "x", "where": {"field": "feature_flags.b", "is": "yes"}}, "where.is: 'is' needs true or false"),
        ({"name": "x", "where": {"field": "feature_flags.b", "eq": True}}, "operator 'eq' does not apply"),
        ({"name": "x", "where": {"field": "plan", "exists": 1}}, "where.exists: 'exists' needs true or false"),
        ({"name": "x", "where": {"field": "plan", "eq": 5}}, "where.eq: 'plan' compares with a string, got 5"),
        ({"name": "x", "where": {"field": "country", "in": ["DE", 1]}}, "where.in[1]: 'country' compares with a string"),
        ({"name": "x", "where": {"field": "country", "in": []}}, "where.in: 'in' needs a non-empty list"),
    ],
)
def test_cohort_errors_name_the_cohort_and_the_part(config_factory, entry, expected):
    with pytest.raises(CohortConfigError) as e:
        config_factory(entry)
    assert str(e.value).startswith("test.json: ")
    assert expected in str(e.value)


def test_deep_predicate_is_rejected_not_a_recursion_error(config_factory):
    where: dict = {"field": "plan", "eq": "pro"}
    for _ in range(40):
        where = {"not": where}
    with pytest.raises(CohortConfigError, match="nested deeper than 32 levels"):
        config_factory({"name": "deep", "where": where})


def test_load_errors_name_the_file(tmp_path):
    bad = tmp_path / "cohorts.json"
    bad.write_text("{not json")
    with pytest.raises(CohortConfigError, match=r"cohorts\.json: not valid JSON"):
        CohortConfig.load(bad)
    with pytest.raises(CohortConfigError, match="cannot read cohort config"):
        CohortConfig.load(tmp_path / "missing.json")


def test_shipped_default_loads_and_is_documented():
    cfg = CohortConfig.load()
    assert cfg.source == "processors/data/cohorts.json"
    assert cfg.primary == "plan" and cfg.names[0] == "plan"
    assert isinstance(cfg.version, int) and cfg.version >= 1
    assert all(c.description for c in cfg.cohorts)
    cohorts = CohortTagger(cfg).cohorts_for(profile())
    assert set(cohorts) == set(cfg.names)
    assert cohorts["plan"] == "pro" and cohorts["signup_month"] == "2024-11" and cohorts["eu"] == "true"


def test_user_file_replaces_the_default(tmp_path):
    path = tmp_path / "mine.json"
    path.write_text(json.dumps({"version": 7, "primary": "tier",
                                "cohorts": [{"name": "tier", "by": "plan"}]}))
    cfg = CohortConfig.load(path)
    assert (cfg.version, cfg.names, cfg.primary, cfg.source) == (7, ("tier",), "tier", str(path))


# -- operators ----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("where", "yes", "no"),
    [
        ({"field": "plan", "eq": "enterprise"}, {"plan": "enterprise"}, {"plan": "Enterprise"}),
        ({"field": "plan", "ne": "free"}, {"plan": "pro"}, {"plan": "free"}),
        ({"field": "country", "in": ["DE", "FR"]}, {"country": "FR"}, {"country": "US"}),
        ({"field": "user_id", "in": ["qa-1"]}, {"user_id": "qa-1"}, {"user_id": "u1"}),
        ({"field": "project", "eq": "support-bot"}, {"project": "support-bot"}, {"project": None}),
        ({"field": "properties.seats", "gte": 50}, {"properties": {"seats": "50"}}, {"properties": {"seats": "49.9"}}),
        ({"field": "properties.seats", "gt": 50}, {"properties": {"seats": " 51 "}}, {"properties": {"seats": "50"}}),
        ({"field": "properties.seats", "lt": 10}, {"properties": {"seats": "9"}}, {"properties": {"seats": "ten"}}),
        ({"field": "properties.seats", "lte": 10}, {"properties": {"seats": "1e1"}}, {"properties": {"seats": "nan"}}),
        ({"field": "properties.seats", "eq": 50}, {"properties": {"seats": "50.0"}}, {"properties": {"seats": "5O"}}),
        ({"field": "properties.seats", "ne": 50}, {"properties": {"seats": "49"}}, {"properties": {"seats": "x"}}),
        ({"field": "properties.lang", "eq": "de"}, {"properties": {"lang": "de"}}, {"properties": {"lang": "DE"}}),
        ({"field": "properties.lang", "ne": "de"}, {"properties": {"lang": "en"}}, {"properties": {"lang": "de"}}),
        ({"field": "properties.tier", "in": ["gold", 3]}, {"properties": {"tier": "3.0"}}, {"properties": {"tier": "2"}}),
        ({"field": "properties.tier", "in": ["gold", 3]}, {"properties": {"tier": "gold"}}, {"properties": {"tier": "Gold"}}),
        ({"field": "properties.trial_end", "after": "2026-01-01"},
         {"properties": {"trial_end": "2026-02-01"}}, {"properties": {"trial_end": "soon"}}),
        ({"field": "signup_time", "after": "2026-01-01"},
         {"signup_time": datetime(2026, 1, 1, 0, 0, 1, tzinfo=UTC)}, {"signup_time": datetime(2026, 1, 1, tzinfo=UTC)}),
        ({"field": "signup_time", "before": "2026-01-01T00:00:00Z"},
         {"signup_time": datetime(2025, 12, 31, 23, 59, tzinfo=UTC)}, {"signup_time": datetime(2026, 1, 1, tzinfo=UTC)}),
        # a +02:00 bound is 22:00 UTC the day before
        ({"field": "signup_time", "after": "2026-01-01T00:00:00+02:00"},
         {"signup_time": datetime(2025, 12, 31, 22, 30, tzinfo=UTC)}, {"signup_time": datetime(2025, 12, 31, 21, 0, tzinfo=UTC)}),
        ({"field": "updated_at", "after": "2026-01-01"}, {"updated_at": 1_800_000_000_000_000}, {"updated_at": 0}),
        ({"field": "feature_flags.beta", "is": True}, {"feature_flags": {"beta": True}}, {"feature_flags": {"beta": False}}),
        ({"field": "feature_flags.beta", "is": False}, {"feature_flags": {"beta": False}}, {"feature_flags": {}}),
        ({"field": "feature_flags.beta", "exists": True}, {"feature_flags": {"beta": False}}, {"feature_flags": {}}),
        ({"field": "country", "exists": False}, {"country": None}, {"country": "DE"}),
        ({"field": "country", "exists": True}, {"country": "DE"}, {"country": ""}),
        ({"not": {"field": "plan", "eq": "free"}}, {"plan": "pro"}, {"plan": "free"}),
        ({"all": [{"field": "plan", "eq": "pro"}, {"field": "country", "eq": "DE"}]},
         {"plan": "pro", "country": "DE"}, {"plan": "pro", "country": "FR"}),
        ({"any": [{"field": "plan", "eq": "enterprise"}, {"field": "properties.seats", "gte": 50}]},
         {"plan": "free", "properties": {"seats": "80"}}, {"plan": "free", "properties": {"seats": "8"}}),
        ({"all": [{"field": "plan", "eq": "pro"}]}, {"plan": "pro"}, {"plan": "free"}),
    ],
)
def test_every_operator(member, where, yes, no):
    assert member(where, yes) == "true"
    assert member(where, no) == "false"


@pytest.mark.parametrize(
    "where",
    [
        {"field": "plan", "eq": "pro"},
        {"field": "plan", "ne": "pro"},
        {"field": "country", "in": ["DE"]},
        {"field": "properties.seats", "gte": 0},
        {"field": "properties.seats", "ne": 5},
        {"field": "signup_time", "before": "2100-01-01"},
        {"field": "feature_flags.beta", "is": False},
        {"field": "country", "exists": True},
    ],
)
def test_a_condition_on_a_missing_field_is_false(member, where):
    assert member(where, {}) == "false"
    assert member(where, {"properties": None, "feature_flags": None}) == "false"


def test_not_inverts_a_missing_field(member):
    # Two-valued logic, as documented: "not in EU" includes unknown countries.
    assert member({"not": {"field": "country", "in": ["DE"]}}, {"country": None}) == "true"


def test_values_of_the_wrong_type_count_as_missing(member, config_factory):
    assert member({"field": "country", "in": ["DE"]}, {"country": ["DE"]}) == "false"
    assert member({"field": "feature_flags.b", "is": True}, {"feature_flags": ["b"]}) == "false"
    assert member({"field": "signup_time", "after": "2020-01-01"}, {"signup_time": {"x": 1}}) == "false"
    tagger = CohortTagger(config_factory({"name": "m", "by": "signup_time", "bucket": "month"}))
    assert tagger.cohorts_for({"plan": 5, "signup_time": "not a date"}) == {"plan": "5", "m": UNKNOWN}


# -- dimensions and buckets ----------------------------------------------------------


@pytest.mark.parametrize(
    ("bucket", "when", "expected"),
    [
        ("month", datetime(2026, 3, 31, 23, 59, tzinfo=UTC), "2026-03"),
        # 23:30 at -02:00 is already April in UTC
        ("month", datetime(2026, 3, 31, 23, 30, tzinfo=timezone(timedelta(hours=-2))), "2026-04"),
        # 00:30 at +02:00 on April 1st is still March in UTC
        ("month", datetime(2026, 4, 1, 0, 30, tzinfo=timezone(timedelta(hours=2))), "2026-03"),
        ("month", datetime(2026, 3, 1), "2026-03"),  # naive: taken as UTC
        ("month", 1_772_323_200_000_000, "2026-03"),  # 2026-03-01T00:00Z in micros (raw Avro)
        ("month", "2026-03-15T10:00:00Z", "2026-03"),
        ("month", date(2026, 3, 15), "2026-03"),
        ("day", datetime(2026, 3, 5, tzinfo=UTC), "2026-03-05"),
        ("week", datetime(2026, 1, 1, tzinfo=UTC), "2026-W01"),
        ("week", datetime(2027, 1, 1, tzinfo=UTC), "2026-W53"),
        ("quarter", datetime(2026, 7, 1, tzinfo=UTC), "2026-Q3"),
        ("year", datetime(2026, 12, 31, tzinfo=UTC), "2026"),
        ("month", None, UNKNOWN),
    ],
)
def test_time_buckets_are_utc(config_factory, bucket, when, expected):
    tagger = CohortTagger(config_factory({"name": "signup", "by": "signup_time", "bucket": bucket}))
    assert tagger.cohorts_for({"user_id": "u", "updated_at": 1, "signup_time": when})["signup"] == expected


def test_dimension_values(config_factory):
    tagger = CohortTagger(config_factory(
        {"name": "flag:new_checkout", "by": "feature_flags.new_checkout"},
        {"name": "lang", "by": "properties.language"},
        {"name": "size", "by": "properties.company_size", "values": ["1-50", "51-200"]},
        {"name": "country", "by": "country"},
        {"name": "trial_month", "by": "properties.trial_end", "bucket": "month"},
    ), cache_size=0)
    c = tagger.cohorts_for({"plan": "pro", "country": "", "feature_flags": {"new_checkout": False},
                            "properties": {"language": "de", "company_size": "5000+", "trial_end": "2026-05-02"}})
    assert c == {"plan": "pro", "flag:new_checkout": "false", "lang": "de", "size": "other",
                 "country": UNKNOWN, "trial_month": "2026-05"}
    c = tagger.cohorts_for({"plan": "pro", "feature_flags": {"new_checkout": True}, "properties": {"company_size": "1-50"}})
    assert c["flag:new_checkout"] == "true" and c["size"] == "1-50" and c["lang"] == UNKNOWN
    assert tagger.cohorts_for({"plan": "x" * 500})["plan"] == "x" * 128


def test_unknown_user_gets_unknown_everywhere(config_factory):
    cfg = config_factory({"name": "eu", "where": {"field": "country", "in": ["DE"]}},
                         {"name": "m", "by": "signup_time", "bucket": "month"})
    tagger = CohortTagger(cfg)
    assert tagger.cohorts_for(None) == {"plan": UNKNOWN, "eu": UNKNOWN, "m": UNKNOWN}
    # an empty profile is a profile: its predicates are plain non-members
    assert tagger.cohorts_for({}) == {"plan": UNKNOWN, "eu": "false", "m": UNKNOWN}
    tagged = tagger.tag_span(sample("span", user_id=None), None)
    assert tagged["attributes"][PRIMARY_ATTR] == UNKNOWN
    assert tagged["attributes"][ATTR_PREFIX + "eu"] == UNKNOWN


# -- tagging -------------------------------------------------------------------------


def test_tag_span_adds_attributes_without_mutating_the_input():
    tagger = CohortTagger(CohortConfig.load())
    span, prof = sample("span"), profile()
    before_span, before_prof = copy.deepcopy(span), copy.deepcopy(prof)
    tagged = tagger.tag_span(span, prof)
    assert span == before_span and prof == before_prof
    assert tagged is not span and tagged["attributes"] is not span["attributes"]
    attrs = tagged["attributes"]
    assert attrs["http.route"] == "/v1/chat"  # producer attributes kept
    assert attrs[ATTR_PREFIX + "plan"] == "pro" and attrs[PRIMARY_ATTR] == "pro"
    assert attrs[ATTR_PREFIX + "signup_month"] == "2024-11"
    assert attrs[VERSION_ATTR] == str(tagger.config.version)
    assert all(isinstance(v, str) for v in attrs.values())  # attributes is map<string>
    assert {k: v for k, v in tagged.items() if k != "attributes"} == {
        k: v for k, v in span.items() if k != "attributes"}
    # a second call (cache hit) gives an equal, independent result
    again = tagger.tag_span(span, prof)
    assert again == tagged and again["attributes"] is not tagged["attributes"]


def test_tag_feedback_and_missing_attributes():
    tagger = CohortTagger(CohortConfig.load())
    fb = sample("feedback")
    tagged = tagger.tag_feedback(fb, profile(plan="enterprise"))
    assert fb["attributes"] == {"surface": "web-widget"}
    assert tagged["attributes"]["surface"] == "web-widget"
    assert tagged["attributes"][PRIMARY_ATTR] == "enterprise"
    assert tagged["attributes"][ATTR_PREFIX + "power_users"] == "true"
    assert tagger.tag_span({"span_id": "x"}, None)["attributes"][PRIMARY_ATTR] == UNKNOWN
    assert tagger.tag_span({"attributes": None}, None)["attributes"][PRIMARY_ATTR] == UNKNOWN


def test_producer_cannot_spoof_cohort_attributes():
    tagger = CohortTagger(CohortConfig.load())
    span = sample("span", attributes={PRIMARY_ATTR: "enterprise", ATTR_PREFIX + "plan": "enterprise"})
    attrs = tagger.tag_span(span, profile(plan="free"))["attributes"]
    assert attrs[PRIMARY_ATTR] == "free" and attrs[ATTR_PREFIX + "plan"] == "free"


def test_mutating_results_does_not_poison_the_cache():
    tagger = CohortTagger(CohortConfig.load())
    prof = profile()
    tagger.cohorts_for(prof)["plan"] = "hacked"
    tagger.attributes_for(prof)[PRIMARY_ATTR] = "hacked"
    tagger.tag_span(sample("span"), prof)["attributes"][PRIMARY_ATTR] = "hacked"
    tagger.cohorts_for(None)["plan"] = "hacked"
    assert tagger.cohorts_for(prof)["plan"] == "pro"
    assert tagger.attributes_for(prof)[PRIMARY_ATTR] == "pro"
    assert tagger.cohorts_for(None)["plan"] == UNKNOWN


def test_primary_cohort_is_configurable(config_factory):
    cfg = config_factory({"name": "plan", "by": "plan"},
                         {"name": "eu", "where": {"field": "country", "in": ["DE"]}}, primary="eu")
    tagger = CohortTagger(cfg)
    cohorts = tagger.cohorts_for({"plan": "pro", "country": "DE"})
    assert tagger.primary_cohort(cohorts) == "true"
    assert primary_cohort(cohorts) == "pro"  # module helper defaults to "plan"
    assert tagger.attributes_for({"country": "FR"})[PRIMARY_ATTR] == "false"


def test_version_is_stamped_on_every_row(config_factory):
    old = CohortTagger(config_factory(version=3))
    new = CohortTagger(config_factory({"name": "country", "by": "country"}, version=4))
    span, prof = sample("span"), profile()
    a, b = old.tag_span(span, prof)["attributes"], new.tag_span(span, prof)["attributes"]
    assert (a[VERSION_ATTR], b[VERSION_ATTR]) == ("3", "4")
    assert ATTR_PREFIX + "country" not in a and b[ATTR_PREFIX + "country"] == "DE"
    assert old.attributes_for(None)[VERSION_ATTR] == "3"


def test_cache_follows_profile_updates_and_is_bounded():
    tagger = CohortTagger(CohortConfig.load(), cache_size=2)
    t0 = datetime(2026, 1, 1, tzinfo=UTC)
    v1 = profile(user_id="u1", plan="free", updated_at=t0)
    v2 = profile(user_id="u1", plan="pro", updated_at=t0 + timedelta(seconds=1))
    assert tagger.cohorts_for(v1)["plan"] == "free"
    assert tagger.cohorts_for(v2)["plan"] == "pro"  # new updated_at -> new key
    assert tagger.cohorts_for(v1)["plan"] == "free"
    assert tagger.cache_info()[:2] == (1, 2)
    for i in range(10):
        tagger.cohorts_for(profile(user_id=f"u{i + 10}"))
    assert tagger.cache_info().currsize == 2
    # profiles without user_id or updated_at are computed, never cached
    tagger.cohorts_for({"plan": "a"})
    assert tagger.cohorts_for({"plan": "b"})["plan"] == "b"
    # an unhashable updated_at is computed rather than raising
    assert tagger.cohorts_for({"user_id": "u", "updated_at": ["x"], "plan": "c"})["plan"] == "c"
    with pytest.raises(ValueError):
        CohortTagger(CohortConfig.load(), cache_size=-1)


# -- profile table ----------------------------------------------------------------------


def test_newer_keeps_the_latest_and_ties_go_to_incoming():
    t = datetime(2026, 1, 1, tzinfo=UTC)
    assert newer(None, {"updated_at": t})
    assert newer({"updated_at": t}, {"updated_at": t + timedelta(microseconds=1)})
    assert not newer({"updated_at": t}, {"updated_at": t - timedelta(microseconds=1)})
    assert newer({"updated_at": t, "plan": "a"}, {"updated_at": t, "plan": "b"})
    # aware datetimes and raw micros compare as the same instant
    micros = (t - datetime(1970, 1, 1, tzinfo=UTC)) // timedelta(microseconds=1)
    assert newer({"updated_at": t}, {"updated_at": micros})
    assert not newer({"updated_at": t}, {"updated_at": micros - 1})
    # unreadable timestamps: the stored one loses, an incoming one never wins
    assert newer({"updated_at": None}, {"updated_at": t})
    assert not newer({"updated_at": t}, {})
    assert newer(None, {})


def test_apply_update_and_tombstones():
    table: dict = {}
    t = datetime(2026, 1, 1, tzinfo=UTC)
    assert apply_update(table, "u1", {"plan": "free", "updated_at": t})
    assert apply_update(table, "u1", {"plan": "pro", "updated_at": t + timedelta(days=1)})
    assert not apply_update(table, "u1", {"plan": "stale", "updated_at": t})
    assert table["u1"]["plan"] == "pro"
    assert apply_update(table, "u1", None) and "u1" not in table
    assert not apply_update(table, "u1", None)  # deleting twice is a no-op
    # after a tombstone any profile is accepted again, even an older one
    assert apply_update(table, "u1", {"plan": "free", "updated_at": t})


def test_profile_store_is_lru_bounded():
    store = ProfileStore(max_users=2)
    t = datetime(2026, 1, 1, tzinfo=UTC)
    store.apply("a", {"updated_at": t})
    store.apply("b", {"updated_at": t})
    assert store.get("a") is not None  # touch a: b is now least recent
    store.apply("c", {"updated_at": t})
    assert "a" in store and "b" not in store and "c" in store and len(store) == 2
    assert not store.apply("a", {"updated_at": t - timedelta(1)})
    assert store.apply("a", None) and store.get("a") is None
    with pytest.raises(ValueError):
        ProfileStore(max_users=0)


# -- speed ---------------------------------------------------------------------------------


def test_tagging_is_fast():
    tagger = CohortTagger(CohortConfig.load())
    t0 = datetime(2026, 1, 1, tzinfo=UTC)
    profiles = [profile(user_id=f"u{i}", plan=("free", "pro", "enterprise")[i % 3],
                        properties={"seats": str(i)}, updated_at=t0 + timedelta(seconds=i))
                for i in range(500)]
    span = sample("span")
    n = 20_000
    start = time.perf_counter()
    for i in range(n):
        tagger.tag_span(span, profiles[i % 500])
    per_s = n / (time.perf_counter() - start)
    # ~1M/s on a laptop core; the bound only catches a lost cache or an
    # accidentally quadratic path, not a slow CI machine.
    assert per_s > 50_000, f"{per_s:.0f} spans/s"
    uncached = CohortTagger(CohortConfig.load(), cache_size=0)
    start = time.perf_counter()
    for i in range(2_000):
        uncached.cohorts_for(profiles[i % 500])
    assert 2_000 / (time.perf_counter() - start) > 10_000
