"""Fixed-horizon tests: Welch t, two-proportion z, delta-method lifts, Holm.

These p-values and intervals are valid when the data are looked at **once**,
at a sample size fixed in advance (see :mod:`.power`). A dashboard that
refreshes every minute needs :mod:`.sequential` instead.

Lifts are variant minus control: absolute ``mean_b - mean_a`` or relative
``(mean_b - mean_a) / mean_a``. The relative lift's variance comes from the
delta method, ``var_b/(mu_a^2 n_b) + var_a mu_b^2/(mu_a^4 n_a)``, exactly as
GrowthBook's ``gbstats`` computes it, with Welch-Satterthwaite degrees of
freedom.

Degenerate inputs (an arm with fewer than two units, zero variance, a zero
control mean for a relative lift) never produce NaN: the result has
``ok=False``, ``p_value=1``, an unbounded interval and a ``reason``.

References
----------
.. [1] Welch, B. L. (1947). The generalization of "Student's" problem when
   several different population variances are involved. Biometrika 34.
.. [2] Deng, A., Knoblich, U., Lu, J. (2018). Applying the delta method in
   metric analytics. KDD.
.. [3] Holm, S. (1979). A simple sequentially rejective multiple test
   procedure. Scandinavian Journal of Statistics 6.

Examples
--------
>>> from processors.experiments.stats.sufficient import ProportionStats
>>> r = proportion_ztest(ProportionStats(1000, 100), ProportionStats(1000, 130))
>>> round(r.estimate, 3), round(r.p_value, 4)
(0.03, 0.0355)
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal

import numpy as np
from scipy import stats as sps

from .sufficient import ArrayLike, ArmMoments, ProportionStats, _arr, _out, as_moments

__all__ = ["LiftResult", "holm", "lift_variance", "proportion_ztest", "ttest"]

Alternative = Literal["two-sided", "greater", "less"]


@dataclass(frozen=True)
class LiftResult:
    """Variant versus control on one metric.

    Attributes
    ----------
    estimate : float or ndarray
        Lift: ``mean_b - mean_a``, or that over ``mean_a`` when ``relative``.
    std_error : float or ndarray
        Standard error of ``estimate`` (``inf`` when not ``ok``).
    statistic : float or ndarray
        ``estimate / std_error`` (z or t; the pooled z for proportions).
    dof : float or ndarray
        Degrees of freedom; ``inf`` for normal-based tests, 0 when not ``ok``.
    p_value : float or ndarray
    ci_low, ci_high : float or ndarray
        Confidence interval (or confidence sequence) at level ``1 - alpha``.
    ok : bool or ndarray
        False where the data cannot support a test; then ``p_value`` is 1 and
        the interval is ``(-inf, inf)``.
    reason : str
        Why some entry is not ``ok`` ('' when all are).
    """

    estimate: ArrayLike
    std_error: ArrayLike
    statistic: ArrayLike
    dof: ArrayLike
    p_value: ArrayLike
    ci_low: ArrayLike
    ci_high: ArrayLike
    alpha: float
    relative: bool
    method: str
    ok: Any
    reason: str

    @property
    def ci(self) -> tuple[ArrayLike, ArrayLike]:
        return self.ci_low, self.ci_high


def _check_alpha(alpha: float) -> None:
    if not 0.0 < alpha < 1.0:
        raise ValueError(f"alpha must be in (0, 1), got {alpha}")


def lift_variance(
    a: ArmMoments, b: ArmMoments, relative: bool
) -> tuple[np.ndarray, np.ndarray, np.ndarray, str]:
    """Lift, variance of the lift, validity mask and reason; no NaN escapes.

    Parameters
    ----------
    a, b : ArmMoments
        Control and variant.
    relative : bool
        Relative lift (delta method on ``mean_b / mean_a - 1``) or absolute.

    Returns
    -------
    estimate, variance, ok, reason

    Examples
    --------
    >>> est, var, ok, _ = lift_variance(ArmMoments(100, 10.0, 4.0),
    ...                                 ArmMoments(100, 11.0, 4.0), relative=True)
    >>> round(float(est), 3), round(float(var), 6), bool(ok)
    (0.1, 0.000884, True)
    """
    na, nb = _arr(a.n), _arr(b.n)
    ma, mb = _arr(a.mean), _arr(b.mean)
    va, vb = _arr(a.variance), _arr(b.variance)
    ba, bb = _arr(a.base_mean), _arr(b.base_mean)
    with np.errstate(divide="ignore", invalid="ignore", over="ignore"):
        if relative:
            est = (mb - ma) / ba
            var = vb / (ba**2 * nb) + va * bb**2 / (ba**4 * na)
        else:
            est = mb - ma
            var = vb / nb + va / na
    small = (na < 2) | (nb < 2)
    zero_base = (ba == 0) if relative else np.zeros(np.shape(ba), dtype=bool)
    bad_var = ~(np.isfinite(var) & (var > 0))
    ok = ~(small | zero_base | bad_var) & np.isfinite(est)
    reasons = []
    if np.any(small):
        reasons.append("an arm has fewer than 2 units")
    if np.any(zero_base & ~small):
        reasons.append("control mean is 0, so a relative lift is undefined")
    if np.any(bad_var & ~small & ~zero_base):
        reasons.append("zero variance: every unit has the same value")
    est = np.where(np.isfinite(est), est, 0.0)
    var = np.where(ok, var, np.inf)
    return est, var, ok, "; ".join(reasons)


def _welch_dof(a: ArmMoments, b: ArmMoments) -> np.ndarray:
    na, nb = _arr(a.n), _arr(b.n)
    with np.errstate(divide="ignore", invalid="ignore", over="ignore"):
        qa, qb = _arr(a.variance) / na, _arr(b.variance) / nb
        dof = (qa + qb) ** 2 / (qa**2 / (na - 1) + qb**2 / (nb - 1))
    return dof


def _finish(
    est: np.ndarray,
    var: np.ndarray,
    ok: np.ndarray,
    reason: str,
    dist: Any,
    dof: np.ndarray,
    alpha: float,
    alternative: Alternative,
    relative: bool,
    method: str,
    stat_var: np.ndarray | None = None,
) -> LiftResult:
    """p-value and interval from an estimate and its variance.

    ``stat_var`` is the variance under the null when it differs from the one
    used for the interval (the pooled two-proportion z-test).
    """
    se = np.sqrt(var)
    se0 = se if stat_var is None else np.sqrt(stat_var)
    with np.errstate(divide="ignore", invalid="ignore"):
        stat = np.where(ok, est / se0, 0.0)
    if alternative == "two-sided":
        p = 2.0 * dist.sf(np.abs(stat))
        q = dist.ppf(1.0 - alpha / 2.0)
        low, high = est - q * se, est + q * se
    elif alternative == "greater":
        p = dist.sf(stat)
        q = dist.ppf(1.0 - alpha)
        low, high = est - q * se, np.full(np.shape(est), np.inf)
    elif alternative == "less":
        p = dist.cdf(stat)
        q = dist.ppf(1.0 - alpha)
        low, high = np.full(np.shape(est), -np.inf), est + q * se
    else:
        raise ValueError(f"alternative must be two-sided, greater or less, got {alternative!r}")
    return LiftResult(
        estimate=_out(est),
        std_error=_out(np.where(ok, se, np.inf)),
        statistic=_out(stat),
        dof=_out(np.where(ok, dof, 0.0)),
        p_value=_out(np.where(ok, np.minimum(p, 1.0), 1.0)),
        ci_low=_out(np.where(ok, low, -np.inf)),
        ci_high=_out(np.where(ok, high, np.inf)),
        alpha=alpha,
        relative=relative,
        method=method,
        ok=bool(ok) if np.ndim(ok) == 0 else ok,
        reason=reason,
    )


def ttest(
    a: Any,
    b: Any,
    *,
    relative: bool = False,
    alpha: float = 0.05,
    alternative: Alternative = "two-sided",
) -> LiftResult:
    """Welch's unequal-variance t-test of variant ``b`` against control ``a``.

    Works on any statistics container (mean, proportion, ratio) or on
    :class:`~.sufficient.ArmMoments` (e.g. CUPED-adjusted): ratio metrics get
    the delta-method variance from :class:`~.sufficient.RatioStats`. For an
    absolute lift on raw values this equals
    ``scipy.stats.ttest_ind(b_values, a_values, equal_var=False)``.

    Parameters
    ----------
    a, b : statistics container or ArmMoments
        Control and variant.
    relative : bool
        Test and interval for the relative lift instead of the difference.
    alpha : float
        1 - confidence level of the interval.
    alternative : {'two-sided', 'greater', 'less'}
        'greater' tests that the variant's mean is higher.

    Returns
    -------
    LiftResult

    Examples
    --------
    >>> from processors.experiments.stats.sufficient import MeanStats
    >>> r = ttest(MeanStats.from_values([1., 2., 3., 4.]),
    ...           MeanStats.from_values([3., 4., 5., 6., 7.]))
    >>> r.estimate, round(r.p_value, 4), round(r.dof, 2)
    (2.5, 0.0349, 6.98)
    """
    _check_alpha(alpha)
    ma, mb = as_moments(a), as_moments(b)
    est, var, ok, reason = lift_variance(ma, mb, relative)
    dof = _welch_dof(ma, mb)
    # One arm with zero variance leaves a finite dof; both zero is caught by ok.
    dof = np.where(np.isfinite(dof) & (dof > 0), dof, 1.0)
    return _finish(est, var, ok, reason, sps.t(dof), dof, alpha, alternative, relative, "welch")


def proportion_ztest(
    a: ProportionStats,
    b: ProportionStats,
    *,
    relative: bool = False,
    alpha: float = 0.05,
    alternative: Alternative = "two-sided",
) -> LiftResult:
    """Two-proportion z-test of variant ``b`` against control ``a``.

    The statistic uses the pooled proportion (the variance under "no
    difference"), exactly as ``statsmodels.stats.proportion.proportions_ztest``
    does by default. The interval uses the unpooled (Wald) variance, on the
    absolute scale or, with ``relative``, on the relative lift via the delta
    method. Pooled test and unpooled interval can disagree by a hair at the
    significance boundary; that is the textbook pairing, not a bug.

    Examples
    --------
    >>> r = proportion_ztest(ProportionStats(5000, 500), ProportionStats(5000, 560),
    ...                      relative=True)
    >>> round(r.estimate, 3), round(r.ci_low, 3), round(r.p_value, 3)
    (0.12, -0.008, 0.051)
    """
    _check_alpha(alpha)
    if not isinstance(a, ProportionStats) or not isinstance(b, ProportionStats):
        raise TypeError("proportion_ztest needs ProportionStats for both arms")
    ma, mb = a.moments(), b.moments()
    est, var, ok, reason = lift_variance(ma, mb, relative)
    na, nb = _arr(a.n), _arr(b.n)
    with np.errstate(divide="ignore", invalid="ignore"):
        pooled = (_arr(a.sum) + _arr(b.sum)) / (na + nb)
        var0 = pooled * (1 - pooled) * (1 / na + 1 / nb)
        if relative:
            # Null "no lift" is the same event on both scales; rescale the
            # pooled variance so that statistic = estimate / se0 stays the
            # absolute pooled z.
            var0 = var0 / _arr(ma.mean) ** 2
    ok0 = np.isfinite(var0) & (var0 > 0)
    if np.any(ok & ~ok0):
        reason = "; ".join(filter(None, [reason, "no variation in the pooled data"]))
    ok = ok & ok0
    inf = np.full(np.shape(est), np.inf)
    return _finish(est, var, ok, reason, sps.norm, inf, alpha, alternative, relative,
                   "z-pooled", stat_var=np.where(ok0, var0, 1.0))


def holm(p_values: Any, alpha: float = 0.05) -> tuple[np.ndarray, np.ndarray]:
    """Holm's step-down correction across variants and metrics.

    Controls the family-wise error rate under any dependence between the
    tests, and is uniformly more powerful than Bonferroni. Matches
    ``statsmodels.stats.multitest.multipletests(p, alpha, method="holm")``.

    Parameters
    ----------
    p_values : array-like
        Raw p-values of one family (e.g. every variant on the primary metric).
    alpha : float
        Family-wise error rate.

    Returns
    -------
    reject : ndarray of bool
    adjusted : ndarray
        Holm-adjusted p-values, in the input order.

    Examples
    --------
    >>> reject, adj = holm([0.01, 0.04, 0.03])
    >>> reject.tolist(), adj.round(2).tolist()
    ([True, False, False], [0.03, 0.06, 0.06])
    """
    _check_alpha(alpha)
    p = np.asarray(p_values, dtype=float).ravel()
    if np.any(~np.isfinite(p)) or np.any((p < 0) | (p > 1)):
        raise ValueError("p-values must be finite and in [0, 1]")
    m = p.size
    if m == 0:
        return np.zeros(0, dtype=bool), np.zeros(0)
    order = np.argsort(p, kind="mergesort")
    ps = p[order]
    factors = m - np.arange(m)
    adj_sorted = np.minimum(np.maximum.accumulate(factors * ps), 1.0)
    # Reject the way statsmodels does (compare p to alpha / k), so that the
    # two agree even when a product lands on alpha up to rounding.
    notreject = ps > alpha / factors
    reject_sorted = ~np.maximum.accumulate(notreject)
    reject, adj = np.empty(m, dtype=bool), np.empty(m)
    reject[order], adj[order] = reject_sorted, adj_sorted
    return reject, adj
