"""Compare user cohorts (plans, regions, app versions) with honest statistics.

Everything here works on **sufficient statistics**, the few numbers a SQL
``GROUP BY`` returns, never on raw events, so the same functions serve the
CLI and can be mirrored in a database function:

- means (cost per request, rating): :class:`CohortStats` ``(n, total,
  total_sq)``, compared with Welch's t-test (:func:`compare_means`);
- rates (success rate, thumbs-up ratio): :class:`CohortRate` ``(successes,
  trials)``, Wilson intervals and a two-proportion z-test, or Fisher's exact
  test when the sample is tiny (:func:`compare_rates`).

Each cohort is compared with one reference cohort (the largest by default);
with several comparisons the p-values are Holm-adjusted and ``significant``
uses the adjusted value. A cohort without enough data is reported, never
compared, and no NaN reaches the output: what cannot be computed is None.
What the numbers mean, and what they do not, is in ``docs/cohort-analysis.md``.

Examples
--------
>>> cmp = compare_rates([CohortRate("free", 900, 1000), CohortRate("pro", 480, 500)])
>>> cmp.reference, cmp.test
('free', 'two-proportion z-test')
>>> pro = cmp.row("pro")
>>> round(pro.diff, 3), pro.p_value < 0.001, pro.significant
(0.06, True, True)
"""
from __future__ import annotations

import math
import operator
import sys
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, replace
from typing import Literal, TypeVar

from scipy import stats
from statsmodels.stats.multitest import multipletests
from statsmodels.stats.proportion import (
    confint_proportions_2indep,
    proportion_confint,
    proportions_ztest,
)

__all__ = [
    "CohortRate",
    "CohortResult",
    "CohortStats",
    "Comparison",
    "compare_means",
    "compare_rates",
    "render",
]

Kind = Literal["mean", "rate"]

WELCH = "Welch's t-test"
Z_TEST = "two-proportion z-test"
FISHER = "Fisher's exact test"

# The usual rule of thumb for the normal approximation behind the z-test
# (the same one behind "use Fisher when an expected cell count is below 5").
MIN_EXPECTED = 5.0

_EPS = sys.float_info.epsilon


@dataclass(frozen=True, slots=True)
class CohortStats:
    """Sufficient statistics of one cohort's values: count, sum, sum of squares.

    ``total`` and ``total_sq`` may come from the database as ``Decimal``;
    they are converted to float. A constant cohort whose floating-point sums
    leave a variance a few rounding errors from zero is treated as having
    zero variance; sums that are inconsistent beyond rounding (``total_sq <
    total**2 / n``) raise ValueError.

    Parameters
    ----------
    name
        The cohort's label, e.g. a plan name.
    n
        Number of values (requests, ratings).
    total
        Sum of the values.
    total_sq
        Sum of the squared values.

    Examples
    --------
    >>> c = CohortStats.from_values("free", [1.0, 2.0, 3.0])
    >>> c.n, c.mean, c.variance
    (3, 2.0, 1.0)
    """

    name: str
    n: int
    total: float
    total_sq: float

    def __post_init__(self) -> None:
        n = _count(self.n, "n")
        total, total_sq = float(self.total), float(self.total_sq)
        if not (math.isfinite(total) and math.isfinite(total_sq)):
            raise ValueError(f"cohort {self.name!r}: total and total_sq must be finite")
        if total_sq < 0:
            raise ValueError(f"cohort {self.name!r}: total_sq must be >= 0, got {total_sq}")
        object.__setattr__(self, "n", n)
        object.__setattr__(self, "total", total)
        object.__setattr__(self, "total_sq", total_sq)
        if n > 0:
            _sum_sq_dev(self)  # raises if the sums are inconsistent

    @classmethod
    def from_values(cls, name: str, values: Iterable[float]) -> CohortStats:
        """The sufficient statistics of raw values (for tests and small data).

        Examples
        --------
        >>> CohortStats.from_values("pro", [2, 4])
        CohortStats(name='pro', n=2, total=6.0, total_sq=20.0)
        """
        xs = [float(x) for x in values]
        return cls(name, len(xs), math.fsum(xs), math.fsum(x * x for x in xs))

    @property
    def mean(self) -> float | None:
        """The sample mean; None for an empty cohort."""
        return self.total / self.n if self.n else None

    @property
    def variance(self) -> float | None:
        """The sample variance (denominator ``n - 1``); None when ``n < 2``."""
        return _sum_sq_dev(self) / (self.n - 1) if self.n >= 2 else None


