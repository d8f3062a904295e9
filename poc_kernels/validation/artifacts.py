"""Validation of the artifact scheme (SPEC-ARTIFACTS §6), in the network's JSON shapes.

A node sends artifacts as ``{nonce, vector_b64}`` (float16 little endian,
base64) in a batch with ``public_key``, ``block_hash``, ``block_height``,
``node_id`` and ``encoding {dtype: "f16", k_dim, endian: "le"}``. A validator
recomputes them and compares, nonce by nonce, after decoding both to float32:

- a received artifact that does not decode, does not hold exactly ``k_dim``
  values or holds a non-finite value is a **mismatch** (one malformed vector
  never aborts the validation);
- otherwise a mismatch when ``||y_validator - y_received|| > dist_threshold``;
- a nonce for which the validator's own recomputation yields no artifact (a
  non-finite hidden state) is skipped, and still counts in ``n_total``.

The node is flagged when ``binomtest(n_mismatch, n_total, p_mismatch,
"greater").pvalue < fraud_threshold``.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Annotated, Any, Literal, Optional

import numpy as np
from pydantic import BaseModel, ConfigDict, Field, model_validator

from .._checks import check_int, check_non_negative
from ..constants import (
    ARTIFACT_DIST_THRESHOLD,
    ARTIFACT_FRAUD_THRESHOLD,
    ARTIFACT_K,
    ARTIFACT_P_MISMATCH,
    MAX_NONCE,
)
from .batches import decode_vector, encode_vector, vector_distances
from .fraud import fraud_test

__all__ = [
    "Artifact",
    "ArtifactBatch",
    "ArtifactComparison",
    "ArtifactValidation",
    "Encoding",
    "StatTest",
    "compare_artifacts",
    "decode_artifact",
    "encode_artifacts",
    "validate_artifacts",
]

_Nonce = Annotated[int, Field(ge=0, le=MAX_NONCE)]
_STRICT = ConfigDict(strict=True, frozen=True, extra="forbid", allow_inf_nan=False)


class Encoding(BaseModel):
    """How the vectors are written: float16, little endian, ``k_dim`` values."""

    model_config = _STRICT

    dtype: Literal["f16"] = "f16"
    k_dim: int = Field(default=ARTIFACT_K, ge=1)
    endian: Literal["le"] = "le"


class Artifact(BaseModel):
    """One nonce's artifact as sent: ``vector_b64`` is not checked here (a malformed one is a mismatch later)."""

    model_config = _STRICT

    nonce: _Nonce
    vector_b64: str


class ArtifactBatch(BaseModel):
    """A node's artifacts, as the network sends them to be validated (unique nonces)."""

    model_config = _STRICT

    public_key: str
    block_hash: str
    block_height: int = Field(ge=0)
    node_id: int = Field(ge=0)
    artifacts: list[Artifact]
    encoding: Encoding = Encoding()

    @model_validator(mode="after")
    def _unique_nonces(self):
        nonces = [a.nonce for a in self.artifacts]
        if len(set(nonces)) != len(nonces):
            seen: set = set()
            dup = next(n for n in nonces if n in seen or seen.add(n))
            raise ValueError(f"artifacts must have unique nonces, nonce {dup} appears more than once")
        return self

    @property
    def nonces(self) -> list:
        return [a.nonce for a in self.artifacts]


class StatTest(BaseModel):
    """The mismatch rule's threshold and the fraud test's parameters (the deployed node's defaults)."""

    model_config = _STRICT

    dist_threshold: float = Field(default=ARTIFACT_DIST_THRESHOLD, ge=0.0)
    p_mismatch: float = Field(default=ARTIFACT_P_MISMATCH, gt=0.0, lt=1.0)
    fraud_threshold: float = Field(default=ARTIFACT_FRAUD_THRESHOLD, gt=0.0, lt=1.0)


