"""`llmpulse experiments`: validation and lifecycle rules, without services."""
from __future__ import annotations

import json
from dataclasses import replace
from datetime import UTC, datetime, timedelta

import pytest
from click.testing import CliRunner

from processors.experiments.cli import (
    StoredExperiment,
    TransitionError,
    definition_from_json,
    experiments,
    format_list,
    from_template,
    namespace_conflicts,
    transition,
)
from processors.experiments.definitions import ExperimentError, Namespace
from processors.experiments.templates import prompt_ab

T0 = datetime(2025, 6, 1, 9, 0, tzinfo=UTC)
UNREACHABLE = ["--database-url", "postgresql://llmpulse@127.0.0.1:1/x", "--bootstrap", "127.0.0.1:1"]


def run(*args: str, input: str | None = None):
    return CliRunner().invoke(experiments, list(args), input=input)


def create_prompt_ab(*extra: str):
    return run("create", "--template", "prompt-ab", "--key", "tone", "--owner", "ml@example.com",
               "--control", "v11", "--treatment", "v12", "--dry-run", *extra)


def definition(**overrides) -> dict:
    doc = {
        "key": "tone", "owner": "ml@example.com", "hypothesis": "Friendlier is better.",
        "primary_metric": "thumbs_up_ratio",
        "variants": [{"name": "control", "weight": 0.5, "payload": {"prompt_version": "v11"}},
                     {"name": "friendly", "weight": 0.5, "payload": {"prompt_version": "v12"}}],
    }
    doc.update(overrides)
    return doc


# -- create from a template ---------------------------------------------------


def test_a_valid_template_prints_the_draft_record():
    result = create_prompt_ab("--weights", "0.9,0.1", "--namespace", "prompts:0-0.5")
    assert result.exit_code == 0, result.output
    record = json.loads(result.output[: result.output.rindex("}") + 1])
    assert record["status"] == "draft" and record["seed"] == "tone"
    assert [v["weight"] for v in record["variants"]] == [0.9, 0.1]
    assert record["namespace"] == {"name": "prompts", "range_start": 0.0, "range_end": 0.5}
    assert "valid draft (dry run: not published)" in result.output


def test_weights_that_do_not_sum_to_one_are_named():
    result = create_prompt_ab("--weights", "0.6,0.6")
    assert result.exit_code == 1
    assert "experiment 'tone' is invalid:" in result.output
    assert "  - variants: weights sum to 1.2, not 1" in result.output


def test_an_unknown_metric_lists_the_known_ones():
    result = create_prompt_ab("--primary-metric", "happiness", "--guardrail-metric", "p99")
    assert result.exit_code == 1
    assert "primary_metric: unknown metric 'happiness'; known: success_rate, error_rate" in result.output
    assert "guardrail_metrics: unknown metric(s) 'p99'" in result.output


def test_every_problem_is_listed_at_once():
    result = create_prompt_ab("--coverage", "0", "--primary-metric", "nope", "--min-sample-size", "0")
    problems = [line for line in result.output.splitlines() if line.startswith("  - ")]
    assert len(problems) == 3, result.output


@pytest.mark.parametrize(("args", "message"), [
    (["--namespace", "prompts"], "must look like NAME:START-END"),
    (["--namespace", "prompts:0.6-0.2"], "range must satisfy 0 <= range_start < range_end <= 1"),
    (["--weights", "0.5,x"], "weights must be comma-separated numbers"),
    (["--weights", "1"], "1 weights for 2 variants"),
    (["--targeting", '{"plan": {"$regex": "p"}}'], "unsupported operator '$regex'"),
    (["--temperatures", "0.1,0.2"], "--temperatures only applies to --template temperature"),
])
def test_bad_template_options_are_clear_errors(args, message):
    result = create_prompt_ab(*args)
    assert result.exit_code == 1, result.output
    assert message in result.output
    assert "Traceback" not in result.output


def test_template_arguments_are_checked():
    result = run("create", "--template", "model-swap", "--key", "m", "--owner", "o@x", "--control", "gpt-4o",
                 "--dry-run")
    assert result.exit_code == 1
    assert "--template model-swap needs --control and --treatment (models)" in result.output
    same = run("create", "--template", "model-swap", "--key", "m", "--owner", "o@x", "--control", "a",
               "--treatment", "a", "--dry-run")
    assert "same model 'a'" in same.output


def test_temperature_template_takes_a_list():
    result = run("create", "--template", "temperature", "--key", "temp", "--owner", "o@x",
                 "--temperatures", "0,0.5,1", "--dry-run")
    assert result.exit_code == 0, result.output
    assert '"name": "temp-0.5"' in result.output
    bad = run("create", "--template", "temperature", "--key", "temp", "--owner", "o@x",
              "--temperatures", "0.5,3", "--dry-run")
    assert bad.exit_code == 1 and "numbers in [0, 2], got 3.0" in bad.output


def test_exactly_one_source_is_required():
    assert "exactly one of --template or --file" in run("create", "--dry-run").output
    assert "--template needs --key and --owner" in run("create", "--template", "prompt-ab", "--dry-run").output


# -- create from a file ---------------------------------------------------------


def test_a_definition_file_is_read_and_completed(tmp_path):
    path = tmp_path / "tone.json"
    path.write_text(json.dumps(definition(coverage=0.5)))
    result = run("create", "--file", str(path), "--dry-run")
    assert result.exit_code == 0, result.output
    assert '"coverage": 0.5' in result.output and '"status": "draft"' in result.output


