"""LipFlowNet (the certified flagship, ``lipnet_cifar10``): the certified bound <= 1 checked in float64 on random
weights against exact Jacobians and gradient ascent; per-layer bounds; the training-time normaliser tracks the
certified one; the wide step (``hidden`` rows) keeps its bound; an expansive step breaks the check."""
import pytest
import torch

import dsnet_zoo
from dsnet_zoo.layers.gradient_flow import ContractiveStep
from dsnet_zoo.layers.diagnostics import empirical_lipschitz
from dsnet_zoo.models.lipflow import LipFlowNet

from conftest import randomise

TOL = 1e-6


def small(seed, **kw):
    kw = {"img_size": 8, "conv_stages": ((4, 2), (6, 1)), "dense_width": 12, "dense_depth": 2, **kw}
    return randomise(LipFlowNet(5, **kw).double(), seed=seed).eval()


def test_registered_flagship_shapes_and_bound():
    m = dsnet_zoo.create("lipnet_cifar10").eval()
    assert isinstance(m, LipFlowNet) and m.num_classes == 10
    x = torch.rand(2, 3, 32, 32)
    assert m.forward_features(x).shape == (2, m.num_features)
    assert m(x).shape == (2, 10)
    assert m.lipschitz_upper_bound() <= 1.0
    assert dsnet_zoo.create("lipnet_cifar100").num_classes == 100
    with pytest.raises(ValueError, match="expected images"):
        m(torch.rand(2, 3, 28, 28))


@pytest.mark.parametrize("kw", [{}, {"conv_hidden": 2.0, "dense_hidden": 20}])
def test_exact_jacobian_within_the_certified_bound(kw):
    """img_size 8: the whole Jacobian (192 inputs) is affordable; random weights at scale 2."""
    m = small(1, **kw)
    bound = m.lipschitz_upper_bound()
    assert 0 < bound <= 1.0 + TOL
    g = torch.Generator().manual_seed(2)
    for _ in range(3):
        x = torch.rand(1, 3, 8, 8, dtype=torch.float64, generator=g)
        jac = torch.autograd.functional.jacobian(m, x).reshape(-1, x.numel())
        assert torch.linalg.matrix_norm(jac, ord=2).item() <= bound * (1 + TOL)
        jf = torch.autograd.functional.jacobian(m.forward_features, x).reshape(-1, x.numel())
        assert torch.linalg.matrix_norm(jf, ord=2).item() <= m.feature_lipschitz_upper_bound() * (1 + TOL)


def test_gradient_ascent_and_per_layer_bounds():
    m = small(3)
    g = torch.Generator().manual_seed(4)
    x, y = torch.rand(2, 4, 3, 8, 8, dtype=torch.float64, generator=g)
    assert empirical_lipschitz(m, x, y, steps=30) <= m.lipschitz_upper_bound() * (1 + TOL)
    layers = m.certified_layers()
    assert [n for n, _, _ in layers][0] == "stages.0.lift" and layers[-1][0] == "head"
    for name, layer, shape in layers:
        b = layer.lipschitz_upper_bound()
        assert b <= 1.0 + TOL, name
        xs, ys = torch.randn((2, 2) + shape, dtype=torch.float64, generator=g)
        assert empirical_lipschitz(layer, xs, ys, steps=10) <= b * (1 + TOL), name


def test_expansive_step_breaks_the_check():
    """max_step 4 lets h ||A||^2 reach 4 > 2: the certified factor reports the expansion and gradient ascent
    finds a ratio above 1 (the check the flagship passes is not vacuous)."""
    step = randomise(ContractiveStep(6, None, hidden=9, max_step=4.0).double(), seed=5).eval()
    with torch.no_grad():
        step.u.fill_(5.0)  # h = 4 sigmoid(5) = 3.97
    g = torch.Generator().manual_seed(6)
    x, y = torch.randn(2, 8, 6, dtype=torch.float64, generator=g)
    assert step.lipschitz_upper_bound() > 1.0
    assert empirical_lipschitz(step, x, y, steps=30) > 1.0


def test_training_normaliser_tracks_the_certified_bound():
    """After a refresh the training-mode weights are the certified ones up to the power estimate's error, and
    the loss's ``lipschitz_by_construction`` (1) bounds the eval-mode certificate."""
    torch.manual_seed(7)
    m = LipFlowNet(10, conv_stages=((8, 1), (8, 1)), dense_width=32, dense_depth=1, cert_every=1)
    randomise(m, seed=8, scale=1.0)
    m.train()
    x = torch.rand(4, 3, 32, 32)
    for _ in range(3):
        m(x)
    for name, layer, _ in m.certified_layers():
        if hasattr(layer, "raw_weight"):
            w_train = layer.weight.detach()
            layer.eval()
            w_eval = layer.weight.detach()
            layer.train()
            assert torch.allclose(w_train, w_eval, rtol=1e-3, atol=1e-6), name
    m.eval()
    assert m.lipschitz_upper_bound() <= LipFlowNet.lipschitz_by_construction


def test_bf16_autocast_keeps_the_normaliser_in_float32():
    m = LipFlowNet(10, conv_stages=((8, 1), (8, 1)), dense_width=32, dense_depth=1).train()
    with torch.autocast("cpu", dtype=torch.bfloat16):
        w = m.stages[0].steps[0].A.weight
        out = m(torch.rand(2, 3, 32, 32))
    assert w.dtype == torch.float32 and out.dtype == torch.bfloat16


@pytest.mark.parametrize("arch, dataset", [("lipnet_cifar10", "cifar10-full"), ("lipnet_cifar100", "cifar100-full")])
def test_shipped_flagship_weights_are_certified_and_meet_their_recorded_metrics(arch, dataset, full_data_dir):
    """The committed weights (hub/) load strictly with their sha256 as the default tag; in float64 the
    certified bound of the exact weights is <= 1 and gradient ascent on real test images stays below it; the
    clean and certified accuracies on the full real test set are the recorded ones."""
    from dsnet_zoo.data import load_dataset
    from dsnet_zoo.evaluation import evaluate
    from dsnet_zoo.registry import get_pretrained_cfg

    cfg = get_pretrained_cfg(arch, required=True)  # the default tag
    assert cfg.source == "dsnet_zoo" and cfg.sha256 and cfg.dataset == dataset
    model = dsnet_zoo.create(arch, pretrained=True)
    m64 = model.double().eval()
    bound = m64.lipschitz_upper_bound()
    assert bound <= 1.0 + TOL
    x = load_dataset(dataset, "test", n=8, data_dir=full_data_dir).x.double() / 255
    assert empirical_lipschitz(m64, x[:4], x[4:], steps=10) <= bound * (1 + TOL)
    record = evaluate(f"{arch}.{cfg.tag}", dataset, data_dir=full_data_dir, metrics=["clean", "certified"],
                      progress=False)
    assert record["dataset"]["n"] == len(load_dataset(dataset, "test", data_dir=full_data_dir))
    recorded = cfg.metrics[dataset]
    assert 100 * record["metrics"]["clean"]["accuracy"] == pytest.approx(recorded["clean"], abs=0.05)
    for key, value in record["metrics"]["certified"]["accuracy"].items():
        assert 100 * value == pytest.approx(recorded[f"certified_l2_{key.split(':')[1]}"], abs=0.05), key
