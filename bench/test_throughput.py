"""Throughput of compute_distances (nonces/s) for every implementation, against the per-nonce baseline.

Implementations (baselines come from ``poc_kernels.baselines``, where the tests
take them from):

- ``per-nonce``: SPEC.md followed literally, one nonce and one reflection at a
  time in float32, the way the original code works;
- ``batched-fp32``: a strong plain-PyTorch pipeline (all nonces at once, cached
  float32 W, one MKL/cuBLAS matmul with TF32 off);
- ``reference``: the float64, batch-invariant oracle (``backend="reference"``);
- ``reference-compiled``: the oracle's numeric core under ``torch.compile``;
- ``triton-on_the_fly`` / ``triton-cached``: the fused Triton kernels, W
  generated inside the matmul or materialized once (CUDA only);
- any other backend of ``poc_kernels.available_backends()`` (e.g. ``cpp``).

Every implementation gets the same cached lm_head and is warmed up first, so
lm_head generation and compilation stay out of the timings.
"""

import pytest
import torch

import poc_kernels
from poc_kernels import baselines

BATCHES = [64, 256, 1024]
HIDDEN_SIZES = [1024, 2048, 4096]
CUDA = torch.cuda.is_available()
DEVICE = "cuda" if CUDA else "cpu"

IMPLS = {
    "per-nonce": baselines.compute_distances_per_nonce,
    "batched-fp32": baselines.compute_distances_batched_fp32,
    "reference": lambda *a: poc_kernels.compute_distances(*a, backend="reference"),
    "reference-compiled": baselines.compute_distances_compiled,
}
if CUDA and "triton" in poc_kernels.available_backends("cuda"):
    for _mode in ("on_the_fly", "cached"):
        IMPLS[f"triton-{_mode}"] = lambda *a, _m=_mode: poc_kernels.compute_distances(*a, backend="triton", lm_head=_m)
for _name in poc_kernels.available_backends(DEVICE):
    if _name not in ("reference", "triton"):
        IMPLS[_name] = lambda *a, _b=_name: poc_kernels.compute_distances(*a, backend=_b)


@pytest.mark.parametrize("hidden", HIDDEN_SIZES)
@pytest.mark.parametrize("batch", BATCHES)
@pytest.mark.parametrize("impl", list(IMPLS))
def test_compute_distances_throughput(run_bench, impl, batch, hidden):
    g = torch.Generator().manual_seed(0)
    x = torch.randn(batch, hidden, generator=g).to(DEVICE)
    nonces = list(range(batch))
    fn = IMPLS[impl]
    # a median of 3 drops one disturbed round of the slow ones
    slow = impl == "per-nonce" or (not CUDA and impl.startswith("reference") and batch * hidden >= 1024 * 2048)
    d = run_bench(
        lambda: fn(x, "bench_block", "bench_key", nonces),
        impl=impl,
        batch=batch,
        hidden=hidden,
        rounds=3 if slow else 5,
    )
    assert d.shape == (batch,) and torch.isfinite(d).all()
