#!/usr/bin/env python3
"""Work, minimum bytes and the floor on an H100 for compute_distances, per (B, H): the table of ROOFLINE.md.

    python bench/roofline.py            # markdown table
    python bench/roofline.py --json

Counts follow the fused Triton kernels of poc_kernels/backends/triton (fixed CUDA
configuration: 64 nonces per block, so ``ceil(B / 64)`` blocks each generate or
read the whole W).
"""

from __future__ import annotations

import argparse
import json
import math

D = 8192  # output dim
R = 8  # reflections
BLOCK_B = 64  # nonces per projection program (configs.CUDA_SM80)

# H100 SXM5, dense datasheet rates.
TF32_TENSOR = 494.7e12  # FLOP/s
HBM = 3.35e12  # byte/s
SMS, CLOCK = 132, 1.98e9
ISSUE = SMS * 4 * 32 * CLOCK  # thread-instructions/s: 4 schedulers x 1 warp-instruction per clock
# SASS instructions per Box-Muller pair on the fast path (2 hashes, logf, sqrt_rn,
# cosf, sinf, scaling and masks), counted in the sm_90 SASS of a probe kernel;
# see ROOFLINE.md.
INSTR_PER_PAIR = 120
INSTR_PER_SIGN = 15  # one hash, convert, compare, select
# Per-nonce baseline on a GPU: ~440 launches per nonce, each >= ~4 us end to end.
PER_NONCE_S = 440 * 4e-6


def row(b: int, h: int, *, tf32: float = TF32_TENSOR, hbm: float = HBM, issue: float = ISSUE) -> dict:
    """Return the work, bytes and floors of one (B, H); the rates default to the H100 datasheet's.

    ``tf32``: TF32 tensor-core FLOP/s; ``hbm``: memory byte/s; ``issue``:
    thread-instructions/s (``gpu_bench.py`` passes the ceilings it measures).
    """
    nb = math.ceil(b / BLOCK_B)
    b_pad = nb * BLOCK_B
    flops = 2 * b * D * h  # the projection; reflections and epilogue add < 0.3%
    mma_flops = 3 * 2 * b_pad * D * h  # tf32x3: three TF32 products, padded rows included
    pairs_w = nb * D * h // 2  # W generated once per nonce block (on the fly)
    pairs_prep = b * R * h  # 2R streams of H/2 pairs per nonce (each vector made twice)
    instr_otf = pairs_w * INSTR_PER_PAIR + pairs_prep * INSTR_PER_PAIR + b * h * INSTR_PER_SIGN
    instr_cached = pairs_prep * INSTR_PER_PAIR + b * h * INSTR_PER_SIGN
    bytes_min = b * h * 4 + b * (1 + R) * 8 + D * 4 + b * 4  # fp32 input, seeds, target, output
    bytes_cached = bytes_min + D * h * 4  # W read once (the nonce blocks sharing a tile run together)
    t_mma = mma_flops / tf32
    floor_otf = max(t_mma, instr_otf / issue, bytes_min / hbm)
    floor_cached = max(t_mma, instr_cached / issue, bytes_cached / hbm)
    return {
        "B": b,
        "H": h,
        "gflop": flops / 1e9,
        "tf32x3_gflop": mma_flops / 1e9,
        "min_mb": bytes_min / 1e6,
        "min_mb_cached": bytes_cached / 1e6,
        "hash_m": (2 * (pairs_w + pairs_prep) + b * h) / 1e6,
        "transcendental_m": 4 * (pairs_w + pairs_prep) / 1e6,
        "t_mma_ms": t_mma * 1e3,
        "t_gen_ms": instr_otf / issue * 1e3,
        "floor_otf_ms": floor_otf * 1e3,
        "floor_cached_ms": floor_cached * 1e3,
        "per_nonce_ms": b * PER_NONCE_S * 1e3,
    }


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--json", action="store_true")
    args = p.parse_args(argv)
    rows = [row(b, h) for h in (1024, 2048, 4096) for b in (64, 256, 1024)]
    if args.json:
        print(json.dumps(rows, indent=1))
        return 0
    print(
        "| B | H | GFLOP (2BDH) | tf32x3 GFLOP | min MB (on the fly / cached) | hashes (M) | log+sqrt+cos+sin (M) "
        "| MMA ms | generation ms | floor ms on the fly | floor ms cached | 100x per-nonce target ms |"
    )
    print("|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
    for r in rows:
        print(
            f"| {r['B']} | {r['H']} | {r['gflop']:.1f} | {r['tf32x3_gflop']:.1f} | "
            f"{r['min_mb']:.2f} / {r['min_mb_cached']:.1f} | {r['hash_m']:.0f} | {r['transcendental_m']:.0f} | "
            f"{r['t_mma_ms']:.3f} | {r['t_gen_ms']:.3f} | {r['floor_otf_ms']:.3f} | {r['floor_cached_ms']:.3f} | "
            f"{r['per_nonce_ms'] / 100:.1f} |"
        )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
