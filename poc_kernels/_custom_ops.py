"""The compiled ops of ``poc_kernels._C`` (``csrc/``): loading, fake kernels, one-line wrappers.

Each op is declared once in ``csrc/torch_bindings.cpp`` and appears as
``torch.ops.poc_kernels.<name>``. The extension is optional: when it is not
built, or ``POC_KERNELS_NO_EXT=1`` is set in the environment at import, it is
not loaded, ``HAS_EXT`` is False and the package runs on its other backends
(a missing build is logged as a warning, a disabled one at INFO level).

This module imports nothing from the package but its constants and switches, so every
layer may use it: the contract's seed derivation (``seeds``) takes its batched
SHA-256 from here, and the ``"cpp"`` backend (``backends/cpp.py``) its ops.
"""

from __future__ import annotations

import logging
from typing import Optional

import torch

from ._env import NO_EXT, env_flag
from .constants import NUM_REFLECTIONS

__all__ = [
    "HAS_EXT",
    "HAS_CUDA_EXT",
    "EXT_STATUS",
    "derive_seeds",
    "hash_stream",
    "uniform_stream",
    "sign_stream",
    "normal_",
    "normal_slice_",
    "project",
    "compute_distances",
    "compute_artifacts",
]

logger = logging.getLogger("poc_kernels")

#: Environment variable that disables the extension (at build time and at import).
DISABLE_ENV = NO_EXT


def _disabled() -> bool:
    return env_flag(DISABLE_ENV)


def _load() -> tuple[bool, str]:
    if _disabled():
        logger.info("%s is set: the C++/CUDA extension poc_kernels._C is not loaded", DISABLE_ENV)
        return False, f"disabled by {DISABLE_ENV}"
    try:
        from . import _C  # noqa: F401  (loading it registers torch.ops.poc_kernels.*)
    except (ImportError, OSError) as exc:
        logger.warning(
            "the C++/CUDA extension poc_kernels._C is not available (%s): the 'cpp' backend and the batched "
            "seed derivation are off; build it with `pip install --no-build-isolation -e .` (csrc/README.md)",
            exc,
        )
        return False, f"not built or not loadable: {exc}"
    return True, "loaded"


HAS_EXT, EXT_STATUS = _load()
#: Whether the extension has its CUDA kernels (built against a CUDA torch).
HAS_CUDA_EXT: bool = HAS_EXT and bool(torch.ops.poc_kernels.built_with_cuda())


# ----------------------------------------------------------------------------- fake kernels (shapes only)

if HAS_EXT:

    @torch.library.register_fake("poc_kernels::derive_seeds")
    def _derive_seeds_fake(
        block_hash, public_key, nonces, num_reflections=NUM_REFLECTIONS, need_input=True, need_post=True
    ):
        b = nonces.shape[0]
        new = lambda *shape: nonces.new_empty(shape, dtype=torch.uint32)  # noqa: E731
        return new(b if need_input else 0), new(b if need_post else 0), new(b if need_post else 0, num_reflections)

    @torch.library.register_fake("poc_kernels::hash_stream")
    def _hash_stream_fake(seeds, n):
        return seeds.new_empty((seeds.shape[0], n), dtype=torch.uint32)

    @torch.library.register_fake("poc_kernels::uniform_stream")
    def _uniform_stream_fake(seeds, n):
        return seeds.new_empty((seeds.shape[0], n), dtype=torch.float32)

    @torch.library.register_fake("poc_kernels::sign_stream")
    def _sign_stream_fake(seeds, n):
        return seeds.new_empty((seeds.shape[0], n), dtype=torch.float32)

    @torch.library.register_fake("poc_kernels::normal_")
    def _normal_fake(out, seeds, scale=1.0):
        return None

    @torch.library.register_fake("poc_kernels::normal_slice_")
    def _normal_slice_fake(out, seed, n, start):
        return None

    @torch.library.register_fake("poc_kernels::project")
    def _project_fake(x, p):
        return torch.empty_like(x, memory_format=torch.contiguous_format)

    @torch.library.register_fake("poc_kernels::compute_distances")
    def _compute_distances_fake(last_hidden, weight, target, sign_seeds, reflection_seeds):
        return last_hidden.new_empty((last_hidden.shape[0],), dtype=torch.float32)

    @torch.library.register_fake("poc_kernels::compute_artifacts")
    def _compute_artifacts_fake(last_hidden, pick_seeds, haar_seeds):
        return last_hidden.new_empty((last_hidden.shape[0], haar_seeds.shape[1] + 1), dtype=torch.float32)


