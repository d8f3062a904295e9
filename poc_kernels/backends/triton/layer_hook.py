"""The layer transform, in place, one launch per layer, with the deployed eager op sequence's roundings.

For every row ``x`` of ``[T, H]`` (fp16, bf16 or fp32) and the layer's unit
vector ``v`` (in the activation dtype)::

    y = x / (||x|| + 1e-8)          # NORMALIZE (SPEC §7); SPEC-ARTIFACTS §3 has y = x
    x <- y - 2 (y·v) v

rounded as the deployed code's eager PyTorch ops round it in the activation
dtype (SPEC §7, SPEC-ARTIFACTS §3): ``||x||`` accumulated in float32 and
rounded, ``+ 1e-8`` rounded, the division rounded (``div_rn``: Triton's ``/`` is
an approximation on NVIDIA GPUs); each product ``y ⊙ v`` rounded, their sum
accumulated in float32 and rounded, ``2·dot`` exact, ``(2·dot) ⊙ v`` rounded,
the difference rounded. Only the order of the float32 accumulations may differ
from torch's (a fixed chunk order here); FMA contraction is off, because the
eager ops round every product. The original code needs about 18 launches per
layer for this. The launch takes only device tensors and plain numbers and
never synchronizes, so it can be captured in a CUDA graph.

``token_layer_hook_`` is the same transform for the PoC tokens of an engine's
flat batch: row ``t`` of ``x`` (and of the residual ``y``) is transformed when
its request ``r = tok_req[t] >= 0`` has a layer code ``c = req_layer[r] >= 0``,
with the vector ``vectors[c >> 1, layer]`` and ``normalize = c & 1`` read per
row on the device; every other row is left as it is. One launch covers x and
y, with the rounding sequence above.
"""

from __future__ import annotations

from typing import Optional

import torch
import triton
import triton.language as tl

from ...constants import LAYER_HOOK_EPS
from ._streams import cast_out
from .configs import config_for


@triton.jit
def rounded(x, DTYPE: tl.constexpr):
    # float32 x rounded to DTYPE (to nearest even) and back: the value an eager op in DTYPE stores
    if DTYPE == tl.float32:
        return x
    else:
        return cast_out(x, DTYPE).to(tl.float32)


@triton.jit
def _layer_hook_kernel(x_ptr, v_ptr, H, stride_t, eps, NORMALIZE: tl.constexpr, BLOCK_H: tl.constexpr):
    row = x_ptr + tl.program_id(0).to(tl.int64) * stride_t
    dtype = x_ptr.dtype.element_ty
    offs = tl.arange(0, BLOCK_H)
    den = 1.0
    if NORMALIZE:
        # ||x||: float32 squares (exact for fp16/bf16 values) summed in a fixed chunk order, rounded to the dtype
        ss = 0.0
        for h0 in range(0, H, BLOCK_H):
            k = h0 + offs
            x = tl.load(row + k, mask=k < H, other=0.0).to(tl.float32)
            ss += tl.sum(x * x, axis=0)
        den = rounded(rounded(tl.sqrt_rn(ss), dtype) + eps, dtype)
    # dot = the float32 sum of the rounded products, rounded
    dot = 0.0
    for h0 in range(0, H, BLOCK_H):
        k = h0 + offs
        m = k < H
        y = tl.load(row + k, mask=m, other=0.0).to(tl.float32)
        if NORMALIZE:
            y = rounded(tl.div_rn(y, den), dtype)
        v = tl.load(v_ptr + k, mask=m, other=0.0).to(tl.float32)
        dot += tl.sum(rounded(y * v, dtype), axis=0)
    two_dot = 2.0 * rounded(dot, dtype)
    for h0 in range(0, H, BLOCK_H):
        k = h0 + offs
        m = k < H
        y = tl.load(row + k, mask=m, other=0.0).to(tl.float32)
        if NORMALIZE:
            y = rounded(tl.div_rn(y, den), dtype)
        v = tl.load(v_ptr + k, mask=m, other=0.0).to(tl.float32)
        tl.store(row + k, cast_out(y - rounded(two_dot * v, dtype), dtype), mask=m)


