"""Training: recipes, losses, augmentation, the loop (bit-for-bit resume, outputs), the CLI, massnet_sir."""
from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

import train_helpers as th
import dsnet_zoo
from dsnet_zoo import registry
from dsnet_zoo.cli import main as cli_main
from dsnet_zoo.hub import load_state_dict_file, sha256_file
from dsnet_zoo.training import (Recipe, RecipeError, TrainData, certified_cross_entropy, crop_flip, default_recipe,
                                epoch_order, multiclass_hinge, train)
from dsnet_zoo.training.data import global_batches
from dsnet_zoo.training.loop import _float32_islands


@pytest.fixture(scope="module", autouse=True)
def _tiny_registered():
    th.register()
    yield
    th.unregister()


# -- recipes ----------------------------------------------------------------------------------------
def test_recipe_round_trips_through_dict_and_json():
    r = th.tiny_recipe(margin=0.3, ema=None, model_args={"width": 6}, grad_clip=2.0)
    assert Recipe.from_dict(r.to_dict()) == r
    assert Recipe.from_json(r.to_json()) == r
    assert Recipe.from_dict(json.loads(json.dumps(r.to_dict()))) == r


@pytest.mark.parametrize("family_arch", ["hamnet_cifar10", "vpnet_cifar10", "massnet_sir", "lipnet_cifar10"])
def test_default_recipes_exist_and_round_trip(family_arch):
    assert registry.is_model(family_arch)
    r = default_recipe(family_arch)
    assert r.model == family_arch and Recipe.from_dict(r.to_dict()) == r


@pytest.mark.parametrize("arch,dataset", [("lipnet_cifar10", "cifar10-full"), ("hamnet_cifar10", "cifar10-full"),
                                          ("vpnet_cifar10", "cifar10-full"), ("lipnet_cifar100", "cifar100-full"),
                                          ("hamnet_cifar100", "cifar100-full"), ("vpnet_cifar100", "cifar100-full")])
def test_default_recipes_train_and_evaluate_on_the_real_splits(arch, dataset):
    r = default_recipe(arch)
    assert (r.dataset, r.train_split, r.eval_set, r.eval_split) == (dataset, "train", dataset, "test")
    short = default_recipe(arch, train_limit=256, eval_limit=100)
    assert (short.train_limit, short.eval_limit) == (256, 100)


def test_recipe_rejects_unknown_and_inconsistent_fields():
    d = th.tiny_recipe().to_dict()
    with pytest.raises(RecipeError, match="unknown recipe field"):
        Recipe.from_dict({**d, "learning_rate": 0.1})
    with pytest.raises(RecipeError, match="misses required"):
        Recipe.from_dict({k: v for k, v in d.items() if k != "lr"})
    with pytest.raises(RecipeError, match="does not fit task"):
        th.tiny_recipe(loss="mse")
    with pytest.raises(RecipeError, match="loss="):
        th.tiny_recipe(loss="hinge2")
    with pytest.raises(RecipeError, match="ema"):
        th.tiny_recipe(ema=1.0)


# -- losses -----------------------------------------------------------------------------------------
def _hinge_reference(z, y, m):
    total = 0.0
    for n in range(z.shape[0]):
        for j in range(z.shape[1]):
            if j != y[n]:
                total += max(0.0, m - float(z[n, y[n]] - z[n, j]))
    return total / z.shape[0]


def test_multiclass_hinge_matches_its_definition_and_torch_multimargin():
    g = torch.Generator().manual_seed(0)
    z = torch.randn(7, 5, generator=g, dtype=torch.float64)
    y = torch.randint(0, 5, (7,), generator=g)
    for m in (0.07, 0.15, 0.3, 1.0):
        got = float(multiclass_hinge(z, y, m))
        assert got == pytest.approx(_hinge_reference(z, y, m), rel=1e-12)
        # torch's MultiMarginLoss averages over classes as well
        assert got == pytest.approx(5 * float(F.multi_margin_loss(z, y, margin=m)), rel=1e-12)


