"""The anomaly processor on synthetic 1-minute series with a daily rhythm.

Each series is four days of minutes (Poisson traffic, lognormal latency,
binomial errors) with one incident on day four at 10:00; the first day is
warm-up. Points go through ``process`` as encoded ``metric_point`` messages,
as the runtime delivers them.
"""
from __future__ import annotations

import json
import math
from datetime import UTC, datetime, timedelta

import numpy as np
import pytest

from processors.anomaly.band import expected_band
from processors.anomaly.config import ANOMALY_FILE_ENV, AnomalyConfig, AnomalyConfigError
from processors.anomaly.ensemble import production_detector
from processors.anomaly.processor import CHECKPOINT_MAGIC, AnomalyProcessor
from processors.deadletter import SourceMessage
from schemas.codec import decode, encode
from schemas.samples import sample

T0 = datetime(2025, 6, 2, tzinfo=UTC)
DAY = 1440
INCIDENT = 3 * DAY + 600  # day four, 10:00


def make_points(metric: str, kind: str | None = None, *, seed: int = 1, days: int = 4, start: int = INCIDENT,
                length: int = 20, factor: float = 3.0, peak: float = 200.0) -> list[dict]:
    """``metric_point`` records of one series; minutes without traffic publish no rate."""
    rng = np.random.default_rng(seed)
    n = days * DAY
    hour = (np.arange(n) % DAY) / 60
    load = 0.15 + 0.85 * np.clip(np.sin(np.pi * (hour - 6) / 16), 0, None) ** 1.5
    count = rng.poisson(peak * load).astype(float)
    end = n if kind == "shift" else start + length
    if metric == "request_count":
        value = count.copy()
        if kind:
            value[start:end] = np.floor(value[start:end] * factor)
        count = value.copy()
    elif metric == "latency_p95_ms":
        value = 900 * (1 + 0.3 * load) * rng.lognormal(0, 0.06 + 0.4 / np.sqrt(np.maximum(count, 1)), n)
        if kind:
            value[start:end] *= factor
    elif metric == "error_rate":
        p = np.full(n, 0.01)
        if kind:
            p[start:end] = factor
        value = rng.binomial(count.astype(int), p) / np.maximum(count, 1)
    else:
        raise AssertionError(metric)
    series = f"{metric}{{project=p}}"
    return [
        {"series": series, "metric": metric, "dimensions": {"project": "p"},
         "window_start": T0 + timedelta(minutes=k), "window_seconds": 60,
         "value": float(value[k]), "count": int(count[k])}
        for k in range(n) if count[k] > 0 or metric == "request_count"
    ]


def point_message(point: dict, offset: int = 0, partition: int = 0) -> SourceMessage:
    return SourceMessage("llm.metrics", partition, offset, point["series"].encode(), encode("metric_point", point))


def feedback_message(anomaly_id: str, series: str, metric: str, offset: int = 0,
                     verdict: str = "false_positive") -> SourceMessage:
    record = {**sample("anomaly_feedback"), "anomaly_id": anomaly_id, "series": series, "metric": metric,
              "verdict": verdict}
    return SourceMessage("llm.anomaly_feedback", 0, offset, series.encode(), encode("anomaly_feedback", record))


def run(points: list[dict], proc: AnomalyProcessor | None = None, first_offset: int = 0) -> list[dict]:
    proc = proc or AnomalyProcessor(AnomalyConfig.load())
    events = []
    for k, point in enumerate(points):
        for out in proc.process(point_message(point, first_offset + k)):
            assert out.topic == "llm.anomalies"
            record = decode(out.value, expected="anomaly")
            assert out.key == record["anomaly_id"].encode()
            events.append(record)
    return events


def minute(k: int) -> datetime:
    return T0 + timedelta(minutes=k)


