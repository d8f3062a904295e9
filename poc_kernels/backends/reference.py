"""The ``"reference"`` backend: the oracle (:mod:`poc_kernels.reference`) served through the API, on any device."""

from __future__ import annotations

import torch

from .. import reference
from . import Backend, register_backend


def layer_transform_(x: torch.Tensor, v: torch.Tensor, normalize: bool) -> torch.Tensor:
    """Write the oracle's layer transform of ``x`` into ``x``; return ``x``."""
    return x.copy_(reference.apply_layer_transform(x, v, normalize=normalize))


register_backend(
    Backend(
        "reference",
        supports=lambda device: True,
        compute_distances=reference.distances,
        generate_inputs=reference.inputs,
        compute_artifacts=reference.artifacts,
        layer_transform_=layer_transform_,
    )
)
