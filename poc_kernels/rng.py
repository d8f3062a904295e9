"""Seeds, hash and random streams of the PoC v2 contract (SPEC §1-3).

Every random number in PoC v2 is counter based: element ``i`` of a stream is a
pure function of ``(seed, i)``, so any slice of a stream can be produced on its
own, on any device, in any order, and batch composition never matters.

- ``seed_from_string(s)``: the first 4 bytes of SHA-256(UTF-8 ``s``), big endian.
- ``hash32(key, seed)``: MurmurHash3_x86_32 of one 4-byte block *without* the
  final ``h ^= length`` step (so it is not ``mmh3.hash``).
- ``uniform(seed, n)[i] = float32(hash32(i, seed)) / 2**32`` (round to nearest
  even, so hashes >= 2**32 - 128 give exactly 1.0).
- ``normal(seed, n)``: Box-Muller in float32 over ``p = ceil(n / 2)`` pairs;
  all cosines come first, then all sines, so the stream depends on ``n``.

All integer arithmetic is done in int64 with every intermediate kept below
2**63, so the results are bit-exact on every torch device (no reliance on
signed-overflow wrapping). Seeds may be Python ints or integer tensors; a seed
tensor of shape ``[S]`` yields ``S`` independent streams as rows of ``[S, n]``.
"""

from __future__ import annotations

import hashlib
from typing import Optional, Union

import torch

from ._checks import check_int
from .constants import INV_2_32, MAX_NONCE, TWO_PI_F32, UNIFORM_MIN

__all__ = [
    "TWO_PI_F32",
    "UNIFORM_MIN",
    "seed_from_string",
    "hash32",
    "uniform",
    "normal",
    "normal_pairs",
    "normal_slice",
    "smallest_k_canonical",
]

_M32 = MAX_NONCE  # the 32-bit mask

SeedLike = Union[int, torch.Tensor]


def seed_from_string(s: str) -> int:
    """Return the 32-bit seed of ``s``: SHA-256 of its UTF-8 bytes, first 4 bytes big endian."""
    if not isinstance(s, str):
        raise TypeError(f"seed_from_string expects a str, got {type(s).__name__}")
    return int.from_bytes(hashlib.sha256(s.encode("utf-8")).digest()[:4], "big")


def _mul32_(a: torch.Tensor, c: int, tmp: torch.Tensor) -> None:
    # a = (a * c) mod 2**32 in place, for a in [0, 2**32): c is split in 16-bit
    # halves so that no int64 intermediate exceeds 2**49.
    lo, hi = c & 0xFFFF, c >> 16
    torch.mul(a, hi, out=tmp)
    tmp.bitwise_and_(0xFFFF).bitwise_left_shift_(16)
    a.mul_(lo).add_(tmp).bitwise_and_(_M32)


def _rotl32_(a: torch.Tensor, r: int, tmp: torch.Tensor) -> None:
    torch.bitwise_right_shift(a, 32 - r, out=tmp)
    a.bitwise_left_shift_(r).bitwise_or_(tmp).bitwise_and_(_M32)


def _check_seed(seed: SeedLike, device: Optional[torch.device]) -> SeedLike:
    if isinstance(seed, torch.Tensor):
        if seed.dtype.is_floating_point or seed.dtype.is_complex or seed.dtype == torch.bool:
            raise TypeError(f"seed must be an integer tensor, got dtype {seed.dtype}")
        seed = seed.to(device=device, dtype=torch.int64)
        if seed.numel() and (int(seed.min()) < 0 or int(seed.max()) > _M32):
            raise ValueError("seed values must lie in [0, 2**32)")
        return seed
    if isinstance(seed, bool) or not isinstance(seed, int):
        try:
            seed = int(seed.__index__())  # numpy integers
        except (AttributeError, TypeError):
            raise TypeError(f"seed must be an int or an integer tensor, got {type(seed).__name__}") from None
    if not 0 <= seed <= _M32:
        raise ValueError(f"seed must lie in [0, 2**32), got {seed}")
    return seed


def _hash32_(h: torch.Tensor, seed: SeedLike) -> torch.Tensor:
    # Hash int64 keys in [0, 2**32) in place; ``seed`` broadcasts against ``h``.
    # In-place ops on cache-sized tiles are what make the reference fast enough.
    tmp = torch.empty_like(h)
    _mul32_(h, 0xCC9E2D51, tmp)
    _rotl32_(h, 15, tmp)
    _mul32_(h, 0x1B873593, tmp)
    h.bitwise_xor_(seed)
    _rotl32_(h, 13, tmp)
    h.mul_(5).add_(0xE6546B64).bitwise_and_(_M32)
    h.bitwise_xor_(torch.bitwise_right_shift(h, 16, out=tmp))
    _mul32_(h, 0x85EBCA6B, tmp)
    h.bitwise_xor_(torch.bitwise_right_shift(h, 13, out=tmp))
    _mul32_(h, 0xC2B2AE35, tmp)
    h.bitwise_xor_(torch.bitwise_right_shift(h, 16, out=tmp))
    return h


