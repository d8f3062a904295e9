"""The public, dispatching API: one entry point per operation, any backend.

Each function validates its arguments once (``_checks``), picks a backend
(``poc_kernels.backends``) and hands it the validated arguments. Callers such
as the vLLM worker never choose kernels themselves.
"""

from __future__ import annotations

import dataclasses
from typing import Optional

import torch

from ._cache import LRUCache
from ._checks import (
    NoncesLike,
    check_artifact_args,
    check_bool,
    check_distance_args,
    check_input_args,
    check_layer_args,
    check_str,
    check_token_input_args,
    check_token_layer_args,
)
from .backends import BACKENDS, Backend, get, register_backend, registered
from .constants import ARTIFACT_K, NUM_REFLECTIONS, POC_OUTPUT_DIM

__all__ = [
    "BACKENDS",
    "Backend",
    "apply_layer_transform",
    "apply_layer_transform_",
    "apply_token_layer_transform_",
    "auto_backend",
    "available_backends",
    "compute_artifacts",
    "compute_distances",
    "apply_projection",
    "generate_inputs",
    "projection",
    "register_backend",
    "write_token_inputs_",
]


def available_backends(device=None) -> list[str]:
    """Return the backends usable here (on ``device``, or on any local device), fastest first."""
    if device is None:
        devices = [torch.device("cpu")] + ([torch.device("cuda")] if torch.cuda.is_available() else [])
    else:
        devices = [torch.device(device)]
    return [n for n in registered() if any(get(n).supports(d) for d in devices)]


def _auto(device: torch.device, op: str) -> Backend:
    for name in registered():
        impl = get(name)
        if impl.is_preferred(device) and getattr(impl, op) is not None:
            return impl
    raise ValueError(f"no backend implements {op} on device {device}")  # the reference runs everywhere


def auto_backend(device="cpu") -> str:
    """Return the backend that ``backend="auto"`` uses for tensors on ``device``."""
    return _auto(torch.device(device), "compute_distances").name


def _resolve(backend: str, device: torch.device, op: str) -> Backend:
    if not isinstance(backend, str):
        raise TypeError(f"backend must be a str, got {type(backend).__name__}")
    if backend == "auto":
        return _auto(device, op)
    if backend not in BACKENDS:
        raise ValueError(f"backend must be one of {('auto',) + BACKENDS}, got {backend!r}")
    if backend not in registered():
        raise ValueError(
            f"backend={backend!r} is not available in this installation; available: {available_backends()}"
        )
    impl = get(backend)
    if not impl.supports(device):
        raise ValueError(
            f"backend={backend!r} does not run on device {device}; available there: {available_backends(device)}"
        )
    if getattr(impl, op) is None:
        raise ValueError(f"backend={backend!r} does not implement {op.rstrip('_')}")
    return impl


#: the random projections of the latest block hashes (2 x H^2 float32 per block: 128 MiB at H = 4096)
_PROJECTIONS = LRUCache(4)


def projection(block_hash: str, hidden_size: int, which: str, device="cpu") -> torch.Tensor:
    """Return the cached random projection ``which`` ("pre" or "post", SPEC §10) float32 ``[H, H]`` on ``device``."""
    from . import vectors

    device = torch.device(device)
    key = (block_hash, hidden_size, which, str(device))
    return _PROJECTIONS.get(key, lambda: vectors.random_projection(block_hash, hidden_size, which, device=device))


def _project(x: torch.Tensor, p: torch.Tensor, impl: Backend) -> torch.Tensor:
    """``x + x @ p`` (SPEC §10) by ``impl``'s op (the same bits on every backend), any leading shape."""
    from . import vectors

    fn = impl.project or vectors.project
    rows = x.reshape(-1, x.shape[-1]).contiguous()
    return fn(rows, p).view(x.shape)


def apply_projection(x: torch.Tensor, block_hash: str, which: str, *, backend: str = "auto") -> torch.Tensor:
    """Return float32 ``x + x @ P`` (SPEC §10) of ``x`` ``[..., H]`` (float32) with ``block_hash``'s ``P_pre``
    (``which="pre"``) or ``P_post`` (``"post"``); the same bits from every backend."""
    check_str(block_hash, "block_hash")
    if not isinstance(x, torch.Tensor) or x.dtype != torch.float32 or x.dim() < 1:
        raise TypeError(f"x must be a float32 tensor [..., H], got {getattr(x, 'dtype', type(x).__name__)}")
    impl = _resolve(backend, x.device, "generate_inputs")
    return _project(x, projection(block_hash, x.shape[-1], which, x.device), impl)


