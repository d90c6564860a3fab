"""Experiment results: from per-variant sums to result rows and a verdict.

Pure logic, no I/O: :mod:`.results_db` loads the inputs and writes the
rows, :mod:`.results_worker` runs it once a minute, :mod:`.results_alerts`
turns a change of decision into an alert.

* :class:`ExperimentDesign`: what the analysis needs from an ``experiments``
  row (variants and weights, control, metrics by role, minimum sample size).
* :class:`VariantSums`: one variant's sums from ``metric_windows``; every
  metric's sufficient statistics come from them (:data:`METRIC_SOURCES`).
* :func:`compute_results`: design + sums + exposures -> :class:`ExperimentResult`
  (one :class:`ResultRow` per metric and variant, the verdict of
  :func:`~processors.experiments.stats.verdict.analyze` and its decision).

The unit of every test is the request (an LLM call, a rating, a thumb):
``metric_windows`` keeps sums per window and series, not per user, so the
per-user correlation of requests is ignored and intervals are somewhat too
narrow when users send many requests (docs/experiments.md, "Unit of
analysis"). Exposures count users and feed the sample-ratio-mismatch test.

Examples
--------
>>> design = ExperimentDesign("tone", (("control", 0.5), ("friendly", 0.5)),
...                           primary="thumbs_up_ratio", guardrails=("error_rate",),
...                           min_sample_size=100)
>>> sums = {"control": VariantSums(requests=20000, errors=200, thumbs_count=20000, thumbs_up=2000),
...         "friendly": VariantSums(requests=20000, errors=190, thumbs_count=20000, thumbs_up=2400)}
>>> r = compute_results(design, sums, {"control": 5000, "friendly": 5000})
>>> r.decision, r.verdict_variant
('ship', 'friendly')
"""
from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, fields, replace
from datetime import UTC, datetime
from typing import Any

from processors.experiments.stats import (
    Decision,
    ExperimentSpec,
    MeanStats,
    MetricSpec,
    ProportionStats,
    Verdict,
    analyze,
    holm,
    proportion_ztest,
    srm_test,
    ttest,
)
from processors.experiments.stats.srm import SRMResult

__all__ = [
    "ALERTABLE",
    "METRIC_SOURCES",
    "DesignError",
    "ExperimentDesign",
    "ExperimentResult",
    "MetricSource",
    "ResultRow",
    "VariantSums",
    "compute_results",
    "decision_of",
]

#: Smallest relative lift of the primary metric worth detecting: experiment
#: definitions carry no MDE yet, and 5% is a common default for product metrics.
DEFAULT_MDE = 0.05

#: Decisions that raise an alert when an experiment reaches them.
ALERTABLE = frozenset({"ship", "srm", "guardrail_breached"})


class DesignError(ValueError):
    """An ``experiments`` row the analysis cannot use (names the problem).

    >>> ExperimentDesign("t", (("a", 1.0),), primary="rating")
    Traceback (most recent call last):
    ...
    processors.experiments.results.DesignError: experiment 't' needs at least two variants
    """


@dataclass(frozen=True)
class VariantSums:
    """One variant's sums over ``metric_windows`` (request-level metrics over LLM calls).

    Examples
    --------
    >>> total = VariantSums(requests=10, errors=1) + VariantSums(requests=5)
    >>> total.requests, total.errors
    (15.0, 1.0)
    """

    requests: float = 0.0
    errors: float = 0.0
    latency_ms_sum: float = 0.0
    latency_ms_sq_sum: float = 0.0
    cost_count: float = 0.0
    cost_usd: float = 0.0
    cost_sq_sum: float = 0.0
    usage_count: float = 0.0
    tokens: float = 0.0
    rating_count: float = 0.0
    rating_sum: float = 0.0
    rating_sq_sum: float = 0.0
    thumbs_count: float = 0.0
    thumbs_up: float = 0.0

    def __post_init__(self) -> None:
        for f in fields(self):
            value = getattr(self, f.name)
            # SQL sums arrive as Decimal or None (no rows): normalise once here.
            value = 0.0 if value is None else float(value)
            if not math.isfinite(value) or value < 0:
                raise ValueError(f"VariantSums.{f.name} must be finite and >= 0, got {value!r}")
            object.__setattr__(self, f.name, value)

    def __add__(self, other: VariantSums) -> VariantSums:
        return VariantSums(**{f.name: getattr(self, f.name) + getattr(other, f.name) for f in fields(self)})


