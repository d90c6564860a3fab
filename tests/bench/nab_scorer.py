"""The Numenta Anomaly Benchmark score, as NAB v1.1 computes it.

Lavin & Ahmad, "Evaluating Real-time Anomaly Detection Algorithms - the
Numenta Anomaly Benchmark" (2015), and the reference code in
``numenta/NAB`` (``nab/sweeper.py``, ``nab/runner.py``). This is a fresh
implementation of the same rules, vectorised with numpy so the threshold
sweep over the whole corpus (~366,000 rows) takes well under a second:

* every row gets a *sweep score*. Inside a window of width ``W`` whose last
  row is ``r``, row ``i`` is worth ``S(-(r - i + 1) / W) / S(-1) * tp``
  (``S(p) = 2 sigmoid(-5 p) - 1``): close to ``tp`` at the window's left edge,
  close to 0 at its right edge. Outside windows a detection costs
  ``S(|i - r| / (W - 1)) * fp`` relative to the preceding window (less than
  ``fp`` just after a window, ``-fp`` from three window widths on and before
  any window);
* only the first detection in a window counts (the largest sweep score); a
  window with none costs ``-fn``;
* rows in the probationary period, ``min(floor(0.15 n), 0.15 * 5000)``, are
  not scored, and windows with no row after it are not counted;
* a detection is a row whose anomaly score is ``>= threshold``; the threshold
  is the one that maximises the summed score over the whole corpus (ties go
  to the higher threshold, as NAB's stable sort does);
* the reported score is ``100 * (raw - null) / (perfect - null)``: ``null``
  is the raw score of a detector that never fires (``-fn`` per window),
  ``perfect`` is ``tp`` per window.

Examples
--------
A 100-row file with one window over rows 50-59; probation is the first 15
rows. Firing at the window's first row earns the full reward:

>>> import numpy as np
>>> ts = [f"t{i:03d}" for i in range(100)]
>>> f = ScoredFile("f", ts, np.r_[np.zeros(50), 1.0, np.zeros(49)], [("t050", "t059")])
>>> prof = CostMatrix(tp=1.0, fp=0.11, fn=1.0)
>>> round(score_corpus([f], prof).raw, 4)
1.0
>>> round(normalized(score_corpus([f], prof).raw, 1, prof), 1)
100.0
"""
from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterable, Sequence

import numpy as np

PROBATION_FRACTION = 0.15


@dataclass(frozen=True)
class CostMatrix:
    """One NAB application profile (``config/profiles.json``).

    >>> CostMatrix.from_json({"CostMatrix": {"tpWeight": 1, "fpWeight": 0.11, "fnWeight": 1}})
    CostMatrix(tp=1.0, fp=0.11, fn=1.0)
    """

    tp: float
    fp: float
    fn: float

    @classmethod
    def from_json(cls, profile: dict) -> "CostMatrix":
        m = profile["CostMatrix"]
        return cls(tp=float(m["tpWeight"]), fp=float(m["fpWeight"]), fn=float(m["fnWeight"]))


def load_profiles(path: str | Path) -> dict[str, CostMatrix]:
    """Profiles by name from NAB's ``config/profiles.json``."""
    with open(path) as f:
        return {name: CostMatrix.from_json(p) for name, p in json.load(f).items()}


def load_windows(path: str | Path) -> dict[str, list[tuple[str, str]]]:
    """Windows per file from ``labels/combined_windows.json``.

    Timestamps are normalised to the data files' ``YYYY-mm-dd HH:MM:SS``
    (the labels carry a ``.000000`` suffix the data does not).
    """
    with open(path) as f:
        raw = json.load(f)
    return {name: [(_ts(a), _ts(b)) for a, b in wins] for name, wins in raw.items()}


def _ts(stamp: str) -> str:
    return stamp[:-7] if stamp.endswith(".000000") else stamp


def probationary_length(n_rows: int, fraction: float = PROBATION_FRACTION) -> float:
    """Rows at the start of a file that are not scored (NAB ``util.getProbationPeriod``).

    >>> probationary_length(4032), probationary_length(22695)
    (604, 750.0)
    """
    return min(math.floor(fraction * n_rows), fraction * 5000)


