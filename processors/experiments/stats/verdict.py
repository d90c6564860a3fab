"""One verdict per experiment: keep running, ship X, no difference, or invalid.

:func:`analyze` takes the experiment's design (:class:`ExperimentSpec`), the
exposures per variant and the sufficient statistics per variant and metric,
and returns a :class:`Verdict` with the decision, the reason in words and
every comparison behind it. The rules, in order:

1. **Invalid** when exposures fail the sample-ratio-mismatch test
   (:mod:`.srm`): nothing else can be trusted.
2. **Invalid** when a variant is significantly worse than control on a
   guardrail metric by more than its tolerance (the whole interval is on the
   harmful side). Guardrails are not multiplicity-corrected: correcting
   would make them slower to catch harm.
3. Primary metric, each variant against control, p-values Holm-corrected
   across variants (secondary metrics form their own Holm family and are
   only reported):

   * fixed-horizon design (``sequential=False``): nothing is decided before
     every arm reaches the planned sample size; deciding at the first
     significant look is exactly the peeking that inflates false positives;
   * **ship X** when X is significantly better (the best such X if several);
     ship control when every variant is significantly worse;
   * **no difference** when the remaining variants' intervals all lie within
     plus/minus the minimum detectable effect, or the planned sample size is
     reached without a significant result;
   * otherwise **keep running**, with the units still needed.

Lifts are relative (a fraction of the control mean). The planned sample size
is the one that detects the primary metric's ``mde`` with ``power`` at level
``alpha / (number of variants)`` (Bonferroni, the first Holm step), from the
control arm's current variance (CUPED-adjusted when a covariate is given).

Examples
--------
>>> from processors.experiments.stats.sufficient import ProportionStats
>>> spec = ExperimentSpec(control="a", weights={"a": 1, "b": 1},
...                       primary=MetricSpec("thumbs_up", mde=0.1))
>>> v = analyze(spec, {"a": 20000, "b": 20000},
...             {"a": {"thumbs_up": ProportionStats(20000, 2000)},
...              "b": {"thumbs_up": ProportionStats(20000, 2400)}})
>>> v.decision.value, v.variant
('ship', 'b')
"""
from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import asdict, dataclass
from enum import Enum
from typing import Any, Literal

from .bayesian import bayesian_test
from .cuped import cuped_adjust
from .frequentist import holm, proportion_ztest, ttest
from .power import sample_size, sequential_sample_size
from .sequential import DEFAULT_TUNING, sequential_ttest
from .srm import SRM_THRESHOLD, SRMResult, srm_test
from .sufficient import (
    ArmMoments,
    CovariateStats,
    MeanStats,
    ProportionStats,
    RatioStats,
    as_moments,
)

__all__ = ["Comparison", "Decision", "ExperimentSpec", "MetricSpec", "Verdict", "analyze"]

Goal = Literal["increase", "decrease"]
_STATS = (MeanStats, ProportionStats, RatioStats, CovariateStats)


class Decision(str, Enum):
    KEEP_RUNNING = "keep_running"
    SHIP = "ship"
    NO_DIFFERENCE = "no_difference"
    INVALID = "invalid"


@dataclass(frozen=True)
class MetricSpec:
    """A metric's role in the decision.

    Parameters
    ----------
    name : str
        Key of the metric in the statistics mapping.
    goal : {'increase', 'decrease'}
        Which direction is good (``decrease`` for latency, cost, errors).
    mde : float
        Primary metric: smallest relative lift worth detecting (0.05 = 5%).
    tolerance : float
        Guardrail: relative harm tolerated before it counts as breached.
    """

    name: str
    goal: Goal = "increase"
    mde: float = 0.05
    tolerance: float = 0.0

    def __post_init__(self) -> None:
        if self.goal not in ("increase", "decrease"):
            raise ValueError(f"goal must be 'increase' or 'decrease', got {self.goal!r}")
        if not self.mde > 0:
            raise ValueError("mde must be positive")
        if self.tolerance < 0:
            raise ValueError("tolerance must be >= 0")


