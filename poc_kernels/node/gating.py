"""Inference gating: while the node mines, the routes of vLLM's server that run the model answer 503.

Gated by what a route does, not by its prefix (:func:`runs_inference`). The
middleware asks the node's manager (``app.state.poc_manager``) for
``inference_pause_reason()``: a reason while the node is GENERATING, None
otherwise. Validation runs beside production traffic (layer transforms run
inside the forward on PoC rows only), so it never gates.
"""

from __future__ import annotations

from fastapi.responses import JSONResponse

from . import settings
from ._http import PREFIX

__all__ = ["NON_INFERENCE_POSTS", "GatingMiddleware", "runs_inference"]

#: Routes that take a body but run no inference: open while GENERATING.
NON_INFERENCE_POSTS = ("/tokenize", "/detokenize", "/v1/tokenize", "/v1/detokenize")


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
                    status_code=503, content={"detail": reason}, headers={"Retry-After": str(settings.RETRY_AFTER_S)}
                )
                await answer(scope, receive, send)
                return
        await self.app(scope, receive, send)
