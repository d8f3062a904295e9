"""The Triton backend: fused distances, input generation, the layer hook, custom ops, GPU compilation.

On a machine without CUDA these run the kernels through Triton's interpreter
(``TRITON_INTERPRET=1``, set in conftest.py) on CPU tensors; on a CUDA machine
they run compiled on the GPU.
"""

import os
import subprocess
import sys

import numpy as np
import pytest
import torch

import poc_kernels
from poc_kernels import reference, vectors

from _backends import CUDA, has_backend, triton_device
from _tolerances import DIST_ATOL, LAYER_FP32_ORDER_RTOL, LM_HEAD_ATOL, NORMAL_ATOL

pytestmark = pytest.mark.skipif(not has_backend("triton"), reason="Triton is not installed")

DEV = triton_device()
# On a GPU also the sizes of real models, and batches across the 64-nonce tile (the interpreter uses 16).
HIDDEN_SIZES = [64, 769, 896] + ([4096, 7168] if CUDA else [])
BATCHES = [1, 21] + ([65, 130] if CUDA else [])
LM_HEAD_MODES = ["on_the_fly", "cached"]


def _hidden(b, h, seed=0, dtype=torch.float32):
    g = torch.Generator().manual_seed(seed)
    return (torch.randn(b, h, generator=g) * 2).to(dtype)


def _triton(x, nonces, **kw):
    return poc_kernels.compute_distances(x.to(DEV), "blk", "key", nonces, backend="triton", **kw)


def test_kernel_streams_match_the_contract(conformance):
    """The kernels' hash, uniforms and signs are bit-exact; their normals within a few ulp (SPEC §3)."""
    from poc_kernels import rng
    from poc_kernels.backends.triton._streams import stream_values

    for stream in conformance["streams"]:
        seed, n = stream["seed"], stream["n"]
        p = (n + 1) // 2
        got = stream_values(seed, torch.arange(n, device=DEV), p)
        assert torch.equal(got["hash"].cpu(), torch.tensor(stream["murmur3"], dtype=torch.int64)), seed
        u = torch.tensor(stream["uniform"], dtype=torch.float32)
        assert torch.equal(got["uniform"].cpu(), u), seed
        assert torch.equal(got["sign"].cpu(), torch.where(u > 0.5, 1.0, -1.0)), seed
        normal = torch.tensor(stream["normal"], dtype=torch.float32)
        torch.testing.assert_close(got["cos"].cpu()[:p], normal[:p], atol=NORMAL_ATOL, rtol=0)
        torch.testing.assert_close(got["sin"].cpu()[: n - p], normal[p:], atol=NORMAL_ATOL, rtol=0)
    # the full key range, seeds >= 2**31 included (they arrive as int64 and must be cast to uint32)
    keys = torch.tensor([0, 1, 2**31 - 1, 2**31, 2**32 - 2, 2**32 - 1], device=DEV)
    for seed in (0, 2**31, 2**32 - 1):
        got = stream_values(seed, keys, 2**31)
        assert torch.equal(got["hash"].cpu(), rng.hash32(keys.cpu(), seed))
        expect = torch.cat([rng.uniform(seed, 1, start=k) for k in keys.tolist()])
        assert torch.equal(got["uniform"].cpu(), expect)


@pytest.mark.parametrize("lm_head", LM_HEAD_MODES)
def test_conformance_distances(conformance, lm_head):
    for case in conformance["cases"]:
        hidden = torch.tensor(case["last_hidden"], dtype=torch.float32, device=DEV)
        d = poc_kernels.compute_distances(
            hidden,
            case["block_hash"],
            case["public_key"],
            case["nonces"],
            sign_flips=case["sign_flips"],
            backend="triton",
            lm_head=lm_head,
        )
        assert d.dtype == torch.float32 and d.device.type == DEV
        err = (d.cpu().double() - torch.tensor(case["distances_fp64"], dtype=torch.float64)).abs().max().item()
        assert err <= DIST_ATOL, f"{case['name']} ({lm_head}): {err:.3g}"


@pytest.mark.parametrize("hidden", HIDDEN_SIZES)
@pytest.mark.parametrize("batch", BATCHES)
def test_against_reference_odd_sizes(hidden, batch):
    # 21, 65, 130 nonces: not multiples of any block size (16 interpreted, 64 on GPUs)
    x = _hidden(batch, hidden, seed=hidden + batch)
    nonces = [3 * i + 11 for i in range(batch)]
    ref = reference.compute_distances(x.to(DEV), "blk", "key", nonces).cpu()  # float64 on the same device
    for lm_head in LM_HEAD_MODES:
        got = _triton(x, nonces, lm_head=lm_head).cpu()
        assert (got - ref).abs().max().item() <= DIST_ATOL, lm_head


