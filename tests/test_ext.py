"""The C++/CUDA extension poc_kernels._C: its ops against hashlib, the conformance vectors and the reference."""

import hashlib
import os
import shutil
import subprocess
import sys

import numpy as np
import pytest
import torch

import poc_kernels
from poc_kernels import _custom_ops as ops
from poc_kernels import rng, vectors
from poc_kernels.backends import cpp
from poc_kernels.seeds import derive_nonce_seeds_hashlib, lm_head_seed, target_seed

from _numpy_murmur import hash32 as np_hash32
from _tolerances import DIST_ATOL, LM_HEAD_ATOL, NORMAL_ATOL, UNIT_F64_ATOL

DISABLED = ops.DISABLE_ENV in os.environ and ops._disabled()
needs_ext = pytest.mark.skipif(not ops.HAS_EXT, reason=f"extension not loaded: {ops.EXT_STATUS}")
needs_cuda = pytest.mark.skipif(
    not (ops.HAS_CUDA_EXT and torch.cuda.is_available()), reason="needs a GPU and the extension's CUDA kernels"
)

# Seeds, hashes, uniforms and signs are compared bit for bit; normals and distances with tests/_tolerances.py.
ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


@pytest.mark.skipif(DISABLED, reason="the extension is disabled on purpose by POC_KERNELS_NO_EXT")
def test_extension_is_built_and_loaded():
    """`make test` builds the extension; a build that silently failed must not pass as a CPU-only run."""
    assert ops.HAS_EXT, ops.EXT_STATUS
    assert "cpp" in poc_kernels.available_backends("cpu")
    assert poc_kernels.auto_backend("cpu") == "cpp"  # the "auto" choice on CPU


def test_import_with_extension_disabled():
    """POC_KERNELS_NO_EXT=1 at import ignores a built extension; the package works on its other backends."""
    code = (
        "import logging, torch; logging.basicConfig(level=logging.INFO)\n"
        "import poc_kernels\n"
        "from poc_kernels import _custom_ops\n"
        "assert not _custom_ops.HAS_EXT\n"
        "assert 'cpp' not in poc_kernels.available_backends(), poc_kernels.available_backends()\n"
        "d = poc_kernels.compute_distances(torch.ones(1, 8), 'b', 'k', [3])\n"
        "assert d.shape == (1,) and bool(torch.isfinite(d).all())\n"
        "s = poc_kernels.seeds.derive_nonce_seeds('b', 'k', [3])\n"
        "assert int(s.signs[0]) == poc_kernels.rng.seed_from_string('b_k_nonce_3_signs')\n"
        "try:\n"
        "    poc_kernels.compute_distances(torch.ones(1, 8), 'b', 'k', [3], backend='cpp')\n"
        "    raise SystemExit('backend=cpp did not raise')\n"
        "except ValueError as e:\n"
        "    assert 'not available' in str(e)\n"
        "print('backends:', poc_kernels.available_backends())\n"
    )
    env = dict(os.environ, POC_KERNELS_NO_EXT="1")
    env.pop("TRITON_INTERPRET", None)  # the interpreted Triton backend would be listed for CPU tensors too
    proc = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=120, cwd=ROOT)
    assert proc.returncode == 0, proc.stderr
    assert "backends: ['reference']" in proc.stdout
    assert "POC_KERNELS_NO_EXT is set" in proc.stderr  # the log says why
    assert "backends available: reference" in proc.stderr


# ----------------------------------------------------------------------------- seeds


def _sha_seed(s: str) -> int:
    return int(hashlib.sha256(s.encode("utf-8")).hexdigest()[:8], 16)


NONCES = [0, 1, 9, 10, 99, 100, 12345, 999999999, 1000000000, 2**31 - 1, 2**31, 2**32 - 2, 2**32 - 1]