@dataclass(frozen=True)
class MetricSource:
    """How one experiment metric is read from :class:`VariantSums`.

    ``build`` is None when ``metric_windows`` has no sufficient statistics
    for the metric; ``note`` then says why (and otherwise any caveat).

    >>> METRIC_SOURCES["error_rate"].build(VariantSums(requests=200, errors=3)).mean
    0.015
    """

    goal: str
    unit: str
    build: Callable[[VariantSums], Any] | None
    note: str = ""


#: Every name in :data:`~processors.experiments.definitions.KNOWN_METRICS`.
METRIC_SOURCES: dict[str, MetricSource] = {
    "success_rate": MetricSource(
        "increase", "LLM calls", lambda s: ProportionStats(s.requests, s.requests - s.errors)),
    "error_rate": MetricSource("decrease", "LLM calls", lambda s: ProportionStats(s.requests, s.errors)),
    "latency_p95_ms": MetricSource(
        "decrease", "LLM calls", lambda s: MeanStats(s.requests, s.latency_ms_sum, s.latency_ms_sq_sum),
        "tested on mean latency: a p95 has no sufficient statistics that add up across windows"),
    "cost_per_request": MetricSource(
        "decrease", "priced LLM calls", lambda s: MeanStats(s.cost_count, s.cost_usd, s.cost_sq_sum)),
    "tokens_per_request": MetricSource(
        "decrease", "LLM calls with usage", None,
        "not tested: metric_windows keeps no sum of squared tokens"),
    "rating": MetricSource(
        "increase", "ratings", lambda s: MeanStats(s.rating_count, s.rating_sum, s.rating_sq_sum)),
    "thumbs_up_ratio": MetricSource(
        "increase", "thumbs", lambda s: ProportionStats(s.thumbs_count, s.thumbs_up)),
    "conversion": MetricSource("increase", "users", None, "not tested: no conversion events are collected"),
}


def _names(value: Any, what: str) -> tuple[str, ...]:
    if value is None:
        return ()
    if isinstance(value, str) or not all(isinstance(v, str) for v in value):
        raise DesignError(f"{what} must be a list of metric names, got {value!r}")
    return tuple(value)


@dataclass(frozen=True)
class ExperimentDesign:
    """The parts of an experiment definition the analysis reads.

    Parameters
    ----------
    key : str
    variants : tuple of (name, weight)
        The first is the control.
    primary : str
    guardrails, secondary : tuple of str
        A metric listed in several roles keeps the first of primary,
        guardrail, secondary.
    min_sample_size : int
        Users per variant before a ship / no-difference verdict is read.
    project : str or None
        Where alerts are routed.
    mde : float
        Relative lift of the primary metric the sample size is planned for.

    Examples
    --------
    >>> row = {"key": "t", "primary_metric": "rating", "min_sample_size": 50,
    ...        "variants": [{"name": "a", "weight": 0.5}, {"name": "b", "weight": 0.5}],
    ...        "secondary_metrics": ["rating", "error_rate"], "guardrail_metrics": []}
    >>> d = ExperimentDesign.from_row(row)
    >>> d.control, d.secondary
    ('a', ('error_rate',))
    """

    key: str
    variants: tuple[tuple[str, float], ...]
    primary: str
    guardrails: tuple[str, ...] = ()
    secondary: tuple[str, ...] = ()
    min_sample_size: int = 1
    project: str | None = None
    mde: float = DEFAULT_MDE

    def __post_init__(self) -> None:
        if len(self.variants) < 2:
            raise DesignError(f"experiment {self.key!r} needs at least two variants")
        names = [n for n, _ in self.variants]
        if len(set(names)) != len(names):
            raise DesignError(f"experiment {self.key!r} has duplicate variant names {names}")
        seen = {self.primary}
        guard = tuple(m for m in dict.fromkeys(self.guardrails) if m not in seen)
        seen |= set(guard)
        second = tuple(m for m in dict.fromkeys(self.secondary) if m not in seen)
        object.__setattr__(self, "guardrails", guard)
        object.__setattr__(self, "secondary", second)
        unknown = [m for m in (self.primary, *guard, *second) if m not in METRIC_SOURCES]
        if unknown:
            raise DesignError(f"experiment {self.key!r}: unknown metric(s) {unknown}; "
                              f"known: {', '.join(METRIC_SOURCES)}")

    @classmethod
    def from_row(cls, row: Mapping[str, Any], project: str | None = None) -> ExperimentDesign:
        """From an ``experiments`` row (``variants`` as decoded jsonb)."""
        try:
            variants = tuple((str(v["name"]), float(v["weight"])) for v in row["variants"])
        except (KeyError, TypeError, ValueError) as exc:
            raise DesignError(f"experiment {row.get('key')!r}: variants must be "
                              f"[{{name, weight}}, ...], got {row.get('variants')!r}") from exc
        return cls(
            key=row["key"],
            variants=variants,
            primary=row["primary_metric"],
            guardrails=_names(row.get("guardrail_metrics"), "guardrail_metrics"),
            secondary=_names(row.get("secondary_metrics"), "secondary_metrics"),
            min_sample_size=int(row.get("min_sample_size") or 1),
            project=project,
        )

    @property
    def control(self) -> str:
        return self.variants[0][0]

    @property
    def roles(self) -> tuple[tuple[str, str], ...]:
        """(metric, role) in report order."""
        return ((self.primary, "primary"), *((m, "guardrail") for m in self.guardrails),
                *((m, "secondary") for m in self.secondary))


