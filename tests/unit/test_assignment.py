"""Experiment assignment (processors/experiments/assignment.py).

GrowthBook's published vectors, stickiness, namespaces, coverage, targeting,
the distribution of users over variants, the numpy batch path, and -- when the
``growthbook`` package is installed -- cross-checks against its SDK on many
random inputs.
"""
from __future__ import annotations

import json
import pickle
import random
import subprocess
import sys
from dataclasses import replace

import numpy as np
import pytest
from scipy.stats import chisquare

from processors.experiments import (
    Assignment,
    CompiledExperiment,
    Experiment,
    ExperimentError,
    Namespace,
    Reason,
    Targeting,
    TargetingError,
    Variant,
    assign,
    assign_many,
    bucket_hash,
    bucket_ranges,
    choose_variation,
    fnv1a32,
    in_namespace,
    prompt_ab,
    temperature,
)

HASH_VECTORS = [
    ("", "a", 1, 0.22),
    ("", "b", 1, 0.077),
    ("", "ab", 1, 0.946),
    ("", "def", 1, 0.652),
    ("", "123", 1, 0.011),
    ("seed", "a", 2, 0.0505),
    ("seed", "b", 2, 0.2696),
    ("seed", "ab", 2, 0.9316),
    ("seed", "def", 2, 0.2054),
    ("seed", "123", 2, 0.7884),
]


def experiment_factory(**overrides) -> Experiment:
    """A valid running experiment with three variants; override any field."""
    fields = dict(
        key="exp-1",
        owner="ml@example.com",
        hypothesis="Something improves.",
        primary_metric="thumbs_up_ratio",
        variants=[Variant("control", 0.2, {"v": "a"}), Variant("b", 0.3, {"v": "b"}),
                  Variant("c", 0.5, {"v": "c"})],
        status="running",
        seed="exp-1-seed",
    )
    fields.update(overrides)
    return Experiment(**fields).validate()


def user_ids(n: int, seed: int = 7, prefix: str = "user-") -> list[str]:
    rng = random.Random(seed)
    return [f"{prefix}{rng.getrandbits(48):x}" for _ in range(n)]


def random_text(rng: random.Random) -> str:
    """ASCII, Latin, CJK, astral (surrogate pairs) and long strings."""
    alphabet = rng.choice([
        "abcdefghijklmnopqrstuvwxyz0123456789-_",
        "aé€ß中文",
        "x😀🎉",
    ])
    return "".join(rng.choice(alphabet) for _ in range(rng.choice([0, 1, 5, 12, 40, 70])))


# ------------------------------------------------------------------ hashing


@pytest.mark.parametrize(("seed", "value", "version", "expected"), HASH_VECTORS)
def test_growthbook_hash_vectors(seed, value, version, expected):
    assert bucket_hash(seed, value, version) == expected


def test_fnv_hashes_utf16_code_units_like_javascript():
    def reference(units):
        h = 0x811C9DC5
        for u in units:
            h = ((h ^ u) * 0x01000193) & 0xFFFFFFFF
        return h

    assert fnv1a32("é") == reference([0xE9])  # not UTF-8's c3 a9
    assert fnv1a32("😀") == reference([0xD83D, 0xDE00])  # a surrogate pair
    long = "x" * 100 + "é" * 50
    assert fnv1a32(long) == reference([ord(c) for c in long])
    assert fnv1a32("a" * 33) == reference([97] * 33)  # past the unmasked fast path


def test_unknown_hash_version_raises():
    with pytest.raises(ValueError, match="unknown hash version 3"):
        bucket_hash("s", "u", 3)


# ------------------------------------------------------------------- ranges


def flat(ranges):
    return [x for r in ranges for x in r]


def test_bucket_ranges_scale_each_weight_by_coverage():
    ranges = bucket_ranges(3, 0.2, [0.2, 0.3, 0.5])
    assert flat(ranges) == pytest.approx(flat([(0, 0.04), (0.2, 0.26), (0.5, 0.6)]))


def test_bucket_ranges_equal_weights_and_clamped_coverage():
    assert flat(bucket_ranges(4)) == pytest.approx(flat([(0, 0.25), (0.25, 0.5), (0.5, 0.75), (0.75, 1)]))
    assert bucket_ranges(2, 1.5) == bucket_ranges(2, 1.0)
    assert bucket_ranges(2, -1) == [(0.0, 0.0), (0.5, 0.5)]


