"""The artifact scheme (SPEC-ARTIFACTS.md): picks, artifacts and the stronger inputs, on every backend.

Conformance with the vectors of the deployed implementation
(tests/data/artifacts_public.json), batch invariance and run-to-run identity,
the uniform law of the artifacts, and bad input.
"""

import numpy as np
import pytest
import torch
from scipy import stats

import poc_kernels
from poc_kernels import reference, rng, seeds, vectors

from _backends import backend_devices
from _tolerances import ARTIFACT_ATOL, EMBED_ATOL, NORMAL_ATOL

BACKEND_DEVICES = backend_devices()


def _fp16_bits(y: torch.Tensor) -> torch.Tensor:
    return y.cpu().half().view(torch.int16).to(torch.int32) & 0xFFFF


def _fp16_ulp(y: torch.Tensor) -> torch.Tensor:
    return torch.from_numpy(np.spacing(np.abs(y.cpu().double().numpy().astype(np.float16))).astype(np.float64))


# ----------------------------------------------------------------------------- seeds and picks


def test_seeds_conform(artifacts_conformance):
    for case in artifacts_conformance["cases"]:
        got = seeds.derive_artifact_seeds(case["block_hash"], case["public_key"], case["nonces"], case["k_dim"])
        assert got.pick.tolist() == case["seeds"]["pick"] and got.haar.tolist() == case["seeds"]["haar"]
        strings = case["seed_strings"]
        n0 = case["nonces"][0]
        assert seeds.pick_seed_string(case["block_hash"], case["public_key"], n0, case["k_dim"]) == strings["pick"][0]
        assert seeds.haar_seed_string(case["block_hash"], case["public_key"], n0, 12, 3) == strings["haar"][0][3]
    for g in artifacts_conformance["generate_inputs_concat_murmur"]:
        assert seeds.stronger_input_seeds(g["block_hash"], g["public_key"], g["nonces"]).tolist() == g["sub_seeds"]


def test_picks_are_in_the_canonical_order(artifacts_conformance):
    """SPEC-ARTIFACTS §5: the CUDA order, not CPU torch.topk's (which the deployed code gives on a CPU)."""
    for case in artifacts_conformance["cases"]:
        args = (case["block_hash"], case["public_key"], case["nonces"], case["hidden_size"], case["k_dim"])
        got = vectors.pick_indices(*args)
        assert got.tolist() == case["cuda_order_emulated"]["pick_indices"], case["name"]
        assert got.tolist() != case["pick_indices_cpu_topk_order"]
        assert sorted(map(sorted, got.tolist())) == sorted(case["pick_indices_sorted"])


def test_haar_vectors_conform(artifacts_conformance):
    for case in artifacts_conformance["cases"]:
        s = seeds.derive_artifact_seeds(case["block_hash"], case["public_key"], case["nonces"], case["k_dim"])
        u = vectors.haar_vectors(s.haar, case["k_dim"])
        torch.testing.assert_close(u, torch.tensor(case["haar_vectors"], dtype=torch.float64), atol=NORMAL_ATOL, rtol=0)


# ----------------------------------------------------------------------------- artifacts


@pytest.mark.parametrize("backend, device", BACKEND_DEVICES)
def test_artifacts_conform(artifacts_conformance, backend, device):
    """float32 within 1e-6 of the float64 evaluation; float16 bits equal except at a rounding boundary."""
    for case in artifacts_conformance["cases"]:
        h = torch.tensor(case["last_hidden"], dtype=torch.float32, device=device)
        y = poc_kernels.compute_artifacts(
            h, case["block_hash"], case["public_key"], case["nonces"], k=case["k_dim"], backend=backend
        )
        assert y.dtype == torch.float32 and y.shape == (len(case["nonces"]), case["k_dim"])
        assert y.device.type == device
        expect = case["cuda_order_emulated"]
        y64 = torch.tensor(expect["artifacts_fp64"], dtype=torch.float64)
        assert (y.cpu().double() - y64).abs().max().item() <= ARTIFACT_ATOL, case["name"]
        bits, want = _fp16_bits(y), torch.tensor(expect["artifacts_fp16_bits"])
        off = bits != want
        if off.any():  # only where the exact value lies within the accuracy bound of a float16 rounding boundary
            y16 = torch.tensor(expect["artifacts_fp16"], dtype=torch.float64)
            assert ((y.cpu().double() - y16).abs()[off] <= _fp16_ulp(y16)[off]).all()
            boundary = (y64 - y16).abs() - _fp16_ulp(y16) / 2
            assert (boundary.abs()[off] <= ARTIFACT_ATOL).all()
        # the order matters: the deployed code's CPU order gives other artifacts entirely
        cpu = torch.tensor(case["cpu_order"]["artifacts_fp32"])
        assert ((y.cpu() - cpu).norm(dim=1) > 0.5).all()


