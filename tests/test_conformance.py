"""Conformance with the vectors of the original implementation (tests/data/conformance.json)."""

import numpy as np
import pytest
import torch

import poc_kernels
from poc_kernels import baselines, reference, vectors
from poc_kernels.constants import POC_OUTPUT_DIM

from _numpy_murmur import seed_for_hash
from _numpy_murmur import uniform as np_uniform
from _tolerances import DIST_ATOL, EMBED_ATOL, NORMAL_ATOL, UNIT_F64_ATOL

# float16 input embeddings are held to one float16 ulp of the expected value (a float32 value within
# EMBED_ATOL may round to the neighbouring float16).

IMPLEMENTATIONS = {
    "api-auto": lambda *a, **k: poc_kernels.compute_distances(*a, **k),
    "api-reference": lambda *a, **k: poc_kernels.compute_distances(*a, backend="reference", **k),
    "reference": reference.compute_distances,
    "per-nonce": baselines.compute_distances_per_nonce,
    "batched-fp32": baselines.compute_distances_batched_fp32,
}
if "cpp" in poc_kernels.available_backends():
    IMPLEMENTATIONS["api-cpp"] = lambda *a, **k: poc_kernels.compute_distances(*a, backend="cpp", **k)
INPUT_BACKENDS = ["auto"] + [b for b in ("reference", "cpp") if b in poc_kernels.available_backends("cpu")]


def _case_ids(conformance):
    return [c["name"] for c in conformance["cases"]]


@pytest.mark.parametrize("impl", list(IMPLEMENTATIONS))
def test_distances_conformance(conformance, impl):
    fn = IMPLEMENTATIONS[impl]
    for case in conformance["cases"]:
        hidden = torch.tensor(case["last_hidden"], dtype=torch.float32)
        assert hidden.shape == (len(case["nonces"]), case["hidden_size"])
        d = fn(hidden, case["block_hash"], case["public_key"], case["nonces"], sign_flips=case["sign_flips"])
        assert d.dtype == torch.float32 and d.shape == (len(case["nonces"]),)
        expect = torch.tensor(case["distances_fp64"], dtype=torch.float64)
        err = (d.double() - expect).abs().max().item()
        assert err <= DIST_ATOL, f"{impl} {case['name']}: max error {err:.3g} vs distances_fp64"


def test_signs_bit_exact(conformance):
    # Signs are a pure function of the uniform stream: +1 iff U > 0.5.
    for stream in conformance["streams"][:3]:
        seed = stream["seed"]
        s = vectors.sign_flips(torch.tensor([seed]), 4097)[0]
        expect = np.where(np.array(stream["uniform"], dtype=np.float32) > 0.5, 1.0, -1.0)
        assert torch.equal(s, torch.from_numpy(expect.astype(np.float32)))
    for seed in (1, 2**32 - 1, 424242):
        s = vectors.sign_flips(torch.tensor([seed]), 1000)[0]
        assert torch.equal(s, torch.from_numpy(np.where(np_uniform(seed, 1000) > 0.5, 1.0, -1.0).astype(np.float32)))


def test_sign_of_exactly_one_half_is_minus_one():
    """SPEC §4: U exactly 0.5 (hash 2**31) gives -1."""
    seed = seed_for_hash(2**31, 3)
    s = vectors.sign_flips(torch.tensor([seed]), 8)[0]
    assert s[3].item() == -1.0


def test_sign_flips_are_not_all_plus_one():
    """SPEC §2 regression: with hashes below 2**31 every sign came out +1."""
    seeds = torch.tensor([poc_kernels.rng.seed_from_string(f"b_k_nonce_{n}_signs") for n in range(16)])
    s = vectors.sign_flips(seeds, 1024)
    frac_neg = (s < 0).double().mean().item()
    assert 0.45 < frac_neg < 0.55


def _fp16_ulp(x: np.ndarray) -> np.ndarray:
    return np.spacing(np.abs(x.astype(np.float16))).astype(np.float64)


@pytest.mark.parametrize("backend", INPUT_BACKENDS)
def test_generate_inputs_conformance(conformance, backend):
    g = conformance["generate_inputs"]
    args = (g["block_hash"], g["public_key"], g["nonces"], g["seq_len"], g["hidden_size"])
    x32 = poc_kernels.generate_inputs(*args, dtype=torch.float32, backend=backend)
    ref32 = torch.tensor(g["float32"], dtype=torch.float32)
    assert x32.shape == ref32.shape == (len(g["nonces"]), g["seq_len"], g["hidden_size"])
    torch.testing.assert_close(x32, ref32, atol=EMBED_ATOL, rtol=0)

    x16 = poc_kernels.generate_inputs(*args, backend=backend)
    assert x16.dtype == torch.float16
    ref16 = np.array(g["float16_as_float"], dtype=np.float64)
    err = np.abs(x16.double().numpy() - ref16)
    assert np.all(err <= _fp16_ulp(ref16))


def test_lm_head_and_target_follow_spec():
    # W[o, h] = 0.02 * N(seed_lm_head, D*H)[o*H + h]; t = N(seed_target, D) / ||.||
    from poc_kernels import rng
    from poc_kernels.seeds import lm_head_seed, target_seed

    w = vectors.lm_head("block_x", 12, 40)
    n = rng.normal(lm_head_seed("block_x"), 40 * 12)
    assert torch.equal(w, (n * 0.02).view(40, 12))
    t = vectors.target("block_x", POC_OUTPUT_DIM)
    raw = rng.normal(target_seed("block_x"), POC_OUTPUT_DIM).double()
    torch.testing.assert_close(t, raw / raw.norm(), atol=UNIT_F64_ATOL, rtol=0)


def test_per_nonce_baseline_streams_follow_the_contract(conformance):
    # The baseline writes its own streams the way the original code does; they must be the contract's.
    for stream in conformance["streams"]:
        seed, n = stream["seed"], stream["n"]
        assert torch.equal(
            baselines._literal_uniform(seed, n, "cpu"), torch.tensor(stream["uniform"], dtype=torch.float32)
        )
        torch.testing.assert_close(
            baselines._literal_normal(seed, n, "cpu"),
            torch.tensor(stream["normal"], dtype=torch.float32),
            atol=NORMAL_ATOL,
            rtol=0,
        )
