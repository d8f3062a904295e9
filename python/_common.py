"""Helpers shared by the experiment scripts of this folder."""

from __future__ import annotations

import argparse
import time

import torch

import poc_kernels


def positive_int(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be a positive integer, got {text}")
    return value


def pick_device(name: str) -> torch.device:
    """Return the torch device for ``--device`` ('auto' is CUDA when available, else CPU)."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(name)


def device_label(device: torch.device) -> str:
    return torch.cuda.get_device_name(device) if device.type == "cuda" else str(device)


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def random_state_distances(
    block_hash: str,
    public_key: str,
    num_nonces: int,
    hidden_size: int,
    *,
    batch_size: int,
    device: torch.device,
    seed: int,
    **call,
) -> tuple[torch.Tensor, float, float]:
    """Return (float64 CPU distances, setup seconds, compute seconds) for random hidden states.

    The first call (which builds the lm_head and target of ``block_hash``) is
    timed apart as setup; generating the hidden states is not timed.
    """
    gen = torch.Generator(device=device).manual_seed(seed)
    t0 = time.perf_counter()
    warm = torch.randn(1, hidden_size, generator=gen, device=device)
    poc_kernels.compute_distances(warm, block_hash, public_key, [0], **call)
    sync(device)
    setup_s = time.perf_counter() - t0
    out, compute_s = [], 0.0
    for start in range(0, num_nonces, batch_size):
        nonces = list(range(start, min(num_nonces, start + batch_size)))
        hidden = torch.randn(len(nonces), hidden_size, generator=gen, device=device)
        sync(device)
        t0 = time.perf_counter()
        d = poc_kernels.compute_distances(hidden, block_hash, public_key, nonces, **call)
        sync(device)
        compute_s += time.perf_counter() - t0
        out.append(d.cpu())
    return torch.cat(out).double(), setup_s, compute_s
