"""Validation statistics of PoC v2 (SPEC §8–9): proof batches, mismatch rules, the fraud test, calibration.

A validator recomputes a random subset of a participant's nonces and counts
*mismatches*:

- distances: a nonce the participant claimed valid is a mismatch when
  ``received_dist >= r_target`` or the recomputed ``dist > r_target`` (the rule
  of the original PoC HTTP API);
- vector artifacts: a mismatch when the L2 distance between the claimed and the
  recomputed vector exceeds a threshold calibrated as the 98th percentile of
  honest cross-hardware distances.

With ``N`` checks and ``k`` mismatches the participant is flagged when the
one-sided binomial p-value ``P(X >= k | X ~ Binomial(N, p_honest))`` is below
``alpha``. Because ``k`` is an integer the test rejects exactly when
``k >= k*``, the *critical mismatch count*, so its power against a cheater
whose mismatch rate is ``p_cheater`` is ``P(X >= k* | Binomial(N, p_cheater))``,
computed here exactly.

A network of stake-weighted validators each runs that test and votes; the
participant is convicted when the stake voting "cheater" exceeds the quorum.
:func:`simulate_network` simulates it (vectorized over rounds and validators)
and :func:`conviction_probability` brackets the exact conviction probability.

The analytic law of the distance (``valid_rate``, ``r_target_for_valid_rate``,
...) lives in :mod:`poc_kernels.distribution` and is re-exported here.
"""

from __future__ import annotations

import base64
import binascii
import json
import math
import numbers
import os
from dataclasses import asdict, dataclass, field
from typing import Annotated, Any, List, NamedTuple, Optional, Union

import numpy as np
from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from ._checks import check_int
from .constants import MAX_NONCE, POC_OUTPUT_DIM
from .distribution import (
    distance_cdf,
    distance_mean,
    distance_pdf,
    distance_std,
    r_target_for_valid_rate,
    valid_rate,
)

__all__ = [
    "DISTANCE_P_HONEST",
    "VECTOR_P_HONEST",
    "VECTOR_DIST_THRESHOLD",
    "VECTOR_DIM",
    "DEFAULT_VALIDATORS",
    "ProofBatch",
    "ValidatedBatch",
    "FraudTestResult",
    "MonteCarloPower",
    "NetworkSimulation",
    "ConvictionBounds",
    "encode_vector",
    "decode_vector",
    "vector_distances",
    "vector_mismatches",
    "distance_mismatches",
    "calibrate_threshold",
    "critical_mismatches",
    "fraud_test",
    "detection_power",
    "false_positive_rate",
    "monte_carlo_power",
    "default_weights",
    "load_weights",
    "simulate_network",
    "conviction_probability",
    # re-exported from poc_kernels.distribution
    "distance_cdf",
    "distance_pdf",
    "distance_mean",
    "distance_std",
    "valid_rate",
    "r_target_for_valid_rate",
    "POC_OUTPUT_DIM",
]

#: Honest per-nonce mismatch probability of distance checks (the original API's ``PROBABILITY_MISMATCH``).
DISTANCE_P_HONEST: float = 5e-4
#: Honest per-nonce mismatch probability of vector checks, as calibrated in the validation study.
VECTOR_P_HONEST: float = 0.02
#: The study's vector mismatch threshold: the 98th percentile of honest cross-hardware L2 distances.
VECTOR_DIST_THRESHOLD: float = 0.173663
#: Length of a vector artifact in the original API (the first k dimensions of the normalized logits).
VECTOR_DIM: int = 12
#: Number of validators of the study's network simulation.
DEFAULT_VALIDATORS: int = 377

# Rounds × validators drawn per step of simulate_network: bounds its memory (~64 MB), not its results.
_SIM_CHUNK_ELEMENTS = 4_000_000


# ---------------------------------------------------------------------------
# argument checks (errors name the argument and the expected form)
# ---------------------------------------------------------------------------


def _check_real(value: Any, name: str) -> float:
    if isinstance(value, (bool, np.bool_)) or not isinstance(value, numbers.Real):
        raise TypeError(f"{name} must be a real number, got {type(value).__name__}")
    return float(value)


def _check_probability(value: Any, name: str) -> float:
    p = _check_real(value, name)
    if not 0.0 < p < 1.0:  # also rejects NaN
        raise ValueError(f"{name} must lie in (0, 1), got {value!r}")
    return p


def _check_r_target(value: Any, name: str = "r_target") -> float:
    r = _check_real(value, name)
    if not (math.isfinite(r) and r > 0.0):
        raise ValueError(f"{name} must be a finite number > 0, got {value!r}")
    return r


