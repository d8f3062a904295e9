"""Throughput of compute_artifacts (nonces/s) on every backend of this machine, against the oracle.

The artifact scheme's post-processing is small (a norm over H, k passes of a
pick over H hashes, k - 1 reflections in R^k), so its cost per nonce is about
that of reading the hidden state and hashing H indices once per picked
coordinate. Seeds (one pick and k - 1 Haar seeds per nonce) come from hashlib
on every backend.
"""

import pytest
import torch

import poc_kernels

BATCHES = [64, 1024]
HIDDEN_SIZES = [1024, 4096]
DEVICE = "cuda" if torch.cuda.is_available() else "cpu"
IMPLS = [b for b in poc_kernels.available_backends(DEVICE) if DEVICE == "cuda" or b != "triton"]


@pytest.mark.parametrize("hidden", HIDDEN_SIZES)
@pytest.mark.parametrize("batch", BATCHES)
@pytest.mark.parametrize("impl", IMPLS)
def test_compute_artifacts_throughput(run_bench, impl, batch, hidden):
    x = torch.randn(batch, hidden, generator=torch.Generator().manual_seed(0)).to(DEVICE)
    nonces = torch.arange(batch)
    y = run_bench(
        lambda: poc_kernels.compute_artifacts(x, "bench_block", "bench_key", nonces, backend=impl),
        impl=f"artifacts/{impl}",
        batch=batch,
        hidden=hidden,
        rounds=3,
        kind="artifacts",
    )
    assert y.shape == (batch, 12) and torch.isfinite(y).all()
