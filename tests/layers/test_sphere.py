"""Sphere-preserving layers: ||out|| = ||in|| (relative error <= 1e-12 in float64)."""
import pytest
import torch

from dsnet_zoo.layers import SphereBlock, SphereConvBlock

NORM_TOL = 1e-12


def rel_norm_error(x, y):
    nx = x.flatten(1).norm(dim=1)
    return ((y.flatten(1).norm(dim=1) - nx).abs() / nx).max().item()


def randomised(module, gen):
    with torch.no_grad():
        for p in module.parameters():
            p.copy_(torch.randn(p.shape, generator=gen, dtype=p.dtype))
        module.step.fill_(2.0)
    return module


@pytest.mark.parametrize("make,shape", [
    pytest.param(lambda: SphereBlock(6, hidden=10), (8, 6), id="dense-cayley"),
    pytest.param(lambda: SphereBlock(2, hidden=4, act="relu"), (8, 2), id="dense-2d"),
    pytest.param(lambda: SphereConvBlock(4), (3, 4, 5, 5), id="conv-rotations"),
])
def test_norm_preserved_float64(make, shape):
    gen = torch.Generator().manual_seed(10)
    layer = randomised(make().double(), gen)
    x = torch.randn(shape, generator=gen, dtype=torch.float64)
    y = layer(x)
    assert (y - x).abs().max() > 1e-2
    assert rel_norm_error(x, y) <= NORM_TOL


def test_skew_matrix_is_skew():
    gen = torch.Generator().manual_seed(11)
    block = randomised(SphereBlock(5).double(), gen)
    s = block.skew(torch.randn(3, 5, generator=gen, dtype=torch.float64))
    assert (s + s.transpose(1, 2)).abs().max().item() == 0.0
    assert s.abs().max() > 0.1


def test_explicit_euler_does_not_preserve_the_norm():
    """x + h S(x) x grows the norm by h^2 ||S x||^2: the reason for the Cayley transform."""
    gen = torch.Generator().manual_seed(12)
    block = randomised(SphereBlock(6).double(), gen)
    x = torch.randn(4, 6, generator=gen, dtype=torch.float64)
    euler = x + block.step * (block.skew(x) @ x.unsqueeze(-1)).squeeze(-1)
    assert rel_norm_error(x, euler) > 1e-3
    assert rel_norm_error(x, block(x)) <= NORM_TOL


def test_bad_input_is_rejected():
    with pytest.raises(ValueError, match="even number of channels"):
        SphereConvBlock(3)
    with pytest.raises(ValueError, match=r"\(N, 4\)"):
        SphereBlock(4)(torch.randn(2, 5))
