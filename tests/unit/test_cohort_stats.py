"""Cohort comparisons (processors/cohort_stats.py) against the reference implementations.

Welch's test is checked against scipy's ``ttest_ind`` on the raw samples
whose sufficient statistics we pass; intervals and tests for rates against
statsmodels and published worked examples; the multiplicity correction
against ``multipletests``. Seeded simulations check the behaviour that
matters in the end: about ``alpha`` false positives when cohorts do not
differ, and power for a known difference.
"""
from __future__ import annotations

import dataclasses
import math
import re
from decimal import Decimal

import numpy as np
import pytest
from scipy import stats
from statsmodels.stats.multitest import multipletests
from statsmodels.stats.proportion import proportion_confint, proportions_ztest

from processors.cohort_stats import (
    CohortRate,
    CohortResult,
    CohortStats,
    Comparison,
    compare_means,
    compare_rates,
    render,
)

REL = 1e-9  # sufficient statistics lose a few digits to cancellation, not more


def stats_of(name: str, values) -> CohortStats:
    return CohortStats.from_values(name, np.asarray(values, dtype=float).tolist())


def assert_no_nan(cmp: Comparison) -> None:
    for row in cmp.rows:
        for f in dataclasses.fields(CohortResult):
            v = getattr(row, f.name)
            assert not (isinstance(v, float) and not math.isfinite(v)), (row.name, f.name, v)
            assert not isinstance(v, np.generic), (row.name, f.name, type(v))


# -- means: Welch's t-test ------------------------------------------------------


@pytest.mark.parametrize(
    ("seed", "n_ref", "n_other", "sd_other", "shift"),
    [
        (1, 50, 50, 1.0, 0.0),     # A/A
        (2, 400, 35, 3.0, 0.4),    # small noisy cohort vs a big quiet one
        (3, 5, 2, 0.5, -1.0),      # smallest testable cohort
        (4, 1000, 120, 1.0, 0.1),
    ],
)
@pytest.mark.parametrize("alpha", [0.05, 0.01])
def test_welch_matches_scipy_ttest_ind_on_raw_samples(seed, n_ref, n_other, sd_other, shift, alpha):
    rng = np.random.default_rng(seed)
    ref = rng.normal(10.0, 1.0, n_ref)
    other = rng.normal(10.0 + shift, sd_other, n_other)
    cmp = compare_means([stats_of("free", ref), stats_of("pro", other)], alpha=alpha)
    row = cmp.row("pro")

    expected = stats.ttest_ind(other, ref, equal_var=False)
    ci = expected.confidence_interval(confidence_level=1 - alpha)
    assert row.statistic == pytest.approx(expected.statistic, rel=REL)
    assert row.df == pytest.approx(expected.df, rel=REL)
    assert row.p_value == pytest.approx(expected.pvalue, rel=1e-7)
    assert row.diff == pytest.approx(other.mean() - ref.mean(), rel=REL)
    assert (row.diff_ci_low, row.diff_ci_high) == pytest.approx((ci.low, ci.high), rel=REL)
    # and the p-value of scipy's from-stats entry point, fed the same summary
    from_stats = stats.ttest_ind_from_stats(
        other.mean(), other.std(ddof=1), n_other, ref.mean(), ref.std(ddof=1), n_ref, equal_var=False
    )
    assert row.p_value == pytest.approx(from_stats.pvalue, rel=1e-7)
    # each cohort's own t interval
    mean_ci = stats.t.interval(1 - alpha, n_other - 1, loc=other.mean(), scale=stats.sem(other))
    assert (row.ci_low, row.ci_high) == pytest.approx(mean_ci, rel=REL)
    assert cmp.test == "Welch's t-test"
    assert row.test == "Welch's t-test"
    assert_no_nan(cmp)


def test_welch_on_cost_sized_values():
    """Costs are ~1e-4 USD: variances ~1e-9, their squares ~1e-18 in the df formula."""
    rng = np.random.default_rng(7)
    free = rng.lognormal(math.log(2e-5), 1.0, 300)
    pro = rng.lognormal(math.log(3e-5), 1.2, 80)
    row = compare_means([stats_of("free", free), stats_of("pro", pro)]).row("pro")
    expected = stats.ttest_ind(pro, free, equal_var=False)
    assert row.df == pytest.approx(expected.df, rel=1e-7)
    assert row.p_value == pytest.approx(expected.pvalue, rel=1e-6)


