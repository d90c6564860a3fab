"""Chance to beat control and risk: closed form against numerical integration."""
from __future__ import annotations

import numpy as np
import pytest
from scipy import integrate
from scipy import stats as sps

from processors.experiments.stats import (
    ArmMoments,
    GaussianPrior,
    MeanStats,
    bayesian_test,
    normal_risk,
    ttest,
)


@pytest.mark.parametrize("mu, sigma", [(0.0, 1.0), (0.02, 0.01), (-0.05, 0.03), (3.0, 0.5)])
def test_risk_closed_form_equals_integral(mu, sigma):
    gain, loss = normal_risk(mu, sigma)
    pdf = lambda x: sps.norm.pdf(x, mu, sigma)  # noqa: E731
    g = integrate.quad(lambda x: x * pdf(x), 0, np.inf)[0]
    lo = integrate.quad(lambda x: -x * pdf(x), -np.inf, 0)[0]
    np.testing.assert_allclose([gain, loss], [g, lo], atol=1e-9)
    # and with scipy's truncated normal, as gbstats computes it
    p0 = sps.norm.cdf(0, mu, sigma)
    tn_pos = sps.truncnorm.mean((0 - mu) / sigma, np.inf, loc=mu, scale=sigma)
    np.testing.assert_allclose(gain, (1 - p0) * tn_pos, atol=1e-9)


def test_flat_prior_is_the_frequentist_normal_approximation():
    a, b = ArmMoments(2000, 5.0, 9.0), ArmMoments(2000, 5.15, 9.5)
    r = bayesian_test(a, b)
    f = ttest(a, b, relative=True)
    assert r.expected == pytest.approx(f.estimate)
    assert r.std == pytest.approx(f.std_error)
    assert r.chance_to_win == pytest.approx(sps.norm.cdf(f.estimate / f.std_error))


def test_inverse_flips_chance_and_risk():
    a, b = ArmMoments(1000, 2.0, 1.0), ArmMoments(1000, 2.1, 1.0)
    up, down = bayesian_test(a, b), bayesian_test(a, b, inverse=True)
    assert up.chance_to_win + down.chance_to_win == pytest.approx(1.0)
    assert (up.risk_control, up.risk_variant) == pytest.approx((down.risk_variant,
                                                                down.risk_control))


def test_proper_prior_shrinks_towards_its_mean():
    a, b = ArmMoments(200, 10.0, 25.0), ArmMoments(200, 11.0, 25.0)
    flat = bayesian_test(a, b)
    shrunk = bayesian_test(a, b, prior=GaussianPrior(0.0, 0.0025, proper=True))
    assert 0 < shrunk.expected < flat.expected
    assert shrunk.std < flat.std


def test_chance_to_win_matches_monte_carlo():
    rng = np.random.default_rng(0)
    a, b = ArmMoments(800, 3.0, 4.0), ArmMoments(800, 3.1, 4.0)
    r = bayesian_test(a, b)
    draws = rng.normal(r.expected, r.std, 400_000)
    assert abs(np.mean(draws > 0) - r.chance_to_win) < 0.003
    assert abs(np.mean(np.maximum(-draws, 0)) - r.risk_variant) < 2e-4


def test_vectorised_and_degenerate():
    a = MeanStats(np.array([100.0, 1.0]), np.array([100.0, 1.0]), np.array([200.0, 1.0]))
    b = MeanStats(np.array([100.0, 100.0]), np.array([110.0, 110.0]), np.array([230.0, 230.0]))
    with np.errstate(all="raise"):
        r = bayesian_test(a, b)
    assert r.ok.tolist() == [True, False]
    assert r.chance_to_win[1] == 0.5 and r.risk_variant[1] == 0.0
    for v in (r.expected, r.std, r.chance_to_win, r.risk_control, r.risk_variant):
        assert not np.any(np.isnan(v))
