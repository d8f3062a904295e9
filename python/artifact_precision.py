#!/usr/bin/env python3
"""Honest hardware differences in the artifact scheme: the same nonces through a float32 and a bfloat16 engine.

Runs the artifact scheme (SPEC-ARTIFACTS.md) on the same model twice, once in
each dtype, which emulates two honest nodes whose hardware rounds differently,
and reports the distribution of the L2 distance between their float16
artifacts (as a validator decodes them): mean, p98 and max, and the mismatch
rate an honest node would see at the deployed thresholds (0.02, the node's
default, and 0.4, the network client's fallback).

    python python/artifact_precision.py --nonces 256 [--json]
"""

from __future__ import annotations

import argparse
import json
import sys
import time

import numpy as np
import torch

from poc_kernels import validation
from poc_kernels.constants import ARTIFACT_DIST_THRESHOLD, NETWORK_DIST_THRESHOLD

from _common import add_model_round_options, add_verbose_option, make_engine, model_path, quiet_engine_logs


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    add_model_round_options(p, nonces=256)
    p.add_argument("--dtypes", nargs=2, default=["float32", "bfloat16"], help="the two engines' dtypes")
    p.add_argument("--json", action="store_true")
    add_verbose_option(p)
    return p.parse_args(argv)


def artifacts_in(dtype: str, args, path: str, nonces: list) -> tuple[torch.Tensor, float, str]:
    engine = make_engine(args.engine, path, dtype, args.seq_len, args.batch_size, eager=True, verbose=args.verbose)
    try:
        t0 = time.perf_counter()
        parts = [
            engine.run(args.block_hash, args.public_key, nonces[i : i + args.batch_size], scheme="artifact")[0]
            for i in range(0, len(nonces), args.batch_size)
        ]
        return torch.cat(parts), time.perf_counter() - t0, engine.name
    finally:
        engine.close()


def main(argv=None) -> int:
    args = parse_args(argv)
    quiet_engine_logs(args.verbose)
    path = model_path(args.model)
    nonces = list(range(args.nonces))
    (a, ta, name), (b, tb, _) = (artifacts_in(dtype, args, path, nonces) for dtype in args.dtypes)
    cmp = validation.compare_artifacts(validation.encode_artifacts(a), b)
    d = cmp.distances[~cmp.skipped]
    out = {
        "model": path,
        "engine": name,
        "dtypes": args.dtypes,
        "nonces": len(nonces),
        "seq_len": args.seq_len,
        "skipped": int(cmp.skipped.sum()),
        "l2": {
            "mean": float(d.mean()),
            "p50": float(np.median(d)),
            "p98": float(np.quantile(d, 0.98)),
            "max": float(d.max()),
        },
        "mismatch_rate": {str(t): float(np.mean(d > t)) for t in (ARTIFACT_DIST_THRESHOLD, NETWORK_DIST_THRESHOLD)},
        "seconds": [ta, tb],
    }
    if args.json:
        print(json.dumps(out, indent=1))
        return 0
    print(f"{len(nonces)} nonces of {args.seq_len} tokens, {name}, {args.dtypes[0]} vs {args.dtypes[1]}")
    print(
        f"L2 between the float16 artifacts: mean {out['l2']['mean']:.4f}, median {out['l2']['p50']:.4f}, "
        f"p98 {out['l2']['p98']:.4f}, max {out['l2']['max']:.4f}"
    )
    for t, rate in out["mismatch_rate"].items():
        print(f"  honest mismatch rate at dist_threshold {t}: {100 * rate:.1f}%")
    return 0


if __name__ == "__main__":
    sys.exit(main())
