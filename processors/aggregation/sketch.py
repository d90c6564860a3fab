"""Latency sketches: DDSketch bins kept as a plain dict, serialized as DDSketch protobuf.

The aggregator does not keep a :class:`ddsketch.DDSketch` per window: adding
to one costs a mapping call, a store call and summary-statistics updates, and
each span feeds three windows. Instead it computes the bin key once per span
with the same logarithmic mapping (:class:`BinMapping`) and increments an
``int`` in a dict per window. The bins are exactly those ``DDSketch`` would
hold, so merging windows is adding counts and every quantile equals
``DDSketch.get_quantile_value`` on the same data.

Serialized sketches are DataDog's ``DDSketch`` protobuf message (the format
``ddsketch.pb.proto.DDSketchProto`` reads and the Go and Java libraries
share), with a dense positive store, so any of them can merge the sketches
the database keeps.

The metrics store merges thousands of sketches a second, so merging has a
fast path: sketches in the canonical form :func:`encode_sketch` writes are
read straight from their bytes into numpy arrays, added as dense arrays
aligned by bin offset, and the result (:class:`SketchBins`) gives both the
canonical bytes and the quantiles without being serialized and parsed again.
Anything else (the sparse form, other fields, counts that are not small
non-negative integers) takes the general protobuf path, so results and
errors are those of adding the bins one by one.
"""
from __future__ import annotations

import math
import struct
from bisect import bisect_right
from itertools import accumulate
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

import numpy as np

from ddsketch.ddsketch import BaseDDSketch
from ddsketch.mapping import LogarithmicMapping

# protobuf comes with opentelemetry-proto, a hard dependency, so the
# library's own message is always available: no second, private format.
from ddsketch.pb.proto import DDSketchProto, KeyMappingProto
from ddsketch.pb.proto import pb as _pb

__all__ = [
    "BinMapping", "SketchBins", "decode_sketch", "encode_sketch", "merge_sketch_bins", "merge_sketch_groups",
    "merge_sketches", "quantiles", "store_bins",
]


class BinMapping:
    """DDSketch's logarithmic value-to-bin mapping, inlined for the hot path.

    Parameters
    ----------
    relative_accuracy
        Every quantile is within this relative error of the true one.

    Examples
    --------
    >>> m = BinMapping(0.01)
    >>> k = m.key(1500.0)
    >>> abs(m.value(k) - 1500.0) / 1500.0 <= 0.01
    True
    >>> m.key(0.0) is None
    True
    """

    __slots__ = ("relative_accuracy", "mapping", "multiplier", "offset", "min_possible")

    def __init__(self, relative_accuracy: float = 0.01) -> None:
        if not 0.0 < relative_accuracy < 1.0:
            raise ValueError(f"relative_accuracy must be within (0, 1), got {relative_accuracy}")
        self.relative_accuracy = relative_accuracy
        self.mapping = LogarithmicMapping(relative_accuracy)
        # The library's key() is int(ceil(log2(v) * multiplier) + offset); the
        # offset of a fresh LogarithmicMapping is 0, kept general anyway.
        self.multiplier: float = self.mapping._multiplier
        self.offset: float = self.mapping._offset
        self.min_possible: float = self.mapping.min_possible

    def key(self, value: float) -> int | None:
        """Bin key of ``value``; None for the zero bin (``value`` <= ~0, negatives too)."""
        if value > self.min_possible:
            return int(math.ceil(math.log(value, 2) * self.multiplier) + self.offset)
        return None

    def value(self, key: int) -> float:
        """Representative value of bin ``key`` (what quantiles report)."""
        return self.mapping.value(key)


def quantiles(bins: Mapping[int, int], zero: int, qs: Sequence[float], mapping: BinMapping) -> list[float | None]:
    """Quantiles of a binned distribution, as ``DDSketch.get_quantile_value`` computes them.

    Parameters
    ----------
    bins
        Bin key -> count of positive values.
    zero
        Count of values in the zero bin.
    qs
        Quantiles in [0, 1], ascending.
    mapping
        The mapping the bins were made with.

    Returns
    -------
    list
        One value per quantile; all None when there is no data.

    Examples
    --------
    >>> m = BinMapping(0.01)
    >>> bins = {m.key(10.0): 9, m.key(1000.0): 1}
    >>> p50, p100 = quantiles(bins, 0, [0.5, 1.0], m)
    >>> abs(p50 - 10) <= 0.1, abs(p100 - 1000) <= 10   # within 1 %
    (True, True)
    """
    count = zero + sum(bins.values())
    if count == 0:
        return [None] * len(qs)
    keys = sorted(bins)
    running = list(accumulate([bins[k] for k in keys]))
    out: list[float | None] = []
    for q in qs:
        if not 0.0 <= q <= 1.0:
            raise ValueError(f"quantile must be within [0, 1], got {q}")
        rank = q * (count - 1)
        if rank < zero:
            out.append(0.0)
        else:
            # DenseStore.key_at_rank(lower=True): the first bin whose running
            # count exceeds the rank.
            i = bisect_right(running, rank - zero)
            out.append(mapping.value(keys[min(i, len(keys) - 1)]))
    return out


