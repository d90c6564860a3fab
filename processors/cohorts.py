"""User cohorts: tag spans and feedback with the groups their user belongs to.

A versioned JSON document (``processors/data/cohorts.json``, or a user file
whose path the processor reads from ``LLMPULSE_COHORTS_FILE``; format in
``docs/cohorts.md``) lists the cohorts. A *dimension* cohort turns one
profile field into a value (``plan`` -> ``pro``, ``signup_time`` bucketed by
month -> ``2026-03``); a *predicate* cohort says whether the user matches a
small JSON expression (``true``/``false``). :class:`CohortTagger` writes the
result into a span's or feedback's ``attributes`` as
``llmpulse.cohort.<name>``, plus ``llmpulse.cohort`` (the primary cohort, the
metrics ``cohort`` dimension) and ``llmpulse.cohorts_version``.

Predicates are compiled to closures when the config is loaded, and results
are cached per ``(user_id, project, updated_at)``, so tagging a span costs a
dict lookup and two small dict copies. :func:`newer` and :func:`apply_update`
are the profile-table rules (newest ``updated_at`` wins, ``None`` deletes),
usable on a plain dict or a faust Table.

Examples
--------
>>> tagger = CohortTagger(CohortConfig.load())
>>> profile = {"user_id": "u1", "plan": "pro", "country": "DE",
...            "signup_time": datetime(2026, 3, 9, tzinfo=timezone.utc),
...            "updated_at": 1}
>>> attrs = tagger.tag_span({"span_id": "a1", "attributes": {}}, profile)["attributes"]
>>> attrs["llmpulse.cohort"], attrs["llmpulse.cohort.signup_month"]
('pro', '2026-03')
"""
from __future__ import annotations

import json
import math
import operator
import re
from collections import OrderedDict
from collections.abc import Callable, Mapping, MutableMapping
from dataclasses import dataclass, field
from datetime import date, datetime, timedelta, timezone
from importlib import resources
from os import PathLike
from pathlib import Path
from typing import Any, NamedTuple, NoReturn

__all__ = [
    "ATTR_PREFIX",
    "BUCKETS",
    "COHORTS_FILE_ENV",
    "OTHER",
    "PRIMARY_ATTR",
    "UNKNOWN",
    "VERSION_ATTR",
    "CacheInfo",
    "Cohort",
    "CohortConfig",
    "CohortConfigError",
    "CohortTagger",
    "ProfileStore",
    "apply_update",
    "newer",
    "primary_cohort",
]

Profile = Mapping[str, Any]

#: Environment variable naming a user cohort file (read by the processor).
COHORTS_FILE_ENV = "LLMPULSE_COHORTS_FILE"
#: Value of every cohort of a user without a profile, and of a dimension
#: cohort whose field is missing.
UNKNOWN = "unknown"
#: Value of a dimension cohort whose value is not in its ``values`` list.
OTHER = "other"
#: Attribute key prefix: ``llmpulse.cohort.<name>``.
ATTR_PREFIX = "llmpulse.cohort."
#: Attribute holding the primary cohort's value (the metrics dimension).
PRIMARY_ATTR = "llmpulse.cohort"
#: Attribute holding the config version that produced the cohort attributes.
VERSION_ATTR = "llmpulse.cohorts_version"
DEFAULT_PRIMARY = "plan"
BUCKETS = ("day", "week", "month", "quarter", "year")
# Cohort values become attribute values and metric label values: cap them so
# one odd profile property cannot blow up a row or a label.
MAX_VALUE_LENGTH = 128
# Deep enough for any hand-written predicate, shallow enough that a generated
# one cannot hit Python's recursion limit while compiling or evaluating.
MAX_DEPTH = 32

_NAME_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.:\-]{0,63}")
_EPOCH = datetime(1970, 1, 1, tzinfo=timezone.utc)
_UTC = timezone.utc

# Field kinds, from schemas/avro/user_profile/v1.avsc.
_STR, _TIME, _FLAG, _PROP = "a string", "a time", "a feature flag (boolean)", "a property (string)"
_FIELDS = {
    "user_id": _STR, "project": _STR, "plan": _STR, "country": _STR,
    "signup_time": _TIME, "updated_at": _TIME,
}
_MAPS = {"feature_flags": _FLAG, "properties": _PROP}
_OPS_BY_KIND = {
    _STR: ("eq", "ne", "in", "exists"),
    _TIME: ("after", "before", "exists"),
    _FLAG: ("is", "exists"),
    _PROP: ("eq", "ne", "in", "gt", "gte", "lt", "lte", "after", "before", "exists"),
}
_ALL_OPS = sorted({op for ops in _OPS_BY_KIND.values() for op in ops})
_NUMERIC = {"gt": operator.gt, "gte": operator.ge, "lt": operator.lt, "lte": operator.le}
_TOP_KEYS = frozenset(("version", "primary", "cohorts", "notes"))
_COHORT_KEYS = frozenset(("name", "by", "bucket", "values", "where", "description"))