@pytest.mark.parametrize("weights", [[0.5, 0.4], [0.5, 0.5, 0.0, 0.1], [1.2, -0.2], [float("nan"), 1]])
def test_bucket_ranges_reject_bad_weights(weights):
    with pytest.raises(ValueError):
        bucket_ranges(2, 1, weights)


def test_choose_variation():
    ranges = [(0, 0.04), (0.2, 0.26), (0.5, 0.6)]
    assert [choose_variation(n, ranges) for n in (0, 0.039, 0.04, 0.2, 0.25, 0.5, 0.59, 0.6, 0.99)] == [
        0, 0, -1, 1, 1, 2, 2, -1, -1]


# --------------------------------------------------------------- namespaces


def test_in_namespace_is_the_v1_hash_of_the_namespace_name():
    for uid in user_ids(500):
        n = bucket_hash("__prompts", uid, 1)
        assert in_namespace(uid, ("prompts", 0.25, 0.75)) == (0.25 <= n < 0.75)
        assert in_namespace(uid, Namespace("prompts", 0.25, 0.75)) == (0.25 <= n < 0.75)


def test_disjoint_namespace_slices_never_share_a_user():
    a = experiment_factory(key="a", namespace=Namespace("prompts", 0.0, 0.4))
    b = experiment_factory(key="b", seed="other", namespace=Namespace("prompts", 0.4, 1.0))
    ids = user_ids(20_000)
    in_a = {u for u in ids if assign(a, u).in_experiment}
    in_b = {u for u in ids if assign(b, u).in_experiment}
    assert not in_a & in_b
    assert 0.37 < len(in_a) / len(ids) < 0.43  # the namespace slice, full coverage
    outside = [u for u in ids if u not in in_a]
    assert all(assign(a, u).reason == Reason.OUTSIDE_NAMESPACE for u in outside[:200])


# --------------------------------------------------------- assign: reasons


def test_reasons_in_check_order():
    exp = experiment_factory(targeting='{"plan": "pro"}', coverage=0.5,
                             namespace=Namespace("ns", 0.0, 0.5))
    ids = user_ids(4000)
    assert assign(replace(exp, status="draft"), ids[0]).reason == Reason.NOT_RUNNING
    assert assign(replace(exp, status="stopped"), ids[0]).reason == "not running"
    assert assign(exp, "").reason == Reason.NO_USER_ID
    assert assign(exp, None).reason == Reason.NO_USER_ID
    seen = {assign(exp, u, {"plan": "pro"}).reason for u in ids}
    assert seen == {Reason.OUTSIDE_NAMESPACE, Reason.OUTSIDE_COVERAGE, Reason.ASSIGNED}
    in_ns = [u for u in ids if in_namespace(u, ("ns", 0.0, 0.5))]
    assert {assign(exp, u, {"plan": "free"}).reason for u in in_ns} == {Reason.TARGETING_NOT_MATCHED}
    assert {assign(exp, u).reason for u in in_ns} == {Reason.TARGETING_NOT_MATCHED}


def test_assignment_fields():
    exp = experiment_factory()
    results = [assign(exp, u) for u in user_ids(1000)]
    for a in results:
        assert isinstance(a, Assignment)
        assert a.in_experiment == (a.reason == Reason.ASSIGNED) == (a.variant is not None)
        assert 0 <= a.hash_value < 1
        assert a.variant == bucket_name(exp, a.hash_value)
        assert a.payload == ({"v": {"control": "a", "b": "b", "c": "c"}[a.variant]} if a.variant else {})
    with pytest.raises(TypeError):
        results[0].payload["v"] = "changed"  # shared between users, so read-only


def bucket_name(exp: Experiment, n: float) -> str | None:
    ranges = bucket_ranges(len(exp.variants), exp.coverage, [v.weight for v in exp.variants])
    i = choose_variation(n, ranges)
    return exp.variants[i].name if i >= 0 else None


def test_coverage_excludes_users_outside_each_variants_range():
    exp = experiment_factory(coverage=0.2)
    results = [assign(exp, u) for u in user_ids(20_000)]
    enrolled = [a for a in results if a.in_experiment]
    assert 0.18 < len(enrolled) / len(results) < 0.22
    for a in results:
        if a.reason == Reason.OUTSIDE_COVERAGE:
            assert a.variant is None and a.hash_value is not None
            assert choose_variation(a.hash_value, bucket_ranges(3, 0.2, [0.2, 0.3, 0.5])) == -1


