"""The layer transform: SPEC §7 (normalize, then reflect) and SPEC-ARTIFACTS §3 (reflect only).

Both follow the deployed eager op sequence's roundings, not the exact value
(SPEC §7 as amended): the oracle is that sequence, run by torch.
"""

import pytest
import torch

import poc_kernels
from poc_kernels import reference, rng
from poc_kernels.seeds import layer_seed
from poc_kernels.vectors import layer_vector

from _tolerances import LAYER_EAGER_ULPS, UNIT_F32_ATOL

DTYPES = [torch.float32, torch.float16, torch.bfloat16]
MANTISSA = {torch.float32: 23, torch.float16: 10, torch.bfloat16: 7}


def test_layer_vector_is_the_seeded_unit_vector():
    v = layer_vector("blk", 3, 100)
    assert v.dtype == torch.float32 and v.shape == (100,)
    raw = rng.normal(layer_seed("blk", 3), 100).double()
    torch.testing.assert_close(v.double(), raw / raw.norm(), atol=UNIT_F32_ATOL, rtol=0)
    assert not torch.equal(v, layer_vector("blk", 4, 100))


def test_reflection_conforms_to_the_deployed_code(artifacts_conformance):
    """SPEC-ARTIFACTS §3 on the hidden state and the residual, bit for bit with the deployed code's outputs."""
    for case in artifacts_conformance["layer_hook_no_normalization"]:
        v = torch.tensor(case["v_float32"])
        assert (v - layer_vector(case["block_hash"], case["layer"], case["hidden_size"])).abs().max() <= UNIT_F32_ATOL
        for name, dtype in (("float32", torch.float32), ("bfloat16", torch.bfloat16), ("float16", torch.float16)):
            data = case[name]
            for x_key, y_key in (("x", "y"), ("residual", "residual_out")):
                x = torch.tensor(data[x_key]).to(dtype)
                y = reference.apply_layer_transform(x, v, normalize=False)
                assert y.dtype == dtype and torch.equal(y.float(), torch.tensor(data[y_key])), (case["layer"], name)


def _exact(x: torch.Tensor, v: torch.Tensor, normalize: bool) -> torch.Tensor:
    x64, v64 = x.double(), v.to(x.dtype).double()
    if normalize:
        x64 = x64 / (x64.norm(dim=-1, keepdim=True) + 1e-8)
    return x64 - 2 * (x64 @ v64)[..., None] * v64


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("normalize", [True, False])
@pytest.mark.parametrize("hidden", [64, 769])
def test_eager_sequence_is_within_the_spec_bound_of_the_exact_value(dtype, normalize, hidden):
    g = torch.Generator().manual_seed(hidden)
    x = (torch.randn(16, hidden, generator=g) * 20).to(dtype)
    v = layer_vector("blk", 0, hidden)
    y = reference.apply_layer_transform(x, v, normalize=normalize)
    assert y.dtype == dtype and y.shape == x.shape
    exact = _exact(x, v, normalize)
    _, e = torch.frexp(exact.abs().amax(dim=-1, keepdim=True))
    ulp = torch.pow(2.0, (e - 1 - MANTISSA[dtype]).double())
    assert ((y.double() - exact).abs() <= LAYER_EAGER_ULPS * ulp).all()


def test_the_two_variants_differ_and_the_normalized_one_is_unit():
    x = torch.randn(4, 64) * 7
    v = layer_vector("blk", 2, 64)
    a = reference.apply_layer_transform(x, v)
    b = reference.apply_layer_transform(x, v, normalize=False)
    assert not torch.allclose(a, b)
    torch.testing.assert_close(a.norm(dim=-1), torch.ones(4), atol=1e-6, rtol=0)
    torch.testing.assert_close(b.norm(dim=-1), x.norm(dim=-1), atol=0, rtol=1e-6)  # a reflection keeps the norm


def test_layer_transform_keeps_leading_dims_and_zero_rows():
    x = torch.zeros(2, 3, 16)
    x[0, 1] = 1.0
    v = layer_vector("blk", 1, 16)
    for normalize in (True, False):
        y = reference.apply_layer_transform(x, v, normalize=normalize)
        assert y.shape == (2, 3, 16)
        assert torch.equal(y[1], torch.zeros(3, 16))  # the epsilon keeps zero rows at zero, not NaN
        assert torch.isfinite(y).all()


def test_layer_transform_bad_input():
    v = layer_vector("blk", 1, 16)
    with pytest.raises(ValueError, match="v must be a 1-D tensor of size 16"):
        reference.apply_layer_transform(torch.randn(2, 16), torch.randn(15))
    with pytest.raises(TypeError, match="x must be a floating tensor"):
        reference.apply_layer_transform(torch.ones(2, 16, dtype=torch.int64), v)
    with pytest.raises(TypeError, match="normalize must be a bool"):
        poc_kernels.apply_layer_transform(torch.randn(2, 16), v, normalize="yes")
    with pytest.raises(ValueError, match="layer"):
        layer_vector("blk", -1, 16)
