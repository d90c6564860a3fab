"""Sequential tests: p-values and intervals that stay valid under peeking.

A dashboard that recomputes a fixed-horizon p-value every minute and stops at
the first ``p < 0.05`` has a false-positive rate far above 5% (about 25% with
20 looks; see the tests). The tests here bound the probability that the
p-value *ever* falls below ``alpha``, at any number of looks, so an
experiment may be stopped the moment ``p_value < alpha`` or the interval
excludes 0.

Both tests are the normal-mixture sequential probability ratio test: the
likelihood ratio of "lift ~ N(0, tau^2)" against "lift = 0", given an
estimate with variance ``v``, is

    Lambda = sqrt(v / (v + tau^2)) * exp(tau^2 * est^2 / (2 v (v + tau^2)))

and ``p = min(1, 1 / Lambda)``; by Ville's inequality
``P(sup_n Lambda_n >= 1/alpha) <= alpha``. Inverting it gives the confidence
sequence ``est +- sqrt(2 v (v + tau^2) / tau^2 * log(sqrt((v + tau^2)/v) / alpha))``.

* :func:`msprt` fixes the mixing variance ``tau^2`` on the scale of the lift
  (Johari, Koomen, Pekelis and Walsh 2017; Optimizely's stats engine).
* :func:`sequential_ttest` lets ``tau^2`` grow with the data,
  ``tau^2 = rho^2 * N * v``, which is the asymptotic confidence sequence of
  Waudby-Smith, Arnold, Wu, Ramdas et al. (2023, eq. 9) that GrowthBook uses;
  ``rho`` is tuned so the interval is tightest at ``N = tuning`` units
  (eq. 161). Asymptotic: valid for large samples with an estimated variance,
  the regime of LLM-app experiments.

The instantaneous p-value already has the always-valid property (reject the
first time it is ``<= alpha``). Keeping the running minimum of p, or the
running intersection of the intervals, across looks is also valid if a
stored series should never move backwards.

References
----------
.. [1] Johari, R., Koomen, P., Pekelis, L., Walsh, D. (2017). Peeking at A/B
   tests: why it matters, and what to do about it. KDD. (Extended as "Always
   valid inference", Operations Research 70(3), 2022.)
.. [2] Waudby-Smith, I., Arbour, D., Sinha, R., Kennedy, E. H., Ramdas, A.
   (2023). Time-uniform central limit theory and asymptotic confidence
   sequences. arXiv:2103.06476 (v7), eq. 9 and 161.
.. [3] Robbins, H. (1970). Statistical methods related to the law of the
   iterated logarithm. Annals of Mathematical Statistics 41.

Examples
--------
>>> from processors.experiments.stats.sufficient import ArmMoments
>>> a, b = ArmMoments(4000, 10.0, 25.0), ArmMoments(4000, 10.4, 25.0)
>>> r = sequential_ttest(a, b)
>>> round(r.p_value, 4), round(r.ci_low, 3), round(r.ci_high, 3)
(0.0098, 0.059, 0.741)
"""
from __future__ import annotations

from typing import Any

import numpy as np

from .frequentist import LiftResult, _check_alpha, lift_variance
from .sufficient import ArrayLike, _arr, _out, as_moments

__all__ = [
    "mixture_half_width",
    "mixture_p_value",
    "msprt",
    "rho_for_tuning",
    "sequential_ttest",
]

#: GrowthBook's default: the confidence sequence is tightest near 5,000 units.
DEFAULT_TUNING = 5000.0


def rho_for_tuning(tuning: float, alpha: float = 0.05) -> float:
    """Mixing parameter that makes the sequence tightest at ``tuning`` units.

    Waudby-Smith et al. (2023), eq. 161.

    Examples
    --------
    >>> round(rho_for_tuning(5000), 5)
    0.03984
    """
    _check_alpha(alpha)
    if tuning <= 0:
        raise ValueError("tuning must be positive")
    la = -2.0 * np.log(alpha)
    return float(np.sqrt((la + np.log(la + 1.0)) / tuning))


def mixture_p_value(estimate: Any, variance: Any, tau2: Any, null: float = 0.0) -> ArrayLike:
    """Sequential p-value ``min(1, 1/Lambda)`` of the normal-mixture SPRT.

    Computed on the log scale so huge effects give 0, not an overflow.

    Examples
    --------
    >>> round(mixture_p_value(0.1, 0.001, 0.01), 4)
    0.0352
    """
    est, v, t2 = _arr(estimate) - null, _arr(variance), _arr(tau2)
    with np.errstate(divide="ignore", invalid="ignore", over="ignore", under="ignore"):
        log_lr = 0.5 * np.log(v / (v + t2)) + t2 * est**2 / (2.0 * v * (v + t2))
        p = np.exp(-np.maximum(log_lr, 0.0))
    return _out(np.where(np.isfinite(p), p, 1.0))


