"""Anomaly detectors: one shared contract for all, then what each must catch.

The full synthetic suite and NAB are benchmarks (``python -m tests.bench.nab``);
here are small, fast cases of the same kinds.
"""
from __future__ import annotations

import math
import pickle
import time

import numpy as np
import pytest
from river import base

from processors.anomaly import (
    CUSUM,
    DEFAULT_RULES,
    EWMAZ,
    AlertFilter,
    AlertRule,
    Ensemble,
    LocalDeviation,
    MetricRules,
    RangeBreakout,
    SeasonalBaseline,
    drift_detector,
    production_detector,
)
from tests.bench import incidents

DAY = 288  # 5-minute points


def detector_factory():
    """Every detector, fresh, by name (the shared contract runs over all of them)."""
    return {
        "RangeBreakout": lambda: RangeBreakout(),
        "LocalDeviation": lambda: LocalDeviation(window=12),
        "LocalDeviation_smooth": lambda: LocalDeviation(window=24, smooth=4),
        "LocalDeviation_relative": lambda: LocalDeviation(window=12, relative=True),
        "SeasonalBaseline": lambda: SeasonalBaseline(),
        "SeasonalBaseline_mad": lambda: SeasonalBaseline(standardize=True, adjust=8),
        "EWMAZ": lambda: EWMAZ(),
        "CUSUM": lambda: CUSUM(),
        "Ensemble": lambda: production_detector(),
        "drift_detector": lambda: drift_detector(),
        "CUSUM_lagged": lambda: CUSUM(lag=50),
        "CUSUM_seasonal": lambda: CUSUM(period=86400.0),
        "AlertFilter": lambda: AlertFilter(production_detector()),
    }


ALL = sorted(detector_factory())


def stream(n: int = 3 * DAY, seed: int = 1, spike_at: int | None = None):
    """Daily-seasonal points with noise and counts, optionally one spike."""
    rng = np.random.default_rng(seed)
    for i in range(n):
        level = 100.0 + 40.0 * math.sin(2 * math.pi * i / DAY)
        v = level + rng.normal(0.0, 3.0) + (200.0 if i == spike_at else 0.0)
        yield {"value": v, "t": 1_700_000_000.0 + 300.0 * i, "count": int(rng.integers(20, 200))}


def run(det, points):
    scores = []
    for x in points:
        scores.append(det.score_one(x))
        assert det.learn_one(x) is None
    return scores


# -- the shared contract ---------------------------------------------------


@pytest.mark.parametrize("name", ALL)
def test_scores_are_floats_in_unit_interval_and_cold_start_is_quiet(name):
    scores = run(detector_factory()[name](), stream())
    assert all(isinstance(s, float) and 0.0 <= s < 1.0 for s in scores)
    assert max(scores[:20]) == 0.0  # nothing to compare with yet


@pytest.mark.parametrize("name", ALL)
def test_same_input_same_scores(name):
    make = detector_factory()[name]
    assert run(make(), stream(seed=3)) == run(make(), stream(seed=3))


@pytest.mark.parametrize("name", ALL)
def test_pickle_restores_a_running_detector(name):
    points = list(stream(seed=4, spike_at=700))
    det = detector_factory()[name]()
    run(det, points[:500])
    restored = pickle.loads(pickle.dumps(det))
    assert run(restored, points[500:]) == run(det, points[500:])


@pytest.mark.parametrize("name", ALL)
def test_clone_is_fresh_with_the_same_parameters(name):
    det = detector_factory()[name]()
    run(det, stream(n=400))
    fresh = det.clone()
    if not isinstance(det, (Ensemble, AlertFilter)):  # their params hold fresh member clones
        assert fresh._get_params() == det._get_params()
    assert run(fresh, stream(seed=5)) == run(detector_factory()[name](), stream(seed=5))


@pytest.mark.parametrize("name", ALL)
def test_scoring_does_not_learn(name):
    det = detector_factory()[name]()
    points = list(stream(n=400, seed=6))
    run(det, points[:399])
    x = points[399]
    assert det.score_one(x) == det.score_one(x)
    # learn_one without score_one first also works (a replay, a warm-up).
    det.learn_one(points[0])


# -- what each detector is for ---------------------------------------------


def test_range_breakout_flags_values_outside_the_range_seen():
    det = RangeBreakout(young=0)
    run(det, ({"value": 10.0 + (i % 7)} for i in range(200)))
    assert det.score_one({"value": 15.0}) == 0.0
    assert det.score_one({"value": 17.0}) > 0.5
    assert det.score_one({"value": -5.0}) > 0.9


