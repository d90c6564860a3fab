"""Prometheus metrics every processor exports, and the ``/metrics`` endpoint.

One worker process runs one processor, so each has its own endpoint; the
``processor`` label still keeps series apart when several run in one process
(tests) or are scraped through one federation.
"""
from __future__ import annotations

import logging

from typing import Any

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, start_http_server
from prometheus_client.core import CounterMetricFamily

log = logging.getLogger(__name__)

# Per-message work is tens of microseconds; the top buckets are there to show
# stalls (GC, a slow produce) rather than normal work.
PROCESSING_BUCKETS = (1e-5, 5e-5, 1e-4, 5e-4, 1e-3, 5e-3, 1e-2, 5e-2, 0.1, 0.5, 1.0, 5.0)


class ProcessorMetrics:
    """The counters and gauges of one processor.

    Examples
    --------
    >>> m = ProcessorMetrics("demo", CollectorRegistry())
    >>> m.events_in.labels("demo", "llm.spans").inc()
    >>> m.value("llmpulse_events_in_total", topic="llm.spans")
    1.0
    """

    def __init__(self, processor: str, registry: CollectorRegistry) -> None:
        self.processor = processor
        self.registry = registry
        self.events_in = Counter(
            "llmpulse_events_in", "Messages consumed.", ["processor", "topic"], registry=registry
        )
        self.events_out = Counter(
            "llmpulse_events_out", "Messages produced.", ["processor", "topic"], registry=registry
        )
        self.dead_letters = Counter(
            "llmpulse_dead_letters",
            "Messages sent to the dead-letter topic, by error type.",
            ["processor", "topic", "error_type"],
            registry=registry,
        )
        self.processing_seconds = Histogram(
            "llmpulse_processing_seconds",
            "Time to process one message (decode, logic, encode; not the produce round trip); the "
            "librdkafka runtime times 1 message in 16.",
            ["processor"],
            buckets=PROCESSING_BUCKETS,
            registry=registry,
        )
        self.consumer_lag = Gauge(
            "llmpulse_consumer_lag",
            "Messages behind the partition's high watermark when the last message was processed.",
            ["processor", "topic", "partition"],
            registry=registry,
        )

    def value(self, name: str, **labels: str) -> float:
        """Current value of a sample, for tests and the demo summary (0 if absent)."""
        labels.setdefault("processor", self.processor)
        found = self.registry.get_sample_value(name, labels)
        return found if found is not None else 0.0


class ProcessorSamples:
    """Exports a processor's own counters (``processor.samples()``) at scrape time.

    The logic keeps plain counters so it stays testable without Prometheus;
    this collector reads them only when Prometheus asks.
    """

    def __init__(self, processor: Any) -> None:
        self.processor = processor

    def collect(self):  # noqa: ANN201 - prometheus_client's collector protocol
        families: dict[str, CounterMetricFamily] = {}
        for name, doc, labels, value in self.processor.samples():
            family = families.get(name)
            if family is None:
                family = families[name] = CounterMetricFamily(name, doc, labels=["processor", *labels])
            family.add_metric([self.processor.name, *labels.values()], value)
        return list(families.values())


def serve_metrics(port: int, registry: CollectorRegistry) -> int | None:
    """Start the ``/metrics`` HTTP endpoint; return the bound port.

    ``port=0`` binds a free port (several workers on one machine), ``-1``
    disables the endpoint.

    >>> serve_metrics(-1, CollectorRegistry()) is None
    True
    """
    if port < 0:
        return None
    server, _thread = start_http_server(port, addr="0.0.0.0", registry=registry)
    bound = server.server_address[1]
    log.info("Prometheus metrics on http://0.0.0.0:%d/metrics", bound)
    return bound