class CohortConfigError(ValueError):
    """A cohort config that cannot be used; the message names the file,
    the cohort and the bad part.

    Examples
    --------
    >>> CohortConfig.from_dict({"cohorts": []}, where="mine.json")
    Traceback (most recent call last):
    ...
    processors.cohorts.CohortConfigError: mine.json: 'version' is required: an integer >= 1, bumped on every change
    """


class _Bad(Exception):
    """Internal: a problem at ``path`` inside one cohort entry."""

    def __init__(self, path: str, message: str) -> None:
        super().__init__(path, message)
        self.path, self.message = path, message


def _bad(path: str, message: str) -> NoReturn:
    raise _Bad(path, message)


# -- value helpers --------------------------------------------------------------


def _utc(value: Any) -> datetime | None:
    """``value`` as an aware UTC datetime, or None when it is not a time.

    Accepts what a profile can hold: an aware or naive (taken as UTC)
    datetime, a date, microseconds since the epoch (raw Avro), or ISO text.
    """
    if isinstance(value, datetime):
        if value.tzinfo is None:
            return value.replace(tzinfo=_UTC)
        return value if value.tzinfo is _UTC else value.astimezone(_UTC)
    if isinstance(value, str):
        try:
            return _utc(datetime.fromisoformat(value.strip()))
        except ValueError:
            return None
    if isinstance(value, bool):
        return None
    if isinstance(value, (int, float)):
        try:
            return _EPOCH + timedelta(microseconds=value)
        except (OverflowError, ValueError):
            return None
    if isinstance(value, date):
        return datetime(value.year, value.month, value.day, tzinfo=_UTC)
    return None


def _num(value: Any) -> float | None:
    """``value`` as a finite float (properties are strings), else None."""
    if isinstance(value, str):
        try:
            n = float(value)
        except ValueError:
            return None
    elif isinstance(value, (int, float)) and not isinstance(value, bool):
        n = float(value)
    else:
        return None
    return n if math.isfinite(n) else None


def _is_number(x: Any) -> bool:
    return isinstance(x, (int, float)) and not isinstance(x, bool) and math.isfinite(x)


_BUCKET_FORMAT: dict[str, Callable[[datetime], str]] = {
    "day": lambda t: f"{t.year:04d}-{t.month:02d}-{t.day:02d}",
    "week": lambda t: "{:04d}-W{:02d}".format(*t.isocalendar()[:2]),
    "month": lambda t: f"{t.year:04d}-{t.month:02d}",
    "quarter": lambda t: f"{t.year:04d}-Q{(t.month - 1) // 3 + 1}",
    "year": lambda t: f"{t.year:04d}",
}


# -- compiling ------------------------------------------------------------------


def _resolve(spec: Any, path: str) -> tuple[str, Callable[[Profile], Any]]:
    """Kind and getter of a field name such as ``plan`` or ``properties.seats``.

    The getter returns None for a missing field; an empty string counts as
    missing too, so ``country: ""`` is ``unknown`` rather than a blank label.
    """
    if not isinstance(spec, str) or not spec:
        _bad(path, f"field must be a non-empty string, got {spec!r}")
    head, dot, key = spec.partition(".")
    known = ", ".join([*_FIELDS, *(f"{m}.<name>" for m in _MAPS)])
    if head in _MAPS:
        if not dot or not key:
            _bad(path, f"unknown field {spec!r}: name an entry, e.g. '{head}.beta'")

        def get_entry(p: Profile, head: str = head, key: str = key) -> Any:
            try:
                v = p.get(head).get(key)  # type: ignore[union-attr]
            except AttributeError:  # map missing, None, or not a mapping
                return None
            return None if v == "" else v

        return _MAPS[head], get_entry
    if head in _FIELDS and not dot:

        def get_field(p: Profile, name: str = spec) -> Any:
            v = p.get(name)
            return None if v == "" else v

        return _FIELDS[head], get_field
    _bad(path, f"unknown field {spec!r}; known: {known}")


