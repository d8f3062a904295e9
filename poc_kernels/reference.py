"""Reference implementation of the PoC v2 contract (SPEC §3-7): the oracle.

Every other backend is tested against this module, and this module uses no
backend: it computes from the contract (``rng``, ``seeds``, ``vectors``) alone.
It runs unchanged on any torch device and is vectorized over nonces (Python
loops only over fixed-size chunks of nonces, never over single nonces). The
benchmark baselines built on it live in :mod:`poc_kernels.baselines`.

Distance of one nonce (SPEC §5), with ``s`` the sign flips, ``v_r`` the unit
reflection vectors, ``W = 0.02 * N(seed_lm_head, D*H).view(D, H)`` and ``t`` the
unit target::

    x = float32(last_hidden[b]) * s
    x = H_7 ... H_0 x,      H_r = I - 2 v_r v_rᵀ
    x = x / ||x||
    l = W x
    d = || l / ||l|| - t ||

Precision and batch invariance. The random streams are produced in float32
exactly as the contract defines them; everything after that is evaluated in
float64 and rounded to float32 once, at the end, so the result is the float64
evaluation of the formula (SPEC's accuracy bar is 1e-6 of it). Every row
reduction uses a fixed pairwise order built from elementwise adds, and the
projection ``W x`` runs as matrix products of one fixed shape
(``MATMUL_CHUNK`` rows, zero padded): BLAS libraries pick different kernels,
and so different summation orders, for different row counts. A nonce
therefore gets the same bits alone or at any position of any batch.

A row of ``last_hidden`` holding NaN or Inf gets a NaN distance, and so does an
all-zero row (it has no direction). NaN is never below any ``r_target``, so such
a nonce is never valid.
"""

from __future__ import annotations

from typing import Callable, Optional

import torch

from . import rng, vectors
from ._cache import LRUCache
from ._checks import (
    ArtifactArgs,
    DistanceArgs,
    InputArgs,
    NoncesLike,
    check_artifact_args,
    check_distance_args,
    check_input_args,
    check_layer_args,
)
from .constants import ARTIFACT_EPS, ARTIFACT_K, LAYER_HOOK_EPS, NUM_REFLECTIONS, POC_OUTPUT_DIM, STRONGER_SEGMENTS
from .seeds import derive_artifact_seeds, derive_nonce_seeds, stronger_input_seeds
from .vectors import haar_vectors, layer_vector, lm_head, norm, reflection_vectors, sign_flips, target, tree_sum

__all__ = [
    "MATMUL_CHUNK",
    "apply_layer_transform",
    "artifacts",
    "clear_cache",
    "compute_artifacts",
    "compute_distances",
    "distances",
    "distances_from_streams",
    "generate_inputs",
    "inputs",
    # the contract's vectors (poc_kernels.vectors), which the oracle evaluates with
    "layer_vector",
    "lm_head",
    "reflection_vectors",
    "sign_flips",
    "target",
    "tree_sum",
]

#: Rows per projection matmul. Every product ``x @ W.T`` has exactly this many
#: rows, so each nonce is reduced by the same kernel in the same order.
MATMUL_CHUNK = 64
#: Number of ``(block_hash, H, D, device)`` projections kept in memory.
CACHE_SIZE = 4


def compute_device(device: torch.device) -> torch.device:
    """Return where the oracle's float64 work for ``device`` runs (devices without float64, Apple MPS, use the CPU)."""
    return torch.device("cpu") if device.type == "mps" else device


def _projection(block_hash: str, hidden_size: int, output_dim: int, device: torch.device):
    """Return the cached ``(W float64 [D, H], t float64 [D])`` of a block hash on ``device``."""
    return _CACHE.get(
        (block_hash, hidden_size, output_dim, str(device)),
        lambda: (
            lm_head(block_hash, hidden_size, output_dim, device=device).double(),
            target(block_hash, output_dim, device=device),
        ),
    )


_CACHE = LRUCache(CACHE_SIZE)


def clear_cache() -> None:
    """Drop the cached lm_head matrices and targets."""
    _CACHE.clear()


# --------------------------------------------------------------------------- distances (SPEC §5)


def _project_fixed(x: torch.Tensor, w: torch.Tensor) -> torch.Tensor:
    # x [C <= MATMUL_CHUNK, H] float64 -> [C, D]; always one product of MATMUL_CHUNK rows.
    c = x.shape[0]
    if c < MATMUL_CHUNK:
        x = torch.cat([x, x.new_zeros(MATMUL_CHUNK - c, x.shape[1])])
    return (x @ w.T)[:c]


