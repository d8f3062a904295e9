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
reuses anything across nonces or rounds) and the request id
``f"{tag}-{index}"`` that the workers recognize. The engine keeps serving
other requests meanwhile; nothing of it is changed once the batch is done.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from typing import Any, Callable, Optional, Sequence

import numpy as np
import torch

from .._checks import check_bool, check_int, check_nonces, check_str

#: The qualified name to pass as ``worker_extension_cls``.
WORKER_EXTENSION = "poc_kernels.vllm.PoCWorkerExtension"

_DTYPES = {"float16": torch.float16, "bfloat16": torch.bfloat16, "float32": torch.float32}


@dataclass(frozen=True)
class PoCBatchResult:
    """Distances (and optionally the final-norm hidden states) of one batch of nonces, in nonce order."""

    nonces: list
    distances: torch.Tensor  # float32 [B], CPU
    hidden: Optional[torch.Tensor]  # float32 [B, H], CPU, when asked for
    backend: str
    device: str


def new_tag() -> str:
    """Return a fresh request-id tag for one PoC batch."""
    return f"poc{uuid.uuid4().hex[:16]}"


def decode_result(results: Sequence[Optional[dict]], nonces: list) -> PoCBatchResult:
    """Return the batch result from the per-worker answers of ``poc_finish`` (the one that is not None)."""
    answers = [r for r in results if r is not None]
    if not answers:
        raise RuntimeError("no worker answered poc_finish (is the last pipeline stage running?)")
    r = answers[0]
    n = r["n"]
    if n != len(nonces):
        raise RuntimeError(f"the workers returned {n} distances for {len(nonces)} nonces")
    d = torch.from_numpy(np.frombuffer(r["distances"], dtype=np.float32).copy())
    hidden = None
    if r["hidden"] is not None:
        hidden = torch.from_numpy(np.frombuffer(r["hidden"], dtype=np.float32).copy()).view(n, r["hidden_size"])
    return PoCBatchResult(list(nonces), d, hidden, r["backend"], r["device"])


def make_requests(tag: str, embeddings: torch.Tensor, sampling_params: Any) -> list[tuple[str, dict, Any]]:
    """Return ``(request_id, prompt, sampling_params)`` for each nonce's embeddings ``[B, seq_len, H]``."""
    return [
        (f"{tag}-{i}", {"prompt_embeds": embeddings[i], "cache_salt": f"{tag}-{i}"}, sampling_params)
        for i in range(embeddings.shape[0])
    ]


def poc_sampling_params():
    """Return the sampling parameters of a PoC request: one greedy token, nothing detokenized."""
    from vllm import SamplingParams

    return SamplingParams(max_tokens=1, temperature=0.0, detokenize=False)


class _RunnerBase:
    """What the sync and async runners share: the workers' facts and the embeddings."""

    def _setup(self, infos: list, seq_len: int, backend: str, prompt_embeds_enabled: bool) -> None:
        if not prompt_embeds_enabled:
            raise ValueError("the engine must be built with enable_prompt_embeds=True to run PoC batches")
        self.seq_len = check_int(seq_len, "seq_len", 1)
        self.backend = check_str(backend, "backend")
        self.worker_info = infos
        self.hidden_size = int(infos[0]["hidden_size"])
        self.dtype = _DTYPES.get(infos[0]["dtype"], torch.float32)
        self.enforce_eager = all(i["enforce_eager"] for i in infos)

    def _prepare(self, block_hash, public_key, nonces, seq_len, sign_flips):
        check_str(block_hash, "block_hash")
        check_str(public_key, "public_key")
        nonce_t = check_nonces(nonces)
        seq_len = self.seq_len if seq_len is None else check_int(seq_len, "seq_len", 1)
        check_bool(sign_flips, "sign_flips")
        return nonce_t, seq_len

    def embeddings(self, block_hash: str, public_key: str, nonces: torch.Tensor, seq_len: int) -> torch.Tensor:
        """Return the nonces' input embeddings ``[B, seq_len, H]`` in the model dtype (CPU)."""
        from .. import generate_inputs

        return generate_inputs(block_hash, public_key, nonces, seq_len, self.hidden_size, dtype=self.dtype)

    def _empty(self) -> PoCBatchResult:
        return PoCBatchResult([], torch.empty(0), None, self.backend, "")


def _missing_extension(exc: Exception) -> ValueError:
    return ValueError(
        f"the engine's workers do not have the PoC extension: build it with "
        f"worker_extension_cls={WORKER_EXTENSION!r} ({exc})"
    )


