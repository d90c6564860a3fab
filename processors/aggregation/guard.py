"""Cardinality guard: at most ``cap`` distinct values per dimension, the rest fold into "other"."""
from __future__ import annotations

from collections.abc import Iterable, Mapping

from processors.aggregation.dimensions import DEFAULT_CAPS, DIMENSIONS, OTHER, RESERVED

__all__ = ["CardinalityGuard"]

# Distinct folded values are remembered only to be counted; past this many
# the count saturates instead of growing memory.
_FOLDED_VALUES_MAX = 10_000


class CardinalityGuard:
    """First come, first served slots per dimension; values beyond the cap become ``"other"``.

    Reserved placeholders (``"none"``, ``"unknown"``, ``"other"``) never take
    a slot. Slots are freed only by :meth:`reset`, which the aggregator calls
    with the dimensions of the series still alive.

    Parameters
    ----------
    caps
        Distinct values allowed per dimension (overrides :data:`DEFAULT_CAPS`).

    Examples
    --------
    >>> g = CardinalityGuard({"model": 1})
    >>> g.fold(("p", "a", "x", "v", "llm", "c", "none"))[0][1]
    'a'
    >>> dims, folded = g.fold(("p", "b", "x", "v", "llm", "c", "none"))
    >>> dims[1], folded
    ('other', (1,))
    """

    def __init__(self, caps: Mapping[str, int] | None = None) -> None:
        merged = {**DEFAULT_CAPS, **(caps or {})}
        unknown = set(merged) - set(DIMENSIONS)
        if unknown:
            raise ValueError(f"caps for unknown dimensions {sorted(unknown)}; known: {', '.join(DIMENSIONS)}")
        if any(int(v) < 0 for v in merged.values()):
            raise ValueError(f"caps must be >= 0, got {merged}")
        self.caps: dict[str, int] = {name: int(merged[name]) for name in DIMENSIONS}
        self._caps = [self.caps[name] for name in DIMENSIONS]
        self._seen: list[set[str]] = [set() for _ in DIMENSIONS]
        self._folded_values: list[set[str]] = [set() for _ in DIMENSIONS]

    def fold(self, raw: tuple[str, ...]) -> tuple[tuple[str, ...], tuple[int, ...]]:
        """Guarded dimensions of ``raw``, and the indexes of the values that were folded."""
        if len(raw) != len(DIMENSIONS):
            raise ValueError(f"dimensions must have {len(DIMENSIONS)} values, got {raw!r}")
        dims = list(raw)
        folded = []
        for i, value in enumerate(raw):
            if value in RESERVED or value in self._seen[i]:
                continue
            if len(self._seen[i]) < self._caps[i]:
                self._seen[i].add(value)
            else:
                dims[i] = OTHER
                folded.append(i)
                if len(self._folded_values[i]) < _FOLDED_VALUES_MAX:
                    self._folded_values[i].add(value)
        return tuple(dims), tuple(folded)

    def reset(self, alive: Iterable[tuple[str, ...]]) -> None:
        """Keep slots only for the values in ``alive``; forget the folded-value counts."""
        self._seen = [set() for _ in DIMENSIONS]
        for dims in alive:
            for i, value in enumerate(dims):
                if value not in RESERVED:
                    self._seen[i].add(value)
        self._folded_values = [set() for _ in DIMENSIONS]

    def folded_values(self) -> dict[str, int]:
        """Distinct values folded per dimension since the last reset (saturates at 10,000)."""
        return {name: len(v) for name, v in zip(DIMENSIONS, self._folded_values)}
