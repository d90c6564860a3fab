"""Bayesian read-out: chance to beat control and expected loss (risk).

As in GrowthBook's ``gbstats`` (``EffectBayesianABTest``), the lift is
approximated as normal with the frequentist estimate and delta-method
variance (flat prior), optionally combined with a normal prior on the lift.
Everything is closed form and vectorised:

* chance to beat control ``P(lift > 0) = Phi(mu / sigma)``;
* risk of shipping the variant ``E[max(-lift, 0)] = sigma phi(mu/sigma) - mu Phi(-mu/sigma)``;
* risk of keeping control ``E[max(lift, 0)] = sigma phi(mu/sigma) + mu Phi(mu/sigma)``.

Risk is in the lift's units (a fraction of the control mean when relative):
"if we ship and we are wrong, we lose on average this much". Use it with a
threshold (say ship when chance >= 95% and risk < 0.25%); it does not control
a false-positive rate, and the normal approximation needs the same sample
sizes as the t-test.

References
----------
.. [1] GrowthBook (2023). gbstats, ``bayesian/tests.py``; Stucchio, C.
   (2015). Bayesian A/B testing at VWO (expected loss).

Examples
--------
>>> from processors.experiments.stats.sufficient import ProportionStats
>>> r = bayesian_test(ProportionStats(5000, 500), ProportionStats(5000, 560))
>>> round(r.chance_to_win, 3), round(r.risk_variant, 4)
(0.967, 0.0008)
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
from scipy import stats as sps

from .frequentist import _check_alpha, lift_variance
from .sufficient import ArrayLike, _arr, _out, as_moments

__all__ = ["BayesianResult", "GaussianPrior", "bayesian_test", "normal_risk"]


@dataclass(frozen=True)
class GaussianPrior:
    """Normal prior on the lift, on the same scale as the lift tested.

    ``proper=False`` (the default) is the flat prior: the posterior is the
    normal approximation of the data alone.
    """

    mean: float = 0.0
    variance: float = 1.0
    proper: bool = False


@dataclass(frozen=True)
class BayesianResult:
    """Posterior of the lift of variant over control.

    ``risk_variant`` is the expected loss of shipping the variant,
    ``risk_control`` of keeping control, both already flipped for metrics
    where lower is better (``inverse``).
    """

    expected: ArrayLike
    std: ArrayLike
    ci_low: ArrayLike
    ci_high: ArrayLike
    chance_to_win: ArrayLike
    risk_control: ArrayLike
    risk_variant: ArrayLike
    relative: bool
    ok: Any
    reason: str


def normal_risk(mu: Any, sigma: Any) -> tuple[ArrayLike, ArrayLike]:
    """``(E[max(X, 0)], E[max(-X, 0)])`` for ``X ~ N(mu, sigma^2)``.

    Examples
    --------
    >>> [round(x, 4) for x in normal_risk(0.0, 1.0)]
    [0.3989, 0.3989]
    """
    mu, sigma = _arr(mu), _arr(sigma)
    with np.errstate(divide="ignore", invalid="ignore"):
        z = mu / sigma
    pdf = sps.norm.pdf(z)
    gain = sigma * pdf + mu * sps.norm.cdf(z)
    loss = sigma * pdf - mu * sps.norm.cdf(-z)
    # Rounding can leave -1e-17 far in a tail; a risk is never negative.
    return _out(np.maximum(gain, 0.0)), _out(np.maximum(loss, 0.0))


def bayesian_test(
    a: Any,
    b: Any,
    *,
    relative: bool = True,
    inverse: bool = False,
    prior: GaussianPrior | None = None,
    alpha: float = 0.05,
) -> BayesianResult:
    """Chance to beat control and risk for variant ``b`` against control ``a``.

    Parameters
    ----------
    a, b : statistics container or ArmMoments
        Control and variant (CUPED-adjusted moments work too).
    relative : bool
        Posterior of the relative lift (default, as GrowthBook) or absolute.
    inverse : bool
        True when lower is better (latency, cost, error rate).
    prior : GaussianPrior, optional
        Prior on the lift; flat when omitted.
    alpha : float
        The credible interval is ``1 - alpha``.

    Examples
    --------
    >>> from processors.experiments.stats.sufficient import ArmMoments
    >>> r = bayesian_test(ArmMoments(1000, 2.0, 1.0), ArmMoments(1000, 1.9, 1.0),
    ...                   inverse=True)
    >>> round(r.chance_to_win, 3), round(r.expected, 3)
    (0.989, -0.05)
    """
    _check_alpha(alpha)
    prior = prior or GaussianPrior()
    if prior.proper and not prior.variance > 0:
        raise ValueError("a proper prior needs a positive variance")
    ma, mb = as_moments(a), as_moments(b)
    est, var, ok, reason = lift_variance(ma, mb, relative)
    if prior.proper:
        prec = 1.0 / var + 1.0 / prior.variance
        mu = (est / var + prior.mean / prior.variance) / prec
    else:
        prec = 1.0 / var
        mu = est
    with np.errstate(divide="ignore"):
        sd = np.sqrt(1.0 / prec)
    sd_ok = np.where(ok, sd, 1.0)
    chance = sps.norm.sf(0.0, loc=mu, scale=sd_ok)
    gain, loss = (_arr(x) for x in normal_risk(mu, sd_ok))
    if inverse:
        chance = 1.0 - chance
        gain, loss = loss, gain
    q = sps.norm.ppf(1.0 - alpha / 2.0)
    return BayesianResult(
        expected=_out(np.where(ok, mu, est)),
        std=_out(np.where(ok, sd, np.inf)),
        ci_low=_out(np.where(ok, mu - q * sd_ok, -np.inf)),
        ci_high=_out(np.where(ok, mu + q * sd_ok, np.inf)),
        chance_to_win=_out(np.where(ok, chance, 0.5)),
        risk_control=_out(np.where(ok, gain, 0.0)),
        risk_variant=_out(np.where(ok, loss, 0.0)),
        relative=relative,
        ok=bool(ok) if np.ndim(ok) == 0 else ok,
        reason=reason,
    )
