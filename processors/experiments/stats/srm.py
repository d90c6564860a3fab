"""Sample Ratio Mismatch: do exposures match the configured traffic split?

If 50/50 assignment produced 50,600 against 49,400 users, something between
assignment and logging drops or duplicates users of one arm (a crash in one
variant, a redirect, a bot filter, a cache). The users who remain are no
longer comparable, so **no** metric result can be trusted, however
significant. A chi-square goodness-of-fit test of observed exposures against
the weights finds it; at the conventional threshold ``p < 0.001`` (few false
alarms across many experiments checked every minute) the experiment is
flagged and no winner is declared.

References
----------
.. [1] Fabijan, A., Gupchup, J., Gupta, S., Omhover, J., Qin, W., Vermeer, L.,
   Dmitriev, P. (2019). Diagnosing sample ratio mismatch in online controlled
   experiments. KDD.

Examples
--------
>>> srm_test([50600, 49400], [0.5, 0.5]).flagged
True
>>> srm_test([50100, 49900], [0.5, 0.5]).flagged
False
"""
from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np
from scipy import stats as sps

__all__ = ["SRM_THRESHOLD", "SRMResult", "srm_test"]

#: p-value below which an experiment is flagged.
SRM_THRESHOLD = 0.001


@dataclass(frozen=True)
class SRMResult:
    """Chi-square test of exposures against weights.

    ``expected`` are the counts the weights imply for the observed total;
    ``message`` says in words what was found ('' when not flagged).
    """

    statistic: float
    p_value: float
    observed: tuple[float, ...]
    expected: tuple[float, ...]
    names: tuple[str, ...]
    flagged: bool
    threshold: float
    message: str


def _share(x: Sequence[float]) -> str:
    tot = float(sum(x))
    return " / ".join(f"{100.0 * v / tot:.1f}%" for v in x) if tot else "-"


def srm_test(
    observed: Sequence[float] | Mapping[str, float],
    weights: Sequence[float] | Mapping[str, float],
    *,
    threshold: float = SRM_THRESHOLD,
) -> SRMResult:
    """Chi-square test (``scipy.stats.chisquare``) of exposures against weights.

    Parameters
    ----------
    observed : sequence or mapping of counts
        Units exposed per variant. With a mapping, ``weights`` must be a
        mapping with the same keys.
    weights : sequence or mapping of float
        Configured traffic split, any positive scale (``[1, 1]`` = 50/50).
    threshold : float
        Flag when ``p_value < threshold``.

    Returns
    -------
    SRMResult
        With no exposures yet, or a single arm, ``p_value`` is 1 and nothing
        is flagged. Units in an arm whose weight is 0 are flagged outright.

    Examples
    --------
    >>> r = srm_test({"control": 1000, "b": 1130}, {"control": 1, "b": 1})
    >>> round(r.p_value, 4), r.flagged
    (0.0049, False)
    """
    if isinstance(observed, Mapping):
        if not isinstance(weights, Mapping) or set(weights) != set(observed):
            raise ValueError("observed and weights must name the same variants")
        names = tuple(observed)
        obs = np.array([observed[k] for k in names], dtype=float)
        w = np.array([weights[k] for k in names], dtype=float)
    else:
        obs = np.asarray(observed, dtype=float)
        w = np.asarray(weights, dtype=float)
        names = tuple(f"arm {i}" for i in range(obs.size))
    if obs.shape != w.shape or obs.ndim != 1:
        raise ValueError("observed and weights must be 1-d and of the same length")
    if np.any(~np.isfinite(obs)) or np.any(obs < 0) or np.any(~np.isfinite(w)) or np.any(w < 0):
        raise ValueError("counts and weights must be finite and non-negative")
    if not w.sum() > 0:
        raise ValueError("at least one weight must be positive")

    total = float(obs.sum())
    expected = w / w.sum() * total

    def result(stat: float, p: float, flagged: bool, message: str) -> SRMResult:
        return SRMResult(stat, p, tuple(obs.tolist()), tuple(expected.tolist()), names,
                         flagged, threshold, message)

    stray = (w == 0) & (obs > 0)
    if np.any(stray):
        who = ", ".join(n for n, s in zip(names, stray) if s)
        return result(np.inf, 0.0, True,
                      f"sample ratio mismatch: units were exposed to {who}, whose weight is 0")
    keep = w > 0
    if total == 0 or keep.sum() < 2:
        return result(0.0, 1.0, False, "")
    stat, p = sps.chisquare(obs[keep], expected[keep])
    stat, p = float(stat), float(p)
    flagged = p < threshold
    message = ""
    if flagged:
        message = (
            f"sample ratio mismatch: observed {_share(obs)} of {total:,.0f} units "
            f"vs expected {_share(w)} (chi-square p = {p:.2g} < {threshold:g}); "
            "check assignment and exposure logging before reading any metric"
        )
    return result(stat, p, flagged, message)
