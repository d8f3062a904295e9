"""What both PoC HTTP APIs share: error answers, strict body parsing, cancellable work."""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import Awaitable
from typing import Any, Callable

from fastapi import Request
from fastapi.responses import JSONResponse
from pydantic import BaseModel, ValidationError

from . import settings
from .errors import ApiTooLarge, ParamsMismatch, QueueFull, TransitionError

logger = logging.getLogger("poc_kernels.node")

PREFIX = "/api/v1/pow"


class ApiError(Exception):
    """An error answer of the PoC API: ``{"detail": ...}`` with ``status``."""

    def __init__(self, status: int, detail: Any) -> None:
        super().__init__(detail)
        self.status = status
        self.detail = detail


def error(status: int, detail: Any) -> JSONResponse:
    return JSONResponse(status_code=status, content={"detail": detail})


def manager_of(request: Request) -> Any:
    manager = getattr(request.app.state, "poc_manager", None)
    if manager is None:
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


async def parse(request: Request, model: type[BaseModel]) -> Any:
    """Validate the JSON body against ``model``; 422 with FastAPI's error list when it does not fit.

    A key given twice in one JSON object is an error too (JSON parsers disagree on which one wins).
    """
    body = await request.body()
    try:
        json.loads(body, object_pairs_hook=_no_duplicates)
    except _DuplicateKey as exc:
        raise ApiError(422, [{"loc": ["body", str(exc)], "msg": "duplicate key", "type": "duplicate_key"}]) from None
    except ValueError:
        pass  # not JSON: pydantic names the error below
    try:
        return model.model_validate_json(body)
    except ValidationError as exc:
        errors = [
            {"loc": ["body", *err["loc"]], "msg": err["msg"], "type": err["type"]}
            for err in exc.errors(include_url=False, include_input=False)
        ]
        raise ApiError(422, errors) from None


def route(handler: Callable) -> Callable:
    """Answer the handler's result, or its error as ``{"detail": ...}``.

    The PoC routes answer their errors themselves, so that their status codes
    and JSON shape are the same in the standalone server and inside vLLM's
    server (which installs its own exception handlers for the OpenAI routes).
    """

    async def wrapped(request: Request):
        try:
            return await handler(request)
        except ApiError as exc:
            return error(exc.status, exc.detail)
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
        except Exception as exc:  # the engine failed: not the client's fault, but not a crash either
            logger.exception("PoC request %s failed", request.url.path)
            return error(503, f"the engine failed: {type(exc).__name__}: {exc}")

    wrapped.__name__ = handler.__name__
    wrapped.__doc__ = handler.__doc__
    return wrapped


def body_doc(model: type[BaseModel]) -> dict:
    return {"requestBody": {"required": True, "content": {"application/json": {"schema": model.model_json_schema()}}}}


async def unless_disconnected(request: Request, work: Awaitable) -> Any:
    """Await ``work``; cancel it and answer 499 when the client leaves first (no computing for nobody)."""
    task = asyncio.ensure_future(work)
    try:
        while not task.done():
            await asyncio.wait({task}, timeout=settings.DISCONNECT_POLL_S)
            if not task.done() and await request.is_disconnected():
                task.cancel()
                await asyncio.gather(task, return_exceptions=True)
                raise ApiError(499, "the client closed the connection; its work was cancelled")
    except asyncio.CancelledError:  # the server is shutting down
        task.cancel()
        raise
    return task.result()
