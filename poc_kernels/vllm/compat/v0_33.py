"""vLLM 0.33: the worker extension's own lifecycle hooks.

0.33's ``WorkerWrapperBase`` calls the extension class's
``init_worker_extension(worker)`` right after ``init_device`` (the model runner
exists, the model is not loaded yet) and ``destroy_worker_extension(worker)``
when the worker shuts down. ``PoCWorkerExtension`` then wraps ``load_model``
on each worker instance, and frees its token table at shutdown, instead of
wrapping ``Worker.load_model`` on the class. Every other hook point is 0.32's
(``bench/results/vllm-hooks.md``). 0.33 pins torch 2.14 (the extension is
built against it); it is checked from its source, not run.
"""

from __future__ import annotations

from .base import Compat

COMPAT = Compat(minors=(33,), worker_extension_hooks=True)
