"""The ``"triton"`` backend: fused Triton kernels, registered as torch custom ops.

One op family per module: ``_streams`` (device functions of the contract's
streams), ``distances`` (fused distances), ``artifacts`` (the artifact
scheme's fingerprints), ``inputs`` (input embeddings and the materialized
lm_head), ``layer_hook`` (the layer transforms), then
``custom_ops`` (torch.library registration) and ``backend`` (the functions the
API calls). ``configs`` holds the fixed launch configurations and
``compile_check`` compiles them for real GPUs
(``python -m poc_kernels.backends.triton.compile_check``).

Importing this package registers the backend (when Triton is installed) but
does not import Triton: ``backend`` is imported on first use, so that
``TRITON_INTERPRET`` can still be set before. On the CPU it runs only under
that interpreter (how the CPU test suite checks it), and ``"auto"`` picks it
only on CUDA.
"""

from __future__ import annotations

import importlib.util

import torch

from .._registry import Backend, register_backend
from .configs import interpreter_enabled


def supports(device: torch.device) -> bool:
    """Return whether the Triton backend runs on ``device`` here."""
    if device.type == "cuda":
        return torch.cuda.is_available()
    return device.type == "cpu" and interpreter_enabled()


def _compute_distances(args):
    from . import backend

    return backend.compute_distances(args)


def _compute_artifacts(args):
    from . import backend

    return backend.compute_artifacts(args)


def _generate_inputs(args):
    from . import backend

    return backend.generate_inputs(args)


def _layer_transform_(x, v, normalize):
    from . import backend

    return backend.layer_transform_(x, v, normalize)


def _write_token_inputs_(args):
    from . import backend

    return backend.write_token_inputs_(args)


def _token_layer_transform_(args):
    from . import backend

    return backend.token_layer_transform_(args)


def _project(x, p):
    from . import backend

    return backend.project(x, p)


if importlib.util.find_spec("triton") is not None:
    register_backend(
        Backend(
            "triton",
            supports=supports,
            compute_distances=_compute_distances,
            generate_inputs=_generate_inputs,
            compute_artifacts=_compute_artifacts,
            layer_transform_=_layer_transform_,
            write_token_inputs_=_write_token_inputs_,
            token_layer_transform_=_token_layer_transform_,
            project=_project,
            preferred=lambda device: device.type == "cuda" and supports(device),
        )
    )
