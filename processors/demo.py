"""``llmpulse demo``: the whole pipeline on live services with realistic traffic.

Creates the topics, migrates the database, starts every worker as its own
process, publishes user profiles, running experiment definitions and
synthetic agent traffic (including malformed messages, which must reach the
dead-letter topic), waits until every span is stored, and prints: a summary,
one trace's waterfall, metrics by cohort with a significance test, the
verdict of the prompt experiment the traffic carries a real effect for, and
an injected incident as the anomaly, its root cause and the Slack message
posted to a local webhook receiver. Then it stops the workers.
"""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import tempfile
import time
import uuid
from datetime import UTC, datetime, timedelta
from collections.abc import Iterator
from typing import Any

import click
import psycopg
from confluent_kafka import Consumer, Producer, TopicPartition

from processors.generate_cli import produce_traffic
from processors.demo_scenarios import WebhookReceiver, experiment_for, incident_points, incident_spans, profile_for
from processors.generator import DEFAULT_PROJECTS, TrafficModel
from processors.settings import Settings
from processors.topics import DEADLETTER, EXPERIMENTS, METRICS, SPANS, USERS
from schemas.codec import decode, encode
from sinks.trace_query import fetch_trace
from sinks.waterfall import render_waterfall


def _ending_now(traces: list[list[dict[str, Any]]]) -> list[list[dict[str, Any]]]:
    """Shift generated traffic so its newest span ends now.

    The model's clock follows daily traffic patterns, so a few thousand
    traces can span many minutes; sent at once, most would lie in the future,
    which the metrics worker refuses (more than 5 minutes ahead).
    """
    newest = max(span["end_time"] for trace in traces for span in trace)
    shift = datetime.now(UTC) - newest
    for trace in traces:
        for span in trace:
            span["start_time"] += shift
            span["end_time"] += shift
            if span.get("first_token_time"):
                span["first_token_time"] += shift
    return traces


class PregeneratedModel:
    """Serves traces generated up front (so profiles can be published first)."""

    def __init__(self, model: TrafficModel, traces: list[list[dict[str, Any]]]) -> None:
        self._model = model
        self._traces = iter(traces)

    def trace(self) -> list[dict[str, Any]]:
        return next(self._traces)

    def traces(self, n: int) -> Iterator[list[dict[str, Any]]]:
        for _ in range(n):
            yield self.trace()

    def __getattr__(self, name: str) -> Any:
        return getattr(self._model, name)


class RecordingModel:
    """A :class:`TrafficModel` that remembers the trace ids it handed out.

    >>> model = RecordingModel(TrafficModel(seed=1))
    >>> _ = model.trace()
    >>> len(model.trace_ids)
    1
    """

    def __init__(self, model: TrafficModel) -> None:
        self._model = model
        self.trace_ids: list[str] = []

    def trace(self) -> list[dict[str, Any]]:
        spans = self._model.trace()
        self.trace_ids.append(spans[0]["trace_id"])
        return spans

    def traces(self, n: int) -> Iterator[list[dict[str, Any]]]:
        for _ in range(n):
            yield self.trace()

    def __getattr__(self, name: str) -> Any:
        return getattr(self._model, name)


def _dead_letter_reader(settings: Settings) -> Consumer:
    consumer = Consumer({
        "bootstrap.servers": settings.kafka_bootstrap_servers,
        "group.id": f"llmpulse-demo-{uuid.uuid4().hex}",
        "enable.auto.commit": False,
    })
    topic = DEADLETTER.name
    ends = []
    for p in consumer.list_topics(topic, timeout=15).topics[topic].partitions:
        _low, high = consumer.get_watermark_offsets(TopicPartition(topic, p), timeout=15)
        ends.append(TopicPartition(topic, p, high))
    consumer.assign(ends)  # only what this run dead-letters
    return consumer


def _stored(conn: psycopg.Connection, trace_ids: list[str]) -> int:
    return conn.execute("SELECT count(*) FROM spans WHERE trace_id = ANY(%s)", (trace_ids,)).fetchone()[0]


