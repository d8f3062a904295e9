"""The network API's round and its mining: this node's nonces, batch after batch, until stopped.

Node ``node_id`` of ``node_count`` in group ``group_id`` of ``n_groups`` mines
the nonces ``node_id + group_id * node_count + x * n_groups * node_count`` for
``x = 0, 1, 2, ...`` (SPEC-ARTIFACTS §7), in batches of the round's batch
size, below 2**32. Each batch's artifacts go to a sink (the node's
:class:`~poc_kernels.node.callbacks.ArtifactBuffer`).
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable
from typing import Any, Callable, Optional

from ..constants import MAX_NONCE
from . import metrics

logger = logging.getLogger("poc_kernels.node")

__all__ = ["Miner", "mining_nonces"]


def mining_nonces(cfg: Any, x: int) -> list:
    """The batch of round ``cfg``'s nonces that starts at step ``x`` (SPEC-ARTIFACTS §7); empty once exhausted."""
    offset = cfg.node_id + cfg.group_id * cfg.node_count
    step = cfg.n_groups * cfg.node_count
    nonces = [offset + (x + i) * step for i in range(cfg.batch())]
    return [n for n in nonces if n <= MAX_NONCE]


class Miner:
    """Mines one round at a time.

    ``artifacts(cfg, nonces)`` computes a batch (``[{nonce, vector_b64}]``,
    nonces without an artifact left out); ``sink(artifacts)`` takes them;
    ``on_error(exc)`` hears of an engine failure, which stops mining and is
    kept in :attr:`error`.
    """

    def __init__(
        self,
        artifacts: Callable[[Any, list], Awaitable[list]],
        *,
        sink: Callable[[list], None],
        on_error: Optional[Callable[[BaseException], None]] = None,
    ) -> None:
        self._artifacts = artifacts
        self._sink = sink
        self._on_error = on_error
        self.config: Optional[Any] = None
        self.total_processed = 0
        self.total_artifacts = 0
        self.error: Optional[str] = None
        self._started: Optional[float] = None
        self._task: Optional[asyncio.Task] = None

    @property
    def mining(self) -> bool:
        return self._task is not None and not self._task.done()

    def start(self, cfg: Any) -> None:
        """Mine round ``cfg`` (an ``InitGenerateRequest``) in the background, its counters from zero."""
        if self.mining:
            raise RuntimeError("start() while mining: stop() first")
        self.config = cfg
        self.total_processed = 0
        self.total_artifacts = 0
        self.error = None
        self._started = time.monotonic()
        self._task = asyncio.get_running_loop().create_task(self._mine(cfg))

    async def stop(self) -> None:
        """Stop mining (the batch in flight is dropped); the round's figures stay until the next start."""
        task, self._task = self._task, None
        if task is not None and not task.done():
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)

    async def _mine(self, cfg: Any) -> None:
        x = 0
        try:
            while True:
                nonces = mining_nonces(cfg, x)
                if not nonces:
                    self.error = "this node's nonces are exhausted (every nonce below 2**32 was computed)"
                    return
                began = time.monotonic()
                arts = await self._artifacts(cfg, nonces)
                metrics.ENGINE_SECONDS.labels(kind="mining").observe(time.monotonic() - began)
                metrics.NONCES.inc(len(nonces))
                x += cfg.batch()
                self.total_processed += len(nonces)
                self.total_artifacts += len(arts)
                self._sink(arts)
        except asyncio.CancelledError:
            raise
        except Exception as exc:  # the engine failed: report it, stop mining
            logger.exception("PoC mining stopped")
            self.error = f"{type(exc).__name__}: {exc}"
            if self._on_error is not None:
                self._on_error(exc)

    def rate(self) -> float:
        """Nonces per second of the round being mined (0 when not mining)."""
        if not self.mining or self._started is None:
            return 0.0
        elapsed = time.monotonic() - self._started
        return self.total_processed / elapsed if elapsed > 0 else 0.0

    def status(self) -> dict:
        """``status``, ``config`` and ``stats`` of the deployed node's ``/status``."""
        cfg = self.config
        if not self.mining or cfg is None:
            return {"status": "IDLE", "config": None, "stats": None}
        return {
            "status": "GENERATING",
            "config": {
                "block_hash": cfg.block_hash,
                "block_height": cfg.block_height,
                "public_key": cfg.public_key,
                "node_id": cfg.node_id,
                "node_count": cfg.node_count,
                "group_id": cfg.group_id,
                "n_groups": cfg.n_groups,
                "seq_len": cfg.params.seq_len,
                "k_dim": cfg.params.k_dim,
            },
            "stats": {
                "total_processed": self.total_processed,
                "nonces_per_second": self.rate(),
                "total_artifacts": self.total_artifacts,
            },
        }
