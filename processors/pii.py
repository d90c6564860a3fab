"""Mask PII in LLM span payloads before anything is stored or forwarded.

================  =================  ===========================================
type              token              checked beyond the regex
================  =================  ===========================================
``API_KEY``       ``<API_KEY>``      known prefix or JWT shape; random-looking
``EMAIL``         ``<EMAIL>``        TLD is letters and not an image suffix
``IBAN``          ``<IBAN>``         registry length per country, mod-97
``CREDIT_CARD``   ``<CREDIT_CARD>``  13-19 digits, issuer prefix, Luhn
``IP_ADDRESS``    ``<IP_ADDRESS>``   IPv4 octets 0-255; IPv6 via ``ipaddress``
``PHONE``         ``<PHONE>``        +CC, NANP or trunk-0 shape; digit count
user ``NAME``     ``<NAME>``         the user's regex only
================  =================  ===========================================

Only the standard library: this runs on every span, so there is no model and
no heavy dependency. Each detector runs only when a cheap test shows the text
could hold what it accepts (an ``@``, a run of 7+ digits and separators, a
key prefix...), so skipping loses nothing. The one approximation: an IBAN is
looked for only in text with such a digit run, which real account numbers
have. See ``docs/pii.md`` for measured precision, recall and speed.
"""
from __future__ import annotations

import ipaddress
import json
import re
from bisect import bisect_right
from collections import Counter, OrderedDict
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

__all__ = ["Finding", "PiiMasker", "PII_TYPES", "parse_patterns"]

PII_TYPES = ("API_KEY", "EMAIL", "IBAN", "CREDIT_CARD", "IP_ADDRESS", "PHONE")

# Lower wins an overlap: a key prefix or a checksum is stronger evidence than
# "digits with separators", so an IBAN is never also read as a phone.
_PRIORITY = {"API_KEY": 1, "EMAIL": 2, "IBAN": 3, "CREDIT_CARD": 4, "IP_ADDRESS": 5, "PHONE": 6}
_USER_PRIORITY = 0

# (priority, -length, start, end, type): sorting it gives the resolve order.
_Candidate = tuple[int, int, int, int, str]
# A validator gets the text and the match and returns the (start, end) to
# mask, or None to reject. A range lets "Bearer <token>" mask only the token
# and an IBAN drop a word the regex glued onto its end.
_Validator = Callable[[str, "re.Match[str]"], "tuple[int, int] | None"]


@dataclass(frozen=True, slots=True)
class Finding:
    """One detected PII value: ``text[start:end]`` is of ``type``.

    >>> Finding(4, 21, "EMAIL").type
    'EMAIL'
    """

    start: int
    end: int
    type: str


# ---------------------------------------------------------------- API keys
# Key regexes start with their literal prefix so `re` can jump to it; the
# "not glued to a longer token" check is done on the few matches instead.
_KEY_CHARS = frozenset("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789_-")
_END_KEY = r"(?![A-Za-z0-9_\-])"
_JWT = re.compile(rf"eyJ[A-Za-z0-9_\-]{{10,}}\.eyJ[A-Za-z0-9_\-]{{10,}}\.[A-Za-z0-9_\-]*{_END_KEY}")
_SK = re.compile(rf"sk-[A-Za-z0-9_\-]{{20,}}{_END_KEY}")  # OpenAI sk-/sk-proj-, Anthropic sk-ant-
_STRIPE = re.compile(rf"k_(?:live|test)_[A-Za-z0-9]{{16,}}{_END_KEY}")  # sk_/rk_, see _stripe_ok
_AWS_GOOGLE = re.compile(rf"A(?:[KS]IA[0-9A-Z]{{16}}|Iza[0-9A-Za-z_\-]{{35}}){_END_KEY}")
_GITHUB = re.compile(rf"g(?:h[pousr]_[A-Za-z0-9]{{36,255}}|ithub_pat_[A-Za-z0-9_]{{22,255}}){_END_KEY}")
_HF = re.compile(rf"hf_[A-Za-z0-9]{{30,}}{_END_KEY}")
_SLACK = re.compile(rf"xox[abeoprs]-[A-Za-z0-9\-]{{10,}}{_END_KEY}")
_GITLAB = re.compile(rf"glpat-[A-Za-z0-9_\-]{{20,}}{_END_KEY}")
_DIGIT = re.compile(r"[0-9]")


def _random_looking(value: str) -> bool:
    # A digit or both cases; checked with C-speed calls, because a regex
    # like "[a-z].*[A-Z]" rescans to the end from every letter (quadratic).
    return _DIGIT.search(value) is not None or (value.lower() != value and value.upper() != value)


