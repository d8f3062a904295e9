"""SPEC §7: the layer-hook transform of the alternative randomization mode."""

import pytest
import torch

from poc_kernels import reference, rng
from poc_kernels.seeds import layer_seed
from poc_kernels.vectors import layer_vector

from _tolerances import LAYER_HALF_ULP as HALF_ULP
from _tolerances import UNIT_F32_ATOL


def test_layer_vector_is_the_seeded_unit_vector():
    v = layer_vector("blk", 3, 100)
    assert v.dtype == torch.float32 and v.shape == (100,)
    raw = rng.normal(layer_seed("blk", 3), 100).double()
    torch.testing.assert_close(v.double(), raw / raw.norm(), atol=UNIT_F32_ATOL, rtol=0)
    assert not torch.equal(v, layer_vector("blk", 4, 100))


@pytest.mark.parametrize("dtype", [torch.float32, torch.float16, torch.bfloat16])
@pytest.mark.parametrize("hidden", [64, 769])
def test_layer_transform_matches_float64_formula(dtype, hidden):
    g = torch.Generator().manual_seed(hidden)
    x = (torch.randn(7, hidden, generator=g) * 20).to(dtype)
    v = layer_vector("blk", 0, hidden)
    y = reference.apply_layer_transform(x, v)
    assert y.dtype == dtype and y.shape == x.shape
    x64, v64 = x.double(), v.double()
    u = x64 / (x64.norm(dim=-1, keepdim=True) + 1e-8)
    expect = u - 2 * (u @ v64)[:, None] * v64
    # |y| <= 1, so half an ulp at magnitude 1 bounds the rounding error
    assert (y.double() - expect).abs().max().item() <= HALF_ULP[dtype]
    # reflection of a unit vector keeps it unit
    assert torch.allclose(
        y.double().norm(dim=-1), torch.ones(7, dtype=torch.float64), atol=hidden**0.5 * HALF_ULP[dtype] * 2
    )


def test_layer_transform_keeps_leading_dims_and_zero_rows():
    x = torch.zeros(2, 3, 16)
    x[0, 1] = 1.0
    v = layer_vector("blk", 1, 16)
    y = reference.apply_layer_transform(x, v)
    assert y.shape == (2, 3, 16)
    assert torch.equal(y[1], torch.zeros(3, 16))  # the epsilon keeps zero rows at zero, not NaN
    assert torch.isfinite(y).all()


def test_layer_transform_bad_input():
    v = layer_vector("blk", 1, 16)
    with pytest.raises(ValueError, match="v must be a 1-D tensor of size 16"):
        reference.apply_layer_transform(torch.randn(2, 16), torch.randn(15))
    with pytest.raises(TypeError, match="x must be a floating tensor"):
        reference.apply_layer_transform(torch.ones(2, 16, dtype=torch.int64), v)
    with pytest.raises(ValueError, match="layer"):
        layer_vector("blk", -1, 16)
