"""What both PoC HTTP APIs share: the API key, error answers, bounded strict body parsing, cancellable work."""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import json
import logging
import os
from collections.abc import Awaitable
from typing import Any, Callable, Optional

from fastapi import Request
from fastapi.responses import JSONResponse
from pydantic import BaseModel, ValidationError

from . import settings
from .errors import ApiTooLarge, ParamsMismatch, QueueFull, TransitionError

logger = logging.getLogger("poc_kernels.node")

PREFIX = "/api/v1/pow"


class ApiError(Exception):
    """An error answer of the PoC API: ``{"detail": ...}`` with ``status`` (and ``headers``)."""

    def __init__(self, status: int, detail: Any, headers: Optional[dict] = None) -> None:
        super().__init__(detail)
        self.status = status
        self.detail = detail
        self.headers = headers


def error(status: int, detail: Any, headers: Optional[dict] = None) -> JSONResponse:
    return JSONResponse(status_code=status, content={"detail": detail}, headers=headers)


def api_keys(app: Any) -> list:
    """The keys that open the PoC routes of ``app``; none: the routes are open.

    ``POC_API_KEY`` when set; else the standalone node's ``--api-key``
    (``app.state.poc_api_keys``); else vLLM's ``--api-key`` (a list; vLLM
    keeps its arguments in ``app.state.args``) or ``VLLM_API_KEY``, which is
    how vLLM itself chooses the key of its OpenAI routes.
    """
    if settings.API_KEY:
        return [settings.API_KEY]
    state = getattr(app, "state", None)
    keys = getattr(state, "poc_api_keys", None)
    if keys:
        return list(keys)
    given = getattr(getattr(state, "args", None), "api_key", None)
    if isinstance(given, str):
        given = [given]
    return [k for k in (given or [os.environ.get("VLLM_API_KEY")]) if k]


def warn_if_open(app: Any) -> None:
    """Log one warning when the PoC routes of ``app`` take no key."""
    if not api_keys(app):
        logger.warning(
            "poc_kernels: no API key is set (POC_API_KEY, --api-key or VLLM_API_KEY): the PoC control routes "
            "under %s are open to anyone who can reach this port",
            PREFIX,
        )


def _digest(text: str) -> bytes:
    return hashlib.sha256(text.encode("utf-8", "surrogatepass")).digest()


def check_key(request: Request) -> None:
    """401 unless the request carries one of the PoC keys as ``Authorization: Bearer KEY`` (compared in
    constant time: the digests of equal length, every key compared)."""
    keys = api_keys(request.app)
    if not keys:
        return
    scheme, _, token = request.headers.get("authorization", "").partition(" ")
    given = _digest(token.strip())
    match = False
    for key in keys:
        match |= hmac.compare_digest(given, _digest(key))
    if scheme.lower() != "bearer" or not match:
        raise ApiError(
            401,
            "this node's PoC routes need its API key: send `Authorization: Bearer <key>`",
            headers={"WWW-Authenticate": "Bearer"},
        )


def manager_of(request: Request) -> Any:
    manager = getattr(request.app.state, "poc_manager", None)
    if manager is None:
        disabled = getattr(request.app.state, "poc_disabled", None)
        if disabled:
            raise ApiError(503, f"PoC is disabled on this server: {disabled}")
        raise ApiError(503, "the PoC manager is not ready (the engine is starting, or PoC is disabled on this server)")
    return manager


class _DuplicateKey(ValueError):
    pass


def _no_duplicates(pairs: list) -> dict:
    seen: set = set()
    for key, _ in pairs:
        if key in seen:
            raise _DuplicateKey(key)
        seen.add(key)
    return dict(pairs)


def _too_large(size: Any) -> ApiError:
    return ApiError(
        413,
        f"the request body has {size} bytes; this node takes at most {settings.MAX_BODY_BYTES} (POC_MAX_BODY_BYTES)",
    )


async def read_body(request: Request) -> bytes:
    """The request's body, at most ``POC_MAX_BODY_BYTES``: 413 from its Content-Length, or as soon as the stream
    passes the cap (the rest is never read)."""
    cap = settings.MAX_BODY_BYTES
    length = request.headers.get("content-length", "")
    if length.isdigit() and int(length) > cap:
        raise _too_large(int(length))
    chunks, size = [], 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > cap:
            raise _too_large(f"more than {cap}")
        chunks.append(chunk)
    return b"".join(chunks)


def _too_deep(value: Any, limit: int) -> bool:
    """Whether arrays and objects nest deeper than ``limit`` in ``value`` (no recursion)."""
    stack = [(value, 1)]
    while stack:
        item, depth = stack.pop()
        children = item.values() if isinstance(item, dict) else item
        for child in children:
            if isinstance(child, (dict, list)):
                if depth + 1 > limit:
                    return True
                stack.append((child, depth + 1))
    return False


