"""Reference implementation of the PoC v2 contract (SPEC §3-7): the oracle.

Every other backend is tested against this module. It runs unchanged on any
torch device and is vectorized over nonces (Python loops only over fixed-size
chunks of nonces, never over single nonces).

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

from . import rng
from ._cache import LRUCache
from ._checks import NoncesLike, check_distance_args, check_input_args, check_int, check_str
from .constants import LAYER_HOOK_EPS, LM_HEAD_SCALE, NUM_REFLECTIONS, POC_OUTPUT_DIM
from .seeds import derive_nonce_seeds, layer_seed, lm_head_seed, target_seed

__all__ = [
    "MATMUL_CHUNK",
    "compute_distances",
    "compute_distances_per_nonce",
    "compute_distances_batched_fp32",
    "distances_from_streams",
    "generate_inputs",
    "lm_head",
    "target",
    "sign_flips",
    "reflection_vectors",
    "layer_vector",
    "apply_layer_transform",
    "tree_sum",
    "clear_cache",
]

#: Rows per projection matmul. Every product ``x @ W.T`` has exactly this many
#: rows, so each nonce is reduced by the same kernel in the same order.
MATMUL_CHUNK = 64
#: Number of ``(block_hash, H, D, device)`` projections kept in memory.
CACHE_SIZE = 4


# --------------------------------------------------------------------------- helpers


def tree_sum(x: torch.Tensor) -> torch.Tensor:
    """Return the sum over the last dim in a fixed pairwise order, same dtype and device.

    Element ``i`` is added to element ``i + m/2`` for ``m`` the next power of two
    (zero padded), and so on down to one value. Only elementwise adds are used,
    so the result of a row never depends on the other rows, the device's
    reduction heuristics or the thread count.
    """
    n = x.shape[-1]
    if n == 0:
        return x.new_zeros(x.shape[:-1])
    m = 1 << (n - 1).bit_length()
    if m != n:
        x = torch.nn.functional.pad(x, (0, m - n))
    while m > 1:
        m //= 2
        x = x[..., :m] + x[..., m:]
    return x[..., 0]


def _norm(x: torch.Tensor) -> torch.Tensor:
    return torch.sqrt(tree_sum(x * x))


def _compute_device(device: torch.device) -> torch.device:
    # The oracle evaluates in float64; devices without it (Apple MPS) use the CPU.
    return torch.device("cpu") if device.type == "mps" else device


# --------------------------------------------------------------------------- derived vectors


def lm_head(block_hash: str, hidden_size: int, output_dim: int = POC_OUTPUT_DIM, *, device="cpu") -> torch.Tensor:
    """Return the random lm_head ``W = 0.02 * N(seed, D*H).view(D, H)`` as float32 ``[D, H]`` on ``device``."""
    check_str(block_hash, "block_hash")
    hidden_size = check_int(hidden_size, "hidden_size", 1)
    output_dim = check_int(output_dim, "output_dim", 1)
    w = rng.normal(lm_head_seed(block_hash), output_dim * hidden_size, device=torch.device(device))
    return w.mul_(LM_HEAD_SCALE).view(output_dim, hidden_size)


def target(block_hash: str, output_dim: int = POC_OUTPUT_DIM, *, device="cpu") -> torch.Tensor:
    """Return the unit target ``t = N(seed, D) / ||N||`` as float64 ``[D]`` on ``device``."""
    check_str(block_hash, "block_hash")
    output_dim = check_int(output_dim, "output_dim", 1)
    t = rng.normal(target_seed(block_hash), output_dim, device=torch.device(device)).double()
    return t / _norm(t)


def sign_flips(seeds: torch.Tensor, hidden_size: int) -> torch.Tensor:
    """Return the sign flips (+1 when ``U > 0.5``, else -1) as float32 ``[B, H]`` on ``seeds``' device."""
    u = rng.uniform(seeds.reshape(-1), hidden_size)
    return torch.where(u > 0.5, 1.0, -1.0).to(torch.float32)


