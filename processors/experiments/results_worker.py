"""The ``experiment-results`` worker: every running experiment, once a minute.

Each pass (:meth:`ResultsJob.run_once`) takes every experiment with status
``running`` and, in one transaction per experiment, loads its exposures and
sums, computes the rows and verdict (:func:`~.results.compute_results`),
compares the decision with the previous computation and, when it changed,
produces the decision alerts (:func:`~.results_alerts.decision_alerts`) to
``llm.alerts`` *before* writing the rows. So an alert is never lost: if the
write fails after the alert went out, the next pass sees no new row and
alerts again, with the same ``episode_id`` (notifiers update the post they
made instead of posting twice).

A database outage is transient: the pass is abandoned, logged and retried at
the next tick. A definition the analysis cannot use (unknown metric, a zero
weight) is logged and counted, and the other experiments go on.

Prometheus (on ``LLMPULSE_METRICS_PORT``):

* ``llmpulse_experiment_results_computations_total{outcome}``: ``ok`` or
  ``error`` per experiment and pass;
* ``llmpulse_experiments_srm``: running experiments whose last computation
  found a sample ratio mismatch;
* ``llmpulse_experiment_alerts_total{decision,status}``: decision alerts sent.

Run it with ``llmpulse run experiment-results``; the interval is
``LLMPULSE_RESULTS_INTERVAL_S`` (default 60 s).
"""
from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

import psycopg
from confluent_kafka import Producer
from prometheus_client import CollectorRegistry, Counter, Gauge

from processors.experiments.results import DesignError, ExperimentResult, compute_results
from processors.experiments.results_alerts import DEFAULT_GRAFANA_URL, decision_alerts
from processors.experiments.results_db import (
    design_of,
    load_exposures,
    load_sums,
    previous_decision,
    running_experiments,
    write_result,
)
from processors.settings import Settings
from processors.topics import ALERTS
from schemas.codec import encode
from sinks.errors import explain

__all__ = ["AlertDeliveryError", "ResultsJob", "run_experiment_results"]

log = logging.getLogger(__name__)


class AlertDeliveryError(RuntimeError):
    """Kafka did not acknowledge a decision alert; the rows are not written either."""


