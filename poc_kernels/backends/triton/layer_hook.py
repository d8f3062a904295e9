"""Layer-hook transform (SPEC §7), in place, one launch per layer.

For every row ``x`` of ``[T, H]`` (fp16, bf16 or fp32) and the layer's unit
vector ``v``::

    y = x / (||x|| + 1e-8)
    x <- y - 2 (y·v) v

computed in float32 and rounded once to the activation dtype. The original
code needs about 18 launches per layer for this. The launch takes only device
tensors and plain numbers and never synchronizes, so it can be captured in a
CUDA graph.
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl

from ...constants import LAYER_HOOK_EPS
from ._streams import cast_out
from .configs import config_for


@triton.jit
def _layer_hook_kernel(x_ptr, v_ptr, H, stride_t, eps, BLOCK_H: tl.constexpr):
    row = x_ptr + tl.program_id(0).to(tl.int64) * stride_t
    offs = tl.arange(0, BLOCK_H)
    # Pass 1: ||x||² and x·v in a fixed chunk order.
    ss = 0.0
    sv = 0.0
    for h0 in range(0, H, BLOCK_H):
        k = h0 + offs
        m = k < H
        x = tl.load(row + k, mask=m, other=0.0).to(tl.float32)
        v = tl.load(v_ptr + k, mask=m, other=0.0).to(tl.float32)
        ss += tl.sum(x * x, axis=0)
        sv += tl.sum(x * v, axis=0)
    inv = 1.0 / (tl.sqrt_rn(ss) + eps)
    # y = x * inv and y·v = sv * inv, so y - 2 (y·v) v = x * inv - (2 sv inv) v
    coef = 2.0 * sv * inv
    # Pass 2: write y - 2 (y·v) v.
    for h0 in range(0, H, BLOCK_H):
        k = h0 + offs
        m = k < H
        x = tl.load(row + k, mask=m, other=0.0).to(tl.float32)
        v = tl.load(v_ptr + k, mask=m, other=0.0).to(tl.float32)
        y = x * inv - coef * v
        tl.store(row + k, cast_out(y, row.dtype.element_ty), mask=m)


def layer_hook_(x: torch.Tensor, v: torch.Tensor, eps: float = LAYER_HOOK_EPS) -> torch.Tensor:
    """Apply the layer-hook transform to ``x`` ``[T, H]`` in place (rows contiguous); return ``x``."""
    t, h = x.shape
    if t == 0:
        return x
    cfg = config_for(x.device)
    _layer_hook_kernel[(t,)](
        x, v, h, x.stride(0), eps, BLOCK_H=cfg.hook_block, num_warps=cfg.hook_warps, enable_fp_fusion=False
    )
    return x
