"""Throughput of the aggregator on realistic generated spans (one core).

    python -m processors.aggregation.bench [--spans 200000] [--tps 100]

Spans come from :class:`processors.generator.TrafficModel` (seed 1), with
costs filled in by the price table as ingest would, in arrival order: an
SDK exports a span when it ends, so each arrives at its end time plus an
exponential delivery delay (mean ``--delay`` seconds). Prints JSON: spans/s of
``add_span`` alone, of feedback, and of the whole loop with a ``flush()``
every ``--flush-every`` spans (snapshots built, sketches serialized), all
in CPU seconds of this process.
"""
from __future__ import annotations

import argparse
import gc
import json
import random
import time
import tracemalloc
from datetime import timedelta
from typing import Any

from processors.aggregation.aggregator import WindowAggregator
from processors.generator import DEFAULT_START, TrafficModel
from processors.pricing import PriceTable


def make_events(
    n_spans: int, traces_per_second: float, seed: int = 1, delay: float = 2.0
) -> tuple[list[dict], list[tuple]]:
    """``n_spans`` spans in arrival order, and (feedback, root span) pairs in time order."""
    model = TrafficModel(seed=seed, start=DEFAULT_START, traces_per_second=traces_per_second)
    rng = random.Random(seed)
    prices = PriceTable.load()
    spans: list[dict[str, Any]] = []
    feedback: list[tuple] = []
    while len(spans) < n_spans:
        trace = model.trace()
        for span in trace:
            if span["cost_usd"] is None:
                span["cost_usd"] = prices.cost_of(span).cost_usd
        spans.extend(trace)
        fb = model.feedback_for(trace)
        if fb is not None:
            feedback.append((fb, trace[0]))
    spans = spans[:n_spans]
    arrival = {id(s): s["end_time"] + timedelta(seconds=rng.expovariate(1 / delay)) for s in spans}
    spans.sort(key=lambda s: arrival[id(s)])
    feedback.sort(key=lambda pair: pair[0]["time"])
    return spans, feedback


# CPU time of this process: what one core spends, less disturbed by other
# processes on a shared machine than wall time.
clock = time.process_time


def _best(fn, repeat: int) -> float:
    best = float("inf")
    for _ in range(repeat):
        t0 = clock()
        fn()
        best = min(best, clock() - t0)
    return best


def main(argv: list[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--spans", type=int, default=200_000)
    parser.add_argument("--tps", type=float, default=100.0, help="simulated traces per second")
    parser.add_argument("--flush-every", type=int, default=10_000)
    parser.add_argument("--delay", type=float, default=2.0, help="mean delivery delay, seconds")
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args(argv)

    spans, feedback = make_events(args.spans, args.tps, delay=args.delay)
    # A worker holds one message at a time; the benchmark holds all of them,
    # which would make every full GC pass walk millions of objects.
    gc.collect()
    gc.freeze()
    add_only = _best(lambda: _add_all(WindowAggregator(), spans), args.repeat)
    with_dims = [(fb, WindowAggregator().dimensions(root)) for fb, root in feedback]
    fb_time = _best(lambda: _feedback_all(WindowAggregator(), with_dims), args.repeat)

    agg = WindowAggregator()
    snapshots = sketch_bytes = 0
    flushing = 0.0
    t0 = clock()
    for i, span in enumerate(spans, 1):
        agg.add_span(span)
        if i % args.flush_every == 0:
            f0 = clock()
            out = agg.flush()
            flushing += clock() - f0
            snapshots += len(out)
            sketch_bytes += sum(len(s.sketch) for s in out)
    agg.advance(spans[-1]["end_time"] + timedelta(days=2))
    f0 = clock()
    out = agg.flush()
    flushing += clock() - f0
    snapshots += len(out)
    sketch_bytes += sum(len(s.sketch) for s in out)
    loop = clock() - t0
    stats = agg.stats()
    tracemalloc.start()
    held = WindowAggregator()
    _add_all(held, spans)
    memory, _ = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    held_stats = held.stats()
    open_windows = sum(held_stats["open_windows"].values())
    result = {
        "spans": len(spans),
        "event_time_minutes": round((spans[-1]["end_time"] - spans[0]["end_time"]).total_seconds() / 60, 1),
        "series": held_stats["series"],
        "add_span_per_s": round(len(spans) / add_only),
        "add_span_us": round(add_only / len(spans) * 1e6, 2),
        "add_feedback_per_s": round(len(with_dims) / fb_time) if with_dims else None,
        "loop_with_flush_per_s": round(len(spans) / loop),
        "flush_every": args.flush_every,
        "snapshots": snapshots,
        "snapshot_us": round(flushing / max(snapshots, 1) * 1e6, 1),
        "mean_sketch_bytes": round(sketch_bytes / max(snapshots, 1)),
        "late_events": stats["late_events"],
        "open_windows_at_end": held_stats["open_windows"],
        "kib_per_open_window": round(memory / max(open_windows, 1) / 1024, 1),
    }
    print(json.dumps(result, indent=2))
    return result


def _add_all(agg: WindowAggregator, spans: list[dict]) -> None:
    add = agg.add_span
    for span in spans:
        add(span)


def _feedback_all(agg: WindowAggregator, items: list[tuple]) -> None:
    add = agg.add_feedback
    for fb, dims in items:
        add(fb, dims)


if __name__ == "__main__":
    main()
