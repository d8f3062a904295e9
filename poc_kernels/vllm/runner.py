"""The driver side of PoC v2 in vLLM: run batches of nonces through an engine that serves the model.

``PoCRunner(llm)`` drives an offline ``vllm.LLM`` built with
``worker_extension_cls="poc_kernels.vllm.PoCWorkerExtension"`` and
``enable_prompt_embeds=True``::

    llm = LLM(model, worker_extension_cls=WORKER_EXTENSION, enable_prompt_embeds=True)
    runner = PoCRunner(llm, seq_len=256)
    result = runner.run("block_alpha", "node_A", range(32))
    result.distances  # float32 [32]

Each nonce becomes one request of the engine's own scheduler: its random input
embeddings (SPEC §6, in the model dtype) as ``prompt_embeds``, one output
token, a ``cache_salt`` unique to the request (so the prefix cache never
reuses anything across nonces or rounds) and the request id of
:mod:`.protocol` that the workers recognize. The engine keeps serving other
requests meanwhile; nothing of it is changed once the batch is done.
``AsyncPoCRunner`` does the same on an ``AsyncLLM`` (the OpenAI server's).
"""

from __future__ import annotations

from typing import Any, Callable, Optional

import torch

from .._checks import check_bool, check_int, check_nonces, check_str
from ..constants import ARTIFACT_K
from .protocol import (
    RPC_ABORT,
    RPC_BEGIN,
    RPC_CLEAR_LAYER_HOOKS,
    RPC_FINISH,
    RPC_INSTALL,
    RPC_SET_LAYER_HOOKS,
    SCHEMES,
    WORKER_EXTENSION,
    FinishRequest,
    PoCBatchResult,
    WorkerInfo,
    decode_result,
    new_tag,
    parse_request_id,
    request_id,
    request_ids,
)

__all__ = ["WORKER_EXTENSION", "AsyncPoCRunner", "PoCBatchResult", "PoCRunner"]

_DTYPES = {"float16": torch.float16, "bfloat16": torch.bfloat16, "float32": torch.float32}


def poc_sampling_params():
    """Return the sampling parameters of a PoC request: one greedy token, nothing detokenized."""
    from vllm import SamplingParams

    return SamplingParams(max_tokens=1, temperature=0.0, detokenize=False)


def make_requests(tag: str, embeddings: torch.Tensor, sampling_params: Any) -> list[tuple[str, dict, Any]]:
    """Return ``(request_id, prompt, sampling_params)`` for each nonce's embeddings ``[B, seq_len, H]``."""
    out = []
    for i in range(embeddings.shape[0]):
        rid = request_id(tag, i)
        out.append((rid, {"prompt_embeds": embeddings[i], "cache_salt": rid}, sampling_params))
    return out


def _missing_extension(exc: Exception) -> ValueError:
    return ValueError(
        f"the engine's workers do not have the PoC extension: build it with "
        f"worker_extension_cls={WORKER_EXTENSION!r} ({exc})"
    )


class _Batch:
    """One batch in flight: its tag, nonces and the requests and RPC arguments built from them."""

    def __init__(self, finish: FinishRequest, embeddings: torch.Tensor) -> None:
        self.finish = finish
        self.requests = make_requests(finish.tag, embeddings, poc_sampling_params())
        self.request_ids = request_ids(finish.tag, len(finish.nonces))

    def result(self, answers: list) -> PoCBatchResult:
        return decode_result(answers, self.finish.nonces)


