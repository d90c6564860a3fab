"""The metrics store: per-partition partial windows into ``metric_windows``.

The metrics processor keeps one aggregator per source partition and emits
1-minute *partial* windows (``metric_window`` records on
``llm.metric_windows``), each the full current value of one series and
minute as seen by one partition. The ``metrics-store`` sink only appends
them to ``metric_window_inbox`` (:meth:`MetricsStore.append`, a binary COPY);
the ``metrics-compactor`` job (:func:`run_metrics_compactor`) takes the inbox
in batches (:meth:`MetricsStore.compact`) and, like :meth:`MetricsStore.write`
for a batch handed to it directly, turns them into the rows dashboards read,
in one transaction:

1. upsert the partials into ``metric_window_parts`` (one row per series,
   minute and partition; a fuller partial replaces a smaller one, see
   :func:`part_rank`);
2. for every minute whose partials changed, recompute its ``'1m'`` row from
   *all* its partials;
3. recompute the ``'1h'`` rows of the affected hours from their ``'1m'``
   rows, then the ``'1d'`` rows of the affected days from their ``'1h'`` rows.

Every level is an exact merge: counts and token sums add up, costs are summed
as integer nano-dollars, ratings with :func:`math.fsum` (order-independent),
and latency quantiles come from the merged DDSketch, never from averaging
quantiles. Recomputing rather than adding deltas is what makes a replayed
batch change nothing, and lets partials arrive in any order.

Throughput: rows go to the server by binary COPY; step 1 and the read of the
other partials of the changed minutes are one statement, which does not send
back the batch's own partials; the windows of a batch are merged together
(:func:`processors.aggregation.sketch.merge_sketch_groups`: one set of numpy
calls, quantiles from the merged bins without re-parsing them), in slices
streamed to the server while the next slice is merged.
"""
from __future__ import annotations

import dataclasses
import functools
import logging
import threading
import math
import time
from collections.abc import Callable, Mapping, Sequence
from itertools import accumulate
from operator import itemgetter
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from decimal import Decimal
from typing import TYPE_CHECKING, Any

import numpy as np
import psycopg

from sinks.errors import explain
from ddsketch.pb.proto import KeyMappingProto
from ddsketch.pb.proto import pb as _pb
from google.protobuf.message import DecodeError

from processors.aggregation.dimensions import DIMENSIONS
from processors.aggregation.sketch import BinMapping, merge_sketch_groups, quantiles, store_bins

try:  # compiled COPY rows for the sink (optional, see pyproject.toml)
    from sinks._inbox_copy import copy_row as _copy_row
    from sinks._inbox_copy import copy_rows as _copy_rows
except ImportError:  # pragma: no cover - built by every install with a C compiler
    _copy_row = _copy_rows = None

log = logging.getLogger(__name__)

if TYPE_CHECKING:
    from processors.settings import Settings
    from sinks.runner import BatchSink

__all__ = [
    "COUNTERS",
    "FLOAT_SUMS",
    "INBOX_COLUMNS",
    "MetricsStore",
    "MetricsStoreError",
    "MetricsWriteResult",
    "check_part",
    "merge_windows",
    "metrics_store_sink",
    "part_rank",
    "run_metrics_compactor",
    "sketch_quantiles",
]

#: Integer sums of a window, in table column order (``cost_usd`` and the
#: :data:`FLOAT_SUMS` are handled apart: nano-dollars and exact float sums).
COUNTERS: tuple[str, ...] = (
    "request_count", "error_count", "input_tokens", "output_tokens", "cached_tokens",
    "usage_count", "cost_count", "feedback_count", "rating_count", "thumbs_up",
    "thumbs_count", "late_events",
)
QUANTILE_COLUMNS: tuple[str, ...] = ("p50_ms", "p90_ms", "p95_ms", "p99_ms")
_QS = (0.5, 0.9, 0.95, 0.99)

#: (resolution, seconds) of the rows the store writes; each divides the next
#: and all are aligned to the Unix epoch, so days are UTC days, as in the
#: aggregator.
LEVELS: tuple[tuple[str, int], ...] = (("1m", 60), ("1h", 3600), ("1d", 86400))

#: Float sums, merged with ``math.fsum``: the rating sum, and the sums and
#: sums of squares that make means comparable with a t-test (cohorts,
#: experiments): cost, rating and latency per event.
FLOAT_SUMS: tuple[str, ...] = ("rating_sum", "cost_sq_sum", "rating_sq_sum", "latency_ms_sum", "latency_ms_sq_sum")

_SUMS = (*COUNTERS, "cost_usd", *FLOAT_SUMS)
PART_COLUMNS: tuple[str, ...] = (
    "series", "window_start", "partition", *_SUMS, *QUANTILE_COLUMNS, "sketch", "final", "emitted_at",
)
WINDOW_COLUMNS: tuple[str, ...] = (
    "resolution", "window_start", "window_seconds", "series", *DIMENSIONS, *_SUMS,
    *QUANTILE_COLUMNS, "sketch", "partitions", "final",
)

_COUNTERS_OF = itemgetter(*COUNTERS)
_FLOAT_SUMS_OF = itemgetter(*FLOAT_SUMS)
_QUANTILES_OF = itemgetter(*QUANTILE_COLUMNS)
_DIMENSIONS_OF = itemgetter(*DIMENSIONS)

# Windows merged per numpy pass while the previous ones are copied to the server.
_MERGE_SLICE = 128

_PARTS_STAGE = "llmpulse_metric_parts_stage"
_WINDOWS_STAGE = "llmpulse_metric_windows_stage"
_EPOCH = datetime(1970, 1, 1, tzinfo=timezone.utc)
_MINUTE = timedelta(seconds=60)
_NANO = Decimal("1e-9")
# First key of pg_advisory_xact_lock(int, int): "mw", so the per-series
# locks cannot meet other users of the two-key lock space by accident.
_LOCK_CLASS = 0x6D77


