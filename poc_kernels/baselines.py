"""Baselines of the benchmarks: the original code's way of computing distances, and a strong plain one.

``bench/`` times every backend against these, and the tests hold them to the
contract (so a speed-up is never measured against something that computes
other numbers):

- :func:`compute_distances_per_nonce`: SPEC §5 followed literally, one nonce
  and one reflection at a time in float32, with the streams written the way
  the original code writes them;
- :func:`compute_distances_batched_fp32`: all nonces at once in float32 with
  one BLAS matmul: fast, but not batch invariant (its numeric core,
  :func:`batched_fp32_core`, compiles with ``torch.compile``);
- :func:`compute_distances_compiled`: the oracle's numeric core under
  ``torch.compile``.
"""

from __future__ import annotations

from typing import Callable, Optional

import torch

from . import reference, rng
from ._cache import LRUCache
from ._checks import NoncesLike, check_distance_args
from .constants import INV_2_32, MAX_NONCE, NUM_REFLECTIONS, POC_OUTPUT_DIM, TWO_PI_F32, UNIFORM_MIN
from .seeds import derive_nonce_seeds, target_seed
from .vectors import lm_head

__all__ = [
    "batched_fp32_core",
    "compute_distances_batched_fp32",
    "compute_distances_compiled",
    "compute_distances_per_nonce",
]


def compute_distances_per_nonce(
    last_hidden: torch.Tensor,
    block_hash: str,
    public_key: str,
    nonces: NoncesLike,
    *,
    sign_flips: bool = True,
    output_dim: int = POC_OUTPUT_DIM,
    num_reflections: int = NUM_REFLECTIONS,
) -> torch.Tensor:
    """Return distances as float32 ``[B]``, computed the way the original code does: literally.

    One nonce at a time, one reflection at a time, float32 throughout, with the
    seeds of each nonce hashed separately. This is the throughput baseline of
    ``bench/``; only the lm_head matrix and the target are reused across calls
    (float32, cached per block hash).
    """
    args = check_distance_args(last_hidden, block_hash, public_key, nonces, sign_flips, output_dim, num_reflections)
    nonce_list = args.nonces
    device = last_hidden.device
    hidden = last_hidden.shape[1]
    w, t = _literal_projection(block_hash, hidden, output_dim, device)
    out = torch.empty(len(nonce_list), dtype=torch.float32, device=device)
    prefix = f"{block_hash}_{public_key}_nonce_"
    for b, nonce in enumerate(nonce_list.tolist()):
        x = last_hidden[b].float()
        if sign_flips:
            u = _literal_uniform(rng.seed_from_string(f"{prefix}{nonce}_signs"), hidden, device)
            x = x * torch.where(u > 0.5, 1.0, -1.0)
        for r in range(num_reflections):
            v = _literal_normal(rng.seed_from_string(f"{prefix}{nonce}_hidden_r{r}"), hidden, device)
            v = v / v.norm()
            x = x - 2 * torch.dot(x, v) * v
        x = x / x.norm()
        logits = w @ x
        out[b] = (logits / logits.norm() - t).norm()
    return out


def compute_distances_batched_fp32(
    last_hidden: torch.Tensor,
    block_hash: str,
    public_key: str,
    nonces: NoncesLike,
    *,
    sign_flips: bool = True,
    output_dim: int = POC_OUTPUT_DIM,
    num_reflections: int = NUM_REFLECTIONS,
    core: Optional[Callable] = None,
) -> torch.Tensor:
    """Return distances as float32 ``[B]``: a strong plain-PyTorch pipeline, the benchmark's second baseline.

    All nonces at once in float32: one sign tensor, one ``[B, R, H]`` tensor of
    reflection vectors, the cached float32 lm_head and one matmul (MKL on CPU,
    cuBLAS on CUDA, TF32 off). Fast but, like any batched BLAS product, not
    batch invariant. ``core`` replaces :func:`batched_fp32_core` (a
    ``torch.compile``'d one, say); the streams are made the same way.
    """
    args = check_distance_args(last_hidden, block_hash, public_key, nonces, sign_flips, output_dim, num_reflections)
    device = last_hidden.device
    b, hidden = last_hidden.shape
    if b == 0:
        return torch.empty(0, dtype=torch.float32, device=device)
    w, t = _literal_projection(block_hash, hidden, output_dim, device)
    seeds = derive_nonce_seeds(block_hash, public_key, args.nonces, num_reflections, need_input=False)
    signs = None
    if sign_flips:
        signs = torch.where(rng.uniform(seeds.signs.to(device), hidden) > 0.5, 1.0, -1.0)
    # all the vectors in a few large slices: a plain pipeline that does not bound its memory as tightly as rng's default
    v = rng.normal(seeds.reflections.reshape(-1).to(device), hidden, max_tile=1 << 24).view(b, num_reflections, hidden)
    return (core or batched_fp32_core)(last_hidden.float(), signs, v, w, t)


