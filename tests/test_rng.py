"""SPEC §1-3: seeds, hash and streams, against the conformance vectors and NumPy."""

import hashlib

import numpy as np
import pytest
import torch

from poc_kernels import rng

from _numpy_murmur import hash32 as np_hash32
from _numpy_murmur import key_for_hash, seed_for_hash
from _numpy_murmur import uniform as np_uniform
from _tolerances import NORMAL_ATOL

# Integer streams (seeds, hashes), uniforms and signs are compared bit for bit.


def test_seed_from_string_conformance(conformance):
    for entry in conformance["seed_from_string"]:
        assert rng.seed_from_string(entry["string"]) == entry["seed"]


@pytest.mark.parametrize("s", ["", "block_alpha_lm_head", "ブロック_ключ_nonce_7_signs", "a" * 200])
def test_seed_from_string_matches_hashlib(s):
    assert rng.seed_from_string(s) == int(hashlib.sha256(s.encode("utf-8")).hexdigest()[:8], 16)


def test_streams_conformance(conformance):
    for stream in conformance["streams"]:
        seed, n = stream["seed"], stream["n"]
        h = rng.hash32(torch.arange(n), seed)
        assert h.dtype == torch.int64
        assert torch.equal(h, torch.tensor(stream["murmur3"], dtype=torch.int64)), seed
        u = rng.uniform(seed, n)
        assert u.dtype == torch.float32
        assert torch.equal(u, torch.tensor(stream["uniform"], dtype=torch.float32)), seed
        z = rng.normal(seed, n)
        assert z.dtype == torch.float32 and z.shape == (n,)
        torch.testing.assert_close(z, torch.tensor(stream["normal"], dtype=torch.float32), atol=NORMAL_ATOL, rtol=0)


@pytest.mark.parametrize("seed", [0, 1, 7, 2**31 - 1, 2**31, 2**32 - 1, 0xDEADBEEF])
def test_hash_matches_independent_numpy(seed):
    keys = torch.cat([torch.arange(5000), torch.tensor([2**31 - 1, 2**31, 2**32 - 2, 2**32 - 1])])
    expect = np_hash32(keys.numpy().astype(np.uint32), seed).astype(np.int64)
    assert torch.equal(rng.hash32(keys, seed), torch.from_numpy(expect))
    assert torch.equal(rng.uniform(seed, 3000), torch.from_numpy(np_uniform(seed, 3000)))


def test_hash_full_range_regression():
    """SPEC §2: hashes must cover the full unsigned range (an int32 version never exceeded 2**31)."""
    h = rng.hash32(torch.arange(4096), 12345)
    assert int(h.max()) >= 2**31
    assert int(h.min()) >= 0 and int(h.max()) < 2**32
    frac_high = (h >= 2**31).double().mean().item()
    assert 0.45 < frac_high < 0.55
    u = rng.uniform(12345, 4096)
    assert float(u.min()) < 0.5 < float(u.max())


def test_hash32_dtypes_and_broadcasting():
    keys = torch.arange(10, dtype=torch.int32)
    h = rng.hash32(keys, 99)
    assert h.dtype == torch.int64
    hu = rng.hash32(keys.to(torch.uint32), 99)
    assert hu.dtype == torch.uint32
    assert torch.equal(hu.to(torch.int64), h)
    seeds = torch.tensor([[3], [99]])
    hb = rng.hash32(keys, seeds)
    assert hb.shape == (2, 10)
    assert torch.equal(hb[1], h)
    assert torch.equal(hb[0], rng.hash32(keys, 3))


def test_uniform_rounds_top_hashes_to_one():
    """SPEC §3: float32 rounds to nearest even, so hashes >= 2**32 - 128 give exactly 1.0."""
    seed = 5
    targets = [2**32 - 1, 2**32 - 128, 2**32 - 129, 2**32 - 256, 2**31, 0]
    keys = torch.tensor([key_for_hash(t, seed) for t in targets])
    assert rng.hash32(keys, seed).tolist() == targets
    u = torch.cat([rng.uniform(seed, 1, start=k) for k in keys.tolist()])
    assert u.tolist() == [1.0, 1.0, 1.0 - 2.0**-24, 1.0 - 2.0**-24, 0.5, 0.0]