@dataclass(frozen=True)
class ResultRow:
    """One ``experiment_results`` row; fields in table column order.

    >>> ResultRow.columns()[:4]
    ('experiment_key', 'computed_at', 'metric', 'variant')
    """

    experiment_key: str
    computed_at: datetime
    metric: str
    variant: str
    role: str
    is_control: bool
    project: str | None
    n: float | None
    mean: float | None
    exposures: int
    lift_abs: float | None = None
    lift_abs_low: float | None = None
    lift_abs_high: float | None = None
    lift_rel: float | None = None
    lift_rel_low: float | None = None
    lift_rel_high: float | None = None
    p_value: float | None = None
    p_holm: float | None = None
    seq_lift_low: float | None = None
    seq_lift_high: float | None = None
    seq_p_value: float | None = None
    seq_p_holm: float | None = None
    chance_to_beat_control: float | None = None
    expected_loss: float | None = None
    significant: bool | None = None
    direction: str | None = None
    method: str | None = None
    srm_p_value: float = 1.0
    srm_flagged: bool = False
    decision: str = "keep_running"
    verdict: str = "keep_running"
    verdict_variant: str | None = None
    verdict_reason: str = ""
    units_remaining: int | None = None
    note: str = ""

    @classmethod
    def columns(cls) -> tuple[str, ...]:
        return tuple(f.name for f in fields(cls))

    def values(self) -> tuple[Any, ...]:
        return tuple(getattr(self, c) for c in self.columns())


@dataclass(frozen=True)
class ExperimentResult:
    """One computation: the rows, the decision and what it rests on.

    >>> d = ExperimentDesign("t", (("a", 0.5), ("b", 0.5)), primary="error_rate")
    >>> compute_results(d, {"b": VariantSums(requests=40, errors=2)}, {}).row("error_rate", "b").mean
    0.05
    """

    design: ExperimentDesign
    computed_at: datetime
    decision: str
    verdict: str
    verdict_variant: str | None
    reason: str
    srm: SRMResult
    exposures: Mapping[str, int]
    rows: tuple[ResultRow, ...]
    analysis: Verdict | None = field(default=None, repr=False)

    def row(self, metric: str, variant: str) -> ResultRow:
        """The row of one metric and variant (KeyError if absent)."""
        for r in self.rows:
            if r.metric == metric and r.variant == variant:
                return r
        raise KeyError((metric, variant))


