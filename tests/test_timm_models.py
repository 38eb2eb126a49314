"""timm's own model tests (tests/timm_upstream/test_models.py, timm 1.0.31, Apache-2.0), run on every
architecture dsnet_zoo registers with timm.

The test functions are timm's, imported from the vendored file and called unchanged. Each one is
parametrized here with the selection expression of timm's file (copied next to it) over dsnet_zoo's
architectures, using timm's filter lists extended by dsnet_zoo's entries below: a test that cannot apply
to a model is excluded the way timm excludes its own models, with the reason next to the entry.

One adaptation: timm's tests make their random input images with ``torch.randn`` (N(0, 1) noise, values
down to about -4 and up to 4). dsnet_zoo's models take images in [0, 1] and refuse values outside
[-1, 2] (0-255 or standardised images: see models/_base.py), so the vendored module's ``torch`` is
replaced, for these tests only, by one whose ``randn`` draws uniform noise in [0, 1) of the same size,
dtype and device: the same role (a random image), inside the models' input contract. Nothing else in
``torch`` and nothing in the models is replaced.
"""
from __future__ import annotations

import fnmatch
import hashlib
import importlib.util
import sys
import types
import warnings
from pathlib import Path

import numpy as np
import pytest
import torch

import dsnet_zoo  # registers the architectures with timm before timm's module computes its model lists
import timm
from dsnet_zoo import registry
from dsnet_zoo.hub.weights import checkout_hub_dir

_UPSTREAM = Path(__file__).parent / "timm_upstream" / "test_models.py"
UPSTREAM_VERSION = "1.0.31"
UPSTREAM_SHA256 = "ffb62c6df02601a96c2fda403723a7f96a806897ee061d1009c1f3135fb64eb7"


def _load_upstream():
    spec = importlib.util.spec_from_file_location("timm_upstream_test_models", _UPSTREAM)
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    with warnings.catch_warnings():
        # its marks (base, cfg, timeout, ...) select timm's CI shards and pytest-timeout: unknown here
        warnings.simplefilter("ignore", pytest.PytestUnknownMarkWarning)
        spec.loader.exec_module(module)
    return module


up = _load_upstream()
list_models = timm.list_models

# dsnet_zoo's own architectures (not the scratch ones some tests register for a while)
OURS = {a for a in registry.list_models() if registry.arch_info(a)["module"].startswith("dsnet_zoo.")}


def ours(names):
    """timm model names (``arch`` or ``arch.tag``) of dsnet_zoo's architectures."""
    return [n for n in names if n.split(".")[0] in OURS]