class MetricsStoreError(RuntimeError):
    """A batch could not be written for a reason retrying will not fix."""


@dataclass(frozen=True)
class MetricsWriteResult:
    """What one batch did.

    ``parts_changed`` counts partials that were new or replaced a smaller one
    (0 for a replay); ``minutes``, ``hours`` and ``days`` count rows of
    ``metric_windows`` whose values changed (hours and days only when this
    write also ran the rollup, see ``rollup_every_s``).
    """

    parts_received: int
    parts_changed: int
    minutes: int
    hours: int
    days: int


# --------------------------------------------------------------------------
# Pure logic (no database)


def check_part(part: Mapping[str, Any]) -> None:
    """Raise :class:`MetricsStoreError` unless ``part`` is a 1-minute partial the store can merge.

    Examples
    --------
    >>> from schemas.samples import sample
    >>> check_part(sample("metric_window"))
    >>> check_part(sample("metric_window", resolution="1h", window_seconds=3600))  # doctest: +ELLIPSIS
    Traceback (most recent call last):
    ...
    sinks.metrics_store.MetricsStoreError: resolution '1h' (3600 s): only 1-minute partials ...
    """
    problem = None
    start = part["window_start"]
    if part["resolution"] != "1m" or part["window_seconds"] != 60:
        problem = (
            f"resolution {part['resolution']!r} ({part['window_seconds']} s): only 1-minute partials "
            "('1m', 60 s) are merged; the store computes '1h' and '1d' itself"
        )
    elif start.utcoffset() is None or (start - _EPOCH) % timedelta(seconds=60):
        problem = "window_start is not a UTC minute boundary"
    elif part["partition"] < 0:
        problem = f"partition {part['partition']} is negative"
    elif not all(math.isfinite(part[c]) for c in ("cost_usd", *FLOAT_SUMS)):
        problem = "cost_usd, " + ", ".join(FLOAT_SUMS) + " must be finite"
    if problem:
        raise MetricsStoreError(
            f"{problem} (metric_window of series {part['series']} at {start.isoformat()}, "
            f"partition {part['partition']})"
        )


def part_rank(part: Mapping[str, Any]) -> tuple[int, bool, datetime]:
    """Order of two partials of the same (series, minute, partition): the higher one wins.

    A partition's events only ever add to a window, so the partial that has
    seen more events (spans, feedback and late events) is the newer one, and
    a final partial beats an open one with the same events; the emit time
    breaks remaining ties. Ranking by events rather than by arrival means a
    processor that restarts and replays its partition re-emits smaller
    partials of windows already written without taking their values back.

    Examples
    --------
    >>> from schemas.samples import sample
    >>> early = sample("metric_window", request_count=2, error_count=0)
    >>> part_rank(sample("metric_window")) > part_rank(early)
    True
    """
    return (
        part["request_count"] + part["feedback_count"] + part["late_events"],
        bool(part["final"]),
        part["emitted_at"],
    )


_MAPPINGS: dict[bytes, Any] = {}


class _BinValues(dict):
    """Bin key -> value of one mapping, computed once per key: quantiles look up a handful of bins."""

    def __init__(self, mapping: Any) -> None:
        super().__init__()
        self.mapping = mapping
        self.value = self.__getitem__  # what SketchBins.quantiles calls

    def __missing__(self, key: int) -> float:
        value = self[key] = self.mapping.value(key)
        return value


def _mapping(proto: Any) -> Any:
    """The value mapping of a serialized sketch, cached by its protobuf bytes.

    When the sketch was made with a round relative accuracy (what the
    aggregator uses), the same :class:`BinMapping` is rebuilt, so quantiles
    are bit-identical to the aggregator's; :meth:`KeyMappingProto.from_proto`
    alone re-derives the accuracy from gamma and differs in the last digits.
    """
    return _mapping_of(proto.SerializeToString(deterministic=True)).mapping


def _mapping_of(key: bytes) -> _BinValues:
    """:func:`_mapping` by the mapping's deterministic bytes, with its bin values cached."""
    values = _MAPPINGS.get(key)
    if values is None:
        mapping = KeyMappingProto.from_proto(_pb.IndexMapping.FromString(key))
        try:
            guess = BinMapping(float(f"{mapping.relative_accuracy:.12g}")).mapping
            if KeyMappingProto.to_proto(guess).SerializeToString(deterministic=True) == key:
                mapping = guess
        except ValueError:
            pass
        values = _MAPPINGS[key] = _BinValues(mapping)
    return values


def sketch_quantiles(sketch: bytes) -> list[float | None]:
    """p50, p90, p95 and p99 of a serialized sketch; all None when it is empty.

    Examples
    --------
    >>> from schemas.samples import sample
    >>> [round(q) for q in sketch_quantiles(sample("metric_window")["sketch"])]
    [1526, 1526, 1526, 1526]
    >>> from processors.aggregation.sketch import merge_sketches
    >>> sketch_quantiles(merge_sketches([]))
    [None, None, None, None]
    """
    message = _pb.DDSketch.FromString(sketch)
    return quantiles(store_bins(message.positiveValues), int(message.zeroCount), _QS, _mapping(message.mapping))


def _nanos(cost: float | Decimal) -> int:
    """Cost in whole nano-dollars: exact for numeric(18,9) and for the aggregator's floats."""
    if isinstance(cost, Decimal):
        return int(cost.scaleb(9))
    return round(cost * 1e9)


