"""Fused PoC v2 distances (SPEC §5) in three deterministic launches.

For nonce ``b`` with hidden state ``h``, sign flips ``s``, reflection vectors
``v_r = n_r / ||n_r||`` (``n_r = N(seed_r, H)``), lm_head
``W = 0.02 * N(seed_lm, D*H).view(D, H)`` and unit target ``t``::

    x = (h * s) / max|h|                   # the scale cancels below; it keeps fp32 in range
                                           # (rows with max|h| < 2**-64 are first scaled by 2**64, exactly)
    x = x - 2 (x·n_r) / (n_r·n_r) n_r      # r = 0..R-1, i.e. x = H_{R-1} ... H_0 x
    l = W x
    d = || l / ||l|| - t || = sqrt(1 + t·t - 2 (l·t) / ||l||)

1. ``_prep_kernel``: one program per nonce applies the sign flips and the R
   reflections, generating each vector from its seed in chunks of Box-Muller
   pairs, and writes ``x`` (float32 ``[B, H]``). A separate launch, because
   fused into every output tile it would regenerate the 8 vectors of each
   nonce once per tile (64 times at D = 8192).
2. ``_project_kernel``: program ``(nonce block, output tile)`` computes
   ``l = W x`` for ``BLOCK_B`` nonces and ``2 * BLOCK_N`` outputs, generating
   the ``W`` tile inside the K loop from the counter stream (``W`` is never
   written to memory) or loading it from a cached matrix, and reduces its
   tile to two partial sums per nonce: ``l·l`` and ``l·t``. With ``D`` even,
   row ``o`` and row ``o + D/2`` of ``W`` are the cosine and sine of the same
   Box-Muller pair, so one pair gives two weights.
3. ``_finalize_kernel``: sums the partials of each nonce over the tiles in a
   fixed order (float64) and writes ``d``.

No atomics, no autotuning, and tile sizes fixed per device kind: a nonce's
result never depends on the other nonces of its batch or on the batch size.
A row with NaN/Inf, or all zeros, gives NaN.
"""

from __future__ import annotations

from typing import Optional

import torch
import triton
import triton.language as tl

from ._streams import LM_HEAD_SCALE, normal_pair, sign_flip
from .configs import Config, config_for

#: Rows whose max |h| is below this (2**-64) are scaled up by PRE_SCALE (2**64) before 1 / max|h|.
TINY_MAX = tl.constexpr(2.0**-64)
PRE_SCALE = tl.constexpr(2.0**64)

# ----------------------------------------------------------------------------- kernels


