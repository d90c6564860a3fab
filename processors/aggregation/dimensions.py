"""Which series an event belongs to: dimension extraction and series keys.

A series is one combination of the :data:`DIMENSIONS`. Extraction is one small
function, :func:`span_dimensions`, so that it can change (the cohort and
experiment processors will set ``cohort`` and ``variant`` properly) without
touching the aggregator.
"""
from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

__all__ = [
    "DEFAULT_CAPS",
    "DIMENSIONS",
    "OTHER",
    "RESERVED",
    "as_dimensions",
    "metric_series_key",
    "series_key",
    "span_dimensions",
    "unknown_trace_dimensions",
]

#: Dimension names, in series-key order. Project first so that keys of one
#: project sort together (and a ``LIKE 'project=x|%'`` prefix scan works).
DIMENSIONS: tuple[str, ...] = ("project", "model", "provider", "prompt_version", "kind", "cohort", "variant")

#: Distinct values per dimension before new ones fold into :data:`OTHER`.
#: Sized for what a dashboard legend can still show, and so that a producer
#: bug (a request id in ``prompt_version``) cannot blow up memory or the
#: database: the worst case is the product of the caps *actually seen*.
DEFAULT_CAPS: Mapping[str, int] = {
    "project": 1000,
    "model": 200,
    "provider": 50,
    "prompt_version": 1000,
    "kind": 16,
    "cohort": 200,
    "variant": 500,
}

#: Value that replaces a dimension value beyond its cap.
OTHER = "other"

#: Placeholder values that never take a cap slot: "none" (field absent),
#: "unknown" (not known yet, e.g. feedback on an unseen trace), "other".
RESERVED = frozenset({"none", "unknown", OTHER})

_COHORT_ATTRIBUTE = "llmpulse.cohort"


def span_dimensions(span: Mapping[str, Any]) -> tuple[str, ...]:
    """The raw dimension values of a span, in :data:`DIMENSIONS` order.

    ``model`` is the response model, else the request model; absent fields
    become ``"none"``; the cohort comes from the ``llmpulse.cohort``
    attribute (``"unknown"`` until the cohort processor sets it); the variant
    is ``"experiment:variant"``, several experiments sorted and joined by
    ``","``, or ``"none"``.

    Examples
    --------
    >>> from schemas.samples import sample
    >>> span_dimensions(sample("span"))
    ('support-bot', 'gpt-4o-mini-2024-07-18', 'openai', 'support-v12', 'llm', 'unknown', 'prompt-tone:friendly')
    >>> span_dimensions(sample("span", response_model=None, experiments={}))[1::5]
    ('gpt-4o-mini', 'none')
    """
    exps = span.get("experiments")
    if not exps:
        variant = "none"
    elif len(exps) == 1:
        ((name, arm),) = exps.items()
        variant = f"{name}:{arm}"
    else:
        variant = ",".join(f"{name}:{exps[name]}" for name in sorted(exps))
    attrs = span.get("attributes")
    return (
        span.get("project") or "unknown",
        span.get("response_model") or span.get("request_model") or "none",
        span.get("provider") or "none",
        span.get("prompt_version") or "none",
        span.get("kind") or "other",
        (attrs.get(_COHORT_ATTRIBUTE) if attrs else None) or "unknown",
        variant,
    )


def unknown_trace_dimensions(project: str) -> tuple[str, ...]:
    """Dimensions for feedback whose trace is unknown: its project, rest ``"unknown"``.

    >>> unknown_trace_dimensions("demo")[:3]
    ('demo', 'unknown', 'unknown')
    """
    return (project or "unknown",) + ("unknown",) * (len(DIMENSIONS) - 1)


def as_dimensions(dims: Mapping[str, str] | Sequence[str], project: str = "unknown") -> tuple[str, ...]:
    """Normalise dimensions given as a mapping or a sequence to a tuple.

    Missing or empty names in a mapping become ``"unknown"`` (``project``
    falls back to the ``project`` argument).

    >>> as_dimensions({"model": "m"}, project="p")[:3]
    ('p', 'm', 'unknown')
    >>> as_dimensions(("p", "m", "x", "v1", "llm", "c", "none"))[4]
    'llm'
    """
    if isinstance(dims, Mapping):
        out = tuple(str(dims.get(name) or "unknown") for name in DIMENSIONS)
        if out[0] == "unknown" and project:
            out = (project,) + out[1:]
        return out
    out = tuple(str(v) for v in dims)
    if len(out) != len(DIMENSIONS):
        raise ValueError(f"expected {len(DIMENSIONS)} dimension values ({', '.join(DIMENSIONS)}), got {len(out)}")
    return out


# Characters with a meaning in either key format are percent-encoded, so keys
# are unambiguous and can be split back into values; '%' itself first.
_ESCAPES = str.maketrans({c: f"%{ord(c):02X}" for c in "%|=,{}"})


def _escape(value: str) -> str:
    return value.translate(_ESCAPES)


def series_key(dims: Sequence[str]) -> str:
    """The stable series key of a window row: ``name=value`` joined by ``|``.

    Names in :data:`DIMENSIONS` order; ``% | = , { }`` in values are
    percent-encoded.

    >>> series_key(("p", "gpt-4o", "openai", "v1", "llm", "unknown", "exp:a|b"))
    'project=p|model=gpt-4o|provider=openai|prompt_version=v1|kind=llm|cohort=unknown|variant=exp:a%7Cb'
    """
    return "|".join(f"{name}={_escape(value)}" for name, value in zip(DIMENSIONS, dims, strict=True))


def metric_series_key(metric: str, dims: Mapping[str, str]) -> str:
    """The ``metric_point.series`` id: metric plus sorted dimensions.

    Follows the format documented in the ``metric_point`` schema.

    >>> metric_series_key("error_rate", {"project": "p", "model": "m"})
    'error_rate{model=m,project=p}'
    """
    inner = ",".join(f"{name}={_escape(dims[name])}" for name in sorted(dims))
    return f"{metric}{{{inner}}}"
