"""Experiment definitions: the ``experiment`` Avro record as a validated dataclass.

Definitions live on a compacted topic keyed by ``key``; every processor and
producer reads them and assigns users with
:func:`processors.experiments.assignment.assign`.
"""

from __future__ import annotations

import math
from collections import defaultdict
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from functools import cached_property
from typing import Any, Literal

from processors.experiments.assignment import CompiledExperiment, Targeting, TargetingError

__all__ = [
    "HASH_VERSIONS",
    "KNOWN_METRICS",
    "STATUSES",
    "WEIGHT_TOLERANCE",
    "Experiment",
    "ExperimentError",
    "Namespace",
    "NamespaceConflict",
    "Variant",
    "overlapping_namespaces",
]

#: Metric names an experiment may use as primary, secondary or guardrail
#: metric: the ones the experiment analysis computes.
KNOWN_METRICS: tuple[str, ...] = (
    "success_rate",
    "error_rate",
    "latency_p95_ms",
    "cost_per_request",
    "tokens_per_request",
    "rating",
    "thumbs_up_ratio",
    "conversion",
)

#: Lifecycle states; only ``running`` experiments assign users.
STATUSES: tuple[str, ...] = ("draft", "running", "stopped")

#: Assignment hash versions (see :func:`~processors.experiments.assignment.bucket_hash`).
HASH_VERSIONS: tuple[int, ...] = (1, 2)

#: How far the variant weights may sum away from 1.
WEIGHT_TOLERANCE = 1e-6

_EPOCH = datetime(1970, 1, 1, tzinfo=timezone.utc)

Status = Literal["draft", "running", "stopped"]


class ExperimentError(ValueError):
    """An invalid experiment definition; ``problems`` lists every problem found.

    Examples
    --------
    >>> str(ExperimentError("tone", ["coverage: must be in (0, 1], got 0"]))
    "experiment 'tone' is invalid: coverage: must be in (0, 1], got 0"
    """

    def __init__(self, key: str, problems: list[str]) -> None:
        self.key = key
        self.problems = list(problems)
        super().__init__(f"experiment {key!r} is invalid: " + "; ".join(self.problems))


@dataclass(frozen=True)
class Variant:
    """One arm of an experiment.

    Parameters
    ----------
    name
        E.g. ``"control"``; the first variant of an experiment is the control.
    weight
        Share of enrolled traffic; an experiment's weights sum to 1.
    payload
        Configuration handed to the application, e.g. ``{"prompt_version": "v12"}``.

    Examples
    --------
    >>> Variant("control", 0.5, {"model": "gpt-4o"}).payload["model"]
    'gpt-4o'
    """

    name: str
    weight: float
    payload: Mapping[str, str] = field(default_factory=dict)

    def __post_init__(self) -> None:
        object.__setattr__(self, "payload", dict(self.payload))


@dataclass(frozen=True)
class Namespace:
    """A slice ``[range_start, range_end)`` of a hash space shared by experiments.

    Experiments in one namespace with disjoint slices never share a user.

    Examples
    --------
    >>> Namespace("prompts", 0.0, 0.5)
    Namespace(name='prompts', range_start=0.0, range_end=0.5)
    """

    name: str
    range_start: float
    range_end: float


@dataclass(frozen=True)
class NamespaceConflict:
    """Two running experiments whose slices of one namespace overlap."""

    namespace: str
    first: str
    second: str
    overlap: tuple[float, float]

    def __str__(self) -> str:
        a, b = self.overlap
        return (f"{self.first!r} and {self.second!r} overlap in namespace "
                f"{self.namespace!r} on [{a:g}, {b:g})")


def _now() -> datetime:
    return datetime.now(timezone.utc)


