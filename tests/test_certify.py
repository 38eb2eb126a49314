"""Certificates against a model whose exact adversarial distance is known (a linear map), in float64."""
from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from dsnet_zoo.evaluation import Certifier, Column, CrossCheckError, certified_radii, cross_check, evaluate
from dsnet_zoo.evaluation.reference import LinearReference, nearest_prototype_weights, prototype_data


def _random_linear(seed: int, std=None, k: int = 10) -> LinearReference:
    g = torch.Generator().manual_seed(seed)
    m = LinearReference(num_classes=k, norm_std=std).double()
    with torch.no_grad():
        m.head.weight.copy_(torch.randn(k, m.num_features, generator=g, dtype=torch.float64) * 0.05)
        m.head.bias.copy_(torch.randn(k, generator=g, dtype=torch.float64))
    return m.eval()


def _inputs(seed: int, n: int = 64):
    g = torch.Generator().manual_seed(seed + 100)
    x = torch.rand(n, 3, 32, 32, generator=g, dtype=torch.float64)
    return x


def _pred_labels(m, x):
    with torch.no_grad():
        return m(x).argmax(1)


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_pairwise_certificate_is_exact_for_a_linear_map(seed):
    # labels = the model's predictions, so every example has a positive margin
    m = _random_linear(seed)
    x = _inputs(seed)
    y = _pred_labels(m, x)
    _, radii = Certifier(m).logits_and_radii(x, y)
    exact = m.exact_min_distance(x, y)
    # float64 logits: the rounding allowance (1e-5 relative) is the only gap
    assert torch.all(radii["radius"] <= exact + 1e-12)
    assert torch.allclose(radii["radius"], exact, rtol=1e-3, atol=1e-4)
    assert torch.all(radii["global"] <= radii["pairwise"] + 1e-12)


@pytest.mark.parametrize("seed", [0, 1])
def test_radius_is_attained_at_the_boundary(seed):
    # step along the optimal direction: just inside the radius the class holds, just past the exact distance it flips
    m = _random_linear(seed)
    x = _inputs(seed, 16)
    y = _pred_labels(m, x)
    _, radii = Certifier(m).logits_and_radii(x, y)
    w = m.head.weight.detach()
    with torch.no_grad():
        z = m(x)
    for i in range(len(x)):
        d = (z[i, y[i]] - z[i]) / (w[y[i]] - w).norm(dim=1)
        d[y[i]] = math.inf
        j = int(d.argmin())
        u = (w[j] - w[y[i]]) / (w[j] - w[y[i]]).norm()
        r = float(radii["radius"][i])
        inside = x[i].flatten() + (r * (1 - 1e-6)) * u
        past = x[i].flatten() + (float(d[j]) * (1 + 1e-6)) * u
        with torch.no_grad():
            assert int(m(inside.view(1, 3, 32, 32)).argmax()) == int(y[i])
            assert int(m(past.view(1, 3, 32, 32)).argmax()) != int(y[i])


def test_global_certificate_alone_is_sound():
    m = _random_linear(3)
    x = _inputs(3)
    y = _pred_labels(m, x)
    with torch.no_grad():
        logits = m(x)
    r = certified_radii(logits, y, m.lipschitz_upper_bound())  # no head weight: global only
    assert torch.isnan(r["pairwise"]).all()
    assert torch.all(r["radius"] <= m.exact_min_distance(x, y) + 1e-12)
    assert (r["radius"] > 0).all()


def test_normalisation_inside_the_model_is_accounted_for():
    std = (0.2, 0.25, 0.3)
    m = _random_linear(4, std=std)
    x = _inputs(4)
    y = _pred_labels(m, x)
    exact = m.exact_min_distance(x, y)
    _, radii = Certifier(m).logits_and_radii(x, y)
    assert torch.all(radii["radius"] <= exact + 1e-12)
    # the exact constant of x -> W D x, D = diag(1/std) per channel
    d = (1 / m.std.double()).flatten().repeat_interleave(1024)
    exact_lip = float(torch.linalg.matrix_norm(m.head.weight.detach().double() * d[None, :], 2))
    assert exact_lip <= m.lipschitz_upper_bound() <= exact_lip / 0.2 * 0.3 * (1 + 1e-6)

    # break the condition: a bound that forgets 1/std overstates the radii (the certificate is then wrong)
    with torch.no_grad():
        logits = m(x)
    wrong = certified_radii(logits, y, m.lipschitz_upper_bound() * 0.2, features=m.forward_features(x),
                            head_weight=m.head.weight, feature_lipschitz=1.0)
    assert (wrong["radius"] > exact + 1e-9).any()


