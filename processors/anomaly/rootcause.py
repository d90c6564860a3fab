"""Root cause for an anomaly: which segments explain the change.

When an anomaly opens on an aggregate series (p95 latency of one project,
error rate, cost per request, request volume, mean rating), :func:`explain`
drills through the dimensions the caller tabulated (model, provider,
prompt_version, cohort, variant, tool, error_type, ...) and ranks the segments
that explain the change the way Adtributor does [1]_:

- explanatory power (EP): the share of the total change that one element's
  own change accounts for;
- surprise: Jensen-Shannon divergence between the element's expected
  (baseline) and observed share of each additive component;
- per dimension, elements in decreasing surprise are picked while their EP
  accumulates to ``ep_threshold``; dimensions are ranked by the surprise of
  what they picked.

Three changes to the paper, each measured on injected incidents
(``docs/root-cause.md``; ``explain(..., paper=True)`` runs the plain
algorithm): a ratio's numerator is forecast at the observed volume, sets are
ranked by mean rather than total surprise, and a more succinct set that
explains as much (one model rather than its provider, a project rather than
all its prompt versions) is ranked first.

Only additive components go in (errors and requests, cost and requests, slow
requests and requests, ...); ratios are rebuilt from them. Plain arithmetic on
small tables: no I/O, no clock, no randomness. Method, inputs, how
non-additive metrics are handled and measured accuracy: ``docs/root-cause.md``.

References
----------
.. [1] R. Bhagwan, R. Kumar, R. Ramjee, G. Varghese, S. Mohapatra,
   H. Manoharan, P. Shah. "Adtributor: Revenue Debugging in Advertising
   Systems". NSDI 2014.

Examples
--------
>>> base = {"model": {"gpt-x": {"errors": 2, "requests": 100},
...                   "gpt-y": {"errors": 2, "requests": 100}}}
>>> obs = {"model": {"gpt-x": {"errors": 30, "requests": 100},
...                  "gpt-y": {"errors": 2, "requests": 100}}}
>>> [cause] = explain("error_rate", base, obs)
>>> cause.filters, round(cause.explanatory_power, 2)
({'model': 'gpt-x'}, 1.0)
>>> text = sentence(cause, "error_rate", {"project": "support"})
>>> print(text)  # doctest: +NORMALIZE_WHITESPACE
error rate +700% is fully explained by model=gpt-x (2.0% → 30.0%)
in project=support; consider routing back to model=gpt-y (2.0%)
"""
from __future__ import annotations

import math
from collections.abc import Hashable, Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any

__all__ = [
    "METRICS",
    "Cause",
    "Metric",
    "explain",
    "explanatory_power",
    "sentence",
    "surprise",
    "trace_filter",
]

#: Additive components of one element, e.g. ``{"errors": 3, "requests": 120}``.
#: A missing component counts as 0.
Components = Mapping[str, float]
#: ``{dimension: {element: Components}}``. A pair dimension is a tuple of
#: names, ``("model", "project")``, whose elements are tuples of values.
Table = Mapping[Hashable, Mapping[Hashable, Components]]


@dataclass(frozen=True)
class Metric:
    """How a metric is rebuilt from additive components.

    Parameters
    ----------
    name
        Key in :data:`METRICS`.
    label
        Human name used in sentences.
    numerator
        Component summed in the numerator (or the count itself).
    denominator
        Component summed in the denominator; None for a plain count.
    lower_is_better
        Direction used to pick the alternative; None when neither is (volume).
    fmt
        Format of one value in sentences.
    proxy
        For a non-additive metric (p95), what the ratio actually measures.
    outcome_dimensions
        Dimensions defined by the outcome itself (the error type of an error
        rate): reported, but ranked after the segments that carry traffic.
    trace_hint
        Extra trace-list filters for example traces (``{"errors": True}``).

    Examples
    --------
    >>> METRICS["error_rate"].value({"errors": 3, "requests": 60})
    0.05
    """

    name: str
    label: str
    numerator: str
    denominator: str | None = None
    lower_is_better: bool | None = True
    fmt: str = "{:.3g}"
    proxy: str | None = None
    outcome_dimensions: frozenset[str] = frozenset()
    trace_hint: Mapping[str, Any] = field(default_factory=lambda: MappingProxyType({}))

    @property
    def components(self) -> tuple[str, ...]:
        return (self.numerator,) if self.denominator is None else (self.numerator, self.denominator)

    def value(self, comps: Components) -> float:
        """The metric of one element (nan for a ratio over nothing)."""
        num = float(comps.get(self.numerator, 0.0))
        if self.denominator is None:
            return num
        den = float(comps.get(self.denominator, 0.0))
        return num / den if den else math.nan


