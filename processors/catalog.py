"""The processors ``llmpulse run`` knows, by name."""
from __future__ import annotations

from typing import Callable

from processors.contract import Processor
from processors.ingest import IngestProcessor
from processors.settings import Settings

#: name -> factory(settings) -> processor. Order is start order for `run all`.
PROCESSORS: dict[str, Callable[[Settings], Processor]] = {
    "ingest": lambda settings: IngestProcessor(),
}


def make_processor(name: str, settings: Settings) -> Processor:
    """Build the processor called ``name``.

    >>> make_processor("ingest", Settings()).name
    'ingest'
    """
    try:
        factory = PROCESSORS[name]
    except KeyError:
        raise KeyError(f"unknown processor {name!r}; known: {', '.join(PROCESSORS)}") from None
    return factory(settings)
