"""Synthetic LLM-application traffic: agent traces, user feedback, poison messages.

:class:`TrafficModel` is a pure, seeded model of four LLM applications
(``DEFAULT_PROJECTS``). It yields span dicts that fit the ``span`` schema and
feedback dicts that fit the ``feedback`` schema; it does no I/O (producing to
Kafka is :func:`processors.generate_cli.produce_traffic`). Everything random
comes from ``random.Random`` instances seeded by ``seed``:

* the *content* (projects, users, shapes, tokens, latencies, errors, text)
  depends on ``seed`` only, and times are offsets from ``start``;
* *identifiers* (trace, span, session, response ids) depend on ``seed`` and
  ``start``, so re-running a seed later gives the same traffic under fresh
  ids instead of colliding with the rows of the first run.

``docs/generator.md`` describes the traffic; the numbers below say why they
are what they are.
"""

from __future__ import annotations

import json
import math
import random
from bisect import bisect
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from functools import cache
from pathlib import Path
from typing import Any

from processors.experiments.assignment import bucket_hash

__all__ = [
    "DEFAULT_PROJECTS",
    "DEFAULT_START",
    "MALFORMED_KINDS",
    "MODELS",
    "Incident",
    "ModelSpec",
    "ProjectSpec",
    "TrafficModel",
    "Variant",
]

_EPOCH = datetime(1970, 1, 1, tzinfo=timezone.utc)
_US = 1_000_000
_MS = 1_000
#: A fixed start for reproducible examples and tests.
DEFAULT_START = datetime(2025, 6, 1, 12, 0, 0, tzinfo=timezone.utc)

# Real agent traces in LangGraph/OpenAI-Agents deployments rarely exceed a few
# dozen spans; frameworks cap the loop (recursion_limit, max_turns) for cost.
_MAX_SPANS = 50
# Share of calls that hit a slow path (queueing at the provider, cold cache,
# retries inside the SDK): this is what makes p99 several times p50.
_TAIL_P = 0.025
# OpenAI caches prompt prefixes from 1024 tokens on, in 128-token steps.
_CACHE_MIN = 1024
_CACHE_STEP = 128


# --------------------------------------------------------------------------
# Models: names the price table prices, providers as OTel gen_ai.provider.name
# --------------------------------------------------------------------------


@dataclass(frozen=True)
class ModelSpec:
    """One model as the generator uses it.

    ``price_id`` is the entry of ``processors/data/prices.json`` that prices
    ``response_model``; ``provider`` equals that entry's provider (OTel
    ``gen_ai.provider.name``). ``cache`` is how the provider caches prompts:
    ``"auto"`` (OpenAI, Gemini implicit caching: prefix reads only),
    ``"explicit"`` (Anthropic ``cache_control``: writes, then reads) or None.

    Examples
    --------
    >>> MODELS["gemini-2.5-flash"].operation
    'generate_content'
    >>> MODELS["claude-haiku-4-5"].response_model
    'claude-haiku-4-5-20251001'
    """

    request_model: str
    response_model: str
    provider: str
    price_id: str
    ttft_ms: float  # median time to first token for a ~1k-token prompt
    tokens_per_s: float  # median output speed
    cache: str | None = "auto"
    temperature: bool = True  # reasoning models reject a temperature
    server: str = ""

    @property
    def operation(self) -> str:
        """OTel ``gen_ai.operation.name`` of a call to this model."""
        if self.provider == "gcp.gemini":
            return "generate_content"
        return "embeddings" if "embedding" in self.request_model else "chat"


def _models(*specs: ModelSpec) -> dict[str, ModelSpec]:
    return {m.request_model: m for m in specs}


_OPENAI, _ANTHROPIC, _GEMINI = "api.openai.com", "api.anthropic.com", "generativelanguage.googleapis.com"
# Speeds and first-token times: medians of public benchmarks (Artificial
# Analysis, mid-2025), rounded. Reasoning models (gpt-5*) think before the
# first token, hence the long ttft.
MODELS: dict[str, ModelSpec] = _models(
    ModelSpec("gpt-4o-mini", "gpt-4o-mini-2024-07-18", "openai", "gpt-4o-mini", 380, 75, server=_OPENAI),
    ModelSpec("gpt-4o", "gpt-4o-2024-08-06", "openai", "gpt-4o", 450, 85, server=_OPENAI),
    ModelSpec("gpt-4.1", "gpt-4.1-2025-04-14", "openai", "gpt-4.1", 500, 70, server=_OPENAI),
    ModelSpec("gpt-4.1-mini", "gpt-4.1-mini-2025-04-14", "openai", "gpt-4.1-mini", 420, 80, server=_OPENAI),
    ModelSpec("gpt-4.1-nano", "gpt-4.1-nano-2025-04-14", "openai", "gpt-4.1-nano", 300, 140, server=_OPENAI),
    ModelSpec("gpt-5", "gpt-5-2025-08-07", "openai", "gpt-5", 2600, 60, temperature=False, server=_OPENAI),
    ModelSpec("gpt-5-mini", "gpt-5-mini-2025-08-07", "openai", "gpt-5-mini", 1500, 80, temperature=False,
              server=_OPENAI),
    ModelSpec("claude-sonnet-4-5", "claude-sonnet-4-5-20250929", "anthropic", "claude-sonnet-4-5", 1100, 65,
              cache="explicit", server=_ANTHROPIC),
    ModelSpec("claude-haiku-4-5", "claude-haiku-4-5-20251001", "anthropic", "claude-haiku-4-5", 550, 110,
              cache="explicit", server=_ANTHROPIC),
    ModelSpec("claude-3-5-haiku-latest", "claude-3-5-haiku-20241022", "anthropic", "claude-3-5-haiku", 650, 60,
              cache="explicit", server=_ANTHROPIC),
    ModelSpec("gemini-2.5-flash", "gemini-2.5-flash", "gcp.gemini", "gemini-2.5-flash", 450, 190, server=_GEMINI),
    ModelSpec("gemini-2.5-pro", "gemini-2.5-pro", "gcp.gemini", "gemini-2.5-pro", 2200, 90, server=_GEMINI),
    ModelSpec("gemini-2.0-flash", "gemini-2.0-flash-001", "gcp.gemini", "gemini-2.0-flash", 380, 200,
              server=_GEMINI),
    ModelSpec("mistral-small-2501", "mistral-small-2501", "mistral_ai", "mistral-small-3", 300, 130, cache=None,
              server="api.mistral.ai"),
    ModelSpec("text-embedding-3-small", "text-embedding-3-small", "openai", "text-embedding-3-small", 0, 0,
              cache=None, server=_OPENAI),
)  # fmt: skip
_EMBEDDER = MODELS["text-embedding-3-small"]
_GUARD = MODELS["gpt-4.1-nano"]

# What each provider's API returns as finish reason, kept verbatim as the
# OTel instrumentations do: normalising them is the pipeline's job.
_FINISH = {  # provider -> (stop, length, tool call, filtered)
    "openai": ("stop", "length", "tool_calls", "content_filter"),
    "mistral_ai": ("stop", "length", "tool_calls", "content_filter"),
    "anthropic": ("end_turn", "max_tokens", "tool_use", "refusal"),
    "gcp.gemini": ("STOP", "MAX_TOKENS", "STOP", "SAFETY"),
}
_RESPONSE_ID = {"openai": "chatcmpl-", "mistral_ai": "cmpl-", "anthropic": "msg_01", "gcp.gemini": ""}


# --------------------------------------------------------------------------
# Projects
# --------------------------------------------------------------------------


@dataclass(frozen=True)
class Variant:
    """One arm of a project's prompt experiment.

    ``quality`` shifts the feedback (thumbs-up probability, rating) and
    ``output_factor`` the answer length, so experiment analysis has a real
    effect to find.

    Examples
    --------
    >>> Variant("concise", "support-v4", 0.5, quality=0.06, output_factor=0.7).prompt_version
    'support-v4'
    """

    name: str
    prompt_version: str
    weight: float
    quality: float = 0.0
    output_factor: float = 1.0
    system: str = "Answer helpfully and cite your sources."


