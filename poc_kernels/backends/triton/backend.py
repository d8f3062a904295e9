"""The functions of the ``"triton"`` backend, on the API's validated arguments.

Seeds are derived on the device (the extension's CUDA op) or on the host
(SHA-256), the target is built once per block hash, and everything per nonce
runs in the Triton kernels through the custom ops of ``custom_ops``.
"""

from __future__ import annotations

from typing import Optional

import torch

from ... import _custom_ops
from ..._cache import LRUCache
from ..._checks import ArtifactArgs, DistanceArgs, InputArgs, TokenInputArgs, TokenLayerArgs
from ...seeds import derive_artifact_seeds, derive_nonce_seeds, lm_head_seed, stronger_input_seeds
from ...vectors import target
from . import custom_ops  # noqa: F401  (registers torch.ops.poc_kernels.triton_*)
from .configs import config_for

_TARGETS = LRUCache(8)
_LM_HEADS = LRUCache(2)


def round_constants(block_hash: str, output_dim: int, device: torch.device) -> tuple[torch.Tensor, float, torch.Tensor]:
    """Return the cached unit target (float32 ``[D]``), its squared norm and the lm_head seed (int64 ``[1]``)."""

    def build():
        t = target(block_hash, output_dim, device=device).float()
        seed = torch.tensor([lm_head_seed(block_hash)], dtype=torch.int64, device=device)
        return t, float(t.double().square().sum()), seed

    return _TARGETS.get((block_hash, output_dim, str(device)), build)


def cached_lm_head(block_hash: str, hidden_size: int, output_dim: int, device: torch.device) -> torch.Tensor:
    """Return the lm_head of ``block_hash``, materialized once by the generator kernel (float32 ``[D, H]``)."""
    return _LM_HEADS.get(
        (block_hash, hidden_size, output_dim, str(device)),
        lambda: torch.ops.poc_kernels.triton_lm_head(lm_head_seed(block_hash), output_dim, hidden_size, device),
    )


def resolve_lm_head(mode: str) -> str:
    """Return ``"on_the_fly"`` or ``"cached"`` for ``mode``; ``"auto"`` is ``"cached"``.

    By the roofline of bench/ROOFLINE.md the cached matrix wins at every size
    on H100-class GPUs: the nonce blocks that share a W tile run together and
    read it from L2, while generating a weight costs about 57 instructions per
    nonce block. (The CPU interpreter is also far faster with it.) GPU timings
    may refine this per size; until then no size argument is taken.
    """
    return "cached" if mode == "auto" else mode


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


def compute_distances(args: DistanceArgs) -> torch.Tensor:
    """Return the distances (SPEC §5) as float32 ``[B]`` on ``args.last_hidden``'s device."""
    last_hidden = args.last_hidden
    device = last_hidden.device
    config_for(device)  # raises a clear error on an unsupported device
    b, hidden = last_hidden.shape
    if b == 0:
        return torch.empty(0, dtype=torch.float32, device=device)
    _, signs, refl = device_seeds(
        args.block_hash, args.public_key, args.nonces, args.num_reflections, device, need_input=False, need_post=True
    )
    t, tt, seed = round_constants(args.block_hash, args.output_dim, device)
    w: Optional[torch.Tensor] = None
    if resolve_lm_head(args.lm_head) == "cached":
        w = cached_lm_head(args.block_hash, hidden, args.output_dim, device)
    return torch.ops.poc_kernels.triton_distances(
        last_hidden, signs, refl, t, w, seed, args.output_dim, tt, args.sign_flips
    )


def compute_artifacts(args: ArtifactArgs) -> torch.Tensor:
    """Return the artifacts (SPEC-ARTIFACTS §4) as float32 ``[B, k]`` in one launch (seeds from hashlib)."""
    device = args.last_hidden.device
    config_for(device)
    seeds = derive_artifact_seeds(args.block_hash, args.public_key, args.nonces, args.k)
    return torch.ops.poc_kernels.triton_artifacts(args.last_hidden, seeds.pick.to(device), seeds.haar.to(device))


