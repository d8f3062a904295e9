"""poc_kernels: fused kernels for Proof of Compute v2 post-processing.

Public API::

    compute_distances(last_hidden, block_hash, public_key, nonces, *, sign_flips=True,
                      output_dim=8192, num_reflections=8, backend="auto") -> float32 [B]
    generate_inputs(block_hash, public_key, nonces, seq_len, hidden_size, *,
                    dtype=torch.float16, device="cpu", out=None, backend="auto") -> [B, seq_len, H]

``poc_kernels.rng`` holds the seeds, hash and random streams of the contract,
``poc_kernels.reference`` the reference implementation every backend is tested
against.
"""

import logging as _logging

from . import _custom_ops, rng, reference, seeds
from .api import BACKENDS, auto_backend, available_backends, compute_distances, generate_inputs
from .constants import NUM_REFLECTIONS, POC_OUTPUT_DIM

_logging.getLogger(__name__).info(
    "poc_kernels backends available: %s (C++/CUDA extension: %s)",
    ", ".join(available_backends()),
    _custom_ops.EXT_STATUS,
)

__version__ = "0.1.0"

__all__ = [
    "BACKENDS",
    "NUM_REFLECTIONS",
    "POC_OUTPUT_DIM",
    "auto_backend",
    "available_backends",
    "compute_distances",
    "generate_inputs",
    "reference",
    "rng",
    "seeds",
]