def test_artifacts_b64_conform(artifacts_conformance):
    from poc_kernels import validation

    for case in artifacts_conformance["cases"]:
        h = torch.tensor(case["last_hidden"], dtype=torch.float32)
        y = poc_kernels.compute_artifacts(h, case["block_hash"], case["public_key"], case["nonces"], k=case["k_dim"])
        assert validation.encode_artifacts(y) == case["cuda_order_emulated"]["artifacts_b64"]


@pytest.mark.parametrize("backend, device", BACKEND_DEVICES)
def test_the_pick_order_never_comes_from_topk(monkeypatch, backend, device):
    """A test that fails if the pick order is ever taken from torch.topk (whose order depends on the device)."""

    def refuse(*args, **kwargs):
        raise AssertionError("torch.topk was called while computing artifacts")

    x = torch.randn(3, 80, generator=torch.Generator().manual_seed(3)).to(device)
    expect = poc_kernels.compute_artifacts(x, "blk", "key", [1, 2, 3], backend=backend)
    monkeypatch.setattr(torch, "topk", refuse)
    monkeypatch.setattr(torch.Tensor, "topk", refuse)
    assert torch.equal(poc_kernels.compute_artifacts(x, "blk", "key", [1, 2, 3], backend=backend), expect)
    assert vectors.pick_indices("blk", "key", [1, 2, 3], 80, 12).shape == (3, 12)


@pytest.mark.parametrize("backend, device", BACKEND_DEVICES)
def test_batch_invariance_and_run_to_run_identity(backend, device):
    g = torch.Generator().manual_seed(11)
    x = (torch.randn(9, 200, generator=g) * 3).to(device)
    nonces = [5, 0, 2**32 - 1, 17, 2**31, 3, 4, 8, 9]
    full = poc_kernels.compute_artifacts(x, "blk", "key", nonces, backend=backend)
    assert torch.equal(full, poc_kernels.compute_artifacts(x, "blk", "key", nonces, backend=backend))
    for i in (0, 4, 8):
        alone = poc_kernels.compute_artifacts(x[i : i + 1], "blk", "key", [nonces[i]], backend=backend)
        assert torch.equal(alone, full[i : i + 1])
    perm = [8, 3, 0, 5]
    assert torch.equal(
        poc_kernels.compute_artifacts(x[perm], "blk", "key", [nonces[i] for i in perm], backend=backend), full[perm]
    )
    # any float dtype of last_hidden is taken as float32
    half = poc_kernels.compute_artifacts(x.half(), "blk", "key", nonces, backend=backend)
    assert torch.equal(half, poc_kernels.compute_artifacts(x.half().float(), "blk", "key", nonces, backend=backend))


@pytest.mark.parametrize("backend, device", BACKEND_DEVICES)
def test_backends_agree_with_the_oracle(backend, device):
    g = torch.Generator().manual_seed(5)
    for hidden, k in ((64, 12), (769, 12), (300, 1), (40, 40), (97, 5)):
        x = (torch.randn(6, hidden, generator=g) * 2).to(device)
        got = poc_kernels.compute_artifacts(x, "blk", "key", range(6), k=k, backend=backend).cpu()
        expect = reference.compute_artifacts(x.cpu(), "blk", "key", range(6), k=k)
        assert (got - expect).abs().max().item() <= ARTIFACT_ATOL, (hidden, k)


@pytest.mark.parametrize("backend, device", BACKEND_DEVICES)
def test_non_finite_zero_and_extreme_rows(backend, device):
    x = torch.randn(6, 64, generator=torch.Generator().manual_seed(2))
    x[1, 3] = float("nan")
    x[2] = 0.0
    x[3, 0] = -float("inf")
    x[4] *= 1e-41  # subnormal
    x[5] *= 1e37  # its squares overflow float32
    y = poc_kernels.compute_artifacts(x.to(device), "blk", "key", range(6), backend=backend).cpu()
    assert torch.isnan(y[[1, 3]]).all()  # no artifact
    assert torch.equal(y[2], torch.zeros(12))  # the all-zero artifact is legal
    assert torch.isfinite(y[[0, 4, 5]]).all()
    torch.testing.assert_close(y[[0, 5]].norm(dim=1), torch.ones(2), atol=1e-6, rtol=0)
    expect = reference.compute_artifacts(x, "blk", "key", range(6))
    assert (y[[0, 4, 5]] - expect[[0, 4, 5]]).abs().max().item() <= ARTIFACT_ATOL


def test_artifacts_are_uniform_on_the_sphere_and_independent():
    """Random hidden states: one coordinate of a uniform unit vector in R^k has (y + 1) / 2 ~ Beta((k-1)/2, (k-1)/2)."""
    k, n = 12, 4000
    x = torch.randn(n, 64, generator=torch.Generator().manual_seed(7))
    y = reference.compute_artifacts(x, "law_block", "law_key", range(n), k=k).double()
    e = torch.linspace(-1, 1, k, dtype=torch.float64)
    proj = (y @ (e / e.norm())).numpy()
    a = (k - 1) / 2
    assert stats.kstest((proj + 1) / 2, stats.beta(a, a).cdf).pvalue > 0.01
    # the same hidden state under other nonces: unrelated directions (mean dot product ~ 0, sd 1/sqrt(k n))
    same = x[:1].expand(n, 64)
    z = reference.compute_artifacts(same, "law_block", "law_key", range(n), k=k).double()
    dots = (z[1:] * z[:-1]).sum(dim=1)
    assert abs(dots.mean().item()) < 4 / (k * n) ** 0.5 * 1.5


