"""vLLM 0.25: as 0.26 to 0.32 in the engine's hook points, but ``vllm serve`` has no endpoint plugins.

``vllm.plugins.load_endpoint_plugins`` and ``vllm/plugins/endpoint_plugins/``
arrived in 0.26 (``bench/results/vllm-hooks.md``), so the PoC API cannot be
mounted into ``vllm serve``; the node runs as its own server
(``poc-kernels-node``), which builds its ``AsyncLLM`` itself. 0.25.1 pins
``torch==2.11.0``; it is checked from its source, not run.
"""

from __future__ import annotations

from .base import Compat

COMPAT = Compat(minors=(25,), endpoint_plugins=False)
