"""The random projection of SPEC §10, ``x + x @ P``, in float64 in the fixed order of ``vectors.tree_sum``.

Output ``j`` of a row is ``float32(x_j + S_j)`` with ``S_j`` the sum over ``i``
of the exact float64 products ``x_i * P[i, j]``, zero padded to
``M = 2^ceil(log2 H)`` and folded as ``tree_sum`` folds: ``v[i] += v[i + M/2]``,
then ``M/4``, ... Every device and every batch gives the same bits as
``vectors.project`` (products of two float32 values are exact in float64, and
IEEE addition is commutative, so only the tree's shape matters).

The tree splits without reordering: with ``M = NC * C``, the first
``log2(C)`` folds only add ``i`` to ``i + k * NC``, so each residue
``b = i mod NC`` is a tree of its own over ``t`` (``i = b + NC * t``, folded
``t`` with ``t + C/2``), and the last ``log2(NC)`` folds are a tree over ``b``,
which splits the same way (``b = b1 + NC1 * b2``: a tree over ``b2`` for each
``b1``, then one over ``b1``). A program owns one row and ``BLOCK_J`` output
columns; it folds the ``C`` products of each residue in registers, keeps the
``NC2`` residue sums of one ``b1`` in a ``[NC2, BLOCK_J]`` tile and the
``NC1`` folded ones in a ``[NC1, BLOCK_J]`` tile, each folded when complete.
Nothing depends on a tile size but ``C``, ``NC1`` and ``NC2``, which the tree
fixes for a given ``H``.

- ``project``: the rows of a float32 ``x`` ``[N, H]`` with one ``P``; ``P``
  comes from the per-block cache (``api.projection``). Building it costs as
  much as generating it would, so it is built once per block, not per call.
- ``token_project_``: the engine's flat batch, CUDA-graph safe. The rows of
  PoC tokens whose request names a projection slot are regenerated on the fly
  from their seeds (the same device function as ``token_inputs_``), projected
  with ``P`` of that slot and cast once into ``out``; other rows are
  untouched. Every index is read on the device. One program per token, which
  walks the row's column blocks: the launch is in every engine step, and a
  step without projected rows costs ``T`` programs that return at once.
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl

from ._streams import cast_out
from .configs import config_for
from .inputs import input_values


@triton.jit
def _fold(v, N: tl.constexpr, J: tl.constexpr):
    # tree_sum over axis 0 of v [N, J]: v[i] + v[i + N/2], then N/4, ... -> [J]
    for _ in tl.static_range(N.bit_length() - 1):
        pair = tl.permute(tl.reshape(v, [2, v.shape[0] // 2, J]), [1, 2, 0])
        lo, hi = tl.split(pair)
        v = lo + hi
    return tl.reshape(v, [J])


@triton.jit
def _row_values(x_row, seed_ptr, stride_r, r, n, segments, first, i, m, FROM_SEEDS: tl.constexpr):
    # Elements i of the row as float64, 0.0 where not m: loaded from x_row, or regenerated from the request's
    # seeds as token_inputs_ writes them (its element first + i).
    if FROM_SEEDS:
        x = tl.where(m, input_values(seed_ptr, stride_r, r, n, segments, first + i, m), 0.0)
    else:
        x = tl.load(x_row + i, mask=m, other=0.0)
    return x.to(tl.float64)


@triton.jit
def _projected_columns(
    x_row,
    seed_ptr,
    stride_r,
    r,
    n,
    segments,
    first,
    p_base,
    H,
    j,
    jm,
    NC1: tl.constexpr,
    NC2: tl.constexpr,
    C: tl.constexpr,
    BLOCK_J: tl.constexpr,
    FROM_SEEDS: tl.constexpr,
):
    # float32 x_j + sum_i x_i * P[i, j] for the columns j, the sum in tree_sum's order (see the module docstring).
    t = tl.arange(0, C)
    r1 = tl.arange(0, NC1)
    r2 = tl.arange(0, NC2)
    outer = tl.zeros([NC1, BLOCK_J], dtype=tl.float64)
    for b1 in range(NC1):
        inner = tl.zeros([NC2, BLOCK_J], dtype=tl.float64)
        for b2 in range(NC2):
            i = b1 + NC1 * b2 + NC1 * NC2 * t
            im = i < H
            xi = _row_values(x_row, seed_ptr, stride_r, r, n, segments, first, i, im, FROM_SEEDS)
            pij = tl.load(p_base + i.to(tl.int64)[:, None] * H + j[None, :], mask=im[:, None] & jm[None, :], other=0.0)
            s = _fold(xi[:, None] * pij.to(tl.float64), C, BLOCK_J)
            inner = tl.where(r2[:, None] == b2, s[None, :], inner)
        outer = tl.where(r1[:, None] == b1, _fold(inner, NC2, BLOCK_J)[None, :], outer)
    xj = _row_values(x_row, seed_ptr, stride_r, r, n, segments, first, j, jm, FROM_SEEDS)
    return (xj + _fold(outer, NC1, BLOCK_J)).to(tl.float32)


@triton.jit
def _random_projection_kernel(
    x_ptr,
    p_ptr,
    out_ptr,
    H,
    stride_x,
    stride_o,
    NC1: tl.constexpr,
    NC2: tl.constexpr,
    C: tl.constexpr,
    BLOCK_J: tl.constexpr,
):
    row = tl.program_id(0).to(tl.int64)
    j = tl.program_id(1) * BLOCK_J + tl.arange(0, BLOCK_J)
    jm = j < H
    x_row = x_ptr + row * stride_x
    # the seed arguments are unused when the row is loaded
    y = _projected_columns(x_row, x_row, 0, 0, 0, 0, 0, p_ptr, H, j, jm, NC1, NC2, C, BLOCK_J, False)
    tl.store(out_ptr + row * stride_o + j, y, mask=jm)


@triton.jit
def _token_random_projection_kernel(
    out_ptr,
    tok_req_ptr,
    tok_pos_ptr,
    seed_ptr,
    seq_len_ptr,
    segments_ptr,
    req_proj_ptr,
    p_ptr,
    R,
    G,
    S,
    H,
    stride_t,
    stride_r,
    NC1: tl.constexpr,
    NC2: tl.constexpr,
    C: tl.constexpr,
    BLOCK_J: tl.constexpr,
):
    # Program t: token t's row, when its request r projects with slot req_proj[r], BLOCK_J columns at a time.
    tok = tl.program_id(0).to(tl.int64)
    r = tl.load(tok_req_ptr + tok).to(tl.int64)
    if (r < 0) | (r >= R):
        return
    slot = tl.load(req_proj_ptr + r).to(tl.int64)
    n = tl.load(seq_len_ptr + r).to(tl.int64) * H
    segments = tl.load(segments_ptr + r).to(tl.int64)
    first = tl.load(tok_pos_ptr + tok).to(tl.int64) * H
    # what token_inputs_ leaves untouched stays untouched, and so does a row of no projection
    if (slot < 0) | (slot >= S) | (n < 1) | (segments < 1) | (segments > G) | (first < 0) | (first >= n):
        return
    p_slot = p_ptr + slot * H * H
    for j0 in range(0, H, BLOCK_J):  # one program per token: a step without projected rows costs T light programs
        j = j0 + tl.arange(0, BLOCK_J)
        jm = j < H
        y = _projected_columns(
            out_ptr, seed_ptr, stride_r, r, n, segments, first, p_slot, H, j, jm, NC1, NC2, C, BLOCK_J, True
        )
        tl.store(out_ptr + tok * stride_t + j, cast_out(y, out_ptr.dtype.element_ty), mask=jm)


# ----------------------------------------------------------------------------- launchers


def tree_shape(hidden: int, chunk: int) -> tuple[int, int, int]:
    """Return ``(NC1, NC2, C)``: the padded length ``M = 2^ceil(log2 H)`` split as ``NC = NC1 * NC2`` residues
    of ``C = min(M, chunk)`` leaves, ``NC2`` the larger half of ``NC``'s bits."""
    m = 1 << max(0, (hidden - 1).bit_length())
    c = min(m, chunk)
    bits = (m // c).bit_length() - 1
    return 1 << (bits // 2), 1 << (bits - bits // 2), c


def _launch(device: torch.device, h: int, chunk: int, block_j: int) -> tuple[int, dict]:
    # The column blocks of a row and the launch's meta-parameters (the device's configuration unless overridden).
    cfg = config_for(device)
    nc1, nc2, c = tree_shape(h, chunk or cfg.rp_chunk)
    block_j = block_j or cfg.rp_block_j
    return triton.cdiv(h, block_j), {"NC1": nc1, "NC2": nc2, "C": c, "BLOCK_J": block_j, "num_warps": cfg.rp_warps}


def project(x: torch.Tensor, p: torch.Tensor, *, chunk: int = 0, block_j: int = 0) -> torch.Tensor:
    """Return float32 ``x + x @ p`` of the rows of ``x`` ``[N, H]`` (float32, contiguous rows) in one launch.

    ``chunk`` and ``block_j`` (powers of two) replace the device's configuration; the bits never depend on them.
    """
    rows, h = x.shape
    if x.dtype != torch.float32 or p.dtype != torch.float32:
        raise TypeError(f"x and p must be float32, got {x.dtype} and {p.dtype}")
    if p.shape != (h, h) or not p.is_contiguous() or (h > 1 and x.stride(1) != 1):
        raise ValueError(f"p must be a contiguous [{h}, {h}] and x [N, {h}] with contiguous rows")
    out = torch.empty((rows, h), dtype=torch.float32, device=x.device)
    if rows == 0 or h == 0:
        return out
    blocks, meta = _launch(x.device, h, chunk, block_j)
    _random_projection_kernel[(rows, blocks)](x, p, out, h, x.stride(0), out.stride(0), **meta, enable_fp_fusion=False)
    return out


def token_project_(
    out: torch.Tensor,
    tok_req: torch.Tensor,
    tok_pos: torch.Tensor,
    req_seeds: torch.Tensor,
    req_seq_len: torch.Tensor,
    req_segments: torch.Tensor,
    req_proj: torch.Tensor,
    projections: torch.Tensor,
    *,
    chunk: int = 0,
    block_j: int = 0,
) -> torch.Tensor:
    """Overwrite the rows of projected PoC tokens of ``out`` ``[T, H]`` with their projected inputs; return ``out``.

    Token ``t`` with ``r = tok_req[t] >= 0`` and ``s = req_proj[r]`` in ``[0, S)`` gets
    ``cast(x + x @ projections[s])`` of its float32 input row ``x`` (as ``token_inputs_`` defines it);
    ``projections`` is float32 ``[S, H, H]``, contiguous. ``chunk`` and ``block_j`` as in :func:`project`.
    """
    t, h = out.shape
    if t == 0 or h == 0 or projections.shape[0] == 0:
        return out
    _, meta = _launch(out.device, h, chunk, block_j)
    _token_random_projection_kernel[(t,)](
        out,
        tok_req,
        tok_pos,
        req_seeds,
        req_seq_len,
        req_segments,
        req_proj,
        projections,
        req_seeds.shape[0],
        req_seeds.shape[1],
        projections.shape[0],
        h,
        out.stride(0),
        req_seeds.stride(0),
        **meta,
        enable_fp_fusion=True,  # as token_inputs_: the same input values (the fp64 products are exact)
    )
    return out
