"""Which (backend, device) pairs the parametrized tests run on this machine."""

import pytest
import torch

import poc_kernels

CUDA = torch.cuda.is_available()


def backend_devices(include_reference: bool = True) -> list:
    """Return pytest params ``(backend, device)`` for every backend usable here.

    The reference runs on the CPU (and on CUDA when present); every other
    backend runs on each local device it supports: Triton on CUDA, or on the
    CPU under ``TRITON_INTERPRET=1``; the C++ backend on the CPU.
    """
    devices = (["cuda"] if CUDA else []) + ["cpu"]
    out = []
    for name in poc_kernels.BACKENDS:
        if name == "reference" and not include_reference:
            continue
        for dev in devices:
            if name in poc_kernels.available_backends(dev):
                out.append(pytest.param(name, dev, id=f"{name}-{dev}"))
    return out


def has_backend(name: str) -> bool:
    return any(name in poc_kernels.available_backends(d) for d in (["cuda"] if CUDA else []) + ["cpu"])


def triton_device() -> str:
    """The device the Triton backend runs on here ("cuda", or "cpu" under the interpreter)."""
    return "cuda" if CUDA else "cpu"
