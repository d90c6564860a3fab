"""CUPED: theta, adjusted variance, and the variance reduction it promises."""
from __future__ import annotations

import numpy as np
import pytest

from processors.experiments.stats import (
    CovariateStats,
    MeanStats,
    cuped_adjust,
    cuped_theta,
    ttest,
    variance_reduction,
)


def correlated(rng, n, rho, lift=0.0, shape=()):
    pre = rng.normal(10, 3, (*shape, n))
    noise = rng.normal(0, 3, (*shape, n))
    post = rho * pre + np.sqrt(1 - rho**2) * noise + 10 * (1 - rho) + lift
    return CovariateStats.from_values(post, pre), post, pre


def test_theta_is_the_pooled_regression_slope():
    rng = np.random.default_rng(1)
    a, ya, xa = correlated(rng, 600, 0.7)
    b, yb, xb = correlated(rng, 500, 0.7, lift=0.4)
    slope = np.polyfit(np.r_[xa, xb], np.r_[ya, yb], 1)[0]
    np.testing.assert_allclose(cuped_theta(a, b), slope, rtol=1e-9)


def test_adjusted_moments_equal_adjusted_raw_values():
    rng = np.random.default_rng(2)
    a, ya, xa = correlated(rng, 400, 0.6)
    b, yb, xb = correlated(rng, 450, 0.6, lift=0.5)
    ma, mb, theta = cuped_adjust(a, b)
    center = np.r_[xa, xb].mean()
    adj_a, adj_b = ya - theta * (xa - center), yb - theta * (xb - center)
    np.testing.assert_allclose([ma.mean, ma.variance], [adj_a.mean(), adj_a.var(ddof=1)], rtol=1e-9)
    np.testing.assert_allclose([mb.mean, mb.variance], [adj_b.mean(), adj_b.var(ddof=1)], rtol=1e-9)
    assert ma.base_mean == pytest.approx(ya.mean())


@pytest.mark.parametrize("rho", [0.5, 0.8, 0.95])
def test_variance_reduction_is_about_rho_squared(rho):
    rng = np.random.default_rng(3)
    a, _, _ = correlated(rng, 20_000, rho)
    b, _, _ = correlated(rng, 20_000, rho, lift=0.1)
    assert variance_reduction(a, b) == pytest.approx(rho**2, abs=0.02)
    ma, mb, _ = cuped_adjust(a, b)
    plain, adjusted = ttest(a, b), ttest(ma, mb)
    assert adjusted.std_error < plain.std_error * np.sqrt(1 - rho**2) * 1.05
    assert adjusted.estimate == pytest.approx(0.1, abs=4 * adjusted.std_error)


def test_cuped_finds_an_effect_the_plain_test_misses():
    rng = np.random.default_rng(4)
    a, _, _ = correlated(rng, 1500, 0.9, shape=(300,))
    b, _, _ = correlated(rng, 1500, 0.9, lift=0.25, shape=(300,))
    ma, mb, _ = cuped_adjust(a, b)
    power_plain = np.mean(ttest(a, b).p_value < 0.05)
    power_cuped = np.mean(ttest(ma, mb).p_value < 0.05)
    assert power_cuped > power_plain + 0.3, (power_plain, power_cuped)


def test_no_history_falls_back_to_the_plain_test():
    rng = np.random.default_rng(5)
    ya, yb = rng.normal(5, 1, 300), rng.normal(5.2, 1, 300)
    a = CovariateStats.from_values(ya, np.zeros(300))
    b = CovariateStats.from_values(yb, np.zeros(300))
    assert cuped_theta(a, b) == 0.0
    ma, mb, _ = cuped_adjust(a, b)
    r, plain = ttest(ma, mb), ttest(MeanStats.from_values(ya), MeanStats.from_values(yb))
    np.testing.assert_allclose([r.p_value, r.ci_low], [plain.p_value, plain.ci_low], atol=1e-12)
    assert variance_reduction(a, b) == 0.0


def test_empty_and_tiny_arms_do_not_leak_nan():
    with np.errstate(all="raise"):
        tiny = CovariateStats(1, 1.0, 1.0, 1.0, 1.0, 1.0)
        ma, mb, theta = cuped_adjust(CovariateStats.empty(), tiny)
        r = ttest(ma, mb, relative=True)
    assert theta == 0.0 and not r.ok and not np.isnan(r.estimate)
    with pytest.raises(TypeError):
        cuped_adjust(MeanStats(2, 1.0, 1.0), MeanStats(2, 1.0, 1.0))