def _as_float_array(values: Any, name: str, ndim: int) -> np.ndarray:
    """Return ``values`` as a float64 array of ``ndim`` dimensions (torch tensors and sequences accepted)."""
    if hasattr(values, "detach") and hasattr(values, "cpu"):  # a torch tensor, without importing torch here
        values = values.detach().cpu().double().numpy()
    if isinstance(values, (str, bytes)):
        raise TypeError(f"{name} must be an array of numbers, got {type(values).__name__}")
    try:
        arr = np.asarray(values)
    except ValueError as exc:  # ragged nested sequences
        raise ValueError(f"{name} must be a rectangular array of numbers: {exc}") from None
    if arr.dtype == bool or arr.dtype.kind not in "iuf":
        raise TypeError(f"{name} must hold real numbers, got an array of dtype {arr.dtype}")
    if arr.ndim != ndim:
        shape = "[n]" if ndim == 1 else "[n, dim]"
        raise ValueError(f"{name} must be {ndim}-D {shape}, got shape {arr.shape}")
    return arr.astype(np.float64, copy=False)


# ---------------------------------------------------------------------------
# vector artifacts: fp16 little-endian base64
# ---------------------------------------------------------------------------

_FP16_LE = np.dtype("<f2")


def encode_vector(vector: Any) -> str:
    """Return the base64 text of ``vector`` as little-endian fp16 (each value rounded to the nearest fp16).

    ``vector`` is a 1-D array-like of finite numbers whose magnitudes fit fp16
    (|x| <= 65504); anything else raises, so a vector never silently becomes
    Inf or NaN on the wire.
    """
    arr = _as_float_array(vector, "vector", 1)
    if arr.size == 0:
        raise ValueError("vector must hold at least one value, got an empty vector")
    bad = np.flatnonzero(~np.isfinite(arr))
    if bad.size:
        raise ValueError(f"vector must be finite, got {arr[bad[0]]} at index {bad[0]}")
    with np.errstate(over="ignore"):
        half = arr.astype(_FP16_LE)
    bad = np.flatnonzero(~np.isfinite(half))
    if bad.size:
        raise ValueError(f"vector[{bad[0]}] = {arr[bad[0]]} overflows fp16 (largest magnitude 65504)")
    return base64.b64encode(half.tobytes()).decode("ascii")


def decode_vector(data: Union[str, bytes], dim: Optional[int] = None) -> np.ndarray:
    """Return the float32 [dim] vector encoded in ``data`` (base64 of little-endian fp16; widening is exact).

    Strict: ``data`` must be canonical base64 (padded, no whitespace or other
    characters), hold a whole number of fp16 values (``dim`` of them when
    ``dim`` is given), and every value must be finite.
    """
    if isinstance(data, bytes):
        try:
            data = data.decode("ascii")
        except UnicodeDecodeError:
            raise ValueError("data must be base64 text (ASCII), got non-ASCII bytes") from None
    if not isinstance(data, str):
        raise TypeError(f"data must be a base64 str or bytes, got {type(data).__name__}")
    if dim is not None:
        dim = check_int(dim, "dim", 1)
    try:
        raw = base64.b64decode(data, validate=True)
    except (binascii.Error, ValueError) as exc:
        raise ValueError(f"data is not valid base64: {exc}") from None
    if base64.b64encode(raw).decode("ascii") != data:
        raise ValueError("data is not canonical base64 (non-zero padding bits)")
    if len(raw) == 0:
        raise ValueError("data must encode at least one fp16 value, got an empty string")
    if len(raw) % 2:
        raise ValueError(f"data must encode whole fp16 values (2 bytes each), got {len(raw)} bytes")
    vec = np.frombuffer(raw, dtype=_FP16_LE)
    if dim is not None and vec.size != dim:
        raise ValueError(f"data must encode dim = {dim} fp16 values, got {vec.size}")
    bad = np.flatnonzero(~np.isfinite(vec))
    if bad.size:
        raise ValueError(f"data must encode finite values, got {vec[bad[0]]} at index {bad[0]}")
    return vec.astype(np.float32)


def _as_vectors(values: Any, name: str, dim: Optional[int]) -> np.ndarray:
    """Return a float64 [n, dim] array from a 2-D array-like or a sequence of base64 strings."""
    if isinstance(values, (list, tuple)) and values and all(isinstance(v, (str, bytes)) for v in values):
        rows = []
        for i, v in enumerate(values):
            try:
                rows.append(decode_vector(v, dim))
            except ValueError as exc:
                raise ValueError(f"{name}[{i}]: {exc}") from None
        if len({r.size for r in rows}) > 1:
            raise ValueError(f"{name} must hold vectors of one length, got lengths {sorted({r.size for r in rows})}")
        return np.stack(rows).astype(np.float64)
    arr = _as_float_array(values, name, 2)
    if not np.isfinite(arr).all():
        i, j = np.argwhere(~np.isfinite(arr))[0]
        raise ValueError(f"{name} must be finite, got {arr[i, j]} at [{i}, {j}]")
    return arr