def merge_windows(rows: Sequence[Mapping[str, Any]]) -> dict[str, Any]:
    """Merge windows of one series exactly: sums, merged sketch, its quantiles.

    Parameters
    ----------
    rows
        Partials (``metric_window`` records or ``metric_window_parts`` rows)
        or ``metric_windows`` rows; a row without ``partitions`` counts as one
        partial.

    Returns
    -------
    dict
        The sums (``cost_usd`` as a :class:`~decimal.Decimal` with 9 places),
        ``p50_ms`` .. ``p99_ms``, ``sketch``, ``partitions`` (how many partials
        were merged) and ``final`` (all rows final).

    Examples
    --------
    >>> from schemas.samples import sample
    >>> a = sample("metric_window", partition=0, final=True)
    >>> b = sample("metric_window", partition=1, final=False)
    >>> m = merge_windows([a, b])
    >>> m["request_count"], m["cost_usd"], m["partitions"], m["final"]
    (6, Decimal('0.001328400'), 2, False)
    >>> round(m["p99_ms"]) == round(a["p99_ms"])
    True
    """
    merged = _merge([[_merge_row(r) for r in rows]])[0]
    return dict(zip(_MERGED_COLUMNS, merged))


# Rows are merged as tuples in this order, costs as integer nano-dollars
# (the database hands them over as such, see _merge_list).
_MERGE_COLUMNS = (*COUNTERS, "cost_nanos", *FLOAT_SUMS, "sketch", "partitions", "final")
# What _merge returns: the value columns of a metric_windows row.
_MERGED_COLUMNS = (*_SUMS, *QUANTILE_COLUMNS, "sketch", "partitions", "final")
_N = len(COUNTERS)
_SKETCH = _MERGE_COLUMNS.index("sketch")


def _merge_row(row: Mapping[str, Any]) -> tuple[Any, ...]:
    return (
        *(row[c] for c in COUNTERS), _nanos(row["cost_usd"]), *(row[c] for c in FLOAT_SUMS),
        row["sketch"], row.get("partitions", 1), row["final"],
    )


def _merge(groups: Sequence[Sequence[Sequence[Any]]]) -> list[list[Any]]:
    """:func:`merge_windows` of each group of tuples in ``_MERGE_COLUMNS`` order.

    Returns the values of each merged window in ``_MERGED_COLUMNS`` order.
    The sketches of all groups are merged together (one set of numpy calls),
    and the merged bins give both the bytes and the quantiles.
    """
    sizes = list(map(len, groups))
    flat = [row for rows in groups for row in rows]
    columns = list(zip(*flat)) if flat else [()] * len(_MERGE_COLUMNS)
    bounds = [0, *accumulate(sizes)]
    sketches = merge_sketch_groups([columns[_SKETCH][a:b] for a, b in zip(bounds, bounds[1:])], _QS)
    integers = _integer_sums(columns, sizes, bounds)
    floats = columns[_N + 1:_SKETCH]
    merged = []
    for k, bins in enumerate(sketches):
        a, b = bounds[k], bounds[k + 1]
        counters, nanos, partitions, final = integers[k]
        merged.append([
            *counters, Decimal(nanos).scaleb(-9), *[math.fsum(c[a:b]) for c in floats],
            *bins.quantiles(_QS, _mapping_of(bins.mapping_bytes)), bins.to_bytes(), partitions, final,
        ])
    return merged


def _integer_sums(columns: list[tuple[Any, ...]], sizes: list[int], bounds: list[int]) -> list[tuple]:
    """(counters, cost in nano-dollars, partitions, all final) of each group, as Python ints and bools."""
    if sizes and min(sizes) > 0:
        # Only Python ints that fit int64 give an int64 array (floats give
        # float64, bigger ints uint64 or object): the rest is summed in Python.
        ints = np.array([*columns[:_N + 1], columns[_SKETCH + 1]])
        # int64 sums are exact while no group can reach 2**63 (bigint columns).
        limit = 2**62 // max(sizes)
        if ints.dtype == np.int64 and -limit < int(ints.min()) and int(ints.max()) < limit:
            sums = np.add.reduceat(ints, bounds[:-1], axis=1).T.tolist()
            final = np.logical_and.reduceat(np.array(columns[_SKETCH + 2], dtype=bool), bounds[:-1]).tolist()
            return [(s[:_N], s[_N], s[_N + 1], f) for s, f in zip(sums, final)]
    return [
        ([sum(c[a:b]) for c in columns[:_N]], sum(columns[_N][a:b]), sum(columns[_SKETCH + 1][a:b]),
         all(columns[_SKETCH + 2][a:b]))
        for a, b in zip(bounds, bounds[1:])
    ]


def _floor(at: datetime, seconds: int) -> datetime:
    return at - (at - _EPOCH) % timedelta(seconds=seconds)


def _describe(parts: Sequence[Mapping[str, Any] | bytes]) -> str:
    if any(type(p) is bytes for p in parts):  # COPY rows from sinks._inbox_copy: nothing to name
        return f"batch of {len(parts)} metric_window partials"
    starts = [p["window_start"] for p in parts]
    return (
        f"batch of {len(parts)} metric_window partials "
        f"(windows {min(starts).isoformat()} .. {max(starts).isoformat()}, "
        f"{len({p['series'] for p in parts})} series)"
    )


# --------------------------------------------------------------------------
# Database


_PART_LIST = ", ".join(PART_COLUMNS)
_WINDOW_LIST = ", ".join(WINDOW_COLUMNS)
_EVENTS = "{t}.request_count + {t}.feedback_count + {t}.late_events"


def _merge_list(t: str, partitions: str) -> str:
    """``_MERGE_COLUMNS`` of table alias ``t``; cost_usd as whole nano-dollars (exact for numeric(18,9))."""
    return ", ".join(
        f"({t}.cost_usd * 1000000000)::bigint" if c == "cost_nanos"
        else partitions if c == "partitions" else f"{t}.{c}"
        for c in _MERGE_COLUMNS
    )


