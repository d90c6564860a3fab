"""``llmpulse db``: migrate, roll back and inspect the database schema.

Register with the main CLI via ``main.add_command(db)``. The database URL comes
from ``--database-url`` or the ``DATABASE_URL`` environment variable; it is
printed with its password masked.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TypeVar

import click

from sinks import migrate as migrator
from sinks.dburl import DEFAULT_DATABASE_URL, mask_password, redact

__all__ = ["db", "describe_backend"]

F = TypeVar("F", bound=Callable[..., object])


def database_url_option(func: F) -> F:
    """The ``--database-url`` option (env ``DATABASE_URL``) of every database command."""
    # On each subcommand rather than the group so that both
    # `llmpulse db migrate --database-url ...` and the env var work, and the
    # group does not claim the parent CLI's ctx.obj.
    return click.option(
        "--database-url",
        envvar="DATABASE_URL",
        default=DEFAULT_DATABASE_URL,
        show_default=True,
        show_envvar=True,
        help="PostgreSQL/TimescaleDB URL or libpq key=value string.",
    )(func)


def describe_backend(available: bool, installed: bool) -> str:
    """One line saying which storage features the schema uses.

    Parameters
    ----------
    available
        TimescaleDB is in ``pg_available_extensions``.
    installed
        TimescaleDB is installed in this database.

    Examples
    --------
    >>> describe_backend(available=False, installed=False)
    'plain PostgreSQL (TimescaleDB not available on this server)'
    >>> describe_backend(available=True, installed=True)
    'TimescaleDB (hypertables)'
    """
    if installed:
        return "TimescaleDB (hypertables)"
    if available:
        return "plain PostgreSQL (TimescaleDB available but not installed)"
    return "plain PostgreSQL (TimescaleDB not available on this server)"


def _fail(error: migrator.MigrationError, database_url: str) -> click.ClickException:
    return click.ClickException(redact(str(error), database_url))


def _labels() -> dict[int, str]:
    return {m.version: m.label for m in migrator.load_migrations()}


def _print_version(database_url: str) -> None:
    state = migrator.status(database_url)
    click.echo(f"Schema version: {state.version} (latest {state.latest})")
    click.echo(
        "Backend: " + describe_backend(state.timescaledb_available, state.timescaledb_installed)
    )


@click.group("db")
def db() -> None:
    """Database schema: migrate, rollback, status."""


@db.command("migrate")
@database_url_option
def migrate_command(database_url: str) -> None:
    """Apply pending migrations and re-apply views/functions.

    Safe to run from several processes at once: they take turns.
    """
    click.echo(f"Database: {mask_password(database_url)}")
    try:
        applied = migrator.migrate(database_url)
        labels = _labels()
        for version in applied:
            click.echo(f"Applied {labels.get(version, version)}")
        if not applied:
            click.echo("Already up to date.")
        _print_version(database_url)
    except migrator.MigrationError as e:
        raise _fail(e, database_url) from e


@db.command("rollback")
@database_url_option
@click.option(
    "--to",
    "to",
    type=click.IntRange(min=0),
    default=None,
    help="Version to end at (0 = empty schema). Default: undo the latest migration only.",
)
@click.option("--yes", "-y", is_flag=True, help="Do not ask for confirmation.")
def rollback_command(database_url: str, to: int | None, yes: bool) -> None:
    """Undo migrations; this drops the data held in what they created."""
    click.echo(f"Database: {mask_password(database_url)}")
    try:
        current = migrator.status(database_url).version
        target = max(current - 1, 0) if to is None else to
        if current <= target:
            click.echo(f"Nothing to roll back (schema version {current}).")
            return
        if not yes:
            click.confirm(
                f"Roll back from version {current} to {target}? Data in dropped tables is lost",
                abort=True,
            )
        rolled_back = migrator.rollback(database_url, to=target)
        labels = _labels()
        for version in rolled_back:
            click.echo(f"Rolled back {labels.get(version, version)}")
        if not rolled_back:
            click.echo("Nothing to roll back.")
        _print_version(database_url)
    except migrator.MigrationError as e:
        raise _fail(e, database_url) from e


@db.command("status")
@database_url_option
def status_command(database_url: str) -> None:
    """Show applied and pending migrations; exit 1 if files and database disagree."""
    click.echo(f"Database: {mask_password(database_url)}")
    try:
        state = migrator.status(database_url)
    except migrator.MigrationError as e:
        raise _fail(e, database_url) from e
    click.echo(f"Schema version: {state.version} (latest {state.latest})")
    click.echo(
        "Backend: " + describe_backend(state.timescaledb_available, state.timescaledb_installed)
    )
    for m in state.migrations:
        when = f"  {m.applied_at:%Y-%m-%d %H:%M:%S %Z}" if m.applied_at else ""
        click.echo(f"  {m.version:04d}_{m.name:<30} {m.state}{when}")
    if state.problems:
        raise click.ClickException(
            "migration files do not match the database; migrate and rollback will refuse to run"
        )
