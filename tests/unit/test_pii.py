"""PII masking: per-type cases, the labelled corpus, and the hot-path speed.

``.venv/bin/pytest tests/unit/test_pii.py -q -s`` prints the corpus table and
the throughput; docs/pii.md quotes them.
"""
from __future__ import annotations

import json
import random
import time
from collections import Counter
from pathlib import Path

import pytest

from processors import pii
from processors.pii import PII_TYPES, Finding, PiiMasker, parse_patterns

CORPUS = Path(__file__).resolve().parents[1] / "data" / "pii_corpus.jsonl"


@pytest.fixture(scope="module")
def masker() -> PiiMasker:
    return PiiMasker()


def masked(masker: PiiMasker, text: str) -> str:
    return masker.mask(text)[0]


# ------------------------------------------------------------ per type
@pytest.mark.parametrize(
    "text, expected",
    [
        ("write to bob.smith+llm@mail.example.co.uk now", "write to <EMAIL> now"),
        ("Contact: Ana <ana@example.org>", "Contact: Ana <<EMAIL>>"),
        ("jürgen.müller@beispiel.de", "<EMAIL>"),
        ("End of sentence: eve@example.com.", "End of sentence: <EMAIL>."),
    ],
)
def test_email_masked(masker: PiiMasker, text: str, expected: str) -> None:
    assert masked(masker, text) == expected


@pytest.mark.parametrize(
    "text",
    ["@alice please review", "@dataclass(frozen=True)", "logo@2x.png", "npm i lodash@4.17.21", "user@localhost"],
)
def test_email_lookalikes_kept(masker: PiiMasker, text: str) -> None:
    assert masked(masker, text) == text


@pytest.mark.parametrize(
    "phone",
    [
        "(415) 555-0132", "415-555-0132", "415.555.0132", "+1 (415) 555-0132", "+1-780-563-6083x7783",
        "+44 20 7946 0958", "+49 30 901820", "+44(0)115 4960914", "(+49) 30 901820", "0049 30 901820",
        "020 7946 0958", "030 901820", "030/12345678", "01 23 45 67 89", "090-1234-5678",
        "(11) 91234-5678", "+33 6 12 34 56 78", "+81 3-1234-5678", "+4915112345678",
    ],
)
def test_phone_masked(masker: PiiMasker, phone: str) -> None:
    assert masked(masker, f"Call me at {phone} tomorrow") == "Call me at <PHONE> tomorrow"


@pytest.mark.parametrize(
    "text",
    [
        "2024-06-01", "05.06.2024", "01/02/2024", "12:30:45", "2024-06-01T12:00:00Z", "v1.2.3", "1.2.3.4.5",
        "Order #48291537", "ORD-2024-000123", "in 2024", "550e8400-e29b-41d4-a716-446655440000",
        "42 items", "$1,299.99", "555-0132", "+15.5%", "UTC+02:00", "Ticket 0004829153",
        "Rechnung Nr. 0200 1234 56", "1717243200123",
    ],
)
def test_phone_lookalikes_kept(masker: PiiMasker, text: str) -> None:
    assert masked(masker, text) == text


@pytest.mark.parametrize(
    "card", ["4111 1111 1111 1111", "4111-1111-1111-1111", "4111111111111111", "3782 822463 10005", "5555555555554444"]
)
def test_luhn_valid_card_masked(masker: PiiMasker, card: str) -> None:
    assert masked(masker, f"card {card}, exp 04/28") == "card <CREDIT_CARD>, exp 04/28"


@pytest.mark.parametrize(
    "text",
    ["4111 1111 1111 1112", "4111111111111112", "1234 5678 9012 3456", "4111-1111 1111-1111", "ISBN 978-3-16-148410-0"],
)
def test_card_lookalikes_kept(masker: PiiMasker, text: str) -> None:
    # 16 digits failing Luhn, mixed separators, an ISBN: not cards.
    assert masked(masker, text) == text


@pytest.mark.parametrize(
    "iban",
    ["DE89 3704 0044 0532 0130 00", "DE89370400440532013000", "GB29 NWBK 6016 1331 9268 19", "NL91ABNA0417164300"],
)
def test_iban_masked_once(masker: PiiMasker, iban: str) -> None:
    text, counts = masker.mask(f"IBAN {iban}, thanks")
    # An IBAN is not also masked (partly) as a phone or card.
    assert (text, counts) == ("IBAN <IBAN>, thanks", Counter({"IBAN": 1}))


