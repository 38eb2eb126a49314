"""The runner: outcomes, resumption, atomic files, AutoAttack and paper-pgd on a tiny model, the metric registry."""
from __future__ import annotations

import json
import os

import numpy as np
import pytest
import torch

from dsnet_zoo.evaluation import (Column, CrossCheckError, Metric, atomic_write_json, evaluate, format_eps,
                                  register_metric)
from dsnet_zoo.evaluation.reference import LinearReference, nearest_prototype_weights, prototype_data


def _model_and_data(n=40, seed=0, std=None):
    data, protos = prototype_data(n, seed=seed)
    m = LinearReference(norm_std=std)
    sd = nearest_prototype_weights(protos)
    if std is not None:
        # same logits with the normalisation inside: W' = W * std per input (mean 0)
        scale = torch.tensor(std).repeat_interleave(1024)
        sd["head.weight"] = sd["head.weight"] * scale[None, :]
        sd["std"] = torch.tensor(std).view(1, -1, 1, 1)
    m.load_state_dict(sd)
    return m.eval(), data


def _same(a, b) -> bool:
    if isinstance(a, str):
        return a == b
    a, b = np.asarray(a), np.asarray(b)
    return a.shape == b.shape and bool(np.all((a == b) | (a != a) & (b != b)))


class _ForgetsStd(LinearReference):
    """A deliberately understated bound: the normalisation's 1/std factor is left out."""

    def lipschitz_upper_bound(self):
        return super().lipschitz_upper_bound() * float(self.std.min())

    def feature_lipschitz_upper_bound(self):
        return 1.0


def _run(m, data, tmp_path, name="r", **kw):
    kw.setdefault("metrics", ["clean", "certified"])
    kw.setdefault("batch_size", 8)
    return evaluate(m, data, device="cpu", progress=False, out=tmp_path / f"{name}.json", **kw)


def test_clean_and_certified_match_direct_computation(tmp_path):
    m, data = _model_and_data()
    res = _run(m, data, tmp_path)
    x, y = data.float_batch(0, len(data))
    with torch.no_grad():
        pred = m(x).argmax(1)
    assert res["metrics"]["clean"]["accuracy"] == pytest.approx((pred == y).float().mean().item())
    side = json.loads((tmp_path / "r.examples.json").read_text())
    assert side["clean/pred"] == pred.tolist()
    assert side["label"] == y.tolist()
    assert len(side["certified/radius"]) == len(data)
    on_disk = json.loads((tmp_path / "r.json").read_text())
    for key in ("name", "weights_sha256", "parameters_sha256", "dataset", "lipschitz", "metrics", "run", "command"):
        assert key in on_disk
    assert on_disk["dataset"]["n"] == len(data)
    assert on_disk["lipschitz"]["bound"] == pytest.approx(m.lipschitz_upper_bound())
    assert "LinearReference.lipschitz_upper_bound" in on_disk["lipschitz"]["method"]
    assert on_disk["run"]["versions"]["torch"] == torch.__version__
    # nothing half-written or left over
    assert sorted(p.name for p in tmp_path.iterdir()) == ["r.examples.json", "r.json"]


def test_atomic_write_keeps_the_old_file_when_writing_fails(tmp_path):
    path = tmp_path / "a.json"
    atomic_write_json(path, {"ok": 1})
    with pytest.raises(TypeError):
        atomic_write_json(path, {"bad": object()})
    assert json.loads(path.read_text()) == {"ok": 1}
    assert [p.name for p in tmp_path.iterdir()] == ["a.json"]


class _Counter:
    """Counts batches the model computes features for (the clean/certified pass runs once per batch)."""

    def __init__(self, m):
        self.calls = 0
        inner = m.forward_features

        def counted(x):
            self.calls += 1
            return inner(x)

        m.forward_features = counted


