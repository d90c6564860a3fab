"""Root cause of an anomaly episode, drilled down from ``metric_windows``.

An episode is about an aggregate series (one project, or one project and
model). ``metric_windows`` keeps 1-minute rows per *fine* series (every
dimension), so the drill-down is: take the fine rows inside the episode's
scope for the anomalous windows (``started_at`` up to the end of the latest
window) and for a baseline (the hour before ``started_at``), add them up per
element of every dimension the scope leaves free, and hand both tables to
:func:`processors.anomaly.rootcause.explain` (Adtributor-style ranking).

Components per metric (see :data:`COMPONENTS`): rates and means are rebuilt
from their sums (errors/requests, cost/costed requests, rating sum/ratings,
thumbs up/thumbs); counts are used as they are, the baseline scaled to the
length of the anomalous windows. A latency quantile is not additive: it is
explained through the share of requests slower than the scope's *baseline*
quantile, counted exactly from each row's DDSketch (bins above the
threshold), which is what ``rootcause.METRICS["p95_latency"]`` expects.

:func:`explain_rows` is the pure part (rows in, :class:`RootCause` out);
:func:`root_cause` reads the rows and example traces over a connection.
"""
from __future__ import annotations

import math
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

import psycopg
from psycopg.rows import dict_row

from processors.aggregation.dimensions import DIMENSIONS
from processors.anomaly.rootcause import METRICS, Cause, Metric, explain, sentence, trace_filter

__all__ = [
    "BASELINE",
    "COMPONENTS",
    "RootCause",
    "example_traces",
    "explain_rows",
    "metric_for",
    "root_cause",
    "slow_count",
    "tabulate",
]

#: How far before the episode the baseline reaches. An hour holds enough
#: requests per segment for stable shares and is recent enough that the
#: traffic mix is the one the detector learned.
BASELINE = timedelta(hours=1)

#: metric_windows columns summed into each additive component.
COMPONENTS: Mapping[str, str] = {
    "requests": "request_count",
    "errors": "error_count",
    "cost": "cost_usd",
    "costed": "cost_count",
    "rating_sum": "rating_sum",
    "ratings": "rating_count",
    "thumbs_up": "thumbs_up",
    "thumbs": "thumbs_count",
    "input_tokens": "input_tokens",
    "output_tokens": "output_tokens",
    "cached_tokens": "cached_tokens",
    "feedback": "feedback_count",
}

# Metrics of metric_point (processors/aggregation/snapshot.py) that
# rootcause.METRICS does not name, or names differently.
_EXTRA: Mapping[str, Metric] = {
    "error_rate": METRICS["error_rate"],
    "request_count": METRICS["requests"],
    "cost_per_request": Metric("cost_per_request", "cost per request", "cost", "costed", fmt="${:.4f}"),
    "rating_mean": METRICS["mean_rating"],
    "thumbs_up_rate": Metric("thumbs_up_rate", "thumbs-up rate", "thumbs_up", "thumbs",
                             lower_is_better=False, fmt="{:.1%}"),
    "cost_usd": Metric("cost_usd", "cost", "cost", fmt="${:.2f}"),
    "input_tokens": Metric("input_tokens", "input tokens", "input_tokens", lower_is_better=None, fmt="{:,.0f}"),
    "output_tokens": Metric("output_tokens", "output tokens", "output_tokens", lower_is_better=None,
                            fmt="{:,.0f}"),
    "cached_tokens": Metric("cached_tokens", "cached tokens", "cached_tokens", lower_is_better=None,
                            fmt="{:,.0f}"),
    "feedback_count": Metric("feedback_count", "feedback volume", "feedback", lower_is_better=None,
                             fmt="{:,.0f}"),
}
_QUANTILE = re.compile(r"^(?:latency_)?p(\d{1,2})(?:_ms)?$")


def metric_for(name: str) -> tuple[Metric, float | None] | None:
    """The rootcause metric for a ``metric_point`` name, and its quantile (or None).

    None when the metric cannot be drilled into from ``metric_windows``.

    Examples
    --------
    >>> metric_for("latency_p95_ms")[0].label, metric_for("p95_ms")[1]
    ('p95 latency', 0.95)
    >>> metric_for("error_rate")[0].components
    ('errors', 'requests')
    >>> metric_for("late_events") is None
    True
    """
    if name in _EXTRA:
        return _EXTRA[name], None
    match = _QUANTILE.match(name)
    if not match:
        return None
    pct = int(match.group(1))
    if pct == 95:
        return METRICS["p95_latency"], 0.95
    return Metric(f"p{pct}_latency", f"p{pct} latency", "slow", "requests", fmt="{:.0%}",
                  proxy=f"of requests over the baseline p{pct}"), pct / 100


