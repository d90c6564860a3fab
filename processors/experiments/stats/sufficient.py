"""Per-variant sufficient statistics: what the stream and the database keep.

Every test in this package needs only a handful of running sums per variant,
never the raw events, so a stream processor can keep one small record per
(experiment, variant, metric) and merge records with ``+`` (per partition,
per minute, per day: addition is associative and commutative).

* :class:`MeanStats`: ``n``, ``sum``, ``sum_sq`` (cost, tokens, latency per unit)
* :class:`ProportionStats`: ``n``, ``sum`` = units with the event (thumbs-up)
* :class:`RatioStats`: numerator and denominator sums, their squares and
  cross product (cost per request, tokens per conversation)
* :class:`CovariateStats`: the metric's sums plus a pre-period covariate's
  sum, sum of squares and cross product (for CUPED)

Fields may be scalars or numpy arrays of one shape: every property and every
test broadcasts, which is how the simulations in the tests run a thousand
experiments at once.

A unit is whatever was randomised (a user, a conversation): ``n`` counts
units, and each unit contributes one value (its total over the experiment) to
``sum`` and ``sum_sq``. Per-event values from units seen several times belong
in :class:`RatioStats` (events per unit as the denominator), otherwise the
variance is underestimated.

Examples
--------
>>> a = MeanStats.from_values([1.0, 2.0, 3.0])
>>> b = MeanStats.from_values([4.0, 5.0])
>>> (a + b).n, (a + b).mean, (a + b).variance
(5.0, 3.0, 2.5)
"""
from __future__ import annotations

from dataclasses import dataclass, fields
from typing import Any, Protocol, Union

import numpy as np

__all__ = [
    "ArmMoments",
    "CovariateStats",
    "MeanStats",
    "ProportionStats",
    "RatioStats",
    "as_moments",
]

ArrayLike = Union[float, np.ndarray]


def _arr(x: Any) -> np.ndarray:
    return np.asarray(x, dtype=float)


def _out(x: Any) -> ArrayLike:
    """A Python float for a scalar, an array otherwise (keeps doctests short)."""
    a = np.asarray(x, dtype=float)
    return float(a) if a.ndim == 0 else a


def _safe_div(num: Any, den: Any, default: float = 0.0) -> np.ndarray:
    num, den = np.broadcast_arrays(_arr(num), _arr(den))
    out = np.full(num.shape, default, dtype=float)
    np.divide(num, den, out=out, where=den != 0)
    return out


def _sample_var(n: Any, s: Any, ss: Any) -> np.ndarray:
    """Unbiased variance from sums; 0 below two units, never negative.

    ``ss - s**2 / n`` cancels badly when the mean is huge next to the spread
    (say epoch timestamps); keep metrics in natural units (ms, tokens, USD).
    Rounding can then still leave a tiny negative number, clipped to 0.
    """
    n, s, ss = np.broadcast_arrays(_arr(n), _arr(s), _arr(ss))
    big = n >= 2
    out = np.zeros(n.shape)
    np.divide(ss - _safe_div(s * s, n), n - 1, out=out, where=big)
    return np.maximum(out, 0.0)


def _sample_cov(n: Any, sx: Any, sy: Any, sxy: Any) -> np.ndarray:
    n, sx, sy, sxy = np.broadcast_arrays(_arr(n), _arr(sx), _arr(sy), _arr(sxy))
    out = np.zeros(n.shape)
    np.divide(sxy - _safe_div(sx * sy, n), n - 1, out=out, where=n >= 2)
    return out


@dataclass(frozen=True)
class ArmMoments:
    """One arm as every test sees it: units, mean and per-unit variance.

    Parameters
    ----------
    n : float or ndarray
        Number of units.
    mean : float or ndarray
        Estimate of the arm's metric (for CUPED, the adjusted mean).
    variance : float or ndarray
        Per-unit variance, so that ``variance / n`` is the variance of ``mean``.
    base_mean : float or ndarray, optional
        The unadjusted mean, used as the denominator of a relative lift.
        Differs from ``mean`` only after CUPED; defaults to ``mean``.

    Examples
    --------
    >>> ArmMoments(n=100, mean=2.0, variance=4.0).base_mean
    2.0
    """

    n: ArrayLike
    mean: ArrayLike
    variance: ArrayLike
    base_mean: ArrayLike | None = None

    def __post_init__(self) -> None:
        if self.base_mean is None:
            object.__setattr__(self, "base_mean", self.mean)

    def moments(self) -> ArmMoments:
        return self


