"""The experiment stores: definitions and exposures into PostgreSQL.

Two sinks, one batch per transaction each:

``experiments-store`` (``llm.experiments``, compacted, key = experiment key)
    Every version goes into ``experiment_versions`` (audit; a redelivered
    version changes nothing). ``experiments`` holds the version with the
    newest ``updated_at`` per key, whatever order versions arrive in;
    ``started_at``/``stopped_at`` are the ``updated_at`` of the first running
    and stopped versions seen. A tombstone (null value) deletes the key's
    ``experiments`` row and keeps its history; see :class:`ExperimentTombstone`
    for what the runner must pass for that.

``exposures-store`` (``llm.exposures``)
    One row per ``(experiment_key, user_id)``: the earliest exposure decides
    ``variant``, ``project`` and ``source``; ``first_exposed_at``,
    ``last_exposed_at`` and ``variants_seen`` are min, max and set union, so
    they are exact under redelivery. ``exposure_count`` adds up and is an
    upper bound: a batch replayed after a crash between the write and the
    offset commit is counted twice. Keeping it exact would mean storing every
    exposure event, and nothing downstream needs more than "at least once".
"""
from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import TYPE_CHECKING, Any

import psycopg

from sinks.errors import explain

if TYPE_CHECKING:
    from confluent_kafka import Message

    from processors.settings import Settings
    from sinks.runner import BatchSink

__all__ = [
    "ExperimentStore",
    "ExperimentStoreError",
    "ExperimentTombstone",
    "ExperimentWriteResult",
    "ExposureStore",
    "ExposureWriteResult",
    "decode_experiment_message",
    "experiment_row",
    "experiments_store_sink",
    "exposures_store_sink",
]

#: experiments columns the sink writes (started_at/stopped_at are derived).
EXPERIMENT_COLUMNS: tuple[str, ...] = (
    "key", "hypothesis", "variants", "coverage", "targeting",
    "namespace_name", "namespace_start", "namespace_end",
    "primary_metric", "secondary_metrics", "guardrail_metrics", "min_sample_size",
    "status", "owner", "seed", "hash_version", "created_at", "updated_at",
)

_E_VALUES = EXPERIMENT_COLUMNS[1:]
_UPSERT_EXPERIMENT = (
    f"INSERT INTO experiments AS e ({', '.join(EXPERIMENT_COLUMNS)}) "
    f"VALUES ({', '.join(['%s'] * len(EXPERIMENT_COLUMNS))}) "
    "ON CONFLICT (key) DO UPDATE SET "
    + ", ".join(f"{c} = EXCLUDED.{c}" for c in _E_VALUES)
    # Newest updated_at wins; an equal timestamp is the same version
    # redelivered (or a correction), so it replaces only when something changed.
    + " WHERE e.updated_at <= EXCLUDED.updated_at AND ("
    + ", ".join(f"e.{c}" for c in _E_VALUES) + ") IS DISTINCT FROM ("
    + ", ".join(f"EXCLUDED.{c}" for c in _E_VALUES) + ")"
    " RETURNING (xmax = 0)"
)
_INSERT_VERSION = (
    "INSERT INTO experiment_versions (key, updated_at, status, definition) VALUES (%s, %s, %s, %s) "
    "ON CONFLICT (key, updated_at) DO NOTHING"
)
# Derived from the history rather than carried along, so the answer does not
# depend on the order versions arrive in.
_LIFECYCLE = """
UPDATE experiments AS e
SET started_at = CASE WHEN e.status IN ('running', 'stopped') THEN v.started END,
    stopped_at = CASE WHEN e.status = 'stopped' THEN v.stopped END
FROM (
    SELECT key,
           min(updated_at) FILTER (WHERE status = 'running') AS started,
           min(updated_at) FILTER (WHERE status = 'stopped') AS stopped
    FROM experiment_versions WHERE key = ANY(%s) GROUP BY key
) AS v
WHERE e.key = v.key
  AND (e.started_at, e.stopped_at) IS DISTINCT FROM (
      CASE WHEN e.status IN ('running', 'stopped') THEN v.started END,
      CASE WHEN e.status = 'stopped' THEN v.stopped END)
"""


class ExperimentStoreError(RuntimeError):
    """A batch could not be written for a reason retrying will not fix."""


@dataclass(frozen=True)
class ExperimentTombstone:
    """A null value on ``llm.experiments``: delete the definition of ``key``.

    The runner's ``decode`` sees only the value, so a tombstone needs
    :func:`decode_experiment_message` (value and key). Given the value alone,
    :func:`decode_experiment` raises, and the runner dead-letters the message
    with its key instead of dropping it.

    Examples
    --------
    >>> decode_experiment_message(b"tone", None)
    ExperimentTombstone(key='tone')
    """

    key: str


