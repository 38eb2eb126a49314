"""LipNet: certified end-to-end bound <= 1, checked against exact Jacobians and gradient ascent in
float64 on random weights; per-block bounds; eval caching; a broken lift makes the check fail."""
import copy

import pytest
import torch

import dsnet_zoo
from dsnet_zoo.layers.constrained_linear import LipConv2d
from dsnet_zoo.layers.diagnostics import empirical_lipschitz
from dsnet_zoo.models.lipnet import LipBlock, LipNet

from conftest import randomise

TOL = 1e-6  # the end-to-end tolerance


@pytest.fixture(scope="module")
def net64():
    return randomise(LipNet(10).double(), seed=1).eval()


def test_registered_and_shapes():
    names = dsnet_zoo.list_models("lipnet*")
    for n in ("lipnet_conv_cifar10", "lipnet_conv_cifar100", "lipnet_w2_cifar10", "lipnet_switch_cifar10"):
        assert n in names
    m = dsnet_zoo.create("lipnet_conv_cifar100")
    assert m.num_classes == 100 and m.num_features == 128 * 4 * 4
    x = torch.rand(2, 3, 32, 32)
    feats = m.forward_features(x)
    assert feats.shape == (2, 128, 4, 4)
    assert m.forward_head(feats, pre_logits=True).shape == (2, 2048)
    assert m(x).shape == (2, 100)
    with pytest.raises(ValueError, match="expected images"):
        m(torch.rand(2, 3, 28, 28))
    assert dsnet_zoo.create("lipnet_w2_cifar10").num_features == 256 * 16


def test_end_to_end_certificate(net64):
    bound = net64.lipschitz_upper_bound()
    assert bound <= 1.0 + TOL
    assert net64.feature_lipschitz_upper_bound() <= 1.0 + TOL
    g = torch.Generator().manual_seed(2)
    x, y = torch.rand(2, 2, 3, 32, 32, dtype=torch.float64, generator=g)
    assert empirical_lipschitz(net64, x, y, steps=8) <= bound * (1 + TOL)
    # exact local Lipschitz constant (Jacobian spectral norm) at random images
    for i in range(2):
        jac = torch.autograd.functional.jacobian(net64, x[i:i + 1]).reshape(10, -1)
        assert torch.linalg.matrix_norm(jac, ord=2).item() <= bound * (1 + TOL)


def test_small_input_exact_jacobian():
    """img_size 8: the whole Jacobian of the feature map (192 inputs) is affordable."""
    m = randomise(LipNet(5, img_size=8, widths=(4, 6)).double(), seed=3).eval()
    bound = m.lipschitz_upper_bound()
    assert bound <= 1.0 + TOL
    g = torch.Generator().manual_seed(4)
    for _ in range(3):
        x = torch.rand(1, 3, 8, 8, dtype=torch.float64, generator=g)
        jac = torch.autograd.functional.jacobian(lambda z: m.forward_head(m.forward_features(z), pre_logits=True), x)
        jac = jac.reshape(-1, x.numel())
        assert torch.linalg.matrix_norm(jac, ord=2).item() <= m.feature_lipschitz_upper_bound() * (1 + TOL)


@pytest.mark.parametrize("step", ["contractive", "prescribed", "flexible"])
def test_per_block_bounds(step):
    m = randomise(LipNet(10, widths=(4, 6, 8), step=step).double(), seed=5, scale=1.0).eval()
    g = torch.Generator().manual_seed(6)
    total = 1.0
    for block in m.dynamic_blocks():
        b = block.lipschitz_upper_bound()
        total *= b
        assert b <= 1.0 + TOL
        x, y = torch.randn((2, 4) + block.input_shape, dtype=torch.float64, generator=g)
        assert empirical_lipschitz(block, x, y, steps=15) <= b * (1 + TOL)
        for name, layer, shape in block.certified_layers():
            lb = layer.lipschitz_upper_bound()
            xs, ys = torch.randn((2, 2) + shape, dtype=torch.float64, generator=g)
            assert empirical_lipschitz(layer, xs, ys, steps=10) <= lb * (1 + TOL), name
    assert total == pytest.approx(m.feature_lipschitz_upper_bound(), rel=1e-12)
    names = [n for n, _, _ in m.certified_layers()]
    assert names[0] == "blocks.0.lift" and names[-1] == "head"