def vector_distances(received: Any, recomputed: Any) -> np.ndarray:
    """Return the float64 [n] L2 distances between claimed and recomputed vectors, row by row.

    Each argument is a 2-D array-like ``[n, dim]`` or a sequence of base64 fp16
    vectors (:func:`decode_vector`).
    """
    a = _as_vectors(received, "received", None)
    b = _as_vectors(recomputed, "recomputed", None)
    if a.shape != b.shape:
        raise ValueError(f"received and recomputed must have the same shape, got {a.shape} and {b.shape}")
    return np.linalg.norm(a - b, axis=1)


def vector_mismatches(received: Any, recomputed: Any, dist_threshold: float = VECTOR_DIST_THRESHOLD) -> np.ndarray:
    """Return a bool [n] array: True where a claimed vector's L2 distance to its recomputation exceeds the threshold."""
    threshold = _check_real(dist_threshold, "dist_threshold")
    if not (math.isfinite(threshold) and threshold >= 0.0):
        raise ValueError(f"dist_threshold must be a finite number >= 0, got {dist_threshold!r}")
    return vector_distances(received, recomputed) > threshold


def distance_mismatches(received_dist: Any, dist: Any, r_target: float) -> np.ndarray:
    """Return a bool [n] array: True where ``received_dist >= r_target`` or the recomputed ``dist > r_target``.

    A NaN on either side counts as a mismatch (it is never a valid distance).
    """
    r = _check_r_target(r_target)
    received = _as_float_array(received_dist, "received_dist", 1)
    recomputed = _as_float_array(dist, "dist", 1)
    if received.shape != recomputed.shape:
        raise ValueError(
            f"received_dist and dist must have the same length, got {received.size} and {recomputed.size}"
        )
    # written as negations so that NaN (for which every comparison is False) is a mismatch
    return ~(received < r) | ~(recomputed <= r)


def calibrate_threshold(honest_distances: Any, quantile: float = 0.98) -> float:
    """Return the mismatch threshold: the ``quantile`` of honest cross-hardware distances (numpy's linear rule).

    With 8000 honest distances and ``quantile=0.98`` exactly 160 (2%) lie above
    the returned threshold, as in the validation study.
    """
    q = _check_probability(quantile, "quantile")
    d = _as_float_array(honest_distances, "honest_distances", 1)
    if d.size == 0:
        raise ValueError("honest_distances must hold at least one distance, got none")
    bad = np.flatnonzero(~np.isfinite(d) | (d < 0))
    if bad.size:
        raise ValueError(f"honest_distances must be finite and >= 0, got {d[bad[0]]} at index {bad[0]}")
    return float(np.quantile(d, q))


# ---------------------------------------------------------------------------
# the fraud test and its exact analysis
# ---------------------------------------------------------------------------


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
    p = _check_probability(p_honest, "p_honest")
    a = _check_probability(alpha, "alpha")
    p_value = 1.0 if n == 0 else float(stats.binomtest(k, n, p, alternative="greater").pvalue)
    return FraudTestResult(n, k, p, a, p_value, bool(p_value < a))


def _sf_at_least(k, n: int, p: float):
    """``P(X >= k)`` for ``X ~ Binomial(n, p)`` (the p-value of ``k`` mismatches)."""
    from scipy import stats

    return stats.binom.sf(np.asarray(k) - 1, n, p)


def critical_mismatches(n_checks: int, p_honest: float, alpha: float) -> int:
    """Return ``k*``, the least mismatch count whose p-value is below ``alpha`` (``n_checks + 1`` when none is).

    ``fraud_test(n_checks, k, p_honest, alpha).fraud_detected`` is exactly ``k >= k*``.
    """
    from scipy import stats

    n = check_int(n_checks, "n_checks", 0)
    p = _check_probability(p_honest, "p_honest")
    a = _check_probability(alpha, "alpha")
    if n == 0:
        return 1
    k = int(stats.binom.isf(a, n, p)) + 1  # a first guess; the loops below make it exact
    k = min(max(k, 0), n + 1)
    while k > 0 and _sf_at_least(k - 1, n, p) < a:
        k -= 1
    while k <= n and not _sf_at_least(k, n, p) < a:
        k += 1
    return k