def test_invalid_running_experiment_fails_when_compiled_but_a_broken_draft_just_does_not_run():
    broken = Experiment(key="x", owner="o", hypothesis="h", primary_metric="rating",
                        variants=[Variant("a", 0.5), Variant("b", 0.6)], status="running")
    with pytest.raises(ExperimentError, match="weights sum to 1.1"):
        assign(broken, "u1")
    assert assign(replace(broken, status="draft"), "u1").reason == Reason.NOT_RUNNING


def test_unknown_metrics_do_not_stop_assignment():
    exp = replace(experiment_factory(), primary_metric="thumbs_up_rate")
    assert assign(exp, "u1").reason in (Reason.ASSIGNED, Reason.OUTSIDE_COVERAGE)


# ------------------------------------------------------------- stickiness


def test_same_user_same_variant_across_calls_instances_and_pickles():
    exp = experiment_factory(coverage=0.7)
    ids = user_ids(2000)
    first = [assign(exp, u) for u in ids]
    assert [assign(exp, u) for u in ids] == first
    rebuilt = Experiment.from_record(exp.to_record())
    assert [assign(rebuilt, u) for u in ids] == first
    uncached = CompiledExperiment(exp, cache_size=0)
    assert [uncached.assign(u) for u in ids] == first
    restored = pickle.loads(pickle.dumps(exp))
    assert [assign(restored, u) for u in ids] == first
    assert pickle.loads(pickle.dumps(first)) == first


def test_same_assignment_in_a_fresh_interpreter():
    # Python's str hash is salted per process; the assignment hash must not be.
    exp = experiment_factory()
    ids = user_ids(50)
    here = [assign(exp, u).variant for u in ids]
    code = (
        "import json, sys\n"
        "from processors.experiments import Experiment, assign\n"
        "from schemas.codec import decode\n"
        "exp = Experiment.from_record(decode(sys.stdin.buffer.read()))\n"
        f"print(json.dumps([assign(exp, u).variant for u in {ids!r}]))\n"
    )
    from schemas.codec import encode

    out = subprocess.run(
        [sys.executable, "-c", code], input=encode("experiment", exp.to_record()),
        capture_output=True, check=True, env={"PYTHONHASHSEED": "12345", "PATH": ""},
        cwd=str(__import__("pathlib").Path(__file__).resolve().parents[2]),
    )
    assert json.loads(out.stdout) == here


@pytest.mark.parametrize(("low", "high"), [(0.1, 0.5), (0.5, 1.0), (0.05, 0.95)])
def test_raising_coverage_keeps_enrolled_users_in_their_variant(low, high):
    exp = experiment_factory(coverage=low)
    wider = replace(exp, coverage=high)
    ids = user_ids(20_000)
    before = {u: assign(exp, u).variant for u in ids}
    after = {u: assign(wider, u).variant for u in ids}
    enrolled = [u for u in ids if before[u] is not None]
    assert enrolled
    assert all(after[u] == before[u] for u in enrolled)
    assert sum(v is not None for v in after.values()) > len(enrolled)


def test_changing_the_seed_reshuffles():
    exp = experiment_factory()
    other = replace(exp, seed="new-seed")
    ids = user_ids(2000)
    same = sum(assign(exp, u).variant == assign(other, u).variant for u in ids)
    assert same < 0.5 * len(ids)


def test_empty_seed_means_the_key_like_growthbook():
    exp = experiment_factory(seed="")
    for u in user_ids(200):
        assert assign(exp, u).hash_value == bucket_hash(exp.key, u, 2)


def test_cache_is_bounded_and_does_not_change_results():
    exp = experiment_factory()
    small = CompiledExperiment(exp, cache_size=10)
    ids = user_ids(500)
    assert [small.assign(u) for u in ids + ids] == [assign(exp, u) for u in ids + ids]
    assert len(small._cache) <= 10


# ------------------------------------------------------------ distribution