@dataclass(frozen=True)
class ExperimentWriteResult:
    """What one batch did: messages received, new and changed definitions, deletions."""

    received: int
    inserted: int
    updated: int
    deleted: int


def decode_experiment(value: bytes | None) -> dict[str, Any]:
    """Decode an ``experiment`` record; a tombstone is an error naming the fix.

    Examples
    --------
    >>> from schemas.codec import encode
    >>> from schemas.samples import sample
    >>> decode_experiment(encode("experiment", sample("experiment")))["key"]
    'prompt-tone'
    >>> decode_experiment(None)
    Traceback (most recent call last):
    ...
    ValueError: tombstone (null value) on llm.experiments: deleting needs the message key, which this runner does not pass to decode; the key is in the dead letter
    """
    from schemas.codec import decode

    if value is None:
        raise ValueError(
            "tombstone (null value) on llm.experiments: deleting needs the message key, "
            "which this runner does not pass to decode; the key is in the dead letter"
        )
    return decode(value, expected="experiment")


def decode_experiment_message(key: bytes | None, value: bytes | None) -> dict[str, Any] | ExperimentTombstone:
    """Decode one ``llm.experiments`` message; a null value is a tombstone for ``key``.

    Examples
    --------
    >>> decode_experiment_message(None, None)
    Traceback (most recent call last):
    ...
    ValueError: tombstone without a key on llm.experiments: nothing to delete
    """
    if value is None:
        if not key:
            raise ValueError("tombstone without a key on llm.experiments: nothing to delete")
        return ExperimentTombstone(key.decode("utf-8", errors="replace"))
    return decode_experiment(value)


def experiment_row(record: Mapping[str, Any]) -> tuple[Any, ...]:
    """The ``experiments`` row (in :data:`EXPERIMENT_COLUMNS` order) of a decoded record.

    Examples
    --------
    >>> from schemas.samples import sample
    >>> row = experiment_row(sample("experiment"))
    >>> row[0], row[5:8], row[12]
    ('prompt-tone', ('prompts', 0.0, 0.5), 'running')
    """
    ns = record.get("namespace")
    return (
        record["key"], record["hypothesis"], json.dumps(record["variants"]), record["coverage"],
        record.get("targeting"),
        None if ns is None else ns["name"],
        None if ns is None else ns["range_start"],
        None if ns is None else ns["range_end"],
        record["primary_metric"], list(record.get("secondary_metrics") or ()),
        list(record.get("guardrail_metrics") or ()), record["min_sample_size"],
        record["status"], record["owner"], record["seed"], record.get("hash_version", 2),
        record["created_at"], record["updated_at"],
    )


def _definition_json(record: Mapping[str, Any]) -> str:
    from schemas.codec import encode_json

    return encode_json("experiment", record).decode("utf-8")


def _final_operations(
    records: Sequence[Mapping[str, Any] | ExperimentTombstone],
) -> tuple[set[str], dict[str, Mapping[str, Any]]]:
    """Per key: delete first? and the newest definition after the last tombstone."""
    deletes: set[str] = set()
    latest: dict[str, Mapping[str, Any]] = {}
    for record in records:  # message order: a tombstone removes what came before it
        if isinstance(record, ExperimentTombstone):
            deletes.add(record.key)
            latest.pop(record.key, None)
            continue
        key = record["key"]
        held = latest.get(key)
        if held is None or held["updated_at"] <= record["updated_at"]:
            latest[key] = record
    return deletes, latest


class _Connection:
    """One lazily opened connection, reopened after it breaks."""

    def __init__(self, conninfo: str) -> None:
        self._conninfo = conninfo
        self._conn: psycopg.Connection | None = None

    def get(self) -> psycopg.Connection:
        if self._conn is None or self._conn.closed or self._conn.broken:
            self._conn = psycopg.connect(self._conninfo, connect_timeout=10)
        return self._conn

    def close(self) -> None:
        """Close the connection; the next write opens a new one."""
        if self._conn is not None:
            try:
                self._conn.close()
            finally:
                self._conn = None