@dataclass(frozen=True)
class ExperimentSpec:
    """Design of an experiment, fixed before it starts.

    ``sequential=True`` (the default) uses confidence sequences, so the
    verdict may be read at every refresh; ``False`` uses fixed-horizon tests
    and decides only at the planned sample size.
    """

    control: str
    weights: Mapping[str, float]
    primary: MetricSpec
    guardrails: tuple[MetricSpec, ...] = ()
    secondary: tuple[MetricSpec, ...] = ()
    alpha: float = 0.05
    power: float = 0.8
    sequential: bool = True
    tuning: float = DEFAULT_TUNING
    srm_threshold: float = SRM_THRESHOLD

    def __post_init__(self) -> None:
        if self.control not in self.weights:
            raise ValueError(f"control {self.control!r} has no weight")
        if len(self.weights) < 2:
            raise ValueError("an experiment needs a control and at least one variant")
        if any(not w > 0 for w in self.weights.values()):
            raise ValueError("every variant weight must be positive")
        names = [m.name for m in self.metrics]
        if len(set(names)) != len(names):
            raise ValueError("metric names must be unique across roles")
        if not 0 < self.alpha < 1 or not 0 < self.power < 1:
            raise ValueError("alpha and power must be in (0, 1)")

    @property
    def metrics(self) -> tuple[MetricSpec, ...]:
        return (self.primary, *self.guardrails, *self.secondary)

    @property
    def variants(self) -> tuple[str, ...]:
        """Non-control variants, in the order of ``weights``."""
        return tuple(k for k in self.weights if k != self.control)


@dataclass(frozen=True)
class Comparison:
    """One variant against control on one metric (relative lift)."""

    variant: str
    metric: str
    role: str
    method: str
    lift: float
    ci_low: float
    ci_high: float
    p_value: float
    adjusted_p_value: float
    significant: bool
    direction: Literal["better", "worse", "none"]
    chance_to_win: float
    risk: float
    cuped_theta: float | None
    n_control: float
    n_variant: float
    ok: bool
    reason: str


@dataclass(frozen=True)
class Verdict:
    """The decision, why, and everything it rests on."""

    decision: Decision
    variant: str | None
    reason: str
    srm: SRMResult
    comparisons: tuple[Comparison, ...]
    sample_size_per_arm: dict[str, int] | None = None
    units_remaining: int | None = None
    sequential: bool = True
    alpha: float = 0.05

    def to_dict(self) -> dict[str, Any]:
        """JSON-safe: enums as strings, infinite bounds as None."""
        return _json_safe(asdict(self))


def _json_safe(x: Any) -> Any:
    if isinstance(x, Enum):
        return x.value
    if isinstance(x, dict):
        return {k: _json_safe(v) for k, v in x.items()}
    if isinstance(x, (list, tuple)):
        return [_json_safe(v) for v in x]
    if isinstance(x, float) and not math.isfinite(x):
        return None
    return x


def _pct(x: float) -> str:
    return f"{x:+.1%}" if math.isfinite(x) else ("+inf" if x > 0 else "-inf")


def _compare(
    spec: ExperimentSpec, metric: MetricSpec, role: str, a: Any, b: Any, variant: str
) -> tuple[Comparison, ArmMoments]:
    if type(a) is not type(b) or not isinstance(a, _STATS):
        raise TypeError(
            f"metric {metric.name!r}: control and {variant!r} need the same statistics "
            f"type, got {type(a).__name__} and {type(b).__name__}"
        )
    theta = None
    if isinstance(a, CovariateStats):
        ma, mb, th = cuped_adjust(a, b)
        theta = float(th)
    else:
        ma, mb = as_moments(a), as_moments(b)
    if spec.sequential:
        res = sequential_ttest(ma, mb, relative=True, alpha=spec.alpha, tuning=spec.tuning)
    elif isinstance(a, ProportionStats):
        res = proportion_ztest(a, b, relative=True, alpha=spec.alpha)
    else:
        res = ttest(ma, mb, relative=True, alpha=spec.alpha)
    bayes = bayesian_test(ma, mb, relative=True, inverse=metric.goal == "decrease",
                          alpha=spec.alpha)
    sign = 1.0 if metric.goal == "increase" else -1.0
    direction = "none"
    if res.ok and res.estimate * sign > 0:
        direction = "better"
    elif res.ok and res.estimate * sign < 0:
        direction = "worse"
    comp = Comparison(
        variant=variant, metric=metric.name, role=role, method=res.method,
        lift=float(res.estimate), ci_low=float(res.ci_low), ci_high=float(res.ci_high),
        p_value=float(res.p_value), adjusted_p_value=float(res.p_value),
        significant=False, direction=direction,  # type: ignore[arg-type]
        chance_to_win=float(bayes.chance_to_win), risk=float(bayes.risk_variant),
        cuped_theta=theta, n_control=float(ma.n), n_variant=float(mb.n),
        ok=bool(res.ok), reason=res.reason,
    )
    return comp, ma


