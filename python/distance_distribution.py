#!/usr/bin/env python3
"""Distances of random hidden states against the analytic law (SPEC §8), with throughput.

Feeds ``--nonces`` random hidden states of size ``--hidden-size`` through
``poc_kernels.compute_distances`` in batches, then prints the throughput and
the distance statistics next to the analytic expectation: mean, standard
deviation, quantiles, the valid rate at ``--r-target`` and a Kolmogorov-Smirnov
test against the Beta law of a uniform direction in 8192 dimensions.

    python python/distance_distribution.py --nonces 4096 --hidden-size 1024
"""

from __future__ import annotations

import argparse
import json
import sys

import numpy as np
import torch
from scipy import stats

import poc_kernels
from poc_kernels import distribution

from _common import device_label, pick_device, positive_int, random_state_distances


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--nonces", type=positive_int, default=4096, help="number of nonces (default 4096)")
    p.add_argument("--hidden-size", type=positive_int, default=1024, help="hidden size H (default 1024)")
    p.add_argument("--batch-size", type=positive_int, default=256, help="nonces per call (default 256)")
    p.add_argument("--block-hash", default="block_alpha")
    p.add_argument("--public-key", default="node_A")
    p.add_argument("--r-target", type=float, default=1.416, help="distance threshold (default 1.416)")
    p.add_argument("--backend", default="auto", choices=("auto",) + poc_kernels.BACKENDS)
    p.add_argument("--device", default="auto", help="'auto' (CUDA when available), 'cpu', 'cuda', ...")
    p.add_argument("--seed", type=int, default=0, help="seed of the random hidden states")
    p.add_argument("--no-sign-flips", action="store_true", help="disable the per-nonce sign flips")
    p.add_argument("--json", action="store_true", help="print one JSON object instead of tables")
    args = p.parse_args(argv)
    if not 0.0 < args.r_target < 2.0:
        p.error(f"--r-target must lie in (0, 2), got {args.r_target}")
    return args


def main(argv=None) -> int:
    args = parse_args(argv)
    device = pick_device(args.device)
    backend = args.backend
    if backend == "auto":
        backend = poc_kernels.auto_backend(device)
    dist, setup_s, compute_s = random_state_distances(
        args.block_hash,
        args.public_key,
        args.nonces,
        args.hidden_size,
        batch_size=args.batch_size,
        device=device,
        seed=args.seed,
        sign_flips=not args.no_sign_flips,
        backend=backend,
    )
    d = dist.numpy()

    dim = poc_kernels.POC_OUTPUT_DIM
    quantiles = (0.01, 0.10, 0.50, 0.90)
    ks = stats.kstest(d, lambda r: distribution.distance_cdf(r, dim))
    result = {
        "backend": backend,
        "device": device_label(device),
        "threads": torch.get_num_threads(),
        "nonces": args.nonces,
        "hidden_size": args.hidden_size,
        "batch_size": args.batch_size,
        "setup_s": setup_s,
        "compute_s": compute_s,
        "nonces_per_s": args.nonces / compute_s,
        "measured": {
            "mean": float(d.mean()),
            "std": float(d.std()),
            **{f"p{int(q * 100)}": float(np.quantile(d, q)) for q in quantiles},
            "valid_rate": float(np.mean(d < args.r_target)),
        },
        "analytic": {
            "mean": distribution.distance_mean(dim),
            "std": distribution.distance_std(dim),
            **{f"p{int(q * 100)}": distribution.r_target_for_valid_rate(q, dim) for q in quantiles},
            "valid_rate": distribution.valid_rate(args.r_target, dim),
        },
        "r_target": args.r_target,
        "ks_statistic": float(ks.statistic),
        "ks_pvalue": float(ks.pvalue),
    }
    if args.json:
        print(json.dumps(result, indent=1))
        return 0

    print(
        f"poc_kernels {poc_kernels.__version__} | backend {backend} | device {result['device']}"
        f" ({result['threads']} CPU threads) | torch {torch.__version__}"
    )
    print(
        f"{args.nonces} nonces, H={args.hidden_size}, batches of {args.batch_size}, "
        f"block_hash={args.block_hash!r}, public_key={args.public_key!r}, "
        f"sign flips {'off' if args.no_sign_flips else 'on'}"
    )
    print(f"setup (lm_head {dim}x{args.hidden_size} and target, first call): {setup_s:.2f} s")
    print(f"throughput: {result['nonces_per_s']:.0f} nonces/s ({compute_s:.2f} s for {args.nonces} nonces)")
    print()
    print(f"{'':<18}{'measured':>12}{'analytic':>12}")
    m, a = result["measured"], result["analytic"]
    for key in ("mean", "std") + tuple(f"p{int(q * 100)}" for q in quantiles):
        print(f"{key:<18}{m[key]:>12.5f}{a[key]:>12.5f}")
    label = f"valid @ {args.r_target:g}"
    print(f"{label:<18}{m['valid_rate']:>11.1%} {a['valid_rate']:>11.1%}")
    verdict = "consistent with" if ks.pvalue > 0.01 else "REJECTS"
    print(f"\nKolmogorov-Smirnov vs the analytic law: D = {ks.statistic:.4f}, p = {ks.pvalue:.3f} ({verdict} the law)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