def test_resume_after_max_batches_gives_the_uninterrupted_result(tmp_path):
    m, data = _model_and_data(n=40)
    fresh = _run(m, data, tmp_path, name="fresh")
    assert _run(m, data, tmp_path, name="split", max_batches=2) is None
    state = tmp_path / "split.json.partial"
    assert sorted(p.name for p in state.glob("batch_*.json")) == ["batch_000000.json", "batch_000001.json"]
    assert not (tmp_path / "split.json").exists()
    counter = _Counter(m)
    resumed = _run(m, data, tmp_path, name="split")
    assert counter.calls == 3  # only batches 2, 3, 4 were computed again
    assert not state.exists()
    for k, v in fresh["_examples"].items():
        assert _same(v, resumed["_examples"][k]), k
    assert fresh["metrics"] == resumed["metrics"]



def test_committed_state_folder_resumes_in_another_checkout(tmp_path):
    """eval/README.md (Scale): a state folder copied to another machine's checkout, at the same place beside the
    result, is resumed there: only the missing batches run, and the result equals an uninterrupted run."""
    import shutil
    m, data = _model_and_data(n=40)
    fresh = _run(m, data, tmp_path, name="fresh")
    here, there = tmp_path / "here", tmp_path / "there"
    here.mkdir(), there.mkdir()
    assert _run(m, data, here, name="r", max_batches=3) is None
    shutil.copytree(here / "r.json.partial", there / "r.json.partial")  # what git carries: the folder's files
    shutil.rmtree(here)
    counter = _Counter(m)
    resumed = _run(m, data, there, name="r")
    assert counter.calls == 2  # batches 3 and 4 only
    assert not (there / "r.json.partial").exists()
    for k, v in fresh["_examples"].items():
        assert _same(v, resumed["_examples"][k]), k
    assert fresh["metrics"] == resumed["metrics"]


_interrupt_after = {"n": None}


@register_metric("test-interrupt")
class _InterruptingMetric(Metric):
    """Raises KeyboardInterrupt on its n-th batch (an interrupted run); otherwise records nothing."""

    def columns(self, ctx):
        return []

    def run_batch(self, ctx, batch):
        if _interrupt_after["n"] is not None:
            _interrupt_after["n"] -= 1
            if _interrupt_after["n"] < 0:
                raise KeyboardInterrupt
        return {}


def test_interrupted_run_continues_from_saved_batches(tmp_path):
    m, data = _model_and_data(n=40)
    _interrupt_after["n"] = 3
    with pytest.raises(KeyboardInterrupt):
        _run(m, data, tmp_path, metrics=["clean", "certified", "test-interrupt"])
    _interrupt_after["n"] = None
    assert len(list((tmp_path / "r.json.partial").glob("batch_*.json"))) == 3
    counter = _Counter(m)
    res = _run(m, data, tmp_path, metrics=["clean", "certified", "test-interrupt"])
    assert counter.calls == 2
    assert len(res["_examples"]["clean/pred"]) == 40


def test_state_of_another_configuration_is_refused(tmp_path):
    m, data = _model_and_data(n=24)
    assert _run(m, data, tmp_path, max_batches=1) is None
    with pytest.raises(ValueError, match="different run"):
        _run(m, data, tmp_path, seed=1)
    res = _run(m, data, tmp_path, seed=1, restart=True)
    assert res["config"]["seed"] == 1


@register_metric("test-gaussian-l2")
class _GaussianNoiseL2(Metric):
    """A real (weak) attack through the registry: one random direction scaled to L2 radius 0.05."""

    eps = 0.05

    def columns(self, ctx):
        return [Column("test-gaussian-l2/L2/0.05", "robust", norm="L2", eps=self.eps)]

    def run_batch(self, ctx, batch):
        g = torch.Generator().manual_seed(batch.seed)
        d = torch.randn(batch.x.shape, generator=g)
        d = d / d.flatten(1).norm(dim=1).view(-1, 1, 1, 1) * self.eps
        with torch.no_grad():
            pred = ctx.model((batch.x + d).clamp(0, 1)).argmax(1)
            clean = batch.logits.argmax(1)
        return {"test-gaussian-l2/L2/0.05": ((pred == batch.y) & (clean == batch.y)).numpy()}


@register_metric("test-lying-attack")
class _LyingAttack(Metric):
    """Claims every example robust, misclassified ones included: the cross-check must refuse it."""

    def columns(self, ctx):
        return [Column("test-lying-attack/L2/0.1", "robust", norm="L2", eps=0.1)]

    def run_batch(self, ctx, batch):
        return {"test-lying-attack/L2/0.1": np.ones(len(batch.y), dtype=bool)}