def batched_fp32_core(
    x: torch.Tensor, signs: Optional[torch.Tensor], v: torch.Tensor, w: torch.Tensor, t: torch.Tensor
) -> torch.Tensor:
    """Return the distances as float32 ``[B]`` from the streams of :func:`compute_distances_batched_fp32`.

    ``x`` float32 ``[B, H]``; ``signs`` ``[B, H]`` or None; ``v`` the raw
    reflection normals float32 ``[B, R, H]``; ``w`` float32 ``[D, H]``; ``t``
    unit float32 ``[D]``. Pure tensor code (it compiles with torch.compile).
    """
    if signs is not None:
        x = x * signs
    if v.shape[1]:
        v = v / v.norm(dim=-1, keepdim=True)
        for r in range(v.shape[1]):
            x = x - 2.0 * (x * v[:, r]).sum(-1, keepdim=True) * v[:, r]
    x = x / x.norm(dim=-1, keepdim=True)
    logits = x @ w.T
    return (logits / logits.norm(dim=-1, keepdim=True) - t).norm(dim=-1)


# The baseline's streams are written the way the original code writes them:
# plain int64 tensor ops whose products wrap modulo 2**64 and are masked to 32
# bits, a fresh tensor per step. The conformance tests hold them to the contract.


def _literal_uniform(seed: int, n: int, device) -> torch.Tensor:
    m = MAX_NONCE  # the 32-bit mask
    k = torch.arange(n, dtype=torch.int64, device=device)
    k = (k * 0xCC9E2D51) & m
    k = ((k << 15) | (k >> 17)) & m
    k = (k * 0x1B873593) & m
    h = seed ^ k
    h = ((h << 13) | (h >> 19)) & m
    h = (h * 5 + 0xE6546B64) & m
    h = h ^ (h >> 16)
    h = (h * 0x85EBCA6B) & m
    h = h ^ (h >> 13)
    h = (h * 0xC2B2AE35) & m
    h = h ^ (h >> 16)
    return h.float() * INV_2_32


def _literal_normal(seed: int, n: int, device) -> torch.Tensor:
    p = (n + 1) // 2
    u = _literal_uniform(seed, 2 * p, device)
    u1 = torch.clamp(u[:p], min=UNIFORM_MIN)
    rad = torch.sqrt(-2.0 * torch.log(u1))
    ang = TWO_PI_F32 * u[p:]
    return torch.cat([rad * torch.cos(ang), rad * torch.sin(ang)])[:n]


_LITERAL_CACHE = LRUCache(4)


def _literal_projection(block_hash: str, hidden: int, output_dim: int, device: torch.device):
    def build():
        t = _literal_normal(target_seed(block_hash), output_dim, device)
        return lm_head(block_hash, hidden, output_dim, device=device), t / t.norm()

    return _LITERAL_CACHE.get((block_hash, hidden, output_dim, str(device)), build)


_compiled_core: Optional[Callable] = None


def compute_distances_compiled(
    last_hidden: torch.Tensor,
    block_hash: str,
    public_key: str,
    nonces: NoncesLike,
    *,
    sign_flips: bool = True,
    output_dim: int = POC_OUTPUT_DIM,
    num_reflections: int = NUM_REFLECTIONS,
) -> torch.Tensor:
    """Return the oracle's distances as float32 ``[B]``, its per-chunk core compiled once with ``torch.compile``."""
    global _compiled_core
    if _compiled_core is None:
        _compiled_core = torch.compile(reference.distances_from_streams, dynamic=False)
    args = check_distance_args(last_hidden, block_hash, public_key, nonces, sign_flips, output_dim, num_reflections)
    return reference.distances(args, core=_compiled_core)