def reflection_vectors(seeds: torch.Tensor, hidden_size: int) -> torch.Tensor:
    """Return unit vectors ``N(seed, H) / ||N||`` as float64 ``[*seeds.shape, H]`` on ``seeds``' device."""
    v = rng.normal(seeds.reshape(-1), hidden_size).double()
    v = v / _norm(v)[:, None]
    return v.view(*seeds.shape, hidden_size)


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


# --------------------------------------------------------------------------- distances


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
    x = x / _norm(x)[:, None]
    logits = _project_fixed(x, w)
    y = logits / _norm(logits)[:, None]
    d = _norm(y - t)
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
    last_hidden, nonce_list = check_distance_args(
        last_hidden, block_hash, public_key, nonces, sign_flips, output_dim, num_reflections
    )
    return _compute_distances(last_hidden, block_hash, public_key, nonce_list, sign_flips, output_dim, num_reflections)


def _compute_distances(
    last_hidden: torch.Tensor,
    block_hash: str,
    public_key: str,
    nonce_list: torch.Tensor,  # int64 [B], validated
    use_signs: bool,
    output_dim: int,
    num_reflections: int,
    core: Callable = None,
) -> torch.Tensor:
    # Arguments are already validated. ``core`` replaces distances_from_streams
    # (the benchmarks pass a torch.compile'd one).
    core = core or distances_from_streams
    out_device = last_hidden.device
    b, hidden = last_hidden.shape
    if b == 0:
        return torch.empty(0, dtype=torch.float32, device=out_device)
    device = _compute_device(out_device)
    w, t = _projection(block_hash, hidden, output_dim, device)
    seeds = derive_nonce_seeds(block_hash, public_key, nonce_list, num_reflections, need_input=False)
    out = torch.empty(b, dtype=torch.float32, device=device)
    for c0 in range(0, b, MATMUL_CHUNK):
        c1 = min(b, c0 + MATMUL_CHUNK)
        h = last_hidden[c0:c1].to(device=device)
        signs = sign_flips(seeds.signs[c0:c1].to(device), hidden) if use_signs else None
        v = reflection_vectors(seeds.reflections[c0:c1].to(device), hidden)
        out[c0:c1] = core(h, signs, v, w, t)
    return out.to(out_device)


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
    last_hidden, nonce_list = check_distance_args(
        last_hidden, block_hash, public_key, nonces, sign_flips, output_dim, num_reflections
    )
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
) -> torch.Tensor:
    """Return distances as float32 ``[B]``: a strong plain-PyTorch pipeline, the benchmark's second baseline.

    All nonces at once in float32: one sign tensor, one ``[B, R, H]`` tensor of
    reflection vectors, the cached float32 lm_head and one matmul (MKL on CPU,
    cuBLAS on CUDA, TF32 off). Fast but, like any batched BLAS product, not
    batch invariant.
    """
    last_hidden, nonce_list = check_distance_args(
        last_hidden, block_hash, public_key, nonces, sign_flips, output_dim, num_reflections
    )
    device = last_hidden.device
    b, hidden = last_hidden.shape
    if b == 0:
        return torch.empty(0, dtype=torch.float32, device=device)
    w, t = _literal_projection(block_hash, hidden, output_dim, device)
    seeds = derive_nonce_seeds(block_hash, public_key, nonce_list, num_reflections, need_input=False)
    x = last_hidden.float()
    if sign_flips:
        x = x * torch.where(rng.uniform(seeds.signs.to(device), hidden) > 0.5, 1.0, -1.0)
    if num_reflections:
        v = rng.normal(seeds.reflections.reshape(-1).to(device), hidden).view(b, num_reflections, hidden)
        v = v / v.norm(dim=-1, keepdim=True)
        for r in range(num_reflections):
            x = x - 2.0 * (x * v[:, r]).sum(-1, keepdim=True) * v[:, r]
    x = x / x.norm(dim=-1, keepdim=True)
    logits = x @ w.T
    return (logits / logits.norm(dim=-1, keepdim=True) - t).norm(dim=-1)


# The baseline's streams are written the way the original code writes them:
# plain int64 tensor ops whose products wrap modulo 2**64 and are masked to 32
# bits, a fresh tensor per step. The conformance tests hold them to the contract.


def _literal_uniform(seed: int, n: int, device) -> torch.Tensor:
    m = 0xFFFFFFFF
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
    return h.float() / 2.0**32