def test_unnormalised_lift_breaks_the_certificate():
    """The same block check fails when the lift is not scaled by its certified norm."""
    block = randomise(LipBlock(3, 6, 8, depth=2).double(), seed=7, scale=3.0).eval()
    block.lift.normalize = False
    block.lift.clear_cache()
    g = torch.Generator().manual_seed(8)
    x, y = torch.rand(2, 4, 3, 8, 8, dtype=torch.float64, generator=g)
    assert block.lipschitz_upper_bound() > 1.0
    assert empirical_lipschitz(block, x, y, steps=15) > 1.0


def test_switch_variant_certified():
    m = randomise(dsnet_zoo.create("lipnet_switch_cifar10").double(), seed=9, scale=1.0).eval()
    assert m.lipschitz_upper_bound() <= 1.0 + TOL
    x, y = torch.rand(2, 1, 3, 32, 32, dtype=torch.float64)
    assert empirical_lipschitz(m, x, y, steps=4) <= m.lipschitz_upper_bound() * (1 + TOL)


def test_eval_cache_and_state_dict():
    torch.manual_seed(10)
    m = LipNet(10, widths=(8, 8, 16))
    opt = torch.optim.SGD(m.parameters(), lr=0.05)
    x = torch.rand(4, 3, 32, 32)
    m.train()
    train_out = m(x)
    torch.nn.functional.cross_entropy(train_out, torch.arange(4)).backward()
    assert all(p.grad is not None for p in m.parameters())
    m.eval()
    # training runs the certified normalisation's values (power estimate x certified ratio)
    assert torch.allclose(train_out, m(x), rtol=1e-3, atol=1e-4)
    out1 = m(x)
    lift = m.blocks[0].lift
    w1 = lift.weight
    assert lift.weight is w1 and torch.equal(m(x), out1)
    opt.step()
    assert lift.weight is not w1
    out2 = m(x)
    assert not torch.equal(out1, out2)
    bound2 = m.lipschitz_upper_bound()
    m2 = LipNet(10, widths=(8, 8, 16))
    m2.load_state_dict(m.state_dict())
    m2.eval()
    assert torch.equal(m2(x), out2) and m2.lipschitz_upper_bound() == bound2
    # edits through .data bypass version counters: clear_cache() is the documented remedy
    with torch.no_grad():
        m2.blocks[0].lift.raw_weight.data.mul_(-1)
    assert torch.equal(m2(x), out2)
    m2.clear_cache()
    assert not torch.equal(m2(x), out2)
    # replacing a parameter object invalidates the cache even if it lands at the same address
    m2.blocks[0].lift.raw_weight = torch.nn.Parameter(m.blocks[0].lift.raw_weight.detach().clone())
    assert torch.equal(m2(x), out2)
    w_before = lift.weight
    m.eval()
    assert lift.weight is w_before  # eval() on a model already in eval mode keeps the cache
    m3 = copy.deepcopy(m).double()
    assert torch.allclose(m3(x.double()), out2.double(), atol=1e-5)


def test_rownorm_head_pair_certificate():
    m = LipNet(10, widths=(8, 8, 16), head="rownorm").eval()
    pn = m.head.pair_norms()
    assert pn.max() <= 2.0
    expected = m.feature_lipschitz_upper_bound() * m.head.lipschitz_upper_bound()
    assert m.lipschitz_upper_bound() == pytest.approx(expected)


def test_no_unconstrained_scalars_or_batchnorm():
    m = LipNet(10)
    assert not any(isinstance(x, torch.nn.modules.batchnorm._BatchNorm) for x in m.modules())
    assert isinstance(m.blocks[0].lift, LipConv2d)
    # every scalar parameter is a step-size / rescaling logit mapped through a sigmoid
    scalars = [n for n, p in m.named_parameters() if p.dim() == 0]
    assert scalars and all(n.endswith(".u") for n in scalars)


def test_inference_mode_cache_does_not_leak_into_autograd():
    """A cache filled under inference_mode must not be reused when gradients are needed (attacks)."""
    m = LipNet(10, widths=(4, 4, 8)).eval()
    x = torch.rand(2, 3, 32, 32)
    with torch.inference_mode():
        ref = m(x)
    x.requires_grad_(True)
    out = m(x)
    out.sum().backward()
    assert x.grad is not None and torch.allclose(out.detach(), ref)
