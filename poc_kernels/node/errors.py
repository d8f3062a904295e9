"""The node's errors, each with the HTTP status that both APIs answer it with.

They carry no web framework: the round logic raises them, and
:func:`poc_kernels.node._http.route` turns them into ``{"detail": ...}``
answers.

| error | status |
|---|---|
| :class:`TransitionError` (and :class:`ValidationCancelled`, :class:`JobCancelled`) | 409 |
| :class:`ParamsMismatch` | 409, with ``{"error": "params mismatch", ...}`` |
| :class:`ApiTooLarge` | 413 |
| :class:`QueueFull` | 429 |
| any other ``ValueError`` | 400 |
"""

from __future__ import annotations

__all__ = ["ApiTooLarge", "JobCancelled", "ParamsMismatch", "QueueFull", "TransitionError", "ValidationCancelled"]


class TransitionError(RuntimeError):
    """A request that the round's current state does not allow (HTTP 409)."""


class ValidationCancelled(TransitionError):
    """A validation stopped before its verdict: the round ended (``/stop``, a new ``/init``) or the node shut down."""


class JobCancelled(TransitionError):
    """A job that ``/stop`` or shutdown ended before its result (HTTP 409 for a waiting caller)."""


class ParamsMismatch(Exception):
    """``params`` that this node does not serve (HTTP 409 ``{"error": "params mismatch", ...}``)."""

    def __init__(self, requested: dict, deployed: dict, fields: list) -> None:
        super().__init__(f"params mismatch: {', '.join(fields)}")
        self.detail = {"error": "params mismatch", "requested": requested, "deployed": deployed, "fields": fields}


class ApiTooLarge(ValueError):
    """A request above a documented size bound (HTTP 413)."""


class QueueFull(RuntimeError):
    """The /generate queue is full (HTTP 429): retry later."""