def mixture_half_width(variance: Any, tau2: Any, alpha: float = 0.05) -> ArrayLike:
    """Half-width of the normal-mixture confidence sequence.

    Examples
    --------
    >>> round(mixture_half_width(0.001, 0.01), 4)
    0.0961
    """
    _check_alpha(alpha)
    v, t2 = _arr(variance), _arr(tau2)
    with np.errstate(divide="ignore", invalid="ignore", over="ignore"):
        hw = np.sqrt(2.0 * v * (v + t2) / t2 * (0.5 * np.log((v + t2) / v) - np.log(alpha)))
    return _out(np.where(np.isfinite(hw), hw, np.inf))


def _mixture_result(
    est: np.ndarray, var: np.ndarray, ok: np.ndarray, reason: str, tau2: np.ndarray,
    alpha: float, relative: bool, method: str,
) -> LiftResult:
    p = _arr(mixture_p_value(est, var, tau2))
    hw = _arr(mixture_half_width(var, tau2, alpha))
    se = np.sqrt(var)
    with np.errstate(divide="ignore", invalid="ignore"):
        stat = np.where(ok, est / se, 0.0)
    return LiftResult(
        estimate=_out(est),
        std_error=_out(np.where(ok, se, np.inf)),
        statistic=_out(stat),
        dof=_out(np.where(ok, np.inf, 0.0)),
        p_value=_out(np.where(ok, p, 1.0)),
        ci_low=_out(np.where(ok, est - hw, -np.inf)),
        ci_high=_out(np.where(ok, est + hw, np.inf)),
        alpha=alpha,
        relative=relative,
        method=method,
        ok=bool(ok) if np.ndim(ok) == 0 else ok,
        reason=reason,
    )


def sequential_ttest(
    a: Any,
    b: Any,
    *,
    relative: bool = False,
    alpha: float = 0.05,
    tuning: float = DEFAULT_TUNING,
) -> LiftResult:
    """Asymptotic confidence sequence and always-valid p-value for a lift.

    Waudby-Smith et al. (2023), eq. 9 (interval) and eq. 155 (p-value), with
    ``N = n_a + n_b`` and ``rho`` from :func:`rho_for_tuning`; the same
    numbers as GrowthBook's ``SequentialTwoSidedTTest``. Accepts the same
    inputs as :func:`~.frequentist.ttest` (means, proportions, ratios, CUPED
    moments).

    Parameters
    ----------
    a, b : statistics container or ArmMoments
        Control and variant.
    relative : bool
        Relative lift (delta method) instead of the difference.
    alpha : float
        Error rate over all looks, however many.
    tuning : float
        Total units at which the sequence is tightest; pick about the
        expected final size. Any value keeps the guarantee.

    Examples
    --------
    >>> from processors.experiments.stats.sufficient import MeanStats
    >>> r = sequential_ttest(MeanStats(4000, 40000.0, 500000.0),
    ...                      MeanStats(4000, 41600.0, 532640.0), relative=True)
    >>> round(r.estimate, 3), round(r.p_value, 4), round(r.ci_low, 4)
    (0.04, 0.0124, 0.0052)
    """
    _check_alpha(alpha)
    ma, mb = as_moments(a), as_moments(b)
    est, var, ok, reason = lift_variance(ma, mb, relative)
    rho = rho_for_tuning(tuning, alpha)
    n_total = _arr(ma.n) + _arr(mb.n)
    tau2 = rho**2 * n_total * np.where(ok, var, 1.0)
    return _mixture_result(est, var, ok, reason, tau2, alpha, relative, "waudby-smith-2023")


def msprt(
    a: Any,
    b: Any,
    *,
    tau: float,
    relative: bool = False,
    alpha: float = 0.05,
) -> LiftResult:
    """Mixture sequential probability ratio test (Johari et al. 2017).

    Normal mixture with fixed mixing standard deviation ``tau`` on the scale
    of the lift (absolute units, or a fraction when ``relative``). Johari et
    al. suggest taking ``tau`` from the spread of effects seen in past
    experiments; the minimum detectable effect is a reasonable start. The
    variance is plugged in from the data (their known-variance statistic).

    Examples
    --------
    >>> from processors.experiments.stats.sufficient import ArmMoments
    >>> r = msprt(ArmMoments(4000, 10.0, 25.0), ArmMoments(4000, 10.4, 25.0), tau=0.5)
    >>> round(r.p_value, 4)
    0.0103
    """
    _check_alpha(alpha)
    if not tau > 0:
        raise ValueError("tau must be positive")
    ma, mb = as_moments(a), as_moments(b)
    est, var, ok, reason = lift_variance(ma, mb, relative)
    tau2 = np.full(np.shape(est), float(tau) ** 2)
    return _mixture_result(est, var, ok, reason, tau2, alpha, relative, "msprt-johari-2017")
