"""Cost of an LLM call, from a versioned price table shipped as data.

The table (``processors/data/prices.json``, format in ``docs/pricing.md``)
maps model names to list prices in USD per million tokens. A user override
file in the same format can replace or add entries (the processors read its
path from ``LLMPULSE_PRICES_FILE``).

This runs on every span, so the work per span is a few dict reads, one
LRU-cached name lookup and four multiplications; regular expressions are
compiled once, when the table is built, and only a cache miss runs them.

Examples
--------
>>> table = PriceTable.load()
>>> span = {"provider": "openai", "response_model": "gpt-4o-mini-2024-07-18",
...         "input_tokens": 1000, "output_tokens": 200,
...         "cache_read_input_tokens": 600, "cost_usd": None}
>>> result = table.cost_of(span)
>>> result.source, result.model_id, round(result.cost_usd, 9)
('table', 'gpt-4o-mini', 0.000225)
"""
from __future__ import annotations

import json
import math
import re
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass
from datetime import date
from functools import lru_cache
from importlib import resources
from os import PathLike
from pathlib import Path
from typing import Any, Literal, NamedTuple

__all__ = ["CostResult", "ModelPrice", "PriceTable", "UnknownModels"]

CostSource = Literal["span", "table", "unknown_model", "no_usage"]

CURRENCY = "USD"
UNIT = "per_million_tokens"

_PRICE_FIELDS = ("input", "output", "cache_read", "cache_write")
_ENTRY_FIELDS = frozenset(("id", "provider", "match", *_PRICE_FIELDS, "source", "examples", "notes"))
_TABLE_FIELDS = frozenset(("version", "currency", "unit", "models", "notes"))


@dataclass(frozen=True, slots=True)
class ModelPrice:
    """Prices of one model, in USD per million tokens.

    ``cache_read`` and ``cache_write`` are the prices actually charged: when
    the table gives none for a model, they equal ``input``, because a
    provider without a cache discount bills those tokens as plain input.

    Examples
    --------
    >>> p = ModelPrice("m", "acme", "m", input=2.0, output=8.0, cache_read=0.5)
    >>> p.cache_write
    2.0
    >>> p.cost(input_tokens=1_000_000, output_tokens=1_000_000)
    10.0
    """

    id: str
    provider: str
    pattern: str
    input: float
    output: float
    cache_read: float | None = None
    cache_write: float | None = None
    source: str = ""

    def __post_init__(self) -> None:
        if self.cache_read is None:
            object.__setattr__(self, "cache_read", self.input)
        if self.cache_write is None:
            object.__setattr__(self, "cache_write", self.input)

    def cost(
        self,
        input_tokens: int = 0,
        output_tokens: int = 0,
        cache_read_tokens: int = 0,
        cache_creation_tokens: int = 0,
    ) -> float:
        """USD cost of one call.

        ``input_tokens`` counts the whole prompt, cached tokens included: that
        is how OpenTelemetry's ``gen_ai.usage.input_tokens`` (and OpenAI's and
        Gemini's usage blocks) count. So the cached part is taken out before
        the input price applies; otherwise a cache hit would be billed twice,
        once as input and again as a cache read. Negative counts count as 0.

        Examples
        --------
        >>> p = ModelPrice("m", "acme", "m", input=3.0, output=15.0,
        ...                cache_read=0.3, cache_write=3.75)
        >>> round(p.cost(10_000, 1_000, cache_read_tokens=8_000,
        ...              cache_creation_tokens=1_000), 6)
        0.02415
        """
        cr = cache_read_tokens if cache_read_tokens > 0 else 0
        cw = cache_creation_tokens if cache_creation_tokens > 0 else 0
        out = output_tokens if output_tokens > 0 else 0
        # A producer that reports input *without* cached tokens (Anthropic's
        # and Bedrock's native usage fields) breaks the contract of the span
        # schema; clamping keeps the cost from going negative in that case.
        uncached = input_tokens - cr - cw
        if uncached < 0:
            uncached = 0
        return (
            uncached * self.input + cr * self.cache_read + cw * self.cache_write + out * self.output
        ) / 1_000_000


