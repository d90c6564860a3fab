"""Power and sample size: how many units before the verdict can be trusted.

For a difference of means with per-unit variance ``sigma^2`` in both arms,
``n_b = ratio * n_a`` and a two-sided level-``alpha`` z-test, the control arm
needs

    n_a = (z_{1-alpha/2} + z_{power})^2 * sigma^2 * (1 + 1/ratio) / effect^2

units (the usual closed form; it ignores the far tail's ~1e-6 contribution,
which is why ``statsmodels``' numerical ``NormalIndPower.solve_power`` agrees
to about 1e-6 rather than exactly). :func:`power` is the exact normal power,
equal to ``NormalIndPower().power``.

A sequential test pays for the freedom to peek with a wider interval;
:func:`sequential_sample_size` solves for the size at which an effect of
``effect`` is detected with probability ``power`` at that single final look.
Earlier looks can only add detections, so it is conservative.

Examples
--------
>>> import math
>>> math.ceil(sample_size(variance=1.0, effect=0.1))
1570
>>> round(power(1570, variance=1.0, effect=0.1), 3)
0.8
"""
from __future__ import annotations

from typing import Any

import numpy as np
from scipy import stats as sps

from .frequentist import _check_alpha
from .sequential import DEFAULT_TUNING, rho_for_tuning
from .sufficient import ArrayLike, _arr, _out

__all__ = ["power", "sample_size", "sequential_sample_size"]


def _checks(alpha: float, power_: float | None, ratio: Any) -> None:
    _check_alpha(alpha)
    if power_ is not None and not 0.0 < power_ < 1.0:
        raise ValueError(f"power must be in (0, 1), got {power_}")
    if np.any(_arr(ratio) <= 0):
        raise ValueError("ratio must be positive")


def power(
    n: Any, variance: Any, effect: Any, *, alpha: float = 0.05, ratio: Any = 1.0
) -> ArrayLike:
    """Power of the two-sided z-test with ``n`` control and ``ratio * n`` variant units.

    Examples
    --------
    >>> round(power(100, variance=4.0, effect=1.0), 3)
    0.942
    """
    _checks(alpha, None, ratio)
    n, v, d, r = _arr(n), _arr(variance), np.abs(_arr(effect)), _arr(ratio)
    with np.errstate(divide="ignore", invalid="ignore"):
        z = d / np.sqrt(v * (1.0 / n + 1.0 / (r * n)))
    z = np.where(np.isfinite(z), z, np.where(d > 0, np.inf, 0.0))
    crit = sps.norm.isf(alpha / 2.0)
    return _out(sps.norm.sf(crit - z) + sps.norm.cdf(-crit - z))


def sample_size(
    variance: Any,
    effect: Any,
    *,
    alpha: float = 0.05,
    power: float = 0.8,
    ratio: Any = 1.0,
) -> ArrayLike:
    """Control-arm units for a fixed-horizon two-sided test (not rounded).

    Parameters
    ----------
    variance : float or ndarray
        Per-unit variance (control's; CUPED-adjusted when CUPED is used).
    effect : float or ndarray
        Smallest absolute difference worth detecting.
    alpha, power : float
    ratio : float
        Variant units per control unit (``weight_b / weight_a``).

    Returns
    -------
    float or ndarray
        ``inf`` for a zero effect, 0 for zero variance.
    """
    _checks(alpha, power, ratio)
    v, d, r = _arr(variance), np.abs(_arr(effect)), _arr(ratio)
    z = sps.norm.isf(alpha / 2.0) + sps.norm.ppf(power)
    with np.errstate(divide="ignore", invalid="ignore"):
        n = z**2 * v * (1.0 + 1.0 / r) / d**2
    return _out(np.where(d > 0, np.where(v > 0, n, 0.0), np.inf))


def sequential_sample_size(
    variance: Any,
    effect: Any,
    *,
    alpha: float = 0.05,
    power: float = 0.8,
    ratio: Any = 1.0,
    tuning: float = DEFAULT_TUNING,
) -> ArrayLike:
    """Control-arm units for :func:`~.sequential.sequential_ttest` (not rounded).

    Solves ``effect = half_width(n) + z_power * se(n)`` by bisection on
    ``log n``, where ``half_width`` is the confidence sequence's.

    Examples
    --------
    >>> import math
    >>> math.ceil(sequential_sample_size(1.0, 0.1))   # vs 1570 fixed-horizon
    3009
    """
    _checks(alpha, power, ratio)
    v, d, r = np.broadcast_arrays(_arr(variance), np.abs(_arr(effect)), _arr(ratio))
    rho = rho_for_tuning(tuning, alpha)
    zb = sps.norm.ppf(power)
    solvable = (d > 0) & (v > 0)
    v = np.where(solvable, v, 1.0)

    log_alpha = np.log(alpha)

    def gap(n: np.ndarray) -> np.ndarray:
        # mixture_half_width inlined: this runs 50 times per call
        var_est = v * (1.0 / n + 1.0 / (r * n))
        tau2 = rho**2 * n * (1.0 + r) * var_est
        half = np.sqrt(2.0 * var_est * (var_est + tau2) / tau2
                       * (0.5 * np.log((var_est + tau2) / var_est) - log_alpha))
        return d - half - zb * np.sqrt(var_est)

    lo = np.zeros(v.shape)           # log n
    hi = np.full(v.shape, np.log(1e15))
    for _ in range(50):  # log n to 35 / 2^50 ~ 3e-14: far below one unit
        mid = 0.5 * (lo + hi)
        up = gap(np.exp(mid)) < 0
        lo, hi = np.where(up, mid, lo), np.where(up, hi, mid)
    n = np.exp(hi)
    return _out(np.where(solvable, n, np.where(d > 0, 0.0, np.inf)))
