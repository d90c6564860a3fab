"""Experiments: definitions, templates and sticky, GrowthBook-compatible assignment.

Examples
--------
>>> from processors.experiments import assign, prompt_ab
>>> exp = prompt_ab("tone", "ml@example.com", "v11", "v12", status="running")
>>> assign(exp, "user-1042").in_experiment
True
"""

from processors.experiments.assignment import (
    Assignment,
    BatchAssignment,
    CompiledExperiment,
    Reason,
    Targeting,
    TargetingError,
    assign,
    assign_many,
    bucket_hash,
    bucket_ranges,
    choose_variation,
    fnv1a32,
    in_namespace,
)
from processors.experiments.definitions import (
    KNOWN_METRICS,
    STATUSES,
    Experiment,
    ExperimentError,
    Namespace,
    NamespaceConflict,
    Variant,
    overlapping_namespaces,
)
from processors.experiments.templates import DEFAULT_GUARDRAILS, model_swap, prompt_ab, temperature

__all__ = [
    "DEFAULT_GUARDRAILS",
    "KNOWN_METRICS",
    "STATUSES",
    "Assignment",
    "BatchAssignment",
    "CompiledExperiment",
    "Experiment",
    "ExperimentError",
    "Namespace",
    "NamespaceConflict",
    "Reason",
    "Targeting",
    "TargetingError",
    "Variant",
    "assign",
    "assign_many",
    "bucket_hash",
    "bucket_ranges",
    "choose_variation",
    "fnv1a32",
    "in_namespace",
    "model_swap",
    "overlapping_namespaces",
    "prompt_ab",
    "temperature",
]