def _compile_predicate(node: Any, path: str, depth: int = 0) -> Callable[[Profile], bool]:
    if depth > MAX_DEPTH:
        _bad(path, f"predicate nested deeper than {MAX_DEPTH} levels")
    if not isinstance(node, Mapping):
        _bad(path, f"expected an object such as {{\"field\": ..., \"eq\": ...}}, got {node!r}")
    if "field" not in node:
        if len(node) != 1 or next(iter(node)) not in ("all", "any", "not"):
            _bad(path, f"expected one of all, any, not, or field + operator; got keys {sorted(node)}")
        (combinator, arg), = node.items()
        sub = f"{path}.{combinator}"
        if combinator == "not":
            inner = _compile_predicate(arg, sub, depth + 1)
            return lambda p: not inner(p)
        if not isinstance(arg, list) or not arg:
            _bad(sub, f"'{combinator}' needs a non-empty list of predicates, got {arg!r}")
        parts = tuple(_compile_predicate(a, f"{sub}[{i}]", depth + 1) for i, a in enumerate(arg))
        if len(parts) == 1:
            return parts[0]
        if combinator == "all":

            def all_of(p: Profile) -> bool:
                for part in parts:
                    if not part(p):
                        return False
                return True

            return all_of

        def any_of(p: Profile) -> bool:
            for part in parts:
                if part(p):
                    return True
            return False

        return any_of
    return _compile_leaf(node, path)


def _compile_leaf(node: Mapping[str, Any], path: str) -> Callable[[Profile], bool]:
    fname = node["field"]
    kind, get = _resolve(fname, f"{path}.field")
    ops = [k for k in node if k != "field"]
    if len(ops) != 1:
        what = ", ".join(map(repr, ops)) if ops else "none"
        _bad(path, f"a condition on {fname!r} needs exactly one operator, got {what}")
    op = ops[0]
    lit = node[op]
    where = f"{path}.{op}"
    if op not in _ALL_OPS:
        _bad(path, f"unknown operator {op!r}; known: {', '.join(_ALL_OPS)}")
    if op not in _OPS_BY_KIND[kind]:
        allowed = ", ".join(_OPS_BY_KIND[kind])
        _bad(path, f"operator {op!r} does not apply to {fname!r} ({kind}); use one of: {allowed}")

    if op in ("exists", "is"):
        if not isinstance(lit, bool):
            _bad(where, f"'{op}' needs true or false, got {lit!r}")
        if op == "exists":
            return (lambda p: get(p) is not None) if lit else (lambda p: get(p) is None)
        return lambda p: get(p) is lit

    if op in ("after", "before"):
        bound = _utc(lit) if isinstance(lit, str) else None
        if bound is None:
            _bad(where, f"'{op}' needs an ISO date or time such as '2026-01-01', got {lit!r}")
        cmp = operator.gt if op == "after" else operator.lt

        def time_cmp(p: Profile) -> bool:
            t = _utc(get(p))
            return t is not None and cmp(t, bound)

        return time_cmp

    if op in _NUMERIC:
        if not _is_number(lit):
            _bad(where, f"'{op}' needs a number, got {lit!r}")
        cmp, bound_n = _NUMERIC[op], float(lit)

        def num_cmp(p: Profile) -> bool:
            n = _num(get(p))
            return n is not None and cmp(n, bound_n)

        return num_cmp

    # eq, ne, in: strings compare as strings; a number literal (properties
    # only) compares numerically, so "50" and "50.0" both equal 50.
    def check(x: Any, at: str) -> None:
        ok = isinstance(x, str) or (kind is _PROP and _is_number(x))
        if not ok:
            want = "a string or a number" if kind is _PROP else "a string"
            _bad(at, f"{fname!r} compares with {want}, got {x!r}")

    if op == "in":
        if not isinstance(lit, list) or not lit:
            _bad(where, f"'in' needs a non-empty list, got {lit!r}")
        for i, x in enumerate(lit):
            check(x, f"{where}[{i}]")
        strs = frozenset(x for x in lit if isinstance(x, str))
        nums = frozenset(float(x) for x in lit if not isinstance(x, str))
        if not nums:

            def in_strs(p: Profile) -> bool:
                try:
                    return get(p) in strs
                except TypeError:  # an unhashable value is no member
                    return False

            return in_strs

        def in_mixed(p: Profile) -> bool:
            v = get(p)
            if isinstance(v, str) and v in strs:
                return True
            return _num(v) in nums

        return in_mixed

    check(lit, where)
    if isinstance(lit, str):
        if op == "eq":
            return lambda p: get(p) == lit

        def ne_str(p: Profile) -> bool:
            v = get(p)
            return v is not None and v != lit

        return ne_str
    n_lit = float(lit)
    if op == "eq":
        return lambda p: _num(get(p)) == n_lit

    def ne_num(p: Profile) -> bool:
        n = _num(get(p))
        return n is not None and n != n_lit

    return ne_num