def hash32(keys: torch.Tensor, seed: SeedLike) -> torch.Tensor:
    """Return the 32-bit hashes of ``keys`` under ``seed`` (SPEC §2).

    ``keys`` is any integer tensor with values in [0, 2**32); ``seed`` is an int
    or an integer tensor broadcastable against ``keys``. The result is int64
    (values in [0, 2**32)) on ``keys``' device, or uint32 when ``keys`` is uint32.
    """
    if not isinstance(keys, torch.Tensor):
        raise TypeError(f"keys must be an integer tensor, got {type(keys).__name__}")
    if keys.dtype.is_floating_point or keys.dtype.is_complex or keys.dtype == torch.bool:
        raise TypeError(f"keys must be an integer tensor, got dtype {keys.dtype}")
    out_uint32 = keys.dtype == torch.uint32
    k = keys.to(torch.int64)
    if k.numel() and (int(k.min()) < 0 or int(k.max()) > _M32):
        raise ValueError("keys must lie in [0, 2**32)")
    seed = _check_seed(seed, keys.device)
    shape = torch.broadcast_shapes(k.shape, seed.shape) if isinstance(seed, torch.Tensor) else k.shape
    h = _hash32_(k.expand(shape).clone(), seed)
    return h.to(torch.uint32) if out_uint32 else h


def _as_rows(seed: SeedLike) -> tuple[SeedLike, bool]:
    """Shape a seed so that it broadcasts against ``[S, n]`` counters."""
    if isinstance(seed, torch.Tensor):
        if seed.dim() > 1:
            raise ValueError(f"seed tensor must be 0-D or 1-D, got shape {tuple(seed.shape)}")
        if seed.dim() == 1:
            return seed[:, None], True
        return seed.reshape(1, 1), False
    return seed, False


def _uniform_range(seed: SeedLike, start: int, stop: int, device) -> torch.Tensor:
    keys = torch.arange(start, stop, device=device, dtype=torch.int64)
    if isinstance(seed, torch.Tensor):
        keys = keys.expand(seed.shape[0], -1)
    # int64 -> float32 is exact to float64 first and rounds to nearest even once;
    # the scale by 2**-32 is exact.
    return _hash32_(keys.clone(), seed).to(torch.float32).mul_(INV_2_32)


def uniform(seed: SeedLike, n: int, *, device=None, start: int = 0) -> torch.Tensor:
    """Return ``U(seed)[start:start+n]`` as float32 ``[n]`` (``[S, n]`` for ``S`` seeds)."""
    n = check_int(n, "n", 0)
    start = check_int(start, "start", 0)
    if start + n > _M32 + 1:
        raise ValueError("stream indices must stay below 2**32")
    seed = _check_seed(seed, device)
    if isinstance(seed, torch.Tensor):
        device = seed.device
    s, rows = _as_rows(seed)
    u = _uniform_range(s, start, start + n, device)
    return u if rows or not isinstance(s, torch.Tensor) else u.reshape(n)


def normal_pairs(seed: SeedLike, n: int, start: int, stop: int, *, device=None) -> tuple[torch.Tensor, torch.Tensor]:
    """Return Box-Muller pairs ``j in [start, stop)`` of ``N(seed, n)`` as float32.

    The first tensor holds ``N[j]`` (cosine half), the second ``N[p + j]`` (sine
    half, ``p = ceil(n / 2)``); the caller drops sine entries with ``p + j >= n``.
    With a 1-D seed tensor both are ``[S, stop - start]``. Working on slices of
    ``j`` bounds the memory of long streams.
    """
    p = (n + 1) // 2
    if not 0 <= start <= stop <= p:
        raise ValueError(f"pair range [{start}, {stop}) must lie within [0, {p})")
    u1 = _uniform_range(seed, start, stop, device).clamp_min_(UNIFORM_MIN)
    u2 = _uniform_range(seed, p + start, p + stop, device)
    rad = torch.sqrt(torch.log(u1).mul_(-2.0))
    ang = u2.mul_(TWO_PI_F32)
    return rad * torch.cos(ang), rad.mul_(torch.sin(ang))


