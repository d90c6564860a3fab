"""The anomaly processor: metric points in, anomaly episodes out (``llm.anomalies``).

Reads ``llm.metrics`` (``metric_point``, keyed by series) and
``llm.anomaly_feedback`` (``anomaly_feedback``, keyed by series). Both are
keyed by series, so with equal partition counts a series and the verdicts on
it land in the same partition number; state is kept per partition and can
be checkpointed per partition (:meth:`AnomalyProcessor.checkpoint`).

Per (series, metric) a :class:`~processors.anomaly.series.SeriesWatch` runs
the production detectors and turns their scores into episodes; which metrics
are watched, and how, is :class:`~processors.anomaly.config.AnomalyConfig`
(``processors/data/anomaly.json``, ``LLMPULSE_ANOMALY_FILE``). See
``docs/anomaly-processor.md``.

Restarts: a checkpoint holds every series' detectors and episodes and the
last offset processed per source topic. Re-reading messages up to that
offset is harmless: a point whose window is not newer than the last one of
its series is ignored (and counted), a verdict already applied changes
nothing, and outputs are a function of the input order, so what is emitted
again is what was emitted before (keyed by ``anomaly_id``; the newest event
per id is the episode's state).
"""
from __future__ import annotations

import math
import pickle
from collections import Counter
from datetime import UTC, datetime

from processors.anomaly.config import AnomalyConfig
from processors.anomaly.series import Point, SeriesWatch
from processors.contract import Output
from processors.deadletter import SourceMessage
from processors.topics import ANOMALIES, ANOMALY_FEEDBACK, METRICS
from schemas.codec import decode, encode

#: First bytes of a checkpoint; the byte after the name is the format version.
CHECKPOINT_MAGIC = b"LLMPULSE-ANOMALY-STATE:"
CHECKPOINT_VERSION = 1
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


def _micros(at: datetime) -> int:
    return (at - _EPOCH) // _ONE_US


_ONE_US = datetime.resolution


class _Partition:
    """The series of one partition, and how far its source topics were read."""

    def __init__(self) -> None:
        self.series: dict[tuple[str, str], SeriesWatch] = {}
        self.offsets: dict[str, int] = {}  # topic -> last offset processed