@needs_ext
@pytest.mark.parametrize("prefix_len", range(0, 131, 1))
def test_derive_seeds_every_prefix_alignment(prefix_len):
    """Every length of the shared prefix mod 64, so tails end in one block or spill into a second."""
    # f"{bh}_{pk}_nonce" has len(bh) + len(pk) + 7 bytes; a 2-byte UTF-8 character in the key
    bh = "b" * max(0, prefix_len - 9)
    pk = "é" if prefix_len >= 9 else ""
    nonces = torch.tensor(NONCES)
    inp, sig, ref = ops.derive_seeds(bh, pk, nonces, 8)
    assert inp.dtype == sig.dtype == ref.dtype == torch.uint32
    assert ref.shape == (len(NONCES), 8)
    for i, n in enumerate(NONCES):
        assert int(inp[i]) == _sha_seed(f"{bh}_{pk}_nonce{n}")
        assert int(sig[i]) == _sha_seed(f"{bh}_{pk}_nonce_{n}_signs")
        assert [int(v) for v in ref[i]] == [_sha_seed(f"{bh}_{pk}_nonce_{n}_hidden_r{r}") for r in range(8)]


@needs_ext
def test_derive_seeds_matches_hashlib_on_many_nonces():
    g = np.random.default_rng(0)
    nonces = np.concatenate([np.arange(3000), g.integers(0, 2**32, 5000, dtype=np.uint64)])
    for bh, pk in [("block_alpha", "node_A"), ("0x" + "ab" * 32, "ключ-ノード"), ("", "")]:
        got = poc_kernels.seeds.derive_nonce_seeds(bh, pk, nonces.tolist(), 8)
        exp = derive_nonce_seeds_hashlib(bh, pk, nonces.tolist(), 8)
        assert torch.equal(got.input, exp.input) and torch.equal(got.signs, exp.signs)
        assert torch.equal(got.reflections, exp.reflections)


@needs_ext
def test_derive_seeds_flags_dtypes_and_many_reflections():
    nonces = [5, 77, 2**32 - 1]
    exp = derive_nonce_seeds_hashlib("b", "k", nonces, 12)  # r up to 11: two-digit suffixes
    for dtype in (torch.int64, torch.int32, torch.uint32):
        if dtype == torch.int32:
            t = torch.tensor([5, 77], dtype=dtype)
        else:
            t = torch.tensor(nonces, dtype=dtype)
        k = t.shape[0]
        inp, sig, ref = ops.derive_seeds("b", "k", t, 12)
        assert torch.equal(inp.long(), exp.input[:k]) and torch.equal(sig.long(), exp.signs[:k])
        assert torch.equal(ref.long(), exp.reflections[:k])
    inp, sig, ref = ops.derive_seeds("b", "k", torch.tensor(nonces), 8, need_input=False)
    assert inp.shape == (0,) and sig.shape == (3,) and ref.shape == (3, 8)
    inp, sig, ref = ops.derive_seeds("b", "k", torch.tensor(nonces), 8, need_post=False)
    assert torch.equal(inp.long(), exp.input) and sig.shape == (0,) and ref.shape == (0, 8)
    inp, sig, ref = ops.derive_seeds("b", "k", torch.tensor(nonces), 0)
    assert ref.shape == (3, 0)
    empty = ops.derive_seeds("b", "k", torch.empty(0, dtype=torch.int64), 8)
    assert [tuple(t.shape) for t in empty] == [(0,), (0,), (0, 8)]


@needs_ext
@pytest.mark.parametrize(
    "nonces, match",
    [
        (torch.tensor([1, -1]), r"nonces must lie in \[0, 2\*\*32\), got -1"),
        (torch.tensor([2**32]), r"nonces must lie in \[0, 2\*\*32\), got 4294967296"),
        (torch.tensor([1.0]), "nonces must be an integer tensor"),
        (torch.tensor([True]), "nonces must be an integer tensor"),
        (torch.tensor([[1, 2]]), "nonces must be a 1-D integer tensor"),
    ],
)
def test_derive_seeds_bad_input(nonces, match):
    with pytest.raises(RuntimeError, match=match):
        ops.derive_seeds("b", "k", nonces, 8)
    with pytest.raises(RuntimeError, match="num_reflections must be >= 0"):
        ops.derive_seeds("b", "k", torch.tensor([1]), -1)


