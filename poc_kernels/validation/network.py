"""The network (SPEC §9): stake-weighted validators vote, and a quorum of stake convicts.

In each round every validator runs the fraud test on its own checks of the
target and votes "cheater" when it flags; the target is convicted when the
stake voting "cheater" exceeds the quorum. :func:`simulate_network` simulates
it (vectorized over rounds and validators) and :func:`conviction_probability`
brackets the exact conviction probability.
"""

from __future__ import annotations

import json
import math
import os
from dataclasses import asdict, dataclass, field
from typing import Any, NamedTuple, Optional, Union

import numpy as np

from .._checks import as_non_negative_array, check_int, check_probability, check_real
from ..constants import VECTOR_P_HONEST
from .fraud import critical_mismatches, sf_at_least

__all__ = [
    "DEFAULT_VALIDATORS",
    "ConvictionBounds",
    "NetworkSimulation",
    "conviction_probability",
    "default_weights",
    "load_weights",
    "number_lines",
    "simulate_network",
]

#: Number of validators of the study's network simulation.
DEFAULT_VALIDATORS: int = 377

# Rounds × validators drawn per step of simulate_network: bounds its memory (~64 MB), not its results.
_SIM_CHUNK_ELEMENTS = 4_000_000


def _check_weights(weights: Any) -> np.ndarray:
    w = as_non_negative_array(weights, "weights", "validator's stake")
    total = w.sum()
    if not total > 0:
        raise ValueError("weights must not all be zero")
    return w / total


def default_weights(n_validators: int = DEFAULT_VALIDATORS, exponent: float = 1.0) -> np.ndarray:
    """Return float64 [n_validators] Zipf stake weights summing to 1: ``w_i ∝ i**-exponent``, i = 1..n.

    The default (377 validators, exponent 1) is heavy-tailed: the largest
    validator holds 15.4% of the stake, the ten largest 45.0%, and the
    effective number of validators ``1 / sum(w²)`` is 25.8. ``exponent=0``
    gives equal stakes.
    """
    n = check_int(n_validators, "n_validators", 1)
    s = check_real(exponent, "exponent")
    if not (math.isfinite(s) and s >= 0):
        raise ValueError(f"exponent must be a finite number >= 0, got {exponent!r}")
    w = np.arange(1, n + 1, dtype=np.float64) ** -s
    return w / w.sum()


def number_lines(text: str, where: str) -> list:
    """Return the numbers of ``text``, one per line, blank lines and ``#`` comments ignored.

    Raises ValueError naming ``where`` and the line of the first entry that is not a number.
    """
    values = []
    for lineno, line in enumerate(text.splitlines(), 1):
        line = line.split("#", 1)[0].strip()
        if not line:
            continue
        try:
            values.append(float(line))
        except ValueError:
            raise ValueError(f"{where}, line {lineno}: {line!r} is not a number") from None
    return values


def load_weights(path: Union[str, os.PathLike[str]]) -> np.ndarray:
    """Return the float64 stake weights (normalized to sum 1) read from ``path``.

    A ``.json`` file holds a list of numbers or an object mapping validator
    names to numbers; any other file holds one number per line, with blank lines
    and ``#`` comments ignored.
    """
    path = os.fspath(path)
    try:
        with open(path, encoding="utf-8") as f:
            text = f.read()
    except OSError as exc:
        raise ValueError(f"weights file {path!r} cannot be read: {exc.strerror or exc}") from None
    if path.lower().endswith(".json"):
        try:
            data = json.loads(text) if text.strip() else []
        except json.JSONDecodeError as exc:
            raise ValueError(f"weights file {path!r} is not valid JSON: {exc}") from None
        if isinstance(data, dict):
            data = list(data.values())
        if not isinstance(data, list):
            raise ValueError(f"weights file {path!r} must hold a JSON list or object, got {type(data).__name__}")
        values = []
        for i, v in enumerate(data):
            if isinstance(v, bool) or not isinstance(v, (int, float)):
                raise ValueError(f"weights file {path!r}: entry {i} is not a number: {v!r}")
            values.append(float(v))
    else:
        values = number_lines(text, f"weights file {path!r}")
    if not values:
        raise ValueError(f"weights file {path!r} holds no weights")
    try:
        return _check_weights(np.array(values, dtype=np.float64))
    except ValueError as exc:
        raise ValueError(f"weights file {path!r}: {exc}") from None


@dataclass(frozen=True)
class NetworkSimulation:
    """Outcome of :func:`simulate_network` (shares are fractions of the total stake)."""

    rounds: int
    n_validators: int
    p_target: float
    p_honest: float
    n_checks: int
    alpha: float
    quorum: float
    seed: Optional[int]
    #: each validator flags the target when it counts at least this many mismatches
    critical_mismatches: int
    #: exact probability that one validator votes "cheater"
    vote_probability: float
    #: 1 / sum(w²)
    effective_validators: float
    #: rounds in which the "cheater" stake exceeded the quorum
    convictions: int
    conviction_probability: float
    #: binomial standard error of ``conviction_probability``
    conviction_stderr: float
    share_mean: float
    share_median: float
    share_p95: float
    share_max: float
    #: float64 [rounds]: the "cheater" stake share of every round
    shares: np.ndarray = field(repr=False, compare=False)

    def to_dict(self) -> dict:
        """Return the scalar results as a JSON-ready dict (without ``shares``)."""
        d = asdict(self)
        d.pop("shares")
        return d