def _key_ok(text: str, m: re.Match[str]) -> tuple[int, int] | None:
    start = m.start()
    if start and text[start - 1] in _KEY_CHARS:
        return None
    # "sk-" also starts slugs like "sk-learn-compatible-estimators"; a real
    # key body is random, so it has a digit or mixed case.
    if text.startswith("sk-", start) and not _random_looking(m.group()[3:]):
        return None
    return m.span()


def _stripe_ok(text: str, m: re.Match[str]) -> tuple[int, int] | None:
    # The regex starts at "k_" so `re` can jump to a literal; the s or r
    # before it is checked here.
    start = m.start() - 1
    if start < 0 or text[start] not in "sr" or (start and text[start - 1] in _KEY_CHARS):
        return None
    return start, m.end()


# Bearer tokens and `api_key = "..."` assignments are matched on
# text.lower() when that keeps every index (true for nearly all text): a
# lower-case literal lets `re` jump straight to it, where (?i) or [Bb] makes
# it test every character. The masked value is cut from the original text.
_BEARER = re.compile(r"bearer[ \t]+([a-z0-9._~+/\-]+=*)")
# For the rare text whose lower() changes length ("İ" -> "i̇"): ASCII-only
# lowering keeps indices, at Python speed.
_ASCII_LOWER = {c: c + 32 for c in range(ord("A"), ord("Z") + 1)}
_AUTH_HEADER = re.compile(r"authorization[\"']?\s*[:=]\s*[\"']?\Z")


def _bearer_ok(lower: str, m: re.Match[str]) -> tuple[int, int] | None:
    start = m.start()
    if start and lower[start - 1].isalnum():
        return None
    token = m.group(1)
    # In a header any token is a credential; in prose "bearer" is a word
    # ("bearer of bad news"), so there it must look random and long.
    if _AUTH_HEADER.search(lower, max(0, start - 24), start) or (
        len(token) >= 16 and _DIGIT.search(token) is not None
    ):
        return m.span(1)
    return None


_ASSIGNED_VALUE = r"[\"']?[ \t]*[:=][ \t]*[\"']?([a-z0-9_\-./+]{16,}=*)"
# Name endings -> what must come right before them: "api_key", "x-api-key",
# "secret_key", "access_token", "client_secret"... but not "monkey: ...".
_ASSIGNED = (
    ("key", re.compile("key" + _ASSIGNED_VALUE), ("api", "secret")),
    ("token", re.compile("token" + _ASSIGNED_VALUE), ("api", "access", "auth")),
    ("secret", re.compile("secret" + _ASSIGNED_VALUE), ("client",)),
)


def _assigned(text: str, lower: str, found: list[_Candidate]) -> None:
    for word, regex, names in _ASSIGNED:
        if word not in lower:
            continue
        for m in regex.finditer(lower):
            before = lower[max(0, m.start() - 8) : m.start()].rstrip("_-")
            if not before.endswith(names):
                continue
            start, end = m.span(1)
            value = text[start:end]
            # `api_key = os.environ["X"]` or `api_key: "<your key here>"` are
            # code, not secrets: a literal secret mixes letters and digits.
            if _DIGIT.search(value) is not None and value.upper() != value.lower():
                found.append((1, start - end, start, end, "API_KEY"))


# -------------------------------------------------------------------- email
# The local part is matched on the reversed text, anchored at the '@': a
# forward regex would have to try every word start before it.
_EMAIL_LOCAL_REVERSED = re.compile(r"[\w.%+\-]{1,65}")
_EMAIL_DOMAIN = re.compile(
    r"(?:[^\W_](?:[\w\-]{0,61}[^\W_])?\.)+"
    # "logo@2x.png" is a retina asset name, not an address.
    r"(?!(?:png|jpe?g|gif|svg|webp|ico)\b)[^\W\d_]{2,24}(?![\w\-])"
)


def _emails(text: str, out: list[_Candidate]) -> None:
    reversed_text = None
    at = text.find("@")
    while at != -1:
        domain = _EMAIL_DOMAIN.match(text, at + 1)
        if domain is not None:
            if reversed_text is None:
                reversed_text = text[::-1]
            local = _EMAIL_LOCAL_REVERSED.match(reversed_text, len(text) - at)
            # RFC 5321 caps the local part at 64 characters.
            if local is not None and local.end() - local.start() <= 64:
                start = at - (local.end() - local.start())
                end = domain.end()
                out.append((_PRIORITY["EMAIL"], start - end, start, end, "EMAIL"))
        at = text.find("@", at + 1)