class ExperimentStore(_Connection):
    """Writes batches of experiment definitions (and tombstones) over one connection.

    Transient failures raise :class:`psycopg.OperationalError` (retry the same
    batch); anything else is an :class:`ExperimentStoreError` naming the keys.

    Examples
    --------
    >>> ExperimentStore("postgresql://llmpulse@127.0.0.1:15432/llmpulse").write([])
    ExperimentWriteResult(received=0, inserted=0, updated=0, deleted=0)
    """

    def write(self, records: Sequence[Mapping[str, Any] | ExperimentTombstone]) -> ExperimentWriteResult:
        """Write one batch in one transaction; idempotent.

        Parameters
        ----------
        records
            Decoded ``experiment`` records and :class:`ExperimentTombstone`\\ s,
            in message order.

        Returns
        -------
        ExperimentWriteResult
        """
        if not records:
            return ExperimentWriteResult(0, 0, 0, 0)
        deletes, latest = _final_operations(records)
        versions = [r for r in records if not isinstance(r, ExperimentTombstone)]
        try:
            conn = self.get()
            with conn.transaction(), conn.cursor() as cur:
                cur.executemany(
                    _INSERT_VERSION,
                    [(r["key"], r["updated_at"], r["status"], _definition_json(r)) for r in versions],
                )
                deleted = 0
                if deletes:
                    cur.execute("DELETE FROM experiments WHERE key = ANY(%s)", (sorted(deletes),))
                    deleted = cur.rowcount
                flags = []
                for record in latest.values():
                    cur.execute(_UPSERT_EXPERIMENT, experiment_row(record))
                    flags += [inserted for (inserted,) in cur.fetchall()]
                if latest:
                    cur.execute(_LIFECYCLE, (sorted(latest),))
        except psycopg.OperationalError:
            self.close()
            raise
        except psycopg.Error as exc:
            keys = sorted({r.key if isinstance(r, ExperimentTombstone) else r["key"] for r in records})
            raise ExperimentStoreError(
                f"writing a batch of {len(records)} experiment definitions ({', '.join(keys[:3])}"
                f"{f' and {len(keys) - 3} more' if len(keys) > 3 else ''}) failed: {explain(exc)}"
            ) from exc
        inserted = sum(flags)
        return ExperimentWriteResult(len(records), inserted, len(flags) - inserted, deleted)


# -- exposures ------------------------------------------------------------

EXPOSURE_COLUMNS: tuple[str, ...] = (
    "experiment_key", "user_id", "variant", "project", "source",
    "first_exposed_at", "last_exposed_at", "exposure_count", "variants_seen",
)
_STAGE = "llmpulse_exposures_stage"
_EARLIER = "EXCLUDED.first_exposed_at < x.first_exposed_at"
_UPSERT_EXPOSURES = (
    f"INSERT INTO exposures AS x ({', '.join(EXPOSURE_COLUMNS)}) "
    f"SELECT {', '.join(EXPOSURE_COLUMNS)} FROM {_STAGE} "
    "ON CONFLICT (experiment_key, user_id) DO UPDATE SET "
    f"variant = CASE WHEN {_EARLIER} THEN EXCLUDED.variant ELSE x.variant END, "
    f"project = CASE WHEN {_EARLIER} THEN EXCLUDED.project ELSE x.project END, "
    f"source = CASE WHEN {_EARLIER} THEN EXCLUDED.source ELSE x.source END, "
    "first_exposed_at = LEAST(x.first_exposed_at, EXCLUDED.first_exposed_at), "
    "last_exposed_at = GREATEST(x.last_exposed_at, EXCLUDED.last_exposed_at), "
    "exposure_count = x.exposure_count + EXCLUDED.exposure_count, "
    "variants_seen = ARRAY(SELECT DISTINCT v FROM unnest(x.variants_seen || EXCLUDED.variants_seen) AS v ORDER BY v), "
    "updated_at = now() "
    "RETURNING (xmax = 0)"
)


@dataclass(frozen=True)
class ExposureWriteResult:
    """What one batch did: exposure events received, new and existing (user, experiment) rows."""

    received: int
    inserted: int
    updated: int


@dataclass
class _UserExposure:
    first: Mapping[str, Any]
    last_time: datetime
    count: int
    variants: set[str]

    def add(self, exposure: Mapping[str, Any]) -> None:
        if exposure["time"] < self.first["time"]:
            self.first = exposure
        self.last_time = max(self.last_time, exposure["time"])
        self.count += 1
        self.variants.add(exposure["variant"])

    def row(self) -> tuple[Any, ...]:
        f = self.first
        return (f["experiment_key"], f["user_id"], f["variant"], f["project"], f["source"],
                f["time"], self.last_time, self.count, sorted(self.variants))


