"""Price table and span cost: hand-computed expectations, matching, overrides, bad files."""
from __future__ import annotations

import copy
import json
import math
import re
from datetime import date
from importlib import resources
from pathlib import Path
from typing import Any, Callable

import pytest

from processors.pricing import CostResult, ModelPrice, PriceTable, UnknownModels
from schemas.samples import sample

SHIPPED: dict[str, Any] = json.loads(
    resources.files("processors").joinpath("data/prices.json").read_text(encoding="utf-8")
)


@pytest.fixture(scope="module")
def table() -> PriceTable:
    return PriceTable.load()


@pytest.fixture
def prices_file_factory(tmp_path: Path) -> Callable[..., Path]:
    """Write a table document to a fresh file and return its path."""
    counter = iter(range(1000))

    def make(models: list[dict[str, Any]], /, **top: Any) -> Path:
        doc = {"version": "2026-11-20", "currency": "USD", "unit": "per_million_tokens", "models": models}
        doc.update(top)
        path = tmp_path / f"prices-{next(counter)}.json"
        path.write_text(json.dumps(doc), encoding="utf-8")
        return path

    return make


def span(**fields: Any) -> dict[str, Any]:
    base: dict[str, Any] = {
        "provider": None,
        "operation": "chat",
        "request_model": None,
        "response_model": None,
        "input_tokens": None,
        "output_tokens": None,
        "cache_read_input_tokens": None,
        "cache_creation_input_tokens": None,
        "cost_usd": None,
    }
    base.update(fields)
    return base


# -- hand-computed costs ------------------------------------------------------
# Each expectation is written out as tokens x USD-per-million, so a wrong
# price in the table or a wrong formula shows up as a number, not a ratio.

