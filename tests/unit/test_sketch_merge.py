"""Sketch merging: the numpy fast path gives the bytes, quantiles and errors of adding bins one by one.

The reference here is the plain algorithm the store used before the fast
path: parse every sketch with protobuf, add its bins as Python ints, encode
the total, read quantiles from that encoding.
"""
from __future__ import annotations

import math
import random
from datetime import timedelta
from decimal import Decimal

import pytest
from ddsketch.pb.proto import pb

from processors.aggregation.sketch import (
    BinMapping,
    encode_sketch,
    merge_sketch_bins,
    merge_sketch_groups,
    merge_sketches,
    quantiles,
)
from schemas.samples import sample
from sinks.metrics_store import COUNTERS, FLOAT_SUMS, merge_windows, sketch_quantiles

QS = (0.0, 0.5, 0.9, 0.95, 0.99, 1.0)
M1, M2 = BinMapping(0.01), BinMapping(0.02)


def reference(blobs: list[bytes], mapping: BinMapping) -> tuple[bytes, list[float | None]]:
    """Merged bytes and quantiles, the slow way (bins added as Python ints)."""
    first, total, zero = None, {}, 0
    for data in blobs:
        message = pb.DDSketch.FromString(data)
        if message.negativeValues.contiguousBinCounts or message.negativeValues.binCounts:
            raise ValueError("latency sketches have no negative values")
        if first is None:
            first = message.mapping
        elif message.mapping != first:
            raise ValueError("cannot merge sketches with different mappings")
        store = message.positiveValues
        for key, n in enumerate(store.contiguousBinCounts, start=store.contiguousBinIndexOffset):
            if n:
                total[key] = total.get(key, 0) + int(n)
        for key, n in store.binCounts.items():
            if n:
                total[key] = total.get(key, 0) + int(n)
        zero += int(message.zeroCount)
    if first is not None and first.gamma != pb.DDSketch.FromString(encode_sketch({}, 0, mapping)).mapping.gamma:
        raise AssertionError("test sketches of one group share the mapping passed in")
    data = encode_sketch(total, zero, mapping)
    back = pb.DDSketch.FromString(data).positiveValues
    bins = {k: int(n) for k, n in enumerate(back.contiguousBinCounts, start=back.contiguousBinIndexOffset) if n}
    return data, quantiles(bins, zero, QS, mapping)


def outcome(f):
    try:
        return "ok", f()
    except ValueError as exc:
        return "error", "different mappings" in str(exc)


def random_sketch(rng: random.Random, mapping: BinMapping) -> bytes:
    bins: dict[int, int] = {}
    for _ in range(rng.randint(0, 25)):
        key = mapping.key(rng.choice([rng.lognormvariate(6, 2), rng.uniform(0, 1e-12)]))
        if key is not None:
            bins[key] = bins.get(key, 0) + rng.randint(1, 4)
    return encode_sketch(bins, rng.choice([0, 0, 1, 5]), mapping)


def odd(rng: random.Random, data: bytes) -> bytes:
    """The same sketch in a form the fast path must leave to protobuf."""
    message = pb.DDSketch.FromString(data)
    store = message.positiveValues
    kind = rng.randrange(6)
    if kind == 0:
        store.binCounts[rng.randint(-20, 600)] = rng.choice([1.0, 2.5])  # sparse form
    elif kind == 1 and store.contiguousBinCounts:
        store.contiguousBinCounts[0] = rng.choice([0.5, -1.0, float("nan"), 2.0**60])
    elif kind == 2:
        message.zeroCount = rng.choice([0.5, 3.0])
    elif kind == 3:
        message.negativeValues.contiguousBinCounts.append(1.0)
    elif kind == 4:
        return data + encode_sketch({}, 0, M1)[:11]  # the mapping field again (protobuf merges it)
    return message.SerializeToString()


def test_canonical_sketches_merge_to_the_reference_bytes_and_quantiles():
    rng = random.Random(7)
    for _ in range(400):
        mapping = rng.choice([M1, M2])
        groups = [[random_sketch(rng, mapping) for _ in range(rng.randint(0, 6))] for _ in range(rng.randint(1, 6))]
        merged = merge_sketch_groups(groups, QS, mapping)
        for blobs, bins in zip(groups, merged):
            data, qs = reference(blobs, mapping)
            assert bins.to_bytes() == data == merge_sketches(blobs, mapping)
            assert bins.quantiles(QS, mapping) == qs  # bit for bit
            assert merge_sketch_bins(blobs, mapping).quantiles(QS, mapping) == qs  # without precomputed bins


