"""Univariate streaming anomaly detectors for metric series (river's contract).

Every detector reads one metric point ``x``, a dict with

* ``"value"``: the aggregated value (required);
* ``"t"``: its time in seconds (optional; :class:`SeasonalBaseline` counts
  points when it is absent);
* ``"count"``: how many events the value aggregates (optional; used by
  :class:`~processors.anomaly.ensemble.Ensemble`).

Call ``score_one(x)`` first, then ``learn_one(x)``. Each detector computes one
statistic per point - the value, or a residual from some baseline - and scores
it by :class:`~processors.anomaly._stats.Breakout`: how far it goes beyond
the range that statistic has shown over the last ``memory`` points. Scores
are in ``[0, 1)`` with **0.5 at ``tolerance`` beyond the range**, the same
meaning for every detector, so an ensemble can take the maximum and one
threshold can serve many series.

The detectors differ in the baseline, i.e. in what "unusual" means:

========================  ==============================================  ==========================
detector                  statistic                                       catches
========================  ==============================================  ==========================
:class:`RangeBreakout`    the value                                       spikes, jumps, cost swaps
:class:`LocalDeviation`   value - median of the last ``window`` points    spikes/drops vs. the
                                                                          current level
:class:`SeasonalBaseline` value - median of the same slot in past cycles  departures from the daily
                                                                          or weekly pattern
:class:`EWMAZ`            (value - EWMA) / EW standard deviation          the classic control chart
:class:`CUSUM`            S+ - S- of z-scores (Page 1954)                 level shifts
========================  ==============================================  ==========================

Slow creep needs a statistic compared with where it was *before* it began
to climb: ``lag`` (on :class:`LocalDeviation` and :class:`CUSUM`) keeps the
last ``lag`` values out of the range; see
:func:`~processors.anomaly.ensemble.drift_detector`.

State is plain Python (lists, deques, floats): detectors pickle, so a
restarted worker resumes from its checkpoint. None of them is random.
"""
from __future__ import annotations

import math
from collections import deque
from typing import Any

from river import base

from processors.anomaly._stats import Breakout, RollingMedian, median

VALUE, TIME, COUNT = "value", "t", "count"

# Long enough to hold a week of 1-minute points in view (10,080), short
# enough that a series that changed for good stops alerting within a week.
# (production_detector sets spans in time instead: 5 weeks.)
DEFAULT_MEMORY = 10_000
# Cold start: while a range has seen n points, a breakout must clear
# (1 + young / n) times the tolerance (see Breakout).
DEFAULT_YOUNG = 1000


class _BreakoutDetector(base.AnomalyDetector):
    """A statistic per point, scored by how far it breaks out of its recent range.

    Subclasses implement ``_statistic(x)`` (``None`` while the baseline is not
    ready) and ``_update(x)``. The statistic computed by ``score_one`` is
    reused by the following ``learn_one`` on the same ``x``.
    """

    tolerance: float
    memory: int | None
    grace: int
    young: int

    def _init_breakout(self, lag: int = 0) -> None:
        self._breakout = Breakout(self.tolerance, self.memory, self.grace, self.young, lag)
        self._pending: tuple[Any, float | None] | None = None

    def _statistic(self, x: dict) -> float | None:  # pragma: no cover - abstract
        raise NotImplementedError

    def _update(self, x: dict) -> None:  # pragma: no cover - abstract
        raise NotImplementedError

    def score_one(self, x: dict) -> float:
        s = self._statistic(x)
        self._pending = (x, s)
        return 0.0 if s is None else self._breakout.score(s)

    def learn_one(self, x: dict) -> None:
        self._learn_range(x)
        self._update(x)

    def learn_flagged(self, x: dict) -> None:
        """Learn from a point the alert filter flagged: widen the range, keep the baseline.

        The point joins the statistic's range - otherwise the next point like
        it is flagged again, and again - but not the baseline (medians,
        EWMA, slots), so an incident does not become what the series is
        compared with. :class:`~processors.anomaly.alerts.AlertFilter` calls
        this instead of ``learn_one`` when it protects the detector.
        """
        self._learn_range(x)

    def _learn_range(self, x: dict) -> None:
        pending, self._pending = self._pending, None
        s = pending[1] if pending is not None and pending[0] is x else self._statistic(x)
        if s is not None:
            self._breakout.add(s)

    def __getstate__(self) -> dict:
        # The pending (x, statistic) pair only links score_one to learn_one.
        state = self.__dict__.copy()
        state["_pending"] = None
        return state