def test_a_definition_file_from_stdin():
    result = run("create", "--file", "-", "--dry-run", input=json.dumps(definition()))
    assert result.exit_code == 0, result.output


@pytest.mark.parametrize(("doc", "message"), [
    (definition(weightz=1), "weightz: unknown field"),
    ({"key": "k"}, "owner: required"),
    (definition(status="running"), "status: create makes drafts, got 'running'"),
    (definition(variants=[{"name": "a", "weight": 0.7}, {"name": "b", "weight": 0.7}]),
     "variants: weights sum to 1.4, not 1"),
    (definition(variants=[{"name": "a"}]), "variants[0]: must be an object with name and weight"),
    (definition(namespace={"name": "p"}), "namespace: must be null or an object with name, range_start"),
    (definition(secondary_metrics=["rating", "vibes"]), "unknown metric(s) 'vibes'"),
    ([1, 2], "must be a JSON object, got list"),
])
def test_bad_definition_files_are_clear_errors(tmp_path, doc, message):
    path = tmp_path / "d.json"
    path.write_text(json.dumps(doc))
    result = run("create", "--file", str(path), "--dry-run")
    assert result.exit_code == 1, result.output
    assert message in result.output
    assert "Traceback" not in result.output


def test_invalid_json_names_the_position(tmp_path):
    path = tmp_path / "d.json"
    path.write_text('{"key": "k",\n  "owner": }')
    result = run("create", "--file", str(path), "--dry-run")
    assert result.exit_code == 1
    assert "is not valid JSON" in result.output and "line 2" in result.output


def test_template_options_with_a_file_are_refused(tmp_path):
    path = tmp_path / "d.json"
    path.write_text(json.dumps(definition()))
    result = run("create", "--file", str(path), "--coverage", "0.5", "--dry-run")
    assert result.exit_code == 2 and "--coverage only apply to --template" in result.output


def test_file_timestamps_are_replaced_by_now():
    doc = definition(created_at="2020-01-01T00:00:00Z", updated_at="2020-01-01T00:00:00Z")
    assert definition_from_json(doc, T0).created_at == T0 == definition_from_json(doc, T0).updated_at


# -- lifecycle ------------------------------------------------------------------


def draft(**overrides):
    return replace(prompt_ab("tone", "o@x", "v1", "v2", now=T0), **overrides)


def test_draft_starts_then_stops_with_newer_versions():
    running = transition(draft(), "running", T0 + timedelta(hours=1))
    stopped = transition(running, "stopped", T0 + timedelta(hours=2))
    assert (running.status, stopped.status) == ("running", "stopped")
    assert T0 < running.updated_at < stopped.updated_at
    assert stopped.created_at == T0 and stopped.variants == draft().variants


def test_a_new_version_is_newer_even_when_the_clock_is_behind():
    assert transition(draft(), "running", T0 - timedelta(days=1)).updated_at > T0


@pytest.mark.parametrize(("status", "to", "message"), [
    ("stopped", "running", "is stopped and cannot restart"),
    ("draft", "stopped", "is a draft and never ran: nothing to stop"),
    ("running", "running", "'tone' is already running"),
    ("stopped", "stopped", "'tone' is already stopped"),
    ("running", "draft", "cannot go from running to draft"),
])
def test_bad_transitions_say_why(status, to, message):
    with pytest.raises(TransitionError, match=message):
        transition(draft(status=status), to, T0)


def test_overlapping_namespaces_with_running_experiments_only():
    candidate = draft(namespace=Namespace("prompts", 0.0, 0.6))
    other = draft(key="other", status="running", namespace=Namespace("prompts", 0.5, 1.0))
    (conflict,) = namespace_conflicts(candidate, [other])
    assert str(conflict) == "'tone' and 'other' overlap in namespace 'prompts' on [0.5, 0.6)"
    assert namespace_conflicts(candidate, [replace(other, status="draft")]) == []
    assert namespace_conflicts(candidate, [replace(other, namespace=Namespace("prompts", 0.6, 1))]) == []
    assert namespace_conflicts(candidate, [replace(other, namespace=Namespace("models", 0, 1))]) == []
    # Its own stored (older) version is not a conflict.
    assert namespace_conflicts(candidate, [replace(candidate, status="running")]) == []


def test_unreachable_database_is_a_clear_error():
    for args in (["start", "tone"], ["stop", "tone"], ["show", "tone"], ["list"]):
        result = run(*args, *UNREACHABLE)
        assert result.exit_code == 1, args
        assert "cannot reach the database at postgresql://llmpulse@127.0.0.1:1/x" in result.output
        assert "Traceback" not in result.output


def test_list_table_shows_the_start_time():
    rows = [StoredExperiment(draft(status="running"), T0, None), StoredExperiment(draft(key="b"), None, None)]
    lines = format_list(rows).splitlines()
    assert lines[0].split() == ["KEY", "STATUS", "VARIANTS", "PRIMARY", "METRIC", "OWNER", "STARTED"]
    assert lines[1].startswith("tone  running") and lines[1].endswith("2025-06-01 09:00 UTC")
    assert lines[2].startswith("b     draft") and lines[2].endswith("-")


def test_from_template_rejects_unknown_templates():
    with pytest.raises(ValueError, match="unknown template 'x'; known: prompt-ab"):
        from_template("x", "k", "o")
    with pytest.raises(ExperimentError):
        from_template("prompt-ab", "k", "o", control="a", treatment="b", coverage=2.0)
