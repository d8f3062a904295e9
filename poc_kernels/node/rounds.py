"""What the rounds of both APIs really share: the round's identity, the batch budget, engine-failure reports.

- the identity fields of a round, with their bounds: :data:`BlockHash`,
  :data:`BlockHeight`, :data:`PublicKey`, :data:`NodeId`, :data:`NodeCount`
  (pydantic field types), and :func:`check_node_id`;
- the callback URL: :data:`CallbackUrl` and its host allow-list,
  :func:`check_callback_url`;
- :func:`check_batch_budget`: a batch's tokens within ``POC_MAX_BATCH_TOKENS``,
  so that no round can exhaust the node's memory;
- :class:`EngineFailures`: a dead engine reported to ``on_engine_dead`` (the
  standalone server then exits non-zero, so that a supervisor restarts it).
"""

from __future__ import annotations

from typing import Annotated, Any, Callable, Optional

from pydantic import AnyHttpUrl, Field, UrlConstraints

from . import settings

__all__ = [
    "BlockHash",
    "BlockHeight",
    "CallbackUrl",
    "EngineFailures",
    "NodeCount",
    "NodeId",
    "PublicKey",
    "check_batch_budget",
    "check_callback_url",
    "check_node_id",
]

# lengths bounded, so that the result store and /status are bounded in bytes, not only in jobs
BlockHash = Annotated[str, Field(min_length=1, max_length=settings.MAX_ID_CHARS)]
BlockHeight = Annotated[int, Field(ge=0, le=settings.INT64_MAX)]
PublicKey = Annotated[str, Field(min_length=1, max_length=settings.MAX_ID_CHARS)]
NodeId = Annotated[int, Field(ge=0, lt=settings.NONCE_SPACE)]
NodeCount = Annotated[int, Field(ge=1, le=settings.NONCE_SPACE)]
#: a callback URL: http or https, at most ``POC_MAX_URL_CHARS`` (its host is checked by ``check_callback_url``)
CallbackUrl = Annotated[
    AnyHttpUrl, UrlConstraints(max_length=settings.MAX_URL_CHARS, allowed_schemes=["http", "https"])
]


def check_node_id(node_id: int, node_count: int) -> None:
    """Raise ValueError unless ``node_id < node_count``."""
    if node_id >= node_count:
        raise ValueError(f"node_id must be < node_count = {node_count}, got {node_id}")


def check_callback_url(url: Any) -> None:
    """Raise ValueError (400) when ``url``'s host is outside ``POC_CALLBACK_HOSTS`` (when that is set)."""
    if url is None or not settings.CALLBACK_HOSTS:
        return
    allowed = {h.strip().lower() for h in settings.CALLBACK_HOSTS.split(",") if h.strip()}
    host = (getattr(url, "host", None) or "").lower()
    if host not in allowed:
        raise ValueError(f"url: the callback host {host!r} is not among this node's POC_CALLBACK_HOSTS")


def check_batch_budget(batch_size: int, seq_len: int, what: str = "batch_size x seq_len") -> int:
    """Return a batch's tokens; ValueError (400) when they exceed ``POC_MAX_BATCH_TOKENS``."""
    tokens = batch_size * seq_len
    if tokens > settings.MAX_BATCH_TOKENS:
        raise ValueError(
            f"{what} = {tokens} tokens exceeds this node's budget of {settings.MAX_BATCH_TOKENS} "
            "tokens per batch (POC_MAX_BATCH_TOKENS)"
        )
    return tokens


class EngineFailures:
    """Reports a dead engine to :attr:`on_engine_dead`; errors of a living engine are the round's own business."""

    #: called with the error when the engine is dead (the standalone server exits non-zero)
    on_engine_dead: Optional[Callable[[BaseException], Any]] = None

    def engine_failed(self, exc: BaseException) -> None:
        """Report ``exc`` to :attr:`on_engine_dead` when it says that the engine is dead."""
        if type(exc).__name__ == "EngineDeadError" and self.on_engine_dead is not None:
            self.on_engine_dead(exc)