# --------------------------------------------------------------------- IBAN
# Lengths from the SWIFT IBAN registry: a wrong length is the cheapest reject
# and tells where the IBAN ends when a word follows it ("... 00 AB").
_IBAN_LENGTHS = {
    "AD": 24, "AE": 23, "AL": 28, "AT": 20, "AZ": 28, "BA": 20, "BE": 16, "BG": 22,
    "BH": 22, "BI": 27, "BR": 29, "BY": 28, "CH": 21, "CR": 22, "CY": 28, "CZ": 24,
    "DE": 22, "DJ": 27, "DK": 18, "DO": 28, "EE": 20, "EG": 29, "ES": 24, "FI": 18,
    "FK": 18, "FO": 18, "FR": 27, "GB": 22, "GE": 22, "GI": 23, "GL": 18, "GR": 27,
    "GT": 28, "HR": 21, "HU": 28, "IE": 22, "IL": 23, "IQ": 23, "IR": 26, "IS": 26,
    "IT": 27, "JO": 30, "KW": 30, "KZ": 20, "LB": 28, "LC": 32, "LI": 21, "LT": 20,
    "LU": 20, "LV": 21, "LY": 25, "MC": 27, "MD": 24, "ME": 22, "MK": 19, "MN": 20,
    "MR": 27, "MT": 31, "MU": 30, "NI": 28, "NL": 18, "NO": 15, "OM": 23, "PK": 24,
    "PL": 28, "PS": 29, "PT": 25, "QA": 29, "RO": 24, "RS": 22, "RU": 33, "SA": 24,
    "SC": 31, "SD": 18, "SE": 24, "SI": 19, "SK": 24, "SM": 27, "SO": 23, "ST": 25,
    "SV": 28, "TL": 23, "TN": 24, "TR": 26, "UA": 29, "VA": 22, "VG": 24, "XK": 20,
    "YE": 30,
}  # fmt: skip
_IBAN = re.compile(r"[A-Z](?<![A-Za-z0-9][A-Z])[A-Z][0-9]{2}(?: ?[A-Z0-9]){11,31}")


def _iban_ok(text: str, m: re.Match[str]) -> tuple[int, int] | None:
    value = m.group()
    length = _IBAN_LENGTHS.get(value[:2])
    if length is None:
        return None
    # The IBAN ends at its `length`-th alphanumeric, whatever the regex
    # glued on after it; the next character must not continue a word.
    seen = 0
    for i, c in enumerate(value):
        if c != " ":
            seen += 1
            if seen == length:
                end = m.start() + i + 1
                break
    else:
        return None
    if end < len(text) and text[end].isalnum():
        return None
    compact = text[m.start() : end].replace(" ", "")
    # ISO 13616: move the first four to the end, letters become 10..35
    # (int(c, 36) does exactly that), and the number mod 97 must be 1.
    rearranged = compact[4:] + compact[:4]
    if int("".join(str(int(c, 36)) for c in rearranged)) % 97 != 1:
        return None
    return m.start(), end


# -------------------------------------------------------------- credit card
_CARD = re.compile(
    r"[0-9](?<![\w.\-/+][0-9])(?<![0-9][ .\-/][0-9])(?:[ \-]?[0-9]){12,18}(?!\w)(?![ .\-/]?[0-9])"
)
_CARD_SEPARATOR = re.compile(r"[ \-]")


def _luhn_ok(digits: str) -> bool:
    total = 0
    for i, c in enumerate(reversed(digits)):
        d = ord(c) - 48
        if i % 2:
            d = d * 2 - 9 if d > 4 else d * 2
        total += d
    return total % 10 == 0


def _card_ok(text: str, m: re.Match[str]) -> tuple[int, int] | None:
    value = m.group()
    groups = _CARD_SEPARATOR.split(value)
    if len(groups) > 1:
        # Cards are printed 4-4-4-4, 4-6-5, 4-6-4, 4-3-3-3 or 4-4-4-4-3 with
        # one kind of separator; "978-3-16-148410-0" (an ISBN) is not a card.
        if len(set(_CARD_SEPARATOR.findall(value))) != 1 or len(groups[0]) != 4:
            return None
        if any(not 3 <= len(g) <= 6 for g in groups):
            return None
    digits = "".join(groups)
    # Issuer prefixes (Visa 4, Mastercard 5 and 2221-2720, Amex/Diners/JCB
    # 3, Discover/UnionPay/Maestro 6, JCB 2131 and 1800): Luhn alone passes
    # one number in ten, e.g. 13-digit millisecond timestamps ("17...").
    if digits[0] not in "3456" and not (2221 <= int(digits[:4]) <= 2720 or digits[:4] in ("2131", "1800")):
        return None
    return m.span() if _luhn_ok(digits) else None


