"""The network's node API (v2) of the artifact scheme: its request bodies and :class:`ArtifactNode`.

The network's ML node drives each vLLM server of a node over ``/api/v1/pow``
with these routes (SPEC-ARTIFACTS.md for the numbers; the shapes are the
deployed node's; the routes are :func:`poc_kernels.node.routes.make_v2_router`):

| Method | Path | Purpose |
|---|---|---|
| POST | /init/generate | start mining this node's nonces (SPEC-ARTIFACTS §7) |
| POST | /generate | compute the artifacts of given nonces, or validate received ones |
| GET | /generate/{request_id} | a queued job's state and result |
| GET | /status | mining state, configuration and rate |
| POST | /stop | stop mining, clear the queue |
| GET | /versions | versions and schemes (served by both APIs) |

:class:`ArtifactNode` puts three parts together, each testable alone: the
round and its mining (:class:`~.mining.Miner`), the job queue and result store
(:class:`~.jobs.JobQueue`), and the callback buffer and its delivery
(:class:`~.callbacks.ArtifactBuffer`, :class:`~.callbacks.CallbackSender`).
It reaches the engine only through a runner's public ``run``.
"""

from __future__ import annotations

import asyncio
from typing import Annotated, Any, Optional

from pydantic import BaseModel, ConfigDict, Field, model_validator

from ..constants import ARTIFACT_DIST_THRESHOLD, ARTIFACT_FRAUD_THRESHOLD, ARTIFACT_K, ARTIFACT_P_MISMATCH, MAX_NONCE
from ..validation.artifacts import Artifact, ArtifactBatch, Encoding, StatTest, encode_artifacts, validate_artifacts
from . import metrics, settings
from .callbacks import ArtifactBuffer, CallbackSender, join_callback, log_event
from .errors import ParamsMismatch, TransitionError
from .jobs import JobQueue
from .mining import Miner
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

__all__ = ["ArtifactNode", "GenerateRequest", "InitGenerateRequest", "Params", "StatTestRequest", "check_params"]

_STRICT = ConfigDict(strict=True, frozen=True, extra="forbid", allow_inf_nan=False)
_Nonce = Annotated[int, Field(ge=0, le=MAX_NONCE)]
#: no model's hidden size is larger: it bounds the artifacts' lengths (a larger k_dim is a params mismatch, 409)
MAX_K_DIM = 1 << 16