def test_range_breakout_forgets_beyond_its_memory():
    det = RangeBreakout(memory=100, young=0)
    run(det, ({"value": 1000.0 if i == 0 else float(i % 5)} for i in range(200)))
    assert det.score_one({"value": 500.0}) > 0.9  # the old peak fell out of memory


def test_seasonal_baseline_knows_what_time_of_day_it_is():
    det = SeasonalBaseline(young=0)
    points = list(stream(n=4 * DAY, seed=8))
    run(det, points)
    night_low = 60.0  # the trough of the daily cycle, which is at 3/4 of the day
    trough = {"value": night_low, "t": points[-1]["t"] + 300.0 * (3 * DAY // 4 + 1)}
    peak = {"value": night_low, "t": points[-1]["t"] + 300.0 * (DAY // 4 + 1)}
    assert det.score_one(trough) < 0.5 < det.score_one(peak)


def test_local_deviation_catches_a_drop_that_stays_in_range():
    det = LocalDeviation(window=12, young=0)
    points = list(stream(n=2 * DAY, seed=9))
    run(det, points[: DAY + DAY // 4])  # stop at the daily peak
    # 70 is ordinary at night, but not right after 140.
    assert det.score_one({**points[DAY + DAY // 4], "value": 70.0}) > 0.5


def test_cusum_adds_up_a_shift_no_single_point_shows():
    rng = np.random.default_rng(10)
    det, single = CUSUM(young=0), RangeBreakout(tolerance=0.2, young=0)
    normal = [{"value": 50.0 + rng.normal(0.0, 2.0)} for _ in range(1500)]
    run(det, normal)
    run(single, normal)
    shifted = [{"value": 53.0 + rng.normal(0.0, 2.0)} for _ in range(20)]  # +1.5 sigma
    assert max(run(single, shifted)) < 0.5
    scores = run(det, shifted)
    assert scores[0] < 0.5 < max(scores)


def test_ensemble_damps_repeats_but_lets_a_worse_point_through():
    ens = Ensemble([RangeBreakout(young=0)], hold=50)
    run(ens, ({"value": float(i % 10)} for i in range(300)))
    first = run(ens, [{"value": 15.0}])[0]
    repeat = run(ens, [{"value": 14.0}])[0]
    worse = run(ens, [{"value": 30.0}])[0]
    assert first > 0.5 > repeat and worse > 0.5


def test_few_events_cannot_raise_what_many_would():
    def score_with(count):
        ens = production_detector()
        run(ens, stream(n=2 * DAY, seed=11))
        return ens.score_one({"value": 20.0, "t": 1_700_000_000.0 + 300.0 * 2 * DAY, "count": count})

    assert score_with(3) < 0.5 < score_with(150)


# -- alerts ------------------------------------------------------------------


def test_alert_filter_pages_once_per_incident_and_again_after_quiet():
    f = AlertFilter(RangeBreakout(grace=3, young=0), threshold=0.5, cooldown=3, max_protected=100)
    for v in (10.0, 11.0, 10.5, 10.2):
        f.update({"value": v})
    verdicts = [f.update({"value": v}) for v in (30.0, 31.0, 10.4, 10.3, 10.6, 10.1, 40.0)]
    assert [v.alert for v in verdicts] == [True, False, False, False, False, False, True]


def test_protected_detector_learns_the_range_but_not_the_baseline():
    ens = production_detector()
    f = AlertFilter(ens, threshold=0.5)
    points = list(stream(n=2 * DAY, seed=12))
    for x in points:
        f.update(x)
    local = ens.detectors[1]
    median_before = local._median.get()
    v = f.update({**points[-1], "value": 1000.0, "t": points[-1]["t"] + 300})
    assert v.flagged and not v.learned
    assert local._median.get() == median_before
    # The same value again is no longer news: its range was learned.
    assert f.update({**points[-1], "value": 1000.0, "t": points[-1]["t"] + 600}).score < v.score


class _Recorder(base.AnomalyDetector):
    """A plain river detector: flags values above 50, remembers what it learned."""

    def __init__(self):
        self.learned = []

    def score_one(self, x):
        return 0.9 if x["value"] > 50 else 0.1

    def learn_one(self, x):
        self.learned.append(x["value"])


def test_protection_skips_flagged_points_then_accepts_a_new_normal():
    rec = _Recorder()
    f = AlertFilter(rec, threshold=0.5, max_protected=3)
    verdicts = [f.update({"value": v}) for v in (1.0, 60.0, 61.0, 62.0, 63.0, 64.0, 2.0)]
    assert rec.learned == [1.0, 63.0, 2.0]  # three protected, the fourth accepted
    assert [v.alert for v in verdicts] == [False, True, False, False, False, False, False]


def test_a_lasting_change_pages_once():
    f = AlertFilter(RangeBreakout(young=0, grace=5), threshold=0.5, cooldown=2)
    for i in range(100):
        f.update({"value": float(i % 3)})
    verdicts = [f.update({"value": 100.0 + (i % 3)}) for i in range(30)]
    assert verdicts[0].alert and not verdicts[0].learned
    assert sum(v.alert for v in verdicts) == 1 and not verdicts[-1].flagged


def test_min_count_keeps_sparse_points_from_paging():
    f = AlertFilter(RangeBreakout(grace=5, young=0), min_count=10)
    for i in range(50):
        f.update({"value": float(i % 3), "count": 50})
    sparse = f.update({"value": 50.0, "count": 3})
    assert sparse.flagged and not sparse.alert


def test_rules_per_metric():
    rules = MetricRules(default=AlertRule(threshold=0.5), per_metric={"cost_usd": AlertRule(threshold=0.7)})
    assert rules.for_metric("cost_usd").threshold == 0.7
    assert rules.for_metric("latency_ms").threshold == 0.5
    assert DEFAULT_RULES.for_metric("anything").min_count == 10
    f = AlertFilter.from_rule(RangeBreakout(), rules.for_metric("cost_usd"))
    assert f.threshold == 0.7


def test_production_detector_sets_spans_in_time():
    five_min, hourly = production_detector(step=300), production_detector(step=3600)
    assert five_min.hold == 96 and hourly.hold == 8
    assert five_min.detectors[1].window == 12 and hourly.detectors[1].window == 4


# -- small incident cases (the full suite: python -m tests.bench.incidents) ---


@pytest.mark.parametrize("kind", [k for k in incidents.KINDS if k != "latency_creep"])
def test_each_incident_kind_is_caught_within_two_windows(kind):
    # One fixed case per kind; recall over 120 unseen incidents is the benchmark's.
    sc = incidents.make_scenario(kind, incidents.METRIC_OF[kind], seed=4)
    out = incidents.run_scenario(sc)
    (delay,) = out.detected.values()
    assert delay is not None and delay <= 2
    assert out.false_alerts == 0


def test_slow_creep_is_caught_by_the_drift_detector_while_it_climbs():
    sc = incidents.make_scenario("latency_creep", "latency_p95_ms", seed=4)
    (inc,) = sc.incidents
    out = incidents.run_scenario(sc)
    assert out.detected_by == {0: "drift"}
    assert out.detected[0] < inc.end - inc.start - incidents.DAY  # before the climb ends
    # The anomaly detector alone does not see it in time.
    assert incidents.run_scenario(sc, drift=False).detected[0] is None


def test_lagged_range_sees_a_climb_that_only_ever_steps_past_itself():
    # +0.03 sigma per point: each new high is a small step past the last one.
    def scores(lag):
        rng = np.random.default_rng(14)
        flat = [{"value": 10.0 + rng.normal(0.0, 1.0)} for _ in range(800)]
        climb = [{"value": 10.0 + 0.03 * i + rng.normal(0.0, 1.0)} for i in range(300)]
        det = LocalDeviation(window=200, smooth=20, lag=lag, tolerance=0.5, young=0)
        return run(det, flat + climb)

    plain, lagged = scores(0), scores(300)
    assert max(plain[300:800]) == max(lagged[300:800]) == 0.0
    assert max(plain[800:]) < 0.5 < max(lagged[800:])


@pytest.mark.parametrize("metric", sorted(set(incidents.METRIC_OF.values())))
def test_no_alert_storm_on_quiet_low_volume_series(metric):
    # ~12 requests per point at the daily peak, ~1 at night, for 12 scored days.
    sc = incidents.make_scenario(None, metric, seed=3, peak=12.0)
    out = incidents.run_scenario(sc)
    assert out.false_alerts <= 2
    low = {i for i, x in sc.points() if x.get("count", 99) < DEFAULT_RULES.default.min_count}
    assert not low & set(out.alerts)


def test_cost_per_point_is_small():
    det = production_detector()
    points = list(stream(n=2000, seed=13))
    t0 = time.perf_counter()
    run(det, points)
    us = 1e6 * (time.perf_counter() - t0) / len(points)
    assert us < 250  # ~11 us on an idle core; generous for a shared CI machine