def test_iban_failing_mod97_kept(masker: PiiMasker) -> None:
    assert masked(masker, "IBAN DE88 3704 0044 0532 0130 00") == "IBAN DE88 3704 0044 0532 0130 00"


def test_iban_stops_at_its_length(masker: PiiMasker) -> None:
    assert masked(masker, "DE89 3704 0044 0532 0130 00 AB") == "<IBAN> AB"


@pytest.mark.parametrize(
    "ip", ["10.0.0.7", "203.0.113.9", "255.255.255.255", "2001:db8::1", "fe80::1ff:fe23:4567:890a%eth0",
           "2001:0db8:85a3:0000:0000:8a2e:0370:7334", "::ffff:192.0.2.128"]
)
def test_ip_masked(masker: PiiMasker, ip: str) -> None:
    assert masked(masker, f"from {ip} at noon") == "from <IP_ADDRESS> at noon"


@pytest.mark.parametrize(
    "text", ["1.2.3.4.5", "v1.2.3.4", "256.1.1.1", "version 1.2.3.4", "Chrome/120.0.0.0", "arr[::2]",
             "std::vector", "12:30:45", "MAC 00:1A:2B:3C:4D:5E"]
)
def test_ip_lookalikes_kept(masker: PiiMasker, text: str) -> None:
    assert masked(masker, text) == text


def test_ip_range_masks_both_ends(masker: PiiMasker) -> None:
    assert masked(masker, "10.0.0.1-10.0.0.9") == "<IP_ADDRESS>-<IP_ADDRESS>"


JWT = "eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiIxMjM0NTY3ODkwIn0.dozjgNryP4J3jVmNHl0w5N_XgL0n3I9PlFUP0THsR8U"


@pytest.mark.parametrize(
    "key",
    [
        "sk-" + "aB3" * 16, "sk-proj-" + "Xy9_" * 16, "sk-ant-api03-" + "q1W-" * 20, "AKIAIOSFODNN7EXAMPLE",
        "ghp_" + "a1B2" * 9, "github_pat_11ABCDEFG0123456789_abcdefghijklmnopqrstuvwxyz0123456789ABCDEFGHIJKLMNOPQ",
        "xoxb-123456789012-1234567890123-AbCdEfGhIjKlMnOpQrStUvWx", "AIza" + "SyA1b2C3d4E5f6G7h8I9j0K1l2M3n4O5p6Q",
        JWT, "sk_live_" + "4eC39HqLyjWDarjtT1zdp7dc", "hf_" + "AbCdEfGhIjKlMnOpQrStUvWxYz01234567",
    ],
)
def test_api_key_masked(masker: PiiMasker, key: str) -> None:
    assert masked(masker, f"my key is {key}, why 401?") == "my key is <API_KEY>, why 401?"


@pytest.mark.parametrize(
    "text, expected",
    [
        ("Authorization: Bearer xyz", "Authorization: Bearer <API_KEY>"),
        (f"sent Bearer {JWT} upstream", "sent Bearer <API_KEY> upstream"),
        ('client = OpenAI(api_key="abcd1234efgh5678ijkl")', 'client = OpenAI(api_key="<API_KEY>")'),
    ],
)
def test_bearer_and_assignment_keep_the_name(masker: PiiMasker, text: str, expected: str) -> None:
    assert masked(masker, text) == expected


@pytest.mark.parametrize(
    "text",
    ["I use sk-learn-compatible-estimators", "a risk-free rate", "the bearer of bad news",
     "api_key = os.environ['OPENAI_API_KEY']", "monkey: abcd1234efgh5678ijkl", "eyJhbGciOiJIUzI1NiJ9 alone"],
)
def test_key_lookalikes_kept(masker: PiiMasker, text: str) -> None:
    assert masked(masker, text) == text


# ------------------------------------------------------------ API and overlaps
def test_mask_counts_per_type(masker: PiiMasker) -> None:
    text, counts = masker.mask("a@example.com, b@example.org, 10.0.0.1")
    assert text == "<EMAIL>, <EMAIL>, <IP_ADDRESS>"
    assert counts == Counter({"EMAIL": 2, "IP_ADDRESS": 1})


def test_clean_text_is_returned_as_is(masker: PiiMasker) -> None:
    text = "How do I reset my password? It broke after the 2.14 upgrade."
    out, counts = masker.mask(text)
    assert out is text and not counts


