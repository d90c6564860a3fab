"""Combining detectors, and the production configuration."""
from __future__ import annotations

import math

from river import base

from processors.anomaly._stats import RollingMedian, SlidingExtrema
from processors.anomaly.detectors import COUNT, VALUE, LocalDeviation, RangeBreakout, SeasonalBaseline


class Ensemble(base.AnomalyDetector):
    """The largest score of several detectors, evidence-weighted and de-duplicated.

    * **max**: each member puts its alert level at 0.5, so the largest score
      says whether *any* view of the series (range, recent level, season,
      change point) finds the point abnormal.
    * **evidence**: a point that aggregates ``count`` events, when the series
      typically has ``n`` per point, has its deviation from the recent
      median shrunk by ``sqrt(min(1, count / n))`` before the members see it -
      the ratio of the standard errors of the two means. The night's thirty
      requests then look as noisy as the day's three hundred, and three
      requests cannot raise an alert that three hundred could not. Points
      without ``count`` (and count metrics such as request volume, which are
      their own evidence) pass unchanged.
    * **hold**: for ``hold`` points after a score, a lower or equal score is
      multiplied by ``damp``: one incident gives one high score, not a storm,
      while a worse point inside the hold still comes through.

    Parameters
    ----------
    detectors
        Member detectors (river ``AnomalyDetector`` s reading the same ``x``).
    hold
        Points after a score during which repeats are damped (0 = off).
    damp
        Factor applied to damped repeats.
    count_alpha
        Weight of the running typical ``count`` (0 = ignore counts).
    window
        Points in the recent median that low-count points are pulled towards.

    Examples
    --------
    >>> from processors.anomaly.detectors import RangeBreakout
    >>> ens = Ensemble([RangeBreakout(grace=2, young=0)], hold=10)
    >>> for v in (1.0, 2.0, 1.5):
    ...     ens.learn_one({"value": v})
    >>> s1 = ens.score_one({"value": 5.0}); ens.learn_one({"value": 5.0})
    >>> s2 = ens.score_one({"value": 4.9})
    >>> s1 > 0.5 > s2
    True
    """

    def __init__(
        self,
        detectors: list,
        hold: int = 0,
        damp: float = 0.25,
        count_alpha: float = 0.002,
        window: int = 16,
    ) -> None:
        self.detectors = detectors
        self.hold = hold
        self.damp = damp
        self.count_alpha = count_alpha
        self.window = window
        self._typical_count: float | None = None
        self._recent = [SlidingExtrema(hold) for _ in detectors] if hold else None
        self._median = RollingMedian(window)
        self._last: tuple | None = None

    def _get_params(self) -> dict:
        # river deep-copies list parameters, trained state and all; a clone
        # (also one made by a wrapping filter) must get fresh members.
        params = super()._get_params()
        params["detectors"] = [d.clone() for d in self.detectors]
        return params

    def _weighted(self, x: dict) -> dict:
        c = x.get(COUNT)
        n = self._typical_count
        if c is None or not n or c >= n or self.count_alpha <= 0.0:
            return x
        m = self._median.get()
        if m is None:
            return x
        return {**x, VALUE: m + (x[VALUE] - m) * math.sqrt(max(c, 0.0) / n)}

    def _score(self, x: dict) -> tuple[dict, list[float]]:
        xw = self._weighted(x)
        return xw, [d.score_one(xw) for d in self.detectors]

    def member_scores(self, x: dict) -> list[float]:
        """Each member's score for ``x`` (same order as ``detectors``)."""
        xw = self._weighted(x)
        return [d.score_one(xw) for d in self.detectors]

    def score_one(self, x: dict) -> float:
        xw, raw = self._score(x)
        self._last = (x, xw, raw)
        if self._recent is None:
            return max(raw)
        # Each member is damped against its own recent scores, so one
        # member's long excursion does not mute another's fresh news.
        return max(
            s * self.damp if r.n and s <= (r.max or 0.0) else s for s, r in zip(raw, self._recent)
        )

    def learn_one(self, x: dict) -> None:
        xw = self._learn_common(x)
        for d in self.detectors:
            d.learn_one(xw)
        self._median.add(x[VALUE])
        self._learn_count(x)

    def learn_flagged(self, x: dict) -> None:
        """Learn a flagged point: members widen their ranges but keep their baselines."""
        xw = self._learn_common(x)
        for d in self.detectors:
            learn = getattr(d, "learn_flagged", None)
            if learn is not None:
                learn(xw)

    def _learn_common(self, x: dict) -> dict:
        last, self._last = self._last, None
        xw, raw = (last[1], last[2]) if last is not None and last[0] is x else self._score(x)
        if self._recent is not None:
            for s, r in zip(raw, self._recent):
                r.add(s)
        return xw

    def _learn_count(self, x: dict) -> None:
        c = x.get(COUNT)
        if c is not None and c > 0:
            n = self._typical_count
            self._typical_count = float(c) if n is None else n + self.count_alpha * (c - n)

    def __getstate__(self) -> dict:
        state = self.__dict__.copy()
        state["_last"] = None
        return state


