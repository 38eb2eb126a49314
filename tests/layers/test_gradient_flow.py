"""Gradient-flow steps, switching pairs and the Euler block: certified bound >= exact local Jacobian norm
and >= empirical ratios (float64, random weights); breaking the condition makes the property fail."""
import math

import pytest
import torch

from dsnet_zoo.layers import functional
from dsnet_zoo.layers.euler import ActivationField, ExplicitEuler
from dsnet_zoo.layers.gradient_flow import (ContractiveStep, ExpansiveStep, SwitchingPair, contractive_factor,
                                            prescribed_expansive_step)
from dsnet_zoo.layers.diagnostics import empirical_lipschitz, operator_power_iteration

TOL = 1e-9


def randomise(module, scale=3.0, seed=0):
    """Random raw weights (far from the orthogonal init) and step parameters."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in module.named_parameters():
            p.copy_(torch.randn(p.shape, generator=g, dtype=p.dtype) * (scale if p.dim() > 1 else 1.0))
    return module


def jac_norm(module, x):
    """Spectral norm of the Jacobian at one point (a lower bound of the Lipschitz constant)."""
    jac = torch.autograd.functional.jacobian(module, x).reshape(x.numel(), x.numel())
    return torch.linalg.matrix_norm(jac, ord=2).item()


def check_bound(module, shape, steps=25, seed=0):
    g = torch.Generator().manual_seed(seed)
    module.eval()
    bound = module.lipschitz_upper_bound()
    x, y = torch.randn((2, 4) + shape, dtype=torch.float64, generator=g)
    emp = empirical_lipschitz(module, x, y, steps=steps)
    jn = max(jac_norm(module, x[i:i + 1]) for i in range(2))
    assert emp <= bound * (1 + TOL), (emp, bound)
    assert jn <= bound * (1 + TOL), (jn, bound)
    return bound, emp, jn


CASES = [dict(kernel_size=None, shape=(12,)), dict(kernel_size=3, input_size=6, shape=(4, 6, 6)),
         dict(kernel_size=3, input_size=6, padding_mode="circular", shape=(4, 6, 6))]


@pytest.mark.parametrize("case", CASES, ids=["dense", "conv0", "convcirc"])
@pytest.mark.parametrize("slope", [0.0, 0.5])
def test_contractive_step_nonexpansive(case, slope):
    case = dict(case)
    shape = case.pop("shape")
    step = randomise(ContractiveStep(shape[0], negative_slope=slope, **case).double(), seed=1)
    bound, emp, _ = check_bound(step, shape)
    assert bound <= 1.0
    if slope > 0 and case.get("padding_mode") == "circular" or case.get("kernel_size") is None and slope > 0:
        L, s = step.A.singular_value_bounds()
        assert s > 0 and bound < 1.0  # a certified sigma_min turns non-expansive into contractive


def test_contractive_step_clamps_unnormalised_A():
    """``normalize=False``: the step size is clamped by the certified bound, so the step stays non-expansive."""
    step = randomise(ContractiveStep(4, 3, input_size=6, normalize=False).double(), scale=5.0, seed=2)
    step.eval()
    L = step.A.norm_bound()
    assert L > 3 and step.step_size() * L * L < 2
    bound, _, _ = check_bound(step, (4, 6, 6))
    assert bound <= 1.0


def test_step_too_large_breaks_nonexpansiveness():
    """h above 2 / ||A||^2: some pair expands, and the (still valid) certified bound reports it."""
    # circular padding: the certified norm is exact, so h ||A||^2 really is 2.5
    step = ContractiveStep(4, 3, input_size=6, padding_mode="circular", negative_slope=1.0, max_step=2.6,
                           init_step=2.5).double()
    step = randomise(step, seed=3)
    with torch.no_grad():
        step.u.fill_(math.log(2.5 / 0.1))  # sigmoid -> 2.5/2.6: h ||A||^2 ~ 2.5 > 2
    bound, emp, _ = check_bound(step, (4, 6, 6), steps=60)
    assert emp > 1.05 and bound == pytest.approx(1.5, rel=1e-4)
    # the same through the shared functional step with a bad, unnormalised A
    g = torch.Generator().manual_seed(4)
    a = torch.randn(4, 4, 3, 3, dtype=torch.float64, generator=g) * 3
    sigma, v = operator_power_iteration(a, 6, n_iter=300, generator=g)
    h = 2.2 / sigma.item() ** 2
    f = lambda x: functional.gradient_step(x, a, None, h, lambda z: z)  # noqa: E731
    y = torch.randn(4, 4, 6, 6, dtype=torch.float64, generator=g)
    x = y + 0.1 * v  # pairs along the top singular vector, then ascent
    assert empirical_lipschitz(f, x, y, steps=20) > 1.15


@pytest.mark.parametrize("form", ["gradient", "residual"])
def test_expansive_step_bound(form):
    step = randomise(ExpansiveStep(4, 3, form=form, input_size=6, negative_slope=0.3).double(), seed=5)
    bound, emp, _ = check_bound(step, (4, 6, 6))
    assert bound > 1.0 and emp > 1.0  # it does expand


def test_prescribed_coupling():
    h_e = prescribed_expansive_step(0.3)
    assert (1 + h_e / 2) * math.sqrt(1 - 0.3 / 2 + 0.3 ** 2 / 4) == pytest.approx(1.0, abs=1e-14)
    assert h_e == pytest.approx(0.1412, abs=5e-5)  # the released models' value


def test_our_contraction_bound_is_never_looser_than_the_papers():
    for h in [0.05, 0.3, 0.9, 1.5]:
        for s in [0.0, 0.3, 1.0]:
            for a in [0.0, 0.5, 1.0]:
                paper = math.sqrt(max(1 - 2 * h * a * s * s + h * h, 0.0))
                assert contractive_factor(h, 1.0, s, a) <= paper + 1e-15


@pytest.mark.parametrize("mode", ["prescribed", "flexible"])
@pytest.mark.parametrize("case", [dict(kernel_size=None, shape=(8,)),
                                  dict(kernel_size=3, input_size=6, shape=(4, 6, 6))], ids=["dense", "convcirc"])
def test_switching_pair_guarded(mode, case):
    case = dict(case)
    shape = case.pop("shape")
    pair = randomise(SwitchingPair(shape[0], mode=mode, **case).double(), scale=1.0, seed=6)
    bound, _, _ = check_bound(pair, shape)
    assert bound <= 1.0


def _bad_pair(mode, guard):
    """Prescribed: A has a null direction e_0 along which W expands. Flexible: orthogonal A, but the
    expansive step leaves the paper's box."""
    pair = SwitchingPair(4, None, mode=mode, guard=guard, normalize=False, h_c=0.5,
                         expansive_max=0.5).double()
    with torch.no_grad():
        pair.A.raw_weight.copy_(torch.diag(torch.tensor([0.0, 1.0, 1.0, 1.0], dtype=torch.float64)))
        pair.A.bias.fill_(5.0)  # keeps the ReLU of the flexible expansive step active
        if mode == "prescribed":
            pair.W.raw_weight.copy_(torch.eye(4, dtype=torch.float64))
            pair.W.bias.fill_(5.0)
            pair.r.fill_(10.0)
        else:  # the flexible pair shares A; break the box instead: h_1 ~ 0.11 with h_2 ~ 0.5 > 0.05
            pair.A.raw_weight.copy_(torch.eye(4, dtype=torch.float64))
            pair.u_c.fill_(-20.0)
            pair.u_e.fill_(20.0)
    return pair