@dataclass(frozen=True)
class RootCause:
    """What the drill-down found for one episode.

    ``text`` and ``recommendation`` split :func:`rootcause.sentence` at its
    ``;``; ``causes`` are ranked (best first); ``trace_filters`` are the
    filters for example traces of each cause. ``found`` is False when there
    was no data to drill into (retry later) and True otherwise, also when no
    segment explains the change.

    Examples
    --------
    >>> RootCause(True, "no single segment explains it").as_segments()
    []
    """

    found: bool
    text: str | None = None
    recommendation: str | None = None
    causes: tuple[Cause, ...] = ()
    trace_filters: tuple[dict[str, Any], ...] = ()
    metric: Metric | None = None
    note: str | None = field(default=None, compare=False)

    def as_segments(self) -> list[dict[str, Any]]:
        """The causes as JSON-ready dicts (for ``anomalies.segments``)."""
        return [
            {
                "filters": {str(k): str(v) for k, v in c.filters.items()},
                "explanatory_power": _finite(c.explanatory_power),
                "surprise": _finite(c.surprise),
                "baseline": _finite(c.baseline),
                "observed": _finite(c.observed),
                "change": _finite(c.change),
                "alternative": None if c.alternative is None else str(c.alternative),
                "sentence": sentence(c, self.metric),
            }
            for c in self.causes
        ]


def _finite(x: float | None) -> float | None:
    return None if x is None or math.isnan(x) or math.isinf(x) else round(float(x), 6)


# ------------------------------------------------------------------ pure part


def _sketch_bins(data: bytes) -> tuple[Any, dict[int, float], float]:
    """(key mapping, {bin key: count}, zero count) of one serialized DDSketch."""
    from ddsketch.pb.proto import KeyMappingProto
    from ddsketch.pb.proto import pb as _pb

    message = _pb.DDSketch.FromString(data)
    store = message.positiveValues
    bins = {i: n for i, n in enumerate(store.contiguousBinCounts, start=store.contiguousBinIndexOffset) if n}
    for key, n in store.binCounts.items():
        bins[key] = bins.get(key, 0.0) + n
    return KeyMappingProto.from_proto(message.mapping), bins, message.zeroCount


def slow_count(sketch: bytes, threshold: float) -> float:
    """Requests of one window slower than ``threshold`` (ms), read from its sketch.

    A value counts as slower when its bin lies above the threshold's bin, so
    the count is exact up to the sketch's relative accuracy (1 %).

    Examples
    --------
    >>> from processors.aggregation.sketch import BinMapping, encode_sketch
    >>> m = BinMapping(0.01)
    >>> blob = encode_sketch({m.key(100.0): 7, m.key(900.0): 3}, 0, m)
    >>> slow_count(blob, 500.0), slow_count(blob, 50.0), slow_count(blob, 900.0)
    (3.0, 10.0, 0.0)
    """
    mapping, bins, _zero = _sketch_bins(sketch)
    if threshold <= 0:
        return float(sum(bins.values()))
    limit = mapping.key(threshold)
    return float(sum(n for k, n in bins.items() if k > limit))


def _quantile(sketches: Iterable[bytes], q: float) -> float | None:
    from processors.aggregation.sketch import decode_sketch, merge_sketches

    blobs = [s for s in sketches if s]
    if not blobs:
        return None
    merged = decode_sketch(merge_sketches(blobs))
    return merged.get_quantile_value(q) if merged.count else None


def _components(row: Mapping[str, Any], threshold: float | None) -> dict[str, float]:
    comps = {name: float(row.get(column) or 0.0) for name, column in COMPONENTS.items()}
    if threshold is not None and row.get("sketch"):
        comps["slow"] = slow_count(bytes(row["sketch"]), threshold)
    return comps


