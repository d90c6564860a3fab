"""Expand a Grafana PostgreSQL panel query the way Grafana does, so tests can run it.

Grafana turns a panel's ``rawSql`` into the statement PostgreSQL sees in two
steps, and :func:`render` does both:

1. **Frontend** (``templateSrv.replace`` with the SQL datasource's
   ``interpolateVariable``): template variables and the built-in
   ``$__interval`` / ``$__interval_ms`` / ``$__from`` / ``$__to`` /
   ``$__range_s`` / ``$__range_ms`` (see :func:`interpolate`).
2. **Backend** (``sqleng.Interpolate``, then the postgres macro engine):
   ``$__unixEpochFrom()`` / ``$__unixEpochTo()``, then every
   ``$__name(args)`` macro (see :func:`expand_macros`).

Supported, with Grafana's output (pkg/tsdb/grafana-postgresql-datasource/macros.go):

============================================  =====================================================
``$__timeFilter(col)``                        ``col BETWEEN '<from>' AND '<to>'`` (RFC 3339, UTC)
``$__timeFrom()`` / ``$__timeTo()``           ``'<from>'`` / ``'<to>'`` (untyped literals: cast them)
``$__time(col)`` / ``$__timeEpoch(col)``      ``col AS "time"`` / ``extract(epoch from col) as "time"``
``$__timeGroup(col, '5m')``                   ``floor(extract(epoch from col)/300)*300`` (epoch
                                              seconds), or ``time_bucket('300.000s',col)`` when
                                              the datasource has ``timescaledb: true``
``$__timeGroupAlias(col, '5m')``              the same plus ``AS "time"``
``$__unixEpochFilter(col)``                   ``col >= <from s> AND col <= <to s>``
``$__unixEpochFrom()`` / ``$__unixEpochTo()`` epoch seconds
``$__unixEpochNano{Filter,From,To}``          the same in nanoseconds
``$__unixEpochGroup{,Alias}(col, '5m')``      ``floor((col)/300)*300`` (``AS "time"``)
``$__interval`` / ``$__interval_ms``          ``(to - from) / max_data_points`` rounded as Grafana
                                              rounds it, at least ``min_interval`` (the
                                              datasource's, ``1m`` unless provisioned otherwise)
``$var``, ``${var}``, ``[[var]]``             value(s) of a template variable, see below
``${var:fmt}``, ``[[var:fmt]]``               ``fmt`` in csv, sqlstring, singlequote, doublequote,
                                              raw, pipe, json, text
============================================  =====================================================

Template variables follow the SQL datasource's default formatting: a
multi-value or include-All variable becomes a comma list of quoted literals
(``'a','b'``, ``'`` doubled); a single-value variable is inserted unquoted
with ``'`` doubled (so write ``'$var'``). "All" (``$__all``) expands to every
option value, or to the variable's custom all value inserted unformatted.

Anything else raises :class:`GrafanaSqlError`: an unknown macro (as Grafana
does), an undeclared variable (Grafana would leave ``$name`` in the SQL),
an unsupported format or built-in, a ``$__timeGroup`` fill argument (Grafana
fills in after the query; that is not emulated). So a panel that uses
something this module cannot reproduce fails its test instead of being
skipped. The ``$__name(args)`` pattern is Grafana's: arguments cannot contain
``)``.

Examples
--------
>>> from datetime import datetime, timezone
>>> tr = TimeRange(datetime(2025, 6, 1, 6, tzinfo=timezone.utc), datetime(2025, 6, 1, 12, tzinfo=timezone.utc))
>>> project = Variable("project", ALL, options=options("a", "b"), multi=True, include_all=True)
>>> render("SELECT 1 FROM t WHERE $__timeFilter(ts) AND project IN ($project)", tr, [project])
"SELECT 1 FROM t WHERE ts BETWEEN '2025-06-01T06:00:00Z' AND '2025-06-01T12:00:00Z' AND project IN ('a','b')"
"""
from __future__ import annotations