#: Built-in metrics. p95 latency is not additive, so it is explained through
#: the share of requests slower than the *baseline* p95 (``slow``); see
#: docs/root-cause.md.
METRICS: Mapping[str, Metric] = MappingProxyType({
    m.name: m for m in (
        Metric("error_rate", "error rate", "errors", "requests", fmt="{:.1%}",
               outcome_dimensions=frozenset({"error_type"}),
               trace_hint=MappingProxyType({"errors": True})),
        Metric("p95_latency", "p95 latency", "slow", "requests", fmt="{:.0%}",
               proxy="of requests over the baseline p95"),
        Metric("mean_latency", "mean latency", "latency_ms_sum", "requests", fmt="{:.0f} ms"),
        Metric("cost_per_request", "cost per request", "cost", "requests", fmt="${:.4f}"),
        Metric("mean_rating", "mean rating", "rating_sum", "ratings",
               lower_is_better=False, fmt="{:.2f}"),
        Metric("requests", "request volume", "requests", lower_is_better=None, fmt="{:,.0f}"),
    )
})


@dataclass(frozen=True, slots=True)
class Cause:
    """One segment that explains part of an anomaly.

    ``baseline`` and ``observed`` are the segment's metric values, ``change``
    its relative change (inf from 0). ``total_*`` are the whole scope's
    values. ``alternative`` is the best-performing sibling element of the same
    dimension (first coordinate for a pair), or None.

    Examples
    --------
    >>> c = Cause("error_rate", ("model", "project"), ("gpt-x", "support"),
    ...           0.8, 0.1, 0.01, 0.05, 4.0, 0.01, 0.03)
    >>> c.dimension, c.filters
    ('model × project', {'model': 'gpt-x', 'project': 'support'})
    """

    metric: str
    dimensions: tuple[Hashable, ...]
    elements: tuple[Hashable, ...]
    explanatory_power: float
    surprise: float
    baseline: float
    observed: float
    change: float
    total_baseline: float
    total_observed: float
    alternative: Hashable | None = None
    alternative_value: float | None = None

    @property
    def dimension(self) -> str:
        return " × ".join(map(str, self.dimensions))

    @property
    def element(self) -> str:
        return " × ".join(map(str, self.elements))

    @property
    def filters(self) -> dict[Hashable, Hashable]:
        return dict(zip(self.dimensions, self.elements))


def surprise(p: float, q: float) -> float:
    """One element's term of the Jensen-Shannon divergence, in bits.

    Parameters
    ----------
    p, q
        The element's expected and observed share of a component, in [0, 1].
        Summed over all elements the terms give JS(P, Q) in [0, 1].

    Examples
    --------
    >>> round(surprise(0.1, 0.8), 4), surprise(0.3, 0.3), surprise(0.0, 0.5)
    (0.2235, 0.0, 0.25)
    """
    m = (p + q) / 2.0
    s = 0.0
    if p > 0.0:
        s += p * math.log2(p / m)
    if q > 0.0:
        s += q * math.log2(q / m)
    return 0.5 * s