def test_find_is_sorted_and_never_overlaps(masker: PiiMasker) -> None:
    findings = masker.find(f"key sk-proj-{'4111111111111111' * 2}AbC and +49 30 901820 and x@y.io")
    assert [f.type for f in findings] == ["API_KEY", "PHONE", "EMAIL"]
    assert all(a.end <= b.start for a, b in zip(findings, findings[1:]))
    assert isinstance(findings[0], Finding)


def test_masking_is_idempotent(masker: PiiMasker) -> None:
    # The tokens themselves must never look like PII.
    for row in load_corpus():
        once = masked(masker, row["text"])
        assert masked(masker, once) == once, row["text"]


# ------------------------------------------------------------ user patterns
def test_user_pattern_masked_with_upper_name() -> None:
    m = PiiMasker({"employee_id": r"EMP-[0-9]{6}"})
    assert m.mask("ask EMP-004211 or EMP-000001") == ("ask <EMPLOYEE_ID> or <EMPLOYEE_ID>", Counter(EMPLOYEE_ID=2))


def test_user_pattern_wins_overlaps_and_pii_group_limits_the_mask() -> None:
    m = PiiMasker({"PATIENT": r"patient (?P<pii>[0-9]{10})"})
    # Without the user pattern this would be a (compact, trunk-0) phone.
    assert m.mask("patient 0123456789 admitted")[0] == "patient <PATIENT> admitted"