def test_hinge_is_zero_exactly_when_every_margin_reaches_m():
    z = torch.tensor([[1.0, 0.0, 0.5], [0.0, 2.0, 1.7]], dtype=torch.float64)
    y = torch.tensor([0, 1])
    # margins: 0.5 and 0.3
    assert float(multiclass_hinge(z, y, 0.3)) == 0.0
    assert float(multiclass_hinge(z, y, 0.3 + 1e-9)) > 0.0  # one margin just short of m


def test_certified_ce_offset_logits_classify_exactly_the_certified_examples():
    g = torch.Generator().manual_seed(1)
    z = torch.randn(200, 10, generator=g, dtype=torch.float64)
    y = torch.randint(0, 10, (200,), generator=g)
    lip, eps = 1.0, 36 / 255
    offset = math.sqrt(2) * lip * eps
    shifted = z + offset
    shifted.scatter_(1, y[:, None], z.gather(1, y[:, None]))
    others = z.scatter(1, y[:, None], -math.inf).amax(1)
    certified = z.gather(1, y[:, None]).squeeze(1) - others > offset
    assert torch.equal(shifted.argmax(1) == y, certified)
    assert 0 < int(certified.sum()) < 200  # the property is exercised both ways
    loss = certified_cross_entropy(z, y, lip, eps, temperature=2.0)
    assert float(loss) == pytest.approx(float(F.cross_entropy(2.0 * shifted, y) / 2.0), rel=1e-12)
    # the offset makes the loss larger than plain cross-entropy (it asks for a margin)
    assert float(certified_cross_entropy(z, y, lip, eps)) > float(F.cross_entropy(z, y))
    with pytest.raises(ValueError, match="Lipschitz bound"):
        certified_cross_entropy(z, y, float("inf"), eps)


def test_certified_ce_trains_a_bounded_model_with_its_current_bound(tmp_path):
    from dsnet_zoo.training.losses import build_loss

    recipe = th.tiny_recipe(model=th.LINEAR_ARCH, loss="certified_ce", cert_eps=0.5, epochs=2, ema=None)
    model = dsnet_zoo.create(th.LINEAR_ARCH)
    loss_fn = build_loss(recipe, model)
    loss_fn.refresh()
    assert loss_fn.lipschitz == pytest.approx(model.lipschitz_upper_bound())
    with torch.no_grad():
        model.head.weight.mul_(3.0)
    loss_fn.refresh()  # the bound follows the weights
    assert loss_fn.lipschitz == pytest.approx(model.lipschitz_upper_bound())
    res = train(recipe, tmp_path / "cert", progress=True, plot=False)
    assert len(res.history) == 2 and math.isfinite(res.history[-1]["train_loss"])


def test_certified_ce_needs_a_certified_model(tmp_path):
    with pytest.raises(ValueError, match="certified Lipschitz bound"):
        train(th.tiny_recipe(loss="certified_ce"), tmp_path / "c", progress=False, plot=False)


def test_schedules_warm_up_then_decay_and_onecycle_peaks_at_lr():
    from dsnet_zoo.training.loop import _make_scheduler

    def lrs(recipe, steps_per_epoch=10):
        p = torch.nn.Parameter(torch.zeros(1))
        opt = torch.optim.SGD([p], lr=recipe.lr)
        sched = _make_scheduler(recipe, opt, steps_per_epoch)
        out = []
        for _ in range(recipe.epochs * steps_per_epoch):
            out.append(opt.param_groups[0]["lr"])
            opt.step()
            sched.step()
        return out

    cos = lrs(th.tiny_recipe(epochs=4, lr=0.1, warmup_epochs=1.0))
    assert cos[:10] == pytest.approx([0.01 * (i + 1) for i in range(10)])  # linear warm-up to lr
    assert all(a >= b for a, b in zip(cos[10:], cos[11:])) and cos[-1] < 1e-3  # cosine decay to ~0
    one = lrs(th.tiny_recipe(epochs=4, lr=0.1, schedule="onecycle"))
    assert max(one) == pytest.approx(0.1) and one[0] < 0.01 and one[-1] < 1e-4
    assert set(lrs(th.tiny_recipe(epochs=2, lr=0.1, schedule="constant"))) == {0.1}