def test_registered_metric_is_summarised_and_cross_checked(tmp_path):
    m, data = _model_and_data(n=24)
    res = _run(m, data, tmp_path, metrics=["certified", "test-gaussian-l2"])
    acc = res["metrics"]["test-gaussian-l2"]["accuracy"]["L2:0.05"]
    assert acc <= res["metrics"]["clean"]["accuracy"]
    assert any("test-gaussian-l2" in c for c in res["cross_checks"]["checks"])
    # labels shifted: most examples misclassified, and the lying attack still calls them robust
    wrong = type(data)(data.name, data.split, data.x, (data.y + 1) % 10, data.indices, 10, data.info)
    with pytest.raises(CrossCheckError, match="misclassified"):
        _run(m, wrong, tmp_path, name="lie", metrics=["test-lying-attack"])
    assert not (tmp_path / "lie.json").exists()


def test_autoattack_standard_on_a_tiny_model(tmp_path):
    m, data = _model_and_data(n=6, seed=3)
    res = _run(m, data, tmp_path, metrics=["certified", "autoattack"], batch_size=6, seed=5)
    aa = res["metrics"]["autoattack"]
    assert aa["package"] in ("autoattack", "pyautoattack") and aa["package_version"]
    assert aa["aa_version"] == "standard" and aa["attacks"] == ["apgd-ce", "apgd-t", "fab-t", "square"]
    assert aa["seed"] == 5 and res["dataset"]["n"] == 6
    assert set(aa["accuracy"]) == {"L2:0.5", "L2:36/255", "Linf:8/255"}
    clean = res["metrics"]["clean"]["accuracy"]
    assert all(v <= clean for v in aa["accuracy"].values())
    # exact distances: AutoAttack must break every point closer than 0.5 to the boundary (all of them here)
    x, y = data.float_batch(0, 6)
    exact = m.exact_min_distance(x, y).numpy()
    side = res["_examples"]
    assert np.array_equal(side["autoattack/L2/0.5"], exact > 0.5)
    assert np.all(side["autoattack/L2/36/255"][exact > 36 / 255])  # certified there: never broken
    assert res["cross_checks"]["passed"]


def test_understated_bound_is_caught_by_the_attack_cross_check(tmp_path):
    m, data = _model_and_data(n=6, seed=3, std=(0.25, 0.25, 0.25))
    honest = LinearReference(norm_std=(0.25, 0.25, 0.25))
    honest.load_state_dict(m.state_dict())
    res = _run(honest, data, tmp_path, name="honest", metrics=["certified", "autoattack"], batch_size=6,
               aa_threats=[("L2", 0.5)])
    assert res["cross_checks"]["passed"]
    liar = _ForgetsStd(norm_std=(0.25, 0.25, 0.25))
    liar.load_state_dict(m.state_dict())
    with pytest.raises(CrossCheckError, match="understated"):
        _run(liar, data, tmp_path, name="liar", metrics=["certified", "autoattack"], batch_size=6,
             aa_threats=[("L2", 0.5)])
    assert not (tmp_path / "liar.json").exists()


class _LooseBound(LinearReference):
    """The same linear model with a valid but twice too large bound: its radii are half the exact
    distances, so some points are robust at eps without being certified."""

    def feature_lipschitz_upper_bound(self):
        return 2.0 * super().feature_lipschitz_upper_bound()


def _aa_columns(res, key):
    side = res["_examples"]
    return {s: np.asarray(side[key + s]) for s in ("", "/skipped", "/sampled")}