# The upsert and the read of the other partials of every changed minute in
# one statement. All parts of a WITH statement see the snapshot taken before
# it ran, so the SELECT reads the rows as they were: it returns the keys the
# upsert changed (whose new values are the batch's own partials, already in
# memory) and every other partial of their minutes, but not the old versions
# of the changed ones. The series are locked by then (_LOCK_STAGED), so no
# other writer can change these minutes between the snapshot and the commit.
_UPSERT_PARTS = (
    "WITH changed AS ("
    f"INSERT INTO metric_window_parts AS p ({_PART_LIST}) SELECT {_PART_LIST} FROM {_PARTS_STAGE} "
    "ON CONFLICT (series, window_start, partition) DO UPDATE SET "
    + ", ".join(f"{c} = EXCLUDED.{c}" for c in PART_COLUMNS[3:])
    + ", updated_at = now() "
    # The same order as part_rank(): a replay (same rank) or a smaller
    # re-emit after a processor restart leaves the row alone.
    f"WHERE ({_EVENTS.format(t='EXCLUDED')}, EXCLUDED.final, EXCLUDED.emitted_at) "
    f"> ({_EVENTS.format(t='p')}, p.final, p.emitted_at) "
    "RETURNING p.series, p.window_start, p.partition) "
    "SELECT series, window_start, partition, TRUE, "
    + ", ".join(["NULL"] * len(_MERGE_COLUMNS)) + " FROM changed "
    "UNION ALL "
    f"SELECT p.series, p.window_start, p.partition, FALSE, {_merge_list('p', partitions='1')}"
    " FROM (SELECT DISTINCT series, window_start FROM changed) AS k"
    # OFFSET 0 keeps the subquery apart, so each changed minute is one
    # primary-key range scan; joined, the planner may scan the whole table
    # (it cannot estimate how few minutes a batch changes).
    " CROSS JOIN LATERAL (SELECT * FROM metric_window_parts AS p"
    " WHERE p.series = k.series AND p.window_start = k.window_start OFFSET 0) AS p"
    " WHERE NOT EXISTS (SELECT FROM changed AS c"
    " WHERE c.series = p.series AND c.window_start = p.window_start AND c.partition = p.partition)"
)

# Rows of the finer level inside each (series, period): one range scan of
# the primary key (resolution, series, window_start) per period.
_READ_WINDOWS = (
    f"SELECT w.series, k.period_start, {_merge_list('w', partitions='w.partitions')}"
    " FROM unnest(%s::text[], %s::timestamptz[]) AS k (series, period_start)"
    " JOIN metric_windows AS w ON w.resolution = %s AND w.series = k.series"
    " AND w.window_start >= k.period_start AND w.window_start < k.period_start + %s::interval"
)

_VALUE_COLUMNS = WINDOW_COLUMNS[4:]
_UPSERT_WINDOWS = (
    f"INSERT INTO metric_windows AS w ({_WINDOW_LIST}) SELECT {_WINDOW_LIST} FROM {_WINDOWS_STAGE} "
    "WHERE resolution = %s "
    "ON CONFLICT (resolution, series, window_start) DO UPDATE SET "
    + ", ".join(f"{c} = EXCLUDED.{c}" for c in _VALUE_COLUMNS)
    + ", updated_at = now() "
    # Unchanged values are not rewritten: updated_at then says when the
    # numbers last moved, and a replay leaves no trace.
    + "WHERE (" + ", ".join(f"w.{c}" for c in _VALUE_COLUMNS) + ") IS DISTINCT FROM ("
    + ", ".join(f"EXCLUDED.{c}" for c in _VALUE_COLUMNS) + ")"
)

# The hours of the changed minutes just staged (every staged 1m row is one).
_QUEUE_ROLLUP = (
    "INSERT INTO metric_rollup_queue (series, hour)"
    " SELECT DISTINCT series, date_bin('1 hour', window_start, timestamptz '1970-01-01 00:00:00+00')"
    f" FROM {_WINDOWS_STAGE} WHERE resolution = '1m' ORDER BY 1, 2 ON CONFLICT DO NOTHING"
)
# Oldest first; SKIP LOCKED lets several store workers share the queue.
_DEQUEUE_ROLLUP = (
    "DELETE FROM metric_rollup_queue WHERE (series, hour) IN ("
    " SELECT series, hour FROM metric_rollup_queue ORDER BY queued_at LIMIT %s FOR UPDATE SKIP LOCKED)"
    " RETURNING series, hour"
)

_LOCK_SERIES = (
    f"SELECT pg_advisory_xact_lock({_LOCK_CLASS}, h) FROM"
    " (SELECT DISTINCT hashtext(s) AS h FROM unnest(%s::text[]) AS s ORDER BY 1) AS x"
)
# The same locks for the series of the staged partials (no parameters to send).
_LOCK_STAGED = (
    f"SELECT pg_advisory_xact_lock({_LOCK_CLASS}, h) FROM"
    f" (SELECT DISTINCT hashtext(series) AS h FROM {_PARTS_STAGE} ORDER BY 1) AS x"
)

_INBOX = "metric_window_inbox"
#: Columns of the inbox: a partial's row plus its series' dimensions.
INBOX_COLUMNS: tuple[str, ...] = (*PART_COLUMNS, *DIMENSIONS)
_INBOX_LIST = ", ".join(INBOX_COLUMNS)
#: The same columns in the order :meth:`MetricsStore.append` COPYs them: the
#: fields' order in a ``metric_window`` message, so that ``sinks._inbox_copy``
#: can write each COPY row in one pass over the message.
APPEND_COLUMNS: tuple[str, ...] = (
    "series", "window_start", "partition", *DIMENSIONS, "request_count", "error_count", "input_tokens",
    "output_tokens", "cached_tokens", "usage_count", "cost_usd", "cost_count", "feedback_count", "rating_sum",
    "rating_count", "thumbs_up", "thumbs_count", "late_events", *QUANTILE_COLUMNS, "sketch", "final",
    "emitted_at", "cost_sq_sum", "rating_sq_sum", "latency_ms_sum", "latency_ms_sq_sum",
)
_APPEND = f"COPY {_INBOX} ({', '.join(APPEND_COLUMNS)}) FROM STDIN (FORMAT BINARY)"
# What a binary COPY stream starts with (signature, flags, extension length)
# when rows are written as bytes rather than by psycopg.
_COPY_SIGNATURE = b"PGCOPY\n\xff\r\n\x00" + bytes(8)
# SKIP LOCKED: two compactors take different rows; the series locks in
# _write keep them from merging the same minute at once.
_TAKE_INBOX = (
    f"DELETE FROM {_INBOX} WHERE ctid = ANY(ARRAY("
    f"SELECT ctid FROM {_INBOX} LIMIT %s FOR UPDATE SKIP LOCKED)) RETURNING ctid, {_INBOX_LIST}"
)
_PEEK_INBOX = f"SELECT ctid::text FROM {_INBOX} LIMIT %s"
_TAKE_ONE = f"DELETE FROM {_INBOX} WHERE ctid = %s::tid RETURNING ctid, {_INBOX_LIST}"

