"""Seed derivation (SPEC §1: input, signs and 8 reflection seeds per nonce) next to the distance computation.

Implementations: the hashlib loop (``seeds.derive_nonce_seeds_hashlib``), the
C++ op (SHA-NI where the CPU has it; batches up to 2048 nonces run on one
thread, larger ones on all of torch's threads) and the CUDA op when a GPU is
present. Single-core figures of each SHA-256 implementation come from
``make bench-sha256``. (Nothing here changes ``torch.set_num_threads``: on a
2-core machine, switching the thread count leaves torch's thread pools
spinning for a while and slows whatever runs next.) The summary prints microseconds per nonce and
that time as a share of the fastest ``compute_distances`` of the same run
at H=1024 (``test_throughput.py``, or the context row below), i.e. how visible
seed derivation is next to the distances.
"""

import pytest
import torch

import poc_kernels
from poc_kernels import _custom_ops as ops
from poc_kernels.seeds import derive_nonce_seeds_hashlib

BATCHES = [64, 4096, 65536]


IMPLS = {"hashlib": lambda nonces: derive_nonce_seeds_hashlib("bench_block", "bench_key", nonces.tolist(), 8)}
if ops.HAS_EXT:
    IMPLS["cpp"] = lambda nonces: ops.derive_seeds("bench_block", "bench_key", nonces, 8)
if ops.HAS_CUDA_EXT and torch.cuda.is_available():
    IMPLS["cuda"] = lambda nonces: ops.derive_seeds("bench_block", "bench_key", nonces, 8)


@pytest.mark.parametrize("batch", BATCHES)
@pytest.mark.parametrize("impl", list(IMPLS))
def test_seed_derivation(run_bench, impl, batch):
    if impl == "hashlib" and batch > 4096:
        pytest.skip("the hashlib loop is timed up to 4096 nonces (its cost per nonce is flat)")
    nonces = torch.arange(batch, dtype=torch.int64) * 65537 % 2**32
    if impl == "cuda":
        nonces = nonces.cuda()
    out = run_bench(lambda: IMPLS[impl](nonces), impl=f"seeds/{impl}", batch=batch, hidden=0, rounds=5, kind="seeds")
    signs = out.signs if impl == "hashlib" else out[1]
    assert signs.shape == (batch,)


@pytest.mark.skipif("cpp" not in poc_kernels.available_backends("cpu"), reason="the cpp backend is not built")
def test_distance_context(run_bench):
    """compute_distances with the cpp backend at H=1024, B=256: the time seed derivation is compared with."""
    x = torch.randn(256, 1024, generator=torch.Generator().manual_seed(0))
    nonces = list(range(256))
    d = run_bench(
        lambda: poc_kernels.compute_distances(x, "bench_block", "bench_key", nonces, backend="cpp"),
        impl="cpp-context",
        batch=256,
        hidden=1024,
        rounds=3,
    )
    assert torch.isfinite(d).all()