# ----------------------------------------------------------------------------- streams


@needs_ext
def test_streams_conformance(conformance):
    for stream in conformance["streams"]:
        seed, n = torch.tensor([stream["seed"]]), stream["n"]
        assert torch.equal(ops.hash_stream(seed, n)[0].long(), torch.tensor(stream["murmur3"]))
        u = ops.uniform_stream(seed, n)[0]
        assert torch.equal(u, torch.tensor(stream["uniform"], dtype=torch.float32))
        assert torch.equal(ops.sign_stream(seed, n)[0], torch.where(u > 0.5, 1.0, -1.0))
        z = ops.normal_(torch.empty(1, n), seed)[0]
        torch.testing.assert_close(z, torch.tensor(stream["normal"], dtype=torch.float32), atol=NORMAL_ATOL, rtol=0)


@needs_ext
@pytest.mark.parametrize("seed", [0, 1, 2**31, 2**32 - 1, 0xDEADBEEF])
def test_streams_match_numpy_and_reference(seed):
    n = 5003
    s = torch.tensor([seed])
    expect = np_hash32(np.arange(n, dtype=np.uint32), seed)
    assert torch.equal(ops.hash_stream(s, n)[0].long(), torch.from_numpy(expect.astype(np.int64)))
    assert torch.equal(ops.uniform_stream(s, n)[0], rng.uniform(seed, n))
    assert torch.equal(ops.sign_stream(s, n)[0], vectors.sign_flips(s, n)[0])
    for m in (1, 2, 7, 8, 9, 769, 4096, 4097):  # the stream depends on n through p = ceil(n / 2)
        torch.testing.assert_close(ops.normal_(torch.empty(1, m), s)[0], rng.normal(seed, m), atol=NORMAL_ATOL, rtol=0)


@needs_ext
def test_sign_regressions():
    """SPEC §2/§4: hashes cover the full range (not all signs +1), and U == 0.5 exactly gives -1."""
    from _numpy_murmur import seed_for_hash

    s = ops.sign_stream(torch.tensor([12345]), 4096)[0]
    assert 0.45 < (s < 0).double().mean().item() < 0.55
    half = seed_for_hash(2**31, 3)  # hash 2**31 at index 3 -> U = 0.5
    assert ops.sign_stream(torch.tensor([half]), 8)[0, 3].item() == -1.0
    top = seed_for_hash(2**32 - 1, 5)  # float32 rounds it to 2**32 -> U = 1.0 exactly
    assert ops.uniform_stream(torch.tensor([top]), 8)[0, 5].item() == 1.0


@needs_ext
def test_normals_are_the_correctly_rounded_float32_steps():
    """Each float32 step of SPEC §3 with log/sin/cos rounded correctly: float64 NumPy, rounded per step."""
    seed, n = 4242, 60001
    p = (n + 1) // 2
    u = rng.uniform(seed, 2 * p).numpy()
    u1, u2 = np.maximum(u[:p], np.float32(1e-10)), u[p:]
    rad = np.sqrt(np.log(u1.astype(np.float64)).astype(np.float32) * np.float32(-2.0))
    ang = np.float32(rng.TWO_PI_F32) * u2
    cos = np.cos(ang.astype(np.float64)).astype(np.float32)
    sin = np.sin(ang.astype(np.float64)).astype(np.float32)
    expect = np.concatenate([rad * cos, rad * sin])[:n]
    got = ops.normal_(torch.empty(1, n), torch.tensor([seed]))[0].numpy()
    assert np.array_equal(got, expect)