def test_batched_streams_equal_single_streams():
    seeds = torch.tensor([0, 2**32 - 1, 12345, 0])
    for n in (1, 2, 7, 64, 769):
        batch = rng.normal(seeds, n)
        assert batch.shape == (4, n)
        for i, s in enumerate(seeds.tolist()):
            assert torch.equal(batch[i], rng.normal(s, n))
        ub = rng.uniform(seeds, n)
        assert torch.equal(ub[1], rng.uniform(2**32 - 1, n))


@pytest.mark.parametrize("n", [1, 2, 3, 10, 4097])
def test_normal_tiling_does_not_change_values(n):
    full = rng.normal(777, n)
    for tile in (1, 3, 64):
        assert torch.equal(rng.normal(777, n, max_tile=tile), full)


def test_normal_layout_cos_then_sin():
    # SPEC §3: N[j] = rad cos(ang), N[p + j] = rad sin(ang), p = ceil(n / 2).
    n = 11
    p = 6
    u = rng.uniform(42, 2 * p).double()
    rad = torch.sqrt(-2 * torch.log(torch.clamp(u[:p], min=1e-10)))
    ang = 2 * torch.pi * u[p:]
    expect = torch.cat([rad * torch.cos(ang), (rad * torch.sin(ang))[: n - p]])
    torch.testing.assert_close(rng.normal(42, n).double(), expect, atol=NORMAL_ATOL, rtol=0)


def test_uniform_start_offset():
    assert torch.equal(rng.uniform(9, 10, start=5), rng.uniform(9, 15)[5:])


def test_normal_writes_into_out_in_any_float_dtype():
    out = torch.full((2, 50), float("nan"), dtype=torch.float16)
    seeds = torch.tensor([1, 2])
    rng.normal(seeds, 50, out=out)
    assert torch.equal(out, rng.normal(seeds, 50).half())


@pytest.mark.parametrize(
    "call, exc, match",
    [
        (lambda: rng.seed_from_string(5), TypeError, "str"),
        (lambda: rng.hash32(torch.tensor([1.0]), 1), TypeError, "keys"),
        (lambda: rng.hash32([1, 2], 1), TypeError, "keys"),
        (lambda: rng.hash32(torch.tensor([-1]), 1), ValueError, "keys"),
        (lambda: rng.hash32(torch.tensor([2**32]), 1), ValueError, "keys"),
        (lambda: rng.hash32(torch.tensor([1]), 2**32), ValueError, "seed"),
        (lambda: rng.hash32(torch.tensor([1]), -1), ValueError, "seed"),
        (lambda: rng.hash32(torch.tensor([1]), 1.5), TypeError, "seed"),
        (lambda: rng.uniform(1, -3), ValueError, "n"),
        (lambda: rng.normal(1, 2.5), TypeError, "n"),
        (lambda: rng.normal(torch.tensor([[1]]), 4), ValueError, "seed"),
        (lambda: rng.normal(1, 4, out=torch.empty(5)), ValueError, "out"),
    ],
)
def test_rng_bad_input(call, exc, match):
    with pytest.raises(exc, match=match):
        call()


def test_normal_clamps_zero_uniform():
    """SPEC §3: u1 = max(U, 1e-10), so a zero hash gives radius sqrt(-2 log(1e-10)), not inf."""
    seed = next(s for s in range(100) if key_for_hash(0, s) < 2**31)
    j = key_for_hash(0, seed)
    assert float(rng.uniform(seed, 1, start=j)) == 0.0
    c, s = rng.normal_pairs(seed, 2**32, j, j + 1)
    rad2 = (c.double() ** 2 + s.double() ** 2).item()
    expect = -2.0 * np.log(np.float32(1e-10))
    assert np.isfinite(rad2)
    assert rad2 == pytest.approx(float(expect), rel=1e-6)


def test_seed_for_hash_helper():
    seed = seed_for_hash(2**31, 3)
    assert int(rng.hash32(torch.tensor([3]), seed)) == 2**31
