"""The driver–worker protocol of PoC in vLLM: every name and format both sides use, defined once.

The driver (:mod:`.runner`) calls the worker extension (:mod:`.worker`) with
vLLM's ``collective_rpc`` and tags its requests so that the workers recognize
them. Neither side spells a string the other parses; both import this module:

- the RPC names (:data:`RPC_INSTALL`, ...), each a method of
  ``PoCWorkerExtension``;
- the batch tag and the request ids ``f"{tag}-{index}"`` (vLLM appends its own
  ``-<suffix>`` to the ids it is given; :func:`parse_request_id` reads past it);
- the wire forms, plain dicts of primitives and bytes (no tensor pickling, so
  no insecure-serialization switch is needed): :class:`FinishRequest` from the
  driver (after :class:`BeginRequest`), :func:`encode_result` /
  :func:`decode_result` back, and :class:`WorkerInfo` from ``poc_install``.
"""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from typing import Optional

import numpy as np
import torch

from ..constants import ARTIFACT_K

#: The qualified name to pass as ``worker_extension_cls``.
WORKER_EXTENSION = "poc_kernels.vllm.PoCWorkerExtension"

# The worker extension's methods called by the driver.
RPC_INSTALL = "poc_install"
RPC_BEGIN = "poc_begin"
RPC_FINISH = "poc_finish"
RPC_ABORT = "poc_abort"
RPC_STATS = "poc_stats"
RPCS = (RPC_INSTALL, RPC_BEGIN, RPC_FINISH, RPC_ABORT, RPC_STATS)

#: The token id a PoC request's prompt is made of: the worker overwrites its embedding in the forward.
PLACEHOLDER_TOKEN_ID = 0

#: Every batch tag starts with this; a tag holds no ``-``, which separates the request index.
TAG_PREFIX = "poc"


def new_tag() -> str:
    """Return a fresh tag for one PoC batch."""
    return f"{TAG_PREFIX}{uuid.uuid4().hex[:16]}"


def check_tag(tag) -> str:
    """Return ``tag`` if it is a batch tag (a str starting with ``"poc"``, without ``-``), else raise ValueError."""
    if not isinstance(tag, str) or not tag.startswith(TAG_PREFIX) or "-" in tag:
        raise ValueError(f"tag must be a str starting with {TAG_PREFIX!r} without '-', got {tag!r}")
    return tag


def request_id(tag: str, index: int) -> str:
    """Return the id of request ``index`` (the batch's ``index``-th nonce) of batch ``tag``."""
    return f"{tag}-{index}"


def request_ids(tag: str, n: int) -> list[str]:
    """Return the ids of the ``n`` requests of batch ``tag``, in nonce order."""
    return [request_id(tag, i) for i in range(n)]


def parse_request_id(req_id: str) -> tuple[Optional[str], int]:
    """Return ``(tag, index)`` of a PoC request id as the engine reports it, or ``(None, -1)`` for other requests."""
    parts = req_id.split("-")
    if len(parts) >= 2 and parts[0].startswith(TAG_PREFIX) and parts[1].isdigit():
        return parts[0], int(parts[1])
    return None, -1


@dataclass(frozen=True)
class WorkerInfo:
    """What ``poc_install`` tells the driver about one worker."""

    runner: str
    device: str
    dtype: str
    hidden_size: int
    num_layers: int
    last_pp_rank: bool
    tp_rank: int
    enforce_eager: bool
    first_pp_rank: bool = True
    #: the embedding output of PoC rows is written in the forward (else the driver sends prompt_embeds)
    inline_inputs: bool = False
    #: decoder layers with the in-graph layer transform (0: not installed)
    inline_layers: int = 0
    #: why inputs are not written in the forward, when they are not
    inline_reason: str = ""

    def to_wire(self) -> dict:
        return asdict(self)

    @classmethod
    def from_wire(cls, data: dict) -> WorkerInfo:
        return cls(**data)


#: The two PoC schemes: SPEC.md's distances and SPEC-ARTIFACTS.md's artifacts.
SCHEMES = ("distance", "artifact")