@dataclass(frozen=True, kw_only=True)
class Experiment:
    """An A/B experiment definition, mirroring the ``experiment`` Avro record.

    Immutable: change one with :func:`dataclasses.replace`, which also drops
    the cached compiled form. Construction does not validate (drafts may be
    incomplete); call :meth:`validate`.

    Parameters
    ----------
    key
        Unique key, e.g. ``"prompt-tone-2025-06"``.
    variants
        The arms; the first is the control. Lists are stored as tuples.
    primary_metric
        The metric that decides, one of :data:`KNOWN_METRICS`.
    owner
        Person or team responsible.
    hypothesis
        What the experiment is expected to show.
    coverage
        Fraction of eligible users enrolled, in (0, 1].
    targeting
        Eligibility condition as GrowthBook-style JSON (see
        :class:`~processors.experiments.assignment.Targeting`); None = everyone.
    namespace
        Mutual-exclusion slice, or None.
    secondary_metrics, guardrail_metrics
        Metrics reported, and metrics that must not get worse.
    min_sample_size
        Users per variant needed before results are read.
    status
        ``"draft"``, ``"running"`` or ``"stopped"``.
    seed
        Hash seed; empty means the key (as in GrowthBook). Changing it
        reshuffles every user.
    hash_version
        1 or 2; never change it on a running experiment.
    created_at, updated_at
        Timezone-aware datetimes; default now (UTC).

    Examples
    --------
    >>> exp = Experiment(
    ...     key="tone", owner="ml@example.com", primary_metric="thumbs_up_ratio",
    ...     hypothesis="Friendlier prompt, more thumbs up.",
    ...     variants=[Variant("control", 0.5), Variant("friendly", 0.5)])
    >>> exp.validate().status
    'draft'
    """

    key: str
    hypothesis: str = ""
    variants: tuple[Variant, ...]
    coverage: float = 1.0
    targeting: str | None = None
    namespace: Namespace | None = None
    primary_metric: str
    secondary_metrics: tuple[str, ...] = ()
    guardrail_metrics: tuple[str, ...] = ()
    min_sample_size: int = 1000
    status: Status = "draft"
    owner: str
    seed: str = ""
    hash_version: int = 2
    created_at: datetime = field(default_factory=_now)
    updated_at: datetime = field(default_factory=_now)

    def __post_init__(self) -> None:
        for name in ("variants", "secondary_metrics", "guardrail_metrics"):
            value = getattr(self, name)
            if not isinstance(value, tuple):
                object.__setattr__(self, name, tuple(value))

    # -- validation

    def problems(self, known_metrics: Iterable[str] | None = KNOWN_METRICS) -> list[str]:
        """Every problem with this definition, as ``"field: message"`` lines.

        Parameters
        ----------
        known_metrics
            Allowed metric names; None skips the metric checks (assignment
            does not need metrics).

        Examples
        --------
        >>> from processors.experiments.templates import prompt_ab
        >>> from dataclasses import replace
        >>> replace(prompt_ab("t", "o@x", "v1", "v2"), coverage=1.5).problems()
        ['coverage: must be in (0, 1], got 1.5']
        """
        out: list[str] = []
        for name in ("key", "owner", "hypothesis"):
            value = getattr(self, name)
            if not isinstance(value, str) or not value.strip():
                out.append(f"{name}: must be a non-empty string")
        out += self._variant_problems()
        if not _is_number(self.coverage) or not 0 < self.coverage <= 1:
            out.append(f"coverage: must be in (0, 1], got {self.coverage!r}")
        if self.targeting is not None:
            try:
                Targeting(self.targeting)
            except TargetingError as e:
                out.append(str(e))
        out += self._namespace_problems()
        if known_metrics is not None:
            out += self._metric_problems(frozenset(known_metrics))
        if isinstance(self.min_sample_size, bool) or not isinstance(self.min_sample_size, int) \
                or self.min_sample_size < 1:
            out.append(f"min_sample_size: must be a positive integer, got {self.min_sample_size!r}")
        if self.status not in STATUSES:
            out.append(f"status: must be one of {', '.join(STATUSES)}, got {self.status!r}")
        if not isinstance(self.seed, str):
            out.append(f"seed: must be a string, got {type(self.seed).__name__}")
        if self.hash_version not in HASH_VERSIONS or isinstance(self.hash_version, bool):
            out.append(f"hash_version: must be one of {HASH_VERSIONS}, got {self.hash_version!r}")
        out += self._time_problems()
        return out

    def validate(self, known_metrics: Iterable[str] | None = KNOWN_METRICS) -> Experiment:
        """Raise :class:`ExperimentError` listing every problem; return self if none.

        Examples
        --------
        >>> from processors.experiments.templates import prompt_ab
        >>> from dataclasses import replace
        >>> exp = prompt_ab("t", "o@x", "v1", "v2")
        >>> replace(exp, variants=exp.variants[:1]).validate()
        Traceback (most recent call last):
        ...
        processors.experiments.definitions.ExperimentError: experiment 't' is invalid: variants: need at least 2, got 1; variants: weights sum to 0.5, not 1 (tolerance 1e-06)
        """
        problems = self.problems(known_metrics)
        if problems:
            raise ExperimentError(str(self.key), problems)
        return self

    def _variant_problems(self) -> list[str]:
        out = []
        variants = self.variants
        if len(variants) < 2:
            out.append(f"variants: need at least 2, got {len(variants)}")
        if not all(isinstance(v, Variant) for v in variants):
            return out + ["variants: every variant must be a Variant"]
        names = [v.name for v in variants]
        if any(not isinstance(n, str) or not n for n in names):
            out.append("variants: every variant needs a non-empty name")
        dupes = sorted({n for n in names if names.count(n) > 1})
        if dupes:
            out.append(f"variants: duplicate names {', '.join(map(repr, dupes))}")
        weights = [v.weight for v in variants]
        bad = [f"{v.name}={v.weight!r}" for v in variants
               if not _is_number(v.weight) or not math.isfinite(v.weight) or v.weight < 0]
        if bad:
            out.append(f"variants: weights must be finite and >= 0, got {', '.join(bad)}")
        elif variants and abs(sum(weights) - 1) > WEIGHT_TOLERANCE:
            out.append(f"variants: weights sum to {sum(weights):.10g}, not 1 "
                       f"(tolerance {WEIGHT_TOLERANCE:g})")
        for v in variants:
            if not all(isinstance(k, str) and isinstance(x, str) for k, x in v.payload.items()):
                out.append(f"variants: payload of {v.name!r} must map strings to strings")
        return out

    def _namespace_problems(self) -> list[str]:
        ns = self.namespace
        if ns is None:
            return []
        if not isinstance(ns, Namespace):
            return ["namespace: must be a Namespace or None"]
        out = []
        if not isinstance(ns.name, str) or not ns.name:
            out.append("namespace: name must be a non-empty string")
        a, b = ns.range_start, ns.range_end
        if not (_is_number(a) and _is_number(b) and 0 <= a < b <= 1):
            out.append(f"namespace: range must satisfy 0 <= range_start < range_end <= 1, "
                       f"got [{a!r}, {b!r})")
        return out

    def _metric_problems(self, known: frozenset[str]) -> list[str]:
        out = []
        hint = f"known: {', '.join(KNOWN_METRICS)}" if known == frozenset(KNOWN_METRICS) \
            else f"known: {', '.join(sorted(known))}"
        if self.primary_metric not in known:
            out.append(f"primary_metric: unknown metric {self.primary_metric!r}; {hint}")
        for name in ("secondary_metrics", "guardrail_metrics"):
            unknown = [m for m in getattr(self, name) if m not in known]
            if unknown:
                out.append(f"{name}: unknown metric(s) {', '.join(map(repr, unknown))}; {hint}")
        return out

    def _time_problems(self) -> list[str]:
        out = []
        for name in ("created_at", "updated_at"):
            value = getattr(self, name)
            if not isinstance(value, datetime) or value.utcoffset() is None:
                out.append(f"{name}: must be a timezone-aware datetime, got {value!r}")
        if not out and self.updated_at < self.created_at:
            out.append("updated_at: earlier than created_at")
        return out

    # -- assignment

    @cached_property
    def compiled(self) -> CompiledExperiment:
        """The cached :class:`~processors.experiments.assignment.CompiledExperiment`.

        Safe to cache on the instance because the instance never changes.
        """
        return CompiledExperiment(self)

    def __getstate__(self) -> dict[str, Any]:
        return {k: v for k, v in self.__dict__.items() if k != "compiled"}

    # -- Avro

    def to_record(self) -> dict[str, Any]:
        """The ``experiment`` Avro record as a dict (for ``schemas.codec.encode``).

        Examples
        --------
        >>> from processors.experiments.templates import prompt_ab
        >>> rec = prompt_ab("t", "o@x", "v1", "v2").to_record()
        >>> rec["variants"][1]
        {'name': 'treatment', 'weight': 0.5, 'payload': {'prompt_version': 'v2'}}
        """
        ns = self.namespace
        return {
            "key": self.key,
            "hypothesis": self.hypothesis,
            "variants": [
                {"name": v.name, "weight": v.weight, "payload": dict(v.payload)}
                for v in self.variants
            ],
            "coverage": self.coverage,
            "targeting": self.targeting,
            "namespace": None if ns is None else {
                "name": ns.name, "range_start": ns.range_start, "range_end": ns.range_end,
            },
            "primary_metric": self.primary_metric,
            "secondary_metrics": list(self.secondary_metrics),
            "guardrail_metrics": list(self.guardrail_metrics),
            "min_sample_size": self.min_sample_size,
            "status": self.status,
            "owner": self.owner,
            "seed": self.seed,
            "hash_version": self.hash_version,
            "created_at": self.created_at,
            "updated_at": self.updated_at,
        }

    @classmethod
    def from_record(cls, record: Mapping[str, Any]) -> Experiment:
        """Build from an ``experiment`` record (decoded Avro or natural JSON).

        Optional fields may be missing; timestamps may be datetimes, ISO-8601
        strings or int microseconds since the epoch. The result is not
        validated.

        Examples
        --------
        >>> from schemas.samples import sample
        >>> exp = Experiment.from_record(sample("experiment"))
        >>> exp.namespace.name, [v.name for v in exp.variants]
        ('prompts', ['control', 'friendly'])
        >>> Experiment.from_record(exp.to_record()) == exp
        True
        """
        ns = record.get("namespace")
        return cls(
            key=record["key"],
            hypothesis=record["hypothesis"],
            variants=tuple(
                Variant(v["name"], v["weight"], v.get("payload") or {}) for v in record["variants"]
            ),
            coverage=record["coverage"],
            targeting=record.get("targeting"),
            namespace=None if ns is None else Namespace(ns["name"], ns["range_start"], ns["range_end"]),
            primary_metric=record["primary_metric"],
            secondary_metrics=tuple(record.get("secondary_metrics") or ()),
            guardrail_metrics=tuple(record.get("guardrail_metrics") or ()),
            min_sample_size=record["min_sample_size"],
            status=record["status"],
            owner=record["owner"],
            seed=record["seed"],
            hash_version=record.get("hash_version", 2),
            created_at=_timestamp(record["created_at"]),
            updated_at=_timestamp(record["updated_at"]),
        )



