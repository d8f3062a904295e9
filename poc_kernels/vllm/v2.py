"""The network's node API (v2) of the artifact scheme: mining, queued generation and validation.

The network's ML node drives each vLLM server of a node over ``/api/v1/pow``
with these routes (SPEC-ARTIFACTS.md for the numbers; the shapes are the
deployed node's):

| Method | Path | Purpose |
|---|---|---|
| POST | /init/generate | start mining this node's nonces (SPEC-ARTIFACTS §7) |
| POST | /generate | compute the artifacts of given nonces, or validate received ones |
| GET | /generate/{request_id} | a queued job's state and result |
| GET | /status | mining state, configuration and rate |
| POST | /stop | stop mining, clear the queue |
| GET | /versions | versions and schemes (served by both APIs) |

:class:`ArtifactNode` holds the state: the mining loop (its artifacts go to
``{url}/generated`` in batches, at most one POST every
``POC_CALLBACK_INTERVAL_S``), one FIFO queue of ``/generate`` jobs run one at a
time, which waits while the node mines, and a bounded store of their results.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import time
import uuid
from collections import OrderedDict, deque
from typing import Annotated, Any, Optional

from pydantic import AnyHttpUrl, BaseModel, ConfigDict, Field, model_validator

from ..constants import (
    ARTIFACT_DIST_THRESHOLD,
    ARTIFACT_FRAUD_THRESHOLD,
    ARTIFACT_K,
    ARTIFACT_P_MISMATCH,
    MAX_NONCE,
)
from ..validation.artifacts import Artifact, ArtifactBatch, Encoding, StatTest, encode_artifacts, validate_artifacts
from ._http import join_callback
from .manager import (
    CALLBACK_DRAIN_S,
    INT64_MAX,
    MAX_BATCH_TOKENS,
    NONCE_SPACE,
    CallbackSender,
    PoCManager,
    TransitionError,
)

logger = logging.getLogger("poc_kernels.vllm")

__all__ = ["ArtifactNode", "GenerateRequest", "InitGenerateRequest", "JobCancelled", "Params", "ParamsMismatch"]


def _env_int(name: str, default: int) -> int:
    return int(os.environ.get(name, str(default)))


#: nonces per engine batch when a request gives no batch_size
DEFAULT_BATCH_SIZE = _env_int("POC_BATCH_SIZE_DEFAULT", 32)
#: the most nonces waiting in the /generate queue (429 above it; 413 for one request above it)
MAX_QUEUED_NONCES = _env_int("POC_MAX_QUEUED_NONCES", 100_000)
#: the most nonces one /generate with wait=true may carry (413 above it: queue it instead)
MAX_WAIT_NONCES = _env_int("POC_MAX_WAIT_NONCES", 4096)
#: the result store keeps at most this many finished jobs, and results of at most this many nonces
MAX_STORED_JOBS = _env_int("POC_MAX_STORED_JOBS", 1000)
MAX_STORED_NONCES = _env_int("POC_MAX_STORED_NONCES", 400_000)
#: mined artifacts waiting for their callback; the oldest are dropped beyond it (counted)
MAX_BUFFERED_ARTIFACTS = _env_int("POC_CALLBACK_MAX_ARTIFACTS", 200_000)
#: at most one /generated POST per this many seconds while mining
CALLBACK_INTERVAL_S = float(os.environ.get("POC_CALLBACK_INTERVAL_S", "5"))
#: how often a queued job checks whether mining has stopped
MINING_POLL_S = 0.1

_STRICT = ConfigDict(strict=True, frozen=True, extra="forbid", allow_inf_nan=False)
_Nonce = Annotated[int, Field(ge=0, le=MAX_NONCE)]


class Params(BaseModel):
    """``params``: the model and shape the network expects this node to run."""

    model_config = _STRICT

    model: str = Field(min_length=1)
    seq_len: int = Field(ge=1)
    k_dim: int = Field(default=ARTIFACT_K, ge=1)
    #: the decode scheme, which this node does not serve (400 when true)
    decode: bool = False
    #: the decode scheme's length: accepted and ignored when decode is false
    max_tokens: Optional[int] = Field(default=None, ge=0)


class _Round(BaseModel):
    model_config = _STRICT

    block_hash: str = Field(min_length=1)
    block_height: int = Field(ge=0, le=INT64_MAX)
    public_key: str = Field(min_length=1)
    node_id: int = Field(ge=0, lt=NONCE_SPACE)
    node_count: int = Field(ge=1, le=NONCE_SPACE)
    group_id: int = Field(default=0, ge=0, lt=NONCE_SPACE)
    n_groups: int = Field(default=1, ge=1, le=NONCE_SPACE)
    batch_size: Optional[int] = Field(default=None, ge=1, le=4096)
    params: Params
    url: Optional[AnyHttpUrl] = None
    poc_stronger_rng: bool = False
    #: SPEC §10, Phase 6.1 (off by default; not part of the deployed node's API)
    random_projection: bool = False

    @model_validator(mode="after")
    def _check_ids(self):
        if self.node_id >= self.node_count:
            raise ValueError(f"node_id must be < node_count = {self.node_count}, got {self.node_id}")
        if self.group_id >= self.n_groups:
            raise ValueError(f"group_id must be < n_groups = {self.n_groups}, got {self.group_id}")
        return self

    def batch(self) -> int:
        return self.batch_size or DEFAULT_BATCH_SIZE


class InitGenerateRequest(_Round):
    """The body of ``POST /init/generate``."""


class StatTestRequest(BaseModel):
    """``stat_test``: the mismatch threshold and the fraud test; ``p_value_threshold`` is ``fraud_threshold``.

    The network's client sends the test's alpha as ``p_value_threshold``; the
    deployed node ignores that name and always tests at 0.01. Here either name
    sets it (both, with different values, is an error).
    """

    model_config = _STRICT

    dist_threshold: float = Field(default=ARTIFACT_DIST_THRESHOLD, ge=0.0)
    p_mismatch: float = Field(default=ARTIFACT_P_MISMATCH, gt=0.0, lt=1.0)
    fraud_threshold: Optional[float] = Field(default=None, gt=0.0, lt=1.0)
    p_value_threshold: Optional[float] = Field(default=None, gt=0.0, lt=1.0)

    @model_validator(mode="after")
    def _one_alpha(self):
        a, b = self.fraud_threshold, self.p_value_threshold
        if a is not None and b is not None and a != b:
            raise ValueError(f"fraud_threshold ({a}) and p_value_threshold ({b}) name the same alpha: give one")
        return self

    def test(self) -> StatTest:
        alpha = self.fraud_threshold if self.fraud_threshold is not None else self.p_value_threshold
        return StatTest(
            dist_threshold=self.dist_threshold,
            p_mismatch=self.p_mismatch,
            fraud_threshold=alpha if alpha is not None else ARTIFACT_FRAUD_THRESHOLD,
        )


class ValidationRequest(BaseModel):
    model_config = _STRICT

    artifacts: list[Artifact]


class GenerateRequest(_Round):
    """The body of ``POST /generate``."""

    nonces: list[_Nonce]
    wait: bool = False
    validation: Optional[ValidationRequest] = None
    stat_test: Optional[StatTestRequest] = None

    @model_validator(mode="after")
    def _unique(self):
        if len(set(self.nonces)) != len(self.nonces):
            seen: set = set()
            dup = next(n for n in self.nonces if n in seen or seen.add(n))
            raise ValueError(f"nonces must be unique, nonce {dup} appears more than once")
        return self


class ParamsMismatch(Exception):
    """``params`` that this node does not serve (HTTP 409 ``{"error": "params mismatch", ...}``)."""

    def __init__(self, requested: dict, deployed: dict, fields: list) -> None:
        super().__init__(f"params mismatch: {', '.join(fields)}")
        self.detail = {"error": "params mismatch", "requested": requested, "deployed": deployed, "fields": fields}


class JobCancelled(TransitionError):
    """A job that ``/stop`` or shutdown ended before its result (HTTP 409 for a waiting caller)."""


class _Job:
    __slots__ = ("request_id", "body", "status", "result", "error", "created", "finished", "task")

    def __init__(self, body: GenerateRequest) -> None:
        self.request_id = str(uuid.uuid4())
        self.body = body
        self.status = "queued"
        self.result: Optional[bytes] = None  # the result's JSON object, serialized once
        self.error: Optional[str] = None
        self.created = time.time()
        self.finished: Optional[float] = None
        self.task: Optional[asyncio.Task] = None

    def answer(self) -> bytes:
        head = json.dumps({"status": self.status, "request_id": self.request_id})
        if self.status == "completed" and self.result is not None:
            return (head[:-1] + ", " + self.result.decode()[1:]).encode()
        if self.status in ("failed", "cancelled"):  # a cancelled job is a failed one, whose error says why
            return json.dumps({"status": "failed", "request_id": self.request_id, "error": self.error}).encode()
        return head.encode()


class ArtifactNode:
    """One vLLM server's node state under the v2 API, on an :class:`~poc_kernels.vllm.runner.AsyncPoCRunner`."""

    def __init__(
        self,
        runner: Any,
        *,
        model_names: list,
        max_model_len: Optional[int] = None,
        callbacks: Optional[CallbackSender] = None,
    ) -> None:
        self.runner = runner
        self.model_names = [str(m) for m in dict.fromkeys(model_names) if m]
        self.max_model_len = max_model_len
        self.callbacks = callbacks or CallbackSender()
        #: called with the error when the engine is dead (the standalone server exits non-zero)
        self.on_engine_dead: Optional[Any] = None
        self._lock = asyncio.Lock()
        self.config: Optional[InitGenerateRequest] = None
        self._mining: Optional[asyncio.Task] = None
        self._flusher: Optional[asyncio.Task] = None
        self.total_processed = 0
        self.total_artifacts = 0
        self._started: Optional[float] = None
        self.error: Optional[str] = None
        self._buffer: deque = deque()
        self.artifacts_dropped = 0
        self._queue: deque = deque()
        self.queued_nonces = 0
        self._running: Optional[_Job] = None
        self._waiting_callers: set = set()
        self._wake: Optional[asyncio.Event] = None
        self._worker: Optional[asyncio.Task] = None
        self._store: OrderedDict = OrderedDict()
        self._stored_nonces = 0

    # ------------------------------------------------------------------ state

    @property
    def mining(self) -> bool:
        return self._mining is not None and not self._mining.done()

    def inference_pause_reason(self) -> Optional[str]:
        """Why ordinary inference must wait now (the node mines), or None."""
        if self.mining:
            return "PoC generation in progress: inference is paused until the node stops mining"
        return None

    def check_params(self, body: _Round) -> None:
        """Raise :class:`ParamsMismatch` (409) or ValueError (400) unless this node can serve ``body.params``."""
        p = body.params
        if p.decode:
            raise ValueError(
                "params.decode = true asks for the decode scheme, which this node does not serve "
                "(it serves the artifact scheme: decode false)"
            )
        hidden = int(getattr(self.runner, "hidden_size", 0) or 0)
        max_seq = self.max_model_len - 1 if self.max_model_len else None
        fields = []
        if p.model not in self.model_names:
            fields.append("model")
        if max_seq is not None and p.seq_len > max_seq:
            fields.append("seq_len")
        if hidden and p.k_dim > hidden:
            fields.append("k_dim")
        if fields:
            requested = {"model": p.model, "seq_len": p.seq_len, "k_dim": p.k_dim}
            deployed = {"model": self.model_names, "seq_len": {"max": max_seq}, "k_dim": {"max": hidden or None}}
            raise ParamsMismatch(requested, deployed, fields)
        tokens = body.batch() * p.seq_len
        if tokens > MAX_BATCH_TOKENS:
            raise ValueError(
                f"batch_size x params.seq_len = {tokens} tokens exceeds this node's budget of {MAX_BATCH_TOKENS} "
                "tokens per batch (POC_MAX_BATCH_TOKENS)"
            )
        if not getattr(self.runner, "layers_supported", False):
            raise ValueError("the artifact scheme needs the in-graph layer transform, which this engine's workers lack")

    # ------------------------------------------------------------------ mining

    async def init_generate(self, body: InitGenerateRequest) -> dict:
        """Start mining (409 when the node already mines); answers at once."""
        if not isinstance(body, InitGenerateRequest):
            raise TypeError(f"body must be an InitGenerateRequest, got {type(body).__name__}")
        self.check_params(body)
        async with self._lock:
            if self.mining:
                raise TransitionError("the node is already generating: POST /stop first")
            await self._stop_mining()
            self.config = body
            self.total_processed = 0
            self.total_artifacts = 0
            self.error = None
            self._started = time.monotonic()
            loop = asyncio.get_running_loop()
            self._mining = loop.create_task(self._mine(body))
            if body.url is not None:
                self._flusher = loop.create_task(self._flush_every(body))
            return {"status": "OK", "pow_status": {"status": "GENERATING"}}

    async def _mine(self, cfg: InitGenerateRequest) -> None:
        offset = cfg.node_id + cfg.group_id * cfg.node_count
        step = cfg.n_groups * cfg.node_count
        x = 0
        try:
            while True:
                nonces = [offset + (x + i) * step for i in range(cfg.batch())]
                nonces = [n for n in nonces if n <= MAX_NONCE]
                if not nonces:
                    self.error = "this node's nonces are exhausted (every nonce below 2**32 was computed)"
                    return
                arts = await self._artifacts(cfg, nonces)
                x += cfg.batch()
                self.total_processed += len(nonces)
                self.total_artifacts += len(arts)
                if cfg.url is not None:
                    self._buffer.extend(arts)
                    while len(self._buffer) > MAX_BUFFERED_ARTIFACTS:
                        self._buffer.popleft()
                        self.artifacts_dropped += 1
        except asyncio.CancelledError:
            raise
        except Exception as exc:  # the engine failed: report it, stop mining
            logger.exception("PoC mining stopped")
            self.error = f"{type(exc).__name__}: {exc}"
            self._engine_failed(exc)

    async def _artifacts(self, cfg: _Round, nonces: list) -> list:
        """The artifacts of ``nonces`` as ``{nonce, vector_b64}``; a nonce with no artifact (NaN) is left out."""
        rows = await self._rows(cfg, nonces)
        return [{"nonce": n, "vector_b64": v} for n, v in zip(nonces, encode_artifacts(rows)) if v is not None]

    async def _rows(self, cfg: _Round, nonces: list) -> Any:
        result = await self.runner.run(
            cfg.block_hash,
            cfg.public_key,
            nonces,
            seq_len=cfg.params.seq_len,
            scheme="artifact",
            k=cfg.params.k_dim,
            stronger_rng=cfg.poc_stronger_rng,
            random_projection=cfg.random_projection,
        )
        return result.artifacts

    #: reports a dead engine to ``on_engine_dead``, as the seeds' manager does
    _engine_failed = PoCManager.engine_failed

    async def _flush_every(self, cfg: InitGenerateRequest) -> None:
        while True:
            await asyncio.sleep(CALLBACK_INTERVAL_S)
            self._flush(cfg)
            if not self.mining and not self._buffer:
                return

    def _flush(self, cfg: Optional[InitGenerateRequest]) -> None:
        """POST the buffered artifacts to ``{url}/generated`` (in the background)."""
        if cfg is None or cfg.url is None or not self._buffer:
            return
        artifacts = list(self._buffer)
        self._buffer.clear()
        payload = {
            "public_key": cfg.public_key,
            "block_hash": cfg.block_hash,
            "block_height": cfg.block_height,
            "node_id": cfg.node_id,
            "artifacts": artifacts,
            "encoding": {"dtype": "f16", "k_dim": cfg.params.k_dim, "endian": "le"},
        }
        self.callbacks.send(join_callback(cfg.url, "/generated"), payload)

    async def _stop_mining(self) -> None:
        for name in ("_mining", "_flusher"):
            task = getattr(self, name)
            setattr(self, name, None)
            if task is not None and not task.done():
                task.cancel()
                await asyncio.gather(task, return_exceptions=True)
        self._flush(self.config)  # what was mined is delivered, not dropped

    async def stop(self) -> dict:
        """Stop mining, cancel the running job and clear the queue (their callers get 409, their records fail)."""
        async with self._lock:
            await self._stop_mining()
            self.config = None
            await self._cancel_jobs("the node was stopped (POST /stop) before this job finished")
            return {"status": "OK", "pow_status": {"status": "STOPPED"}}

    async def shutdown(self) -> None:
        """Stop everything (server shutdown)."""
        async with self._lock:
            await self._stop_mining()
            await self._cancel_jobs("the node shut down before this job finished")
            if self._worker is not None:
                self._worker.cancel()
                await asyncio.gather(self._worker, return_exceptions=True)
                self._worker = None
        await self.callbacks.drain(timeout=CALLBACK_DRAIN_S)

    def status(self) -> dict:
        """The deployed node's status, plus what it lacks: the last error, the queue and the callbacks."""
        extra = {
            "error": self.error,
            "queue": {
                "jobs": len(self._queue),
                "nonces": self.queued_nonces,
                "limit_nonces": MAX_QUEUED_NONCES,
                "running": self._running.request_id if self._running is not None else None,
                "wait_jobs": len(self._waiting_callers),
                "stored_results": len(self._store),
            },
            "callbacks": {
                **self.callbacks.status(),
                "artifacts_buffered": len(self._buffer),
                "artifacts_dropped": self.artifacts_dropped,
            },
        }
        cfg = self.config
        if not self.mining or cfg is None:
            return {"status": "IDLE", "config": None, "stats": None, **extra}
        elapsed = time.monotonic() - self._started
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
                "nonces_per_second": self.total_processed / elapsed if elapsed > 0 else 0.0,
                "total_artifacts": self.total_artifacts,
            },
            **extra,
        }

    # ------------------------------------------------------------------ /generate

    def _check_generate(self, body: GenerateRequest) -> None:
        self.check_params(body)
        if body.validation is not None:
            got = [a.nonce for a in body.validation.artifacts]
            if set(got) != set(body.nonces) or len(got) != len(body.nonces):
                raise ValueError("validation.artifacts must hold one artifact per nonce of `nonces`, and no other")

    async def generate_now(self, body: GenerateRequest) -> bytes:
        """``wait=true``: compute now (after mining stops), store and answer the result (JSON bytes)."""
        self._check_generate(body)
        if len(body.nonces) > MAX_WAIT_NONCES:
            raise ApiTooLarge(
                f"a /generate with wait=true holds at most {MAX_WAIT_NONCES} nonces (POC_MAX_WAIT_NONCES), got "
                f"{len(body.nonces)}: queue it (wait=false) or split it"
            )
        job = _Job(body)
        job.status = "running"
        job.task = asyncio.get_running_loop().create_task(self._run(job))
        self._waiting_callers.add(job)
        self._keep(job)
        try:
            await asyncio.shield(job.task)
        except asyncio.CancelledError:
            if job.task.cancelled() and not _cancelling():  # /stop or shutdown ended the job
                raise JobCancelled(job.error) from None
            job.task.cancel()  # our caller is gone: stop the work too
            raise
        finally:
            self._waiting_callers.discard(job)
        if job.status == "failed":
            raise RuntimeError(job.error)
        self._send_job_callback(job)
        return job.answer()

    def enqueue(self, body: GenerateRequest) -> dict:
        """``wait=false``: queue the job (429 when the queue is full) and answer its id."""
        self._check_generate(body)
        n = len(body.nonces)
        if n > MAX_QUEUED_NONCES:
            raise ApiTooLarge(
                f"the queue holds at most {MAX_QUEUED_NONCES} nonces (POC_MAX_QUEUED_NONCES); this request has {n}: "
                "split it"
            )
        if self.queued_nonces + n > MAX_QUEUED_NONCES:
            raise QueueFull(f"queue full: {self.queued_nonces} nonces queued, limit is {MAX_QUEUED_NONCES}")
        job = _Job(body)
        self._queue.append(job)
        self.queued_nonces += n
        self._keep(job)
        self._ensure_worker()
        self._wake.set()
        return {"status": "queued", "request_id": job.request_id, "queued_count": n}

    def job(self, request_id: str) -> Optional[bytes]:
        job = self._store.get(request_id)
        return job.answer() if job is not None else None

    def _ensure_worker(self) -> None:
        if self._wake is None:
            self._wake = asyncio.Event()
        if self._worker is None or self._worker.done():
            self._worker = asyncio.get_running_loop().create_task(self._work())

    async def _work(self) -> None:
        """Run the queued jobs one at a time, first in, first out; none starts while the node mines."""
        while True:
            if not self._queue:
                self._wake.clear()
                await self._wake.wait()
                continue
            if self.mining:
                await asyncio.sleep(MINING_POLL_S)
                continue
            job = self._queue[0]
            self._running = job
            job.status = "running"
            job.task = asyncio.get_running_loop().create_task(self._run(job, finish=self._dequeue))
            try:
                await asyncio.shield(job.task)
            except asyncio.CancelledError:
                if _cancelling() or not job.task.done():  # the worker itself is cancelled (shutdown)
                    job.task.cancel()
                    raise
            self._send_job_callback(job)

    def _dequeue(self, job: _Job) -> None:
        if self._queue and self._queue[0] is job:
            self._queue.popleft()
            self.queued_nonces -= len(job.body.nonces)
        if self._running is job:
            self._running = None

    async def _run(self, job: _Job, finish: Any = None) -> None:
        """Compute ``job`` in chunks of its batch size, each after mining stops; record its result or error.

        ``finish(job)`` runs just before the job's final state is set, in the same step.
        """
        body = job.body
        result = None
        try:
            rows = []
            for i in range(0, len(body.nonces), body.batch()):
                while self.mining:
                    await asyncio.sleep(MINING_POLL_S)
                chunk = body.nonces[i : i + body.batch()]
                rows.append(await self._rows(body, chunk))
            result = json.dumps(self._result(body, rows)).encode()
        except asyncio.CancelledError:
            job.error = job.error or "the job was cancelled"
            self._finish(job, "cancelled", finish)
            raise
        except Exception as exc:
            logger.exception("PoC job %s failed", job.request_id)
            job.error = f"{type(exc).__name__}: {exc}"
            self._finish(job, "failed", finish)
            self._engine_failed(exc)
            return
        job.result = result
        self._finish(job, "completed", finish)

    @staticmethod
    def _finish(job: _Job, state: str, finish: Any) -> None:
        if finish is not None:
            finish(job)
        job.status, job.finished = state, time.time()

    def _result(self, body: GenerateRequest, rows: list) -> dict:
        import torch

        k = body.params.k_dim
        own = torch.cat(rows) if rows else torch.empty(0, k)
        if body.validation is None:
            encoded = encode_artifacts(own)
            return {
                "artifacts": [{"nonce": n, "vector_b64": v} for n, v in zip(body.nonces, encoded) if v is not None],
                "encoding": {"dtype": "f16", "k_dim": k, "endian": "le"},
            }
        by_nonce = {a.nonce: a for a in body.validation.artifacts}
        batch = ArtifactBatch(
            public_key=body.public_key,
            block_hash=body.block_hash,
            block_height=body.block_height,
            node_id=body.node_id,
            artifacts=[by_nonce[n] for n in body.nonces],  # the verdict lists mismatches in the nonces' order
            encoding=Encoding(k_dim=k),
        )
        test = (body.stat_test or StatTestRequest()).test()
        verdict = validate_artifacts(batch, own, test)
        return {
            "n_total": verdict.n_total,
            "n_mismatch": verdict.n_mismatch,
            "mismatch_nonces": verdict.mismatch_nonces,
            "p_value": verdict.p_value,
            "fraud_detected": verdict.fraud_detected,
        }

    def _send_job_callback(self, job: _Job) -> None:
        body = job.body
        if job.status != "completed" or body.url is None:
            return
        head = {
            "request_id": job.request_id,
            "block_hash": body.block_hash,
            "block_height": body.block_height,
            "public_key": body.public_key,
            "node_id": body.node_id,
        }
        path = "/validated" if body.validation is not None else "/generated"
        self.callbacks.send(join_callback(body.url, path), {**head, **json.loads(job.result)})

    async def _cancel_jobs(self, why: str) -> None:
        """Cancel the running job, the queued ones and the waiting callers' ones."""
        queued = list(self._queue)
        self._queue.clear()
        self.queued_nonces = 0
        tasks = []
        for job in queued + list(self._waiting_callers):
            job.error = why
            if job.task is not None and not job.task.done():
                job.task.cancel()
                tasks.append(job.task)
            elif job.status == "queued":
                job.status, job.finished = "cancelled", time.time()
        if tasks:
            await asyncio.gather(*tasks, return_exceptions=True)

    def _keep(self, job: _Job) -> None:
        """Store ``job`` under its id; evict the oldest finished jobs beyond the store's bounds."""
        if job.request_id not in self._store:
            self._store[job.request_id] = job
            self._stored_nonces += len(job.body.nonces)
        while len(self._store) > MAX_STORED_JOBS or self._stored_nonces > MAX_STORED_NONCES:
            victim = next((j for j in self._store.values() if j.finished is not None), None)
            if victim is None:
                break
            del self._store[victim.request_id]
            self._stored_nonces -= len(victim.body.nonces)


