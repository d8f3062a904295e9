"""Proof batches and the mismatch rules (SPEC §9): what the node's HTTP API sends, receives and judges.

- :class:`ProofBatch` and :class:`ValidatedBatch`: frozen pydantic models with
  the original PoC HTTP API's JSON field names; a validated batch computes its
  own verdict (:func:`~poc_kernels.validation.fraud.fraud_test`).
- Mismatch rules. Distances: a nonce the participant claimed valid is a
  mismatch when ``received_dist >= r_target`` or the recomputed
  ``dist > r_target``. Vector artifacts: a mismatch when the L2 distance
  between the claimed and the recomputed vector exceeds a threshold calibrated
  as the 98th percentile of honest cross-hardware distances.
- The vector codec: fp16 little-endian base64, strict on the way in and out.
"""

from __future__ import annotations

import base64
import binascii
import math
from typing import Annotated, Any, Optional, Union

import numpy as np
from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from .._checks import (
    as_float_array,
    as_non_negative_array,
    check_int,
    check_non_negative,
    check_positive,
    check_probability,
)
from ..constants import DISTANCE_P_HONEST, MAX_NONCE, VECTOR_DIST_THRESHOLD
from .fraud import fraud_test

__all__ = [
    "ProofBatch",
    "ValidatedBatch",
    "calibrate_threshold",
    "decode_vector",
    "distance_mismatches",
    "encode_vector",
    "vector_distances",
    "vector_mismatches",
]


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
    arr = as_float_array(vector, "vector", 1)
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
    """Return a float64 [n, dim] array from a 2-D array-like or a sequence of base64 strings; raise on anything else."""
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
    arr = as_float_array(values, name, 2)
    if not np.isfinite(arr).all():
        i, j = np.argwhere(~np.isfinite(arr))[0]
        raise ValueError(f"{name} must be finite, got {arr[i, j]} at [{i}, {j}]")
    return arr


def _received_vectors(values: Any, n: int, dim: int) -> np.ndarray:
    """Return the claimed vectors as float64 ``[n, dim]``, a NaN row for each one that is malformed.

    A claimed vector comes from the wire: one that does not decode, does not hold
    ``dim`` values or holds a non-finite value is a mismatch, never an error
    that aborts the whole comparison. ``values`` must still be one entry per
    nonce (a list of base64 strings, or a 2-D array-like).
    """
    if isinstance(values, (list, tuple)) and all(v is None or isinstance(v, (str, bytes)) for v in values):
        if len(values) != n:
            raise ValueError(f"received must hold one vector per nonce: {n} recomputed, {len(values)} received")
        out = np.full((n, dim), np.nan)
        for i, v in enumerate(values):
            try:
                out[i] = decode_vector(v, dim)
            except (TypeError, ValueError):
                pass
        return out
    arr = as_float_array(values, "received", 2)
    if arr.shape != (n, dim):
        raise ValueError(f"received and recomputed must have the same shape, got {arr.shape} and {(n, dim)}")
    return np.where(np.isfinite(arr).all(axis=1, keepdims=True), arr, np.nan)


def vector_distances(received: Any, recomputed: Any) -> np.ndarray:
    """Return the float64 [n] L2 distances between claimed and recomputed vectors, row by row.

    Each argument is a 2-D array-like ``[n, dim]`` or a sequence of base64 fp16
    vectors (:func:`decode_vector`). The recomputed ones must be well formed;
    a malformed claimed vector gets the distance NaN.
    """
    b = _as_vectors(recomputed, "recomputed", None)
    a = _received_vectors(received, *b.shape)
    return np.linalg.norm(a - b, axis=1)


def vector_mismatches(received: Any, recomputed: Any, dist_threshold: float = VECTOR_DIST_THRESHOLD) -> np.ndarray:
    """Return a bool [n] array: True where a claimed vector's L2 distance to its recomputation exceeds the threshold.

    A claimed vector that is malformed (not base64, the wrong length, a
    non-finite value) is a mismatch: one bad vector never aborts a validation.
    """
    threshold = check_non_negative(dist_threshold, "dist_threshold")
    return ~(vector_distances(received, recomputed) <= threshold)  # NaN (malformed) is a mismatch


def distance_mismatches(received_dist: Any, dist: Any, r_target: float) -> np.ndarray:
    """Return a bool [n] array: True where ``received_dist >= r_target`` or the recomputed ``dist > r_target``.

    A NaN on either side counts as a mismatch (it is never a valid distance).
    """
    r = check_positive(r_target, "r_target")
    received = as_float_array(received_dist, "received_dist", 1)
    recomputed = as_float_array(dist, "dist", 1)
    if received.shape != recomputed.shape:
        raise ValueError(f"received_dist and dist must have the same length, got {received.size} and {recomputed.size}")
    # written as negations so that NaN (for which every comparison is False) is a mismatch
    return ~(received < r) | ~(recomputed <= r)


def calibrate_threshold(honest_distances: Any, quantile: float = 0.98) -> float:
    """Return the mismatch threshold: the ``quantile`` of honest cross-hardware distances (numpy's linear rule).

    With 8000 honest distances and ``quantile=0.98`` exactly 160 (2%) lie above
    the returned threshold, as in the validation study.
    """
    q = check_probability(quantile, "quantile")
    d = as_non_negative_array(honest_distances, "honest_distances", "distance")
    return float(np.quantile(d, q))


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
    #: -1 only in the empty batch (:meth:`ProofBatch.empty`)
    block_height: int = Field(ge=-1)
    nonces: list[_Nonce]
    #: claimed distances (ProofBatch) or recomputed distances (ValidatedBatch), one per nonce
    dist: list[_Distance]
    #: -1 only in the empty batch
    node_id: int = Field(ge=-1)

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
        for name in ("block_height", "node_id"):
            if getattr(self, name) == -1 and (self.nonces or self.public_key or self.block_hash):
                raise ValueError(f"{name} = -1 marks the empty batch only (no nonces, no key, no block hash)")
        return self

    def __len__(self) -> int:
        return len(self.nonces)


class ProofBatch(_Batch):
    """A participant's nonces and their claimed distances.

    JSON (``model_dump_json`` / ``model_validate_json``)::

        {"public_key": str, "block_hash": str, "block_height": int >= 0,
         "nonces": [int in [0, 2**32)], "dist": [finite float >= 0], "node_id": int >= 0}

    Nonces are unique and ``dist`` has one entry per nonce. ``nonces`` and
    ``dist`` also accept numpy arrays and torch tensors. ``block_height`` and
    ``node_id`` are -1 in the empty batch only (:meth:`empty`).
    """

    @classmethod
    def empty(cls) -> ProofBatch:
        """The original API's empty batch: no nonces, empty key and hash, ``block_height`` and ``node_id`` -1."""
        return cls(public_key="", block_hash="", block_height=-1, nonces=[], dist=[], node_id=-1)

    def sub_batch(self, r_target: float) -> ProofBatch:
        """Return the batch of the nonces whose claimed distance is below ``r_target`` (the valid ones), in order."""
        r = check_positive(r_target, "r_target")
        keep = [i for i, d in enumerate(self.dist) if d < r]
        return self.model_copy(update={"nonces": [self.nonces[i] for i in keep], "dist": [self.dist[i] for i in keep]})


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

    received_dist: list[_Distance]
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
    ) -> ValidatedBatch:
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