@dataclass(frozen=True)
class ProjectSpec:
    """One LLM application: who uses it, which models, what its agent does.

    Token and latency numbers are medians of log-normal distributions.
    ``questions`` and ``answers`` are templates whose ``{slots}`` are filled
    per trace (the same order number in the question, tool call and answer).

    Examples
    --------
    >>> [p.name for p in DEFAULT_PROJECTS]
    ['support-bot', 'code-assistant', 'search-rag', 'sales-agent']
    """

    name: str
    service: str
    agent: str
    weight: float  # share of traffic
    users: int
    experiment: str
    variants: tuple[Variant, ...]
    models: tuple[tuple[str, float], ...]  # request model -> weight
    tools: tuple[str, ...]
    index: str | None  # vector index of retrieval spans
    vector_db: str
    system_tokens: int  # system prompt + tool schemas: the cacheable prefix
    input_tokens: float  # median prompt of the first call, system prompt included
    output_tokens: float  # median answer
    temperature: float
    max_tokens: int
    retrieval_p: float  # chance an agent step retrieves first
    tools_mean: float  # mean tool calls per agent step
    loop_p: float  # chance of one more agent step
    max_steps: int
    guard_p: float  # chance of an input-guardrail chain
    questions: tuple[str, ...]
    answers: tuple[str, ...]
    own_cost_p: float = 0.0  # share of LLM spans whose producer reports cost_usd


_SUPPORT_Q = (
    "Where is my order {order}? It was supposed to arrive {day}.",
    "I want to return the {product} I bought last week. How do I do that?",
    "I was charged twice for order {order}. Can you fix it?",
    "How do I change the shipping address on order {order}?",
    "My discount code {code} doesn't work at checkout.",
    "Can I upgrade to the {plan} plan without losing my data?",
    "The {product} arrived damaged. I'd like a replacement.",
    "How long does a refund take to reach my card?",
    "hi, order {order} still says processing?? its been {n} days",
    "Do you ship the {product} to {city}?",
)
_SUPPORT_A = (
    "Your order {order} is {ship_status} and should arrive by {date}. You'll get a tracking email when it ships.",
    "I've started a return for the {product}. Print the label from your Orders page and drop it off within 30 days.",
    "Sorry about the double charge! I've refunded {amount} to your original payment method; allow 5-10 business days.",
    "You can edit the address under Orders > {order} > Shipping as long as it hasn't shipped yet.",
    "That code expired on {date}. I've applied a {pct}% courtesy discount to your cart instead.",
    "Yes, upgrading to {plan} keeps all your data. Go to Settings > Billing > Change plan.",
    "I'm sorry it arrived damaged. A replacement {product} ships today and you don't need to return the old one.",
)
_CODE_Q = (
    "Why does {func}() in {file} raise {exc} when the input is empty?",
    "Write a unit test for {func} covering the error path.",
    "Refactor {file} to use async I/O.",
    "CI fails with {exc} on Python 3.12 since yesterday. What changed?",
    "Add type hints to {func} and fix the mypy errors in {file}.",
    "Explain what {func} does and where it's called from.",
    "Make {func} retry on timeouts with exponential backoff.",
    "The service can't reach the database at {ip}:5432, connection refused. Is it the pool config?",
)
_CODE_A = (
    "The bug is in {file}: {func} indexes the list before checking it is empty. I added a guard and a test.",
    "Here is a patch for {file} that fixes the edge case; all {n} tests pass.",
    "{func} is called from {file2}. It parses the config once and caches it; I added docstrings and type hints.",
    "Python 3.12 removed the implicit import in {file2}; importing it explicitly in {file} fixes {exc}.",
    "I wrapped {func} in a retry with exponential backoff (0.5 s base, 5 attempts, jitter) and added a test.",
)
_RAG_Q = (
    "What is the difference between {topic} and {topic2}?",
    "How do I configure {topic} for production?",
    "Summarize the release notes for {product} {version}.",
    "Is there a limit on {topic} per account?",
    "Show me an example of {topic} in Python.",
    "Does {product} support {topic} on the free plan?",
    "{topic} vs {topic2} for a small team?",
)
_RAG_A = (
    "{topic} and {topic2} solve different problems: the first batches work, the second streams it [1][2].",
    "For production, enable {topic} in the config file and set a retention of 7 days; see the deployment guide [1].",
    "{product} {version} adds {topic}, fixes {n} bugs and deprecates the v1 API [1].",
    "Yes: the default limit is {n} per account; contact sales to raise it [2].",
    "Here is a minimal example using the Python client; it reads the API key from the environment [1].",
)
_SALES_Q = (
    "Draft a follow-up email to {name} at {company} about the {plan} plan.",
    "What's our pipeline value for {company} this quarter?",
    "Find all open deals over {amount} in {region}.",
    "Prepare a quote for {n} seats of {plan} for {company}.",
    "Schedule a demo with {name} from {company} next {day}.",
    "Summarize my last call with {name} ({company}).",
)
_SALES_A = (
    "Here's a draft for {name}: thanks for your time on {day}; attached is the {plan} proposal we discussed.",
    "{company} has 3 open opportunities worth {amount} in total; the largest closes {date}.",
    "I found {n} open deals over {amount} in {region}; the top three are in the attached table.",
    "Quote ready: {n} seats of {plan} at list price, with a 12% annual discount. Want me to send it?",
    "Done: demo with {name} booked for {day} at 10:00, invite sent.",
)

DEFAULT_PROJECTS: tuple[ProjectSpec, ...] = (
    ProjectSpec(
        "support-bot", "support-api", "support-agent", weight=0.40, users=3000,
        experiment="support-prompt",
        variants=(
            Variant("control", "support-v3", 0.5, system="You are Acme's support assistant. Be friendly and helpful."),
            Variant("concise", "support-v4", 0.5, quality=0.06, output_factor=0.7,
                    system="You are Acme's support assistant. Answer in at most three sentences."),
        ),
        models=(("gpt-4o-mini", 0.55), ("claude-haiku-4-5", 0.3), ("gpt-4.1-mini", 0.15)),
        tools=("get_order", "lookup_customer", "refund_order", "create_ticket"),
        index="help-center", vector_db="pgvector", system_tokens=1300, input_tokens=1100, output_tokens=140,
        temperature=0.2, max_tokens=1024, retrieval_p=0.6, tools_mean=0.9, loop_p=0.3, max_steps=4, guard_p=0.3,
        questions=_SUPPORT_Q, answers=_SUPPORT_A,
    ),
    ProjectSpec(
        "code-assistant", "code-assist-api", "code-agent", weight=0.20, users=600,
        experiment="code-planner",
        variants=(
            Variant("control", "code-v11", 0.5, system="You are a senior engineer. Make minimal, tested changes."),
            Variant("plan-first", "code-v12", 0.5, quality=0.03, output_factor=1.2,
                    system="You are a senior engineer. Write a plan, then make minimal, tested changes."),
        ),
        models=(("claude-sonnet-4-5", 0.5), ("gpt-5", 0.2), ("gpt-4.1", 0.2), ("gemini-2.5-pro", 0.1)),
        tools=("read_file", "search_code", "run_tests", "apply_patch"),
        index="repo-index", vector_db="qdrant", system_tokens=2600, input_tokens=4200, output_tokens=320,
        temperature=0.0, max_tokens=4096, retrieval_p=0.3, tools_mean=1.6, loop_p=0.7, max_steps=9, guard_p=0.0,
        questions=_CODE_Q, answers=_CODE_A,
    ),
    ProjectSpec(
        "search-rag", "search-api", "rag-agent", weight=0.28, users=8000,
        experiment="rag-reranker",
        variants=(
            Variant("control", "rag-v7", 0.7, system="Answer from the provided documents only. Cite them as [n]."),
            Variant("rerank", "rag-v8", 0.3, quality=-0.04,
                    system="Answer from the reranked documents only. Cite them as [n]."),
        ),
        models=(("gemini-2.5-flash", 0.6), ("gemini-2.0-flash", 0.2), ("gpt-4.1-nano", 0.2)),
        tools=("search_web", "fetch_url"),
        index="docs-v2", vector_db="qdrant", system_tokens=700, input_tokens=2600, output_tokens=220,
        temperature=0.3, max_tokens=1024, retrieval_p=0.95, tools_mean=0.3, loop_p=0.15, max_steps=3, guard_p=0.1,
        questions=_RAG_Q, answers=_RAG_A,
    ),
    ProjectSpec(
        "sales-agent", "sales-copilot", "sales-agent", weight=0.12, users=250,
        experiment="sales-tone",
        variants=(
            Variant("control", "sales-v1", 0.5, system="You help account executives. Be precise about numbers."),
            Variant("warm", "sales-v2", 0.5, quality=0.02, output_factor=1.3,
                    system="You help account executives. Be warm, personal and precise about numbers."),
        ),
        models=(("gpt-4o", 0.5), ("claude-3-5-haiku-latest", 0.3), ("mistral-small-2501", 0.2)),
        tools=("crm_lookup", "run_sql", "get_pricing", "send_email", "schedule_meeting"),
        index=None, vector_db="", system_tokens=1100, input_tokens=1500, output_tokens=260,
        temperature=0.7, max_tokens=2048, retrieval_p=0.0, tools_mean=1.2, loop_p=0.35, max_steps=5, guard_p=0.0,
        questions=_SALES_Q, answers=_SALES_A, own_cost_p=0.3,
    ),
)  # fmt: skip