def test_bad_input():
    x = torch.randn(2, 16)
    cases = [
        (lambda: poc_kernels.compute_artifacts(x, "b", "k", [1, 2], k=0), ValueError, "k must be an int >= 1"),
        (lambda: poc_kernels.compute_artifacts(x, "b", "k", [1, 2], k=17), ValueError, r"k must lie in \[1, hidden"),
        (lambda: poc_kernels.compute_artifacts(x, "b", "k", [1, 2], k=2.0), TypeError, "k must be an int"),
        (lambda: poc_kernels.compute_artifacts(x[0], "b", "k", [1]), ValueError, "last_hidden must be 2-D"),
        (lambda: poc_kernels.compute_artifacts(x, "b", "k", [1, 2**32]), ValueError, r"nonces\[1\]"),
        (lambda: poc_kernels.compute_artifacts(x, "b", "k", [1]), ValueError, "len\\(nonces\\) = 1"),
        (lambda: poc_kernels.compute_artifacts(x, 3, "k", [1, 2]), TypeError, "block_hash must be a str"),
        (lambda: poc_kernels.compute_artifacts(x.long(), "b", "k", [1, 2]), TypeError, "last_hidden must have a float"),
        (lambda: vectors.pick_indices("b", "k", [1], 10, 11), ValueError, r"k must lie in \[1, hidden_size = 10\]"),
        (lambda: vectors.pick_indices("b", "k", [-1], 10, 3), ValueError, r"nonces\[0\]"),
    ]
    for call, exc, match in cases:
        with pytest.raises(exc, match=match):
            call()
    assert poc_kernels.compute_artifacts(torch.empty(0, 16), "b", "k", []).shape == (0, 12)


# ----------------------------------------------------------------------------- the stronger inputs (§2)


@pytest.mark.parametrize("backend, device", BACKEND_DEVICES)
def test_stronger_inputs_conform(artifacts_conformance, backend, device):
    for g in artifacts_conformance["generate_inputs_concat_murmur"]:
        args = (g["block_hash"], g["public_key"], g["nonces"], g["seq_len"], g["hidden_size"])
        x32 = poc_kernels.generate_inputs(*args, dtype=torch.float32, device=device, stronger_rng=True, backend=backend)
        torch.testing.assert_close(x32.cpu(), torch.tensor(g["float32"]), atol=EMBED_ATOL, rtol=0)
        for name, dtype in (("float16", torch.float16), ("bfloat16", torch.bfloat16)):
            x = poc_kernels.generate_inputs(*args, dtype=dtype, device=device, stronger_rng=True, backend=backend)
            assert torch.equal(x, x32.to(dtype))  # computed in float32, cast once
            want = torch.tensor(g[name], dtype=torch.float64)
            ulp = torch.from_numpy(np.spacing(np.abs(want.numpy().astype(np.float32))).astype(np.float64))
            assert ((x.cpu().double() - want).abs() <= 2**16 * ulp).all() or torch.equal(x.cpu().double(), want)
        plain = poc_kernels.generate_inputs(*args, dtype=torch.float32, device=device, backend=backend)
        torch.testing.assert_close(
            plain.cpu(), torch.tensor(g["plain_generate_inputs_float32"]), atol=EMBED_ATOL, rtol=0
        )


@pytest.mark.parametrize("backend, device", BACKEND_DEVICES)
def test_stronger_inputs_batch_invariance_and_segments(backend, device):
    nonces = [4, 2**32 - 1, 0, 77]
    kw = {"dtype": torch.bfloat16, "device": device, "stronger_rng": True, "backend": backend}
    full = poc_kernels.generate_inputs("blk", "key", nonces, 5, 13, **kw)  # n = 65: segments of 9, the last of 2
    for i, n in enumerate(nonces):
        assert torch.equal(poc_kernels.generate_inputs("blk", "key", [n], 5, 13, **kw)[0], full[i])
    plain = poc_kernels.generate_inputs("blk", "key", nonces, 5, 13, **{**kw, "stronger_rng": False})
    assert not torch.equal(full, plain)
    # segment j is N(s_j, its length)
    s = seeds.stronger_input_seeds("blk", "key", nonces[:1])[0]
    f32 = poc_kernels.generate_inputs("blk", "key", nonces[:1], 5, 13, **{**kw, "dtype": torch.float32})[0].reshape(-1)
    for j in range(8):
        length = min(9, 65 - 9 * j)
        torch.testing.assert_close(
            f32[9 * j : 9 * j + length].cpu(), rng.normal(int(s[j]), length), atol=NORMAL_ATOL, rtol=0
        )
    with pytest.raises(TypeError, match="stronger_rng must be a bool"):
        poc_kernels.generate_inputs("blk", "key", [1], 2, 4, stronger_rng=1)