COST_CASES = [
    pytest.param(
        span(provider="openai", response_model="gpt-4o-2024-08-06", input_tokens=2_000, output_tokens=300),
        "gpt-4o",
        (2_000 * 2.50 + 300 * 10.00) / 1e6,
        id="gpt-4o-no-cache",
    ),
    pytest.param(
        # OpenAI: prompt_tokens includes the 1,024 cached tokens.
        span(provider="openai", response_model="gpt-4o-mini-2024-07-18", input_tokens=1_500,
             output_tokens=250, cache_read_input_tokens=1_024),
        "gpt-4o-mini",
        (476 * 0.15 + 1_024 * 0.075 + 250 * 0.60) / 1e6,
        id="gpt-4o-mini-cache-read",
    ),
    pytest.param(
        span(provider="openai", response_model="gpt-4.1-nano-2025-04-14", input_tokens=10_000,
             output_tokens=1_000, cache_read_input_tokens=8_000),
        "gpt-4.1-nano",
        (2_000 * 0.10 + 8_000 * 0.025 + 1_000 * 0.40) / 1e6,
        id="gpt-4.1-nano-cache-read",
    ),
    pytest.param(
        span(provider="openai", response_model="o4-mini-2025-04-16", input_tokens=3_000, output_tokens=5_000),
        "o4-mini",
        (3_000 * 1.10 + 5_000 * 4.40) / 1e6,
        id="o4-mini-reasoning",
    ),
    pytest.param(
        span(provider="anthropic", request_model="claude-sonnet-4-0", response_model="claude-sonnet-4-20250514",
             input_tokens=12_000, output_tokens=800, cache_read_input_tokens=9_000,
             cache_creation_input_tokens=2_000),
        "claude-sonnet-4",
        (1_000 * 3.00 + 9_000 * 0.30 + 2_000 * 3.75 + 800 * 15.00) / 1e6,
        id="claude-sonnet-4-read-and-write",
    ),
    pytest.param(
        span(provider="aws.bedrock", request_model="anthropic.claude-3-5-haiku-20241022-v1:0",
             input_tokens=4_000, output_tokens=400, cache_creation_input_tokens=3_000),
        "claude-3-5-haiku",
        (1_000 * 0.80 + 3_000 * 1.00 + 400 * 4.00) / 1e6,
        id="claude-3-5-haiku-bedrock-cache-write",
    ),
    pytest.param(
        span(provider="anthropic", response_model="claude-opus-4-1-20250805", input_tokens=1_000, output_tokens=1_000),
        "claude-opus-4-1",
        (1_000 * 15.00 + 1_000 * 75.00) / 1e6,
        id="claude-opus-4.1",
    ),
    pytest.param(
        span(provider="gcp.gemini", response_model="gemini-2.5-pro", input_tokens=150_000, output_tokens=2_000,
             cache_read_input_tokens=100_000),
        "gemini-2.5-pro",
        (50_000 * 1.25 + 100_000 * 0.125 + 2_000 * 10.00) / 1e6,
        id="gemini-2.5-pro-cache",
    ),
    pytest.param(
        span(provider="gcp.gemini", response_model="gemini-2.0-flash-001", input_tokens=8_000, output_tokens=600),
        "gemini-2.0-flash",
        (8_000 * 0.10 + 600 * 0.40) / 1e6,
        id="gemini-2.0-flash",
    ),
    pytest.param(
        span(provider="openai", operation="embeddings", request_model="text-embedding-3-small", input_tokens=50_000),
        "text-embedding-3-small",
        50_000 * 0.02 / 1e6,
        id="embeddings-input-only",
    ),
    pytest.param(
        span(provider="mistral_ai", response_model="mistral-large-2411", input_tokens=5_000, output_tokens=1_000),
        "mistral-large-2",
        (5_000 * 2.00 + 1_000 * 6.00) / 1e6,
        id="mistral-large",
    ),
    pytest.param(
        span(provider="together_ai", response_model="meta-llama/Meta-Llama-3.1-70B-Instruct-Turbo",
             input_tokens=2_000, output_tokens=500),
        "llama-3.1-70b-instruct-turbo",
        2_500 * 0.88 / 1e6,
        id="llama-3.1-70b-together",
    ),
    pytest.param(
        # No cache price in the table: cached tokens are billed as input.
        span(provider="openai", response_model="gpt-3.5-turbo-0125", input_tokens=1_000, output_tokens=100,
             cache_read_input_tokens=400),
        "gpt-3.5-turbo",
        (1_000 * 0.50 + 100 * 1.50) / 1e6,
        id="no-cache-price-defaults-to-input",
    ),
]


@pytest.mark.parametrize(("record", "model_id", "expected"), COST_CASES)
def test_cost_from_table_matches_hand_computation(table: PriceTable, record: dict, model_id: str, expected: float) -> None:
    result = table.cost_of(record)
    assert result.source == "table"
    assert result.model_id == model_id
    assert result.cost_usd == pytest.approx(expected, rel=1e-12)


def test_cached_tokens_are_not_charged_twice(table: PriceTable) -> None:
    cold = table.cost_of(span(response_model="gpt-4o", input_tokens=10_000, output_tokens=0))
    warm = table.cost_of(span(response_model="gpt-4o", input_tokens=10_000, output_tokens=0,
                              cache_read_input_tokens=10_000))
    assert cold.cost_usd == pytest.approx(10_000 * 2.50 / 1e6)
    assert warm.cost_usd == pytest.approx(10_000 * 1.25 / 1e6)


def test_uncached_input_never_below_zero(table: PriceTable) -> None:
    # A producer reporting input without cached tokens (Anthropic's native
    # usage) breaks the contract; the cost must still not go negative.
    result = table.cost_of(span(response_model="claude-3-5-haiku-20241022", input_tokens=10,
                                output_tokens=0, cache_read_input_tokens=5_000))
    assert result.cost_usd == pytest.approx(5_000 * 0.08 / 1e6)


def test_zero_tokens_cost_zero_not_no_usage(table: PriceTable) -> None:
    result = table.cost_of(span(response_model="gpt-4o", input_tokens=0, output_tokens=0))
    assert result == CostResult(0.0, "gpt-4o", "table", "gpt-4o")


