"""Same sufficient statistics through GrowthBook's gbstats and through ours.

gbstats 0.8.0 (the newest on PyPI) pins ``numpy<2`` and ``pandas<2``, so
installing it into the project venv would downgrade numpy 2.x and pandas 3.x.
It is therefore not a declared dependency and these tests skip without it.
The modules compared here import fine on numpy 2; to run them:

    pip install --no-deps --target /tmp/gbstats-nodeps gbstats==0.8.0
    PYTHONPATH=/tmp/gbstats-nodeps pytest tests/unit/test_stats_gbstats.py

Where the method is the same the numbers agree to 1e-9. The one intended
difference: for rates gbstats runs a Welch t-test on ``p(1-p)`` variances,
while :func:`proportion_ztest` is the two-proportion z-test (pooled under the
null, as statsmodels); our :func:`ttest` on ProportionStats reproduces
gbstats exactly.
"""
from __future__ import annotations

import numpy as np
import pytest
from scipy import stats as sps

# gbstats is installed by `make venv` (without its numpy<2/pandas<2 pins; see
# the Makefile). A missing gbstats is a set-up error, not a reason to skip.
import gbstats.bayesian.tests as gb_bayes  # noqa: E402
import gbstats.frequentist.tests as gb_freq  # noqa: E402
import gbstats.models.statistics as gb_stats  # noqa: E402
import gbstats.utils as gb_utils  # noqa: E402

from processors.experiments.stats import (  # noqa: E402
    CovariateStats,
    GaussianPrior,
    MeanStats,
    ProportionStats,
    RatioStats,
    bayesian_test,
    cuped_adjust,
    cuped_theta,
    proportion_ztest,
    sequential_ttest,
    srm_test,
    ttest,
)

TOL = dict(rtol=0, atol=1e-9)
CONFIGS = {"relative": True, "absolute": False}


def gb_mean(s: MeanStats):
    return gb_stats.SampleMeanStatistic(n=int(s.n), sum=s.sum, sum_squares=s.sum_sq)


def gb_ratio(s: RatioStats):
    return gb_stats.RatioStatistic(
        n=int(s.n),
        m_statistic=gb_mean(s.numerator),
        d_statistic=gb_mean(s.denominator),
        m_d_sum_of_products=s.num_den_sum,
    )


def gb_cuped(s: CovariateStats):
    return gb_stats.RegressionAdjustedStatistic(
        n=int(s.n),
        post_statistic=gb_mean(s.post),
        pre_statistic=gb_mean(s.pre),
        post_pre_sum_of_products=s.cross_sum,
        theta=0,
    )


def assert_same(ours, theirs):
    assert theirs.error_message is None
    np.testing.assert_allclose(ours.estimate, theirs.expected, **TOL)
    np.testing.assert_allclose([ours.ci_low, ours.ci_high], theirs.ci, **TOL)
    np.testing.assert_allclose(ours.p_value, theirs.p_value, **TOL)
    np.testing.assert_allclose(ours.std_error, theirs.uplift.stddev, **TOL)


def mean_pair(seed):
    rng = np.random.default_rng(seed)
    return (MeanStats.from_values(rng.lognormal(0.0, 0.9, 700)),
            MeanStats.from_values(rng.lognormal(0.08, 0.9, 650)))


@pytest.mark.parametrize("seed", range(3))
@pytest.mark.parametrize("diff", CONFIGS)
def test_ttest_matches_gbstats(seed, diff):
    a, b = mean_pair(seed)
    cfg = gb_freq.FrequentistConfig(difference_type=diff, alpha=0.05)
    theirs = gb_freq.TwoSidedTTest(gb_mean(a), gb_mean(b), cfg).compute_result()
    assert_same(ttest(a, b, relative=CONFIGS[diff]), theirs)


@pytest.mark.parametrize("counts", [(4000, 400, 4100, 460), (900, 45, 950, 30)])
@pytest.mark.parametrize("diff", CONFIGS)
def test_proportions_match_gbstats(counts, diff):
    na, sa, nb, sb = counts
    a, b = ProportionStats(na, sa), ProportionStats(nb, sb)
    cfg = gb_freq.FrequentistConfig(difference_type=diff)
    theirs = gb_freq.TwoSidedTTest(gb_stats.ProportionStatistic(n=na, sum=sa),
                                   gb_stats.ProportionStatistic(n=nb, sum=sb), cfg).compute_result()
    # Same method (Welch t on p(1-p)): exact.
    assert_same(ttest(a, b, relative=CONFIGS[diff]), theirs)
    # Our z-test: same estimate and standard error; the interval uses the
    # normal quantile where gbstats uses Student t with Welch dof, so the
    # widths differ by exactly that ratio. Its p-value is the pooled z of the
    # difference (= statsmodels), not gbstats' t on the relative lift: an
    # intended difference, so not compared.
    z = proportion_ztest(a, b, relative=CONFIGS[diff])
    np.testing.assert_allclose(z.estimate, theirs.expected, **TOL)
    np.testing.assert_allclose(z.std_error, theirs.uplift.stddev, **TOL)
    dof = ttest(a, b, relative=CONFIGS[diff]).dof
    ratio = sps.norm.ppf(0.975) / sps.t.ppf(0.975, dof)
    np.testing.assert_allclose((z.ci_high - z.ci_low) / (theirs.ci[1] - theirs.ci[0]), ratio,
                               rtol=1e-9)


