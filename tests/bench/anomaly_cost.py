"""Anomaly processor cost per metric point on one core (target <= 50 µs).

    python -m tests.bench.anomaly_cost               # 200,000 points, ~10-20 s
    python -m tests.bench.anomaly_cost --points 20000

Realistic series: 1-minute points with a daily rhythm (Poisson traffic,
lognormal p95 latency, binomial error rate, request volume), several
series interleaved as the publisher sends them, a few incidents so episodes
open and close. Two numbers:

* ``detector_us_per_point``: :class:`~processors.anomaly.series.SeriesWatch`
  alone (both production detectors, band, episode logic) - the detector
  cost the issue's target is about;
* ``process_us_per_point``: the whole ``AnomalyProcessor.process`` call,
  Avro decode of the point included.

Plus the size of a checkpoint per series after the run. Results go to
``docs/benchmarks/anomaly_cost.json``.
"""
from __future__ import annotations

import argparse
import json
import time
from datetime import UTC, datetime
from pathlib import Path

import numpy as np

from processors.anomaly.config import AnomalyConfig
from processors.anomaly.processor import AnomalyProcessor
from processors.anomaly.series import Point, SeriesWatch
from processors.deadletter import SourceMessage
from schemas.codec import encode

OUT = Path(__file__).resolve().parents[2] / "docs" / "benchmarks" / "anomaly_cost.json"
DAY = 1440
T0_US = int(datetime(2025, 6, 2, tzinfo=UTC).timestamp()) * 1_000_000
METRICS = ("latency_p95_ms", "error_rate", "request_count", "cost_per_request")


def series_points(metric: str, minutes: int, seed: int) -> list[tuple[int, float, int]]:
    """(minute, value, count) of one series, with an incident every ~2 days."""
    rng = np.random.default_rng(seed)
    i = np.arange(minutes)
    hour = (i % DAY) / 60
    load = 0.15 + 0.85 * np.clip(np.sin(np.pi * (hour - 6) / 16), 0, None) ** 1.5
    count = rng.poisson(rng.uniform(50, 400) * load)
    hit = (i % (2 * DAY) > DAY + 600) & (i % (2 * DAY) < DAY + 630)  # 30 bad minutes every other day
    if metric == "latency_p95_ms":
        value = 900 * (1 + 0.3 * load) * rng.lognormal(0, 0.08, minutes) * np.where(hit, 3.0, 1.0)
    elif metric == "error_rate":
        value = rng.binomial(count, np.where(hit, 0.2, 0.01)) / np.maximum(count, 1)
    elif metric == "request_count":
        count = np.where(hit, count // 10, count)
        value = count.astype(float)
    else:
        value = 0.002 * rng.lognormal(0, 0.2, minutes) * np.where(hit, 3.0, 1.0)
    return [(int(k), float(value[k]), int(count[k])) for k in range(minutes) if count[k] > 0]


def workload(points: int) -> list[dict]:
    """``points`` metric_point records over len(METRICS) x k series, in publishing order."""
    per_series_minutes = 4 * DAY
    n_series = max(1, points // per_series_minutes)
    rows = []
    for s in range(n_series):
        metric = METRICS[s % len(METRICS)]
        series = f"{metric}{{model=m{s // len(METRICS)},project=bench}}"
        for minute, value, count in series_points(metric, per_series_minutes, seed=s):
            rows.append((minute, series, metric, value, count))
    rows.sort(key=lambda r: r[0])  # minute by minute, every series, as the publisher emits
    return [
        {"series": series, "metric": metric, "dimensions": {"project": "bench"},
         "window_start": T0_US + minute * 60_000_000, "window_seconds": 60, "value": value, "count": count}
        for minute, series, metric, value, count in rows[:points]
    ]


def detector_cost(records: list[dict], config: AnomalyConfig) -> tuple[float, int, list[SeriesWatch]]:
    """µs per point of SeriesWatch.observe alone, and the episodes it opened."""
    watches: dict[str, SeriesWatch] = {}
    for r in records:
        if r["series"] not in watches:
            watches[r["series"]] = SeriesWatch(r["series"], r["metric"], r["dimensions"], config, step=60)
    points = [(watches[r["series"]], Point(r["window_start"], 60, r["value"], r["count"])) for r in records]
    opened = 0
    t0 = time.perf_counter()
    for watch, point in points:
        for event in watch.observe(point, config):
            opened += event["status"] == "open" and event["points"] == 1
    elapsed = time.perf_counter() - t0
    return elapsed / len(points) * 1e6, opened, list(watches.values())


def process_cost(records: list[dict], config: AnomalyConfig) -> tuple[float, AnomalyProcessor]:
    """µs per point of the whole process() call (decode included; encode of outputs too)."""
    messages = [SourceMessage("llm.metrics", 0, k, r["series"].encode(), encode("metric_point", r))
                for k, r in enumerate(records)]
    proc = AnomalyProcessor(config)
    t0 = time.perf_counter()
    for m in messages:
        proc.process(m)
    return (time.perf_counter() - t0) / len(messages) * 1e6, proc


def main(argv: list[str] | None = None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--points", type=int, default=200_000)
    ap.add_argument("--out", type=Path, default=None, help=f"default docs/benchmarks/{OUT.name} for full runs")
    args = ap.parse_args(argv)
    config = AnomalyConfig.load()
    records = workload(args.points)
    detector_us, opened, watches = detector_cost(records, config)
    process_us, proc = process_cost(records, config)
    checkpoint = proc.checkpoint(0)
    result = {
        "points": len(records),
        "series": len(watches),
        "episodes_opened": opened,
        "detector_us_per_point": round(detector_us, 1),
        "process_us_per_point": round(process_us, 1),
        "target_us_per_point": 50,
        "checkpoint_bytes_per_series": round(len(checkpoint) / max(1, len(watches))),
        "date": time.strftime("%Y-%m-%d"),
    }
    out = args.out or (OUT if args.points >= 200_000 else None)
    if out is not None:
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps(result, indent=2))
    return result


if __name__ == "__main__":
    main()