def _project_hidden(last_hidden: torch.Tensor, block_hash: str, backend: str, op: str) -> torch.Tensor:
    """``h + h @ P_post`` of the float32 hidden states (SPEC §10), before either scheme's post-processing."""
    if not isinstance(last_hidden, torch.Tensor) or last_hidden.dim() != 2 or not last_hidden.dtype.is_floating_point:
        return last_hidden  # the scheme's own checks name the problem
    check_str(block_hash, "block_hash")
    h = last_hidden.float()
    impl = _resolve(backend, h.device, op)
    return _project(h, projection(block_hash, h.shape[1], "post", h.device), impl)


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
    random_projection: bool = False,
) -> torch.Tensor:
    """Return each nonce's PoC distance (SPEC §5) as float32 ``[B]`` on ``last_hidden``'s device.

    ``last_hidden`` is the final-norm hidden state of each sequence's last
    token, ``[B, H]`` in any float dtype; ``nonces`` holds ``B`` ints in
    [0, 2**32) (a sequence, an integer array or an integer tensor). A nonce is
    valid when its distance is below ``r_target``; rows with NaN/Inf (or all
    zeros) give NaN, which is never valid.

    ``lm_head`` tells the Triton backend how to get the random lm_head:
    ``"on_the_fly"`` generates each weight tile inside the matmul (never
    stored), ``"cached"`` materializes the matrix once per block hash and
    ``"auto"`` picks the faster one (``"cached"`` by the roofline of
    bench/ROOFLINE.md). The other backends always cache it.

    ``random_projection`` (SPEC §10, off by default): the hidden states
    become ``h + h @ P_post`` (float32, :func:`poc_kernels.vectors.project`)
    first. Off, nothing changes.
    """
    if check_bool(random_projection, "random_projection"):
        last_hidden = _project_hidden(last_hidden, block_hash, backend, "compute_distances")
    args = check_distance_args(
        last_hidden, block_hash, public_key, nonces, sign_flips, output_dim, num_reflections, lm_head
    )
    return _resolve(backend, args.last_hidden.device, "compute_distances").compute_distances(args)


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
    stronger_rng: bool = False,
    random_projection: bool = False,
) -> torch.Tensor:
    """Return the random input embeddings (SPEC §6) as ``[B, seq_len, H]`` in ``dtype`` on ``device``.

    Values are computed in float32 and cast to ``dtype`` once. With ``out`` (a
    tensor of that shape, dtype and device) the result is written into it.
    ``stronger_rng``: the stronger inputs of SPEC-ARTIFACTS §2 (eight seeds per
    nonce from one SHA-256, one per segment), which a round may set.
    ``random_projection`` (SPEC §10, off by default): every float32 row ``x``
    becomes ``x + x @ P_pre`` before the cast. Off, nothing changes.
    """
    args = check_input_args(block_hash, public_key, nonces, seq_len, hidden_size, dtype, device, out, stronger_rng)
    impl = _resolve(backend, args.device, "generate_inputs")
    if not check_bool(random_projection, "random_projection"):
        return impl.generate_inputs(args)
    x = impl.generate_inputs(dataclasses.replace(args, dtype=torch.float32, out=None))
    x = _project(x, projection(block_hash, args.hidden_size, "pre", args.device), impl)
    if args.out is None:
        return x.to(args.dtype)
    return args.out.copy_(x)


def compute_artifacts(
    last_hidden: torch.Tensor,
    block_hash: str,
    public_key: str,
    nonces: NoncesLike,
    *,
    k: int = ARTIFACT_K,
    backend: str = "auto",
    random_projection: bool = False,
) -> torch.Tensor:
    """Return each nonce's artifact (SPEC-ARTIFACTS §4) as float32 unit vectors ``[B, k]`` on ``last_hidden``'s device.

    ``last_hidden`` is the final-norm hidden state of each sequence's last
    token, ``[B, H]`` in any float dtype (the artifact scheme's forward applies
    the layer transform of SPEC-ARTIFACTS §3 in every decoder layer);
    ``1 <= k <= H``. The k coordinates are picked in the canonical order of
    SPEC-ARTIFACTS §5 on every device. A row holding NaN or Inf gives a NaN row
    (no artifact); an all-zero row gives the all-zero artifact. The float16
    artifact sent over the network is this rounded to nearest even
    (``poc_kernels.validation.encode_artifacts``). ``random_projection`` as in
    :func:`compute_distances`.
    """
    if check_bool(random_projection, "random_projection"):
        last_hidden = _project_hidden(last_hidden, block_hash, backend, "compute_artifacts")
    args = check_artifact_args(last_hidden, block_hash, public_key, nonces, k)
    return _resolve(backend, args.last_hidden.device, "compute_artifacts").compute_artifacts(args)


def apply_layer_transform_(
    x: torch.Tensor, v: torch.Tensor, *, normalize: bool = True, backend: str = "auto"
) -> torch.Tensor:
    """Replace every row of ``x`` ``[..., H]`` by its layer transform, in place; return ``x``.

    ``normalize=True`` (SPEC §7): ``y = x / (||x|| + 1e-8)``, then
    ``y - 2 (y·v) v``; ``normalize=False`` (SPEC-ARTIFACTS §3, the artifact
    scheme): ``x - 2 (x·v) v``. ``v`` is the layer's unit vector ``[H]``
    (``poc_kernels.vectors.layer_vector``). Both reproduce the deployed eager op
    sequence's roundings in x's dtype. The Triton backend (``auto`` on CUDA)
    does it in one launch without synchronizing, so it can be captured in a
    CUDA graph; it takes fp16, bf16 or fp32 ``x`` with contiguous rows.
    """
    check_layer_args(x, v)
    check_bool(normalize, "normalize")
    return _resolve(backend, x.device, "layer_transform_").layer_transform_(x, v, normalize)