@pytest.mark.parametrize(
    ("metric", "kind", "factor", "length", "last_minute"),
    [
        ("latency_p95_ms", "spike", 3.0, 20, INCIDENT + 20),
        ("request_count", "drop", 0.1, 30, INCIDENT + 30),
        ("error_rate", "burst", 0.2, 15, INCIDENT + 15),
        # A lasting shift ends when the detector has accepted the new level.
        ("latency_p95_ms", "shift", 1.8, 0, INCIDENT + 3 * 60),
    ],
)
def test_an_incident_opens_one_episode_that_resolves(metric, kind, factor, length, last_minute) -> None:
    events = run(make_points(metric, kind, factor=factor, length=length))
    assert events, "the incident was missed"
    ids = {e["anomaly_id"] for e in events}
    assert len(ids) == 1, f"one incident, one episode: {ids}"
    statuses = [e["status"] for e in events]
    assert statuses[0] == "open" and statuses[-1] == "resolved" and statuses.count("resolved") == 1
    # Updates are throttled: far fewer events than anomalous minutes.
    assert len(events) < max(3, events[-1]["points"] // 5 + 2)
    first, last = events[0], events[-1]
    assert first["started_at"] == minute(INCIDENT)
    assert first["ended_at"] is None
    assert minute(INCIDENT) < last["ended_at"] <= minute(last_minute)
    assert last["points"] >= 1 and last["detector"] == "ensemble-v1"
    assert first["anomaly_id"] == f"{metric}{{project=p}}|{metric}|{int(minute(INCIDENT).timestamp())}"
    # The bad way, outside the band, and the expectation inside it.
    if kind == "drop":
        assert first["observed"] < first["lower"] <= first["expected"]
    else:
        assert first["observed"] > first["upper"] >= first["expected"]
    assert first["dimensions"] == {"project": "p"} and 0.5 <= first["score"] < 1.0


@pytest.mark.parametrize("metric", ["latency_p95_ms", "error_rate", "request_count"])
def test_a_normal_series_opens_nothing(metric) -> None:
    assert run(make_points(metric, None, seed=7)) == []


def test_departures_the_harmless_way_do_not_open_episodes() -> None:
    # Latency dropping to a third is good news; volume tripling is not "down".
    assert run(make_points("latency_p95_ms", "spike", factor=0.3)) == []
    assert run(make_points("request_count", "drop", factor=3.0)) == []


def test_cold_start_raises_nothing_during_warm_up() -> None:
    points = make_points("latency_p95_ms", "spike", days=1, start=600, factor=5.0)
    proc = AnomalyProcessor(AnomalyConfig.load())
    assert run(points, proc) == []
    assert proc.counters["points_scored"] == len(points)


def test_a_sparse_series_never_alerts() -> None:
    # Three-ish requests a minute at peak, and a 100% error burst: noise, not evidence.
    for metric, factor in (("error_rate", 1.0), ("latency_p95_ms", 5.0), ("request_count", 0.0)):
        assert run(make_points(metric, "burst", peak=4.0, factor=factor, length=30)) == [], metric


def test_duplicate_and_out_of_order_points_are_ignored_and_counted() -> None:
    points = make_points("latency_p95_ms", "spike")
    clean = run(points)
    replayed = points[:INCIDENT + 5] + points[INCIDENT - 50:INCIDENT + 5] + [points[10]] + points[INCIDENT + 5:]
    proc = AnomalyProcessor(AnomalyConfig.load())
    assert run(replayed, proc) == clean
    assert proc.counters["points_stale"] == 56
    assert proc.counters["points_scored"] == len(points)


def test_false_positive_closes_suppresses_and_widens() -> None:
    points = make_points("latency_p95_ms", "spike")
    proc = AnomalyProcessor(AnomalyConfig.load())
    opened = run(points[:INCIDENT + 3], proc)
    assert [e["status"] for e in opened] == ["open"]
    anomaly_id, series = opened[0]["anomaly_id"], opened[0]["series"]
    watch = proc.partitions[0].series[(series, "latency_p95_ms")]
    before = watch.threshold(proc.config.watch("latency_p95_ms"), proc.config)

    out = proc.process(feedback_message(anomaly_id, series, "latency_p95_ms", offset=1))
    closed = [decode(o.value, expected="anomaly") for o in out]
    assert [(e["anomaly_id"], e["status"]) for e in closed] == [(anomaly_id, "false_positive")]
    assert closed[0]["ended_at"] == minute(INCIDENT + 3)
    after = watch.threshold(proc.config.watch("latency_p95_ms"), proc.config)
    assert after == pytest.approx(0.6) and before == pytest.approx(0.5)  # odds x 1.5

    # Redelivered: nothing changes.
    assert proc.process(feedback_message(anomaly_id, series, "latency_p95_ms", offset=2)) == []
    assert watch.threshold(proc.config.watch("latency_p95_ms"), proc.config) == after
    assert proc.counters["false_positives"] == 1 and proc.counters["feedback_duplicate"] == 1

    # The rest of the spike, and another one 30 minutes later, inside the
    # 60-minute suppression: nothing reopens.
    rest = points[INCIDENT + 3:]
    for k in range(INCIDENT + 30, INCIDENT + 45):
        rest[k - INCIDENT - 3] = {**rest[k - INCIDENT - 3], "value": rest[k - INCIDENT - 3]["value"] * 3}
    assert run(rest, proc) == []


def test_false_positive_on_a_resolved_episode_re_marks_it() -> None:
    points = make_points("error_rate", "burst", factor=0.2, length=15)
    proc = AnomalyProcessor(AnomalyConfig.load())
    events = run(points, proc)
    resolved = events[-1]
    assert resolved["status"] == "resolved"
    out = proc.process(feedback_message(resolved["anomaly_id"], resolved["series"], "error_rate"))
    marked = decode(out[0].value, expected="anomaly")
    assert marked == {**resolved, "status": "false_positive"}
    ack = feedback_message("someone|else|1", resolved["series"], "error_rate", verdict="acknowledged")
    assert proc.process(ack) == []


@pytest.mark.parametrize("cut", [INCIDENT - 400, INCIDENT + 7])
def test_a_restored_processor_emits_what_an_uninterrupted_one_does(cut) -> None:
    points = make_points("latency_p95_ms", "spike", length=20)
    expected = run(points)
    first = AnomalyProcessor(AnomalyConfig.load())
    before = run(points[:cut], first)
    blob = first.checkpoint(0)
    assert blob.startswith(CHECKPOINT_MAGIC)
    second = AnomalyProcessor(AnomalyConfig.load())
    assert second.restore(0, blob) == {"llm.metrics": cut}
    # The runtime may resume from an older committed offset: re-read points are skipped.
    after = run(points[cut - 30:], second, first_offset=cut - 30)
    assert before + after == expected
    assert second.counters["points_stale"] == 30


def test_checkpoint_is_per_partition_and_versioned() -> None:
    proc = AnomalyProcessor(AnomalyConfig.load())
    proc.process(point_message(make_points("error_rate")[0], partition=2))
    assert proc.checkpoint(2) != proc.checkpoint(0)
    blob = proc.checkpoint(2)
    future = blob[:len(CHECKPOINT_MAGIC)] + b"\x09" + blob[len(CHECKPOINT_MAGIC) + 1:]
    with pytest.raises(ValueError, match="format v9"):
        AnomalyProcessor(AnomalyConfig.load()).restore(2, future)


def test_bad_input_raises_a_clear_value_error() -> None:
    proc = AnomalyProcessor(AnomalyConfig.load())
    with pytest.raises(ValueError, match="expected a metric_point message, got span"):
        proc.process(SourceMessage("llm.metrics", 0, 0, None, encode("span", sample("span"))))
    with pytest.raises(ValueError, match="tombstone"):
        proc.process(SourceMessage("llm.metrics", 0, 0, None, None))
    with pytest.raises(ValueError, match="not a finite number"):
        proc.process(point_message({**make_points("error_rate")[0], "value": math.nan}))
    with pytest.raises(ValueError, match="window_seconds must be > 0"):
        proc.process(point_message({**make_points("error_rate")[0], "window_seconds": 0}))
    with pytest.raises(ValueError, match="does not read topic"):
        proc.process(SourceMessage("llm.spans", 0, 0, None, b"x"))
    assert proc.counters["points_scored"] == 0


def test_unwatched_metrics_are_counted_not_scored() -> None:
    proc = AnomalyProcessor(AnomalyConfig.load())
    point = {**make_points("error_rate")[0], "metric": "latency_p50_ms"}
    assert proc.process(point_message(point)) == []
    samples = {(name, tuple(labels.items())): v for name, _, labels, v in proc.samples()}
    assert samples[("llmpulse_anomaly_points_unwatched", ())] == 1.0
    assert samples[("llmpulse_anomaly_points_scored", ())] == 0.0
    assert samples[("llmpulse_anomaly_open_episodes", (("partition", "0"),))] == 0.0


def test_errors_on_big_volume_are_critical() -> None:
    # 30% errors on ~2000 requests a minute: hundreds of extra failures a minute.
    events = run(make_points("error_rate", "burst", factor=0.3, length=10, peak=2000.0))
    assert events[0]["severity"] == "critical"
    small = run(make_points("error_rate", "burst", factor=0.3, length=10, peak=60.0))
    assert small and small[0]["severity"] != "critical"


def test_the_band_is_where_the_score_crosses_the_threshold() -> None:
    det = production_detector(step=60)
    for x in ({"value": 100.0 + (k % 17) * 3.0, "t": 60.0 * k, "count": 50} for k in range(3000)):
        det.score_one(x)
        det.learn_one(x)
    x = {"value": 0.0, "t": 60.0 * 3000, "count": 50}
    band = expected_band(det, x, 0.5)
    assert band.lower < band.expected < band.upper
    for edge, step in ((band.upper, 1e-6), (band.lower, -1e-6)):
        inside = max(det.member_scores({**x, "value": edge - step * max(1.0, abs(edge))}))
        outside = max(det.member_scores({**x, "value": edge + step * max(1.0, abs(edge))}))
        assert inside < 0.5 <= outside


def test_config_from_env_and_clear_errors(tmp_path) -> None:
    path = tmp_path / "anomaly.json"
    path.write_text(json.dumps({"version": 2, "metrics": {"error_rate": {"direction": "up", "threshold": 0.7}}}))
    cfg = AnomalyConfig.from_env({ANOMALY_FILE_ENV: str(path)})
    assert cfg.version == 2 and cfg.watch("error_rate").threshold == 0.7 and cfg.watch("latency_p95_ms") is None
    rate = "metrics.error_rate"
    bad = [
        ({"version": 1, "metrics": {"error_rate": {"threshold": 1.5}}}, f"{rate}.threshold: must be a number between"),
        ({"version": 1, "metrics": {"error_rate": {"treshold": 0.5}}}, f"{rate}.treshold: unknown key"),
        ({"version": 1, "metrics": {"error_rate": {"min_count": "ten"}}}, f"{rate}.min_count: must be an integer"),
        ({"version": 1, "metrics": {}}, "'metrics' is required"),
        ({"metrics": {"x": {}}}, "'version' is required"),
        ({"version": 1, "metrics": {"x": {}}, "feedback": {"widen_factor": 0.5}}, "feedback.widen_factor: must be a"),
    ]
    for doc, message in bad:
        with pytest.raises(AnomalyConfigError, match="x.json: " + message.replace("(", r"\(")):
            AnomalyConfig.from_dict(doc, where="x.json")
    path.write_text("{not json")
    with pytest.raises(AnomalyConfigError, match="not valid JSON"):
        AnomalyConfig.load(path)