@triton.jit
def _prep_kernel(
    h_ptr,
    stride_hb,
    stride_hh,
    sign_seed_ptr,
    refl_seed_ptr,
    x_ptr,
    B,
    H,
    P,
    USE_SIGNS: tl.constexpr,
    NUM_R: tl.constexpr,
    ROWS: tl.constexpr,
    BLOCK_P: tl.constexpr,
):
    # ROWS nonces per program, each reduced on its own row. Column j of a chunk
    # of pairs covers hidden positions j (cosine half of every stream) and
    # P + j (sine half), P = ceil(H/2).
    rows = tl.program_id(0).to(tl.int64) * ROWS + tl.arange(0, ROWS)
    mrow = rows < B
    offs = tl.arange(0, BLOCK_P)
    h_rows = h_ptr + rows[:, None] * stride_hb
    x_rows = x_ptr + rows[:, None] * H
    p32 = P.to(tl.uint32)

    # Pass 0: the scale max|h| and a non-finite count.
    hmax = tl.zeros([ROWS, BLOCK_P], dtype=tl.float32)
    bad = tl.zeros([ROWS, BLOCK_P], dtype=tl.int32)
    for j0 in range(0, P, BLOCK_P):
        j = (j0 + offs)[None, :]
        ma = mrow[:, None] & (j < P)
        mb = mrow[:, None] & ((P + j) < H)
        a = tl.load(h_rows + j * stride_hh, mask=ma, other=0.0).to(tl.float32)
        c = tl.load(h_rows + (P + j) * stride_hh, mask=mb, other=0.0).to(tl.float32)
        # v != v catches NaN, |v| == inf catches Inf (tl.maximum may drop NaN on GPUs).
        nan = (a != a) | (c != c)  # noqa: PLR0124  (v != v is the NaN test)
        bad += (nan | (tl.abs(a) == float("inf")) | (tl.abs(c) == float("inf"))).to(tl.int32)
        hmax = tl.maximum(hmax, tl.maximum(tl.abs(a), tl.abs(c)))
    scale_max = tl.max(hmax, axis=1)
    ok = (tl.sum(bad, axis=1) == 0) & (scale_max > 0.0)
    # 1 / max|h| overflows float32 when max|h| < 2**-128 (subnormal rows): such a row is first scaled up by
    # 2**64, which is exact, so the others keep the same operations (and bits) and the scale still cancels.
    tiny = scale_max < TINY_MAX
    pre = tl.where(tiny, PRE_SCALE, 1.0)[:, None]
    inv = tl.where(ok, 1.0 / tl.where(ok, tl.where(tiny, scale_max * PRE_SCALE, scale_max), 1.0), float("nan"))
    inv = inv[:, None]

    # Pass 1: scaled, sign-flipped x and the dot products of the first reflection.
    sign_seed = tl.load(sign_seed_ptr + rows, mask=mrow, other=0).to(tl.uint32)[:, None]
    seed_cur = sign_seed
    if NUM_R > 0:
        seed_cur = tl.load(refl_seed_ptr + rows * NUM_R, mask=mrow, other=0).to(tl.uint32)[:, None]
    dot = tl.zeros([ROWS], dtype=tl.float32)
    nn = tl.zeros([ROWS], dtype=tl.float32)
    for j0 in range(0, P, BLOCK_P):
        j = (j0 + offs)[None, :]
        ma = mrow[:, None] & (j < P)
        mb = mrow[:, None] & ((P + j) < H)
        xa = (tl.load(h_rows + j * stride_hh, mask=ma, other=0.0).to(tl.float32) * pre) * inv
        xb = (tl.load(h_rows + (P + j) * stride_hh, mask=mb, other=0.0).to(tl.float32) * pre) * inv
        if USE_SIGNS:
            ju = j.to(tl.uint32)
            xa = xa * sign_flip(sign_seed, ju)
            xb = xb * sign_flip(sign_seed, p32 + ju)
        xa = tl.where(ma, xa, 0.0)
        xb = tl.where(mb, xb, 0.0)
        tl.store(x_rows + j, xa, mask=ma)
        tl.store(x_rows + P + j, xb, mask=mb)
        if NUM_R > 0:
            na, nb = normal_pair(seed_cur, j.to(tl.uint32), p32)
            na = tl.where(ma, na, 0.0)
            nb = tl.where(mb, nb, 0.0)
            dot += tl.sum(xa * na + xb * nb, axis=1)
            nn += tl.sum(na * na + nb * nb, axis=1)
    tl.debug_barrier()

    # Passes 2..R: apply reflection r-1 (regenerating its vector), dot with r.
    coef = (2.0 * dot / tl.where(nn > 0.0, nn, 1.0))[:, None]
    for r in range(1, NUM_R):
        seed_prev = seed_cur
        seed_cur = tl.load(refl_seed_ptr + rows * NUM_R + r, mask=mrow, other=0).to(tl.uint32)[:, None]
        dot = tl.zeros([ROWS], dtype=tl.float32)
        nn = tl.zeros([ROWS], dtype=tl.float32)
        for j0 in range(0, P, BLOCK_P):
            j = (j0 + offs)[None, :]
            ma = mrow[:, None] & (j < P)
            mb = mrow[:, None] & ((P + j) < H)
            pa, pb = normal_pair(seed_prev, j.to(tl.uint32), p32)
            xa = tl.where(ma, tl.load(x_rows + j, mask=ma, other=0.0) - coef * pa, 0.0)
            xb = tl.where(mb, tl.load(x_rows + P + j, mask=mb, other=0.0) - coef * pb, 0.0)
            tl.store(x_rows + j, xa, mask=ma)
            tl.store(x_rows + P + j, xb, mask=mb)
            na, nb = normal_pair(seed_cur, j.to(tl.uint32), p32)
            na = tl.where(ma, na, 0.0)
            nb = tl.where(mb, nb, 0.0)
            dot += tl.sum(xa * na + xb * nb, axis=1)
            nn += tl.sum(na * na + nb * nb, axis=1)
        tl.debug_barrier()
        coef = (2.0 * dot / tl.where(nn > 0.0, nn, 1.0))[:, None]

    # Last pass: apply reflection R-1.
    if NUM_R > 0:
        for j0 in range(0, P, BLOCK_P):
            j = (j0 + offs)[None, :]
            ma = mrow[:, None] & (j < P)
            mb = mrow[:, None] & ((P + j) < H)
            pa, pb = normal_pair(seed_cur, j.to(tl.uint32), p32)
            xa = tl.load(x_rows + j, mask=ma, other=0.0) - coef * pa
            xb = tl.load(x_rows + P + j, mask=mb, other=0.0) - coef * pb
            tl.store(x_rows + j, xa, mask=ma)
            tl.store(x_rows + P + j, xb, mask=mb)