@pytest.mark.parametrize("hash_version", [1, 2])
def test_distribution_matches_weights(hash_version):
    exp = experiment_factory(hash_version=hash_version)
    ids = user_ids(100_000, seed=hash_version)
    counts = assign_many(exp, ids).counts()
    observed = [counts[v.name] for v in exp.variants]
    assert sum(observed) == len(ids)
    expected = [v.weight * len(ids) for v in exp.variants]
    assert chisquare(observed, expected).pvalue > 0.001


def test_distribution_matches_weights_scalar_path_with_coverage():
    exp = experiment_factory(coverage=0.5)
    ids = user_ids(100_000, seed=3)
    names = [assign(exp, u).variant for u in ids]
    observed = [names.count(v.name) for v in exp.variants] + [names.count(None)]
    expected = [v.weight * 0.5 * len(ids) for v in exp.variants] + [0.5 * len(ids)]
    assert chisquare(observed, expected).pvalue > 0.001


# ------------------------------------------------------------------ batch


@pytest.mark.parametrize("hash_version", [1, 2])
@pytest.mark.parametrize("namespaced", [False, True])
def test_assign_many_equals_assign(hash_version, namespaced):
    rng = random.Random(hash_version * 10 + namespaced)
    exp = experiment_factory(
        hash_version=hash_version, coverage=0.6, targeting='{"plan": {"$in": ["pro", "team"]}}',
        namespace=Namespace("ns", 0.1, 0.8) if namespaced else None,
    )
    ids = user_ids(3000) + [random_text(rng) for _ in range(500)] + ["", None, "a" * 200]
    rng.shuffle(ids)
    attrs = [{"plan": rng.choice(["pro", "team", "free"])} for _ in ids]
    batch = assign_many(exp, ids, attrs)
    assert len(batch) == len(ids)
    assert list(batch) == [assign(exp, u, a) for u, a in zip(ids, attrs)]
    assert batch.variants() == [assign(exp, u, a).variant for u, a in zip(ids, attrs)]
    # One mapping for everyone, or none at all
    assert list(assign_many(exp, ids, {"plan": "pro"})) == [assign(exp, u, {"plan": "pro"}) for u in ids]
    assert {a.reason for a in assign_many(exp, ids)} <= {Reason.TARGETING_NOT_MATCHED,
                                                        Reason.OUTSIDE_NAMESPACE, Reason.NO_USER_ID}


def test_assign_many_edge_cases():
    exp = experiment_factory()
    assert len(assign_many(exp, [])) == 0
    assert list(assign_many(replace(exp, status="stopped"), ["a", "b"])) == [
        assign(replace(exp, status="stopped"), "a")] * 2
    batch = assign_many(exp, ["é", "😀", "x"])  # only non-ASCII but one
    assert list(batch) == [assign(exp, u) for u in ["é", "😀", "x"]]
    with pytest.raises(ValueError, match="2 attribute mappings for 3 users"):
        assign_many(replace(exp, targeting='{"a": 1}'), ["a", "b", "c"], [{}, {}])
    assert batch.index.dtype == np.int16 and batch.hash_value.dtype == np.float64


# -------------------------------------------------------------- targeting


TARGETING_CASES = [
    ('{"plan": "pro"}', {"plan": "pro"}, True),
    ('{"plan": "pro"}', {"plan": "free"}, False),
    ('{"plan": "pro"}', {}, False),
    ('{"plan": {"$in": ["pro", "enterprise"]}}', {"plan": "enterprise"}, True),
    ('{"plan": {"$nin": ["pro"]}}', {"plan": "free"}, True),
    ('{"plan": {"$nin": ["pro"]}}', {}, True),
    ('{"age": {"$gte": 18, "$lt": 65}}', {"age": 30}, True),
    ('{"age": {"$gte": 18}}', {"age": "30"}, False),  # no coercion
    ('{"age": 1}', {"age": True}, False),
    ('{"age": 1}', {"age": 1.0}, True),
    ('{"country": {"$exists": true}}', {"country": "DE"}, True),
    ('{"country": {"$exists": false}}', {"country": None}, True),
    ('{"country": {"$not": {"$in": ["US", "CA"]}}}', {"country": "DE"}, True),
    ('{"properties.language": "de"}', {"properties": {"language": "de"}}, True),
    ('{"properties.language": "de"}', {"properties": None}, False),
    ('{"tags": {"$in": ["beta"]}}', {"tags": ["x", "beta"]}, True),
    ('{"tags.length": {"$gt": 1}}', {"tags": ["x", "beta"]}, True),
    ('{"tags.0": "x"}', {"tags": ["x", "beta"]}, True),
    ('{"$or": [{"plan": "pro"}, {"country": "DE"}]}', {"plan": "free", "country": "DE"}, True),
    ('{"$or": []}', {}, True),
    ('{"$nor": [{"plan": "pro"}]}', {"plan": "free"}, True),
    ('{"$and": [{"plan": "pro"}, {"country": "DE"}]}', {"plan": "pro", "country": "US"}, False),
    ('{"$not": {"plan": "pro"}}', {"plan": "pro"}, False),
    ('{"signup_time": {"$gte": "2025-01-01"}}',
     {"signup_time": __import__("datetime").datetime(2025, 3, 1)}, True),
    ('{"name": {"$gt": "é"}}', {"name": "😀"}, True),  # UTF-16 order, as in JS
    ('{}', {}, True),
]