# --------------------------------------------------------------------------
# Tools: arguments, results, latency and how they fail
# --------------------------------------------------------------------------


@dataclass(frozen=True)
class _Tool:
    latency_ms: float
    sigma: float
    args: str
    result: str
    errors: tuple[tuple[str, str], ...]  # (error.type, message template)


_TOOLS: dict[str, _Tool] = {
    "get_order": _Tool(90, 0.6, '{{"order_id": "{order}"}}',
                       '{{"order_id": "{order}", "status": "{ship_status}", "eta": "{date}", "items": {n}}}',
                       (("OrderNotFoundError", "order {order} not found"),
                        ("httpx.ReadTimeout", "timed out reading from orders-api:8080"))),
    "lookup_customer": _Tool(60, 0.5, '{{"email": "{email}"}}',
                             '{{"customer_id": "C-{n5}", "name": "{name}", "email": "{email}", '
                             '"phone": "{phone}", "plan": "{plan}"}}',
                             (("KeyError", "'customer_id'"),)),
    "refund_order": _Tool(420, 0.5, '{{"order_id": "{order}", "amount": "{amount}"}}',
                          '{{"refund_id": "re_{n5}", "status": "pending"}}',
                          (("PaymentGatewayError", "402 Payment Required: card ending {last4} declined"),)),
    "create_ticket": _Tool(210, 0.4, '{{"subject": "Order {order}", "priority": "normal"}}',
                           '{{"ticket_id": "T-{n5}", "queue": "tier-2"}}',
                           (("httpx.HTTPStatusError", "Client error '409 Conflict' for url 'https://helpdesk/api'"),)),
    "read_file": _Tool(15, 0.7, '{{"path": "{file}"}}', '"def {func}(items):\\n    first = items[0]\\n    ..."',
                       (("FileNotFoundError", "[Errno 2] No such file or directory: '{file2}'"),)),
    "search_code": _Tool(140, 0.6, '{{"query": "{func}"}}',
                         '[{{"path": "{file}", "line": {n}}}, {{"path": "{file2}"}}]',
                         (("TimeoutError", "code search timed out after 10 s"),)),
    "run_tests": _Tool(7500, 0.9, '{{"cmd": "pytest -q tests/unit"}}',
                       '{{"passed": {n}, "failed": 0, "duration_s": {secs}}}',
                       (("subprocess.TimeoutExpired", "Command '['pytest', '-q']' timed out after 120 seconds"),
                        ("AssertionError", "1 failed: test_{func}_empty - IndexError"))),
    "apply_patch": _Tool(45, 0.5, '{{"path": "{file}", "hunks": {pct}}}', '{{"applied": true}}',
                         (("PatchConflictError", "hunk 2 of {file} does not apply"),)),
    "search_web": _Tool(950, 0.6, '{{"query": "{topic} {topic2}"}}',
                        '[{{"title": "{topic} guide", "url": "https://docs.example.com/{slug}"}}]',
                        (("httpx.HTTPStatusError",
                          "Server error '503 Service Unavailable' for url 'https://search.example/v1'"),)),
    "fetch_url": _Tool(620, 0.8, '{{"url": "https://docs.example.com/{slug}"}}', '"<h1>{topic}</h1> ..."',
                       (("httpx.ConnectTimeout", "timed out connecting to docs.example.com:443"),)),
    "crm_lookup": _Tool(160, 0.5, '{{"account": "{company}"}}',
                        '{{"account": "{company}", "owner": "{name}", "contact": "{email}", '
                        '"phone": "{phone}", "arr": "{amount}"}}',
                        (("SalesforceError", "REQUEST_LIMIT_EXCEEDED: TotalRequests Limit exceeded."),)),
    "run_sql": _Tool(260, 1.0, '{{"sql": "SELECT account, amount FROM deals WHERE region = \'{region}\'"}}',
                     '{{"rows": {n}, "columns": ["account", "amount"]}}',
                     (("psycopg.errors.QueryCanceled", "canceling statement due to statement timeout"),
                      ("psycopg.errors.UndefinedColumn", 'column "{col}" does not exist'))),
    "get_pricing": _Tool(80, 0.4, '{{"plan": "{plan}", "seats": {n}}}',
                         '{{"list_price": "{amount}", "currency": "USD"}}',
                         (("KeyError", "'{plan}'"),)),
    "send_email": _Tool(380, 0.5, '{{"to": "{email}", "subject": "Following up"}}', '{{"message_id": "<{n5}@mail>"}}',
                        (("smtplib.SMTPRecipientsRefused", "550 5.1.1 mailbox unavailable"),)),
    "schedule_meeting": _Tool(300, 0.5, '{{"with": "{email}", "day": "{day}"}}', '{{"event_id": "ev_{n5}"}}',
                              (("GoogleCalendarError", "403 rateLimitExceeded"),)),
}  # fmt: skip

# (error.type, status message, share, latency ms, retried by the SDK or agent)
_LLM_ERRORS = {
    "openai": (("RateLimitError", "Error code: 429 - Rate limit reached for {model} on tokens per min (TPM)"),
               ("InternalServerError", "Error code: 500 - The server had an error while processing your request")),
    "mistral_ai": (("SDKError", "API error occurred: Status 429. Requests rate limit exceeded"),
                   ("SDKError", "API error occurred: Status 503. Service unavailable")),
    "anthropic": (("RateLimitError", "Error code: 429 - rate_limit_error: Number of request tokens has exceeded "
                                     "your per-minute rate limit"),
                  ("OverloadedError", "Error code: 529 - overloaded_error: Overloaded")),
    "gcp.gemini": (("ResourceExhausted", "429 Resource has been exhausted (e.g. check quota)."),
                   ("ServiceUnavailable", "503 The model is overloaded. Please try again later.")),
}  # fmt: skip


# --------------------------------------------------------------------------
# Slot values for the text templates (some of them PII)
# --------------------------------------------------------------------------

_FIRST = ("ana", "ben", "chloe", "david", "emma", "farid", "grace", "hiro", "ines", "jonas", "kai", "lena", "mateo",
          "nora", "omar", "priya", "quinn", "rosa", "sven", "tara", "ugo", "vera", "wei", "yusuf", "zoe")  # fmt: skip
_LAST = ("smith", "garcia", "müller", "rossi", "kowalski", "nguyen", "okafor", "tanaka", "silva", "dubois", "khan",
         "johansson", "haddad", "lee", "novak", "brown")  # fmt: skip
_MAIL_DOMAINS = ("gmail.com", "outlook.com", "yahoo.com", "proton.me", "acme-corp.com", "example.org", "web.de")
_CARD_PREFIXES = ("4", "4", "51", "53", "55", "2221", "37", "6011")


def _luhn_digit(body: str) -> str:
    total = 0
    for i, c in enumerate(reversed(body)):
        d = int(c)
        if i % 2 == 0:  # doubled positions, counting from the check digit's left neighbour
            d = d * 2 - 9 if d > 4 else d * 2
        total += d
    return str(-total % 10)