def test_training_on_a_named_image_set(data_dir, tmp_path):
    """The image-set path: cifar10-real through dsnet_zoo.data, first 64 images to train, 32 to evaluate."""
    recipe = th.tiny_recipe(dataset="cifar10-real", train_split="test", eval_dataset="cifar10-real",
                            train_limit=64, eval_limit=32, epochs=1, model_args={"num_classes": 10})
    res = train(recipe, tmp_path / "real", data_dir=data_dir, progress=False, plot=False)
    assert res.metrics["eval_images"] == 32 and 0.0 <= res.metrics["cifar10-real"]["clean"] <= 100.0
    assert res.history[0]["examples_per_s"] > 0 and res.history[0]["step"] == 4


def test_training_data_from_the_full_packs(full_data_dir):
    """The default sets: real train rows to train on, real test rows to evaluate, limits as prefixes,
    and the provenance names the exact sets."""
    from dsnet_zoo.training.data import load_train_data

    r10 = th.tiny_recipe(dataset="cifar10-full", eval_dataset="cifar10-full", train_limit=64, eval_limit=32)
    d = load_train_data(r10, full_data_dir)
    assert d.x_train.shape == (64, 3, 32, 32) and d.x_eval.shape == (32, 3, 32, 32) and d.num_classes == 10
    assert d.info["train"]["description"] == \
        "CIFAR-10 train, first 64 of 50,000 images (official indices 0-63, exact pixels)"
    assert d.info["eval"]["description"] == \
        "CIFAR-10 test, first 32 of 10,000 images (official indices 0-31, exact pixels)"
    r100 = th.tiny_recipe(dataset="cifar100-full", eval_dataset="cifar100-full", train_limit=200, eval_limit=100,
                          model_args={"num_classes": 100})
    d = load_train_data(r100, full_data_dir)
    assert d.num_classes == 100 and sorted(d.y_train.tolist()) == sorted(list(range(100)) * 2)
    assert d.info["eval"]["description"] == \
        "CIFAR-100 test, rank 0 of each class (100 of 10,000 images, exact pixels)"


# -- data order and augmentation ---------------------------------------------------------------------
def test_crop_flip_against_a_per_image_reference():
    g = torch.Generator().manual_seed(3)
    x = torch.randint(0, 256, (6, 3, 8, 8), generator=g).to(torch.uint8)
    offs = torch.randint(0, 9, (6, 2), generator=g)
    flip = torch.tensor([True, False, True, False, True, False])
    got = crop_flip(x, offs, flip, 4)
    for i in range(6):
        padded = F.pad(x[i], (4, 4, 4, 4))
        ref = padded[:, offs[i, 0]:offs[i, 0] + 8, offs[i, 1]:offs[i, 1] + 8]
        if flip[i]:
            ref = ref.flip(2)
        assert torch.equal(got[i], ref), i
    # the centre crop without flip is the identity, the centre crop with flip the mirror image
    centre = torch.full((6, 2), 4)
    assert torch.equal(crop_flip(x, centre, torch.zeros(6, dtype=torch.bool)), x)
    assert torch.equal(crop_flip(x, centre, torch.ones(6, dtype=torch.bool)), x.flip(3))


def test_data_order_is_a_function_of_seed_and_epoch():
    a, b = epoch_order(100, 7, 3), epoch_order(100, 7, 3)
    assert torch.equal(a, b) and torch.equal(a.sort().values, torch.arange(100))
    assert not torch.equal(a, epoch_order(100, 7, 4)) and not torch.equal(a, epoch_order(100, 8, 3))
    batches = global_batches(100, 32, 7, 3)
    assert [len(b) for b in batches] == [32, 32, 32]  # the incomplete last batch is dropped


# -- the loop -----------------------------------------------------------------------------------------
def _params(model):
    return {k: v.detach().clone() for k, v in model.state_dict().items()}


