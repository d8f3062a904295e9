"""Argument validation for the whole package: errors name the argument and the expected form.

``check_distance_args`` and ``check_input_args`` turn the public API's
arguments into :class:`DistanceArgs` and :class:`InputArgs`, the validated
form that every backend receives (``poc_kernels.backends``); the token
operations' checks build :class:`TokenInputArgs` and :class:`TokenLayerArgs`
from tensor metadata only, so they never wait for a GPU. The real-number
checks serve the validation statistics.
"""

from __future__ import annotations

import math
import numbers
import operator
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Optional, Union

import numpy as np
import torch

from .constants import MAX_NONCE, STRONGER_SEGMENTS

NoncesLike = Union[Sequence[int], torch.Tensor, np.ndarray]

#: How the Triton backend gets the random lm_head (the other backends always cache it).
LM_HEAD_MODES = ("auto", "on_the_fly", "cached")


@dataclass(frozen=True)
class DistanceArgs:
    """The validated arguments of ``compute_distances``, as every backend receives them."""

    #: ``[B, H]``, any float dtype, on the device the distances are computed on
    last_hidden: torch.Tensor
    block_hash: str
    public_key: str
    #: int64 ``[B]`` on the CPU, values in [0, 2**32)
    nonces: torch.Tensor
    sign_flips: bool
    output_dim: int
    num_reflections: int
    #: one of :data:`LM_HEAD_MODES`; only the Triton backend reads it
    lm_head: str = "auto"


@dataclass(frozen=True)
class ArtifactArgs:
    """The validated arguments of ``compute_artifacts``, as every backend receives them."""

    #: ``[B, H]``, any float dtype, on the device the artifacts are computed on
    last_hidden: torch.Tensor
    block_hash: str
    public_key: str
    #: int64 ``[B]`` on the CPU, values in [0, 2**32)
    nonces: torch.Tensor
    #: the artifact length, in [1, H]
    k: int


@dataclass(frozen=True)
class InputArgs:
    """The validated arguments of ``generate_inputs``, as every backend receives them."""

    block_hash: str
    public_key: str
    #: int64 ``[B]`` on the CPU, values in [0, 2**32)
    nonces: torch.Tensor
    seq_len: int
    hidden_size: int
    dtype: torch.dtype
    device: torch.device
    #: ``[B, seq_len, H]`` of ``dtype`` on ``device`` to write into, or None
    out: Optional[torch.Tensor]
    #: the stronger inputs of SPEC-ARTIFACTS §2 (8 seeds per nonce, one per segment)
    stronger: bool = False

    def output(self) -> torch.Tensor:
        """Return ``out``, or a new uninitialized ``[B, seq_len, H]`` tensor of ``dtype`` on ``device``."""
        if self.out is not None:
            return self.out
        return torch.empty(len(self.nonces), self.seq_len, self.hidden_size, dtype=self.dtype, device=self.device)


#: The activation dtypes the token operations take.
TOKEN_DTYPES = (torch.float16, torch.bfloat16, torch.float32)


@dataclass(frozen=True)
class TokenRun:
    """Consecutive PoC rows ``out[row : row + rows]`` of one request at consecutive positions.

    Their values, flattened, are the concatenation of the stream slices ``pieces``: each
    ``(seed, n, start, stop)`` stands for ``N(seed, n)[start:stop]`` (SPEC §3).
    """

    row: int
    rows: int
    pieces: tuple[tuple[int, int, int, int], ...]
    #: SPEC §10: the slot of ``projections`` whose ``P_pre`` projects these rows before their cast, or -1
    slot: int = -1