def encode_sketch(bins: Mapping[int, int], zero: int, mapping: BinMapping) -> bytes:
    """Serialize bins as a ``DDSketch`` protobuf message (dense store, canonical bytes).

    Examples
    --------
    >>> m = BinMapping(0.01)
    >>> data = encode_sketch({m.key(5.0): 3}, 1, m)
    >>> decode_sketch(data).count
    4.0
    """
    return _encode(KeyMappingProto.to_proto(mapping.mapping), bins, zero)


def _encode(index_mapping: object, bins: Mapping[int, int], zero: int) -> bytes:
    if bins:
        low = min(bins)
        dense = [0.0] * (max(bins) - low + 1)
        for key, n in bins.items():
            dense[key - low] = float(n)
    else:
        low, dense = 0, []
    message = _pb.DDSketch(
        mapping=index_mapping,
        positiveValues=_pb.Store(contiguousBinCounts=dense, contiguousBinIndexOffset=low),
        negativeValues=_pb.Store(),
        zeroCount=float(zero),
    )
    return message.SerializeToString(deterministic=True)


def decode_sketch(data: bytes) -> BaseDDSketch:
    """A :class:`ddsketch.BaseDDSketch` from serialized bytes (count and quantiles; no sum/min/max).

    >>> m = BinMapping(0.02)
    >>> s = decode_sketch(encode_sketch({m.key(100.0): 2}, 0, m))
    >>> abs(s.get_quantile_value(0.5) - 100.0) <= 2.0   # within 2 %
    True
    """
    return DDSketchProto.from_proto(_pb.DDSketch.FromString(data))


def merge_sketches(blobs: Iterable[bytes], mapping: BinMapping | None = None) -> bytes:
    """Merge serialized sketches (e.g. 1-minute rows into a 1-hour value): add their bins.

    Parameters
    ----------
    blobs
        Serialized sketches made with the same mapping (relative accuracy).
    mapping
        Mapping of the result when ``blobs`` is empty (default 1 %).

    Examples
    --------
    >>> m = BinMapping(0.01)
    >>> a, b = encode_sketch({m.key(1.0): 1}, 0, m), encode_sketch({m.key(9.0): 2}, 1, m)
    >>> decode_sketch(merge_sketches([a, b])).count
    4.0
    """
    return merge_sketch_bins(blobs, mapping).to_bytes()


def merge_sketch_bins(blobs: Iterable[bytes], mapping: BinMapping | None = None) -> SketchBins:
    """Merge serialized sketches into :class:`SketchBins`: bytes and quantiles without a re-parse.

    Same result and errors as :func:`merge_sketches` (``ValueError`` for
    different mappings or negative values, ``DecodeError`` for bytes that are
    not a sketch).

    Examples
    --------
    >>> m = BinMapping(0.01)
    >>> a, b = encode_sketch({m.key(10.0): 3}, 0, m), encode_sketch({m.key(10.0): 1, m.key(90.0): 1}, 1, m)
    >>> merged = merge_sketch_bins([a, b])
    >>> merged.count, merged.zero, merged.to_bytes() == merge_sketches([a, b])
    (6, 1, True)
    >>> [round(q, -1) for q in merged.quantiles([0.5, 1.0], m)]   # within 1 %
    [10.0, 90.0]
    """
    return merge_sketch_groups([blobs if isinstance(blobs, (list, tuple)) else list(blobs)], (), mapping)[0]


