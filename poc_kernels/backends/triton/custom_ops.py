"""The Triton launchers as torch custom ops (``torch.ops.poc_kernels.*``).

Registered with ``torch.library.custom_op`` and given fake (meta)
implementations, so they trace under ``torch.compile`` and are opaque to it,
and can be captured in CUDA graphs.
"""

from __future__ import annotations

from typing import Optional

import torch

from . import artifacts as _artifacts
from . import distances as _distances
from . import inputs as _inputs
from . import layer_hook as _layer_hook
from . import projection as _projection


@torch.library.custom_op("poc_kernels::triton_distances", mutates_args=())
def triton_distances(
    last_hidden: torch.Tensor,
    sign_seeds: torch.Tensor,
    refl_seeds: torch.Tensor,
    target: torch.Tensor,
    lm_head: Optional[torch.Tensor],
    lm_head_seed: torch.Tensor,
    output_dim: int,
    target_norm2: float,
    use_signs: bool,
) -> torch.Tensor:
    """Return the PoC distance of each row of ``last_hidden`` as float32 ``[B]``."""
    return _distances.distances(
        last_hidden, sign_seeds, refl_seeds, target, target_norm2, lm_head_seed, output_dim, use_signs, lm_head
    )


@triton_distances.register_fake
def _(last_hidden, sign_seeds, refl_seeds, target, lm_head, lm_head_seed, output_dim, target_norm2, use_signs):
    return last_hidden.new_empty((last_hidden.shape[0],), dtype=torch.float32)


@torch.library.custom_op("poc_kernels::triton_artifacts", mutates_args=())
def triton_artifacts(last_hidden: torch.Tensor, pick_seeds: torch.Tensor, haar_seeds: torch.Tensor) -> torch.Tensor:
    """Return the artifacts of SPEC-ARTIFACTS §4 as float32 ``[B, k]``, ``k = 1 + haar_seeds.shape[1]``."""
    return _artifacts.artifacts(last_hidden, pick_seeds, haar_seeds)


@triton_artifacts.register_fake
def _(last_hidden, pick_seeds, haar_seeds):
    return last_hidden.new_empty((last_hidden.shape[0], haar_seeds.shape[1] + 1), dtype=torch.float32)


@torch.library.custom_op("poc_kernels::triton_generate_inputs_", mutates_args=("out",))
def triton_generate_inputs_(seeds: torch.Tensor, out: torch.Tensor) -> None:
    """Write the input embeddings of ``seeds`` (``[B]``, or ``[B, 8]`` for the stronger inputs) into ``out``."""
    _inputs.generate_inputs(seeds, out)


@triton_generate_inputs_.register_fake
def _(seeds, out):
    return None


@torch.library.custom_op("poc_kernels::triton_lm_head", mutates_args=())
def triton_lm_head(seed: int, output_dim: int, hidden_size: int, device: torch.device) -> torch.Tensor:
    """Return the random lm_head as float32 ``[output_dim, hidden_size]`` on ``device``."""
    return _inputs.lm_head(seed, output_dim, hidden_size, device)


@triton_lm_head.register_fake
def _(seed, output_dim, hidden_size, device):
    return torch.empty(output_dim, hidden_size, dtype=torch.float32, device=device)


@torch.library.custom_op("poc_kernels::triton_layer_hook_", mutates_args=("x",))
def triton_layer_hook_(x: torch.Tensor, v: torch.Tensor, normalize: bool) -> None:
    """Apply the layer transform to ``x`` ``[T, H]`` in place (``v`` in x's dtype; SPEC §7 with ``normalize``)."""
    _layer_hook.layer_hook_(x, v, normalize)


@triton_layer_hook_.register_fake
def _(x, v, normalize):
    return None


@torch.library.custom_op("poc_kernels::triton_write_token_inputs_", mutates_args=("out",))
def triton_write_token_inputs_(
    out: torch.Tensor,
    tok_req: torch.Tensor,
    tok_pos: torch.Tensor,
    req_seeds: torch.Tensor,
    req_seq_len: torch.Tensor,
    req_segments: torch.Tensor,
) -> None:
    """Write the input rows of the PoC tokens of ``out`` ``[T, H]`` (``tok_req[t] >= 0``) in place."""
    _inputs.token_inputs_(out, tok_req, tok_pos, req_seeds, req_seq_len, req_segments)


@triton_write_token_inputs_.register_fake
def _(out, tok_req, tok_pos, req_seeds, req_seq_len, req_segments):
    return None


@torch.library.custom_op("poc_kernels::triton_token_layer_transform_", mutates_args=("x", "y"))
def triton_token_layer_transform_(
    x: torch.Tensor,
    y: Optional[torch.Tensor],
    tok_req: torch.Tensor,
    req_layer: torch.Tensor,
    vectors: torch.Tensor,
    layer: int,
) -> None:
    """Apply the layer transform to the rows of ``x`` (and ``y``) ``[T, H]`` whose request has a layer code."""
    _layer_hook.token_layer_hook_(x, y, tok_req, req_layer, vectors, layer)


@triton_token_layer_transform_.register_fake
def _(x, y, tok_req, req_layer, vectors, layer):
    return None


@torch.library.custom_op("poc_kernels::triton_project", mutates_args=())
def triton_project(x: torch.Tensor, p: torch.Tensor) -> torch.Tensor:
    """Return float32 ``x + x @ p`` (SPEC §10) of the rows of ``x`` ``[N, H]``, in ``vectors.project``'s order."""
    return _projection.project(x, p)


@triton_project.register_fake
def _(x, p):
    return x.new_empty(x.shape, dtype=torch.float32)


@torch.library.custom_op("poc_kernels::triton_token_project_", mutates_args=("out",))
def triton_token_project_(
    out: torch.Tensor,
    tok_req: torch.Tensor,
    tok_pos: torch.Tensor,
    req_seeds: torch.Tensor,
    req_seq_len: torch.Tensor,
    req_segments: torch.Tensor,
    req_projection: torch.Tensor,
    projections: torch.Tensor,
) -> None:
    """Overwrite the rows of ``out`` ``[T, H]`` of PoC tokens whose request has a projection slot (SPEC §10)."""
    _projection.token_project_(out, tok_req, tok_pos, req_seeds, req_seq_len, req_segments, req_projection, projections)


@triton_token_project_.register_fake
def _(out, tok_req, tok_pos, req_seeds, req_seq_len, req_segments, req_projection, projections):
    return None
