"""The analytic law of PoC distances (SPEC §8).

With a random projection, ``l / ||l||`` is uniform on the sphere in ``D``
dimensions, so for the angle ``θ`` to the target
``X = (1 + cos θ) / 2 ~ Beta((D-1)/2, (D-1)/2)``. The distance is
``d = sqrt(2 - 2 cos θ) = 2 sqrt(1 - X)``; by the symmetry of that Beta law,
``d²/4`` has the same law, so ``P(d <= r) = I_{r²/4}(a, a)`` with
``a = (D-1)/2`` (the regularized incomplete beta function).
"""

from __future__ import annotations

import math

import numpy as np

from .._checks import check_int
from ..constants import POC_OUTPUT_DIM

__all__ = [
    "distance_cdf",
    "distance_pdf",
    "distance_mean",
    "distance_std",
    "valid_rate",
    "r_target_for_valid_rate",
]


def _shape(output_dim: int) -> float:
    output_dim = check_int(output_dim, "output_dim", 2)
    return (output_dim - 1) / 2.0


def distance_cdf(d, output_dim: int = POC_OUTPUT_DIM):
    """Return ``P(distance <= d)`` (float64, same shape as ``d``) for a uniform direction in ``output_dim`` dims."""
    from scipy import special

    a = _shape(output_dim)
    x = np.clip(np.asarray(d, dtype=np.float64), 0.0, 2.0)
    return special.betainc(a, a, x * x / 4.0)


def distance_pdf(d, output_dim: int = POC_OUTPUT_DIM):
    """Return the density of the distance at ``d`` (float64, zero outside [0, 2])."""
    from scipy import stats

    a = _shape(output_dim)
    x = np.asarray(d, dtype=np.float64)
    inside = (x >= 0.0) & (x <= 2.0)
    xc = np.where(inside, x, 1.0)
    # d = 2 sqrt(Y), Y ~ Beta(a, a): f_d(x) = f_Y(x²/4) * x / 2
    return np.where(inside, stats.beta.pdf(xc * xc / 4.0, a, a) * xc / 2.0, 0.0)


def distance_mean(output_dim: int = POC_OUTPUT_DIM) -> float:
    """Return the exact mean distance, ``2 E[sqrt(Y)]`` with ``Y ~ Beta(a, a)``."""
    a = _shape(output_dim)
    lg = math.lgamma
    return 2.0 * math.exp(lg(a + 0.5) + lg(2 * a) - lg(a) - lg(2 * a + 0.5))


def distance_std(output_dim: int = POC_OUTPUT_DIM) -> float:
    """Return the exact standard deviation of the distance (``E[d²] = 2``)."""
    m = distance_mean(output_dim)
    return math.sqrt(max(0.0, 2.0 - m * m))


def valid_rate(r_target: float, output_dim: int = POC_OUTPUT_DIM) -> float:
    """Return the expected fraction of valid nonces, ``P(d < r_target)``."""
    r = float(r_target)
    if not math.isfinite(r) or r < 0:
        raise ValueError(f"r_target must be a finite number >= 0, got {r_target!r}")
    return float(distance_cdf(r, output_dim))


def r_target_for_valid_rate(p: float, output_dim: int = POC_OUTPUT_DIM) -> float:
    """Return the ``r_target`` at which a fraction ``p`` of nonces is valid."""
    from scipy import special

    p = float(p)
    if not 0.0 < p < 1.0:
        raise ValueError(f"p must lie in (0, 1), got {p}")
    a = _shape(output_dim)
    return 2.0 * math.sqrt(special.betaincinv(a, a, p))