def generate_inputs(args: InputArgs) -> torch.Tensor:
    """Return the input embeddings (SPEC §6, or the stronger ones of SPEC-ARTIFACTS §2) in one launch."""
    config_for(args.device)
    out = args.output()
    if not len(args.nonces):
        return out
    if args.stronger:  # SPEC-ARTIFACTS §2: eight seeds per nonce, one launch for all the segments
        seeds = stronger_input_seeds(args.block_hash, args.public_key, args.nonces).to(args.device)
    else:
        seeds, _, _ = device_seeds(
            args.block_hash, args.public_key, args.nonces, 0, args.device, need_input=True, need_post=False
        )
    torch.ops.poc_kernels.triton_generate_inputs_(seeds, out)
    return out


HOOK_DTYPES = (torch.float16, torch.bfloat16, torch.float32)


def layer_transform_(x: torch.Tensor, v: torch.Tensor, normalize: bool = True) -> torch.Tensor:
    """Apply the layer transform to ``x`` ``[..., H]`` in place, one launch; return ``x``.

    SPEC §7 with ``normalize``, SPEC-ARTIFACTS §3 without, with the deployed
    eager roundings. ``x`` is fp16, bf16 or fp32 with contiguous rows; ``v`` is
    the layer's unit vector ``[H]`` on the same device (the API has checked
    both shapes), cast to x's dtype here unless it has it already (pass it so
    to launch nothing else). Only host-side checks, no synchronization: safe to
    call while a CUDA graph is being captured.
    """
    if x.dtype not in HOOK_DTYPES:
        raise TypeError(f"x must be a float16, bfloat16 or float32 tensor for the Triton backend, got {x.dtype}")
    h = x.shape[-1]
    if v.device != x.device:
        raise ValueError(f"v is on {v.device} but x is on {x.device}")
    # [T, H] rows with stride 1 along H (any row stride), or a contiguous tensor of any rank
    if (x.dim() == 2 and x.stride(1) != 1 and h > 1) or (x.dim() != 2 and not x.is_contiguous()):
        raise ValueError("x must have contiguous rows (stride 1 along hidden)")
    rows = x if x.dim() == 2 else x.view(-1, h)
    config_for(x.device)
    torch.ops.poc_kernels.triton_layer_hook_(rows, v.to(x.dtype).contiguous(), normalize)
    return x


def write_token_inputs_(args: TokenInputArgs) -> torch.Tensor:
    """Write the input rows of the PoC tokens into ``args.out`` in one launch; return it.

    Every index is read on the device and the checks were on metadata only, so
    the call never synchronizes and can be captured in a CUDA graph (the
    tables' contents may change between replays). A token whose request row
    or position lies outside the tables is left untouched.
    """
    config_for(args.out.device)
    tables = (args.tok_req, args.tok_pos, args.req_seeds, args.req_seq_len, args.req_segments)
    torch.ops.poc_kernels.triton_write_token_inputs_(args.out, *tables)
    if args.projections is not None:  # SPEC §10: the projected rows again, regenerated, projected, cast once
        torch.ops.poc_kernels.triton_token_project_(args.out, *tables, args.req_projection, args.projections)
    return args.out


def project(x: torch.Tensor, p: torch.Tensor) -> torch.Tensor:
    """Return float32 ``x + x @ p`` (SPEC §10) of the rows of ``x`` ``[N, H]`` in one launch."""
    config_for(x.device)
    return torch.ops.poc_kernels.triton_project(x, p.contiguous())


def token_layer_transform_(args: TokenLayerArgs) -> None:
    """Apply the layer transform to the PoC tokens' rows of ``args.x`` and ``args.y`` in one launch.

    As :func:`write_token_inputs_`: no synchronization, CUDA-graph safe; a code naming no slot of
    ``args.vectors`` transforms nothing.
    """
    config_for(args.x.device)
    torch.ops.poc_kernels.triton_token_layer_transform_(
        args.x, args.y, args.tok_req, args.req_layer, args.vectors, args.layer
    )