@pytest.mark.parametrize(("text", "attributes", "expected"), TARGETING_CASES)
def test_targeting(text, attributes, expected):
    assert Targeting(text).matches(attributes) is expected


@pytest.mark.parametrize(("text", "message"), [
    ("plan in ('pro', 'enterprise')", "not valid JSON"),
    ('["plan"]', "expected an object, got array"),
    ('{"plan": {"$regex": "^p"}}', r"unsupported operator '\$regex'"),
    ('{"$savedGroup": "g"}', r"unsupported operator '\$savedGroup'"),
    ('{"plan": {"$in": "pro"}}', r"\$in: expected an array"),
    ('{"age": {"$gt": [1]}}', r"\$gt: expected a number or a string"),
    ('{"$or": {"plan": "pro"}}', r"\$or: expected an array"),
    ('{"": 1}', "empty field name"),
    ('{"$not": ' * 40 + '{}' + '}' * 40, "nested more than"),
    ('{"a": ' + '{"$not": ' * 40 + '1' + '}' * 41, "nested more than"),
    ("[" * 100_000, "nested too deeply|longer than"),
])
def test_targeting_errors(text, message):
    with pytest.raises(TargetingError, match=message):
        Targeting(text)


def test_targeting_is_picklable_and_comparable():
    t = Targeting('{"plan": "pro"}')
    assert pickle.loads(pickle.dumps(t)) == t
    assert t != Targeting('{"plan": "free"}')


# ----------------------------------------------------- GrowthBook (SDK)


def random_condition(rng: random.Random, depth: int = 0) -> dict:
    fields = ["plan", "age", "country", "tags", "props.lang", "missing"]
    values = ["pro", "free", "DE", 1, 0, 18, 30.5, True, False, None, "é", "😀"]

    def test_value():
        op = rng.choice(["literal", "$eq", "$ne", "$lt", "$lte", "$gt", "$gte",
                         "$in", "$nin", "$exists", "$not"])
        if op == "literal":
            return rng.choice(values + [["x", "beta"]])
        if op in ("$in", "$nin"):
            return {op: rng.sample(values, rng.randint(0, 4))}
        if op in ("$lt", "$lte", "$gt", "$gte"):
            return {op: rng.choice(["m", "pro", "é", 18, 0, 25.5])}
        if op == "$exists":
            return {op: rng.choice([True, False])}
        if op == "$not":
            return {op: {"$in": rng.sample(values, 2)}}
        return {op: rng.choice(values)}

    cond = {}
    for _ in range(rng.randint(1, 3)):
        kind = rng.random()
        if depth < 2 and kind < 0.2:
            key = rng.choice(["$or", "$and", "$nor"])
            cond[key] = [random_condition(rng, depth + 1) for _ in range(rng.randint(0, 3))]
        elif depth < 2 and kind < 0.3:
            cond["$not"] = random_condition(rng, depth + 1)
        else:
            cond[rng.choice(fields)] = test_value()
    return cond


def random_attributes(rng: random.Random) -> dict:
    attrs = {}
    for name, choices in [
        ("plan", ["pro", "free", 1, None]),
        ("age", [0, 1, 18, 30.5, 70, "30", True]),
        ("country", ["DE", "US", "é", "😀", None]),
        ("tags", [["x", "beta"], ["pro"], [], [1, True]]),
        ("props", [{"lang": "de"}, {"lang": 1}, {}, None]),
    ]:
        if rng.random() < 0.8:
            attrs[name] = rng.choice(choices)
    return attrs