def test_sample_span_recomputed(table: PriceTable) -> None:
    record = sample("span")
    assert table.cost_of(record).source == "span"
    record["cost_usd"] = None
    # 812 input of which 512 cached, 164 output, gpt-4o-mini.
    assert table.cost_of(record).cost_usd == pytest.approx((300 * 0.15 + 512 * 0.075 + 164 * 0.60) / 1e6)


# -- which model, which source ------------------------------------------------


def test_span_cost_is_kept(table: PriceTable) -> None:
    record = span(provider="openai", response_model="gpt-4o", input_tokens=1_000, output_tokens=10, cost_usd=0.5)
    assert table.cost_of(record) == CostResult(0.5, "gpt-4o", "span", "gpt-4o")


def test_span_cost_of_zero_is_kept(table: PriceTable) -> None:
    # 0.0 is a cost (a free tier, a cache-only call), not "missing".
    record = span(response_model="gpt-4o", input_tokens=1_000, cost_usd=0.0)
    assert table.cost_of(record).cost_usd == 0.0
    assert table.cost_of(record).source == "span"


def test_span_cost_is_kept_for_unknown_models(table: PriceTable) -> None:
    result = table.cost_of(span(request_model="in-house-llm", input_tokens=9, cost_usd=0.01))
    assert result == CostResult(0.01, None, "span", "in-house-llm")


def test_unknown_model_is_reported_not_guessed(table: PriceTable) -> None:
    result = table.cost_of(span(provider="openai", response_model="gpt-4o-realtime-preview-2024-12-17",
                                input_tokens=100, output_tokens=100))
    assert result == CostResult(None, None, "unknown_model", "gpt-4o-realtime-preview-2024-12-17")


def test_tokens_without_any_model_are_unknown(table: PriceTable) -> None:
    assert table.cost_of(span(input_tokens=100)) == CostResult(None, None, "unknown_model", None)


@pytest.mark.parametrize("operation", ["execute_tool", "retrieval", "invoke_agent"])
def test_spans_without_token_counts_have_no_usage(table: PriceTable, operation: str) -> None:
    result = table.cost_of(span(operation=operation))
    assert result.cost_usd is None
    assert result.source == "no_usage"


def test_missing_fields_are_treated_as_absent(table: PriceTable) -> None:
    assert table.cost_of({}).source == "no_usage"
    assert table.cost_of({"request_model": "gpt-4o", "output_tokens": 10}).cost_usd == pytest.approx(10 * 10.0 / 1e6)


def test_response_model_is_preferred_over_request_model(table: PriceTable) -> None:
    record = span(request_model="gpt-4o", response_model="gpt-4o-mini-2024-07-18", input_tokens=1_000_000)
    assert table.cost_of(record).model_id == "gpt-4o-mini"
    assert table.cost_of(record).cost_usd == pytest.approx(0.15)


def test_request_model_is_used_when_response_names_none(table: PriceTable) -> None:
    record = span(request_model="claude-3-haiku-20240307", response_model=None, input_tokens=1_000_000)
    assert table.cost_of(record).cost_usd == pytest.approx(0.25)


def test_unknown_response_model_is_not_priced_as_the_requested_one(table: PriceTable) -> None:
    # The response names what really ran; pricing it as the request would be a guess.
    record = span(request_model="gpt-4o", response_model="gpt-4o-some-new-variant", input_tokens=1_000)
    assert table.cost_of(record) == CostResult(None, None, "unknown_model", "gpt-4o-some-new-variant")


# -- name matching -------------------------------------------------------------


