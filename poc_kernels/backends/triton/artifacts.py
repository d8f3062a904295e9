"""Artifacts of the artifact scheme (SPEC-ARTIFACTS §4-5) in one fused launch, one program per nonce.

For nonce ``b`` with final-norm hidden state ``h`` (``[H]``)::

    h   = h / (||h|| + 1e-8)
    idx = the k smallest of hash(i, seed_pick), i < H, in the canonical order of §5
    x   = h[idx];  x = x - 2 (x·u_j) u_j  for j < k-1,  u_j = N(seed_j, k) / (||N|| + 1e-30)
    y   = x / (||x|| + 1e-8)

The pick is made in the kernel from the counter hash: ``k`` passes over the
hashes, each taking the least key ``hash * 2**31 + i`` above the previous
one, give the k smallest in (hash, index) order; the canonical order (indices
strictly below the k-th hash first, then those equal to it, each class in
ascending index order) is then a rank computed on the k keys. Never a sort's or
``torch.topk``'s own order. After the float32 streams everything is float64
(a few hundred operations per nonce) and rounded to float32 once, so a nonce's
artifact depends on its row alone, and a row with NaN or Inf gives NaN.
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl

from ...constants import ARTIFACT_EPS, HAAR_EPS
from ._streams import hash32, normal_pair
from .configs import Config, config_for

#: Keys ``hash * 2**31 + index`` stay below 2**63 for hidden sizes below 2**31.
KEY_SHIFT = tl.constexpr(2**31)
KEY_MAX = tl.constexpr(2**63 - 1)
EPS = tl.constexpr(ARTIFACT_EPS)
U_EPS = tl.constexpr(HAAR_EPS)


@triton.jit
def _artifact_kernel(
    h_ptr,
    stride_hb,
    stride_hh,
    pick_seed_ptr,
    haar_seed_ptr,
    out_ptr,
    H,
    K: tl.constexpr,
    KPAD: tl.constexpr,
    BLOCK_H: tl.constexpr,
):
    b = tl.program_id(0).to(tl.int64)
    row = h_ptr + b * stride_hb
    offs = tl.arange(0, BLOCK_H)
    slot = tl.arange(0, KPAD)
    # the k smallest keys hash * 2**31 + i, one pass each: the least key above the previous one
    seed = tl.load(pick_seed_ptr + b).to(tl.uint32)
    keys = tl.zeros([KPAD], dtype=tl.int64) + KEY_MAX
    prev = tl.zeros([BLOCK_H], dtype=tl.int64) - 1
    for j in tl.static_range(K):
        best = tl.zeros([BLOCK_H], dtype=tl.int64) + KEY_MAX
        for h0 in range(0, H, BLOCK_H):
            i = h0 + offs
            key = hash32(i.to(tl.uint32), seed).to(tl.int64) * KEY_SHIFT + i
            best = tl.minimum(best, tl.where((i < H) & (key > prev), key, KEY_MAX))
        least = tl.min(best, axis=0)
        keys = tl.where(slot == j, least, keys)
        prev = tl.zeros([BLOCK_H], dtype=tl.int64) + least
    # canonical order: class (below the k-th hash, then equal to it), then index
    valid = slot < K
    idx = keys % KEY_SHIFT
    hashes = keys // KEY_SHIFT
    kth = tl.max(tl.where(valid, hashes, -1), axis=0)
    order = tl.where(hashes == kth, KEY_SHIFT, 0) + idx
    rank = tl.sum(((order[None, :] < order[:, None]) & valid[None, :]).to(tl.int32), axis=1)
    # ||h||² in float64 (no overflow for any float32 row) and the non-finite count, in a fixed chunk order;
    # after the pick, so that nothing computed before lives across its passes (Triton 3.6 spilled the sum there)
    ss = tl.zeros([BLOCK_H], dtype=tl.float64)
    bad = tl.zeros([BLOCK_H], dtype=tl.int32)
    for h0 in range(0, H, BLOCK_H):
        i = h0 + offs
        x = tl.load(row + i * stride_hh, mask=i < H, other=0.0).to(tl.float32)
        bad += ((x != x) | (tl.abs(x) == float("inf"))).to(tl.int32)  # noqa: PLR0124  (x != x: NaN)
        x64 = x.to(tl.float64)
        ss += x64 * x64
    inv = 1.0 / (tl.sqrt(tl.sum(ss, axis=0)) + EPS)
    vals = tl.load(row + tl.where(valid, idx, 0) * stride_hh, mask=valid, other=0.0).to(tl.float32).to(tl.float64)
    x = tl.sum(tl.where(rank[None, :] == slot[:, None], vals[None, :], 0.0), axis=1) * inv
    # k - 1 Haar reflections: u = N(seed_r, k) (cosines, then sines), normalized in float64
    p = (K + 1) // 2
    pair = tl.where(slot < p, slot, slot - p).to(tl.uint32)
    for r in tl.static_range(K - 1):
        hs = tl.load(haar_seed_ptr + b * (K - 1) + r).to(tl.uint32)
        c, s = normal_pair(hs, pair, p)
        u = tl.where(valid, tl.where(slot < p, c, s), 0.0).to(tl.float64)
        u = u / (tl.sqrt(tl.sum(u * u, axis=0)) + U_EPS)
        x = x - (2.0 * tl.sum(x * u, axis=0)) * u
    y = x / (tl.sqrt(tl.sum(x * x, axis=0)) + EPS)
    y = tl.where(tl.sum(bad, axis=0) == 0, y, float("nan"))
    tl.store(out_ptr + b * K + slot, y.to(tl.float32), mask=valid)


def artifacts(last_hidden: torch.Tensor, pick_seeds: torch.Tensor, haar_seeds: torch.Tensor) -> torch.Tensor:
    """Return the artifacts as float32 ``[B, k]``, ``k = 1 + haar_seeds.shape[1]``; seeds on the same device."""
    b, h = last_hidden.shape
    k = haar_seeds.shape[1] + 1
    out = torch.empty(b, k, dtype=torch.float32, device=last_hidden.device)
    if b == 0:
        return out
    cfg: Config = config_for(last_hidden.device)
    _artifact_kernel[(b,)](
        last_hidden,
        last_hidden.stride(0),
        last_hidden.stride(1),
        pick_seeds,
        haar_seeds,
        out,
        h,
        K=k,
        KPAD=triton.next_power_of_2(k),
        BLOCK_H=min(cfg.artifact_block, triton.next_power_of_2(h)),
        num_warps=cfg.artifact_warps,
        enable_fp_fusion=False,
    )
    return out