def test_sufficient_statistics_as_the_database_returns_them():
    # psycopg returns sum() over numeric as Decimal and count() as int
    c = CohortStats("free", 3, Decimal("6.0"), Decimal("14.0"))
    assert (c.n, c.mean, c.variance) == (3, 2.0, 1.0)
    c = CohortStats("free", np.int64(3), np.float64(6.0), np.float64(14.0))
    assert type(c.n) is int and type(c.total) is float


# -- rates ----------------------------------------------------------------------


@pytest.mark.parametrize(("k", "n"), [(0, 1), (0, 20), (20, 20), (1, 3), (81, 263), (997, 1000)])
@pytest.mark.parametrize("alpha", [0.05, 0.1])
def test_wilson_interval_matches_statsmodels(k, n, alpha):
    row = compare_rates([CohortRate("a", k, n)], alpha=alpha).row("a")
    assert row.value == k / n
    assert (row.ci_low, row.ci_high) == pytest.approx(
        proportion_confint(k, n, alpha=alpha, method="wilson"), rel=1e-12, abs=1e-15
    )


def test_wilson_interval_published_example():
    # Newcombe (1998a), Statistics in Medicine 17:857, 81/263, score method.
    row = compare_rates([CohortRate("a", 81, 263)]).row("a")
    assert (round(row.ci_low, 4), round(row.ci_high, 4)) == (0.2553, 0.3662)


def test_newcombe_difference_interval_published_example_and_formula():
    # Newcombe (1998b), Statistics in Medicine 17:873, 56/70 - 48/80, method 10.
    row = compare_rates([CohortRate("ref", 48, 80), CohortRate("x", 56, 70)], reference="ref").row("x")
    assert (round(row.diff_ci_low, 4), round(row.diff_ci_high, 4)) == (0.0524, 0.3339)
    # ... and the hybrid-score formula from the two Wilson intervals
    p1, p2 = 56 / 70, 48 / 80
    l1, u1 = proportion_confint(56, 70, method="wilson")
    l2, u2 = proportion_confint(48, 80, method="wilson")
    low = p1 - p2 - math.hypot(p1 - l1, u2 - p2)
    high = p1 - p2 + math.hypot(u1 - p1, p2 - l2)
    assert (row.diff_ci_low, row.diff_ci_high) == pytest.approx((low, high), rel=1e-12)


@pytest.mark.parametrize(
    ("s1", "n1", "s2", "n2"), [(900, 1000, 480, 500), (45, 60, 30, 50), (10, 100, 0, 100)]
)
def test_z_test_matches_statsmodels(s1, n1, s2, n2):
    cmp = compare_rates([CohortRate("free", s1, n1), CohortRate("pro", s2, n2)])
    row = cmp.row("pro")
    z, p = proportions_ztest([s2, s1], [n2, n1])
    assert row.test == "two-proportion z-test"
    assert row.statistic == pytest.approx(z, rel=1e-12)
    assert row.p_value == pytest.approx(p, rel=1e-12)
    assert row.diff == pytest.approx(s2 / n2 - s1 / n1)
    assert "Fisher" not in cmp.test
    assert_no_nan(cmp)


def test_fisher_exact_for_tiny_samples():
    cmp = compare_rates([CohortRate("free", 7, 10), CohortRate("pro", 9, 10)])
    row = cmp.row("pro")
    assert row.test == "Fisher's exact test"
    assert row.p_value == pytest.approx(stats.fisher_exact([[9, 1], [7, 3]]).pvalue, rel=1e-12)
    assert row.statistic is None
    assert "Fisher's exact test" in row.note and "< 5" in row.note
    assert cmp.test == "Fisher's exact test"
    assert "Fisher's exact p" in render(cmp, "success rate")
    assert_no_nan(cmp)


def test_z_test_or_fisher_decided_by_smallest_expected_count():
    # 20 trials each; the smallest expected count is min(S, F) * 20 / 40.
    at_5 = compare_rates([CohortRate("a", 15, 20), CohortRate("b", 15, 20)]).row("b")
    below = compare_rates([CohortRate("a", 16, 20), CohortRate("b", 15, 20)]).row("b")
    assert at_5.test == "two-proportion z-test"  # F = 10: expected 5.0
    assert below.test == "Fisher's exact test"  # F = 9: expected 4.5


def test_all_successes_everywhere_is_no_difference_not_nan():
    # Pooled rate 1: the z statistic would be 0/0; Fisher's test says p = 1.
    cmp = compare_rates([CohortRate("free", 500, 500), CohortRate("pro", 200, 200)])
    row = cmp.row("pro")
    assert (row.diff, row.p_value, row.significant) == (0.0, 1.0, False)
    assert_no_nan(cmp)
    assert "nan" not in render(cmp, "success rate").lower()