def tabulate(rows: Iterable[Mapping[str, Any]], dimensions: Sequence[str], *,
             threshold: float | None = None, scale: float = 1.0) -> dict[str, dict[str, dict[str, float]]]:
    """``{dimension: {element: components}}`` of fine ``metric_windows`` rows.

    Parameters
    ----------
    rows
        Rows with the dimension columns and the :data:`COMPONENTS` columns
        (and ``sketch`` when ``threshold`` is given).
    dimensions
        Dimensions to drill into.
    threshold
        Latency (ms) above which a request counts as ``slow``.
    scale
        Factor applied to every component (a count's baseline scaled to the
        anomalous windows' length).

    Examples
    --------
    >>> rows = [{"model": "a", "request_count": 10, "error_count": 1},
    ...         {"model": "b", "request_count": 5, "error_count": 0},
    ...         {"model": "a", "request_count": 2, "error_count": 1}]
    >>> t = tabulate(rows, ["model"])
    >>> t["model"]["a"]["requests"], t["model"]["a"]["errors"], t["model"]["b"]["requests"]
    (12.0, 2.0, 5.0)
    """
    table: dict[str, dict[str, dict[str, float]]] = {d: {} for d in dimensions}
    for row in rows:
        comps = _components(row, threshold)
        for dim in dimensions:
            element = str(row.get(dim) or "(none)")
            acc = table[dim].setdefault(element, {})
            for name, value in comps.items():
                acc[name] = acc.get(name, 0.0) + value * scale
    return table


def explain_rows(
    anomaly: Mapping[str, Any],
    baseline_rows: Sequence[Mapping[str, Any]],
    observed_rows: Sequence[Mapping[str, Any]],
    *,
    baseline_seconds: float = BASELINE.total_seconds(),
) -> RootCause:
    """Rank the segments that explain one episode, from its rows (no I/O).

    Parameters
    ----------
    anomaly
        The episode (an ``anomaly`` record or an ``anomalies`` row):
        ``metric``, ``dimensions``, ``observed``, ``expected``,
        ``started_at``, ``window_start``, ``window_seconds``.
    baseline_rows, observed_rows
        Fine ``metric_windows`` rows (1 minute) inside the episode's scope,
        before it and during it.
    baseline_seconds
        Length of the baseline period (scales count metrics).

    Examples
    --------
    >>> from datetime import datetime, timezone
    >>> t0 = datetime(2025, 6, 1, 12, tzinfo=timezone.utc)
    >>> ep = {"metric": "error_rate", "dimensions": {"project": "support"},
    ...       "observed": 0.16, "expected": 0.02, "started_at": t0,
    ...       "window_start": t0, "window_seconds": 60}
    >>> def row(model, n, e): return {"project": "support", "model": model,
    ...                              "request_count": n, "error_count": e}
    >>> rc = explain_rows(ep, [row("gpt-x", 600, 12), row("gpt-y", 600, 12)],
    ...                   [row("gpt-x", 10, 3), row("gpt-y", 10, 0)])
    >>> rc.causes[0].filters
    {'model': 'gpt-x'}
    >>> print(rc.recommendation)
    consider routing back to model=gpt-y (1.0%)
    """
    resolved = metric_for(str(anomaly["metric"]))
    scope = {str(k): str(v) for k, v in (anomaly.get("dimensions") or {}).items()}
    if resolved is None:
        return RootCause(True, note=f"metric {anomaly['metric']!r} cannot be drilled into from metric_windows")
    metric, q = resolved
    if not observed_rows:
        return RootCause(False, note="no metric windows for the anomalous period yet")
    if not baseline_rows:
        return RootCause(True, note="no metric windows in the hour before the episode")
    threshold = None
    if q is not None:
        threshold = _quantile((bytes(r["sketch"]) for r in baseline_rows if r.get("sketch")), q)
        if threshold is None:
            threshold = float(anomaly["expected"])
    dims = [d for d in DIMENSIONS if d not in scope]
    observed_seconds = max(
        (_end(anomaly) - anomaly["started_at"]).total_seconds(), float(anomaly.get("window_seconds") or 60)
    )
    # Counts compare totals, so the baseline hour is scaled to the anomalous
    # period's length; ratios are rescaled inside explain().
    scale = observed_seconds / baseline_seconds if metric.denominator is None else 1.0
    causes = explain(metric, tabulate(baseline_rows, dims, threshold=threshold, scale=scale),
                     tabulate(observed_rows, dims, threshold=threshold))
    if not causes:
        where = ", ".join(f"{k}={v}" for k, v in scope.items()) or "the whole traffic"
        return RootCause(True, f"no single segment of {', '.join(dims)} explains the change in {where}",
                         "see example traces of the anomalous period")
    change = None
    if metric.proxy is not None and anomaly.get("expected"):
        change = (float(anomaly["observed"]) - float(anomaly["expected"])) / abs(float(anomaly["expected"]))
    text = sentence(causes[0], metric, scope or None, change=change)
    head, _, recommendation = text.partition("; ")
    filters = tuple(trace_filter(c, scope) for c in causes)
    return RootCause(True, head, recommendation or None, tuple(causes), filters, metric)


