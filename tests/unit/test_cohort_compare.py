"""`llmpulse cohorts compare` without a database: --since, metrics, --by, and the sums-to-input step."""
from __future__ import annotations

import json
from datetime import timedelta

import pytest
from click.testing import CliRunner

from processors.cohort_compare import METRICS, CohortSums, check_metric, compare_cohorts, parse_since
from processors.cohort_stats import CohortRate, CohortStats, compare_means
from processors.cohorts_cli import cohorts

# A URL nothing listens on: commands that fail before connecting must not need a database.
NOWHERE = "postgresql://nobody@127.0.0.1:1/none"


@pytest.mark.parametrize(("text", "expected"), [
    ("7d", timedelta(days=7)), ("24h", timedelta(hours=24)), ("90m", timedelta(minutes=90)),
    ("2w", timedelta(weeks=2)), (" 1 d ", timedelta(days=1)),
])
def test_since_parses_whole_units(text, expected):
    assert parse_since(text) == expected


@pytest.mark.parametrize(("text", "message"), [
    ("7 days", "use a whole number and one unit"),
    ("1.5h", "use a whole number and one unit"),
    ("1h30m", "use a whole number and one unit"),
    ("-3d", "use a whole number and one unit"),
    ("", "use a whole number and one unit"),
    ("0d", "empty range"),
    ("999999999999w", "longer than"),
    ("5000d", "longer than"),
])
def test_since_rejects_what_it_cannot_read(text, message):
    with pytest.raises(ValueError, match=message):
        parse_since(text)


def test_unknown_metric_lists_the_valid_ones():
    with pytest.raises(ValueError, match="use one of success_rate, cost, rating"):
        check_metric("latency")


def test_sums_become_the_statistics_inputs():
    assert CohortSums("a", 10, 7.0, None, 0).to_input("success_rate") == CohortRate("a", 7, 10)
    assert CohortSums("a", 3, 6.0, 14.0, 0).to_input("cost") == CohortStats("a", 3, 6.0, 14.0)
    sums = [CohortSums("a", 3, 6.0, 14.0, 0), CohortSums("b", 4, 12.0, 40.0, 0)]
    assert compare_cohorts(sums, "rating") == compare_means([s.to_input("rating") for s in sums])
    assert set(METRICS) == {"success_rate", "cost", "rating"}


def test_by_must_be_the_primary_cohort():
    result = CliRunner().invoke(cohorts, ["compare", "--metric", "cost", "--by", "country",
                                          "--database-url", NOWHERE])
    assert result.exit_code == 2
    assert "the primary cohort 'plan'" in result.output
    assert "'country' is configured but not aggregated" in result.output
    assert '"primary": "country"' in result.output


def test_by_an_unconfigured_cohort(tmp_path):
    path = tmp_path / "cohorts.json"
    path.write_text(json.dumps({"version": 1, "primary": "tier", "cohorts": [{"name": "tier", "by": "plan"}]}))
    result = CliRunner().invoke(cohorts, ["compare", "--metric", "cost", "--by", "plan",
                                          "--cohorts-file", str(path), "--database-url", NOWHERE])
    assert result.exit_code == 2
    assert "the primary cohort 'tier'" in result.output and "'plan' is not configured" in result.output


def test_bad_options_are_usage_errors():
    runner = CliRunner()
    result = runner.invoke(cohorts, ["compare", "--metric", "latency", "--database-url", NOWHERE])
    assert result.exit_code == 2 and "'latency' is not one of" in result.output
    result = runner.invoke(cohorts, ["compare", "--metric", "cost", "--since", "week", "--database-url", NOWHERE])
    assert result.exit_code == 2 and "cannot read --since 'week'" in result.output
    result = runner.invoke(cohorts, ["compare", "--metric", "cost", "--alpha", "1.5", "--database-url", NOWHERE])
    assert result.exit_code == 2 and "--alpha" in result.output


def test_an_unreachable_database_is_a_clear_error():
    result = CliRunner().invoke(cohorts, ["compare", "--metric", "cost", "--database-url", NOWHERE])
    assert result.exit_code == 1
    assert "cannot connect to the database at postgresql://nobody@127.0.0.1:1/none" in result.output