@dataclass(frozen=True)
class BeginRequest:
    """The driver's ``poc_begin`` call: the batch's nonces, input kind and layer transform.

    Request ``f"{tag}-{i}"`` belongs to ``nonces[i]``; with ``layer_block_hash``
    every decoder layer transforms the batch's rows with that block's layer
    vectors (``layer_normalize``: SPEC §7, else SPEC-ARTIFACTS §3).
    """

    tag: str
    block_hash: str
    public_key: str
    nonces: list
    seq_len: int
    stronger_rng: bool = False
    layer_block_hash: Optional[str] = None
    layer_normalize: bool = True
    #: SPEC §10: the batch's input rows become ``x + x @ P_pre`` of ``block_hash`` before the cast
    random_projection: bool = False

    def to_wire(self) -> dict:
        return asdict(self)

    @classmethod
    def from_wire(cls, data: dict) -> BeginRequest:
        return cls(**data)


@dataclass(frozen=True)
class FinishRequest:
    """The driver's ``poc_finish`` call: stop recording ``tag`` and post-process its nonces."""

    tag: str
    block_hash: str
    public_key: str
    #: request ``f"{tag}-{i}"`` belongs to ``nonces[i]``
    nonces: list
    sign_flips: bool = True
    backend: str = "auto"
    return_hidden: bool = False
    #: one of :data:`SCHEMES`; ``k`` is the artifact length of the artifact scheme
    scheme: str = "distance"
    k: int = ARTIFACT_K
    #: SPEC §10: the hidden states become ``h + h @ P_post`` before the scheme
    random_projection: bool = False

    def to_wire(self) -> dict:
        return asdict(self)

    @classmethod
    def from_wire(cls, data: dict) -> FinishRequest:
        return cls(**data)


@dataclass(frozen=True)
class PoCBatchResult:
    """One batch's results in nonce order: distances or artifacts (by its scheme), and the hidden states if asked."""

    nonces: list
    distances: Optional[torch.Tensor]  # float32 [B], CPU (the distance scheme)
    hidden: Optional[torch.Tensor]  # float32 [B, H], CPU, when asked for
    backend: str
    device: str
    artifacts: Optional[torch.Tensor] = None  # float32 [B, k], CPU (the artifact scheme); NaN rows: no artifact
    scheme: str = "distance"


def encode_result(
    values: torch.Tensor, hidden: torch.Tensor, backend: str, return_hidden: bool, scheme: str = "distance"
) -> dict:
    """Return the wire form of a finished batch: ``values`` float32 ``[B]`` (distances) or ``[B, k]`` (artifacts)."""
    n = int(values.shape[0])
    return {
        "n": n,
        "scheme": scheme,
        "values": values.float().cpu().numpy().tobytes(),
        "width": int(values.shape[1]) if values.dim() == 2 else 0,
        "hidden": hidden.float().cpu().numpy().tobytes() if return_hidden else None,
        "hidden_size": int(hidden.shape[1]) if n else 0,
        "device": str(hidden.device),
        "backend": backend,
    }


def decode_result(answers: Sequence[Optional[dict]], nonces: list) -> PoCBatchResult:
    """Return the batch result from the per-worker answers of ``poc_finish`` (the one that is not None)."""
    answered = [r for r in answers if r is not None]
    if not answered:
        raise RuntimeError("no worker answered poc_finish (is the last pipeline stage running?)")
    r = answered[0]
    n = r["n"]
    if n != len(nonces):
        raise RuntimeError(f"the workers returned {n} results for {len(nonces)} nonces")
    values = torch.from_numpy(np.frombuffer(r["values"], dtype=np.float32).copy())
    hidden = None
    if r["hidden"] is not None:
        hidden = torch.from_numpy(np.frombuffer(r["hidden"], dtype=np.float32).copy()).view(n, r["hidden_size"])
    if r["scheme"] == "artifact":
        return PoCBatchResult(
            list(nonces), None, hidden, r["backend"], r["device"], values.view(n, r["width"]), "artifact"
        )
    return PoCBatchResult(list(nonces), values, hidden, r["backend"], r["device"])