def b64_chars(k: int) -> int:
    """The length of the base64 (padded) of ``k`` float16 values: no honest ``vector_b64`` is longer."""
    return 4 * -(-2 * k // 3)


class Params(BaseModel):
    """``params``: the model and shape the network expects this node to run."""

    model_config = _STRICT

    model: str = Field(min_length=1, max_length=settings.MAX_MODEL_CHARS)
    seq_len: int = Field(ge=1)
    k_dim: int = Field(default=ARTIFACT_K, ge=1)
    #: the decode scheme, which this node does not serve (400 when true)
    decode: bool = False
    #: the decode scheme's length: accepted and ignored when decode is false
    max_tokens: Optional[int] = Field(default=None, ge=0)


class _Round(BaseModel):
    """What every v2 request carries: the round's identity, its schedule, ``params`` and the callback URL."""

    model_config = _STRICT

    block_hash: BlockHash
    block_height: BlockHeight
    public_key: PublicKey
    node_id: NodeId
    node_count: NodeCount
    group_id: NodeId = 0
    n_groups: NodeCount = 1
    batch_size: Optional[int] = Field(default=None, ge=1, le=4096)
    params: Params
    url: Optional[CallbackUrl] = None
    poc_stronger_rng: bool = False
    #: SPEC §10, Phase 6.1 (off by default; not part of the deployed node's API)
    random_projection: bool = False

    @model_validator(mode="after")
    def _check_ids(self):
        check_node_id(self.node_id, self.node_count)
        if self.group_id >= self.n_groups:
            raise ValueError(f"group_id must be < n_groups = {self.n_groups}, got {self.group_id}")
        return self

    def batch(self) -> int:
        return self.batch_size or settings.DEFAULT_BATCH_SIZE


class InitGenerateRequest(_Round):
    """The body of ``POST /init/generate``."""


class StatTestRequest(BaseModel):
    """``stat_test``: the mismatch threshold and the fraud test's alpha (``fraud_threshold``, default 0.01).

    The network's client sends ``p_value_threshold`` (0.05); the deployed node
    ignores that name and tests at 0.01, and so does this node by default, so
    that its verdicts (and votes) are every other validator's. With
    ``POC_HONOUR_P_VALUE_THRESHOLD=1`` it sets alpha when ``fraud_threshold``
    is not given (both, with different values, is then an error).
    """

    model_config = _STRICT

    dist_threshold: float = Field(default=ARTIFACT_DIST_THRESHOLD, ge=0.0)
    p_mismatch: float = Field(default=ARTIFACT_P_MISMATCH, gt=0.0, lt=1.0)
    fraud_threshold: Optional[float] = Field(default=None, gt=0.0, lt=1.0)
    p_value_threshold: Optional[float] = Field(default=None, gt=0.0, lt=1.0)

    @model_validator(mode="after")
    def _one_alpha(self):
        a, b = self.fraud_threshold, self.p_value_threshold
        if settings.HONOUR_P_VALUE_THRESHOLD and a is not None and b is not None and a != b:
            raise ValueError(f"fraud_threshold ({a}) and p_value_threshold ({b}) name the same alpha: give one")
        return self

    def test(self) -> StatTest:
        alpha = self.fraud_threshold
        if alpha is None and settings.HONOUR_P_VALUE_THRESHOLD:
            alpha = self.p_value_threshold
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

    nonces: list[_Nonce] = Field(min_length=1)
    wait: bool = False
    validation: Optional[ValidationRequest] = None
    stat_test: Optional[StatTestRequest] = None

    @model_validator(mode="after")
    def _check_nonces_and_vectors(self):
        if self.validation is not None:
            longest = b64_chars(min(self.params.k_dim, MAX_K_DIM))
            for a in self.validation.artifacts:
                if len(a.vector_b64) > longest:
                    raise ValueError(
                        f"validation.artifacts: the vector_b64 of nonce {a.nonce} has {len(a.vector_b64)} characters; "
                        f"{self.params.k_dim} float16 values take {longest}"
                    )
        if len(set(self.nonces)) != len(self.nonces):
            seen: set = set()
            dup = next(n for n in self.nonces if n in seen or seen.add(n))
            raise ValueError(f"nonces must be unique, nonce {dup} appears more than once")
        return self


def check_params(body: _Round, runner: Any, model_names: list, max_model_len: Optional[int]) -> None:
    """Raise :class:`~.errors.ParamsMismatch` (409) or ValueError (400) unless the node can serve ``body.params``."""
    check_callback_url(body.url)
    p = body.params
    if p.decode:
        raise ValueError(
            "params.decode = true asks for the decode scheme, which this node does not serve "
            "(it serves the artifact scheme: decode false)"
        )
    hidden = int(getattr(runner, "hidden_size", 0) or 0)
    max_seq = max_model_len - 1 if max_model_len else None
    fields = []
    if p.model not in model_names:
        fields.append("model")
    if max_seq is not None and p.seq_len > max_seq:
        fields.append("seq_len")
    if hidden and p.k_dim > hidden:
        fields.append("k_dim")
    if fields:
        requested = {"model": p.model, "seq_len": p.seq_len, "k_dim": p.k_dim}
        deployed = {"model": model_names, "seq_len": {"max": max_seq}, "k_dim": {"max": hidden or None}}
        raise ParamsMismatch(requested, deployed, fields)
    check_batch_budget(body.batch(), p.seq_len, "batch_size x params.seq_len")
    if not getattr(runner, "layers_supported", False):
        raise ValueError("the artifact scheme needs the in-graph layer transform, which this engine's workers lack")
    validation = getattr(body, "validation", None)
    if validation is not None:
        got = [a.nonce for a in validation.artifacts]
        if set(got) != set(body.nonces) or len(got) != len(body.nonces):
            raise ValueError("validation.artifacts must hold one artifact per nonce of `nonces`, and no other")


def f16_encoding(k: int) -> dict:
    """The ``encoding`` of artifact vectors in results and callbacks: little-endian float16, ``k`` values."""
    return {"dtype": "f16", "k_dim": k, "endian": "le"}


def job_result(body: GenerateRequest, parts: list) -> dict:
    """A ``/generate`` job's JSON object from its rows: the artifacts, or the verdict on ``validation.artifacts``."""
    import torch

    k = body.params.k_dim
    own = torch.cat(parts) if parts else torch.empty(0, k)
    if body.validation is None:
        encoded = encode_artifacts(own)
        return {
            "artifacts": [{"nonce": n, "vector_b64": v} for n, v in zip(body.nonces, encoded) if v is not None],
            "encoding": f16_encoding(k),
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
    verdict = validate_artifacts(batch, own, (body.stat_test or StatTestRequest()).test())
    metrics.verdict(verdict.n_mismatch, verdict.fraud_detected)
    fields = ("n_total", "n_mismatch", "mismatch_nonces", "p_value", "fraud_detected")
    result = {f: getattr(verdict, f) for f in fields}
    log_event("validation_verdict", body, **{f: v for f, v in result.items() if f != "mismatch_nonces"})
    return result


class ArtifactNode(EngineFailures):
    """One vLLM server's node state under the v2 API, on an :class:`~poc_kernels.vllm.AsyncPoCRunner`."""

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
        self._lock = asyncio.Lock()
        self.buffer = ArtifactBuffer(self.callbacks)
        self.miner = Miner(self._artifacts, sink=self.buffer.add, on_error=self.engine_failed)
        self.jobs = JobQueue(
            self._rows, job_result, busy=lambda: self.mining, callbacks=self.callbacks, on_error=self.engine_failed
        )
        metrics.watch(self)

    def metrics_snapshot(self) -> dict:
        """What the gauges of :mod:`.metrics` show."""
        return {
            "rate": self.miner.rate(),
            "buffered": len(self.buffer),
            "queued": len(self.jobs._queue),
            "running": self.jobs.running,
            "state": "GENERATING" if self.mining else "IDLE",
        }

    @property
    def mining(self) -> bool:
        return self.miner.mining

    def inference_pause_reason(self) -> Optional[str]:
        """Why ordinary inference must wait now (the node mines), or None."""
        if self.mining:
            return "PoC generation in progress: inference is paused until the node stops mining"
        return None

    def check_params(self, body: _Round) -> None:
        """Raise unless this node can serve ``body`` (see :func:`check_params`)."""
        check_params(body, self.runner, self.model_names, self.max_model_len)

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

    async def _artifacts(self, cfg: _Round, nonces: list) -> list:
        """The artifacts of ``nonces`` as ``{nonce, vector_b64}``; a nonce with no artifact (NaN) is left out."""
        rows = await self._rows(cfg, nonces)
        return [{"nonce": n, "vector_b64": v} for n, v in zip(nonces, encode_artifacts(rows)) if v is not None]

    async def init_generate(self, body: InitGenerateRequest) -> dict:
        """Start mining (409 when the node already mines); answers at once."""
        if not isinstance(body, InitGenerateRequest):
            raise TypeError(f"body must be an InitGenerateRequest, got {type(body).__name__}")
        self.check_params(body)
        async with self._lock:
            if self.mining:
                raise TransitionError("the node is already generating: POST /stop first")
            await self._stop_mining()
            self.miner.start(body)
            head = {f: getattr(body, f) for f in ("public_key", "block_hash", "block_height", "node_id")}
            url = join_callback(body.url, "/generated")
            self.buffer.open(url, head, f16_encoding(body.params.k_dim), running=lambda: self.mining)
            log_event("round_start", body, group_id=body.group_id, n_groups=body.n_groups, batch_size=body.batch())
            return {"status": "OK", "pow_status": {"status": "GENERATING"}}

    async def _stop_mining(self) -> None:
        await self.miner.stop()
        await self.buffer.close()  # what was mined is delivered, not dropped

    async def stop(self) -> dict:
        """Stop mining, cancel the running job and clear the queue (their callers get 409, their records fail)."""
        async with self._lock:
            was_mining = self.mining
            await self._stop_mining()
            log_event(
                "round_stop",
                self.miner.config,
                was_mining=was_mining,
                nonces=self.miner.total_processed,
                artifacts=self.miner.total_artifacts,
                jobs_cancelled=len(self.jobs._queue) + self.jobs.running,
                error=self.miner.error,
            )
            self.miner.error = None  # a round's error ends with it
            await self.jobs.cancel_all("the node was stopped (POST /stop) before this job finished")
            return {"status": "OK", "pow_status": {"status": "STOPPED"}}

    async def shutdown(self) -> None:
        """Stop everything (server shutdown)."""
        async with self._lock:
            await self._stop_mining()
            await self.jobs.shutdown("the node shut down before this job finished")
        await self.callbacks.drain(timeout=settings.CALLBACK_DRAIN_S)

    def status(self) -> dict:
        """The deployed node's status, plus what it lacks: the last error, the queue and the callbacks."""
        callbacks = {**self.callbacks.status(), **self.buffer.status()}
        return {**self.miner.status(), "error": self.miner.error, "queue": self.jobs.status(), "callbacks": callbacks}

    async def generate_now(self, body: GenerateRequest) -> bytes:
        """``wait=true``: compute now (after mining stops), store and answer the result (JSON bytes)."""
        self.check_params(body)
        return await self.jobs.run_now(body)

    def enqueue(self, body: GenerateRequest) -> dict:
        """``wait=false``: queue the job (429 when the queue is full) and answer its id."""
        self.check_params(body)
        return self.jobs.enqueue(body)

    def job(self, request_id: str) -> Optional[bytes]:
        """A stored job's answer (JSON bytes), or None."""
        return self.jobs.get(request_id)