@pytest.mark.parametrize(
    ("name", "model_id"),
    [
        ("gpt-4o", "gpt-4o"),
        ("gpt-4o-2024-08-06", "gpt-4o"),
        ("gpt-4o-2024-11-20", "gpt-4o"),
        ("openai/gpt-4o", "gpt-4o"),
        ("GPT-4o", "gpt-4o"),
        ("gpt-4o-2024-05-13", "gpt-4o-2024-05-13"),
        ("gpt-4o-mini", "gpt-4o-mini"),
        ("gpt-4o-mini-2024-07-18", "gpt-4o-mini"),
        ("openai/gpt-4o-mini", "gpt-4o-mini"),
        ("gpt-4.1-2025-04-14", "gpt-4.1"),
        ("gpt-4.1-mini-2025-04-14", "gpt-4.1-mini"),
        ("gpt-4.1-nano", "gpt-4.1-nano"),
        ("o1-2024-12-17", "o1"),
        ("o1-mini", "o1-mini"),
        ("o3-2025-04-16", "o3"),
        ("o3-mini-2025-01-31", "o3-mini"),
        ("o4-mini-2025-04-16", "o4-mini"),
        ("gpt-3.5-turbo", "gpt-3.5-turbo"),
        ("text-embedding-3-large", "text-embedding-3-large"),
        ("claude-sonnet-4-20250514", "claude-sonnet-4"),
        ("claude-sonnet-4-5-20250929", "claude-sonnet-4-5"),
        ("claude-opus-4-20250514", "claude-opus-4"),
        ("claude-opus-4-1-20250805", "claude-opus-4-1"),
        ("claude-opus-4-5-20251101", "claude-opus-4-5"),
        ("claude-3-7-sonnet-latest", "claude-3-7-sonnet"),
        ("anthropic.claude-3-5-haiku-20241022-v1:0", "claude-3-5-haiku"),
        ("us.anthropic.claude-sonnet-4-20250514-v1:0", "claude-sonnet-4"),
        ("anthropic.claude-3-5-sonnet-20241022-v2:0", "claude-3-5-sonnet"),
        ("claude-3-5-sonnet-v2@20241022", "claude-3-5-sonnet"),
        ("claude-3-5-haiku@20241022", "claude-3-5-haiku"),
        ("anthropic/claude-3.5-haiku", "claude-3-5-haiku"),
        ("claude-3-haiku-20240307", "claude-3-haiku"),
        ("gemini-2.5-pro", "gemini-2.5-pro"),
        ("models/gemini-2.5-flash", "gemini-2.5-flash"),
        ("gemini-2.5-flash-lite", "gemini-2.5-flash-lite"),
        ("gemini-2.0-flash-001", "gemini-2.0-flash"),
        ("gemini-1.5-flash-002", "gemini-1.5-flash"),
        ("mistral-small-2503", "mistral-small-3"),
        ("meta-llama/Meta-Llama-3.1-8B-Instruct-Turbo", "llama-3.1-8b-instruct-turbo"),
    ],
)
def test_names_map_to_the_right_entry(table: PriceTable, name: str, model_id: str) -> None:
    price = table.price_for(name)
    assert price is not None, name
    assert price.id == model_id


@pytest.mark.parametrize(
    "name",
    [
        "gpt-4o-mini",
        "gpt-4o-mini-2024-07-18",
        "openai/gpt-4o-mini",
        "GPT-4O-MINI",
    ],
)
def test_gpt_4o_mini_is_never_priced_as_gpt_4o(table: PriceTable, name: str) -> None:
    for provider in (None, "openai", "azure.ai.openai"):
        assert table.price_for(name, provider).id == "gpt-4o-mini"


@pytest.mark.parametrize(
    "name",
    [
        "gpt-4o-audio-preview",          # other modality, other price
        "gpt-4o-realtime-preview",
        "gpt-4o-mini-tts",
        "chatgpt-4o-latest",
        "ft:gpt-4o-mini-2024-07-18:acme::abc123",  # fine-tunes cost more
        "o1-pro",
        "o3-pro",
        "claude-opus-4-6",               # a newer model must not inherit opus-4's price
        "gemini-2.5-flash-preview-05-20",
        "gemini-1.5-flash-8b",
        "mistral-large-latest",          # alias that moves between differently priced models
        "meta.llama3-1-70b-instruct-v1:0",  # another host's Llama price
        "gpt-3.5-turbo-1106",
        "",
    ],
)
def test_near_miss_names_are_unknown(table: PriceTable, name: str) -> None:
    assert table.price_for(name) is None