# -------------------------------------------------------------- IP address
# "4.2.0.118-beta" is a version; "10.0.0.1-10.0.0.9" is a range of addresses.
_IPV4 = re.compile(r"[0-9](?<![\w.][0-9])[0-9]{0,2}(?:\.[0-9]{1,3}){3}(?!\w)(?!\.[0-9])(?!-[A-Za-z])")
_VERSION_WORDS = ("version ", "versión ", "ver. ", "release ", "build ", "firmware ")


def _ipv4_ok(text: str, m: re.Match[str]) -> tuple[int, int] | None:
    for octet in m.group().split("."):
        if int(octet) > 255 or (len(octet) > 1 and octet[0] == "0"):
            return None
    start = m.start()
    # "version 1.2.3.4" and "Chrome/120.0.0.0" (a user agent) are versions;
    # "http://10.0.0.1" is an address.
    if text[max(0, start - 9) : start].lower().endswith(_VERSION_WORDS):
        return None
    if start >= 2 and text[start - 1] == "/" and text[start - 2].isalnum():
        return None
    return m.span()


_HEX = "[0-9A-Fa-f]"
# Every IPv6 address has two colons at most four hex digits apart ("::" or
# ":db8:"); JSON's `"role": "user"` has not, so this gate is cheap and rare.
_IPV6_GATE = re.compile(rf":{_HEX}{{0,4}}:")
_IPV6 = re.compile(
    rf"(?<![\w:.])(?:(?:{_HEX}{{0,4}}:){{2,6}}[0-9]{{1,3}}(?:\.[0-9]{{1,3}}){{3}}"
    rf"|(?:{_HEX}{{0,4}}:){{2,7}}{_HEX}{{0,4}})"
    r"(?:%[0-9A-Za-z_.\-]+)?(?![\w:])(?!\.[0-9])"
)
_HEX_DIGIT = re.compile(_HEX)


def _ipv6_ok(text: str, m: re.Match[str]) -> tuple[int, int] | None:
    address = m.group().split("%", 1)[0]
    try:
        ipaddress.IPv6Address(address)
    except ValueError:
        return None
    # "::1", "a[1::2]" and "a::b" parse as IPv6 but are loopback or code; a
    # real address carries some hex (or an embedded IPv4).
    if "." not in address and len(_HEX_DIGIT.findall(address)) < 5:
        return None
    return m.span()


# -------------------------------------------------------------------- phone
# A phone is at least 7 characters of digits and separators; texts without
# such a run (most prose: "15 minutes", "v2.14") skip every numeric detector.
_DIGIT_RUN = re.compile(r"[0-9(+][0-9 ().\-/+]{5,}[0-9]")
# Room after a run of digits for a phone extension (" extension 123456")
# and the lookaheads that follow it.
_WINDOW_SLACK = 20
_EXT = r"(?P<ext>[ ]?(?:x|ext\.?|extension|#)[ ]?[0-9]{1,6})?"
# Not glued to a word or sign, and not the middle of a longer digit run.
_START = r"(?<![\w+.\-/])(?<![0-9][ .\-/])"
_END = r"(?!\w)(?![ .\-/]?[0-9])"
_PHONE_INTL = re.compile(
    r"\+(?<![\w+]\+)(?<![0-9][ .\-/]\+)[1-9][0-9]{0,3}"
    # "(+49) 30 901820": a ")" that closes a "(" opened right before the +.
    r"(?P<cc_close>(?<=\(\+[0-9])\)|(?<=\(\+[0-9]{2})\)|(?<=\(\+[0-9]{3})\))?"
    r"(?:[ .\-]?\(0\))?(?:[ .\-]?\([0-9]{1,5}\))?"
    rf"(?:[ .\-/]?[0-9]{{1,12}}){{1,6}}{_EXT}{_END}"
)
# NANP "(415) 555-0132", "1-800-555-0199", and the "(11) 91234-5678" shape
# of Brazil and others: an area code in parentheses, then 3-5 + 4 digits.
_PHONE_NANP = re.compile(
    rf"{_START}(?:(?:1[ .\-]|00?1[ .\-])?(?:\([0-9]{{3}}\)[ .\-]?|[0-9]{{3}}[ .\-])[0-9]{{3}}"
    rf"|\([1-9][0-9]{{1,3}}\)[ ]?[0-9]{{3,5}})[ .\-][0-9]{{4}}{_EXT}{_END}"
)
_PHONE_TRUNK = re.compile(
    rf"{_START}(?:\(0[0-9]{{1,4}}\)|0[0-9]{{1,4}})(?:[ .\-/]?[0-9]{{2,8}}){{1,5}}{_EXT}{_END}"
)
_PHONE_SEPARATOR = re.compile(r"[ .\-/()]")