def merge_sketch_groups(
    groups: Sequence[Sequence[bytes]], qs: Sequence[float] = (), mapping: BinMapping | None = None
) -> list[SketchBins]:
    """:func:`merge_sketch_bins` of each group of sketches, with numpy calls shared by all groups.

    Parameters
    ----------
    groups
        Sequences of serialized sketches; each group is merged on its own.
    qs
        Quantiles that :meth:`SketchBins.quantiles` will be asked for: their
        bins are found for all groups at once.
    mapping
        Mapping of the result of an empty group (default 1 %).

    Examples
    --------
    >>> m = BinMapping(0.01)
    >>> a, b = encode_sketch({m.key(10.0): 3}, 0, m), encode_sketch({m.key(90.0): 1}, 0, m)
    >>> [g.count for g in merge_sketch_groups([[a, b], [b], []])]
    [4, 1, 0]
    """
    results: list[SketchBins | None] = [None] * len(groups)
    dense: list[tuple[int, bytes, int, int, int]] = []  # (group, mapping, zero count, low key, high key)
    pieces: list[tuple[int, bytes]] = []  # (offset, packed counts) of every sketch of the groups in dense
    ends: list[int] = []  # end of each group's pieces
    for index, blobs in enumerate(groups):
        mark = len(pieces)
        read = _read_group(blobs, pieces)
        if read is None:
            del pieces[mark:]
        else:
            dense.append((index, _default_mapping(mapping) if read[0] is None else read[0], *read[1:]))
            ends.append(len(pieces))
    if dense:
        _add_dense(dense, pieces, ends, results, tuple(qs))
    # The rest in order, so the first group that cannot be merged raises, as
    # merging the groups one by one would.
    for index, bins in enumerate(results):
        if bins is None:
            results[index] = _merge_general(groups[index], mapping)
    return results  # type: ignore[return-value]


def _default_mapping(mapping: BinMapping | None) -> bytes:
    return _mapping_bytes(KeyMappingProto.to_proto((mapping or BinMapping(0.01)).mapping))


def _read_group(blobs: Sequence[bytes], pieces: list[tuple[int, bytes]]) -> tuple[bytes | None, int, int, int] | None:
    """(mapping bytes, zero count, low key, high key) of canonical sketches with one mapping, else None.

    Appends the (offset, packed counts) of each sketch with positive values
    to ``pieces``; the mapping is None when there are no sketches.
    """
    mapping_bytes = None
    zero = 0
    low = high = None
    for data in blobs:
        read = _read_canonical(data)
        if read is None:
            return None
        raw, offset, packed, n, zero_count = read
        if raw != mapping_bytes:
            if mapping_bytes is not None or not _is_canonical_mapping(raw):
                return None  # different mappings, or the same one spelled differently
            mapping_bytes = raw
        if not (zero_count >= 0.0 and zero_count.is_integer()):
            return None
        zero += int(zero_count)
        if n:
            pieces.append((offset, packed))
            if low is None:
                low, high = offset, offset + n
            else:
                low = offset if offset < low else low
                high = offset + n if offset + n > high else high
    return (mapping_bytes, zero, 0, 0) if low is None else (mapping_bytes, zero, low, high)