@pytest.mark.parametrize("seed", range(3))
@pytest.mark.parametrize("diff", CONFIGS)
def test_ratio_matches_gbstats(seed, diff):
    rng = np.random.default_rng(100 + seed)
    def arm(lift, n):
        req = rng.poisson(3, n) + 1
        cost = req * rng.gamma(2.0, 0.01, n) * (1 + lift)
        return RatioStats.from_values(cost, req)
    a, b = arm(0.0, 800), arm(0.04, 760)
    cfg = gb_freq.FrequentistConfig(difference_type=diff)
    theirs = gb_freq.TwoSidedTTest(gb_ratio(a), gb_ratio(b), cfg).compute_result()
    assert_same(ttest(a, b, relative=CONFIGS[diff]), theirs)


@pytest.mark.parametrize("seed", range(3))
@pytest.mark.parametrize("diff", CONFIGS)
def test_cuped_matches_gbstats(seed, diff):
    rng = np.random.default_rng(200 + seed)
    def arm(lift, n):
        pre = rng.gamma(2.0, 2.0, n)
        post = 0.8 * pre + rng.normal(1.0, 1.0, n) + lift
        return CovariateStats.from_values(post, pre)
    a, b = arm(0.0, 900), arm(0.15, 880)
    ga, gb = gb_cuped(a), gb_cuped(b)
    np.testing.assert_allclose(cuped_theta(a, b), gb_stats.compute_theta(ga, gb), **TOL)
    cfg = gb_freq.FrequentistConfig(difference_type=diff)
    theirs = gb_freq.TwoSidedTTest(ga, gb, cfg).compute_result()
    ma, mb, _ = cuped_adjust(a, b)
    assert_same(ttest(ma, mb, relative=CONFIGS[diff]), theirs)


@pytest.mark.parametrize("tuning", [1000, 5000, 20000])
@pytest.mark.parametrize("diff", CONFIGS)
def test_sequential_matches_gbstats(tuning, diff):
    a, b = mean_pair(7)
    cfg = gb_freq.SequentialConfig(difference_type=diff, sequential_tuning_parameter=tuning)
    theirs = gb_freq.SequentialTwoSidedTTest(gb_mean(a), gb_mean(b), cfg).compute_result()
    assert_same(sequential_ttest(a, b, relative=CONFIGS[diff], tuning=tuning), theirs)


@pytest.mark.parametrize("inverse", [False, True])
@pytest.mark.parametrize("diff", CONFIGS)
@pytest.mark.parametrize("proper", [False, True])
def test_bayesian_matches_gbstats(inverse, diff, proper):
    a, b = mean_pair(3)
    prior = GaussianPrior(mean=0.02, variance=0.01, proper=proper)
    cfg = gb_bayes.EffectBayesianConfig(
        difference_type=diff, inverse=inverse,
        prior_type="relative" if CONFIGS[diff] else "absolute",
        prior_effect=gb_bayes.GaussianPrior(mean=prior.mean, variance=prior.variance,
                                            proper=proper))
    theirs = gb_bayes.EffectBayesianABTest(gb_mean(a), gb_mean(b), cfg).compute_result()
    ours = bayesian_test(a, b, relative=CONFIGS[diff], inverse=inverse, prior=prior)
    assert theirs.error_message is None
    np.testing.assert_allclose(ours.chance_to_win, theirs.chance_to_win, **TOL)
    np.testing.assert_allclose([ours.risk_control, ours.risk_variant], theirs.risk, **TOL)
    np.testing.assert_allclose([ours.ci_low, ours.ci_high], theirs.ci, **TOL)
    np.testing.assert_allclose(ours.expected, theirs.expected, **TOL)


@pytest.mark.parametrize("obs, w", [
    ([5000, 5100], [0.5, 0.5]), ([1000, 2100, 2950], [1, 2, 3]), ([500, 700], [0.4, 0.6])])
def test_srm_matches_gbstats(obs, w):
    np.testing.assert_allclose(srm_test(obs, w).p_value, gb_utils.check_srm(obs, w), **TOL)