class CostResult(NamedTuple):
    """What :meth:`PriceTable.cost_of` found for one span.

    ``source`` says where the cost came from: ``"span"`` (the producer's own
    ``cost_usd``, kept), ``"table"`` (computed here), ``"unknown_model"`` (no
    entry matches ``model``; cost None, never guessed) or ``"no_usage"`` (no
    token counts, e.g. a tool or retrieval span; cost None). ``model`` is the
    name that was looked up (response model, else request model).

    Examples
    --------
    >>> CostResult(None, None, "unknown_model", "my-model").source
    'unknown_model'
    """

    cost_usd: float | None
    model_id: str | None
    source: CostSource
    model: str | None = None


class PriceTable:
    """Model prices, matched by regular expression, tried in order.

    Parameters
    ----------
    entries
        Prices in the order they are tried (overrides first, see :meth:`load`).
    version
        Date of the shipped table, ``YYYY-MM-DD``.
    override_version
        Date of the override file, if one was loaded.
    cache_size
        Most distinct ``(model, provider)`` pairs remembered. Names come
        from producers, so the cache is bounded: a producer sending a new
        name per call costs misses, never memory.

    Examples
    --------
    >>> table = PriceTable.load()
    >>> table.version >= "2026-11-01"
    True
    >>> table.price_for("anthropic.claude-3-5-haiku-20241022-v1:0").id
    'claude-3-5-haiku'
    """

    def __init__(
        self,
        entries: Iterable[ModelPrice],
        version: str,
        *,
        override_version: str | None = None,
        cache_size: int = 4096,
    ) -> None:
        self.entries: tuple[ModelPrice, ...] = tuple(entries)
        self.version = version
        self.override_version = override_version
        seen: set[str] = set()
        for entry in self.entries:
            if entry.id in seen:
                raise ValueError(f"duplicate price entry id {entry.id!r}")
            seen.add(entry.id)
        # fullmatch, case-insensitive: an entry never matches a longer name
        # by accident (gpt-4o vs gpt-4o-mini), and "GPT-4o" is still gpt-4o.
        self._matchers = tuple(
            (re.compile(entry.pattern, re.IGNORECASE).fullmatch, entry) for entry in self.entries
        )
        self._lookup = lru_cache(maxsize=cache_size)(self._resolve)

    # -- building -----------------------------------------------------------

    @classmethod
    def load(
        cls,
        path: str | PathLike[str] | None = None,
        overrides: str | PathLike[str] | None = None,
        *,
        cache_size: int = 4096,
    ) -> PriceTable:
        """Read the shipped table (or ``path``) plus an optional override file.

        Override entries are tried before the table's, and one with the id of
        a table entry replaces it. Any problem raises ValueError naming the
        file and the entry.

        Examples
        --------
        >>> PriceTable.load().price_for("gpt-4o").input
        2.5
        >>> PriceTable.load("/nonexistent/prices.json")
        Traceback (most recent call last):
        ...
        ValueError: /nonexistent/prices.json: cannot read price table: No such file or directory
        """
        if path is None:
            where = "processors/data/prices.json"
            base = _read(resources.files("processors").joinpath("data/prices.json"), where)
        else:
            where = str(path)
            base = _read(Path(path), where)
        extra, extra_where = None, "<overrides>"
        if overrides is not None:
            extra_where = str(overrides)
            extra = _read(Path(overrides), extra_where)
        return cls.from_dict(
            base, extra, where=where, overrides_where=extra_where, cache_size=cache_size
        )

    @classmethod
    def from_dict(
        cls,
        table: Mapping[str, Any],
        overrides: Mapping[str, Any] | None = None,
        *,
        where: str = "<table>",
        overrides_where: str = "<overrides>",
        cache_size: int = 4096,
    ) -> PriceTable:
        """Build a table from already-parsed JSON documents.

        Examples
        --------
        >>> doc = {"version": "2026-01-01", "currency": "USD",
        ...        "unit": "per_million_tokens",
        ...        "models": [{"id": "m", "provider": "acme", "match": "m-[0-9]+",
        ...                    "input": 1, "output": 2}]}
        >>> PriceTable.from_dict(doc).price_for("m-7").id
        'm'
        >>> doc["models"][0]["input"] = -1
        >>> PriceTable.from_dict(doc, where="mine.json")
        Traceback (most recent call last):
        ...
        ValueError: mine.json: models[0] (id 'm'): 'input' must be a number >= 0, got -1
        """
        version, entries = _parse(table, where)
        override_version = None
        if overrides is not None:
            override_version, extra = _parse(overrides, overrides_where)
            replaced = {e.id for e in extra}
            entries = extra + [e for e in entries if e.id not in replaced]
        return cls(entries, version, override_version=override_version, cache_size=cache_size)

    # -- lookups ------------------------------------------------------------

    def price_for(self, model: str | None, provider: str | None = None) -> ModelPrice | None:
        """The price of ``model``, or None when no entry matches (never guessed).

        When several entries match, one whose ``provider`` equals
        ``provider`` wins; otherwise the first in table order (overrides
        first). Results are cached per ``(model, provider)``.

        Examples
        --------
        >>> table = PriceTable.load()
        >>> table.price_for("gpt-4o-mini-2024-07-18").id
        'gpt-4o-mini'
        >>> table.price_for("gpt-4o-2024-08-06").id
        'gpt-4o'
        >>> table.price_for("my-local-model") is None
        True
        """
        if not model:
            return None
        return self._lookup(model, provider)

    def _resolve(self, model: str, provider: str | None) -> ModelPrice | None:
        name = model.strip()
        first = None
        for fullmatch, entry in self._matchers:
            if fullmatch(name):
                if provider is None or entry.provider == provider:
                    return entry
                if first is None:
                    first = entry
        return first

    def cost_of(self, span: Mapping[str, Any]) -> CostResult:
        """Cost of one span (a plain dict with the span schema's fields).

        A producer's own ``cost_usd`` is kept. Otherwise the cost is computed
        from the token counts and the price of ``response_model`` (the
        snapshot that really ran), or of ``request_model`` when the response
        names none. A response model the table does not know is reported as
        unknown rather than priced as the requested model.

        Examples
        --------
        >>> table = PriceTable.load()
        >>> span = {"provider": "anthropic", "request_model": "claude-sonnet-4-0",
        ...         "response_model": "claude-sonnet-4-20250514",
        ...         "input_tokens": 12_000, "output_tokens": 500,
        ...         "cache_read_input_tokens": 10_000,
        ...         "cache_creation_input_tokens": 1_500}
        >>> r = table.cost_of(span)
        >>> r.model_id, round(r.cost_usd, 6)
        ('claude-sonnet-4', 0.017625)
        >>> table.cost_of({"operation": "execute_tool"}).source
        'no_usage'
        >>> table.cost_of({"request_model": "my-llm", "input_tokens": 5})[1:3]
        (None, 'unknown_model')
        """
        get = span.get
        model = get("response_model") or get("request_model")
        price = self._lookup(model, get("provider")) if model else None
        model_id = price.id if price is not None else None
        cost = get("cost_usd")
        if cost is not None:
            return CostResult(float(cost), model_id, "span", model)
        inp = get("input_tokens")
        out = get("output_tokens")
        cr = get("cache_read_input_tokens")
        cw = get("cache_creation_input_tokens")
        if inp is None and out is None and cr is None and cw is None:
            return CostResult(None, model_id, "no_usage", model)
        if price is None:
            return CostResult(None, None, "unknown_model", model)
        return CostResult(price.cost(inp or 0, out or 0, cr or 0, cw or 0), model_id, "table", model)

    def cache_info(self) -> Any:
        """Hits and misses of the name lookup cache (``functools`` style).

        Examples
        --------
        >>> table = PriceTable.load()
        >>> _ = table.price_for("o3"), table.price_for("o3")
        >>> table.cache_info().hits
        1
        """
        return self._lookup.cache_info()

    def __len__(self) -> int:
        return len(self.entries)

    def __repr__(self) -> str:
        extra = f", overrides {self.override_version}" if self.override_version else ""
        return f"<PriceTable {self.version}{extra}: {len(self.entries)} models>"