@dataclass(frozen=True, slots=True)
class CohortRate:
    """Successes out of trials in one cohort, e.g. requests without an error.

    Parameters
    ----------
    name
        The cohort's label.
    successes
        Number of successes, ``0 <= successes <= trials``.
    trials
        Number of trials.

    Examples
    --------
    >>> CohortRate("pro", 48, 50).rate
    0.96
    """

    name: str
    successes: int
    trials: int

    def __post_init__(self) -> None:
        successes, trials = _count(self.successes, "successes"), _count(self.trials, "trials")
        if successes > trials:
            raise ValueError(f"cohort {self.name!r}: successes ({successes}) > trials ({trials})")
        object.__setattr__(self, "successes", successes)
        object.__setattr__(self, "trials", trials)

    @property
    def rate(self) -> float | None:
        """``successes / trials``; None when there are no trials."""
        return self.successes / self.trials if self.trials else None


@dataclass(frozen=True, slots=True)
class CohortResult:
    """One cohort's line in a :class:`Comparison`.

    Differences are ``cohort - reference``. Fields that could not be
    computed are None, never NaN. ``significant`` is None when the cohort
    was not tested (it is the reference, has too little data, or no test is
    possible); otherwise it says whether ``p_adjusted <= alpha``.

    Attributes
    ----------
    name, n
        The cohort and its size (values for means, trials for rates).
    value, ci_low, ci_high
        Mean or rate (a proportion in [0, 1]) and its confidence interval.
    diff, diff_ci_low, diff_ci_high
        Difference to the reference and its confidence interval. This CI is
        per comparison, not adjusted for multiplicity.
    p_value, p_adjusted
        Raw and Holm-adjusted two-sided p-values.
    significant
        Decision at ``alpha`` on the adjusted p-value.
    note
        Why something is missing or which fallback was used; "" if nothing.
    test
        The test this row used, e.g. "Fisher's exact test".
    statistic, df
        t or z statistic (None for Fisher) and Welch's degrees of freedom.
    """

    name: str
    n: int
    value: float | None
    ci_low: float | None = None
    ci_high: float | None = None
    diff: float | None = None
    diff_ci_low: float | None = None
    diff_ci_high: float | None = None
    p_value: float | None = None
    p_adjusted: float | None = None
    significant: bool | None = None
    note: str = ""
    test: str | None = None
    statistic: float | None = None
    df: float | None = None


@dataclass(frozen=True, slots=True)
class Comparison:
    """The result of :func:`compare_means` or :func:`compare_rates`.

    Attributes
    ----------
    kind
        "mean" or "rate" (rates are proportions; :func:`render` shows percent).
    test
        The test in words, e.g. "Welch's t-test, Holm-adjusted".
    interval
        How the confidence intervals were computed, in words.
    alpha
        Significance level; intervals are at ``1 - alpha``.
    reference
        Name of the reference cohort; None when there are no cohorts.
    rows
        One :class:`CohortResult` per cohort, in input order.
    """

    kind: Kind
    test: str
    interval: str
    alpha: float
    reference: str | None
    rows: tuple[CohortResult, ...]

    @property
    def n_comparisons(self) -> int:
        """How many cohorts were tested against the reference (the Holm family)."""
        return sum(r.p_value is not None for r in self.rows)

    def row(self, name: str) -> CohortResult:
        """The row of the cohort called ``name`` (KeyError if there is none)."""
        for r in self.rows:
            if r.name == name:
                return r
        raise KeyError(name)


