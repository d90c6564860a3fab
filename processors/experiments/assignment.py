"""Sticky, GrowthBook-compatible assignment of users to experiment variants.

One function decides every assignment, wherever it runs: the producer library
(before the LLM call), the assignment processor, and feature-flag lookups. It
is a pure function of (experiment definition, user id, user attributes), so
all of them agree without talking to each other.

The hash, the bucket ranges, the namespace check and the condition semantics
follow GrowthBook's SDKs (``growthbook`` on PyPI, ``core.py``), so a team that
moves an experiment from GrowthBook keeps every user in the same bucket.
See ``docs/experiments-assignment.md``.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping, Sequence
from datetime import date, datetime
from enum import StrEnum
from types import MappingProxyType
from typing import TYPE_CHECKING, Any, NamedTuple

import numpy as np

if TYPE_CHECKING:
    from processors.experiments.definitions import Experiment

__all__ = [
    "Assignment",
    "BatchAssignment",
    "CompiledExperiment",
    "Reason",
    "Targeting",
    "TargetingError",
    "assign",
    "assign_many",
    "bucket_hash",
    "bucket_ranges",
    "choose_variation",
    "fnv1a32",
    "in_namespace",
]

_OFFSET = 0x811C9DC5
_PRIME = 0x01000193
_MASK = 0xFFFFFFFF
# Masking after every unit costs a third of the loop. It can wait until the
# end because XOR with a unit only touches the low 16 bits and the product mod
# 2**32 depends only on the operands mod 2**32; but the unmasked int grows ~25
# bits per unit, so long strings mask every step to keep multiplications cheap.
_UNMASKED_MAX = 32


# --------------------------------------------------------------------- hashing


def _units(text: str) -> bytes | list[int]:
    """UTF-16 code units, as JavaScript's ``charCodeAt`` sees them."""
    if text.isascii():
        return text.encode()
    data = text.encode("utf-16-le", "surrogatepass")
    return [data[i] | (data[i + 1] << 8) for i in range(0, len(data), 2)]


def _fnv(state: int, units: bytes | list[int]) -> int:
    """Continue an FNV-1a 32 hash from ``state`` over ``units``."""
    prime = _PRIME
    if len(units) <= _UNMASKED_MAX:
        for unit in units:
            state = (state ^ unit) * prime
        return state & _MASK
    for unit in units:
        state = ((state ^ unit) * prime) & _MASK
    return state


def fnv1a32(text: str) -> int:
    """FNV-1a 32-bit hash of ``text`` over UTF-16 code units (GrowthBook's).

    Parameters
    ----------
    text
        Any string; ASCII hashes its bytes, anything else its UTF-16 code
        units, exactly like the JavaScript SDK's ``charCodeAt`` loop.

    Returns
    -------
    int
        0 .. 2**32 - 1.

    Examples
    --------
    >>> fnv1a32("")
    2166136261
    >>> fnv1a32("a")
    3826002220
    """
    return _fnv(_OFFSET, _units(text))


def bucket_hash(seed: str, value: str, version: int = 2) -> float:
    """GrowthBook's ``hash(seed, value, version)``: a uniform number in [0, 1).

    Parameters
    ----------
    seed
        Experiment seed (GrowthBook uses the experiment key when it is empty).
    value
        The user id (GrowthBook's hash attribute value).
    version
        1: ``fnv1a32(value + seed) % 1000 / 1000`` (1,000 buckets);
        2: ``fnv1a32(str(fnv1a32(seed + value))) % 10000 / 10000`` (10,000
        buckets, and no bias between experiments whose seeds share a suffix).

    Raises
    ------
    ValueError
        For any other version.

    Examples
    --------
    >>> bucket_hash("", "a", 1)
    0.22
    >>> bucket_hash("seed", "a", 2)
    0.0505
    """
    if version == 2:
        return fnv1a32(str(fnv1a32(seed + value))) % 10000 / 10000
    if version == 1:
        return fnv1a32(value + seed) % 1000 / 1000
    raise ValueError(f"unknown hash version {version!r}; known: 1, 2")