def distances_from_streams(
    h: torch.Tensor, signs: Optional[torch.Tensor], v: torch.Tensor, w: torch.Tensor, t: torch.Tensor
) -> torch.Tensor:
    """Return SPEC §5 distances as float32 ``[C]`` for at most ``MATMUL_CHUNK`` nonces, from their streams.

    ``h`` ``[C, H]`` any float dtype; ``signs`` float ``[C, H]`` or None;
    ``v`` unit reflection vectors float64 ``[C, R, H]``; ``w`` float64 ``[D, H]``;
    ``t`` unit float64 ``[D]``. Pure tensor code (it compiles with torch.compile).
    """
    h = h.to(torch.float32)
    x = h.double()
    if signs is not None:
        x = x * signs
    for r in range(v.shape[1]):
        vr = v[:, r]
        x = x - (2.0 * tree_sum(x * vr))[:, None] * vr
    x = x / norm(x)[:, None]
    logits = _project_fixed(x, w)
    y = logits / norm(logits)[:, None]
    d = norm(y - t)
    finite = torch.isfinite(h).all(dim=1)
    return torch.where(finite, d, torch.nan).to(torch.float32)


def compute_distances(
    last_hidden: torch.Tensor,
    block_hash: str,
    public_key: str,
    nonces: NoncesLike,
    *,
    sign_flips: bool = True,
    output_dim: int = POC_OUTPUT_DIM,
    num_reflections: int = NUM_REFLECTIONS,
) -> torch.Tensor:
    """Return the distance of each nonce (SPEC §5) as float32 ``[B]`` on ``last_hidden``'s device."""
    return distances(
        check_distance_args(last_hidden, block_hash, public_key, nonces, sign_flips, output_dim, num_reflections)
    )


def distances(args: DistanceArgs, *, core: Callable = distances_from_streams) -> torch.Tensor:
    """Return the distances of validated arguments as float32 ``[B]`` on ``args.last_hidden``'s device.

    ``core`` evaluates one chunk of at most ``MATMUL_CHUNK`` nonces from its
    streams (:func:`distances_from_streams`; the benchmarks pass a
    ``torch.compile``'d one).
    """
    last_hidden = args.last_hidden
    out_device = last_hidden.device
    b, hidden = last_hidden.shape
    if b == 0:
        return torch.empty(0, dtype=torch.float32, device=out_device)
    device = compute_device(out_device)
    w, t = _projection(args.block_hash, hidden, args.output_dim, device)
    seeds = derive_nonce_seeds(args.block_hash, args.public_key, args.nonces, args.num_reflections, need_input=False)
    out = torch.empty(b, dtype=torch.float32, device=device)
    for c0 in range(0, b, MATMUL_CHUNK):
        c1 = min(b, c0 + MATMUL_CHUNK)
        h = last_hidden[c0:c1].to(device=device)
        signs = sign_flips(seeds.signs[c0:c1].to(device), hidden) if args.sign_flips else None
        v = reflection_vectors(seeds.reflections[c0:c1].to(device), hidden)
        out[c0:c1] = core(h, signs, v, w, t)
    return out.to(out_device)


# --------------------------------------------------------------------------- inputs (SPEC §6)


def generate_inputs(
    block_hash: str,
    public_key: str,
    nonces: NoncesLike,
    seq_len: int,
    hidden_size: int,
    *,
    dtype: torch.dtype = torch.float16,
    device="cpu",
    out: Optional[torch.Tensor] = None,
    stronger_rng: bool = False,
) -> torch.Tensor:
    """Return the random input embeddings (SPEC §6) as ``[B, seq_len, H]`` in ``dtype`` on ``device``.

    Values are computed in float32 and cast to ``dtype`` once. With ``out``, the
    embeddings are written into it (its shape, dtype and device must match) and
    ``out`` is returned. ``stronger_rng``: the stronger inputs of SPEC-ARTIFACTS §2.
    """
    return inputs(
        check_input_args(block_hash, public_key, nonces, seq_len, hidden_size, dtype, device, out, stronger_rng)
    )