def _body_error(msg: str, kind: str, loc: tuple = ()) -> ApiError:
    return ApiError(422, [{"loc": ["body", *loc], "msg": msg, "type": kind}])


def _validate(body: bytes, model: type[BaseModel]) -> Any:
    try:
        value = json.loads(body, object_pairs_hook=_no_duplicates)
    except _DuplicateKey as exc:
        raise _body_error("duplicate key", "duplicate_key", (str(exc),)) from None
    except RecursionError:
        raise _body_error(f"JSON nested deeper than {settings.MAX_JSON_DEPTH} levels", "json_depth") from None
    except ValueError:
        value = None  # not JSON: pydantic names the error below
    if isinstance(value, (dict, list)) and _too_deep(value, settings.MAX_JSON_DEPTH):
        raise _body_error(f"JSON nested deeper than {settings.MAX_JSON_DEPTH} levels", "json_depth")
    try:
        return model.model_validate_json(body)
    except ValidationError as exc:
        errors = [
            {"loc": ["body", *err["loc"]], "msg": err["msg"], "type": err["type"]}
            for err in exc.errors(include_url=False, include_input=False)
        ]
        raise ApiError(422, errors) from None
    except (RecursionError, ValueError, TypeError) as exc:  # a parse failure of any kind is the body's
        raise _body_error(f"the body cannot be parsed: {type(exc).__name__}", "json_invalid") from None


async def parse(request: Request, model: type[BaseModel]) -> Any:
    """Validate the JSON body against ``model``; 422 with FastAPI's error list when it does not fit.

    The body is bounded before it is parsed (:func:`read_body`, 413), and so
    is its nesting (``MAX_JSON_DEPTH``, 422). A key given twice in one JSON
    object is an error too (JSON parsers disagree on which one wins). A large
    body is parsed in a thread, so that the event loop keeps serving.
    """
    body = await read_body(request)
    if len(body) > settings.PARSE_INLINE_BYTES:
        return await asyncio.to_thread(_validate, body, model)
    return _validate(body, model)


def route(handler: Callable) -> Callable:
    """Answer the handler's result, or its error as ``{"detail": ...}``.

    The PoC routes answer their errors themselves, so that their status codes
    and JSON shape are the same in the standalone server and inside vLLM's
    server (which installs its own exception handlers for the OpenAI routes).
    """

    async def wrapped(request: Request):
        try:
            check_key(request)
            return await handler(request)
        except ApiError as exc:
            return error(exc.status, exc.detail, exc.headers)
        except ParamsMismatch as exc:
            return error(409, exc.detail)
        except ApiTooLarge as exc:
            return error(413, str(exc))
        except QueueFull as exc:
            return error(429, str(exc))
        except TransitionError as exc:
            return error(409, str(exc))
        except ValueError as exc:
            return error(400, str(exc))
        except Exception as exc:
            if _client_error(exc):  # vLLM's request validation errors (VLLMValidationError): the caller's fault
                return error(400, str(exc))  # the engine failed: not the client's fault, but not a crash either
            logger.exception("PoC request %s failed", request.url.path)
            return error(503, f"the engine failed: {type(exc).__name__}: {exc}")

    wrapped.__name__ = handler.__name__
    wrapped.__doc__ = handler.__doc__
    return wrapped


def _client_error(exc: BaseException) -> bool:
    """Whether ``exc`` is one of vLLM's errors of the request (``VLLMClientError``, e.g. ``VLLMValidationError``),
    known by name: the node does not import vLLM."""
    return any(c.__name__ in ("VLLMClientError", "VLLMValidationError") for c in type(exc).__mro__)


def body_doc(model: type[BaseModel]) -> dict:
    return {"requestBody": {"required": True, "content": {"application/json": {"schema": model.model_json_schema()}}}}


async def unless_disconnected(request: Request, work: Awaitable) -> Any:
    """Await ``work``; cancel it and answer 499 when the client leaves first (no computing for nobody), 503 when
    the server cancels the request at shutdown."""
    task = asyncio.ensure_future(work)
    try:
        while not task.done():
            await asyncio.wait({task}, timeout=settings.DISCONNECT_POLL_S)
            if not task.done() and await request.is_disconnected():
                task.cancel()
                await asyncio.gather(task, return_exceptions=True)
                raise ApiError(499, "the client closed the connection; its work was cancelled")
    except asyncio.CancelledError:
        # the server is shutting down: uvicorn cancels what still runs after its grace period. The work is
        # cancelled, and the client gets a 503 it can retry elsewhere instead of uvicorn's 500 and traceback
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
        current = asyncio.current_task()
        if current is not None:
            current.uncancel()
        raise ApiError(503, "the node is shutting down; this request's work was cancelled") from None
    return task.result()