@triton.jit
def _token_layer_kernel(
    x_ptr,
    y_ptr,
    tok_req_ptr,
    req_layer_ptr,
    v_ptr,
    H,
    R,
    S,
    stride_x,
    stride_y,
    stride_v,
    eps,
    BLOCK_H: tl.constexpr,
):
    # Program (t, which): row t of x (which = 0) or of y (which = 1), when token t's request has a layer code.
    t = tl.program_id(0).to(tl.int64)
    r = tl.load(tok_req_ptr + t).to(tl.int64)
    if (r < 0) | (r >= R):  # a token of no PoC request: untouched
        return
    code = tl.load(req_layer_ptr + r)
    slot = (code >> 1).to(tl.int64)
    if (code < 0) | (slot >= S):  # no transform for this request
        return
    normalize = (code & 1) != 0
    if tl.program_id(1) == 0:
        row = x_ptr + t * stride_x
    else:
        row = y_ptr + t * stride_y
    vrow = v_ptr + slot * stride_v
    dtype = x_ptr.dtype.element_ty
    offs = tl.arange(0, BLOCK_H)
    # _layer_hook_kernel's sequence with normalize a runtime value: the norm only where it is used
    ss = tl.zeros((), dtype=tl.float32)
    if normalize:
        for h0 in range(0, H, BLOCK_H):
            k = h0 + offs
            x = tl.load(row + k, mask=k < H, other=0.0).to(tl.float32)
            ss += tl.sum(x * x, axis=0)
    den = tl.where(normalize, rounded(rounded(tl.sqrt_rn(ss), dtype) + eps, dtype), 1.0)
    dot = tl.zeros((), dtype=tl.float32)
    for h0 in range(0, H, BLOCK_H):
        k = h0 + offs
        m = k < H
        y = tl.load(row + k, mask=m, other=0.0).to(tl.float32)
        y = tl.where(normalize, rounded(tl.div_rn(y, den), dtype), y)
        v = tl.load(vrow + k, mask=m, other=0.0).to(tl.float32)
        dot += tl.sum(rounded(y * v, dtype), axis=0)
    two_dot = 2.0 * rounded(dot, dtype)
    for h0 in range(0, H, BLOCK_H):
        k = h0 + offs
        m = k < H
        y = tl.load(row + k, mask=m, other=0.0).to(tl.float32)
        y = tl.where(normalize, rounded(tl.div_rn(y, den), dtype), y)
        v = tl.load(vrow + k, mask=m, other=0.0).to(tl.float32)
        tl.store(row + k, cast_out(y - rounded(two_dot * v, dtype), dtype), mask=m)


def layer_hook_(x: torch.Tensor, v: torch.Tensor, normalize: bool = True, eps: float = LAYER_HOOK_EPS) -> torch.Tensor:
    """Apply the layer transform to ``x`` ``[T, H]`` in place (rows contiguous, ``v`` in x's dtype); return ``x``."""
    t, h = x.shape
    if t == 0:
        return x
    cfg = config_for(x.device)
    _layer_hook_kernel[(t,)](
        x,
        v,
        h,
        x.stride(0),
        eps,
        NORMALIZE=normalize,
        BLOCK_H=cfg.hook_block,
        num_warps=cfg.hook_warps,
        enable_fp_fusion=False,
    )
    return x


def token_layer_hook_(
    x: torch.Tensor,
    y: Optional[torch.Tensor],
    tok_req: torch.Tensor,
    req_layer: torch.Tensor,
    vectors: torch.Tensor,
    layer: int,
    eps: float = LAYER_HOOK_EPS,
) -> None:
    """Transform the rows of ``x`` ``[T, H]`` (and of ``y``) whose request has a layer code, in place, one launch.

    ``vectors`` ``[S, L, H]`` in x's dtype; ``tok_req`` int32 ``[>= T]``, ``req_layer`` int32 ``[R]``, contiguous,
    on x's device. Nothing is read on the host.
    """
    t, h = x.shape
    if t == 0:
        return
    cfg = config_for(x.device)
    v = vectors.select(1, layer)
    _token_layer_kernel[(t, 1 if y is None else 2)](
        x,
        x if y is None else y,
        tok_req,
        req_layer,
        v,
        h,
        req_layer.shape[0],
        v.shape[0],
        x.stride(0),
        x.stride(0) if y is None else y.stride(0),
        v.stride(0),
        eps,
        BLOCK_H=cfg.hook_block,
        num_warps=cfg.hook_warps,
        enable_fp_fusion=False,
    )
