"""Sample ratio mismatch against scipy.stats.chisquare, and its flagging rules."""
from __future__ import annotations

import numpy as np
import pytest
from scipy import stats as sps

from processors.experiments.stats import srm_test


@pytest.mark.parametrize("obs, w", [
    ([5000, 5100], [0.5, 0.5]),
    ([1000, 2100, 2950], [1, 2, 3]),
    ([480, 720], [40, 60]),
    ([10, 0], [1, 1]),
])
def test_equals_scipy_chisquare(obs, w):
    r = srm_test(obs, w)
    expected = np.array(w, float) / sum(w) * sum(obs)
    s = sps.chisquare(obs, expected)
    np.testing.assert_allclose([r.statistic, r.p_value], [s.statistic, s.pvalue], atol=1e-9,
                               rtol=0)
    np.testing.assert_allclose(r.expected, expected)


def test_flags_below_threshold_with_a_message():
    r = srm_test({"control": 50_600, "b": 49_400}, {"control": 1, "b": 1})
    assert r.flagged and r.p_value < 0.001
    assert "50.6% / 49.4%" in r.message and "expected 50.0% / 50.0%" in r.message
    ok = srm_test({"control": 50_100, "b": 49_900}, {"control": 1, "b": 1})
    assert not ok.flagged and ok.message == ""


def test_threshold_is_configurable():
    assert srm_test([1000, 1130], [1, 1], threshold=0.01).flagged
    assert not srm_test([1000, 1130], [1, 1]).flagged


def test_aa_assignment_rarely_flags():
    rng = np.random.default_rng(0)
    counts = rng.multinomial(20_000, [0.25, 0.25, 0.5], size=2000)
    flagged = sum(srm_test(c, [1, 1, 2]).flagged for c in counts)
    assert flagged <= 8                            # expected 2 at p < 0.001


def test_edge_cases():
    r = srm_test([0, 0], [1, 1])
    assert r.p_value == 1.0 and not r.flagged
    assert not srm_test([100], [1]).flagged
    stray = srm_test([100, 5], [1, 0])
    assert stray.flagged and "weight is 0" in stray.message
    assert not srm_test([100, 0, 110], [1, 0, 1]).flagged
    for bad in (([1, 2], [1]), ([-1, 2], [1, 1]), ([1, 2], [0, 0]), ([1, np.nan], [1, 1])):
        with pytest.raises(ValueError):
            srm_test(*bad)
    with pytest.raises(ValueError):
        srm_test({"a": 1, "b": 2}, {"a": 1, "c": 1})
