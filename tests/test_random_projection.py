"""SPEC §10, the random projection: matrices from the counter streams, ``x + x @ P`` within 1e-6 of float64 in a
fixed order, and the ``random_projection`` flag of the public API on every backend (off: nothing changes)."""

import pytest
import torch

import poc_kernels
from poc_kernels import rng, vectors
from poc_kernels.constants import RANDOM_PROJECTION_SCALE

from _backends import backend_devices, has_backend, triton_device
from _tolerances import PROJECTION_ATOL

H = 48


def test_projections_come_from_the_counter_streams():
    for which in ("pre", "post"):
        p = vectors.random_projection("block_alpha", H, which)
        seed = rng.seed_from_string(f"block_alpha_random_projection_{which}")
        assert p.dtype == torch.float32 and p.shape == (H, H)
        assert torch.equal(p, RANDOM_PROJECTION_SCALE * rng.normal(seed, H * H).view(H, H))
        # the same block gives the same matrix; another block or the other side another one
        assert torch.equal(p, vectors.random_projection("block_alpha", H, which))
        assert not torch.equal(p, vectors.random_projection("block_beta", H, which))
    assert not torch.equal(vectors.random_projection("b", H, "pre"), vectors.random_projection("b", H, "post"))
    with pytest.raises(ValueError, match="which must be 'pre' or 'post'"):
        vectors.random_projection("b", H, "middle")
    with pytest.raises(TypeError, match="block_hash"):
        vectors.random_projection(7, H, "pre")


def _f64(x, p):
    return x.double() + x.double() @ p.double()


@pytest.mark.parametrize("scale", [1.0, 3.0], ids=["inputs", "hidden-like"])
def test_project_is_within_1e6_of_float64(scale):
    p = vectors.random_projection("block_alpha", H, "post")
    x = poc_kernels.generate_inputs("block_alpha", "node_A", range(8), 16, H, dtype=torch.float32) * scale
    y = vectors.project(x, p)
    assert y.dtype == torch.float32 and y.shape == x.shape
    exact = _f64(x, p)
    assert exact.abs().max() < 16
    assert (y.double() - exact).abs().max() <= PROJECTION_ATOL
    assert torch.equal(y, exact.float())  # rounded once: the float64 value's own float32


def test_project_is_batch_invariant_and_keeps_nan_rows(monkeypatch):
    p = vectors.random_projection("b", H, "pre")
    x = torch.randn(37, H, generator=torch.Generator().manual_seed(0))
    x[5] = float("nan")
    whole = vectors.project(x, p)
    monkeypatch.setattr(vectors, "_PROJECT_CHUNK", 3 * H * H)  # three rows a step
    torch.testing.assert_close(vectors.project(x, p), whole, rtol=0, atol=0, equal_nan=True)
    for i in (0, 6, 36):
        assert torch.equal(vectors.project(x[i : i + 1], p)[0], whole[i])
    assert torch.isnan(whole[5]).all() and torch.isfinite(whole[6]).all()
    with pytest.raises(TypeError, match="float32"):
        vectors.project(x.double(), p)
    with pytest.raises(ValueError, match="H = x.shape"):
        vectors.project(x[:, :5], p)


@pytest.mark.parametrize("backend,device", backend_devices())
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16], ids=["f32", "bf16"])
def test_inputs_flag(backend, device, dtype):
    call = dict(dtype=dtype, device=device, backend=backend)

    def inputs(**kw):
        return poc_kernels.generate_inputs("blk", "key", [3, 1, 4], 5, H, **{**call, **kw})

    base = inputs()
    assert torch.equal(inputs(random_projection=False), base)
    on = inputs(random_projection=True)
    p = vectors.random_projection("blk", H, "pre", device=device)
    f32 = inputs(dtype=torch.float32)
    assert on.dtype == dtype and torch.equal(on, vectors.project(f32, p).to(dtype))  # projected, then cast once
    assert not torch.equal(on, base)
    out = torch.empty_like(base)
    got = inputs(out=out, random_projection=True)
    assert got is out and torch.equal(out, on)
    with pytest.raises(TypeError, match="random_projection must be a bool"):
        inputs(random_projection=1)