class _HasMoments(Protocol):
    def moments(self) -> ArmMoments: ...


def as_moments(x: _HasMoments) -> ArmMoments:
    """The :class:`ArmMoments` of any statistics container (or moments)."""
    try:
        return x.moments()
    except AttributeError:
        raise TypeError(
            f"expected a statistics container or ArmMoments, got {type(x).__name__}"
        ) from None


class _Sums:
    """Shared behaviour: merge with ``+``, export to plain dicts for storage."""

    def __add__(self, other: Any) -> Any:
        if type(other) is not type(self):
            return NotImplemented
        return type(self)(
            **{f.name: _out(_arr(getattr(self, f.name)) + _arr(getattr(other, f.name)))
               for f in fields(self)}  # type: ignore[arg-type]
        )

    def to_dict(self) -> dict[str, Any]:
        """Plain floats (or lists for arrays), e.g. for a database row."""
        out = {}
        for f in fields(self):  # type: ignore[arg-type]
            v = np.asarray(getattr(self, f.name), dtype=float)
            out[f.name] = float(v) if v.ndim == 0 else v.tolist()
        return out

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> Any:
        return cls(**{f.name: d[f.name] for f in fields(cls)})  # type: ignore[arg-type]

    @classmethod
    def empty(cls) -> Any:
        """All sums zero: the start of a running aggregate."""
        return cls(**{f.name: 0.0 for f in fields(cls)})  # type: ignore[arg-type]


@dataclass(frozen=True)
class MeanStats(_Sums):
    """Sums for a mean metric (one value per unit).

    Examples
    --------
    >>> s = MeanStats(n=4, sum=10.0, sum_sq=30.0)
    >>> s.mean, round(s.variance, 4)
    (2.5, 1.6667)
    >>> MeanStats.empty().variance   # no NaN, even with no data
    0.0
    """

    n: ArrayLike
    sum: ArrayLike
    sum_sq: ArrayLike

    @classmethod
    def from_values(cls, values: Any, axis: int = -1) -> MeanStats:
        """Sums over ``axis`` of raw values (tests, backfills)."""
        x = _arr(values)
        n = np.full(np.sum(x, axis=axis).shape, x.shape[axis], dtype=float)
        return cls(n=_out(n), sum=_out(x.sum(axis=axis)), sum_sq=_out((x * x).sum(axis=axis)))

    @property
    def mean(self) -> ArrayLike:
        return _out(_safe_div(self.sum, self.n))

    @property
    def variance(self) -> ArrayLike:
        return _out(_sample_var(self.n, self.sum, self.sum_sq))

    def moments(self) -> ArmMoments:
        return ArmMoments(n=_out(self.n), mean=self.mean, variance=self.variance)


@dataclass(frozen=True)
class ProportionStats(_Sums):
    """Units and units with the event, for a rate (conversion, thumbs-up).

    The variance is ``p (1 - p)``: the binomial variance that the two-proportion
    z-test and GrowthBook use.

    Examples
    --------
    >>> ProportionStats(n=200, sum=50).mean
    0.25
    """

    n: ArrayLike
    sum: ArrayLike

    @classmethod
    def from_values(cls, values: Any, axis: int = -1) -> ProportionStats:
        x = _arr(values)
        n = np.full(np.sum(x, axis=axis).shape, x.shape[axis], dtype=float)
        return cls(n=_out(n), sum=_out(x.sum(axis=axis)))

    @property
    def mean(self) -> ArrayLike:
        return _out(_safe_div(self.sum, self.n))

    @property
    def variance(self) -> ArrayLike:
        p = _arr(self.mean)
        return _out(p * (1.0 - p))

    def moments(self) -> ArmMoments:
        return ArmMoments(n=_out(self.n), mean=self.mean, variance=self.variance)