class AnomalyProcessor:
    """Score metric points, open/update/close anomaly episodes, apply feedback.

    Examples
    --------
    >>> from schemas.samples import sample
    >>> proc = AnomalyProcessor()
    >>> point = {**sample("metric_point"), "metric": "latency_p95_ms"}
    >>> proc.process(SourceMessage("llm.metrics", 0, 0, None, encode("metric_point", point)))
    []
    >>> proc.process(SourceMessage("llm.metrics", 0, 1, None, encode("metric_point", point)))  # duplicate
    []
    >>> proc.counters["points_scored"], proc.counters["points_stale"]
    (1, 1)
    """

    name = "anomalies"
    sources = (METRICS.name, ANOMALY_FEEDBACK.name)

    def __init__(self, config: AnomalyConfig | None = None) -> None:
        self.config = config or AnomalyConfig.from_env()
        self.partitions: dict[int, _Partition] = {}
        self.counters: Counter = Counter()
        self.emitted: Counter = Counter()  # status -> anomaly events emitted

    # -- the runtime's hooks ---------------------------------------------

    def on_revoke(self, partitions: list[int]) -> None:
        """Forget partitions another worker now owns (checkpoint them first)."""
        for p in partitions:
            self.partitions.pop(p, None)

    def process(self, message: SourceMessage) -> list[Output]:
        """One message in; the anomaly events it causes out. Bad input raises ValueError."""
        if message.value is None:
            raise ValueError(f"empty message value (tombstone) on {message.topic}")
        part = self.partitions.setdefault(message.partition, _Partition())
        if message.topic == ANOMALY_FEEDBACK.name:
            records = self._feedback(part, decode(message.value, expected="anomaly_feedback"))
        elif message.topic == METRICS.name:
            records = self._point(part, decode(message.value, expected="metric_point"))
        else:
            raise ValueError(f"anomaly processor does not read topic {message.topic!r}")
        part.offsets[message.topic] = message.offset
        outputs = []
        for record in records:
            self.emitted[record["status"]] += 1
            outputs.append(Output(ANOMALIES.name, record["anomaly_id"].encode(), encode("anomaly", record)))
        return outputs

    def _point(self, part: _Partition, point: dict) -> list[dict]:
        metric = point["metric"]
        value, seconds = point["value"], point["window_seconds"]
        if not math.isfinite(value):
            raise ValueError(f"metric_point {point['series']!r}: value is {value!r}, not a finite number")
        if seconds <= 0:
            raise ValueError(f"metric_point {point['series']!r}: window_seconds must be > 0, got {seconds}")
        if point["count"] < 0:
            raise ValueError(f"metric_point {point['series']!r}: count must be >= 0, got {point['count']}")
        if self.config.watch(metric) is None:
            self.counters["points_unwatched"] += 1
            return []
        key = (point["series"], metric)
        watch = part.series.get(key)
        if watch is None:
            watch = part.series[key] = SeriesWatch(point["series"], metric, point["dimensions"], self.config,
                                                   step=seconds)
        window_us = _micros(point["window_start"])
        if watch.last_us is not None and window_us <= watch.last_us:
            # Duplicates and out-of-order points (a replay, a re-published
            # minute) would teach the detectors the same minute twice.
            self.counters["points_stale"] += 1
            return []
        watch.dimensions = dict(point["dimensions"])
        self.counters["points_scored"] += 1
        return watch.observe(Point(window_us, seconds, float(value), int(point["count"])), self.config)

    def _feedback(self, part: _Partition, verdict: dict) -> list[dict]:
        if verdict["verdict"] != "false_positive":
            self.counters["feedback_acknowledged"] += 1
            return []
        metric = verdict["metric"]
        if self.config.watch(metric) is None:
            self.counters["feedback_unwatched"] += 1
            return []
        key = (verdict["series"], metric)
        watch = part.series.get(key)
        if watch is None:
            # A verdict before any point (e.g. this worker started after the
            # series' points were checkpointed elsewhere): remember it anyway.
            watch = part.series[key] = SeriesWatch(verdict["series"], metric, {}, self.config, step=60)
        if verdict["anomaly_id"] in watch.feedback_seen:
            self.counters["feedback_duplicate"] += 1
            return []
        self.counters["false_positives"] += 1
        return watch.false_positive(verdict["anomaly_id"], self.config)

    # -- state -------------------------------------------------------------

    def checkpoint(self, partition: int) -> bytes:
        """The state of one partition (detectors, episodes, feedback, offsets), versioned.

        Only this processor's own checkpoints should be restored: the body is a pickle.

        >>> proc = AnomalyProcessor()
        >>> blob = proc.checkpoint(0)
        >>> blob.startswith(CHECKPOINT_MAGIC)
        True
        >>> AnomalyProcessor().restore(0, blob)
        {}
        """
        part = self.partitions.get(partition) or _Partition()
        body = pickle.dumps({"series": part.series, "offsets": part.offsets}, protocol=pickle.HIGHEST_PROTOCOL)
        return CHECKPOINT_MAGIC + bytes([CHECKPOINT_VERSION]) + body

    def restore(self, partition: int, data: bytes) -> dict[str, int]:
        """Replace one partition's state by a checkpoint; return ``{topic: next offset to read}``.

        >>> AnomalyProcessor().restore(0, b"junk")
        Traceback (most recent call last):
        ...
        ValueError: not an anomaly-processor checkpoint (bad header)
        """
        if not data.startswith(CHECKPOINT_MAGIC) or len(data) <= len(CHECKPOINT_MAGIC):
            raise ValueError("not an anomaly-processor checkpoint (bad header)")
        version = data[len(CHECKPOINT_MAGIC)]
        if version != CHECKPOINT_VERSION:
            raise ValueError(f"anomaly-processor checkpoint format v{version}; this build reads v{CHECKPOINT_VERSION}")
        state = pickle.loads(data[len(CHECKPOINT_MAGIC) + 1:])
        part = _Partition()
        part.series, part.offsets = state["series"], dict(state["offsets"])
        self.partitions[partition] = part
        return {topic: offset + 1 for topic, offset in part.offsets.items()}

    # -- observability -----------------------------------------------------

    def samples(self) -> list[tuple[str, str, dict[str, str], float]]:
        """Counters and gauges for Prometheus."""
        c = self.counters
        out = [
            ("llmpulse_anomaly_points_scored", "Metric points scored by the anomaly detectors.", {},
             float(c["points_scored"])),
            ("llmpulse_anomaly_points_stale", "Metric points ignored: window not newer than the series' last "
             "(duplicate or out of order).", {}, float(c["points_stale"])),
            ("llmpulse_anomaly_points_unwatched", "Metric points of metrics the config does not watch.", {},
             float(c["points_unwatched"])),
            ("llmpulse_anomaly_false_positives", "False-positive verdicts applied (redeliveries not counted).",
             {}, float(c["false_positives"])),
        ]
        for status in ("open", "resolved", "false_positive"):
            out.append(("llmpulse_anomaly_events", "Anomaly events emitted, by status.", {"status": status},
                        float(self.emitted[status])))
        for number, part in self.partitions.items():
            out.append(("llmpulse_anomaly_open_episodes", "Anomaly episodes open now.", {"partition": str(number)},
                        float(sum(1 for w in part.series.values() if w.open))))
            out.append(("llmpulse_anomaly_series", "Series with detector state.", {"partition": str(number)},
                        float(len(part.series))))
        return out
