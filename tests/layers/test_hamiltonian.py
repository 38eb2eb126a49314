"""HamiltonianBlock: symplectic (J^T Omega J = Omega) and exactly invertible, dense and conv forms."""
import pytest
import torch
import torch.nn.functional as F

from dsnet_zoo.layers import HamiltonianBlock, conv_adjoint, conv_op

SYMPLECTIC_TOL = 1e-10
INVERSE_TOL64 = 1e-10
INVERSE_TOL32 = 1e-4


def jacobian(fn, x):
    return torch.autograd.functional.jacobian(lambda z: fn(z.reshape(x.shape)).reshape(-1), x.reshape(-1))


def symplectic_defect(jac):
    n = jac.shape[0]
    k = n // 2
    eye, zero = torch.eye(k, dtype=jac.dtype), torch.zeros(k, k, dtype=jac.dtype)
    omega = torch.cat([torch.cat([zero, eye], 1), torch.cat([-eye, zero], 1)], 0)
    return (jac.T @ omega @ jac - omega).abs().max().item()


def randomised(block, gen):
    """Random weights, biases and step: the property must not depend on the initialisation."""
    with torch.no_grad():
        for p in block.parameters():
            p.copy_(torch.randn(p.shape, generator=gen, dtype=p.dtype) * (0.5 if p.dim() else 1.0))
        block.step.fill_(0.3 + torch.rand((), generator=gen, dtype=block.step.dtype).item())
    return block


FORMS = [
    pytest.param(dict(channels=6, hidden=5, dense=True), (3, 6), id="dense"),
    pytest.param(dict(channels=4, hidden=3), (1, 4, 4, 4), id="conv3x3"),
    pytest.param(dict(channels=4, hidden=2, kernel_size=5), (1, 4, 3, 5), id="conv5x5"),
]


@pytest.mark.parametrize("act", ["tanh", "silu", "relu"])
@pytest.mark.parametrize("kwargs,shape", FORMS)
def test_symplectic_and_invertible_float64(kwargs, shape, act):
    gen = torch.Generator().manual_seed(1)
    block = randomised(HamiltonianBlock(act=act, **kwargs).double(), gen)
    x = torch.randn(shape, generator=gen, dtype=torch.float64)
    y = block(x)
    assert (y - x).abs().max() > 1e-2  # the map does something
    assert (block.inverse(y) - x).abs().max().item() <= INVERSE_TOL64
    xs = x[:1]
    jac = jacobian(block, xs)
    assert symplectic_defect(jac) <= SYMPLECTIC_TOL
    assert abs(torch.linalg.slogdet(jac)[1].item()) <= SYMPLECTIC_TOL  # symplectic implies |det J| = 1


def test_inverse_float32_cifar_sized():
    torch.manual_seed(0)
    block = HamiltonianBlock(64)
    with torch.no_grad():
        block.step.fill_(1.0)
    x = torch.randn(4, 64, 32, 32)
    y = block(x)
    assert (y - x).abs().max() > 1e-2
    assert (block.inverse(y) - x).abs().max().item() <= INVERSE_TOL32


def _weights(block):
    return block.weight_p, block.bias_p, block.weight_q, block.bias_q, block.step


def test_coupled_update_is_not_symplectic():
    """q's update reading q as well (a non-separable, non-shear step) breaks J^T Omega J = Omega."""
    gen = torch.Generator().manual_seed(2)
    block = randomised(HamiltonianBlock(4, hidden=3).double(), gen)
    wp, bp, wq, bq, h = _weights(block)

    def coupled(x):
        q, p = x.chunk(2, dim=1)
        q = q + h * conv_adjoint(torch.tanh(conv_op(p, wp, bp) + conv_op(q, wq)), wp)
        p = p - h * conv_adjoint(torch.tanh(conv_op(q, wq, bq)), wq)
        return torch.cat([q, p], 1)

    x = torch.randn(1, 4, 4, 4, generator=gen, dtype=torch.float64)
    assert symplectic_defect(jacobian(coupled, x)) > 1e-3
    assert symplectic_defect(jacobian(block, x)) <= SYMPLECTIC_TOL


def test_non_gradient_update_is_not_symplectic():
    """A^T sigma(B p) with A != B is not a Hamiltonian gradient: the shear is not symplectic."""
    gen = torch.Generator().manual_seed(3)
    block = randomised(HamiltonianBlock(6, hidden=4, dense=True).double(), gen)
    wp, bp, wq, bq, h = _weights(block)

    def wrong(x):
        q, p = x.chunk(2, dim=1)
        q = q + h * F.linear(torch.tanh(F.linear(p, wp, bp)), wq.t())
        return torch.cat([q, p], 1)

    x = torch.randn(1, 6, generator=gen, dtype=torch.float64)
    assert symplectic_defect(jacobian(wrong, x)) > 1e-3


def test_forward_does_not_call_autograd_grad(monkeypatch):
    def forbidden(*a, **k):
        raise AssertionError("forward called torch.autograd.grad")

    monkeypatch.setattr(torch.autograd, "grad", forbidden)
    block = HamiltonianBlock(8)
    x = torch.randn(2, 8, 5, 5)
    block.inverse(block(x))


def test_bad_input_is_rejected():
    with pytest.raises(ValueError, match="even number of channels"):
        HamiltonianBlock(5)
    with pytest.raises(ValueError, match="kernel_size must be odd"):
        HamiltonianBlock(4, kernel_size=2)
    with pytest.raises(ValueError, match=r"C=8"):
        HamiltonianBlock(8)(torch.randn(1, 6, 4, 4))
    with pytest.raises(ValueError, match="unknown activation"):
        HamiltonianBlock(4, act="nope")
