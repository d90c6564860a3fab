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
"""
from __future__ import annotations

import math
from bisect import bisect_right
from itertools import accumulate
from collections.abc import Iterable, Mapping, Sequence

from ddsketch.ddsketch import BaseDDSketch
from ddsketch.mapping import LogarithmicMapping

# protobuf comes with opentelemetry-proto, a hard dependency, so the
# library's own message is always available: no second, private format.
from ddsketch.pb.proto import DDSketchProto, KeyMappingProto
from ddsketch.pb.proto import pb as _pb

__all__ = ["BinMapping", "decode_sketch", "encode_sketch", "merge_sketches", "quantiles"]


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
    return _encode(index_mapping, total, zero)
