"""Migration files and plans, without a database.

Layout of the migrations directory (``sinks/migrations`` in the package)::

    versions/NNNN_name.up.sql     numbered, applied once, never edited
    versions/NNNN_name.down.sql   undoes the matching up file
    idempotent/NNNN_name.sql      CREATE OR REPLACE views/functions, re-applied
                                  after every migrate and rollback; each starts
                                  with ``-- requires-version: N``

Everything here is pure (reads files, compares lists) so it is unit-tested and
doctested without PostgreSQL; :mod:`sinks.migrate` does the database part.
"""

from __future__ import annotations

import hashlib
import os
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime
from importlib.abc import Traversable
from importlib.resources import files
from pathlib import Path
from typing import NamedTuple

__all__ = [
    "AppliedMigration",
    "IdempotentScript",
    "Migration",
    "MigrationError",
    "MigrationFile",
    "MigrationState",
    "Source",
    "Status",
    "checksum",
    "compare",
    "load_idempotent",
    "load_migrations",
    "parse_migration_filename",
    "plan_migrate",
    "plan_rollback",
    "verify",
]

_VERSION_FILE = re.compile(
    r"^(?P<version>\d{4})_(?P<name>[a-z0-9]+(?:_[a-z0-9]+)*)\.(?P<direction>up|down)\.sql$"
)
_IDEMPOTENT_FILE = re.compile(r"^\d{4}_[a-z0-9]+(?:_[a-z0-9]+)*\.sql$")
_REQUIRES = re.compile(r"^--\s*requires-version:\s*(\d+)\s*$", re.MULTILINE)

#: Where migrations are read from: a directory holding ``versions/`` and
#: ``idempotent/``; ``None`` means the packaged ``sinks/migrations``.
Source = Traversable | str | os.PathLike[str] | None


