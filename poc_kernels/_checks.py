"""Argument validation shared by every backend: errors name the argument and the expected form."""

from __future__ import annotations

import operator
from typing import Sequence, Union

import numpy as np
import torch

from .constants import MAX_NONCE

NoncesLike = Union[Sequence[int], torch.Tensor]


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


LM_HEAD_MODES = ("auto", "on_the_fly", "cached")


def check_lm_head(value) -> str:
    if value not in LM_HEAD_MODES:
        raise ValueError(f"lm_head must be one of {LM_HEAD_MODES}, got {value!r}")
    return value


def check_distance_args(last_hidden, block_hash, public_key, nonces, sign_flips, output_dim, num_reflections):
    """Validate ``compute_distances`` arguments; return ``(last_hidden, nonces)`` (int64 CPU tensor)."""
    last_hidden = check_last_hidden(last_hidden)
    check_str(block_hash, "block_hash")
    check_str(public_key, "public_key")
    nonce_list = check_nonces(nonces)
    if len(nonce_list) != last_hidden.shape[0]:
        raise ValueError(
            f"len(nonces) = {len(nonce_list)} does not match last_hidden batch size {last_hidden.shape[0]}"
        )
    check_bool(sign_flips, "sign_flips")
    check_int(output_dim, "output_dim", 1)
    check_int(num_reflections, "num_reflections", 0)
    return last_hidden, nonce_list


def check_input_args(block_hash, public_key, nonces, seq_len, hidden_size, dtype, device, out):
    """Validate ``generate_inputs`` arguments; return ``(nonces, dtype, device)`` (nonces: int64 CPU tensor)."""
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
    return nonce_list, dtype, device


def _same_device(a: torch.device, b: torch.device) -> bool:
    if a.type != b.type:
        return False
    if a.index is None or b.index is None:
        return True
    return a.index == b.index