def _wait_stored(conn, trace_ids, expected: int, timeout_s: float, workers: subprocess.Popen) -> int:
    deadline = time.monotonic() + timeout_s
    stored = 0
    with click.progressbar(length=expected, label="stored in PostgreSQL ") as bar:
        while stored < expected and time.monotonic() < deadline:
            if workers.poll() is not None:
                raise click.ClickException("the workers stopped; see their log above")
            now = _stored(conn, trace_ids)
            bar.update(now - stored)
            stored = now
            time.sleep(0.5)
    return stored


def _dead_letters(consumer: Consumer, expected: int, timeout_s: float) -> list[dict]:
    found: list[dict] = []
    deadline = time.monotonic() + timeout_s
    while len(found) < expected and time.monotonic() < deadline:
        msg = consumer.poll(0.5)
        if msg is not None and not msg.error():
            found.append(decode(msg.value(), expected="dead_letter"))
    return found


def _summary(conn, trace_ids: list[str]) -> None:
    by_model = conn.execute(
        """SELECT coalesce(request_model, '(none)'), count(*), sum(input_tokens), sum(output_tokens),
                  sum(cost_usd), count(*) FILTER (WHERE cost_usd IS NULL)
           FROM spans WHERE trace_id = ANY(%s) AND kind IN ('llm', 'embedding')
           GROUP BY 1 ORDER BY 5 DESC NULLS LAST""",
        (trace_ids,),
    ).fetchall()
    click.echo("\ncost by model:")
    click.echo(f"  {'model':<28} {'calls':>6} {'tokens in':>11} {'tokens out':>10} {'cost USD':>11}")
    for model, calls, tin, tout, cost, unpriced in by_model:
        note = f"  ({unpriced} without cost: no usage or unknown model)" if unpriced else ""
        click.echo(f"  {model:<28} {calls:>6} {tin or 0:>11,} {tout or 0:>10,} {float(cost or 0):>11.4f}{note}")
    total, errors = conn.execute(
        "SELECT sum(cost_usd), count(*) FILTER (WHERE status = 'error') FROM traces WHERE trace_id = ANY(%s)",
        (trace_ids,),
    ).fetchone()
    click.echo(f"  total ${float(total or 0):.4f}; traces with errors: {errors}")