def _shipped_examples() -> list[tuple[str, str]]:
    return [(entry["id"], example) for entry in SHIPPED["models"] for example in entry.get("examples", [])]


@pytest.mark.parametrize(("model_id", "example"), _shipped_examples())
def test_shipped_entries_are_unambiguous(model_id: str, example: str) -> None:
    # Exactly one shipped regex matches each documented name, so the order of
    # the shipped table never decides a price.
    matching = [
        entry["id"] for entry in SHIPPED["models"] if re.fullmatch(entry["match"], example, re.IGNORECASE)
    ]
    assert matching == [model_id]


def test_provider_breaks_ties_between_matching_entries(prices_file_factory: Callable[..., Path]) -> None:
    overrides = prices_file_factory([
        {"id": "gpt-4o-azure", "provider": "azure.ai.openai", "match": "gpt-4o", "input": 2.75, "output": 11.0,
         "source": "our Azure agreement"},
    ])
    table = PriceTable.load(overrides=overrides)
    assert table.price_for("gpt-4o", "azure.ai.openai").id == "gpt-4o-azure"
    assert table.price_for("gpt-4o", "openai").id == "gpt-4o"
    assert table.price_for("gpt-4o").id == "gpt-4o-azure"  # no provider: overrides first


def test_lookups_are_cached(table: PriceTable) -> None:
    fresh = PriceTable.load(cache_size=2)
    for _ in range(3):
        fresh.price_for("gpt-4o-2024-08-06", "openai")
    info = fresh.cache_info()
    assert (info.hits, info.misses, info.maxsize) == (2, 1, 2)


# -- overrides -----------------------------------------------------------------


def test_override_replaces_shipped_entry_by_id(prices_file_factory: Callable[..., Path]) -> None:
    overrides = prices_file_factory([
        {"id": "gpt-4o", "provider": "openai", "match": "(?:openai/)?gpt-4o(?:-\\d{4}-\\d{2}-\\d{2})?",
         "input": 2.0, "output": 8.0, "source": "negotiated"},
    ])
    table = PriceTable.load(overrides=overrides)
    assert [e.id for e in table.entries].count("gpt-4o") == 1
    result = table.cost_of(span(response_model="gpt-4o-2024-08-06", input_tokens=1_000_000, output_tokens=1_000_000))
    assert result.cost_usd == pytest.approx(10.0)
    assert table.override_version == "2026-11-20"
    assert table.version == SHIPPED["version"]


def test_override_entries_are_tried_first(prices_file_factory: Callable[..., Path]) -> None:
    overrides = prices_file_factory([
        {"id": "all-claude-flat", "provider": "anthropic", "match": "claude-.*", "input": 1.0, "output": 1.0},
    ])
    table = PriceTable.load(overrides=overrides)
    assert table.price_for("claude-sonnet-4-20250514").id == "all-claude-flat"
    assert table.price_for("gpt-4o").id == "gpt-4o"  # shipped entries still apply


def test_override_adds_an_in_house_model(prices_file_factory: Callable[..., Path]) -> None:
    overrides = prices_file_factory([
        {"id": "in-house", "provider": "acme", "match": "acme-llm-v\\d+", "input": 0.5, "output": 1.0,
         "cache_read": 0.05},
    ])
    table = PriceTable.load(overrides=overrides)
    result = table.cost_of(span(request_model="acme-llm-v3", input_tokens=2_000, output_tokens=1_000,
                                cache_read_input_tokens=1_000))
    assert result.cost_usd == pytest.approx((1_000 * 0.5 + 1_000 * 0.05 + 1_000 * 1.0) / 1e6)


def test_table_path_replaces_the_shipped_table(prices_file_factory: Callable[..., Path]) -> None:
    path = prices_file_factory([{"id": "x", "provider": "acme", "match": "x", "input": 1, "output": 1}])
    table = PriceTable.load(path)
    assert len(table) == 1
    assert table.price_for("gpt-4o") is None