def _add_dense(dense: list[tuple[int, bytes, int, int, int]], pieces: list[tuple[int, bytes]], ends: list[int],
               results: list, qs: tuple[float, ...]) -> None:
    """Add the bins of canonical groups as one dense array, each group a segment of it.

    Every group gets the span [lowest, highest key] of its sketches; one
    ``bincount`` adds all counts at their positions, one ``cumsum`` gives
    every group's running counts, one ``searchsorted`` its quantile bins.
    Groups this cannot add exactly are left None in ``results``.
    """
    _, _, zeros, lows, highs = (list(c) for c in zip(*dense))
    widths = np.array(highs) - np.array(lows)
    bases = np.cumsum(widths) - widths  # where each group's segment starts
    size = int(widths.sum())
    if pieces:
        offsets, packed = zip(*pieces)
        values = np.frombuffer(b"".join(packed), "<f8")
        lengths = np.array([len(p) for p in packed]) >> 3
        group = np.repeat(np.arange(len(dense)), np.diff(np.array([0, *ends])))
        # Position of every count: its group's segment, its sketch's offset in it.
        starts = (bases - np.array(lows))[group] + np.array(offsets)
        position = np.repeat(starts - (np.cumsum(lengths) - lengths), lengths) + np.arange(len(values))
        total = np.bincount(position, weights=values, minlength=size)
    else:
        values = total = np.zeros(size)
    running = np.cumsum(total)
    # Float additions are exact only for non-negative integers whose sums
    # stay below 2**53; anything else (NaN, fractions, negative or huge
    # counts) is added one bin at a time with Python ints, as it always was.
    if len(values) and (
        values.min() < 0.0 or not np.array_equal(values, np.floor(values)) or running[-1] >= _EXACT
    ):
        if len(dense) > 1:
            bounds = [0, *ends]
            for k, one in enumerate(dense):
                _add_dense([one], pieces[bounds[k]:bounds[k + 1]], [ends[k] - bounds[k]], results, qs)
        return
    nonzero = np.flatnonzero(total)
    first_at = np.searchsorted(nonzero, bases).tolist()
    last_at = np.searchsorted(nonzero, bases + widths).tolist()
    cumulative = np.concatenate(([0.0], running))
    before = cumulative[bases]  # running count before each segment
    wanted = bool(qs) and all(0.0 <= q <= 1.0 for q in qs)
    if wanted:
        # The first bin whose running count exceeds rank - zero, as
        # quantiles() finds it; for an integer running count r, r > x exactly
        # when r > floor(x), so every number compared is an exact integer.
        zero = np.array(zeros, dtype=float)[:, None]
        ranks = np.array(qs)[None, :] * ((cumulative[bases + widths] - before)[:, None] + zero - 1.0)
        below = (ranks < zero).tolist()
        found = np.searchsorted(running, np.floor(ranks - zero) + before[:, None], side="right").tolist()
    firsts = nonzero[np.minimum(first_at, len(nonzero) - 1)].tolist() if len(nonzero) else first_at
    lasts = nonzero[np.maximum(np.array(last_at) - 1, 0)].tolist() if len(nonzero) else last_at
    bases = bases.tolist()
    for k, (index, mapping_bytes, zero_count, low, _) in enumerate(dense):
        keys: list[int | None] | None
        if first_at[k] == last_at[k]:  # no positive values
            bins = SketchBins(0, _NO_COUNTS, zero_count, mapping_bytes)
            keys = None if zero_count == 0 else [None] * len(qs)
        else:
            first, last = firsts[k], lasts[k]
            offset = low + first - bases[k]
            if not _INT32_MIN <= offset <= _INT32_MAX:
                continue  # the general path raises, as encoding such an offset always did
            bins = SketchBins(offset, total[first:last + 1], zero_count, mapping_bytes)
            if wanted:
                keys = [None if b else offset + (i if i < last else last) - first for b, i in zip(below[k], found[k])]
        if wanted:
            bins._keys = (qs, keys)
        results[index] = bins


class SketchBins:
    """Merged latency bins as a dense array: what :func:`merge_sketch_bins` returns.

    Attributes
    ----------
    offset
        Bin key of ``counts[0]``.
    counts
        Counts (``float64``, whole numbers) of consecutive bin keys; empty when
        there are no positive values.
    zero
        Count of the zero bin.
    mapping_bytes
        The ``IndexMapping`` message of the sketch, serialized deterministically.

    Examples
    --------
    >>> m = BinMapping(0.01)
    >>> bins = merge_sketch_bins([encode_sketch({100: 2, 102: 1}, 0, m)])
    >>> bins.offset, bins.counts.tolist(), bins.count
    (100, [2.0, 0.0, 1.0], 3)
    """

    __slots__ = ("offset", "counts", "zero", "mapping_bytes", "_data", "_general", "_keys")

    def __init__(self, offset: int, counts: np.ndarray, zero: int, mapping_bytes: bytes,
                 data: bytes | None = None) -> None:
        self.offset = offset
        self.counts = counts
        self.zero = zero
        self.mapping_bytes = mapping_bytes
        self._data = data
        # Bins merged on the general path keep its exact integer semantics
        # for quantiles too (they are read back from the encoded bytes).
        self._general = data is not None
        # (qs, bin key per quantile: None for the zero bin; None for no data),
        # when merge_sketch_groups found them.
        self._keys: tuple[tuple[float, ...], list[int | None] | None] | None = None

    @property
    def count(self) -> int:
        """Number of values (zero bin included)."""
        return self.zero + int(self.counts.sum())

    def to_bytes(self) -> bytes:
        """The canonical serialized sketch: the bytes :func:`encode_sketch` writes for these bins."""
        if self._data is None:
            self._data = _encode_dense(self.mapping_bytes, self.offset, self.counts, self.zero)
        return self._data

    def quantiles(self, qs: Sequence[float], mapping: BinMapping | Any) -> list[float | None]:
        """The same values as :func:`quantiles` on these bins (``mapping`` needs only ``value(key)``)."""
        if self._general:
            message = _pb.DDSketch.FromString(self._data)
            return quantiles(store_bins(message.positiveValues), int(message.zeroCount), qs, mapping)
        if self._keys is not None and (self._keys[0] is qs or self._keys[0] == tuple(qs)):
            keys = self._keys[1]
            if keys is None:
                return [None] * len(qs)
            value = mapping.value
            return [0.0 if key is None else value(key) for key in keys]
        zero = self.zero
        running = np.cumsum(self.counts)
        count = zero + (int(running[-1]) if len(running) else 0)
        if count == 0:
            return [None] * len(qs)
        ranks = []
        for q in qs:
            if not 0.0 <= q <= 1.0:
                raise ValueError(f"quantile must be within [0, 1], got {q}")
            ranks.append(q * (count - 1))
        # Running counts are exact integers in float64, so searchsorted
        # (side="right") is quantiles()' bisect_right: the first bin whose
        # running count exceeds the rank.
        found = np.searchsorted(running, [rank - zero for rank in ranks], side="right").tolist()
        last = len(running) - 1
        value = mapping.value
        return [0.0 if rank < zero else value(self.offset + min(i, last)) for rank, i in zip(ranks, found)]