@dataclass(frozen=True)
class RatioStats(_Sums):
    """Sums for a ratio metric: numerator over denominator, both per unit.

    Cost per request is ``sum of cost / sum of requests`` over units (users);
    its per-unit variance comes from the delta method (Deng, Knoblich and Lu,
    2018), which accounts for requests of one user being correlated.

    Examples
    --------
    >>> r = RatioStats.from_values([2.0, 3.0, 5.0], [1.0, 1.0, 2.0])
    >>> r.mean, round(r.variance, 4)
    (2.5, 0.1406)
    """

    n: ArrayLike
    num_sum: ArrayLike
    num_sum_sq: ArrayLike
    den_sum: ArrayLike
    den_sum_sq: ArrayLike
    num_den_sum: ArrayLike

    @classmethod
    def from_values(cls, num: Any, den: Any, axis: int = -1) -> RatioStats:
        x, y = _arr(num), _arr(den)
        n = np.full(np.sum(x, axis=axis).shape, x.shape[axis], dtype=float)
        return cls(
            n=_out(n),
            num_sum=_out(x.sum(axis=axis)),
            num_sum_sq=_out((x * x).sum(axis=axis)),
            den_sum=_out(y.sum(axis=axis)),
            den_sum_sq=_out((y * y).sum(axis=axis)),
            num_den_sum=_out((x * y).sum(axis=axis)),
        )

    @property
    def numerator(self) -> MeanStats:
        return MeanStats(self.n, self.num_sum, self.num_sum_sq)

    @property
    def denominator(self) -> MeanStats:
        return MeanStats(self.n, self.den_sum, self.den_sum_sq)

    @property
    def mean(self) -> ArrayLike:
        """``num_sum / den_sum``; 0 when the denominator sum is 0."""
        return _out(_safe_div(self.num_sum, self.den_sum))

    @property
    def covariance(self) -> ArrayLike:
        return _out(_sample_cov(self.n, self.num_sum, self.den_sum, self.num_den_sum))

    @property
    def variance(self) -> ArrayLike:
        """Delta-method per-unit variance: ``n * Var(ratio)``; 0 when undefined.

        ``Var(M)/mu_d^2 - 2 Cov(M, D) mu_m/mu_d^3 + mu_m^2 Var(D)/mu_d^4``,
        the same expression as GrowthBook's ``RatioStatistic``.
        """
        mm, md = _arr(self.numerator.mean), _arr(self.denominator.mean)
        vm, vd = _arr(self.numerator.variance), _arr(self.denominator.variance)
        cov = _arr(self.covariance)
        ok = (md != 0) & (_arr(self.n) >= 2)
        with np.errstate(divide="ignore", invalid="ignore"):
            v = vm / md**2 - 2 * cov * mm / md**3 + mm**2 * vd / md**4
        return _out(np.where(ok, np.maximum(v, 0.0), 0.0))

    def moments(self) -> ArmMoments:
        return ArmMoments(n=_out(self.n), mean=self.mean, variance=self.variance)


@dataclass(frozen=True)
class CovariateStats(_Sums):
    """Sums for a mean metric plus a pre-experiment covariate, for CUPED.

    ``pre`` is the same metric (or a correlated one) for the same unit before
    it was exposed; a unit with no history contributes 0. Without CUPED this
    behaves as the :class:`MeanStats` of the metric alone.

    Examples
    --------
    >>> c = CovariateStats.from_values([1.0, 2.0, 4.0], [1.0, 2.0, 3.0])
    >>> round(c.mean, 4), c.covariance
    (2.3333, 1.5)
    """

    n: ArrayLike
    sum: ArrayLike
    sum_sq: ArrayLike
    pre_sum: ArrayLike
    pre_sum_sq: ArrayLike
    cross_sum: ArrayLike

    @classmethod
    def from_values(cls, post: Any, pre: Any, axis: int = -1) -> CovariateStats:
        x, y = _arr(post), _arr(pre)
        n = np.full(np.sum(x, axis=axis).shape, x.shape[axis], dtype=float)
        return cls(
            n=_out(n),
            sum=_out(x.sum(axis=axis)),
            sum_sq=_out((x * x).sum(axis=axis)),
            pre_sum=_out(y.sum(axis=axis)),
            pre_sum_sq=_out((y * y).sum(axis=axis)),
            cross_sum=_out((x * y).sum(axis=axis)),
        )

    @property
    def post(self) -> MeanStats:
        return MeanStats(self.n, self.sum, self.sum_sq)

    @property
    def pre(self) -> MeanStats:
        return MeanStats(self.n, self.pre_sum, self.pre_sum_sq)

    @property
    def mean(self) -> ArrayLike:
        return self.post.mean

    @property
    def covariance(self) -> ArrayLike:
        """Sample covariance of metric and covariate within this arm."""
        return _out(_sample_cov(self.n, self.sum, self.pre_sum, self.cross_sum))

    def moments(self) -> ArmMoments:
        """Unadjusted moments; see :func:`~.cuped.cuped_adjust` for CUPED."""
        return self.post.moments()