def _points(seconds: float, step: float, least: int) -> int:
    return max(least, round(seconds / step))


def production_detector(step: float = 300.0, period: float = 86400.0) -> Ensemble:
    """The anomaly detector llmpulse runs on each metric series, and benchmarks on NAB.

    Time spans are set in seconds and turned into points with ``step``, the
    series' seconds per point (a metric's ``window_seconds``):

    * :class:`RangeBreakout` of the value, :class:`LocalDeviation` from the
      median of the last hour, :class:`SeasonalBaseline` with a daily
      ``period`` (604800 where the weekly rhythm matters) adjusted for how
      the last 80 minutes ran;
    * every range over the last five weeks, with a wider margin while a
      series is younger than 3.5 days;
    * each member's repeats damped for 8 hours.

    Tolerances are those at which a score of 0.5 is a good pager threshold
    on the synthetic LLM-incident suite; NAB's optimiser, which prices a
    false positive at a tenth of a detection, picks a lower threshold for
    the same scores. :class:`CUSUM` and :class:`EWMAZ` are not members: in
    the ablations they added false alerts and no detections. Slow creep is
    :func:`drift_detector`'s job (alert kind ``drift``).

    >>> det = production_detector(step=60)
    >>> [type(d).__name__ for d in det.detectors], det.hold
    (['RangeBreakout', 'LocalDeviation', 'SeasonalBaseline'], 480)
    """
    span = _spans(step)
    return Ensemble(
        [
            RangeBreakout(tolerance=0.18, **span),
            LocalDeviation(window=_points(3600, step, 4), tolerance=0.18, **span),
            SeasonalBaseline(period=period, adjust=_points(4800, step, 4), tolerance=1.8, **span),
        ],
        hold=_points(8 * 3600, step, 8),
    )


def drift_detector(step: float = 300.0) -> Ensemble:
    """Slow creep: the last hour against the day before it (alert kind ``drift``).

    A leak that doubles latency over a day never makes one point extreme.
    This :class:`LocalDeviation` compares the mean of the last hour with the
    median of the day before, and scores that gap against the range it had
    a day ago (``lag``), so a climb is measured from where it started.

    It is kept apart from :func:`production_detector` on purpose: a day
    that differs from the day before is not an anomaly in NAB's labels (the
    member cost 15 points there) but is worth a separate, slower kind of
    alert on an LLM app's latency and cost.

    >>> [type(d).__name__ for d in drift_detector().detectors]
    ['LocalDeviation']
    """
    day = _points(86400, step, 24)
    return Ensemble(
        [LocalDeviation(window=day, smooth=_points(3600, step, 2), lag=day, tolerance=0.5, **_spans(step))],
        hold=_points(8 * 3600, step, 8),
    )


def _spans(step: float) -> dict:
    return {"memory": _points(35 * 86400, step, 1000), "young": _points(3.5 * 86400, step, 30)}