@triton.jit
def _lm_head_tile(seed, o, kk, H, P, D, HALF, PAIRED: tl.constexpr):
    # W tile [BLOCK_K, BLOCK_N] for rows o (columns of the tile) and hidden positions kk.
    if PAIRED:
        # D even: row o < D/2 is the cosine of pair o*H + k, row o + D/2 its sine.
        m = (kk[:, None] < H) & (o[None, :] < HALF)
        j = o[None, :].to(tl.uint32) * H.to(tl.uint32) + kk[:, None].to(tl.uint32)
        c, s = normal_pair(seed, j, P)
        return tl.where(m, LM_HEAD_SCALE * c, 0.0), tl.where(m, LM_HEAD_SCALE * s, 0.0)
    else:
        # Any D: element (o, k) is N[f], f = o*H + k; f < P is a cosine, else the sine of pair f - P.
        m = (kk[:, None] < H) & (o[None, :] < D)
        f = o[None, :].to(tl.uint32) * H.to(tl.uint32) + kk[:, None].to(tl.uint32)
        is_cos = f < P
        c, s = normal_pair(seed, tl.where(is_cos, f, f - P), P)
        return tl.where(m, LM_HEAD_SCALE * tl.where(is_cos, c, s), 0.0), tl.zeros_like(c)


@triton.jit
def _dot_acc(x, w, acc, PRECISION: tl.constexpr, BROADCAST_DOT: tl.constexpr):
    # acc + x @ w. The interpreter's tl.dot is numpy's BLAS matmul, whose result
    # for a row depends on the row's position in the tile; the broadcast
    # product summed over k is position independent.
    if BROADCAST_DOT:
        return acc + tl.sum(x[:, :, None] * w[None, :, :], axis=1)
    else:
        return tl.dot(x, w, acc, input_precision=PRECISION)


