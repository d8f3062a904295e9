"""Determinism and independence: bitwise, so validators recompute exactly what provers computed."""

import numpy as np
import pytest
import torch

import poc_kernels
from poc_kernels import reference

from _backends import backend_devices
from _tolerances import NORMAL_ATOL, ORACLE_DIST_ATOL

# (hidden size, output dim): the odd size runs with a smaller projection to keep
# the interpreted Triton kernels fast; batch composition is independent of D.
SHAPES = [(64, 8192), (769, 1024)]
BACKEND_DEVICES = backend_devices()


def _hidden(b, h, seed=0, dtype=torch.float32, device="cpu"):
    g = torch.Generator().manual_seed(seed)
    return (torch.randn(b, h, generator=g) * 3).to(dtype).to(device)


@pytest.mark.parametrize("backend, device", BACKEND_DEVICES)
@pytest.mark.parametrize("hidden, output_dim", SHAPES)
def test_same_call_twice_is_bitwise_equal(backend, device, hidden, output_dim):
    x = _hidden(70, hidden, device=device)
    nonces = list(range(100, 170))
    a = poc_kernels.compute_distances(x, "blk", "key", nonces, output_dim=output_dim, backend=backend)
    b = poc_kernels.compute_distances(x, "blk", "key", nonces, output_dim=output_dim, backend=backend)
    assert torch.equal(a, b)
    assert torch.isfinite(a).all()


@pytest.mark.parametrize("backend, device", BACKEND_DEVICES)
@pytest.mark.parametrize("hidden, output_dim", SHAPES)
def test_batch_invariance(backend, device, hidden, output_dim):
    """A nonce alone gives the same bits as inside any batch, at any position."""
    pool = 70  # more than one block of nonces for every backend, and not a multiple of one
    x = _hidden(pool, hidden, seed=1, device=device)
    nonces = torch.arange(7_000, 7_000 + pool)
    kw = dict(output_dim=output_dim, backend=backend)
    full = poc_kernels.compute_distances(x, "blk", "key", nonces, **kw)
    rng = np.random.default_rng(0)
    for i in (0, 1, 15, 16, 17, 63, 64, 69):
        alone = poc_kernels.compute_distances(x[i : i + 1], "blk", "key", nonces[i : i + 1], **kw)
        assert torch.equal(alone, full[i : i + 1]), f"nonce index {i} differs alone"
    for size in (2, 3, 17, 33, 65):
        idx = torch.from_numpy(rng.choice(pool, size=size, replace=False))
        part = poc_kernels.compute_distances(x[idx.to(device)], "blk", "key", nonces[idx], **kw)
        assert torch.equal(part, full[idx.to(device)]), f"batch of {size} differs"


@pytest.mark.parametrize("backend, device", BACKEND_DEVICES)
def test_inputs_change_the_distance(backend, device):
    x = _hidden(1, 64, device=device).expand(2, 64)
    base = poc_kernels.compute_distances(x[:1], "blk", "key", [5], backend=backend)
    assert not torch.equal(base, poc_kernels.compute_distances(x[:1], "blk", "key", [6], backend=backend))
    assert not torch.equal(base, poc_kernels.compute_distances(x[:1], "blk2", "key", [5], backend=backend))
    assert not torch.equal(base, poc_kernels.compute_distances(x[:1], "blk", "key2", [5], backend=backend))
    assert not torch.equal(
        base, poc_kernels.compute_distances(x[:1], "blk", "key", [5], sign_flips=False, backend=backend)
    )
    # the same hidden state under two nonces of one batch gives two distances
    two = poc_kernels.compute_distances(x, "blk", "key", [5, 6], backend=backend)
    assert two[0] != two[1]


