#!/usr/bin/env python3
"""The trained-model structure check of the original study, on a real model.

A trained model's output has structure: with its own (trained) lm_head and no
randomization, the direction of the logits is far from uniform, and the
distance to a random unit target is compressed below the √2 of a uniform
direction (the study: 1.2155 on Qwen3-0.6B). PoC v2 breaks that structure:
per-nonce sign flips, 8 Householder reflections and a random lm_head. This
script feeds the nonces' input embeddings through the model and compares, on
the same final-norm hidden states:

- ``trained lm_head``: ``logits = W_embed h`` (the tied/trained head), distance
  of ``logits / ||logits||`` to a seeded unit target in vocabulary space;
- ``random lm_head only``: the PoC projection without sign flips or reflections;
- ``full sign-flip pipeline``: PoC v2 as deployed (SPEC §5);

and prints how concentrated the hidden states are (the share of the norm in
the largest coordinate), which is what limits the randomization, and the full
pipeline's distances split by the sign the per-nonce flips leave on that
coordinate.

    python python/trained_structure.py --nonces 128
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np
import torch

import poc_kernels
from poc_kernels import distribution, rng, vectors
from poc_kernels.seeds import derive_nonce_seeds, target_seed

from _common import add_model_round_options, add_verbose_option, default_dtype, make_engine, model_path


def trained_head(path: str) -> torch.Tensor:
    """Return the model's output head ``[vocab, H]`` (float32): lm_head, or the tied embeddings."""
    from safetensors.torch import load_file

    state = {}
    for f in sorted(Path(path).glob("*.safetensors")):
        state.update(load_file(str(f)))
    for name in ("lm_head.weight", "model.embed_tokens.weight"):
        if name in state:
            return state[name].float()
    raise SystemExit(f"no lm_head.weight or model.embed_tokens.weight in {path}")


def stats(d: np.ndarray, r_target: float, dim: int) -> dict:
    return {
        "mean": float(d.mean()),
        "std": float(d.std()),
        "valid_rate": float(np.mean(d < r_target)),
        "analytic_mean": distribution.distance_mean(dim),
        "analytic_std": distribution.distance_std(dim),
        "analytic_valid_rate": distribution.valid_rate(r_target, dim),
    }


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    add_model_round_options(p, nonces=128)
    p.add_argument("--r-target", type=float, default=1.416)
    p.add_argument("--json", action="store_true")
    add_verbose_option(p)
    args = p.parse_args(argv)

    path = model_path(args.model)
    engine = make_engine(args.engine, path, default_dtype(), args.seq_len, args.batch_size, verbose=args.verbose)
    nonces = list(range(args.nonces))
    hidden, full = [], []
    for i in range(0, len(nonces), args.batch_size):
        d, h = engine.run(args.block_hash, args.public_key, nonces[i : i + args.batch_size], True, True)
        full.append(d)
        hidden.append(h)
    engine.close()
    h = torch.cat(hidden).double()
    d_full = torch.cat(full).double().numpy()

    head = trained_head(path).double()
    vocab = head.shape[0]
    t = rng.normal(target_seed(args.block_hash), vocab).double()
    t = t / t.norm()
    logits = h @ head.T
    d_trained = (logits / logits.norm(dim=1, keepdim=True) - t).norm(dim=1).numpy()
    d_random_only = (
        poc_kernels.compute_distances(
            h.float(), args.block_hash, args.public_key, nonces, sign_flips=False, num_reflections=0
        )
        .double()
        .numpy()
    )

    top = h.abs().max(dim=1)
    share = (top.values / h.norm(dim=1)).numpy()
    dims, counts = np.unique(top.indices.numpy(), return_counts=True)
    # The sign that the per-nonce flips leave on the dominant coordinate picks one of two directions
    # for almost all of the vector, so the full pipeline's distances split by it.
    k = int(dims[np.argmax(counts)])
    flips = vectors.sign_flips(derive_nonce_seeds(args.block_hash, args.public_key, nonces).signs, h.shape[1])
    outlier_sign = (torch.sign(h[:, k]) * flips[:, k].double()).numpy()
    split = {
        label: {
            "nonces": int(mask.sum()),
            "mean": float(d_full[mask].mean()) if mask.any() else None,
            "std": float(d_full[mask].std()) if mask.any() else None,
            "valid_rate": float(np.mean(d_full[mask] < args.r_target)) if mask.any() else None,
        }
        for label, mask in (("+", outlier_sign > 0), ("-", outlier_sign < 0))
    }
    result = {
        "model": path,
        "engine": engine.name,
        "nonces": len(nonces),
        "seq_len": args.seq_len,
        "r_target": args.r_target,
        "trained_lm_head": stats(d_trained, args.r_target, vocab),
        "random_lm_head_only": stats(d_random_only, args.r_target, poc_kernels.POC_OUTPUT_DIM),
        "full_sign_flip_pipeline": stats(d_full, args.r_target, poc_kernels.POC_OUTPUT_DIM),
        "hidden": {
            "largest_coordinate_share_mean": float(share.mean()),
            "largest_coordinate_share_min": float(share.min()),
            "largest_coordinate_dims": {int(k): int(v) for k, v in zip(dims, counts)},
            "participation_ratio_mean": float(((h**2).sum(1) ** 2 / (h**4).sum(1)).mean()),
            "hidden_size": int(h.shape[1]),
        },
        "full_pipeline_by_outlier_sign": {"dim": k, **split},
    }
    if args.json:
        print(json.dumps(result, indent=1))
        return 0
    print(
        f"{Path(path).name} via {engine.name}: {len(nonces)} nonces of {args.seq_len} tokens, "
        f"{args.block_hash}/{args.public_key}"
    )
    print(f"\n{'':<28}{'mean':>9}{'std':>9}{'valid':>9}   analytic mean / std / valid (dim)")
    for key, dim in (("trained_lm_head", vocab), ("random_lm_head_only", 8192), ("full_sign_flip_pipeline", 8192)):
        r = result[key]
        print(
            f"{key.replace('_', ' '):<28}{r['mean']:>9.4f}{r['std']:>9.4f}{r['valid_rate']:>8.1%}   "
            f"{r['analytic_mean']:.4f} / {r['analytic_std']:.4f} / {r['analytic_valid_rate']:.1%} ({dim})"
        )
    hs = result["hidden"]
    print(
        f"\nfinal-norm hidden states: the largest coordinate holds {hs['largest_coordinate_share_mean']:.0%} of "
        f"the norm on average (min {hs['largest_coordinate_share_min']:.0%}), at dims "
        f"{hs['largest_coordinate_dims']}; participation ratio {hs['participation_ratio_mean']:.1f} "
        f"of {hs['hidden_size']}"
    )
    sp = result["full_pipeline_by_outlier_sign"]
    print(f"full pipeline split by the sign the flips leave on dim {sp['dim']}:")
    for label in ("+", "-"):
        g = sp[label]
        if g["nonces"]:
            print(
                f"  {label}: {g['nonces']:>5} nonces, mean {g['mean']:.4f}, std {g['std']:.4f}, "
                f"valid {g['valid_rate']:.1%}"
            )
    return 0


if __name__ == "__main__":
    sys.exit(main())