@click.command()
@click.option("--traces", default=1500, show_default=True, help="Agent traces to publish.")
@click.option("--malformed", default=8, show_default=True, help="Malformed messages to mix in.")
@click.option("--seed", default=None, type=int, help="Traffic seed (default: random).")
@click.option("--timeout", default=300.0, show_default=True, help="Seconds to wait for the pipeline.")
def demo(traces: int, malformed: int, seed: int | None, timeout: float) -> None:
    """Run the whole pipeline on live services with synthetic traffic."""
    settings = Settings()
    seed = seed if seed is not None else int(time.time())
    env = os.environ.copy()
    llmpulse = [sys.executable, "-m", "processors.cli"]
    subprocess.run([*llmpulse, "topics", "create"], check=True, env=env, stdout=subprocess.DEVNULL)
    subprocess.run([*llmpulse, "db", "migrate"], check=True, env=env)
    dead_reader = _dead_letter_reader(settings)
    hook = WebhookReceiver()
    producer = Producer({"bootstrap.servers": settings.kafka_bootstrap_servers, "enable.idempotence": True})
    # Running definitions before the workers start: ingest reads them whole at start-up.
    # The support prompt's "concise" arm answers shorter: a real effect on latency.
    experiments = [experiment_for(p, primary_metric="latency_p95_ms") for p in DEFAULT_PROJECTS]
    for exp in experiments:
        producer.produce(EXPERIMENTS.name, key=exp.key.encode(), value=encode("experiment", exp.to_record()))
    traffic = TrafficModel(seed=seed)
    generated = _ending_now(list(traffic.traces(traces)))
    users = {t[0]["user_id"]: t[0]["project"] for t in generated if t[0].get("user_id")}
    for user_id, project in users.items():
        producer.produce(USERS.name, key=user_id.encode(), value=encode("user_profile", profile_for(user_id, project)))
    producer.flush(60)
    click.echo(f"published {len(experiments)} running experiments and {len(users):,} user profiles")

    # Worker logs at WARNING: dead letters still show, the faust start-up banner does not.
    workers = subprocess.Popen(
        [*llmpulse, "run", "all"], env={
            **env, "LLMPULSE_METRICS_PORT": "0", "LLMPULSE_LOG_LEVEL": "WARNING",
            "LLMPULSE_SLACK_WEBHOOK_URL": hook.url, "LLMPULSE_RESULTS_INTERVAL_S": "5",
            "LLMPULSE_POINTS_SETTLE_S": "10", "LLMPULSE_STATE_DIR": tempfile.mkdtemp(prefix="llmpulse-demo-"),
        }
    )
    try:
        model = RecordingModel(PregeneratedModel(traffic, generated))
        with click.progressbar(length=traces, label="publishing traces   ") as bar:
            stats = produce_traffic(
                {"bootstrap.servers": settings.kafka_bootstrap_servers}, model,
                traces=traces, fmt="mixed", malformed=malformed, on_progress=bar.update,
            )
        with psycopg.connect(settings.database_url.get_secret_value(), autocommit=True) as conn:
            stored = _wait_stored(conn, model.trace_ids, stats.spans, timeout, workers)
            dead = _dead_letters(dead_reader, stats.malformed, timeout_s=60)
            stored_traces = conn.execute(
                "SELECT count(*) FROM traces WHERE trace_id = ANY(%s)", (model.trace_ids,)
            ).fetchone()[0]
            click.echo(f"\nseed {seed}")
            click.echo(f"spans published:   {stats.spans:,} in {stats.traces:,} traces (Avro and JSON, "
                       f"{len(stats.by_project)} projects)")
            click.echo(f"feedback published: {stats.feedback:,}")
            click.echo(f"spans stored:      {stored:,}")
            click.echo(f"traces stored:     {stored_traces:,}")
            click.echo(f"malformed sent:    {stats.malformed}; dead letters: {len(dead)}")
            for record in dead[:4]:
                click.echo(f"  {record['error_type']}: {record['error'][:90]}")
            _summary(conn, model.trace_ids)
            showcase = conn.execute(
                "SELECT trace_id FROM traces WHERE trace_id = ANY(%s) "
                "ORDER BY (status = 'error') DESC, span_count DESC LIMIT 1",
                (model.trace_ids,),
            ).fetchone()
            if showcase:
                click.echo("\n" + render_waterfall(fetch_trace(conn, showcase[0]), width=120))
                click.echo(f"\n(read any trace with: llmpulse trace show {showcase[0]})")
            _wait_metrics(conn, min(s["end_time"] for t in generated for s in t), workers)
            _cohorts(conn, llmpulse, env)
            _experiment(conn, llmpulse, env, experiments[0].key, workers)
            _incident(conn, producer, hook, seed, workers)
    finally:
        workers.send_signal(signal.SIGTERM)
        workers.wait(timeout=60)
        dead_reader.close()
        hook.close()
    if stored != stats.spans or len(dead) != stats.malformed:
        raise click.ClickException("the pipeline did not account for every message; see the worker logs above")


def _wait(what: str, condition, timeout_s: float, workers: subprocess.Popen) -> bool:  # noqa: ANN001
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if workers.poll() is not None:
            raise click.ClickException("the workers stopped; see their log above")
        if condition():
            return True
        time.sleep(1)
    click.echo(f"(gave up waiting for {what} after {timeout_s:.0f} s)")
    return False


def _wait_metrics(conn: psycopg.Connection, since: datetime, workers: subprocess.Popen) -> None:
    """Wait until the metrics worker and store have caught up (the span count stops moving)."""
    history: list[int] = []

    def settled() -> bool:
        n = conn.execute("SELECT coalesce(sum(request_count), 0) FROM metric_windows"
                         " WHERE resolution = '1m' AND window_start >= %s", (since,)).fetchone()[0]
        history.append(int(n))
        return len(history) >= 4 and history[-1] > 0 and len(set(history[-4:])) == 1

    click.echo("waiting for the metrics to catch up ...")
    _wait("the metrics", settled, 180, workers)