@needs_ext
def test_simd_and_portable_paths_agree_bitwise():
    """The AVX2 and scalar code paths are the same IEEE operations in the same order."""
    seeds = torch.tensor([3, 2**32 - 1])
    x = torch.randn(7, 769, generator=torch.Generator().manual_seed(0))
    nonces = list(range(7))
    w, t = cpp.projection("blk", 769, 300)
    _, sg, rf = ops.derive_seeds("blk", "key", torch.tensor(nonces), 8, False, True)

    def run():
        return (
            ops.normal_(torch.empty(2, 10001), seeds),
            ops.uniform_stream(seeds, 1003),
            ops.sign_stream(seeds, 1003),
            ops.compute_distances(x, w, t, sg, rf),
        )

    simd = run()
    previous = torch.ops.poc_kernels._set_simd_enabled(False)
    try:
        portable = run()
    finally:
        torch.ops.poc_kernels._set_simd_enabled(previous)
    for a, b in zip(simd, portable):
        assert torch.equal(a, b)


@needs_ext
@pytest.mark.parametrize("dtype", [torch.float64, torch.float16, torch.bfloat16])
def test_normal_dtypes_are_cast_once(dtype):
    seeds = torch.tensor([9, 10, 11])
    f32 = ops.normal_(torch.empty(3, 333), seeds, 0.5)
    assert torch.equal(ops.normal_(torch.empty(3, 333, dtype=dtype), seeds, 0.5), f32.to(dtype))
    # rows of a larger buffer: only the view is written
    big = torch.full((3, 400), 7.0, dtype=dtype)
    ops.normal_(big[:, :333], seeds, 0.5)
    assert torch.equal(big[:, :333], f32.to(dtype)) and bool((big[:, 333:] == 7.0).all())


@needs_ext
def test_lm_head_is_the_scaled_stream():
    w, t = cpp.projection("block_x", 12, 40)
    n = ops.normal_(torch.empty(1, 480), torch.tensor([lm_head_seed("block_x")]))[0]
    assert torch.equal(w, (n * np.float32(0.02)).view(40, 12))  # float32 product, as SPEC §4 and the reference
    torch.testing.assert_close(w, vectors.lm_head("block_x", 12, 40), atol=LM_HEAD_ATOL, rtol=0)
    raw = ops.normal_(torch.empty(1, 40), torch.tensor([target_seed("block_x")]))[0].double()
    torch.testing.assert_close(t, raw / raw.norm(), atol=UNIT_F64_ATOL, rtol=0)


@needs_ext
@pytest.mark.parametrize(
    "call, match",
    [
        (lambda: ops.hash_stream(torch.tensor([[1]]), 4), "seeds must be a 1-D integer tensor"),
        (lambda: ops.uniform_stream(torch.tensor([1.5]), 4), "seeds must be an integer tensor"),
        (lambda: ops.sign_stream(torch.tensor([-3]), 4), r"seeds must lie in \[0, 2\*\*32\), got -3"),
        (lambda: ops.uniform_stream(torch.tensor([1]), -1), "n must lie in"),
        (lambda: ops.normal_(torch.empty(2, 4), torch.tensor([1])), r"out must be 2-D \[len\(seeds\), n\]"),
        (lambda: ops.normal_(torch.empty(1, 4, dtype=torch.int32), torch.tensor([1])), "out must be float32"),
        (lambda: ops.normal_(torch.empty(4, 2).t(), torch.tensor([1, 2])), "out must have unit stride"),
    ],
)
def test_stream_ops_bad_input(call, match):
    with pytest.raises(RuntimeError, match=match):
        call()


# ----------------------------------------------------------------------------- distances


def _case_args(case):
    hidden = torch.tensor(case["last_hidden"], dtype=torch.float32)
    w, t = cpp.projection(case["block_hash"], case["hidden_size"], poc_kernels.POC_OUTPUT_DIM)
    _, sg, rf = ops.derive_seeds(case["block_hash"], case["public_key"], torch.tensor(case["nonces"]), 8, False, True)
    return hidden, w, t, (sg if case["sign_flips"] else None), rf


@needs_ext
def test_compute_distances_op_conformance(conformance):
    for case in conformance["cases"]:
        d = ops.compute_distances(*_case_args(case))
        err = (d.double() - torch.tensor(case["distances_fp64"], dtype=torch.float64)).abs().max().item()
        assert err <= DIST_ATOL, f"{case['name']}: {err:.3g}"


