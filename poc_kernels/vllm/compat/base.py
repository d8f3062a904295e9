"""vLLM 0.26 to 0.32: the hook points of ``poc_kernels.vllm`` as the full test suite runs them (0.32).

``bench/vllm_hooks.py`` finds these releases' hook points the same as 0.32's,
or edited inside without a change to what is hooked (see
``bench/results/vllm-hooks.md``).
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Compat:
    """How one vLLM release line differs, in what ``poc_kernels.vllm`` hooks."""

    #: the minors this entry is for
    minors: tuple
    #: vLLM calls the extension's ``init_worker_extension(worker)`` after it builds the model runner and
    #: ``destroy_worker_extension(worker)`` at shutdown: the ops are installed per worker instance; without
    #: them, ``Worker.load_model`` is wrapped on the class when the extension is imported
    worker_extension_hooks: bool = False
    #: ``vllm serve`` loads the ``vllm.endpoint_plugins`` entry points (the node inside vLLM's own server);
    #: without them the node runs as its own server only (``poc-kernels-node``)
    endpoint_plugins: bool = True

    @property
    def name(self) -> str:
        first, last = self.minors[0], self.minors[-1]
        return f"vLLM 0.{first}" if first == last else f"vLLM 0.{first} to 0.{last}"


BASE = Compat(minors=tuple(range(26, 33)))
