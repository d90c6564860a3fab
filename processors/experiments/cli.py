"""``llmpulse experiments``: create, list, show, start and stop experiments.

Writes go to the compacted ``llm.experiments`` topic (key = experiment key),
the one source of truth every processor reads; reads come from the
``experiments`` and ``exposures`` tables the experiments-store and
exposures-store sinks fill (:mod:`sinks.experiment_store`). So a definition
shows up in ``list`` once that sink has written it, usually within a second.

Lifecycle: ``create`` makes a draft; ``start`` moves draft -> running,
``stop`` running -> stopped. A stopped experiment never restarts: its
exposures and results would mix two periods; create a new key instead.
Each transition publishes a new version with a newer ``updated_at``.
"""
from __future__ import annotations

import json
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, replace
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import click

from processors.experiments.definitions import (
    KNOWN_METRICS,
    Experiment,
    ExperimentError,
    Namespace,
    NamespaceConflict,
    overlapping_namespaces,
)
from processors.experiments.templates import model_swap, prompt_ab, temperature

__all__ = [
    "TEMPLATES",
    "ExperimentTable",
    "StoredExperiment",
    "TransitionError",
    "definition_from_json",
    "experiments",
    "format_list",
    "format_show",
    "from_template",
    "namespace_conflicts",
    "parse_namespace",
    "publish",
    "transition",
]

#: ``--template`` name -> template function.
TEMPLATES: dict[str, Callable[..., Experiment]] = {
    "prompt-ab": prompt_ab,
    "model-swap": model_swap,
    "temperature": temperature,
}

#: Fields a definition file may hold: the ``experiment`` record's.
_FILE_FIELDS = frozenset({
    "key", "hypothesis", "variants", "coverage", "targeting", "namespace", "primary_metric",
    "secondary_metrics", "guardrail_metrics", "min_sample_size", "status", "owner", "seed",
    "hash_version", "created_at", "updated_at",
})
_REQUIRED_FIELDS = ("key", "owner", "hypothesis", "variants", "primary_metric")


# -- building definitions ---------------------------------------------------


def invalid(exc: ExperimentError) -> click.ClickException:
    """One problem per line, so a long list stays readable.

    Examples
    --------
    >>> print(invalid(ExperimentError("t", ["coverage: bad", "owner: empty"])).message)
    experiment 't' is invalid:
      - coverage: bad
      - owner: empty
    """
    return click.ClickException(
        f"experiment {exc.key!r} is invalid:\n" + "\n".join(f"  - {p}" for p in exc.problems)
    )


def parse_namespace(text: str) -> Namespace:
    """``NAME:START-END`` (e.g. ``prompts:0-0.5``) as a :class:`Namespace`.

    Examples
    --------
    >>> parse_namespace("prompts:0.5-1")
    Namespace(name='prompts', range_start=0.5, range_end=1.0)
    >>> parse_namespace("prompts")
    Traceback (most recent call last):
    ...
    ValueError: namespace 'prompts' must look like NAME:START-END, e.g. prompts:0-0.5
    """
    name, _, span = text.rpartition(":")
    start, _, end = span.partition("-")
    try:
        if not name:
            raise ValueError
        return Namespace(name, float(start), float(end))
    except ValueError:
        raise ValueError(f"namespace {text!r} must look like NAME:START-END, e.g. prompts:0-0.5") from None


def parse_numbers(text: str, what: str) -> list[float]:
    """Comma-separated numbers, e.g. ``0.5,0.5``.

    Examples
    --------
    >>> parse_numbers("0.2, 0.7", "temperatures")
    [0.2, 0.7]
    >>> parse_numbers("0.5,half", "weights")
    Traceback (most recent call last):
    ...
    ValueError: weights must be comma-separated numbers, got '0.5,half'
    """
    try:
        return [float(part) for part in text.split(",") if part.strip()]
    except ValueError:
        raise ValueError(f"{what} must be comma-separated numbers, got {text!r}") from None