@pytest.fixture(scope="module")
def gb():
    # growthbook is a dev dependency: a missing one is a set-up error, not a skip.
    import growthbook.core

    return growthbook.core


def test_hash_matches_growthbook_on_random_inputs(gb):
    rng = random.Random(1)
    for _ in range(5000):
        seed, value = random_text(rng), random_text(rng)
        assert fnv1a32(value) == gb.fnv1a32(value)
        for version in (1, 2):
            assert bucket_hash(seed, value, version) == gb.gbhash(seed, value, version)


def test_ranges_choice_and_namespaces_match_growthbook(gb):
    rng = random.Random(2)
    for _ in range(2000):
        k = rng.randint(2, 6)
        raw = [rng.random() for _ in range(k)]
        weights = [w / sum(raw) for w in raw]
        coverage = rng.choice([rng.random(), 1.0, 0.0001])
        ours = bucket_ranges(k, coverage, weights)
        assert ours == gb.getBucketRanges(k, coverage, weights)
        assert bucket_ranges(k, coverage) == gb.getBucketRanges(k, coverage)
        for _ in range(10):
            n = rng.choice([rng.random(), round(rng.random(), 4), ours[0][1], ours[-1][0]])
            assert choose_variation(n, ours) == gb.chooseVariation(n, ours)
        uid, start = random_text(rng), rng.random()
        ns = ("ns-" + random_text(rng), start, start + rng.random() * (1 - start))
        assert in_namespace(uid, ns) == gb.inNamespace(uid, ns)


def test_targeting_matches_growthbook_on_random_conditions(gb):
    rng = random.Random(3)
    for _ in range(3000):
        cond, attrs = random_condition(rng), random_attributes(rng)
        assert Targeting(json.dumps(cond)).matches(attrs) == gb.evalCondition(attrs, cond), (cond, attrs)


@pytest.mark.parametrize("hash_version", [1, 2])
def test_whole_assignment_matches_growthbook_run(hash_version):
    import growthbook
    rng = random.Random(hash_version)
    for trial in range(20):
        k = rng.randint(2, 4)
        raw = [rng.random() + 0.1 for _ in range(k)]
        start = rng.choice([0.0, 0.3])
        exp = experiment_factory(
            key=f"exp-{trial}", seed=rng.choice(["", f"seed-{trial}"]), hash_version=hash_version,
            variants=[Variant(f"v{i}", w / sum(raw)) for i, w in enumerate(raw)],
            coverage=rng.choice([1.0, rng.random() + 0.01]),
            namespace=rng.choice([None, Namespace("shared", start, start + 0.5)]),
            targeting=rng.choice([None, '{"plan": {"$in": ["pro", "team"]}}']),
        )
        gb_exp = growthbook.Experiment(
            key=exp.key, variations=list(range(k)), weights=[v.weight for v in exp.variants],
            coverage=exp.coverage, seed=exp.seed or None, hashVersion=hash_version,
            namespace=(exp.namespace.name, exp.namespace.range_start, exp.namespace.range_end)
            if exp.namespace else None,
            condition=json.loads(exp.targeting) if exp.targeting else None,
        )
        for uid in user_ids(300, seed=trial) + [random_text(rng) for _ in range(20)]:
            plan = rng.choice(["pro", "free", "team"])
            result = growthbook.GrowthBook(attributes={"id": uid, "plan": plan}).run(gb_exp)
            ours = assign(exp, uid, {"plan": plan})
            assert ours.in_experiment == result.inExperiment, uid
            if ours.in_experiment:
                assert ours.variant == f"v{result.variationId}"
                assert ours.hash_value == result.bucket


def test_template_drafts_assign_once_running():
    exp = replace(temperature("t", "o@x", [0.1, 0.5, 0.9]), status="running")
    assert {assign(exp, u).variant for u in user_ids(300)} == {"temp-0.1", "temp-0.5", "temp-0.9"}
    assert assign(prompt_ab("p", "o@x", "a", "b"), "u").reason == Reason.NOT_RUNNING


def test_user_id_must_be_a_string():
    with pytest.raises(TypeError, match="user_id must be a str, got int"):
        assign(experiment_factory(), 1042)