def test_resume_is_bit_for_bit_on_cpu(tmp_path):
    recipe = th.tiny_recipe(epochs=2, model_args={"dropout": 0.2})  # dropout draws from the global RNG
    straight = train(recipe, tmp_path / "a", progress=False, plot=False)
    first = train(recipe, tmp_path / "b", progress=False, plot=False, stop_after=1)
    assert not first.completed and first.hub is None and len(first.history) == 1
    mid = torch.load(tmp_path / "b" / "checkpoint.pt", weights_only=True)
    assert mid["epoch"] == 1
    resumed = train(recipe, tmp_path / "b", resume=True, progress=False, plot=False)
    a, b = _params(straight.model), _params(resumed.model)
    assert a.keys() == b.keys()
    for k in a:
        assert torch.equal(a[k], b[k]), k
    sa = torch.load(tmp_path / "a" / "checkpoint.pt", weights_only=True)
    sb = torch.load(tmp_path / "b" / "checkpoint.pt", weights_only=True)
    for k in sa["model"]:
        assert torch.equal(sa["model"][k], sb["model"][k]), k
    for (ka, va), (kb, vb) in zip(sa["optimizer"]["state"].items(), sb["optimizer"]["state"].items()):
        assert torch.equal(va["momentum_buffer"], vb["momentum_buffer"]), ka
    assert torch.equal(sa["rng"]["torch"], sb["rng"]["torch"])
    assert straight.hub["sha256"] == resumed.hub["sha256"]
    # the second epoch changed the weights: equality is not the trivial one of an empty epoch
    assert any(not torch.equal(mid["model"][k], sb["model"][k]) for k in sb["model"])


def test_resume_refuses_another_recipe_and_plain_rerun_refuses_to_overwrite(tmp_path):
    recipe = th.tiny_recipe(epochs=2)
    train(recipe, tmp_path / "r", progress=False, plot=False, stop_after=1)
    with pytest.raises(ValueError, match="different recipe.*lr"):
        train(recipe.replace(lr=0.01), tmp_path / "r", resume=True, progress=False, plot=False)
    with pytest.raises(FileExistsError, match="resume"):
        train(recipe, tmp_path / "r", progress=False, plot=False)


