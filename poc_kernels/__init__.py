"""poc_kernels: fused kernels for Proof of Compute v2 post-processing.

Public API::

    compute_distances(last_hidden, block_hash, public_key, nonces, *, sign_flips=True,
                      output_dim=8192, num_reflections=8, backend="auto") -> float32 [B]
    generate_inputs(block_hash, public_key, nonces, seq_len, hidden_size, *,
                    dtype=torch.float16, device="cpu", out=None, backend="auto") -> [B, seq_len, H]
    compute_artifacts(last_hidden, block_hash, public_key, nonces, *, k=12, backend="auto") -> float32 [B, k]
    apply_layer_transform(x, v, *, normalize=True, backend="auto") -> x's dtype and shape (SPEC §7;
                          normalize=False: SPEC-ARTIFACTS §3)
    apply_layer_transform_(x, v, *, normalize=True, backend="auto") -> x, transformed in place
    write_token_inputs_(out, tok_req, tok_pos, req_seeds, req_seq_len, req_segments, *,
                        backend="auto") -> out, the PoC tokens' input rows written in place
    apply_token_layer_transform_(x, y, tok_req, req_layer, vectors, layer, *, backend="auto") -> None,
                                 the PoC tokens' rows of x (and y) transformed in place

The package reads bottom-up: the contract (``constants``, ``rng``, ``seeds``,
``vectors``), the oracle (``reference``) and the benchmark baselines
(``baselines``), the backends (``backends``), this dispatching API
(``api``), then the validation statistics (``validation``) and the
integrations (``cli``, ``weights``, ``vllm``).
"""

import logging as _logging

from . import _custom_ops, reference, rng, seeds, vectors
from .api import (
    BACKENDS,
    apply_layer_transform,
    apply_layer_transform_,
    apply_token_layer_transform_,
    auto_backend,
    available_backends,
    compute_artifacts,
    compute_distances,
    generate_inputs,
    write_token_inputs_,
)
from .constants import ARTIFACT_K, NUM_REFLECTIONS, POC_OUTPUT_DIM

_logging.getLogger(__name__).info(
    "poc_kernels backends available: %s (C++/CUDA extension: %s)",
    ", ".join(available_backends()),
    _custom_ops.EXT_STATUS,
)

__version__ = "0.1.0"

__all__ = [
    "ARTIFACT_K",
    "BACKENDS",
    "NUM_REFLECTIONS",
    "POC_OUTPUT_DIM",
    "apply_layer_transform",
    "apply_layer_transform_",
    "apply_token_layer_transform_",
    "auto_backend",
    "available_backends",
    "compute_artifacts",
    "compute_distances",
    "generate_inputs",
    "reference",
    "rng",
    "seeds",
    "vectors",
    "write_token_inputs_",
]