_EXACT = float(2**53)
_INT32_MIN, _INT32_MAX = -(2**31), 2**31 - 1  # contiguousBinIndexOffset is a sint32
_NO_COUNTS = np.zeros(0)
_NO_COUNTS.flags.writeable = False
_DOUBLE = struct.Struct("<d")
_CANONICAL_MAPPINGS: dict[bytes, bool] = {}
# Every length and bin offset of a latency sketch fits two varint bytes.
_SHORT = 1 << 14
_SHORT_VARINTS = [bytes((v,)) if v < 0x80 else bytes((v & 0x7F | 0x80, v >> 7)) for v in range(_SHORT)]


def _read_varint(data: bytes, pos: int) -> tuple[int, int]:
    """(value, next position) of the varint at ``pos``."""
    value = shift = 0
    while True:
        byte = data[pos]  # IndexError past the end: not canonical
        pos += 1
        value |= (byte & 0x7F) << shift
        if byte < 0x80:
            return value, pos
        shift += 7
        if shift > 63:
            raise IndexError("varint too long")


def _varint(value: int) -> bytes:
    if value < _SHORT:
        return _SHORT_VARINTS[value]
    out = bytearray()
    while value >= 0x80:
        out.append(value & 0x7F | 0x80)
        value >>= 7
    out.append(value)
    return bytes(out)


def _read_canonical(data: bytes) -> tuple[bytes, int, bytes, int, float] | None:
    """(mapping, offset, packed counts, count of counts, zero count) of a sketch in ``_encode``'s layout.

    Only the exact field sequence ``_encode`` writes is accepted (mapping,
    dense positive store, empty negative store, optional zero count); any
    other byte string, valid or not, gives None and goes to the protobuf
    parser, so this reader never accepts what protobuf would read
    differently or reject. Varints are read inline: this runs for every
    sketch the store merges.
    """
    try:
        n = data[1]
        if data[0] != 0x0A or n >= 0x80:  # the mapping: a few fixed-size fields
            return None
        mapping = data[2:2 + n]
        pos = 2 + n
        if data[pos] != 0x12:
            return None
        n = data[pos + 1]
        pos += 2
        if n >= 0x80:  # lengths of a few hundred bins take two bytes
            if data[pos] < 0x80:
                n = (n & 0x7F) | data[pos] << 7
                pos += 1
            else:
                n, pos = _read_varint(data, pos - 1)
        store_end = pos + n
        if store_end > len(data):
            return None
        offset, packed, count = 0, b"", 0
        if pos < store_end and data[pos] == 0x12:
            n = data[pos + 1]
            pos += 2
            if n >= 0x80:
                if data[pos] < 0x80:
                    n = (n & 0x7F) | data[pos] << 7
                    pos += 1
                else:
                    n, pos = _read_varint(data, pos - 1)
            if n & 7 or pos + n > store_end:
                return None
            packed, count = data[pos:pos + n], n >> 3
            pos += n
        if pos < store_end and data[pos] == 0x18:
            zigzag = data[pos + 1]
            pos += 2
            if zigzag >= 0x80:
                if data[pos] < 0x80:
                    zigzag = (zigzag & 0x7F) | data[pos] << 7
                    pos += 1
                else:
                    zigzag, pos = _read_varint(data, pos - 1)
            if zigzag >= 2**32:
                return None
            offset = (zigzag >> 1) ^ -(zigzag & 1)
        if pos != store_end or data[pos:pos + 2] != b"\x1a\x00":
            return None
        pos += 2
        if pos == len(data):
            return mapping, offset, packed, count, 0.0
        if data[pos] != 0x21 or pos + 9 != len(data):
            return None
        return mapping, offset, packed, count, _DOUBLE.unpack_from(data, pos + 1)[0]
    except IndexError:
        return None