def explanatory_power(f: tuple[float, ...], a: tuple[float, ...],
                      F: tuple[float, ...], A: tuple[float, ...]) -> float:
    """Share of the total change explained by one element (Adtributor eq. 2-3).

    Parameters
    ----------
    f, a
        The element's expected and observed components: ``(count,)`` or
        ``(numerator, denominator)``.
    F, A
        The same for the whole scope.

    Notes
    -----
    A count is additive: ``(a - f) / (A - F)``. For a ratio the element's
    contribution is how much the total ratio would move if only this element
    changed, ``(F1 + d1) / (F2 + d2) - F1 / F2``, divided by the total move.
    Ratio EPs need not sum to 1; an element moving against the total has a
    negative EP. nan when the total did not move.

    Examples
    --------
    >>> explanatory_power((30,), (10,), (100,), (60,))
    0.5
    >>> round(explanatory_power((2, 100), (30, 100), (4, 200), (32, 200)), 3)
    1.0
    """
    if len(F) == 1:
        total = A[0] - F[0]
        return (a[0] - f[0]) / total if total else math.nan
    if not (F[1] and A[1]):
        return math.nan
    total = A[0] / A[1] - F[0] / F[1]
    d1, d2 = a[0] - f[0], a[1] - f[1]
    if not total or not F[1] + d2:
        return math.nan
    return (d1 * F[1] - d2 * F[0]) / (F[1] * (F[1] + d2)) / total


@dataclass(frozen=True)
class _Method:
    """The variant of the algorithm; :func:`explain` documents both."""

    given_volume: bool  # surprise of a ratio's numerator forecast at observed volume
    mean_surprise: bool  # rank sets by mean, not total, surprise of their elements
    succinct_first: bool  # a set explaining as much, more succinctly, goes first


_DEFAULT = _Method(given_volume=True, mean_surprise=True, succinct_first=True)
_PAPER = _Method(given_volume=False, mean_surprise=False, succinct_first=False)


@dataclass(slots=True)
class _Picked:
    """A dimension's candidate set (causes listed by EP)."""

    dimension: Hashable
    causes: list[Cause]
    surprise: float
    ep: float
    complete: bool
    outcome: bool
    size: int
    base: tuple[float, ...]  # components summed over the picked elements
    obs: tuple[float, ...]

    def key(self, method: _Method) -> tuple:
        s = self.surprise / len(self.causes) if method.mean_surprise else self.surprise
        # Rounded so identical segments in two dimensions (a provider with one
        # model) tie exactly; the dimension with more elements then wins.
        return (self.outcome, -round(s, 12), -self.size, str(self.dimension))

    def refines(self, other: _Picked) -> bool:
        """Explains about as much as ``other`` (90%), more succinctly.

        Either one element against one, with less traffic (model=x against
        provider=p), or fewer elements (project=p against all of p's prompt
        versions); no component larger in either window. Two sets of several
        elements each are left to surprise: sums fit inside each other by
        coincidence too easily.
        """
        n, n_other = len(self.causes), len(other.causes)
        mine, theirs = self.base + self.obs, other.base + other.obs
        return (self.outcome == other.outcome and self.ep >= 0.9 * other.ep
                and all(x <= y * (1 + 1e-9) for x, y in zip(mine, theirs))
                and (n < n_other or (n == n_other == 1 and sum(mine) < sum(theirs) * (1 - 1e-9))))


def _as_metric(metric: str | Metric) -> Metric:
    if isinstance(metric, Metric):
        return metric
    try:
        return METRICS[metric]
    except KeyError:
        raise ValueError(f"unknown metric {metric!r}; known: {', '.join(METRICS)}") from None


def _vec(comps: Components | None, names: tuple[str, ...]) -> tuple[float, ...]:
    return tuple(float(comps.get(n, 0.0)) for n in names) if comps else (0.0,) * len(names)


def _value(v: tuple[float, ...]) -> float:
    if len(v) == 1:
        return v[0]
    return v[0] / v[1] if v[1] else math.nan


def _rel(b: float, o: float) -> float:
    if b == 0 or math.isnan(b) or math.isnan(o):
        return math.inf if o and not math.isnan(o) else math.nan
    return (o - b) / abs(b)


def _share(x: float, total: float) -> float:
    return x / total if total else 0.0


