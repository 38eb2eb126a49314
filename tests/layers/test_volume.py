"""VolumePreservingBlock: |det J| = 1 and an exact inverse, dense and conv forms."""
import pytest
import torch

from dsnet_zoo.layers import VolumePreservingBlock, conv_op

VOLUME_TOL = 1e-10
INVERSE_TOL64 = 1e-10
INVERSE_TOL32 = 1e-4


def jacobian(fn, x):
    return torch.autograd.functional.jacobian(lambda z: fn(z.reshape(x.shape)).reshape(-1), x.reshape(-1))


def log_abs_det(fn, x):
    return torch.linalg.slogdet(jacobian(fn, x))[1].item()


def randomised(block, gen):
    with torch.no_grad():
        for p in block.parameters():
            p.copy_(torch.randn(p.shape, generator=gen, dtype=p.dtype) * (0.7 if p.dim() else 1.0))
        block.step.fill_(0.5 + torch.rand((), generator=gen, dtype=block.step.dtype).item())
    return block


FORMS = [
    pytest.param(dict(channels=8, dense=True), (3, 8), id="dense"),
    pytest.param(dict(channels=6), (1, 6, 4, 4), id="conv3x3"),
    pytest.param(dict(channels=4, kernel_size=5), (1, 4, 5, 3), id="conv5x5"),
]


@pytest.mark.parametrize("act", ["tanh", "silu", "relu"])
@pytest.mark.parametrize("kwargs,shape", FORMS)
def test_volume_preserving_and_invertible_float64(kwargs, shape, act):
    gen = torch.Generator().manual_seed(4)
    block = randomised(VolumePreservingBlock(act=act, **kwargs).double(), gen)
    x = torch.randn(shape, generator=gen, dtype=torch.float64)
    y = block(x)
    assert (y - x).abs().max() > 1e-2
    assert (block.inverse(y) - x).abs().max().item() <= INVERSE_TOL64
    assert abs(log_abs_det(block, x[:1])) <= VOLUME_TOL


def test_inverse_float32_cifar_sized():
    torch.manual_seed(0)
    block = VolumePreservingBlock(64)
    with torch.no_grad():
        block.step.fill_(1.0)
    x = torch.randn(4, 64, 32, 32)
    y = block(x)
    assert (y - x).abs().max() > 1e-2
    assert (block.inverse(y) - x).abs().max().item() <= INVERSE_TOL32


def test_update_reading_its_own_variable_changes_volume():
    """x's update depending on x itself (not a shear) gives det J != 1."""
    gen = torch.Generator().manual_seed(5)
    block = randomised(VolumePreservingBlock(6).double(), gen)

    def wrong(z):
        x, v = z.chunk(2, dim=1)
        x = x + block.step * torch.tanh(conv_op(v, block.weight_v, block.bias_v) + conv_op(x, block.weight_x))
        v = v + block.step * torch.tanh(conv_op(x, block.weight_x, block.bias_x))
        return torch.cat([x, v], 1)

    x = torch.randn(1, 6, 4, 4, generator=gen, dtype=torch.float64)
    assert abs(log_abs_det(wrong, x)) > 1e-3
    assert abs(log_abs_det(block, x)) <= VOLUME_TOL


def test_bad_input_is_rejected():
    with pytest.raises(ValueError, match="even number of channels"):
        VolumePreservingBlock(3)
    with pytest.raises(ValueError, match=r"C=6"):
        VolumePreservingBlock(6, dense=True)(torch.randn(2, 4))