def normal_slice(seed: SeedLike, n: int, start: int, stop: int, *, device=None) -> torch.Tensor:
    """Return ``N(seed, n)[start:stop]`` as float32 ``[stop - start]`` (``[S, stop - start]`` for ``S`` seeds).

    Elements below ``p = ceil(n / 2)`` are the cosine halves of pairs
    ``start ..``, the others the sine halves of pairs ``.. stop - p``: the
    values of :func:`normal` at those positions, computed by
    :func:`normal_pairs` for the pairs the slice needs only.
    """
    n = check_int(n, "n", 0)
    start = check_int(start, "start", 0)
    stop = check_int(stop, "stop", 0)
    if not start <= stop <= n:
        raise ValueError(f"slice [{start}, {stop}) must lie within [0, {n}]")
    if 2 * ((n + 1) // 2) > _M32 + 1:
        raise ValueError("stream length n must stay below 2**32")
    seed = _check_seed(seed, device)
    if isinstance(seed, torch.Tensor):
        device = seed.device
    s, rows = _as_rows(seed)
    if not isinstance(s, torch.Tensor):
        s = torch.tensor([[s]], dtype=torch.int64, device=device)
    p = (n + 1) // 2
    parts = []
    if start < p:
        parts.append(normal_pairs(s, n, start, min(stop, p), device=device)[0])
    if stop > p:
        parts.append(normal_pairs(s, n, max(start, p) - p, stop - p, device=device)[1])
    out = torch.cat(parts, dim=1) if parts else torch.empty(s.shape[0], 0, dtype=torch.float32, device=device)
    return out if rows else out.reshape(stop - start)


def normal(
    seed: SeedLike,
    n: int,
    *,
    device=None,
    out: Optional[torch.Tensor] = None,
    max_tile: int = 1 << 17,
) -> torch.Tensor:
    """Return ``N(seed, n)`` as float32 ``[n]`` (``[S, n]`` for ``S`` seeds), SPEC §3.

    ``out`` may be a float tensor of that shape to write into (any float dtype:
    values are computed in float32 and cast once). The stream is produced in
    slices of at most ``max_tile`` values, so memory stays bounded for long
    streams.
    """
    n = check_int(n, "n", 0)
    seed = _check_seed(seed, device)
    if isinstance(seed, torch.Tensor):
        device = seed.device
    s, rows = _as_rows(seed)
    if not isinstance(s, torch.Tensor):
        s = torch.tensor([[s]], dtype=torch.int64, device=device)
    num_rows = s.shape[0]
    shape = (num_rows, n) if rows else (n,)
    if out is None:
        out = torch.empty(shape, dtype=torch.float32, device=device)
    elif tuple(out.shape) != shape or not out.dtype.is_floating_point:
        raise ValueError(f"out must be a float tensor of shape {shape}, got {out.dtype} {tuple(out.shape)}")
    if n == 0 or num_rows == 0:
        return out
    if 2 * ((n + 1) // 2) > _M32 + 1:
        raise ValueError("stream length n must stay below 2**32")
    view = out if rows else out.view(1, n)
    p = (n + 1) // 2
    step = max(1, max_tile // max(1, num_rows))
    for j0 in range(0, p, step):
        j1 = min(p, j0 + step)
        cos_half, sin_half = normal_pairs(s, n, j0, j1, device=device)
        view[:, j0:j1] = cos_half
        k1 = min(j1, n - p)  # sine entries p + j < n
        if k1 > j0:
            view[:, p + j0 : p + k1] = sin_half[:, : k1 - j0]
    return out


def smallest_k_canonical(scores: torch.Tensor, k: int) -> torch.Tensor:
    """Return the indices of the ``k`` smallest scores of each row, in the canonical order, as int64 ``[..., k]``.

    SPEC-ARTIFACTS §5: first the indices whose score is strictly below the
    k-th smallest score, in ascending index order, then the indices whose score
    equals it, in ascending index order, until ``k`` are taken. That is the
    order CUDA's ``torch.topk(-scores, k, sorted=False)`` returns; it is
    computed here directly, with integer keys and a sort, so every device gives
    the same indices. ``scores`` is an integer tensor ``[..., n]`` (the pick
    hashes), ``1 <= k <= n``; the result is on its device.
    """
    if not isinstance(scores, torch.Tensor) or scores.dtype.is_floating_point or scores.dtype == torch.bool:
        raise TypeError(f"scores must be an integer tensor, got {getattr(scores, 'dtype', type(scores).__name__)}")
    if scores.dim() < 1:
        raise ValueError("scores must have at least one dimension [..., n]")
    n = scores.shape[-1]
    k = check_int(k, "k", 1)
    if k > n:
        raise ValueError(f"k must be <= the number of scores {n}, got {k}")
    s = scores.to(torch.int64)
    kth = torch.sort(s, dim=-1).values[..., k - 1 : k]
    # class 0: below the k-th smallest, 1: equal to it, 2: above; ties inside a class go by index
    cls = (s >= kth).to(torch.int64) + (s > kth).to(torch.int64)
    key = cls * n + torch.arange(n, device=s.device)
    return torch.sort(key, dim=-1).values[..., :k] % n
