"""The NAB scorer on small cases whose scores can be worked out by hand."""
from __future__ import annotations

import json
import math

import numpy as np
import pytest

from tests.bench import nab_scorer as ns

STANDARD = ns.CostMatrix(tp=1.0, fp=0.11, fn=1.0)
LOW_FN = ns.CostMatrix(tp=1.0, fp=0.11, fn=2.0)


def S(p: float) -> float:
    """NAB's scaled sigmoid, written out independently."""
    return -1.0 if p >= 3.0 else 2.0 / (1.0 + math.exp(5.0 * p)) - 1.0


def scored_file_factory(n: int = 200, windows=((100, 109),), name: str = "f.csv"):
    """A file of ``n`` rows with windows given as (first, last) row indices."""
    ts = [f"2020-01-01 {i // 60:02d}:{i % 60:02d}:00" for i in range(n)]

    def make(fire_at=(), scores=None):
        s = np.zeros(n) if scores is None else np.asarray(scores, dtype=float)
        for i in fire_at:
            s[i] = 1.0
        return ns.ScoredFile(name, ts, s, [(ts[a], ts[b]) for a, b in windows])

    return make


def test_detection_at_window_start_earns_full_reward():
    f = scored_file_factory()(fire_at=[100])
    r = ns.score_corpus([f], STANDARD)
    assert r.raw == pytest.approx(1.0)
    assert ns.normalized(r.raw, r.n_windows, STANDARD) == pytest.approx(100.0)


def test_reward_follows_the_sigmoid_of_the_position_in_the_window():
    # Row 105 of a 10-row window ending at 109: position -(109 - 105 + 1) / 10.
    f = scored_file_factory()(fire_at=[105])
    assert ns.score_corpus([f], STANDARD).raw == pytest.approx(S(-0.5) / S(-1.0))
    # The window's last row is worth almost nothing, but more than missing it.
    f = scored_file_factory()(fire_at=[109])
    assert ns.score_corpus([f], STANDARD).raw == pytest.approx(S(-0.1) / S(-1.0))


def test_only_the_first_detection_in_a_window_counts():
    one = ns.score_corpus([scored_file_factory()(fire_at=[102])], STANDARD).raw
    more = ns.score_corpus([scored_file_factory()(fire_at=[102, 104, 108])], STANDARD).raw
    assert more == pytest.approx(one)


def test_missed_window_costs_fn_weight_and_null_detector_scores_zero():
    f = scored_file_factory(windows=((100, 109), (150, 159)))()
    for cost in (STANDARD, LOW_FN):
        r = ns.score_corpus([f], cost)
        assert r.threshold == math.inf and r.raw == pytest.approx(-2 * cost.fn)
        assert ns.null_score([f], cost) == pytest.approx(-2 * cost.fn)
        assert ns.normalized(r.raw, r.n_windows, cost) == 0.0


def test_false_positive_costs_less_just_after_a_window():
    make = scored_file_factory()
    before = ns.score_at([make(fire_at=[50])], STANDARD, 0.5).raw  # before any window
    just_after = ns.score_at([make(fire_at=[112])], STANDARD, 0.5).raw
    far_after = ns.score_at([make(fire_at=[160])], STANDARD, 0.5).raw  # >= 3 widths past
    assert before == pytest.approx(-1.0 - 0.11)  # FP plus the missed window
    assert just_after == pytest.approx(-1.0 + 0.11 * S(3 / 9))
    assert far_after == pytest.approx(-1.0 - 0.11)
    assert before < just_after


def test_probationary_period_is_not_scored():
    # 200 rows: the first floor(0.15 * 200) = 30 are probationary.
    make = scored_file_factory(windows=((10, 19), (100, 109)))
    f = make(fire_at=[5, 15])
    r = ns.score_at([f], STANDARD, 0.5)
    assert r.n_windows == 1  # the window inside the probation is not counted
    assert r.raw == pytest.approx(-1.0)  # no FP for row 5, no reward for row 15
    assert ns.probationary_length(200) == 30
    assert ns.probationary_length(100_000) == 750.0


def test_sweep_equals_scoring_each_threshold_directly():
    rng = np.random.default_rng(7)
    make = scored_file_factory(n=300, windows=((60, 79), (150, 169), (250, 269)))
    files = [make(scores=np.round(rng.random(300), 2)) for _ in range(3)]
    for k, f in enumerate(files):
        f.name = f"f{k}.csv"
    for cost in (STANDARD, LOW_FN, ns.CostMatrix(1.0, 0.22, 1.0)):
        thresholds, scores, n_windows = ns.sweep(files, cost)
        assert n_windows == 9
        for t, s in zip(thresholds[1:], scores[1:]):
            assert s == pytest.approx(ns.score_at(files, cost, t).raw)


def test_threshold_is_optimised_over_the_corpus_and_ties_go_high():
    make = scored_file_factory()
    # File a fires at 0.9 in its window, 0.8 outside; file b only at 0.8 outside.
    a = make(scores=np.r_[np.zeros(100), 0.9, np.zeros(99)])
    a.scores[150] = 0.8
    b = make(scores=np.r_[np.zeros(50), 0.8, np.zeros(149)])
    r = ns.score_corpus([a, b], STANDARD)
    assert r.threshold == 0.9
    # A later row of the same window at 0.7 changes nothing: 0.9 and 0.7 tie
    # and the higher threshold wins.
    c = make(scores=np.r_[np.zeros(100), 0.9, np.zeros(4), 0.7, np.zeros(94)])
    assert ns.score_at([c], STANDARD, 0.7).raw == ns.score_at([c], STANDARD, 0.9).raw
    assert ns.score_corpus([c], STANDARD).threshold == 0.9


def test_normalisation_puts_null_at_zero_and_perfect_at_hundred():
    assert ns.normalized(-116.0, 116, STANDARD) == 0.0
    assert ns.normalized(116.0, 116, STANDARD) == 100.0
    assert ns.normalized(-232.0, 116, LOW_FN) == 0.0
    assert ns.normalized(0.0, 116, LOW_FN) == pytest.approx(100 * 232 / 348)


def test_profiles_and_windows_load_from_nab_files(tmp_path):
    matrix = {"tpWeight": 1.0, "fnWeight": 1.0, "fpWeight": 0.11, "tnWeight": 1.0}
    (tmp_path / "profiles.json").write_text(json.dumps({"standard": {"CostMatrix": matrix}}))
    (tmp_path / "windows.json").write_text(
        json.dumps({"a/b.csv": [["2014-04-10 07:15:00.000000", "2014-04-11 16:45:00.000000"]]})
    )
    assert ns.load_profiles(tmp_path / "profiles.json") == {"standard": STANDARD}
    assert ns.load_windows(tmp_path / "windows.json") == {
        "a/b.csv": [("2014-04-10 07:15:00", "2014-04-11 16:45:00")]
    }