def bucket_ranges(
    num_variations: int, coverage: float = 1.0, weights: Sequence[float] | None = None
) -> list[tuple[float, float]]:
    """GrowthBook's ``getBucketRanges``: one [start, end) slice of [0, 1) per variant.

    Each variant owns a fixed slice of width ``weight`` starting where the
    previous one ended; coverage only shrinks how much of its slice is used.
    That is why raising coverage never moves an enrolled user to another
    variant: the starts do not depend on coverage.

    Parameters
    ----------
    num_variations
        Number of variants.
    coverage
        Fraction of users enrolled; clamped to [0, 1] as GrowthBook does.
    weights
        One weight per variant summing to 1; None for equal weights.

    Raises
    ------
    ValueError
        If ``weights`` has the wrong length, a negative or non-finite weight,
        or does not sum to 1 within 1e-6. (GrowthBook silently falls back to
        equal weights instead; a wrong split should fail loudly.)

    Examples
    --------
    >>> [(round(a, 6), round(b, 6)) for a, b in bucket_ranges(3, 0.2, [0.2, 0.3, 0.5])]
    [(0.0, 0.04), (0.2, 0.26), (0.5, 0.6)]
    >>> bucket_ranges(2)
    [(0.0, 0.5), (0.5, 1.0)]
    """
    coverage = min(max(coverage, 0), 1)
    if weights is None:
        weights = [1 / num_variations] * num_variations if num_variations > 0 else []
    weights = list(weights)
    if len(weights) != num_variations:
        raise ValueError(f"{len(weights)} weights for {num_variations} variations")
    if any(not math.isfinite(w) or w < 0 for w in weights):
        raise ValueError(f"weights must be finite and >= 0, got {weights}")
    if weights and abs(sum(weights) - 1) > 1e-6:
        raise ValueError(f"weights must sum to 1, got {sum(weights)!r}")
    # Same float operations in the same order as GrowthBook, so the range
    # boundaries are bit-for-bit identical.
    cumulative = 0.0
    ranges = []
    for w in weights:
        start = cumulative
        cumulative += w
        ranges.append((start, start + coverage * w))
    return ranges


def choose_variation(n: float, ranges: Sequence[tuple[float, float]]) -> int:
    """GrowthBook's ``chooseVariation``: index of the range holding ``n``, else -1.

    Examples
    --------
    >>> choose_variation(0.21, [(0, 0.04), (0.2, 0.26), (0.5, 0.6)])
    1
    >>> choose_variation(0.1, [(0, 0.04), (0.2, 0.26), (0.5, 0.6)])
    -1
    """
    for i, (start, end) in enumerate(ranges):
        if start <= n < end:
            return i
    return -1


def in_namespace(user_id: str, namespace: Any) -> bool:
    """GrowthBook's ``inNamespace``: is the user in this experiment's slice?

    Parameters
    ----------
    user_id
        The user.
    namespace
        A :class:`~processors.experiments.definitions.Namespace` or a
        ``(name, range_start, range_end)`` tuple.

    Returns
    -------
    bool
        ``range_start <= bucket_hash("__" + name, user_id, 1) < range_end``.
        The hash does not depend on the experiment, so experiments with
        disjoint slices of one namespace never share a user.

    Examples
    --------
    >>> in_namespace("a", ("prompts", 0.0, 0.5)), in_namespace("a", ("prompts", 0.5, 1.0))
    (False, True)
    """
    name, start, end = _namespace_tuple(namespace)
    return start <= bucket_hash("__" + name, user_id, 1) < end


def _namespace_tuple(namespace: Any) -> tuple[str, float, float]:
    if isinstance(namespace, tuple):
        return namespace
    return namespace.name, namespace.range_start, namespace.range_end


# ------------------------------------------------------------------- targeting


class TargetingError(ValueError):
    """A targeting condition that is not valid JSON or uses unsupported syntax."""


_LOGIC = ("$and", "$or", "$nor", "$not")
_ORDER_OPS = ("$lt", "$lte", "$gt", "$gte")
_VALUE_OPS = ("$eq", "$ne", *_ORDER_OPS, "$in", "$nin", "$exists", "$not")
_MAX_TEXT = 65_536
_MAX_DEPTH = 32