@pytest.mark.parametrize("backend,device", backend_devices())
def test_distance_and_artifact_flags(backend, device):
    h = torch.randn(6, H, generator=torch.Generator().manual_seed(1)).to(device, torch.bfloat16)
    nonces = [9, 8, 7, 6, 5, 4]
    projected = vectors.project(h.float(), vectors.random_projection("blk", H, "post", device=device))
    for fn in (poc_kernels.compute_distances, poc_kernels.compute_artifacts):
        base = fn(h, "blk", "key", nonces, backend=backend)
        assert torch.equal(fn(h, "blk", "key", nonces, backend=backend, random_projection=False), base)
        on = fn(h, "blk", "key", nonces, backend=backend, random_projection=True)
        assert torch.equal(on, fn(projected, "blk", "key", nonces, backend=backend))
        assert not torch.equal(on, base)
        with pytest.raises(TypeError, match="random_projection must be a bool"):
            fn(h, "blk", "key", nonces, backend=backend, random_projection="yes")


@pytest.mark.skipif("cpp" not in poc_kernels.available_backends("cpu"), reason="the C++ extension is not built")
@pytest.mark.parametrize("hidden", [1, 5, 48, 64, 130])
def test_the_cpp_projection_is_bit_for_bit_the_reference(hidden):
    from poc_kernels import _custom_ops

    p = vectors.random_projection("block_gamma", hidden, "post")
    x = torch.randn(3, 7, hidden, generator=torch.Generator().manual_seed(hidden)) * 4
    x[1, 2] = float("nan")
    x[2, 0] = 0.0
    x[2, 1] = -0.0  # signed zeros keep their bits
    got = _custom_ops.project(x, p)
    assert got.shape == x.shape and got.dtype == torch.float32
    expect = vectors.project(x, p)
    torch.testing.assert_close(got, expect, rtol=0, atol=0, equal_nan=True)
    assert torch.equal(got.signbit(), expect.signbit())
    torch.testing.assert_close(_custom_ops.project(x[1:2, 2:5], p), got[1:2, 2:5], rtol=0, atol=0, equal_nan=True)
    assert _custom_ops.project(x[:0], p).shape == (0, 7, hidden)
    with pytest.raises(RuntimeError, match="x and p must be float32"):
        _custom_ops.project(x.double(), p)
    with pytest.raises(RuntimeError, match="must be"):
        _custom_ops.project(x[..., :1] if hidden > 1 else torch.zeros(2, 3), p)


@pytest.mark.skipif(not has_backend("triton"), reason="no Triton backend here (needs a GPU or TRITON_INTERPRET=1)")
@pytest.mark.parametrize(
    "hidden, chunk, block_j",
    # the shipped shapes (0: the device's configuration) and trees split as NC residues x C leaves: one residue,
    # several, one leaf each; column blocks narrower than H with a ragged last one
    [(1, 0, 0), (5, 0, 0), (48, 0, 0), (48, 4, 16), (64, 64, 64), (64, 2, 8), (130, 16, 32), (130, 256, 128)],
)
def test_the_triton_projection_is_bit_for_bit_the_reference(hidden, chunk, block_j):
    from poc_kernels.backends.triton import projection

    device = triton_device()
    p = vectors.random_projection("block_gamma", hidden, "post", device=device)
    x = torch.randn(5, hidden, generator=torch.Generator().manual_seed(hidden)) * 4
    x[1, 0] = float("nan")
    x[2] = -0.0  # signed zeros: the sum of -0.0 products and x_j = -0.0 keep their bits
    x[3, -1] = float("inf")
    x = x.to(device)
    got = projection.project(x, p, chunk=chunk, block_j=block_j)
    expect = vectors.project(x, p)
    assert torch.equal(got.view(torch.int32)[~got.isnan()], expect.view(torch.int32)[~expect.isnan()])
    assert torch.equal(got.isnan(), expect.isnan())
    # one row at a time: the same bits (batch invariance)
    assert torch.equal(projection.project(x[2:3].contiguous(), p, chunk=chunk, block_j=block_j), got[2:3])
    with pytest.raises(TypeError, match="x and p must be float32"):
        projection.project(x.double(), p)
    with pytest.raises(ValueError, match="p must be a contiguous"):
        projection.project(x, p.t() if hidden > 1 else p[:, :0])