# Binary COPY needs the exact type of every column: read from the catalog
# once per connection, so the store follows the migrations.
_COLUMN_TYPES = (
    "SELECT attname, atttypid FROM pg_attribute"
    " WHERE attrelid = %s::regclass AND attnum > 0 AND NOT attisdropped"
)


def _part_rows(part: Mapping[str, Any]) -> tuple[tuple[Any, ...], tuple[Any, ...]]:
    """The staged ``metric_window_parts`` row of a partial and its tuple for :func:`_merge`."""
    nanos = _nanos(part["cost_usd"])
    counters = _COUNTERS_OF(part)
    floats = _FLOAT_SUMS_OF(part)
    sketch, final = part["sketch"], part["final"]
    staged = (
        part["series"], part["window_start"], part["partition"], *counters, Decimal(nanos).scaleb(-9),
        *floats, *_QUANTILES_OF(part), sketch, final, part["emitted_at"],
    )
    return staged, (*counters, nanos, *floats, sketch, 1, final)


def _inbox_row(part: Mapping[str, Any], _fields=itemgetter(*APPEND_COLUMNS),  # noqa: B008 - built once
               _cost=APPEND_COLUMNS.index("cost_usd")) -> list[Any]:
    """The ``metric_window_inbox`` row of a partial in ``APPEND_COLUMNS`` order (cost as numeric(18,9))."""
    row = list(_fields(part))
    row[_cost] = Decimal(_nanos(row[_cost])).scaleb(-9)
    return row


def _copy_types(conn: psycopg.Connection, table: str, columns: Sequence[str]) -> list[int]:
    """Type oids of ``columns`` of ``table``, for a binary COPY."""
    oids = dict(conn.execute(_COLUMN_TYPES, (table,)).fetchall())
    return [oids[c] for c in columns]


def _part_row(part: Mapping[str, Any]) -> tuple[Any, ...]:
    """The ``metric_window_parts`` row of a partial, in ``PART_COLUMNS`` order."""
    return _part_rows(part)[0]


def _check_parts(parts: Sequence[Mapping[str, Any]]) -> None:
    """:func:`check_part` of every partial, without a call per part in the common case."""
    for part in parts:
        start = part["window_start"]
        # A sum of finite floats times zero is 0.0; any inf or NaN makes it NaN.
        cost = part["cost_usd"]
        if (
            part["resolution"] != "1m" or part["window_seconds"] != 60 or part["partition"] < 0
            or start.utcoffset() is None or (start - _EPOCH) % _MINUTE
            or type(cost) is not float or 0.0 * cost + sum(_FLOAT_SUMS_OF(part)) * 0.0 != 0.0
        ):
            check_part(part)  # raises, naming the problem (or accepts what the test above could not)


def _newest(parts: Sequence[Mapping[str, Any]]) -> tuple[list[Mapping[str, Any]], dict[str, tuple[str, ...]]]:
    """The highest-ranked partial of each (series, minute, partition), and each series' dimensions."""
    latest: dict[tuple[str, datetime, int], Mapping[str, Any]] = {}
    for part in parts:
        key = (part["series"], part["window_start"], part["partition"])
        held = latest.get(key)
        if held is None or part_rank(part) > part_rank(held):
            latest[key] = part
    return list(latest.values()), {p["series"]: _DIMENSIONS_OF(p) for p in latest.values()}


