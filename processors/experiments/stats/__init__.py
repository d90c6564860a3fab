"""A/B statistics over per-variant sufficient statistics.

Plain, vectorised functions with no I/O: the stream processor keeps the sums
of :mod:`.sufficient` per (experiment, variant, metric), and the dashboard,
the database job or a notebook calls these on them.

=====================  ===================================================
Module                 What it answers
=====================  ===================================================
:mod:`.sufficient`     the sums kept per variant, merged with ``+``
:mod:`.frequentist`    Welch t, two-proportion z, delta-method lifts, Holm
:mod:`.sequential`     always-valid p-values, confidence sequences
:mod:`.bayesian`       chance to beat control, expected loss
:mod:`.cuped`          variance reduction with a pre-period covariate
:mod:`.srm`            sample ratio mismatch
:mod:`.power`          power and sample size
:mod:`.verdict`        keep running / ship X / no difference / invalid
=====================  ===================================================

Methods, references and how to read the results: ``docs/experiments-statistics.md``.

Examples
--------
>>> from processors.experiments.stats import MeanStats, ttest
>>> r = ttest(MeanStats(1000, 10000.0, 124000.0), MeanStats(1000, 10600.0, 138000.0),
...           relative=True)
>>> round(r.estimate, 3), round(r.p_value, 3)
(0.06, 0.009)
"""
from .bayesian import BayesianResult, GaussianPrior, bayesian_test, normal_risk
from .cuped import cuped_adjust, cuped_theta, variance_reduction
from .frequentist import LiftResult, holm, lift_variance, proportion_ztest, ttest
from .power import power, sample_size, sequential_sample_size
from .sequential import (
    mixture_half_width,
    mixture_p_value,
    msprt,
    rho_for_tuning,
    sequential_ttest,
)
from .srm import SRM_THRESHOLD, SRMResult, srm_test
from .sufficient import (
    ArmMoments,
    CovariateStats,
    MeanStats,
    ProportionStats,
    RatioStats,
    as_moments,
)
from .verdict import Comparison, Decision, ExperimentSpec, MetricSpec, Verdict, analyze

__all__ = [
    "SRM_THRESHOLD",
    "ArmMoments",
    "BayesianResult",
    "Comparison",
    "CovariateStats",
    "Decision",
    "ExperimentSpec",
    "GaussianPrior",
    "LiftResult",
    "MeanStats",
    "MetricSpec",
    "ProportionStats",
    "RatioStats",
    "SRMResult",
    "Verdict",
    "analyze",
    "as_moments",
    "bayesian_test",
    "cuped_adjust",
    "cuped_theta",
    "holm",
    "lift_variance",
    "mixture_half_width",
    "mixture_p_value",
    "msprt",
    "normal_risk",
    "power",
    "proportion_ztest",
    "rho_for_tuning",
    "sample_size",
    "sequential_sample_size",
    "sequential_ttest",
    "srm_test",
    "ttest",
    "variance_reduction",
]
