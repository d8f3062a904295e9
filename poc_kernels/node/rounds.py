"""What the rounds of both APIs really share: the round's identity, the batch budget, engine-failure reports.

- the identity fields of a round, with their bounds: :data:`BlockHash`,
  :data:`BlockHeight`, :data:`PublicKey`, :data:`NodeId`, :data:`NodeCount`
  (pydantic field types), and :func:`check_node_id`;
- :func:`check_batch_budget`: a batch's tokens within ``POC_MAX_BATCH_TOKENS``,
  so that no round can exhaust the node's memory;
- :class:`EngineFailures`: a dead engine reported to ``on_engine_dead`` (the
  standalone server then exits non-zero, so that a supervisor restarts it).
"""

from __future__ import annotations

from typing import Annotated, Any, Callable, Optional

from pydantic import Field

from . import settings

__all__ = [
    "BlockHash",
    "BlockHeight",
    "EngineFailures",
    "NodeCount",
    "NodeId",
    "PublicKey",
    "check_batch_budget",
    "check_node_id",
]

BlockHash = Annotated[str, Field(min_length=1)]
BlockHeight = Annotated[int, Field(ge=0, le=settings.INT64_MAX)]
PublicKey = Annotated[str, Field(min_length=1)]
NodeId = Annotated[int, Field(ge=0, lt=settings.NONCE_SPACE)]
NodeCount = Annotated[int, Field(ge=1, le=settings.NONCE_SPACE)]


def check_node_id(node_id: int, node_count: int) -> None:
    """Raise ValueError unless ``node_id < node_count``."""
    if node_id >= node_count:
        raise ValueError(f"node_id must be < node_count = {node_count}, got {node_id}")


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