@needs_ext
def test_compute_distances_independent_of_thread_count():
    x = torch.randn(40, 1000, generator=torch.Generator().manual_seed(1))
    nonces = list(range(40))
    before = torch.get_num_threads()
    try:
        torch.set_num_threads(1)
        one = poc_kernels.compute_distances(x, "blk", "key", nonces, backend="cpp")
        torch.set_num_threads(max(2, before))
        many = poc_kernels.compute_distances(x, "blk", "key", nonces, backend="cpp")
    finally:
        torch.set_num_threads(before)
    assert torch.equal(one, many)


@needs_ext
def test_batch_invariance_across_internal_chunks():
    """Batches larger than the op's internal chunk of nonces (512 at this H) give each nonce the same bits."""
    x = torch.randn(700, 64, generator=torch.Generator().manual_seed(2))
    nonces = torch.arange(700)
    full = poc_kernels.compute_distances(x, "blk", "key", nonces, backend="cpp")
    for idx in (torch.arange(511, 514), torch.tensor([699, 0, 512]), torch.arange(0, 700, 7)):
        assert torch.equal(poc_kernels.compute_distances(x[idx], "blk", "key", nonces[idx], backend="cpp"), full[idx])


@needs_ext
def test_compute_distances_op_bad_input():
    x, w, t = torch.randn(2, 16), torch.randn(32, 16), torch.randn(32, dtype=torch.float64)
    sg, rf = torch.tensor([1, 2]), torch.tensor([[1, 2], [3, 4]])
    cases = [
        ((x.double(), w, t, sg, rf), "last_hidden must be float32"),
        ((x[0], w, t, sg, rf), r"last_hidden must be 2-D \[batch, hidden\]"),
        ((x, w[:, :8], t, sg, rf), r"weight must be 2-D \[output_dim, hidden\] = \[D, 16\]"),
        ((x, w.half(), t, sg, rf), "weight must be float32"),
        ((x, w, t.float(), sg, rf), "target must be float64"),
        ((x, w, t[:5], sg, rf), r"target must be 1-D \[output_dim\] = \[32\]"),
        ((x, w, t, sg[:1], rf), r"sign_seeds must be 1-D \[batch\] = \[2\]"),
        ((x, w, t, torch.tensor([1, -2]), rf), r"sign_seeds must lie in \[0, 2\*\*32\)"),
        ((x, w, t, sg, rf[0]), r"reflection_seeds must be 2-D \[batch, num_reflections\]"),
        ((x, w, t, sg, rf.float()), "reflection_seeds must be an integer tensor"),
    ]
    for args, match in cases:
        with pytest.raises(RuntimeError, match=match):
            ops.compute_distances(*args)


# ----------------------------------------------------------------------------- opcheck


def _opcheck_cases():
    nonces = torch.tensor([0, 7, 2**32 - 1])
    x, w = torch.randn(3, 24), torch.randn(16, 24)
    t = torch.randn(16, dtype=torch.float64)
    t = t / t.norm()
    sg, rf = torch.tensor([1, 2, 3]), torch.tensor([[4, 5], [6, 7], [8, 9]])
    return [
        ("derive_seeds", ("blk", "key", nonces, 8, True, True)),
        ("derive_seeds", ("blk", "key", nonces, 3, False, True)),
        ("hash_stream", (torch.tensor([1, 2]), 17)),
        ("uniform_stream", (torch.tensor([1, 2]), 17)),
        ("sign_stream", (torch.tensor([1, 2]), 17)),
        ("normal_", (torch.empty(2, 17), torch.tensor([1, 2]), 0.5)),
        ("compute_distances", (x, w, t, sg, rf)),
        ("compute_distances", (x, w, t, None, rf)),
    ]