def scaled_sigmoid(position: np.ndarray | float) -> np.ndarray:
    """``2 sigmoid(-5 p) - 1``, and exactly -1 from ``p >= 3`` on (NAB ``scaledSigmoid``).

    >>> [round(float(v), 5) for v in scaled_sigmoid(np.array([-1.0, -0.5, 0.0, 3.0]))]
    [0.98661, 0.84828, 0.0, -1.0]
    """
    p = np.asarray(position, dtype=float)
    return np.where(p >= 3.0, -1.0, 2.0 / (1.0 + np.exp(5.0 * p)) - 1.0)


_MAX_TP = float(scaled_sigmoid(-1.0))


@dataclass
class ScoredFile:
    """One data file's detector output, with what the scorer needs about it.

    Parameters
    ----------
    name
        Relative path, e.g. ``realKnownCause/nyc_taxi.csv``.
    timestamps
        Row timestamps, in file order, as strings comparable with the windows.
    scores
        The detector's anomaly score per row.
    windows
        ``(first, last)`` timestamps of each anomaly window, in time order.
    """

    name: str
    timestamps: Sequence[str]
    scores: np.ndarray
    windows: Sequence[tuple[str, str]]
    probation_fraction: float = PROBATION_FRACTION
    # Filled in __post_init__: -1 outside windows, else the window's index.
    window_of: np.ndarray = field(init=False, repr=False)
    # In windows: S(position) / S(-1) (times tp later); outside: S(distance past window).
    tp_part: np.ndarray = field(init=False, repr=False)
    fp_part: np.ndarray = field(init=False, repr=False)
    scorable: np.ndarray = field(init=False, repr=False)

    def __post_init__(self) -> None:
        n = len(self.timestamps)
        self.scores = np.asarray(self.scores, dtype=float)
        if len(self.scores) != n:
            raise ValueError(f"{self.name}: {len(self.scores)} scores for {n} rows")
        index = {t: i for i, t in enumerate(self.timestamps)}
        window_of = np.full(n, -1, dtype=np.int64)
        tp_part = np.zeros(n)
        fp_part = np.full(n, -1.0)  # before any window: the full FP cost
        rows = np.arange(n)
        for k, (first, last) in enumerate(self.windows):
            left, right = index[first], index[last]
            width = right - left + 1
            inside = slice(left, right + 1)
            window_of[inside] = k
            tp_part[inside] = scaled_sigmoid(-(right - rows[inside] + 1) / width) / _MAX_TP
            # Rows after this window, until the next one starts, are priced
            # against it; the next window's loop overwrites its own rows.
            after = rows[right + 1 :]
            # A one-row window divides by zero in NAB too; there it gives inf -> -1.
            with np.errstate(divide="ignore"):
                fp_part[right + 1 :] = scaled_sigmoid(np.abs(right - after) / float(width - 1))
        self.window_of = window_of
        self.tp_part = tp_part
        self.fp_part = fp_part
        self.scorable = rows >= probationary_length(n, self.probation_fraction)


@dataclass(frozen=True)
class CorpusScore:
    """The outcome of scoring a corpus with one profile."""

    threshold: float
    raw: float
    n_windows: int
    per_file: dict[str, float]
    counts: dict[str, int]


def _corpus_events(files: Sequence[ScoredFile], cost: CostMatrix):
    """Score changes as the threshold goes down, one per (row that matters).

    A row outside windows adds its FP cost as soon as the threshold reaches its
    anomaly score. Inside a window only the *record* rows matter - rows whose
    score beats every earlier scored row in that window - because the first
    detection in a window is always a record; when the threshold reaches a
    record's score the window's value moves from the next (later) record's
    reward, or from ``-fn``, to this record's reward.
    """
    ev_scores, ev_deltas = [], []
    n_windows = 0
    for f in files:
        s, ok = f.scores, f.scorable
        outside = ok & (f.window_of < 0)
        ev_scores.append(s[outside])
        ev_deltas.append(f.fp_part[outside] * cost.fp)
        for k in range(len(f.windows)):
            idx = np.flatnonzero(ok & (f.window_of == k))
            if len(idx) == 0:
                continue  # wholly inside the probationary period: NAB ignores it
            n_windows += 1
            ws = s[idx]
            prev_max = np.maximum.accumulate(np.r_[-np.inf, ws[:-1]])
            rec = idx[ws > prev_max]
            reward = f.tp_part[rec] * cost.tp
            # Records in time order have increasing scores; the latest (highest)
            # replaces -fn, each earlier one replaces the one after it.
            replaced = np.r_[reward[1:], -cost.fn]
            ev_scores.append(s[rec])
            ev_deltas.append(reward - replaced)
    return np.concatenate(ev_scores), np.concatenate(ev_deltas), n_windows


