"""Ready-made experiment drafts for the three most common LLM experiments.

Each template returns a validated :class:`~processors.experiments.definitions.Experiment`
(status ``draft`` unless told otherwise) with a hypothesis, a primary metric
and the guardrails every LLM change should respect: a better answer that is
slower, dearer or fails more often is rarely a win.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from datetime import datetime, timezone
from typing import Any

from processors.experiments.definitions import Experiment, Namespace, Status, Variant

__all__ = ["DEFAULT_GUARDRAILS", "model_swap", "prompt_ab", "temperature"]

#: Guardrail metrics of every template: must not get significantly worse.
DEFAULT_GUARDRAILS: tuple[str, ...] = ("latency_p95_ms", "cost_per_request", "error_rate")


def prompt_ab(
    key: str,
    owner: str,
    control_prompt_version: str,
    treatment_prompt_version: str,
    *,
    primary_metric: str = "thumbs_up_ratio",
    secondary_metrics: Sequence[str] = ("rating", "success_rate"),
    guardrail_metrics: Sequence[str] = DEFAULT_GUARDRAILS,
    hypothesis: str | None = None,
    **options: Any,
) -> Experiment:
    """A/B test of two prompt versions; payload key ``prompt_version``.

    Parameters
    ----------
    key, owner
        Experiment key and owner.
    control_prompt_version, treatment_prompt_version
        The prompt versions served to ``control`` and ``treatment``.
    primary_metric, secondary_metrics, guardrail_metrics
        Metric names from :data:`~processors.experiments.definitions.KNOWN_METRICS`.
    hypothesis
        Default: a sentence naming both versions and the primary metric.
    **options
        Any other :class:`Experiment` field (``coverage``, ``targeting``,
        ``namespace``, ``status``, ``min_sample_size``, ``seed``, ``now``...)
        plus ``weights`` (control first).

    Raises
    ------
    processors.experiments.definitions.ExperimentError
        If the result is invalid.
    ValueError
        If both versions are the same.

    Examples
    --------
    >>> exp = prompt_ab("tone", "ml@example.com", "support-v11", "support-v12")
    >>> [(v.name, v.payload["prompt_version"]) for v in exp.variants]
    [('control', 'support-v11'), ('treatment', 'support-v12')]
    >>> exp.guardrail_metrics
    ('latency_p95_ms', 'cost_per_request', 'error_rate')
    """
    if control_prompt_version == treatment_prompt_version:
        raise ValueError(f"control and treatment use the same prompt version {control_prompt_version!r}")
    return _build(
        key, owner,
        [("control", {"prompt_version": control_prompt_version}),
         ("treatment", {"prompt_version": treatment_prompt_version})],
        hypothesis=hypothesis or (
            f"Serving prompt version {treatment_prompt_version} instead of "
            f"{control_prompt_version} improves {primary_metric} without worsening "
            f"{', '.join(guardrail_metrics) or 'the guardrails'}."),
        primary_metric=primary_metric, secondary_metrics=secondary_metrics,
        guardrail_metrics=guardrail_metrics, **options,
    )


def model_swap(
    key: str,
    owner: str,
    control_model: str,
    treatment_model: str,
    *,
    primary_metric: str = "thumbs_up_ratio",
    secondary_metrics: Sequence[str] = ("rating", "success_rate", "tokens_per_request"),
    guardrail_metrics: Sequence[str] = DEFAULT_GUARDRAILS,
    hypothesis: str | None = None,
    **options: Any,
) -> Experiment:
    """A/B test of two models for the same prompt; payload key ``model``.

    Parameters are as for :func:`prompt_ab`, with models instead of prompt
    versions. When the treatment is the cheaper model, the usual question is
    "is it as good?": read the primary metric as a non-inferiority test.

    Examples
    --------
    >>> exp = model_swap("mini", "ml@example.com", "gpt-4o", "gpt-4o-mini", coverage=0.2)
    >>> exp.variants[1].payload, exp.coverage
    ({'model': 'gpt-4o-mini'}, 0.2)
    """
    if control_model == treatment_model:
        raise ValueError(f"control and treatment use the same model {control_model!r}")
    return _build(
        key, owner,
        [("control", {"model": control_model}), ("treatment", {"model": treatment_model})],
        hypothesis=hypothesis or (
            f"Replacing {control_model} with {treatment_model} keeps or improves "
            f"{primary_metric} without worsening "
            f"{', '.join(guardrail_metrics) or 'the guardrails'}."),
        primary_metric=primary_metric, secondary_metrics=secondary_metrics,
        guardrail_metrics=guardrail_metrics, **options,
    )


def temperature(
    key: str,
    owner: str,
    values: Sequence[float] = (0.2, 0.7),
    *,
    primary_metric: str = "thumbs_up_ratio",
    secondary_metrics: Sequence[str] = ("rating", "tokens_per_request"),
    guardrail_metrics: Sequence[str] = DEFAULT_GUARDRAILS,
    hypothesis: str | None = None,
    **options: Any,
) -> Experiment:
    """A test of sampling temperatures; payload key ``temperature``.

    One variant per value, named ``temp-<value>``, with equal weights unless
    ``weights`` is given; the first value is the control.

    Parameters
    ----------
    values
        At least two distinct temperatures, each in [0, 2].
    **options
        As for :func:`prompt_ab`.

    Examples
    --------
    >>> exp = temperature("temp", "ml@example.com", [0.0, 0.5, 1.0])
    >>> [v.name for v in exp.variants], exp.variants[2].payload["temperature"]
    (['temp-0', 'temp-0.5', 'temp-1'], '1')
    """
    values = list(values)
    if len(set(values)) != len(values):
        raise ValueError(f"temperatures must be distinct, got {values}")
    for v in values:
        if not isinstance(v, (int, float)) or not math.isfinite(v) or not 0 <= v <= 2:
            raise ValueError(f"temperatures must be numbers in [0, 2], got {v!r}")
    shown = ", ".join(f"{v:g}" for v in values)
    return _build(
        key, owner,
        [(f"temp-{v:g}", {"temperature": f"{v:g}"}) for v in values],
        hypothesis=hypothesis or (
            f"Among temperatures {shown}, one gives better {primary_metric} than "
            f"{values[0]:g} (the control) without worsening "
            f"{', '.join(guardrail_metrics) or 'the guardrails'}."),
        primary_metric=primary_metric, secondary_metrics=secondary_metrics,
        guardrail_metrics=guardrail_metrics, **options,
    )


def _build(
    key: str,
    owner: str,
    arms: list[tuple[str, Mapping[str, str]]],
    *,
    weights: Sequence[float] | None = None,
    coverage: float = 1.0,
    targeting: str | None = None,
    namespace: Namespace | None = None,
    min_sample_size: int = 1000,
    status: Status = "draft",
    seed: str | None = None,
    hash_version: int = 2,
    now: datetime | None = None,
    **metrics: Any,
) -> Experiment:
    weights = list(weights) if weights is not None else [1 / len(arms)] * len(arms)
    if len(weights) != len(arms):
        raise ValueError(f"{len(weights)} weights for {len(arms)} variants")
    now = now or datetime.now(timezone.utc)
    return Experiment(
        key=key,
        owner=owner,
        variants=[Variant(name, w, payload) for (name, payload), w in zip(arms, weights)],
        coverage=coverage,
        targeting=targeting,
        namespace=namespace,
        min_sample_size=min_sample_size,
        status=status,
        # Written out (not left empty to mean "the key") so the stored record
        # says which seed buckets users.
        seed=key if seed is None else seed,
        hash_version=hash_version,
        created_at=now,
        updated_at=now,
        **metrics,
    ).validate()