@pytest.mark.parametrize(
    "patterns, message",
    [
        ({"bad": "(unclosed"}, "'bad' is not a valid regex"),
        ({"star": "a*"}, "'star' matches the empty string"),
        ({"1st": "x"}, "name '1st'"),
        ({"nonstr": 5}, "'nonstr' is not a valid regex"),
    ],
)
def test_invalid_user_patterns_name_the_pattern(patterns: dict, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        PiiMasker(patterns)


def test_patterns_from_env_json() -> None:
    patterns = parse_patterns('{"TICKET": "TCK-[0-9]{6}"}')
    assert PiiMasker(patterns).mask("see TCK-123456")[0] == "see <TICKET>"
    assert parse_patterns("  ") == {}
    with pytest.raises(ValueError, match="not valid JSON"):
        parse_patterns("{TICKET: x}")
    with pytest.raises(ValueError, match="JSON object"):
        parse_patterns('["TCK-[0-9]+"]')


# ------------------------------------------------------------ spans
def test_mask_span_masks_text_fields_and_attribute_values(masker: PiiMasker) -> None:
    span = {
        "trace_id": "4bf92f3577b34da6a3ce929d0e0e4736",
        "input": '[{"role": "user", "content": "I am eve@example.com"}]',
        "output": None,
        "status_message": "upstream 10.1.2.3 refused",
        "attributes": {"client.ip": "203.0.113.9", "user.email": "x@example.org", "http.route": "/v1/chat",
                       "note": None},
    }
    before = json.dumps(span, sort_keys=True)
    counts: Counter[str] = Counter()
    out = masker.mask_span(span, counts)
    assert out["input"] == '[{"role": "user", "content": "I am <EMAIL>"}]'
    assert out["output"] is None
    assert out["status_message"] == "upstream <IP_ADDRESS> refused"
    assert out["attributes"] == {"client.ip": "<IP_ADDRESS>", "user.email": "<EMAIL>", "http.route": "/v1/chat",
                                 "note": None}
    assert out["trace_id"] == span["trace_id"]
    assert counts == Counter({"EMAIL": 2, "IP_ADDRESS": 2})
    assert json.dumps(span, sort_keys=True) == before  # the input span is not modified


def test_mask_span_credential_attributes_masked_whole(masker: PiiMasker) -> None:
    out = masker.mask_span({"attributes": {"http.request.header.authorization": "Bearer abc",
                                           "db.password": "hunter2", "gen_ai.usage.input_tokens": "812"}})
    assert out["attributes"] == {"http.request.header.authorization": "Bearer <API_KEY>",
                                 "db.password": "<API_KEY>", "gen_ai.usage.input_tokens": "812"}


def test_mask_span_without_attributes(masker: PiiMasker) -> None:
    assert masker.mask_span({"input": "hi", "output": "hello"}) == {"input": "hi", "output": "hello"}


# ------------------------------------------------------------ gates lose nothing
def reference_spans(text: str) -> list[tuple[int, int, str]]:
    """Every built-in detector over the whole text: no gates, no windows."""
    found: list = []
    for regex in (pii._SK, pii._SLACK, pii._GITLAB, pii._GITHUB, pii._HF, pii._JWT, pii._AWS_GOOGLE):
        pii._run(found, 1, "API_KEY", regex, pii._key_ok, text)
    pii._run(found, 1, "API_KEY", pii._STRIPE, pii._stripe_ok, text)
    lower = text.lower()
    for m in pii._BEARER.finditer(lower):
        span = pii._bearer_ok(lower, m)
        if span:
            found.append((1, span[0] - span[1], *span, "API_KEY"))
    pii._assigned(text, lower, found)
    pii._emails(text, found)
    pii._run(found, 3, "IBAN", pii._IBAN, pii._iban_ok, text)
    pii._run(found, 4, "CREDIT_CARD", pii._CARD, pii._card_ok, text)
    pii._run(found, 5, "IP_ADDRESS", pii._IPV4, pii._ipv4_ok, text)
    pii._run(found, 5, "IP_ADDRESS", pii._IPV6, pii._ipv6_ok, text)
    pii._run(found, 6, "PHONE", pii._PHONE_INTL, pii._intl_ok, text)
    pii._run(found, 6, "PHONE", pii._PHONE_NANP, pii._nanp_ok, text)
    pii._run(found, 6, "PHONE", pii._PHONE_TRUNK, pii._trunk_ok, text)
    return pii._resolve(found) if found else []


def test_fast_path_finds_what_a_full_scan_finds(masker: PiiMasker) -> None:
    texts = [row["text"] for row in load_corpus()]
    # Also shuffle pieces together, so PII lands near window edges and next
    # to other numbers.
    rnd = random.Random(7)
    for _ in range(300):
        texts.append(" ".join(rnd.choice(texts)[: rnd.randint(5, 80)] for _ in range(3)))
    for text in texts:
        assert masker._spans(text) == reference_spans(text), text


# ------------------------------------------------------------ corpus
def load_corpus() -> list[dict]:
    return [json.loads(line) for line in CORPUS.read_text(encoding="utf-8").splitlines() if line.strip()]


def occurrences(text: str, value: str) -> list[tuple[int, int]]:
    spans, i = [], text.find(value)
    while i != -1:
        spans.append((i, i + len(value)))
        i = text.find(value, i + 1)
    return spans


def corpus_metrics(masker: PiiMasker) -> tuple[dict[str, dict[str, float]], list[str]]:
    """Recall and precision per type and overall, and the failing lines.

    Recall: a listed PII substring no longer occurs in the masked text.
    Precision: a masked span is right when it is exactly a listed substring
    of the line's type; anything masked in a negative line is wrong.
    """
    items: Counter[str] = Counter()
    recalled: Counter[str] = Counter()
    predicted: Counter[str] = Counter()
    correct: Counter[str] = Counter()
    failures: list[str] = []
    for row in load_corpus():
        text, kind = row["text"], row["type"]
        findings = masker.find(text)
        out = masker.mask(text)[0]
        expected = {span for value in row["pii"] for span in occurrences(text, value)}
        for value in row["pii"]:
            items[kind] += 1
            recalled[kind] += value not in out
        for f in findings:
            predicted[f.type] += 1
            correct[f.type] += f.type == kind and (f.start, f.end) in expected
        want = text
        for value in sorted(row["pii"], key=len, reverse=True):
            want = want.replace(value, f"<{kind}>")
        if out != want:
            failures.append(f"{kind}: {text!r}\n   got  {out!r}\n   want {want!r}")
    table: dict[str, dict[str, float]] = {}
    for kind in (*PII_TYPES, "overall"):
        n_items = sum(items.values()) if kind == "overall" else items[kind]
        n_recalled = sum(recalled.values()) if kind == "overall" else recalled[kind]
        n_pred = sum(predicted.values()) if kind == "overall" else predicted[kind]
        n_correct = sum(correct.values()) if kind == "overall" else correct[kind]
        table[kind] = {
            "items": n_items,
            "recall": n_recalled / n_items if n_items else 1.0,
            "masked": n_pred,
            "precision": n_correct / n_pred if n_pred else 1.0,
        }
    return table, failures


def format_table(table: dict[str, dict[str, float]], n_lines: int, n_negative: int) -> str:
    lines = [f"PII corpus: {n_lines} lines, {n_negative} negatives",
             f"{'type':<12} {'items':>5} {'recall':>7} {'masked':>6} {'precision':>9}"]
    for kind, row in table.items():
        lines.append(f"{kind:<12} {row['items']:>5} {row['recall']:>7.3f} {row['masked']:>6} {row['precision']:>9.3f}")
    return "\n".join(lines)


def test_corpus_shape() -> None:
    rows = load_corpus()
    kinds = Counter(row["type"] for row in rows)
    assert sum(n for k, n in kinds.items() if k) >= 200 and kinds[None] >= 200
    assert all(kinds[k] >= 30 for k in PII_TYPES), kinds
    for row in rows:
        assert all(value in row["text"] for value in row["pii"]), row
        assert bool(row["pii"]) == (row["type"] is not None), row


def test_corpus_recall_and_precision(masker: PiiMasker) -> None:
    rows = load_corpus()
    table, failures = corpus_metrics(masker)
    report = format_table(table, len(rows), sum(row["type"] is None for row in rows))
    print("\n" + report)
    detail = report + "\n" + "\n".join(failures[:20])
    assert table["overall"]["recall"] >= 0.97, detail
    assert table["overall"]["precision"] >= 0.97, detail
    for kind in PII_TYPES:
        assert table[kind]["recall"] >= 0.9, detail
        assert table[kind]["precision"] >= 0.9, detail


# ------------------------------------------------------------ speed
def typical_spans(n: int) -> list[dict]:
    """Spans like a support bot's: ~300-char payloads, 1 in 10 with PII."""
    rnd = random.Random(11)
    prompts = [
        "How do I rotate the credentials for my staging cluster? It started failing after the 2.14 upgrade "
        "yesterday around 14:30 and the dashboard shows error E1042 for every deploy since then.",
        "Summarize the following meeting notes in three bullet points: the team agreed to ship the new "
        "onboarding flow next sprint, postpone the billing migration, and hire two more engineers.",
        "Translate to German: 'Your subscription renews on 2025-07-01. You can cancel anytime from the "
        "billing page; refunds are processed within 5-7 business days.'",
        "Write a Python function that parses ISO dates like 2024-06-01T12:00:00Z and returns the weekday; "
        "include type hints and a docstring, and keep it under 20 lines.",
    ]
    pii_prompts = [
        "My order 48291537 from 2025-05-28 has not arrived yet, can you check? You can reach me at "
        "maria.lopez@example.com or +34 612 345 678. The parcel was sent to my office address.",
        "Please refund card 4111 1111 1111 1111 for the duplicate charge of $49.99 on May 3; my account "
        "email is john.doe@example.org and the invoice number is INV-88231.",
    ]
    outputs = [
        "To rotate credentials, open Settings > Security, choose the staging cluster and click 'Rotate "
        "keys'. Existing sessions stay valid for 15 minutes, so deployments are not interrupted. If the 2.14 "
        "upgrade broke the CLI, update it with pip install -U acme-cli and log in again.",
        "- Ship the new onboarding flow next sprint.\n- Postpone the billing migration until the audit is "
        "done.\n- Open two engineering positions; the hiring manager owns the job description and loop.",
        "I'm sorry for the delay. The order shipped on May 29 and is currently in transit; the carrier "
        "expects delivery within 2 business days. I have noted your contact details for updates.",
    ]
    spans = []
    for i in range(n):
        prompt = rnd.choice(pii_prompts) if i % 10 == 0 else rnd.choice(prompts)
        spans.append({
            "trace_id": f"{i:032x}", "span_id": f"{i:016x}", "name": "chat gpt-4o-mini", "status": "ok",
            "status_message": None,
            "input": json.dumps([{"role": "user", "content": prompt}]),
            "output": rnd.choice(outputs),
            "attributes": {"gen_ai.request.top_p": "1.0", "http.route": "/v1/chat", "llm.vendor": "openai",
                           "user.tier": rnd.choice(["free", "pro", "team"])},
        })
    return spans


def test_throughput_on_typical_spans(masker: PiiMasker) -> None:
    spans = typical_spans(5000)
    for span in spans[:500]:  # warm up
        masker.mask_span(span)
    best = 0.0
    for _ in range(3):
        t0 = time.perf_counter()
        for span in spans:
            masker.mask_span(span)
        best = max(best, len(spans) / (time.perf_counter() - t0))
    chars = sum(len(s["input"]) + len(s["output"]) for s in spans) / len(spans)
    print(f"\nPII masking: {best:,.0f} spans/s on one core (payload ~{chars:.0f} chars/span, 1 in 10 with PII)")
    # The target is 50k/s; the assert leaves room for slow, shared CI runners.
    assert best >= 10_000
