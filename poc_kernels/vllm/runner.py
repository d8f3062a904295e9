"""The driver side of PoC v2 in vLLM: run batches of nonces through an engine that serves the model.

``PoCRunner(llm)`` drives an offline ``vllm.LLM`` built with
``worker_extension_cls="poc_kernels.vllm.PoCWorkerExtension"``::

    llm = LLM(model, worker_extension_cls=WORKER_EXTENSION)
    runner = PoCRunner(llm, seq_len=256)
    result = runner.run("block_alpha", "node_A", range(32))
    result.distances  # float32 [32]

Each nonce becomes one request of the engine's own scheduler: ``seq_len``
placeholder token ids, one output token, a ``cache_salt`` unique to the
request (so the prefix cache never reuses anything across nonces or rounds)
and the request id of :mod:`.protocol` that the workers recognize. The
workers write the nonce's input embeddings (SPEC §6) over the embedding output
of those rows inside the forward, and apply the batch's layer transform after
every decoder layer, to those rows only (:mod:`.inline`). The engine keeps
serving other requests meanwhile, in the same steps, untouched; continuous
batching, chunked prefill and compiled or CUDA-graph forwards all apply.

An engine started with ``enable_prompt_embeds=True`` embeds token ids outside
the model's forward, where the workers cannot write them: there the driver
generates the embeddings and sends them as ``prompt_embeds`` (the path of
earlier releases; the layer transforms still run in the graph).
``AsyncPoCRunner`` does the same on an ``AsyncLLM`` (the OpenAI server's).
"""

from __future__ import annotations

import logging
from typing import Any, Callable, Optional

import torch