def inputs(args: InputArgs) -> torch.Tensor:
    """Return the input embeddings of validated arguments (``args.out`` when given)."""
    b, n = len(args.nonces), args.seq_len * args.hidden_size
    out = args.output()
    if b == 0:
        return out
    compute = compute_device(out.device)
    if args.stronger:
        # SPEC-ARTIFACTS §2: segment j of length min(L, n - jL), L = ceil(n / 8), is N(s_j, that length)
        seeds = stronger_input_seeds(args.block_hash, args.public_key, args.nonces).to(compute)
        seg = -(-n // STRONGER_SEGMENTS)
        rows = torch.empty(b, n, dtype=torch.float32, device=compute)
        for j in range(STRONGER_SEGMENTS):
            if j * seg < n:
                length = min(seg, n - j * seg)
                rng.normal(seeds[:, j], length, out=rows[:, j * seg : j * seg + length])
        out.copy_(rows.view(b, args.seq_len, args.hidden_size))
        return out
    seeds = derive_nonce_seeds(args.block_hash, args.public_key, args.nonces, need_post=False).input.to(compute)
    if out.is_contiguous() and compute == out.device:
        rng.normal(seeds, n, out=out.view(b, n))
    else:
        out.copy_(rng.normal(seeds, n, device=compute).view(b, args.seq_len, args.hidden_size))
    return out


# --------------------------------------------------------------------------- artifacts (SPEC-ARTIFACTS §4)


def compute_artifacts(
    last_hidden: torch.Tensor, block_hash: str, public_key: str, nonces: NoncesLike, *, k: int = ARTIFACT_K
) -> torch.Tensor:
    """Return each nonce's artifact (SPEC-ARTIFACTS §4) as float32 unit vectors ``[B, k]``, on last_hidden's device."""
    return artifacts(check_artifact_args(last_hidden, block_hash, public_key, nonces, k))


def artifacts(args: ArtifactArgs) -> torch.Tensor:
    """Return the artifacts of validated arguments as float32 ``[B, k]``; a row with NaN or Inf gives NaN.

    Evaluated in float64 on the contract's float32 streams and rounded to
    float32 once: ``h / (||h|| + 1e-8)``, the k coordinates of
    ``vectors.pick_indices`` in the canonical order, k-1 Haar reflections, and
    ``y / (||y|| + 1e-8)``. Every step is row-wise: batch invariant.
    """
    last_hidden = args.last_hidden
    out_device = last_hidden.device
    b, hidden = last_hidden.shape
    if b == 0:
        return torch.empty(0, args.k, dtype=torch.float32, device=out_device)
    device = compute_device(out_device)
    h32 = last_hidden.to(device=device, dtype=torch.float32)
    h = h32.double()
    h = h / (norm(h) + ARTIFACT_EPS)[:, None]
    idx = vectors.pick_indices(args.block_hash, args.public_key, args.nonces, hidden, args.k, device=device)
    x = h.gather(1, idx)
    haar_seeds = derive_artifact_seeds(args.block_hash, args.public_key, args.nonces, args.k).haar
    u = haar_vectors(haar_seeds.to(device), args.k)
    for j in range(args.k - 1):
        x = x - (2.0 * tree_sum(x * u[:, j]))[:, None] * u[:, j]
    y = x / (norm(x) + ARTIFACT_EPS)[:, None]
    finite = torch.isfinite(h32).all(dim=1, keepdim=True)
    return torch.where(finite, y, torch.nan).to(device=out_device, dtype=torch.float32)


# --------------------------------------------------------------------------- layer transform (SPEC §7)


def apply_layer_transform(x: torch.Tensor, v: torch.Tensor, *, normalize: bool = True) -> torch.Tensor:
    """Return the layer transform of every row of ``x`` ``[..., H]``, in ``x``'s dtype, shape and device.

    ``normalize=True``: SPEC §7, ``y = x / (||x|| + 1e-8)``, then ``y - 2 (y·v) v``;
    ``normalize=False``: SPEC-ARTIFACTS §3, ``x - 2 (x·v) v``. Either is the
    deployed code's eager op sequence in the activation dtype, with its
    roundings (not the exact value, from which it differs by up to 5 bf16
    ulps): ``v`` cast to the dtype; ``||x||`` accumulated in float32 and
    rounded, ``+ 1e-8`` and the division each rounded; the products ``y ⊙ v``
    rounded, their float32 sum rounded, ``2·dot`` exact, ``(2·dot) ⊙ v``
    rounded, the difference rounded. (Only the order of the float32
    accumulations is torch's own, and may differ between devices.)
    """
    check_layer_args(x, v)
    vd = v.to(device=x.device, dtype=x.dtype)
    if normalize:
        x = x / (x.norm(dim=-1, keepdim=True) + LAYER_HOOK_EPS)
    return x - 2 * (x * vd).sum(dim=-1, keepdim=True) * vd
