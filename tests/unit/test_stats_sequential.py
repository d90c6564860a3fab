"""Sequential tests: the formulas of the papers, and their internal consistency.

GrowthBook agreement is in test_stats_gbstats.py; error rates under
peeking in test_stats_simulation.py.
"""
from __future__ import annotations

import numpy as np
import pytest

from processors.experiments.stats import (
    ArmMoments,
    MeanStats,
    mixture_half_width,
    mixture_p_value,
    msprt,
    rho_for_tuning,
    sequential_ttest,
    ttest,
)


def waudby_smith_eq9(est, var_est, n_total, rho, alpha):
    """Eq. 9 of arXiv:2103.06476v7 written as in the paper, sigma^2 = N var."""
    s2 = var_est * n_total
    t = n_total
    return np.sqrt(s2) * np.sqrt(2 * (t * rho**2 + 1) / (t**2 * rho**2)
                                 * np.log(np.sqrt(t * rho**2 + 1) / alpha))


def test_sequence_and_p_value_follow_the_paper():
    a, b = ArmMoments(3000, 10.0, 30.0), ArmMoments(3200, 10.5, 33.0)
    r = sequential_ttest(a, b, tuning=8000, alpha=0.1)
    rho = rho_for_tuning(8000, 0.1)
    var = 30.0 / 3000 + 33.0 / 3200
    hw = waudby_smith_eq9(0.5, var, 6200, rho, 0.1)
    np.testing.assert_allclose([r.ci_low, r.ci_high], [0.5 - hw, 0.5 + hw], rtol=1e-12)
    # eq. 155: p = 1 / e-value
    st2 = 0.5**2 * 6200 / var
    e = np.exp(rho**2 * st2 / (2 * (6200 * rho**2 + 1))) / np.sqrt(6200 * rho**2 + 1)
    np.testing.assert_allclose(r.p_value, min(1.0, 1.0 / e), rtol=1e-12)


def test_msprt_follows_johari():
    """Johari et al. (2017): Lambda_n with V = 2 sigma^2 and n per arm."""
    sigma2, n, tau2, diff = 4.0, 500, 0.09, 0.35
    a, b = ArmMoments(n, 1.0, sigma2), ArmMoments(n, 1.0 + diff, sigma2)
    V = 2 * sigma2
    lam = np.sqrt(V / (V + n * tau2)) * np.exp(n**2 * tau2 * diff**2 / (2 * V * (V + n * tau2)))
    r = msprt(a, b, tau=np.sqrt(tau2))
    np.testing.assert_allclose(r.p_value, min(1.0, 1.0 / lam), rtol=1e-12)


@pytest.mark.parametrize("est", np.linspace(-0.3, 0.3, 25))
def test_p_value_below_alpha_exactly_when_sequence_excludes_zero(est):
    v, tau2, alpha = 0.004, 0.02, 0.05
    p = mixture_p_value(est, v, tau2)
    hw = mixture_half_width(v, tau2, alpha)
    assert (p <= alpha) == (abs(est) >= hw)


def test_sequence_is_wider_than_fixed_interval_and_p_larger():
    a, b = ArmMoments(5000, 10.0, 25.0), ArmMoments(5000, 10.3, 25.0)
    fixed, seq = ttest(a, b), sequential_ttest(a, b)
    assert seq.ci_high - seq.ci_low > fixed.ci_high - fixed.ci_low
    assert seq.p_value > fixed.p_value


def test_huge_effect_gives_zero_not_overflow():
    with np.errstate(all="raise"):
        p = mixture_p_value(1e6, 1e-6, 1.0)
    assert p == 0.0


def test_degenerate_inputs():
    r = sequential_ttest(MeanStats(1, 1.0, 1.0), MeanStats(1, 2.0, 4.0))
    assert not r.ok and r.p_value == 1.0 and not np.isnan(r.estimate)
    with pytest.raises(ValueError):
        msprt(MeanStats(5, 5.0, 9.0), MeanStats(5, 5.0, 9.0), tau=0.0)
    with pytest.raises(ValueError):
        rho_for_tuning(0)