class Targeting:
    """Who is eligible: a GrowthBook condition (subset), stored as JSON text.

    Supported: ``{"field": literal}`` (type-strict equality), dotted paths
    (``"properties.language"``), the value operators ``$eq $ne $lt $lte $gt
    $gte $in $nin $exists $not`` and the logical ``$and $or $nor $not``.
    Anything else (``$regex``, ``$savedGroup``, version operators ...) is
    rejected when parsed rather than ignored, so a typo never enrols everyone.
    Semantics follow GrowthBook's: no coercion between types (``1`` never
    equals ``"1"`` or ``true``), ``$in`` on an array attribute means "shares an
    element", and a missing attribute is ``null``. Datetime attributes are
    compared as ISO-8601 strings.

    Parameters
    ----------
    text
        The condition as JSON, e.g. ``'{"plan": {"$in": ["pro"]}}'``.

    Raises
    ------
    TargetingError
        If the text is not JSON, not an object, too deep, or uses unsupported
        operators or operand types.

    Examples
    --------
    >>> pro = Targeting('{"plan": {"$in": ["pro", "enterprise"]}, "country": {"$ne": "US"}}')
    >>> pro.matches({"plan": "pro", "country": "DE"}), pro.matches({"plan": "free"})
    (True, False)
    >>> Targeting('{"properties.language": "de"}').matches({"properties": {"language": "de"}})
    True
    >>> Targeting('{"plan": {"$regex": "^p"}}')
    Traceback (most recent call last):
    ...
    processors.experiments.assignment.TargetingError: targeting.plan: unsupported operator '$regex'; supported: $eq, $ne, $lt, $lte, $gt, $gte, $in, $nin, $exists, $not
    """

    __slots__ = ("text", "_check")

    def __init__(self, text: str) -> None:
        if not isinstance(text, str):
            raise TargetingError(f"targeting: expected JSON text, got {type(text).__name__}")
        if len(text) > _MAX_TEXT:
            raise TargetingError(f"targeting: longer than {_MAX_TEXT} characters")
        try:
            condition = json.loads(text)
        except RecursionError:
            raise TargetingError("targeting: nested too deeply") from None
        except ValueError as e:
            raise TargetingError(
                f"targeting: not valid JSON ({e}); expected a GrowthBook-style "
                'condition such as {"plan": {"$in": ["pro", "enterprise"]}}'
            ) from None
        self.text = text
        self._check = _compile_condition(_parse_condition(condition, "targeting", 0))

    def matches(self, attributes: Mapping[str, Any] | None) -> bool:
        """Whether a user with these attributes is eligible.

        Parameters
        ----------
        attributes
            User attributes, e.g. a ``user_profile`` record; None is treated as
            no attributes (every field missing).
        """
        try:
            return bool(self._check({} if attributes is None else attributes))
        except (TypeError, ValueError, AttributeError, RecursionError):
            # Like GrowthBook: an evaluation error fails the whole condition,
            # so $not can never turn an error into a match.
            return False

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Targeting) and other.text == self.text

    def __hash__(self) -> int:
        return hash(self.text)

    def __repr__(self) -> str:
        return f"Targeting({self.text!r})"

    def __reduce__(self) -> tuple:
        return (Targeting, (self.text,))


# Parsed form: condition = tuple of clauses; clause = ("field", path, test) |
# ("and"|"or"|"nor", (condition, ...)) | ("not", condition); test = ("eq",
# literal) | ("ops", ((op, operand), ...)), where $not's operand is a test.


def _parse_condition(cond: Any, where: str, depth: int) -> tuple:
    if depth > _MAX_DEPTH:
        raise TargetingError(f"{where}: nested more than {_MAX_DEPTH} levels")
    if not isinstance(cond, dict):
        raise TargetingError(f"{where}: expected an object, got {_json_type(cond)}")
    clauses = []
    for key, value in cond.items():
        if key in ("$and", "$or", "$nor"):
            if not isinstance(value, list):
                raise TargetingError(f"{where}.{key}: expected an array of conditions")
            subs = tuple(
                _parse_condition(c, f"{where}.{key}[{i}]", depth + 1) for i, c in enumerate(value)
            )
            clauses.append((key[1:], subs))
        elif key == "$not":
            clauses.append(("not", _parse_condition(value, f"{where}.$not", depth + 1)))
        elif key.startswith("$"):
            raise TargetingError(
                f"{where}: unsupported operator {key!r}; supported here: {', '.join(_LOGIC)}"
            )
        elif not key:
            raise TargetingError(f"{where}: empty field name")
        else:
            clauses.append(("field", tuple(key.split(".")), _parse_test(value, f"{where}.{key}", depth)))
    return tuple(clauses)


def _parse_test(value: Any, where: str, depth: int) -> tuple:
    if depth > _MAX_DEPTH:
        raise TargetingError(f"{where}: nested more than {_MAX_DEPTH} levels")
    if not (isinstance(value, dict) and all(k.startswith("$") for k in value)):
        return ("eq", value)
    ops = []
    for op, operand in value.items():
        if op not in _VALUE_OPS:
            raise TargetingError(
                f"{where}: unsupported operator {op!r}; supported: {', '.join(_VALUE_OPS)}"
            )
        if op in ("$in", "$nin") and not isinstance(operand, list):
            raise TargetingError(f"{where}.{op}: expected an array, got {_json_type(operand)}")
        if op in _ORDER_OPS and _json_type(operand) not in ("number", "string"):
            raise TargetingError(
                f"{where}.{op}: expected a number or a string, got {_json_type(operand)}"
            )
        if op == "$not":
            operand = _parse_test(operand, f"{where}.$not", depth + 1)
        ops.append((op, operand))
    return ("ops", tuple(ops))