@triton.jit
def _project_kernel(
    x_ptr,
    w_ptr,
    t_ptr,
    part_ptr,
    B,
    H,
    D,
    HALF,
    P,
    seed_ptr,
    CACHED: tl.constexpr,
    PAIRED: tl.constexpr,
    BLOCK_B: tl.constexpr,
    BLOCK_N: tl.constexpr,
    BLOCK_K: tl.constexpr,
    PRECISION: tl.constexpr,
    BROADCAST_DOT: tl.constexpr,
):
    pid_b = tl.program_id(0)
    pid_t = tl.program_id(1)
    num_t = tl.num_programs(1)
    rb = pid_b.to(tl.int64) * BLOCK_B + tl.arange(0, BLOCK_B)
    mb = rb < B
    n = tl.arange(0, BLOCK_N)
    if PAIRED:
        o1 = pid_t * BLOCK_N + n
        o2 = o1 + HALF
        m1 = o1 < HALF
        m2 = m1
    else:
        o1 = pid_t * (2 * BLOCK_N) + n
        o2 = o1 + BLOCK_N
        m1 = o1 < D
        m2 = o2 < D
    seed = tl.load(seed_ptr).to(tl.uint32)
    p32 = P.to(tl.uint32)
    acc1 = tl.zeros([BLOCK_B, BLOCK_N], dtype=tl.float32)
    acc2 = tl.zeros([BLOCK_B, BLOCK_N], dtype=tl.float32)
    for k0 in range(0, H, BLOCK_K):
        kk = k0 + tl.arange(0, BLOCK_K)
        mk = kk < H
        x = tl.load(x_ptr + rb[:, None] * H + kk[None, :], mask=mb[:, None] & mk[None, :], other=0.0)
        if CACHED:
            w1 = tl.load(w_ptr + o1[None, :].to(tl.int64) * H + kk[:, None], mask=m1[None, :] & mk[:, None], other=0.0)
            w2 = tl.load(w_ptr + o2[None, :].to(tl.int64) * H + kk[:, None], mask=m2[None, :] & mk[:, None], other=0.0)
        elif PAIRED:
            w1, w2 = _lm_head_tile(seed, o1, kk, H, p32, D, HALF, True)
        else:
            w1, _ = _lm_head_tile(seed, o1, kk, H, p32, D, HALF, False)
            w2, _ = _lm_head_tile(seed, o2, kk, H, p32, D, HALF, False)
        acc1 = _dot_acc(x, w1, acc1, PRECISION, BROADCAST_DOT)
        acc2 = _dot_acc(x, w2, acc2, PRECISION, BROADCAST_DOT)
    t1 = tl.load(t_ptr + o1, mask=m1, other=0.0)
    t2 = tl.load(t_ptr + o2, mask=m2, other=0.0)
    s_ll = tl.sum(acc1 * acc1, axis=1) + tl.sum(acc2 * acc2, axis=1)
    s_lt = tl.sum(acc1 * t1[None, :], axis=1) + tl.sum(acc2 * t2[None, :], axis=1)
    base = (rb * num_t + pid_t) * 2
    tl.store(part_ptr + base, s_ll, mask=mb)
    tl.store(part_ptr + base + 1, s_lt, mask=mb)


@triton.jit
def _finalize_kernel(part_ptr, out_ptr, B, T, tt, BLOCK: tl.constexpr):
    rb = tl.program_id(0).to(tl.int64) * BLOCK + tl.arange(0, BLOCK)
    mb = rb < B
    s_ll = tl.zeros([BLOCK], dtype=tl.float64)
    s_lt = tl.zeros([BLOCK], dtype=tl.float64)
    for t in range(T):  # fixed order over the output tiles
        base = (rb * T + t) * 2
        s_ll += tl.load(part_ptr + base, mask=mb, other=1.0).to(tl.float64)
        s_lt += tl.load(part_ptr + base + 1, mask=mb, other=0.0).to(tl.float64)
    # float64 sqrt is correctly rounded (only the float32 tl.sqrt is approximate).
    d2 = (1.0 - 2.0 * (s_lt / tl.sqrt(s_ll))) + tt
    # where(d2 < 0, ...) keeps NaN as NaN (a max() could turn it into 0, a valid distance).
    d2 = tl.where(d2 < 0.0, 0.0, d2)
    tl.store(out_ptr + rb, tl.sqrt(d2).to(tl.float32), mask=mb)


# ----------------------------------------------------------------------------- launchers


def prep(
    last_hidden: torch.Tensor, sign_seeds: torch.Tensor, refl_seeds: torch.Tensor, use_signs: bool, cfg: Config
) -> torch.Tensor:
    """Return the signed, reflected (unnormalized) hidden states as float32 ``[B, H]``."""
    b, h = last_hidden.shape
    x = torch.empty(b, h, dtype=torch.float32, device=last_hidden.device)
    num_r = refl_seeds.shape[1]
    p = (h + 1) // 2
    _prep_kernel[(triton.cdiv(b, cfg.prep_rows),)](
        last_hidden,
        last_hidden.stride(0),
        last_hidden.stride(1),
        sign_seeds,
        refl_seeds,
        x,
        b,
        h,
        p,
        USE_SIGNS=use_signs,
        NUM_R=num_r,
        ROWS=cfg.prep_rows,
        BLOCK_P=prep_block_p(p, cfg),
        num_warps=cfg.prep_warps,
        enable_fp_fusion=True,
    )
    return x


