"""Fixed-horizon tests against scipy and statsmodels on the same data (1e-9)."""
from __future__ import annotations

import numpy as np
import pytest
from scipy import stats as sps
from statsmodels.stats.multitest import multipletests
from statsmodels.stats.proportion import confint_proportions_2indep, proportions_ztest

from processors.experiments.stats import (
    ArmMoments,
    MeanStats,
    ProportionStats,
    RatioStats,
    holm,
    lift_variance,
    proportion_ztest,
    ttest,
)

TOL = dict(rtol=0, atol=1e-9)


@pytest.mark.parametrize("seed", range(5))
@pytest.mark.parametrize("alternative, sp_alt", [
    ("two-sided", "two-sided"), ("greater", "greater"), ("less", "less")])
def test_welch_equals_scipy_on_raw_samples(seed, alternative, sp_alt):
    rng = np.random.default_rng(seed)
    a = rng.lognormal(0.0, 1.0, 200 + 37 * seed)           # skewed, like cost
    b = rng.lognormal(0.1, 1.2, 150 + 11 * seed) * 1.05
    r = ttest(MeanStats.from_values(a), MeanStats.from_values(b), alternative=alternative,
              alpha=0.1)
    s = sps.ttest_ind(b, a, equal_var=False, alternative=sp_alt)
    ci = s.confidence_interval(confidence_level=0.9)
    np.testing.assert_allclose(r.estimate, b.mean() - a.mean(), **TOL)
    np.testing.assert_allclose(r.statistic, s.statistic, **TOL)
    np.testing.assert_allclose(r.p_value, s.pvalue, **TOL)
    np.testing.assert_allclose(r.dof, s.df, rtol=1e-9)
    np.testing.assert_allclose([r.ci_low, r.ci_high], [ci.low, ci.high], **TOL)
    assert r.ok and r.reason == ""


def test_welch_vectorised_equals_loop():
    rng = np.random.default_rng(7)
    a, b = rng.normal(5, 2, (50, 80)), rng.normal(5.3, 2.5, (50, 60))
    r = ttest(MeanStats.from_values(a), MeanStats.from_values(b), relative=True)
    for i in (0, 17, 49):
        ri = ttest(MeanStats.from_values(a[i]), MeanStats.from_values(b[i]), relative=True)
        np.testing.assert_allclose([r.p_value[i], r.ci_low[i]], [ri.p_value, ri.ci_low], **TOL)
    p = sps.ttest_ind(b, a, axis=1, equal_var=False).pvalue
    # relative and absolute tests differ; the absolute one equals scipy row-wise
    r_abs = ttest(MeanStats.from_values(a), MeanStats.from_values(b))
    np.testing.assert_allclose(r_abs.p_value, p, **TOL)


@pytest.mark.parametrize("counts", [
    (1000, 100, 1000, 130), (5000, 480, 4700, 520), (300, 3, 280, 9), (12000, 6000, 11900, 6100)])
@pytest.mark.parametrize("alternative, sm_alt", [
    ("two-sided", "two-sided"), ("greater", "larger"), ("less", "smaller")])
def test_ztest_equals_statsmodels(counts, alternative, sm_alt):
    na, sa, nb, sb = counts
    r = proportion_ztest(ProportionStats(na, sa), ProportionStats(nb, sb), alternative=alternative)
    z, p = proportions_ztest([sb, sa], [nb, na], alternative=sm_alt)
    np.testing.assert_allclose([r.statistic, r.p_value], [z, p], **TOL)
    # relative lift: same null, same p-value
    rr = proportion_ztest(ProportionStats(na, sa), ProportionStats(nb, sb), relative=True,
                          alternative=alternative)
    np.testing.assert_allclose([rr.statistic, rr.p_value], [z, p], **TOL)


@pytest.mark.parametrize("counts", [(1000, 100, 1000, 130), (300, 3, 280, 9)])
def test_ztest_interval_equals_statsmodels_wald(counts):
    na, sa, nb, sb = counts
    r = proportion_ztest(ProportionStats(na, sa), ProportionStats(nb, sb), alpha=0.01)
    lo, hi = confint_proportions_2indep(sb, nb, sa, na, method="wald", compare="diff", alpha=0.01)
    np.testing.assert_allclose([r.ci_low, r.ci_high], [lo, hi], **TOL)


def test_relative_variance_is_the_delta_method():
    """Closed form equals a numerical-gradient delta method on g = mb/ma - 1."""
    a, b = ArmMoments(400, 3.0, 2.5), ArmMoments(300, 3.4, 4.0)
    _, var, ok, _ = lift_variance(a, b, relative=True)
    h = 1e-6
    g = lambda ma, mb: mb / ma - 1  # noqa: E731
    grad = np.array([(g(3.0 + h, 3.4) - g(3.0 - h, 3.4)) / (2 * h),
                     (g(3.0, 3.4 + h) - g(3.0, 3.4 - h)) / (2 * h)])
    cov = np.diag([2.5 / 400, 4.0 / 300])
    np.testing.assert_allclose(var, grad @ cov @ grad, rtol=1e-7)
    assert ok