class MetricsStore:
    """Writes batches of ``metric_window`` partials over one connection.

    Transient failures (server down, connection lost) raise
    :class:`psycopg.OperationalError` so the caller can back off and retry the
    same batch; anything else is a :class:`MetricsStoreError` naming the batch.

    Parameters
    ----------
    conninfo
        libpq URL or ``key=value`` string of a migrated database.
    rollup_every_s
        Hours and days are rolled up from the queued changed minutes at most
        this often (``0``: with every write or compaction). The compactor also rolls up when it
        is idle (:meth:`idle`), so nothing stays queued once traffic stops.

    Examples
    --------
    >>> from schemas.samples import sample
    >>> store = MetricsStore("postgresql://llmpulse@127.0.0.1:15432/llmpulse")
    >>> store.write([sample("metric_window")])  # doctest: +SKIP
    MetricsWriteResult(parts_received=1, parts_changed=1, minutes=1, hours=1, days=1)
    >>> store.write([])
    MetricsWriteResult(parts_received=0, parts_changed=0, minutes=0, hours=0, days=0)
    """

    def __init__(self, conninfo: str, rollup_every_s: float = 0.0) -> None:
        self._conninfo = conninfo
        self._conn: psycopg.Connection | None = None
        self._types: dict[str, list[int]] = {}  # stage table -> type oids of its COPY columns
        self.rollup_every_s = rollup_every_s
        self._last_rollup = 0.0

    def _connection(self) -> psycopg.Connection:
        if self._conn is None or self._conn.closed or self._conn.broken:
            conn = psycopg.connect(self._conninfo, connect_timeout=10)
            try:
                # Once per connection; ON COMMIT DELETE ROWS empties them after each batch.
                conn.execute(
                    f"CREATE TEMP TABLE IF NOT EXISTS {_PARTS_STAGE} "
                    "(LIKE metric_window_parts INCLUDING DEFAULTS) ON COMMIT DELETE ROWS"
                )
                conn.execute(
                    f"CREATE TEMP TABLE IF NOT EXISTS {_WINDOWS_STAGE} "
                    "(LIKE metric_windows INCLUDING DEFAULTS) ON COMMIT DELETE ROWS"
                )
                self._types = {
                    table: _copy_types(conn, table, columns)
                    for table, columns in ((_PARTS_STAGE, PART_COLUMNS), (_WINDOWS_STAGE, WINDOW_COLUMNS),
                                           (_INBOX, APPEND_COLUMNS))
                }
                conn.commit()
            except BaseException:
                conn.close()  # e.g. not migrated: the next write starts afresh
                raise
            self._conn = conn
        return self._conn

    def write(self, parts: Sequence[Mapping[str, Any]]) -> MetricsWriteResult:
        """Write one batch of partials in one transaction; idempotent.

        Parameters
        ----------
        parts
            ``metric_window`` records as :func:`schemas.codec.decode` returns
            them, in any order; several partials of one (series, minute,
            partition) may be in one batch (the highest :func:`part_rank` wins).

        Returns
        -------
        MetricsWriteResult

        Raises
        ------
        psycopg.OperationalError
            The database is unreachable; retry the same batch.
        MetricsStoreError
            The batch is bad (not a 1-minute partial, a constraint failed,
            unmergeable sketches) or the database is not migrated.
        """
        if not parts:
            return MetricsWriteResult(0, 0, 0, 0, 0)
        _check_parts(parts)
        latest, dims = _newest(parts)
        try:
            conn = self._connection()
            with conn.transaction(), conn.cursor() as cur:
                result = self._write(cur, len(parts), latest, dims)
            if time.monotonic() - self._last_rollup >= self.rollup_every_s:
                hours, days = self._rollup(conn)
                result = dataclasses.replace(result, hours=hours, days=days)
            return result
        except psycopg.OperationalError:
            self.close()
            raise
        except psycopg.Error as exc:
            raise MetricsStoreError(
                f"writing the {_describe(parts)} failed: {explain(exc)}"
            ) from exc
        except (ValueError, DecodeError) as exc:  # sketches that cannot be read or merged
            raise MetricsStoreError(f"merging the {_describe(parts)} failed: {exc}") from exc

    def append(self, parts: Sequence[Mapping[str, Any] | bytes], *, checked: bool = False) -> int:
        """Append partials to the inbox (one binary COPY, one transaction); the compactor merges them.

        What the ``metrics-store`` sink does with each batch: no merge, no
        upsert, so it writes at the speed of a COPY. Duplicates and replays
        are harmless (the compactor keeps the highest :func:`part_rank`).
        A partial is a decoded ``metric_window`` or, as the sink passes
        most of them, its COPY row already made by :func:`inbox_record`.
        ``checked``: every decoded partial already passed :func:`check_part`
        (the sink checks each message as it decodes it).

        Raises
        ------
        psycopg.OperationalError
            The database is unreachable; retry the same batch.
        MetricsStoreError
            A partial is not mergeable (:func:`check_part`) or the database
            is not migrated.
        """
        if not parts:
            return 0
        rows = [p for p in parts if type(p) is bytes]
        decoded = [p for p in parts if type(p) is not bytes] if len(rows) < len(parts) else ()
        if not checked:
            _check_parts(decoded)
        try:
            conn = self._connection()
            with conn.transaction(), conn.cursor() as cur, cur.copy(_APPEND) as copy:
                if rows:
                    # A view, which psycopg hands to libpq in 128 KB pieces
                    # without copying; slices of bytes would be copies, each
                    # a fresh mmap (1.3 µs a row of page faults, measured).
                    copy.write(memoryview(b"".join([_COPY_SIGNATURE, *rows])))
                copy.set_types(self._types[_INBOX])
                for part in decoded:
                    copy.write_row(_inbox_row(part))
            return len(parts)
        except psycopg.OperationalError:
            self.close()
            raise
        except psycopg.Error as exc:
            raise MetricsStoreError(f"appending the {_describe(parts)} failed: {explain(exc)}") from exc

    def compact(
        self, limit: int = 20_000, on_reject: Callable[[Mapping[str, Any], Exception], None] | None = None
    ) -> MetricsWriteResult | None:
        """Move up to ``limit`` partials out of the inbox and merge them, in one transaction.

        Returns None when the inbox is empty. A batch whose merge fails (a
        sketch that cannot be read or merged) is retried one partial at a
        time; a partial that fails alone is handed to ``on_reject`` (the
        compactor dead-letters it) and removed, so it cannot block the inbox.

        Raises
        ------
        psycopg.OperationalError
            The database is unreachable; nothing was taken, retry later.
        """
        conn = self._connection()
        try:
            with conn.transaction(), conn.cursor() as cur:
                cur.execute(_TAKE_INBOX, (limit,), binary=True)
                rows = cur.fetchall()
                if not rows:
                    return None
                parts = [dict(zip(INBOX_COLUMNS, row[1:])) for row in rows]
                latest, dims = _newest(parts)
                result = self._write(cur, len(parts), latest, dims)
        except psycopg.OperationalError:
            self.close()
            raise
        except (psycopg.Error, ValueError, DecodeError):
            log.warning("metrics-compactor: a batch of %d partials did not merge; merging one by one", limit)
            return self._compact_one_by_one(conn, limit, on_reject)
        if time.monotonic() - self._last_rollup >= self.rollup_every_s:
            hours, days = self._rollup(conn)
            result = dataclasses.replace(result, hours=hours, days=days)
        return result

    def _compact_one_by_one(
        self, conn: psycopg.Connection, limit: int,
        on_reject: Callable[[Mapping[str, Any], Exception], None] | None,
    ) -> MetricsWriteResult:
        received = changed = minutes = 0
        ctids = [r[0] for r in conn.execute(_PEEK_INBOX, (limit,)).fetchall()]
        conn.rollback()
        for ctid in ctids:
            try:
                with conn.transaction(), conn.cursor() as cur:
                    cur.execute(_TAKE_ONE, (ctid,), binary=True)
                    row = cur.fetchone()
                    if row is None:
                        continue
                    part = dict(zip(INBOX_COLUMNS, row[1:]))
                    result = self._write(cur, 1, *_newest([part]))
                received += 1
                changed += result.parts_changed
                minutes += result.minutes
            except psycopg.OperationalError:
                self.close()
                raise
            except (psycopg.Error, ValueError, DecodeError) as exc:
                with conn.transaction(), conn.cursor() as cur:
                    cur.execute(_TAKE_ONE, (ctid,), binary=True)
                    row = cur.fetchone()
                    if row is not None and on_reject is not None:
                        on_reject(dict(zip(INBOX_COLUMNS, row[1:])), exc)
                log.error("metrics-compactor: partial rejected: %s", exc)
        return MetricsWriteResult(received, changed, minutes, 0, 0)

    def _write(
        self,
        cur: psycopg.Cursor,
        received: int,
        parts: list[Mapping[str, Any]],
        dims: Mapping[str, tuple[str, ...]],
    ) -> MetricsWriteResult:
        mine: dict[tuple[str, datetime, int], tuple[Any, ...]] = {}
        with cur.copy(f"COPY {_PARTS_STAGE} ({_PART_LIST}) FROM STDIN (FORMAT BINARY)") as copy:
            copy.set_types(self._types[_PARTS_STAGE])
            for part in parts:
                staged, merged = _part_rows(part)
                copy.write_row(staged)
                mine[(part["series"], part["window_start"], part["partition"])] = merged
        # Messages are keyed by series, so one consumer owns a series; during
        # a rebalance two may briefly write the same one, and without the
        # lock each would merge without the other's uncommitted partials.
        cur.execute(_LOCK_STAGED)

        # 1m: all partials of each changed minute, from every partition: the
        # changed ones from this batch, the others as the database has them.
        cur.execute(_UPSERT_PARTS, binary=True)
        minutes: dict[tuple[str, datetime], list[tuple[Any, ...]]] = {}
        others = []
        for row in cur.fetchall():
            if row[3]:
                minutes.setdefault(row[:2], []).append(mine[row[:3]])
            else:
                others.append(row)
        if not minutes:
            return MetricsWriteResult(received, 0, 0, 0, 0)
        changed = sum(map(len, minutes.values()))
        for row in others:
            minutes[row[:2]].append(row[4:])
        written = self._upsert(cur, "1m", 60, minutes, dims)
        cur.execute(_QUEUE_ROLLUP)
        return MetricsWriteResult(received, changed, written, 0, 0)

    def idle(self) -> None:
        """Roll up what is queued (the compactor calls this when the inbox is empty)."""
        conn = self._connection()
        queued = conn.execute("SELECT EXISTS (SELECT 1 FROM metric_rollup_queue)").fetchone()[0]
        conn.rollback()  # end the read-only transaction the check opened
        if queued:
            self._rollup(conn)

    def _rollup(self, conn: psycopg.Connection, limit: int = 20_000) -> tuple[int, int]:
        """Roll queued (series, hour) up into 1h rows and their days into 1d rows; dequeue them."""
        self._last_rollup = time.monotonic()
        hours_changed = days_changed = 0
        with conn.transaction(), conn.cursor() as cur:
            cur.execute(_DEQUEUE_ROLLUP, (limit,))
            queued = sorted(cur.fetchall())
            if not queued:
                return 0, 0
            cur.execute(_LOCK_SERIES, (sorted({s for s, _ in queued}),))
            cur.execute("SELECT DISTINCT series, " + ", ".join(DIMENSIONS)
                        + " FROM metric_windows WHERE resolution = '1m' AND series = ANY(%s)",
                        ([s for s, _ in queued],))
            dims = {row[0]: tuple(row[1:]) for row in cur.fetchall()}
            hours_changed, days_changed = self._rollup_keys(cur, queued, dims)
        return hours_changed, days_changed

    def _rollup_keys(self, cur: psycopg.Cursor, minute_keys: list[tuple[str, datetime]],
                     dims: Mapping[str, tuple[str, ...]]) -> tuple[int, int]:
        counts = []
        # 1h from the 1m rows, 1d from the 1h rows just written.
        keys = minute_keys
        for (fine, _), (coarse, seconds) in zip(LEVELS, LEVELS[1:]):
            keys = sorted({(s, _floor(t, seconds)) for s, t in keys})
            cur.execute(
                _READ_WINDOWS,
                ([s for s, _ in keys], [t for _, t in keys], fine, timedelta(seconds=seconds)),
                binary=True,
            )
            grouped: dict[tuple[str, datetime], list[tuple[Any, ...]]] = {}
            for row in cur.fetchall():
                grouped.setdefault(row[:2], []).append(row[2:])
            counts.append(self._upsert(cur, coarse, seconds, {k: grouped[k] for k in keys}, dims))
        return counts[0], counts[1]

    def _upsert(self, cur: psycopg.Cursor, resolution: str, seconds: int,
                groups: Mapping[tuple[str, datetime], Sequence[tuple[Any, ...]]],
                dims: Mapping[str, tuple[str, ...]]) -> int:
        """Merge each (series, window start) group into a ``resolution`` row and upsert the rows."""
        keys = sorted(groups)
        with cur.copy(f"COPY {_WINDOWS_STAGE} ({_WINDOW_LIST}) FROM STDIN (FORMAT BINARY)") as copy:
            copy.set_types(self._types[_WINDOWS_STAGE])
            # In slices, so the server reads the rows of one while the next is merged.
            for i in range(0, len(keys), _MERGE_SLICE):
                chunk = keys[i:i + _MERGE_SLICE]
                for (series, start), values in zip(chunk, _merge([groups[k] for k in chunk])):
                    copy.write_row((resolution, start, seconds, series, *dims[series], *values))
        cur.execute(_UPSERT_WINDOWS, (resolution,))
        return cur.rowcount

    def close(self) -> None:
        """Close the connection; the next write opens a new one."""
        if self._conn is not None:
            try:
                self._conn.close()
            finally:
                self._conn = None


