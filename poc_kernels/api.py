"""The public, dispatching API: one entry point per operation, any backend."""

from __future__ import annotations

import importlib.util
from dataclasses import dataclass
from typing import Callable, Dict, Optional

import torch

from . import _custom_ops, reference
from ._checks import NoncesLike, check_distance_args, check_input_args, check_lm_head
from .constants import NUM_REFLECTIONS, POC_OUTPUT_DIM

__all__ = [
    "BACKENDS",
    "Backend",
    "auto_backend",
    "available_backends",
    "compute_distances",
    "generate_inputs",
    "register_backend",
]

#: Every backend name the API knows, in the order ``"auto"`` prefers them.
BACKENDS = ("triton", "cpp", "reference")


@dataclass(frozen=True)
class Backend:
    """One implementation of the API. Its functions take already validated arguments.

    ``supports(device)``: the backend can run on ``device``; ``preferred(device)``
    (default: ``supports``): ``backend="auto"`` may pick it there.
    """

    name: str
    compute_distances: Callable
    generate_inputs: Callable
    supports: Callable[[torch.device], bool]
    preferred: Optional[Callable[[torch.device], bool]] = None

    def is_preferred(self, device: torch.device) -> bool:
        return (self.preferred or self.supports)(device)


_REGISTRY: Dict[str, Backend] = {}


def register_backend(backend: Backend) -> None:
    """Make ``backend`` available to the API (called by the backend modules at import)."""
    if backend.name not in BACKENDS:
        raise ValueError(f"unknown backend name {backend.name!r}; known: {BACKENDS}")
    _REGISTRY[backend.name] = backend


def _without_lm_head(impl):
    # The reference and cpp backends always cache the lm_head: they take no ``lm_head`` argument.
    def run(last_hidden, block_hash, public_key, nonce_list, sign_flips, output_dim, num_reflections, lm_head):
        return impl(last_hidden, block_hash, public_key, nonce_list, sign_flips, output_dim, num_reflections)

    return run


register_backend(
    Backend(
        "reference",
        _without_lm_head(reference._compute_distances),
        reference._generate_inputs,
        supports=lambda device: True,
    )
)


def _triton_supports(device: torch.device) -> bool:
    from .ops.configs import interpreter_enabled

    if device.type == "cuda":
        return torch.cuda.is_available()
    return device.type == "cpu" and interpreter_enabled()


def _triton_distances(*args):
    from .ops import backend

    return backend.compute_distances(*args)


def _triton_inputs(*args):
    from .ops import backend

    return backend.generate_inputs(*args)


if importlib.util.find_spec("triton") is not None:
    # Imported on first use. Under TRITON_INTERPRET=1 it also accepts CPU tensors
    # (that is how CPU CI tests it), but "auto" picks it only on CUDA.
    register_backend(
        Backend(
            "triton",
            _triton_distances,
            _triton_inputs,
            supports=_triton_supports,
            preferred=lambda device: device.type == "cuda" and _triton_supports(device),
        )
    )


if _custom_ops.HAS_EXT:
    from . import cpp_backend

    register_backend(
        Backend(
            "cpp",
            _without_lm_head(cpp_backend.compute_distances),
            cpp_backend.generate_inputs,
            supports=lambda d: d.type == "cpu",
        )
    )


def available_backends(device=None) -> list[str]:
    """Return the backends usable here (on ``device``, or on any local device), fastest first."""
    if device is None:
        devices = [torch.device("cpu")] + ([torch.device("cuda")] if torch.cuda.is_available() else [])
    else:
        devices = [torch.device(device)]
    return [n for n in BACKENDS if n in _REGISTRY and any(_REGISTRY[n].supports(d) for d in devices)]


def auto_backend(device="cpu") -> str:
    """Return the backend that ``backend="auto"`` uses for tensors on ``device``."""
    device = torch.device(device)
    return next(n for n in BACKENDS if n in _REGISTRY and _REGISTRY[n].is_preferred(device))


def _resolve(backend: str, device: torch.device) -> Backend:
    if not isinstance(backend, str):
        raise TypeError(f"backend must be a str, got {type(backend).__name__}")
    if backend == "auto":
        return _REGISTRY[auto_backend(device)]
    if backend not in BACKENDS:
        raise ValueError(f"backend must be one of {('auto',) + BACKENDS}, got {backend!r}")
    if backend not in _REGISTRY:
        raise ValueError(
            f"backend={backend!r} is not available in this installation; available: {available_backends()}"
        )
    impl = _REGISTRY[backend]
    if not impl.supports(device):
        raise ValueError(
            f"backend={backend!r} does not run on device {device}; available there: {available_backends(device)}"
        )
    return impl


def compute_distances(
    last_hidden: torch.Tensor,
    block_hash: str,
    public_key: str,
    nonces: NoncesLike,
    *,
    sign_flips: bool = True,
    output_dim: int = POC_OUTPUT_DIM,
    num_reflections: int = NUM_REFLECTIONS,
    backend: str = "auto",
    lm_head: str = "auto",
) -> torch.Tensor:
    """Return each nonce's PoC distance (SPEC §5) as float32 ``[B]`` on ``last_hidden``'s device.

    ``last_hidden`` is the final-norm hidden state of each sequence's last
    token, ``[B, H]`` in any float dtype; ``nonces`` holds ``B`` ints in
    [0, 2**32) (a sequence or an integer tensor). A nonce is valid when its
    distance is below ``r_target``; rows with NaN/Inf (or all zeros) give NaN,
    which is never valid.

    ``lm_head`` tells the Triton backend how to get the random lm_head:
    ``"on_the_fly"`` generates each weight tile inside the matmul (never
    stored), ``"cached"`` materializes the matrix once per block hash,
    ``"auto"`` picks by device and size. The other backends always cache it.
    """
    last_hidden, nonce_list = check_distance_args(
        last_hidden, block_hash, public_key, nonces, sign_flips, output_dim, num_reflections
    )
    check_lm_head(lm_head)
    impl = _resolve(backend, last_hidden.device).compute_distances
    return impl(last_hidden, block_hash, public_key, nonce_list, sign_flips, output_dim, num_reflections, lm_head)


def generate_inputs(
    block_hash: str,
    public_key: str,
    nonces: NoncesLike,
    seq_len: int,
    hidden_size: int,
    *,
    dtype: torch.dtype = torch.float16,
    device="cpu",
    out: Optional[torch.Tensor] = None,
    backend: str = "auto",
) -> torch.Tensor:
    """Return the random input embeddings (SPEC §6) as ``[B, seq_len, H]`` in ``dtype`` on ``device``.

    Values are computed in float32 and cast to ``dtype`` once. With ``out`` (a
    tensor of that shape, dtype and device) the result is written into it.
    """
    nonce_list, dtype, device = check_input_args(
        block_hash, public_key, nonces, seq_len, hidden_size, dtype, device, out
    )
    impl = _resolve(backend, device).generate_inputs
    return impl(block_hash, public_key, nonce_list, seq_len, hidden_size, dtype, device, out)