def _card(rng: random.Random) -> str:
    prefix = rng.choice(_CARD_PREFIXES)
    length = 15 if prefix == "37" else 16
    body = prefix + "".join(rng.choice("0123456789") for _ in range(length - len(prefix) - 1))
    digits = body + _luhn_digit(body)
    if length == 15:  # Amex prints 4-6-5
        return f"{digits[:4]} {digits[4:10]} {digits[10:]}"
    sep = rng.choice((" ", "-", ""))
    return sep.join(digits[i : i + 4] for i in range(0, 16, 4))


def _iban(rng: random.Random) -> str:
    bban = f"{rng.randrange(10**8):08d}{rng.randrange(10**10):010d}"  # German bank code + account
    # ISO 13616: check digits make (BBAN + "DE00" as digits) mod 97 == 1.
    check = 98 - int(bban + "131400") % 97
    iban = f"DE{check:02d}{bban}"
    return " ".join(iban[i : i + 4] for i in range(0, len(iban), 4))


def _phone(rng: random.Random) -> str:
    n4 = rng.randrange(100, 200)  # 555-0100..0199 is reserved for fiction
    return rng.choice((
        f"+1 (415) 555-{n4:04d}",
        f"(212) 555-{n4:04d}",
        f"+44 20 7946 {rng.randrange(1000):04d}",
        f"+49 30 {rng.randrange(10**6, 10**7)}",
        f"06 {rng.randrange(10, 99)} {rng.randrange(10, 99)} {rng.randrange(10, 99)} {rng.randrange(10, 99)}",
    ))  # fmt: skip


def _email(rng: random.Random) -> str:
    user = f"{rng.choice(_FIRST)}.{rng.choice(_LAST)}".replace("ü", "ue")
    if rng.random() < 0.3:
        user += str(rng.randrange(1, 99))
    return f"{user}@{rng.choice(_MAIL_DOMAINS)}"


_SLOT_MAKERS: dict[str, Any] = {
    "order": lambda r: f"A-{r.randrange(100000, 999999)}",
    "n": lambda r: r.randrange(2, 40),
    "n5": lambda r: f"{r.randrange(10**5):05d}",
    "pct": lambda r: r.choice((5, 10, 15, 20)),
    "secs": lambda r: round(r.uniform(3, 90), 1),
    "amount": lambda r: f"${r.randrange(20, 50000):,}.00",
    "last4": lambda r: f"{r.randrange(10000):04d}",
    "day": lambda r: r.choice(("Monday", "Tuesday", "Wednesday", "Thursday", "Friday", "yesterday", "last week")),
    "date": lambda r: f"2025-{r.randrange(1, 13):02d}-{r.randrange(1, 29):02d}",
    "product": lambda r: r.choice(("wireless earbuds", "standing desk", "espresso machine", "rain jacket",
                                   "4K monitor", "mechanical keyboard", "air purifier", "running shoes")),
    "code": lambda r: r.choice(("SUMMER25", "WELCOME10", "VIP-2025", "FREESHIP")),
    "plan": lambda r: r.choice(("Starter", "Pro", "Business", "Enterprise")),
    "ship_status": lambda r: r.choice(("in transit", "out for delivery", "being packed", "delayed at the depot")),
    "city": lambda r: r.choice(("Lisbon", "Toronto", "Osaka", "Nairobi", "Berlin", "Austin", "Melbourne")),
    "func": lambda r: r.choice(("parse_config", "load_batch", "retry_request", "merge_spans", "render_invoice",
                                "normalize_email", "flush_buffer")),
    "file": lambda r: r.choice(("app/config.py", "app/batch.py", "lib/http_client.py", "services/billing.py",
                                "pipeline/merge.py", "cli/main.py")),
    "file2": lambda r: r.choice(("app/__init__.py", "app/worker.py", "tests/test_batch.py", "lib/retry.py")),
    "exc": lambda r: r.choice(("IndexError", "KeyError", "TypeError", "ModuleNotFoundError", "RecursionError")),
    "ip": lambda r: f"10.{r.randrange(256)}.{r.randrange(256)}.{r.randrange(1, 255)}",
    "topic": lambda r: r.choice(("webhooks", "rate limits", "SSO", "batch export", "streaming ingestion",
                                 "audit logs", "data retention", "API keys", "vector search", "role-based access")),
    "topic2": lambda r: r.choice(("polling", "quotas", "SCIM", "scheduled reports", "CDC", "access reviews")),
    "version": lambda r: f"{r.randrange(1, 6)}.{r.randrange(0, 20)}",
    "slug": lambda r: r.choice(("getting-started", "configuration", "limits", "changelog", "api/v2", "faq")),
    "name": lambda r: f"{r.choice(_FIRST).title()} {r.choice(_LAST).title()}",
    "company": lambda r: r.choice(("Globex", "Initech", "Umbrella Health", "Stark Logistics", "Wayne Retail",
                                   "Tyrell Systems", "Hooli", "Vandelay Imports")),
    "region": lambda r: r.choice(("EMEA", "NA-West", "NA-East", "APAC", "LATAM")),
    "col": lambda r: r.choice(("close_date", "amount_usd", "stage_name")),
    "email": _email,
    "phone": _phone,
    "card": _card,
    "iban": _iban,
}  # fmt: skip

# Sentences a user adds that carry PII (exercise the ingest masking).
_PII_SENTENCES = (
    " My email is {email}.",
    " Call me back at {phone}, please.",
    " The card I used is {card}.",
    " You can reach me at {email} or {phone}.",
    " Please refund to my IBAN {iban}.",
    " It was paid with card {card}, account email {email}.",
)


class _Slots(dict):
    """Slot values for one trace, made on first use, then reused."""

    __slots__ = ("rng",)

    def __init__(self, rng: random.Random) -> None:
        super().__init__()
        self.rng = rng

    def __missing__(self, key: str) -> Any:
        value = self[key] = _SLOT_MAKERS[key](self.rng)
        return value


# --------------------------------------------------------------------------
# Incidents
# --------------------------------------------------------------------------


@dataclass(frozen=True)
class Incident:
    """A window of degraded service, for testing detectors and alerts.

    During ``[start_s, start_s + duration_s)`` after the model's start, LLM
    calls to ``model`` (None: every model) in ``project`` (None: every
    project) take ``latency_factor`` times longer, and fail with
    ``error_rate`` (None: the model's usual rate).

    Examples
    --------
    >>> slow = Incident(600, 300, latency_factor=4.0, model="gpt-4o-mini")
    >>> slow.active(700, "support-bot"), slow.active(950, "support-bot")
    (True, False)
    """

    start_s: float
    duration_s: float
    latency_factor: float = 1.0
    error_rate: float | None = None
    model: str | None = None
    project: str | None = None

    def active(self, offset_s: float, project: str) -> bool:
        """Whether the incident affects ``project`` at ``offset_s`` seconds after the start."""
        return self.start_s <= offset_s < self.start_s + self.duration_s and self.project in (None, project)


# --------------------------------------------------------------------------
# Malformed messages
# --------------------------------------------------------------------------

#: What :meth:`TrafficModel.malformed` makes, in order (message ``i`` is kind ``i % 8``).
MALFORMED_KINDS = (
    "bad_json",
    "missing_field",
    "wrong_type",
    "garbage_bytes",
    "truncated_avro",
    "unknown_fingerprint",
    "bad_trace_id",
    "wrong_record",
)


# --------------------------------------------------------------------------
# The model
# --------------------------------------------------------------------------


def _micros(at: datetime) -> int:
    if at.tzinfo is None:
        raise ValueError("start must be timezone-aware (UTC)")
    delta = at - _EPOCH
    return (delta.days * 86_400 + delta.seconds) * _US + delta.microseconds


def _time(us: int) -> datetime:
    return _EPOCH + timedelta(microseconds=us)


@cache
def _prices() -> dict[str, dict[str, Any]]:
    path = Path(__file__).parent / "data" / "prices.json"
    return {entry["id"]: entry for entry in json.loads(path.read_text())["models"]}