@dataclass(frozen=True)
class TokenInputArgs:
    """The validated arguments of ``write_token_inputs_``, as every backend receives them.

    ``T = out.shape[0]``; only the first ``T`` entries of ``tok_req`` and ``tok_pos`` are read.
    """

    #: ``[T, H]`` float16/bfloat16/float32 with contiguous rows, written in place
    out: torch.Tensor
    #: int32 ``[>= T]``: the request row of each token, or -1 (not a PoC token: its row is untouched)
    tok_req: torch.Tensor
    #: int32 ``[>= T]``: the token's position in its request's sequence, in ``[0, seq_len)``
    tok_pos: torch.Tensor
    #: int64 ``[R, 8]``: column 0 the input seed (SPEC §6), or the 8 segment seeds (SPEC-ARTIFACTS §2)
    req_seeds: torch.Tensor
    #: int32 ``[R]``: the request's sequence length
    req_seq_len: torch.Tensor
    #: int32 ``[R]``: 1 (SPEC §6 inputs) or 8 (the stronger inputs of SPEC-ARTIFACTS §2)
    req_segments: torch.Tensor
    #: SPEC §10, or None: int32 ``[R]``, the request's slot of ``projections``, or -1 (not projected)
    req_projection: Optional[torch.Tensor] = None
    #: SPEC §10, or None: float32 ``[S, H, H]``, contiguous: ``projections[s]`` is a ``P_pre``
    projections: Optional[torch.Tensor] = None

    def host_runs(self) -> list[TokenRun]:
        """Return the PoC rows as runs with their stream slices, read on the host (the CPU backends' plan).

        Reading the index tensors waits for their device. Index values are checked here (a request row
        outside the tables, a position outside ``[0, seq_len)``, a segment count other than 1 or 8 raise
        ``ValueError``), which the Triton kernel cannot do without waiting: it leaves such rows untouched.
        """
        t_count, hidden = self.out.shape
        req = self.tok_req[:t_count].tolist()
        pos = self.tok_pos[:t_count].tolist()
        seeds, seq_len, segments = self.req_seeds.tolist(), self.req_seq_len.tolist(), self.req_segments.tolist()
        num_req = len(seq_len)
        slots = [-1] * num_req if self.req_projection is None else self.req_projection.tolist()
        num_slots = 0 if self.projections is None else self.projections.shape[0]
        checked: set[int] = set()
        runs: list[TokenRun] = []
        t = 0
        while t < t_count:
            r = req[t]
            if r < 0:
                t += 1
                continue
            if r >= num_req:
                raise ValueError(f"tok_req[{t}] = {r} is not a row of the request tables (R = {num_req})")
            if r not in checked:
                _check_request(r, seeds[r], seq_len[r], segments[r], hidden)
                if not -1 <= slots[r] < num_slots:
                    raise ValueError(
                        f"req_projection[{r}] = {slots[r]} must be -1 or a slot of projections (S = {num_slots})"
                    )
                checked.add(r)
            if not 0 <= pos[t] < seq_len[r]:
                raise ValueError(f"tok_pos[{t}] = {pos[t]} is outside [0, req_seq_len[{r}] = {seq_len[r]})")
            k = 1
            while t + k < t_count and req[t + k] == r and pos[t + k] == pos[t] + k and pos[t + k] < seq_len[r]:
                k += 1
            pieces = _stream_pieces(seeds[r], seq_len[r] * hidden, segments[r], pos[t], k, hidden)
            runs.append(TokenRun(t, k, pieces, slots[r]))
            t += k
        return runs


def _check_request(r: int, seeds: list, seq_len: int, segments: int, hidden: int) -> None:
    if segments not in (1, STRONGER_SEGMENTS):
        raise ValueError(f"req_segments[{r}] must be 1 or {STRONGER_SEGMENTS}, got {segments}")
    if seq_len < 1 or seq_len * hidden > MAX_NONCE + 1:
        raise ValueError(f"req_seq_len[{r}] must lie in [1, 2**32 / H], got {seq_len}")
    for g in range(segments):
        if not 0 <= seeds[g] <= MAX_NONCE:
            raise ValueError(f"req_seeds[{r}, {g}] must lie in [0, 2**32), got {seeds[g]}")