class _RunnerBase:
    """What the sync and async runners share: the workers' facts, the argument checks and the embeddings."""

    #: the layer hooks set by set_layer_hooks, as (block_hash, normalize), or None
    _hooks: Optional[tuple] = None

    def _setup(self, infos: list, seq_len: int, backend: str, prompt_embeds_enabled: bool) -> None:
        if not prompt_embeds_enabled:
            raise ValueError("the engine must be built with enable_prompt_embeds=True to run PoC batches")
        self.seq_len = check_int(seq_len, "seq_len", 1)
        self.backend = check_str(backend, "backend")
        self.worker_info = [WorkerInfo.from_wire(i) for i in infos]
        self.hidden_size = self.worker_info[0].hidden_size
        self.dtype = _DTYPES.get(self.worker_info[0].dtype, torch.float32)
        self.enforce_eager = all(i.enforce_eager for i in self.worker_info)

    def _batch(
        self, block_hash, public_key, nonces, seq_len, sign_flips, return_hidden, scheme, k, stronger_rng
    ) -> tuple[FinishRequest, Optional[_Batch]]:
        """Check a run's arguments; return its finish request and its batch (None when there are no nonces)."""
        check_str(block_hash, "block_hash")
        check_str(public_key, "public_key")
        nonce_t = check_nonces(nonces)
        seq_len = self.seq_len if seq_len is None else check_int(seq_len, "seq_len", 1)
        check_bool(sign_flips, "sign_flips")
        check_bool(return_hidden, "return_hidden")
        check_bool(stronger_rng, "stronger_rng")
        if scheme not in SCHEMES:
            raise ValueError(f"scheme must be one of {SCHEMES}, got {scheme!r}")
        k = check_int(k, "k", 1)
        if k > self.hidden_size:
            raise ValueError(f"k must lie in [1, hidden size = {self.hidden_size}], got {k}")
        if scheme == "artifact" and not self.enforce_eager:
            raise ValueError(
                "the artifact scheme transforms every decoder layer with Python forward hooks, which need an "
                "engine built with enforce_eager=True"
            )
        finish = FinishRequest(
            new_tag(), block_hash, public_key, nonce_t.tolist(), sign_flips, self.backend, return_hidden, scheme, k
        )
        if not len(nonce_t):
            return finish, None
        return finish, _Batch(finish, self.embeddings(block_hash, public_key, nonce_t, seq_len, stronger_rng))

    def embeddings(
        self, block_hash: str, public_key: str, nonces: torch.Tensor, seq_len: int, stronger_rng: bool = False
    ) -> torch.Tensor:
        """Return the nonces' input embeddings ``[B, seq_len, H]`` in the model dtype (CPU)."""
        from ..api import generate_inputs

        return generate_inputs(
            block_hash, public_key, nonces, seq_len, self.hidden_size, dtype=self.dtype, stronger_rng=stronger_rng
        )

    def _batch_hooks(self, finish: FinishRequest) -> Optional[tuple]:
        """The layer hooks a batch runs under: the artifact scheme's own, else those set by set_layer_hooks."""
        return (finish.block_hash, False) if finish.scheme == "artifact" else self._hooks

    def _empty(self, finish: FinishRequest) -> PoCBatchResult:
        if finish.scheme == "artifact":
            return PoCBatchResult([], None, None, self.backend, "", torch.empty(0, finish.k), "artifact")
        return PoCBatchResult([], torch.empty(0), None, self.backend, "")


class PoCRunner(_RunnerBase):
    """Runs PoC batches on an offline ``vllm.LLM`` (see the module docstring)."""

    def __init__(self, llm: Any, *, seq_len: int = 256, backend: str = "auto") -> None:
        self.llm = llm
        enabled = bool(getattr(llm.llm_engine.model_config, "enable_prompt_embeds", False))
        if not enabled:
            self._setup([], seq_len, backend, enabled)
        try:
            infos = llm.collective_rpc(RPC_INSTALL)
        except Exception as exc:  # the engine reports a missing method with its own error type
            raise _missing_extension(exc) from exc
        self._setup(infos, seq_len, backend, enabled)

    def run(
        self,
        block_hash: str,
        public_key: str,
        nonces,
        *,
        seq_len: Optional[int] = None,
        sign_flips: bool = True,
        return_hidden: bool = False,
        progress: Optional[Callable[[int], None]] = None,
        scheme: str = "distance",
        k: int = ARTIFACT_K,
        stronger_rng: bool = False,
    ) -> PoCBatchResult:
        """Return the distances (or, with ``scheme="artifact"``, the artifacts) of ``nonces``, one request per nonce.

        The artifact scheme (SPEC-ARTIFACTS.md) runs with the layer transform of
        its §3 in every decoder layer, installed for the batch and removed after
        it; ``stronger_rng`` selects its §2 inputs.
        """
        finish, batch = self._batch(
            block_hash, public_key, nonces, seq_len, sign_flips, return_hidden, scheme, k, stronger_rng
        )
        if batch is None:
            return self._empty(finish)
        hooks = self._batch_hooks(finish)
        if hooks != self._hooks:
            self._install(hooks)
        try:
            return self._run(batch, progress)
        finally:
            if hooks != self._hooks:
                self._install(self._hooks)

    def _install(self, hooks: Optional[tuple]) -> None:
        if hooks is None:
            self.llm.collective_rpc(RPC_CLEAR_LAYER_HOOKS)
        else:
            self.llm.collective_rpc(RPC_SET_LAYER_HOOKS, args=hooks)

    def _run(self, batch: _Batch, progress: Optional[Callable[[int], None]]) -> PoCBatchResult:
        engine = self.llm.llm_engine
        self.llm.collective_rpc(RPC_BEGIN, args=(batch.finish.tag,))
        try:
            for rid, prompt, params in batch.requests:
                engine.add_request(rid, prompt, params)
            pending = len(batch.requests)
            while pending:
                for out in engine.step():
                    if out.finished and parse_request_id(out.request_id)[0] == batch.finish.tag:
                        pending -= 1
                        if progress is not None:
                            progress(1)
            answers = self.llm.collective_rpc(RPC_FINISH, args=(batch.finish.to_wire(),))
        except BaseException:
            engine.abort_request(batch.request_ids)
            self.llm.collective_rpc(RPC_ABORT, args=(batch.finish.tag,))
            raise
        return batch.result(answers)

    def set_layer_hooks(self, block_hash: str, normalize: bool = True) -> int:
        """Install the layer hooks of ``block_hash`` (SPEC §7) on every worker; return the layers hooked per worker."""
        check_str(block_hash, "block_hash")
        check_bool(normalize, "normalize")
        count = self.llm.collective_rpc(RPC_SET_LAYER_HOOKS, args=(block_hash, normalize))[0]
        self._hooks = (block_hash, normalize)
        return count

    def clear_layer_hooks(self) -> None:
        """Remove the layer hooks from every worker."""
        self.llm.collective_rpc(RPC_CLEAR_LAYER_HOOKS)
        self._hooks = None