def _list_cost(spec: ModelSpec, inp: int, out: int, cache_read: int, cache_write: int) -> float:
    p = _prices()[spec.price_id]
    rate_in = p["input"]
    uncached = inp - cache_read - cache_write
    dollars = (
        uncached * rate_in
        + cache_read * p.get("cache_read", rate_in)
        + cache_write * p.get("cache_write", rate_in)
        + out * p["output"]
    )
    return round(dollars / 1e6, 9)


class _User:
    __slots__ = ("user_id", "variant", "session", "turns_left", "last_us", "turn")

    def __init__(self, user_id: str, variant: Variant) -> None:
        self.user_id = user_id
        self.variant = variant
        self.session = ""
        self.turns_left = 0
        self.last_us = 0
        self.turn = 0


class _Project:
    """A ProjectSpec with its cumulative weights precomputed."""

    def __init__(self, index: int, spec: ProjectSpec) -> None:
        self.index = index
        self.spec = spec
        # Zipf-Mandelbrot activity (1 / (rank + 3)): a few power users, a long
        # tail of people who come once; the +3 keeps the top user near 4%.
        self.user_cw = _cumulative(1.0 / (rank + 3) for rank in range(1, spec.users + 1))
        unknown = [m for m, _ in spec.models if m not in MODELS]
        if unknown:
            raise ValueError(f"project {spec.name}: unknown models {unknown}; known: {', '.join(MODELS)}")
        self.models = [MODELS[m] for m, _ in spec.models]
        self.model_cw = _cumulative(w for _, w in spec.models)
        self.variant_cw = _cumulative(v.weight for v in spec.variants)
        self.users: dict[int, _User] = {}


def _cumulative(weights: Iterable[float]) -> list[float]:
    out, total = [], 0.0
    for w in weights:
        total += w
        out.append(total)
    return out


def _pick(rng: random.Random, items: Sequence[Any], cw: list[float]) -> Any:
    return items[bisect(cw, rng.random() * cw[-1])]


class TrafficModel:
    """A seeded stream of realistic LLM-application traces and feedback.

    Parameters
    ----------
    seed
        Seeds every random choice; same seed and start, same traffic.
    projects
        The applications to simulate (default :data:`DEFAULT_PROJECTS`).
    start
        Time of the first trace (timezone-aware); None: now, read once.
    error_rate
        Chance that one model, tool, retrieval or embedding call fails.
    feedback_rate
        Share of successful traces that get feedback (failed ones get more).
    pii_rate
        Share of user questions that carry an email, phone, card or IBAN.
    traces_per_second
        Mean arrival rate (Poisson) of traces on the simulated clock.
    incidents
        Windows of degraded latency or errors (:class:`Incident`).

    Examples
    --------
    >>> model = TrafficModel(seed=7, start=DEFAULT_START)
    >>> trace = next(model.traces(1))
    >>> root = trace[0]
    >>> root["kind"], root["parent_span_id"], 3 <= len(trace) <= 50
    ('agent', None, True)
    >>> sorted({s["kind"] for s in trace}) <= ["agent", "chain", "embedding", "llm", "retrieval", "tool"]
    True
    >>> TrafficModel(seed=7, start=DEFAULT_START).trace() == trace
    True
    """

    def __init__(
        self,
        seed: int = 0,
        projects: Sequence[ProjectSpec] = DEFAULT_PROJECTS,
        start: datetime | None = None,
        *,
        error_rate: float = 0.02,
        feedback_rate: float = 0.25,
        pii_rate: float = 0.06,
        traces_per_second: float = 10.0,
        incidents: Sequence[Incident] = (),
    ) -> None:
        for name, value in (("error_rate", error_rate), ("feedback_rate", feedback_rate), ("pii_rate", pii_rate)):
            if not 0.0 <= value <= 1.0:
                raise ValueError(f"{name} must be within [0, 1], got {value}")
        if traces_per_second <= 0:
            raise ValueError(f"traces_per_second must be > 0, got {traces_per_second}")
        if not projects:
            raise ValueError("at least one project is needed")
        self.seed = seed
        if start is not None and start.utcoffset() is None:
            raise ValueError("start must be timezone-aware, e.g. datetime(..., tzinfo=timezone.utc)")
        self.start = (start or datetime.now(timezone.utc)).astimezone(timezone.utc)
        self.error_rate = error_rate
        self.feedback_rate = feedback_rate
        self.pii_rate = pii_rate
        self.traces_per_second = traces_per_second
        self.incidents = tuple(incidents)
        self._start_us = _micros(self.start)
        self._now_us = self._start_us
        self._rng = random.Random(seed)
        # Ids from their own stream: see the module docstring.
        self._ids = random.Random(f"{seed}/{self._start_us}")
        self._projects = [_Project(i, p) for i, p in enumerate(projects)]
        self._project_cw = _cumulative(p.weight for p in projects)

    @property
    def projects(self) -> tuple[ProjectSpec, ...]:
        """The simulated applications.

        >>> len(TrafficModel(start=DEFAULT_START).projects)
        4
        """
        return tuple(p.spec for p in self._projects)

    @property
    def clock(self) -> datetime:
        """Start time of the latest trace (the model's start before the first one).

        >>> m = TrafficModel(start=DEFAULT_START)
        >>> _ = m.trace()
        >>> m.clock > DEFAULT_START
        True
        """
        return _time(self._now_us)

    def traces(self, n: int) -> Iterator[list[dict[str, Any]]]:
        """The next ``n`` traces, each a list of span dicts, root first.

        The model is a stream: a second call continues where the first
        stopped. Spans are in start order; the root span is first.

        Examples
        --------
        >>> model = TrafficModel(seed=1, start=DEFAULT_START)
        >>> [len(t) >= 3 for t in model.traces(3)]
        [True, True, True]
        """
        for _ in range(n):
            yield self.trace()

    def trace(self) -> list[dict[str, Any]]:
        """The next trace (see :meth:`traces`).

        >>> trace = TrafficModel(seed=2, start=DEFAULT_START).trace()
        >>> len({s["trace_id"] for s in trace}), len({s["span_id"] for s in trace}) == len(trace)
        (1, True)
        """
        rng = self._rng
        self._now_us += int(rng.expovariate(self.traces_per_second) * _US) + 1
        project = _pick(rng, self._projects, self._project_cw)
        user = self._user(project, rng)
        offset_s = (self._now_us - self._start_us) / _US
        incidents = [i for i in self.incidents if i.active(offset_s, project.spec.name)]
        return _TraceBuilder(self, project, user, self._now_us, incidents).build()

    def _user(self, project: _Project, rng: random.Random) -> _User:
        rank = bisect(project.user_cw, rng.random() * project.user_cw[-1])
        user = project.users.get(rank)
        if user is None:
            user_id = f"user-{project.index + 1}{rank:05d}"
            spec = project.spec
            # Assigned like llmpulse's own assignment (GrowthBook's hash v2,
            # seed = experiment key, coverage 1): the variant a producer using
            # processors.experiments would serve, so a running definition
            # with these weights agrees with the generated spans.
            bucket = bucket_hash(spec.experiment, user_id, 2) * project.variant_cw[-1]
            variant = spec.variants[min(bisect(project.variant_cw, bucket), len(spec.variants) - 1)]
            user = project.users[rank] = _User(user_id, variant)
        # A session is a few turns close together; 30 idle minutes end it.
        if user.turns_left <= 0 or self._now_us - user.last_us > 30 * 60 * _US:
            user.session = f"sess-{self._ids.getrandbits(48):012x}"
            user.turns_left = 1 + int(rng.expovariate(1 / 2.5))
            user.turn = 0
        else:
            user.turn += 1
        user.turns_left -= 1
        user.last_us = self._now_us
        return user

    # ------------------------------------------------------------ feedback

    def feedback_for(self, trace: Sequence[dict[str, Any]]) -> dict[str, Any] | None:
        """Feedback on ``trace`` from its user, or None (most traces get none).

        Failed and slow traces get feedback more often, and worse: fewer
        thumbs up, lower ratings, angrier comments. The result depends only
        on the trace, the seed and the start, not on what was asked before.

        Examples
        --------
        >>> model = TrafficModel(seed=3, start=DEFAULT_START, feedback_rate=1.0)
        >>> trace = model.trace()
        >>> fb = model.feedback_for(trace)
        >>> fb["trace_id"] == trace[0]["trace_id"], fb["time"] > trace[0]["end_time"]
        (True, True)
        >>> model.feedback_for(trace) == fb
        True
        """
        root = next((s for s in trace if s["parent_span_id"] is None), None)
        if root is None or root.get("user_id") is None:
            return None
        # Keyed by the trace's offset from the start, so a later start with
        # the same seed gives the same feedback (under fresh ids).
        rng = random.Random(f"{self.seed}/feedback/{_micros(root['start_time']) - self._start_us}")
        failed = root["status"] == "error"
        any_error = failed or any(s["status"] == "error" for s in trace)
        seconds = (root["end_time"] - root["start_time"]).total_seconds()
        slow = (seconds > 20) + (seconds > 45)
        # Unhappy users speak up more often than happy ones.
        rate = self.feedback_rate * (2.0 if failed else 1.3 if slow else 1.0)
        if rng.random() >= min(rate, 1.0):
            return None
        bonus = self._quality_bonus(root)
        p_up = 0.82 + bonus - (0.6 if failed else 0.15 if any_error else 0.0) - 0.15 * slow
        up = rng.random() < min(max(p_up, 0.02), 0.98)
        style = rng.random()
        thumbs: bool | None = up if style < 0.85 else None
        rating = None
        if style >= 0.55:
            mu = (4.4 if up else 2.0) + 2 * bonus - (0.8 if failed else 0.0) - 0.4 * slow
            rating = float(min(5, max(1, round(rng.gauss(mu, 0.7)))))
        comment = None
        if rng.random() < 0.3:
            comment = rng.choice(_GOOD_COMMENTS if up else _SLOW_COMMENTS if slow else _BAD_COMMENTS)
        # Most votes come right after reading the answer; some much later.
        delay_us = max(_US, int(_MS * 1000 * rng.lognormvariate(math.log(12), 1.2)))
        final = next((s for s in reversed(trace) if s["kind"] == "llm" and s["status"] != "error"), None)
        span_id = root["span_id"] if final is None or rng.random() < 0.5 else final["span_id"]
        return {
            "feedback_id": f"fb-{root['trace_id']}",  # one per trace: redelivery-safe, run-unique
            "trace_id": root["trace_id"],
            "span_id": span_id,
            "user_id": root["user_id"],
            "project": root["project"],
            "time": root["end_time"] + timedelta(microseconds=delay_us),
            "rating": rating,
            "thumbs": thumbs,
            "comment": comment,
            "attributes": {"surface": rng.choice(_SURFACES), "prompt_version": root["prompt_version"] or ""},
        }

    def _quality_bonus(self, root: dict[str, Any]) -> float:
        version = root.get("prompt_version")
        for p in self._projects:
            if p.spec.name == root["project"]:
                return next((v.quality for v in p.spec.variants if v.prompt_version == version), 0.0)
        return 0.0

    # ----------------------------------------------------------- malformed

    def malformed(self, n: int) -> list[bytes]:
        """``n`` poison messages for the span topic, one kind after another.

        Message ``i`` is of kind ``MALFORMED_KINDS[i % 8]``: bad JSON, a
        missing required field, a wrong type, garbage bytes, a truncated Avro
        body, an unknown schema fingerprint, a bad trace id, or a feedback
        record where a span belongs. Every one is rejected by
        ``schemas.codec.decode(message, expected="span")``. They come from
        their own random stream, so asking for them never changes the traces.

        Examples
        --------
        >>> from schemas.codec import decode, SerializationError
        >>> bad = TrafficModel(seed=0, start=DEFAULT_START).malformed(8)
        >>> bad[0][:1], bad[4][:2]
        (b'{', b'\\xc3\\x01')
        >>> for message in bad:
        ...     try:
        ...         decode(message, expected="span")
        ...     except SerializationError:
        ...         pass
        ...     else:
        ...         print("accepted!")
        """
        from schemas.codec import encode, encode_json  # the codec compiles schemas: only load it when needed

        rng = random.Random(f"{self.seed}/malformed")
        spare = TrafficModel(self.seed + 1, self.projects, self.start, error_rate=0.0)
        out: list[bytes] = []
        for i in range(n):
            kind = MALFORMED_KINDS[i % len(MALFORMED_KINDS)]
            span = rng.choice(spare.trace())
            if kind == "bad_json":
                text = encode_json("span", span)
                out.append(text[: rng.randrange(1, len(text) - 1)])
            elif kind == "missing_field":
                record = json.loads(encode_json("span", span))
                del record[rng.choice(("trace_id", "span_id", "project", "start_time", "kind", "status"))]
                out.append(json.dumps(record).encode())
            elif kind == "wrong_type":
                record = json.loads(encode_json("span", span))
                field, value = rng.choice((("start_time", "yesterday"), ("input_tokens", "lots"), ("kind", 7),
                                           ("finish_reasons", "stop"), ("temperature", "warm")))  # fmt: skip
                record[field] = value
                out.append(json.dumps(record).encode())
            elif kind == "garbage_bytes":
                # Never '{', whitespace or the Avro magic: those take other paths.
                first = rng.choice([b for b in range(256) if b not in b"{ \t\r\n\xc3"])
                out.append(bytes([first]) + rng.randbytes(rng.randrange(8, 200)))
            elif kind == "truncated_avro":
                data = encode("span", span)
                out.append(data[: rng.randrange(11, len(data) - 1)])
            elif kind == "unknown_fingerprint":
                data = encode("span", span)
                out.append(data[:2] + rng.randbytes(8) + data[10:])
            elif kind == "bad_trace_id":
                record = json.loads(encode_json("span", span))
                record["trace_id"] = record["trace_id"][: rng.randrange(8, 31)].upper()
                out.append(json.dumps(record).encode())
            else:  # wrong_record
                out.append(encode("feedback", {
                    "feedback_id": f"fb-{rng.getrandbits(32):08x}", "trace_id": span["trace_id"],
                    "user_id": span["user_id"], "project": span["project"], "time": span["end_time"], "thumbs": True,
                }))  # fmt: skip
        return out


