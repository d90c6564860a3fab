"""``llmpulse cohorts``: compare user cohorts from the windowed metrics.

``compare`` prints each cohort's value with a confidence interval and the
difference to a reference cohort with its interval, p-value, Holm-adjusted
p-value and decision, naming the test used. Register with the main CLI via
``main.add_command(cohorts)``. What the numbers mean:
``docs/cohort-analysis.md``.
"""
from __future__ import annotations

import json
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import asdict

import click
import psycopg

from processors.cohort_compare import METRICS, CohortSums, compare_cohorts, fetch_sums, parse_since
from processors.cohort_stats import Comparison, render
from processors.cohorts import COHORTS_FILE_ENV, CohortConfig, CohortConfigError
from sinks.db_cli import database_url_option
from sinks.dburl import mask_password, redact

__all__ = ["cohorts"]


@click.group("cohorts")
def cohorts() -> None:
    """Compare user cohorts (plans, regions...) with confidence intervals and tests."""


class _Since(click.ParamType):
    name = "duration"

    def convert(self, value, param, ctx):  # type: ignore[no-untyped-def]
        try:
            return parse_since(value)
        except ValueError as e:
            self.fail(str(e), param, ctx)


@cohorts.command("compare")
@click.option("--metric", required=True, type=click.Choice(list(METRICS)),
              help="success_rate (requests without an error), cost (USD per span with a cost) or rating.")
@click.option("--by", "by", default=None,
              help="Cohort dimension; must be the primary cohort of the cohorts file (default: it).")
@click.option("--since", type=_Since(), default="7d", show_default=True,
              help="Look-back: 90m, 24h, 7d, 2w.")
@click.option("--project", default=None, help="Only this project (default: all).")
@click.option("--reference", default=None, help="Cohort to compare with (default: the largest).")
@click.option("--alpha", type=click.FloatRange(0, 1, min_open=True, max_open=True), default=0.05,
              show_default=True, help="Significance level; intervals are at 1 - alpha.")
@click.option("--kind", default="llm", show_default=True,
              help="Span kind whose requests count for success_rate (cost and rating use every kind).")
@click.option("--format", "fmt", type=click.Choice(["text", "json"]), default="text", show_default=True)
@click.option("--cohorts-file", envvar=COHORTS_FILE_ENV, show_envvar=True, default=None,
              type=click.Path(dir_okay=False),
              help="Cohort config whose primary cohort the metrics hold (default: the shipped one).")
@database_url_option
def compare_command(metric: str, by: str | None, since, project: str | None, reference: str | None,
                    alpha: float, kind: str, fmt: str, cohorts_file: str | None, database_url: str) -> None:
    """Compare METRIC across the cohorts of --by over the last --since.

    Each cohort is compared with the reference cohort: Welch's t-test for
    cost and rating, a two-proportion z-test (Fisher's exact test for tiny
    counts) for success_rate, Holm-adjusted across cohorts.
    """
    by = _check_by(by, cohorts_file)
    with _connect(database_url) as conn:
        sums = fetch_sums(conn, metric, since, project=project, kind=kind)
    try:
        cmp = compare_cohorts(sums, metric, reference=reference, alpha=alpha)
    except ValueError as e:
        raise click.ClickException(str(e)) from e
    if fmt == "json":
        click.echo(json.dumps(_as_json(cmp, sums, metric, by, since, project, kind), indent=2))
        return
    spec = METRICS[metric]
    scope = f"project {project}" if project else "all projects"
    click.echo(f"{spec.label} by {by}, last {_since_text(since)}, {scope}"
               + (f", {kind} spans" if spec.kind == "rate" else ""))
    if not sums:
        click.echo(f"no {spec.counts} in this range.")
        return
    click.echo(render(cmp, spec.label, spec.unit))
    for s in sums:
        if s.skipped:
            click.echo(f"note: {s.cohort}: {s.skipped} {spec.counts} left out, written before the "
                       "sums of squares existed (migration 0003)", err=True)


def _check_by(by: str | None, cohorts_file: str | None) -> str:
    """The primary cohort name; metric_windows aggregates no other dimension."""
    try:
        config = CohortConfig.load(cohorts_file)
    except CohortConfigError as e:
        raise click.ClickException(str(e)) from e
    if by is None or by == config.primary:
        return config.primary
    others = [n for n in config.names if n != config.primary]
    raise click.UsageError(
        f"--by {by!r}: the metrics hold one cohort dimension, the primary cohort "
        f"{config.primary!r} of {config.source}"
        + (f"; {by!r} is configured but not aggregated" if by in others else f"; {by!r} is not configured")
        + f". To compare by {by!r}, set \"primary\": \"{by}\" in the cohorts file "
        f"({COHORTS_FILE_ENV}) and restart the processors; only windows written after that "
        "hold the new dimension (see docs/cohorts.md)."
    )


@contextmanager
def _connect(database_url: str) -> Iterator[psycopg.Connection]:
    """A read-only connection; driver errors become messages without the password."""
    where = mask_password(database_url)
    try:
        conn = psycopg.connect(database_url, connect_timeout=10, autocommit=True,
                               application_name="llmpulse-cohorts")
    except psycopg.Error as e:
        raise click.ClickException(
            f"cannot connect to the database at {where}: {redact(str(e).strip(), database_url)}"
        ) from e
    try:
        with conn:
            conn.execute("SET default_transaction_read_only = on")
            yield conn
    except (psycopg.errors.UndefinedTable, psycopg.errors.UndefinedColumn,
            psycopg.errors.UndefinedFunction) as e:
        raise click.ClickException(
            f"the database at {where} lacks llmpulse_cohort_sums or the metrics schema: "
            "run `llmpulse db migrate`"
        ) from e
    except psycopg.Error as e:
        raise click.ClickException(f"query failed on {where}: {redact(str(e).strip(), database_url)}") from e


def _since_text(since) -> str:  # type: ignore[no-untyped-def]
    minutes = int(since.total_seconds() // 60)
    for unit, size in (("w", 10080), ("d", 1440), ("h", 60)):
        if minutes % size == 0:
            return f"{minutes // size}{unit}"
    return f"{minutes}m"


def _as_json(cmp: Comparison, sums: list[CohortSums], metric: str, by: str, since, project: str | None,
             kind: str) -> dict:
    """The comparison as JSON: the parameters, the test, and one object per cohort."""
    skipped = {s.cohort: s.skipped for s in sums}
    return {
        "metric": metric,
        "by": by,
        "since": _since_text(since),
        "project": project,
        "kind": kind if METRICS[metric].kind == "rate" else None,
        "test": cmp.test,
        "interval": cmp.interval,
        "alpha": cmp.alpha,
        "reference": cmp.reference,
        "cohorts": [{**asdict(r), "skipped": skipped.get(r.name, 0)} for r in cmp.rows],
    }