def _digit_count(text: str, start: int, end: int) -> int:
    # str.count runs in C; a per-character Python loop would cost more than
    # the regex that found the number.
    return (end - start) - sum(text.count(c, start, end) for c in " .-/()+")


def _phone_digits(m: re.Match[str]) -> int:
    text = m.string
    start = m.start()
    end = m.start("ext") if m.group("ext") else m.end()
    # "+44 (0)20 ..." writes the trunk 0 that is dialled only nationally.
    return _digit_count(text, start, end) - text.count("(0)", start, end)


def _intl_ok(text: str, m: re.Match[str]) -> tuple[int, int] | None:
    # E.164 allows at most 15 digits; under 8 is a score or a UTC offset.
    if not 8 <= _phone_digits(m) <= 15:
        return None
    # "(+49) 30 901820": the opening parenthesis belongs to the number.
    return (m.start() - 1 if m.group("cc_close") else m.start()), m.end()


# The word before a national-format number tells an id from a phone:
# "Rechnung Nr. 0200 1234 56", "Serial: 0012-3456-7890" are not phones, but
# "Telefon-Nr. 030 901820" is. +CC numbers skip this: the + is evidence.
_ID_WORDS = frozenset(
    "# nr no nº n° id ref reference serial sku po order invoice ticket case tracking account "
    "aktenzeichen auftrag rechnung bestellung kunde commande facture pedido factura ordine fattura "
    "number nummer numéro número numero".split()
)
_PHONE_WORDS = (
    "tel", "phone", "fon", "fax", "mobil", "handy", "cell", "ruf", "call", "llam", "appel", "chiam", "sms",
)


def _after_id_word(text: str, start: int) -> bool:
    words = text[max(0, start - 32) : start].lower().replace("#", " # ").replace(":", " ").split()
    if not words:
        return False
    if any(w in " ".join(words[-2:]) for w in _PHONE_WORDS):
        return False
    last = words[-1].rstrip(".")
    return last in _ID_WORDS or last.endswith(("nummer", "zeichen"))


def _nanp_ok(text: str, m: re.Match[str]) -> tuple[int, int] | None:
    return None if _after_id_word(text, m.start()) else m.span()


def _trunk_ok(text: str, m: re.Match[str]) -> tuple[int, int] | None:
    if _after_id_word(text, m.start()):
        return None
    digits = _phone_digits(m)
    value = m.group()
    spaced = _PHONE_SEPARATOR.search(value) is not None
    if value.lstrip("(").startswith("00"):
        # 00 + country code is the international form; unspaced it is more
        # likely a zero-padded id ("0004829153").
        return m.span() if spaced and 10 <= digits <= 15 else None
    if not spaced:
        return m.span() if 10 <= digits <= 11 else None
    # National numbers with a trunk 0 have 9-12 digits; dotted or dashed
    # dates have 8 ("05.06.2024").
    return m.span() if 9 <= digits <= 12 else None


# ------------------------------------------------------------------ config
_NAME = re.compile(r"[A-Za-z][A-Za-z0-9_]*\Z")


def parse_patterns(raw: str | None) -> dict[str, str]:
    """Parse ``LLMPULSE_PII_PATTERNS``, a JSON object ``{"NAME": "regex"}``.

    Parameters
    ----------
    raw
        The variable's value; None or blank means no user patterns.

    Raises
    ------
    ValueError
        If the value is not a JSON object of strings.

    Examples
    --------
    >>> parse_patterns('{"TICKET": "TCK-[0-9]{6}"}')
    {'TICKET': 'TCK-[0-9]{6}'}
    >>> parse_patterns(None)
    {}
    """
    if raw is None or not raw.strip():
        return {}
    try:
        value = json.loads(raw)
    except json.JSONDecodeError as e:
        raise ValueError(f"LLMPULSE_PII_PATTERNS is not valid JSON: {e}") from e
    if not isinstance(value, dict) or not all(isinstance(v, str) for v in value.values()):
        raise ValueError('LLMPULSE_PII_PATTERNS must be a JSON object {"NAME": "regex", ...}')
    return value


