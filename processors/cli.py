"""``llmpulse``: the command line of every llmpulse process and admin task.

Settings come from the environment (see :mod:`processors.settings`); each
command reads them once and passes them down.
"""
from __future__ import annotations

import logging
import os
import signal
import subprocess
import sys
import time

import click

from processors.catalog import WORKERS
from processors.catalog import run as run_named_worker
from processors.demo import demo
from processors.settings import Settings
from processors.generate_cli import generate
from sinks.db_cli import db
from sinks.trace_cli import trace
from processors.experiments.cli import experiments
from processors.cohorts_cli import cohorts
from processors.anomalies_cli import anomalies
from processors.experiments.results_cli import results


def _settings() -> Settings:
    try:
        return Settings()
    except Exception as exc:  # pydantic's ValidationError lists every bad variable
        raise click.ClickException(f"invalid configuration:\n{exc}") from exc


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
def main() -> None:
    """llmpulse: streaming analytics for LLM applications.

    Configuration comes from environment variables (KAFKA_BOOTSTRAP_SERVERS,
    DATABASE_URL, LLMPULSE_*); `llmpulse config` shows what is in effect.
    """


@main.command()
def config() -> None:
    """Show the settings in effect (secrets masked)."""
    settings = _settings()
    for name, value in settings.model_dump().items():
        if name == "database_url":
            value = settings.database_url_masked
        click.echo(f"{name} = {value}")


@main.command()
@click.argument("processor", type=click.Choice([*WORKERS, "all"]))
@click.option("--metrics-port", type=int, default=None, help="Prometheus port (0: any free port, -1: off).")
@click.option("--engine", type=click.Choice(["kafka", "faust"]), default=None,
              help="Stream engine for processors (default: LLMPULSE_ENGINE or kafka).")
def run(processor: str, metrics_port: int | None, engine: str | None) -> None:
    """Run one PROCESSOR as a worker (its own consumer group), or `all` for development.

    Start the same processor several times, on this or other machines, to
    scale out: its consumer group shares the topic partitions among them.
    """
    settings = _settings()
    overrides = {"metrics_port": metrics_port, "engine": engine}
    settings = settings.model_copy(update={k: v for k, v in overrides.items() if v is not None})
    logging.basicConfig(level=settings.log_level, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    if processor == "all":
        sys.exit(_run_all())
    run_named_worker(processor, settings)


def _slack_configured() -> bool:
    """Whether a Slack webhook or routes file is set (the notifier refuses to start without)."""
    settings = _settings()
    return bool(settings.slack_webhook_url or settings.slack_routes)


def _run_all() -> int:
    """Start one worker process per processor and stop them all together."""
    names = [n for n in WORKERS if n != "slack-notifier" or _slack_configured()]
    procs = {
        name: subprocess.Popen([sys.executable, "-m", "processors.cli", "run", name], env=os.environ.copy())
        for name in names
    }
    click.echo(f"started {', '.join(f'{n} (pid {p.pid})' for n, p in procs.items())}; Ctrl-C stops all")

    def stop(*_args: object) -> None:
        for proc in procs.values():
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    try:
        while all(p.poll() is None for p in procs.values()):
            time.sleep(0.5)
    finally:
        stop()
        for proc in procs.values():
            proc.wait(timeout=60)
    failed = {n: p.returncode for n, p in procs.items() if p.returncode not in (0, -signal.SIGTERM)}
    if failed:
        click.echo(f"workers exited with errors: {failed}", err=True)
        return 1
    return 0


@main.group()
def topics() -> None:
    """Kafka topics declared by llmpulse."""


@topics.command("list")
def topics_list() -> None:
    """List the declared topics and their settings."""
    from processors.topics import ALL_TOPICS

    for spec in ALL_TOPICS:
        policy = "compact" if spec.compacted else f"retention {spec.retention_ms // 3_600_000}h"
        click.echo(f"{spec.name:<24} {policy:<16} {spec.schema or '-':<14} {spec.doc}")


@topics.command("create")
def topics_create() -> None:
    """Create every declared topic that does not exist yet (safe to re-run)."""
    from confluent_kafka.admin import AdminClient

    from processors.topics import create_topics

    settings = _settings()
    admin = AdminClient({"bootstrap.servers": settings.kafka_bootstrap_servers})
    try:
        outcome = create_topics(
            admin, default_partitions=settings.topic_partitions, replication_factor=settings.replication_factor
        )
    except Exception as exc:
        raise click.ClickException(f"{exc} (broker: {settings.kafka_bootstrap_servers})") from exc
    for name, what in outcome.items():
        click.echo(f"{name}: {what}")


main.add_command(db)
main.add_command(demo)
main.add_command(generate)
main.add_command(trace)
main.add_command(experiments)
main.add_command(cohorts)
main.add_command(anomalies)
experiments.add_command(results)

if __name__ == "__main__":
    main()