def test_other_encodings_and_odd_counts_give_the_reference_result_or_error():
    rng = random.Random(11)
    checked = 0
    for _ in range(400):
        blobs = [random_sketch(rng, M1) for _ in range(rng.randint(1, 5))]
        blobs[rng.randrange(len(blobs))] = odd(rng, blobs[0])
        expected = outcome(lambda: reference(blobs, M1))
        got = outcome(lambda: (lambda b: (b.to_bytes(), b.quantiles(QS, M1)))(merge_sketch_groups([blobs], QS)[0]))
        if expected[0] == "ok" and any(q != q for q in expected[1][1] if q is not None):
            continue  # NaN counts: quantiles are NaN either way and NaN != NaN
        assert got == expected
        checked += 1
    assert checked > 300


def test_the_first_group_that_cannot_be_merged_raises():
    nan = pb.DDSketch.FromString(encode_sketch({5: 1}, 0, M1))
    nan.positiveValues.contiguousBinCounts[0] = float("nan")
    with pytest.raises(ValueError, match="convert float NaN"):  # int(nan), as adding bins one by one does
        merge_sketch_groups([[nan.SerializeToString()], [encode_sketch({}, 0, M1), encode_sketch({}, 0, M2)]])
    with pytest.raises(ValueError, match="different mappings"):
        merge_sketch_groups([[encode_sketch({}, 0, M1)], [encode_sketch({}, 0, M1), encode_sketch({}, 0, M2)]])


def test_truncated_bytes_are_a_decode_error():
    from google.protobuf.message import DecodeError

    data = encode_sketch({M1.key(10.0): 3, M1.key(900.0): 1}, 0, M1)
    for cut in (1, 5, 13, len(data) - 3):
        with pytest.raises(DecodeError):
            merge_sketches([data[:cut]])


def test_empty_groups_and_zero_only_sketches():
    zero_only = encode_sketch({}, 4, M2)
    empty, zeros = merge_sketch_groups([[], [zero_only, zero_only]], QS, mapping=M2)
    assert empty.to_bytes() == encode_sketch({}, 0, M2) and empty.quantiles(QS, M2) == [None] * len(QS)
    assert zeros.to_bytes() == encode_sketch({}, 8, M2) and zeros.quantiles(QS, M2) == [0.0] * len(QS)


def _slow_merge_windows(rows: list[dict]) -> dict:
    def nanos(cost):
        return int(cost.scaleb(9)) if isinstance(cost, Decimal) else round(cost * 1e9)

    out = {c: sum(r[c] for r in rows) for c in COUNTERS}
    out["cost_usd"] = Decimal(sum(nanos(r["cost_usd"]) for r in rows)).scaleb(-9)
    out.update({c: math.fsum(r[c] for r in rows) for c in FLOAT_SUMS})
    sketch = merge_sketches(r["sketch"] for r in rows)
    out.update(zip(("p50_ms", "p90_ms", "p95_ms", "p99_ms"), sketch_quantiles(sketch)))
    out.update(sketch=sketch, partitions=sum(r.get("partitions", 1) for r in rows), final=all(r["final"] for r in rows))
    return out


@pytest.mark.parametrize("big", [False, True])
def test_merge_windows_equals_the_plain_sums(big):
    rng = random.Random(5)
    base = sample("metric_window")
    rows = []
    for i in range(7):
        row = {**base, "partition": i, "final": i != 3, "sketch": random_sketch(rng, M1),
               "cost_usd": rng.random() / 7, "rating_sum": rng.random() * 1e-3, "latency_ms_sum": rng.random() * 1e9,
               "emitted_at": base["emitted_at"] + timedelta(seconds=i)}
        row.update({c: rng.randint(0, 2**61 if big else 1000) for c in COUNTERS})  # near bigint: Python sums
        if i % 2:
            row["partitions"] = rng.randint(1, 6)
            row["cost_usd"] = Decimal(round(row["cost_usd"], 9))
        rows.append(row)
    assert merge_windows(rows) == _slow_merge_windows(rows)
    assert merge_windows([]) == _slow_merge_windows([])