# Attributes whose whole value is a credential, by the last segment of the
# key ("http.request.header.authorization"): a short "Bearer abc" there is
# as secret as a long one, but in free text it would not look like a key.
_SECRET_ATTRIBUTES = frozenset(
    "authorization proxy-authorization cookie set-cookie x-api-key api-key api_key apikey "
    "password passwd secret client_secret access_token refresh_token id_token".split()
)
_AUTH_SCHEME = re.compile(r"(?i:bearer|basic|token|digest)[ \t]+")


# Bounds of PiiMasker's memo of attribute keys and clean attribute values:
# ~1 MB at most. Longer values (ids, payload-like text) rarely repeat.
_MEMO_SIZE = 8192
_MEMO_MAX_LENGTH = 96
# PiiMasker's memo of recent clean payloads (input, output, status message).
_RECENT_TEXTS = 64
_RECENT_MAX_LENGTH = 16_384


def _mask_secret_attribute(value: str) -> str:
    # Keep the scheme ("Bearer <API_KEY>"), like the free-text detector.
    scheme = _AUTH_SCHEME.match(value)
    return (scheme.group() if scheme else "") + "<API_KEY>"


def _pii_group(text: str, m: re.Match[str]) -> tuple[int, int] | None:
    return m.span("pii") if m.group("pii") else None