class PoCRunner(_RunnerBase):
    """Runs PoC batches on an offline ``vllm.LLM`` (see the module docstring)."""

    def __init__(self, llm: Any, *, seq_len: int = 256, backend: str = "auto") -> None:
        self.llm = llm
        enabled = bool(getattr(llm.llm_engine.model_config, "enable_prompt_embeds", False))
        if not enabled:
            self._setup([{}], seq_len, backend, enabled)
        try:
            infos = llm.collective_rpc("poc_install")
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
    ) -> PoCBatchResult:
        """Return the distances of ``nonces`` computed on the engine's workers (one request per nonce)."""
        nonce_t, seq_len = self._prepare(block_hash, public_key, nonces, seq_len, sign_flips)
        nonce_list = nonce_t.tolist()
        if not nonce_list:
            return self._empty()
        x = self.embeddings(block_hash, public_key, nonce_t, seq_len)
        tag = new_tag()
        engine = self.llm.llm_engine
        self.llm.collective_rpc("poc_begin", args=(tag,))
        try:
            for request_id, prompt, params in make_requests(tag, x, poc_sampling_params()):
                engine.add_request(request_id, prompt, params)
            pending = len(nonce_list)
            while pending:
                for out in engine.step():
                    if out.finished and out.request_id.startswith(tag + "-"):
                        pending -= 1
                        if progress is not None:
                            progress(1)
            results = self.llm.collective_rpc(
                "poc_finish",
                args=(tag, block_hash, public_key, nonce_list, sign_flips, self.backend, return_hidden),
            )
        except BaseException:
            engine.abort_request([f"{tag}-{i}" for i in range(len(nonce_list))])
            self.llm.collective_rpc("poc_abort", args=(tag,))
            raise
        return decode_result(results, nonce_list)

    def set_layer_hooks(self, block_hash: str) -> int:
        """Install the layer hooks of ``block_hash`` (SPEC §7) on every worker; return the layers hooked per worker."""
        check_str(block_hash, "block_hash")
        return self.llm.collective_rpc("poc_set_layer_hooks", args=(block_hash,))[0]

    def clear_layer_hooks(self) -> None:
        """Remove the layer hooks from every worker."""
        self.llm.collective_rpc("poc_clear_layer_hooks")


class AsyncPoCRunner(_RunnerBase):
    """Runs PoC batches on an ``AsyncLLM`` engine client (the OpenAI server's), beside its other traffic.

    Build it with ``await AsyncPoCRunner.create(engine_client, seq_len=...)``.
    """

    def __init__(self, engine_client: Any) -> None:
        self.engine = engine_client

    @classmethod
    async def create(cls, engine_client: Any, *, seq_len: int = 256, backend: str = "auto") -> "AsyncPoCRunner":
        runner = cls(engine_client)
        enabled = bool(getattr(engine_client.model_config, "enable_prompt_embeds", False))
        if not enabled:
            runner._setup([{}], seq_len, backend, enabled)
        try:
            infos = await engine_client.collective_rpc("poc_install")
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
    ) -> PoCBatchResult:
        """Return the distances of ``nonces`` (one engine request per nonce, all in flight together)."""
        import asyncio

        nonce_t, seq_len = self._prepare(block_hash, public_key, nonces, seq_len, sign_flips)
        nonce_list = nonce_t.tolist()
        if not nonce_list:
            return self._empty()
        x = await asyncio.to_thread(self.embeddings, block_hash, public_key, nonce_t, seq_len)
        tag = new_tag()
        await self.engine.collective_rpc("poc_begin", args=(tag,))

        async def drain(request_id, prompt, params):
            async for _ in self.engine.generate(prompt, params, request_id):
                pass

        try:
            await asyncio.gather(*(drain(*r) for r in make_requests(tag, x, poc_sampling_params())))
            results = await self.engine.collective_rpc(
                "poc_finish",
                args=(tag, block_hash, public_key, nonce_list, sign_flips, self.backend, return_hidden),
            )
        except BaseException:
            await self.engine.abort([f"{tag}-{i}" for i in range(len(nonce_list))])
            await self.engine.collective_rpc("poc_abort", args=(tag,))
            raise
        return decode_result(results, nonce_list)

    async def set_layer_hooks(self, block_hash: str) -> int:
        """Install the layer hooks of ``block_hash`` on every worker; return the layers hooked per worker."""
        check_str(block_hash, "block_hash")
        return (await self.engine.collective_rpc("poc_set_layer_hooks", args=(block_hash,)))[0]

    async def clear_layer_hooks(self) -> None:
        """Remove the layer hooks from every worker."""
        await self.engine.collective_rpc("poc_clear_layer_hooks")