def sweep(files: Sequence[ScoredFile], cost: CostMatrix) -> tuple[np.ndarray, np.ndarray, int]:
    """Raw corpus score at every distinct threshold, highest threshold first.

    Returns ``(thresholds, scores, n_windows)``; the first threshold is
    ``+inf`` (nothing fires). Detections are rows with score ``>= threshold``.
    """
    ev_s, ev_d, n_windows = _corpus_events(files, cost)
    order = np.argsort(-ev_s, kind="stable")
    ev_s, ev_d = ev_s[order], ev_d[order]
    total = -cost.fn * n_windows + np.cumsum(ev_d)
    # The score at threshold t counts every event with score >= t: take the
    # running total at the last event of each group of equal scores.
    last = np.r_[ev_s[1:] != ev_s[:-1], True] if len(ev_s) else np.zeros(0, bool)
    thresholds = np.r_[np.inf, ev_s[last]]
    scores = np.r_[-cost.fn * n_windows, total[last]]
    return thresholds, scores, n_windows


def score_at(files: Iterable[ScoredFile], cost: CostMatrix, threshold: float) -> CorpusScore:
    """Score each file with detections ``score >= threshold`` (NAB ``scoreDataSet``)."""
    per_file: dict[str, float] = {}
    counts = {"tp": 0, "fp": 0, "fn": 0, "tn": 0}
    n_windows = 0
    raw = 0.0
    for f in files:
        ok = f.scorable
        hit = ok & (f.scores >= threshold)
        outside = f.window_of < 0
        total = float(np.sum(f.fp_part[hit & outside])) * cost.fp
        for k in range(len(f.windows)):
            in_k = ok & (f.window_of == k)
            if not in_k.any():
                continue
            n_windows += 1
            first = np.flatnonzero(hit & in_k)
            total += f.tp_part[first[0]] * cost.tp if len(first) else -cost.fn
        per_file[f.name] = float(total)
        raw += float(total)
        # Row counts, as NAB's score files report them.
        counts["tp"] += int(np.sum(hit & ~outside))
        counts["fp"] += int(np.sum(hit & outside))
        counts["fn"] += int(np.sum(ok & ~hit & ~outside))
        counts["tn"] += int(np.sum(ok & ~hit & outside))
    return CorpusScore(threshold, raw, n_windows, per_file, counts)


def score_corpus(files: Sequence[ScoredFile], cost: CostMatrix) -> CorpusScore:
    """Optimise the threshold over the whole corpus, then score each file with it."""
    thresholds, scores, _ = sweep(files, cost)
    best = int(np.argmax(scores))  # first maximum = highest threshold among ties
    return score_at(files, cost, float(thresholds[best]))


def null_score(files: Sequence[ScoredFile], cost: CostMatrix) -> float:
    """Raw score of NAB's null detector (a constant score) on these files."""
    const = [
        ScoredFile(f.name, f.timestamps, np.full(len(f.scores), 0.5), f.windows, f.probation_fraction)
        for f in files
    ]
    return score_corpus(const, cost).raw


def normalized(raw: float, n_windows: int, cost: CostMatrix, null: float | None = None) -> float:
    """``100 (raw - null) / (perfect - null)``; ``null`` defaults to ``-fn`` per window.

    >>> round(normalized(-24.0131, 116, CostMatrix(1.0, 0.11, 1.0)), 2)  # NAB's windowedGaussian
    39.65
    """
    if null is None:
        null = -cost.fn * n_windows
    perfect = cost.tp * n_windows
    return 100.0 * (raw - null) / (perfect - null)