@pytest.mark.parametrize("cls", [LinearReference, _LooseBound])
def test_certificate_aware_autoattack_equals_a_full_run(tmp_path, cls):
    base, data = _model_and_data(n=12, seed=3)
    m = cls().eval()
    m.load_state_dict(base.state_dict())
    # the loose bound needs one threat only: its point is the robust-but-uncertified points (each threat's
    # attack costs about 20 s here: the points that survive run every attack to its full budget)
    threats = [("L2", 36 / 255), ("L2", 0.5)] if cls is LinearReference else [("L2", 36 / 255)]
    kw = dict(metrics=["certified", "autoattack"], batch_size=12, seed=5, aa_threats=threats)
    full = _run(m, data, tmp_path, name="full", aa_mode="full", **kw)
    aware = _run(m, data, tmp_path, name="aware", aa_cert_sample=2, **kw)
    assert full["metrics"]["autoattack"]["mode"] == "full"
    assert aware["metrics"]["autoattack"]["mode"] == "certificate-aware"
    x, y = data.float_batch(0, len(data))
    exact = m.exact_min_distance(x, y).numpy()
    radius = np.asarray(aware["_examples"]["certified/radius"])
    correct = np.asarray(aware["_examples"]["clean/correct"], dtype=bool)
    skipped_total = certified_total = 0
    certified_at = {}
    for norm, eps in threats:
        key = f"autoattack/{norm}/{format_eps(eps)}"
        a, f = _aa_columns(aware, key), _aa_columns(full, key)
        # the same robust points, hence the same robust accuracy, as standard AutoAttack on every point
        assert np.array_equal(a[""], f[""])
        assert aware["metrics"]["autoattack"]["accuracy"][f"{norm}:{format_eps(eps)}"] == \
            full["metrics"]["autoattack"]["accuracy"][f"{norm}:{format_eps(eps)}"]
        # and the truth for a linear model: robust exactly when the boundary is farther than eps
        assert np.array_equal(a[""], correct & (exact > eps))
        certified = correct & (radius > eps)
        assert np.array_equal(a["/skipped"] | a["/sampled"], certified)
        assert a["/sampled"].sum() == min(2, certified.sum())
        assert not f["/skipped"].any() and not f["/sampled"].any()
        cost = aware["metrics"]["autoattack"]["cost"][f"{norm}:{format_eps(eps)}"]
        assert cost["certified_skipped"] == a["/skipped"].sum()
        assert cost["attacked"] == (correct & ~certified).sum()
        if cost["certified_sampled"]:
            assert cost["estimated_seconds_saved"] >= 0
        skipped_total += cost["certified_skipped"]
        certified_total += certified.sum()
        certified_at[eps] = int(certified.sum())
    if cls is _LooseBound:
        # the loose certificate leaves robust but uncertified points: the attack decided them
        assert any(np.any(_aa_columns(aware, f"autoattack/L2/{format_eps(e)}")[""] & (radius <= e))
                   for _, e in threats)
    assert certified_total > 0  # the certificate-aware path was exercised
    if cls is LinearReference:
        # the cross-check sample is drawn per run, not per batch: the same points with two batches. The
        # first threat alone (the sample is seeded by the run's seed and the threat's index), since each
        # batch's attack costs about as much as a whole run.
        norm, eps = threats[0]
        assert certified_at[eps] > 2  # the sample is a choice among the certified points
        small = _run(m, data, tmp_path, name="small", aa_cert_sample=2,
                     **{**kw, "batch_size": 6, "aa_threats": [(norm, eps)]})
        key = f"autoattack/{norm}/{format_eps(eps)}"
        s, a = _aa_columns(small, key), _aa_columns(aware, key)
        assert np.array_equal(s["/sampled"], a["/sampled"]) and np.array_equal(s[""], a[""])
    if cls is LinearReference:
        assert skipped_total > 0  # the saving is real: certified points were not attacked


@pytest.mark.parametrize("mode", ["auto", "full"])
def test_understated_bound_is_caught_in_both_autoattack_modes(tmp_path, mode):
    m, data = _model_and_data(n=12, seed=3, std=(0.25, 0.25, 0.25))
    liar = _ForgetsStd(norm_std=(0.25, 0.25, 0.25))
    liar.load_state_dict(m.state_dict())
    liar.eval()
    with pytest.raises(CrossCheckError, match="understated"):
        _run(liar, data, tmp_path, name="liar", metrics=["certified", "autoattack"], batch_size=12,
             aa_threats=[("L2", 0.5)], aa_mode=mode)
    assert not (tmp_path / "liar.json").exists() and not (tmp_path / "liar.examples.json").exists()