def compare_means(
    cohorts: Sequence[CohortStats], reference: str | None = None, alpha: float = 0.05
) -> Comparison:
    """Compare cohort means with Welch's t-test, each against a reference.

    Welch's test does not assume equal variances, which matters here: cost
    per request on an enterprise plan is typically far more spread out than
    on a free one. Degrees of freedom are Welch–Satterthwaite's. Each
    cohort's mean gets a t interval with ``n - 1`` degrees of freedom.

    Parameters
    ----------
    cohorts
        One :class:`CohortStats` per cohort; names must be unique.
    reference
        Name of the cohort the others are compared with; by default the
        largest (first one on a tie).
    alpha
        Significance level, and ``1 - alpha`` is the confidence level.

    Returns
    -------
    Comparison
        Cohorts with ``n < 2`` are "insufficient data" and not compared. Two
        constant cohorts (zero variance in both) cannot be tested: their
        difference is reported without p-value.

    Examples
    --------
    >>> free = CohortStats.from_values("free", [3, 4, 4, 5, 3, 4, 4, 3])
    >>> pro = CohortStats.from_values("pro", [5, 4, 5, 5, 4, 5])
    >>> cmp = compare_means([free, pro])
    >>> cmp.reference, cmp.test
    ('free', "Welch's t-test")
    >>> r = cmp.row("pro")
    >>> round(r.diff, 2), round(r.p_value, 3), r.significant
    (0.92, 0.016, True)
    """
    cohorts = _check(cohorts, alpha)
    ref = _pick_reference(cohorts, reference, lambda c: c.n)
    ref_ok = ref is not None and ref.n >= 2
    rows = []
    for c in cohorts:
        if c.n < 2:
            note = "reference; insufficient data (n < 2)" if c is ref else "insufficient data (n < 2)"
            rows.append(CohortResult(c.name, c.n, c.mean, note=note))
            continue
        mean, var = c.mean, c.variance
        half = float(stats.t.ppf(1 - alpha / 2, c.n - 1)) * math.sqrt(var / c.n)
        notes = ["zero variance"] if var == 0 else []
        row = CohortResult(c.name, c.n, mean, mean - half, mean + half)
        if c is ref:
            notes.insert(0, "reference")
        elif not ref_ok:
            notes.append("not compared: reference has insufficient data")
        else:
            row = _welch(row, c, ref, alpha, notes)
        rows.append(replace(row, note="; ".join(notes)))
    return _finish("mean", WELCH, "t interval; difference: Welch t interval", alpha, ref, rows)


def compare_rates(
    cohorts: Sequence[CohortRate], reference: str | None = None, alpha: float = 0.05
) -> Comparison:
    """Compare cohort rates (proportions), each against a reference cohort.

    Each rate gets a Wilson score interval, which unlike the textbook
    ``p ± z·se`` stays inside [0, 1] and keeps its coverage near 0 and 1,
    where success rates live. The difference to the reference gets
    Newcombe's hybrid score interval (built from the two Wilson intervals)
    and a pooled two-proportion z-test. When an expected count of the 2×2
    table is below 5 the normal approximation is unreliable, and the row
    uses Fisher's exact test instead (its note says so).

    Parameters
    ----------
    cohorts
        One :class:`CohortRate` per cohort; names must be unique.
    reference
        Name of the reference cohort; by default the one with most trials
        (first one on a tie).
    alpha
        Significance level, and ``1 - alpha`` is the confidence level.

    Returns
    -------
    Comparison
        Values are proportions in [0, 1]. Cohorts with 0 trials are
        "insufficient data" and not compared.

    Examples
    --------
    >>> cmp = compare_rates([CohortRate("free", 7, 10), CohortRate("pro", 9, 10)])
    >>> r = cmp.row("pro")
    >>> r.test, round(r.p_value, 3)
    ("Fisher's exact test", 0.582)
    >>> round(r.diff_ci_low, 3), round(r.diff_ci_high, 3)
    (-0.16, 0.514)
    """
    cohorts = _check(cohorts, alpha)
    ref = _pick_reference(cohorts, reference, lambda c: c.trials)
    ref_ok = ref is not None and ref.trials > 0
    rows = []
    for c in cohorts:
        if c.trials == 0:
            note = "reference; insufficient data (0 trials)" if c is ref else "insufficient data (0 trials)"
            rows.append(CohortResult(c.name, 0, None, note=note))
            continue
        low, high = proportion_confint(c.successes, c.trials, alpha=alpha, method="wilson")
        row = CohortResult(c.name, c.trials, c.rate, float(low), float(high))
        notes = []
        if c is ref:
            notes.append("reference")
        elif not ref_ok:
            notes.append("not compared: reference has insufficient data")
        else:
            row = _two_proportions(row, c, ref, alpha, notes)
        rows.append(replace(row, note="; ".join(notes)))
    return _finish(
        "rate", Z_TEST, "Wilson score interval; difference: Newcombe hybrid score interval",
        alpha, ref, rows,
    )


