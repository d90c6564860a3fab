"""The workers ``llmpulse run`` knows, by name.

Three kinds: stream processors (plain logic run by librdkafka,
:mod:`processors.kafka_runtime`, or by a faust agent, :mod:`processors.runtime`,
as ``LLMPULSE_ENGINE`` says), sinks (batched database writers, see
:mod:`sinks.runner`), each its own consumer group, and scheduled jobs (a
loop over the database: metric points, experiment results, Slack delivery).
"""
from __future__ import annotations

from typing import Callable

from processors.contract import Processor
from processors.settings import Settings

#: name -> factory(settings) -> processor, for faust processors.
PROCESSORS: dict[str, Callable[[Settings], Processor]] = {
    "ingest": lambda settings: _ingest(settings),
    "metrics": lambda settings: _metrics(settings),
    "anomalies": lambda settings: _anomalies(settings),
}

#: name -> factory(settings) -> BatchSink, for sinks.
SINKS: dict[str, Callable[[Settings], object]] = {
    "trace-store": lambda settings: _trace_store(settings),
    "metrics-store": lambda settings: _metrics_store(settings),
    "feedback-store": lambda settings: _feedback_store(settings),
    "experiments-store": lambda settings: _experiment_store(settings, "experiments"),
    "exposures-store": lambda settings: _experiment_store(settings, "exposures"),
    "anomaly-store": lambda settings: _anomaly_store(settings),
}

#: name -> run(settings), for jobs that run their own loop until SIGTERM.
JOBS: dict[str, Callable[[Settings], None]] = {
    "metrics-compactor": lambda settings: _metrics_compactor(settings),
    "metric-points": lambda settings: _metric_points(settings),
    "experiment-results": lambda settings: _experiment_results(settings),
    "slack-notifier": lambda settings: _slack_notifier(settings),
}

#: Every worker name; start order for ``llmpulse run all``.
WORKERS: tuple[str, ...] = (*PROCESSORS, *SINKS, *JOBS)


def _ingest(settings: Settings) -> Processor:
    from processors.ingest import IngestProcessor

    return IngestProcessor.from_settings(settings)


def _metrics(settings: Settings) -> Processor:
    from datetime import timedelta

    from processors.metrics_processor import MetricsProcessor, parse_caps

    return MetricsProcessor(lateness=timedelta(seconds=settings.metrics_lateness_s),
                            caps=parse_caps(settings.metrics_caps))


def _anomalies(settings: Settings) -> Processor:
    from pathlib import Path

    from processors.anomaly.worker import AnomalyWorker

    return AnomalyWorker(Path(settings.state_dir) / "anomalies")


def _trace_store(settings: Settings) -> object:
    from sinks.trace_store import trace_store_sink

    return trace_store_sink(settings)


def _metrics_store(settings: Settings) -> object:
    from sinks.metrics_store import metrics_store_sink

    return metrics_store_sink(settings)


def _feedback_store(settings: Settings) -> object:
    from sinks.feedback_store import feedback_store_sink

    return feedback_store_sink(settings)


def _experiment_store(settings: Settings, which: str) -> object:
    from sinks import experiment_store

    factory = experiment_store.experiments_store_sink if which == "experiments" else experiment_store.exposures_store_sink
    return factory(settings)


def _metrics_compactor(settings: Settings) -> None:
    from sinks.metrics_store import run_metrics_compactor

    run_metrics_compactor(settings)


def _metric_points(settings: Settings) -> None:
    from sinks.metric_points import run_metric_points

    run_metric_points(settings)


def _anomaly_store(settings: Settings) -> object:
    from sinks.anomaly_store import anomaly_store_sink

    return anomaly_store_sink(settings)


def _experiment_results(settings: Settings) -> None:
    from processors.experiments.results_worker import run_experiment_results

    run_experiment_results(settings)


def _slack_notifier(settings: Settings) -> None:
    from sinks.slack import run_slack_notifier

    run_slack_notifier(settings)


def make_processor(name: str, settings: Settings) -> Processor:
    """Build the faust processor called ``name``.

    >>> make_processor("ingest", Settings()).name
    'ingest'
    """
    try:
        factory = PROCESSORS[name]
    except KeyError:
        raise KeyError(f"unknown processor {name!r}; known: {', '.join(PROCESSORS)}") from None
    return factory(settings)


def run(name: str, settings: Settings) -> None:
    """Run worker ``name`` in this process until it is stopped."""
    if name in JOBS:
        JOBS[name](settings)
        return
    if name in SINKS:
        from sinks.runner import run_sink

        run_sink(SINKS[name](settings), settings)
        return
    processor = make_processor(name, settings)
    if settings.engine == "faust":
        from processors.runtime import run_worker  # faust is slow to import; only its workers need it

        run_worker(processor, settings)
    else:
        from processors.kafka_runtime import run_kafka_worker

        run_kafka_worker(processor, settings)