def _cohorts(conn: psycopg.Connection, llmpulse: list[str], env: dict) -> None:
    rows = conn.execute(
        """SELECT cohort, sum(request_count), sum(error_count), sum(cost_usd)
           FROM metric_windows WHERE resolution = '1m' AND window_start > now() - interval '10 minutes'
           GROUP BY 1 ORDER BY 2 DESC""").fetchall()
    click.echo("\nspans by cohort (plan, from the users' profiles), last 10 minutes:")
    for cohort, n, errors, cost in rows:
        click.echo(f"  {cohort:<12} {n:>8,} spans  {errors / n:6.1%} errors  ${float(cost):.4f}")
    click.echo("\n$ llmpulse cohorts compare --metric success_rate --by plan --since 10m --reference free")
    subprocess.run([*llmpulse, "cohorts", "compare", "--metric", "success_rate", "--by", "plan", "--since", "10m",
                    "--reference", "free"], env=env, check=False)


def _experiment(conn: psycopg.Connection, llmpulse: list[str], env: dict, key: str,
                workers: subprocess.Popen) -> None:
    click.echo(f"\nexperiment {key}: the 'concise' prompt writes ~30% shorter answers (a real effect on latency)")
    _wait("experiment results", lambda: conn.execute(
        "SELECT count(*) FROM experiment_results WHERE experiment_key = %s AND decision <> 'keep_running'",
        (key,)).fetchone()[0] > 0, 120, workers)
    click.echo(f"$ llmpulse experiments results {key}")
    subprocess.run([*llmpulse, "experiments", "results", key], env=env, check=False)


def _incident(conn: psycopg.Connection, producer: Producer, hook: WebhookReceiver, seed: int,
              workers: subprocess.Popen) -> None:
    project = f"demo-incident-{seed}"
    start = datetime.now(UTC).replace(second=0, microsecond=0) - timedelta(minutes=3)
    click.echo(f"\nincident: from {start:%H:%M} UTC gpt-4o fails 40% of requests in project {project}")
    click.echo("  (the detectors learn a series' normal day first; the demo sends 26 hours of per-minute "
               "error_rate history for this project as llm.metrics points, then the incident's points; "
               "the spans behind the incident go through the real pipeline for the root cause)")
    # The day of history goes first: the detector ignores a point not newer
    # than the series' last, and the metric-points job may publish this
    # project's real minutes (from the spans below) at any moment.
    baseline = start - timedelta(minutes=5)
    points = incident_points(project, start, 3, seed=seed)
    for point in (p for p in points if p["window_start"] < baseline):
        producer.produce(METRICS.name, key=point["series"].encode(), value=encode("metric_point", point))
    producer.flush(60)
    for span in incident_spans(project, start, 3, baseline_minutes=5, seed=seed):
        producer.produce(SPANS.name, key=span["trace_id"].encode(), value=encode("span", span))
    producer.flush(60)
    time.sleep(8)  # let the incident's windows reach the database before its points do
    for point in (p for p in points if p["window_start"] >= baseline):
        producer.produce(METRICS.name, key=point["series"].encode(), value=encode("metric_point", point))
    producer.flush(60)

    def posted() -> list[dict]:
        return [p for p in hook.posts if project in json.dumps(p)]

    if not _wait("the Slack message", lambda: posted(), 180, workers):
        return
    row = conn.execute(
        "SELECT anomaly_id, metric, severity, observed, expected, lower, upper, root_cause, recommendation "
        "FROM anomalies WHERE project = %s ORDER BY started_at DESC LIMIT 1", (project,)).fetchone()
    if row:
        anomaly_id, metric, severity, observed, expected, lower, upper, cause, advice = row
        click.echo(f"anomaly {anomaly_id}\n  {severity}: {metric} {observed:.1%} (expected {expected:.1%}, "
                   f"band {lower:.1%}-{upper:.1%})\n  root cause: {cause}\n  recommendation: {advice}")
    message = posted()[0]
    click.echo("\nSlack message posted to the local webhook (" + hook.url + "):")
    click.echo("  " + message.get("text", ""))
    for block in message.get("blocks", []):
        text = block.get("text", {}).get("text") if isinstance(block.get("text"), dict) else None
        fields = [f["text"].replace("\n", ": ") for f in block.get("fields", [])]
        for line in ([text] if text else []) + fields:
            click.echo("  | " + line.replace("\n", "\n  | "))