def _compile_dimension(entry: Mapping[str, Any]) -> Callable[[Profile], str]:
    fname = entry["by"]
    kind, get = _resolve(fname, "by")
    bucket = entry.get("bucket")
    values = entry.get("values")
    if fname == "user_id":
        _bad("by", "one cohort per user is no cohort; use 'user_id' in a predicate ('where') instead")
    if bucket is not None:
        if bucket not in BUCKETS:
            _bad("bucket", f"unknown bucket {bucket!r}; known: {', '.join(BUCKETS)}")
        if kind not in (_TIME, _PROP):
            _bad("bucket", f"'bucket' applies to times, and {fname!r} is {kind}")
    elif kind is _TIME:
        _bad("bucket", f"{fname!r} is a time: give a bucket ({', '.join(BUCKETS)})")
    if values is not None:
        if kind not in (_STR, _PROP) or bucket is not None:
            _bad("values", f"'values' applies to string fields without a bucket, not to {fname!r}")
        if not isinstance(values, list) or not values or not all(
            isinstance(v, str) and v for v in values
        ):
            _bad("values", f"'values' must be a non-empty list of non-empty strings, got {values!r}")

    if bucket is not None:
        fmt = _BUCKET_FORMAT[bucket]

        def bucketed(p: Profile) -> str:
            t = _utc(get(p))
            return UNKNOWN if t is None else fmt(t)

        return bucketed
    if kind is _FLAG:

        def flag(p: Profile) -> str:
            v = get(p)
            return "true" if v is True else "false" if v is False else UNKNOWN

        return flag
    allowed = frozenset(values) if values is not None else None

    def text(p: Profile) -> str:
        v = get(p)
        if v is None:
            return UNKNOWN
        s = v if isinstance(v, str) else str(v)
        if allowed is not None:
            return s if s in allowed else OTHER
        return s[:MAX_VALUE_LENGTH]

    return text


# -- config ---------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Cohort:
    """One configured cohort, compiled.

    ``kind`` is ``"dimension"`` (``by`` a field, optional ``bucket`` /
    ``values``) or ``"predicate"`` (``where``, the JSON expression).
    :meth:`value_of` gives the user's value; it never raises.

    Examples
    --------
    >>> c = CohortConfig.from_dict({"version": 1, "cohorts": [
    ...     {"name": "plan", "by": "plan"}]}).cohorts[0]
    >>> c.kind, c.value_of({"plan": "pro"}), c.value_of({})
    ('dimension', 'pro', 'unknown')
    """

    name: str
    kind: str
    by: str | None = None
    bucket: str | None = None
    values: tuple[str, ...] | None = None
    where: Any = None
    description: str = ""
    _fn: Callable[[Profile], str] = field(default=lambda p: UNKNOWN, repr=False, compare=False)

    def value_of(self, profile: Profile) -> str:
        """This cohort's value for ``profile`` (a dict with profile fields).

        A value of the wrong type counts as missing: ``unknown`` for a
        dimension, ``false`` for a predicate.
        """
        try:
            return self._fn(profile)
        except Exception:  # noqa: BLE001 - one odd profile must not stop the stream
            return UNKNOWN if self.kind == "dimension" else "false"