# -- timm's filter lists, extended by dsnet_zoo's entries -------------------------------------------------
EXCLUDE_FILTERS = up.EXCLUDE_FILTERS + [
    # a flow-map regressor on (N, 3) SIR states with no classifier (num_classes is 0 by construction):
    # timm's image-model tests do not apply
    "massnet_*",
    # timm excludes its big models on slow runners; these two add no code path to the suite and would
    # double its run time: lipnet_w2_cifar10 is lipnet_conv_cifar10 (same LipNet class and layers) at twice
    # the width, ~20 s per fresh forward on 2 CPU cores for the eval-mode certified normaliser, and
    # lipnet_conv_cifar100 is lipnet_conv_cifar10 with another mean and a 100-way head (~4 s per forward)
    "lipnet_w2_cifar10",
    "lipnet_conv_cifar100",
]
NON_STD_FILTERS = up.NON_STD_FILTERS + [
    # LipFlowNet (the certified flagship): forward_features returns the dense features [N, 512] (its conv
    # maps are flattened into a 1-Lipschitz MLP), like timm's vision transformers return tokens
    "lipnet_cifar10", "lipnet_cifar100",
    # the tests that filter on NON_STD_FILTERS only (features, pretrained features): not an image model
    "massnet_*",
]
NON_STD_EXCLUDE_FILTERS = up.NON_STD_EXCLUDE_FILTERS + ["massnet_*"]  # not an image model (see above)
EXCLUDE_FEAT_FILTERS = NON_STD_FILTERS[:]  # as in timm's file: no features_only test for non-standard models
# module filter of the forward_intermediates tests: every dsnet_zoo entrypoint lives in dsnet_zoo._timm
FEAT_INTER_FILTERS = up.FEAT_INTER_FILTERS + ["_timm"]
# dsnet_zoo's own list, in the style of timm's EXCLUDE_JIT_FILTERS / EXCLUDE_FX_FILTERS: models that
# test_model_default_cfgs[_non_std] cannot pass without renaming parameters (forbidden: the committed
# weights must keep loading). timm's API checks that these tests make are run on them by
# test_model_api_contract below.
EXCLUDE_CFG_FILTERS = [
    # LipNet and the flagship LipFlowNet: their convs and heads are 1-Lipschitz maps whose parameter is
    # `raw_weight` (the weight that runs is derived from it), so timm's "first_conv + '.weight' and
    # classifier + '.weight' are state-dict keys" checks cannot hold
    "lipnet_cifar*", "lipnet_conv_*", "lipnet_switch_*", "lipnet_w2_*",
    # LipNet and the paper ports flatten their last 128 x 4 x 4 map into the head: num_features (the
    # width of the pre-logit features, 2048, as dsnet_zoo's certificates, tests and published configs use
    # it) is not the channel count of forward_features (128) that timm's test expects
    "lipnet_paper_*",
]
EXCLUDE_BWD_FILTERS = [
    # the authors' switch_flexible layout never uses the second conv of each pair (kept so that their
    # released state dicts load strictly): those parameters get no gradient by construction
    "lipnet_paper_switch_flexible_*",
]
EXCLUDE_FX_FILTERS = up.EXCLUDE_FX_FILTERS  # dsnet_zoo adds none: every model traces (layers are leaves)
EXCLUDE_PRUNE_FILTERS = [
    # timm keeps this test off its CI for its cost; with LipNet each of its deep copies recomputes the
    # eval-mode certified normaliser: ~25 s per architecture on 2 busy CPU cores. lipnet_switch_cifar10 is
    # the LipNet class of lipnet_conv_cifar10 (same blocks, same pruning code), which runs
    "lipnet_switch_*",
    # unused parameters by construction, see EXCLUDE_BWD_FILTERS
    *EXCLUDE_BWD_FILTERS,
]

_NO_TORCHSCRIPT = (
    "scripts the model (or its fx graph, whose leaves are the zoo's layers): TorchScript is deprecated in "
    "PyTorch and the zoo's modules refuse it with an error naming what to use instead, its plain export, which "
    "scripts (test_torchscript_is_refused_with_what_to_use_instead, tests/test_export.py)")
# timm's tests over list_models() that are not run here, with the reason
NOT_RUN = {
    "test_model_load_pretrained": (
        "loads weights with in_chans=1 and num_classes=5: dsnet_zoo refuses to adapt a stem or a head while "
        "loading (the weights' metrics and certificate would no longer hold); load, then reset_classifier"),
    "test_model_forward_torchscript": _NO_TORCHSCRIPT,
    "test_model_forward_fx_torchscript": _NO_TORCHSCRIPT,
    "test_model_default_cfgs_non_std": (
        "its selection is empty: the zoo's only non-standard models (the LipFlowNet flagships) cannot pass it "
        "(EXCLUDE_CFG_FILTERS) and test_model_api_contract runs its API checks on them; "
        "test_non_standard_models_are_all_cfg_excluded fails if a new one could take it"),
}


@pytest.fixture(autouse=True)
def _unit_interval_inputs(monkeypatch):
    monkeypatch.setattr(up, "torch", _UnitIntervalTorch())


class _UnitIntervalTorch(types.ModuleType):
    """``torch`` for timm's test functions, with ``randn`` drawing uniform [0, 1) noise (see module doc)."""

    def __init__(self) -> None:
        super().__init__("torch")

    def __getattr__(self, name):
        return getattr(torch, name)

    @staticmethod
    def randn(*size, **kwargs):
        return torch.rand(*size, **kwargs)


@pytest.fixture
def cfg_device():
    return "meta" if up._HAS_DEVICE_CONTEXT else up.torch_device  # as timm's fixture