def apply_layer_transform(
    x: torch.Tensor, v: torch.Tensor, *, normalize: bool = True, backend: str = "auto"
) -> torch.Tensor:
    """Return the layer transform of ``x`` ``[..., H]`` (see :func:`apply_layer_transform_`) as a new tensor."""
    check_layer_args(x, v)
    check_bool(normalize, "normalize")
    impl = _resolve(backend, x.device, "layer_transform_")
    return impl.layer_transform_(x.clone(memory_format=torch.contiguous_format), v, normalize)


# ----------------------------------------------------------------------------- the tokens of an engine's flat batch


def write_token_inputs_(
    out: torch.Tensor,
    tok_req: torch.Tensor,
    tok_pos: torch.Tensor,
    req_seeds: torch.Tensor,
    req_seq_len: torch.Tensor,
    req_segments: torch.Tensor,
    *,
    req_projection: Optional[torch.Tensor] = None,
    projections: Optional[torch.Tensor] = None,
    backend: str = "auto",
) -> torch.Tensor:
    """Write the input embeddings of the PoC tokens of a flat batch into ``out`` ``[T, H]``, in place; return ``out``.

    For every ``t < T`` with ``r = tok_req[t] >= 0``, ``out[t]`` becomes row
    ``tok_pos[t]`` of ``generate_inputs(block_hash, public_key, [nonce], req_seq_len[r], H,
    dtype=out.dtype, stronger_rng=req_segments[r] == 8)[0]`` (bit for bit what
    the same backend's ``generate_inputs`` gives), where ``req_seeds[r]`` holds
    that nonce's input seed in column 0 (``seeds.derive_nonce_seeds(...).input``)
    or, for the stronger inputs, its 8 segment seeds
    (``seeds.stronger_input_seeds``). Rows with ``tok_req[t] < 0`` are untouched.

    ``out``: float16/bfloat16/float32 with contiguous rows; ``tok_req``,
    ``tok_pos``: int32 ``[>= T]`` (only the first T entries are read);
    ``req_seeds``: int64 ``[R, 8]``; ``req_seq_len``, ``req_segments``: int32
    ``[R]``; all on out's device. The arguments are checked from metadata only,
    and the Triton backend (``auto`` on CUDA) reads every index on the device:
    it never synchronizes, so it can be captured in a CUDA graph whose tables
    are refilled between replays.

    SPEC §10: with ``req_projection`` (int32 ``[R]``) and ``projections``
    (float32 ``[S, H, H]``, contiguous, on out's device), the rows of a request
    with ``s = req_projection[r] >= 0`` are ``x + x @ projections[s]`` of
    their float32 inputs, cast once (``generate_inputs(...,
    random_projection=True)`` when ``projections[s]`` is the block's
    ``P_pre``); -1 leaves a request's rows unprojected.
    """
    args = check_token_input_args(
        out, tok_req, tok_pos, req_seeds, req_seq_len, req_segments, req_projection, projections
    )
    return _resolve(backend, out.device, "write_token_inputs_").write_token_inputs_(args)


def apply_token_layer_transform_(
    x: torch.Tensor,
    y: Optional[torch.Tensor],
    tok_req: torch.Tensor,
    req_layer: torch.Tensor,
    vectors: torch.Tensor,
    layer: int,
    *,
    backend: str = "auto",
) -> None:
    """Apply the layer transform to the rows of the PoC tokens of ``x`` (and ``y``) ``[T, H]`` in place.

    For every ``t < T`` with ``r = tok_req[t] >= 0`` and ``c = req_layer[r] >= 0``,
    row ``t`` of ``x`` and of ``y`` (the residual, or None) becomes
    ``apply_layer_transform(row, vectors[c >> 1, layer], normalize=bool(c & 1))``,
    bit for bit what the same backend's :func:`apply_layer_transform_` gives
    for that row (``c & 1``: SPEC §7; otherwise SPEC-ARTIFACTS §3). Every other
    row is untouched.

    ``x``, ``y``: float16/bfloat16/float32 with contiguous rows; ``tok_req``:
    int32 ``[>= T]``; ``req_layer``: int32 ``[R]``; ``vectors``: ``[S, L, H]``
    in x's dtype (``poc_kernels.vectors.layer_vector`` of each slot's block
    hash, cast as the layer hooks cast it); ``layer`` in ``[0, L)``. The
    Triton backend (``auto`` on CUDA) does it in one launch for x and y without
    synchronizing (CUDA-graph safe).
    """
    args = check_token_layer_args(x, y, tok_req, req_layer, vectors, layer)
    _resolve(backend, x.device, "token_layer_transform_").token_layer_transform_(args)