class PiiMasker:
    """Find and mask PII in text and in whole spans.

    Parameters
    ----------
    extra_patterns
        User patterns, name -> regex. Matches are masked as ``<NAME>``
        (upper-cased) and win overlaps against the built-in detectors. If a
        regex has a group named ``pii``, only that group is masked.

    Raises
    ------
    ValueError
        If a name is not an identifier, or a regex does not compile or
        matches the empty string; the message names the pattern.

    Examples
    --------
    >>> masker = PiiMasker({"employee_id": r"EMP-[0-9]{6}"})
    >>> masker.mask("Mail ana@example.org about EMP-004211, card 4111 1111 1111 1111")[0]
    'Mail <EMAIL> about <EMPLOYEE_ID>, card <CREDIT_CARD>'
    >>> PiiMasker({"bad": "("})
    Traceback (most recent call last):
    ...
    ValueError: PII pattern 'bad' is not a valid regex: missing ), unterminated subpattern at position 0
    """

    def __init__(self, extra_patterns: Mapping[str, str] | None = None) -> None:
        user: list[tuple[str, re.Pattern[str], _Validator | None]] = []
        for name, pattern in (extra_patterns or {}).items():
            if not isinstance(name, str) or not _NAME.match(name):
                raise ValueError(f"PII pattern name {name!r} must be a letter, then letters, digits or _")
            try:
                regex = re.compile(pattern)
            except (re.error, TypeError) as e:
                raise ValueError(f"PII pattern {name!r} is not a valid regex: {e}") from e
            if regex.search("") is not None:
                # It would match between every two characters.
                raise ValueError(f"PII pattern {name!r} matches the empty string")
            user.append((name.upper(), regex, _pii_group if "pii" in regex.groupindex else None))
        self._user = tuple(user)
        self._tokens = {kind: f"<{kind}>" for kind in PII_TYPES}
        self._tokens.update((kind, f"<{kind}>") for kind, _, _ in user)
        # Attribute keys and short values repeat across spans ("http.route":
        # "/v1/chat", "server.address": "api.openai.com"): remember which
        # keys name a credential and which values hold no PII, so a repeat
        # costs a dict lookup instead of the detectors. Only clean values are
        # kept, so the memo never holds PII; both are cleared when full.
        self._secret_keys: dict[str, bool] = {}
        self._clean_values: dict[str, None] = {}
        # Within a trace the user's question is the input of the agent,
        # guardrail, retrieval and embedding spans alike, and spans of a
        # trace arrive together: the last few clean payloads catch ~30 % of
        # them at the cost of a hash. Clean only, so no PII is kept.
        self._recent_clean: OrderedDict[str, None] = OrderedDict()

    def find(self, text: str) -> list[Finding]:
        """Return the PII in ``text``, sorted by position, never overlapping.

        Examples
        --------
        >>> PiiMasker().find("ping 10.0.0.7 or bob@example.com")
        [Finding(start=5, end=13, type='IP_ADDRESS'), Finding(start=17, end=32, type='EMAIL')]
        """
        return [Finding(*s) for s in self._spans(text)]

    def mask(self, text: str) -> tuple[str, Counter[str]]:
        """Return ``text`` with PII replaced by type tokens, and counts per type.

        Examples
        --------
        >>> masked, counts = PiiMasker().mask("Call +44 20 7946 0958, Authorization: Bearer abc.def")
        >>> masked
        'Call <PHONE>, Authorization: Bearer <API_KEY>'
        >>> dict(counts)
        {'PHONE': 1, 'API_KEY': 1}
        """
        counts: Counter[str] = Counter()
        return self._mask(text, counts), counts

    def mask_span(
        self, span: Mapping[str, Any], counts: Counter[str] | None = None, *, copy: bool = True
    ) -> dict[str, Any]:
        """Return a copy of ``span`` with its free-text fields masked.

        ``input``, ``output``, ``status_message`` and every attribute value
        are masked; attribute keys and all other fields are copied as they
        are, and None stays None. An attribute whose key ends in a
        credential name (``...authorization``, ``...api_key``,
        ``...password``, ``...cookie``...) is masked whole as ``<API_KEY>``.

        Parameters
        ----------
        span
            A span record (a dict as decoded from the ``span`` schema).
        counts
            If given, the number of masked values per type is added to it
            (for metrics).
        copy
            False: mask ``span`` itself (a dict the caller owns, such as one
            just decoded) and return it; its ``attributes`` dict is replaced,
            never changed. Saves copying ~36 fields per span.

        Examples
        --------
        >>> span = {"input": "I am eve@example.com", "output": None,
        ...         "attributes": {"client.ip": "203.0.113.9"}}
        >>> PiiMasker().mask_span(span)
        {'input': 'I am <EMAIL>', 'output': None, 'attributes': {'client.ip': '<IP_ADDRESS>'}}
        """
        if counts is None:
            counts = Counter()
        out = dict(span) if copy else span
        recent = self._recent_clean
        for field in ("input", "output", "status_message"):
            value = out.get(field)
            if isinstance(value, str) and value and value not in recent:
                result = self._mask(value, counts)
                if result is value:
                    if len(value) <= _RECENT_MAX_LENGTH:
                        recent[value] = None
                        if len(recent) > _RECENT_TEXTS:
                            recent.popitem(last=False)
                else:
                    out[field] = result
        attributes = out.get("attributes")
        if attributes:
            masked = {}
            secret_keys, clean = self._secret_keys, self._clean_values
            for key, value in attributes.items():
                if isinstance(value, str) and value:
                    secret = secret_keys.get(key)
                    if secret is None:
                        secret = key.rsplit(".", 1)[-1].lower() in _SECRET_ATTRIBUTES
                        if len(secret_keys) >= _MEMO_SIZE:
                            secret_keys.clear()
                        secret_keys[key] = secret
                    if secret:
                        value = _mask_secret_attribute(value)
                        counts["API_KEY"] += 1
                    elif value not in clean:
                        result = self._mask(value, counts)
                        if result is value and len(value) <= _MEMO_MAX_LENGTH:
                            if len(clean) >= _MEMO_SIZE:
                                clean.clear()
                            clean[value] = None
                        value = result
                masked[key] = value
            out["attributes"] = masked
        return out

    # ------------------------------------------------------------ internals
    def _mask(self, text: str, counts: Counter[str]) -> str:
        spans = self._spans(text)
        if not spans:
            return text
        parts = []
        pos = 0
        for start, end, kind in spans:
            parts.append(text[pos:start])
            parts.append(self._tokens[kind])
            counts[kind] += 1
            pos = end
        parts.append(text[pos:])
        return "".join(parts)

    def _spans(self, text: str) -> list[tuple[int, int, str]]:
        found: list[_Candidate] = []
        for kind, regex, validate in self._user:
            _run(found, _USER_PRIORITY, kind, regex, validate, text)
        n = len(text)
        if n < 20:
            # Attribute values: every key is longer, and the rest needs an
            # '@', a ':' or a run of 7+ digits and separators; "1.0",
            # "openai", "/v1/chat" stop here.
            if n < 6 or ("@" not in text and ":" not in text and _DIGIT_RUN.search(text) is None):
                return _resolve(found) if found else []
        else:
            _keys(text, found)
        if "@" in text:
            _emails(text, found)
        first = None
        for run in _DIGIT_RUN.finditer(text):
            first = first or run
            _numeric(text, run, found)
        if first is not None:
            # An IBAN's account number is a run of digits; its country code
            # and bank letters start at most 34 characters before that.
            _run(found, 3, "IBAN", _IBAN, _iban_ok, text, max(0, first.start() - 34))
        if ":" in text:
            gate = _IPV6_GATE.search(text)
            if gate is not None:
                _run(found, 5, "IP_ADDRESS", _IPV6, _ipv6_ok, text, max(0, gate.start() - 40))
        return _resolve(found) if found else []