def test_vendored_file_is_the_timm_release_file():
    digest = hashlib.sha256(_UPSTREAM.read_bytes()).hexdigest()
    assert digest == UPSTREAM_SHA256, "tests/timm_upstream/test_models.py differs from timm's released file"
    assert timm.__version__ == UPSTREAM_VERSION, (
        f"the vendored tests are timm {UPSTREAM_VERSION}'s, timm {timm.__version__} is installed: vendor that "
        "version's tests/test_models.py (see tests/timm_upstream/README.md)")


def test_every_upstream_model_test_is_run_or_listed():
    """A timm test whose own selection takes dsnet_zoo's models is run by a function of the same name here,
    or is in NOT_RUN (this catches tests added by a newer vendored file)."""
    here = {n for n in globals() if n.startswith("test_")}
    for name, fn in vars(up).items():
        if not name.startswith("test_") or not callable(fn):
            continue
        for mark in getattr(fn, "pytestmark", []):
            if mark.name == "parametrize" and mark.args[0] == "model_name" and ours(mark.args[1]):
                assert (name in here) != (name in NOT_RUN), name


def test_every_architecture_is_selected_by_some_test():
    assert OURS and OURS <= set(timm.list_models())
    selected = {n.split(".")[0] for n in FORWARD}
    excluded = {a for a in OURS if any(fnmatch.fnmatch(a, f) for f in EXCLUDE_FILTERS)}
    assert selected == OURS - excluded and selected


# -- the selections of timm's file, restricted to dsnet_zoo's architectures -------------------------------
FORWARD = ours(list_models(exclude_filters=EXCLUDE_FILTERS))
BACKWARD = ours(list_models(exclude_filters=EXCLUDE_FILTERS + EXCLUDE_BWD_FILTERS, name_matches_cfg=True))
CFGS = ours(list_models(exclude_filters=EXCLUDE_FILTERS + NON_STD_FILTERS + EXCLUDE_CFG_FILTERS, include_tags=True))
CFGS_NON_STD = ours(list_models(filter=NON_STD_FILTERS, exclude_filters=NON_STD_EXCLUDE_FILTERS + EXCLUDE_CFG_FILTERS,
                                include_tags=True))
FEATURES = ours(list_models(exclude_filters=EXCLUDE_FILTERS + EXCLUDE_FEAT_FILTERS))
INTERMEDIATES = ours(list_models(module=FEAT_INTER_FILTERS, exclude_filters=EXCLUDE_FILTERS))
PRUNE = ours(list_models(module=FEAT_INTER_FILTERS, exclude_filters=EXCLUDE_FILTERS + EXCLUDE_PRUNE_FILTERS))
FX = ours(list_models(exclude_filters=EXCLUDE_FILTERS + EXCLUDE_FX_FILTERS))
FX_BACKWARD = ours(list_models(exclude_filters=EXCLUDE_FILTERS + EXCLUDE_FX_FILTERS + EXCLUDE_BWD_FILTERS,
                               name_matches_cfg=True))


def _local_weights(name: str) -> bool:
    cfg = registry.get_pretrained_cfg(name)
    hub = checkout_hub_dir()
    return bool(cfg and hub and cfg.hf_hub_id and (hub / cfg.hf_hub_id / cfg.filename).is_file())


# timm's selection is list_models(pretrained=True, exclude_filters=NON_STD_FILTERS): it leaves out the
# non-standard models because timm's older transformers had no features_only; the flagship has it, so it is
# kept. Restricted to the weights committed under hub/: the suite runs offline (tests/conftest.py).
FEATURES_PRETRAINED = [n for n in ours(list_models(pretrained=True, exclude_filters=EXCLUDE_FILTERS))
                       if _local_weights(n)]


@pytest.mark.parametrize("model_name", FORWARD)
def test_model_forward(model_name):
    up.test_model_forward(model_name, 1)


@pytest.mark.parametrize("model_name", BACKWARD)
def test_model_backward(model_name):
    up.test_model_backward(model_name, 2)


@pytest.mark.parametrize("model_name", CFGS)
def test_model_default_cfgs(model_name, cfg_device):
    up.test_model_default_cfgs(model_name, 1, cfg_device)


