"""Mass-preserving layers: sum(x) conserved exactly (relative error <= 1e-12 in float64)."""
import pytest
import torch

from dsnet_zoo.layers import (MassPreservingBlock, MassPreservingConvBlock, SumPreservingLift, SumPreservingLinear,
                              SumPreservingProjection)

SUM_TOL = 1e-12


def rel_sum_error(x, y):
    """|sum y - sum x| relative to the larger l1 mass (the scale of the sums' rounding)."""
    scale = torch.maximum(x.flatten(1).abs().sum(1), y.flatten(1).abs().sum(1))
    return ((y.flatten(1).sum(1) - x.flatten(1).sum(1)).abs() / scale).max().item()


def randomised(module, gen, scale=1.0):
    with torch.no_grad():
        for p in module.parameters():
            p.copy_(scale * torch.randn(p.shape, generator=gen, dtype=p.dtype))
    return module


CASES = [
    pytest.param(lambda: MassPreservingBlock(7, hidden=16), (5, 7), id="dense-relu"),
    pytest.param(lambda: MassPreservingBlock(4, hidden=8, act="tanh", out_act="identity"), (5, 4), id="dense-tanh"),
    pytest.param(lambda: MassPreservingConvBlock(3), (2, 3, 5, 6), id="conv3x3"),
    pytest.param(lambda: MassPreservingConvBlock(2, kernel_size=5, act="silu"), (2, 2, 4, 4), id="conv5x5"),
    pytest.param(lambda: SumPreservingLift(3, 10), (6, 3), id="lift"),
    pytest.param(lambda: SumPreservingProjection(10, 3), (6, 10), id="projection"),
    pytest.param(lambda: SumPreservingLinear(9, 4, learnable=False), (6, 9), id="fixed-paper-projection"),
]


@pytest.mark.parametrize("make,shape", CASES)
def test_sum_conserved_float64(make, shape):
    gen = torch.Generator().manual_seed(6)
    layer = randomised(make().double(), gen)
    x = torch.rand(shape, generator=gen, dtype=torch.float64) + 0.1
    y = layer(x)
    if y.shape == x.shape:
        assert (y - x).abs().max() > 1e-3  # something moved
    assert rel_sum_error(x, y) <= SUM_TOL


def test_conv_block_moves_mass_across_pixels_and_channels():
    gen = torch.Generator().manual_seed(7)
    layer = randomised(MassPreservingConvBlock(2).double(), gen)
    x = torch.zeros(1, 2, 4, 4, dtype=torch.float64)
    x[0, 0, 1, 1] = 1.0
    y = layer(x)
    assert y[0, 1].abs().sum() > 0  # other channel
    assert (y[0, 0] - x[0, 0]).abs().sum() - (y[0, 0, 1, 1] - 1).abs() > 0  # other pixels
    assert rel_sum_error(x, y) <= SUM_TOL


def test_field_without_antisymmetry_loses_mass():
    """(A + A^T) 1 instead of (A - A^T) 1: the sum is no longer conserved."""
    gen = torch.Generator().manual_seed(8)
    block = randomised(MassPreservingBlock(5, hidden=8).double(), gen)
    x = torch.rand(4, 5, generator=gen, dtype=torch.float64)
    a = block.upper_entries(x)
    sym = torch.zeros_like(x).index_add(1, block._rows, a).index_add(1, block._cols, a)
    assert rel_sum_error(x, x + block.step * sym) > 1e-3
    assert rel_sum_error(x, block(x)) <= SUM_TOL


def test_lift_with_unnormalised_columns_loses_mass():
    gen = torch.Generator().manual_seed(9)
    lift = randomised(SumPreservingLift(3, 8).double(), gen)
    x = torch.rand(4, 3, generator=gen, dtype=torch.float64)
    raw = lift.base(torch.float64) + lift.weight  # the correction without centring its columns
    assert rel_sum_error(x, x @ raw.T) > 1e-3
    assert rel_sum_error(x, lift(x)) <= SUM_TOL


def test_float32_sum_error_is_rounding_only():
    torch.manual_seed(0)
    block = MassPreservingConvBlock(8)
    x = torch.rand(4, 8, 32, 32)
    assert rel_sum_error(x, block(x)) <= 1e-5


def test_bad_input_is_rejected():
    with pytest.raises(ValueError, match="lift goes up"):
        SumPreservingLift(5, 3)
    with pytest.raises(ValueError, match="projection goes down"):
        SumPreservingProjection(3, 5)
    with pytest.raises(ValueError, match=r"\(N, 4\)"):
        MassPreservingBlock(4)(torch.rand(2, 3))