_SURFACES = ("web-widget", "web-widget", "mobile-app", "slack", "api")
_GOOD_COMMENTS = (
    "Worked, thanks!", "Perfect, exactly what I needed.", "Fast and accurate.", "Great answer 👍",
    "That solved it.", "Clear and concise, thank you.",
)  # fmt: skip
_BAD_COMMENTS = (
    "Wrong answer, the order number is different.", "It didn't understand my question.",
    "Error again, please fix this.", "Made up a feature that doesn't exist.", "Not helpful.",
    "The answer ignored the context I gave.",
)  # fmt: skip
_SLOW_COMMENTS = ("Way too slow.", "Took forever to answer.", "Slow, but the answer was ok.")


class _TraceBuilder:
    """Builds one trace: times in integer microseconds, datetimes at the end."""

    def __init__(
        self, model: TrafficModel, project: _Project, user: _User, t0: int, incidents: list[Incident]
    ) -> None:
        rng = model._rng
        self.model = model
        self.rng = rng
        self.ids = model._ids
        self.project = project
        self.spec = spec = project.spec
        self.user = user
        self.t0 = t0
        self.incidents = incidents
        self.error_rate = model.error_rate
        self.llm_model: ModelSpec = _pick(rng, project.models, project.model_cw)
        self.variant = user.variant
        self.slots = _Slots(rng)
        self.spans: list[dict[str, Any]] = []
        self.trace_id = f"{self.ids.getrandbits(128) or 1:032x}"
        self.llm_calls = 0
        self.prev_input = 0
        self.history: list[dict[str, str]] = []
        self.question = ""
        self.base = {
            "trace_id": self.trace_id,
            "status": "unset",
            "status_message": None,
            "error_type": None,
            "project": spec.name,
            "service_name": spec.service,
            "environment": "staging" if rng.random() < 0.04 else "prod",
            "user_id": user.user_id,
            "session_id": user.session,
            "prompt_version": user.variant.prompt_version,
            "operation": None,
            "provider": None,
            "request_model": None,
            "response_model": None,
            "response_id": None,
            "temperature": None,
            "max_tokens": None,
            "tool_name": None,
            "agent_name": spec.agent,
            "input_tokens": None,
            "output_tokens": None,
            "cache_read_input_tokens": None,
            "cache_creation_input_tokens": None,
            "cost_usd": None,
            "first_token_time": None,
            "input": None,
            "output": None,
        }
        # Prompt size of the next model call: grows with every tool result
        # and answer, as the agent appends them to the conversation.
        self.context = max(spec.system_tokens + 30, int(self._ln(spec.input_tokens, 0.5)))

    # ----------------------------------------------------------- helpers

    def _ln(self, median: float, sigma: float) -> float:
        return median * math.exp(self.rng.gauss(0.0, sigma))

    def _tail(self, value: float) -> float:
        return value * self.rng.uniform(3.0, 10.0) if self.rng.random() < _TAIL_P else value

    def _gap(self) -> int:
        """Framework overhead between two steps (serialisation, routing, callbacks)."""
        return int(self._ln(2_500, 0.8))

    def _open(self, kind: str, name: str, parent: str | None, start: int) -> dict[str, Any]:
        span = self.base.copy()
        span["span_id"] = f"{self.ids.getrandbits(64) or 1:016x}"
        span["parent_span_id"] = parent
        span["kind"] = kind
        span["name"] = name
        span["start_time"] = start
        span["end_time"] = start
        span["finish_reasons"] = []
        span["experiments"] = {self.spec.experiment: self.variant.name}
        span["attributes"] = {}
        self.spans.append(span)
        return span

    def _fail(self, span: dict[str, Any], error_type: str, message: str) -> None:
        span["status"] = "error"
        span["error_type"] = error_type
        span["status_message"] = message

    def _fill(self, template: str) -> str:
        return template.format_map(self.slots)

    # ------------------------------------------------------------- trace

    def build(self) -> list[dict[str, Any]]:
        rng, spec = self.rng, self.spec
        self.question = self._fill(rng.choice(spec.questions))
        if rng.random() < self.model.pii_rate:
            self.question += self._fill(rng.choice(_PII_SENTENCES))
        root = self._open("agent", f"invoke_agent {spec.agent}", None, self.t0)
        root.update(operation="invoke_agent", status="ok", input=self.question)
        root["attributes"] = {"gen_ai.conversation.turn": str(self.user.turn), "http.route": "/v1/chat"}
        failure = None
        cursor = self.t0 + self._gap()
        if rng.random() < spec.guard_p:
            cursor, failure = self._guardrail(root["span_id"], cursor)
        if failure is None:
            cursor, failure = self._agent_loop(root["span_id"], cursor)
        if failure is not None:
            self._fail(root, *failure)
        else:
            root["output"] = self._fill(rng.choice(spec.answers))
        root["end_time"] = cursor + self._gap()
        return self._finish()

    def _agent_loop(self, parent: str, cursor: int) -> tuple[int, tuple[str, str] | None]:
        rng, spec = self.rng, self.spec
        calls = self._plan_tools(first=True)
        cursor, failure = self._llm(parent, cursor, "plan", calls)
        if failure:
            return cursor, failure
        for step in range(spec.max_steps):
            if spec.index and rng.random() < (spec.retrieval_p if step == 0 else spec.retrieval_p / 3):
                cursor = self._retrieval_step(parent, cursor + self._gap())
            if calls:
                cursor, failure = self._tools(parent, cursor + self._gap(), calls)
                if failure:
                    return cursor, failure
            more = (
                step + 1 < spec.max_steps
                and len(self.spans) < _MAX_SPANS - 12  # room for one more full step and the answer
                and rng.random() < spec.loop_p
            )
            calls = self._plan_tools(first=False) if more else []
            cursor, failure = self._llm(parent, cursor + self._gap(), "plan" if calls else "answer", calls)
            if failure or not calls:
                return cursor, failure
        return cursor, None

    def _plan_tools(self, first: bool) -> list[str]:
        spec, rng = self.spec, self.rng
        if not spec.tools:
            return []
        mean = spec.tools_mean if first else max(spec.tools_mean, 1.0)
        p = mean / (1.0 + mean)  # geometric number of calls with this mean
        n = 0 if first else 1
        while n < 4 and rng.random() < p:
            n += 1
        return [rng.choice(spec.tools) for _ in range(n)]

    # ------------------------------------------------------------ model calls

    def _llm(
        self, parent: str, start: int, purpose: str, calls: Sequence[str] = (), model: ModelSpec | None = None
    ) -> tuple[int, tuple[str, str] | None]:
        """One model call with the retries an SDK makes; (end, failure or None)."""
        rng = self.rng
        m = model or self.llm_model
        error_rate, slow = self.error_rate, 1.0
        for inc in self.incidents:
            if inc.model in (None, m.request_model):
                slow *= inc.latency_factor
                if inc.error_rate is not None:
                    error_rate = inc.error_rate
        for attempt in range(3):
            span = self._open("llm", f"{m.operation} {m.request_model}", parent, start)
            self._request_fields(span, m, purpose)
            n_in = self.context if purpose != "guard" else int(self._ln(180, 0.4)) + len(self.question) // 4
            if rng.random() < error_rate:
                error_type, message = self._llm_error(m)
                if error_type == "timeout":
                    span["end_time"] = start + 60 * _US  # the SDK's read timeout
                else:
                    span["end_time"] = start + int(self._ln(250_000, 0.6) * slow)
                self._fail(span, error_type, message)
                # Rate limits and overload are retried with exponential
                # backoff; a timeout is retried once at most.
                if attempt == 2 or (error_type == "timeout" and attempt > 0):
                    return span["end_time"], (error_type, message)
                start = span["end_time"] + int(_US * 0.5 * 2**attempt * rng.uniform(0.5, 1.5))
                continue
            return self._llm_success(span, m, purpose, calls, n_in, slow), None
        raise AssertionError("unreachable")

    def _request_fields(self, span: dict[str, Any], m: ModelSpec, purpose: str) -> None:
        span["operation"] = m.operation
        span["provider"] = m.provider
        span["request_model"] = m.request_model
        span["temperature"] = (0.0 if purpose == "guard" else self.spec.temperature) if m.temperature else None
        span["max_tokens"] = 8 if purpose == "guard" else self.spec.max_tokens
        span["attributes"] = {"server.address": m.server, "gen_ai.request.stream": "true"}
        if purpose == "guard":
            span["input"] = json.dumps([{"role": "system", "content": "Classify: SAFE or UNSAFE."},
                                        {"role": "user", "content": self.question}])  # fmt: skip
        else:
            messages = [{"role": "system", "content": self.variant.system}, {"role": "user", "content": self.question}]
            span["input"] = json.dumps(messages + self.history[-4:])

    def _llm_error(self, m: ModelSpec) -> tuple[str, str]:
        r = self.rng.random()
        if r < 0.2:
            return "timeout", f"Request timed out after 60 s ({m.server})"
        error_type, message = _LLM_ERRORS[m.provider][0 if r < 0.75 else 1]
        return error_type, message.format(model=m.request_model)

    def _llm_success(
        self, span: dict[str, Any], m: ModelSpec, purpose: str, calls: Sequence[str], n_in: int, slow: float
    ) -> int:
        rng, spec = self.rng, self.spec
        stop, length, tool_call, filtered = _FINISH[m.provider]
        max_tokens = span["max_tokens"]
        if purpose == "guard":
            out, finish, text = rng.randrange(1, 3), stop, "SAFE"
        elif purpose == "plan":
            out = int(self._ln(45 + 35 * len(calls), 0.5))
            finish = tool_call if calls else stop
            text = json.dumps([{"name": c, "arguments": self._fill(_TOOLS[c].args)} for c in calls]) if calls else (
                "Search the knowledge base, then answer."
            )
        else:
            out = int(self._ln(spec.output_tokens * self.variant.output_factor, 0.75))
            finish, text = stop, self._fill(rng.choice(spec.answers))
            if rng.random() < 0.003:
                finish, text = filtered, "I can't help with that request."
        out = max(1, out)
        if out >= max_tokens:
            out, finish = max_tokens, length
        cache_read, cache_write = self._cache(m, n_in, purpose)
        # Prefill grows with the uncached prompt; decode time with the output.
        ttft = self._ln(m.ttft_ms, 0.45) * _MS * (1 + (n_in - (cache_read or 0)) / 30_000) * slow
        decode = out / (m.tokens_per_s * math.exp(rng.gauss(0.0, 0.25))) * _US * slow
        start = span["start_time"]
        span["first_token_time"] = start + int(ttft)
        span["end_time"] = start + int(self._tail(ttft + decode))
        span["response_model"] = m.response_model
        span["response_id"] = f"{_RESPONSE_ID[m.provider]}{self.ids.getrandbits(96):024x}"
        span["finish_reasons"] = [finish]
        span["input_tokens"] = n_in
        span["output_tokens"] = out
        span["cache_read_input_tokens"] = cache_read
        span["cache_creation_input_tokens"] = cache_write
        span["output"] = text
        span["status"] = "ok"
        if spec.own_cost_p and rng.random() < spec.own_cost_p:
            # A proxy (LiteLLM, Portkey...) that prices calls itself.
            span["cost_usd"] = _list_cost(m, n_in, out, cache_read or 0, cache_write or 0)
            span["attributes"]["llm.cost.source"] = "litellm"
        if purpose != "guard":
            self.llm_calls += 1
            self.prev_input = n_in
            self.context = n_in + out
            self.history.append({"role": "assistant", "content": text})
        return span["end_time"]

    def _cache(self, m: ModelSpec, n_in: int, purpose: str) -> tuple[int | None, int | None]:
        """Prompt-cache tokens (read, written) of one call, as each provider reports them."""
        rng = self.rng
        later = self.llm_calls > 0  # the previous call's prompt is this one's prefix
        if m.cache == "auto":
            read = 0
            if n_in >= _CACHE_MIN and purpose != "guard" and rng.random() < (0.85 if later else 0.4):
                prefix = self.prev_input if later else self.spec.system_tokens
                read = min(prefix, n_in - 1) // _CACHE_STEP * _CACHE_STEP
                read = read if read >= _CACHE_MIN else 0
            # OpenAI always reports cached_tokens; Gemini only when there are some.
            return (read if m.provider == "openai" else read or None), None
        if m.cache == "explicit":
            if n_in < _CACHE_MIN or purpose == "guard":
                return 0, 0
            if later:
                read = min(self.prev_input, n_in)
                return read, (n_in - read if rng.random() < 0.5 else 0)
            # The system prompt is cached for 5 minutes: warm within a session.
            system = min(self.spec.system_tokens, n_in)
            return (system, 0) if self.user.turn > 0 and rng.random() < 0.8 else (0, system)
        return None, None

    # -------------------------------------------------- guardrail, retrieval, tools

    def _guardrail(self, parent: str, start: int) -> tuple[int, tuple[str, str] | None]:
        chain = self._open("chain", "chain input_guardrail", parent, start)
        end, failure = self._llm(chain["span_id"], start + self._gap() // 4, "guard", model=_GUARD)
        chain["end_time"] = end + self._gap() // 4
        chain["input"] = self.question
        if failure:
            self._fail(chain, *failure)
        else:
            chain["output"] = "SAFE"
        return chain["end_time"], failure

    def _retrieval_step(self, parent: str, start: int) -> int:
        rng = self.rng
        n = 1 if rng.random() < 0.7 else rng.randrange(2, 4)
        if self.spec.name == "search-rag" or rng.random() < 0.2:
            chain = self._open("chain", "chain retrieve_context", parent, start)
            cursor = start + self._gap() // 4
            for _ in range(n):
                cursor = self._retrieve(chain["span_id"], cursor) + self._gap() // 4
            chain["end_time"] = cursor
            return cursor
        cursor = start
        for _ in range(n):
            cursor = self._retrieve(parent, cursor) + self._gap() // 4
        return cursor

    def _retrieve(self, parent: str, start: int) -> int:
        rng, spec = self.rng, self.spec
        span = self._open("retrieval", f"retrieve {spec.index}", parent, start)
        top_k = rng.choice((3, 5, 5, 8, 10))
        span["input"] = self.question
        span["attributes"] = {"db.system.name": spec.vector_db, "db.collection.name": spec.index or "",
                              "retrieval.top_k": str(top_k)}  # fmt: skip
        cursor = start + 200
        if rng.random() < 0.7:
            cursor, failed = self._embed(span["span_id"], cursor)
            if failed:
                self._fail(span, "EmbeddingError", "embedding the query failed: rate limited")
                span["end_time"] = cursor + 300
                return span["end_time"]
        cursor += int(self._tail(self._ln(35_000, 0.6)))
        if rng.random() < self.error_rate:
            self._fail(span, "TimeoutError", f"{spec.vector_db} search timed out after 5 s")
            span["end_time"] = cursor + 5 * _US
            return span["end_time"]
        # Scores fall with rank, as a vector store returns them.
        docs = [
            {"id": f"{spec.index}-{rng.randrange(10**5):05d}", "score": round(0.9 - 0.05 * i - rng.random() / 20, 3)}
            for i in range(top_k)
        ]
        span["output"] = json.dumps(docs)
        span["end_time"] = cursor
        self.context += int(top_k * self._ln(220, 0.3))
        return cursor

    def _embed(self, parent: str, start: int) -> tuple[int, bool]:
        rng, m = self.rng, _EMBEDDER
        span = self._open("embedding", f"embeddings {m.request_model}", parent, start)
        span.update(operation="embeddings", provider=m.provider, request_model=m.request_model, input=self.question)
        span["attributes"] = {"server.address": m.server, "gen_ai.embeddings.dimension.count": "1536"}
        if rng.random() < self.error_rate:
            self._fail(span, *_LLM_ERRORS["openai"][0])
            span["status_message"] = span["status_message"].format(model=m.request_model)
            span["end_time"] = start + int(self._ln(120_000, 0.5))
            return span["end_time"], True
        span.update(response_model=m.response_model, input_tokens=max(3, len(self.question) // 4), status="ok")
        span["end_time"] = start + int(self._tail(self._ln(110_000, 0.5)))
        return span["end_time"], False

    def _tools(self, parent: str, start: int, calls: Sequence[str]) -> tuple[int, tuple[str, str] | None]:
        rng = self.rng
        # Models emit parallel tool calls about half the time when several
        # are needed; frameworks then run them concurrently.
        parallel = len(calls) > 1 and rng.random() < 0.5
        cursor, failure = start, None
        ends = []
        for name in calls:
            at = start + rng.randrange(0, 3_000) if parallel else cursor
            end, fatal = self._tool(parent, at, name)
            ends.append(end)
            cursor = end + (0 if parallel else self._gap())
            if fatal:
                failure = fatal
                break
        return max(ends) if parallel else cursor, failure

    def _tool(self, parent: str, start: int, name: str) -> tuple[int, tuple[str, str] | None]:
        rng, tool = self.rng, _TOOLS[name]
        span = self._open("tool", f"execute_tool {name}", parent, start)
        span.update(operation="execute_tool", tool_name=name, input=self._fill(tool.args))
        span["attributes"] = {"gen_ai.tool.call.id": f"call_{self.ids.getrandbits(72):018x}",
                              "gen_ai.tool.type": "function"}  # fmt: skip
        duration = self._tail(self._ln(tool.latency_ms * _MS, tool.sigma))
        if rng.random() < self.error_rate * 1.5:  # tools are flakier than model APIs
            error_type, message = rng.choice(tool.errors)
            message = self._fill(message)
            self._fail(span, error_type, message)
            span["end_time"] = start + int(duration)
            self.history.append({"role": "tool", "content": f"{error_type}: {message}"})
            # Most agents hand the error to the model; some crash on it.
            return span["end_time"], ((error_type, message) if rng.random() < 0.3 else None)
        span["output"] = self._fill(tool.result)
        span["end_time"] = start + int(duration)
        self.context += int(self._ln(150, 0.8))
        self.history.append({"role": "tool", "content": span["output"]})
        return span["end_time"], None

    # ------------------------------------------------------------- finish

    def _finish(self) -> list[dict[str, Any]]:
        for span in self.spans:
            span["start_time"] = _time(span["start_time"])
            span["end_time"] = _time(span["end_time"])
            if span["first_token_time"] is not None:
                span["first_token_time"] = _time(span["first_token_time"])
        return self.spans