def test_autoattack_options_are_checked(tmp_path):
    m, data = _model_and_data(n=4)
    with pytest.raises(ValueError, match="aa_mode"):
        _run(m, data, tmp_path, metrics=["autoattack"], aa_mode="fast")
    with pytest.raises(ValueError, match="aa_cert_sample"):
        _run(m, data, tmp_path, metrics=["autoattack"], aa_cert_sample=0)


def test_paper_pgd_on_a_tiny_model(tmp_path):
    m, data = _model_and_data(n=6, seed=4)
    res = _run(m, data, tmp_path, metrics=["certified", "paper-pgd"], batch_size=6)
    rec = res["metrics"]["paper-pgd"]
    assert len(rec["accuracy"]) == 8 and rec["foolbox"]
    assert all(v <= res["metrics"]["clean"]["accuracy"] for v in rec["accuracy"].values())
    assert res["cross_checks"]["passed"]


def test_bad_arguments_are_refused(tmp_path):
    m, data = _model_and_data(n=8)
    with pytest.raises(ValueError, match="unknown metric"):
        _run(m, data, tmp_path, metrics=["nope"])
    with pytest.raises(ValueError, match="batch size"):
        _run(m, data, tmp_path, batch_size=0)
    with pytest.raises(ValueError, match="classes"):
        _run(LinearReference(num_classes=100), data, tmp_path)
    assert os.listdir(tmp_path) == [] or not any(p.endswith(".json") for p in os.listdir(tmp_path))


def test_attack_points_outside_the_ball_or_box_never_count_as_broken():
    from dsnet_zoo.evaluation.attacks import check_adversarial

    m, data = _model_and_data(n=4, seed=5)
    x, y = data.float_batch(0, 4)
    exact = m.exact_min_distance(x, y)
    w = m.head.weight.detach()
    with torch.no_grad():
        z = m(x)
    # the optimal direction for each example, pushed just past its exact distance
    step = []
    for i in range(4):
        d = (z[i, y[i]] - z[i]) / (w[y[i]] - w).norm(dim=1)
        d[y[i]] = float("inf")
        j = int(d.argmin())
        step.append((w[j] - w[y[i]]) / (w[j] - w[y[i]]).norm() * float(exact[i]) * 1.01)
    x_adv = x + torch.stack(step).view_as(x)
    eps = float(exact.max()) * 1.02
    broken, invalid = check_adversarial(m, x, y, x_adv, "L2", eps)
    inside = ((x_adv >= 0) & (x_adv <= 1)).flatten(1).all(1)
    assert torch.equal(broken, inside) and torch.equal(invalid, ~inside)
    assert broken.any()  # the optimal steps do flip the class
    # the same points judged at a smaller radius are outside the ball: invalid, not broken
    broken, invalid = check_adversarial(m, x, y, x_adv, "L2", float(exact.min()) * 0.5)
    assert not broken.any() and invalid.all()


def test_eps_text_round_trips():
    from dsnet_zoo.evaluation import format_eps, parse_eps

    for text in ("36/255", "8/255", "0.5", "0.3", "1"):
        assert format_eps(parse_eps(text)) == text
    for bad in ("0", "-1", "abc", "1/0"):
        with pytest.raises(ValueError):
            parse_eps(bad)


class _TinyConv(torch.nn.Module):
    """A small conv net that notes, on every call, whether its input and its conv weight were in the
    channels-last layout."""

    def __init__(self, num_classes: int = 10) -> None:
        super().__init__()
        g = torch.Generator().manual_seed(0)
        self.conv = torch.nn.Conv2d(3, 8, 3, padding=1)
        self.head = torch.nn.Linear(8 * 32 * 32, num_classes)
        with torch.no_grad():
            for p in self.parameters():
                p.copy_(torch.randn(p.shape, generator=g) * 0.5)
        self.num_classes = num_classes
        self.seen: list[tuple[bool, bool]] = []

    def forward(self, x):
        def nhwc(t):
            return t.is_contiguous(memory_format=torch.channels_last) and not t.is_contiguous()
        self.seen.append((nhwc(x), nhwc(self.conv.weight)))
        return self.head(torch.relu(self.conv(x)).flatten(1))