@pytest.mark.parametrize(
    "kwargs",
    [
        {"sign_flips": False},
        {"num_reflections": 0},
        {"num_reflections": 3},
        {"output_dim": 1000},
        {"output_dim": 999},
        {"output_dim": 1},
    ],
)
def test_contract_parameters_match_reference(kwargs):
    x = _hidden(5, 70, seed=9)
    nonces = [0, 1, 2, 2**31, 2**32 - 1]
    ref = reference.compute_distances(x, "blk", "key", nonces, **kwargs)
    for lm_head in LM_HEAD_MODES:
        got = _triton(x, nonces, lm_head=lm_head, **kwargs).cpu()
        assert (got - ref).abs().max().item() <= DIST_ATOL, (kwargs, lm_head)


def test_on_the_fly_equals_cached_bitwise():
    """Generating W inside the matmul or reading the materialized W gives the same bits."""
    x = _hidden(20, 96, seed=4)
    nonces = list(range(20))
    assert torch.equal(_triton(x, nonces, lm_head="on_the_fly"), _triton(x, nonces, lm_head="cached"))


def test_on_the_fly_batch_invariance_and_repeatability():
    x = _hidden(40, 64, seed=5)
    nonces = torch.arange(500, 540)
    full = _triton(x, nonces, lm_head="on_the_fly")
    assert torch.equal(full, _triton(x, nonces, lm_head="on_the_fly"))
    for i in (0, 15, 16, 39):
        assert torch.equal(_triton(x[i : i + 1], nonces[i : i + 1], lm_head="on_the_fly"), full[i : i + 1])
    idx = torch.tensor([39, 2, 17, 16, 0])
    assert torch.equal(_triton(x[idx], nonces[idx], lm_head="on_the_fly"), full[idx.to(full.device)])


def test_materialized_lm_head_follows_spec():
    from poc_kernels.backends.triton import backend

    w = backend.cached_lm_head("blk_w", 24, 64, torch.device(DEV)).cpu()
    expect = vectors.lm_head("blk_w", 24, 64)
    assert w.shape == (64, 24) and w.dtype == torch.float32
    torch.testing.assert_close(w, expect, atol=LM_HEAD_ATOL, rtol=0)


def test_rows_with_subnormal_max_are_finite_and_match_the_reference():
    """1 / max|h| overflows float32 below ~2.9e-39: such rows are scaled up exactly first, not turned into NaN."""
    x = _hidden(6, 64, seed=8)
    x[0] = 1e-40  # the whole row subnormal
    x[1] *= 1e-41  # random subnormal values
    x[2] = 0.0
    x[2, 5] = 1e-45  # one nonzero value, the smallest subnormal
    x[3] *= 1e-30  # tiny but normal (below the 2**-64 pre-scale threshold)
    x[4, 0] = 2.0**-64  # a normal row at the threshold
    nonces = [5, 6, 7, 8, 9, 10]
    ref = reference.compute_distances(x, "blk", "key", nonces)
    assert torch.isfinite(ref).all()
    for lm_head in LM_HEAD_MODES:
        got = _triton(x, nonces, lm_head=lm_head).cpu()
        assert torch.isfinite(got).all(), (lm_head, got)
        assert (got - ref).abs().max().item() <= DIST_ATOL, lm_head
    # the reproducer of the defect, and a normal row unaffected by a subnormal neighbour
    tiny = torch.full((1, 64), 1e-40)
    assert abs(_triton(tiny, [0]).item() - reference.compute_distances(tiny, "blk", "key", [0]).item()) <= DIST_ATOL
    assert torch.equal(_triton(x[5:6], nonces[5:]), _triton(x, nonces)[5:])


def test_large_hidden_values_do_not_overflow():
    # ||x||² of bf16-range values overflows float32; the kernel scales by max|h| first.
    x = _hidden(3, 64, seed=6) * 1e37
    ref = reference.compute_distances(x, "blk", "key", [1, 2, 3])
    got = _triton(x, [1, 2, 3]).cpu()
    assert torch.isfinite(got).all()
    assert (got - ref).abs().max().item() <= DIST_ATOL


# ----------------------------------------------------------------------------- generate_inputs


@pytest.mark.parametrize("dtype", [torch.float32, torch.float16, torch.bfloat16])
def test_generate_inputs_matches_reference(dtype):
    nonces = [0, 7, 2**32 - 1]
    got = poc_kernels.generate_inputs("blk", "key", nonces, 3, 129, dtype=dtype, device=DEV, backend="triton").cpu()
    f32 = poc_kernels.generate_inputs(
        "blk", "key", nonces, 3, 129, dtype=torch.float32, device=DEV, backend="triton"
    ).cpu()
    ref32 = reference.generate_inputs("blk", "key", nonces, 3, 129, dtype=torch.float32)
    torch.testing.assert_close(f32, ref32, atol=NORMAL_ATOL, rtol=0)
    # one rounding (to nearest even) from the kernel's own float32 values
    assert torch.equal(got, f32.to(dtype))
    if dtype != torch.float32:
        # within one ulp of the reference's cast (their float32 values may differ by a few ulp)
        ref = reference.generate_inputs("blk", "key", nonces, 3, 129, dtype=dtype)
        mant = {torch.float16: 10, torch.bfloat16: 7}[dtype]
        _, exp = torch.frexp(ref.double().abs().clamp_min(2.0**-14))
        ulp = torch.pow(2.0, (exp - 1 - mant).double())
        assert ((got.double() - ref.double()).abs() <= ulp).all()