def _json_type(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "boolean"
    if isinstance(value, (int, float)):
        return "number"
    if isinstance(value, str):
        return "string"
    if isinstance(value, (list, tuple, set, frozenset)):
        return "array"
    if isinstance(value, Mapping):
        return "object"
    return "unknown"


def _get_path(attributes: Any, path: tuple[str, ...]) -> Any:
    current = attributes
    for segment in path:
        if isinstance(current, Mapping):
            if segment not in current:
                return None
            current = current[segment]
        elif isinstance(current, (list, tuple)):
            if segment == "length":
                current = len(current)
            elif segment.isascii() and segment.isdigit() and (segment == "0" or segment[0] != "0") \
                    and int(segment) < len(current):
                current = current[int(segment)]
            else:
                return None
        else:
            return None
    if isinstance(current, (datetime, date)):
        return current.isoformat()
    if isinstance(current, tuple):
        return list(current)
    return current


# The parsed tree is compiled once into nested closures: evaluating one is a
# few function calls, about 4x faster than walking the tree per request.

_PLAIN = frozenset({str, int, float, bool, type(None), list, dict})


def _always(attributes: Any) -> bool:
    return True


def _compile_condition(clauses: tuple) -> Any:
    checks = tuple(_compile_clause(c) for c in clauses)
    if not checks:
        return _always
    if len(checks) == 1:
        return checks[0]

    def all_of(attributes: Any) -> bool:
        for check in checks:
            if not check(attributes):
                return False
        return True
    return all_of


def _compile_clause(clause: tuple) -> Any:
    kind = clause[0]
    if kind == "field":
        path, test = clause[1], _compile_test(clause[2])
        if len(path) > 1:
            return lambda attributes: test(_get_path(attributes, path))
        key = path[0]

        def field(attributes: Any) -> bool:
            if type(attributes) is dict:
                value = attributes.get(key)
                if type(value) in _PLAIN:
                    return test(value)
            return test(_get_path(attributes, path))
        return field
    if kind == "not":
        sub = _compile_condition(clause[1])
        return lambda attributes: not sub(attributes)
    subs = tuple(_compile_condition(c) for c in clause[1])
    if kind == "and":
        return lambda attributes: all(s(attributes) for s in subs)
    if kind == "or":
        return lambda attributes: not subs or any(s(attributes) for s in subs)
    return lambda attributes: bool(subs) and not any(s(attributes) for s in subs)  # nor


def _compile_test(test: tuple) -> Any:
    if test[0] == "eq":
        return _equals(test[1], deep=True)
    checks = tuple(_compile_op(op, operand) for op, operand in test[1])
    if len(checks) == 1:
        return checks[0]
    return lambda value: all(check(value) for check in checks)


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def _equals(expected: Any, deep: bool) -> Any:
    """A test for equality with ``expected``: strict (``$eq``) or deep (a literal)."""
    kind = _json_type(expected)
    if kind == "string":
        return lambda value: isinstance(value, str) and value == expected
    if kind == "number":
        return lambda value: _is_number(value) and value == expected
    if kind == "boolean":
        return lambda value: isinstance(value, bool) and value == expected
    if kind == "null":
        return lambda value: value is None
    if deep:
        return lambda value: _deep_equal(expected, value)
    return lambda value: False  # JavaScript === never holds between two parsed objects


def _compile_op(op: str, operand: Any) -> Any:
    if op == "$eq":
        return _equals(operand, deep=False)
    if op == "$ne":
        equal = _equals(operand, deep=False)
        return lambda value: not equal(value)
    if op in _ORDER_OPS:
        return _compile_order(op, operand)
    if op in ("$in", "$nin"):
        member = _membership(operand)
        if op == "$in":
            return member
        return lambda value: not member(value)
    if op == "$exists":
        if operand:
            return lambda value: value is not None
        return lambda value: value is None
    sub = _compile_test(operand)  # $not
    return lambda value: not sub(value)


def _compile_order(op: str, operand: Any) -> Any:
    compare = {"$lt": lambda a, b: a < b, "$lte": lambda a, b: a <= b,
               "$gt": lambda a, b: a > b, "$gte": lambda a, b: a >= b}[op]
    if isinstance(operand, str):
        if operand.isascii():
            def ordered(value: Any) -> bool:
                if not isinstance(value, str):
                    return False
                if value.isascii():
                    return compare(value, operand)
                return compare(_utf16(value), _utf16(operand))
            return ordered
        units = _utf16(operand)  # JavaScript orders strings by UTF-16 code units
        return lambda value: isinstance(value, str) and compare(_utf16(value), units)
    if math.isnan(operand):
        return lambda value: False
    return lambda value: _is_number(value) and not math.isnan(value) and compare(value, operand)


def _utf16(text: str) -> bytes:
    return text.encode("utf-16-be", "surrogatepass")


def _membership(options: list) -> Any:
    """GrowthBook's ``isIn``: strict equality; an array attribute needs one shared element."""
    strings = frozenset(o for o in options if isinstance(o, str))
    numbers = frozenset(o for o in options if _is_number(o) and not math.isnan(o))
    booleans = frozenset(o for o in options if isinstance(o, bool))
    has_null = any(o is None for o in options)

    def scalar_in(value: Any) -> bool:
        if isinstance(value, str):
            return value in strings
        if value is None:
            return has_null
        if isinstance(value, bool):
            return value in booleans
        if _is_number(value):
            return value in numbers
        return False  # arrays and objects never equal anything

    def member(value: Any) -> bool:
        if isinstance(value, (list, set, frozenset)):
            return any(scalar_in(v) for v in value)
        return scalar_in(value)
    return member


def _deep_equal(a: Any, b: Any) -> bool:
    """GrowthBook's literal equality: same JSON types all the way down, same key order."""
    ta = _json_type(a)
    if ta != _json_type(b):
        return False
    if ta == "array":
        a, b = list(a), list(b)
        return len(a) == len(b) and all(_deep_equal(x, y) for x, y in zip(a, b))
    if ta == "object":
        return list(a) == list(b) and all(_deep_equal(a[k], b[k]) for k in a)
    return bool(a == b)


# ------------------------------------------------------------------ assignment


class Reason(StrEnum):
    """Why a user is or is not in an experiment, in the order they are checked."""

    NOT_RUNNING = "not running"
    NO_USER_ID = "no user id"
    OUTSIDE_NAMESPACE = "outside namespace"
    TARGETING_NOT_MATCHED = "targeting not matched"
    OUTSIDE_COVERAGE = "outside coverage"
    ASSIGNED = "assigned"


_REASONS = tuple(Reason)
_CODE = {reason: code for code, reason in enumerate(_REASONS)}
_EMPTY: Mapping[str, str] = MappingProxyType({})


class Assignment(NamedTuple):
    """The variant a user gets, or why they get none.

    Attributes
    ----------
    variant
        Variant name, or None when the user is not in the experiment.
    in_experiment
        True only when ``reason`` is ``Reason.ASSIGNED``.
    hash_value
        The user's bucket in [0, 1) (GrowthBook's ``bucket``) when it decided
        the outcome (assigned or outside coverage), else None.
    reason
        A :class:`Reason`; compares equal to its text, e.g. ``"assigned"``.
    payload
        The variant's read-only configuration (e.g. ``prompt_version``);
        empty when not assigned.
    """

    variant: str | None
    in_experiment: bool
    hash_value: float | None
    reason: Reason
    payload: Mapping[str, str] = _EMPTY

    def __reduce__(self) -> tuple:
        return (Assignment, (*self[:4], dict(self.payload)))


_NOT_RUNNING = Assignment(None, False, None, Reason.NOT_RUNNING)
_NO_USER = Assignment(None, False, None, Reason.NO_USER_ID)
_OUTSIDE_NS = Assignment(None, False, None, Reason.OUTSIDE_NAMESPACE)
_NOT_TARGETED = Assignment(None, False, None, Reason.TARGETING_NOT_MATCHED)
_ASSIGNED = Reason.ASSIGNED
_OUTSIDE_COVERAGE = Reason.OUTSIDE_COVERAGE
_new = tuple.__new__


class CompiledExperiment:
    """An experiment prepared for fast assignment: ranges, seed state, condition.

    Build it once per definition (``Experiment.compiled`` caches one per
    instance) and call :meth:`assign` per request or :meth:`assign_many` per
    batch. Running experiments are validated here, so a broken definition
    fails when it is loaded, not by silently mis-assigning.

    Parameters
    ----------
    experiment
        The definition.
    cache_size
        How many users' hash results to remember (they depend only on the user
        id, never on attributes); 0 disables. The cache is cleared when full,
        which bounds memory at about 300 bytes per entry.

    Raises
    ------
    processors.experiments.definitions.ExperimentError
        If a running experiment is invalid (metric names are not checked).

    Examples
    --------
    >>> from processors.experiments.templates import prompt_ab
    >>> exp = prompt_ab("tone", "ml@example.com", "v11", "v12", status="running")
    >>> c = CompiledExperiment(exp)
    >>> c.assign("user-1").variant, c.assign("user-1").payload["prompt_version"]
    ('treatment', 'v12')
    """

    __slots__ = (
        "key", "variants", "payloads", "ranges", "running", "hash_version", "seed",
        "namespace", "targeting", "cache_size", "_cache", "_seed_state", "_seed_units",
        "_ns_units", "_arms",
    )

    def __init__(self, experiment: Experiment, *, cache_size: int = 10_000) -> None:
        self.key = experiment.key
        self.running = experiment.status == "running"
        if self.running:
            experiment.validate(known_metrics=None)
        self.variants = tuple(v.name for v in experiment.variants)
        self.payloads = tuple(MappingProxyType(dict(v.payload)) for v in experiment.variants)
        self.hash_version = experiment.hash_version
        self.seed = experiment.seed or experiment.key  # GrowthBook: seed or key
        self.namespace = experiment.namespace and _namespace_tuple(experiment.namespace)
        self.targeting = Targeting(experiment.targeting) if self.running and experiment.targeting else None
        self.cache_size = cache_size
        self._cache: dict[str, tuple[bool, Assignment]] = {}
        if self.running:
            self.ranges = tuple(bucket_ranges(
                len(experiment.variants), experiment.coverage,
                [v.weight for v in experiment.variants],
            ))
        else:
            self.ranges = ()
        # v2 hashes seed + user, so the state after the seed is computed once;
        # v1 hashes user + seed, so only the seed's units are kept.
        self._seed_state = _fnv(_OFFSET, _units(self.seed))
        self._seed_units = _units(self.seed)
        self._ns_units = _units("__" + self.namespace[0]) if self.namespace else None
        self._arms = tuple(
            (start, end, name, payload)
            for (start, end), name, payload in zip(self.ranges, self.variants, self.payloads)
        )

    # -- scalar

    def assign(self, user_id: str | None, attributes: Mapping[str, Any] | None = None) -> Assignment:
        """Assign one user; see :func:`assign`."""
        if not self.running:
            return _NOT_RUNNING
        if not user_id:
            return _NO_USER
        hit = self._cache.get(user_id)
        if hit is None:
            hit = self._hash(user_id)
            if self.cache_size:
                if len(self._cache) >= self.cache_size:
                    self._cache.clear()
                self._cache[user_id] = hit
        in_ns, result = hit
        if not in_ns:
            return _OUTSIDE_NS
        if self.targeting is not None and not self.targeting.matches(attributes):
            return _NOT_TARGETED
        return result

    def _hash(self, user_id: str) -> tuple[bool, Assignment]:
        """Namespace membership and the would-be assignment: all that depends on the id."""
        if type(user_id) is not str and not isinstance(user_id, str):
            raise TypeError(f"user_id must be a str, got {type(user_id).__name__}")
        ns = self.namespace
        if ns is not None:
            h = _fnv(_fnv(_OFFSET, _units(user_id)), self._ns_units)
            if not ns[1] <= h % 1000 / 1000 < ns[2]:
                return False, _OUTSIDE_NS
        if self.hash_version == 2:
            if user_id.isascii() and len(user_id) <= _UNMASKED_MAX:
                # _fnv inlined: this is the hot path (a third faster)
                prime = _PRIME
                h = self._seed_state
                for unit in user_id.encode():
                    h = (h ^ unit) * prime
                h2 = _OFFSET
                for unit in b"%d" % (h & _MASK):
                    h2 = (h2 ^ unit) * prime
                n = (h2 & _MASK) % 10000 / 10000
            else:
                h = _fnv(self._seed_state, _units(user_id))
                n = _fnv(_OFFSET, b"%d" % h) % 10000 / 10000
        else:
            n = _fnv(_fnv(_OFFSET, _units(user_id)), self._seed_units) % 1000 / 1000
        for start, end, name, payload in self._arms:
            if start <= n < end:
                # tuple.__new__ skips the NamedTuple's Python-level __new__
                return True, _new(Assignment, (name, True, n, _ASSIGNED, payload))
        return True, _new(Assignment, (None, False, n, _OUTSIDE_COVERAGE, _EMPTY))

    # -- batch

    def assign_many(
        self,
        user_ids: Sequence[str | None],
        attributes: Sequence[Mapping[str, Any] | None] | Mapping[str, Any] | None = None,
    ) -> BatchAssignment:
        """Assign a batch with numpy; see :func:`assign_many`."""
        ids = [u if u else "" for u in user_ids]
        n = len(ids)
        reason = np.full(n, _CODE[Reason.ASSIGNED], dtype=np.uint8)
        index = np.full(n, -1, dtype=np.int16)
        buckets = np.full(n, np.nan)
        if not self.running:
            reason[:] = _CODE[Reason.NOT_RUNNING]
            return BatchAssignment(self, index, buckets, reason)
        if self.hash_version == 2:
            first = _fnv_many(ids, self._seed_state, b"")
            buckets = (_fnv_decimal_many(first) % np.uint32(10000)).astype(np.float64) / 10000
        else:
            buckets = (_fnv_many(ids, _OFFSET, self._seed_units) % np.uint32(1000)).astype(np.float64) / 1000
        for i in reversed(range(len(self.ranges))):  # the first matching range wins
            start, end = self.ranges[i]
            index[(buckets >= start) & (buckets < end)] = i
        reason[index < 0] = _CODE[Reason.OUTSIDE_COVERAGE]
        if self.targeting is not None:
            if attributes is None or isinstance(attributes, Mapping):
                if not self.targeting.matches(attributes):
                    reason[:] = _CODE[Reason.TARGETING_NOT_MATCHED]
            else:
                if len(attributes) != n:
                    raise ValueError(f"{len(attributes)} attribute mappings for {n} users")
                ok = np.fromiter(map(self.targeting.matches, attributes), dtype=bool, count=n)
                reason[~ok] = _CODE[Reason.TARGETING_NOT_MATCHED]
        if self.namespace is not None:
            name, start, end = self.namespace
            ns = (_fnv_many(ids, _OFFSET, self._ns_units) % np.uint32(1000)).astype(np.float64) / 1000
            reason[~((ns >= start) & (ns < end))] = _CODE[Reason.OUTSIDE_NAMESPACE]
        if "" in ids:
            empty = np.fromiter(map(len, ids), dtype=np.int64, count=n) == 0
            reason[empty] = _CODE[Reason.NO_USER_ID]
        index[reason != _CODE[Reason.ASSIGNED]] = -1
        hashed = (reason == _CODE[Reason.ASSIGNED]) | (reason == _CODE[Reason.OUTSIDE_COVERAGE])
        buckets[~hashed] = np.nan
        return BatchAssignment(self, index, buckets, reason)


_P32 = np.uint32(_PRIME)


def _fnv_many(values: list[str], start: int, suffix: bytes | list[int]) -> np.ndarray:
    """``fnv(start, value + suffix)`` for every value, as uint32."""
    n = len(values)
    out = np.empty(n, dtype=np.uint32)
    joined = "".join(values)
    if joined.isascii():
        out[:] = _fnv_ascii_many(values, joined, start)
    else:
        ascii_rows = np.fromiter(map(str.isascii, values), dtype=bool, count=n)
        rows = np.flatnonzero(ascii_rows)
        subset = [values[i] for i in rows]
        out[rows] = _fnv_ascii_many(subset, "".join(subset), start)
        # Non-ASCII ids are rare; they go through the scalar UTF-16 path.
        for i in np.flatnonzero(~ascii_rows):
            out[i] = _fnv(start, _units(values[i]))
    for unit in suffix:
        out ^= np.uint32(unit)
        out *= _P32
    return out


def _fnv_ascii_many(values: list[str], joined: str, start: int) -> np.ndarray:
    n = len(values)
    h = np.full(n, start, dtype=np.uint32)
    if n == 0:
        return h
    buf = np.frombuffer(joined.encode("ascii"), dtype=np.uint8)
    lengths = np.fromiter(map(len, values), dtype=np.int64, count=n)
    offsets = np.cumsum(lengths) - lengths
    # Longest first, so the rows still being hashed at column j are a prefix
    # and each column is one gather, one XOR and one multiply on a slice.
    order = np.argsort(-lengths, kind="stable")
    sorted_len = lengths[order]
    sorted_off = offsets[order]
    active = np.searchsorted(-sorted_len, -np.arange(sorted_len[0]), side="left")
    for j, k in enumerate(active):
        part = h[:k]
        part ^= buf[sorted_off[:k] + j]
        part *= _P32
    out = np.empty_like(h)
    out[order] = h
    return out


def _fnv_decimal_many(values: np.ndarray) -> np.ndarray:
    """``fnv1a32(str(v))`` for every uint32 ``v``."""
    h = np.full(len(values), _OFFSET, dtype=np.uint32)
    rest = values.copy()
    for k in range(9, -1, -1):
        p = np.uint32(10**k)
        digit = rest // p
        rest -= digit * p
        step = (h ^ (digit + np.uint32(48))) * _P32
        h = step if k == 0 else np.where(values >= p, step, h)  # no leading zeros
    return h


class BatchAssignment:
    """Assignments for a batch of users, as numpy arrays.

    Attributes
    ----------
    index
        int16 variant index per user, -1 when not in the experiment.
    hash_value
        float64 bucket per user, NaN where :class:`Assignment` has None.
    reason
        uint8 code per user; ``REASONS[code]`` is the :class:`Reason`.
    variant_names
        Variant names, so ``variant_names[index[i]]`` is user i's variant.

    Examples
    --------
    >>> from processors.experiments.templates import prompt_ab
    >>> batch = assign_many(prompt_ab("t", "o@x", "v1", "v2", status="running"), ["u1", "u2", ""])
    >>> len(batch), batch.variants()[2], batch[2].reason
    (3, None, <Reason.NO_USER_ID: 'no user id'>)
    """

    __slots__ = ("_compiled", "index", "hash_value", "reason", "variant_names")
    REASONS = _REASONS

    def __init__(self, compiled: CompiledExperiment, index: np.ndarray,
                 hash_value: np.ndarray, reason: np.ndarray) -> None:
        self._compiled = compiled
        self.index = index
        self.hash_value = hash_value
        self.reason = reason
        self.variant_names = compiled.variants

    def __len__(self) -> int:
        return len(self.index)

    def __getitem__(self, i: int) -> Assignment:
        idx = int(self.index[i])
        n = float(self.hash_value[i])
        n_or_none = None if math.isnan(n) else n
        reason = _REASONS[self.reason[i]]
        if idx < 0:
            return Assignment(None, False, n_or_none, reason)
        return Assignment(self.variant_names[idx], True, n_or_none, reason, self._compiled.payloads[idx])

    def __iter__(self):
        return (self[i] for i in range(len(self)))

    def variants(self) -> list[str | None]:
        """Variant name per user (None when not in the experiment)."""
        names = (*self.variant_names, None)  # index -1 picks None
        return [names[i] for i in self.index.tolist()]

    def counts(self) -> dict[str, int]:
        """Users per variant."""
        found = np.bincount(self.index[self.index >= 0], minlength=len(self.variant_names))
        return dict(zip(self.variant_names, found.tolist()))


def _compiled(experiment: Experiment | CompiledExperiment) -> CompiledExperiment:
    if isinstance(experiment, CompiledExperiment):
        return experiment
    return experiment.compiled


def assign(
    experiment: Experiment | CompiledExperiment,
    user_id: str | None,
    attributes: Mapping[str, Any] | None = None,
) -> Assignment:
    """The variant ``user_id`` gets in ``experiment`` -- the one assignment function.

    Checks, in GrowthBook's order: the experiment is running; the user id is
    not empty; the user is in the experiment's namespace slice; the targeting
    condition matches ``attributes``; the user's bucket falls in a variant's
    range (coverage). The result depends only on the definition, the user id
    and the attributes, so every caller and every process agrees.

    Parameters
    ----------
    experiment
        An :class:`~processors.experiments.definitions.Experiment` (its
        compiled form is cached on the instance) or a
        :class:`CompiledExperiment`.
    user_id
        The user; None or "" is never assigned (``Reason.NO_USER_ID``).
    attributes
        User attributes for targeting, e.g. a ``user_profile`` record. With
        targeting and no attributes every field counts as missing.

    Returns
    -------
    Assignment

    Examples
    --------
    >>> from processors.experiments.templates import model_swap
    >>> exp = model_swap("cheap", "ml@example.com", "gpt-4o", "gpt-4o-mini", status="running")
    >>> a = assign(exp, "user-1042")
    >>> a.variant, a.in_experiment, a.reason, a.payload["model"]
    ('control', True, <Reason.ASSIGNED: 'assigned'>, 'gpt-4o')
    >>> assign(exp, "user-1042") == a  # sticky
    True
    """
    return _compiled(experiment).assign(user_id, attributes)


def assign_many(
    experiment: Experiment | CompiledExperiment,
    user_ids: Sequence[str | None],
    attributes: Sequence[Mapping[str, Any] | None] | Mapping[str, Any] | None = None,
) -> BatchAssignment:
    """:func:`assign` for a batch, vectorised with numpy; identical results.

    Parameters
    ----------
    experiment
        As for :func:`assign`.
    user_ids
        The users.
    attributes
        One mapping per user, or a single mapping (or None) for all of them.
        Targeting is evaluated per user in Python; only hashing is vectorised.

    Returns
    -------
    BatchAssignment

    Examples
    --------
    >>> from processors.experiments.templates import temperature
    >>> exp = temperature("temp", "ml@example.com", status="running")
    >>> batch = assign_many(exp, [f"u{i}" for i in range(1000)])
    >>> sum(batch.counts().values()), batch[7] == assign(exp, "u7")
    (1000, True)
    """
    return _compiled(experiment).assign_many(user_ids, attributes)