def _compile_cohort(entry: Any, index: int) -> Cohort:
    label = f"cohorts[{index}]"
    try:
        if not isinstance(entry, Mapping):
            _bad("", f"expected an object with 'name' and 'by' or 'where', got {entry!r}")
        name = entry.get("name")
        if not isinstance(name, str) or not _NAME_RE.fullmatch(name):
            _bad("name", f"name must be 1-64 characters of letters, digits and _ . : - "
                         f"(starting with a letter or digit), got {name!r}")
        label = f"cohort {name!r} ({label})"
        unknown = sorted(set(entry) - _COHORT_KEYS)
        if unknown:
            _bad("", f"unknown key(s) {', '.join(map(repr, unknown))}; known: "
                     f"{', '.join(sorted(_COHORT_KEYS))}")
        description = entry.get("description", "")
        if not isinstance(description, str):
            _bad("description", f"must be a string, got {description!r}")
        has_by, has_where = "by" in entry, "where" in entry
        if has_by == has_where:
            _bad("", "give exactly one of 'by' (a dimension cohort) or 'where' (a predicate cohort)")
        if has_by:
            fn = _compile_dimension(entry)
            values = entry.get("values")
            return Cohort(name, "dimension", by=entry["by"], bucket=entry.get("bucket"),
                          values=tuple(values) if values else None, description=description, _fn=fn)
        for key in ("bucket", "values"):
            if key in entry:
                _bad(key, f"'{key}' applies to dimension cohorts ('by'), not predicates")
        pred = _compile_predicate(entry["where"], "where")
        return Cohort(name, "predicate", where=entry["where"], description=description,
                      _fn=lambda p: "true" if pred(p) else "false")
    except _Bad as e:
        part = f"{e.path}: " if e.path else ""
        raise CohortConfigError(f"{label}: {part}{e.message}") from None


@dataclass(frozen=True, slots=True)
class CohortConfig:
    """A validated, compiled cohort configuration.

    Parameters
    ----------
    version
        Integer >= 1, bumped on every change; written on every tagged row as
        ``llmpulse.cohorts_version`` so dashboards can tell configs apart.
    cohorts
        Cohorts in file order.
    primary
        Name of the cohort whose value becomes the metrics ``cohort``
        dimension (``llmpulse.cohort``); default ``plan``.
    source
        Where the config came from (for logs).

    Examples
    --------
    >>> cfg = CohortConfig.load()
    >>> cfg.primary, cfg.version >= 1, "plan" in cfg.names
    ('plan', True, True)
    """

    version: int
    cohorts: tuple[Cohort, ...]
    primary: str = DEFAULT_PRIMARY
    source: str = "<config>"

    @property
    def names(self) -> tuple[str, ...]:
        """Cohort names in file order."""
        return tuple(c.name for c in self.cohorts)

    @classmethod
    def load(cls, path: str | PathLike[str] | None = None) -> CohortConfig:
        """Read the shipped default (``path`` None) or a user file.

        A user file replaces the default entirely: one document, one version.

        Examples
        --------
        >>> CohortConfig.load().source
        'processors/data/cohorts.json'
        >>> CohortConfig.load("/nonexistent/cohorts.json")
        Traceback (most recent call last):
        ...
        processors.cohorts.CohortConfigError: /nonexistent/cohorts.json: cannot read cohort config: No such file or directory
        """
        if path is None:
            where = "processors/data/cohorts.json"
            res = resources.files("processors").joinpath("data/cohorts.json")
        else:
            where, res = str(path), Path(path)
        try:
            text = res.read_text(encoding="utf-8")
        except OSError as e:
            raise CohortConfigError(f"{where}: cannot read cohort config: {e.strerror or e}") from None
        try:
            doc = json.loads(text)
        except json.JSONDecodeError as e:
            raise CohortConfigError(f"{where}: not valid JSON: {e}") from None
        return cls.from_dict(doc, where=where)

    @classmethod
    def from_dict(cls, doc: Any, *, where: str = "<config>") -> CohortConfig:
        """Validate and compile an already-parsed config document.

        Every problem raises :class:`CohortConfigError` naming ``where``,
        the cohort and the bad part.

        Examples
        --------
        >>> doc = {"version": 2, "cohorts": [{"name": "plan", "by": "plan"},
        ...        {"name": "big", "where": {"field": "properties.seats", "gte": 50}}]}
        >>> CohortConfig.from_dict(doc).names
        ('plan', 'big')
        >>> doc["cohorts"][1]["where"] = {"field": "plan", "gte": 50}
        >>> CohortConfig.from_dict(doc, where="mine.json")
        Traceback (most recent call last):
        ...
        processors.cohorts.CohortConfigError: mine.json: cohort 'big' (cohorts[1]): where: operator 'gte' does not apply to 'plan' (a string); use one of: eq, ne, in, exists
        """
        try:
            return cls._from_dict(doc, where)
        except CohortConfigError as e:
            raise CohortConfigError(f"{where}: {e}") from None

    @classmethod
    def _from_dict(cls, doc: Any, where: str) -> CohortConfig:
        if not isinstance(doc, Mapping):
            raise CohortConfigError(f"expected a JSON object, got {type(doc).__name__}")
        unknown = sorted(set(doc) - _TOP_KEYS)
        if unknown:
            raise CohortConfigError(
                f"unknown key(s) {', '.join(map(repr, unknown))}; known: {', '.join(sorted(_TOP_KEYS))}"
            )
        version = doc.get("version")
        if version is None:
            raise CohortConfigError("'version' is required: an integer >= 1, bumped on every change")
        if not isinstance(version, int) or isinstance(version, bool) or version < 1:
            raise CohortConfigError(f"'version' must be an integer >= 1, got {version!r}")
        entries = doc.get("cohorts")
        if not isinstance(entries, list) or not entries:
            raise CohortConfigError(f"'cohorts' must be a non-empty list, got {entries!r}")
        cohorts = tuple(_compile_cohort(e, i) for i, e in enumerate(entries))
        first: dict[str, int] = {}
        for i, c in enumerate(cohorts):
            if c.name in first:
                raise CohortConfigError(
                    f"cohort {c.name!r} (cohorts[{i}]): duplicate name, first used by cohorts[{first[c.name]}]"
                )
            first[c.name] = i
        primary = doc.get("primary", DEFAULT_PRIMARY)
        if primary not in first:
            hint = "set 'primary' to one of" if "primary" in doc else "add it, or set 'primary' to one of"
            raise CohortConfigError(
                f"primary cohort {primary!r} is not configured; {hint}: {', '.join(first)}"
            )
        return cls(version, cohorts, primary, where)