class MigrationError(Exception):
    """A migration could not be planned or applied.

    Parameters
    ----------
    message
        What went wrong.
    hint
        What to do about it; printed on its own line.

    Examples
    --------
    >>> print(MigrationError("0002_x.up.sql failed", hint="fix the new file"))
    0002_x.up.sql failed
    Hint: fix the new file
    """

    def __init__(self, message: str, *, hint: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.hint = hint

    def __str__(self) -> str:
        return self.message if not self.hint else f"{self.message}\nHint: {self.hint}"


class MigrationFile(NamedTuple):
    """The parts of a versioned migration file name.

    Examples
    --------
    >>> MigrationFile(1, "spans_traces", "up").version
    1
    """

    version: int
    name: str
    direction: str


def parse_migration_filename(filename: str) -> MigrationFile:
    """Split ``NNNN_name.up.sql`` / ``NNNN_name.down.sql`` into its parts.

    Parameters
    ----------
    filename
        A file name (no directory).

    Returns
    -------
    MigrationFile
        ``(version, name, direction)``.

    Raises
    ------
    MigrationError
        If the name does not follow the pattern or the version is 0.

    Examples
    --------
    >>> parse_migration_filename("0001_spans_traces.up.sql")
    MigrationFile(version=1, name='spans_traces', direction='up')
    >>> parse_migration_filename("1_spans.sql")
    Traceback (most recent call last):
    ...
    sinks.migration_plan.MigrationError: bad migration file name '1_spans.sql'
    Hint: use NNNN_lower_snake_name.up.sql and NNNN_lower_snake_name.down.sql
    """
    match = _VERSION_FILE.match(filename)
    if not match or int(match["version"]) == 0:
        raise MigrationError(
            f"bad migration file name {filename!r}",
            hint="use NNNN_lower_snake_name.up.sql and NNNN_lower_snake_name.down.sql",
        )
    return MigrationFile(int(match["version"]), match["name"], match["direction"])


def checksum(sql: str) -> str:
    """SHA-256 of a migration's text, independent of line endings.

    CRLF is normalised so that a Windows checkout does not look "edited".

    Examples
    --------
    >>> checksum("SELECT 1;\\r\\n") == checksum("SELECT 1;\\n")
    True
    >>> len(checksum("SELECT 1;"))
    64
    """
    return hashlib.sha256(sql.replace("\r\n", "\n").encode("utf-8")).hexdigest()


@dataclass(frozen=True)
class Migration:
    """One numbered migration: its up and down SQL.

    Examples
    --------
    >>> m = Migration(2, "add_feedback", "CREATE TABLE f ();", "DROP TABLE f;")
    >>> m.label, m.up_filename
    ('0002_add_feedback', '0002_add_feedback.up.sql')
    """

    version: int
    name: str
    up_sql: str
    down_sql: str

    @property
    def label(self) -> str:
        """``NNNN_name``, as shown to users."""
        return f"{self.version:04d}_{self.name}"

    @property
    def up_filename(self) -> str:
        """File name of the up script."""
        return f"{self.label}.up.sql"

    @property
    def down_filename(self) -> str:
        """File name of the down script."""
        return f"{self.label}.down.sql"

    @property
    def checksum(self) -> str:
        """Checksum of the up script, stored in ``schema_migrations``.

        Only the up script is pinned: it defines what the database contains.
        A broken down script may be fixed after it lands.
        """
        return checksum(self.up_sql)


@dataclass(frozen=True)
class IdempotentScript:
    """A re-applied SQL file and the schema version it needs.

    Examples
    --------
    >>> IdempotentScript("0100_views.sql", "SELECT 1;", 1).requires_version
    1
    """

    filename: str
    sql: str
    requires_version: int


@dataclass(frozen=True)
class AppliedMigration:
    """A row of ``schema_migrations``.

    Examples
    --------
    >>> AppliedMigration(1, "spans_traces", "abc").applied_at is None
    True
    """

    version: int
    name: str
    checksum: str
    applied_at: datetime | None = None


@dataclass(frozen=True)
class MigrationState:
    """How one migration version compares between files and database.

    ``state`` is one of ``applied``, ``pending``, ``changed`` (file edited
    after it was applied), ``missing`` (applied, but no file) and
    ``out_of_order`` (a file numbered below the applied version that was
    never applied).

    Examples
    --------
    >>> MigrationState(1, "spans_traces", "pending").is_problem
    False
    """

    version: int
    name: str
    state: str
    applied_at: datetime | None = None

    @property
    def is_problem(self) -> bool:
        """True when migrate/rollback refuse to run because of this version."""
        return self.state in {"changed", "missing", "out_of_order"}


@dataclass(frozen=True)
class Status:
    """What :func:`status` found.

    Examples
    --------
    >>> s = Status(0, 1, False, False, (MigrationState(1, "spans_traces", "pending"),))
    >>> s.pending, s.problems
    ((1,), ())
    """

    version: int
    latest: int
    timescaledb_available: bool
    timescaledb_installed: bool
    migrations: tuple[MigrationState, ...]

    @property
    def pending(self) -> tuple[int, ...]:
        """Versions that ``migrate`` would apply."""
        return tuple(m.version for m in self.migrations if m.state == "pending")

    @property
    def problems(self) -> tuple[MigrationState, ...]:
        """Versions that make ``migrate``/``rollback`` refuse to run."""
        return tuple(m for m in self.migrations if m.is_problem)


# --------------------------------------------------------------------------
# Files (pure)


def _root(source: Source) -> Traversable:
    if source is None:
        return files("sinks") / "migrations"
    if isinstance(source, (str, os.PathLike)):
        return Path(source)
    return source


def load_migrations(source: Source = None) -> tuple[Migration, ...]:
    """Read and validate the numbered migrations.

    Parameters
    ----------
    source
        Directory holding ``versions/``; defaults to the packaged
        ``sinks/migrations`` (found with :mod:`importlib.resources`, so it
        works from a wheel as well as from a checkout).

    Returns
    -------
    tuple of Migration
        Sorted by version.

    Raises
    ------
    MigrationError
        On a bad file name, an up without a down (or the reverse), two names
        for one version, or a gap in the numbering.

    Examples
    --------
    >>> load_migrations()[0].label
    '0001_spans_traces'
    """
    directory = _root(source) / "versions"
    found: dict[int, dict[str, tuple[str, str]]] = {}
    if directory.is_dir():
        for entry in directory.iterdir():
            if not entry.name.endswith(".sql"):
                continue
            version, name, direction = parse_migration_filename(entry.name)
            sides = found.setdefault(version, {})
            other = next((n for n, _ in sides.values() if n != name), None)
            if other is not None:
                raise MigrationError(
                    f"version {version:04d} has two names: {other!r} and {name!r}",
                    hint="every version needs exactly one name shared by its up and down file",
                )
            sides[direction] = (name, entry.read_text(encoding="utf-8"))

    migrations = []
    for expected, version in enumerate(sorted(found), start=1):
        if version != expected:
            raise MigrationError(
                f"migration numbering has a gap: expected {expected:04d}, found {version:04d}",
                hint="number migrations 0001, 0002, ... without gaps",
            )
        sides = found[version]
        for direction in ("up", "down"):
            if direction not in sides:
                name = next(iter(sides.values()))[0]
                raise MigrationError(
                    f"{version:04d}_{name} has no .{direction}.sql file",
                    hint="every migration needs both an up and a down file",
                )
        migrations.append(Migration(version, sides["up"][0], sides["up"][1], sides["down"][1]))
    return tuple(migrations)


def load_idempotent(source: Source = None) -> tuple[IdempotentScript, ...]:
    """Read the re-applied SQL files, in file-name order.

    Parameters
    ----------
    source
        Directory holding ``idempotent/``; defaults to the packaged one.

    Returns
    -------
    tuple of IdempotentScript

    Raises
    ------
    MigrationError
        If a name is not ``NNNN_name.sql`` or a file lacks its
        ``-- requires-version: N`` line.

    Examples
    --------
    >>> [s.filename for s in load_idempotent()][:1]
    ['0100_trace_spans.sql']
    """
    directory = _root(source) / "idempotent"
    if not directory.is_dir():
        return ()
    scripts = []
    for entry in sorted(directory.iterdir(), key=lambda e: e.name):
        if not entry.name.endswith(".sql"):
            continue
        if not _IDEMPOTENT_FILE.match(entry.name):
            raise MigrationError(
                f"bad idempotent file name {entry.name!r}",
                hint="use NNNN_lower_snake_name.sql; NNNN orders the files",
            )
        sql = entry.read_text(encoding="utf-8")
        match = _REQUIRES.search(sql)
        if not match:
            raise MigrationError(
                f"{entry.name} has no '-- requires-version: N' line",
                hint="declare the lowest schema version whose tables the file uses",
            )
        scripts.append(IdempotentScript(entry.name, sql, int(match[1])))
    return tuple(scripts)


# --------------------------------------------------------------------------
# Planning (pure)


def compare(
    migrations: Sequence[Migration], applied: Iterable[AppliedMigration]
) -> tuple[MigrationState, ...]:
    """Compare migration files with ``schema_migrations`` rows.

    Parameters
    ----------
    migrations
        From :func:`load_migrations`.
    applied
        Rows of ``schema_migrations``.

    Returns
    -------
    tuple of MigrationState
        One per version found in either, sorted by version.

    Examples
    --------
    >>> files = [Migration(1, "a", "up1", "d1"), Migration(2, "b", "up2", "d2")]
    >>> rows = [AppliedMigration(1, "a", checksum("edited"))]
    >>> [(s.version, s.state) for s in compare(files, rows)]
    [(1, 'changed'), (2, 'pending')]
    """
    by_version = {m.version: m for m in migrations}
    rows = {a.version: a for a in applied}
    top = max(rows, default=0)
    states = []
    for version in sorted(by_version.keys() | rows.keys()):
        m, row = by_version.get(version), rows.get(version)
        if row is None:
            assert m is not None
            state = "out_of_order" if version < top else "pending"
            states.append(MigrationState(version, m.name, state))
        elif m is None:
            states.append(MigrationState(version, row.name, "missing", row.applied_at))
        else:
            same = m.checksum == row.checksum and m.name == row.name
            states.append(
                MigrationState(version, m.name, "applied" if same else "changed", row.applied_at)
            )
    return tuple(states)


def verify(migrations: Sequence[Migration], applied: Iterable[AppliedMigration]) -> None:
    """Refuse to go on when files and database disagree.

    Parameters
    ----------
    migrations
        From :func:`load_migrations`.
    applied
        Rows of ``schema_migrations``.

    Raises
    ------
    MigrationError
        Listing every applied migration whose file changed or is missing, and
        every unapplied file numbered below the applied version.

    Examples
    --------
    >>> files = [Migration(1, "a", "up1", "d1")]
    >>> verify(files, [AppliedMigration(1, "a", checksum("up1"))])
    >>> verify(files, [AppliedMigration(1, "a", "0" * 64)])
    Traceback (most recent call last):
    ...
    sinks.migration_plan.MigrationError: migration files do not match the database: 0001_a changed
    Hint: landed migrations are never edited: restore the file and put the change in a new migration
    """
    problems = [s for s in compare(migrations, applied) if s.is_problem]
    if not problems:
        return
    words = {"changed": "changed", "missing": "file missing", "out_of_order": "never applied"}
    listed = ", ".join(f"{s.version:04d}_{s.name} {words[s.state]}" for s in problems)
    hints = {
        "changed": "landed migrations are never edited: restore the file and put the "
        "change in a new migration",
        "missing": "the database was migrated by a newer llmpulse: upgrade this one",
        "out_of_order": "a migration was added below the applied version: renumber it "
        "after the latest applied migration",
    }
    hint = "; ".join(dict.fromkeys(hints[s.state] for s in problems))
    raise MigrationError(f"migration files do not match the database: {listed}", hint=hint)


def plan_migrate(migrations: Sequence[Migration], applied: Iterable[int]) -> list[Migration]:
    """Migrations that ``migrate`` applies, in order.

    Parameters
    ----------
    migrations
        From :func:`load_migrations`.
    applied
        Versions in ``schema_migrations``.

    Examples
    --------
    >>> files = [Migration(1, "a", "", ""), Migration(2, "b", "", "")]
    >>> [m.version for m in plan_migrate(files, applied=[1])]
    [2]
    """
    done = set(applied)
    return [m for m in sorted(migrations, key=lambda m: m.version) if m.version not in done]


def plan_rollback(
    migrations: Sequence[Migration], applied: Iterable[int], to: int | None = None
) -> list[Migration]:
    """Migrations that ``rollback`` undoes, newest first.

    Parameters
    ----------
    migrations
        From :func:`load_migrations`.
    applied
        Versions in ``schema_migrations``.
    to
        Version to end at; ``None`` undoes only the latest migration, ``0``
        undoes everything.

    Raises
    ------
    MigrationError
        If ``to`` is negative or an applied version has no files.

    Examples
    --------
    >>> files = [Migration(v, f"m{v}", "", "") for v in (1, 2, 3)]
    >>> [m.version for m in plan_rollback(files, [1, 2, 3])]
    [3]
    >>> [m.version for m in plan_rollback(files, [1, 2, 3], to=1)]
    [3, 2]
    """
    done = sorted(set(applied), reverse=True)
    current = done[0] if done else 0
    target = max(current - 1, 0) if to is None else to
    if target < 0:
        raise MigrationError(f"cannot roll back to version {target}", hint="use --to 0 or higher")
    by_version = {m.version: m for m in migrations}
    plan = []
    for version in done:
        if version <= target:
            break
        if version not in by_version:
            raise MigrationError(
                f"applied migration {version:04d} has no files to roll it back",
                hint="run rollback with the llmpulse version that applied it",
            )
        plan.append(by_version[version])
    return plan