def test_mixed_tests_are_named():
    cmp = compare_rates(
        [CohortRate("free", 900, 1000), CohortRate("pro", 470, 500), CohortRate("team", 5, 6)]
    )
    assert cmp.row("pro").test == "two-proportion z-test"
    assert cmp.row("team").test == "Fisher's exact test"
    assert cmp.test == (
        "two-proportion z-test, Fisher's exact test where an expected count < 5, Holm-adjusted"
    )


# -- multiple comparisons -------------------------------------------------------


def test_holm_matches_multipletests_for_means():
    rng = np.random.default_rng(11)
    shifts = {"free": 0.0, "pro": 0.3, "team": 0.05, "enterprise": 0.5, "edu": -0.2}
    cohorts = [stats_of(name, rng.normal(shift, 1.0, 120 if name == "free" else 60))
               for name, shift in shifts.items()]
    cmp = compare_means(cohorts)
    assert cmp.reference == "free" and cmp.n_comparisons == 4
    assert cmp.test == "Welch's t-test, Holm-adjusted"
    tested = [r for r in cmp.rows if r.name != "free"]
    for r, c in zip(tested, cohorts[1:]):  # raw p-values are the pairwise ones
        assert r.p_value == compare_means([cohorts[0], c]).row(r.name).p_value
    reject, adjusted, _, _ = multipletests([r.p_value for r in tested], alpha=0.05, method="holm")
    assert [r.p_adjusted for r in tested] == pytest.approx(adjusted.tolist(), rel=1e-12)
    assert [r.significant for r in tested] == reject.tolist()
    assert all(r.p_adjusted >= r.p_value for r in tested)
    assert any(r.significant for r in tested) and not all(r.significant for r in tested)


def test_holm_matches_multipletests_for_rates_and_uses_adjusted_p_for_significance():
    # pro's raw p is below 0.05 but its Holm-adjusted p is not.
    cohorts = [CohortRate("free", 1800, 2000), CohortRate("pro", 466, 500),
               CohortRate("team", 452, 500), CohortRate("edu", 447, 500)]
    cmp = compare_rates(cohorts)
    tested = [r for r in cmp.rows if r.name != "free"]
    reject, adjusted, _, _ = multipletests([r.p_value for r in tested], method="holm")
    assert [r.p_adjusted for r in tested] == pytest.approx(adjusted.tolist(), rel=1e-12)
    pro = cmp.row("pro")
    assert pro.p_value < 0.05 <= pro.p_adjusted and pro.significant is False
    assert "not significant after Holm correction" in render(cmp, "success rate")


def test_single_comparison_is_not_adjusted():
    cmp = compare_rates([CohortRate("free", 900, 1000), CohortRate("pro", 470, 500)])
    row = cmp.row("pro")
    assert row.p_adjusted == row.p_value and "Holm" not in cmp.test
    assert "significant at alpha 0.05" in render(cmp, "success rate")


# -- calibration by simulation -------------------------------------------------


def _rejections(reps, make_pair, compare) -> float:
    hits = 0
    for i in range(reps):
        row = compare(make_pair(i)).rows[1]
        hits += bool(row.significant)
    return hits / reps


def _sufficient(samples: np.ndarray) -> list[tuple[int, float, float]]:
    return list(zip([samples.shape[1]] * len(samples), samples.sum(axis=1).tolist(),
                    (samples * samples).sum(axis=1).tolist()))


def test_simulation_welch_false_positive_rate_and_power():
    rng = np.random.default_rng(20250601)
    alpha, reps = 0.05, 2000
    # A/A with unequal sizes and unequal spreads: where Student's t (equal
    # variances) would reject far too often, Welch must stay near alpha.
    ref = _sufficient(rng.normal(0.0, 1.0, (reps, 200)))
    other = _sufficient(rng.normal(0.0, 3.0, (reps, 40)))
    fpr = _rejections(reps, lambda i: [CohortStats("ref", *ref[i]), CohortStats("x", *other[i])],
                      lambda pair: compare_means(pair, alpha=alpha))
    tolerance = 4 * math.sqrt(alpha * (1 - alpha) / reps)  # 4 binomial SEs, ~0.02
    assert abs(fpr - alpha) < tolerance, fpr

    # Power for a half-standard-deviation shift with 100 per cohort: ~0.94 in theory.
    reps = 1000
    ref = _sufficient(rng.normal(0.0, 1.0, (reps, 100)))
    other = _sufficient(rng.normal(0.5, 1.0, (reps, 100)))
    power = _rejections(reps, lambda i: [CohortStats("ref", *ref[i]), CohortStats("x", *other[i])],
                        lambda pair: compare_means(pair, alpha=alpha))
    assert power > 0.8, power