# -- tagging --------------------------------------------------------------------


def primary_cohort(cohorts: Mapping[str, str], primary: str = DEFAULT_PRIMARY) -> str:
    """The one value used as the metrics ``cohort`` dimension.

    Examples
    --------
    >>> primary_cohort({"plan": "pro", "eu": "true"})
    'pro'
    >>> primary_cohort({"plan": "pro", "eu": "true"}, primary="eu")
    'true'
    >>> primary_cohort({})
    'unknown'
    """
    return cohorts.get(primary, UNKNOWN)


class CacheInfo(NamedTuple):
    """Hits and misses of :class:`CohortTagger`'s per-profile cache."""

    hits: int
    misses: int
    maxsize: int
    currsize: int


class CohortTagger:
    """Cohort values of users, and spans/feedback tagged with them.

    Parameters
    ----------
    config
        The cohort configuration.
    cache_size
        Most profiles whose results are remembered, keyed by
        ``(user_id, project, updated_at)``: a changed profile has a new
        ``updated_at`` and so a new key. ``0`` disables the cache.

    Examples
    --------
    >>> tagger = CohortTagger(CohortConfig.from_dict({"version": 3, "cohorts": [
    ...     {"name": "plan", "by": "plan"},
    ...     {"name": "flag:beta", "by": "feature_flags.beta"}]}))
    >>> tagger.cohorts_for({"user_id": "u1", "plan": "pro", "feature_flags": {"beta": True}})
    {'plan': 'pro', 'flag:beta': 'true'}
    >>> tagger.cohorts_for(None)
    {'plan': 'unknown', 'flag:beta': 'unknown'}
    """

    def __init__(self, config: CohortConfig, *, cache_size: int = 16_384) -> None:
        if cache_size < 0:
            raise ValueError(f"cache_size must be >= 0, got {cache_size}")
        self.config = config
        self.cache_size = cache_size
        self._cohorts = config.cohorts
        self._cache: OrderedDict[tuple[Any, Any, Any], tuple[dict[str, str], dict[str, str]]] = OrderedDict()
        self._hits = self._misses = 0
        self._unknown = self._entry_from({c.name: UNKNOWN for c in config.cohorts})

    def _entry_from(self, cohorts: dict[str, str]) -> tuple[dict[str, str], dict[str, str]]:
        attrs = {ATTR_PREFIX + name: value for name, value in cohorts.items()}
        attrs[PRIMARY_ATTR] = cohorts[self.config.primary]
        attrs[VERSION_ATTR] = str(self.config.version)
        return cohorts, attrs

    def _entry(self, profile: Profile | None) -> tuple[dict[str, str], dict[str, str]]:
        # The returned dicts are shared with the cache: callers copy them.
        if profile is None:
            return self._unknown
        get = profile.get
        key = (get("user_id"), get("project"), get("updated_at"))
        cache = self._cache
        try:
            entry = cache.get(key)
        except TypeError:  # unhashable updated_at: compute, don't cache
            return self._entry_from({c.name: c.value_of(profile) for c in self._cohorts})
        if entry is not None:
            cache.move_to_end(key)
            self._hits += 1
            return entry
        self._misses += 1
        entry = self._entry_from({c.name: c.value_of(profile) for c in self._cohorts})
        # Without a user id and an updated_at two different profiles could share a key.
        if self.cache_size and key[0] is not None and key[2] is not None:
            cache[key] = entry
            if len(cache) > self.cache_size:
                cache.popitem(last=False)
        return entry

    def cohorts_for(self, profile: Profile | None) -> dict[str, str]:
        """Cohort name -> value for every configured cohort (a new dict).

        ``profile`` None (no profile, or deleted): ``unknown`` everywhere.
        A missing field: ``unknown`` for a dimension cohort, ``false`` for
        a predicate cohort.

        Examples
        --------
        >>> tagger = CohortTagger(CohortConfig.from_dict({"version": 1, "cohorts": [
        ...     {"name": "plan", "by": "plan"},
        ...     {"name": "eu", "where": {"field": "country", "in": ["DE", "FR"]}}]}))
        >>> tagger.cohorts_for({"plan": "pro"})
        {'plan': 'pro', 'eu': 'false'}
        """
        return dict(self._entry(profile)[0])

    def attributes_for(self, profile: Profile | None) -> dict[str, str]:
        """The attributes :meth:`tag_span` adds, as a new dict.

        Examples
        --------
        >>> tagger = CohortTagger(CohortConfig.from_dict({"version": 4, "cohorts": [
        ...     {"name": "plan", "by": "plan"}]}))
        >>> tagger.attributes_for({"plan": "pro"})
        {'llmpulse.cohort.plan': 'pro', 'llmpulse.cohort': 'pro', 'llmpulse.cohorts_version': '4'}
        """
        return dict(self._entry(profile)[1])

    def primary_for(self, profile: Profile | None) -> str:
        """The primary cohort's value for ``profile`` (what child spans carry).

        Cheaper than ``attributes_for(profile)[PRIMARY_ATTR]``: no dict copy.

        Examples
        --------
        >>> tagger = CohortTagger(CohortConfig.load())
        >>> tagger.primary_for({"plan": "team"}), tagger.primary_for(None)
        ('team', 'unknown')
        """
        return self._entry(profile)[1][PRIMARY_ATTR]

    def primary_cohort(self, cohorts: Mapping[str, str]) -> str:
        """The configured primary cohort's value in ``cohorts``.

        Examples
        --------
        >>> tagger = CohortTagger(CohortConfig.load())
        >>> tagger.primary_cohort(tagger.cohorts_for({"plan": "free"}))
        'free'
        """
        return primary_cohort(cohorts, self.config.primary)

    def merged_attributes(self, attributes: Mapping[str, str] | None, profile: Profile | None) -> dict[str, str]:
        """``attributes`` plus the cohort attributes of ``profile``, as a new dict.

        What :meth:`tag_span` puts in the copy it returns, for callers that
        tag a record they own in place.

        Examples
        --------
        >>> tagger = CohortTagger(CohortConfig.from_dict({"version": 4, "cohorts": [
        ...     {"name": "plan", "by": "plan"}]}))
        >>> tagger.merged_attributes({"llmpulse.cohort": "forged", "a": "1"}, {"plan": "pro"})["llmpulse.cohort"]
        'pro'
        """
        attrs = self._entry(profile)[1]
        # Ours win over same-named attributes a producer sent: a client must
        # not be able to put itself into another cohort.
        return {**attributes, **attrs} if attributes else dict(attrs)

    def _tag(self, record: Mapping[str, Any], profile: Profile | None) -> dict[str, Any]:
        out = dict(record)
        out["attributes"] = self.merged_attributes(record.get("attributes"), profile)
        return out

    def tag_span(self, span: Mapping[str, Any], profile: Profile | None) -> dict[str, Any]:
        """A new span with the cohort attributes of ``profile`` added.

        The input span and its ``attributes`` are not changed (the copy is
        shallow: other nested values are shared).

        Examples
        --------
        >>> tagger = CohortTagger(CohortConfig.load())
        >>> span = {"span_id": "a1", "attributes": {"http.route": "/v1/chat"}}
        >>> tagged = tagger.tag_span(span, None)
        >>> tagged["attributes"]["llmpulse.cohort"], len(span["attributes"])
        ('unknown', 1)
        """
        return self._tag(span, profile)

    def tag_feedback(self, feedback: Mapping[str, Any], profile: Profile | None) -> dict[str, Any]:
        """A new feedback record with the cohort attributes added.

        Examples
        --------
        >>> tagger = CohortTagger(CohortConfig.load())
        >>> fb = tagger.tag_feedback({"feedback_id": "f1", "attributes": {}}, {"plan": "pro"})
        >>> fb["attributes"]["llmpulse.cohort.plan"]
        'pro'
        """
        return self._tag(feedback, profile)

    def cache_info(self) -> CacheInfo:
        """Hits and misses of the per-profile cache.

        Examples
        --------
        >>> tagger = CohortTagger(CohortConfig.load())
        >>> p = {"user_id": "u1", "plan": "pro", "updated_at": 5}
        >>> _ = tagger.cohorts_for(p), tagger.cohorts_for(p)
        >>> tagger.cache_info()[:2]
        (1, 1)
        """
        return CacheInfo(self._hits, self._misses, self.cache_size, len(self._cache))

    def __repr__(self) -> str:
        return f"<CohortTagger v{self.config.version}: {', '.join(self.config.names)}>"