def _stream_pieces(seeds: list, n: int, segments: int, pos: int, rows: int, hidden: int) -> tuple:
    # Elements [pos*H, (pos+rows)*H) of the request's values, split at the segment boundaries g*L.
    a, b = pos * hidden, (pos + rows) * hidden
    if segments == 1:
        return ((seeds[0], n, a, b),)
    seg = -(-n // segments)
    pieces = []
    for g in range(a // seg, (b - 1) // seg + 1):
        lo, hi = max(a, g * seg), min(b, (g + 1) * seg)
        pieces.append((seeds[g], min(seg, n - g * seg), lo - g * seg, hi - g * seg))
    return tuple(pieces)


@dataclass(frozen=True)
class TokenLayerArgs:
    """The validated arguments of ``apply_token_layer_transform_``, as every backend receives them."""

    #: ``[T, H]`` float16/bfloat16/float32 with contiguous rows, transformed in place
    x: torch.Tensor
    #: None, or like ``x`` (the residual), transformed in place with it
    y: Optional[torch.Tensor]
    #: int32 ``[>= T]``: the request row of each token, or -1
    tok_req: torch.Tensor
    #: int32 ``[R]``: -1 (no transform) or ``slot * 2 + normalize``
    req_layer: torch.Tensor
    #: ``[S, L, H]`` in x's dtype: ``vectors[slot, layer]`` is that layer's unit vector
    vectors: torch.Tensor
    #: the decoder layer, in ``[0, L)``
    layer: int


def check_str(value, name: str) -> str:
    if not isinstance(value, str):
        raise TypeError(f"{name} must be a str, got {type(value).__name__}")
    return value


def check_int(value, name: str, minimum: int) -> int:
    if isinstance(value, bool):
        raise TypeError(f"{name} must be an int >= {minimum}, got bool")
    try:
        value = operator.index(value)
    except TypeError:
        raise TypeError(f"{name} must be an int >= {minimum}, got {type(value).__name__}") from None
    if value < minimum:
        raise ValueError(f"{name} must be an int >= {minimum}, got {value}")
    return value


def check_bool(value, name: str) -> bool:
    if not isinstance(value, bool):
        raise TypeError(f"{name} must be a bool, got {type(value).__name__}")
    return value


def check_nonces(nonces: NoncesLike, name: str = "nonces") -> torch.Tensor:
    """Return ``nonces`` as an int64 CPU tensor ``[B]`` of values in [0, 2**32).

    Integer tensors and arrays are checked and converted without a Python loop
    over nonces; sequences of Python ints take one C-level conversion. Anything
    else gets an error naming the offending element.
    """
    if isinstance(nonces, torch.Tensor):
        if nonces.dtype.is_floating_point or nonces.dtype.is_complex or nonces.dtype == torch.bool:
            raise TypeError(f"{name} must be ints or an integer tensor, got a tensor of dtype {nonces.dtype}")
        if nonces.dim() != 1:
            raise ValueError(f"{name} must be a 1-D integer tensor, got shape {tuple(nonces.shape)}")
        if nonces.dtype == torch.uint64 and nonces.numel() and int(nonces.max()) > MAX_NONCE:
            raise ValueError(f"{name} must lie in [0, 2**32), got {int(nonces.max())}")
        return _check_range(nonces.detach().to("cpu", torch.int64), name)
    if isinstance(nonces, np.ndarray):
        if nonces.dtype.kind not in "iu":
            raise TypeError(f"{name} must be ints or an integer array, got an array of dtype {nonces.dtype}")
        if nonces.ndim != 1:
            raise ValueError(f"{name} must be a 1-D integer array, got shape {nonces.shape}")
        if nonces.size and (nonces.min() < 0 or nonces.max() > MAX_NONCE):
            bad = nonces.min() if nonces.min() < 0 else nonces.max()
            raise ValueError(f"{name} must lie in [0, 2**32), got {bad}")
        return torch.from_numpy(nonces.astype(np.int64))
    if isinstance(nonces, (str, bytes)) or not hasattr(nonces, "__iter__"):
        raise TypeError(f"{name} must be a sequence of ints or an integer tensor, got {type(nonces).__name__}")
    if not isinstance(nonces, (list, tuple)):
        nonces = list(nonces)
    if set(map(type, nonces)) <= {int}:
        try:
            return _check_range(torch.tensor(nonces, dtype=torch.int64).reshape(-1), name, nonces)
        except RuntimeError:  # beyond int64: find it below
            pass
    out = []
    for i, n in enumerate(nonces):
        if isinstance(n, bool):
            raise TypeError(f"{name}[{i}] must be an int, got bool")
        try:
            n = operator.index(n)
        except TypeError:
            raise TypeError(f"{name}[{i}] must be an int, got {type(n).__name__}") from None
        if not 0 <= n <= MAX_NONCE:
            raise ValueError(f"{name}[{i}] = {n} is outside [0, 2**32)")
        out.append(n)
    return torch.tensor(out, dtype=torch.int64).reshape(-1)


def _check_range(values: torch.Tensor, name: str, seq=None) -> torch.Tensor:
    if values.numel():
        lo, hi = int(values.min()), int(values.max())
        if lo < 0 or hi > MAX_NONCE:
            bad = lo if lo < 0 else hi
            if seq is not None:
                i = int((values == bad).nonzero()[0])
                raise ValueError(f"{name}[{i}] = {bad} is outside [0, 2**32)")
            raise ValueError(f"{name} must lie in [0, 2**32), got {bad}")
    return values


def check_last_hidden(last_hidden, name: str = "last_hidden") -> torch.Tensor:
    if not isinstance(last_hidden, torch.Tensor):
        raise TypeError(f"{name} must be a torch.Tensor, got {type(last_hidden).__name__}")
    if not last_hidden.dtype.is_floating_point:
        raise TypeError(f"{name} must have a floating dtype, got {last_hidden.dtype}")
    if last_hidden.dim() != 2:
        raise ValueError(f"{name} must be 2-D [batch, hidden], got shape {tuple(last_hidden.shape)}")
    if last_hidden.shape[1] < 1:
        raise ValueError(f"{name} must have hidden size >= 1, got shape {tuple(last_hidden.shape)}")
    return last_hidden


def check_lm_head(value) -> str:
    if value not in LM_HEAD_MODES:
        raise ValueError(f"lm_head must be one of {LM_HEAD_MODES}, got {value!r}")
    return value


def _check_hidden_batch(last_hidden, block_hash, public_key, nonces) -> tuple[torch.Tensor, list[int]]:
    """Return ``last_hidden`` and the nonce list, checked, with one nonce per row."""
    last_hidden = check_last_hidden(last_hidden)
    check_str(block_hash, "block_hash")
    check_str(public_key, "public_key")
    nonce_list = check_nonces(nonces)
    if len(nonce_list) != last_hidden.shape[0]:
        raise ValueError(
            f"len(nonces) = {len(nonce_list)} does not match last_hidden batch size {last_hidden.shape[0]}"
        )
    return last_hidden, nonce_list


def check_distance_args(
    last_hidden, block_hash, public_key, nonces, sign_flips, output_dim, num_reflections, lm_head="auto"
) -> DistanceArgs:
    """Return the validated ``compute_distances`` arguments."""
    last_hidden, nonce_list = _check_hidden_batch(last_hidden, block_hash, public_key, nonces)
    return DistanceArgs(
        last_hidden,
        block_hash,
        public_key,
        nonce_list,
        check_bool(sign_flips, "sign_flips"),
        check_int(output_dim, "output_dim", 1),
        check_int(num_reflections, "num_reflections", 0),
        check_lm_head(lm_head),
    )


def check_artifact_args(last_hidden, block_hash, public_key, nonces, k) -> ArtifactArgs:
    """Return the validated ``compute_artifacts`` arguments."""
    last_hidden, nonce_list = _check_hidden_batch(last_hidden, block_hash, public_key, nonces)
    k = check_int(k, "k", 1)
    if k > last_hidden.shape[1]:
        raise ValueError(f"k must lie in [1, hidden size = {last_hidden.shape[1]}], got {k}")
    return ArtifactArgs(last_hidden, block_hash, public_key, nonce_list, k)


def check_input_args(
    block_hash, public_key, nonces, seq_len, hidden_size, dtype, device, out, stronger_rng=False
) -> InputArgs:
    """Return the validated ``generate_inputs`` arguments (``device`` becomes ``out``'s when ``out`` is given)."""
    check_str(block_hash, "block_hash")
    check_str(public_key, "public_key")
    nonce_list = check_nonces(nonces)
    seq_len = check_int(seq_len, "seq_len", 1)
    hidden_size = check_int(hidden_size, "hidden_size", 1)
    if not isinstance(dtype, torch.dtype) or not dtype.is_floating_point:
        raise TypeError(f"dtype must be a floating torch.dtype, got {dtype!r}")
    try:
        device = torch.device(device)
    except (RuntimeError, TypeError):
        raise ValueError(f"device must be a torch device or device string, got {device!r}") from None
    if out is not None:
        if not isinstance(out, torch.Tensor):
            raise TypeError(f"out must be a torch.Tensor, got {type(out).__name__}")
        shape = (len(nonce_list), seq_len, hidden_size)
        if tuple(out.shape) != shape:
            raise ValueError(f"out must have shape {shape}, got {tuple(out.shape)}")
        if out.dtype != dtype:
            raise ValueError(f"out has dtype {out.dtype} but dtype={dtype}; pass dtype=out.dtype")
        if not _same_device(out.device, device):
            raise ValueError(f"out is on {out.device} but device={device}; pass device=out.device")
        device = out.device
    check_bool(stronger_rng, "stronger_rng")
    return InputArgs(block_hash, public_key, nonce_list, seq_len, hidden_size, dtype, device, out, stronger_rng)


def check_layer_args(x, v) -> None:
    """Validate the arguments of the layer transform: ``x`` float ``[..., H]``, ``v`` float ``[H]``."""
    if not isinstance(x, torch.Tensor) or not x.dtype.is_floating_point:
        raise TypeError(f"x must be a floating tensor, got {getattr(x, 'dtype', type(x).__name__)}")
    if x.dim() < 1 or x.shape[-1] < 1:
        raise ValueError(f"x must be [..., hidden] with hidden >= 1, got shape {tuple(x.shape)}")
    h = x.shape[-1]
    if not isinstance(v, torch.Tensor) or v.dim() != 1 or v.shape[0] != h:
        raise ValueError(f"v must be a 1-D tensor of size {h}, got {getattr(v, 'shape', type(v).__name__)}")
    if not v.dtype.is_floating_point:
        raise TypeError(f"v must be a floating tensor, got {v.dtype}")


def _check_rows(t, name: str) -> torch.Tensor:
    """Check an activation tensor ``[T, H]``: a float16/bfloat16/float32 tensor with contiguous, disjoint rows."""
    if not isinstance(t, torch.Tensor):
        raise TypeError(f"{name} must be a torch.Tensor, got {type(t).__name__}")
    if t.dtype not in TOKEN_DTYPES:
        raise TypeError(f"{name} must be float16, bfloat16 or float32, got {t.dtype}")
    if t.dim() != 2 or t.shape[1] < 1:
        raise ValueError(f"{name} must be 2-D [tokens, hidden] with hidden >= 1, got shape {tuple(t.shape)}")
    if t.shape[1] > 1 and t.stride(1) != 1:
        raise ValueError(f"{name} must have contiguous rows (stride 1 along hidden), got strides {t.stride()}")
    if t.shape[0] > 1 and abs(t.stride(0)) < t.shape[1]:
        raise ValueError(f"{name} must have disjoint rows, got strides {t.stride()} for shape {tuple(t.shape)}")
    return t


def _check_index(t, name: str, dtype: torch.dtype, device: torch.device, ref: str, *, dim: int = 1) -> torch.Tensor:
    """Check an index table: a contiguous tensor of ``dtype`` and rank ``dim`` on ``device`` (``ref``'s)."""
    if not isinstance(t, torch.Tensor):
        raise TypeError(f"{name} must be a torch.Tensor, got {type(t).__name__}")
    if t.dtype != dtype:
        raise TypeError(f"{name} must have dtype {dtype}, got {t.dtype}")
    if t.dim() != dim:
        raise ValueError(f"{name} must be {dim}-D, got shape {tuple(t.shape)}")
    if t.device != device:
        raise ValueError(f"{name} is on {t.device} but {ref} is on {device}")
    if not t.is_contiguous():
        raise ValueError(f"{name} must be contiguous, got strides {t.stride()}")
    return t


def _check_token_table(t, name: str, count: int, device: torch.device, ref: str) -> torch.Tensor:
    _check_index(t, name, torch.int32, device, ref)
    if t.shape[0] < count:
        raise ValueError(f"{name} must hold at least T = {count} entries (one per row of {ref}), got {t.shape[0]}")
    return t


def check_token_input_args(
    out, tok_req, tok_pos, req_seeds, req_seq_len, req_segments, req_projection=None, projections=None
) -> TokenInputArgs:
    """Return the validated ``write_token_inputs_`` arguments (from metadata only: nothing waits for a device)."""
    _check_rows(out, "out")
    t_count, device = out.shape[0], out.device
    _check_token_table(tok_req, "tok_req", t_count, device, "out")
    _check_token_table(tok_pos, "tok_pos", t_count, device, "out")
    _check_index(req_seeds, "req_seeds", torch.int64, device, "out", dim=2)
    if req_seeds.shape[1] != STRONGER_SEGMENTS:
        raise ValueError(f"req_seeds must be [R, {STRONGER_SEGMENTS}], got shape {tuple(req_seeds.shape)}")
    num_req = req_seeds.shape[0]
    for t, name in ((req_seq_len, "req_seq_len"), (req_segments, "req_segments")):
        _check_index(t, name, torch.int32, device, "out")
        if t.shape[0] != num_req:
            raise ValueError(f"{name} must be [R] with R = {num_req} (the rows of req_seeds), got {t.shape[0]}")
    if (req_projection is None) != (projections is None):
        raise ValueError("req_projection and projections must be given together (SPEC §10), or neither")
    if req_projection is not None:
        _check_index(req_projection, "req_projection", torch.int32, device, "out")
        if req_projection.shape[0] != num_req:
            raise ValueError(
                f"req_projection must be [R] with R = {num_req} (the rows of req_seeds), got {req_projection.shape[0]}"
            )
        hidden = out.shape[1]
        if not isinstance(projections, torch.Tensor):
            raise TypeError(f"projections must be a torch.Tensor, got {type(projections).__name__}")
        if projections.dtype != torch.float32:
            raise TypeError(f"projections must be float32, got {projections.dtype}")
        if projections.dim() != 3 or projections.shape[1:] != (hidden, hidden):
            raise ValueError(f"projections must be [S, {hidden}, {hidden}], got shape {tuple(projections.shape)}")
        if projections.device != device:
            raise ValueError(f"projections is on {projections.device} but out is on {device}")
        if not projections.is_contiguous():
            raise ValueError(f"projections must be contiguous, got strides {projections.stride()}")
    return TokenInputArgs(out, tok_req, tok_pos, req_seeds, req_seq_len, req_segments, req_projection, projections)


def check_token_layer_args(x, y, tok_req, req_layer, vectors, layer) -> TokenLayerArgs:
    """Return the validated ``apply_token_layer_transform_`` arguments (from metadata only)."""
    _check_rows(x, "x")
    t_count, hidden, device = x.shape[0], x.shape[1], x.device
    if y is not None:
        _check_rows(y, "y")
        if y.shape != x.shape or y.dtype != x.dtype or y.device != device:
            raise ValueError(
                f"y must be None or like x ({x.dtype} {tuple(x.shape)} on {device}), "
                f"got {y.dtype} {tuple(y.shape)} on {y.device}"
            )
        if y.numel() and y.data_ptr() == x.data_ptr():
            raise ValueError("y must be another tensor than x (each row is transformed once)")
    _check_token_table(tok_req, "tok_req", t_count, device, "x")
    _check_index(req_layer, "req_layer", torch.int32, device, "x")
    if not isinstance(vectors, torch.Tensor):
        raise TypeError(f"vectors must be a torch.Tensor, got {type(vectors).__name__}")
    if vectors.dtype != x.dtype:
        raise TypeError(f"vectors must have x's dtype {x.dtype}, got {vectors.dtype}")
    if vectors.dim() != 3 or vectors.shape[0] < 1 or vectors.shape[1] < 1 or vectors.shape[2] != hidden:
        raise ValueError(
            f"vectors must be [slots, layers, {hidden}] with slots, layers >= 1, got shape {tuple(vectors.shape)}"
        )
    if vectors.device != device:
        raise ValueError(f"vectors is on {vectors.device} but x is on {device}")
    if hidden > 1 and vectors.stride(2) != 1:
        raise ValueError(f"vectors must be contiguous along hidden, got strides {vectors.stride()}")
    layer = check_int(layer, "layer", 0)
    if layer >= vectors.shape[1]:
        raise ValueError(f"layer must lie in [0, {vectors.shape[1]}) (the layers of vectors), got {layer}")
    return TokenLayerArgs(x, y, tok_req, req_layer, vectors, layer)


def _same_device(a: torch.device, b: torch.device) -> bool:
    if a.type != b.type:
        return False
    if a.index is None or b.index is None:
        return True
    return a.index == b.index


# ----------------------------------------------------------------------------- real numbers and arrays


def check_real(value: Any, name: str) -> float:
    if isinstance(value, (bool, np.bool_)) or not isinstance(value, numbers.Real):
        raise TypeError(f"{name} must be a real number, got {type(value).__name__}")
    return float(value)


def check_probability(value: Any, name: str) -> float:
    p = check_real(value, name)
    if not 0.0 < p < 1.0:  # also rejects NaN
        raise ValueError(f"{name} must lie in (0, 1), got {value!r}")
    return p


def check_positive(value: Any, name: str) -> float:
    r = check_real(value, name)
    if not (math.isfinite(r) and r > 0.0):
        raise ValueError(f"{name} must be a finite number > 0, got {value!r}")
    return r


def check_non_negative(value: Any, name: str) -> float:
    r = check_real(value, name)
    if not (math.isfinite(r) and r >= 0.0):
        raise ValueError(f"{name} must be a finite number >= 0, got {value!r}")
    return r


def as_non_negative_array(values: Any, name: str, item: str) -> np.ndarray:
    """Return ``values`` as a non-empty float64 ``[n]`` array of finite numbers >= 0 (``item`` names one entry)."""
    arr = as_float_array(values, name, 1)
    if arr.size == 0:
        raise ValueError(f"{name} must hold at least one {item}, got none")
    bad = np.flatnonzero(~np.isfinite(arr) | (arr < 0))
    if bad.size:
        raise ValueError(f"{name} must be finite and >= 0, got {arr[bad[0]]} at index {bad[0]}")
    return arr


def as_float_array(values: Any, name: str, ndim: int) -> np.ndarray:
    """Return ``values`` as a float64 array of ``ndim`` dimensions (torch tensors and sequences accepted)."""
    if isinstance(values, torch.Tensor):
        values = values.detach().cpu().double().numpy()
    if isinstance(values, (str, bytes)):
        raise TypeError(f"{name} must be an array of numbers, got {type(values).__name__}")
    try:
        arr = np.asarray(values)
    except ValueError as exc:  # ragged nested sequences
        raise ValueError(f"{name} must be a rectangular array of numbers: {exc}") from None
    if arr.dtype == bool or arr.dtype.kind not in "iuf":
        raise TypeError(f"{name} must hold real numbers, got an array of dtype {arr.dtype}")
    if arr.ndim != ndim:
        shape = "[n]" if ndim == 1 else "[n, dim]"
        raise ValueError(f"{name} must be {ndim}-D {shape}, got shape {arr.shape}")
    return arr.astype(np.float64, copy=False)