class UnknownModels:
    """Counts spans whose model has no price, by model name.

    The ingest processor exports these counts (as a Prometheus counter) so a
    missing table entry shows up instead of silently lowering reported cost.
    Names come from producers, so both their number and their length are
    capped: past ``max_names`` distinct names, further ones are counted under
    ``OTHER`` (so at most ``max_names + 1`` names), which keeps a metric's
    label set bounded; names are cut to ``MAX_NAME_LENGTH`` characters.

    Examples
    --------
    >>> unknown = UnknownModels(max_names=2)
    >>> for name in ["a", "b", "a", "c", "a"]:
    ...     _ = unknown.add(name)
    >>> unknown.most_common()
    [('a', 3), ('<other>', 1), ('b', 1)]
    >>> unknown.total
    5
    """

    OTHER = "<other>"
    NO_MODEL = "<none>"
    MAX_NAME_LENGTH = 128

    def __init__(self, max_names: int = 1000) -> None:
        self.max_names = max_names
        self._counts: dict[str, int] = {}

    def add(self, model: str | None, n: int = 1) -> str:
        """Count ``model`` ``n`` times; return the name it was counted under.

        Examples
        --------
        >>> UnknownModels().add(None)
        '<none>'
        """
        key = self.NO_MODEL if not model else model[: self.MAX_NAME_LENGTH]
        counts = self._counts
        if key not in counts and len(counts) >= self.max_names:
            key = self.OTHER
        counts[key] = counts.get(key, 0) + n
        return key

    def observe(self, result: CostResult) -> str | None:
        """Count ``result`` if its model was unknown; return the name counted.

        Examples
        --------
        >>> unknown = UnknownModels()
        >>> unknown.observe(CostResult(None, None, "unknown_model", "x"))
        'x'
        >>> unknown.observe(CostResult(0.1, "gpt-4o", "table", "gpt-4o")) is None
        True
        """
        if result.source != "unknown_model":
            return None
        return self.add(result.model)

    def most_common(self, n: int | None = None) -> list[tuple[str, int]]:
        """Names by count, highest first (ties by name)."""
        ranked = sorted(self._counts.items(), key=lambda kv: (-kv[1], kv[0]))
        return ranked if n is None else ranked[:n]

    @property
    def total(self) -> int:
        """All counted spans."""
        return sum(self._counts.values())

    def __getitem__(self, model: str) -> int:
        return self._counts.get(model, 0)

    def __len__(self) -> int:
        return len(self._counts)

    def __iter__(self) -> Iterator[str]:
        return iter(self._counts)