def from_template(
    template: str,
    key: str,
    owner: str,
    *,
    control: str | None = None,
    treatment: str | None = None,
    temperatures: Sequence[float] | None = None,
    **options: Any,
) -> Experiment:
    """A validated draft from one of :data:`TEMPLATES`.

    Parameters
    ----------
    template
        ``prompt-ab`` (``control``/``treatment`` are prompt versions),
        ``model-swap`` (they are models) or ``temperature`` (``temperatures``).
    **options
        Template options; None values are left to the template's defaults.

    Raises
    ------
    ExperimentError
        The definition is invalid (weights, metrics, coverage...).
    ValueError
        A template argument is missing or wrong.

    Examples
    --------
    >>> from_template("model-swap", "mini", "ml@x", control="gpt-4o", treatment="gpt-4o-mini").status
    'draft'
    >>> from_template("prompt-ab", "t", "ml@x", control="v1")
    Traceback (most recent call last):
    ...
    ValueError: --template prompt-ab needs --control and --treatment (prompt versions)
    """
    if template not in TEMPLATES:
        raise ValueError(f"unknown template {template!r}; known: {', '.join(TEMPLATES)}")
    options = {k: v for k, v in options.items() if v is not None and v != ()}
    if template == "temperature":
        if control or treatment:
            raise ValueError("--template temperature takes --temperatures, not --control/--treatment")
        if temperatures:
            options["values"] = list(temperatures)
        return temperature(key, owner, **options)
    if not control or not treatment:
        what = "prompt versions" if template == "prompt-ab" else "models"
        raise ValueError(f"--template {template} needs --control and --treatment ({what})")
    if temperatures:
        raise ValueError(f"--temperatures only applies to --template temperature, not {template}")
    return TEMPLATES[template](key, owner, control, treatment, **options)


def definition_from_json(data: Any, now: datetime) -> Experiment:
    """A validated draft from a definition file's JSON (the ``experiment`` record's fields).

    ``status`` may be omitted or ``"draft"``; ``created_at``/``updated_at``
    are set to ``now``; ``seed`` defaults to the key. Unknown fields are an
    error, so a typo never silently falls back to a default.

    Raises
    ------
    ExperimentError
        Listing every problem found.

    Examples
    --------
    >>> now = datetime(2025, 6, 1, tzinfo=timezone.utc)
    >>> doc = {"key": "k", "owner": "o@x", "hypothesis": "h", "primary_metric": "rating",
    ...        "variants": [{"name": "a", "weight": 0.5}, {"name": "b", "weight": 0.6}]}
    >>> definition_from_json(doc, now)
    Traceback (most recent call last):
    ...
    processors.experiments.definitions.ExperimentError: experiment 'k' is invalid: variants: weights sum to 1.1, not 1 (tolerance 1e-06)
    """
    if not isinstance(data, dict):
        raise ExperimentError("?", [f"the definition must be a JSON object, got {type(data).__name__}"])
    key = data.get("key") if isinstance(data.get("key"), str) else "?"
    problems = [f"{name}: unknown field; known: {', '.join(sorted(_FILE_FIELDS))}"
                for name in sorted(set(data) - _FILE_FIELDS)]
    problems += [f"{name}: required" for name in _REQUIRED_FIELDS if name not in data]
    if data.get("status", "draft") != "draft":
        problems.append(f"status: create makes drafts, got {data['status']!r}; "
                        "start it afterwards with `llmpulse experiments start KEY`")
    problems += _shape_problems(data)
    if problems:
        raise ExperimentError(key, problems)
    record = {
        "coverage": 1.0, "min_sample_size": 1000, "seed": key, "hash_version": 2,
        **data, "status": "draft", "created_at": now, "updated_at": now,
    }
    try:
        experiment = Experiment.from_record(record)
    except (KeyError, TypeError, ValueError) as exc:
        raise ExperimentError(key, [f"cannot read the definition: {exc!r}"]) from exc
    return experiment.validate()