def _tiny_conv_data(n):
    """``n`` images labelled by the tiny conv net itself: every point is correct, so every point is attacked."""
    from dsnet_zoo.data import EvalData

    data, _ = prototype_data(n, seed=1, spread=0.2)
    m = _TinyConv().eval()
    with torch.no_grad():
        y = m(data.float_batch(0, n)[0]).argmax(1)
    return m, EvalData(name="tiny", split="test", x=data.x, y=y, indices=data.indices, num_classes=10,
                       info={"source": "synthetic", "description": f"{n} images labelled by the model"})


def test_weights_in_layout_puts_the_model_back_even_on_error():
    from dsnet_zoo.utils import weights_in_layout
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Conv2d(3, 8, 3, padding=1), torch.nn.ReLU(), torch.nn.Conv2d(8, 4, 3))
    before = [p.detach().clone() for p in model.parameters()]
    x = torch.rand(2, 3, 8, 8)
    with torch.no_grad():
        ref = model(x)
    with pytest.raises(RuntimeError, match="inside the block"):
        with weights_in_layout(model, True) as layout:
            assert layout is torch.channels_last
            assert all(p.is_contiguous(memory_format=torch.channels_last) and not p.is_contiguous()
                       for p in model.parameters() if p.dim() == 4)
            raise RuntimeError("inside the block")
    for p, b in zip(model.parameters(), before):
        assert p.is_contiguous() and torch.equal(p, b)
    with weights_in_layout(model, False) as layout:
        assert layout is torch.contiguous_format and all(p.is_contiguous() for p in model.parameters())
    with torch.no_grad():
        assert torch.equal(model(x), ref)


def test_autoattack_in_the_channels_last_layout_then_the_model_is_as_before():
    from dsnet_zoo.evaluation.attacks import run_autoattack

    m, data = _tiny_conv_data(6)
    x, y = data.float_batch(0, 6)
    state = {k: v.clone() for k, v in m.state_dict().items()}
    with torch.no_grad():
        before = m(x)
    runs = {}
    for cl in (False, True):
        m.seen.clear()
        runs[cl] = run_autoattack(m, x, y, norm="L2", eps=0.5, seed=0, device=torch.device("cpu"), channels_last=cl)
        # the attack's calls, then the two checks (correct, broken) in the default layout
        attack, checks = m.seen[:-2], m.seen[-2:]
        assert attack and all(s == (cl, cl) for s in attack)
        assert checks == [(False, False)] * 2
    assert all(p.is_contiguous() for p in m.parameters())
    assert all(torch.equal(v, state[k]) for k, v in m.state_dict().items())
    with torch.no_grad():
        assert torch.equal(m(x), before)
    # a radius at which the attack breaks every point in both layouts, and only valid points count
    assert not runs[True]["robust"].any() and not runs[False]["robust"].any()
    assert not runs[True]["invalid"].any()
    with pytest.raises(ValueError, match="channels_last needs image batches"):
        run_autoattack(m, x.flatten(1), y, norm="L2", eps=0.5, seed=0, device=torch.device("cpu"), channels_last=True)


def test_channels_last_autoattack_is_a_speed_setting_a_run_can_resume_with(tmp_path):
    m, data = _tiny_conv_data(6)
    kw = dict(metrics=["autoattack"], batch_size=3, aa_threats=[("L2", 0.5)])
    plain = _run(m, data, tmp_path, name="plain", **kw)
    assert "attack_memory_format" not in plain["metrics"]["autoattack"]
    assert "--aa-channels-last" not in plain["command"]
    # the first batch in the default layout, the second after resuming with the setting switched on:
    # the same fingerprint (the saved batch is kept) and the result says which batch ran in which layout
    assert _run(m, data, tmp_path, name="mixed", max_batches=1, **kw) is None
    mixed = _run(m, data, tmp_path, name="mixed", aa_channels_last=True, **kw)
    assert mixed["metrics"]["autoattack"]["attack_memory_format"] == {"channels_last_batches": [1],
                                                                      "contiguous_batches": [0]}
    assert mixed["config"]["fingerprint"] == plain["config"]["fingerprint"]
    assert "--aa-channels-last" in mixed["command"]
    assert mixed["metrics"]["autoattack"]["accuracy"] == plain["metrics"]["autoattack"]["accuracy"] == {"L2:0.5": 0.0}
