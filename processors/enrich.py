"""Enrich: cohort keys and experiment variants for spans and feedback.

The ingest processor calls :class:`Enricher` on every span and feedback
event after masking and costing. It needs two tables (the latest user
profile per user, the latest definition per experiment; see
:mod:`processors.tables`) and does three things:

1. **cohorts**: the user's profile → ``llmpulse.cohort.<name>`` attributes
   and the primary ``llmpulse.cohort`` (the metrics ``cohort`` dimension)
   on the root span and on feedback; child spans carry only the primary.
   A user without a profile is tagged ``unknown``, never dropped.
2. **variants**: for every *running* experiment the user is enrolled in,
   the variant from the same sticky hash producers use
   (:mod:`processors.experiments.assignment`). A span that carries no
   variant for the experiment gets the computed one in ``span.experiments``.
   A span whose producer-side variant disagrees keeps it (the application
   really served it) and is flagged: ``llmpulse.variant_mismatch.<key>`` =
   ``"<sent> != <computed>"``, counted per experiment. Never silently fixed.
3. **exposures**: the first time this worker sees a (user, experiment), an
   ``exposure`` record for ``llm.exposures`` (the exposures table keeps the
   first one per pair, so several workers or a restart do not double count).

Examples
--------
>>> from datetime import UTC, datetime
>>> from processors.cohorts import CohortConfig, CohortTagger
>>> from processors.experiments import prompt_ab
>>> profiles = {"user-1042": {"user_id": "user-1042", "plan": "pro", "updated_at": datetime(2026, 1, 1, tzinfo=UTC)}}
>>> enricher = Enricher(CohortTagger(CohortConfig.load()), profiles.get)
>>> enricher.set_experiment("tone", prompt_ab("tone", "ml@x", "v1", "v2", status="running"))
>>> from schemas.samples import sample
>>> span, exposures = enricher.span(sample("span", experiments={}, parent_span_id=None))
>>> span["attributes"]["llmpulse.cohort"], span["experiments"]
('pro', {'tone': 'control'})
>>> [(e["experiment_key"], e["variant"]) for e in exposures]
[('tone', 'control')]
>>> enricher.span(sample("span", experiments={}))[1]
[]
"""
from __future__ import annotations

from collections import Counter, OrderedDict
from collections.abc import Callable, Mapping
from datetime import datetime
from types import MappingProxyType
from typing import Any

from processors.cohorts import PRIMARY_ATTR, CohortTagger
from processors.experiments import CompiledExperiment, Experiment

__all__ = ["MISMATCH_ATTR", "Enricher"]

#: Attribute prefix flagging a producer-side variant that disagrees with the computed one.
MISMATCH_ATTR = "llmpulse.variant_mismatch."

Profile = Mapping[str, Any]
# Shared "no variants" result; never changed.
_NONE: Mapping[str, str] = MappingProxyType({})


