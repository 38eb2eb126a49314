"""Certificates against a model whose exact adversarial distance is known (a linear map), in float64."""
from __future__ import annotations

import importlib.util
import math

import numpy as np
import pytest
import torch

from conftest import REPO_ROOT
from dsnet_zoo.evaluation import Certifier, Column, CrossCheckError, certified_radii, cross_check, evaluate
from dsnet_zoo.evaluation.reference import LinearReference, nearest_prototype_weights, prototype_data
from dsnet_zoo.models.lipnet_paper import LipNetPaper


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


# -- eval/paper_reproduction.py uses the same certificate and the same data loader -----------------------
def _paper_reproduction():
    spec = importlib.util.spec_from_file_location("paper_reproduction", REPO_ROOT / "eval" / "paper_reproduction.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def test_paper_reproduction_certified_column_is_the_harness_certificate():
    """The script's certified column is ``certify.certified_radii``'s radius > eps, i.e. what the evaluation
    harness's Certifier gives, on a small random LipNetPaper, with some examples certified and some not."""
    pr = _paper_reproduction()
    torch.manual_seed(0)
    model = LipNetPaper("switch_flexible", widths=(4, 4, 4), img_size=8).eval()
    with torch.no_grad():
        for blk in model.blocks:
            blk.u.uniform_(-1.0, 1.0)
    factors = model.lipschitz_factors()  # what the script multiplies
    l_logit = math.prod(f for _, f in factors)
    l_feat = math.prod(f for n, f in factors if n != "head")
    assert l_logit == model.lipschitz_upper_bound() and l_feat == model.feature_lipschitz_upper_bound()
    g = torch.Generator().manual_seed(1)
    x = torch.rand(96, 3, 8, 8, generator=g)
    with torch.no_grad():
        pred = model(x).argmax(1)
    y = pred.clone()
    y[::4] = (pred[::4] + 1) % 10  # a quarter misclassified: never certified
    _, radii = Certifier(model).logits_and_radii(x, y)
    radius = radii["radius"]
    assert not torch.isnan(radii["pairwise"]).any()  # the class-pair certificate is in play
    mid = float(radius[y == pred].median())
    for eps in (0.0, mid / 2, mid, 2 * mid):
        got = pr.certified_outcomes(model, x, y, eps, l_logit, l_feat, batch_size=32)
        assert torch.equal(got, radius > eps), eps
    certified = pr.certified_outcomes(model, x, y, mid / 2, l_logit, l_feat)
    assert 0 < int(certified.sum()) < int((y == pred).sum()) and not certified[y != pred].any()


def test_paper_reproduction_reads_cifar10_real_through_data(data_dir):
    """The script's images are ``dsnet_zoo.data``'s ``cifar10-real`` / 255: the same float32 pixels as the
    npz it used to read itself."""
    pr = _paper_reproduction()
    x, y = pr.load_eval_images(data_dir)
    raw = np.load(data_dir / "cifar10_test_real.npz")
    assert torch.equal(x, torch.from_numpy(raw["x"]).permute(0, 3, 1, 2).float().div(255.0))
    assert torch.equal(y, torch.from_numpy(raw["y"]).long()) and x.is_contiguous() and x.shape == (1017, 3, 32, 32)
    x5, y5 = pr.load_eval_images(data_dir, 5)
    assert torch.equal(x5, x[:5]) and torch.equal(y5, y[:5])