# -- reading and validating table files ---------------------------------------


def _read(source: Any, where: str) -> dict[str, Any]:
    try:
        text = source.read_text(encoding="utf-8")
    except OSError as e:
        raise ValueError(f"{where}: cannot read price table: {e.strerror or e}") from e
    try:
        doc = json.loads(text)
    except json.JSONDecodeError as e:
        raise ValueError(f"{where}: not valid JSON: {e}") from e
    if not isinstance(doc, dict):
        raise ValueError(f"{where}: the top level must be a JSON object")
    return doc


def _parse(doc: Mapping[str, Any], where: str) -> tuple[str, list[ModelPrice]]:
    if not isinstance(doc, Mapping):
        raise ValueError(f"{where}: the top level must be a JSON object")
    unknown = sorted(set(doc) - _TABLE_FIELDS)
    if unknown:
        raise ValueError(f"{where}: unknown top-level key(s) {', '.join(map(repr, unknown))}")
    version = doc.get("version")
    try:
        date.fromisoformat(version)  # type: ignore[arg-type]
    except (TypeError, ValueError):
        raise ValueError(f"{where}: 'version' must be a date YYYY-MM-DD, got {version!r}") from None
    # A table in another currency or per-thousand prices would be off by a
    # factor without any other symptom, so both are spelled out and checked.
    if doc.get("currency") != CURRENCY:
        raise ValueError(f"{where}: 'currency' must be {CURRENCY!r}, got {doc.get('currency')!r}")
    if doc.get("unit") != UNIT:
        raise ValueError(f"{where}: 'unit' must be {UNIT!r}, got {doc.get('unit')!r}")
    models = doc.get("models")
    if not isinstance(models, list):
        raise ValueError(f"{where}: 'models' must be a list")
    entries: list[ModelPrice] = []
    seen: dict[str, int] = {}
    for i, raw in enumerate(models):
        entry = _parse_entry(raw, f"{where}: models[{i}]")
        if entry.id in seen:
            raise ValueError(
                f"{where}: models[{i}] (id {entry.id!r}): duplicate id, first used by models[{seen[entry.id]}]"
            )
        seen[entry.id] = i
        entries.append(entry)
    return version, entries  # type: ignore[return-value]


