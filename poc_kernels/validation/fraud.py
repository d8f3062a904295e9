"""The binomial fraud test and its exact analysis (SPEC §9).

With ``N`` checks and ``k`` mismatches the participant is flagged when the
one-sided binomial p-value ``P(X >= k | X ~ Binomial(N, p_honest))`` is below
``alpha``. Because ``k`` is an integer the test rejects exactly when
``k >= k*``, the *critical mismatch count*, so its power against a cheater
whose mismatch rate is ``p_cheater`` is ``P(X >= k* | Binomial(N, p_cheater))``,
computed here exactly; :func:`monte_carlo_power` simulates it.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Optional

import numpy as np

from .._checks import check_int, check_probability

__all__ = [
    "FraudTestResult",
    "MonteCarloPower",
    "critical_mismatches",
    "detection_power",
    "false_positive_rate",
    "fraud_test",
    "monte_carlo_power",
]


@dataclass(frozen=True)
class FraudTestResult:
    """Outcome of :func:`fraud_test`."""

    n_checked: int
    n_mismatch: int
    p_honest: float
    alpha: float
    #: one-sided binomial p-value ``P(X >= n_mismatch | Binomial(n_checked, p_honest))``; 1.0 when nothing was checked
    p_value: float
    #: ``p_value < alpha``
    fraud_detected: bool


def fraud_test(n_checked: int, n_mismatch: int, p_honest: float, alpha: float) -> FraudTestResult:
    """Return the one-sided binomial test (``scipy.stats.binomtest``, ``alternative="greater"``) of a mismatch count.

    The participant is flagged (``fraud_detected``) when the p-value is below
    ``alpha``. With ``n_checked == 0`` there is no evidence: p-value 1.0, not
    flagged (as in the original API).
    """
    from scipy import stats

    n = check_int(n_checked, "n_checked", 0)
    k = check_int(n_mismatch, "n_mismatch", 0)
    if k > n:
        raise ValueError(f"n_mismatch must be <= n_checked = {n}, got {k}")
    p = check_probability(p_honest, "p_honest")
    a = check_probability(alpha, "alpha")
    p_value = 1.0 if n == 0 else float(stats.binomtest(k, n, p, alternative="greater").pvalue)
    return FraudTestResult(n, k, p, a, p_value, bool(p_value < a))


def sf_at_least(k, n: int, p: float):
    """``P(X >= k)`` for ``X ~ Binomial(n, p)`` (the p-value of ``k`` mismatches)."""
    from scipy import stats

    return stats.binom.sf(np.asarray(k) - 1, n, p)


def critical_mismatches(n_checks: int, p_honest: float, alpha: float) -> int:
    """Return ``k*``, the least mismatch count whose p-value is below ``alpha`` (``n_checks + 1`` when none is).

    ``fraud_test(n_checks, k, p_honest, alpha).fraud_detected`` is exactly ``k >= k*``.
    """
    from scipy import stats

    n = check_int(n_checks, "n_checks", 0)
    p = check_probability(p_honest, "p_honest")
    a = check_probability(alpha, "alpha")
    if n == 0:
        return 1
    k = int(stats.binom.isf(a, n, p)) + 1  # a first guess; the loops below make it exact
    k = min(max(k, 0), n + 1)
    while k > 0 and sf_at_least(k - 1, n, p) < a:
        k -= 1
    while k <= n and not sf_at_least(k, n, p) < a:
        k += 1
    return k


def false_positive_rate(n_checks: int, p_honest: float, alpha: float) -> float:
    """Return the exact probability that an honest participant (mismatch rate ``p_honest``) is flagged; <= ``alpha``."""
    k = critical_mismatches(n_checks, p_honest, alpha)
    return float(sf_at_least(k, n_checks, p_honest))


def detection_power(n_checks: int, p_honest: float, p_cheater: float, alpha: float) -> float:
    """Return the exact probability that a participant with mismatch rate ``p_cheater`` is flagged by one validator."""
    p1 = check_probability(p_cheater, "p_cheater")
    k = critical_mismatches(n_checks, p_honest, alpha)
    return float(sf_at_least(k, n_checks, p1))


@dataclass(frozen=True)
class MonteCarloPower:
    """Outcome of :func:`monte_carlo_power`."""

    simulations: int
    detections: int
    #: detections / simulations
    rate: float
    #: binomial standard error of ``rate`` around the exact power ``exact``
    stderr: float
    #: the exact power, :func:`detection_power`
    exact: float


def monte_carlo_power(
    n_checks: int,
    p_honest: float,
    p_cheater: float,
    alpha: float,
    simulations: int = 1000,
    seed: Optional[int] = None,
) -> MonteCarloPower:
    """Return the fraction of ``simulations`` validators that flag a cheater, each drawing its own mismatch count.

    Every simulation draws ``k ~ Binomial(n_checks, p_cheater)`` and applies the
    binomial test's p-value (``P(X >= k | p_honest) < alpha``), as the study's
    Monte Carlo did.
    """
    n = check_int(n_checks, "n_checks", 1)
    sims = check_int(simulations, "simulations", 1)
    p0 = check_probability(p_honest, "p_honest")
    p1 = check_probability(p_cheater, "p_cheater")
    a = check_probability(alpha, "alpha")
    rng = np.random.default_rng(seed)
    k = rng.binomial(n, p1, size=sims)
    detections = int(np.count_nonzero(sf_at_least(k, n, p0) < a))
    exact = detection_power(n, p0, p1, a)
    return MonteCarloPower(sims, detections, detections / sims, math.sqrt(exact * (1 - exact) / sims), exact)
