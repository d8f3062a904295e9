"""Inference gating: while the node mines, the routes of vLLM's server that run the model answer 503.

Gated by what a route does, not by its prefix (:func:`runs_inference`). The
middleware asks the node's manager (``app.state.poc_manager``) for
``inference_pause_reason()``: a reason while the node is GENERATING, None
otherwise. Validation runs beside production traffic (layer transforms run
inside the forward on PoC rows only), so it never gates.
"""

from __future__ import annotations

import re

from fastapi.responses import JSONResponse

from . import settings
from ._http import PREFIX

__all__ = ["INFERENCE_POSTS", "NON_INFERENCE_POSTS", "GatingMiddleware", "runs_inference"]

#: The routes of vLLM's server (0.32) that run the model: closed while GENERATING.
INFERENCE_POSTS = (
    "/v1/chat/completions",
    "/v1/chat/completions/batch",
    "/v1/completions",
    "/v1/responses",
    "/v1/messages",
    "/v1/systemone",
    "/invocations",
    "/generative_scoring",
    "/inference/v1/generate",
    "/v1/audio/transcriptions",
    "/v1/audio/translations",
    "/pooling",
    "/classify",
    "/v1/embeddings",
    "/v2/embed",
    "/score",
    "/v1/score",
    "/rerank",
    "/v1/rerank",
    "/v2/rerank",
)

#: Routes that take a body but run no model (health, tokenizing, rendering, control): open while GENERATING.
NON_INFERENCE_POSTS = (
    "/tokenize",
    "/detokenize",
    "/v1/tokenize",
    "/v1/detokenize",
    "/ping",
    "/v1/messages/count_tokens",
    "/v1/responses/{response_id}/cancel",
    "/v1/chat/completions/render",
    "/v1/chat/completions/derender",
    "/v1/completions/render",
    "/v1/completions/derender",
    "/v1/messages/render",
    "/v1/responses/render",
    "/inference/v1/abort_requests",
    "/abort_requests",
    "/pause",
    "/resume",
    "/sleep",
    "/wake_up",
    "/release_kv_cache_memory",
    "/collective_rpc",
    "/reset_prefix_cache",
    "/reset_mm_cache",
    "/reset_encoder_cache",
    "/start_profile",
    "/stop_profile",
    "/scale_elastic_ep",
    "/is_scaling_elastic_ep",
    "/fault_tolerance/apply",
    "/v1/load_lora_adapter",
    "/v1/unload_lora_adapter",
    "/adapters",
    "/adapters/{adapter_name}",
    "/init_weight_transfer_engine",
    "/shutdown_weight_transfer_engine",
    "/start_weight_update",
    "/start_draft_weight_update",
    "/update_weights",
    "/finish_weight_update",
    "/update_weight_version",
    "/weight_checker",
)


def _pattern(paths: tuple) -> re.Pattern:
    return re.compile("|".join(re.sub(r"\\\{[^}]*\\\}", "[^/]+", re.escape(p)) for p in paths))


_OPEN = _pattern(NON_INFERENCE_POSTS)


def runs_inference(method: str, path: str) -> bool:
    """Whether a request to vLLM's server runs the model: a POST/PUT/PATCH outside the PoC API and outside
    :data:`NON_INFERENCE_POSTS`.

    Gated by what a route does, not by its prefix: the routes of
    :data:`INFERENCE_POSTS` run the model, and so, until classified, does any
    route a later vLLM adds (tests/test_node_http.py lists every POST route
    of the installed vLLM and fails on one in neither list). ``GET`` routes
    (``/v1/models``, health, metrics, the version) stay open: load balancers
    poll them.
    """
    if method not in ("POST", "PUT", "PATCH"):
        return False
    if path == PREFIX or path.startswith(PREFIX + "/"):
        return False
    return _OPEN.fullmatch(path.rstrip("/") or "/") is None


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
                    status_code=503, content={"detail": reason}, headers={"Retry-After": str(settings.RETRY_AFTER_S)}
                )
                await answer(scope, receive, send)
                return
        await self.app(scope, receive, send)
