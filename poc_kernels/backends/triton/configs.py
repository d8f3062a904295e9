"""The shipped kernel configurations: fixed per device kind, never autotuned.

Outputs that are part of a proof must not depend on a tuner's choice or on the
batch size, so each device kind has exactly one configuration, chosen here and
used by every launch. The compile check (``compile_check.py``) compiles each
GPU configuration for sm_80 and sm_90 and fails on register spills.

The interpreter (``TRITON_INTERPRET=1``, used to test on CPU) pays per
operation, not per element, so it gets large tiles.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

import torch


def interpreter_enabled() -> bool:
    """Return whether Triton runs kernels through its CPU interpreter (``TRITON_INTERPRET=1``)."""
    return os.environ.get("TRITON_INTERPRET", "0") not in ("", "0")


@dataclass(frozen=True)
class Config:
    name: str
    # _prep_kernel: nonces per program, Box-Muller pairs per chunk (at most), warps
    prep_rows: int
    prep_block_p: int
    prep_warps: int
    # _project_kernel: nonces x (2 x outputs) x hidden tile, warps, pipeline stages, fp32 dot scheme
    block_b: int
    block_n: int
    block_k: int
    proj_warps: int
    proj_stages: int
    precision: str
    # x @ w as a broadcast product summed over k instead of tl.dot (interpreter only)
    broadcast_dot: bool
    # _finalize_kernel: nonces per program
    finalize_block: int
    # _normal_rows_kernel: pairs per program, warps
    rows_block: int
    rows_warps: int
    # _layer_hook_kernel and _token_layer_kernel: hidden chunk, warps
    hook_block: int
    hook_warps: int
    # _token_inputs_kernel: elements of a token row per program, warps
    token_block: int
    token_warps: int
    # _artifact_kernel: hidden chunk (at most), warps
    artifact_block: int
    artifact_warps: int
    # _random_projection_kernel and _token_random_projection_kernel (SPEC §10): leaves folded in registers per
    # residue (the padded hidden size splits as M = M/C residues x C leaves), output columns at a time, warps
    rp_chunk: int
    rp_block_j: int
    rp_warps: int


# Ampere, Hopper and newer. 3xTF32 keeps the projection fp32-accurate (plain TF32 is
# not: see bench/ROOFLINE.md) at tensor-core speed.
CUDA_SM80 = Config(
    name="cuda-sm80+",
    prep_rows=1,
    prep_block_p=512,
    prep_warps=4,
    block_b=64,
    block_n=64,
    block_k=16,
    proj_warps=8,
    proj_stages=2,
    precision="tf32x3",
    broadcast_dot=False,
    finalize_block=128,
    rows_block=1024,
    rows_warps=4,
    hook_block=1024,
    hook_warps=4,
    token_block=1024,
    token_warps=4,
    artifact_block=1024,
    artifact_warps=4,
    rp_chunk=32,
    rp_block_j=32,
    rp_warps=4,
)

INTERPRETER = Config(
    name="interpreter",
    prep_rows=16,
    prep_block_p=2048,
    prep_warps=1,
    block_b=16,
    block_n=256,
    block_k=128,
    proj_warps=1,
    proj_stages=1,
    precision="ieee",
    broadcast_dot=True,
    finalize_block=1024,
    rows_block=1 << 16,
    rows_warps=1,
    hook_block=8192,
    hook_warps=1,
    token_block=4096,
    token_warps=1,
    artifact_block=8192,
    artifact_warps=1,
    rp_chunk=1024,
    rp_block_j=256,
    rp_warps=1,
)

#: Every configuration compiled for real GPUs.
GPU_CONFIGS = (CUDA_SM80,)


def config_for(device: torch.device) -> Config:
    """Return the configuration used for tensors on ``device``."""
    if device.type == "cuda":
        major, minor = torch.cuda.get_device_capability(device)
        if major < 8:
            raise ValueError(
                f"the Triton backend needs an NVIDIA GPU of compute capability 8.0 or newer, "
                f"{device} has {major}.{minor}"
            )
        return CUDA_SM80
    if device.type == "cpu" and interpreter_enabled():
        return INTERPRETER
    raise ValueError(
        f"the Triton backend runs on CUDA devices (or on the CPU under TRITON_INTERPRET=1), got device {device}"
    )