def _surprises(fb: list, fa: list, F: tuple, A: tuple, given_volume: bool) -> list[float]:
    """Per element: surprise summed over the components (Adtributor: S(m1) + S(m2)).

    With ``given_volume`` a ratio's numerator is forecast at the *observed*
    volume, each element at its own baseline rate. The paper forecasts it at
    the baseline volume, so a change in traffic mix counts twice (numerator
    and denominator shares both move) and noise in the mix buries a real
    change of rate. Here the mix counts once, in the denominator term.
    """
    if len(F) == 1 or not given_volume:
        return [sum(surprise(_share(f[i], F[i]), _share(a[i], A[i])) for i in range(len(F)))
                for f, a in zip(fb, fa)]
    rate = F[0] / F[1]
    forecast = [(f[0] / f[1] if f[1] else rate) * a[1] for f, a in zip(fb, fa)]
    C = sum(forecast)
    return [surprise(_share(c, C), _share(a[0], A[0])) + surprise(_share(f[1], F[1]), _share(a[1], A[1]))
            for c, f, a in zip(forecast, fb, fa)]


def _pick(m: Metric, dim: Hashable, base: Mapping, obs: Mapping,
          ep_threshold: float, min_element_ep: float, method: _Method) -> _Picked | None:
    """Adtributor's loop for one dimension: its candidate set, or None."""
    names = m.components
    elements = list(dict.fromkeys([*base, *obs]))
    fb = [_vec(base.get(e), names) for e in elements]
    fa = [_vec(obs.get(e), names) for e in elements]
    if not elements:
        return None
    F, A = tuple(map(sum, zip(*fb))), tuple(map(sum, zip(*fa)))
    if m.denominator is not None:
        # A ratio's baseline is rescaled to the observed volume: the question
        # is what changed at the traffic we have now; shares are unaffected.
        # A count's baseline is used as given.
        if not F[1] or not A[1]:
            return None
        k = A[1] / F[1]
        fb = [tuple(k * x for x in v) for v in fb]
        F = tuple(k * x for x in F)
    total_b, total_o = _value(F), _value(A)
    if math.isclose(total_b, total_o, rel_tol=1e-12, abs_tol=1e-300):
        return None
    eps = [explanatory_power(f, a, F, A) for f, a in zip(fb, fa)]
    sur = _surprises(fb, fa, F, A, method.given_volume)
    chosen, cum_ep, complete = [], 0.0, False
    for j in sorted(range(len(elements)), key=lambda j: -sur[j]):
        if not eps[j] > min_element_ep:  # also skips nan
            continue
        chosen.append(j)
        cum_ep += eps[j]
        if cum_ep > ep_threshold:
            complete = True
            break
    if not chosen:
        return None
    pair = isinstance(dim, tuple)
    picked = {elements[j] for j in chosen}
    causes = []
    # Picked by surprise; shown by how much each explains, so the sentence
    # for the first cause names the element carrying most of the change.
    for j in sorted(chosen, key=lambda j: -eps[j]):
        b, o = _value(fb[j]), _value(fa[j])
        alt, alt_v = _alternative(m, elements[j], o, elements, fb, fa, picked, pair)
        causes.append(Cause(
            metric=m.name, dimensions=dim if pair else (dim,),
            elements=elements[j] if pair else (elements[j],),
            explanatory_power=eps[j], surprise=sur[j], baseline=b, observed=o,
            change=_rel(b, o), total_baseline=total_b, total_observed=total_o,
            alternative=alt, alternative_value=alt_v))
    return _Picked(
        dim, causes, sum(sur[j] for j in chosen), cum_ep, complete,
        bool(set(causes[0].dimensions) & m.outcome_dimensions), len(elements),
        tuple(map(sum, zip(*(fb[j] for j in chosen)))),
        tuple(map(sum, zip(*(fa[j] for j in chosen)))))


def _alternative(m: Metric, e: Hashable, observed: float, elements: list, fb: list, fa: list,
                 picked: set, pair: bool) -> tuple[Hashable | None, float | None]:
    """Best sibling by baseline + observed together, so that an element whose
    traffic was all moved away (the model routed *from*) still qualifies."""
    if m.lower_is_better is None or m.denominator is None or math.isnan(observed):
        return None, None
    pooled = [tuple(x + y for x, y in zip(f, a)) for f, a in zip(fb, fa)]
    support = 0.02 * sum(p[1] for p in pooled)
    sign = 1.0 if m.lower_is_better else -1.0
    best = None
    for x, p in zip(elements, pooled):
        if x in picked or p[1] < support or (pair and tuple(x[1:]) != tuple(e[1:])):
            continue
        v = p[0] / p[1]
        if sign * v >= sign * observed:
            continue
        if best is None or (sign * v, -p[1]) < (sign * best[1], -best[2]):
            best = (x, v, p[1])
    if best is None:
        return None, None
    return (best[0][0] if pair else best[0]), best[1]