def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and not math.isnan(value)


def _timestamp(value: Any) -> datetime:
    if isinstance(value, int) and not isinstance(value, bool):
        return _EPOCH + timedelta(microseconds=value)
    if isinstance(value, str):
        return datetime.fromisoformat(value.replace("Z", "+00:00"))
    return value


def overlapping_namespaces(experiments: Iterable[Experiment]) -> list[NamespaceConflict]:
    """Pairs of running experiments that share a namespace and overlapping slices.

    Such pairs could enrol the same user in both, which the namespace was
    meant to prevent. Drafts, stopped experiments and experiments without a
    namespace never conflict; two definitions with the same key (versions of
    one experiment) are not compared.

    Examples
    --------
    >>> from dataclasses import replace
    >>> from processors.experiments.templates import prompt_ab
    >>> a = prompt_ab("a", "o@x", "v1", "v2", status="running", namespace=Namespace("p", 0, 0.6))
    >>> b = replace(a, key="b", namespace=Namespace("p", 0.5, 1))
    >>> [str(c) for c in overlapping_namespaces([a, b])]
    ["'a' and 'b' overlap in namespace 'p' on [0.5, 0.6)"]
    >>> overlapping_namespaces([a, replace(b, namespace=Namespace("p", 0.6, 1))])
    []
    """
    by_name: dict[str, list[Experiment]] = defaultdict(list)
    for exp in experiments:
        if exp.status == "running" and exp.namespace is not None:
            by_name[exp.namespace.name].append(exp)
    conflicts = []
    for name, group in by_name.items():
        group.sort(key=lambda e: (e.namespace.range_start, e.key))
        for i, a in enumerate(group):
            for b in group[i + 1:]:
                if b.namespace.range_start >= a.namespace.range_end:
                    break  # sorted by start: no later one overlaps a either
                if a.key == b.key:
                    continue
                lo = max(a.namespace.range_start, b.namespace.range_start)
                hi = min(a.namespace.range_end, b.namespace.range_end)
                if lo < hi:
                    conflicts.append(NamespaceConflict(name, a.key, b.key, (lo, hi)))
    return conflicts
