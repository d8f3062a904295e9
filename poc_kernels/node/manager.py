"""The seeds' API (distance scheme): the round manager of a node, with its configuration, generation and validation.

States: ``IDLE`` (a round is configured, nothing runs), ``GENERATING`` (a
background loop runs batches of this node's nonces and keeps the valid ones),
``VALIDATING`` (submitted proof batches are recomputed and judged; ordinary
inference runs beside it) and ``STOPPED`` (the round is over; a new one can be
set up). Illegal transitions raise :class:`~.errors.TransitionError`.

Node ``node_id`` of ``node_count`` takes the nonces ``node_id + k * node_count``
for ``k = 0, 1, 2, ...`` in batches of ``batch_size``. Valid batches (and
validation verdicts) are POSTed to ``{callback_url}/generated`` (and
``/validated``) by the :class:`~.callbacks.CallbackSender` that both APIs
share. The manager reaches the engine only through a runner's public methods
(``run``, ``set_layer_hooks``, ``clear_layer_hooks``).
"""

from __future__ import annotations

import asyncio
import logging
import math
import time
from enum import Enum
from typing import Any, Optional

from pydantic import BaseModel, ConfigDict, Field, model_validator

from ..validation import ProofBatch, ValidatedBatch
from . import metrics, settings
from .callbacks import CallbackSender, join_callback, log_event
from .errors import TransitionError, ValidationCancelled
from .rounds import (
    BlockHash,
    BlockHeight,
    CallbackUrl,
    EngineFailures,
    NodeCount,
    NodeId,
    PublicKey,
    check_batch_budget,
    check_callback_url,
    check_node_id,
)

logger = logging.getLogger("poc_kernels.node")

__all__ = ["PoCManager", "PoCState", "RoundConfig"]


class PoCState(str, Enum):
    IDLE = "IDLE"
    GENERATING = "GENERATING"
    VALIDATING = "VALIDATING"
    STOPPED = "STOPPED"


class RoundConfig(BaseModel):
    """The body of the ``/init`` routes, with the original PoC API's field names."""

    model_config = ConfigDict(strict=True, extra="forbid", frozen=True)

    block_hash: BlockHash
    block_height: BlockHeight
    public_key: PublicKey
    r_target: float = Field(gt=0.0, le=2.0, allow_inf_nan=False)
    fraud_threshold: float = Field(default=0.01, gt=0.0, lt=1.0, allow_inf_nan=False)
    node_id: Optional[NodeId] = None
    node_count: Optional[NodeCount] = None
    batch_size: int = Field(default=32, ge=1, le=4096)
    seq_len: int = Field(default=256, ge=1)
    callback_url: Optional[CallbackUrl] = None
    use_sign_flips: bool = True
    use_layer_hooks: bool = False
    #: SPEC §10, Phase 6.1 (off by default): the seeded residual projections around the model
    random_projection: bool = False

    @model_validator(mode="after")
    def _check_nodes(self):
        if (self.node_id is None) != (self.node_count is None):
            raise ValueError("node_id and node_count go together: give both or neither")
        if self.node_id is not None:
            check_node_id(self.node_id, self.node_count)
        return self

    def callback(self, path: str) -> Optional[str]:
        """The callback URL for ``path`` (``/generated`` or ``/validated``): joined to the URL's path, before its
        query and fragment, which are kept (tokens live there)."""
        return join_callback(self.callback_url, path)


