"""The backends' typed contract (:class:`Backend`) and their registry; see :mod:`poc_kernels.backends`.

A module of its own, so that each backend module registers itself without
importing the package that imports it.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Optional

import torch

from .._checks import ArtifactArgs, DistanceArgs, InputArgs, TokenInputArgs, TokenLayerArgs

__all__ = ["BACKENDS", "Backend", "get", "register_backend", "registered"]

#: Every backend name the API knows, in the order ``"auto"`` prefers them.
BACKENDS = ("triton", "cpp", "reference")


@dataclass(frozen=True)
class Backend:
    """One implementation of the API's operations.

    ``supports(device)``: the backend can run on ``device``; ``preferred(device)``
    (default: ``supports``): ``backend="auto"`` may pick it there.
    An optional operation is None when the backend does not implement it
    (``auto`` then goes on to the next backend).
    """

    name: str
    supports: Callable[[torch.device], bool]
    #: distances (SPEC §5) as float32 ``[B]`` on ``args.last_hidden``'s device
    compute_distances: Callable[[DistanceArgs], torch.Tensor]
    #: input embeddings (SPEC §6), ``args.out`` when given
    generate_inputs: Callable[[InputArgs], torch.Tensor]
    #: artifacts (SPEC-ARTIFACTS §4) as float32 ``[B, k]`` on ``args.last_hidden``'s device
    compute_artifacts: Optional[Callable[[ArtifactArgs], torch.Tensor]] = None
    #: the layer transform of ``x [..., H]`` with the unit vector ``v [H]``, in place; returns ``x``; with
    #: ``normalize`` SPEC §7, without SPEC-ARTIFACTS §3
    layer_transform_: Optional[Callable[[torch.Tensor, torch.Tensor, bool], torch.Tensor]] = None
    #: the input rows (SPEC §6, SPEC-ARTIFACTS §2) of the PoC tokens of a flat batch, into ``args.out``; returns it
    write_token_inputs_: Optional[Callable[[TokenInputArgs], torch.Tensor]] = None
    #: the layer transform of the PoC tokens' rows of ``args.x`` (and ``args.y``) whose request has a layer
    #: code, in place; other rows untouched
    token_layer_transform_: Optional[Callable[[TokenLayerArgs], None]] = None
    #: SPEC §10: float32 ``x + x @ p`` of float32 rows ``x`` ``[N, H]`` (contiguous) and ``p`` ``[H, H]``, in the
    #: fixed order of ``vectors.project`` (the same bits on every backend)
    project: Optional[Callable[[torch.Tensor, torch.Tensor], torch.Tensor]] = None
    preferred: Optional[Callable[[torch.device], bool]] = None

    def is_preferred(self, device: torch.device) -> bool:
        return (self.preferred or self.supports)(device)


_REGISTRY: dict[str, Backend] = {}


def register_backend(backend: Backend) -> None:
    """Make ``backend`` available to the API (each backend module calls it when it is imported)."""
    if not isinstance(backend, Backend):
        raise TypeError(f"backend must be a Backend, got {type(backend).__name__}")
    if backend.name not in BACKENDS:
        raise ValueError(f"unknown backend name {backend.name!r}; known: {BACKENDS}")
    _REGISTRY[backend.name] = backend


def registered() -> list[str]:
    """Return the registered backend names, in the order ``"auto"`` prefers them."""
    return [name for name in BACKENDS if name in _REGISTRY]


def get(name: str) -> Backend:
    """Return the registered backend ``name`` (KeyError when it is not registered)."""
    return _REGISTRY[name]