def test_non_standard_models_are_all_cfg_excluded():
    """timm's test_model_default_cfgs_non_std is not run (NOT_RUN): its selection takes none of ours. If a
    non-standard model could take it, run it on that model here instead of this assertion."""
    non_std = ours(list_models(filter=NON_STD_FILTERS, exclude_filters=NON_STD_EXCLUDE_FILTERS, include_tags=True))
    assert non_std and not CFGS_NON_STD
    assert set(non_std) <= set(CFG_EXCLUDED)


@pytest.mark.parametrize("model_name", FEATURES_PRETRAINED)
def test_model_features_pretrained(model_name):
    up.test_model_features_pretrained(model_name, 1)


@pytest.mark.parametrize("model_name", FEATURES)
def test_model_forward_features(model_name):
    up.test_model_forward_features(model_name, 1)


@pytest.mark.parametrize("model_name", INTERMEDIATES)
def test_model_forward_intermediates_features(model_name):
    up.test_model_forward_intermediates_features(model_name, 1)


@pytest.mark.parametrize("model_name", INTERMEDIATES)
def test_model_forward_intermediates(model_name):
    up.test_model_forward_intermediates(model_name, 1)


@pytest.mark.parametrize("model_name", PRUNE)
def test_prune_intermediate_layers_contract(model_name):
    up.test_prune_intermediate_layers_contract(model_name)


@pytest.mark.parametrize("model_name", FX)
def test_model_forward_fx(model_name):
    up.test_model_forward_fx(model_name, 1)


@pytest.mark.parametrize("model_name", FX_BACKWARD)
def test_model_backward_fx(model_name):
    up.test_model_backward_fx(model_name, 2)


@pytest.mark.parametrize("model_name", FX)
def test_torchscript_is_refused_with_what_to_use_instead(model_name):
    """timm's TorchScript tests, as a user meets them: torch.jit.script on the model, and on the fx graph of
    timm's feature extraction, stops at once with an error that names the plain export (which scripts:
    tests/test_export.py) and torch.export, instead of failing deep inside a layer."""
    model = timm.create_model(model_name, pretrained=False).eval()
    fx_model = up._create_fx_model(model)
    for target in (model, fx_model):
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", FutureWarning)  # torch.jit.script's own deprecation warning
            with pytest.raises(TypeError, match=r"torch\.jit\.script\(dsnet_zoo\.export\.export_plain\(model\)\)"):
                torch.jit.script(target)


# -- timm's API checks on the models that test_model_default_cfgs cannot take (EXCLUDE_CFG_FILTERS) --------
CFG_EXCLUDED = sorted(set(ours(list_models(exclude_filters=EXCLUDE_FILTERS, include_tags=True)))
                      - set(CFGS) - set(CFGS_NON_STD))


@pytest.mark.parametrize("model_name", CFG_EXCLUDED)
def test_model_api_contract(model_name, cfg_device):
    """The parts of test_model_default_cfgs that do not depend on parameter names or on num_features being a
    channel count: timm's own helper checks, on the meta device as there, plus the cfg's input keys."""
    with torch.device(cfg_device):
        model = timm.create_model(model_name, pretrained=False, device=cfg_device, dtype=torch.float32).eval()
    up._assert_model_api_contract(model, model_name, cfg_device)
    assert model.num_classes > 0 and model.num_features > 0 and model.head_hidden_size == model.num_features
    cfg = model.default_cfg
    assert model.in_chans == cfg["input_size"][0] and cfg["fixed_input_size"]
    assert tuple(cfg["mean"]) == (0.0,) * 3 and tuple(cfg["std"]) == (1.0,) * 3
    up._assert_reset_classifier_preserves_parent_device_dtype(model)
    up._assert_factory_device(model_name, cfg_device)
    up._assert_frozen_survives_reset_and_resize(model_name, cfg_device)


# -- dsnet_zoo's side of the bridge (dsnet_zoo/_timm.py) ---------------------------------------------------
@pytest.mark.parametrize("arch", sorted(OURS))
def test_timm_registry_holds_the_architectures_own_cfg(arch):
    """timm's cfg of every architecture, with weights or not: its input size and classes, inputs in [0, 1]
    (mean 0, std 1: the normalisation is inside the model), a fixed input size."""
    cfg = timm.models.get_pretrained_cfg(arch)
    info = registry.arch_info(arch)
    assert cfg.input_size == info["input_size"] and cfg.fixed_input_size
    assert cfg.num_classes == info["num_classes"]
    assert cfg.mean == (0.0,) * info["input_size"][0] and cfg.std == (1.0,) * info["input_size"][0]