from .._checks import check_bool, check_int, check_nonces, check_str
from ..constants import ARTIFACT_K
from .protocol import (
    PLACEHOLDER_TOKEN_ID,
    RPC_ABORT,
    RPC_BEGIN,
    RPC_FINISH,
    RPC_INSTALL,
    RPC_STATS,
    SCHEMES,
    WORKER_EXTENSION,
    BeginRequest,
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

logger = logging.getLogger("poc_kernels.vllm")

#: How often an async RPC checks that the engine is still alive, and how long cleaning up a cut batch may take.
RPC_POLL_S = 0.5
RPC_CLEANUP_S = 10.0

_DTYPES = {"float16": torch.float16, "bfloat16": torch.bfloat16, "float32": torch.float32}


def poc_sampling_params():
    """Return the sampling parameters of a PoC request: one greedy token, nothing detokenized."""
    from vllm import SamplingParams

    return SamplingParams(max_tokens=1, temperature=0.0, detokenize=False)


def make_requests(tag: str, n: int, seq_len: int, sampling_params: Any, embeddings=None) -> list[tuple[str, dict, Any]]:
    """Return ``(request_id, prompt, sampling_params)`` for the ``n`` nonces of batch ``tag``.

    The prompt is ``seq_len`` placeholder token ids (the workers write the
    inputs), or, with ``embeddings`` ``[n, seq_len, H]``, those as ``prompt_embeds``.
    """
    out = []
    tokens = [PLACEHOLDER_TOKEN_ID] * seq_len
    for i in range(n):
        rid = request_id(tag, i)
        if embeddings is None:
            prompt = {"prompt_token_ids": tokens, "cache_salt": rid}
        else:
            prompt = {"prompt_embeds": embeddings[i], "cache_salt": rid}
        out.append((rid, prompt, sampling_params))
    return out


def _missing_extension(exc: Exception) -> ValueError:
    return ValueError(
        f"the engine's workers do not have the PoC extension: build it with "
        f"worker_extension_cls={WORKER_EXTENSION!r} ({exc})"
    )


#: How a batch's inputs reach the model: written by the workers in the forward, or sent as prompt_embeds.
INPUT_PATHS = ("engine", "prompt_embeds")


class _Batch:
    """One batch in flight: its begin and finish calls and the requests built from them."""

    def __init__(self, begin: BeginRequest, finish: FinishRequest, embeddings: Optional[torch.Tensor]) -> None:
        self.begin = begin
        self.finish = finish
        self.requests = make_requests(finish.tag, len(finish.nonces), begin.seq_len, poc_sampling_params(), embeddings)
        self.request_ids = request_ids(finish.tag, len(finish.nonces))

    def result(self, answers: list) -> PoCBatchResult:
        return decode_result(answers, self.finish.nonces)


class _RunnerBase:
    """What the sync and async runners share: the workers' facts, the argument checks and the batches."""

    #: the layer transform of later distance-scheme batches, as (block_hash, normalize), or None
    _hooks: Optional[tuple] = None

    def _setup(self, infos: list, seq_len: int, backend: str, model_config: Any) -> None:
        prompt_embeds_enabled = bool(getattr(model_config, "enable_prompt_embeds", False))
        #: the engine's longest sequence (a PoC request needs seq_len + 1 positions), or None when unknown
        self.max_model_len: Optional[int] = getattr(model_config, "max_model_len", None)
        #: the names the engine serves its model under: its path and served name
        names = (getattr(model_config, "model", None), getattr(model_config, "served_model_name", None))
        self.model_names: list = [n for n in names if isinstance(n, str)]
        self.seq_len = check_int(seq_len, "seq_len", 1)
        self.backend = check_str(backend, "backend")
        self.worker_info = [WorkerInfo.from_wire(i) for i in infos]
        first = [i for i in self.worker_info if i.first_pp_rank]
        if first and all(i.inline_inputs for i in first):
            self.inputs = "engine"
        elif prompt_embeds_enabled:
            self.inputs = "prompt_embeds"
        else:
            reasons = sorted({i.inline_reason for i in first if not i.inline_inputs})
            raise ValueError(f"the engine's workers cannot write PoC inputs in the forward: {'; '.join(reasons)}")
        self.layers_supported = bool(self.worker_info) and all(i.inline_layers > 0 for i in self.worker_info)
        self.hidden_size = self.worker_info[0].hidden_size
        self.dtype = _DTYPES.get(self.worker_info[0].dtype, torch.float32)
        self.enforce_eager = all(i.enforce_eager for i in self.worker_info)

    def _batch(
        self, block_hash, public_key, nonces, seq_len, sign_flips, return_hidden, scheme, k, stronger_rng, rp=False
    ) -> tuple[FinishRequest, Optional[_Batch]]:
        """Check a run's arguments; return its finish request and its batch (None when there are no nonces)."""
        check_str(block_hash, "block_hash")
        check_str(public_key, "public_key")
        nonce_t = check_nonces(nonces)
        seq_len = self.seq_len if seq_len is None else check_int(seq_len, "seq_len", 1)
        check_bool(sign_flips, "sign_flips")
        check_bool(return_hidden, "return_hidden")
        check_bool(stronger_rng, "stronger_rng")
        check_bool(rp, "random_projection")
        if scheme not in SCHEMES:
            raise ValueError(f"scheme must be one of {SCHEMES}, got {scheme!r}")
        k = check_int(k, "k", 1)
        if k > self.hidden_size:
            raise ValueError(f"k must lie in [1, hidden size = {self.hidden_size}], got {k}")
        layers = (block_hash, False) if scheme == "artifact" else self._hooks
        if layers is not None and not self.layers_supported:
            raise ValueError("this engine's workers have no in-graph layer transform (see the workers' log)")
        nonce_list = nonce_t.tolist()
        tag = new_tag()
        finish = FinishRequest(
            tag, block_hash, public_key, nonce_list, sign_flips, self.backend, return_hidden, scheme, k, rp
        )
        if not nonce_list:
            return finish, None
        layer_hash, normalize = layers if layers is not None else (None, True)
        begin = BeginRequest(tag, block_hash, public_key, nonce_list, seq_len, stronger_rng, layer_hash, normalize, rp)
        embeddings = None
        if self.inputs == "prompt_embeds":
            embeddings = self.embeddings(block_hash, public_key, nonce_t, seq_len, stronger_rng, rp)
        return finish, _Batch(begin, finish, embeddings)

    def embeddings(
        self,
        block_hash: str,
        public_key: str,
        nonces: torch.Tensor,
        seq_len: int,
        stronger_rng: bool = False,
        random_projection: bool = False,
    ) -> torch.Tensor:
        """Return the nonces' input embeddings ``[B, seq_len, H]`` in the model dtype (CPU; the prompt_embeds path)."""
        from ..api import generate_inputs

        return generate_inputs(
            block_hash,
            public_key,
            nonces,
            seq_len,
            self.hidden_size,
            dtype=self.dtype,
            stronger_rng=stronger_rng,
            random_projection=random_projection,
        )

    def _check_hooks(self, block_hash: str, normalize: bool) -> int:
        check_str(block_hash, "block_hash")
        check_bool(normalize, "normalize")
        if not self.layers_supported:
            raise ValueError("this engine's workers have no in-graph layer transform (see the workers' log)")
        return self.worker_info[0].num_layers

    def _empty(self, finish: FinishRequest) -> PoCBatchResult:
        if finish.scheme == "artifact":
            return PoCBatchResult([], None, None, self.backend, "", torch.empty(0, finish.k), "artifact")
        return PoCBatchResult([], torch.empty(0), None, self.backend, "")


class PoCRunner(_RunnerBase):
    """Runs PoC batches on an offline ``vllm.LLM`` (see the module docstring)."""

    def __init__(self, llm: Any, *, seq_len: int = 256, backend: str = "auto") -> None:
        self.llm = llm
        try:
            infos = llm.collective_rpc(RPC_INSTALL)
        except Exception as exc:  # the engine reports a missing method with its own error type
            raise _missing_extension(exc) from exc
        self._setup(infos, seq_len, backend, llm.llm_engine.model_config)

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
        random_projection: bool = False,
    ) -> PoCBatchResult:
        """Return the distances (or, with ``scheme="artifact"``, the artifacts) of ``nonces``, one request per nonce.

        The artifact scheme (SPEC-ARTIFACTS.md) runs with the layer transform of
        its §3 in every decoder layer, for this batch's rows only;
        ``stronger_rng`` selects its §2 inputs. Distance-scheme batches run with
        the layer transform set by :meth:`set_layer_hooks`, if any.
        ``random_projection`` (SPEC §10): ``x + x @ P_pre`` on the batch's
        input rows and ``h + h @ P_post`` on its hidden states (CPU workers,
        or an engine with prompt_embeds, so far).
        """
        finish, batch = self._batch(
            block_hash, public_key, nonces, seq_len, sign_flips, return_hidden, scheme, k, stronger_rng,
            random_projection,
        )  # fmt: skip
        if batch is None:
            return self._empty(finish)
        engine = self.llm.llm_engine
        self.llm.collective_rpc(RPC_BEGIN, args=(batch.begin.to_wire(),))
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
        """Run later distance-scheme batches with the layer transform of ``block_hash`` (SPEC §7 with ``normalize``).

        The transform runs inside the forward on those batches' rows only; other
        requests are untouched. Returns the decoder layers it applies to per worker.
        """
        layers = self._check_hooks(block_hash, normalize)
        self._hooks = (block_hash, normalize)
        return layers

    def clear_layer_hooks(self) -> None:
        """Run later distance-scheme batches without a layer transform."""
        self._hooks = None

    def stats(self) -> list:
        """Return every worker's PoC counters (``PoCWorkerExtension.poc_stats``)."""
        return self.llm.collective_rpc(RPC_STATS)