def test_relative_interval_covers_at_nominal_rate():
    """2,000 simulated experiments: the delta-method relative CI covers ~95%."""
    rng = np.random.default_rng(11)
    a = rng.lognormal(0.0, 0.8, (2000, 400))
    b = rng.lognormal(0.0, 0.8, (2000, 400)) * 1.1         # true relative lift 10%
    r = ttest(MeanStats.from_values(a), MeanStats.from_values(b), relative=True)
    cover = np.mean((r.ci_low < 0.1) & (0.1 < r.ci_high))
    assert 0.935 <= cover <= 0.965, cover


def test_ratio_variance_equals_linearisation_on_raw_data():
    rng = np.random.default_rng(3)
    requests = rng.poisson(4, 800) + 1                      # per user
    cost = rng.gamma(2.0, 0.01, 800) * requests + rng.normal(0, 0.002, 800)
    s = RatioStats.from_values(cost, requests)
    ratio = cost.sum() / requests.sum()
    resid = (cost - ratio * requests) / requests.mean()     # influence function
    np.testing.assert_allclose(s.mean, ratio, rtol=1e-12)
    np.testing.assert_allclose(s.variance, resid.var(ddof=1), rtol=1e-9)


def test_ratio_lift_interval_covers_with_clustered_units():
    """Per-request costs are correlated within a user; the delta method copes."""
    rng = np.random.default_rng(5)
    k, n = 1000, 300
    def arm(lift):
        req = rng.poisson(3, (k, n)) + 1
        user_level = rng.gamma(2.0, 0.5, (k, n))             # heavy users cost more per req
        cost = req * user_level * (1 + lift)
        return RatioStats.from_values(cost, req)
    r = ttest(arm(0.0), arm(0.05), relative=True)
    cover = np.mean((r.ci_low < 0.05) & (0.05 < r.ci_high))
    assert 0.93 <= cover <= 0.97, cover


@pytest.mark.parametrize("seed", range(4))
def test_holm_equals_statsmodels(seed):
    rng = np.random.default_rng(seed)
    p = np.concatenate([rng.uniform(0, 0.05, 4), rng.uniform(0, 1, 6), [0.01, 0.01]])
    rng.shuffle(p)
    reject, adj = holm(p, alpha=0.05)
    sm_reject, sm_adj, _, _ = multipletests(p, alpha=0.05, method="holm")
    np.testing.assert_allclose(adj, sm_adj, **TOL)
    assert reject.tolist() == sm_reject.tolist()


def test_holm_edge_cases():
    assert holm([])[0].size == 0
    r, a = holm([0.2])
    assert not r[0] and a[0] == 0.2
    with pytest.raises(ValueError):
        holm([0.1, float("nan")])


@pytest.mark.parametrize("a, b, why", [
    (MeanStats(1, 3.0, 9.0), MeanStats(50, 100.0, 300.0), "fewer than 2"),
    (MeanStats(0, 0.0, 0.0), MeanStats(0, 0.0, 0.0), "fewer than 2"),
    (MeanStats(10, 20.0, 40.0), MeanStats(10, 20.0, 40.0), "zero variance"),
    (MeanStats(10, 0.0, 0.0), MeanStats(10, 0.0, 0.0), "zero variance"),
    (RatioStats(10, 5.0, 5.0, 0.0, 0.0, 0.0), RatioStats(10, 5.0, 5.0, 10.0, 10.0, 5.0),
     "control mean is 0"),
])
@pytest.mark.parametrize("relative", [False, True])
def test_degenerate_inputs_never_leak_nan(a, b, why, relative):
    with np.errstate(all="raise"):          # no hidden divide-by-zero either
        r = ttest(a, b, relative=relative)
    values = [r.estimate, r.std_error, r.statistic, r.dof, r.p_value, r.ci_low, r.ci_high]
    assert not np.any(np.isnan(values))
    if why == "control mean is 0" and not relative:
        return  # the absolute difference is still testable
    assert r.ok is False and r.p_value == 1.0
    assert (r.ci_low, r.ci_high) == (-np.inf, np.inf)
    assert why in r.reason or (why == "zero variance" and relative and "control mean" in r.reason)


def test_ztest_degenerate_no_events_anywhere():
    with np.errstate(all="raise"):
        r = proportion_ztest(ProportionStats(500, 0), ProportionStats(500, 0), relative=True)
        r2 = proportion_ztest(ProportionStats(500, 0), ProportionStats(500, 0))
        r3 = proportion_ztest(ProportionStats(0, 0), ProportionStats(10, 3))
    for x in (r, r2, r3):
        assert not x.ok and x.p_value == 1.0 and not np.isnan(x.estimate)


def test_vectorised_degenerate_rows_are_isolated():
    a = MeanStats(np.array([50.0, 1.0, 50.0]), np.array([100.0, 2.0, 100.0]),
                  np.array([300.0, 4.0, 200.0]))
    b = MeanStats(np.array([50.0, 50.0, 50.0]), np.array([120.0, 120.0, 100.0]),
                  np.array([400.0, 400.0, 200.0]))
    r = ttest(a, b)
    assert r.ok.tolist() == [True, False, False]
    assert not np.any(np.isnan(r.p_value)) and r.p_value[1] == 1.0
    assert r.p_value[0] < 1.0


def test_bad_arguments():
    s = MeanStats(10, 10.0, 20.0)
    with pytest.raises(ValueError):
        ttest(s, s, alpha=1.5)
    with pytest.raises(ValueError):
        ttest(s, s, alternative="bigger")
    with pytest.raises(TypeError):
        proportion_ztest(s, s)
    with pytest.raises(TypeError):
        ttest(object(), s)