@pytest.mark.parametrize("backend, device", BACKEND_DEVICES)
def test_dtypes_and_layouts(backend, device):
    x32 = _hidden(5, 96, seed=3, device=device)
    nonces = [1, 2, 3, 4, 5]
    ref = poc_kernels.compute_distances(x32, "blk", "key", nonces, backend=backend)
    # non-contiguous views of the same values
    wide = torch.zeros(5, 192, device=device)
    wide[:, ::2] = x32
    assert not wide[:, ::2].is_contiguous()
    assert torch.equal(poc_kernels.compute_distances(wide[:, ::2], "blk", "key", nonces, backend=backend), ref)
    xt = x32.t().contiguous().t()
    assert not xt.is_contiguous()
    assert torch.equal(poc_kernels.compute_distances(xt, "blk", "key", nonces, backend=backend), ref)
    # half precision inputs are exactly their float32 values; float64 is rounded to float32 first
    for dt in (torch.float16, torch.bfloat16):
        xl = x32.to(dt)
        got = poc_kernels.compute_distances(xl, "blk", "key", nonces, backend=backend)
        assert got.dtype == torch.float32
        assert torch.equal(got, poc_kernels.compute_distances(xl.float(), "blk", "key", nonces, backend=backend))
        assert (got - ref).abs().max() < 5e-3  # low-precision input moves the point only slightly
    x64 = x32.double() * (1 + 2.0**-30)  # not a float32 value, rounds back to x32
    assert not torch.equal(x64, x32.double())
    assert torch.equal(poc_kernels.compute_distances(x64, "blk", "key", nonces, backend=backend), ref)


@pytest.mark.parametrize("backend, device", BACKEND_DEVICES)
def test_nonce_forms_agree(backend, device):
    x = _hidden(4, 64, seed=4, device=device)
    forms = [
        [0, 1, 2**31, 2**32 - 1],
        (0, 1, 2**31, 2**32 - 1),
        torch.tensor([0, 1, 2**31, 2**32 - 1]),
        torch.tensor([0, 1, 2**31, 2**32 - 1], dtype=torch.uint32),
        np.array([0, 1, 2**31, 2**32 - 1], dtype=np.uint64),
        [np.uint32(0), np.int64(1), 2**31, 2**32 - 1],
    ]
    results = [poc_kernels.compute_distances(x, "blk", "key", f, backend=backend) for f in forms]
    for r in results[1:]:
        assert torch.equal(r, results[0])
    small = torch.tensor([3, 4, 5, 6], dtype=torch.int32)
    assert torch.equal(
        poc_kernels.compute_distances(x, "blk", "key", small, backend=backend),
        poc_kernels.compute_distances(x, "blk", "key", [3, 4, 5, 6], backend=backend),
    )


@pytest.mark.parametrize("backend, device", BACKEND_DEVICES)
def test_non_finite_and_zero_rows_give_nan(backend, device):
    x = _hidden(5, 64, seed=5, device=device)
    nonces = [10, 11, 12, 13, 14]
    clean = poc_kernels.compute_distances(x, "blk", "key", nonces, backend=backend)
    bad = x.clone()
    bad[1, 7] = float("nan")
    bad[2, 0] = float("inf")
    bad[3] = 0.0
    bad[4, 5] = -float("inf")
    got = poc_kernels.compute_distances(bad, "blk", "key", nonces, backend=backend)
    assert torch.isnan(got[1:]).all()
    assert torch.equal(got[:1], clean[:1])  # other rows are untouched
    assert not bool((got[1:] < 2.0).any())  # NaN is never below any r_target


@pytest.mark.parametrize("backend, device", BACKEND_DEVICES)
def test_empty_batch_returns_empty(backend, device):
    for nonces in ([], torch.empty(0, dtype=torch.int64)):
        d = poc_kernels.compute_distances(torch.empty(0, 64, device=device), "blk", "key", nonces, backend=backend)
        assert d.shape == (0,) and d.dtype == torch.float32 and d.device.type == device
    x = poc_kernels.generate_inputs("blk", "key", [], 4, 8, device=device, backend=backend)
    assert x.shape == (0, 4, 8) and x.dtype == torch.float16


@pytest.mark.parametrize("backend, device", BACKEND_DEVICES)
def test_contract_parameters(backend, device):
    x = _hidden(3, 33, seed=6, device=device)
    nonces = [1, 2, 3]
    for kwargs in ({"num_reflections": 0}, {"num_reflections": 3}, {"output_dim": 16}, {"output_dim": 1}):
        d = poc_kernels.compute_distances(x, "blk", "key", nonces, backend=backend, **kwargs)
        assert d.shape == (3,) and torch.isfinite(d).all()
        assert ((d >= 0) & (d <= 2)).all()
    # with one output dimension l/||l|| = ±1 and t = ±1: the distance is exactly 0 or 2
    d1 = poc_kernels.compute_distances(x, "blk", "key", nonces, output_dim=1, backend=backend)
    assert set(d1.tolist()) <= {0.0, 2.0}