class RangeBreakout(_BreakoutDetector):
    """Values outside the range the series has shown ("spatial anomaly").

    The strongest single signal on NAB (``docs/anomaly-detection.md``):
    spikes, level shifts and cost jumps all leave the range a series has
    shown. Blind to anything that stays inside it - a volume collapse to
    night-time levels at noon - which is what the other detectors are for.

    Parameters
    ----------
    tolerance
        Fraction of the range beyond which a value scores 0.5.
    memory
        Points of history that define the range; ``None`` keeps all of it.
    grace
        Points to learn before scoring (cold start).
    young
        Cold start, softer: with ``n`` points in the range a breakout must
        clear ``(1 + young / n) * tolerance`` - young ranges are narrow and
        break often. The same four parameters (``tolerance``, ``memory``,
        ``grace``, ``young``) are on every detector here.

    Examples
    --------
    >>> det = RangeBreakout(tolerance=0.05, grace=3, young=0)
    >>> for v in (10, 12, 11, 10):
    ...     det.learn_one({"value": v})
    >>> det.score_one({"value": 11.5}), round(det.score_one({"value": 12.1}), 6)
    (0.0, 0.5)
    """

    def __init__(
        self,
        tolerance: float = 0.01,
        memory: int | None = DEFAULT_MEMORY,
        grace: int = 30,
        young: int = DEFAULT_YOUNG,
    ) -> None:
        self.tolerance = tolerance
        self.memory = memory
        self.grace = grace
        self.young = young
        self._init_breakout()

    def _statistic(self, x: dict) -> float | None:
        return x[VALUE]

    def _update(self, x: dict) -> None:
        pass


class LocalDeviation(_BreakoutDetector):
    """Distance from the median of the last ``window`` points.

    The median ignores the spike itself and follows the series' current
    level within about ``window / 2`` points, so this catches a point that is
    unusual *for now* even when it is ordinary for the day (a drop to the
    night-time volume at noon). Daily ramps are in the residual's history and
    do not alert.

    With ``smooth=m`` the statistic is the mean of the last ``m`` points
    (this one included) minus the median of the ``window`` points before
    them: a sustained shift of a noisy mean that no single point shows.
    With ``relative=True`` it is divided by the current level, so a halving
    looks the same at night as at noon (weekend volume collapses); on NAB
    and the LLM suite the absolute residual did better overall.

    **Slow creep** (a leak that doubles latency over a day) never makes one
    point extreme, and a climbing statistic breaks its own range only by
    small steps. With a long ``window`` (a day), ``smooth`` (an hour) and
    ``lag`` (a day: the statistic's range is that of before yesterday) the
    last hour is compared with yesterday's median, against how far apart
    those were before the climb began.

    Examples
    --------
    >>> det = LocalDeviation(window=8, grace=5)
    >>> for i in range(50):
    ...     det.learn_one({"value": 100.0 + i + (i % 3)})
    >>> det.score_one({"value": 151.0}) < 0.5 < det.score_one({"value": 120.0})
    True
    """

    def __init__(
        self,
        window: int = 64,
        smooth: int = 1,
        relative: bool = False,
        lag: int = 0,
        tolerance: float = 0.01,
        memory: int | None = DEFAULT_MEMORY,
        grace: int = 30,
        young: int = DEFAULT_YOUNG,
    ) -> None:
        self.window = window
        self.smooth = smooth
        self.relative = relative
        self.lag = lag
        self._scale = 0.0  # running mean of |value|, the floor of the relative denominator
        self._n = 0
        self.tolerance = tolerance
        self.memory = memory
        self.grace = grace
        self.young = young
        self._median = RollingMedian(window)
        self._last: deque = deque(maxlen=max(smooth - 1, 0) or None)
        self._init_breakout(lag)

    def _statistic(self, x: dict) -> float | None:
        m = self._median.get()
        if m is None:
            return None
        if self.smooth <= 1:
            r = x[VALUE] - m
        else:
            r = (sum(self._last) + x[VALUE]) / (len(self._last) + 1) - m
        if not self.relative:
            return r
        # Relative to the current level, floored at a tenth of the usual
        # magnitude so a level near zero does not divide by ~0.
        return r / (abs(m) + 0.1 * self._scale + 1e-12)

    def _update(self, x: dict) -> None:
        self._n += 1
        self._scale += (abs(x[VALUE]) - self._scale) / min(self._n, 1000)
        if self.smooth <= 1:
            self._median.add(x[VALUE])
            return
        if len(self._last) == self._last.maxlen:
            self._median.add(self._last[0])
        self._last.append(x[VALUE])