def test_timm_preprocessing_feeds_inputs_the_models_accept():
    from PIL import Image

    model = timm.create_model("vpnet_cifar10").eval()
    transform = timm.data.create_transform(**timm.data.resolve_data_config(model=model))
    image = Image.fromarray(np.random.default_rng(0).integers(0, 256, (40, 48, 3), dtype=np.uint8))
    x = transform(image).unsqueeze(0)
    assert x.shape == (1, 3, 32, 32) and 0 <= x.min() and x.max() <= 1
    with torch.no_grad():
        assert torch.isfinite(model(x)).all()


def test_pretrained_cfg_overlay_file_loads_that_file(tmp_path):
    from safetensors.torch import save_file

    source = timm.create_model("vpnet_cifar10")
    path = tmp_path / "mine.safetensors"
    save_file({k: v.contiguous() for k, v in source.state_dict().items()}, str(path))
    model = timm.create_model("vpnet_cifar10", pretrained=True, pretrained_cfg_overlay=dict(file=str(path)))
    assert not model.training
    for k, v in source.state_dict().items():
        assert torch.equal(model.state_dict()[k], v), k
    assert model.pretrained_cfg["loaded_from"]["sha256"] == hashlib.sha256(path.read_bytes()).hexdigest()
    # other cfg keys overlay the metadata, as in timm
    tagged = timm.create_model("vpnet_cifar10", pretrained_cfg_overlay=dict(crop_pct=0.9))
    assert tagged.pretrained_cfg["crop_pct"] == 0.9
    with pytest.raises(ValueError, match=r"give file=PATH .* instead of \['url'\]"):
        timm.create_model("vpnet_cifar10", pretrained=True, pretrained_cfg_overlay=dict(url="https://x/y.pth"))


def test_features_only_is_timms_feature_getter():
    features = timm.create_model("vpnet_cifar10", features_only=True, out_indices=(0,)).eval()
    assert features.feature_info.channels() == [64] and features.feature_info.reduction() == [2]
    # pruned after the first block
    assert len(features.model.stages) == 1 and len(features.model.stages[0].blocks()) == 1
    assert "num_classes" not in features.pretrained_cfg and list(features.pretrained_cfg["input_size"]) == [3, 32, 32]
    model = timm.create_model("vpnet_cifar10").eval()
    model.load_state_dict(features.model.state_dict(), strict=False)  # the pruned model keeps the first stages
    x = torch.rand(2, 3, 32, 32)
    with torch.no_grad():
        got = features(x)
        want = model.forward_intermediates(x, indices=(0,), intermediates_only=True)
    assert len(got) == len(want) == 1
    for g, w in zip(got, want):
        torch.testing.assert_close(g, w)
    with pytest.raises(ValueError, match="feature_cls='getter'"):
        timm.create_model("vpnet_cifar10", features_only=True, feature_cls="list")


def test_grad_checkpointing_gives_the_same_gradients_or_is_refused():
    from dsnet_zoo.models.hamnet import HamNet
    from dsnet_zoo.models.lipnet import LipNet

    torch.manual_seed(0)
    model = HamNet(10, widths=(12, 48), depths=(1, 1)).train()
    x = torch.rand(2, 3, 32, 32)
    grads, calls = [], []
    model.stages[0].block0.register_forward_pre_hook(lambda *args: calls.append(1))
    for enable in (False, True):
        model.set_grad_checkpointing(enable)
        model.zero_grad()
        calls.clear()
        model(x).square().sum().backward()
        grads.append([p.grad.clone() for p in model.parameters()])
        assert len(calls) == (2 if enable else 1)  # checkpointed: the unit runs again in the backward pass
    for a, b in zip(*grads):
        torch.testing.assert_close(a, b)
    with pytest.raises(NotImplementedError, match="power-iteration normaliser"):
        LipNet(10, widths=(4,), img_size=8).set_grad_checkpointing()
