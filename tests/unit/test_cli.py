from __future__ import annotations

from click.testing import CliRunner

from processors.cli import main


def test_help_lists_every_subcommand_with_help_text() -> None:
    result = CliRunner().invoke(main, ["--help"])
    assert result.exit_code == 0
    for command in ("config", "run", "topics", "db"):
        line = next(l for l in result.output.splitlines() if l.strip().startswith(command + " "))
        assert len(line.split()) > 1, f"{command} has no help text"


def test_config_masks_secrets(monkeypatch) -> None:
    monkeypatch.setenv("DATABASE_URL", "postgresql://u:topsecret@db/x")
    result = CliRunner().invoke(main, ["config"])
    assert result.exit_code == 0
    assert "topsecret" not in result.output
    assert "database_url = postgresql://u:***@db/x" in result.output


def test_invalid_configuration_is_a_clear_error(monkeypatch) -> None:
    monkeypatch.setenv("KAFKA_BOOTSTRAP_SERVERS", "nohost")
    result = CliRunner().invoke(main, ["config"])
    assert result.exit_code == 1
    assert "invalid configuration" in result.output and "host:port" in result.output


def test_run_rejects_unknown_processors() -> None:
    result = CliRunner().invoke(main, ["run", "nope"])
    assert result.exit_code == 2
    assert "ingest" in result.output


def test_topics_list_shows_compaction() -> None:
    result = CliRunner().invoke(main, ["topics", "list"])
    assert result.exit_code == 0
    assert any(l.startswith("llm.users") and "compact" in l for l in result.output.splitlines())
