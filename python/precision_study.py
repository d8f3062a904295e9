#!/usr/bin/env python3
"""How precise must the projection matmul be? Emulated fp32 dot-product schemes against float64.

SPEC §5 requires distances within 1e-6 of the float64 evaluation. This script
computes ``l = W x`` for random nonces with the operands rounded the way each
tensor-core scheme rounds them, and reports the resulting distance errors:

- ``ieee``: float32 products and float32 accumulation (CUDA-core FMA);
- ``tf32``: operands rounded to TF32 (10-bit mantissa), exact products, float32 sum;
- ``tf32x3``: ``a_hi b_hi + a_hi b_lo + a_lo b_hi`` with ``a_hi = tf32(a)``,
  ``a_lo = tf32(a - a_hi)`` (Triton's ``input_precision="tf32x3"``);
- ``bf16x3``: the same split with bfloat16 parts (``"bf16x3"``).

Products are exact in float64 and each output is rounded to float32 once, so
the table isolates the input rounding of each scheme (``ieee`` shows the cost
of float32 accumulation alone).

    python python/precision_study.py --nonces 512 --hidden-size 1024
"""

from __future__ import annotations

import argparse
import sys

import torch

from poc_kernels import vectors
from poc_kernels.seeds import derive_nonce_seeds

from _common import positive_int

SPEC_BOUND = 1e-6


def round_tf32(x: torch.Tensor) -> torch.Tensor:
    """Round float32 values to TF32 (10 explicit mantissa bits), to nearest, ties away (cvt.rna)."""
    bits = x.float().view(torch.int32).to(torch.int64) & 0xFFFFFFFF
    bits = ((bits + 0x1000) & 0xFFFFE000) & 0xFFFFFFFF
    bits = torch.where(bits >= 2**31, bits - 2**32, bits).to(torch.int32)
    return bits.view(torch.float32)


def round_bf16(x: torch.Tensor) -> torch.Tensor:
    return x.float().to(torch.bfloat16).float()


def split(x: torch.Tensor, rnd) -> tuple[torch.Tensor, torch.Tensor]:
    hi = rnd(x)
    return hi, rnd(x.float() - hi)


def distances_from_logits(logits: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
    y = logits / logits.norm(dim=1, keepdim=True)
    return (y - t).norm(dim=1)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--nonces", type=positive_int, default=512)
    p.add_argument("--hidden-size", type=positive_int, default=1024)
    p.add_argument("--block-hash", default="block_alpha")
    args = p.parse_args(argv)
    b, h = args.nonces, args.hidden_size

    g = torch.Generator().manual_seed(0)
    hidden = torch.randn(b, h, generator=g)
    nonces = list(range(b))
    # x after sign flips and reflections, float64 (the reference's own steps)
    seeds = derive_nonce_seeds(args.block_hash, "node", nonces)
    x = hidden.double() * vectors.sign_flips(seeds.signs, h).double()
    v = vectors.reflection_vectors(seeds.reflections, h)
    for r in range(v.shape[1]):
        x = x - 2 * (x * v[:, r]).sum(1, keepdim=True) * v[:, r]
    x = x / x.norm(dim=1, keepdim=True)
    x32 = x.float()
    w32 = vectors.lm_head(args.block_hash, h)
    t = vectors.target(args.block_hash)

    exact = distances_from_logits(x32.double() @ w32.double().T, t)
    schemes = {
        "ieee": (x32 @ w32.T).double(),
        "tf32": (round_tf32(x32).double() @ round_tf32(w32).double().T).float().double(),
    }
    for name, rnd in (("tf32x3", round_tf32), ("bf16x3", round_bf16)):
        xh, xl = split(x32, rnd)
        wh, wl = split(w32, rnd)
        l64 = xh.double() @ wh.double().T + xh.double() @ wl.double().T + xl.double() @ wh.double().T
        schemes[name] = l64.float().double()

    print(f"distance error against float64, {b} nonces, H={h}, D={w32.shape[0]} (SPEC bound {SPEC_BOUND:g})")
    print(f"{'scheme':<8} {'max':>10} {'p99.9':>10} {'mean':>10}  within bound")
    for name, logits in schemes.items():
        err = (distances_from_logits(logits, t) - exact).abs()
        q = torch.quantile(err, 0.999).item()
        ok = "yes" if err.max().item() <= SPEC_BOUND else "NO"
        print(f"{name:<8} {err.max().item():>10.2e} {q:>10.2e} {err.mean().item():>10.2e}  {ok}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