def false_positive_rate(n_checks: int, p_honest: float, alpha: float) -> float:
    """Return the exact probability that an honest participant (mismatch rate ``p_honest``) is flagged; <= ``alpha``."""
    k = critical_mismatches(n_checks, p_honest, alpha)
    return float(_sf_at_least(k, n_checks, p_honest))


def detection_power(n_checks: int, p_honest: float, p_cheater: float, alpha: float) -> float:
    """Return the exact probability that a participant with mismatch rate ``p_cheater`` is flagged by one validator."""
    p1 = _check_probability(p_cheater, "p_cheater")
    k = critical_mismatches(n_checks, p_honest, alpha)
    return float(_sf_at_least(k, n_checks, p1))


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
    p0 = _check_probability(p_honest, "p_honest")
    p1 = _check_probability(p_cheater, "p_cheater")
    a = _check_probability(alpha, "alpha")
    rng = np.random.default_rng(seed)
    k = rng.binomial(n, p1, size=sims)
    detections = int(np.count_nonzero(_sf_at_least(k, n, p0) < a))
    exact = detection_power(n, p0, p1, a)
    return MonteCarloPower(sims, detections, detections / sims, math.sqrt(exact * (1 - exact) / sims), exact)


# ---------------------------------------------------------------------------
# proof batches (the JSON shapes of the original PoC HTTP API)
# ---------------------------------------------------------------------------

_Nonce = Annotated[int, Field(ge=0, le=MAX_NONCE)]
_Distance = Annotated[float, Field(ge=0.0)]


def _listify(value: Any) -> Any:
    """Accept numpy arrays, torch tensors and tuples where a JSON list is expected."""
    if hasattr(value, "detach") and hasattr(value, "cpu"):
        value = value.detach().cpu().numpy()
    if isinstance(value, np.ndarray):
        if value.ndim != 1:
            raise ValueError(f"must be 1-D, got shape {value.shape}")
        return value.tolist()
    if isinstance(value, tuple):
        return list(value)
    return value


class _Batch(BaseModel):
    """Fields shared by proof and validated batches, in the original API's order."""

    # strict: no silent coercion ("5" is not an int, 1.5 is not a nonce); finite floats only; unknown fields rejected
    model_config = ConfigDict(strict=True, frozen=True, extra="forbid", allow_inf_nan=False)

    public_key: str
    block_hash: str
    block_height: int = Field(ge=0)
    nonces: List[_Nonce]
    #: claimed distances (ProofBatch) or recomputed distances (ValidatedBatch), one per nonce
    dist: List[_Distance]
    node_id: int = Field(ge=0)

    @field_validator("nonces", "dist", mode="before")
    @classmethod
    def _accept_arrays(cls, value: Any) -> Any:
        return _listify(value)

    @model_validator(mode="after")
    def _check_nonces(self):
        if len(self.dist) != len(self.nonces):
            raise ValueError(
                f"dist must have one distance per nonce: {len(self.nonces)} nonces, {len(self.dist)} distances"
            )
        if len(set(self.nonces)) != len(self.nonces):
            seen = set()
            dup = next(n for n in self.nonces if n in seen or seen.add(n))
            raise ValueError(f"nonces must be unique, nonce {dup} appears more than once")
        return self

    def __len__(self) -> int:
        return len(self.nonces)


class ProofBatch(_Batch):
    """A participant's nonces and their claimed distances.

    JSON (``model_dump_json`` / ``model_validate_json``)::

        {"public_key": str, "block_hash": str, "block_height": int >= 0,
         "nonces": [int in [0, 2**32)], "dist": [finite float >= 0], "node_id": int >= 0}

    Nonces are unique and ``dist`` has one entry per nonce. ``nonces`` and
    ``dist`` also accept numpy arrays and torch tensors.
    """

    def sub_batch(self, r_target: float) -> "ProofBatch":
        """Return the batch of the nonces whose claimed distance is below ``r_target`` (the valid ones), in order."""
        r = _check_r_target(r_target)
        keep = [i for i, d in enumerate(self.dist) if d < r]
        return self.model_copy(
            update={"nonces": [self.nonces[i] for i in keep], "dist": [self.dist[i] for i in keep]}
        )


_CONSISTENCY_RTOL = 1e-6