def inbox_record(value: bytes) -> bytes | dict[str, Any]:
    """What the sink appends for one ``llm.metric_windows`` message: its COPY row, else the decoded partial.

    The row comes from the compiled ``sinks._inbox_copy`` (no Python object
    per field); messages it does not vouch for (older schema versions,
    anything ``check_part`` would look at twice) and every message when the
    extension is not built are decoded and checked here, so that a wrong
    record is dead-lettered on its own instead of failing its whole batch.

    Examples
    --------
    >>> from schemas.codec import encode
    >>> from schemas.samples import sample
    >>> record = inbox_record(encode("metric_window", sample("metric_window")))
    >>> type(record) is bytes or record["resolution"] == "1m"
    True
    >>> inbox_record(encode("metric_window", sample("metric_window", partition=-1)))  # doctest: +ELLIPSIS
    Traceback (most recent call last):
    ...
    sinks.metrics_store.MetricsStoreError: partition -1 is negative ...
    """
    if _copy_row is not None:
        row = _copy_row(value, _current_header())
        if row is not None:
            return row
    from schemas.codec import decode

    part = decode(value, expected="metric_window")
    check_part(part)
    return part


@functools.cache
def _current_header() -> bytes:
    from schemas.codec import MAGIC, default_codec

    return MAGIC + default_codec().catalog.current("metric_window").fingerprint