def prep_block_p(pairs: int, cfg: Config) -> int:
    """Return the pairs per chunk of the prep kernel: the configured size, smaller for small H."""
    return min(cfg.prep_block_p, triton.next_power_of_2(max(pairs, 16)))


def num_tiles(output_dim: int, cfg: Config) -> int:
    """Return the number of output tiles of ``2 * block_n`` rows each."""
    if output_dim % 2 == 0:
        return triton.cdiv(output_dim // 2, cfg.block_n)
    return triton.cdiv(output_dim, 2 * cfg.block_n)


def project(
    x: torch.Tensor, target: torch.Tensor, w: Optional[torch.Tensor], seed: torch.Tensor, output_dim: int, cfg: Config
) -> torch.Tensor:
    """Return the per-tile partial sums ``(l·l, l·t)`` as float32 ``[B, T, 2]`` (``seed``: int64 ``[1]``)."""
    b, h = x.shape
    t = num_tiles(output_dim, cfg)
    part = torch.empty(b, t, 2, dtype=torch.float32, device=x.device)
    n = output_dim * h
    _project_kernel[(triton.cdiv(b, cfg.block_b), t)](
        x,
        x if w is None else w,
        target,
        part,
        b,
        h,
        output_dim,
        output_dim // 2,
        (n + 1) // 2,
        seed,
        CACHED=w is not None,
        PAIRED=output_dim % 2 == 0,
        BLOCK_B=cfg.block_b,
        BLOCK_N=cfg.block_n,
        BLOCK_K=cfg.block_k,
        PRECISION=cfg.precision,
        BROADCAST_DOT=cfg.broadcast_dot,
        num_warps=cfg.proj_warps,
        num_stages=cfg.proj_stages,
        enable_fp_fusion=True,
    )
    return part


def finalize(part: torch.Tensor, target_norm2: float, cfg: Config) -> torch.Tensor:
    """Return the distances as float32 ``[B]`` from the partial sums."""
    b, t, _ = part.shape
    out = torch.empty(b, dtype=torch.float32, device=part.device)
    _finalize_kernel[(triton.cdiv(b, cfg.finalize_block),)](part, out, b, t, target_norm2, BLOCK=cfg.finalize_block)
    return out


def distances(
    last_hidden: torch.Tensor,
    sign_seeds: torch.Tensor,
    refl_seeds: torch.Tensor,
    target: torch.Tensor,
    target_norm2: float,
    lm_head_seed: torch.Tensor,
    output_dim: int,
    use_signs: bool,
    w: Optional[torch.Tensor] = None,
) -> torch.Tensor:
    """Return each nonce's distance as float32 ``[B]`` on ``last_hidden``'s device.

    ``sign_seeds`` int64 ``[B]``, ``refl_seeds`` int64 ``[B, R]``, ``lm_head_seed`` int64 ``[1]``, ``target``
    float32 unit ``[D]`` and ``w`` (optional cached lm_head, float32 ``[D, H]``)
    live on that device; arguments are not validated here.
    """
    b, h = last_hidden.shape
    if b == 0:
        return torch.empty(0, dtype=torch.float32, device=last_hidden.device)
    if output_dim * h > 2**32:
        raise ValueError(f"output_dim * hidden size must be at most 2**32, got {output_dim} * {h}")
    cfg = config_for(last_hidden.device)
    x = prep(last_hidden, sign_seeds, refl_seeds, use_signs, cfg)
    part = project(x, target, w, lm_head_seed, output_dim, cfg)
    return finalize(part, target_norm2, cfg)