def _shape_problems(data: Mapping[str, Any]) -> list[str]:
    """Structure checks that must pass before the record can be built at all."""
    out = []
    variants = data.get("variants", [])
    if not isinstance(variants, list):
        out.append("variants: must be a list of {name, weight, payload} objects")
    else:
        for i, v in enumerate(variants):
            if not isinstance(v, dict) or "name" not in v or "weight" not in v:
                out.append(f"variants[{i}]: must be an object with name and weight (payload optional)")
            elif not isinstance(v.get("payload", {}), dict):
                out.append(f"variants[{i}]: payload must be an object of strings")
    ns = data.get("namespace")
    if ns is not None and (not isinstance(ns, dict) or not {"name", "range_start", "range_end"} <= set(ns)):
        out.append("namespace: must be null or an object with name, range_start and range_end")
    for name in ("secondary_metrics", "guardrail_metrics"):
        if not isinstance(data.get(name, []), list):
            out.append(f"{name}: must be a list of metric names")
    return out


# -- lifecycle ----------------------------------------------------------------


class TransitionError(ValueError):
    """A status change the lifecycle does not allow."""


_ALLOWED = {("draft", "running"), ("running", "stopped")}


def next_version_time(experiment: Experiment, now: datetime) -> datetime:
    """``now``, or just after the current version if its clock was ahead.

    The store keeps the newest ``updated_at``, so a new version must be newer.

    Examples
    --------
    >>> from processors.experiments.templates import prompt_ab
    >>> t = datetime(2025, 6, 1, tzinfo=timezone.utc)
    >>> next_version_time(prompt_ab("t", "o@x", "a", "b", now=t), t - timedelta(hours=1))
    datetime.datetime(2025, 6, 1, 0, 0, 0, 1, tzinfo=datetime.timezone.utc)
    """
    return max(now, experiment.updated_at + timedelta(microseconds=1))


def transition(experiment: Experiment, to: str, now: datetime) -> Experiment:
    """The next version of ``experiment`` with status ``to``.

    Only draft -> running and running -> stopped are allowed.

    Raises
    ------
    TransitionError
        With the reason and what to do instead.

    Examples
    --------
    >>> from processors.experiments.templates import prompt_ab
    >>> t = datetime(2025, 6, 1, tzinfo=timezone.utc)
    >>> draft = prompt_ab("tone", "o@x", "v1", "v2", now=t)
    >>> transition(draft, "running", t + timedelta(days=1)).status
    'running'
    >>> transition(draft, "stopped", t)
    Traceback (most recent call last):
    ...
    processors.experiments.cli.TransitionError: 'tone' is a draft and never ran: nothing to stop (start it first)
    """
    current = experiment.status
    key = experiment.key
    if (current, to) not in _ALLOWED:
        if current == to:
            raise TransitionError(f"{key!r} is already {current}")
        if current == "stopped":
            raise TransitionError(
                f"{key!r} is stopped and cannot restart: its exposures and results would mix "
                "two periods; create a new experiment with a new key instead "
                f"(`llmpulse experiments show {key} --json` gives a definition file to start from)"
            )
        if current == "draft" and to == "stopped":
            raise TransitionError(f"{key!r} is a draft and never ran: nothing to stop (start it first)")
        raise TransitionError(f"{key!r} cannot go from {current} to {to}")
    return replace(experiment, status=to, updated_at=next_version_time(experiment, now))


def namespace_conflicts(candidate: Experiment, others: Iterable[Experiment]) -> list[NamespaceConflict]:
    """Running experiments whose namespace slice overlaps ``candidate``'s (as if it ran).

    Examples
    --------
    >>> from processors.experiments.templates import prompt_ab
    >>> a = prompt_ab("a", "o@x", "v1", "v2", namespace=Namespace("p", 0, 0.6))
    >>> b = prompt_ab("b", "o@x", "v1", "v2", namespace=Namespace("p", 0.5, 1), status="running")
    >>> [str(c) for c in namespace_conflicts(a, [b])]
    ["'a' and 'b' overlap in namespace 'p' on [0.5, 0.6)"]
    """
    running = replace(candidate, status="running")
    others = [o for o in others if o.key != candidate.key]
    return [c for c in overlapping_namespaces([running, *others]) if candidate.key in (c.first, c.second)]


# -- database reads -------------------------------------------------------------


@dataclass(frozen=True)
class StoredExperiment:
    """A definition as the ``experiments`` table holds it, with its lifecycle times."""

    experiment: Experiment
    started_at: datetime | None
    stopped_at: datetime | None