def _rank(sets: list[_Picked], method: _Method) -> list[_Picked]:
    complete = [s for s in sets if s.complete]
    if not complete:
        # Nothing reaches the threshold: a partial answer, by how much it explains.
        return sorted(sets, key=lambda s: (s.outcome, -s.ep))
    if not method.succinct_first:
        return sorted(complete, key=lambda s: s.key(method))
    # An incomplete set may still refine a complete one: a prompt version
    # that carries 0.66 of the change, inside a project that carries 0.72.
    pool = sorted(complete + [s for s in sets if not s.complete
                              and any(s.refines(c) for c in complete)],
                  key=lambda s: s.key(method))
    out = []
    while pool:
        # Take the best remaining set, or what refines it (the refinement
        # relation is acyclic: each step has less traffic or fewer elements).
        best = pool[0]
        while finer := next((s for s in pool if s.refines(best)), None):
            best = finer
        pool.remove(best)
        out.append(best)
    return out


def explain(metric: str | Metric, baseline: Table, observed: Table, *,
            ep_threshold: float = 0.67, top: int = 3, min_element_ep: float = 0.1,
            drill_below: float = 0.5, paper: bool = False) -> list[Cause]:
    """Rank the segments that explain an anomaly (after Adtributor).

    Parameters
    ----------
    metric
        A key of :data:`METRICS` or a :class:`Metric`.
    baseline, observed
        ``{dimension: {element: components}}`` for the expected (baseline)
        and anomalous windows, over the anomaly's scope. The elements of a
        dimension must partition the scope (put untagged traffic in an
        element such as ``"(none)"``). For a count metric the baseline must
        already be scaled to the observed window's length; a ratio's baseline
        is rescaled to the observed volume here. Keys that are tuples of
        names, ``("model", "project")``, are pair dimensions: they are only
        drilled into when no single segment explains ``drill_below``.
    ep_threshold
        Cumulative EP at which a dimension's candidate set is complete.
    top
        Number of dimensions (candidate sets) returned.
    min_element_ep
        An element must explain more than this to be picked (T_EEP).
    drill_below
        Drill into pair dimensions when the best single segment's EP is
        below this; a pair whose leading element explains at least this much
        is then ranked first.
    paper
        Run Adtributor exactly as published: surprise of each component
        against its baseline share, sets ranked by total surprise, no
        preference for the more succinct of two nested explanations. The
        default differs on all three (see the module docstring): summing
        surprise favours a cause split over many elements, because a JS term
        is convex (a project's term is at most the sum of its prompt
        versions'), and two nested dimensions (model, provider) otherwise tie
        on a coin flip.

    Returns
    -------
    list of Cause
        The best dimension's picked elements first (largest EP first), then
        the next dimension's. A set can fall short of ``ep_threshold`` when it
        refines a complete one, or when no dimension reaches the threshold
        (then sets are ordered by how much they explain). Empty when the
        total did not move.

    Examples
    --------
    >>> base = {"project": {"a": {"requests": 500}, "b": {"requests": 500}}}
    >>> obs = {"project": {"a": {"requests": 490}, "b": {"requests": 60}}}
    >>> [(c.element, round(c.explanatory_power, 2)) for c in explain("requests", base, obs)]
    [('b', 0.98)]
    """
    m = _as_metric(metric)
    method = _PAPER if paper else _DEFAULT
    args = (ep_threshold, min_element_ep, method)
    dims = list(dict.fromkeys([*baseline, *observed]))
    singles = [_pick(m, d, baseline.get(d, {}), observed.get(d, {}), *args)
               for d in dims if not isinstance(d, tuple)]
    ranked = _rank([s for s in singles if s], method)
    best = max((c.explanatory_power for s in ranked for c in s.causes), default=0.0)
    pair_dims = [d for d in dims if isinstance(d, tuple)]
    if best < drill_below and pair_dims:
        pairs = _rank([p for d in pair_dims
                       if (p := _pick(m, d, baseline.get(d, {}), observed.get(d, {}), *args))],
                      method)
        lead = [p for p in pairs if p.causes[0].explanatory_power >= drill_below]
        ranked = lead + ranked + [p for p in pairs if p not in lead]
    return [c for s in ranked[:top] for c in s.causes]