def render(comparison: Comparison, metric_label: str, unit: str = "") -> str:
    r"""An aligned text table, then one plain-language sentence per cohort.

    Parameters
    ----------
    comparison
        From :func:`compare_means` or :func:`compare_rates`.
    metric_label
        What was measured, e.g. "success rate" or "cost per request".
    unit
        Unit of a mean, e.g. "USD"; rates are always shown in percent and
        their differences in percentage points, so ``unit`` is ignored.

    Examples
    --------
    >>> cmp = compare_rates([CohortRate("free", 900, 1000), CohortRate("pro", 480, 500)])
    >>> summary = render(cmp, "success rate").splitlines()[-1]
    >>> print(summary.replace(", ", ",\n"))
    pro: success rate is 6.0 points higher than free (95% CI 3.3 to 8.5),
    significant at alpha 0.05 (p < 0.001).
    """
    rows = comparison.rows
    if not rows:
        return f"{metric_label}: no cohorts to compare."
    rate = comparison.kind == "rate"
    scale = 100.0 if rate else 1.0
    value_unit = "%" if rate else unit
    diff_unit = "points" if rate else unit
    level = f"{100 * (1 - comparison.alpha):g}%"
    ref = comparison.reference
    holm = comparison.n_comparisons >= 2
    dec = _decimals(rows, scale)

    def num(x: float | None, sign: bool = False) -> str:
        return "" if x is None else f"{x * scale:{'+' if sign else ''}.{dec}f}"

    def interval(lo: float | None, hi: float | None, sign: bool = False) -> str:
        return "" if lo is None or hi is None else f"{num(lo, sign)} to {num(hi, sign)}"

    def with_unit(label: str, u: str) -> str:
        return f"{label} ({u})" if u else label

    header = [
        "cohort", "n", with_unit(metric_label, value_unit), f"{level} CI",
        with_unit(f"diff vs {ref}", diff_unit), f"diff {level} CI", "p",
        "p (Holm)" if holm else "p adj", "significant", "note",
    ]
    table = [header]
    for r in rows:
        table.append([
            r.name, str(r.n), num(r.value), interval(r.ci_low, r.ci_high),
            num(r.diff, sign=True), interval(r.diff_ci_low, r.diff_ci_high, sign=True),
            _p(r.p_value), _p(r.p_adjusted),
            {True: "yes", False: "no", None: ""}[r.significant], r.note,
        ])
    widths = [max(len(line[i]) for line in table) for i in range(len(header))]
    left = {0, 9}  # text columns; numbers are right-aligned so digits line up
    lines = [
        f"{metric_label} by cohort, reference {ref}: {comparison.test}, alpha {comparison.alpha:g}",
        f"intervals: {comparison.interval}",
        "",
    ]
    for line in table:
        cells = [c.ljust(w) if i in left else c.rjust(w) for i, (c, w) in enumerate(zip(line, widths))]
        lines.append("  ".join(cells).rstrip())
    lines.append("")
    ref_row = comparison.row(ref) if ref is not None else None
    for r in rows:
        if r.name == ref:
            continue
        lines.append(_sentence(r, ref_row, metric_label, diff_unit, level, comparison.alpha, holm, num))
    return "\n".join(lines)


# -- internals -----------------------------------------------------------------

_C = TypeVar("_C", CohortStats, CohortRate)


def _count(x: object, what: str) -> int:
    try:
        n = operator.index(x)  # ints and numpy ints, not 2.5
    except TypeError:
        raise ValueError(f"{what} must be an integer, got {x!r}") from None
    if n < 0:
        raise ValueError(f"{what} must be >= 0, got {n}")
    return n