def _end(anomaly: Mapping[str, Any]) -> datetime:
    return anomaly["window_start"] + timedelta(seconds=int(anomaly.get("window_seconds") or 60))


# ------------------------------------------------------------------ database part

_ROW_COLUMNS = ", ".join([*DIMENSIONS, *dict.fromkeys(COMPONENTS.values()), "sketch"])


def _scope_sql(scope: Mapping[str, str]) -> tuple[str, list[Any]]:
    unknown = sorted(set(scope) - set(DIMENSIONS))
    if unknown:
        raise ValueError(f"dimensions {unknown} are not metric_windows columns ({', '.join(DIMENSIONS)})")
    # Column names come from DIMENSIONS, never from the event.
    return "".join(f" AND {d} = %s" for d in DIMENSIONS if d in scope), [scope[d] for d in DIMENSIONS if d in scope]


def _rows(conn: psycopg.Connection, scope: Mapping[str, str], start: datetime, end: datetime) -> list[dict]:
    where, params = _scope_sql(scope)
    sql = (f"SELECT {_ROW_COLUMNS} FROM metric_windows WHERE resolution = '1m'"
           f" AND window_start >= %s AND window_start < %s{where}")
    with conn.cursor(row_factory=dict_row) as cur:
        return cur.execute(sql, [start, end, *params]).fetchall()


# How each dimension is found on a stored span; "none" means the field was absent.
_SPAN_COLUMNS: Mapping[str, str] = {
    "project": "project",
    "model": "coalesce(response_model, request_model)",
    "provider": "provider",
    "prompt_version": "prompt_version",
    "kind": "kind",
    "cohort": "attributes ->> 'llmpulse.cohort'",
}


def _span_filter(name: str, value: Any) -> tuple[str, list[Any]] | None:
    """SQL over ``spans`` for one trace filter; None when it cannot be expressed."""
    if name == "errors":
        return ("status = 'error'", []) if value else None
    value = str(value)
    if value == "other" or value == "(none)":
        return None  # values folded by the cardinality cap are not on the span
    if name == "variant":
        if value == "none":
            return "variants = '{}'::jsonb", []
        if "," in value or ":" not in value:
            return None
        exp, _, arm = value.partition(":")
        return "variants ->> %s = %s", [exp, arm]
    column = _SPAN_COLUMNS.get(name)
    if column is None:
        return None
    if value in ("none", "unknown"):
        return f"{column} IS NULL", []
    return f"{column} = %s", [value]


def example_traces(conn: psycopg.Connection, filters: Mapping[str, Any], start: datetime, end: datetime,
                   limit: int = 3) -> list[str]:
    """Ids of up to ``limit`` stored traces matching ``filters`` in ``[start, end)``.

    Failed traces first, then the slowest: the ones that show an incident.
    Filters that spans cannot express (a capped ``other`` value) are dropped,
    so the examples may be broader than the segment, never empty for that.
    """
    clauses, params = ["start_time >= %s", "start_time < %s"], [start, end]
    for name, value in filters.items():
        expressed = _span_filter(str(name), value)
        if expressed:
            clauses.append(expressed[0])
            params.extend(expressed[1])
    sql = ("SELECT trace_id FROM spans WHERE " + " AND ".join(clauses)
           + " GROUP BY trace_id ORDER BY bool_or(status = 'error') DESC, max(duration_ms) DESC, trace_id"
           + " LIMIT %s")
    return [r[0] for r in conn.execute(sql, [*params, limit]).fetchall()]


def root_cause(conn: psycopg.Connection, anomaly: Mapping[str, Any],
               baseline: timedelta = BASELINE) -> RootCause:
    """Read the episode's rows from ``metric_windows`` and explain them.

    Examples
    --------
    Against a database with ``metric_windows`` (:func:`explain_rows` is the
    pure part, tested without one)::

        with psycopg.connect(url) as conn:
            print(root_cause(conn, anomaly).text)
        # error rate +700% is fully explained by model=gpt-x (2.0% → 30.0%) in project=support

    The baseline is the hour before the episode started:

    >>> BASELINE
    datetime.timedelta(seconds=3600)
    """
    scope = {str(k): str(v) for k, v in (anomaly.get("dimensions") or {}).items()}
    started = anomaly["started_at"]
    observed = _rows(conn, scope, started, _end(anomaly))
    before = _rows(conn, scope, started - baseline, started)
    return explain_rows(anomaly, before, observed, baseline_seconds=baseline.total_seconds())
