"""The PoC node: the HTTP APIs that drive PoC rounds on a vLLM engine.

The node is a web service; it reaches the engine only through the public
names of :mod:`poc_kernels.vllm` (the runners, the engine's start and
shutdown), never through vLLM or the engine integration's internals.

| module | what |
|---|---|
| :mod:`.settings` | every bound and environment variable, and the API choice (``POC_API``) |
| :mod:`.errors` | the node's errors and their HTTP statuses |
| :mod:`.rounds` | what both APIs' rounds share: identity fields, the batch budget, engine-failure reports |
| :mod:`.callbacks` | callback URLs, the background delivery, the buffer of mined artifacts |
| :mod:`.metrics` | the Prometheus metrics (vLLM's ``/metrics``; the standalone node's own) |
| :mod:`.manager` | the seeds' API (distance scheme): :class:`~.manager.PoCManager` |
| :mod:`.mining`, :mod:`.jobs`, :mod:`.v2` | the network's API (artifact scheme): mining, jobs, ``ArtifactNode`` |
| :mod:`._http`, :mod:`.routes`, :mod:`.gating` | the HTTP layer: shared helpers, both routers, inference gating |
| :mod:`.server` | the endpoint plugin for vLLM's server, the standalone server (``poc-kernels-node``) |

Importing this package imports neither vLLM nor a web framework; the round
logic (:mod:`.manager`, :mod:`.v2`) runs on any object with a runner's
methods, which is how its tests drive it.
"""