class ArtifactValidation(BaseModel):
    """A validator's verdict, in the network's shape."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    public_key: str
    block_hash: str
    block_height: int
    node_id: int
    n_total: int
    n_mismatch: int
    mismatch_nonces: list[int]
    p_value: float
    fraud_detected: bool


class ArtifactComparison(BaseModel):
    """Per nonce: the distance (NaN when the received vector is malformed or the nonce skipped), mismatch, skipped."""

    model_config = ConfigDict(frozen=True, arbitrary_types_allowed=True)

    distances: Any  # float64 [n]
    mismatch: Any  # bool [n]
    skipped: Any  # bool [n]


def encode_artifacts(artifacts: Any) -> list[Optional[str]]:
    """Return each row of float32 artifacts ``[B, k]`` as base64 float16 little endian; None for a row with no artifact.

    A row holding NaN (a non-finite hidden state) has no artifact: the node
    leaves the nonce out of its results (SPEC-ARTIFACTS §4).
    """
    rows = np.asarray(artifacts.detach().cpu() if hasattr(artifacts, "detach") else artifacts, dtype=np.float32)
    if rows.ndim != 2:
        raise ValueError(f"artifacts must be 2-D [B, k], got shape {rows.shape}")
    with np.errstate(over="ignore"):
        finite = np.isfinite(rows).all(axis=1) & np.isfinite(rows.astype(np.float16)).all(axis=1)
    return [encode_vector(row) if ok else None for row, ok in zip(rows, finite)]


def compare_artifacts(
    received: Sequence[Optional[str]],
    recomputed: Any,
    *,
    k: int = ARTIFACT_K,
    dist_threshold: float = ARTIFACT_DIST_THRESHOLD,
) -> ArtifactComparison:
    """Compare the received base64 artifacts with the validator's own float32 artifacts ``[n, k]``, row by row.

    The validator's artifacts are rounded to float16 first, as it would send
    them; a NaN row of ``recomputed`` (no artifact) is skipped. A received
    vector that is malformed is a mismatch.
    """
    k = check_int(k, "k", 1)
    threshold = check_non_negative(dist_threshold, "dist_threshold")
    own = np.asarray(recomputed.detach().cpu() if hasattr(recomputed, "detach") else recomputed, dtype=np.float32)
    if own.ndim != 2 or own.shape[1] != k:
        raise ValueError(f"recomputed must be [n, k = {k}], got shape {own.shape}")
    if len(received) != own.shape[0]:
        raise ValueError(f"received must hold one artifact per nonce: {own.shape[0]} recomputed, {len(received)}")
    skipped = ~np.isfinite(own).all(axis=1)
    own16 = np.where(skipped[:, None], 0.0, own).astype(np.float16).astype(np.float64)
    d = vector_distances(list(received), own16)
    d[skipped] = np.nan
    return ArtifactComparison(distances=d, mismatch=~skipped & ~(d <= threshold), skipped=skipped)


def validate_artifacts(
    batch: ArtifactBatch, recomputed: Any, stat_test: Optional[StatTest] = None
) -> ArtifactValidation:
    """Return the verdict on ``batch`` from the validator's artifacts of its nonces (same order, float32 [n, k])."""
    if not isinstance(batch, ArtifactBatch):
        raise TypeError(f"batch must be an ArtifactBatch, got {type(batch).__name__}")
    test = stat_test or StatTest()
    cmp = compare_artifacts(
        [a.vector_b64 for a in batch.artifacts], recomputed, k=batch.encoding.k_dim, dist_threshold=test.dist_threshold
    )
    n_total = len(batch.artifacts)
    mismatch_nonces = [a.nonce for a, m in zip(batch.artifacts, cmp.mismatch) if m]
    verdict = fraud_test(n_total, len(mismatch_nonces), test.p_mismatch, test.fraud_threshold)
    return ArtifactValidation(
        public_key=batch.public_key,
        block_hash=batch.block_hash,
        block_height=batch.block_height,
        node_id=batch.node_id,
        n_total=n_total,
        n_mismatch=len(mismatch_nonces),
        mismatch_nonces=mismatch_nonces,
        p_value=verdict.p_value,
        fraud_detected=verdict.fraud_detected,
    )


def decode_artifact(vector_b64: Any, k: int = ARTIFACT_K) -> Optional[np.ndarray]:
    """Return the float32 ``[k]`` vector of one received artifact, or None when it is malformed."""
    try:
        return decode_vector(vector_b64, k)
    except (TypeError, ValueError):
        return None