class PoCManager(EngineFailures):
    """One node's PoC rounds on an :class:`~poc_kernels.vllm.AsyncPoCRunner`."""

    def __init__(self, runner: Any, *, max_model_len: Optional[int] = None, callbacks: Optional[CallbackSender] = None):
        self.runner = runner
        self.max_model_len = max_model_len
        self.callbacks = callbacks or CallbackSender()
        self.state = PoCState.STOPPED
        self.config: Optional[RoundConfig] = None
        self._lock = asyncio.Lock()
        self._task: Optional[asyncio.Task] = None
        self._hooks_installed = False
        self._round = 0  # bumped when a round ends: a validation of an older round is never counted
        self._validations: set = set()  # the running validation tasks
        self._reset_round()
        metrics.watch(self)

    def metrics_snapshot(self) -> dict:
        """What the gauges of :mod:`.metrics` show."""
        elapsed = time.monotonic() - self._started if self._started is not None else 0.0
        rate = (self.total_checked - self._checked_at_start) / elapsed if elapsed > 0 else 0.0
        running = sum(1 for t in self._validations if not t.done())
        return {"rate": rate, "buffered": 0, "queued": 0, "running": running, "state": self.state.value}

    def inference_pause_reason(self) -> Optional[str]:
        """Why ordinary inference must wait now, or None when it may run.

        It waits while the node is GENERATING. Layer transforms (``use_layer_hooks``)
        run inside the forward on PoC rows only, so they never pause inference.
        """
        if self.state is PoCState.GENERATING:
            return "PoC generation in progress: inference is paused until the node validates or stops"
        return None

    # ------------------------------------------------------------------ round set-up and transitions

    def _reset_round(self) -> None:
        self.valid_nonces: list = []
        self.valid_distances: list = []
        self.total_checked = 0
        self.total_valid = 0
        self.validated_batches = 0
        self.next_k = 0
        self._elapsed = 0.0
        self._started: Optional[float] = None
        self._checked_at_start = 0
        self.error: Optional[str] = None

    async def init_round(self, config: RoundConfig, then: Optional[PoCState] = None) -> dict:
        """Set up a new round (stopping the current one), then optionally start generating or validating.

        Set-up and start are one step under the manager's lock: the status
        returned describes this caller's round, even when other calls race it.
        Validations of the previous round still running are cancelled.
        """
        if not isinstance(config, RoundConfig):
            raise TypeError(f"config must be a RoundConfig, got {type(config).__name__}")
        if self.max_model_len is not None and config.seq_len + 1 > self.max_model_len:
            raise ValueError(
                f"seq_len = {config.seq_len} does not fit the engine's max_model_len = {self.max_model_len} "
                "(a PoC request needs seq_len + 1 positions)"
            )
        if config.use_layer_hooks and not getattr(self.runner, "layers_supported", False):
            raise ValueError("use_layer_hooks needs the in-graph layer transform, which this engine's workers lack")
        self._check_budget(config)
        check_callback_url(config.callback_url)
        if then is PoCState.GENERATING and config.node_id is None:
            raise ValueError("generating needs node_id and node_count")
        async with self._lock:
            await self._end_round()
            self.config = config
            self._reset_round()
            self.state = PoCState.IDLE
            await self._set_hooks(config.block_hash if config.use_layer_hooks else None)
            if then is PoCState.GENERATING:
                self._start_generating()
            elif then is PoCState.VALIDATING:
                self.state = PoCState.VALIDATING
            return self.status()

    def _check_budget(self, config: RoundConfig) -> None:
        """A batch's size must fit the node's budget (400 otherwise), so that no round can exhaust its memory."""
        tokens = check_batch_budget(config.batch_size, config.seq_len)
        if getattr(self.runner, "inputs", "engine") == "prompt_embeds":
            # this engine needs the embeddings from this process: they are held here, and in the engine
            hidden = int(getattr(self.runner, "hidden_size", 0))
            itemsize = getattr(getattr(self.runner, "dtype", None), "itemsize", 4)
            nbytes = tokens * hidden * itemsize
            if nbytes > settings.MAX_EMBED_BYTES:
                raise ValueError(
                    f"batch_size x seq_len x hidden = {nbytes / 2**20:.0f} MiB of prompt embeddings exceeds this "
                    f"node's budget of {settings.MAX_EMBED_BYTES / 2**20:.0f} MiB (POC_MAX_EMBED_BYTES); "
                    "start the engine without --enable-prompt-embeds, so that the workers write the inputs themselves"
                )

    async def start_generating(self) -> dict:
        async with self._lock:
            if self.config is None or self.state is PoCState.STOPPED:
                raise TransitionError("no round is set up: POST /init first")
            if self.state is PoCState.GENERATING:
                raise TransitionError("the node is already generating")
            if self.config.node_id is None:
                raise TransitionError("this round has no node_id/node_count: set it up with them to generate")
            self._start_generating()
            return self.status()

    def _start_generating(self) -> None:
        self.state = PoCState.GENERATING
        self.error = None
        self._started = time.monotonic()
        self._checked_at_start = self.total_checked
        log_event("round_start", self.config, batch_size=self.config.batch_size, checked=self.total_checked)
        self._task = asyncio.get_running_loop().create_task(self._generate())

    async def start_validating(self) -> dict:
        async with self._lock:
            if self.config is None or self.state is PoCState.STOPPED:
                raise TransitionError("no round is set up: POST /init first")
            if self.state is PoCState.VALIDATING:
                raise TransitionError("the node is already validating")
            await self._stop_generation()
            self.state = PoCState.VALIDATING
            return self.status()

    async def stop(self) -> dict:
        async with self._lock:
            if self.state is PoCState.STOPPED:
                raise TransitionError("no round is running")
            await self._end_round()
            self.state = PoCState.STOPPED
            log_event(
                "round_stop",
                self.config,
                checked=self.total_checked,
                valid=self.total_valid,
                validated_batches=self.validated_batches,
                error=self.error,
            )
            self.error = None  # a round's error ends with it
            return self.status()

    async def shutdown(self) -> None:
        """Stop everything (server shutdown); never raises for the state."""
        async with self._lock:
            await self._end_round()
            self.state = PoCState.STOPPED
        await self.callbacks.drain(timeout=settings.CALLBACK_DRAIN_S)

    async def _end_round(self) -> None:
        """Stop generating, cancel the round's validations, remove its layer transform; a new round id."""
        self._round += 1
        await self._stop_generation()
        await self._cancel_validations()
        await self._set_hooks(None)

    async def _cancel_validations(self) -> None:
        tasks = [t for t in self._validations if not t.done()]
        for t in tasks:
            t.cancel()
        if tasks:
            await asyncio.gather(*tasks, return_exceptions=True)

    async def _stop_generation(self) -> None:
        task, self._task = self._task, None
        if task is not None:
            task.cancel()
            try:
                await task
            except asyncio.CancelledError:
                pass
        if self._started is not None:
            self._elapsed += time.monotonic() - self._started
            self._started = None

    async def _set_hooks(self, block_hash: Optional[str]) -> None:
        if block_hash is None:
            if self._hooks_installed:
                await self.runner.clear_layer_hooks()
                self._hooks_installed = False
        else:
            await self.runner.set_layer_hooks(block_hash)
            self._hooks_installed = True

    # ------------------------------------------------------------------ generation

    def _next_nonces(self) -> list:
        """The next batch of this node's nonces; ``next_k`` moves past it only once it is computed."""
        cfg = self.config
        ks = range(self.next_k, self.next_k + cfg.batch_size)
        return [cfg.node_id + k * cfg.node_count for k in ks if cfg.node_id + k * cfg.node_count < 2**32]

    async def _generate(self) -> None:
        cfg = self.config
        try:
            while True:
                nonces = self._next_nonces()
                if not nonces:
                    # leave GENERATING (inference reopens), as after an engine failure
                    self.error = "this node's nonces are exhausted (every nonce below 2**32 was computed)"
                    self._leave_generating()
                    return
                began = time.monotonic()
                d = await self._distances(cfg, cfg.public_key, nonces)
                metrics.ENGINE_SECONDS.labels(kind="mining").observe(time.monotonic() - began)
                metrics.NONCES.inc(len(nonces))
                valid = [(n, x) for n, x in zip(nonces, d) if x < cfg.r_target]
                # a batch interrupted by /phase/validate or /stop is computed again when generation resumes
                self.next_k += cfg.batch_size
                self.total_checked += len(nonces)
                self.total_valid += len(valid)
                self.valid_nonces.extend(n for n, _ in valid)
                self.valid_distances.extend(x for _, x in valid)
                url = cfg.callback("/generated")
                if valid and url:
                    batch = ProofBatch(
                        public_key=cfg.public_key,
                        block_hash=cfg.block_hash,
                        block_height=cfg.block_height,
                        nonces=[n for n, _ in valid],
                        dist=[x for _, x in valid],
                        node_id=cfg.node_id,
                    )
                    payload = {**batch.model_dump(mode="json"), "r_target": cfg.r_target}
                    self.callbacks.send(url, payload, lane="mining")
        except asyncio.CancelledError:
            raise
        except Exception as exc:  # the engine failed: report it, stop generating
            logger.exception("PoC generation stopped")
            self.error = f"{type(exc).__name__}: {exc}"
            self._leave_generating()
            self.engine_failed(exc)

    def _leave_generating(self) -> None:
        if self._started is not None:
            self._elapsed += time.monotonic() - self._started
            self._started = None
        self._task = None
        self.state = PoCState.IDLE

    # ------------------------------------------------------------------ validation

    async def validate(self, batch: ProofBatch) -> ValidatedBatch:
        """Recompute the distances of ``batch`` and return the verdict (state VALIDATING only).

        Runs as its own task, which ``/stop``, a new ``/init`` or shutdown
        cancel (:class:`ValidationCancelled`, HTTP 409): a verdict always
        belongs to the round it was asked in, and is counted and called back
        only there.
        """
        if not isinstance(batch, ProofBatch):
            raise TypeError(f"batch must be a ProofBatch, got {type(batch).__name__}")
        if self.state is not PoCState.VALIDATING:
            raise TransitionError(f"validation needs the VALIDATING state, the node is {self.state.value}")
        cfg = self.config
        if batch.block_hash != cfg.block_hash:
            raise ValueError(f"block_hash {batch.block_hash!r} of the batch is not this round's {cfg.block_hash!r}")
        round_id = self._round
        task = asyncio.get_running_loop().create_task(self._recompute(cfg, batch))
        self._validations.add(task)
        task.add_done_callback(self._validations.discard)
        try:
            dist = await asyncio.shield(task)
        except Exception as exc:
            metrics.JOBS_FINISHED.labels(kind="validate", result="failed").inc()
            self.engine_failed(exc)
            raise
        except asyncio.CancelledError:
            metrics.JOBS_FINISHED.labels(kind="validate", result="cancelled").inc()
            if task.cancelled() and round_id != self._round:
                raise ValidationCancelled("the round ended while this batch was being validated") from None
            task.cancel()  # our caller is gone (client disconnect): stop the work too
            raise
        if round_id != self._round:
            raise ValidationCancelled("the round ended while this batch was being validated")
        if not all(math.isfinite(x) for x in dist):
            raise RuntimeError("the model produced non-finite hidden states for some nonces")
        verdict = ValidatedBatch.from_proof_batch(
            batch, dist, r_target=cfg.r_target, fraud_threshold=cfg.fraud_threshold
        )
        self.validated_batches += 1
        metrics.JOBS_FINISHED.labels(kind="validate", result="completed").inc()
        metrics.verdict(verdict.n_invalid, bool(verdict.fraud_detected))
        log_event(
            "validation_verdict",
            batch,
            n_total=len(batch.nonces),
            n_mismatch=verdict.n_invalid,
            p_value=verdict.probability_honest,
            fraud_detected=verdict.fraud_detected,
        )
        url = cfg.callback("/validated")
        if url:
            self.callbacks.send(url, verdict.model_dump(mode="json"))
        return verdict

    async def _recompute(self, cfg: RoundConfig, batch: ProofBatch) -> list:
        dist: list = []
        for i in range(0, len(batch.nonces), cfg.batch_size):
            chunk = batch.nonces[i : i + cfg.batch_size]
            began = time.monotonic()
            dist.extend(await self._distances(cfg, batch.public_key, chunk))
            metrics.ENGINE_SECONDS.labels(kind="validation").observe(time.monotonic() - began)
        return dist

    async def _distances(self, cfg: RoundConfig, public_key: str, nonces: list) -> list:
        """The distances of ``nonces`` under ``public_key`` in round ``cfg``'s mode."""
        result = await self.runner.run(
            cfg.block_hash,
            public_key,
            nonces,
            seq_len=cfg.seq_len,
            sign_flips=cfg.use_sign_flips,
            random_projection=cfg.random_projection,
        )
        return result.distances.tolist()

    # ------------------------------------------------------------------ status

    def status(self, since: int = 0) -> dict:
        """Return the round's status in the original API's field names, plus statistics and callbacks.

        ``valid_nonces`` / ``valid_distances`` hold the valid nonces from index
        ``since`` on (all of them by default); ``valid_next`` is the ``since`` of
        the next poll, so a client can fetch only what is new.
        """
        elapsed = self._elapsed + (time.monotonic() - self._started if self._started is not None else 0.0)
        rate = self.total_checked / elapsed if elapsed > 0 else 0.0
        cfg = self.config
        return {
            "state": self.state.value,
            "valid_nonces": self.valid_nonces[since:],
            "valid_distances": self.valid_distances[since:],
            "valid_since": since,
            "valid_next": len(self.valid_nonces),
            "total_checked": self.total_checked,
            "total_valid": self.total_valid,
            "elapsed_seconds": elapsed,
            "rate_per_second": rate,
            "nonces_per_minute": 60.0 * rate,
            "valid_per_minute": 60.0 * self.total_valid / elapsed if elapsed > 0 else 0.0,
            "validated_batches": self.validated_batches,
            "validations_running": sum(1 for t in self._validations if not t.done()),
            "block_hash": cfg.block_hash if cfg else None,
            "block_height": cfg.block_height if cfg else None,
            "r_target": cfg.r_target if cfg else None,
            "error": self.error,
            "callbacks": self.callbacks.status(),
        }
