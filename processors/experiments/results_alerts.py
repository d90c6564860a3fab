"""Decision alerts: an ``alert`` record when an experiment's decision changes.

The results worker computes every running experiment once a minute; a
person needs to hear only when the decision *changes*: a winner is found,
the traffic split is broken (sample ratio mismatch) or a guardrail is
breached. :func:`decision_alerts` compares the new result with the previous
decision (read back from ``experiment_results``) and returns

* a ``firing`` alert when the new decision is one of
  :data:`~.results.ALERTABLE` and differs from the previous one (a new
  winner counts as a change);
* a ``resolved`` alert for the previous alertable decision when it no longer
  holds, so a notifier can update the post it made.

``episode_id`` is ``experiment:<key>:<decision>``: one Slack thread per
experiment and decision, however often it flips.

Examples
--------
>>> from processors.experiments.results import ExperimentDesign, VariantSums, compute_results
>>> design = ExperimentDesign("t", (("a", 0.5), ("b", 0.5)), primary="error_rate")
>>> r = compute_results(design, {}, {"a": 900, "b": 1100})
>>> [(a["episode_id"], a["status"]) for a in decision_alerts(r, previous=None)]
[('experiment:t:srm', 'firing')]
>>> decision_alerts(r, previous=PreviousDecision("srm", None))
[]
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any
from urllib.parse import quote

from processors.experiments.results import ALERTABLE, ExperimentResult, ResultRow

__all__ = ["DEFAULT_GRAFANA_URL", "PreviousDecision", "decision_alerts"]

#: Where the Experiments dashboard lives (the local deployment's Grafana).
DEFAULT_GRAFANA_URL = "http://localhost:3000"

_SEVERITY = {"ship": "info", "srm": "critical", "guardrail_breached": "critical"}
_LABEL = {"ship": "winner found", "srm": "sample ratio mismatch",
          "guardrail_breached": "guardrail breached", "keep_running": "keep running",
          "no_difference": "no difference"}


@dataclass(frozen=True)
class PreviousDecision:
    """The decision and variant of the experiment's previous computation.

    >>> PreviousDecision("ship", "b") == PreviousDecision("ship", "b")
    True
    """

    decision: str
    variant: str | None


def _pct(x: float | None) -> str:
    return "n/a" if x is None else f"{x:+.1%}"


def _p(x: float | None) -> str:
    return "n/a" if x is None else f"{x:.2g}"


def _evidence(result: ExperimentResult) -> ResultRow | None:
    """The row the decision rests on: the winner's primary metric, or the worst breached guardrail."""
    design = result.design
    if result.decision == "ship":
        variant = result.verdict_variant
        if variant == design.control:  # every variant lost: show the one that lost least
            rows = [r for r in result.rows if r.metric == design.primary and not r.is_control]
            return max(rows, key=lambda r: r.seq_p_holm or 0.0, default=None)
        return next((r for r in result.rows if r.metric == design.primary and r.variant == variant), None)
    if result.decision == "guardrail_breached":
        worse = [r for r in result.rows if r.role == "guardrail" and r.significant and r.direction == "worse"]
        return min(worse, key=lambda r: r.seq_p_value or 1.0, default=None)
    return next((r for r in result.rows if r.metric == design.primary and not r.is_control), None)


def _title(result: ExperimentResult, decision: str, status: str) -> str:
    key = result.design.key
    if status == "resolved":
        return f"Experiment {key}: {_LABEL[decision]} no longer holds (now {_LABEL[result.decision]})"
    if decision == "ship":
        if result.verdict_variant == result.design.control:
            return f"Experiment {key}: keep control, every variant is worse"
        return f"Experiment {key}: ship {result.verdict_variant}"
    return f"Experiment {key}: {_LABEL[decision]}"


def _alert(result: ExperimentResult, decision: str, status: str, grafana_url: str) -> dict[str, Any]:
    design = result.design
    row = _evidence(result)
    facts = {
        "verdict": result.decision,
        "srm_p": _p(result.srm.p_value),
        "exposures": ", ".join(f"{v} {n:,}" for v, n in result.exposures.items()),
    }
    if result.verdict_variant:
        facts["variant"] = result.verdict_variant
    if row is not None:
        facts.update({
            "metric": row.metric,
            "lift": f"{_pct(row.lift_rel)} ({_pct(row.seq_lift_low)} to {_pct(row.seq_lift_high)})",
            "p": _p(row.seq_p_holm),
            "chance_to_beat_control": _p(row.chance_to_beat_control),
        })
    at = result.computed_at
    link = f"{grafana_url.rstrip('/')}/d/llmpulse-experiments/experiments?var-experiment={quote(design.key)}"
    return {
        "alert_id": f"experiment:{design.key}:{decision}:{status}:{at.isoformat()}",
        "kind": "experiment",
        "severity": "info" if status == "resolved" else _SEVERITY[decision],
        "title": _title(result, decision, status),
        "text": result.reason,
        "series": None,
        "dimensions": {"experiment": design.key, **({"variant": result.verdict_variant}
                                                     if result.verdict_variant else {})},
        "time": at,
        "links": [link],
        "episode_id": f"experiment:{design.key}:{decision}",
        "status": status,
        "project": design.project,
        "facts": facts,
    }


def decision_alerts(
    result: ExperimentResult,
    previous: PreviousDecision | None,
    *,
    grafana_url: str = DEFAULT_GRAFANA_URL,
) -> list[dict[str, Any]]:
    """Alert records (``alert`` v2) for a change of decision; ``[]`` when nothing changed.

    Parameters
    ----------
    result : ExperimentResult
        The new computation.
    previous : PreviousDecision or None
        The previous computation's decision; None for the first one.
    grafana_url : str
        Base URL for the dashboard link.
    """
    now = PreviousDecision(result.decision, result.verdict_variant)
    if previous == now:
        return []
    out = []
    if previous is not None and previous.decision in ALERTABLE and previous.decision != now.decision:
        out.append(_alert(result, previous.decision, "resolved", grafana_url))
    if now.decision in ALERTABLE:
        out.append(_alert(result, now.decision, "firing", grafana_url))
    return out
