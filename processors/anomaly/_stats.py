"""Small streaming statistics the detectors share (plain, picklable classes).

Each update is O(1) amortised, or O(size) with a small size: the detectors
run on every point of every metric series, so nothing here touches numpy.
"""
from __future__ import annotations

import bisect
from collections import deque


def median(values: list) -> float:
    """Median of a small non-empty list.

    >>> median([3, 1, 2]), median([4, 1, 3, 2])
    (2, 2.5)
    """
    s = sorted(values)
    n = len(s)
    return s[n // 2] if n % 2 else 0.5 * (s[n // 2 - 1] + s[n // 2])


class RollingMedian:
    """Median of the last ``size`` values (sorted list + FIFO).

    >>> m = RollingMedian(3)
    >>> for v in (5, 1, 9, 7):
    ...     m.add(v)
    >>> m.get()
    7
    """

    def __init__(self, size: int) -> None:
        self.size = size
        self.fifo: deque = deque()
        self.sorted: list = []

    def add(self, v: float) -> None:
        self.fifo.append(v)
        bisect.insort(self.sorted, v)
        if len(self.fifo) > self.size:
            old = self.fifo.popleft()
            del self.sorted[bisect.bisect_left(self.sorted, old)]

    def __len__(self) -> int:
        return len(self.sorted)

    def get(self) -> float | None:
        s, n = self.sorted, len(self.sorted)
        if n == 0:
            return None
        return s[n // 2] if n % 2 else 0.5 * (s[n // 2 - 1] + s[n // 2])


class SlidingExtrema:
    """Minimum and maximum of the last ``size`` values (monotone deques), or of all if None.

    >>> e = SlidingExtrema(2)
    >>> for v in (3, 1, 2):
    ...     e.add(v)
    >>> e.min, e.max
    (1, 2)
    """

    def __init__(self, size: int | None) -> None:
        self.size = size
        self.n = 0
        self._lo: deque = deque()  # (index, value), values increasing
        self._hi: deque = deque()  # (index, value), values decreasing

    def add(self, v: float) -> None:
        i = self.n
        self.n += 1
        lo, hi = self._lo, self._hi
        while lo and lo[-1][1] >= v:
            lo.pop()
        lo.append((i, v))
        while hi and hi[-1][1] <= v:
            hi.pop()
        hi.append((i, v))
        if self.size is not None:
            first = i - self.size + 1
            if lo[0][0] < first:
                lo.popleft()
            if hi[0][0] < first:
                hi.popleft()

    @property
    def min(self) -> float | None:
        return self._lo[0][1] if self._lo else None

    @property
    def max(self) -> float | None:
        return self._hi[0][1] if self._hi else None


class Breakout:
    """How far a statistic goes beyond every value it took in its last ``memory`` points.

    With ``[lo, hi]`` the range of the remembered values, a new value ``s``
    lies ``d = max(s - hi, lo - s) / (hi - lo)`` beyond it (as a fraction of
    the range) and scores ``d / (d + tolerance)``: 0 inside the range, 0.5 at
    ``tolerance`` beyond, towards 1 far beyond. It needs no distributional
    assumption and no scale: a quiet series has a narrow range, a noisy one a
    wide one, and either alerts only on what it has not shown before - which
    is what makes one threshold work across series (the reason it, and not a
    Gaussian tail, calibrates every detector here).

    >>> b = Breakout(tolerance=0.1, grace=3)
    >>> for s in (0.0, 1.0, 0.5):
    ...     b.add(s)
    >>> b.score(0.7), round(b.score(1.1), 6), round(b.score(-0.3), 2)
    (0.0, 0.5, 0.75)
    """

    def __init__(
        self,
        tolerance: float,
        memory: int | None = None,
        grace: int = 30,
        young: int = 0,
        lag: int = 0,
        margin: float = 0.0,
    ) -> None:
        self.tolerance = tolerance
        self.margin = margin
        self.grace = grace
        self.young = young
        self.lag = lag
        self.range = SlidingExtrema(memory)
        # With lag, the last `lag` values wait here before they join the range,
        # so a statistic that climbs for a while is compared with where it
        # was before the climb, not with its own last step.
        self._waiting: deque | None = deque() if lag else None

    def score(self, s: float) -> float:
        r = self.range
        if r.n < self.grace:
            return 0.0
        lo, hi = r.min, r.max
        span = hi - lo
        if span <= 0.0:
            # Constant so far: a real change is infinitely far out, a
            # rounding-level wobble is not.
            span = 1e-9 * max(abs(hi), abs(s)) or 1e-300
        d = max(s - hi, lo - s) / span - self.margin
        if d <= 0.0:
            return 0.0
        # A young range is narrower than the series' true one, and new
        # records come often (about 1 in n points): ask for a wider margin
        # until n is well past `young`.
        tol = self.tolerance * (1.0 + self.young / r.n) if self.young else self.tolerance
        return d / (d + tol)

    def add(self, s: float) -> None:
        w = self._waiting
        if w is None:
            self.range.add(s)
            return
        w.append(s)
        if len(w) > self.lag:
            self.range.add(w.popleft())