@dataclass(frozen=True)
class VariantExposures:
    """Exposures of one variant: distinct users, exposure events (upper bound), time span."""

    variant: str
    users: int
    exposures: int
    first: datetime | None
    last: datetime | None
    inconsistent_users: int


_SELECT = (
    "SELECT key, hypothesis, variants, coverage, targeting, namespace_name, namespace_start, "
    "namespace_end, primary_metric, secondary_metrics, guardrail_metrics, min_sample_size, status, "
    "owner, seed, hash_version, created_at, updated_at, started_at, stopped_at FROM experiments"
)


def _stored(row: Mapping[str, Any]) -> StoredExperiment:
    record = dict(row)
    name, start, end = (record.pop(k) for k in ("namespace_name", "namespace_start", "namespace_end"))
    record["namespace"] = None if name is None else {"name": name, "range_start": start, "range_end": end}
    started, stopped = record.pop("started_at"), record.pop("stopped_at")
    return StoredExperiment(Experiment.from_record(record), started, stopped)


class ExperimentTable:
    """Reads of the ``experiments`` and ``exposures`` tables.

    Parameters
    ----------
    conninfo
        URL of a migrated database.

    Examples
    --------
    >>> table = ExperimentTable("postgresql://llmpulse@127.0.0.1:15432/llmpulse")
    >>> table.get("prompt-tone")  # doctest: +SKIP
    StoredExperiment(experiment=Experiment(key='prompt-tone', ...), started_at=..., stopped_at=None)
    """

    def __init__(self, conninfo: str) -> None:
        self.conninfo = conninfo

    def _query(self, sql: str, params: Sequence[Any] = ()) -> list[dict[str, Any]]:
        import psycopg
        from psycopg.rows import dict_row

        from sinks.dburl import mask_password
        from sinks.errors import explain

        try:
            with psycopg.connect(self.conninfo, connect_timeout=10, row_factory=dict_row) as conn:
                return conn.execute(sql, params).fetchall()
        except psycopg.OperationalError as exc:
            raise click.ClickException(
                f"cannot reach the database at {mask_password(self.conninfo)}: {str(exc).strip()}"
            ) from exc
        except psycopg.Error as exc:
            raise click.ClickException(f"reading experiments failed: {explain(exc)}") from exc

    def get(self, key: str) -> StoredExperiment | None:
        """The stored definition of ``key``, or None."""
        rows = self._query(_SELECT + " WHERE key = %s", (key,))
        return _stored(rows[0]) if rows else None

    def all(self, status: str | None = None) -> list[StoredExperiment]:
        """Every stored definition (of one status), newest first."""
        where, params = (" WHERE status = %s", (status,)) if status else ("", ())
        return [_stored(r) for r in self._query(_SELECT + where + " ORDER BY updated_at DESC, key", params)]

    def exposures(self, key: str) -> list[VariantExposures]:
        """Exposures per variant of experiment ``key``."""
        rows = self._query(
            "SELECT variant, count(*) AS users, sum(exposure_count)::bigint AS exposures, "
            "min(first_exposed_at) AS first, max(last_exposed_at) AS last, "
            "count(*) FILTER (WHERE cardinality(variants_seen) > 1) AS inconsistent_users "
            "FROM exposures WHERE experiment_key = %s GROUP BY variant ORDER BY variant",
            (key,),
        )
        return [VariantExposures(**r) for r in rows]


def _require(table: ExperimentTable, key: str) -> StoredExperiment:
    stored = table.get(key)
    if stored is None:
        raise click.ClickException(
            f"no experiment {key!r} in the experiments table; if you just created it, the "
            "experiments-store sink may not have written it yet (is `llmpulse run experiments-store` running?)"
        )
    return stored


# -- Kafka --------------------------------------------------------------------


