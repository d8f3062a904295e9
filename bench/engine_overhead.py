"""The PoC round against a plain prefill of the same tokens, interleaved in one engine, with a confidence interval.

One vLLM engine with the PoC extension runs, ``--pairs`` times, a PoC round of
``--nonces`` nonces (``PoCRunner.run`` in batches of ``--batch``: inputs
written in the forward, the final hidden states recorded, the distances
computed) and a plain prefill of the same number of requests of the same
length (``seq_len`` token ids, ``max_tokens=1``, the same batches): the floor
a PoC round cannot beat. The prefill's token ids are seeded random ids of the
vocabulary by default (``--prefill-ids random``), as text has; with
``--prefill-ids placeholder`` every prompt repeats PoC's placeholder id, so
that all its rows carry one embedding, which a MoE routes to the same two
experts (a cheaper forward than one on varied rows, as PoC's random inputs
are). The two alternate in one engine, and their order
flips every pair, so that the machine's drift falls on both. The ratio of
each pair is PoC / prefill; the table gives the geometric mean ratio and a
95% bootstrap interval over the pairs (10,000 resamples, fixed seed).

Models: ``smollm2`` (the embedded weights), ``moe`` (a random 4-layer
Qwen3-MoE, H = 512, 8 experts, 2 per token, saved once in the cache) or a
checkpoint path. Prefix caching is off. It runs unchanged on a CUDA machine
with vLLM (``--dtype auto`` there)::

    python bench/engine_overhead.py --engine smollm2 --engine moe --out bench/results/cpu-2core-engine-overhead.json
"""

from __future__ import annotations

import argparse
import json
import math
import os
import platform
import random
import sys
import time

import torch

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from engine_inputs import close, make_engine, save_random  # noqa: E402


def moe_model(path: str) -> str:
    """A random 4-layer Qwen3-MoE (H = 512, 8 experts of which 2 per token; SmolLM2's tokenizer), saved once."""
    if os.path.exists(os.path.join(path, "config.json")):
        return path
    from transformers import Qwen3MoeConfig, Qwen3MoeForCausalLM

    cfg = Qwen3MoeConfig(
        vocab_size=49152,
        hidden_size=512,
        intermediate_size=1024,
        moe_intermediate_size=256,
        num_experts=8,
        num_experts_per_tok=2,
        num_hidden_layers=4,
        num_attention_heads=8,
        num_key_value_heads=2,
        head_dim=64,
        max_position_embeddings=2048,
        tie_word_embeddings=True,
        dtype="float32",
    )
    return save_random(path, Qwen3MoeForCausalLM, cfg)


def model_path(model: str) -> str:
    if model == "smollm2":
        from poc_kernels.weights import smollm2_dir

        return str(smollm2_dir())
    if model == "moe":
        cache = os.path.expanduser(os.environ.get("POC_KERNELS_CACHE", "~/.cache/poc_kernels"))
        return moe_model(os.path.join(cache, "moe-qwen3-h512"))
    return model


def ratio_interval(ratios: list, resamples: int = 10000, seed: int = 0) -> tuple:
    """Geometric mean of ``ratios`` and its 95% percentile-bootstrap interval."""
    logs = [math.log(r) for r in ratios]
    rng = random.Random(seed)
    means = sorted(sum(rng.choice(logs) for _ in logs) / len(logs) for _ in range(resamples))
    lo, hi = means[int(0.025 * resamples)], means[int(0.975 * resamples) - 1]
    return math.exp(sum(logs) / len(logs)), math.exp(lo), math.exp(hi)