def _sum_sq_dev(c: CohortStats) -> float:
    """Sum of squared deviations from the mean, ``total_sq - total**2 / n``."""
    ss = c.total_sq - c.total * c.total / c.n
    # The database adds n floats to get total_sq, each addition rounding by
    # up to one part in 2**52 of the running sum: a constant cohort can
    # come back a few ulps either side of zero. Within that bound it *is*
    # zero; beyond it, the three numbers cannot describe one set of values.
    tol = 2.0 * (c.n + 2) * _EPS * c.total_sq
    if ss < -tol:
        raise ValueError(
            f"cohort {c.name!r}: inconsistent sums (total_sq < total**2 / n by {-ss:.3g})"
        )
    return 0.0 if ss <= tol else ss


def _check(cohorts: Sequence[_C], alpha: float) -> list[_C]:
    if not 0.0 < alpha < 1.0:
        raise ValueError(f"alpha must be in (0, 1), got {alpha}")
    cohorts = list(cohorts)
    names = [c.name for c in cohorts]
    dupes = sorted({n for n in names if names.count(n) > 1})
    if dupes:
        raise ValueError(f"duplicate cohort names: {', '.join(map(str, dupes))}")
    return cohorts


def _pick_reference(cohorts: list[_C], name: str | None, size: Callable[[_C], int]) -> _C | None:
    if name is not None:
        for c in cohorts:
            if c.name == name:
                return c
        raise ValueError(f"reference cohort {name!r} is not among {[c.name for c in cohorts]}")
    # max() keeps the first of equal sizes: a tie resolves by input order.
    return max(cohorts, key=size, default=None)


def _welch(row: CohortResult, c: CohortStats, ref: CohortStats, alpha: float,
           notes: list[str]) -> CohortResult:
    diff = c.mean - ref.mean
    vn1, vn2 = c.variance / c.n, ref.variance / ref.n
    se2 = vn1 + vn2
    if se2 == 0:
        notes.append("both cohorts constant: no test possible")
        return replace(row, diff=diff)
    # Welch–Satterthwaite, written with the variance shares a + b = 1 so that
    # tiny variances (cost in USD is ~1e-4, squared twice ~1e-16) cannot
    # underflow to 0/0.
    a, b = vn1 / se2, vn2 / se2
    df = 1.0 / (a * a / (c.n - 1) + b * b / (ref.n - 1))
    se = math.sqrt(se2)
    t = diff / se
    p = 2.0 * float(stats.t.sf(abs(t), df))
    half = float(stats.t.ppf(1 - alpha / 2, df)) * se
    return replace(row, diff=diff, diff_ci_low=diff - half, diff_ci_high=diff + half,
                   p_value=min(p, 1.0), test=WELCH, statistic=t, df=df)


def _two_proportions(row: CohortResult, c: CohortRate, ref: CohortRate, alpha: float,
                     notes: list[str]) -> CohortResult:
    diff = c.rate - ref.rate
    low, high = confint_proportions_2indep(
        c.successes, c.trials, ref.successes, ref.trials,
        method="newcomb", compare="diff", alpha=alpha,
    )
    row = replace(row, diff=diff, diff_ci_low=float(low), diff_ci_high=float(high))
    trials = c.trials + ref.trials
    successes = c.successes + ref.successes
    # Smallest expected cell of the 2x2 table under "no difference".
    expected = min(c.trials, ref.trials) * min(successes, trials - successes) / trials
    if expected < MIN_EXPECTED:
        notes.append(f"{FISHER}: smallest expected count {expected:.1f} < {MIN_EXPECTED:g}")
        table = [[c.successes, c.trials - c.successes], [ref.successes, ref.trials - ref.successes]]
        p = float(stats.fisher_exact(table).pvalue)
        return replace(row, p_value=min(p, 1.0), test=FISHER)
    # With every expected count >= 5 the pooled rate is strictly inside (0, 1),
    # so the z statistic's standard error is never zero.
    z, p = proportions_ztest([c.successes, ref.successes], [c.trials, ref.trials])
    return replace(row, p_value=min(float(p), 1.0), test=Z_TEST, statistic=float(z))