def publish(bootstrap: str, topic: str, experiment: Experiment, timeout_s: float = 30.0) -> tuple[int, int]:
    """Produce ``experiment`` to ``topic`` keyed by its key; wait for the broker's ack.

    Returns
    -------
    tuple of int
        Partition and offset of the record.

    Raises
    ------
    click.ClickException
        Not delivered within ``timeout_s`` or refused by the broker.
    """
    from confluent_kafka import Producer

    from schemas.codec import encode

    value = encode("experiment", experiment.to_record())
    producer = Producer({
        "bootstrap.servers": bootstrap, "enable.idempotence": True,
        "message.timeout.ms": int(timeout_s * 1000),
    })
    outcome: dict[str, Any] = {}
    producer.produce(topic, key=experiment.key.encode(), value=value,
                     on_delivery=lambda err, msg: outcome.update(err=err, msg=msg))
    producer.flush(timeout_s + 5)
    if "err" not in outcome:
        raise click.ClickException(f"{experiment.key!r} was not delivered within {timeout_s:g}s; "
                                   f"is Kafka at {bootstrap} running?")
    if outcome["err"] is not None:
        raise click.ClickException(f"the broker refused {experiment.key!r} on {topic}: {outcome['err']}")
    return outcome["msg"].partition(), outcome["msg"].offset()


# -- output -------------------------------------------------------------------


def _when(value: datetime | None) -> str:
    return "-" if value is None else value.astimezone(timezone.utc).strftime("%Y-%m-%d %H:%M UTC")


def _variants_summary(experiment: Experiment) -> str:
    return " / ".join(f"{v.name} {v.weight:.0%}" for v in experiment.variants)


def format_list(stored: Sequence[StoredExperiment]) -> str:
    """The ``list`` table: key, status, variants, primary metric, owner, started.

    Examples
    --------
    >>> from processors.experiments.templates import prompt_ab
    >>> row = StoredExperiment(prompt_ab("tone", "ml@x", "v1", "v2"), None, None)
    >>> print(format_list([row]))
    KEY   STATUS  VARIANTS                     PRIMARY METRIC   OWNER  STARTED
    tone  draft   control 50% / treatment 50%  thumbs_up_ratio  ml@x   -
    """
    header = ("KEY", "STATUS", "VARIANTS", "PRIMARY METRIC", "OWNER", "STARTED")
    rows = [header] + [
        (s.experiment.key, s.experiment.status, _variants_summary(s.experiment),
         s.experiment.primary_metric, s.experiment.owner, _when(s.started_at))
        for s in stored
    ]
    widths = [max(len(r[i]) for r in rows) for i in range(len(header))]
    return "\n".join("  ".join(c.ljust(w) for c, w in zip(r, widths)).rstrip() for r in rows)


def format_show(stored: StoredExperiment, exposures: Sequence[VariantExposures]) -> str:
    """The ``show`` text: the whole definition, then exposures per variant.

    Examples
    --------
    >>> from processors.experiments.templates import model_swap
    >>> exp = model_swap("mini", "ml@x", "gpt-4o", "gpt-4o-mini", min_sample_size=100)
    >>> text = format_show(StoredExperiment(exp, None, None),
    ...                    [VariantExposures("control", 120, 300, None, None, 0)])
    >>> print(text.splitlines()[0])
    mini  (draft, owner ml@x)
    >>> print(text.split("exposures:")[1].strip())
    control             120 users       300 exposures  - .. -
      treatment             0 users         0 exposures  - .. -
    below min_sample_size 100: treatment
    """
    e = stored.experiment
    ns = e.namespace
    lines = [
        f"{e.key}  ({e.status}, owner {e.owner})",
        f"hypothesis:        {e.hypothesis}",
        f"created:           {_when(e.created_at)}",
        f"updated:           {_when(e.updated_at)}",
        f"started:           {_when(stored.started_at)}",
        f"stopped:           {_when(stored.stopped_at)}",
        f"coverage:          {e.coverage:g}",
        f"targeting:         {e.targeting or 'everyone'}",
        f"namespace:         {'-' if ns is None else f'{ns.name} [{ns.range_start:g}, {ns.range_end:g})'}",
        f"primary metric:    {e.primary_metric}",
        f"secondary metrics: {', '.join(e.secondary_metrics) or '-'}",
        f"guardrail metrics: {', '.join(e.guardrail_metrics) or '-'}",
        f"min sample size:   {e.min_sample_size} users per variant",
        f"seed:              {e.seed or e.key} (hash v{e.hash_version})",
        "variants:",
    ]
    for i, v in enumerate(e.variants):
        payload = ", ".join(f"{k}={x}" for k, x in sorted(v.payload.items())) or "-"
        lines.append(f"  {v.name:<16} weight {v.weight:g}  {payload}{'  (control)' if i == 0 else ''}")
    lines.append("exposures:")
    by_variant = {x.variant: x for x in exposures}
    names = [v.name for v in e.variants] + sorted(set(by_variant) - {v.name for v in e.variants})
    short = []
    for name in names:
        x = by_variant.get(name) or VariantExposures(name, 0, 0, None, None, 0)
        unknown = "" if name in {v.name for v in e.variants} else "  (not a variant of this definition)"
        lines.append(f"  {name:<16} {x.users:>6} users  {x.exposures:>8} exposures  "
                     f"{_when(x.first)} .. {_when(x.last)}{unknown}")
        if x.inconsistent_users:
            lines.append(f"  {'':<16} ! {x.inconsistent_users} of them also saw another variant")
        if name in {v.name for v in e.variants} and x.users < e.min_sample_size:
            short.append(name)
    if short:
        lines.append(f"below min_sample_size {e.min_sample_size}: {', '.join(short)}")
    return "\n".join(lines)