class ValidatedBatch(_Batch):
    """A validator's verdict on a proof batch: claimed (``received_dist``) and recomputed (``dist``) distances.

    JSON: the :class:`ProofBatch` fields (``dist`` holding the recomputed
    distances) plus ``received_dist``, ``r_target``, ``fraud_threshold`` (the
    test's alpha), ``p_honest`` (the honest per-nonce mismatch probability,
    default 5e-4) and the derived ``n_invalid``, ``probability_honest`` and
    ``fraud_detected``.

    The derived fields are always computed: a nonce is invalid when
    ``received_dist >= r_target`` or ``dist > r_target``; ``probability_honest``
    is the one-sided binomial p-value of ``n_invalid`` among ``len(nonces)``
    checks at ``p_honest`` (1.0 for an empty batch); ``fraud_detected`` is
    ``probability_honest < fraud_threshold``. When the input carries them
    (a JSON round trip) they must agree with the computation, else the batch is
    rejected.
    """

    received_dist: List[_Distance]
    r_target: float = Field(gt=0.0)
    fraud_threshold: float = Field(gt=0.0, lt=1.0)
    p_honest: float = Field(default=DISTANCE_P_HONEST, gt=0.0, lt=1.0)
    n_invalid: Optional[int] = None
    probability_honest: Optional[float] = None
    fraud_detected: Optional[bool] = None

    @field_validator("received_dist", mode="before")
    @classmethod
    def _accept_received_arrays(cls, value: Any) -> Any:
        return _listify(value)

    @model_validator(mode="after")
    def _derive_verdict(self):
        if len(self.received_dist) != len(self.nonces):
            raise ValueError(
                f"received_dist must have one distance per nonce: {len(self.nonces)} nonces, "
                f"{len(self.received_dist)} distances"
            )
        n_invalid = int(np.count_nonzero(distance_mismatches(self.received_dist, self.dist, self.r_target)))
        test = fraud_test(len(self.nonces), n_invalid, self.p_honest, self.fraud_threshold)
        derived = {"n_invalid": n_invalid, "probability_honest": test.p_value, "fraud_detected": test.fraud_detected}
        for name, value in derived.items():
            claimed = getattr(self, name)
            if claimed is None:
                object.__setattr__(self, name, value)  # frozen model: set the derived field once, here
                continue
            same = (
                math.isclose(claimed, value, rel_tol=_CONSISTENCY_RTOL, abs_tol=1e-300)
                if name == "probability_honest"
                else claimed == value
            )
            if not same:
                raise ValueError(f"{name} = {claimed!r} disagrees with the distances, which give {value!r}")
        return self

    @classmethod
    def from_proof_batch(
        cls,
        batch: ProofBatch,
        dist: Any,
        *,
        r_target: float,
        fraud_threshold: float,
        p_honest: float = DISTANCE_P_HONEST,
    ) -> "ValidatedBatch":
        """Return the verdict on ``batch`` given the recomputed distances ``dist`` (one per nonce, same order)."""
        if not isinstance(batch, ProofBatch):
            raise TypeError(f"batch must be a ProofBatch, got {type(batch).__name__}")
        return cls(
            public_key=batch.public_key,
            block_hash=batch.block_hash,
            block_height=batch.block_height,
            nonces=list(batch.nonces),
            dist=dist,
            node_id=batch.node_id,
            received_dist=list(batch.dist),
            r_target=r_target,
            fraud_threshold=fraud_threshold,
            p_honest=p_honest,
        )


# ---------------------------------------------------------------------------
# the network: stake-weighted validators and a quorum
# ---------------------------------------------------------------------------


def _check_weights(weights: Any) -> np.ndarray:
    w = _as_float_array(weights, "weights", 1)
    if w.size == 0:
        raise ValueError("weights must hold at least one validator's stake, got none")
    bad = np.flatnonzero(~np.isfinite(w) | (w < 0))
    if bad.size:
        raise ValueError(f"weights must be finite and >= 0, got {w[bad[0]]} at index {bad[0]}")
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
    s = _check_real(exponent, "exponent")
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


def load_weights(path: Union[str, "os.PathLike[str]"]) -> np.ndarray:
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
    pt = _check_probability(p_target, "p_target")
    n = check_int(n_checks, "n_checks", 1)
    a = _check_probability(alpha, "alpha")
    q = _check_probability(quorum, "quorum")
    r = check_int(rounds, "rounds", 1)
    if seed is not None:
        seed = check_int(seed, "seed", 0)
    p0 = _check_probability(p_honest, "p_honest")
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
        vote_probability=float(_sf_at_least(k_star, n, pt)),
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
    pv = _check_real(vote_probability, "vote_probability")
    if not 0.0 <= pv <= 1.0:
        raise ValueError(f"vote_probability must lie in [0, 1], got {vote_probability!r}")
    q = _check_probability(quorum, "quorum")
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
