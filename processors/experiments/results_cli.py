"""``llmpulse experiments results KEY``: the latest results of one experiment.

Prints the newest computation of the ``experiment-results`` worker: the
verdict and its reason in words, the sample-ratio-mismatch check, and per
metric and variant the numbers, the lift with its fixed-horizon confidence
interval and its confidence sequence, the p-values (fixed, and sequential
adjusted as the verdict adjusts it: Holm across variants for the primary
metric, across metrics and variants for secondary ones, not for guardrails;
this is the one that decides) and the chance to beat control.
``--format json`` prints the same as one JSON document.

Register with ``experiments.add_command(results)`` (or ``main.add_command``).
"""
from __future__ import annotations

import json
import math
from collections.abc import Mapping, Sequence
from datetime import datetime
from typing import Any

import click
import psycopg

from processors.experiments.results_db import latest_results
from sinks.db_cli import database_url_option
from sinks.dburl import redact
from sinks.errors import explain

__all__ = ["render_json", "render_text", "results"]

_DECISION = {
    "ship": "SHIP", "keep_running": "KEEP RUNNING", "no_difference": "NO DIFFERENCE",
    "srm": "INVALID: sample ratio mismatch", "guardrail_breached": "INVALID: guardrail breached",
}


def _pct(x: float | None) -> str:
    return "-" if x is None else f"{x:+.1%}"


def _interval(low: float | None, high: float | None) -> str:
    if low is None and high is None:
        return "-"
    return f"{_pct(low) if low is not None else '-inf'} to {_pct(high) if high is not None else '+inf'}"


def _p(x: float | None) -> str:
    return "-" if x is None else f"{x:.2g}"


def _chance(x: float | None) -> str:
    if x is None:
        return "-"
    return ">99.9%" if x > 0.999 else "<0.1%" if x < 0.001 else f"{x:.1%}"


def _num(x: float | None) -> str:
    if x is None:
        return "-"
    if x == 0 or 0.01 <= abs(x) < 1e6:
        return f"{x:,.4g}" if abs(x) < 1000 else f"{x:,.0f}"
    return f"{x:.3g}"


def _table(header: Sequence[str], body: Sequence[Sequence[str]]) -> list[str]:
    widths = [max(len(r[i]) for r in [header, *body]) for i in range(len(header))]
    line = lambda r: "  ".join(c.ljust(w) if i == 0 else c.rjust(w)  # noqa: E731
                               for i, (c, w) in enumerate(zip(r, widths)))
    return [line(header).rstrip(), *(line(r).rstrip() for r in body)]


