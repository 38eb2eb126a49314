"""Certified norms and 1-Lipschitz layers, in float64 on random weights.

Ground truth: the exact operator norm of a small conv from its full matrix (impulse responses) and SVD.
Chain checked: certified bound >= exact norm >= power-iteration estimate, and >= every empirical ratio.
"""
import pytest
import torch

from dsnet_zoo.layers import caching, constrained_linear, diagnostics, functional, lipschitz, norm_bounds
from dsnet_zoo.layers.constrained_linear import ConstrainedLinearMap, LipConv2d, LipLinear
from dsnet_zoo.layers.diagnostics import empirical_lipschitz, operator_power_iteration
from dsnet_zoo.layers.functional import lip_conv, lip_conv_adjoint
from dsnet_zoo.layers.norm_bounds import REL_MARGIN, gram_iteration_norm_bound, singular_value_bounds

TOL = 1e-9  # float64 rounding of the exact SVD / power iteration comparisons


def conv_matrix(w: torch.Tensor, n: int, padding_mode: str) -> torch.Tensor:
    """The full matrix of the 'same' conv on n x n inputs (columns = impulse responses)."""
    c = w.shape[1]
    eye = torch.eye(c * n * n, dtype=torch.float64).reshape(-1, c, n, n)
    return lip_conv(eye, w, None, padding_mode).reshape(c * n * n, -1).T


@pytest.mark.parametrize("padding_mode", ["zeros", "circular"])
@pytest.mark.parametrize("c_out,c_in,k", [(4, 4, 3), (6, 3, 3), (3, 5, 3), (2, 2, 5)])
def test_conv_bound_chain(padding_mode, c_out, c_in, k):
    g = torch.Generator().manual_seed(c_out * 10 + c_in + k)
    n = 8 if padding_mode == "zeros" else 6
    w = torch.randn(c_out, c_in, k, k, dtype=torch.float64, generator=g)
    sv = torch.linalg.svdvals(conv_matrix(w, n, padding_mode))
    exact_max = sv[0].item()
    up, lo = singular_value_bounds(w, n, padding_mode, need_lower=True)
    up_gram, _ = singular_value_bounds(w, n, padding_mode, method="gram")
    pi, _ = operator_power_iteration(w, n, padding_mode, n_iter=300, generator=g)
    assert up.item() >= exact_max * (1 - TOL)
    assert up_gram.item() >= exact_max * (1 - TOL)
    assert exact_max >= pi.item() * (1 - TOL)
    if padding_mode == "circular":
        # the DFT symbol gives the exact spectrum: the bound is tight up to the margin
        assert up.item() <= exact_max * (1 + 2 * REL_MARGIN)
        if c_out >= c_in:
            exact_min = sv[c_in * n * n - 1].item()
            assert lo.item() <= exact_min * (1 + TOL)
            assert lo.item() >= exact_min - 1e-3 * exact_max
    else:
        assert lo.item() == 0.0  # no certified sigma_min for zero padding
        # the zero-padded bound is the circular norm on the (n + k - 1) grid, which also covers n
        circ_big = singular_value_bounds(w, n + k - 1, "circular")[0].item()
        assert up.item() == pytest.approx(circ_big, rel=1e-12)


def test_zero_padding_bound_covers_smaller_inputs():
    g = torch.Generator().manual_seed(1)
    w = torch.randn(3, 3, 3, 3, dtype=torch.float64, generator=g)
    up = singular_value_bounds(w, 8, "zeros")[0].item()
    for n in (3, 5, 8):
        assert torch.linalg.svdvals(conv_matrix(w, n, "zeros"))[0].item() <= up


def test_dense_bounds_and_gram_iteration():
    g = torch.Generator().manual_seed(2)
    for shape in [(10, 40), (40, 10), (7, 7)]:
        w = torch.randn(*shape, dtype=torch.float64, generator=g)
        sv = torch.linalg.svdvals(w)
        up, lo = singular_value_bounds(w, need_lower=True)
        assert sv[0] <= up <= sv[0] * (1 + 2 * REL_MARGIN)
        if shape[0] >= shape[1]:
            assert sv[-1] - 2 * REL_MARGIN * sv[0] ** 2 / sv[-1] <= lo <= sv[-1]
        gram = gram_iteration_norm_bound(w, n_iter=12)
        # exact arithmetic gives >= sv[0]; float64 rounding (~1e-15) is what REL_MARGIN absorbs downstream
        assert sv[0] <= gram * (1 + 1e-12) and gram <= sv[0] * min(shape) ** (1 / 2 ** 13) * (1 + 1e-12)
        pi, _ = operator_power_iteration(w, n_iter=500, generator=g)
        assert pi <= sv[0] * (1 + TOL)