# -- bad files -----------------------------------------------------------------

GOOD_ENTRY = {"id": "acme-1", "provider": "acme", "match": "acme-1(?:-\\d{8})?", "input": 1.0, "output": 2.0,
              "source": "Acme pricing, 2026-11"}


def _entry(**changes: Any) -> dict[str, Any]:
    entry = copy.deepcopy(GOOD_ENTRY)
    for key, value in changes.items():
        if value is _DROP:
            entry.pop(key)
        else:
            entry[key] = value
    return entry


_DROP = object()


@pytest.mark.parametrize(
    ("models", "message"),
    [
        ([_entry(input=_DROP)], r"models\[0\] \(id 'acme-1'\): 'input' price is missing"),
        ([_entry(output=None)], r"models\[0\] \(id 'acme-1'\): 'output' price is missing"),
        ([_entry(output=-0.5)], r"models\[0\] \(id 'acme-1'\): 'output' must be a number >= 0, got -0.5"),
        ([_entry(cache_read=-1)], r"'cache_read' must be a number >= 0"),
        ([_entry(input="1.0")], r"'input' must be a number >= 0, got '1.0'"),
        ([_entry(input=True)], r"'input' must be a number >= 0, got True"),
        ([_entry(match="acme-(1")], r"models\[0\] \(id 'acme-1'\): 'match' is not a valid regular expression"),
        ([_entry(), _entry()], r"models\[1\] \(id 'acme-1'\): duplicate id, first used by models\[0\]"),
        ([_entry(cached_read=0.1)], r"unknown key\(s\) 'cached_read'"),
        ([_entry(id="")], r"models\[0\]: 'id' must be a non-empty string"),
        ([_entry(match=_DROP)], r"'match' must be a non-empty string"),
        ([_entry(examples=["acme-2"])], r"example 'acme-2' does not match"),
        (["acme-1"], r"models\[0\]: must be a JSON object"),
    ],
)
def test_bad_entries_name_the_file_and_the_entry(
    prices_file_factory: Callable[..., Path], models: list, message: str
) -> None:
    path = prices_file_factory(models)
    with pytest.raises(ValueError, match=re.escape(str(path)) + ".*" + message):
        PriceTable.load(overrides=path)


@pytest.mark.parametrize(
    ("top", "message"),
    [
        ({"version": None}, r"'version' must be a date YYYY-MM-DD, got None"),
        ({"version": "November"}, r"'version' must be a date"),
        ({"currency": "EUR"}, r"'currency' must be 'USD'"),
        ({"unit": "per_thousand_tokens"}, r"'unit' must be 'per_million_tokens'"),
        ({"models": {}}, r"'models' must be a list"),
        ({"prices": []}, r"unknown top-level key\(s\) 'prices'"),
    ],
)
def test_bad_tables_name_the_file(prices_file_factory: Callable[..., Path], top: dict, message: str) -> None:
    path = prices_file_factory([GOOD_ENTRY], **top)
    with pytest.raises(ValueError, match=re.escape(str(path)) + ": " + message):
        PriceTable.load(path)


def test_unreadable_and_malformed_files(tmp_path: Path) -> None:
    missing = tmp_path / "nope.json"
    with pytest.raises(ValueError, match=re.escape(str(missing)) + ": cannot read price table"):
        PriceTable.load(overrides=missing)
    broken = tmp_path / "broken.json"
    broken.write_text('{"version": "2026-11-01",', encoding="utf-8")
    with pytest.raises(ValueError, match=re.escape(str(broken)) + ": not valid JSON"):
        PriceTable.load(overrides=broken)
    listed = tmp_path / "list.json"
    listed.write_text("[]", encoding="utf-8")
    with pytest.raises(ValueError, match="top level must be a JSON object"):
        PriceTable.load(overrides=listed)


