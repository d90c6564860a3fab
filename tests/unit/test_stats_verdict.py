"""Verdict rules: invalid, ship, no difference, keep running, with reasons."""
from __future__ import annotations

import json

import numpy as np
import pytest

from processors.experiments.stats import (
    CovariateStats,
    Decision,
    ExperimentSpec,
    MeanStats,
    MetricSpec,
    ProportionStats,
    RatioStats,
    analyze,
    proportion_ztest,
)


def ms(n, mean, var):
    """MeanStats with a given mean and sample variance."""
    return MeanStats(n, n * mean, (n - 1) * var + n * mean * mean)


def spec(**kw):
    base = dict(control="a", weights={"a": 1, "b": 1}, primary=MetricSpec("conv", mde=0.05))
    return ExperimentSpec(**{**base, **kw})


def run(sp, stats, exposures=None):
    exposures = exposures or {k: float(next(iter(v.values())).n) for k, v in stats.items()}
    v = analyze(sp, exposures, stats)
    json.dumps(v.to_dict(), allow_nan=False)        # always serialisable, no NaN
    return v


def test_clear_winner_ships():
    v = run(spec(), {"a": {"conv": ProportionStats(40_000, 4000)},
                     "b": {"conv": ProportionStats(40_000, 4600)}})
    assert v.decision is Decision.SHIP and v.variant == "b"
    assert "b beats control: conv +15.0%" in v.reason and "confidence sequence" in v.reason


def test_srm_invalidates_even_a_winner():
    v = run(spec(), {"a": {"conv": ProportionStats(40_000, 4000)},
                     "b": {"conv": ProportionStats(40_000, 4600)}},
            exposures={"a": 40_000, "b": 41_500})
    assert v.decision is Decision.INVALID and v.variant is None
    assert "sample ratio mismatch" in v.reason and v.srm.flagged


def test_guardrail_breach_invalidates():
    sp = spec(guardrails=(MetricSpec("latency_ms", goal="decrease", tolerance=0.02),))
    stats = {"a": {"conv": ProportionStats(40_000, 4000), "latency_ms": ms(40_000, 800, 200**2)},
             "b": {"conv": ProportionStats(40_000, 4600), "latency_ms": ms(40_000, 880, 200**2)}}
    v = run(sp, stats)
    assert v.decision is Decision.INVALID
    assert "guardrail" in v.reason and "latency_ms +10.0%" in v.reason


def test_guardrail_within_tolerance_is_not_a_breach():
    sp = spec(guardrails=(MetricSpec("latency_ms", goal="decrease", tolerance=0.05),))
    stats = {"a": {"conv": ProportionStats(40_000, 4000), "latency_ms": ms(40_000, 800, 200**2)},
             "b": {"conv": ProportionStats(40_000, 4600), "latency_ms": ms(40_000, 816, 200**2)}}
    v = run(sp, stats)
    assert v.decision is Decision.SHIP
    g = [c for c in v.comparisons if c.role == "guardrail"][0]
    assert g.significant and g.direction == "worse"          # worse, but tolerated


def test_lower_is_better_metric():
    sp = spec(primary=MetricSpec("cost", goal="decrease", mde=0.05))
    v = run(sp, {"a": {"cost": ms(30_000, 0.020, 0.0001)},
                 "b": {"cost": ms(30_000, 0.018, 0.0001)}})
    assert v.decision is Decision.SHIP and v.variant == "b"
    assert v.comparisons[0].chance_to_win > 0.99


def test_holm_across_variants_and_best_winner():
    w = {"a": 1, "b": 1, "c": 1, "d": 1}
    stats = {"a": {"conv": ProportionStats(50_000, 5000)},
             "b": {"conv": ProportionStats(50_000, 5400)},
             "c": {"conv": ProportionStats(50_000, 5700)},
             "d": {"conv": ProportionStats(50_000, 5050)}}
    v = run(spec(weights=w), stats)
    assert v.decision is Decision.SHIP and v.variant == "c"
    assert "after Holm over 3 variants" in v.reason
    prim = {c.variant: c for c in v.comparisons}
    assert prim["d"].adjusted_p_value >= prim["d"].p_value and not prim["d"].significant


def test_every_variant_worse_ships_control():
    v = run(spec(), {"a": {"conv": ProportionStats(40_000, 4600)},
                     "b": {"conv": ProportionStats(40_000, 4000)}})
    assert v.decision is Decision.SHIP and v.variant == "a"
    assert "significantly worse" in v.reason


def test_tight_interval_inside_mde_is_no_difference():
    v = run(spec(), {"a": {"conv": ms(400_000, 10.0, 4.0)}, "b": {"conv": ms(400_000, 10.01, 4.0)}})
    assert v.decision is Decision.NO_DIFFERENCE and "by 5% or more" in v.reason


def test_small_experiment_keeps_running_with_units_needed():
    v = run(spec(), {"a": {"conv": ProportionStats(500, 50)},
                     "b": {"conv": ProportionStats(500, 55)}})
    assert v.decision is Decision.KEEP_RUNNING
    assert v.units_remaining > 0 and v.sample_size_per_arm["a"] > 500
    assert f"about {v.units_remaining:,} more units" in v.reason


def test_fixed_horizon_refuses_to_decide_before_planned_size():
    sp = spec(sequential=False)
    early = run(sp, {"a": {"conv": ProportionStats(3000, 300)},
                     "b": {"conv": ProportionStats(3000, 380)}})
    assert early.comparisons[0].significant
    assert early.decision is Decision.KEEP_RUNNING and "peeking" in early.reason
    n = early.sample_size_per_arm["a"]
    done = run(sp, {"a": {"conv": ProportionStats(n, 0.1 * n)},
                    "b": {"conv": ProportionStats(n, 0.112 * n)}})
    assert done.decision is Decision.SHIP
    flat = run(sp, {"a": {"conv": ProportionStats(n, 0.1 * n)},
                    "b": {"conv": ProportionStats(n, 0.103 * n)}})   # +3%, not significant
    assert flat.decision is Decision.NO_DIFFERENCE and "planned sample size reached" in flat.reason