def simulate_network(
    weights: Any,
    p_target: float,
    n_checks: int,
    alpha: float,
    quorum: float = 0.5,
    rounds: int = 100_000,
    seed: Optional[int] = None,
    *,
    p_honest: float = VECTOR_P_HONEST,
    progress: Optional[bool] = None,
) -> NetworkSimulation:
    """Return the simulated "cheater" stake shares and conviction rate of a target over ``rounds`` rounds.

    In every round each validator checks ``n_checks`` nonces of a target whose
    true per-nonce mismatch rate is ``p_target``: its mismatch count is drawn
    from ``Binomial(n_checks, p_target)`` (by inversion of the exact CDF), and it
    votes "cheater" when the binomial test at ``p_honest`` and ``alpha`` flags
    it. The target is convicted when the stake voting "cheater" exceeds
    ``quorum``. Vectorized over rounds × validators in chunks of bounded memory;
    the random draws, hence every vote, do not depend on the chunking (the
    stake sums may differ in the last bit). ``progress`` shows a tqdm bar
    (None: only on a terminal).
    """
    from scipy import stats
    from tqdm.auto import tqdm

    w = _check_weights(weights)
    pt = check_probability(p_target, "p_target")
    n = check_int(n_checks, "n_checks", 1)
    a = check_probability(alpha, "alpha")
    q = check_probability(quorum, "quorum")
    r = check_int(rounds, "rounds", 1)
    if seed is not None:
        seed = check_int(seed, "seed", 0)
    p0 = check_probability(p_honest, "p_honest")
    if progress is not None and not isinstance(progress, bool):
        raise TypeError(f"progress must be a bool or None, got {type(progress).__name__}")

    k_star = critical_mismatches(n, p0, a)
    cdf = stats.binom.cdf(np.arange(n + 1), n, pt)
    cdf[-1] = 1.0  # so that every u in [0, 1) maps to a count <= n
    rng = np.random.default_rng(seed)
    v = w.size
    shares = np.empty(r, dtype=np.float64)
    chunk = max(1, _SIM_CHUNK_ELEMENTS // v)
    disable = None if progress is None else not progress  # None: tqdm shows the bar only on a terminal
    with tqdm(total=r, unit="round", desc=f"p_target={pt:g}", disable=disable) as bar:
        for start in range(0, r, chunk):
            stop = min(r, start + chunk)
            u = rng.random((stop - start, v))
            counts = np.searchsorted(cdf, u, side="right")  # P(count = k) = cdf[k] - cdf[k-1]
            shares[start:stop] = (counts >= k_star) @ w
            bar.update(stop - start)
    convicted = int(np.count_nonzero(shares > q))
    rate = convicted / r
    return NetworkSimulation(
        rounds=r,
        n_validators=v,
        p_target=pt,
        p_honest=p0,
        n_checks=n,
        alpha=a,
        quorum=q,
        seed=seed,
        critical_mismatches=k_star,
        vote_probability=float(sf_at_least(k_star, n, pt)),
        effective_validators=float(1.0 / np.sum(w * w)),
        convictions=convicted,
        conviction_probability=rate,
        conviction_stderr=math.sqrt(rate * (1 - rate) / r),
        share_mean=float(shares.mean()),
        share_median=float(np.median(shares)),
        share_p95=float(np.quantile(shares, 0.95)),
        share_max=float(shares.max()),
        shares=shares,
    )


class ConvictionBounds(NamedTuple):
    """Bounds on the exact probability that the "cheater" stake exceeds the quorum."""

    lower: float
    upper: float


def conviction_probability(
    weights: Any, vote_probability: float, quorum: float = 0.5, resolution: int = 2**20
) -> ConvictionBounds:
    """Return bounds ``(lower, upper)`` on ``P(sum_i w_i B_i > quorum)``, ``B_i`` iid ``Bernoulli(vote_probability)``.

    The weights are rounded to multiples of ``1 / resolution`` and the law of
    the rounded sum is computed exactly (a convolution per validator). The
    total rounding error ``e`` bounds the true sum's distance to the rounded
    one, so ``P(rounded > quorum + e) <= P(true > quorum) <= P(rounded > quorum - e)``.
    """
    w = _check_weights(weights)
    pv = check_real(vote_probability, "vote_probability")
    if not 0.0 <= pv <= 1.0:
        raise ValueError(f"vote_probability must lie in [0, 1], got {vote_probability!r}")
    q = check_probability(quorum, "quorum")
    units = check_int(resolution, "resolution", 1)
    scaled = w * units
    iw = np.rint(scaled).astype(np.int64)
    err = float(np.abs(scaled - iw).sum())
    pmf = np.zeros(int(iw.sum()) + 1)
    pmf[0] = 1.0
    top = 0
    for wi in iw[iw > 0]:
        new_top = top + int(wi)
        shifted = pmf[: top + 1] * pv
        pmf[: top + 1] *= 1.0 - pv
        pmf[wi : new_top + 1] += shifted
        top = new_top
    sums = np.arange(pmf.size)
    threshold = q * units
    lower = float(pmf[sums > threshold + err].sum())
    upper = float(pmf[sums > threshold - err].sum())
    return ConvictionBounds(min(lower, 1.0), min(upper, 1.0))