@needs_ext
@pytest.mark.parametrize("name, args", _opcheck_cases(), ids=lambda v: v if isinstance(v, str) else "")
def test_opcheck(name, args):
    op = getattr(torch.ops.poc_kernels, name).default
    torch.library.opcheck(op, args)


# ----------------------------------------------------------------------------- CUDA


@needs_cuda
def test_derive_seeds_cuda_matches_cpu_and_hashlib():
    g = np.random.default_rng(1)
    nonces = torch.from_numpy(np.concatenate([np.arange(1000), g.integers(0, 2**32, 20000)]).astype(np.int64))
    for bh, pk in [("block_alpha", "node_A"), ("c" * 60, "d" * 51), ("0x" + "ab" * 32, "ключ-ノード")]:
        for r, need_input, need_post in [(8, True, True), (12, False, True), (8, True, False)]:
            cpu = ops.derive_seeds(bh, pk, nonces, r, need_input, need_post)
            gpu = ops.derive_seeds(bh, pk, nonces.cuda(), r, need_input, need_post)
            for a, b in zip(cpu, gpu):
                assert b.device.type == "cuda" and b.dtype == torch.uint32
                assert torch.equal(a.long(), b.cpu().long())
    # and against hashlib itself, on a slice (the hashlib loop is slow)
    some = nonces[::97]
    ref = derive_nonce_seeds_hashlib("block_alpha", "node_A", some, 8)
    gpu = ops.derive_seeds("block_alpha", "node_A", some.cuda(), 8, True, True)
    for a, b in zip((ref.input, ref.signs, ref.reflections), gpu):
        assert torch.equal(a, b.cpu().long())


@needs_cuda
def test_derive_seeds_cuda_bad_input_and_opcheck():
    with pytest.raises(RuntimeError, match=r"nonces must lie in \[0, 2\*\*32\)"):
        ops.derive_seeds("b", "k", torch.tensor([1, 2**32], device="cuda"), 8)
    args = ("b", "k", torch.arange(5, device="cuda"), 8, True, True)
    torch.library.opcheck(torch.ops.poc_kernels.derive_seeds.default, args)


@pytest.mark.skipif(shutil.which("nvcc") is None, reason="nvcc is not installed")
def test_cuda_seed_code_on_the_host(tmp_path):
    """The per-thread code of the CUDA seed kernel (csrc/seeds_cuda.cuh), built for the host by nvcc, vs hashlib.

    The build also compiles that code for sm_90 (the device side of csrc/sha256.h), warnings as errors.
    """
    exe = tmp_path / "seeds_cuda_host"
    build = subprocess.run(
        [
            "nvcc",
            "-O2",
            "-std=c++17",
            "-arch=sm_90",
            "-Werror=all-warnings",
            "-x",
            "cu",
            "-I",
            os.path.join(ROOT, "csrc"),
            os.path.join(ROOT, "tests", "csrc", "seeds_cuda_host.cu"),
            "-o",
            str(exe),
        ],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert build.returncode == 0, build.stderr
    nonces = NONCES + list(range(200, 260))
    for bh, pk in [("block_alpha", "node_A"), ("c" * 60, "d" * 51), ("0x" + "ab" * 32, "ключ-ノード"), ("", "")]:
        for r, need_input in [(8, True), (12, False)]:
            run = subprocess.run(
                [str(exe), bh, pk, str(r), str(int(need_input))],
                input="\n".join(map(str, nonces)),
                capture_output=True,
                text=True,
                timeout=60,
            )
            assert run.returncode == 0, run.stderr
            lines = run.stdout.splitlines()
            assert len(lines) == len(nonces)
            for n, line in zip(nonces, lines):
                expect = (
                    ([f"0:{_sha_seed(f'{bh}_{pk}_nonce{n}')}"] if need_input else [])
                    + [f"1:{_sha_seed(f'{bh}_{pk}_nonce_{n}_signs')}"]
                    + [f"{2 + i}:{_sha_seed(f'{bh}_{pk}_nonce_{n}_hidden_r{i}')}" for i in range(r)]
                )
                assert line.split() == expect, (bh, pk, n)