def test_generate_inputs_conformance(conformance):
    g = conformance["generate_inputs"]
    args = (g["block_hash"], g["public_key"], g["nonces"], g["seq_len"], g["hidden_size"])
    x32 = poc_kernels.generate_inputs(*args, dtype=torch.float32, device=DEV, backend="triton").cpu()
    torch.testing.assert_close(x32, torch.tensor(g["float32"]), atol=NORMAL_ATOL, rtol=0)
    x16 = poc_kernels.generate_inputs(*args, device=DEV, backend="triton").cpu().double().numpy()
    ref16 = np.array(g["float16_as_float"])
    assert np.all(np.abs(x16 - ref16) <= np.spacing(np.abs(ref16).astype(np.float16)).astype(np.float64))


# ----------------------------------------------------------------------------- layer transform


def _hook_(x, v, normalize=True):
    return poc_kernels.apply_layer_transform_(x, v, normalize=normalize, backend="triton")


@pytest.mark.parametrize("dtype", [torch.float32, torch.float16, torch.bfloat16])
@pytest.mark.parametrize("normalize", [True, False])
@pytest.mark.parametrize("hidden", [64, 769])
def test_layer_transform_reproduces_the_eager_sequence(dtype, normalize, hidden, record_property):
    """Bit for bit with the deployed op sequence run by torch on the same device, in fp16 and bf16; in float32 only
    the order of the float32 accumulations differs, and the test reports how many values that changes."""
    x = (_hidden(64, hidden, seed=hidden) * 30).to(dtype).to(DEV)
    v = vectors.layer_vector("blk", 2, hidden, device=DEV)
    expect = reference.apply_layer_transform(x, v, normalize=normalize)
    y = x.clone()
    assert _hook_(y, v, normalize) is y
    if dtype != torch.float32:
        assert torch.equal(y, expect)
        return
    scale = expect.abs().amax(dim=-1, keepdim=True).double()
    assert ((y.double() - expect.double()).abs() <= LAYER_FP32_ORDER_RTOL * scale).all()
    differ = (y != expect).sum().item()
    record_property(
        f"figure: float32 layer transform (normalize={normalize}, H={hidden}) vs torch's eager sequence on {DEV}",
        f"{differ} of {y.numel()} values differ by the float32 accumulation order",
    )


def test_layer_transform_conforms_to_the_deployed_code(artifacts_conformance):
    """SPEC-ARTIFACTS §3 on the deployed code's own inputs: equal bit for bit in fp16 and bf16."""
    for case in artifacts_conformance["layer_hook_no_normalization"]:
        v = torch.tensor(case["v_float32"], device=DEV)
        for name, dtype in (("bfloat16", torch.bfloat16), ("float16", torch.float16)):
            for x_key, y_key in (("x", "y"), ("residual", "residual_out")):
                x = torch.tensor(case[name][x_key]).to(dtype).to(DEV)
                _hook_(x, v, False)
                assert torch.equal(x.float().cpu(), torch.tensor(case[name][y_key])), (case["layer"], name, x_key)


def test_layer_hook_bad_input():
    v = vectors.layer_vector("blk", 0, 16, device=DEV)
    x = torch.randn(4, 16, device=DEV)
    with pytest.raises(ValueError, match="v must be"):
        _hook_(x, v[:8])
    with pytest.raises(TypeError, match="x must be"):
        _hook_(x.to(torch.int32), v)
    with pytest.raises(ValueError, match="x must have contiguous rows"):
        _hook_(torch.randn(16, 4, device=DEV).t(), v)
    # leading dimensions are flattened: [S, T, H] works in place
    x3 = torch.randn(2, 3, 16, device=DEV).to(torch.bfloat16)
    expect = reference.apply_layer_transform(x3, v)
    assert _hook_(x3, v) is x3
    assert torch.equal(x3, expect)


def test_layer_hook_edge_rows():
    x = _hidden(4, 32, seed=1).to(DEV)
    x[1] = 0.0
    x[2, 3] = float("nan")
    v = vectors.layer_vector("blk", 0, 32, device=DEV)
    for normalize in (True, False):
        y = x.clone()
        _hook_(y, v, normalize)
        assert torch.equal(y[1].cpu(), torch.zeros(32))  # the epsilon keeps a zero row at zero
        assert torch.isnan(y[2]).all()  # NaN stays NaN and stays in its row
        assert torch.isfinite(y[[0, 3]]).all()