def _finish(kind: Kind, base_test: str, interval: str, alpha: float,
            ref: CohortStats | CohortRate | None, rows: list[CohortResult]) -> Comparison:
    tested = [i for i, r in enumerate(rows) if r.p_value is not None]
    used = sorted({rows[i].test for i in tested}, key=[base_test, FISHER, WELCH, Z_TEST].index)
    if not used:
        test = base_test
    elif len(used) == 1:
        test = used[0]
    else:
        test = f"{used[0]}, {used[1]} where an expected count < {MIN_EXPECTED:g}"
    if len(tested) >= 2:
        test += ", Holm-adjusted"
        # multipletests(method="holm") runs gc.collect() on every call
        # (statsmodels 0.14-0.15), ~40 ms in a process with scipy loaded:
        # fine for a CLI call, and skipped below when there is one test,
        # where Holm's adjustment is the identity anyway.
        reject, adjusted, _, _ = multipletests(
            [rows[i].p_value for i in tested], alpha=alpha, method="holm"
        )
        decisions = zip(reject.tolist(), adjusted.tolist())
    else:
        decisions = ((rows[i].p_value <= alpha, rows[i].p_value) for i in tested)
    for i, (rej, p_adj) in zip(tested, decisions):
        rows[i] = replace(rows[i], p_adjusted=min(float(p_adj), 1.0), significant=bool(rej))
    return Comparison(kind, test, interval, alpha, ref.name if ref else None, tuple(rows))


def _decimals(rows: Sequence[CohortResult], scale: float) -> int:
    """Decimals that show two significant digits of the narrowest interval."""
    widths = [
        (hi - lo) * scale / 2
        for r in rows
        for lo, hi in ((r.ci_low, r.ci_high), (r.diff_ci_low, r.diff_ci_high))
        if lo is not None and hi is not None and hi > lo
    ]
    if widths:
        return max(0, min(6, 1 - math.floor(math.log10(min(widths)))))
    values = [abs(r.value) * scale for r in rows if r.value]
    if values:
        return max(0, min(6, 2 - math.floor(math.log10(min(values)))))
    return 2


def _p(p: float | None) -> str:
    if p is None:
        return ""
    return "< 0.001" if p < 0.001 else f"{p:.3f}"


def _sentence(r: CohortResult, ref: CohortResult | None, metric: str, unit: str, level: str,
              alpha: float, holm: bool, num: Callable[..., str]) -> str:
    if r.note.startswith("insufficient data"):
        return f"{r.name}: insufficient data (n = {r.n}), not compared."
    if r.diff is None:
        return f"{r.name}: not compared, reference {ref.name if ref else ''} has insufficient data."
    u = f" {unit}" if unit else ""
    if r.p_value is None:
        return (f"{r.name}: {metric} {num(r.value)}{u} vs {num(ref.value)}{u} in {ref.name}; "
                f"both cohorts constant, no test possible.")
    if r.diff == 0:
        head = f"{r.name}: {metric} is the same as {ref.name}"
        ci = f"{num(r.diff_ci_low, True)} to {num(r.diff_ci_high, True)}"
    else:
        # The interval is stated in the direction of the sentence, so
        # "2.1 points lower (95% CI 0.8 to 3.4)" reads as it is meant.
        higher = r.diff > 0
        lo, hi = (r.diff_ci_low, r.diff_ci_high) if higher else (-r.diff_ci_high, -r.diff_ci_low)
        head = (f"{r.name}: {metric} is {num(abs(r.diff))}{u} "
                f"{'higher' if higher else 'lower'} than {ref.name}")
        ci = f"{num(lo)} to {num(hi)}"
    verdict = "significant" if r.significant else "not significant"
    p = "Fisher's exact p" if r.test == FISHER else "p"
    if holm:
        tail = f"{verdict} after Holm correction (adjusted {p} {_p_words(r.p_adjusted)})"
    else:
        tail = f"{verdict} at alpha {alpha:g} ({p} {_p_words(r.p_value)})"
    return f"{head} ({level} CI {ci}), {tail}."


def _p_words(p: float) -> str:
    return "< 0.001" if p < 0.001 else f"= {p:.3f}"
