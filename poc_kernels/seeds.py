"""Seed strings and per-nonce seed derivation (SPEC §1).

| stream | seed string |
|---|---|
| input embeddings | ``f"{block_hash}_{public_key}_nonce{nonce}"`` (no ``_`` before the number) |
| sign flips | ``f"{block_hash}_{public_key}_nonce_{nonce}_signs"`` |
| reflection r | ``f"{block_hash}_{public_key}_nonce_{nonce}_hidden_r{r}"`` |
| random lm_head | ``f"{block_hash}_lm_head"`` |
| target | ``f"{block_hash}_target"`` |
| layer hook i | ``f"{block_hash}_layer_{i}_householder"`` |
| pick scores (SPEC-ARTIFACTS §1) | ``f"{block_hash}_{public_key}_nonce_{nonce}_pick_{k}"`` |
| Haar step j (SPEC-ARTIFACTS §1) | ``f"{block_hash}_{public_key}_nonce_{nonce}_haar_hh_{k}_{j}"`` |
| stronger inputs (SPEC-ARTIFACTS §2) | the 8 big-endian words of SHA-256 of the input seed string |

Per-nonce seeds come from the C++ extension when it is built (batched
SHA-256 continuing the cached state of the shared prefix, SHA-NI where the CPU
has it; ``derive_nonce_seeds`` then costs well under a microsecond per nonce),
otherwise from :mod:`hashlib`. Both copy the SHA-256 state of the shared
``f"{block_hash}_{public_key}_nonce"`` prefix for each nonce and give the same
seeds.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Union

import torch

from . import _custom_ops
from .constants import NUM_REFLECTIONS
from .rng import seed_from_string

__all__ = [
    "ArtifactSeeds",
    "NonceSeeds",
    "derive_artifact_seeds",
    "derive_nonce_seeds",
    "derive_nonce_seeds_hashlib",
    "stronger_input_seeds",
    "pick_seed_string",
    "haar_seed_string",
    "input_seed_string",
    "sign_seed_string",
    "reflection_seed_string",
    "lm_head_seed",
    "target_seed",
    "layer_seed",
]


def input_seed_string(block_hash: str, public_key: str, nonce: int) -> str:
    return f"{block_hash}_{public_key}_nonce{nonce}"


def sign_seed_string(block_hash: str, public_key: str, nonce: int) -> str:
    return f"{block_hash}_{public_key}_nonce_{nonce}_signs"


def reflection_seed_string(block_hash: str, public_key: str, nonce: int, r: int) -> str:
    return f"{block_hash}_{public_key}_nonce_{nonce}_hidden_r{r}"


def pick_seed_string(block_hash: str, public_key: str, nonce: int, k: int) -> str:
    return f"{block_hash}_{public_key}_nonce_{nonce}_pick_{k}"


def haar_seed_string(block_hash: str, public_key: str, nonce: int, k: int, j: int) -> str:
    return f"{block_hash}_{public_key}_nonce_{nonce}_haar_hh_{k}_{j}"


def lm_head_seed(block_hash: str) -> int:
    """Return the seed of the random lm_head stream of ``block_hash``."""
    return seed_from_string(f"{block_hash}_lm_head")


def target_seed(block_hash: str) -> int:
    """Return the seed of the target stream of ``block_hash`` (no public key)."""
    return seed_from_string(f"{block_hash}_target")


def random_projection_seed(block_hash: str, which: str) -> int:
    """Return the seed of the random projection ``which`` ("pre" or "post") of ``block_hash`` (SPEC §10)."""
    if which not in ("pre", "post"):
        raise ValueError(f"which must be 'pre' or 'post', got {which!r}")
    return seed_from_string(f"{block_hash}_random_projection_{which}")


def layer_seed(block_hash: str, layer: int) -> int:
    """Return the seed of the layer-hook reflection vector of decoder layer ``layer``."""
    return seed_from_string(f"{block_hash}_layer_{layer}_householder")


@dataclass(frozen=True)
class NonceSeeds:
    """Per-nonce seeds as int64 CPU tensors with values in [0, 2**32)."""

    input: torch.Tensor  # [B]
    signs: torch.Tensor  # [B]
    reflections: torch.Tensor  # [B, R]


def _seed(state: hashlib._Hash, tail: bytes) -> int:
    h = state.copy()
    h.update(tail)
    return int.from_bytes(h.digest()[:4], "big")


def derive_nonce_seeds(
    block_hash: str,
    public_key: str,
    nonces: Union[Sequence[int], torch.Tensor],
    num_reflections: int = NUM_REFLECTIONS,
    *,
    need_input: bool = True,
    need_post: bool = True,
) -> NonceSeeds:
    """Return the input, sign and reflection seeds of each nonce (SPEC §1).

    ``nonces`` must already be validated ints in [0, 2**32). Streams that are
    not needed (``need_input`` / ``need_post``) come back as empty tensors.
    """
    if not _custom_ops.HAS_EXT:
        return derive_nonce_seeds_hashlib(
            block_hash, public_key, nonces, num_reflections, need_input=need_input, need_post=need_post
        )
    if isinstance(nonces, torch.Tensor):
        values = nonces.detach().to("cpu", torch.int64)
    else:
        values = torch.tensor(nonces, dtype=torch.int64).reshape(-1)
    inputs, signs, refl = _custom_ops.derive_seeds(
        block_hash, public_key, values, num_reflections, need_input, need_post
    )
    return NonceSeeds(input=inputs.to(torch.int64), signs=signs.to(torch.int64), reflections=refl.to(torch.int64))


def derive_nonce_seeds_hashlib(
    block_hash: str,
    public_key: str,
    nonces: Union[Sequence[int], torch.Tensor],
    num_reflections: int = NUM_REFLECTIONS,
    *,
    need_input: bool = True,
    need_post: bool = True,
) -> NonceSeeds:
    """Return the same seeds as :func:`derive_nonce_seeds`, always with :mod:`hashlib` (a Python loop over nonces)."""
    if isinstance(nonces, torch.Tensor):
        nonces = nonces.tolist()
    prefix = hashlib.sha256(f"{block_hash}_{public_key}_nonce".encode())
    b = len(nonces)
    inputs = [0] * b if need_input else []
    signs = [0] * b if need_post else []
    refl = [[0] * num_reflections for _ in range(b)] if need_post else []
    for i, nonce in enumerate(nonces):
        digits = str(int(nonce)).encode("ascii")
        if need_input:
            inputs[i] = _seed(prefix, digits)
        if need_post:
            signs[i] = _seed(prefix, b"_" + digits + b"_signs")
            row = refl[i]
            for r in range(num_reflections):
                row[r] = _seed(prefix, b"_" + digits + b"_hidden_r" + str(r).encode("ascii"))
    return NonceSeeds(
        input=torch.tensor(inputs, dtype=torch.int64),
        signs=torch.tensor(signs, dtype=torch.int64),
        reflections=torch.tensor(refl, dtype=torch.int64).reshape(len(refl), num_reflections),
    )


@dataclass(frozen=True)
class ArtifactSeeds:
    """Per-nonce seeds of the artifact scheme as int64 CPU tensors with values in [0, 2**32)."""

    pick: torch.Tensor  # [B]
    haar: torch.Tensor  # [B, k - 1]


def derive_artifact_seeds(
    block_hash: str, public_key: str, nonces: Union[Sequence[int], torch.Tensor], k: int
) -> ArtifactSeeds:
    """Return the pick and Haar seeds of each nonce (SPEC-ARTIFACTS §1), with :mod:`hashlib`.

    ``nonces`` must already be validated ints in [0, 2**32) and ``k >= 1``. The
    SHA-256 state of the shared ``f"{block_hash}_{public_key}_nonce_"`` prefix
    is computed once and copied per seed.
    """
    if isinstance(nonces, torch.Tensor):
        nonces = nonces.tolist()
    prefix = hashlib.sha256(f"{block_hash}_{public_key}_nonce_".encode())
    pick_tail = f"_pick_{k}".encode("ascii")
    haar_tails = [f"_haar_hh_{k}_{j}".encode("ascii") for j in range(k - 1)]
    pick, haar = [], []
    for nonce in nonces:
        digits = str(int(nonce)).encode("ascii")
        pick.append(_seed(prefix, digits + pick_tail))
        haar.append([_seed(prefix, digits + tail) for tail in haar_tails])
    return ArtifactSeeds(
        pick=torch.tensor(pick, dtype=torch.int64),
        haar=torch.tensor(haar, dtype=torch.int64).reshape(len(pick), k - 1),
    )


def stronger_input_seeds(block_hash: str, public_key: str, nonces: Union[Sequence[int], torch.Tensor]) -> torch.Tensor:
    """Return the 8 seeds of each nonce's stronger inputs (SPEC-ARTIFACTS §2) as int64 ``[B, 8]`` on the CPU.

    Seed ``j`` is bytes ``4j .. 4j+3`` of SHA-256 of ``f"{block_hash}_{public_key}_nonce{nonce}"``, big endian.
    """
    if isinstance(nonces, torch.Tensor):
        nonces = nonces.tolist()
    prefix = hashlib.sha256(f"{block_hash}_{public_key}_nonce".encode())
    rows = []
    for nonce in nonces:
        h = prefix.copy()
        h.update(str(int(nonce)).encode("ascii"))
        d = h.digest()
        rows.append([int.from_bytes(d[4 * j : 4 * j + 4], "big") for j in range(8)])
    return torch.tensor(rows, dtype=torch.int64).reshape(len(rows), 8)