# -- profile store ----------------------------------------------------------------


def _updated_at(profile: Profile) -> datetime | None:
    return _utc(profile.get("updated_at"))


def newer(existing: Profile | None, incoming: Profile) -> bool:
    """Whether ``incoming`` should replace ``existing`` in the profile table.

    The later ``updated_at`` wins; on a tie the incoming one wins (a
    re-sent profile is the producer's latest word). Nothing stored: always
    True. An ``existing`` without a readable ``updated_at`` always loses; an
    ``incoming`` without one never replaces a stored profile. Tombstones
    (``None`` values) are not profiles: see :func:`apply_update`.

    Examples
    --------
    >>> newer(None, {"updated_at": 5})
    True
    >>> newer({"updated_at": 5}, {"updated_at": 4}), newer({"updated_at": 5}, {"updated_at": 5})
    (False, True)
    """
    if existing is None:
        return True
    new_t = _updated_at(incoming)
    if new_t is None:
        return False
    old_t = _updated_at(existing)
    return old_t is None or new_t >= old_t


def apply_update(table: MutableMapping[Any, Any], user_id: Any, incoming: Profile | None) -> bool:
    """Apply one ``llm.users`` record to ``table`` (a dict or a faust Table).

    ``incoming`` None is a tombstone and deletes the user, whatever was
    stored (a tombstone has no ``updated_at`` to compare). Otherwise the
    profile is stored if :func:`newer` says so. Returns True if the table
    changed.

    Examples
    --------
    >>> table = {}
    >>> apply_update(table, "u1", {"plan": "pro", "updated_at": 2})
    True
    >>> apply_update(table, "u1", {"plan": "free", "updated_at": 1})
    False
    >>> apply_update(table, "u1", None), "u1" in table
    (True, False)
    """
    if incoming is None:
        if user_id in table:
            del table[user_id]
            return True
        return False
    if newer(table.get(user_id), incoming):
        table[user_id] = incoming
        return True
    return False