def decision_of(verdict: Verdict) -> str:
    """The verdict as one word; ``invalid`` splits into ``srm`` and ``guardrail_breached``.

    >>> from processors.experiments.stats.srm import srm_test
    >>> v = Verdict(Decision.INVALID, None, "x", srm_test([10, 90], [1, 1]), ())
    >>> decision_of(v)
    'srm'
    """
    if verdict.decision is Decision.INVALID:
        return "srm" if verdict.srm.flagged else "guardrail_breached"
    return verdict.decision.value


def _finite(x: Any) -> float | None:
    if x is None:
        return None
    x = float(x)
    return x if math.isfinite(x) else None


def _fixed(a: Any, b: Any, relative: bool, alpha: float) -> Any:
    if isinstance(a, ProportionStats):
        return proportion_ztest(a, b, relative=relative, alpha=alpha)
    return ttest(a, b, relative=relative, alpha=alpha)


def _hold_for_min_sample(design: ExperimentDesign, exposures: Mapping[str, int],
                         decision: str, reason: str) -> tuple[str, str] | None:
    """Keep running while an arm has fewer users than the design asks for.

    The sequential test stays valid at any size, but the owner chose a
    minimum before results are read (novelty effects, weekly cycles); SRM
    and guardrails are never held, they are about harm.
    """
    if decision not in ("ship", "no_difference"):
        return None
    short = {v: exposures.get(v, 0) for v, _ in design.variants
             if exposures.get(v, 0) < design.min_sample_size}
    if not short:
        return None
    arm, have = min(short.items(), key=lambda kv: kv[1])
    return ("keep_running",
            f"would be {decision.replace('_', ' ')} ({reason}), but {arm} has {have:,} users of the "
            f"{design.min_sample_size:,} per variant planned before results are read")


def compute_results(
    design: ExperimentDesign,
    sums: Mapping[str, VariantSums],
    exposures: Mapping[str, int],
    computed_at: datetime | None = None,
    *,
    alpha: float = 0.05,
) -> ExperimentResult:
    """Rows and verdict of one experiment.

    Parameters
    ----------
    design : ExperimentDesign
    sums : mapping variant -> VariantSums
        Variants without data may be missing (treated as empty).
    exposures : mapping variant -> users
        Users exposed per variant (missing = 0); the SRM test compares them
        to the weights.
    computed_at : datetime, optional
        Timestamp of every row; now (UTC) by default.
    alpha : float
        Error rate of every interval and test.

    Returns
    -------
    ExperimentResult
        The verdict comes from
        :func:`~processors.experiments.stats.verdict.analyze` with
        confidence sequences (read every minute, so sequential); a ship or
        no-difference verdict is held as keep-running until every arm has
        ``min_sample_size`` users.

    Examples
    --------
    >>> design = ExperimentDesign("t", (("a", 0.5), ("b", 0.5)), primary="error_rate")
    >>> r = compute_results(design, {}, {})
    >>> r.decision, r.reason.startswith("not enough data")
    ('keep_running', True)
    """
    computed_at = computed_at or datetime.now(UTC)
    arms = [v for v, _ in design.variants]
    weights = dict(design.variants)
    exposed = {v: int(exposures.get(v, 0)) for v in arms}
    empty = VariantSums()
    stats = {v: {m: METRIC_SOURCES[m].build(sums.get(v, empty))
                 for m, _ in design.roles if METRIC_SOURCES[m].build is not None}
             for v in arms}

    def spec_of(name: str, role: str) -> MetricSpec:
        return MetricSpec(name, goal=METRIC_SOURCES[name].goal,  # type: ignore[arg-type]
                          mde=design.mde if role == "primary" else DEFAULT_MDE)

    testable = {m for m, _ in design.roles if METRIC_SOURCES[m].build is not None}
    analysis: Verdict | None = None
    try:
        if design.primary in testable:
            spec = ExperimentSpec(
                control=design.control, weights=weights, alpha=alpha, sequential=True,
                primary=spec_of(design.primary, "primary"),
                guardrails=tuple(spec_of(m, "guardrail") for m in design.guardrails if m in testable),
                secondary=tuple(spec_of(m, "secondary") for m in design.secondary if m in testable),
            )
            analysis = analyze(spec, exposed, stats)
    except ValueError as exc:  # e.g. a zero weight: say so instead of crashing the loop
        raise DesignError(f"experiment {design.key!r}: {exc}") from exc

    if analysis is not None:
        srm = analysis.srm
        decision, verdict = decision_of(analysis), analysis.decision.value
        variant, reason, remaining = analysis.variant, analysis.reason, analysis.units_remaining
    else:
        srm = srm_test(exposed, weights)
        note = METRIC_SOURCES[design.primary].note
        decision, verdict, variant, remaining = (
            ("srm", "invalid", None, None) if srm.flagged else ("keep_running", "keep_running", None, None))
        reason = srm.message or f"primary metric {design.primary!r} cannot be analysed ({note})"
    held = _hold_for_min_sample(design, exposed, decision, reason)
    if held:
        decision, reason = held
        verdict, variant = "keep_running", None

    base = ResultRow(
        experiment_key=design.key, computed_at=computed_at, metric="", variant="", role="",
        is_control=False, project=design.project, n=None, mean=None, exposures=0,
        srm_p_value=float(srm.p_value), srm_flagged=bool(srm.flagged), decision=decision,
        verdict=verdict, verdict_variant=variant, verdict_reason=reason, units_remaining=remaining,
    )
    rows = _rows(design, base, stats, exposed, analysis, alpha)
    return ExperimentResult(design, computed_at, decision, verdict, variant, reason, srm, exposed,
                            tuple(rows), analysis)