# ----------------------------------------------------------------------------- wrappers


def derive_seeds(
    block_hash: str,
    public_key: str,
    nonces: torch.Tensor,
    num_reflections: int = NUM_REFLECTIONS,
    need_input: bool = True,
    need_post: bool = True,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Return the SPEC §1 seeds as uint32 ``(input [B], signs [B], reflections [B, R])`` on ``nonces``' device."""
    return torch.ops.poc_kernels.derive_seeds(block_hash, public_key, nonces, num_reflections, need_input, need_post)


def hash_stream(seeds: torch.Tensor, n: int) -> torch.Tensor:
    """Return ``hash(i, seed)`` for ``i < n`` (SPEC §2) as uint32 ``[S, n]`` on the CPU."""
    return torch.ops.poc_kernels.hash_stream(seeds, n)


def uniform_stream(seeds: torch.Tensor, n: int) -> torch.Tensor:
    """Return ``U(seed)[:n]`` (SPEC §3) as float32 ``[S, n]`` on the CPU."""
    return torch.ops.poc_kernels.uniform_stream(seeds, n)


def sign_stream(seeds: torch.Tensor, n: int) -> torch.Tensor:
    """Return the sign flips ``±1`` of ``U(seed)[:n]`` (SPEC §4) as float32 ``[S, n]`` on the CPU."""
    return torch.ops.poc_kernels.sign_stream(seeds, n)


def normal_(out: torch.Tensor, seeds: torch.Tensor, scale: float = 1.0) -> torch.Tensor:
    """Fill CPU ``out [S, n]`` (float32/64, float16, bfloat16) with ``scale * N(seed, n)`` per row; return ``out``."""
    return torch.ops.poc_kernels.normal_(out, seeds, scale) or out


def normal_slice_(out: torch.Tensor, seed: int, n: int, start: int) -> torch.Tensor:
    """Fill contiguous 1-D CPU ``out`` (float32/64, float16, bfloat16) with ``N(seed, n)[start:start+len(out)]``."""
    return torch.ops.poc_kernels.normal_slice_(out, seed, n, start) or out


def project(x: torch.Tensor, p: torch.Tensor) -> torch.Tensor:
    """``x + x @ p`` (SPEC §10) on the CPU, bit for bit ``poc_kernels.vectors.project``."""
    return torch.ops.poc_kernels.project(x, p)


def compute_distances(
    last_hidden: torch.Tensor,
    weight: torch.Tensor,
    target: torch.Tensor,
    sign_seeds: Optional[torch.Tensor],
    reflection_seeds: torch.Tensor,
) -> torch.Tensor:
    """Return the SPEC §5 distances as float32 ``[B]`` on the CPU.

    ``last_hidden`` is float32 ``[B, H]``, ``weight`` the float32 lm_head ``[D, H]``,
    ``target`` the unit float64 target ``[D]``; ``sign_seeds`` ``[B]`` (None: no
    sign flips) and ``reflection_seeds`` ``[B, R]`` are integer tensors.
    """
    return torch.ops.poc_kernels.compute_distances(last_hidden, weight, target, sign_seeds, reflection_seeds)


def compute_artifacts(last_hidden: torch.Tensor, pick_seeds: torch.Tensor, haar_seeds: torch.Tensor) -> torch.Tensor:
    """Return the SPEC-ARTIFACTS §4 artifacts as float32 ``[B, k]`` on the CPU (``k = 1 + haar_seeds.shape[1]``).

    ``last_hidden`` float32 ``[B, H]``; ``pick_seeds`` ``[B]`` and ``haar_seeds``
    ``[B, k - 1]`` integer tensors. A row with NaN or Inf gives a NaN row.
    """
    return torch.ops.poc_kernels.compute_artifacts(last_hidden, pick_seeds, haar_seeds)