# -- commands -------------------------------------------------------------------


def _settings():
    from processors.settings import Settings

    try:
        return Settings()
    except Exception as exc:
        raise click.ClickException(f"invalid configuration:\n{exc}") from exc


def _connections(func: Callable[..., Any]) -> Callable[..., Any]:
    """Add --bootstrap, --database-url and --topic, defaulting to the settings."""
    func = click.option("--topic", default=None, hidden=True,
                        help="Definitions topic (default llm.experiments); for tests and staging.")(func)
    func = click.option("--database-url", default=None,
                        help="PostgreSQL URL (default: DATABASE_URL / settings).")(func)
    return click.option("--bootstrap", default=None,
                        help="Kafka brokers (default: KAFKA_BOOTSTRAP_SERVERS / settings).")(func)


@dataclass(frozen=True)
class _Targets:
    bootstrap: str
    database_url: str
    topic: str

    @classmethod
    def resolve(cls, bootstrap: str | None, database_url: str | None, topic: str | None) -> _Targets:
        from processors.topics import EXPERIMENTS

        if bootstrap is None or database_url is None:
            settings = _settings()
            bootstrap = bootstrap or settings.kafka_bootstrap_servers
            database_url = database_url or settings.database_url.get_secret_value()
        return cls(bootstrap, database_url, topic or EXPERIMENTS.name)


def _now() -> datetime:
    return datetime.now(timezone.utc)


@click.group("experiments")
def experiments() -> None:
    """A/B experiments: create drafts, start, stop, inspect.

    Definitions are published to the compacted llm.experiments topic; list,
    show, start and stop read the experiments table the experiments-store
    sink fills.
    """


@experiments.command("create")
@click.option("--template", type=click.Choice(list(TEMPLATES)), help="Start from a ready-made experiment.")
@click.option("--file", "file_", type=click.Path(dir_okay=False, path_type=Path),
              help="Definition as JSON (the experiment record's fields); '-' reads stdin.")
@click.option("--key", help="Experiment key (template).")
@click.option("--owner", help="Person or team responsible (template).")
@click.option("--control", help="Control prompt version (prompt-ab) or model (model-swap).")
@click.option("--treatment", help="Treatment prompt version (prompt-ab) or model (model-swap).")
@click.option("--temperatures", help="Temperatures, control first, e.g. 0.2,0.7 (temperature).")
@click.option("--hypothesis", help="Default: a sentence the template writes.")
@click.option("--primary-metric", type=str, help=f"One of: {', '.join(KNOWN_METRICS)}.")
@click.option("--secondary-metric", "secondary_metrics", multiple=True, help="Repeatable.")
@click.option("--guardrail-metric", "guardrail_metrics", multiple=True,
              help="Repeatable; default latency_p95_ms, cost_per_request, error_rate.")