def _parse_entry(raw: Any, at: str) -> ModelPrice:
    if not isinstance(raw, Mapping):
        raise ValueError(f"{at}: must be a JSON object")
    entry_id = raw.get("id")
    if not isinstance(entry_id, str) or not entry_id:
        raise ValueError(f"{at}: 'id' must be a non-empty string")
    at = f"{at} (id {entry_id!r})"
    # An unknown key is most likely a misspelt price ("cached_read"), which
    # would otherwise fall back to the input price without a word.
    unknown = sorted(set(raw) - _ENTRY_FIELDS)
    if unknown:
        raise ValueError(f"{at}: unknown key(s) {', '.join(map(repr, unknown))}")
    for key in ("provider", "match"):
        if not isinstance(raw.get(key), str) or not raw[key]:
            raise ValueError(f"{at}: {key!r} must be a non-empty string")
    try:
        compiled = re.compile(raw["match"], re.IGNORECASE)
    except re.error as e:
        raise ValueError(f"{at}: 'match' is not a valid regular expression: {e}") from None
    prices: dict[str, float | None] = {}
    for key in _PRICE_FIELDS:
        value = raw.get(key)
        if value is None:
            if key in ("input", "output"):
                raise ValueError(f"{at}: {key!r} price is missing")
            prices[key] = None
            continue
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value) or value < 0:
            raise ValueError(f"{at}: {key!r} must be a number >= 0, got {value!r}")
        prices[key] = float(value)
    source = raw.get("source", "")
    if not isinstance(source, str):
        raise ValueError(f"{at}: 'source' must be a string")
    examples = raw.get("examples", [])
    if not isinstance(examples, list) or not all(isinstance(x, str) for x in examples):
        raise ValueError(f"{at}: 'examples' must be a list of strings")
    # Examples document the names an entry is meant for; checking them here
    # catches a regex edit that silently stops matching them.
    for example in examples:
        if not compiled.fullmatch(example):
            raise ValueError(f"{at}: example {example!r} does not match {raw['match']!r}")
    return ModelPrice(
        id=entry_id,
        provider=raw["provider"],
        pattern=raw["match"],
        input=prices["input"],  # type: ignore[arg-type]
        output=prices["output"],  # type: ignore[arg-type]
        cache_read=prices["cache_read"],
        cache_write=prices["cache_write"],
        source=source,
    )