class SeasonalBaseline(_BreakoutDetector):
    """Distance from the robust seasonal baseline: the median of the same slot in past cycles.

    The baseline for a point is the median of the values in the same slot
    (e.g. the same 5 minutes of the day) over the last ``cycles`` cycles.
    Medians ignore a bad day or two, where means would carry yesterday's
    incident into today's baseline. With ``standardize=True`` the residual
    is divided by the slot's MAD (median absolute deviation): meant for
    series whose noise differs a lot between slots, but a MAD of a week of
    values is itself noisy, and on NAB the plain residual did better.
    ``adjust=m`` subtracts the median of the last ``m`` residuals: how today
    runs against the usual day (a quiet Saturday) stops looking anomalous
    after about ``m / 2`` points.

    Parameters
    ----------
    period
        Season length in units of ``x["t"]`` (seconds; default one day), or in
        points when ``t`` is absent. Use 604800 for a weekly season.
    slot
        Slot width, same units; ``None`` learns it as the median spacing of
        the first points.
    cycles
        Past cycles kept per slot.
    min_cycles
        Cycles a slot needs before it is scored (cold start).

    Examples
    --------
    >>> det = SeasonalBaseline(period=4, slot=1, grace=5)
    >>> for i in range(40):
    ...     x = {"value": [1.0, 5.0, 9.0, 5.0][i % 4] + 0.1 * (i % 3), "t": i}
    ...     _ = det.score_one(x); det.learn_one(x)
    >>> det.score_one({"value": 9.1, "t": 42}) < 0.5 < det.score_one({"value": 1.0, "t": 42})
    True
    """

    def __init__(
        self,
        period: float = 86400.0,
        slot: float | None = None,
        cycles: int = 7,
        min_cycles: int = 2,
        standardize: bool = False,
        adjust: int = 0,
        tolerance: float = 0.1,
        memory: int | None = DEFAULT_MEMORY,
        grace: int = 30,
        young: int = DEFAULT_YOUNG,
    ) -> None:
        self.period = period
        self.slot = slot
        self.cycles = cycles
        self.min_cycles = min_cycles
        self.standardize = standardize
        self.adjust = adjust
        self._offset = RollingMedian(adjust) if adjust else None
        self.tolerance = tolerance
        self.memory = memory
        self.grace = grace
        self.young = young
        self._slots: dict[int, list] = {}
        self._slot = slot
        self._n = 0
        self._t_prev: float | None = None
        self._gaps: list = []
        self._init_breakout()

    def _slot_of(self, x: dict) -> int | None:
        t = x.get(TIME)
        if t is None:
            t = float(self._n)
            if self._slot is None:
                self._slot = 1.0
        if self._slot is None:
            return None
        return int((t % self.period) // self._slot)

    def _residual(self, x: dict, k: int | None) -> float | None:
        hist = self._slots.get(k) if k is not None else None
        if hist is None or len(hist) < self.min_cycles:
            return None
        m = median(hist)
        r = x[VALUE] - m
        if not self.standardize or len(hist) < 3:
            return r
        mad = median([abs(v - m) for v in hist]) * 1.4826
        return r / mad if mad > 0.0 else r / (1e-9 + 1e-6 * abs(m))

    def _statistic(self, x: dict) -> float | None:
        r = self._residual(x, self._slot_of(x))
        if r is None or self._offset is None:
            return r
        # How today differs from the usual day (a quiet Saturday, a busy
        # launch) is the median of the last residuals; take it out.
        off = self._offset.get()
        return None if off is None else r - off

    def _update(self, x: dict) -> None:
        self._learn_spacing(x)
        k = self._slot_of(x)
        if self._offset is not None:
            r = self._residual(x, k)
            if r is not None:
                self._offset.add(r)
        if k is not None:
            hist = self._slots.setdefault(k, [])
            hist.append(x[VALUE])
            if len(hist) > self.cycles:
                del hist[0]
        self._n += 1

    def _learn_spacing(self, x: dict) -> None:
        t = x.get(TIME)
        if self._slot is not None or t is None:
            return
        if self._t_prev is not None and t > self._t_prev:
            self._gaps.append(t - self._t_prev)
        self._t_prev = t
        if len(self._gaps) >= 8:
            self._slot = median(self._gaps)
            self._gaps = []


class _EWMA:
    """Exponentially weighted mean and variance, updates winsorised at 4 sigma."""

    __slots__ = ("alpha", "mean", "var", "n")

    def __init__(self, alpha: float) -> None:
        self.alpha = alpha
        self.mean: float | None = None
        self.var = 0.0
        self.n = 0

    def z(self, v: float) -> float | None:
        # The variance of a handful of points is no yardstick: say nothing
        # until the EWMA has seen about 1 / alpha of them.
        if self.mean is None or self.n * self.alpha < 1.0:
            return None
        sd = math.sqrt(self.var)
        if sd <= 1e-12 * (1.0 + abs(self.mean)):
            return 0.0 if v == self.mean else math.copysign(1e6, v - self.mean)
        return (v - self.mean) / sd

    def update(self, v: float) -> None:
        self.n += 1
        if self.mean is None:
            self.mean = v
            return
        d = v - self.mean
        sd = math.sqrt(self.var)
        if sd > 0.0 and abs(d) > 4.0 * sd:
            # One outlier must not drag the mean or blow up the variance.
            d = math.copysign(4.0 * sd, d)
        a = max(self.alpha, 1.0 / self.n)  # plain mean while n < 1 / alpha
        self.mean += a * d
        self.var = (1.0 - a) * (self.var + a * d * d)

    def __getstate__(self):
        return {k: getattr(self, k) for k in self.__slots__}

    def __setstate__(self, state):
        for k, v in state.items():
            setattr(self, k, v)


class EWMAZ(_BreakoutDetector):
    """The EWMA control chart: ``z = (value - EWMA) / EW standard deviation``.

    Level and variance follow the series within about ``1 / alpha`` points;
    updates are winsorised at 4 sigma. It is the input of :class:`CUSUM`;
    as a member of its own it added nothing on NAB next to
    :class:`LocalDeviation`, so the production ensemble leaves it out.

    Examples
    --------
    >>> det = EWMAZ(alpha=0.1, grace=10)
    >>> for i in range(200):
    ...     det.learn_one({"value": 10.0 + (i % 5) * 0.1})
    >>> det.score_one({"value": 10.2}) < 0.5 < det.score_one({"value": 14.0})
    True
    """

    def __init__(
        self,
        alpha: float = 0.05,
        tolerance: float = 0.1,
        memory: int | None = DEFAULT_MEMORY,
        grace: int = 30,
        young: int = DEFAULT_YOUNG,
    ) -> None:
        self.alpha = alpha
        self.tolerance = tolerance
        self.memory = memory
        self.grace = grace
        self.young = young
        self._ewma = _EWMA(alpha)
        self._init_breakout()

    def _statistic(self, x: dict) -> float | None:
        return self._ewma.z(x[VALUE])

    def _update(self, x: dict) -> None:
        self._ewma.update(x[VALUE])


class CUSUM(_BreakoutDetector):
    """Two-sided CUSUM change-point statistic on standardised residuals (Page 1954).

    ``S+ = max(0, S+ + z - k)`` and ``S- = max(0, S- - z - k)``: sums grow
    only while the series stays on one side of its baseline, by more than
    ``k`` sigmas. A shift of ``delta`` sigmas adds ``delta - k`` per point, so
    a modest level shift, or a slow creep that never makes one point
    extreme, still adds up. The statistic ``S+ - S-`` is scored like the
    others, against the range the sums reach in normal operation - a
    per-series decision interval instead of a fixed ``h``.

    The baseline is an EWMA (``z`` as in :class:`EWMAZ`), or with ``period``
    the seasonal median of :class:`SeasonalBaseline` with a robust scale:
    an EWMA follows a creep as fast as it climbs, the same hour of the
    last days does not.

    Parameters
    ----------
    k
        Allowance in sigmas: drift smaller than ``k`` per point is ignored.
    alpha
        Weight of the EWMA baseline, or of the robust scale with ``period``.
    period
        Season length (units of ``x["t"]``) for a seasonal baseline; ``None``
        for the EWMA.
    lag
        Points the sums wait before they join the range they are scored
        against (see :class:`LocalDeviation`).

    Examples
    --------
    >>> det = CUSUM(k=0.5, grace=50, young=0)
    >>> for i in range(400):
    ...     det.learn_one({"value": 100.0 + (i % 7) - 3})
    >>> scores = []
    >>> for i in range(20):
    ...     x = {"value": 103.0 + (i % 7) - 3}
    ...     scores.append(det.score_one(x)); det.learn_one(x)
    >>> scores[0] < 0.5 < max(scores)
    True
    """

    def __init__(
        self,
        k: float = 0.5,
        alpha: float = 0.05,
        period: float | None = None,
        lag: int = 0,
        tolerance: float = 0.03,
        memory: int | None = DEFAULT_MEMORY,
        grace: int = 30,
        young: int = DEFAULT_YOUNG,
    ) -> None:
        self.k = k
        self.alpha = alpha
        self.period = period
        self.lag = lag
        self.tolerance = tolerance
        self.memory = memory
        self.grace = grace
        self.young = young
        self._ewma = _EWMA(alpha)
        self._season = SeasonalBaseline(period=period, grace=0, young=0) if period else None
        self._mad = 0.0
        self._n = 0
        self._pos = 0.0
        self._neg = 0.0
        self._init_breakout(lag)

    def _z(self, x: dict) -> tuple[float | None, float | None]:
        """(z, residual); residual only for the seasonal baseline."""
        if self._season is None:
            return self._ewma.z(x[VALUE]), None
        r = self._season._residual(x, self._season._slot_of(x))
        if r is None or self._n < 10:
            return None, r
        scale = 1.2533141373155003 * self._mad
        if scale <= 0.0:
            return (0.0 if r == 0.0 else math.copysign(1e6, r)), r
        return r / scale, r

    def _sums(self, z: float | None) -> tuple[float, float] | None:
        if z is None:
            return None
        return max(0.0, self._pos + z - self.k), max(0.0, self._neg - z - self.k)

    def _statistic(self, x: dict) -> float | None:
        sums = self._sums(self._z(x)[0])
        return None if sums is None else sums[0] - sums[1]

    def _update(self, x: dict) -> None:
        z, r = self._z(x)
        sums = self._sums(z)
        if sums is not None:
            self._pos, self._neg = sums
        if self._season is None:
            self._ewma.update(x[VALUE])
            return
        if r is not None:
            # Robust scale: mean |residual|, outliers clipped at 4 scales.
            a = abs(r) if self._mad <= 0.0 else min(abs(r), 4.0 * self._mad)
            self._n += 1
            self._mad += max(self.alpha, 1.0 / self._n) * (a - self._mad)
        self._season._update(x)
