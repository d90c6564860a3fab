"""The producer-side library: variants and feature flags *before* the LLM call.

An application asks which variant a user gets, calls the LLM with that
variant's payload (a prompt version, a model, a temperature), and records
the variant on its spans. The answer comes from the same
:func:`~processors.experiments.assignment.assign` the ingest worker runs, so
both sides agree; when they do not (an out-of-date definition, a bug), the
ingest worker flags the span instead of changing it.

Definitions come from the compacted ``llm.experiments`` topic (read whole
by :meth:`ExperimentClient.from_kafka`, refreshed with :meth:`refresh`) or
are given directly (tests, static configuration).

Examples
--------
>>> from processors.experiments import prompt_ab
>>> client = ExperimentClient([prompt_ab("tone", "ml@x", "v11", "v12", status="running")])
>>> client.variant("tone", "user-1")
'treatment'
>>> client.flag("tone", "user-1", "prompt_version", default="v11")
'v12'
>>> client.flag("unknown-experiment", "user-1", "prompt_version", default="v11")
'v11'
>>> client.experiments_for("user-1")
{'tone': 'treatment'}
"""
from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

from processors.experiments.assignment import Assignment, CompiledExperiment
from processors.experiments.definitions import Experiment

__all__ = ["ExperimentClient", "experiments_table"]


def experiments_table(bootstrap: str, on_change: Any, topic: str = "llm.experiments") -> Any:
    """A :class:`~processors.tables.CompactedTable` of definitions: newest ``updated_at`` wins.

    A running definition is validated when read, so a broken one is reported
    as a bad record instead of silently assigning nobody.
    ``on_change(key, experiment or None)`` sees every applied change.
    """
    from processors.tables import CompactedTable
    from schemas.codec import decode

    def read(value: bytes) -> Experiment:
        experiment = Experiment.from_record(decode(value, expected="experiment"))
        if experiment.status == "running":
            experiment.compiled  # noqa: B018 - validates now
        return experiment

    return CompactedTable(
        bootstrap, topic, decode=read,
        merge=lambda old, new: new if old is None or new.updated_at >= old.updated_at else old,
        on_change=on_change,
    )


class ExperimentClient:
    """Sticky variants and feature-flag values for the running experiments."""

    def __init__(self, experiments: Iterable[Experiment] = ()) -> None:
        self._compiled: dict[str, CompiledExperiment] = {}
        self._table: Any = None
        for experiment in experiments:
            self.update(experiment)

    @classmethod
    def from_kafka(cls, bootstrap: str, topic: str = "llm.experiments", timeout_s: float = 30.0) -> ExperimentClient:
        """A client over the definitions on ``topic``, read to its current end."""
        client = cls()
        table = experiments_table(
            bootstrap, lambda key, exp: client.update(exp) if exp is not None else client.remove(key), topic)
        bad = table.restore(timeout_s)
        if bad:
            # A definition the client cannot read must not silently mean "no experiment".
            raise ValueError(f"{len(bad)} unreadable definition(s) on {topic}: {bad[0][1]}")
        client._table = table
        return client

    def refresh(self) -> None:
        """Apply definitions published since the last read (no-op for a static client)."""
        if self._table is not None:
            self._table.poll()

    def update(self, experiment: Experiment) -> None:
        """Use this definition (running ones assign; others are removed)."""
        if experiment.status == "running":
            self._compiled[experiment.key] = experiment.compiled
        else:
            self._compiled.pop(experiment.key, None)

    def remove(self, key: str) -> None:
        """Forget an experiment (deleted definition)."""
        self._compiled.pop(key, None)

    def assignment(self, key: str, user_id: str | None,
                   attributes: Mapping[str, Any] | None = None) -> Assignment | None:
        """The full :class:`Assignment`, or None when ``key`` is not running."""
        compiled = self._compiled.get(key)
        return compiled.assign(user_id, attributes) if compiled is not None else None

    def variant(self, key: str, user_id: str | None, attributes: Mapping[str, Any] | None = None) -> str | None:
        """The user's variant of experiment ``key``, or None (not running, not enrolled)."""
        a = self.assignment(key, user_id, attributes)
        return a.variant if a is not None and a.in_experiment else None

    def flag(self, key: str, user_id: str | None, name: str, default: str | None = None,
             attributes: Mapping[str, Any] | None = None) -> str | None:
        """Feature-flag lookup: the user's variant payload value ``name``, else ``default``."""
        a = self.assignment(key, user_id, attributes)
        if a is None or not a.in_experiment:
            return default
        return a.payload.get(name, default)

    def experiments_for(self, user_id: str | None, attributes: Mapping[str, Any] | None = None) -> dict[str, str]:
        """``{experiment: variant}`` for every running experiment the user is in: the span's ``experiments``."""
        out = {}
        for key, compiled in self._compiled.items():
            a = compiled.assign(user_id, attributes)
            if a.in_experiment:
                out[key] = a.variant
        return out