def metrics_store_sink(settings: Settings) -> BatchSink[bytes | dict]:
    """The metrics store as a :class:`sinks.runner.BatchSink` over ``llm.metric_windows``.

    Examples
    --------
    >>> from processors.settings import Settings
    >>> sink = metrics_store_sink(Settings())
    >>> sink.name, sink.topics
    ('metrics-store', ('llm.metric_windows',))
    """
    from processors.topics import METRIC_WINDOWS
    from sinks.runner import BatchSink  # noqa: F811 (runtime import; runner imports processors)

    # The sink only appends (at COPY speed); the metrics-compactor job merges.
    # Appends commute, so batches are written over several connections at
    # once (one store per writer thread): a COPY keeps one server core busy.
    url = settings.database_url.get_secret_value()
    stores = threading.local()

    def append(parts: Sequence[bytes | dict]) -> int:
        if not hasattr(stores, "store"):
            stores.store = MetricsStore(url)
        return stores.store.append(parts, checked=True)  # inbox_record checked each one

    return BatchSink(
        name="metrics-store",
        topics=(METRIC_WINDOWS.name,),
        decode=inbox_record,
        # Most messages at once, in C; the rest (and every message without
        # the extension) through inbox_record.
        decode_many=(lambda values: _copy_rows(values, _current_header())) if _copy_rows is not None else None,
        batch_size=10_000,
        write=append,
        write_streams=settings.metrics_store_streams,
    )


def run_metrics_compactor(settings: Settings, *, stop: threading.Event | None = None,
                          batch: int = 20_000, idle_wait_s: float = 0.2) -> None:
    """The ``metrics-compactor`` job: merge the inbox into ``metric_windows`` until SIGTERM (or ``stop``).

    Takes up to ``batch`` partials at a time (when behind, a window the
    metrics worker re-emitted several times is merged once), rolls hours and
    days up every 5 s and when the inbox is empty, backs off while the
    database is down, and dead-letters a partial that cannot be merged.
    """
    from confluent_kafka import Producer
    from prometheus_client import CollectorRegistry, Counter, Gauge

    from processors.deadletter import SourceMessage, encode_dead_letter
    from processors.kafka_runtime import stop_on_signals
    from processors.metrics import serve_metrics
    from processors.topics import DEADLETTER

    registry = CollectorRegistry()
    merged = Counter("llmpulse_metrics_compacted_partials", "Partials moved from the inbox and merged.",
                     registry=registry)
    # Same name and labels as every worker's dead-letter counter, so the
    # "dead letters rising" alert covers the compactor too.
    rejected = Counter("llmpulse_dead_letters", "Messages sent to the dead-letter topic, by error type.",
                       ["processor", "topic", "error_type"], registry=registry)
    last_batch = Gauge("llmpulse_metrics_compactor_batch_partials", "Partials taken by the last compaction.",
                       registry=registry)
    serve_metrics(settings.metrics_port, registry)
    stop = stop_on_signals(stop)
    producer = Producer({"bootstrap.servers": settings.kafka_bootstrap_servers, "enable.idempotence": True})

    def reject(part: Mapping[str, Any], exc: Exception) -> None:
        value = repr(dict(part)).encode()
        message = SourceMessage(_INBOX, int(part["partition"]), -1, str(part["series"]).encode(), value)
        producer.produce(DEADLETTER.name, key=message.key, value=encode_dead_letter("metrics-compactor", message, exc))
        producer.flush(30)
        rejected.labels("metrics-compactor", _INBOX, type(exc).__name__).inc()

    store = MetricsStore(settings.database_url.get_secret_value(), rollup_every_s=5.0)
    failures = 0
    log.info("metrics-compactor: merging %s into metric_windows", _INBOX)
    while not stop.is_set():
        try:
            result = store.compact(batch, on_reject=reject)
            failures = 0
            last_batch.set(result.parts_received if result else 0)
            if result is None:
                store.idle()
                stop.wait(idle_wait_s)
            else:
                merged.inc(result.parts_received)
        except psycopg.OperationalError as exc:
            failures += 1
            wait = min(30.0, 0.5 * 2 ** min(failures, 6))
            log.warning("metrics-compactor: database unavailable (%s); retrying in %.1f s", exc, wait)
            stop.wait(wait)
        except (MetricsStoreError, psycopg.Error) as exc:
            log.error("metrics-compactor: %s", exc)
            stop.wait(1.0)
    store.close()
    producer.flush(30)