def test_misclassified_examples_get_radius_zero():
    m = _random_linear(5)
    x = _inputs(5, 32)
    y = (_pred_labels(m, x) + 1) % 10
    _, radii = Certifier(m).logits_and_radii(x, y)
    assert torch.all(radii["radius"] == 0)


def test_no_bound_gives_nan_radii_and_null_accuracy():
    m = _random_linear(6)
    m.lipschitz_upper_bound = lambda: None
    data, _ = prototype_data(8, seed=1)
    res = evaluate(m.float(), data, metrics=["certified"], device="cpu", progress=False, state_dir=None,
                   out=None, batch_size=8)
    acc = res["metrics"]["certified"]["accuracy"]
    assert set(acc.values()) == {None}
    assert res["lipschitz"]["bound"] is None
    assert np.isnan(res["_examples"]["certified/radius"]).all()


def test_head_that_does_not_reproduce_logits_falls_back_to_global():
    m = _random_linear(7)
    x = _inputs(7, 8)
    y = _pred_labels(m, x)
    # a forward that adds a constant logit shift on class 0: head(features) no longer equals forward(x)
    base = m.forward

    def shifted(inp):
        out = base(inp).clone()
        out[:, 0] += 1.0
        return out

    m.forward = shifted
    cert = Certifier(m)
    _, radii = cert.logits_and_radii(x, y)
    assert torch.isnan(radii["pairwise"]).all()
    assert cert.info["pairwise_skipped_batches"] == 1


def test_cross_check_catches_certified_but_broken():
    cols = [Column("certified/radius", "radius", "L2"), Column("atk/L2/0.5", "robust", "L2", 0.5),
            Column("atk/Linf/8/255", "robust", "Linf", 8 / 255)]
    table = {"clean/correct": np.array([True, True, True, False]),
             "certified/radius": np.array([0.6, 0.4, 2.0, 0.0]),
             "atk/L2/0.5": np.array([True, False, True, False]),
             "atk/Linf/8/255": np.array([False, False, True, False])}
    # example 0: radius 0.6 < sqrt(3072) * 8/255 = 1.74, so Linf may break it: consistent
    assert cross_check(table, cols, input_dim=3072)["passed"]
    bad = dict(table, **{"atk/L2/0.5": np.array([False, False, True, False])})  # certified at 0.6 > 0.5, broken
    with pytest.raises(CrossCheckError, match="example 0"):
        cross_check(bad, cols, input_dim=3072)
    bad = dict(table, **{"atk/Linf/8/255": np.array([False, False, False, False])})  # radius 2.0 > 1.74
    with pytest.raises(CrossCheckError, match="example 2"):
        cross_check(bad, cols, input_dim=3072)
    bad = dict(table, **{"atk/L2/0.5": np.array([True, False, True, True])})  # robust but misclassified
    with pytest.raises(CrossCheckError, match="misclassified"):
        cross_check(bad, cols, input_dim=3072)


def test_certified_accuracy_matches_exact_distances_end_to_end(tmp_path):
    data, protos = prototype_data(40, seed=2)
    m = LinearReference()
    m.load_state_dict(nearest_prototype_weights(protos))
    res = evaluate(m, data, metrics=["certified"], device="cpu", batch_size=16, progress=False,
                   out=tmp_path / "r.json")
    x, y = data.float_batch(0, len(data))
    exact = m.exact_min_distance(x, y).numpy()
    ex = res["_examples"]
    assert np.all(ex["certified/radius"] <= exact + 1e-6)
    for key, acc in res["metrics"]["certified"]["accuracy"].items():
        eps = {"L2:36/255": 36 / 255, "L2:72/255": 72 / 255, "L2:108/255": 108 / 255, "L2:1": 1.0}[key]
        assert acc == pytest.approx(float(np.mean(ex["certified/radius"] > eps)))
        assert acc <= np.mean(exact > eps) + 1e-12
    assert any(0 < a < 1 for a in res["metrics"]["certified"]["accuracy"].values())  # not a trivial case