class ProfileStore:
    """Latest profile per user, in memory, bounded (least recently used out).

    For tests and benchmarks; the ingest worker keeps every profile in a
    :class:`processors.tables.CompactedTable` over ``llm.users`` with the
    same rules (:func:`newer`, tombstones delete). An evicted user reads as
    "no profile" (cohorts ``unknown``) until their profile is sent again.

    Parameters
    ----------
    max_users
        Most profiles kept.

    Examples
    --------
    >>> store = ProfileStore(max_users=2)
    >>> for uid in ("a", "b", "c"):
    ...     _ = store.apply(uid, {"user_id": uid, "updated_at": 1})
    >>> store.get("a") is None, len(store)
    (True, 2)
    """

    def __init__(self, max_users: int = 100_000) -> None:
        if max_users < 1:
            raise ValueError(f"max_users must be >= 1, got {max_users}")
        self.max_users = max_users
        self._data: OrderedDict[Any, Profile] = OrderedDict()

    def apply(self, user_id: Any, incoming: Profile | None) -> bool:
        """Apply one record (``None`` deletes); True if the store changed."""
        data = self._data
        changed = apply_update(data, user_id, incoming)
        if changed and incoming is not None:
            data.move_to_end(user_id)
            if len(data) > self.max_users:
                data.popitem(last=False)
        return changed

    def get(self, user_id: Any) -> Profile | None:
        """The user's latest profile, or None (never seen, deleted, evicted)."""
        profile = self._data.get(user_id)
        if profile is not None:
            self._data.move_to_end(user_id)
        return profile

    def __contains__(self, user_id: object) -> bool:
        return user_id in self._data

    def __len__(self) -> int:
        return len(self._data)