# Recommendation verbs by dimension; anything else gets "compare with".
_VERBS = {
    "model": "consider routing back to",
    "provider": "consider routing back to",
    "prompt_version": "consider rolling back to",
    "variant": "consider shifting traffic to",
}


def _fmt(m: Metric, v: float) -> str:
    return "n/a" if v is None or math.isnan(v) else m.fmt.format(v)


def _fmt_change(c: float) -> str:
    return "from zero" if math.isinf(c) else f"{c:+.0%}"


def _segment(filters: Mapping) -> str:
    return " and ".join(f"{k}={v}" for k, v in filters.items())


def sentence(cause: Cause, metric: str | Metric | None = None,
             scope: Mapping[str, Any] | str | None = None, *,
             change: float | None = None) -> str:
    """One sentence for an alert: what moved, who explains it, what to try.

    Parameters
    ----------
    cause
        From :func:`explain`.
    metric
        Defaults to ``cause.metric``.
    scope
        The anomaly's series, e.g. ``{"project": "support"}``.
    change
        The aggregate's relative change as the detector saw it. Needed for
        p95 latency, whose causes only know the share of slow requests;
        otherwise computed from the totals.

    Examples
    --------
    >>> c = Cause("p95_latency", ("model",), ("gpt-x",), 0.86, 0.4, 0.05, 0.9,
    ...           17.0, 0.05, 0.3, "gpt-y", 0.04)
    >>> text = sentence(c, "p95_latency", {"project": "support"}, change=1.8)
    >>> print(text)  # doctest: +NORMALIZE_WHITESPACE
    p95 latency +180% is 86% explained by model=gpt-x (5% → 90% of requests
    over the baseline p95) in project=support; consider routing back to
    model=gpt-y (4%)
    """
    m = _as_metric(metric or cause.metric)
    if change is None and m.proxy is None:
        change = _rel(cause.total_baseline, cause.total_observed)
    if change is not None:
        head = f"{m.label} {_fmt_change(change)}"
    else:
        head = (f"{m.label} ({_fmt(m, cause.total_baseline)} → "
                f"{_fmt(m, cause.total_observed)} {m.proxy})")
    ep = cause.explanatory_power
    how = "fully" if ep >= 0.995 else f"{ep:.0%}"
    seg = _segment(cause.filters)
    detail = f"{_fmt(m, cause.baseline)} → {_fmt(m, cause.observed)}"
    if m.proxy:
        detail += f" {m.proxy}"
    where = ""
    if scope:
        where = f" in {scope if isinstance(scope, str) else _segment(scope)}"
    return f"{head} is {how} explained by {seg} ({detail}){where}; {_recommend(m, cause, seg)}"


def _recommend(m: Metric, cause: Cause, seg: str) -> str:
    if m.lower_is_better is None:
        if cause.observed < cause.baseline:
            return f"check whether the clients behind {seg} stopped sending"
        return f"check {seg} for retries or a traffic surge"
    worse = (cause.observed > cause.baseline) == m.lower_is_better
    if cause.alternative is None or not worse:
        return f"see example traces of {seg}"
    dim = cause.dimensions[0]
    verb = _VERBS.get(str(dim), "compare with")
    return f"{verb} {dim}={cause.alternative} ({_fmt(m, cause.alternative_value)})"


def trace_filter(cause: Cause, scope: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """Filters for a link to example traces of the cause.

    The anomaly's scope, the cause's segment, and the metric's hint (error
    traces for an error rate). Keys are dimension names as tabulated.

    Examples
    --------
    >>> c = Cause("error_rate", ("prompt_version",), ("v7",), 0.9, 0.3,
    ...           0.02, 0.2, 9.0, 0.02, 0.08)
    >>> trace_filter(c, {"project": "support"})
    {'project': 'support', 'prompt_version': 'v7', 'errors': True}
    """
    m = _as_metric(cause.metric)
    return {**(scope or {}), **cause.filters, **m.trace_hint}