class AsyncPoCRunner(_RunnerBase):
    """Runs PoC batches on an ``AsyncLLM`` engine client (the OpenAI server's), beside its other traffic.

    Build it with ``await AsyncPoCRunner.create(engine_client, seq_len=...)``.
    """

    def __init__(self, engine_client: Any) -> None:
        self.engine = engine_client
        #: the engine cores of a data-parallel engine (``data_parallel_size`` > 1), each of which runs a part of
        #: every batch; empty for one engine core
        self.engine_cores: list = _data_parallel_cores(engine_client)

    @classmethod
    async def create(cls, engine_client: Any, *, seq_len: int = 256, backend: str = "auto") -> AsyncPoCRunner:
        runner = cls(engine_client)
        try:
            infos = await runner._rpc_all(RPC_INSTALL)
        except Exception as exc:
            raise _missing_extension(exc) from exc
        runner._setup(infos, seq_len, backend, engine_client.model_config)
        return runner

    @property
    def dead_error(self) -> Optional[BaseException]:
        """The engine's error once it is dead (a worker crashed, or it was shut down), else None."""
        if getattr(self.engine, "errored", False):
            return getattr(self.engine, "dead_error", None) or RuntimeError("the engine errored")
        return None

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
        random_projection: bool = False,
    ) -> PoCBatchResult:
        """Return the distances or artifacts of ``nonces`` (one engine request per nonce, all in flight together).

        As :meth:`PoCRunner.run`; other requests of the engine run in the same steps, untouched.
        """
        import asyncio

        args = (block_hash, public_key, nonces, seq_len, sign_flips, return_hidden, scheme, k, stronger_rng,
                random_projection)  # fmt: skip
        if self.engine_cores:
            # data parallelism: every engine core runs a part of the batch, as a batch of its own
            nonce_list = check_nonces(nonces).tolist()
            parts = _split(nonce_list, len(self.engine_cores))
            tasks = [
                asyncio.ensure_future(self._run_on(core, (*args[:2], part, *args[3:])))
                for core, part in enumerate(parts)
                if part
            ]
            try:
                results = await asyncio.gather(*tasks)
            except BaseException:
                # one part failed or the caller cancelled: the other parts stop too (each cleans up its own)
                for task in tasks:
                    task.cancel()
                await asyncio.gather(*tasks, return_exceptions=True)
                raise
            return _concat(results) if results else await self._run_on(None, args)
        return await self._run_on(None, args)

    async def _run_on(self, core: Optional[int], args: tuple) -> PoCBatchResult:
        """Run one batch on engine core ``core`` (None: wherever the engine puts its requests)."""
        import asyncio

        finish, batch = await asyncio.to_thread(self._batch, *args)
        if batch is None:
            return self._empty(finish)
        await self._rpc(RPC_BEGIN, batch.begin.to_wire(), core=core)
        pin = {} if core is None else {"data_parallel_rank": core}

        async def drain(rid, prompt, params):
            async for _ in self.engine.generate(prompt, params, rid, **pin):
                pass

        try:
            await self._alive(asyncio.gather(*(drain(*r) for r in batch.requests)))
            answers = await self._rpc(RPC_FINISH, batch.finish.to_wire(), core=core)
        except BaseException:
            if not getattr(self.engine, "errored", False):  # a dead engine has nothing left to clean
                await asyncio.shield(self._clean_up(batch, core))
            raise
        return batch.result(answers)

    async def _clean_up(self, batch: Any, core: Optional[int] = None) -> None:
        """Abort ``batch``'s requests and drop its worker state (best effort: never raises, never hangs)."""
        import asyncio

        try:
            await asyncio.wait_for(self.engine.abort(batch.request_ids), RPC_CLEANUP_S)
            await asyncio.wait_for(self._rpc(RPC_ABORT, batch.finish.tag, core=core), RPC_CLEANUP_S)
        except Exception as exc:
            tag = batch.finish.tag
            logger.warning("poc_kernels: cleaning up batch %s failed: %s: %s", tag, type(exc).__name__, exc)

    async def _rpc(self, method: str, *args: Any, core: Optional[int] = None) -> Any:
        """``collective_rpc`` (on engine core ``core`` only, when given) that fails with the engine's error once the
        engine is dead (see :meth:`_alive`)."""
        if core is None:
            return await self._alive(self.engine.collective_rpc(method, args=args))
        client = self.engine.engine_core
        work = client._call_utility_async("collective_rpc", method, None, args, None, engine=self.engine_cores[core])
        return await self._alive(work)

    async def _rpc_all(self, method: str, *args: Any) -> list:
        """``collective_rpc`` on every engine core: the answers of all their workers (a data-parallel engine's
        ``collective_rpc`` returns the first core's only)."""
        if not self.engine_cores:
            return await self._rpc(method, *args)
        client = self.engine.engine_core
        per_core = await self._alive(client.call_utility_all_async("collective_rpc", method, None, args, None))
        return [answer for answers in per_core for answer in answers]

    async def _alive(self, work: Any) -> Any:
        """Await ``work`` (a coroutine on the engine), failing with the engine's error once the engine is dead.

        vLLM's utility calls and request streams wait for answers that a dead
        engine never sends: after a worker crash, or once a signal has shut the
        engine client down, a PoC batch in flight would hang its caller, and
        the server's graceful shutdown with it (it waits for open requests).
        """
        import asyncio

        if getattr(self.engine, "errored", False):
            work.close() if asyncio.iscoroutine(work) else work.cancel()
            raise self.engine.dead_error
        task = asyncio.ensure_future(work)
        try:
            while True:
                done, _ = await asyncio.wait({task}, timeout=RPC_POLL_S)
                if done:
                    return task.result()
                if getattr(self.engine, "errored", False):
                    task.cancel()
                    await asyncio.gather(task, return_exceptions=True)
                    raise self.engine.dead_error
        except asyncio.CancelledError:
            task.cancel()
            # what the work ends with after the cancel (a stream that answers its abort with an error) is read,
            # not left to asyncio's "exception was never retrieved"
            task.add_done_callback(lambda t: t.cancelled() or t.exception())
            raise

    async def set_layer_hooks(self, block_hash: str, normalize: bool = True) -> int:
        """Run later distance-scheme batches with the layer transform of ``block_hash`` (see ``PoCRunner``)."""
        layers = self._check_hooks(block_hash, normalize)
        self._hooks = (block_hash, normalize)
        return layers

    async def clear_layer_hooks(self) -> None:
        """Run later distance-scheme batches without a layer transform."""
        self._hooks = None

    async def stats(self) -> list:
        """Return every worker's PoC counters (of every engine core)."""
        return await self._rpc_all(RPC_STATS)


def _data_parallel_cores(engine_client: Any) -> list:
    """The engine cores of a data-parallel ``AsyncLLM`` that can be addressed one by one, else []."""
    client = getattr(engine_client, "engine_core", None)
    cores = list(getattr(client, "core_engines", None) or [])
    if len(cores) > 1 and hasattr(client, "_call_utility_async") and hasattr(client, "call_utility_all_async"):
        return cores
    return []


def _split(items: list, parts: int) -> list:
    """``items`` in ``parts`` contiguous runs of sizes differing by at most one (in order)."""
    size, extra = divmod(len(items), parts)
    out, start = [], 0
    for i in range(parts):
        end = start + size + (i < extra)
        out.append(items[start:end])
        start = end
    return out


def _concat(results: list) -> PoCBatchResult:
    """One result from the results of consecutive parts of a batch (in nonce order)."""

    def cat(name):
        values = [getattr(r, name) for r in results]
        return None if any(v is None for v in values) else torch.cat(values)

    first = results[0]
    nonces = [n for r in results for n in r.nonces]
    return PoCBatchResult(
        nonces, cat("distances"), cat("hidden"), first.backend, first.device, cat("artifacts"), first.scheme
    )