def _keys(text: str, found: list[_Candidate]) -> None:
    # Plain substring tests (C speed) pick the few key regexes worth running,
    # and each regex starts with a literal `re` can jump to: one alternation
    # over all prefixes would test every character of the text instead.
    # Each test is the literal every match of that regex contains (they are
    # case-sensitive), so a text failing it cannot match: skipping the call
    # saves ~0.4 us per regex, and "-", "_" and "A" are in most payloads.
    if "-" in text:
        if "sk-" in text:
            _run(found, 1, "API_KEY", _SK, _key_ok, text)
        if "xox" in text:
            _run(found, 1, "API_KEY", _SLACK, _key_ok, text)
        if "glpat" in text:
            _run(found, 1, "API_KEY", _GITLAB, _key_ok, text)
    if "_" in text:
        if "gh" in text or "github_pat_" in text:
            _run(found, 1, "API_KEY", _GITHUB, _key_ok, text)
        if "k_live_" in text or "k_test_" in text:
            _run(found, 1, "API_KEY", _STRIPE, _stripe_ok, text)
        if "hf_" in text:
            _run(found, 1, "API_KEY", _HF, _key_ok, text)
    if "eyJ" in text:
        _run(found, 1, "API_KEY", _JWT, _key_ok, text)
    if "A" in text and ("AKIA" in text or "ASIA" in text or "AIza" in text):
        _run(found, 1, "API_KEY", _AWS_GOOGLE, _key_ok, text)
    lower = text.lower()
    if len(lower) != len(text):
        lower = text.translate(_ASCII_LOWER)
    if "bearer" in lower:
        for m in _BEARER.finditer(lower):
            span = _bearer_ok(lower, m)
            if span is not None:
                found.append((1, span[0] - span[1], span[0], span[1], "API_KEY"))
    if "=" in text or ":" in text:
        _assigned(text, lower, found)


def _numeric(text: str, run: re.Match[str], found: list[_Candidate]) -> None:
    # Cards, IPv4s and phones lie inside one run of digits and separators
    # (plus a phone extension after it), so their regexes scan only that
    # window, and only when the run has enough digits for them: most runs
    # are dates and order numbers that no numeric detector could match.
    start, end = run.span()
    size = end - start
    window_end = min(len(text), end + _WINDOW_SLACK)
    has_dot = text.find(".", start, end) != -1
    if has_dot:
        _run(found, 5, "IP_ADDRESS", _IPV4, _ipv4_ok, text, start, window_end)
    if size < 9:
        return
    plus = text.find("+", start, end) != -1
    digits = _digit_count(text, start, end)
    if digits >= 13:
        _run(found, 4, "CREDIT_CARD", _CARD, _card_ok, text, start, window_end)
    if digits >= 10:
        _run(found, 6, "PHONE", _PHONE_NANP, _nanp_ok, text, start, window_end)
    if digits >= 8 and plus:
        _run(found, 6, "PHONE", _PHONE_INTL, _intl_ok, text, start, window_end)
    if digits >= 9 and text.find("0", start, end) != -1:
        _run(found, 6, "PHONE", _PHONE_TRUNK, _trunk_ok, text, start, window_end)


def _run(
    found: list[_Candidate],
    priority: int,
    kind: str,
    regex: re.Pattern[str],
    validate: _Validator | None,
    text: str,
    pos: int = 0,
    endpos: int | None = None,
) -> None:
    full = endpos is None or endpos >= len(text)
    for m in regex.finditer(text, pos) if full else regex.finditer(text, pos, endpos):
        if not full and m.end() == endpos:
            # A match ending right at a window's end saw a fake end of text
            # in its lookaheads: redo it on the whole text.
            m = regex.match(text, m.start())
            if m is None:
                continue
        span = validate(text, m) if validate is not None else m.span()
        if span is not None and span[1] > span[0]:
            found.append((priority, span[0] - span[1], span[0], span[1], kind))


def _resolve(found: list[_Candidate]) -> list[tuple[int, int, str]]:
    # Most specific detector first, then the longest match; anything that
    # overlaps an accepted match is dropped, so no character is masked twice.
    if len(found) == 1:
        _, _, start, end, kind = found[0]
        return [(start, end, kind)]
    # Accepted spans are disjoint, so kept sorted by start a bisect finds the
    # only two neighbours a candidate could overlap: O(n log n) even for a
    # 100 kB log full of addresses.
    starts: list[int] = []
    chosen: list[tuple[int, int, str]] = []
    for _, _, start, end, kind in sorted(found):
        i = bisect_right(starts, start)
        if (i and chosen[i - 1][1] > start) or (i < len(starts) and starts[i] < end):
            continue
        starts.insert(i, start)
        chosen.insert(i, (start, end, kind))
    return chosen