def test_circular_adjoint_exact():
    g = torch.Generator().manual_seed(3)
    w = torch.randn(5, 4, 3, 3, dtype=torch.float64, generator=g)
    x = torch.randn(2, 4, 7, 7, dtype=torch.float64, generator=g)
    y = torch.randn(2, 5, 7, 7, dtype=torch.float64, generator=g)
    for mode in ("zeros", "circular"):
        lhs = (lip_conv(x, w, None, mode) * y).sum()
        rhs = (x * lip_conv_adjoint(y, w, mode)).sum()
        assert lhs.item() == pytest.approx(rhs.item(), rel=1e-12)


def test_power_iteration_warm_start():
    g = torch.Generator().manual_seed(4)
    w = torch.randn(8, 8, 3, 3, dtype=torch.float64, generator=g)
    exact = torch.linalg.svdvals(conv_matrix(w, 6, "zeros"))[0].item()
    cold, v = operator_power_iteration(w, 6, n_iter=3, generator=g)
    for _ in range(30):
        warm, v = operator_power_iteration(w, 6, v0=v, n_iter=3)
    assert cold <= exact * (1 + TOL) and warm <= exact * (1 + TOL)
    assert exact - warm.item() <= exact - cold.item()
    assert warm.item() >= exact * (1 - 1e-6)


@pytest.mark.parametrize("padding_mode", ["zeros", "circular"])
def test_lipconv_is_one_lipschitz(padding_mode):
    torch.manual_seed(5)
    n = 6
    layer = LipConv2d(3, 5, 3, input_size=n, padding_mode=padding_mode, init="kaiming").double()
    with torch.no_grad():
        layer.raw_weight.mul_(7.0)
    layer.train()
    w_train = [layer.weight.detach() for _ in range(5)][-1]  # power-normalised, certified ratio
    layer.eval()
    w = layer.weight
    exact = torch.linalg.svdvals(conv_matrix(w, n, padding_mode))[0].item()
    bound = layer.lipschitz_upper_bound()
    assert exact <= bound * (1 + TOL) and bound <= 1.0
    x, y = torch.rand(2, 4, 3, n, n, dtype=torch.float64)
    assert empirical_lipschitz(layer, x, y, steps=20) <= bound * (1 + TOL)
    assert layer.power_iteration_estimate(n_iter=200) <= bound
    # training runs (nearly) the certified weight: the power estimate times the refreshed ratio
    assert torch.allclose(w_train, w, rtol=1e-3, atol=0)


def test_unnormalised_conv_breaks_the_bound():
    """The same property check fails for an unnormalised conv: it can fail."""
    torch.manual_seed(6)
    layer = ConstrainedLinearMap(3, 5, 3, input_size=6, normalize=False, init="kaiming").double().eval()
    with torch.no_grad():
        layer.raw_weight.mul_(7.0)
    x, y = torch.rand(2, 4, 3, 6, 6, dtype=torch.float64)
    assert empirical_lipschitz(layer, x, y, steps=20) > 1.0
    assert layer.lipschitz_upper_bound() > 1.0


def test_liplinear_modes():
    torch.manual_seed(7)
    head = LipLinear(30, 10).double()
    with torch.no_grad():
        head.raw_weight.mul_(5)
    head.eval()
    assert torch.linalg.matrix_norm(head.weight, ord=2) <= head.lipschitz_upper_bound() <= 1.0
    rows = LipLinear(30, 10, mode="rownorm").double().eval()
    norms = rows.weight.norm(dim=1)
    assert torch.allclose(norms, torch.full_like(norms, 1 / (1 + REL_MARGIN)), rtol=1e-12)
    pn = rows.pair_norms()
    assert pn.max() <= 2.0 and torch.allclose(pn, torch.cdist(rows.weight, rows.weight))
    assert torch.linalg.matrix_norm(rows.weight, ord=2) <= rows.lipschitz_upper_bound()