def _with_holm(comps: list[Comparison], alpha: float, correct: bool) -> list[Comparison]:
    if not comps:
        return comps
    if correct:
        _, adj = holm([c.p_value for c in comps], alpha)
    else:
        adj = [c.p_value for c in comps]
    out = []
    for c, p in zip(comps, adj):
        sig = bool(c.ok and p < alpha)
        out.append(Comparison(**{**asdict(c), "adjusted_p_value": float(p), "significant": sig,
                                 "direction": c.direction if sig else "none"}))
    return out


def _breached(c: Comparison, m: MetricSpec) -> bool:
    if not c.ok:
        return False
    if m.goal == "increase":
        return c.ci_high < -m.tolerance
    return c.ci_low > m.tolerance


def _chance(p: float) -> str:
    # 99.997% printed as "100.0%" reads as certainty; it is not.
    return ">99.9%" if p > 0.999 else f"{p:.1%}"


def _describe(c: Comparison, spec: ExperimentSpec) -> str:
    word = "confidence sequence" if spec.sequential else "CI"
    lvl = f"{1 - spec.alpha:.0%}"
    return (f"{c.metric} {_pct(c.lift)} ({lvl} {word} {_pct(c.ci_low)} to {_pct(c.ci_high)}, "
            f"p = {c.adjusted_p_value:.2g})")


