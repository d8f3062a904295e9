#!/usr/bin/env python3
"""A proposal measured, not a contract change: subtract a public per-model mean hidden state before the
distance scheme's post-processing, and see whether `poc-kernels audit`'s model-free attack still works.

The sign-flip scheme leaks on SmolLM2 because the final hidden state is nearly
constant (one massive coordinate): its post-processing is public, so a cheater
post-processes a predicted state. Centering, ``h - mu`` with ``mu`` the mean
final state over a public set of inputs (published per model, the same for
every block), removes the constant part. This script runs, on the same nonces:

- the scheme as specified (SPEC §5 on ``h``);
- the centered variant (SPEC §5 on ``h - mu``);

and for each the honest valid rate at ``r_target``, the distance mean and std
against the analytic law, the structure of what the post-processing sees, and
the audit's attack (its predictor sees ``mean(calibration) - mu`` in the
variant). ``mu`` comes from ``--public`` nonces of a public key on a block
that is not audited.

    python python/audit_centering.py --nonces 128
"""

from __future__ import annotations

import argparse
import json
import sys

import numpy as np

from poc_kernels import audit
from poc_kernels.validation import distribution

from _common import model_path, positive_int

PUBLIC_BLOCK = "public_mean_block"
PUBLIC_KEY = "public_mean"


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--model", default=None, help="checkpoint directory (default: SmolLM2-135M-Instruct)")
    p.add_argument("--nonces", type=positive_int, default=128)
    p.add_argument("--calibration", type=positive_int, default=32)
    p.add_argument("--public", type=positive_int, default=64, help="inputs of the public mean (default 64)")
    p.add_argument("--seq-len", type=positive_int, default=16)
    p.add_argument("--blocks", default="block_alpha,block_beta")
    p.add_argument("--r-target", type=float, default=1.416)
    p.add_argument("--json", action="store_true")
    args = p.parse_args(argv)
    hidden = audit.HiddenStates.from_path(model_path(args.model), seq_len=args.seq_len)
    mu = hidden(PUBLIC_BLOCK, PUBLIC_KEY, list(range(args.public)), "sign_flips", False).mean(dim=0, keepdim=True)
    challenged, public = list(range(args.nonces)), list(range(args.calibration))
    rows = []
    for block in [b for b in args.blocks.split(",") if b]:
        h = hidden(block, audit.PUBLIC_KEY, challenged, "sign_flips", False)
        cal = hidden(block, audit.CALIBRATION_KEY, public, "sign_flips", False)
        for variant, shift in (("as specified", 0.0), ("centered", mu)):
            hv, calv = h - shift, cal - shift
            a = audit._distance_attack(
                hv, calv, block, challenged, public, flips=True, projection=False, r_target=args.r_target
            )
            d = np.asarray(a.pop("distances"))
            rows.append(
                {
                    "block": block,
                    "variant": variant,
                    "mean": float(d.mean()),
                    "std": float(d.std()),
                    "structure": audit.structure(hv),
                    **{
                        k: a[k] for k in ("honest_valid_rate", "best_predictor", "claimed_fraction", "false_claim_rate")
                    },
                    "power_at_200": a["conviction"]["power"]["200"],
                }
            )
    if args.json:
        print(json.dumps({"rows": rows, "analytic_mean": distribution.distance_mean()}, indent=1))
        return 0
    print(
        f"analytic: mean {distribution.distance_mean():.5f}, std {distribution.distance_std():.5f}, "
        f"valid {100 * distribution.valid_rate(args.r_target):.1f}% at {args.r_target}"
    )
    print(
        f"{'block':<12} {'variant':<13} {'mean':>8} {'std':>7} {'valid':>6} {'top1':>6} {'PR':>6} "
        f"{'predictor':>13} {'claimed':>8} {'false':>6} {'power@200':>9}"
    )
    for r in rows:
        print(
            f"{r['block']:<12} {r['variant']:<13} {r['mean']:>8.5f} {r['std']:>7.5f} "
            f"{100 * r['honest_valid_rate']:>5.1f}% {100 * r['structure']['top1_norm_share']:>5.1f}% "
            f"{r['structure']['participation_ratio']:>6.1f} {r['best_predictor']:>13} "
            f"{100 * r['claimed_fraction']:>7.1f}% {100 * r['false_claim_rate']:>5.1f}% "
            f"{100 * r['power_at_200']:>8.1f}%"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