def test_eval_cache_invalidation():
    torch.manual_seed(8)
    layer = LipConv2d(3, 4, 3, input_size=6)
    opt = torch.optim.SGD(layer.parameters(), lr=0.1)
    layer.train()
    x = torch.rand(2, 3, 6, 6)
    layer(x).square().sum().backward()
    assert layer.raw_weight.grad is not None and layer.raw_weight.grad.abs().sum() > 0
    layer.eval()
    w1 = layer.weight
    assert layer.weight is w1  # cached
    opt.step()  # in-place update bumps the parameter's version
    w2 = layer.weight
    assert w2 is not w1 and not torch.equal(w1, w2)
    other = LipConv2d(3, 4, 3, input_size=6, init="kaiming")
    layer.load_state_dict(other.state_dict())
    other.eval()
    assert torch.equal(layer.weight, other.weight)
    layer.train()
    assert layer.weight is not layer.weight  # recomputed in training


def test_input_size_is_checked():
    layer = LipConv2d(3, 4, 3, input_size=8)
    layer(torch.rand(1, 3, 8, 8))
    layer(torch.rand(1, 3, 5, 5))  # zero padding: smaller inputs are covered
    with pytest.raises(ValueError, match="input_size"):
        layer(torch.rand(1, 3, 9, 9))
    circ = LipConv2d(3, 4, 3, input_size=8, padding_mode="circular")
    with pytest.raises(ValueError, match="input_size"):
        circ(torch.rand(1, 3, 6, 6))
    with pytest.raises(ValueError, match="padding_mode"):
        LipConv2d(3, 4, 3, input_size=8, padding_mode="reflect")


def test_cert_every_one_certifies_training_weights():
    """With cert_every=1 every training step divides by the certified bound of that step's raw weight."""
    torch.manual_seed(9)
    layer = LipConv2d(3, 6, 3, input_size=6, cert_every=1, init="kaiming").double()
    opt = torch.optim.SGD(layer.parameters(), lr=0.5)
    x = torch.rand(2, 3, 6, 6, dtype=torch.float64)
    for _ in range(3):
        layer.train()
        w_train = layer.weight
        opt.zero_grad()
        layer(x).sum().backward()
        opt.step()
        exact = torch.linalg.svdvals(conv_matrix(w_train.detach(), 6, "zeros"))[0].item()
        assert exact <= 1.0
        layer.eval()
        layer.train()
    layer.eval()
    w_eval = layer.weight
    layer.train()
    assert torch.allclose(layer.weight.detach(), w_eval, rtol=1e-12, atol=0)


def test_lipschitz_module_reexports_every_name():
    """``dsnet_zoo.layers.lipschitz`` keeps the old imports working: each name is the object of its new home."""
    homes = [caching, constrained_linear, diagnostics, functional, norm_bounds]
    for name in lipschitz.__all__:
        obj = getattr(lipschitz, name)
        assert any(getattr(h, name, None) is obj for h in homes), name


def test_empirical_lipschitz_contract():
    """``steps=0`` measures the given pairs; the box clamps both points; coinciding pairs are skipped; ``fn``'s
    parameters get no gradients."""
    lin = torch.nn.Linear(4, 3, bias=False).double()
    x = torch.rand(5, 4, dtype=torch.float64)
    y = torch.rand(5, 4, dtype=torch.float64)
    exact = torch.linalg.matrix_norm(lin.weight, 2).item()
    start = ((lin(x) - lin(y)).norm(dim=1) / (x - y).norm(dim=1)).max().item()
    assert empirical_lipschitz(lin, x, y, steps=0) == pytest.approx(start, rel=1e-12)
    assert start <= empirical_lipschitz(lin, x, y, steps=30) <= exact * (1 + TOL)
    assert lin.weight.grad is None
    # y outside the box is clamped: pairs that collapse onto x are skipped (and ascent does not fail on them)
    ones = torch.ones(2, 4, dtype=torch.float64)
    assert empirical_lipschitz(lin, ones, ones + 10, steps=3, box=(0.0, 1.0)) == 0.0
    assert empirical_lipschitz(lin, torch.zeros(2, 4, dtype=torch.float64), torch.ones(2, 4, dtype=torch.float64),
                               steps=0, box=(0.0, 1.0)) == pytest.approx(
        (lin(torch.ones(1, 4, dtype=torch.float64)).norm() / 2).item(), rel=1e-12)
