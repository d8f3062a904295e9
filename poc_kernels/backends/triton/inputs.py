"""Random input embeddings (SPEC §6) and the materialized random lm_head, in one launch each.

Row ``b`` of the output is the stream ``N(seed_b, n)`` (SPEC §3), written
through arbitrary strides as ``[n // H, H]`` after an optional scale, cast to
the output dtype once (round to nearest even):

- ``generate_inputs``: ``out[b] = N(seed_input_b, seq_len * H).view(seq_len, H)``
- ``lm_head``: ``W = 0.02 * N(seed_lm_head, D * H).view(D, H)``

Each program produces a block of Box-Muller pairs ``j`` and writes both halves,
``N[j]`` (cosine) and ``N[p + j]`` (sine), ``p = ceil(n / 2)``.

``token_inputs_`` writes the same values for the PoC tokens of an engine's
flat batch ``[T, H]``: row ``t`` of request ``r`` at position ``pos`` gets
``N[pos * H : pos * H + H]`` of that request's stream (of its segments, for
the stronger inputs). Element ``i`` of a stream of length ``n`` is the cosine
half of pair ``i`` when ``i < p``, else the sine half of pair ``i - p``, so a
row may straddle that boundary (and segment boundaries); each element is
computed on its own, with the same device function and rounding as above.
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl

from ...constants import LM_HEAD_SCALE
from ._streams import cast_out, normal_pair
from .configs import config_for


@triton.jit
def _normal_rows_kernel(
    seed_ptr,
    out_ptr,
    n,
    L,
    H,
    stride_b,
    stride_s,
    stride_h,
    scale,
    SEGMENTS: tl.constexpr,
    BLOCK: tl.constexpr,
):
    # Program (r, block): stream r = b * SEGMENTS + g, segment g of row b: N(seed_r, len_g) written at
    # positions g*L .. g*L + len_g - 1 of row b (len_g = min(L, n - g*L)), row b viewed as [n // H, H], times scale.
    r = tl.program_id(0).to(tl.int64)
    b = r // SEGMENTS
    off = (r % SEGMENTS) * L
    seg_len = tl.minimum(L, n - off)
    p = (seg_len + 1) // 2
    j = tl.program_id(1).to(tl.int64) * BLOCK + tl.arange(0, BLOCK)
    seed = tl.load(seed_ptr + r).to(tl.uint32)
    c, s = normal_pair(seed, j.to(tl.uint32), p.to(tl.uint32))
    row = out_ptr + b * stride_b
    ia = off + j
    ib = off + p + j
    pa = row + (ia // H) * stride_s + (ia % H) * stride_h
    pb = row + (ib // H) * stride_s + (ib % H) * stride_h
    dtype = out_ptr.dtype.element_ty
    tl.store(pa, cast_out(c * scale, dtype), mask=j < p)
    tl.store(pb, cast_out(s * scale, dtype), mask=(j < p) & (p + j < seg_len))


@triton.jit
def input_values(seed_ptr, stride_r, r, n, segments, i, m):
    # Element i (int64, where m) of request r's n input values, as float32: element i - g*L of its segment g
    # (L = ceil(n / segments)), the cosine half of pair k < p of the segment's stream, else the sine half of k - p.
    seg = (n + segments - 1) // segments
    g = i // seg
    off = g * seg
    seg_len = tl.minimum(seg, n - off)
    p = (seg_len + 1) // 2
    k = i - off
    cos_half = k < p
    j = tl.where(cos_half, k, k - p)
    seed = tl.load(seed_ptr + r * stride_r + g, mask=m, other=0).to(tl.uint32)
    c, s = normal_pair(seed, j.to(tl.uint32), p.to(tl.uint32))
    return tl.where(cos_half, c, s)


@triton.jit
def _token_inputs_kernel(
    out_ptr,
    tok_req_ptr,
    tok_pos_ptr,
    seed_ptr,
    seq_len_ptr,
    segments_ptr,
    R,
    G,
    H,
    stride_t,
    stride_r,
    BLOCK: tl.constexpr,
):
    # Program (t, block): elements h of row t of out, when token t belongs to request r >= 0: element
    # i = pos * H + h of the request's input values, i.e. element i - g*L of its segment g (L = ceil(n / segments)).
    t = tl.program_id(0).to(tl.int64)
    r = tl.load(tok_req_ptr + t).to(tl.int64)
    if (r < 0) | (r >= R):  # a token of no PoC request (or of no row of the tables): untouched
        return
    n = tl.load(seq_len_ptr + r).to(tl.int64) * H
    segments = tl.load(segments_ptr + r).to(tl.int64)
    if (n < 1) | (segments < 1) | (segments > G):
        return
    h = tl.program_id(1).to(tl.int64) * BLOCK + tl.arange(0, BLOCK)
    i = tl.load(tok_pos_ptr + t).to(tl.int64) * H + h
    # a position outside [0, seq_len) leaves the row untouched
    m = (h < H) & (i >= 0) & (i < n)
    x = input_values(seed_ptr, stride_r, r, n, segments, i, m)
    tl.store(out_ptr + t * stride_t + h, cast_out(x, out_ptr.dtype.element_ty), mask=m)


# ----------------------------------------------------------------------------- launchers


def normal_rows(seeds: torch.Tensor, out: torch.Tensor, scale: float = 1.0) -> torch.Tensor:
    """Write ``scale * N(seeds[b], S * H)`` into ``out[b]`` (``[B, S, H]``, any strides, float dtype).

    With ``seeds`` ``[B, G]``, row ``b`` is instead the concatenation of ``G``
    segments of length ``ceil(n / G)`` (the last one shorter), segment ``g``
    being ``N(seeds[b, g], its length)`` (SPEC-ARTIFACTS §2).
    """
    b, s, h = out.shape
    n = s * h
    if b == 0 or n == 0:
        return out
    if n > 2**32:
        raise ValueError(f"a stream holds at most 2**32 values, got {n}")
    segments = seeds.shape[1] if seeds.dim() == 2 else 1
    seg = -(-n // segments)
    cfg = config_for(out.device)
    grid = (b * segments, triton.cdiv((seg + 1) // 2, cfg.rows_block))
    _normal_rows_kernel[grid](
        seeds.reshape(-1),
        out,
        n,
        seg,
        h,
        out.stride(0),
        out.stride(1),
        out.stride(2),
        scale,
        SEGMENTS=segments,
        BLOCK=cfg.rows_block,
        num_warps=cfg.rows_warps,
        enable_fp_fusion=True,
    )
    return out


def generate_inputs(seeds: torch.Tensor, out: torch.Tensor) -> torch.Tensor:
    """Write the input embeddings of ``seeds`` into ``out`` ``[B, seq_len, H]``; return ``out``.

    ``seeds`` int64 ``[B]`` (SPEC §6), or ``[B, 8]`` for the stronger inputs of SPEC-ARTIFACTS §2.
    """
    return normal_rows(seeds, out)


def lm_head(seed: int, output_dim: int, hidden_size: int, device: torch.device) -> torch.Tensor:
    """Return the random lm_head ``0.02 * N(seed, D*H).view(D, H)`` as float32 ``[D, H]`` on ``device``."""
    w = torch.empty(1, output_dim, hidden_size, dtype=torch.float32, device=device)
    normal_rows(torch.tensor([seed], dtype=torch.int64, device=device), w, LM_HEAD_SCALE)
    return w[0]


def token_inputs_(
    out: torch.Tensor,
    tok_req: torch.Tensor,
    tok_pos: torch.Tensor,
    req_seeds: torch.Tensor,
    req_seq_len: torch.Tensor,
    req_segments: torch.Tensor,
) -> torch.Tensor:
    """Write the input rows of the PoC tokens into ``out`` ``[T, H]`` (rows contiguous) in one launch; return ``out``.

    Token ``t`` with ``r = tok_req[t] >= 0`` gets row ``tok_pos[t]`` of the input embeddings of the nonce whose
    seeds are ``req_seeds[r]`` (``[R, G]``: column 0 alone when ``req_segments[r] == 1``, one per segment
    otherwise), of length ``req_seq_len[r]``. Index tensors contiguous, on out's device; nothing is read on the host.
    """
    t, h = out.shape
    if t == 0 or h == 0:
        return out
    cfg = config_for(out.device)
    _token_inputs_kernel[(t, triton.cdiv(h, cfg.token_block))](
        out,
        tok_req,
        tok_pos,
        req_seeds,
        req_seq_len,
        req_segments,
        req_seeds.shape[0],
        req_seeds.shape[1],
        h,
        out.stride(0),
        req_seeds.stride(0),
        BLOCK=cfg.token_block,
        num_warps=cfg.token_warps,
        enable_fp_fusion=True,
    )
    return out
