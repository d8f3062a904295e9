"""The package surface: names, backends, the projection cache."""

import torch

import poc_kernels
from poc_kernels import reference


def test_public_names():
    assert poc_kernels.POC_OUTPUT_DIM == 8192
    assert poc_kernels.NUM_REFLECTIONS == 8
    for name in ("compute_distances", "generate_inputs", "rng", "reference"):
        assert hasattr(poc_kernels, name)
    for name in ("seed_from_string", "hash32", "uniform", "normal"):
        assert callable(getattr(poc_kernels.rng, name))


def test_available_backends_include_reference_and_auto_resolves():
    avail = poc_kernels.available_backends()
    assert "reference" in avail
    assert set(avail) <= set(poc_kernels.BACKENDS)
    x = torch.randn(3, 32)
    auto = poc_kernels.auto_backend("cpu")
    assert auto in poc_kernels.available_backends("cpu") and auto != "triton"  # the interpreter is never "auto"
    assert torch.equal(
        poc_kernels.compute_distances(x, "b", "k", [1, 2, 3]),
        poc_kernels.compute_distances(x, "b", "k", [1, 2, 3], backend=auto),
    )


def test_projection_cache_is_bounded_and_reused():
    reference.clear_cache()
    x = torch.randn(1, 16)
    for i in range(reference.CACHE_SIZE + 3):
        reference.compute_distances(x, f"blk{i}", "k", [0])
    assert len(reference._CACHE) == reference.CACHE_SIZE
    w1, _ = reference._projection("blk_reuse", 16, 8192, torch.device("cpu"))
    w2, _ = reference._projection("blk_reuse", 16, 8192, torch.device("cpu"))
    assert w1 is w2
    reference.clear_cache()
    assert len(reference._CACHE) == 0


def test_tree_sum_fixed_order():
    x = torch.randn(5, 37, dtype=torch.float64)
    torch.testing.assert_close(reference.tree_sum(x), x.sum(-1), atol=1e-12, rtol=0)
    # one row alone gives the same bits as inside a batch
    assert torch.equal(reference.tree_sum(x[2:3]), reference.tree_sum(x)[2:3])
    assert reference.tree_sum(torch.empty(3, 0)).tolist() == [0.0, 0.0, 0.0]