def _mapping_bytes(index_mapping: Any) -> bytes:
    return index_mapping.SerializeToString(deterministic=True)


def _is_canonical_mapping(raw: bytes) -> bool:
    """Whether ``raw`` is a valid IndexMapping in its deterministic serialization (cached)."""
    known = _CANONICAL_MAPPINGS.get(raw)
    if known is None:
        try:
            known = _mapping_bytes(_pb.IndexMapping.FromString(raw)) == raw
        except Exception:  # noqa: BLE001 (DecodeError and friends: the general path reports it)
            known = False
        if len(_CANONICAL_MAPPINGS) < 1024:
            _CANONICAL_MAPPINGS[raw] = known
    return known


def _encode_dense(mapping_bytes: bytes, offset: int, counts: np.ndarray, zero: int) -> bytes:
    """``_encode``'s bytes, written directly (protobuf's deterministic layout of these fields)."""
    store = b""
    if len(counts):
        payload = counts.astype("<f8", copy=False).tobytes()
        store = b"\x12" + _varint(len(payload)) + payload
    if offset:
        store += b"\x18" + _varint(((offset << 1) ^ (offset >> 31)) & 0xFFFFFFFF)  # sint32: zigzag
    out = b"\x0a" + _varint(len(mapping_bytes)) + mapping_bytes + b"\x12" + _varint(len(store)) + store + b"\x1a\x00"
    if zero:
        out += b"\x21" + _DOUBLE.pack(float(zero))
    return out


def store_bins(store: Any) -> dict[int, int]:
    """Non-zero bins of a protobuf ``Store`` message, dense and sparse forms added.

    >>> m = BinMapping(0.01)
    >>> store_bins(_pb.DDSketch.FromString(encode_sketch({5: 2, 7: 1}, 0, m)).positiveValues)
    {5: 2, 7: 1}
    """
    bins = {
        key: int(n)
        for key, n in enumerate(store.contiguousBinCounts, start=store.contiguousBinIndexOffset)
        if n
    }
    for key, n in store.binCounts.items():
        if n:
            bins[key] = bins.get(key, 0) + int(n)
    return bins


def _merge_general(blobs: Sequence[bytes], mapping: BinMapping | None) -> SketchBins:
    """Parse every sketch with protobuf and add bins as Python ints (any valid encoding)."""
    index_mapping = None
    total: dict[int, int] = {}
    zero = 0
    for data in blobs:
        message = _pb.DDSketch.FromString(data)
        if message.negativeValues.contiguousBinCounts or message.negativeValues.binCounts:
            raise ValueError("latency sketches have no negative values")
        if index_mapping is None:
            index_mapping = message.mapping
        elif message.mapping != index_mapping:
            raise ValueError(
                "cannot merge sketches with different mappings "
                f"(gamma {index_mapping.gamma} vs {message.mapping.gamma})"
            )
        store = message.positiveValues
        for i, n in enumerate(store.contiguousBinCounts, start=store.contiguousBinIndexOffset):
            if n:
                total[i] = total.get(i, 0) + int(n)
        for key, n in store.binCounts.items():  # the sparse form other writers may use
            if n:
                total[key] = total.get(key, 0) + int(n)
        zero += int(message.zeroCount)
    if index_mapping is None:
        index_mapping = KeyMappingProto.to_proto((mapping or BinMapping(0.01)).mapping)
    data = _encode(index_mapping, total, zero)
    low = min(total) if total else 0
    counts = np.array(_pb.DDSketch.FromString(data).positiveValues.contiguousBinCounts, dtype=float)
    return SketchBins(low, counts, zero, _mapping_bytes(index_mapping), data)