def test_simulation_rates_false_positive_rate_and_power():
    rng = np.random.default_rng(20250602)
    alpha, reps = 0.05, 2000
    # A/A at a 90% success rate, the region where Wald intervals misbehave.
    ref = rng.binomial(600, 0.90, reps).tolist()
    other = rng.binomial(300, 0.90, reps).tolist()
    fpr = _rejections(reps, lambda i: [CohortRate("ref", ref[i], 600), CohortRate("x", other[i], 300)],
                      lambda pair: compare_rates(pair, alpha=alpha))
    tolerance = 4 * math.sqrt(alpha * (1 - alpha) / reps)
    assert abs(fpr - alpha) < tolerance, fpr

    # Power for 90% vs 95% with 600 per cohort: ~0.91 in theory.
    reps = 1000
    ref = rng.binomial(600, 0.90, reps).tolist()
    other = rng.binomial(600, 0.95, reps).tolist()
    power = _rejections(reps, lambda i: [CohortRate("ref", ref[i], 600), CohortRate("x", other[i], 600)],
                        lambda pair: compare_rates(pair, alpha=alpha))
    assert power > 0.8, power


# -- guard rails ----------------------------------------------------------------


def test_insufficient_data_is_reported_not_compared():
    cmp = compare_means([
        stats_of("free", [1.0, 2.0, 3.0, 4.0]), stats_of("pro", [2.0, 3.5, 5.0]),
        stats_of("team", [7.0]), CohortStats("edu", 0, 0.0, 0.0),
    ])
    team, edu = cmp.row("team"), cmp.row("edu")
    assert team.note == edu.note == "insufficient data (n < 2)"
    assert (team.value, edu.value) == (7.0, None)
    for r in (team, edu):
        assert (r.ci_low, r.diff, r.p_value, r.p_adjusted, r.significant) == (None,) * 5
    assert cmp.n_comparisons == 1 and "Holm" not in cmp.test  # only pro was tested
    assert_no_nan(cmp)
    text = render(cmp, "rating", "stars")
    assert "team: insufficient data (n = 1), not compared." in text
    assert "nan" not in text.lower()

    rates = compare_rates([CohortRate("free", 90, 100), CohortRate("edu", 0, 0)])
    assert rates.row("edu").note == "insufficient data (0 trials)"
    assert rates.row("edu").value is None
    assert_no_nan(rates)


def test_reference_with_insufficient_data_compares_nothing():
    cmp = compare_means([stats_of("free", [1.0, 2.0]), stats_of("pro", [5.0])], reference="pro")
    assert cmp.row("pro").note == "reference; insufficient data (n < 2)"
    assert cmp.row("free").note == "not compared: reference has insufficient data"
    assert cmp.n_comparisons == 0
    assert "free: not compared, reference pro has insufficient data." in render(cmp, "rating")

    rates = compare_rates([CohortRate("a", 0, 0), CohortRate("b", 0, 0)])
    assert rates.reference == "a" and rates.n_comparisons == 0
    assert_no_nan(rates)
    render(rates, "success rate")


def test_zero_variance_in_one_cohort():
    constant = stats_of("pro", [5.0] * 30)
    varied = stats_of("free", [3.0, 4.0, 5.0, 4.0, 3.0, 4.0, 5.0, 4.0] * 5)
    cmp = compare_means([varied, constant])
    row = cmp.row("pro")
    assert row.note == "zero variance"
    assert row.ci_low == row.ci_high == 5.0
    # Welch with one variance zero: all uncertainty, and df n - 1, from the other cohort
    assert row.df == pytest.approx(40 - 1)
    assert row.p_value is not None and row.significant is True
    assert_no_nan(cmp)


def test_zero_variance_in_both_cohorts():
    cmp = compare_means([stats_of("free", [4.0] * 10), stats_of("pro", [5.0] * 3)])
    row = cmp.row("pro")
    assert row.diff == 1.0
    assert (row.p_value, row.p_adjusted, row.significant, row.diff_ci_low) == (None,) * 4
    assert "both cohorts constant: no test possible" in row.note
    assert_no_nan(cmp)
    text = render(cmp, "rating", "stars")
    assert ("pro: rating 5.00 stars vs 4.00 stars in free; "
            "both cohorts constant, no test possible.") in text
    assert "nan" not in text.lower()