def test_sequential_needs_more_units_than_fixed():
    stats = {"a": {"conv": ProportionStats(500, 50)}, "b": {"conv": ProportionStats(500, 55)}}
    seq, fixed = run(spec(), stats), run(spec(sequential=False), stats)
    assert seq.sample_size_per_arm["a"] > fixed.sample_size_per_arm["a"]


@pytest.mark.parametrize("a, b", [
    (ms(1, 5.0, 0.0), ms(1, 6.0, 0.0)),
    (MeanStats.empty(), MeanStats.empty()),
    (ms(100, 0.0, 0.0), ms(100, 1.0, 1.0)),           # zero control mean: no relative lift
    (RatioStats(50, 10.0, 10.0, 0.0, 0.0, 0.0), RatioStats(50, 10.0, 10.0, 50.0, 50.0, 10.0)),
])
def test_not_enough_data_keeps_running_without_nan(a, b):
    with np.errstate(all="raise"):
        v = run(spec(), {"a": {"conv": a}, "b": {"conv": b}}, exposures={"a": 100, "b": 100})
    assert v.decision is Decision.KEEP_RUNNING and "not enough data" in v.reason


def test_cuped_metric_uses_the_covariate_and_needs_fewer_units():
    rng = np.random.default_rng(0)
    pre = rng.normal(10, 3, (2, 3000))
    post = pre + rng.normal(0, 1.5, pre.shape)
    post[1] += 0.15                                   # +1.5%
    cov = {k: {"spend": CovariateStats.from_values(post[i], pre[i])} for i, k in enumerate("ab")}
    plain = {k: {"spend": MeanStats.from_values(post[i])} for i, k in enumerate("ab")}
    sp = spec(primary=MetricSpec("spend", mde=0.03))
    v_cov, v_plain = run(sp, cov), run(sp, plain)
    assert v_cov.comparisons[0].cuped_theta == pytest.approx(1.0, abs=0.05)
    assert v_cov.sample_size_per_arm["a"] < 0.4 * v_plain.sample_size_per_arm["a"]
    c, p = v_cov.comparisons[0], v_plain.comparisons[0]
    assert (c.ci_high - c.ci_low) < 0.5 * (p.ci_high - p.ci_low)     # corr 0.89
    assert c.ci_low < 0.015 < c.ci_high
    assert v_cov.decision is Decision.SHIP


def test_unequal_weights_scale_the_sample_size():
    v = run(spec(weights={"a": 3, "b": 1}), {"a": {"conv": ProportionStats(3000, 300)},
                                             "b": {"conv": ProportionStats(1000, 100)}})
    need = v.sample_size_per_arm
    assert need["b"] == pytest.approx(need["a"] / 3, abs=1)
    assert not v.srm.flagged


def test_secondary_metrics_are_reported_not_decisive():
    sp = spec(secondary=(MetricSpec("tokens"),))
    stats = {"a": {"conv": ProportionStats(2000, 200), "tokens": ms(2000, 500, 100.0)},
             "b": {"conv": ProportionStats(2000, 200), "tokens": ms(2000, 520, 100.0)}}
    v = run(sp, stats)
    sec = [c for c in v.comparisons if c.role == "secondary"][0]
    assert sec.significant and v.decision is Decision.KEEP_RUNNING


def test_input_errors():
    with pytest.raises(ValueError):
        spec(control="z")
    with pytest.raises(ValueError):
        spec(weights={"a": 1})
    with pytest.raises(ValueError):
        MetricSpec("x", goal="up")
    with pytest.raises(ValueError):
        spec(guardrails=(MetricSpec("conv"),))              # duplicate name
    with pytest.raises(ValueError):
        analyze(spec(), {"a": 1}, {"a": {"conv": ProportionStats(1, 1)}})
    with pytest.raises(ValueError):
        analyze(spec(), {"a": 1, "b": 1}, {"a": {"conv": ProportionStats(1, 1)}, "b": {}})
    with pytest.raises(TypeError):
        analyze(spec(), {"a": 10, "b": 10},
                {"a": {"conv": ProportionStats(10, 1)}, "b": {"conv": ms(10, 1.0, 1.0)}})


def test_aa_verdict_read_at_every_look_rarely_ships():
    """End to end: 100 A/A experiments, verdict read at 8 looks each."""
    rng = np.random.default_rng(11)
    looks, per_look, k = 8, 400, 100
    conv = rng.binomial(per_look, 0.1, (2, k, looks)).cumsum(axis=2)
    shipped = 0
    for e in range(k):
        for t in range(looks):
            n = per_look * (t + 1)
            v = analyze(spec(), {"a": n, "b": n},
                        {"a": {"conv": ProportionStats(n, conv[0, e, t])},
                         "b": {"conv": ProportionStats(n, conv[1, e, t])}})
            if v.decision is Decision.SHIP:
                shipped += 1
                break
    assert shipped <= 0.05 * k, shipped
    # the same data read naively (fixed-horizon z-test at every look)
    n = per_look * np.arange(1, looks + 1)
    p = proportion_ztest(ProportionStats(n, conv[0]), ProportionStats(n, conv[1])).p_value
    naive = int((p < 0.05).any(axis=1).sum())
    assert naive > 2 * max(shipped, 3), (naive, shipped)
