"""The backends of the public API: one typed contract, one registry, one module (or package) per backend.

A backend is a :class:`Backend`: a name, the devices it runs on, and one
function per operation, each taking the validated arguments that
``poc_kernels.api`` builds (:class:`DistanceArgs`, :class:`InputArgs`,
:class:`ArtifactArgs`, :class:`TokenInputArgs`, :class:`TokenLayerArgs`, or the
checked ``(x, v)`` of the layer transform). Each backend module registers
itself with :func:`register_backend` when it is imported; this package
imports them all, in the order ``backend="auto"`` prefers them:

- ``triton`` (:mod:`poc_kernels.backends.triton`): fused Triton kernels on CUDA
  GPUs (and on the CPU under ``TRITON_INTERPRET=1``); Triton itself is
  imported on first use;
- ``cpp`` (:mod:`poc_kernels.backends.cpp`): the C++ extension on CPU tensors,
  registered only when the extension is built;
- ``reference`` (:mod:`poc_kernels.backends.reference`): the oracle, on any
  device.

No backend but ``reference`` imports the oracle, so testing a backend against
it is never circular.
"""

from __future__ import annotations

from .._checks import ArtifactArgs, DistanceArgs, InputArgs, TokenInputArgs, TokenLayerArgs, TokenRun
from ._registry import BACKENDS, Backend, get, register_backend, registered

__all__ = [
    "BACKENDS",
    "ArtifactArgs",
    "Backend",
    "DistanceArgs",
    "InputArgs",
    "TokenInputArgs",
    "TokenLayerArgs",
    "TokenRun",
    "get",
    "register_backend",
    "registered",
]

# Each module registers itself (the Triton one without importing Triton).
from . import cpp, reference, triton  # noqa: E402, F401