def _literal_normal(seed: int, n: int, device) -> torch.Tensor:
    p = (n + 1) // 2
    u = _literal_uniform(seed, 2 * p, device)
    u1 = torch.clamp(u[:p], min=1e-10)
    rad = torch.sqrt(-2.0 * torch.log(u1))
    ang = rng.TWO_PI_F32 * u[p:]
    return torch.cat([rad * torch.cos(ang), rad * torch.sin(ang)])[:n]


_LITERAL_CACHE = LRUCache(CACHE_SIZE)


def _literal_projection(block_hash: str, hidden: int, output_dim: int, device: torch.device):
    def build():
        t = _literal_normal(target_seed(block_hash), output_dim, device)
        return lm_head(block_hash, hidden, output_dim, device=device), t / t.norm()

    return _LITERAL_CACHE.get((block_hash, hidden, output_dim, str(device)), build)


# --------------------------------------------------------------------------- inputs


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
) -> torch.Tensor:
    """Return the random input embeddings (SPEC §6) as ``[B, seq_len, H]`` in ``dtype`` on ``device``.

    Values are computed in float32 and cast to ``dtype`` once. With ``out``, the
    embeddings are written into it (its shape, dtype and device must match) and
    ``out`` is returned.
    """
    nonce_list, dtype, device = check_input_args(
        block_hash, public_key, nonces, seq_len, hidden_size, dtype, device, out
    )
    return _generate_inputs(block_hash, public_key, nonce_list, seq_len, hidden_size, dtype, device, out)


def _generate_inputs(block_hash, public_key, nonce_list, seq_len, hidden_size, dtype, device, out):
    # Arguments are already validated.
    b, n = len(nonce_list), seq_len * hidden_size
    if out is None:
        out = torch.empty(b, seq_len, hidden_size, dtype=dtype, device=device)
    if b == 0:
        return out
    compute = _compute_device(out.device)
    seeds = derive_nonce_seeds(block_hash, public_key, nonce_list, need_post=False).input.to(compute)
    if out.is_contiguous() and compute == out.device:
        rng.normal(seeds, n, out=out.view(b, n))
    else:
        out.copy_(rng.normal(seeds, n, device=compute).view(b, seq_len, hidden_size))
    return out


# --------------------------------------------------------------------------- layer hooks (SPEC §7)


def layer_vector(block_hash: str, layer: int, hidden_size: int, *, device="cpu") -> torch.Tensor:
    """Return the unit layer-hook vector ``v_i = N(seed_layer_i, H) / ||N||`` as float32 ``[H]``."""
    check_str(block_hash, "block_hash")
    layer = check_int(layer, "layer", 0)
    hidden_size = check_int(hidden_size, "hidden_size", 1)
    v = rng.normal(layer_seed(block_hash, layer), hidden_size, device=torch.device(device)).double()
    return (v / _norm(v)).float()


def apply_layer_transform(x: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
    """Return ``y - 2 (y·v) v`` with ``y = x / (||x|| + 1e-8)`` per row, in ``x``'s dtype and shape.

    Evaluated in float64 and rounded once to ``x.dtype`` (the original code
    rounds after every step in the activation dtype, so the two may differ by
    about one unit in the last place of that dtype).
    """
    if not isinstance(x, torch.Tensor) or not x.dtype.is_floating_point:
        raise TypeError(f"x must be a floating tensor, got {getattr(x, 'dtype', type(x).__name__)}")
    if x.dim() < 1:
        raise ValueError("x must have at least one dimension [..., hidden]")
    if not isinstance(v, torch.Tensor) or v.dim() != 1 or v.shape[0] != x.shape[-1]:
        raise ValueError(f"v must be a 1-D tensor of size {x.shape[-1]}, got {getattr(v, 'shape', None)}")
    device = _compute_device(x.device)
    x64 = x.to(device=device, dtype=torch.float64)
    v64 = v.to(device=device, dtype=torch.float64)
    y = x64 / (_norm(x64) + LAYER_HOOK_EPS)[..., None]
    y = y - (2.0 * tree_sum(y * v64))[..., None] * v64
    return y.to(device=x.device, dtype=x.dtype)