class ResultsJob:
    """One pass over the running experiments; see the module docstring.

    Parameters
    ----------
    conninfo : str
        Database URL.
    producer : confluent_kafka.Producer
        Where decision alerts go.
    registry : CollectorRegistry
        Holds the job's Prometheus metrics.
    alerts_topic : str
        ``llm.alerts`` unless a test says otherwise.
    grafana_url : str
        Base of the dashboard link in alerts.
    clock : callable
        Returns the computation time (UTC); tests pin it.

    Examples
    --------
    >>> job = ResultsJob("postgresql://localhost/none", producer=None)
    >>> job.alerts_topic
    'llm.alerts'
    """

    def __init__(
        self,
        conninfo: str,
        producer: Producer,
        registry: CollectorRegistry | None = None,
        *,
        alerts_topic: str = ALERTS.name,
        grafana_url: str = DEFAULT_GRAFANA_URL,
        clock: Callable[[], datetime] = lambda: datetime.now(UTC),
    ) -> None:
        self.conninfo = conninfo
        self.producer = producer
        self.alerts_topic = alerts_topic
        self.grafana_url = grafana_url
        self.clock = clock
        registry = registry or CollectorRegistry()
        self.computations = Counter(
            "llmpulse_experiment_results_computations",
            "Experiment result computations, by outcome (ok, error).", ["outcome"], registry=registry,
        )
        self.srm = Gauge(
            "llmpulse_experiments_srm",
            "Running experiments whose latest computation found a sample ratio mismatch.",
            registry=registry,
        )
        self.alerts = Counter(
            "llmpulse_experiment_alerts", "Decision alerts produced, by decision and status.",
            ["decision", "status"], registry=registry,
        )

    def run_once(self) -> list[ExperimentResult]:
        """Compute every running experiment; returns the results written.

        Raises :class:`psycopg.OperationalError` when the database is down
        (the caller retries at the next tick).
        """
        now = self.clock()
        results = []
        with psycopg.connect(self.conninfo, connect_timeout=10, autocommit=True) as conn:
            with conn.transaction():
                definitions = running_experiments(conn)
            for row in definitions:
                try:
                    with conn.transaction():
                        results.append(self._compute_one(conn, row, now))
                    self.computations.labels("ok").inc()
                except (DesignError, AlertDeliveryError, psycopg.DataError,
                        psycopg.IntegrityError) as exc:
                    # One experiment's bad definition or data must not stop the others.
                    self.computations.labels("error").inc()
                    log.error("experiment %r: results not computed: %s", row.get("key"), exc)
        self.srm.set(sum(1 for r in results if r.srm.flagged))
        return results

    def _compute_one(self, conn: psycopg.Connection, row: dict[str, Any], now: datetime) -> ExperimentResult:
        exposures = load_exposures(conn, row["key"])
        design = design_of(row, exposures)
        if exposures.inconsistent:
            log.warning("experiment %r: %d users seen in several variants are left out",
                        design.key, exposures.inconsistent)
        sums = load_sums(conn, design.key, row.get("started_at"))
        result = compute_results(design, sums, exposures.users, now)
        previous = previous_decision(conn, design.key, now)
        alerts = decision_alerts(result, previous, grafana_url=self.grafana_url)
        if alerts:
            self._produce(design.key, alerts)
        write_result(conn, result)
        log.info("experiment %r: %s (%s)", design.key, result.decision, result.reason)
        return result

    def _produce(self, key: str, alerts: list[dict[str, Any]]) -> None:
        failed: list[str] = []

        def delivered(err: Any, _msg: Any) -> None:
            if err is not None:
                failed.append(str(err))

        for alert in alerts:
            self.producer.produce(self.alerts_topic, key=key.encode(), value=encode("alert", alert),
                                  on_delivery=delivered)
        left = self.producer.flush(30)
        if left or failed:
            raise AlertDeliveryError(f"{left} alert(s) undelivered to {self.alerts_topic}: {failed}")
        for alert in alerts:
            self.alerts.labels(alert["episode_id"].rsplit(":", 1)[-1], alert["status"]).inc()


def run_experiment_results(
    settings: Settings,
    *,
    stop: threading.Event | None = None,
    registry: CollectorRegistry | None = None,
    alerts_topic: str = ALERTS.name,
) -> None:
    """Run :class:`ResultsJob` every ``settings.results_interval_s`` until stopped.

    Stops on SIGTERM/SIGINT (when run in the main thread) or when ``stop``
    is set; serves ``/metrics`` on ``settings.metrics_port``.
    """
    from processors.kafka_runtime import stop_on_signals
    from processors.metrics import serve_metrics

    registry = registry or CollectorRegistry()
    serve_metrics(settings.metrics_port, registry)
    stop = stop_on_signals(stop)
    producer = Producer({"bootstrap.servers": settings.kafka_bootstrap_servers, "enable.idempotence": True})
    job = ResultsJob(settings.database_url.get_secret_value(), producer, registry,
                     alerts_topic=alerts_topic, grafana_url=settings.grafana_url)
    interval = settings.results_interval_s
    log.info("experiment-results: every %.0f s, alerts to %s", interval, alerts_topic)
    try:
        while not stop.is_set():
            started = time.monotonic()
            try:
                job.run_once()
            except psycopg.OperationalError as exc:
                log.warning("experiment-results: database unavailable (%s); retrying in %.0f s",
                            str(exc).strip(), interval)
            except psycopg.Error as exc:  # e.g. not migrated: say what to do, keep trying
                log.error("experiment-results: %s; retrying in %.0f s", explain(exc), interval)
            stop.wait(max(0.0, interval - (time.monotonic() - started)))
    finally:
        producer.flush(30)