def test_reference_matches_float64_formula():
    """The oracle is the float64 evaluation of SPEC §5 on the float32 streams."""
    from poc_kernels import rng
    from poc_kernels.seeds import lm_head_seed, target_seed

    x = _hidden(3, 48, seed=7)
    nonces = [0, 17, 2**32 - 1]
    d = reference.compute_distances(x, "blk", "key", nonces)
    w = (rng.normal(lm_head_seed("blk"), 8192 * 48) * 0.02).double().view(8192, 48)
    t = rng.normal(target_seed("blk"), 8192).double()
    t = t / t.norm()
    for i, n in enumerate(nonces):
        v = (
            x[i].double()
            * torch.where(rng.uniform(rng.seed_from_string(f"blk_key_nonce_{n}_signs"), 48) > 0.5, 1.0, -1.0).double()
        )
        for r in range(8):
            u = rng.normal(rng.seed_from_string(f"blk_key_nonce_{n}_hidden_r{r}"), 48).double()
            u = u / u.norm()
            v = v - 2 * (v @ u) * u
        v = v / v.norm()
        logits = w @ v
        expect = (logits / logits.norm() - t).norm().item()
        assert abs(d[i].item() - expect) <= ORACLE_DIST_ATOL  # float64 evaluation, rounded once to float32


# ---------------------------------------------------------------------------- generate_inputs


@pytest.mark.parametrize("backend, device", BACKEND_DEVICES)
@pytest.mark.parametrize("dtype", [torch.float32, torch.float16, torch.bfloat16])
def test_generate_inputs_batch_invariance_and_dtypes(backend, device, dtype):
    nonces = [3, 99, 2**32 - 1, 0, 12]
    kw = dict(dtype=dtype, device=device, backend=backend)
    full = poc_kernels.generate_inputs("blk", "key", nonces, 6, 40, **kw)
    assert full.shape == (5, 6, 40) and full.dtype == dtype and full.device.type == device
    assert torch.equal(full, poc_kernels.generate_inputs("blk", "key", nonces, 6, 40, **kw))
    for i, n in enumerate(nonces):
        alone = poc_kernels.generate_inputs("blk", "key", [n], 6, 40, **kw)
        assert torch.equal(alone[0], full[i])
    f32 = poc_kernels.generate_inputs("blk", "key", nonces, 6, 40, dtype=torch.float32, device=device, backend=backend)
    assert torch.equal(full, f32.to(dtype))  # computed in float32, cast once (round to nearest even)
    # the stream of a nonce is N(seed_input, seq_len * H).view(seq_len, H); normals are compared with
    # SPEC §3's tolerance (log/cos/sin may differ by an ulp between math libraries), bitwise to the
    # torch streams for the reference, which is built on them
    seed = poc_kernels.rng.seed_from_string("blk_key_nonce99")
    expect = poc_kernels.rng.normal(seed, 240).view(6, 40)
    torch.testing.assert_close(f32[1].cpu(), expect, atol=NORMAL_ATOL, rtol=0)
    if backend == "reference" and device == "cpu":
        assert torch.equal(f32[1], expect)


@pytest.mark.parametrize("backend, device", BACKEND_DEVICES)
def test_generate_inputs_out_buffer(backend, device):
    nonces = [1, 2, 3]
    kw = dict(dtype=torch.bfloat16, device=device, backend=backend)
    expect = poc_kernels.generate_inputs("blk", "key", nonces, 4, 16, **kw)
    out = torch.full((3, 4, 16), float("nan"), dtype=torch.bfloat16, device=device)
    got = poc_kernels.generate_inputs("blk", "key", nonces, 4, 16, out=out, **kw)
    assert got is out and torch.equal(out, expect)
    # a non-contiguous destination (every other row of a larger buffer)
    big = torch.full((6, 4, 16), float("nan"), dtype=torch.bfloat16, device=device)
    view = big[::2]
    poc_kernels.generate_inputs("blk", "key", nonces, 4, 16, out=view, **kw)
    assert torch.equal(big[::2], expect)
    assert torch.isnan(big[1::2].float()).all()  # nothing written outside the view
