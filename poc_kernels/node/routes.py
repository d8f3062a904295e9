"""The PoC HTTP routes (``/api/v1/pow``) of both APIs; they find their manager at ``app.state.poc_manager``.

A node speaks one of two APIs, chosen at start (``--poc-api`` of the
standalone node, or ``POC_API`` in the environment; default ``artifacts``):

- ``artifacts``: the network's v2 API of the artifact scheme
  (:func:`make_v2_router`, on an :class:`~.v2.ArtifactNode`);
- ``distance``: the seeds' API of the distance scheme
  (:func:`make_distance_router`, on a :class:`~.manager.PoCManager`), with the
  original PoC API's field names:

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

``GET /api/v1/pow/versions`` answers in both. Errors answer ``{"detail":
...}``: a malformed body 422, an illegal transition 409, a request that does
not fit the engine 400, a request above a bound 413, a full queue 429, an
engine failure 503. Never a 500. The routes answer their errors themselves
(:func:`~._http.route`), so the shapes are the same in the standalone server
and inside vLLM's (which has its own handlers for its OpenAI routes).
"""

from __future__ import annotations

import asyncio
import json
from typing import Callable, Optional

from fastapi import APIRouter, Request
from fastapi.responses import Response
from pydantic import BaseModel

from ..validation import ProofBatch
from . import settings
from ._http import PREFIX, ApiError, body_doc, manager_of, parse, route, unless_disconnected
from .manager import PoCState, RoundConfig
from .settings import poc_api
from .v2 import ArtifactNode, GenerateRequest, InitGenerateRequest

__all__ = ["make_distance_router", "make_router", "make_v2_router", "poc_api"]


def make_router(api: Optional[str] = None) -> APIRouter:
    """Return the ``/api/v1/pow`` router of ``api`` (see :func:`poc_api`), with ``/versions``.

    Its routes find their manager at ``app.state.poc_manager``.
    """
    api = poc_api(api)
    router = make_v2_router() if api == "artifacts" else make_distance_router()
    router.add_api_route("/versions", versions_route(api), methods=["GET"])
    return router


def versions_route(api: str) -> Callable:
    async def versions(request: Request) -> dict:
        """Versions of vLLM and of this package, and the scheme this node serves."""
        from .. import __version__
        from ..vllm import VLLM_VERSION

        return {
            "vllm_version": VLLM_VERSION,
            "poc_validation_inference": True,
            "poc_kernels_version": __version__,
            "api": api,
            "schemes": ["artifact"] if api == "artifacts" else ["distance"],
            # the network's stat_test.p_value_threshold: ignored (as the deployed node) unless the operator chose
            "p_value_threshold": "honoured" if settings.HONOUR_P_VALUE_THRESHOLD else "ignored",
        }

    return versions


def check_batch_fields(batch: ProofBatch) -> None:
    """422 for a ProofBatch without nonces, or with a ``block_hash`` or ``public_key`` above ``POC_MAX_ID_CHARS``."""
    errors = []
    if not batch.nonces:
        errors.append({"loc": ["body", "nonces"], "msg": "a batch to validate needs nonces", "type": "too_short"})
    for name in ("block_hash", "public_key"):
        if len(getattr(batch, name)) > settings.MAX_ID_CHARS:
            msg = f"{name} has at most {settings.MAX_ID_CHARS} characters (POC_MAX_ID_CHARS)"
            errors.append({"loc": ["body", name], "msg": msg, "type": "string_too_long"})
    if errors:
        raise ApiError(422, errors)


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
        check_batch_fields(batch)
        if len(batch.nonces) > settings.MAX_VALIDATE_NONCES:
            raise ApiError(
                413,
                f"a batch to validate holds at most {settings.MAX_VALIDATE_NONCES} nonces "
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
        if len(manager.valid_nonces) - since <= settings.STATUS_INLINE_NONCES:
            return manager.status(since)
        # a long list is built and serialized off the event loop, which keeps serving meanwhile
        body = await asyncio.to_thread(lambda: json.dumps(manager.status(since)).encode())
        return Response(content=body, media_type="application/json")

    router.add_api_route("/status", route(status), methods=["GET"])
    return router


def make_v2_router() -> APIRouter:
    """Return the network's v2 ``/api/v1/pow`` router; it finds its :class:`~.v2.ArtifactNode` at
    ``app.state.poc_manager``."""
    router = APIRouter(prefix=PREFIX, tags=["poc"])

    def node_of(request: Request) -> ArtifactNode:
        node = manager_of(request)
        if not isinstance(node, ArtifactNode):
            raise ApiError(503, "this server runs the distance scheme's API (POC_API=distance)")
        return node

    async def init_generate(request: Request) -> dict:
        """Start mining this node's nonces; answers at once."""
        body = await parse(request, InitGenerateRequest)
        return await node_of(request).init_generate(body)

    async def generate(request: Request):
        """Compute the artifacts of ``nonces``, or validate ``validation.artifacts``; queued unless ``wait``."""
        body = await parse(request, GenerateRequest)
        node = node_of(request)
        if not body.wait:
            return node.enqueue(body)
        content = await unless_disconnected(request, node.generate_now(body))
        return Response(content=content, media_type="application/json")

    async def job(request: Request):
        """A job's state, and its result once completed."""
        request_id = request.path_params["request_id"]
        content = node_of(request).job(request_id)
        if content is None:
            raise ApiError(404, f"request {request_id} not found (unknown, or evicted from the bounded result store)")
        return Response(content=content, media_type="application/json")

    async def status(request: Request) -> dict:
        """Mining state, configuration and rate (plus the last error, the queue and the callbacks)."""
        return node_of(request).status()

    async def stop(request: Request) -> dict:
        """Stop mining; cancel the running job and clear the queue."""
        return await node_of(request).stop()

    router.add_api_route(
        "/init/generate", route(init_generate), methods=["POST"], openapi_extra=body_doc(InitGenerateRequest)
    )
    router.add_api_route("/generate", route(generate), methods=["POST"], openapi_extra=body_doc(GenerateRequest))
    router.add_api_route("/generate/{request_id}", route(job), methods=["GET"])
    router.add_api_route("/status", route(status), methods=["GET"])
    router.add_api_route("/stop", route(stop), methods=["POST"])
    return router