import json
import re
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any

__all__ = [
    "ALL",
    "GrafanaSqlError",
    "Option",
    "TimeRange",
    "Variable",
    "calculate_interval",
    "expand_macros",
    "interpolate",
    "options",
    "panels",
    "parse_interval",
    "render",
    "resolve_variables",
    "seconds_to_hms",
]

#: The value Grafana stores for the "All" option.
ALL = "$__all"

_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


class GrafanaSqlError(ValueError):
    """A query uses something Grafana would reject, or this module does not emulate."""


# ---------------------------------------------------------------- time


@dataclass(frozen=True)
class TimeRange:
    """A dashboard time range; Grafana sends both ends with millisecond precision."""

    start: datetime
    end: datetime

    def __post_init__(self) -> None:
        if self.start.utcoffset() is None or self.end.utcoffset() is None:
            raise ValueError("time range ends must be timezone-aware")
        object.__setattr__(self, "start", _ms(self.start))
        object.__setattr__(self, "end", _ms(self.end))

    @classmethod
    def last(cls, span: timedelta, now: datetime) -> TimeRange:
        """``now-<span>`` to ``now``, as the time picker's "Last ..." ranges."""
        return cls(now - span, now)

    @property
    def duration(self) -> timedelta:
        return self.end - self.start


def _ms(at: datetime) -> datetime:
    at = at.astimezone(UTC)
    return at.replace(microsecond=at.microsecond // 1000 * 1000)


def _rfc3339nano(at: datetime) -> str:
    """Go's ``t.UTC().Format(time.RFC3339Nano)``: trailing zeros of the fraction dropped."""
    at = at.astimezone(UTC)
    text = at.strftime("%Y-%m-%dT%H:%M:%S")
    if at.microsecond:
        text += f".{at.microsecond:06d}".rstrip("0")
    return text + "Z"


def _unix(at: datetime) -> int:
    return (at - _EPOCH) // timedelta(seconds=1)


def _unix_ms(at: datetime) -> int:
    return (at - _EPOCH) // timedelta(milliseconds=1)


_UNITS = {"ms": timedelta(milliseconds=1), "s": timedelta(seconds=1), "m": timedelta(minutes=1),
          "h": timedelta(hours=1), "d": timedelta(days=1), "w": timedelta(weeks=1)}
_INTERVAL = re.compile(r"(\d+(?:\.\d+)?)(ms|s|m|h|d|w)")


def parse_interval(text: str) -> timedelta:
    """A Grafana interval such as ``30s``, ``5m``, ``1h``, ``7d``, ``1w`` or ``1h30m``.

    Months and years (``M``, ``y``) depend on the calendar in Grafana and are
    not supported.

    >>> parse_interval("1h30m"), parse_interval("500ms")
    (datetime.timedelta(seconds=5400), datetime.timedelta(microseconds=500000))
    """
    text = text.strip()
    parts = _INTERVAL.findall(text)
    if not text or "".join(n + u for n, u in parts) != text:
        raise GrafanaSqlError(f"cannot parse interval {text!r} (ms, s, m, h, d, w; no months or years)")
    return sum((float(n) * _UNITS[u] for n, u in parts), timedelta())


# Grafana's rangeutil.roundInterval: (upper bound exclusive in ms, result in ms).
_ROUNDING: tuple[tuple[int, int], ...] = (
    (15, 10), (35, 20), (75, 50), (150, 100), (350, 200), (750, 500), (1500, 1000),
    (3500, 2000), (7500, 5000), (12500, 10000), (17500, 15000), (25000, 20000),
    (45000, 30000), (90000, 60000), (210000, 120000), (450000, 300000), (750000, 600000),
    (1050000, 900000), (1500000, 1200000), (2700000, 1800000), (5400000, 3600000),
    (9000000, 7200000), (16200000, 10800000), (32400000, 21600000), (86400000, 43200000),
    (172800000, 86400000), (604800000, 86400000), (1814400000, 604800000),
    (3628800000, 2592000000),
)
_ROUND_MAX = 31536000000  # 1y


def _round_interval(ms: float) -> int:
    for bound, result in _ROUNDING:
        if ms < bound:
            return result
    return _ROUND_MAX


def calculate_interval(time_range: TimeRange, max_data_points: int = 1000, min_interval: str = "1m") -> timedelta:
    """``$__interval`` of a panel: Grafana's ``rangeutil.calculateInterval``.

    In Grafana ``max_data_points`` is the panel's width in pixels unless the
    query options set it, so ``$__interval`` changes with the screen: tests
    fix it. ``min_interval`` is the panel's, else the datasource's
    ``timeInterval`` (``1m`` for SQL datasources when not provisioned).

    >>> from datetime import datetime, timezone
    >>> now = datetime(2025, 6, 1, tzinfo=timezone.utc)
    >>> calculate_interval(TimeRange.last(timedelta(hours=6), now), 1000)
    datetime.timedelta(seconds=60)
    >>> calculate_interval(TimeRange.last(timedelta(days=7), now), 1000)
    datetime.timedelta(seconds=600)
    """
    raw_ms = (time_range.end - time_range.start) / timedelta(milliseconds=1) / max_data_points
    ms = max(_round_interval(raw_ms), parse_interval(min_interval) // timedelta(milliseconds=1))
    return timedelta(milliseconds=ms)


def seconds_to_hms(seconds: float) -> str:
    """Grafana's ``rangeutil.secondsToHms``: how ``$__interval`` is written (``1m``, ``2h``, ``7d``).

    >>> seconds_to_hms(60), seconds_to_hms(604800), seconds_to_hms(0.5)
    ('1m', '7d', '500ms')
    """
    years = int(seconds // 31536000)
    if years:
        return f"{years}y"
    days = int(seconds % 31536000 // 86400)
    if days:
        return f"{days}d"
    hours = int(seconds % 31536000 % 86400 // 3600)
    if hours:
        return f"{hours}h"
    minutes = int(seconds % 31536000 % 86400 % 3600 // 60)
    if minutes:
        return f"{minutes}m"
    secs = int(seconds % 31536000 % 86400 % 3600 % 60)
    if secs:
        return f"{secs}s"
    millis = int(seconds * 1000)
    if millis:
        return f"{millis}ms"
    return "less than a millisecond"


def _go_float(x: float) -> str:
    """Go's ``fmt.Sprintf("%v", float64)``: shortest digits, exponent from 1e+06 up.

    >>> _go_float(60.0), _go_float(0.5), _go_float(2592000.0)
    ('60', '0.5', '2.592e+06')
    """
    d = Decimal(repr(float(x))).normalize()
    exp = d.adjusted()
    if -4 <= exp < 6:
        return format(d, "f")
    digits = "".join(map(str, d.as_tuple().digits))
    mantissa = digits[0] + ("." + digits[1:] if len(digits) > 1 else "")
    return f"{'-' if d < 0 else ''}{mantissa}e{'+' if exp >= 0 else '-'}{abs(exp):02d}"


# ---------------------------------------------------------------- variables


@dataclass(frozen=True)
class Option:
    """One option of a variable: what the picker shows (``text``) and what queries get (``value``)."""

    text: str
    value: str


def options(*values: str) -> tuple[Option, ...]:
    """Options whose text is their value (what a query variable without ``__text`` returns)."""
    return tuple(Option(v, v) for v in values)


@dataclass(frozen=True)
class Variable:
    """A template variable with its current value.

    ``current`` is one value, several (a multi-value selection), or
    :data:`ALL`. ``options`` are needed for "All" and for the ``text`` format.
    """

    name: str
    current: str | tuple[str, ...]
    options: tuple[Option, ...] = ()
    multi: bool = False
    include_all: bool = False
    all_value: str | None = None
    type: str = "query"

    def __post_init__(self) -> None:
        if isinstance(self.current, list):
            object.__setattr__(self, "current", tuple(self.current))
        if self.is_all and not self.include_all:
            raise GrafanaSqlError(f"variable {self.name!r} is set to All but does not include an All option")

    @property
    def is_all(self) -> bool:
        return self.current == ALL or self.current == (ALL,)


# Grafana's variableRegex (public/app/features/variables/utils.ts).
_VARIABLE = re.compile(
    r"\$(\w+)|\[\[(\w+?)(?::(\w+))?\]\]|\$\{(\w+)(?:\.([^:^}]+))?(?::([^}]+))?\}", re.ASCII
)
_BUILTINS = frozenset({"__interval", "__interval_ms", "__from", "__to", "__range_s", "__range_ms"})


def _quote_literal(value: str) -> str:
    return "'" + value.replace("'", "''") + "'"


def _sql_default(value: str | list[str], var: Variable) -> str:
    """The SQL datasource's ``interpolateVariable``."""
    if isinstance(value, str):
        if var.multi or var.include_all:
            return _quote_literal(value)
        return value.replace("'", "''")
    return ",".join(_quote_literal(v) for v in value)


def _listify(value: str | list[str]) -> list[str]:
    return [value] if isinstance(value, str) else value


_FORMATS: dict[str, Callable[[str | list[str]], str]] = {
    "csv": lambda v: ",".join(_listify(v)),
    "raw": lambda v: ",".join(_listify(v)),
    "pipe": lambda v: "|".join(_listify(v)),
    "json": lambda v: json.dumps(v, separators=(",", ":")),
    "singlequote": lambda v: ",".join("'" + x.replace("'", "\\'") + "'" for x in _listify(v)),
    "doublequote": lambda v: ",".join('"' + x.replace('"', '\\"') + '"' for x in _listify(v)),
    # Grafana's sqlStringFormatter: ' doubled, " backslash-escaped, each value quoted.
    "sqlstring": lambda v: ",".join(
        "'" + x.replace("'", "''").replace('"', '\\"') + "'" for x in _listify(v)
    ),
}


def _format_variable(var: Variable, fmt: str | None) -> str:
    if fmt is not None and fmt not in _FORMATS and fmt != "text":
        raise GrafanaSqlError(f"variable format {fmt!r} of ${{{var.name}:{fmt}}} is not supported here")
    if var.is_all:
        if fmt == "text":
            return "All"
        if var.all_value is not None:
            return var.all_value  # Grafana skips formatting a custom all value
        value: str | list[str] = [o.value for o in var.options]
        if not value:
            raise GrafanaSqlError(f"variable {var.name!r} is All but has no options")
    elif isinstance(var.current, tuple):
        value = list(var.current)
    else:
        value = var.current
    if fmt == "text":
        texts = {o.value: o.text for o in var.options}
        return " + ".join(texts.get(v, v) for v in _listify(value))
    if fmt is None:
        return _sql_default(value, var)
    return _FORMATS[fmt](value)


def _builtin_values(time_range: TimeRange, interval: timedelta | None) -> dict[str, str]:
    values = {
        "__from": str(_unix_ms(time_range.start)),
        "__to": str(_unix_ms(time_range.end)),
        "__range_s": str(int(time_range.duration.total_seconds())),
        "__range_ms": str(time_range.duration // timedelta(milliseconds=1)),
    }
    if interval is not None:
        values["__interval"] = seconds_to_hms(interval.total_seconds())
        values["__interval_ms"] = str(interval // timedelta(milliseconds=1))
    return values


def interpolate(
    sql: str,
    variables: Iterable[Variable] | Mapping[str, Variable] = (),
    builtins: Mapping[str, str] | None = None,
) -> str:
    """Replace template variables and built-ins, as Grafana's frontend does.

    ``$__name`` followed by ``(`` is a backend macro and is left alone.

    >>> v = Variable("model", ("gpt-4o", "o'brien"), multi=True)
    >>> interpolate("model IN ($model) AND x = '${model:csv}'", [v])
    "model IN ('gpt-4o','o''brien') AND x = 'gpt-4o,o'brien'"
    >>> interpolate("SELECT $nope", [])
    Traceback (most recent call last):
    ...
    tests.integration.grafana_sql.GrafanaSqlError: $nope is not a declared variable (at 7: ...SELECT $nope...)
    """
    by_name = dict(variables) if isinstance(variables, Mapping) else {v.name: v for v in variables}
    builtins = builtins or {}

    def replace(m: re.Match[str]) -> str:
        name = m.group(1) or m.group(2) or m.group(4)
        fmt = m.group(3) or m.group(6)
        if m.group(5):
            raise GrafanaSqlError(f"field paths such as {m.group(0)} are not supported")
        if name.startswith("__"):
            if m.group(1) and sql[m.end():m.end() + 1] == "(":
                return m.group(0)  # a macro: the backend expands it
            if name in builtins:
                if fmt:
                    raise GrafanaSqlError(f"formats on built-in variables ({m.group(0)}) are not supported")
                return builtins[name]
            where = "here" if name in _BUILTINS else "by this module"
            raise GrafanaSqlError(f"built-in variable ${name} is not available {where}")
        var = by_name.get(name)
        if var is None:
            around = sql[max(0, m.start() - 10):m.end() + 10].replace("\n", " ")
            raise GrafanaSqlError(f"${name} is not a declared variable (at {m.start()}: ...{around}...)")
        return _format_variable(var, fmt)

    return _VARIABLE.sub(replace, sql)


# ---------------------------------------------------------------- macros


# Grafana's sExpr: `\$` + `([_a-zA-Z0-9]+)` + `\(([^\)]*)\)`.
_MACRO = re.compile(r"\$([_a-zA-Z0-9]+)\(([^)]*)\)")


def _group_seconds(args: Sequence[str], name: str) -> float:
    if len(args) < 2:
        raise GrafanaSqlError(f"macro ${name} needs a time column and an interval")
    if len(args) == 3:
        raise GrafanaSqlError(f"macro ${name}: fill modes ({args[2]}) are applied by Grafana after the "
                              "query and are not emulated")
    if len(args) > 3:
        raise GrafanaSqlError(f"macro ${name}: too many arguments {args}")
    return parse_interval(args[1].strip("'")).total_seconds()


def _macro(name: str, args: list[str], tr: TimeRange, timescaledb: bool) -> str:
    frm, to = _rfc3339nano(tr.start), _rfc3339nano(tr.end)
    needs_column = {"__time", "__timeEpoch", "__timeFilter", "__unixEpochFilter", "__unixEpochNanoFilter"}
    if name in needs_column and not args[0]:
        raise GrafanaSqlError(f"missing time column argument for macro ${name}")
    if name == "__time":
        return f'{args[0]} AS "time"'
    if name == "__timeEpoch":
        return f'extract(epoch from {args[0]}) as "time"'
    if name == "__timeFilter":
        return f"{args[0]} BETWEEN '{frm}' AND '{to}'"
    if name == "__timeFrom":
        return f"'{frm}'"
    if name == "__timeTo":
        return f"'{to}'"
    if name == "__timeGroup":
        seconds = _group_seconds(args, name)
        if timescaledb:
            return f"time_bucket('{seconds:.3f}s',{args[0]})"
        return f"floor(extract(epoch from {args[0]})/{_go_float(seconds)})*{_go_float(seconds)}"
    if name == "__timeGroupAlias":
        return _macro("__timeGroup", args, tr, timescaledb) + ' AS "time"'
    if name == "__unixEpochFilter":
        return f"{args[0]} >= {_unix(tr.start)} AND {args[0]} <= {_unix(tr.end)}"
    if name == "__unixEpochNanoFilter":
        ns = lambda at: _unix_ms(at) * 1_000_000  # noqa: E731 - ranges are whole milliseconds
        return f"{args[0]} >= {ns(tr.start)} AND {args[0]} <= {ns(tr.end)}"
    if name == "__unixEpochNanoFrom":
        return str(_unix_ms(tr.start) * 1_000_000)
    if name == "__unixEpochNanoTo":
        return str(_unix_ms(tr.end) * 1_000_000)
    if name == "__unixEpochGroup":
        seconds = _group_seconds(args, name)
        return f"floor(({args[0]})/{_go_float(seconds)})*{_go_float(seconds)}"
    if name == "__unixEpochGroupAlias":
        return _macro("__unixEpochGroup", args, tr, timescaledb) + ' AS "time"'
    raise GrafanaSqlError(f"unknown macro ${name}({', '.join(args)})")


def expand_macros(sql: str, time_range: TimeRange, *, interval: timedelta | None = None,
                  timescaledb: bool = False) -> str:
    """The backend step: global substitutions, then the postgres macros.

    >>> from datetime import datetime, timezone
    >>> tr = TimeRange(datetime(2025, 6, 1, tzinfo=timezone.utc), datetime(2025, 6, 1, 1, tzinfo=timezone.utc))
    >>> expand_macros("SELECT $__timeGroupAlias(ts, '5m'), count(*)", tr)
    'SELECT floor(extract(epoch from ts)/300)*300 AS "time", count(*)'
    >>> expand_macros("SELECT $__timeGroup(ts, 1h)", tr, timescaledb=True)
    "SELECT time_bucket('3600.000s',ts)"
    >>> expand_macros("SELECT $__rate(x)", tr)
    Traceback (most recent call last):
    ...
    tests.integration.grafana_sql.GrafanaSqlError: unknown macro $__rate(x)
    """
    if interval is not None:
        # sqleng.Interpolate; the frontend has usually replaced these already.
        sql = sql.replace("$__interval_ms", str(interval // timedelta(milliseconds=1)))
        sql = sql.replace("$__interval", seconds_to_hms(interval.total_seconds()))
    sql = sql.replace("$__unixEpochFrom()", str(_unix(time_range.start)))
    sql = sql.replace("$__unixEpochTo()", str(_unix(time_range.end)))
    original = sql

    def replace(m: re.Match[str]) -> str:
        name, args = m.group(1), [a.strip(" ") for a in m.group(2).split(",")]
        # Grafana < 5.3 compatibility, kept by Grafana: "$__timeGroup(...)," aliases itself.
        if name == "__timeGroup":
            at = original.find(m.group(0))
            if at >= 0 and original[at + len(m.group(0)):at + len(m.group(0)) + 1] == ",":
                name = "__timeGroupAlias"
        return _macro(name, args, time_range, timescaledb)

    return _MACRO.sub(replace, sql)


def render(
    sql: str,
    time_range: TimeRange,
    variables: Iterable[Variable] | Mapping[str, Variable] = (),
    *,
    interval: timedelta | None = None,
    max_data_points: int = 1000,
    min_interval: str = "1m",
    timescaledb: bool = False,
) -> str:
    """The SQL Grafana sends to PostgreSQL for a panel query (both steps)."""
    if interval is None:
        interval = calculate_interval(time_range, max_data_points, min_interval)
    sql = interpolate(sql, variables, _builtin_values(time_range, interval))
    return expand_macros(sql, time_range, interval=interval, timescaledb=timescaledb)


# ---------------------------------------------------------------- dashboards


def panels(dashboard: Mapping[str, Any]) -> list[dict[str, Any]]:
    """Every panel of a dashboard, rows' nested panels included, rows last."""
    out: list[dict[str, Any]] = []
    rows: list[dict[str, Any]] = []
    for panel in dashboard.get("panels", []):
        (rows if panel.get("type") == "row" else out).append(panel)
        out.extend(panel.get("panels", []))
    return out + rows


def _custom_options(query: str) -> tuple[Option, ...]:
    """Grafana's custom variable syntax: comma-separated, ``\\,`` escapes, ``text : value`` pairs."""
    out = []
    for item in re.findall(r"(?:\\,|[^,])+", query):
        item = item.strip().replace("\\,", ",")
        text, sep, value = item.partition(" : ")
        out.append(Option(text.strip(), value.strip()) if sep else Option(item, item))
    return tuple(out)


_SORTS: dict[int, Callable[[list[Option]], list[Option]]] = {
    0: lambda opts: opts,
    1: lambda opts: sorted(opts, key=lambda o: o.text),
    2: lambda opts: sorted(opts, key=lambda o: o.text, reverse=True),
    5: lambda opts: sorted(opts, key=lambda o: o.text.lower()),
    6: lambda opts: sorted(opts, key=lambda o: o.text.lower(), reverse=True),
}


def resolve_variables(
    dashboard: Mapping[str, Any],
    time_range: TimeRange,
    run: Callable[[str], tuple[list[str], list[tuple[Any, ...]]]],
    choose: Callable[[Mapping[str, Any], tuple[Option, ...]], str | tuple[str, ...]],
    *,
    timescaledb: bool = False,
) -> dict[str, Variable]:
    """Refresh the dashboard's variables in order, as Grafana does on load.

    Query variables run their SQL (interpolated with the variables before
    them; Grafana's variable queries get the time range but no
    ``$__interval``) through ``run(sql) -> (column names, rows)``; options
    come from ``__text``/``__value`` columns or else the first column.
    ``choose(definition, options)`` picks each current value (``ALL`` for
    "All"). Textbox, custom and constant variables are supported.
    """
    resolved: dict[str, Variable] = {}
    builtins = _builtin_values(time_range, None)
    for definition in dashboard.get("templating", {}).get("list", []):
        name, kind = definition["name"], definition.get("type")
        if kind == "query":
            query = definition.get("query")
            if isinstance(query, Mapping):
                query = query.get("rawSql") or query.get("query")
            sql = expand_macros(interpolate(query, resolved, builtins), time_range, timescaledb=timescaledb)
            columns, rows = run(sql)
            if "__value" in columns or "__text" in columns:
                t = columns.index("__text") if "__text" in columns else columns.index("__value")
                v = columns.index("__value") if "__value" in columns else t
                opts = [Option(str(r[t]), str(r[v])) for r in rows]
            else:
                opts = [Option(str(r[0]), str(r[0])) for r in rows]
            if definition.get("regex"):
                raise GrafanaSqlError(f"variable {name!r}: regex filters are not emulated")
            sort = int(definition.get("sort") or 0)
            if sort not in _SORTS:
                raise GrafanaSqlError(f"variable {name!r}: sort {sort} is not emulated")
            seen: dict[str, Option] = {}
            for o in opts:  # Grafana drops duplicate values
                seen.setdefault(o.value, o)
            found = tuple(_SORTS[sort](list(seen.values())))
        elif kind == "custom":
            found = _custom_options(definition.get("query", ""))
        elif kind in ("textbox", "constant"):
            found = (Option(definition.get("query", ""), definition.get("query", "")),)
        else:
            raise GrafanaSqlError(f"variable {name!r}: type {kind!r} is not emulated")
        current = choose(definition, found)
        resolved[name] = Variable(
            name, current, found,
            multi=bool(definition.get("multi")),
            include_all=bool(definition.get("includeAll")),
            all_value=definition.get("allValue") or None,
            type=kind,
        )
    return resolved