def analyze(
    spec: ExperimentSpec,
    exposures: Mapping[str, float],
    stats: Mapping[str, Mapping[str, Any]],
) -> Verdict:
    """Verdict for one experiment from its sufficient statistics.

    Parameters
    ----------
    spec : ExperimentSpec
    exposures : mapping variant -> units assigned (for the SRM check)
    stats : mapping variant -> metric name -> statistics container
        :class:`~.sufficient.MeanStats`, :class:`~.sufficient.ProportionStats`,
        :class:`~.sufficient.RatioStats` or :class:`~.sufficient.CovariateStats`
        (CUPED), the same type in every variant for one metric.

    Returns
    -------
    Verdict
    """
    arms = (spec.control, *spec.variants)
    missing = [v for v in arms if v not in exposures or v not in stats]
    if missing:
        raise ValueError(f"no exposures or statistics for {missing}")
    for v in arms:
        absent = [m.name for m in spec.metrics if m.name not in stats[v]]
        if absent:
            raise ValueError(f"variant {v!r} has no statistics for {absent}")

    srm = srm_test({v: exposures[v] for v in arms}, {v: spec.weights[v] for v in arms},
                   threshold=spec.srm_threshold)

    primary: list[Comparison] = []
    control_moments: dict[str, ArmMoments] = {}
    for v in spec.variants:
        c, ma = _compare(spec, spec.primary, "primary", stats[spec.control][spec.primary.name],
                         stats[v][spec.primary.name], v)
        primary.append(c)
        control_moments[v] = ma
    primary = _with_holm(primary, spec.alpha, correct=True)
    guard = _with_holm([
        _compare(spec, m, "guardrail", stats[spec.control][m.name], stats[v][m.name], v)[0]
        for m in spec.guardrails for v in spec.variants], spec.alpha, correct=False)
    second = _with_holm([
        _compare(spec, m, "secondary", stats[spec.control][m.name], stats[v][m.name], v)[0]
        for m in spec.secondary for v in spec.variants], spec.alpha, correct=True)
    comparisons = tuple(primary + guard + second)

    needed = _needed(spec, control_moments)
    current = {spec.control: primary[0].n_control, **{c.variant: c.n_variant for c in primary}}
    remaining = None
    if needed is not None:
        remaining = int(sum(max(0.0, needed[k] - current[k]) for k in arms))

    def verdict(decision: Decision, reason: str, variant: str | None = None) -> Verdict:
        return Verdict(decision, variant, reason, srm, comparisons, needed, remaining,
                       spec.sequential, spec.alpha)

    if srm.flagged:
        return verdict(Decision.INVALID, srm.message)

    by_name = {m.name: m for m in spec.guardrails}
    breaches = [c for c in guard if _breached(c, by_name[c.metric])]
    if breaches:
        parts = [f"{c.variant} worsened guardrail {_describe(c, spec)}; tolerance "
                 f"{by_name[c.metric].tolerance:.1%}" for c in breaches]
        return verdict(Decision.INVALID, "guardrail breached: " + "; ".join(parts))

    goal_sign = 1.0 if spec.primary.goal == "increase" else -1.0
    mde = spec.primary.mde
    reached = needed is not None and all(current[k] >= needed[k] for k in arms)
    winners = [c for c in primary if c.significant and c.direction == "better"]
    losers = [c for c in primary if c.significant and c.direction == "worse"]
    not_ok = [c for c in primary if not c.ok]
    holm_note = f" after Holm over {len(primary)} variants" if len(primary) > 1 else ""

    def need_text() -> str:
        if needed is None:
            return "the sample size cannot be estimated yet (control has no mean or variance)"
        return (f"about {remaining:,} more units needed "
                f"({needed[spec.control]:,} in control for a {mde:.0%} lift with "
                f"{spec.power:.0%} power)")

    if not_ok:
        reasons = sorted({c.reason for c in not_ok if c.reason})
        return verdict(Decision.KEEP_RUNNING,
                       f"not enough data yet ({'; '.join(reasons)}); {need_text()}")

    if not spec.sequential and not reached:
        lead = ""
        if winners or losers:
            c = (winners or losers)[0]
            lead = (f"{c.variant} shows {_describe(c, spec)}, but this fixed-horizon test "
                    "may only be read at its planned size; stopping at the first "
                    "significant look is peeking. ")
        return verdict(Decision.KEEP_RUNNING, lead + need_text())

    if winners:
        best = max(winners, key=lambda c: c.lift * goal_sign)
        return verdict(
            Decision.SHIP,
            f"{best.variant} beats control: {_describe(best, spec)}{holm_note}; "
            f"chance to beat control {_chance(best.chance_to_win)}",
            best.variant,
        )
    if len(losers) == len(primary):
        return verdict(
            Decision.SHIP,
            "every variant is significantly worse than control: "
            + "; ".join(f"{c.variant} {_describe(c, spec)}" for c in losers),
            spec.control,
        )
    open_ = [c for c in primary if c not in losers]
    if all(-mde < c.ci_low and c.ci_high < mde for c in open_):
        return verdict(
            Decision.NO_DIFFERENCE,
            f"no variant moves {spec.primary.name} by {mde:.0%} or more: "
            + "; ".join(f"{c.variant} {_describe(c, spec)}" for c in open_),
        )
    if reached:
        return verdict(
            Decision.NO_DIFFERENCE,
            f"planned sample size reached without a significant difference on "
            f"{spec.primary.name}; any effect is likely smaller than {mde:.0%}: "
            + "; ".join(f"{c.variant} {_describe(c, spec)}" for c in open_),
        )
    return verdict(Decision.KEEP_RUNNING, f"no significant difference yet; {need_text()}")


def _needed(spec: ExperimentSpec, control: Mapping[str, ArmMoments]) -> dict[str, int] | None:
    """Planned units per arm for the primary metric's MDE; None if unknown."""
    m = len(spec.variants)
    alpha = spec.alpha / m
    wc = spec.weights[spec.control]
    out: dict[str, int] = {spec.control: 0}
    for v, ma in control.items():
        base, var = float(ma.base_mean), float(ma.variance)
        if not (ma.n >= 2 and base != 0 and var > 0):
            return None
        effect = spec.primary.mde * abs(base)
        ratio = spec.weights[v] / wc
        size = sequential_sample_size if spec.sequential else sample_size
        kw = {"tuning": spec.tuning} if spec.sequential else {}
        n_c = max(2, math.ceil(float(size(var, effect, alpha=alpha, power=spec.power,
                                          ratio=ratio, **kw))))
        out[spec.control] = max(out[spec.control], n_c)
        out[v] = max(2, math.ceil(n_c * ratio))
    return out
