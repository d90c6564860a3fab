"""Expected value and band of a point: the values an ensemble would not flag.

An :class:`~processors.anomaly.ensemble.Ensemble` scores a point by the
largest of its members' breakout scores, so the values it would *not* flag
at threshold ``t`` are the intersection of each member's band. A member's
statistic is affine in the value (the value itself, value - a median,
a mean including the value - a median), and its score reaches ``t`` at
``tolerance' * t / (1 - t)`` of its range beyond that range (see
:class:`~processors.anomaly._stats.Breakout`), so each band is found by
evaluating the statistic at two values, without touching the detector's
state. The ensemble's evidence weighting (low-count points pulled towards
the recent median) is undone, so the band is in the metric's own units and
is wider for a point with few events behind it.

This reads the detectors' internals (``_statistic``, ``_breakout``,
``_weighted``); ``tests/unit/test_anomaly_processor.py`` checks that a value
just outside the band scores at or above ``t`` and one just inside below it.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

from processors.anomaly.detectors import VALUE, LocalDeviation, RangeBreakout, SeasonalBaseline
from processors.anomaly.ensemble import Ensemble


@dataclass(frozen=True)
class Band:
    """What the detector expected, and the range it would not flag."""

    expected: float
    lower: float
    upper: float


def expected_band(ensemble: Ensemble, x: dict, threshold: float) -> Band | None:
    """The band of ``x``'s window (``None`` while no member is scoring yet).

    ``expected`` is the seasonal baseline when it is ready, else the median
    of the last hour, else the ensemble's recent median.

    Examples
    --------
    >>> from processors.anomaly.detectors import RangeBreakout
    >>> ens = Ensemble([RangeBreakout(tolerance=0.1, grace=3, young=0)])
    >>> for v in (10.0, 12.0, 11.0):
    ...     ens.learn_one({"value": v})
    >>> b = expected_band(ens, {"value": 11.0}, 0.5)
    >>> round(b.lower, 6), round(b.upper, 6), b.expected
    (9.8, 12.2, 11.0)
    """
    xw = ensemble._weighted(x)
    value, weighted = x[VALUE], xw[VALUE]
    centre = ensemble._median.get()
    # Undo the evidence weighting xw = m + (x - m) * w (w = 1 when unweighted).
    w = 1.0 if centre is None or value == centre else (weighted - centre) / (value - centre)
    if not w > 0.0:
        w = 1.0
    lower, upper = -math.inf, math.inf
    expectations: dict[type, float] = {}
    odds = threshold / (1.0 - threshold)
    for member in ensemble.detectors:
        line = _affine(member, xw)
        edges = _statistic_edges(member, line, odds)
        if line is None or edges is None:
            continue
        slope, intercept = line
        lower = max(lower, (edges[0] - intercept) / slope)
        upper = min(upper, (edges[1] - intercept) / slope)
        if not isinstance(member, RangeBreakout):
            expectations.setdefault(type(member), -intercept / slope)
    if lower == -math.inf and upper == math.inf:
        return None
    expected = expectations.get(SeasonalBaseline, expectations.get(LocalDeviation, centre))
    if expected is None:
        expected = 0.5 * (lower + upper) if math.isfinite(lower + upper) else value

    def raw(v: float) -> float:
        return v if centre is None or not math.isfinite(v) else centre + (v - centre) / w

    lower, upper, expected = raw(lower), raw(upper), raw(expected)
    # Members can disagree (a fresh level shift inside the five-week range):
    # keep the band around what is expected.
    return Band(expected, min(lower, expected), max(upper, expected))


def level_band(ensemble: Ensemble, threshold: float) -> Band | None:
    """The band of a smoothed :class:`LocalDeviation` (the drift detector): for the *mean*.

    Its statistic is the mean of the last ``smooth`` points minus the median
    of the ``window`` before; expressed per point the band would be
    ``smooth`` times as wide and centred far off, so it is reported for the
    mean instead: ``expected`` is the median, the band the means the
    detector would not flag.

    >>> from processors.anomaly.ensemble import drift_detector
    >>> level_band(drift_detector(step=3600), 0.5) is None  # nothing learned yet
    True
    """
    member = ensemble.detectors[0]
    centre = member._median.get()
    edges = _statistic_edges(member, (1.0, 0.0), threshold / (1.0 - threshold))
    if centre is None or edges is None:
        return None
    return Band(centre, centre + min(edges[0], 0.0), centre + max(edges[1], 0.0))


def _affine(member, xw: dict) -> tuple[float, float] | None:
    """(slope, intercept) of the member's statistic as a function of the value."""
    v = xw[VALUE]
    step = 1.0 + abs(v)
    s0 = member._statistic(xw)
    if s0 is None:
        return None
    s1 = member._statistic({**xw, VALUE: v + step})
    slope = (s1 - s0) / step
    if not slope > 0.0:
        return None
    return slope, s0 - slope * v


def _statistic_edges(member, line, odds: float) -> tuple[float, float] | None:
    """Statistic values where the member's score reaches the threshold."""
    if line is None:
        return None
    b = member._breakout
    r = b.range
    if r.n < b.grace or r.n == 0:
        return None  # not scoring yet: no band from this member
    lo, hi = r.min, r.max
    span = hi - lo
    if span <= 0.0:
        span = 1e-9 * abs(hi) or 1e-300
    tol = b.tolerance * (1.0 + b.young / r.n) if b.young else b.tolerance
    reach = span * (b.margin + tol * odds)
    return lo - reach, hi + reach


__all__ = ["Band", "expected_band", "level_band"]