def test_float_noise_in_a_constant_cohort_is_zero_variance():
    # 0.1 is not exact in binary: naive float sums leave a variance of ~1e-18
    # (of either sign) for what is a constant cohort.
    n, x = 1000, 0.1
    total = sum([x] * n)
    total_sq = sum([x * x] * n)
    assert total_sq - total * total / n != 0.0
    c = CohortStats("pro", n, total, total_sq)
    assert c.variance == 0.0


def test_invalid_input_is_rejected():
    with pytest.raises(ValueError, match="inconsistent sums"):
        CohortStats("x", 10, 10.0, 5.0)  # sum of squares below sum**2 / n
    with pytest.raises(ValueError, match="finite"):
        CohortStats("x", 2, float("nan"), 1.0)
    with pytest.raises(ValueError, match="integer"):
        CohortStats("x", 2.5, 1.0, 1.0)
    with pytest.raises(ValueError, match=">= 0"):
        CohortRate("x", -1, 3)
    with pytest.raises(ValueError, match="successes"):
        CohortRate("x", 4, 3)
    a, b = CohortRate("a", 1, 2), CohortRate("b", 1, 2)
    with pytest.raises(ValueError, match="duplicate"):
        compare_rates([a, a])
    with pytest.raises(ValueError, match="not among"):
        compare_rates([a, b], reference="c")
    with pytest.raises(ValueError, match="alpha"):
        compare_rates([a, b], alpha=1.0)


def test_reference_defaults_to_the_largest_cohort_first_on_a_tie():
    cohorts = [CohortRate("a", 5, 10), CohortRate("b", 30, 40), CohortRate("c", 20, 40)]
    assert compare_rates(cohorts).reference == "b"
    assert compare_rates(cohorts, reference="a").reference == "a"
    means = [stats_of("x", [1, 2, 3]), stats_of("y", [1, 2, 3, 4]), stats_of("z", [3, 4, 5, 6])]
    assert compare_means(means).reference == "y"


def test_no_cohorts():
    cmp = compare_means([])
    assert (cmp.reference, cmp.rows, cmp.test) == (None, (), "Welch's t-test")
    assert render(cmp, "cost") == "cost: no cohorts to compare."


# -- rendering ------------------------------------------------------------------


def test_render_table_names_the_test_and_aligns_columns():
    cmp = compare_rates([CohortRate("free", 1800, 2000), CohortRate("pro", 980, 1000),
                         CohortRate("team", 430, 500), CohortRate("edu", 0, 0)])
    text = render(cmp, "success rate")
    lines = text.splitlines()
    assert cmp.test in lines[0] and "Holm-adjusted" in lines[0]
    assert "Wilson" in lines[1] and "Newcombe" in lines[1]
    table = lines[3:8]
    # numbers are right-aligned: the "n" column ends at one offset on every line
    n_end = table[0].index(" n ") + 2
    assert [line[n_end - 1] for line in table] == ["n", "0", "0", "0", "0"], table
    assert {line[n_end] for line in table} == {" "}
    assert "95% CI" in table[0] and "p (Holm)" in table[0]
    # two significant digits on the narrowest interval (pro's, +-0.89 points)
    assert ("pro: success rate is 8.00 points higher than free (95% CI 6.36 to 9.56), "
            "significant after Holm correction (adjusted p < 0.001).") in text
    assert ("team: success rate is 4.00 points lower than free (95% CI 0.90 to 7.54), "
            "significant after Holm correction (adjusted p = 0.010).") in text
    assert "edu: insufficient data (n = 0), not compared." in text


def test_render_lower_difference_states_interval_in_its_direction():
    cmp = compare_rates([CohortRate("free", 900, 1000), CohortRate("pro", 400, 500)])
    row = cmp.row("pro")
    text = render(cmp, "success rate")
    lo, hi = -row.diff_ci_high * 100, -row.diff_ci_low * 100
    assert f"is 10.0 points lower than free (95% CI {lo:.1f} to {hi:.1f})" in text
    assert 0 < lo < 10 < hi


def test_render_means_with_unit_and_alpha():
    rng = np.random.default_rng(3)
    cmp = compare_means([stats_of("free", rng.normal(0.0012, 0.0004, 500)),
                         stats_of("pro", rng.normal(0.0019, 0.0009, 200))], alpha=0.1)
    text = render(cmp, "cost per request", "USD")
    assert "Welch's t-test, alpha 0.1" in text.splitlines()[0]
    assert "cost per request (USD)" in text and "90% CI" in text
    pattern = r"pro: cost per request is 0\.000\d+ USD higher than free \(90% CI 0\.000\d+ to 0\.000\d+\)"
    assert re.search(pattern, text), text