@pytest.mark.skipif(not CUDA, reason="CUDA graphs need a GPU")
def test_layer_hook_under_cuda_graph_capture():
    x = _hidden(16, 256, seed=2).to("cuda", torch.bfloat16)
    v = vectors.layer_vector("blk", 1, 256, device="cuda").to(torch.bfloat16)
    for normalize in (True, False):
        expect = reference.apply_layer_transform(x, v, normalize=normalize)
        static = x.clone()
        _hook_(static.clone(), v, normalize)  # warm up (compile) outside the capture
        graph = torch.cuda.CUDAGraph()
        with torch.cuda.graph(graph):
            _hook_(static, v, normalize)
        static.copy_(x)
        graph.replay()
        torch.cuda.synchronize()
        assert torch.equal(static, expect)


# ----------------------------------------------------------------------------- custom ops


def _op_samples():
    from poc_kernels.backends.triton import backend

    dev = torch.device(DEV)
    t, tt, seed = backend.round_constants("blk_op", 16, dev)
    x = _hidden(3, 32, seed=3).to(dev)
    signs = torch.tensor([1, 2, 3], device=dev)
    refl = torch.arange(24, device=dev).view(3, 8)
    w = backend.cached_lm_head("blk_op", 32, 16, dev)
    return [
        (torch.ops.poc_kernels.triton_distances, (x, signs, refl, t, None, seed, 16, tt, True)),
        (torch.ops.poc_kernels.triton_distances, (x, signs, refl, t, w, seed, 16, tt, False)),
        (torch.ops.poc_kernels.triton_generate_inputs_, (signs, torch.empty(3, 2, 8, device=dev))),
        (torch.ops.poc_kernels.triton_lm_head, (7, 6, 4, dev)),
        (torch.ops.poc_kernels.triton_layer_hook_, (x.clone(), vectors.layer_vector("b", 0, 32, device=dev), True)),
        (torch.ops.poc_kernels.triton_layer_hook_, (x.clone(), vectors.layer_vector("b", 0, 32, device=dev), False)),
    ]


def test_custom_ops_opcheck():
    for op, args in _op_samples():
        torch.library.opcheck(op, args)


def test_custom_op_under_torch_compile():
    from poc_kernels.backends.triton import backend

    dev = torch.device(DEV)
    t, tt, seed = backend.round_constants("blk_op", 16, dev)
    x = _hidden(3, 32, seed=3).to(dev)
    signs = torch.tensor([1, 2, 3], device=dev)
    refl = torch.arange(24, device=dev).view(3, 8)

    def fn(h):
        return torch.ops.poc_kernels.triton_distances(h * 2.0, signs, refl, t, None, seed, 16, tt, True) + 1.0

    eager = fn(x)
    compiled = torch.compile(fn, backend="aot_eager", fullgraph=True)(x)
    assert torch.equal(eager, compiled)


# ----------------------------------------------------------------------------- GPU compilation


@pytest.mark.timeout(600)  # ptxas on every configuration for two architectures: about 2 minutes on two loaded cores
def test_every_shipped_kernel_compiles_for_sm80_and_sm90_without_spills():
    """Triton's NVIDIA backend and ptxas, no GPU needed: fails on any spill."""
    env = {k: v for k, v in os.environ.items() if k != "TRITON_INTERPRET"}
    proc = subprocess.run(
        [sys.executable, "-m", "poc_kernels.backends.triton.compile_check", "--arch", "80", "90", "--json"],
        capture_output=True,
        text=True,
        env=env,
        timeout=1200,
    )
    import json

    assert proc.stdout, proc.stderr
    reports = json.loads(proc.stdout)
    print(
        "\n".join(
            f"{r['kernel']:<20} sm_{r['arch']} regs={r['registers']} spills={r['spill_stores']}/{r['spill_loads']} "
            f"stack={r['stack']} smem={r['shared']}  {r['label']}"
            for r in reports
        )
    )
    kernels = {r["kernel"] for r in reports}
    assert kernels == {
        "_prep_kernel",
        "_project_kernel",
        "_finalize_kernel",
        "_normal_rows_kernel",
        "_layer_hook_kernel",
        "_artifact_kernel",
        "_token_inputs_kernel",
        "_token_layer_kernel",
        "_random_projection_kernel",
        "_token_random_projection_kernel",
    }
    assert {r["arch"] for r in reports} == {80, 90}
    failed = [r for r in reports if not r["ok"]]
    assert not failed, failed
    assert all(r["spill_stores"] == 0 and r["spill_loads"] == 0 for r in reports)
    assert proc.returncode == 0, proc.stderr