@pytest.mark.parametrize("mode", ["prescribed", "flexible"])
def test_switching_pair_without_guard_expands(mode):
    """Outside the paper's assumptions (prescribed: A not orthogonal; flexible: step outside the box) the
    unguarded pair expands (the property check fails); the guard restores a certified bound <= 1."""
    bad = _bad_pair(mode, guard=False)
    bound, emp, _ = check_bound(bad, (4,))
    assert emp > 1.0 + 1e-4 and bound > 1.0
    good = _bad_pair(mode, guard=True)
    bound, emp, _ = check_bound(good, (4,))
    assert bound <= 1.0


def test_explicit_euler_per_step_parameters():
    fields = [ActivationField(4, 3, input_size=6, negative_slope=0.1).double() for _ in range(3)]
    block = ExplicitEuler(fields, [0.1, 0.2, 0.3], t0=1.0).eval()  # eval: fixed (cached) weights
    assert block.times() == pytest.approx([1.0, 1.1, 1.3])
    assert not torch.equal(fields[0].A.raw_weight, fields[1].A.raw_weight)
    x = torch.randn(2, 4, 6, 6, dtype=torch.float64)
    expected = x
    for h, f in zip([0.1, 0.2, 0.3], fields):
        expected = expected + h * f(0.0, expected)
    assert torch.allclose(block(x), expected, rtol=0, atol=1e-14)
    bound, _, _ = check_bound(block, (4, 6, 6))
    assert bound == pytest.approx(math.prod(1 + h * f.lipschitz_upper_bound() for h, f in zip([0.1, 0.2, 0.3], fields)))
    with pytest.raises(ValueError, match="step_sizes"):
        ExplicitEuler(fields, [0.1, 0.2])


@pytest.mark.parametrize("mode", ["prescribed", "flexible"])
def test_guard_when_the_largest_eigenvalue_binds(mode):
    """Orthogonal A and slope 1: rho = |1 - h L^2| is the binding branch (the other tests exercise
    |1 - h a s^2|); the guarded pair's certified bound stays <= 1 and above every measured ratio."""
    pair = SwitchingPair(6, None, mode=mode, negative_slope=1.0, expansive_max=0.5).double()
    with torch.no_grad():
        (pair.u_e if mode == "flexible" else pair.r).fill_(20.0)
    L, s = pair.eval().A.singular_value_bounds()
    assert s == pytest.approx(L, rel=1e-5)  # orthogonal init
    bound, _, _ = check_bound(pair, (6,))
    assert bound <= 1.0