def render_text(rows: Sequence[Mapping[str, Any]]) -> str:
    """The latest results as text, from ``experiment_results`` rows of one computation.

    Examples
    --------
    >>> from datetime import datetime, timezone
    >>> at = datetime(2025, 6, 1, 12, tzinfo=timezone.utc)
    >>> base = dict(experiment_key="tone", computed_at=at, role="primary", metric="rating",
    ...             decision="keep_running", verdict_variant=None, srm_p_value=0.5, srm_flagged=False,
    ...             verdict_reason="no significant difference yet", units_remaining=1200, note="",
    ...             lift_rel=None, lift_rel_low=None, lift_rel_high=None, seq_lift_low=None,
    ...             seq_lift_high=None, p_value=None, seq_p_holm=None, chance_to_beat_control=None)
    >>> text = render_text([{**base, "variant": "control", "is_control": True, "n": 400.0,
    ...                      "mean": 4.0, "exposures": 210},
    ...                     {**base, "variant": "b", "is_control": False, "n": 380.0, "mean": 4.1,
    ...                      "exposures": 205, "lift_rel": 0.025, "p_value": 0.2}])
    >>> print(text.splitlines()[1])
    Verdict: KEEP RUNNING
    """
    first = rows[0]
    at = first["computed_at"]
    when = at.strftime("%Y-%m-%d %H:%M:%S %Z") if isinstance(at, datetime) else str(at)
    decision = first["decision"]
    head = _DECISION.get(decision, decision)
    if decision == "ship" and first.get("verdict_variant"):
        head += f" {first['verdict_variant']}"
    out = [f"Experiment {first['experiment_key']} (computed {when})", f"Verdict: {head}",
           f"  {first['verdict_reason']}"]
    if first.get("units_remaining") is not None and decision == "keep_running":
        out.append(f"  units still needed (all arms): {first['units_remaining']:,}")
    users = {r["variant"]: r["exposures"] for r in rows}
    split = " / ".join(f"{v} {n:,}" for v, n in users.items())
    srm = "FLAGGED" if first["srm_flagged"] else "ok"
    out.append(f"SRM: {srm} (chi-square p = {_p(first['srm_p_value'])}; users {split})")

    header = ("variant", "n", "mean", "lift", "95% CI", "95% conf. sequence", "p", "p seq (adj.)",
              "chance to beat")
    metrics = list(dict.fromkeys((r["role"], r["metric"]) for r in rows))
    for role, metric in metrics:
        mine = [r for r in rows if r["metric"] == metric]
        out.append("")
        out.append(f"{role} - {metric}")
        body = []
        for r in mine:
            if r["is_control"]:
                name = r["variant"] if r["variant"] == "control" else f"{r['variant']} (control)"
                body.append((name, _num(r["n"]), _num(r["mean"]),
                             "", "", "", "", "", ""))
                continue
            body.append((r["variant"], _num(r["n"]), _num(r["mean"]), _pct(r["lift_rel"]),
                         _interval(r["lift_rel_low"], r["lift_rel_high"]),
                         _interval(r["seq_lift_low"], r["seq_lift_high"]),
                         _p(r["p_value"]), _p(r["seq_p_holm"]), _chance(r["chance_to_beat_control"])))
        out += ["  " + line for line in _table(header, body)]
        notes = sorted({r["note"] for r in mine if r.get("note")})
        out += [f"  note: {n}" for n in notes]
    return "\n".join(out)


def _jsonable(x: Any) -> Any:
    if isinstance(x, datetime):
        return x.isoformat()
    if isinstance(x, float) and not math.isfinite(x):
        return None
    return x


def render_json(rows: Sequence[Mapping[str, Any]]) -> str:
    """The latest results as one JSON document (experiment-level fields once, then rows).

    >>> doc = json.loads(render_json([{"experiment_key": "t", "computed_at": "x", "decision": "ship",
    ...     "verdict": "ship", "verdict_variant": "b", "verdict_reason": "r", "srm_p_value": 0.4,
    ...     "srm_flagged": False, "units_remaining": None, "metric": "rating", "variant": "b"}]))
    >>> doc["decision"], doc["rows"][0]["metric"]
    ('ship', 'rating')
    """
    top = ("experiment_key", "computed_at", "decision", "verdict", "verdict_variant", "verdict_reason",
           "srm_p_value", "srm_flagged", "units_remaining")
    first = rows[0]
    doc = {k: _jsonable(first.get(k)) for k in top}
    doc["rows"] = [{k: _jsonable(v) for k, v in r.items() if k not in top} for r in rows]
    return json.dumps(doc, indent=2)


@click.command("results")
@click.argument("key")
@click.option("--format", "fmt", type=click.Choice(["text", "json"]), default="text", show_default=True)
@database_url_option
def results(key: str, fmt: str, database_url: str) -> None:
    """Latest results and verdict of experiment KEY."""
    try:
        with psycopg.connect(database_url, connect_timeout=10) as conn:
            rows = latest_results(conn, key)
    except psycopg.OperationalError as exc:
        raise click.ClickException(f"cannot reach the database: {redact(str(exc).strip(), database_url)}") from exc
    except psycopg.Error as exc:
        raise click.ClickException(explain(exc)) from exc
    if not rows:
        raise click.ClickException(
            f"no results for experiment {key!r} yet: is it running, and is the experiment-results "
            "worker up (llmpulse run experiment-results)?")
    click.echo(render_json(rows) if fmt == "json" else render_text(rows))
