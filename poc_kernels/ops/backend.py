"""The ``"triton"`` backend of the public API.

Seeds are derived on the host (SHA-256), the target is built once per block
hash, and everything per nonce runs in the Triton kernels through the custom
ops of ``custom_ops``. Arguments arrive validated from ``poc_kernels.api``.
"""

from __future__ import annotations

from typing import Optional

import torch

from .. import _custom_ops, reference
from .._cache import LRUCache
from ..seeds import derive_nonce_seeds, lm_head_seed
from . import custom_ops  # noqa: F401  (registers torch.ops.poc_kernels.triton_*)
from .configs import config_for

_TARGETS = LRUCache(8)
_LM_HEADS = LRUCache(2)


def round_constants(block_hash: str, output_dim: int, device: torch.device) -> tuple[torch.Tensor, float, torch.Tensor]:
    """Return the cached unit target (float32 ``[D]``), its squared norm and the lm_head seed (int64 ``[1]``)."""

    def build():
        t = reference.target(block_hash, output_dim, device=device).float()
        seed = torch.tensor([lm_head_seed(block_hash)], dtype=torch.int64, device=device)
        return t, float(t.double().square().sum()), seed

    return _TARGETS.get((block_hash, output_dim, str(device)), build)


def cached_lm_head(block_hash: str, hidden_size: int, output_dim: int, device: torch.device) -> torch.Tensor:
    """Return the lm_head of ``block_hash``, materialized once by the generator kernel (float32 ``[D, H]``)."""
    return _LM_HEADS.get(
        (block_hash, hidden_size, output_dim, str(device)),
        lambda: torch.ops.poc_kernels.triton_lm_head(lm_head_seed(block_hash), output_dim, hidden_size, device),
    )


def resolve_lm_head(mode: str, device: torch.device, batch: int, hidden_size: int) -> str:
    """Return ``"on_the_fly"`` or ``"cached"`` for ``mode``; ``"auto"`` picks the faster per size.

    By the roofline of bench/ROOFLINE.md the cached matrix wins at every size
    on H100-class GPUs: the nonce blocks that share a W tile run together and
    read it from L2, while generating a weight costs about 57 instructions per
    nonce block. (The CPU interpreter is also far faster with it.)
    """
    if mode != "auto":
        return mode
    return "cached"


def clear_cache() -> None:
    """Drop the cached targets and lm_head matrices."""
    _TARGETS.clear()
    _LM_HEADS.clear()


def device_seeds(
    block_hash: str,
    public_key: str,
    nonces: torch.Tensor,
    num_reflections: int,
    device: torch.device,
    *,
    need_input: bool,
    need_post: bool,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Return the nonces' ``(input [B], signs [B], reflections [B, R])`` seeds on ``device``.

    On a GPU with the extension's CUDA kernels the seeds are derived on the
    device (SHA-256 per nonce in a kernel: only the nonces cross the bus);
    otherwise on the host (the extension's batched C++ op, or hashlib) and copied.
    """
    if device.type == "cuda" and _custom_ops.HAS_CUDA_EXT:
        return _custom_ops.derive_seeds(
            block_hash, public_key, nonces.to(device), num_reflections, need_input, need_post
        )
    s = derive_nonce_seeds(block_hash, public_key, nonces, num_reflections, need_input=need_input, need_post=need_post)
    return s.input.to(device), s.signs.to(device), s.reflections.to(device)


def compute_distances(
    last_hidden: torch.Tensor,
    block_hash: str,
    public_key: str,
    nonce_list: torch.Tensor,  # int64 [B], validated
    use_signs: bool,
    output_dim: int,
    num_reflections: int,
    lm_head: str = "auto",
) -> torch.Tensor:
    device = last_hidden.device
    config_for(device)  # raises a clear error on an unsupported device
    b, hidden = last_hidden.shape
    if b == 0:
        return torch.empty(0, dtype=torch.float32, device=device)
    _, signs, refl = device_seeds(
        block_hash, public_key, nonce_list, num_reflections, device, need_input=False, need_post=True
    )
    t, tt, seed = round_constants(block_hash, output_dim, device)
    mode = resolve_lm_head(lm_head, device, b, hidden)
    w: Optional[torch.Tensor] = cached_lm_head(block_hash, hidden, output_dim, device) if mode == "cached" else None
    return torch.ops.poc_kernels.triton_distances(
        last_hidden,
        signs,
        refl,
        t,
        w,
        seed,
        output_dim,
        tt,
        use_signs,
    )


def generate_inputs(
    block_hash: str,
    public_key: str,
    nonce_list: torch.Tensor,  # int64 [B], validated
    seq_len: int,
    hidden_size: int,
    dtype: torch.dtype,
    device: torch.device,
    out: Optional[torch.Tensor],
) -> torch.Tensor:
    config_for(device)
    if out is None:
        out = torch.empty(len(nonce_list), seq_len, hidden_size, dtype=dtype, device=device)
    if len(nonce_list):
        seeds, _, _ = device_seeds(block_hash, public_key, nonce_list, 0, device, need_input=True, need_post=False)
        torch.ops.poc_kernels.triton_generate_inputs_(seeds, out)
    return out


HOOK_DTYPES = (torch.float16, torch.bfloat16, torch.float32)


def apply_layer_hook_(x: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
    """Apply the layer-hook transform (SPEC §7) to ``x`` ``[..., H]`` in place; return ``x``.

    ``x`` is fp16, bf16 or fp32 with contiguous rows; ``v`` is the layer's unit
    vector ``[H]`` on the same device. Only host-side checks, no synchronization:
    safe to call while a CUDA graph is being captured.
    """
    if not isinstance(x, torch.Tensor) or x.dtype not in HOOK_DTYPES:
        raise TypeError(f"x must be a float16, bfloat16 or float32 tensor, got {getattr(x, 'dtype', type(x))}")
    if x.dim() < 1 or x.shape[-1] < 1:
        raise ValueError(f"x must be [..., hidden] with hidden >= 1, got shape {tuple(x.shape)}")
    h = x.shape[-1]
    if not isinstance(v, torch.Tensor) or v.shape != (h,) or not v.dtype.is_floating_point:
        raise ValueError(f"v must be a float tensor of shape ({h},), got {getattr(v, 'shape', type(v))}")
    if v.device != x.device:
        raise ValueError(f"v is on {v.device} but x is on {x.device}")
    # [T, H] rows with stride 1 along H (any row stride), or a contiguous tensor of any rank
    if (x.dim() == 2 and x.stride(1) != 1 and h > 1) or (x.dim() != 2 and not x.is_contiguous()):
        raise ValueError("x must have contiguous rows (stride 1 along hidden)")
    rows = x if x.dim() == 2 else x.view(-1, h)
    config_for(x.device)
    torch.ops.poc_kernels.triton_layer_hook_(rows, v.to(torch.float32).contiguous())
    return x