def _rows(design: ExperimentDesign, base: ResultRow, stats: Mapping[str, Mapping[str, Any]],
          exposed: Mapping[str, int], analysis: Verdict | None, alpha: float) -> list[ResultRow]:
    seq = {(c.metric, c.variant): c for c in (analysis.comparisons if analysis else ())}
    control = design.control
    treated = [v for v, _ in design.variants[1:]]
    rows: list[ResultRow] = []
    # Fixed-horizon p-values, Holm-adjusted in the verdict's families:
    # primary across variants, secondary across metrics x variants,
    # guardrails uncorrected (correcting would slow the alarm).
    fixed: dict[tuple[str, str], tuple[Any, Any]] = {}
    for metric, _ in design.roles:
        if metric in stats[control]:
            a = stats[control][metric]
            for v in treated:
                b = stats[v][metric]
                fixed[(metric, v)] = (_fixed(a, b, True, alpha), _fixed(a, b, False, alpha))
    holm_p: dict[tuple[str, str], float] = {}
    for family in ("primary", "secondary"):
        keys = [(m, v) for m, role in design.roles if role == family for v in treated if (m, v) in fixed]
        if keys:
            _, adj = holm([float(fixed[k][0].p_value) for k in keys], alpha)
            holm_p.update(zip(keys, (float(p) for p in adj)))

    for metric, role in design.roles:
        source = METRIC_SOURCES[metric]
        for v, _ in design.variants:
            row = replace(base, metric=metric, variant=v, role=role, is_control=v == control,
                          exposures=exposed[v], note=source.note)
            if metric not in stats[v]:
                rows.append(row)
                continue
            s = stats[v][metric]
            row = replace(row, n=float(s.n), mean=float(s.mean))
            if v != control:
                rel, ab = fixed[(metric, v)]
                c = seq.get((metric, v))
                row = replace(
                    row,
                    lift_abs=_finite(ab.estimate), lift_abs_low=_finite(ab.ci_low),
                    lift_abs_high=_finite(ab.ci_high),
                    lift_rel=_finite(rel.estimate), lift_rel_low=_finite(rel.ci_low),
                    lift_rel_high=_finite(rel.ci_high),
                    p_value=float(rel.p_value), p_holm=holm_p.get((metric, v), float(rel.p_value)),
                    method=rel.method,
                )
                if c is not None:
                    row = replace(
                        row, seq_lift_low=_finite(c.ci_low), seq_lift_high=_finite(c.ci_high),
                        seq_p_value=c.p_value, seq_p_holm=c.adjusted_p_value,
                        chance_to_beat_control=_finite(c.chance_to_win), expected_loss=_finite(c.risk),
                        significant=c.significant, direction=c.direction,
                        method=f"{rel.method} / {c.method}",
                        note="; ".join(filter(None, [source.note, "" if c.ok else c.reason])),
                    )
            rows.append(row)
    return rows