def _cancelling() -> bool:
    """Whether the current task itself is being cancelled (not just something it awaited)."""
    task = asyncio.current_task()
    return bool(task is not None and task.cancelling())


class ApiTooLarge(ValueError):
    """A request above a documented size bound (HTTP 413)."""


class QueueFull(RuntimeError):
    """The /generate queue is full (HTTP 429): retry later."""


# ---------------------------------------------------------------------- routes


def make_router() -> Any:
    """Return the v2 ``/api/v1/pow`` router; it finds its :class:`ArtifactNode` at ``app.state.poc_manager``."""
    from fastapi import APIRouter, Request
    from fastapi.responses import Response

    from ._http import PREFIX, ApiError, body_doc, manager_of, parse, route, unless_disconnected

    router = APIRouter(prefix=PREFIX, tags=["poc"])

    def node_of(request: Request) -> ArtifactNode:
        node = manager_of(request)
        if not isinstance(node, ArtifactNode):
            raise ApiError(503, "this server runs the distance scheme's API (POC_API=distance)")
        return node

    async def answer(work) -> Any:
        try:
            return await work
        except ParamsMismatch as exc:
            raise ApiError(409, exc.detail) from None
        except ApiTooLarge as exc:
            raise ApiError(413, str(exc)) from None
        except QueueFull as exc:
            raise ApiError(429, str(exc)) from None

    async def init_generate(request: Request) -> dict:
        """Start mining this node's nonces; answers at once."""
        body = await parse(request, InitGenerateRequest)
        return await answer(node_of(request).init_generate(body))

    async def generate(request: Request):
        """Compute the artifacts of ``nonces``, or validate ``validation.artifacts``; queued unless ``wait``."""
        body = await parse(request, GenerateRequest)
        node = node_of(request)
        if not body.wait:

            async def queue() -> dict:
                return node.enqueue(body)

            return await answer(queue())
        content = await answer(unless_disconnected(request, node.generate_now(body)))
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