def exposure_rows(exposures: Sequence[Mapping[str, Any]]) -> list[tuple[Any, ...]]:
    """One row per ``(experiment_key, user_id)`` of a batch, in :data:`EXPOSURE_COLUMNS` order.

    ON CONFLICT cannot touch a row twice in one statement, so a batch is
    merged per user first, the same way the upsert merges it with the table.

    Examples
    --------
    >>> from datetime import timedelta
    >>> from schemas.samples import sample
    >>> a = sample("exposure")
    >>> b = sample("exposure", variant="control", time=a["time"] - timedelta(minutes=5))
    >>> (row,) = exposure_rows([a, b])
    >>> row[2], row[7], row[8]
    ('control', 2, ['control', 'friendly'])
    """
    merged: dict[tuple[str, str], _UserExposure] = {}
    for exposure in exposures:
        pk = (exposure["experiment_key"], exposure["user_id"])
        held = merged.get(pk)
        if held is None:
            merged[pk] = _UserExposure(exposure, exposure["time"], 1, {exposure["variant"]})
        else:
            held.add(exposure)
    return [m.row() for m in merged.values()]


class ExposureStore(_Connection):
    """Writes batches of exposures over one connection.

    Examples
    --------
    >>> ExposureStore("postgresql://llmpulse@127.0.0.1:15432/llmpulse").write([])
    ExposureWriteResult(received=0, inserted=0, updated=0)
    """

    def get(self) -> psycopg.Connection:
        fresh = self._conn is None or self._conn.closed or self._conn.broken
        conn = super().get()
        if fresh:
            try:
                # Once per connection; ON COMMIT DELETE ROWS empties it after each batch.
                conn.execute(
                    f"CREATE TEMP TABLE IF NOT EXISTS {_STAGE} "
                    "(LIKE exposures INCLUDING DEFAULTS) ON COMMIT DELETE ROWS"
                )
                conn.commit()
            except BaseException:
                self.close()  # e.g. not migrated: the next write starts afresh
                raise
        return conn

    def write(self, exposures: Sequence[Mapping[str, Any]]) -> ExposureWriteResult:
        """Write one batch of decoded ``exposure`` records in one transaction.

        Returns
        -------
        ExposureWriteResult
            ``inserted`` counts users seen for the first time in an experiment.
        """
        if not exposures:
            return ExposureWriteResult(0, 0, 0)
        rows = exposure_rows(exposures)
        try:
            conn = self.get()
            with conn.transaction(), conn.cursor() as cur:
                with cur.copy(f"COPY {_STAGE} ({', '.join(EXPOSURE_COLUMNS)}) FROM STDIN") as copy:
                    for row in rows:
                        copy.write_row(row)
                cur.execute(_UPSERT_EXPOSURES)
                flags = [inserted for (inserted,) in cur.fetchall()]
        except psycopg.OperationalError:
            self.close()
            raise
        except psycopg.Error as exc:
            keys = sorted({e["experiment_key"] for e in exposures})
            raise ExperimentStoreError(
                f"writing a batch of {len(exposures)} exposures (experiments {', '.join(keys[:3])}"
                f"{f' and {len(keys) - 3} more' if len(keys) > 3 else ''}) failed: {explain(exc)}"
            ) from exc
        inserted = sum(flags)
        return ExposureWriteResult(len(exposures), inserted, len(flags) - inserted)


# -- sinks ------------------------------------------------------------------


def experiments_store_sink(settings: Settings) -> BatchSink:
    """The experiment store as a :class:`sinks.runner.BatchSink` over ``llm.experiments``.

    Its ``decode_message(msg)`` turns a tombstone into an
    :class:`ExperimentTombstone`, which deletes the definition.

    Examples
    --------
    >>> from processors.settings import Settings
    >>> sink = experiments_store_sink(Settings())
    >>> sink.name, sink.topics
    ('experiments-store', ('llm.experiments',))
    """
    from processors.topics import EXPERIMENTS
    from sinks.runner import BatchSink  # noqa: F811 (runtime import; runner imports processors)

    store = ExperimentStore(settings.database_url.get_secret_value())
    sink = BatchSink(
        name="experiments-store",
        topics=(EXPERIMENTS.name,),
        decode=decode_experiment,
        write=store.write,
        decode_message=_decode_message,
    )
    return sink


def _decode_message(msg: Message) -> dict[str, Any] | ExperimentTombstone:
    return decode_experiment_message(msg.key(), msg.value())


def exposures_store_sink(settings: Settings) -> BatchSink:
    """The exposure store as a :class:`sinks.runner.BatchSink` over ``llm.exposures``.

    Examples
    --------
    >>> from processors.settings import Settings
    >>> sink = exposures_store_sink(Settings())
    >>> sink.name, sink.topics
    ('exposures-store', ('llm.exposures',))
    """
    from processors.topics import EXPOSURES
    from schemas.codec import decode
    from sinks.runner import BatchSink  # noqa: F811

    store = ExposureStore(settings.database_url.get_secret_value())
    return BatchSink(
        name="exposures-store",
        topics=(EXPOSURES.name,),
        decode=lambda value: decode(value, expected="exposure"),
        write=store.write,
    )