class AsyncPoCRunner(_RunnerBase):
    """Runs PoC batches on an ``AsyncLLM`` engine client (the OpenAI server's), beside its other traffic.

    Build it with ``await AsyncPoCRunner.create(engine_client, seq_len=...)``.
    """

    def __init__(self, engine_client: Any) -> None:
        self.engine = engine_client

    @classmethod
    async def create(cls, engine_client: Any, *, seq_len: int = 256, backend: str = "auto") -> AsyncPoCRunner:
        runner = cls(engine_client)
        enabled = bool(getattr(engine_client.model_config, "enable_prompt_embeds", False))
        if not enabled:
            runner._setup([], seq_len, backend, enabled)
        try:
            infos = await engine_client.collective_rpc(RPC_INSTALL)
        except Exception as exc:
            raise _missing_extension(exc) from exc
        runner._setup(infos, seq_len, backend, enabled)
        return runner

    async def run(
        self,
        block_hash: str,
        public_key: str,
        nonces,
        *,
        seq_len: Optional[int] = None,
        sign_flips: bool = True,
        return_hidden: bool = False,
        scheme: str = "distance",
        k: int = ARTIFACT_K,
        stronger_rng: bool = False,
    ) -> PoCBatchResult:
        """Return the distances or artifacts of ``nonces`` (one engine request per nonce, all in flight together).

        As :meth:`PoCRunner.run`. The artifact scheme's layer hooks transform
        every request the engine runs meanwhile: a server closes inference
        around such batches.
        """
        import asyncio

        finish, batch = await asyncio.to_thread(
            self._batch, block_hash, public_key, nonces, seq_len, sign_flips, return_hidden, scheme, k, stronger_rng
        )
        if batch is None:
            return self._empty(finish)
        hooks = self._batch_hooks(finish)
        if hooks != self._hooks:
            await self._install(hooks)
        try:
            return await self._run(batch)
        finally:
            if hooks != self._hooks:
                await self._install(self._hooks)

    async def _install(self, hooks: Optional[tuple]) -> None:
        if hooks is None:
            await self.engine.collective_rpc(RPC_CLEAR_LAYER_HOOKS)
        else:
            await self.engine.collective_rpc(RPC_SET_LAYER_HOOKS, args=hooks)

    async def _run(self, batch: _Batch) -> PoCBatchResult:
        import asyncio

        await self.engine.collective_rpc(RPC_BEGIN, args=(batch.finish.tag,))

        async def drain(rid, prompt, params):
            async for _ in self.engine.generate(prompt, params, rid):
                pass

        try:
            await asyncio.gather(*(drain(*r) for r in batch.requests))
            answers = await self.engine.collective_rpc(RPC_FINISH, args=(batch.finish.to_wire(),))
        except BaseException:
            await self.engine.abort(batch.request_ids)
            await self.engine.collective_rpc(RPC_ABORT, args=(batch.finish.tag,))
            raise
        return batch.result(answers)

    async def set_layer_hooks(self, block_hash: str, normalize: bool = True) -> int:
        """Install the layer hooks of ``block_hash`` on every worker; return the layers hooked per worker."""
        check_str(block_hash, "block_hash")
        check_bool(normalize, "normalize")
        count = (await self.engine.collective_rpc(RPC_SET_LAYER_HOOKS, args=(block_hash, normalize)))[0]
        self._hooks = (block_hash, normalize)
        return count

    async def clear_layer_hooks(self) -> None:
        """Remove the layer hooks from every worker."""
        await self.engine.collective_rpc(RPC_CLEAR_LAYER_HOOKS)
        self._hooks = None
