"""PiiMasker.mask_span's memos (clean attribute values, credential keys, recent
clean payloads), in-place masking, and the literal gates in front of the key
detectors: none of them may change what is masked or counted."""
from __future__ import annotations

import copy
from collections import Counter
from datetime import UTC, datetime

import pytest

import processors.pii as pii
from processors.generator import TrafficModel
from processors.pii import PiiMasker
from schemas.samples import sample


def reference_mask_span(span: dict) -> tuple[dict, Counter]:
    """What mask_span must return, from the memo-free ``mask`` of a fresh masker."""
    masker, counts = PiiMasker(), Counter()
    out = dict(span)
    for field in ("input", "output", "status_message"):
        if isinstance(out.get(field), str):
            out[field], found = masker.mask(out[field])
            counts.update(found)
    if out.get("attributes"):
        masked = {}
        for key, value in out["attributes"].items():
            if isinstance(value, str) and value:
                if key.rsplit(".", 1)[-1].lower() in pii._SECRET_ATTRIBUTES:
                    value = pii._mask_secret_attribute(value)
                    counts["API_KEY"] += 1
                else:
                    value, found = masker.mask(value)
                    counts.update(found)
            masked[key] = value
        out["attributes"] = masked
    return out, counts


def test_memoised_masking_equals_memo_free_masking_on_generated_traffic():
    start = datetime(2026, 1, 1, tzinfo=UTC)
    spans = [s for trace in TrafficModel(seed=3, start=start).traces(300) for s in trace]
    masker = PiiMasker()
    for span in spans * 2:  # the second pass hits the memos
        counts = Counter()
        got = masker.mask_span(span, counts)
        want, want_counts = reference_mask_span(span)
        assert got == want
        assert counts == want_counts


def test_repeated_pii_is_masked_and_counted_every_time_and_never_memoised():
    masker = PiiMasker()
    span = sample("span", input="Ticket from ann@example.com about the invoice", output="ok",
                  attributes={"client.ip": "203.0.113.9", "http.route": "/v1/chat"})
    counts = Counter()
    for _ in range(3):
        out = masker.mask_span(span, counts)
        assert out["input"] == "Ticket from <EMAIL> about the invoice"
        assert out["attributes"] == {"client.ip": "<IP_ADDRESS>", "http.route": "/v1/chat"}
    assert counts == Counter({"EMAIL": 3, "IP_ADDRESS": 3})
    memos = set(masker._clean_values) | set(masker._recent_clean)
    assert "203.0.113.9" not in memos and span["input"] not in memos
    assert "/v1/chat" in masker._clean_values  # the clean value is what gets memoised


def test_credential_attribute_keys_are_masked_whole_on_every_span():
    masker, counts = PiiMasker(), Counter()
    for _ in range(3):
        span = sample("span", attributes={"http.request.header.Authorization": "Bearer abc", "app.user": "bob"})
        attrs = masker.mask_span(span, counts)["attributes"]
        assert attrs == {"http.request.header.Authorization": "Bearer <API_KEY>", "app.user": "bob"}
    assert counts["API_KEY"] == 3


def test_memos_are_bounded():
    masker = PiiMasker()
    for i in range(pii._MEMO_SIZE + 10):
        masker.mask_span({"input": f"plain words number{i} here and more words",
                          "attributes": {f"key.{i}": f"value{i}"}})
    assert len(masker._clean_values) <= pii._MEMO_SIZE
    assert len(masker._secret_keys) <= pii._MEMO_SIZE
    assert len(masker._recent_clean) <= pii._RECENT_TEXTS


def test_copy_false_masks_the_span_itself_and_replaces_attributes():
    masker = PiiMasker()
    attributes = {"client.ip": "203.0.113.9"}
    span = {"input": "mail eve@example.com", "output": None, "attributes": attributes}
    out = masker.mask_span(span, copy=False)
    assert out is span
    assert span["input"] == "mail <EMAIL>" and span["attributes"] == {"client.ip": "<IP_ADDRESS>"}
    assert attributes == {"client.ip": "203.0.113.9"}


def test_default_copy_leaves_the_input_unchanged():
    span = {"input": "mail eve@example.com", "attributes": {"client.ip": "203.0.113.9"}}
    before = copy.deepcopy(span)
    out = PiiMasker().mask_span(span)
    assert span == before and out["input"] == "mail <EMAIL>"


# Every key shape behind a literal gate in _keys, inside text long enough to
# reach the key detectors.
@pytest.mark.parametrize(
    "key",
    [
        "sk-" + "aB3" * 16, "ghp_" + "a1B2" * 9, "gho_" + "Z9y8" * 9,
        "github_pat_11ABCDEFG0123456789_abcdefghijklmnopqrstuvwxyz0123456789ABCDEFGHIJKLMNOPQ",
        "sk_live_" + "4eC39HqLyjWDarjtT1zdp7dc", "rk_test_" + "4eC39HqLyjWDarjtT1zdp7dc",
        "hf_" + "AbCdEfGhIjKlMnOpQrStUvWxYz01234567", "AKIAIOSFODNN7EXAMPLE", "ASIAIOSFODNN7EXAMPLE",
        "AIza" + "SyA1b2C3d4E5f6G7h8I9j0K1l2M3n4O5p6Q", "xoxb-123456789012-1234567890123-AbCdEfGhIjKlMnOpQrStUvWx",
        "glpat-" + "aB3dE6gH9jK2mN5pQ8sT",
        "eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiIxMjM0NTY3ODkwIn0.dozjgNryP4J3jVmNHl0w5N_XgL0n3I9PlFUP0THsR8U",
    ],
)
def test_gated_key_detectors_still_find_keys_in_long_text(key):
    text = f"here is the credential you asked for: {key} (do not share)"
    assert PiiMasker().mask(text)[0] == "here is the credential you asked for: <API_KEY> (do not share)"