def interleaved(
    model: str, seq_len: int, nonces: int, batch: int, pairs: int, dtype: str, prefill_ids: str = "random"
) -> dict:
    from vllm import SamplingParams

    from poc_kernels.vllm import PoCRunner
    from poc_kernels.vllm.protocol import PLACEHOLDER_TOKEN_ID

    llm = make_engine(model_path(model), seq_len, batch, poc=True, dtype=dtype)
    try:
        runner = PoCRunner(llm, seq_len=seq_len)
        assert runner.inputs == "engine"
        one = SamplingParams(max_tokens=1, temperature=0.0, detokenize=False)
        ids = list(range(nonces))
        if prefill_ids == "placeholder":
            prompts = [[PLACEHOLDER_TOKEN_ID] * seq_len for _ in ids]
        else:  # varied ids, fixed per request: every pair prefills the same tokens
            rng = random.Random(0)
            vocab = llm.llm_engine.model_config.get_vocab_size()
            prompts = [[rng.randrange(vocab) for _ in range(seq_len)] for _ in ids]

        def poc():
            for i in range(0, nonces, batch):
                runner.run("blk", "key", ids[i : i + batch])

        def prefill():
            for i in range(0, nonces, batch):
                part = [
                    {"prompt_token_ids": t, "cache_salt": f"p{i + j}"} for j, t in enumerate(prompts[i : i + batch])
                ]
                llm.generate(part, one, use_tqdm=False)

        def timed(fn):
            t0 = time.perf_counter()
            fn()
            return time.perf_counter() - t0

        poc(), prefill()  # warm-up
        rows = []
        for p in range(pairs):
            if p % 2:
                t_prefill, t_poc = timed(prefill), timed(poc)
            else:
                t_poc, t_prefill = timed(poc), timed(prefill)
            rows.append((t_poc, t_prefill))
        hidden = runner.hidden_size
    finally:
        close(llm)
    ratios = [a / b for a, b in rows]
    mean, lo, hi = ratio_interval(ratios)
    return {
        "model": model,
        "hidden_size": hidden,
        "seq_len": seq_len,
        "nonces": nonces,
        "batch": batch,
        "dtype": dtype,
        "prefill_ids": prefill_ids,
        "pairs": [{"poc_s": a, "prefill_s": b} for a, b in rows],
        "ratio": mean,
        "ratio_ci95": [lo, hi],
        "ratio_min_max": [min(ratios), max(ratios)],
    }


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--engine", action="append", default=[], help="smollm2, moe or a checkpoint path (repeatable)")
    p.add_argument("--seq-len", type=int, default=64)
    p.add_argument("--nonces", type=int, default=32)
    p.add_argument("--batch", type=int, default=16)
    p.add_argument("--pairs", type=int, default=12, help="interleaved PoC/prefill pairs (at least 10)")
    p.add_argument("--dtype", default="float32", help="float32 on CPUs (bfloat16 is emulated there); auto on GPUs")
    p.add_argument(
        "--prefill-ids",
        choices=("random", "placeholder"),
        default="random",
        help="the prefill's token ids: seeded random ones (default) or PoC's placeholder id repeated",
    )
    p.add_argument("--out", default=None, help="write the results as JSON here")
    args = p.parse_args(argv)
    if args.pairs < 10:
        p.error(f"--pairs must be at least 10, got {args.pairs}")
    import vllm

    result = {
        "command": "python bench/engine_overhead.py " + " ".join(argv if argv is not None else sys.argv[1:]),
        "machine": f"{platform.processor() or platform.machine()}, {os.cpu_count()} CPUs, "
        + (torch.cuda.get_device_name() if torch.cuda.is_available() else "no GPU"),
        "torch": torch.__version__,
        "vllm": vllm.__version__,
        "date": time.strftime("%Y-%m-%d"),
        "engines": [],
    }
    for model in args.engine:
        batch = min(args.batch, args.nonces)
        r = interleaved(model, args.seq_len, args.nonces, batch, args.pairs, args.dtype, args.prefill_ids)
        result["engines"].append(r)
        lo, hi = r["ratio_ci95"]
        print(
            f"{model} (H={r['hidden_size']}, seq_len {r['seq_len']}, {r['nonces']} nonces, {args.pairs} pairs, "
            f"{args.prefill_ids} prefill ids): "
            f"PoC / prefill {r['ratio']:.3f} (95% CI {lo:.3f}-{hi:.3f})",
            flush=True,
        )
    if args.out:
        with open(args.out, "w") as f:
            json.dump(result, f, indent=2)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
