"""Sufficient statistics: merging, storage round trip, agreement with numpy."""
from __future__ import annotations

import json

import numpy as np
import pytest

from processors.experiments.stats import (
    ArmMoments,
    CovariateStats,
    MeanStats,
    ProportionStats,
    RatioStats,
    as_moments,
)


def test_merge_is_the_same_as_one_pass():
    rng = np.random.default_rng(0)
    x = rng.gamma(2.0, 3.0, 1000)
    parts = [MeanStats.from_values(c) for c in np.array_split(x, 7)]
    merged = MeanStats.empty()
    for p in parts:
        merged = merged + p
    whole = MeanStats.from_values(x)
    assert merged.n == whole.n == 1000
    np.testing.assert_allclose([merged.mean, merged.variance], [x.mean(), x.var(ddof=1)],
                               rtol=1e-12)


@pytest.mark.parametrize("cls, args", [
    (MeanStats, ([1.0, 2.0, 4.0],)),
    (ProportionStats, ([0.0, 1.0, 1.0],)),
    (RatioStats, ([1.0, 2.0, 4.0], [1.0, 1.0, 2.0])),
    (CovariateStats, ([1.0, 2.0, 4.0], [0.5, 2.0, 3.0])),
])
def test_dict_round_trip_and_json(cls, args):
    s = cls.from_values(*args)
    d = s.to_dict()
    json.dumps(d, allow_nan=False)
    back = cls.from_dict(d)
    assert back == s
    assert s + cls.empty() == s


def test_merge_refuses_mixed_types():
    with pytest.raises(TypeError):
        MeanStats(1, 1.0, 1.0) + ProportionStats(1, 1)


def test_proportion_variance_is_binomial():
    s = ProportionStats(200, 50)
    assert s.variance == pytest.approx(0.25 * 0.75)


def test_covariate_stats_pieces_match_numpy():
    rng = np.random.default_rng(2)
    pre = rng.normal(5, 2, 500)
    post = pre + rng.normal(0, 1, 500)
    s = CovariateStats.from_values(post, pre)
    np.testing.assert_allclose(s.covariance, np.cov(post, pre)[0, 1], rtol=1e-10)
    np.testing.assert_allclose(s.pre.variance, pre.var(ddof=1), rtol=1e-10)
    np.testing.assert_allclose(s.moments().variance, post.var(ddof=1), rtol=1e-10)


@pytest.mark.parametrize("s", [
    MeanStats.empty(), MeanStats(1, 5.0, 25.0), ProportionStats.empty(), RatioStats.empty(),
    RatioStats(5, 3.0, 3.0, 0.0, 0.0, 0.0), CovariateStats.empty(),
])
def test_empty_and_tiny_have_no_nan(s):
    with np.errstate(all="raise"):
        m = s.moments()
    assert not np.any(np.isnan([m.n, m.mean, m.variance, m.base_mean]))
    assert m.variance == 0.0


def test_variance_never_negative_after_rounding():
    # sum_sq - sum^2/n cancels to a tiny negative number for constant data
    s = MeanStats(3, 3 * 0.1, 3 * 0.1**2)
    assert s.variance == 0.0


def test_arrays_broadcast():
    s = MeanStats(np.array([10.0, 20.0]), np.array([10.0, 40.0]), np.array([20.0, 100.0]))
    assert s.mean.tolist() == [1.0, 2.0]
    assert s.moments().variance.shape == (2,)


def test_as_moments_rejects_other_things():
    assert as_moments(ArmMoments(3, 1.0, 1.0)).base_mean == 1.0
    with pytest.raises(TypeError):
        as_moments(3.0)
