"""CUPED: variance reduction with a pre-experiment covariate.

Each unit's metric ``Y`` is replaced by ``Y - theta (X - mean X)`` where ``X``
is the same unit's pre-experiment value. Because ``X`` was fixed before
assignment, the lift estimate stays unbiased, and its variance shrinks by the
factor ``1 - corr(X, Y)^2``: at a correlation of 0.7 an experiment needs about
half the users.

``theta = Cov(X, Y) / Var(X)`` is estimated from both arms pooled (control
and the variant being compared), from the sufficient statistics alone, as
GrowthBook's ``compute_theta`` does. The adjusted per-unit variance is
``Var(Y) + theta^2 Var(X) - 2 theta Cov(X, Y)`` within each arm. Relative
lifts divide by the *unadjusted* control mean.

Use it for metrics with history (returning users' cost, tokens, sessions);
for brand-new users the covariate is 0 for everyone, ``theta`` is 0 and the
result equals the plain t-test.

References
----------
.. [1] Deng, A., Xu, Y., Kohavi, R., Walker, T. (2013). Improving the
   sensitivity of online controlled experiments by utilizing pre-experiment
   data. WSDM.

Examples
--------
>>> from processors.experiments.stats.sufficient import CovariateStats
>>> a = CovariateStats.from_values([2.0, 4.0, 6.0, 9.0], [1.0, 2.0, 3.0, 4.0])
>>> b = CovariateStats.from_values([3.0, 5.0, 8.0, 9.0], [1.0, 2.0, 3.5, 4.0])
>>> ma, mb, theta = cuped_adjust(a, b)
>>> round(theta, 3), round(mb.mean - ma.mean, 3)
(2.157, 0.73)
"""
from __future__ import annotations

from typing import Any

import numpy as np

from .sufficient import (
    ArmMoments,
    ArrayLike,
    CovariateStats,
    _arr,
    _out,
    _safe_div,
    _sample_cov,
    _sample_var,
)

__all__ = ["cuped_adjust", "cuped_theta", "variance_reduction"]


def cuped_theta(a: CovariateStats, b: CovariateStats) -> ArrayLike:
    """Pooled regression slope of the metric on the covariate.

    The covariance and variance are those of the two arms pooled as one
    sample (not the within-arm average): the same as GrowthBook. 0 when the
    pooled covariate or metric has no variance.

    Examples
    --------
    >>> from processors.experiments.stats.sufficient import CovariateStats
    >>> cuped_theta(CovariateStats.from_values([1., 2.], [1., 2.]),
    ...             CovariateStats.from_values([3., 4.], [3., 4.]))
    1.0
    """
    n = _arr(a.n) + _arr(b.n)
    s, ss = _arr(a.sum) + _arr(b.sum), _arr(a.sum_sq) + _arr(b.sum_sq)
    ps, pss = _arr(a.pre_sum) + _arr(b.pre_sum), _arr(a.pre_sum_sq) + _arr(b.pre_sum_sq)
    cross = _arr(a.cross_sum) + _arr(b.cross_sum)
    var_pre = _sample_var(n, ps, pss)
    var_post = _sample_var(n, s, ss)
    cov = _sample_cov(n, s, ps, cross)
    theta = _safe_div(cov, var_pre)
    return _out(np.where((var_pre > 0) & (var_post > 0), theta, 0.0))


def _adjusted(s: CovariateStats, theta: np.ndarray, pre_center: np.ndarray) -> ArmMoments:
    post, pre = s.post, s.pre
    var = (_arr(post.variance) + theta**2 * _arr(pre.variance)
           - 2.0 * theta * _arr(s.covariance))
    return ArmMoments(
        n=_out(s.n),
        # Centring on the pooled covariate mean changes no difference between
        # arms but keeps each adjusted mean on the metric's own scale.
        mean=_out(_arr(post.mean) - theta * (_arr(pre.mean) - pre_center)),
        variance=_out(np.maximum(var, 0.0)),
        base_mean=post.mean,
    )


def cuped_adjust(
    a: CovariateStats, b: CovariateStats, theta: Any = None
) -> tuple[ArmMoments, ArmMoments, ArrayLike]:
    """CUPED-adjusted moments of control ``a`` and variant ``b``.

    Feed the result to :func:`~.frequentist.ttest`,
    :func:`~.sequential.sequential_ttest` or :func:`~.bayesian.bayesian_test`.

    Parameters
    ----------
    a, b : CovariateStats
        Control and variant.
    theta : float or ndarray, optional
        Slope to use; estimated with :func:`cuped_theta` when omitted.

    Returns
    -------
    moments_a, moments_b : ArmMoments
        Adjusted mean and variance, ``base_mean`` the unadjusted mean.
    theta : float or ndarray
    """
    if not isinstance(a, CovariateStats) or not isinstance(b, CovariateStats):
        raise TypeError("cuped_adjust needs CovariateStats for both arms")
    th = _arr(cuped_theta(a, b) if theta is None else theta)
    center = _safe_div(_arr(a.pre_sum) + _arr(b.pre_sum), _arr(a.n) + _arr(b.n))
    return _adjusted(a, th, center), _adjusted(b, th, center), _out(th)


def variance_reduction(a: CovariateStats, b: CovariateStats) -> ArrayLike:
    """Share of the lift's variance that CUPED removes (0 = none, 0.5 = half).

    Examples
    --------
    >>> import numpy as np
    >>> rng = np.random.default_rng(0)
    >>> x = rng.normal(10, 2, (2, 5000)); y = x + rng.normal(0, 1, (2, 5000))
    >>> a, b = (CovariateStats.from_values(y[i], x[i]) for i in range(2))
    >>> round(variance_reduction(a, b), 2)   # corr^2 = 4/5
    0.8
    """
    ma, mb, _ = cuped_adjust(a, b)
    adj = _safe_div(ma.variance, ma.n) + _safe_div(mb.variance, mb.n)
    raw = _safe_div(a.post.variance, a.n) + _safe_div(b.post.variance, b.n)
    return _out(np.where(raw > 0, 1.0 - _safe_div(adj, raw), 0.0))