def test_duplicate_ids_in_a_constructed_table_are_refused() -> None:
    price = ModelPrice("a", "acme", "a", input=1.0, output=1.0)
    with pytest.raises(ValueError, match="duplicate price entry id 'a'"):
        PriceTable([price, price], "2026-11-01")


# -- the shipped table ---------------------------------------------------------


def test_shipped_table_has_a_version(table: PriceTable) -> None:
    assert date.fromisoformat(SHIPPED["version"])
    assert table.version == SHIPPED["version"]
    assert (SHIPPED["currency"], SHIPPED["unit"]) == ("USD", "per_million_tokens")


@pytest.mark.parametrize("entry", SHIPPED["models"], ids=lambda e: e["id"])
def test_every_shipped_entry_is_complete(entry: dict[str, Any]) -> None:
    for key in ("input", "output", "cache_read", "cache_write"):
        value = entry.get(key, 0.0)
        assert isinstance(value, (int, float)) and math.isfinite(value) and value >= 0, key
    # Output is priced except for embedding models, which have no output tokens.
    assert entry["output"] > 0 or entry["id"].startswith("text-embedding")
    assert entry["input"] > 0
    assert entry["source"].strip()
    assert re.search(r"\d{4}-\d{2}", entry["source"]), "source should say when the price was read"
    assert entry["examples"], "examples document (and test) the names an entry is for"


def test_anthropic_cache_prices_follow_the_published_multipliers() -> None:
    for entry in SHIPPED["models"]:
        # Claude 3 Haiku is listed at 0.30 / 0.03, rounded from 1.25x / 0.1x.
        if entry["provider"] != "anthropic" or entry["id"] == "claude-3-haiku":
            continue
        assert entry["cache_read"] == pytest.approx(entry["input"] * 0.1), entry["id"]
        assert entry["cache_write"] == pytest.approx(entry["input"] * 1.25), entry["id"]


@pytest.mark.parametrize(
    "model_id",
    [
        "gpt-4o", "gpt-4o-mini", "gpt-4.1", "gpt-4.1-mini", "gpt-4.1-nano", "o3", "o4-mini", "o1",
        "gpt-3.5-turbo", "text-embedding-3-small", "text-embedding-3-large",
        "claude-opus-4", "claude-opus-4-1", "claude-sonnet-4", "claude-3-7-sonnet", "claude-3-5-sonnet",
        "claude-3-5-haiku", "claude-3-haiku",
        "gemini-2.5-pro", "gemini-2.5-flash", "gemini-2.0-flash", "gemini-1.5-flash",
        "mistral-large-2", "mistral-small-3", "llama-3.1-70b-instruct-turbo", "llama-3.1-8b-instruct-turbo",
    ],
)
def test_required_models_are_shipped(table: PriceTable, model_id: str) -> None:
    assert model_id in {e.id for e in table.entries}


# -- unknown model counting ----------------------------------------------------


def test_unknown_models_are_counted(table: PriceTable) -> None:
    unknown = UnknownModels()
    records = [
        span(request_model="in-house-llm", input_tokens=10),
        span(request_model="in-house-llm", input_tokens=10),
        span(response_model="gpt-4o", input_tokens=10),
        span(operation="execute_tool"),
        span(input_tokens=10),
    ]
    for record in records:
        unknown.observe(table.cost_of(record))
    assert unknown["in-house-llm"] == 2
    assert unknown[UnknownModels.NO_MODEL] == 1
    assert unknown["gpt-4o"] == 0
    assert unknown.total == 3


def test_unknown_model_names_are_bounded() -> None:
    unknown = UnknownModels(max_names=3)
    for i in range(10):
        unknown.add(f"model-{i}")
    assert len(unknown) == 4
    assert unknown[UnknownModels.OTHER] == 7
    assert unknown.add("x" * 1_000) == UnknownModels.OTHER
    fresh = UnknownModels()
    assert fresh.add("y" * 1_000) == "y" * UnknownModels.MAX_NAME_LENGTH