@click.option("--weights", help="Variant weights, control first, summing to 1, e.g. 0.9,0.1.")
@click.option("--coverage", type=float, help="Fraction of eligible users enrolled, (0, 1].")
@click.option("--targeting", help='Eligibility as JSON, e.g. \'{"plan": {"$in": ["pro"]}}\'.')
@click.option("--namespace", help="Mutual-exclusion slice NAME:START-END, e.g. prompts:0-0.5.")
@click.option("--min-sample-size", type=int, help="Users per variant before results are read.")
@click.option("--seed", help="Assignment hash seed (default: the key).")
@click.option("--replace", "replace_existing", is_flag=True, help="Overwrite an existing draft with the same key.")
@click.option("--dry-run", is_flag=True, help="Validate and print the definition; publish nothing.")
@_connections
def create(template: str | None, file_: Path | None, key: str | None, owner: str | None,
           control: str | None, treatment: str | None, temperatures: str | None, hypothesis: str | None,
           primary_metric: str | None, secondary_metrics: tuple[str, ...], guardrail_metrics: tuple[str, ...],
           weights: str | None, coverage: float | None, targeting: str | None, namespace: str | None,
           min_sample_size: int | None, seed: str | None, replace_existing: bool, dry_run: bool,
           bootstrap: str | None, database_url: str | None, topic: str | None) -> None:
    """Create a draft from --template or --file (validated, published).

    \b
    Examples:
      llmpulse experiments create --template prompt-ab --key tone-v12 \\
          --owner ml@example.com --control support-v11 --treatment support-v12
      llmpulse experiments create --file tone.json
    """
    now = _now()
    try:
        if (template is None) == (file_ is None):
            raise click.UsageError("give exactly one of --template or --file")
        if file_ is not None:
            template_only = {"--key": key, "--owner": owner, "--control": control, "--treatment": treatment,
                             "--temperatures": temperatures, "--hypothesis": hypothesis,
                             "--primary-metric": primary_metric, "--weights": weights,
                             "--coverage": coverage, "--targeting": targeting, "--namespace": namespace,
                             "--min-sample-size": min_sample_size, "--seed": seed,
                             "--secondary-metric": secondary_metrics or None,
                             "--guardrail-metric": guardrail_metrics or None}
            given = [name for name, value in template_only.items() if value is not None]
            if given:
                raise click.UsageError(f"{', '.join(given)} only apply to --template; edit the file instead")
            experiment = definition_from_json(_read_json(file_), now)
        else:
            if not key or not owner:
                raise click.UsageError("--template needs --key and --owner")
            experiment = from_template(
                template, key, owner, control=control, treatment=treatment,
                temperatures=parse_numbers(temperatures, "temperatures") if temperatures else None,
                hypothesis=hypothesis, primary_metric=primary_metric,
                secondary_metrics=secondary_metrics or None, guardrail_metrics=guardrail_metrics or None,
                weights=parse_numbers(weights, "weights") if weights else None, coverage=coverage,
                targeting=targeting, namespace=parse_namespace(namespace) if namespace else None,
                min_sample_size=min_sample_size, seed=seed, now=now,
            )
    except ExperimentError as exc:
        raise invalid(exc) from exc
    except ValueError as exc:
        raise click.ClickException(str(exc)) from exc
    if dry_run:
        click.echo(json.dumps(_json_record(experiment), indent=2))
        click.echo(f"{experiment.key}: valid draft (dry run: not published)")
        return
    targets = _Targets.resolve(bootstrap, database_url, topic)
    existing = ExperimentTable(targets.database_url).get(experiment.key)
    if existing is not None:
        held = existing.experiment
        if not replace_existing:
            raise click.ClickException(
                f"experiment {held.key!r} already exists ({held.status}, owner {held.owner}); "
                "use --replace to overwrite a draft, or pick another key")
        if held.status != "draft":
            raise click.ClickException(
                f"experiment {held.key!r} is {held.status}; only drafts can be replaced "
                "(changing a definition that has enrolled users would corrupt its results): use a new key")
        experiment = replace_draft(held, experiment, now)
    partition, offset = publish(targets.bootstrap, targets.topic, experiment)
    verb = "replaced" if existing is not None else "created"
    click.echo(f"{experiment.key}: {verb} draft ({_variants_summary(experiment)}; primary metric "
               f"{experiment.primary_metric}) -> {targets.topic}[{partition}]@{offset}")
    click.echo(f"start it with: llmpulse experiments start {experiment.key}")


