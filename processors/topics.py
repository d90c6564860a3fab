"""Every Kafka topic llmpulse reads or writes, declared once.

Processors, the CLI (``llmpulse topics create``), tests and docs all read this
table, so a topic's partitions, retention and cleanup policy live in one place.
"""
from __future__ import annotations

from dataclasses import dataclass, field

from confluent_kafka.admin import AdminClient, NewTopic

DAY_MS = 24 * 60 * 60 * 1000


@dataclass(frozen=True)
class TopicSpec:
    """One topic: name, purpose, value schema and its broker settings.

    ``partitions=None`` means "the deployment's default" (settings).

    Examples
    --------
    >>> spec = TopicSpec("llm.x", "example", schema="span", retention_ms=DAY_MS)
    >>> spec.config()
    {'cleanup.policy': 'delete', 'retention.ms': '86400000'}
    """

    name: str
    doc: str
    schema: str | None = None
    partitions: int | None = None
    retention_ms: int | None = 7 * DAY_MS
    compacted: bool = False
    extra_config: dict[str, str] = field(default_factory=dict)

    def config(self) -> dict[str, str]:
        """Broker-side topic configuration."""
        cfg = {"cleanup.policy": "compact" if self.compacted else "delete"}
        # Compacted topics hold the latest state per key forever; time-based
        # retention would silently forget users and experiments.
        if self.retention_ms is not None and not self.compacted:
            cfg["retention.ms"] = str(self.retention_ms)
        cfg.update(self.extra_config)
        return cfg


SPANS = TopicSpec("llm.spans", "Spans from producers (Avro single-object or JSON); key = trace_id.", "span")
OTLP_SPANS = TopicSpec(
    "otlp_spans", "OpenTelemetry Collector Kafka exporter output (otlp_proto ExportTraceServiceRequest)."
)
SPANS_ENRICHED = TopicSpec("llm.spans.enriched", "Validated, normalised, enriched spans; key = trace_id.", "span")
FEEDBACK = TopicSpec("llm.feedback", "User feedback from producers; key = trace_id.", "feedback")
FEEDBACK_ENRICHED = TopicSpec("llm.feedback.enriched", "Feedback joined to cohorts and variants.", "feedback")
USERS = TopicSpec("llm.users", "Latest user profile per user_id (compacted).", "user_profile", compacted=True)
EXPERIMENTS = TopicSpec(
    "llm.experiments", "Latest experiment definition per key (compacted).", "experiment", compacted=True
)
EXPOSURES = TopicSpec("llm.exposures", "One exposure per (user, experiment).", "exposure", retention_ms=30 * DAY_MS)
METRIC_WINDOWS = TopicSpec(
    "llm.metric_windows", "1-minute partial windows per source partition; key = series.", "metric_window"
)
METRICS = TopicSpec("llm.metrics", "Windowed metric points for the detectors.", "metric_point")
ANOMALIES = TopicSpec(
    "llm.anomalies", "Anomaly episodes (open, updated, resolved); key = anomaly_id.", "anomaly",
    retention_ms=30 * DAY_MS,
)
ANOMALY_FEEDBACK = TopicSpec(
    "llm.anomaly_feedback", "People's verdicts on anomalies (false positive, acknowledged); key = series.",
    "anomaly_feedback", retention_ms=90 * DAY_MS,
)
ALERTS = TopicSpec("llm.alerts", "Alerts for Slack and other notifiers.", "alert", retention_ms=30 * DAY_MS)
DEADLETTER = TopicSpec(
    "llm.deadletter",
    "Messages a processor could not handle: original bytes, error, source topic/partition/offset.",
    "dead_letter",
    retention_ms=30 * DAY_MS,
)

ALL_TOPICS: tuple[TopicSpec, ...] = (
    SPANS,
    OTLP_SPANS,
    SPANS_ENRICHED,
    FEEDBACK,
    FEEDBACK_ENRICHED,
    USERS,
    EXPERIMENTS,
    EXPOSURES,
    METRIC_WINDOWS,
    METRICS,
    ANOMALIES,
    ANOMALY_FEEDBACK,
    ALERTS,
    DEADLETTER,
)


def by_name(name: str) -> TopicSpec:
    """Look a declared topic up by name.

    >>> by_name("llm.users").compacted
    True
    """
    for spec in ALL_TOPICS:
        if spec.name == name:
            return spec
    raise KeyError(f"unknown topic {name!r}; declared: {', '.join(t.name for t in ALL_TOPICS)}")


def create_topics(
    admin: AdminClient,
    specs: tuple[TopicSpec, ...] = ALL_TOPICS,
    *,
    default_partitions: int = 3,
    replication_factor: int = 1,
    timeout_s: float = 30.0,
) -> dict[str, str]:
    """Create the topics that do not exist yet; leave existing ones alone.

    Returns ``{name: "created" | "exists"}``. Any other broker error raises
    ``RuntimeError`` naming the topic.
    """
    new = [
        NewTopic(
            s.name,
            num_partitions=s.partitions or default_partitions,
            replication_factor=replication_factor,
            config=s.config(),
        )
        for s in specs
    ]
    outcome: dict[str, str] = {}
    failures: list[str] = []
    for name, future in admin.create_topics(new, request_timeout=timeout_s).items():
        try:
            future.result(timeout=timeout_s)
            outcome[name] = "created"
        except Exception as exc:  # confluent-kafka raises KafkaException wrapping a KafkaError
            err = exc.args[0] if exc.args else exc
            if getattr(err, "name", lambda: "")() == "TOPIC_ALREADY_EXISTS":
                outcome[name] = "exists"
            else:
                failures.append(f"{name}: {err}")
    if failures:
        raise RuntimeError("could not create topics: " + "; ".join(failures))
    return outcome