class Enricher:
    """Tags spans and feedback with cohorts and variants; yields exposures.

    Parameters
    ----------
    tagger
        Cohort configuration, compiled.
    profile_of
        ``user_id -> profile or None`` (a table lookup).
    exposure_memory
        (user, experiment) pairs remembered to send each exposure once per
        worker; older pairs are forgotten (a repeat is harmless: the
        exposures table keeps the first).
    user_cache_size
        Users whose primary cohort and variants are remembered (least
        recently used out; ``0`` disables). An entry is used only while
        the table returns the same profile object with the same
        ``updated_at`` and the span has the same project; every
        :meth:`set_experiment` call empties the cache.
    """

    def __init__(
        self,
        tagger: CohortTagger,
        profile_of: Callable[[str], Profile | None],
        *,
        exposure_memory: int = 1_000_000,
        user_cache_size: int = 65_536,
    ) -> None:
        if user_cache_size < 0:
            raise ValueError(f"user_cache_size must be >= 0, got {user_cache_size}")
        self.tagger = tagger
        self.profile_of = profile_of
        self.exposure_memory = exposure_memory
        self.running: dict[str, CompiledExperiment] = {}
        self.user_cache_size = user_cache_size
        # user id -> (profile, its updated_at, span project, primary cohort,
        # variants); see _user.
        self._users: OrderedDict[str, tuple[Any, Any, Any, str, Mapping[str, str]]] = OrderedDict()
        self._exposed: OrderedDict[tuple[str, str], None] = OrderedDict()
        self.mismatches: Counter[str] = Counter()
        self.exposures: Counter[str] = Counter()
        self.unknown_users = 0

    def set_experiment(self, key: str, experiment: Experiment | None) -> None:
        """Use the latest definition of ``key`` (None: deleted); only running ones assign.

        >>> from processors.cohorts import CohortConfig
        >>> from processors.experiments import prompt_ab
        >>> e = Enricher(CohortTagger(CohortConfig.load()), {}.get)
        >>> e.set_experiment("t", prompt_ab("t", "o@x", "v1", "v2", status="draft")); sorted(e.running)
        []
        """
        if experiment is None or experiment.status != "running":
            self.running.pop(key, None)
        else:
            self.running[key] = experiment.compiled
        # Cached variants were computed from the old definitions.
        self._users.clear()

    # -- per event ---------------------------------------------------------

    def span(self, span: dict[str, Any], *, copy: bool = True) -> tuple[dict[str, Any], list[dict[str, Any]]]:
        """The tagged span and the exposure records it caused.

        With ``copy`` False ``span`` itself is tagged and returned (its
        ``attributes`` and ``experiments`` are replaced by new dicts, never
        changed): for a caller that owns the span, such as the ingest
        processor with a span it has just decoded, saving a copy per span.
        """
        user_id = span.get("user_id")
        if user_id:
            profile = self.profile_of(user_id)
            primary, variants = self._user(user_id, span.get("project"), profile)
        else:
            profile, primary, variants = None, self.tagger.primary_for(None), _NONE
        if profile is None:
            self.unknown_users += 1
        tagged = dict(span) if copy else span
        attrs = span.get("attributes")
        if span.get("parent_span_id") is None:
            attrs = self.tagger.merged_attributes(attrs, profile)
        else:
            # Child spans carry only the primary cohort (the metrics dimension);
            # the root span and feedback carry every cohort. Eight attributes
            # on every span cost downstream decoding and storage ~25 %.
            attrs = dict(attrs) if attrs else {}
            attrs[PRIMARY_ATTR] = primary
        tagged["attributes"] = attrs
        if not variants:  # no running experiment, no user, or not enrolled
            return tagged, []
        sent = span.get("experiments") or {}
        merged = dict(sent)
        exposures = []
        for key, variant in variants.items():
            claimed = sent.get(key)
            if claimed is None:
                merged[key] = variant
            elif claimed != variant:
                self.mismatches[key] += 1
                attrs[MISMATCH_ATTR + key] = f"{claimed} != {variant}"
            exposure = self._exposure(key, merged[key], user_id, span, "producer" if claimed else "processor")
            if exposure is not None:
                exposures.append(exposure)
        tagged["experiments"] = merged
        return tagged, exposures

    def feedback(self, feedback: dict[str, Any]) -> dict[str, Any]:
        """The feedback with cohort attributes and ``llmpulse.experiment.<key>`` variants."""
        user_id = feedback.get("user_id")
        profile = self.profile_of(user_id) if user_id else None
        tagged = self.tagger.tag_feedback(feedback, profile)
        if self.running and user_id:
            for key, variant in self._user(user_id, feedback.get("project"), profile)[1].items():
                tagged["attributes"][f"llmpulse.experiment.{key}"] = variant
        return tagged

    def _user(self, user_id: str, project: str | None, profile: Profile | None) -> tuple[str, Mapping[str, str]]:
        """Primary cohort and (read-only) variants of a user with this profile.

        Both are pure functions of (profile, user id, project, running
        definitions), and a span costs ~2 us less when they are looked up
        instead of recomputed. A profile table replaces a changed profile
        with a new object, so identity plus ``updated_at`` (in case a caller
        edits a profile in place and bumps it) tells a stale entry.
        """
        cache = self._users
        updated_at = profile.get("updated_at") if profile is not None else None
        hit = cache.get(user_id)
        if hit is not None and hit[0] is profile and hit[1] == updated_at and hit[2] == project:
            cache.move_to_end(user_id)
            return hit[3], hit[4]
        primary = self.tagger.primary_for(profile)
        variants = MappingProxyType(self._variants(user_id, project, profile)) if self.running else _NONE
        if self.user_cache_size:
            # The entry holds the profile, so its id cannot be reused while cached.
            cache[user_id] = (profile, updated_at, project, primary, variants)
            if len(cache) > self.user_cache_size:
                cache.popitem(last=False)
        return primary, variants

    def _variants(self, user_id: str, project: str | None, profile: Profile | None) -> dict[str, str]:
        attributes = {"user_id": user_id, "project": project}
        if profile is not None:
            attributes.update(profile)
            attributes["cohort"] = self.tagger.cohorts_for(profile)
        out = {}
        for key, compiled in self.running.items():
            assignment = compiled.assign(user_id, attributes)
            if assignment.in_experiment:
                out[key] = assignment.variant
        return out

    def _exposure(self, key: str, variant: str, user_id: str, span: Mapping[str, Any],
                  source: str) -> dict[str, Any] | None:
        pair = (user_id, key)
        if pair in self._exposed:
            return None
        self._exposed[pair] = None
        if len(self._exposed) > self.exposure_memory:
            self._exposed.popitem(last=False)
        self.exposures[key] += 1
        at: datetime = span["start_time"]
        return {"experiment_key": key, "variant": variant, "user_id": user_id,
                "project": span.get("project") or "unknown", "time": at, "source": source}

    def samples(self) -> list[tuple[str, str, dict[str, str], float]]:
        """Counters for Prometheus: mismatches and exposures per experiment, unknown users."""
        out = [("llmpulse_enrich_unknown_user_spans", "Spans whose user has no profile (cohort 'unknown').",
                {}, float(self.unknown_users))]
        out += [("llmpulse_variant_mismatches", "Events whose producer-side variant differs from the computed one.",
                 {"experiment": k}, float(n)) for k, n in self.mismatches.items()]
        out += [("llmpulse_exposures_emitted", "Exposure events emitted (first sight per worker).",
                 {"experiment": k}, float(n)) for k, n in self.exposures.items()]
        out.append(("llmpulse_running_experiments", "Running experiments this worker assigns.", {},
                    float(len(self.running))))
        return out