def replace_draft(held: Experiment, new: Experiment, now: datetime) -> Experiment:
    """``new`` as the next version of the draft ``held``: same created_at, newer updated_at.

    Examples
    --------
    >>> from processors.experiments.templates import prompt_ab
    >>> t = datetime(2025, 6, 1, tzinfo=timezone.utc)
    >>> old, new = prompt_ab("k", "o@x", "a", "b", now=t), prompt_ab("k", "o@x", "a", "c", now=t)
    >>> v = replace_draft(old, new, t)
    >>> v.created_at == t < v.updated_at
    True
    """
    return replace(new, created_at=held.created_at, updated_at=next_version_time(held, now))


def _read_json(path: Path) -> Any:
    try:
        text = click.get_text_stream("stdin").read() if str(path) == "-" else path.read_text(encoding="utf-8")
    except OSError as exc:
        raise click.ClickException(f"cannot read {path}: {exc.strerror or exc}") from exc
    try:
        return json.loads(text)
    except json.JSONDecodeError as exc:
        raise click.ClickException(f"{path} is not valid JSON: {exc.msg} at line {exc.lineno}, "
                                   f"column {exc.colno}") from exc


def _json_record(experiment: Experiment) -> dict[str, Any]:
    from schemas.codec import encode_json

    return json.loads(encode_json("experiment", experiment.to_record()))


@experiments.command("list")
@click.option("--status", type=click.Choice(["draft", "running", "stopped"]), help="Only this status.")
@_connections
def list_(status: str | None, bootstrap: str | None, database_url: str | None, topic: str | None) -> None:
    """List experiments with status, variants, owner and start time."""
    targets = _Targets.resolve(bootstrap, database_url, topic)
    stored = ExperimentTable(targets.database_url).all(status)
    if not stored:
        click.echo("no experiments" + (f" with status {status}" if status else "")
                   + " (create one with `llmpulse experiments create`)")
        return
    click.echo(format_list(stored))


@experiments.command("show")
@click.argument("key")
@click.option("--json", "as_json", is_flag=True,
              help="Print the definition as JSON (usable with `create --file` after changing the key).")
@_connections
def show(key: str, as_json: bool, bootstrap: str | None, database_url: str | None, topic: str | None) -> None:
    """Show KEY's full definition and its exposures per variant."""
    targets = _Targets.resolve(bootstrap, database_url, topic)
    table = ExperimentTable(targets.database_url)
    stored = _require(table, key)
    if as_json:
        click.echo(json.dumps(_json_record(stored.experiment), indent=2))
        return
    click.echo(format_show(stored, table.exposures(key)))


def _change_status(key: str, to: str, targets: _Targets) -> None:
    table = ExperimentTable(targets.database_url)
    current = _require(table, key).experiment
    try:
        nxt = transition(current, to, _now())
    except TransitionError as exc:
        raise click.ClickException(str(exc)) from exc
    if to == "running":
        try:
            nxt.validate()
        except ExperimentError as exc:
            raise invalid(exc) from exc
        conflicts = namespace_conflicts(nxt, (s.experiment for s in table.all("running")))
        if conflicts:
            raise click.ClickException(
                f"cannot start {key!r}: its namespace slice overlaps running experiments, which could "
                "then enrol the same users:\n" + "\n".join(f"  - {c}" for c in conflicts)
                + "\nchoose a disjoint range (create --replace on the draft) or stop the other experiment")
    partition, offset = publish(targets.bootstrap, targets.topic, nxt)
    click.echo(f"{key}: {current.status} -> {nxt.status} at {_when(nxt.updated_at)} "
               f"-> {targets.topic}[{partition}]@{offset}")


@experiments.command("start")
@click.argument("key")
@_connections
def start(key: str, bootstrap: str | None, database_url: str | None, topic: str | None) -> None:
    """Start the draft KEY (checks namespace overlaps first)."""
    _change_status(key, "running", _Targets.resolve(bootstrap, database_url, topic))


@experiments.command("stop")
@click.argument("key")
@_connections
def stop(key: str, bootstrap: str | None, database_url: str | None, topic: str | None) -> None:
    """Stop the running KEY for good (it cannot restart)."""
    _change_status(key, "stopped", _Targets.resolve(bootstrap, database_url, topic))
