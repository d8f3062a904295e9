"""Triton device functions of the PoC v2 contract's random streams (SPEC §2-3).

- ``hash32(key, seed)``: MurmurHash3_x86_32 of one 4-byte block without the
  ``h ^= length`` step, in uint32 arithmetic (products wrap modulo 2**32).
- ``uniform_from_hash(h) = float32(h) * 2**-32`` (uint32 -> float32 rounds to
  nearest even, the scale is exact).
- ``normal_pair(seed, j, p)``: Box-Muller pair ``j`` of ``N(seed, n)`` with
  ``p = ceil(n / 2)``: ``(N[j], N[p + j]) = rad * (cos, sin)(ang)`` with
  ``rad = sqrt(-2 log max(U[j], 1e-10))`` and ``ang = float32(2π) * U[p + j]``.

Every value is a pure function of ``(seed, logical index)``; no index is ever
derived from a program id or a block size, so results never depend on tiling
or on batch composition.
"""

import triton
import triton.language as tl

from ... import constants

# The contract's constants (poc_kernels.constants), as compile-time constants of the kernels.
TWO_PI_F32 = tl.constexpr(constants.TWO_PI_F32)
INV_2_32 = tl.constexpr(constants.INV_2_32)
UNIFORM_MIN = tl.constexpr(constants.UNIFORM_MIN)
LM_HEAD_SCALE = tl.constexpr(constants.LM_HEAD_SCALE)


@triton.jit
def hash32(key, seed):
    # key and seed are uint32 (a seed >= 2**31 arrives as int64: callers cast
    # it to uint32 first, or the arithmetic silently becomes 64-bit).
    k = key * 0xCC9E2D51
    k = (k << 15) | (k >> 17)
    k = k * 0x1B873593
    h = seed ^ k
    h = (h << 13) | (h >> 19)
    h = h * 5 + 0xE6546B64
    h = h ^ (h >> 16)
    h = h * 0x85EBCA6B
    h = h ^ (h >> 13)
    h = h * 0xC2B2AE35
    h = h ^ (h >> 16)
    return h


@triton.jit
def uniform_from_hash(h):
    return h.to(tl.float32) * INV_2_32


@triton.jit
def uniform(seed, index):
    return uniform_from_hash(hash32(index, seed))


@triton.jit
def normal_pair(seed, j, p):
    # j and p are uint32 with p + j < 2**32.
    u1 = tl.maximum(uniform(seed, j), UNIFORM_MIN)
    u2 = uniform(seed, p + j)
    # sqrt_rn: tl.sqrt is an approximation on NVIDIA GPUs.
    rad = tl.sqrt_rn(-2.0 * tl.log(u1))
    ang = TWO_PI_F32 * u2
    return rad * tl.cos(ang), rad * tl.sin(ang)


@triton.jit
def round_to_bf16(x):
    # float32 -> bfloat16, round to nearest even, with integer ops so the GPU
    # and the interpreter (which truncates) give the same bits; NaN stays NaN.
    bits = x.to(tl.uint32, bitcast=True)
    rounded = (bits + (0x7FFF + ((bits >> 16) & 1))) >> 16
    rounded = tl.where(x != x, 0x7FC0, rounded)  # noqa: PLR0124  (x != x: NaN; no isnan in every Triton)
    return rounded.to(tl.uint16).to(tl.bfloat16, bitcast=True)


@triton.jit
def cast_out(x, OUT_DTYPE: tl.constexpr):
    if OUT_DTYPE == tl.bfloat16:
        return round_to_bf16(x)
    else:
        return x.to(OUT_DTYPE)


@triton.jit
def sign_flip(seed, index):
    # SPEC §4: +1 when U > 0.5, else -1 (exactly 0.5 gives -1).
    return tl.where(uniform(seed, index) > 0.5, 1.0, -1.0)


@triton.jit
def _stream_probe_kernel(
    seed_ptr, index_ptr, hash_ptr, uniform_ptr, sign_ptr, cos_ptr, sin_ptr, n, p, BLOCK: tl.constexpr
):
    offs = tl.program_id(0) * BLOCK + tl.arange(0, BLOCK)
    m = offs < n
    seed = tl.load(seed_ptr).to(tl.uint32)
    j = tl.load(index_ptr + offs, mask=m, other=0).to(tl.uint32)
    tl.store(hash_ptr + offs, hash32(j, seed).to(tl.int64), mask=m)
    tl.store(uniform_ptr + offs, uniform(seed, j), mask=m)
    tl.store(sign_ptr + offs, sign_flip(seed, j), mask=m)
    c, s = normal_pair(seed, j, p.to(tl.uint32))
    tl.store(cos_ptr + offs, c, mask=m)
    tl.store(sin_ptr + offs, s, mask=m)


def stream_values(seed: int, index, p: int) -> dict:
    """Return the device functions' values at stream positions ``index`` (int64 tensor) for ``seed``.

    ``{"hash": int64, "uniform", "sign", "cos", "sin": float32}``, where
    ``cos``/``sin`` are Box-Muller pair ``index`` of a stream with ``p`` pairs.
    The kernels' own view of the contract's streams, for checking them.
    """
    import torch

    device = index.device
    n = index.numel()
    out = {"hash": torch.empty(n, dtype=torch.int64, device=device)}
    for name in ("uniform", "sign", "cos", "sin"):
        out[name] = torch.empty(n, dtype=torch.float32, device=device)
    if n:
        _stream_probe_kernel[(triton.cdiv(n, 1024),)](
            torch.tensor([seed], dtype=torch.int64, device=device),
            index.contiguous(),
            out["hash"],
            out["uniform"],
            out["sign"],
            out["cos"],
            out["sin"],
            n,
            p,
            BLOCK=1024,
        )
    return out
