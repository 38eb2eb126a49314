"""The paper's attack protocol (Foolbox L2PGD(steps=10), defaults) on small models: semantics and hygiene."""
from __future__ import annotations

import pytest
import torch
from torch import nn

import foolbox

import dsnet_zoo.evaluation as evaluation  # noqa: E402
from dsnet_zoo.evaluation import metrics, paper_protocol  # noqa: E402
from dsnet_zoo.evaluation.paper_protocol import (PAPER_ATTACK_EPS, PAPER_EPS_GRID, clean_outcomes,  # noqa: E402
                                                 paper_pgd_accuracy, paper_pgd_outcomes)
from dsnet_zoo.models import lipnet_paper  # noqa: E402


def _tiny_model(seed=0) -> nn.Module:
    torch.manual_seed(seed)
    return nn.Sequential(nn.Conv2d(3, 4, 3, padding=1), nn.ReLU(), nn.Flatten(), nn.Linear(4 * 6 * 6, 3))


def _data(n=24, seed=1):
    g = torch.Generator().manual_seed(seed)
    return torch.rand(n, 3, 6, 6, generator=g), torch.randint(0, 3, (n,), generator=g)


def test_paper_eps_grid():
    """One definition (models/lipnet_paper.py): the grid with eps = 0 (the authors' clean column) and its
    attack radii; the modules' ``PAPER_EPS`` are aliases of one or the other."""
    assert PAPER_EPS_GRID == (0.0, 8 / 255, 16 / 255, 36 / 255, 0.3, 0.5, 0.6, 0.8, 1.0)
    assert PAPER_ATTACK_EPS == PAPER_EPS_GRID[1:] and min(PAPER_ATTACK_EPS) > 0
    assert PAPER_EPS_GRID is lipnet_paper.PAPER_EPS_GRID and PAPER_ATTACK_EPS is lipnet_paper.PAPER_ATTACK_EPS
    assert paper_protocol.PAPER_EPS is PAPER_EPS_GRID  # deprecated alias: the grid with eps = 0
    assert metrics.PAPER_EPS is PAPER_ATTACK_EPS and evaluation.PAPER_EPS is PAPER_ATTACK_EPS  # paper-pgd's radii
    assert len(PAPER_EPS_GRID) == len(next(iter(lipnet_paper._PAPER_ROBUST_ACC.values())))


def test_foolbox_l2pgd_defaults_are_the_papers():
    attack = foolbox.attacks.L2PGD(steps=10)
    assert (attack.rel_stepsize, attack.abs_stepsize, attack.steps, attack.random_start) == (0.025, None, 10, True)
    assert foolbox.__version__.startswith("3.3.")


def test_eps_zero_is_clean_correctness():
    model = _tiny_model()
    x, y = _data()
    out = paper_pgd_outcomes(model, x, y, (0.0, 0.5), batch_size=10)
    assert set(out) == {0.0, 0.5}
    assert out[0.0].dtype == torch.bool and out[0.0].shape == (24,)
    assert torch.equal(out[0.0], clean_outcomes(model, x, y))
    # an attacked example that was misclassified clean is never counted robust
    assert not (out[0.5] & ~out[0.0]).any()


def test_matches_a_direct_foolbox_call():
    model = _tiny_model().eval()
    x, y = _data()
    eps = [0.0, 0.1, 0.5]
    ours = paper_pgd_outcomes(model, x, y, eps, batch_size=len(x), seed=3, channels_last=False)
    torch.manual_seed(3)
    fmodel = foolbox.PyTorchModel(model, bounds=(0, 1))
    _, _, success = foolbox.attacks.L2PGD(steps=10)(fmodel, x, y, epsilons=eps)
    for k, e in enumerate(eps):
        assert torch.equal(ours[e], ~success[k])


def test_attack_lowers_accuracy_on_a_weak_model():
    # the protocol really attacks: at a radius comparable to the image norm, accuracy falls
    model = _tiny_model()
    x, y = _data(n=48)
    acc = paper_pgd_accuracy(model, x, y, (0.0, 3.0))
    assert acc[3.0] < acc[0.0] or acc[0.0] == 0.0


def test_reproducible_and_leaves_rng_and_model_untouched():
    model = _tiny_model()
    x, y = _data()
    flags = [p.requires_grad for p in model.parameters()]
    torch.manual_seed(123)
    before = torch.rand(3)
    torch.manual_seed(123)
    a = paper_pgd_outcomes(model, x, y, (0.3,), seed=5)
    after = torch.rand(3)
    b = paper_pgd_outcomes(model, x, y, (0.3,), seed=5)
    assert torch.equal(before, after)  # the caller's generator did not move
    assert torch.equal(a[0.3], b[0.3])
    assert [p.requires_grad for p in model.parameters()] == flags
    assert all(p.is_contiguous() for p in model.parameters())


def test_bad_input_is_refused():
    model = _tiny_model()
    x, y = _data()
    with pytest.raises(ValueError, match=r"\[0, 1\]"):
        paper_pgd_outcomes(model, x * 2 - 0.5, y)
    with pytest.raises(ValueError, match="y must be"):
        paper_pgd_outcomes(model, x, y[:-1])
    with pytest.raises(ValueError, match="non-negative"):
        paper_pgd_outcomes(model, x, y, (-0.1,))
    with pytest.raises(ValueError, match="x must be"):
        paper_pgd_outcomes(model, x[0], y)
