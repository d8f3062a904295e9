"""The package surface: names, backends, the projection cache."""

import pytest
import torch

import poc_kernels
from poc_kernels import backends, reference, vectors

from _tolerances import TREE_SUM_F64_ATOL


def test_public_names():
    assert poc_kernels.POC_OUTPUT_DIM == 8192
    assert poc_kernels.NUM_REFLECTIONS == 8
    for name in (
        "compute_distances",
        "generate_inputs",
        "apply_layer_transform",
        "apply_layer_transform_",
        "rng",
        "reference",
        "vectors",
    ):
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
    torch.testing.assert_close(vectors.tree_sum(x), x.sum(-1), atol=TREE_SUM_F64_ATOL, rtol=0)
    # one row alone gives the same bits as inside a batch
    assert torch.equal(vectors.tree_sum(x[2:3]), vectors.tree_sum(x)[2:3])
    assert vectors.tree_sum(torch.empty(3, 0)).tolist() == [0.0, 0.0, 0.0]


def test_backends_register_themselves_with_the_typed_contract():
    for name in backends.registered():
        impl = backends.get(name)
        assert isinstance(impl, backends.Backend) and impl.name == name
        assert callable(impl.compute_distances) and callable(impl.generate_inputs)
    assert backends.registered()[-1] == "reference"  # the oracle runs everywhere, so it is "auto"'s last resort
    with pytest.raises(ValueError, match="unknown backend name"):
        backends.register_backend(backends.Backend("mine", lambda d: True, None, None))
    with pytest.raises(TypeError, match="backend must be a Backend"):
        backends.register_backend("reference")


def test_layer_transform_dispatch():
    """The API picks a backend that implements the layer transform: the oracle on the CPU."""
    x = torch.randn(3, 2, 40, dtype=torch.bfloat16)
    v = vectors.layer_vector("blk", 1, 40)
    y = poc_kernels.apply_layer_transform(x, v)
    assert y is not x and y.dtype == x.dtype and y.shape == x.shape
    assert torch.equal(y, reference.apply_layer_transform(x, v))
    x2 = x.clone()
    assert poc_kernels.apply_layer_transform_(x2, v) is x2 and torch.equal(x2, y)
    if "cpp" in poc_kernels.available_backends("cpu"):
        with pytest.raises(ValueError, match="backend='cpp' does not implement layer_transform"):
            poc_kernels.apply_layer_transform(x, v, backend="cpp")
    with pytest.raises(ValueError, match="v must be a 1-D tensor of size 40"):
        poc_kernels.apply_layer_transform(x, v[:7])
    with pytest.raises(TypeError, match="x must be a floating tensor"):
        poc_kernels.apply_layer_transform(x.to(torch.int32), v)