def test_run_writes_log_plot_checkpoint_and_a_loadable_hub_repo(tmp_path):
    recipe = th.tiny_recipe(epochs=3, tag="t1")
    res = train(recipe, tmp_path / "run", progress=False)
    lines = (tmp_path / "run" / "log.jsonl").read_text().splitlines()
    assert [json.loads(l)["epoch"] for l in lines] == [1, 2, 3]
    assert {"train_loss", "train_acc", "eval_acc", "eval_loss", "lr"} <= set(json.loads(lines[-1]))
    assert (tmp_path / "run" / "curves.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    hub = tmp_path / "run" / "hub"
    config = json.loads((hub / "config.json").read_text())
    cfg = config["dsnet_zoo"]["weights_cfg"]
    assert Recipe.from_dict(cfg["recipe"]) == recipe
    assert cfg["sha256"] == sha256_file(hub / "model.safetensors") == res.hub["sha256"]
    acc = cfg["metrics"][th.DATASET]["clean"]
    # the recorded accuracy is the exported model's accuracy on the evaluation set
    loaded = dsnet_zoo.create(th.ARCH, checkpoint_path=hub / "model.safetensors")
    xe, ye = th.make_images(32, 2)
    with torch.no_grad():
        measured = 100.0 * float((loaded(xe.float() / 255).argmax(1) == ye).float().mean())
    assert acc == pytest.approx(measured, abs=1e-9)


def test_ema_weights_are_the_exported_ones(tmp_path):
    res = train(th.tiny_recipe(epochs=1, ema=0.5), tmp_path / "e", progress=False, plot=False)
    state = torch.load(tmp_path / "e" / "checkpoint.pt", weights_only=True)
    for k, v in res.model.state_dict().items():
        assert torch.equal(v, state["ema"]["shadow"][k]), k
    assert any(not torch.equal(state["model"][k], state["ema"]["shadow"][k]) for k in state["model"])


@pytest.mark.parametrize("amp,native,warned", [("bf16", False, True), ("bf16", True, False), ("none", False, False)])
def test_bf16_on_a_cpu_without_fast_bf16_is_warned_about(tmp_path, monkeypatch, amp, native, warned):
    import dsnet_zoo.training.loop as loop
    monkeypatch.setattr(loop, "cpu_has_fast_bf16", lambda: native)  # the hardware probe, not the logic under test
    logs: list[str] = []
    train(th.tiny_recipe(epochs=1, amp=amp), tmp_path / "w", progress=False, plot=False, log=logs.append)
    hits = [m for m in logs if "without a fast bf16 path" in m]
    assert bool(hits) == warned
    if warned:  # says what is wrong and what to do
        assert '"amp": "none"' in hits[0] and "13x slower" in hits[0]


def test_cpu_has_fast_bf16_agrees_with_the_cpu_flags():
    from dsnet_zoo.utils import cpu_has_fast_bf16
    try:
        flags = set(Path("/proc/cpuinfo").read_text().split())
    except OSError:
        pytest.skip("no /proc/cpuinfo to compare with")
    if "sse2" not in flags:
        pytest.skip("not an x86 CPU: its bf16 flags are not the ones checked here")
    if {"avx512bw", "avx512vl", "avx512dq"} <= flags:  # AVX-512 core: oneDNN's bf16 kernels run
        assert cpu_has_fast_bf16() is True
    elif "avx_ne_convert" in flags:
        pytest.skip("AVX2 with AVX-NE-CONVERT: whether oneDNN has a bf16 path there depends on its version")
    else:  # AVX2 only: emulated
        assert cpu_has_fast_bf16() is False


def test_bf16_autocast_keeps_norm_layers_in_float32():
    model = th.TinyNet()
    seen = {}
    model.conv.register_forward_hook(lambda m, a, o: seen.__setitem__("conv", o.dtype))
    model.norm.register_forward_hook(lambda m, a, o: seen.__setitem__("norm", (a[0].dtype, o.dtype)))
    x = torch.rand(2, 3, 8, 8)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        model(x)
    assert seen["conv"] == torch.bfloat16 and seen["norm"][0] == torch.bfloat16  # without islands
    _float32_islands(model, "cpu")
    with torch.autocast("cpu", dtype=torch.bfloat16):
        model(x)
    assert seen["conv"] == torch.bfloat16 and seen["norm"] == (torch.float32, torch.float32)
    opted_out = th.TinyNet()
    opted_out.norm.autocast_float32 = False  # a module that manages its own precision is left alone
    opted_out.norm.register_forward_hook(lambda m, a, o: seen.__setitem__("norm", (a[0].dtype, o.dtype)))
    _float32_islands(opted_out, "cpu")
    with torch.autocast("cpu", dtype=torch.bfloat16):
        opted_out(x)
    assert seen["norm"][0] == torch.bfloat16


def test_bf16_autocast_training_keeps_float32_parameters(tmp_path):
    res = train(th.tiny_recipe(epochs=1, amp="bf16"), tmp_path / "amp", device="cpu", progress=False, plot=False)
    assert all(v.dtype == torch.float32 for v in res.state.values() if v.is_floating_point())
    assert math.isfinite(res.history[0]["train_loss"])
    # bf16 changed the arithmetic: the run is not the float32 run
    ref = train(th.tiny_recipe(epochs=1, amp="none"), tmp_path / "fp32", device="cpu", progress=False, plot=False)
    assert any(not torch.equal(res.state[k], ref.state[k]) for k in ref.state)


# -- warm restarts (init_from) --------------------------------------------------------------------------
@pytest.fixture()
def registered_base(tmp_path, monkeypatch):
    """A finished tiny run registered as ``tinytrain_net.base``, its Hub folder in a weights dir."""
    base = train(th.tiny_recipe(epochs=2, tag="base"), tmp_path / "base", progress=False, plot=False)
    cfg = base.hub["cfg"]
    repo = tmp_path / "weights" / cfg.hf_hub_id
    repo.mkdir(parents=True)
    (repo / cfg.filename).write_bytes((tmp_path / "base" / "hub" / cfg.filename).read_bytes())
    monkeypatch.setenv("DSNET_ZOO_WEIGHTS_DIR", str(tmp_path / "weights"))
    registry.register_pretrained(th.ARCH, cfg)
    yield base, repo / cfg.filename
    registry._pretrained[th.ARCH].pop("base", None)


def test_init_from_starts_from_the_registered_weights_and_resumes_bit_for_bit(tmp_path, registered_base):
    _, weights_file = registered_base
    shipped = load_state_dict_file(weights_file)  # the base run's exported (EMA) weights
    warm = th.tiny_recipe(epochs=2, tag="warm", init_from=f"{th.ARCH}.base", lr=1e-9, weight_decay=0.0)
    res = train(warm, tmp_path / "warm", progress=False, plot=False)
    cold = train(warm.replace(init_from=None), tmp_path / "cold", progress=False, plot=False)
    # with a negligible learning rate the warm run ends where it started, at the registered weights; the cold
    # run (seeded initialisation, same recipe otherwise) does not
    for k, v in shipped.items():
        assert torch.allclose(res.state[k], v, atol=1e-6), k
    assert any(not torch.allclose(cold.state[k], v, atol=1e-3) for k, v in shipped.items())
    assert json.loads((tmp_path / "warm" / "recipe.json").read_text())["init_from"] == f"{th.ARCH}.base"
    # a warm restart is a recipe like any other: interrupted and resumed, it ends bit for bit the same
    again = th.tiny_recipe(epochs=2, tag="warm2", init_from=f"{th.ARCH}.base")
    straight = train(again, tmp_path / "s", progress=False, plot=False)
    train(again, tmp_path / "i", progress=False, plot=False, stop_after=1)
    resumed = train(again, tmp_path / "i", resume=True, progress=False, plot=False)
    assert straight.hub["sha256"] == resumed.hub["sha256"]
    assert any(not torch.equal(straight.state[k], v) for k, v in shipped.items())


def test_init_from_refuses_weights_that_fail_their_checksum_and_writes_nothing(tmp_path, registered_base):
    _, weights_file = registered_base
    data = bytearray(weights_file.read_bytes())
    data[-1] ^= 1
    weights_file.write_bytes(bytes(data))
    from dsnet_zoo.hub import ChecksumError
    with pytest.raises(ChecksumError):
        train(th.tiny_recipe(tag="warm", init_from=f"{th.ARCH}.base"), tmp_path / "w", progress=False, plot=False)
    assert not (tmp_path / "w").exists()


def test_init_from_names_weights_of_the_same_architecture_under_another_tag():
    with pytest.raises(RecipeError, match="same architecture"):
        th.tiny_recipe(init_from="hamnet_cifar10.cpu_e18")
    with pytest.raises(RecipeError, match="same architecture"):
        th.tiny_recipe(init_from=th.ARCH)
    with pytest.raises(RecipeError, match="another tag"):
        th.tiny_recipe(tag="t", init_from=f"{th.ARCH}.t")
    # absent while unset, so recipes recorded before the field read and print as they did
    assert "init_from" not in th.tiny_recipe().to_dict()
    r = th.tiny_recipe(init_from=f"{th.ARCH}.base")
    assert r.to_dict()["init_from"] == f"{th.ARCH}.base" and Recipe.from_dict(r.to_dict()) == r
    # an unregistered tag fails when the run starts, before anything is written
    with pytest.raises(registry.UnknownModelError, match="nosuch"):
        train(th.tiny_recipe(init_from=f"{th.ARCH}.nosuch"), "/nonexistent/never-written", progress=False,
              plot=False)


def test_a_recipe_from_retired_weights_retrains_them_first_and_ends_bit_for_bit_the_same(tmp_path, registered_base,
                                                                                          capsys):
    base, weights_file = registered_base
    child = th.tiny_recipe(epochs=2, tag="child", init_from=f"{th.ARCH}.base")
    hosted = train(child, tmp_path / "hosted", progress=False, plot=False)
    # retire the base: its record stays, its file is gone, the child (hosted) continues from it
    base_cfg = registry._pretrained[th.ARCH].pop("base")
    weights_file.unlink()
    registry.register_pretrained(th.ARCH, hosted.hub["cfg"])
    registry.register_retired(th.ARCH, base_cfg, successor=f"{th.ARCH}.child")
    try:
        listed = dsnet_zoo.list_pretrained()
        assert f"{th.ARCH}.base" not in listed and f"{th.ARCH}.child" in listed
        with pytest.raises(dsnet_zoo.RetiredWeightsError, match=rf"dsnet-zoo train {th.ARCH}\.base --out DIR.*"
                                                              rf"init_from='{th.ARCH}\.base' retrains them first"):
            dsnet_zoo.create(f"{th.ARCH}.base", pretrained=True)
        with pytest.raises(ValueError, match="already registered"):
            registry.register_pretrained(th.ARCH, base_cfg)
        other = hosted.hub["cfg"].__class__(tag="other", sha256="0" * 64, recipe=child.to_dict())
        with pytest.raises(ValueError, match="successor"):
            registry.register_retired(th.ARCH, other, successor=f"{th.ARCH}.nosuch")
        with pytest.raises(ValueError, match=rf"does not start from {th.ARCH}\.other"):
            registry.register_retired(th.ARCH, other, successor=f"{th.ARCH}.child")
        # the child's recipe retrains the retired base first (bit for bit: same process, one recipe), then
        # ends exactly where the run from the hosted base ended
        logs: list[str] = []
        again = train(child, tmp_path / "again", progress=False, plot=False, log=logs.append)
        rerun = tmp_path / "again" / f"init_from-{th.ARCH}.base" / "hub" / base_cfg.filename
        assert sha256_file(rerun) == base_cfg.sha256
        assert again.hub["sha256"] == hosted.hub["sha256"]
        assert any("bit for bit the published weights" in m for m in logs)
        # interrupted and resumed, the child neither retrains the base again nor ends anywhere else
        train(child, tmp_path / "i", progress=False, plot=False, stop_after=1, log=logs.append)
        logs.clear()
        resumed = train(child, tmp_path / "i", resume=True, progress=False, plot=False, log=logs.append)
        assert resumed.hub["sha256"] == hosted.hub["sha256"]
        assert not any("retraining" in m for m in logs) and any("bit for bit the published" in m for m in logs)
        # `dsnet-zoo train ARCH.TAG` reruns a retired tag's recipe like any other
        assert cli_main(["train", f"{th.ARCH}.base", "--out", str(tmp_path / "b"), "--print-recipe"]) == 0
        assert json.loads(capsys.readouterr().out) == dict(base_cfg.recipe)
    finally:
        registry._retired[th.ARCH].pop("base", None)
        registry._pretrained[th.ARCH].pop("child", None)


def test_cli_init_from_goes_into_the_recipe(capsys):
    assert cli_main(["train", "hamnet_cifar10", "--out", "unused", "--init-from", "hamnet_cifar10.cpu_e18",
                     "--tag", "warm", "--print-recipe"]) == 0
    printed = json.loads(capsys.readouterr().out)
    assert printed["init_from"] == "hamnet_cifar10.cpu_e18" and printed["tag"] == "warm"


# -- the command line ---------------------------------------------------------------------------------
def test_cli_train_tag_reruns_the_recorded_recipe_bit_for_bit(tmp_path, capsys):
    recipe = th.tiny_recipe(epochs=2, tag="rerun", augment="crop_flip")
    assert cli_main(["train", th.ARCH, "--out", str(tmp_path / "first"), "--epochs", "2", "--batch-size", "16",
                     "--lr", "0.05", "--no-progress", "--no-plot", "--print-recipe"]) == 2  # no default recipe
    assert "no default training recipe" in capsys.readouterr().err
    first = train(recipe, tmp_path / "first", progress=False, plot=False)
    cfg = first.hub["cfg"]
    registry.register_pretrained(th.ARCH, cfg)
    try:
        rc = cli_main(["train", f"{th.ARCH}.rerun", "--out", str(tmp_path / "again"), "--no-progress",
                       "--no-plot", "--device", "cpu"])
        assert rc == 0
        again = json.loads((tmp_path / "again" / "hub" / "config.json").read_text())["dsnet_zoo"]["weights_cfg"]
        assert again["sha256"] == cfg.sha256  # the same recipe gives the same bytes
        assert again["recipe"] == recipe.to_dict()
        assert cli_main(["train", f"{th.ARCH}.rerun", "--out", str(tmp_path / "x"), "--lr", "0.1"]) == 2
        assert "reruns the recipe recorded" in capsys.readouterr().err
    finally:
        registry._pretrained[th.ARCH].pop("rerun", None)


# -- massnet_sir ----------------------------------------------------------------------------------------
def test_massnet_sir_zoo_weights_meet_the_recorded_targets():
    """The committed massnet_sir weights (hub/) load strictly with their sha256; on the regenerated
    SIR test set their MSE is <= 1e-5 and the sum S + I + R is conserved to 1e-12 relative (float64)."""
    assert registry.is_model("massnet_sir")
    from dsnet_zoo.models.massnet import sir_dataset

    name = dsnet_zoo.list_pretrained("massnet_sir*")
    assert name, "massnet_sir has no registered pretrained tag"
    cfg = registry.get_pretrained_cfg(name[0])
    model = dsnet_zoo.create(name[0], pretrained=True).double()
    recipe = Recipe.from_dict(cfg.recipe)
    d = sir_dataset(**dict(recipe.dataset_args))
    x, y = torch.from_numpy(d["x_test"]), torch.from_numpy(d["y_test"])
    with torch.no_grad():
        out = model(x)
    mse = float(((out - y) ** 2).mean())
    rel = float(((out.sum(1) - x.sum(1)).abs() / x.sum(1).abs()).max())
    assert mse <= 1e-5 and mse == pytest.approx(cfg.metrics["test_mse"], rel=1e-6)
    assert rel <= 1e-12
    # the guarantee is the architecture's: a plain MLP of the same data does not conserve the sum
    mlp = torch.nn.Sequential(torch.nn.Linear(3, 8), torch.nn.Tanh(), torch.nn.Linear(8, 3)).double()
    with torch.no_grad():
        assert float(((mlp(x).sum(1) - x.sum(1)).abs() / x.sum(1)).max()) > 1e-6


def _image_task(n_train: int, n_eval: int, classes: int, seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    x = torch.randint(0, 256, (n_train + n_eval, 3, 32, 32), generator=g, dtype=torch.uint8)
    y = torch.randint(0, classes, (n_train + n_eval,), generator=g)
    return TrainData(x[:n_train], y[:n_train], x[n_train:], y[n_train:], "classification", classes, {})


@pytest.mark.parametrize("arch, model_args, extra", [
    # the paper's layout, as the user ran it (hinge, float32)
    ("lipnet_conv_cifar100", {"widths": [4, 4, 4], "depth": 2, "cert_every": 3}, {}),
    # the flagship's recipe path: certified CE, bf16 autocast, channels_last, EMA
    ("lipnet_cifar10", {"conv_stages": [[4, 1], [8, 1]], "dense_width": 32, "dense_depth": 1, "cert_every": 3},
     {"loss": "certified_ce", "temperature": 4.0, "amp": "bf16", "channels_last": True, "ema": 0.9}),
])
def test_resume_is_bit_for_bit_for_lipnets(tmp_path, arch, model_args, extra):
    """Interrupted in epoch 3 and resumed: the same weights as an uninterrupted run. Needs the
    training-time normalisers' power vectors and refresh counters in the checkpoint (4 steps per
    epoch, a certified refresh every 3: the counter is mid-period at every epoch boundary)."""
    classes = 100 if arch.endswith("100") else 10
    data = _image_task(64, 16, classes)
    recipe = Recipe(**{**dict(model=arch, dataset="synthetic-32", epochs=3, batch_size=16, lr=0.05, loss="hinge",
                              margin=0.15, augment="crop_flip", model_args=model_args), **extra})
    kw = dict(progress=False, plot=False, data=data, write_hub=False)
    straight = train(recipe, tmp_path / "a", **kw)
    train(recipe, tmp_path / "b", stop_after=2, **kw)
    resumed = train(recipe, tmp_path / "b", resume=True, **kw)
    for k, v in straight.state.items():
        assert torch.equal(v, resumed.state[k]), k
    a = torch.load(tmp_path / "a" / "checkpoint.pt", weights_only=True)["normalizers"]
    b = torch.load(tmp_path / "b" / "checkpoint.pt", weights_only=True)["normalizers"]
    assert a.keys() == b.keys() and a
    for name in a:
        for k in a[name]:
            assert torch.equal(a[name][k], b[name][k]), (name, k)
