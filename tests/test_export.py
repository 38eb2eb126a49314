"""Plain and ONNX export (dsnet_zoo/export.py).

Every registered architecture, with random weights: the plain export has the same logits as the model in
eval mode (float32 and float64; measured max abs difference 0.0 everywhere: the export runs the same
operations on the same tensors), contains only torch.nn built-ins and the export's own plain wrappers, and
for certified models recomputes the same certified bound from its own weights (measured relative difference
0 for LipFlowNet, at most 3e-16 for LipNet, up to 3.6e-8 for the paper's models, whose original bound uses the
nominal std while the model divides by the stored float32 std). ONNX files run by onnxruntime give the same
logits (measured max abs difference <= 4.8e-7 for the classifiers, 1.5e-6 for MassNet with outputs up to 2). Small widths keep the
architectures (classes, steps, padding, depth) and make the file fit a 2-core CPU; the registered sizes and
the shipped flagship weights are exported too.
"""
from __future__ import annotations

import io
import math
import os
import warnings

import pytest
import torch
from torch import nn
from torch.fx.experimental.symbolic_shapes import GuardOnDataDependentSymNode

import dsnet_zoo
from dsnet_zoo.export import PLAIN_MODULES, GradientStep, PlainNet, ResidualStep, export_onnx, export_plain
from dsnet_zoo.layers import SwitchingPair
from dsnet_zoo.layers.functional import PADDING_MODES, check_padding_mode
from dsnet_zoo.models.lipnet import LipNet

from conftest import randomise

# small widths of each registered architecture (same classes, step kinds, padding modes and depths)
SMALL = {
    "lipnet_cifar10": dict(conv_stages=((8, 2), (12, 1)), dense_width=32),
    "lipnet_cifar100": dict(conv_stages=((8, 2), (12, 1)), dense_width=32),
    "lipnet_conv_cifar10": dict(widths=(4, 6, 8)),
    "lipnet_conv_cifar100": dict(widths=(4, 6, 8)),
    "lipnet_w2_cifar10": dict(widths=(8, 12, 16)),
    "lipnet_switch_cifar10": dict(widths=(4, 6, 8)),
    "lipnet_paper_ne_cifar10": dict(widths=(4, 6, 8)),
    "lipnet_paper_switch_flexible_cifar10": dict(widths=(4, 6, 8)),
    "lipnet_paper_switch_prescribed_cifar10": dict(widths=(4, 6, 8)),
    "hamnet_cifar10": dict(widths=(12, 48), depths=(1, 2)),
    "hamnet_cifar100": dict(widths=(12, 48), depths=(1, 2)),
    "vpnet_cifar10": dict(widths=(12, 48), depths=(1, 2)),
    "vpnet_cifar100": dict(widths=(12, 48), depths=(1, 2)),
    "massnet_sir": {},
}
# configurations the registered names do not reach: flexible switching pairs, a row-normalised head and
# no head (unpooled features)
EXTRA = {
    "lipnet_conv_flexible": ("lipnet_conv_cifar10", dict(widths=(4, 6, 8), step="flexible")),
    "lipnet_conv_rownorm": ("lipnet_conv_cifar10", dict(widths=(4, 6, 8), head="rownorm")),
    "lipnet_conv_headless": ("lipnet_conv_cifar10", dict(widths=(4, 6, 8), num_classes=0, global_pool="")),
}
CASES = {**{name: (name, kw) for name, kw in SMALL.items()}, **EXTRA}
ONNX_REL_TOL = 1e-5  # onnxruntime's kernels round differently: measured <= 2e-6 of the output scale


def test_every_registered_architecture_has_a_case():
    assert set(SMALL) == set(dsnet_zoo.list_models())


def _model(case: str, dtype: torch.dtype = torch.float32, seed: int = 0) -> nn.Module:
    arch, kwargs = CASES[case]
    with torch.random.fork_rng():  # the default init draws from the global generator: leave it as it was
        torch.manual_seed(seed)
        model = dsnet_zoo.create(arch, **kwargs)
    # normalised layers take weights far from their initialisation; the unconstrained families moderate ones
    certified = arch.startswith("lipnet_") and not arch.startswith("lipnet_paper")
    return randomise(model.to(dtype), seed=seed, scale=1.0 if certified else 0.1).eval()


def _inputs(plain: PlainNet, n: int, dtype: torch.dtype, seed: int = 1) -> torch.Tensor:
    x = torch.rand((n,) + plain.input_shape, generator=torch.Generator().manual_seed(seed), dtype=torch.float64)
    if len(plain.input_shape) == 1:  # MassNet: states on the simplex
        x = x / x.sum(dim=1, keepdim=True)
    return x.to(dtype)


def _bound(model: nn.Module) -> float | None:
    fn = getattr(model, "lipschitz_upper_bound", None)
    return None if fn is None else fn()


def _assert_plain_modules(plain: nn.Module) -> None:
    for name, m in plain.named_modules():
        builtin = type(m).__module__.startswith("torch.nn.modules.")
        assert builtin or type(m) in PLAIN_MODULES, f"{name or 'model'} is a {type(m).__module__}.{type(m).__name__}"


def _assert_same_bound(model: nn.Module, plain: PlainNet) -> None:
    original, exported = _bound(model), plain.lipschitz_upper_bound()
    if original is None:
        assert exported is None
        return
    assert exported >= original * (1 - 1e-6)
    assert math.isclose(exported, original, rel_tol=1e-6), (exported, original)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64], ids=["float32", "float64"])
@pytest.mark.parametrize("case", sorted(CASES))
def test_plain_export_same_logits_and_bound(case, dtype):
    model = _model(case, dtype)
    plain = export_plain(model)
    _assert_plain_modules(plain)
    assert not plain.training and next(plain.parameters()).dtype == dtype
    x = _inputs(plain, 3, dtype)
    with torch.no_grad():
        want, got = model(x), plain(x)
        feats = plain.features(x)
    assert got.shape == want.shape
    # the same operations on the same tensors: equal up to (at most) a couple of ulps; measured 0.0
    tol = 2 * torch.finfo(dtype).eps * max(1.0, float(want.abs().max()))
    assert float((got - want).abs().max()) <= tol
    if hasattr(model, "forward_features"):
        with torch.no_grad():
            pre = model.forward_head(model.forward_features(x), pre_logits=True)
        assert float((feats - pre).abs().max()) <= 2 * torch.finfo(dtype).eps * max(1.0, float(pre.abs().max()))
    _assert_same_bound(model, plain)
    if _bound(model) is not None:
        original = model.feature_lipschitz_upper_bound()
        assert math.isclose(plain.feature_lipschitz_upper_bound(), original, rel_tol=1e-6)


@pytest.mark.parametrize("case", sorted(CASES))
def test_plain_export_compiles_with_torchscript(case):
    """TorchScript's path for the zoo (its own modules refuse torch.jit.script: layers/_common.NotScriptable):
    the scripted plain export, also after torch.jit.save/load, computes exactly what the plain export computes
    (float64), in each of the first runs (the profiling executor optimises the graph after the first ones)."""
    plain = export_plain(_model(case, torch.float64))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)  # torch.jit's own deprecation warnings
        scripted = torch.jit.script(plain)
        buffer = io.BytesIO()
        torch.jit.save(scripted, buffer)
        buffer.seek(0)
        loaded = torch.jit.load(buffer)
    for seed in range(3):
        x = _inputs(plain, 3, torch.float64, seed=seed)
        with torch.no_grad():
            want = plain(x)
            assert torch.equal(scripted(x), want) and torch.equal(loaded(x), want)


def test_every_zoo_module_refuses_torchscript_and_names_the_way_out():
    """The public layers and the model classes refuse torch.jit.script before TorchScript compiles anything
    (the models themselves, and their fx graphs, in tests/test_timm_models.py), and say what to use."""
    import inspect

    import dsnet_zoo.layers
    import dsnet_zoo.models
    from dsnet_zoo.layers._common import NotScriptable
    from dsnet_zoo.models.hamnet import InjectiveLift
    from dsnet_zoo.models.lipnet import LipBlock
    from dsnet_zoo.models.lipnet_paper import PaperBlock
    from dsnet_zoo.models.massnet import MassNet

    public = [getattr(pkg, n) for pkg in (dsnet_zoo.layers, dsnet_zoo.models) for n in pkg.__all__]
    classes = [c for c in public if inspect.isclass(c) and issubclass(c, nn.Module)]
    classes += [InjectiveLift, LipBlock, PaperBlock, MassNet]
    assert len(classes) >= 20
    for cls in classes:
        assert issubclass(cls, NotScriptable), cls.__name__
    for layer in (dsnet_zoo.layers.HamiltonianBlock(4), nn.Sequential(nn.Identity(), dsnet_zoo.layers.LipLinear(3, 3))):
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", FutureWarning)
            with pytest.raises(TypeError, match=r"cannot be compiled by torch\.jit\.script.*export_plain"):
                torch.jit.script(layer)


def test_scriptable_padding_check_accepts_exactly_the_padding_modes():
    """check_padding_mode spells PADDING_MODES out (TorchScript compiles it): the two must not drift apart."""
    for mode in PADDING_MODES:
        check_padding_mode(mode)
    for mode in ("reflect", "replicate", "zero", ""):
        with pytest.raises(ValueError, match="padding_mode must be 'zeros' or 'circular'"):
            check_padding_mode(mode)
    assert PADDING_MODES == ("zeros", "circular")


# SwitchingPair guards its expansive step with certified bounds computed as Python numbers from the weights
# (layers/gradient_flow.py, _op_constants): torch.export cannot trace that (a data-dependent guard); their
# plain export can (test_plain_export_same_logits_and_bound, test_plain_export_compiles_with_torchscript)
NOT_TORCH_EXPORTABLE = {"lipnet_switch_cifar10", "lipnet_conv_flexible"}


@pytest.mark.parametrize("case", sorted(CASES))
def test_torch_export_of_the_model(case):
    """torch.export.export takes the zoo's models as they are (eval mode, float64): the exported program
    computes what the model computes (to a few ulps), on inputs other than the example it was traced with."""
    model = _model(case, torch.float64)
    plain = export_plain(model)
    if case in NOT_TORCH_EXPORTABLE:
        assert any(isinstance(m, SwitchingPair) for m in model.modules())
        with pytest.raises(GuardOnDataDependentSymNode):  # if this ever passes, drop the case and the README's caveat
            torch.export.export(model, (_inputs(plain, 2, torch.float64),))
        return
    program = torch.export.export(model, (_inputs(plain, 2, torch.float64),))
    x = _inputs(plain, 2, torch.float64, seed=7)
    with torch.no_grad():
        got, want = program.module()(x), model(x)
    # equal with one thread; with more, the exported graph's kernels may split sums differently: a few ulps
    assert float((got - want).abs().max()) <= 4 * torch.finfo(torch.float64).eps * max(1.0, float(want.abs().max()))


@pytest.mark.parametrize("case", sorted(CASES))
def test_onnx_export_matches_onnxruntime(case, tmp_path):
    ort = pytest.importorskip("onnxruntime")
    onnx = pytest.importorskip("onnx")
    model = _model(case)
    path = tmp_path / f"{case}.onnx"
    plain = export_onnx(model, path)
    proto = onnx.load(str(path))
    ops = {node.op_type for node in proto.graph.node}
    # nothing of the constraint machinery is left in the graph
    assert not ops & {"Eig", "Eigh", "DFT", "STFT"}, ops
    assert [op.version for op in proto.opset_import if op.domain in ("", "ai.onnx")] == [17]
    opts = ort.SessionOptions()
    opts.intra_op_num_threads = opts.inter_op_num_threads = 1
    session = ort.InferenceSession(str(path), opts, providers=["CPUExecutionProvider"])
    x = _inputs(plain, 5, torch.float32)  # a batch size other than the traced one: the batch axis is dynamic
    with torch.no_grad():
        want = model(x)
    got = torch.from_numpy(session.run(["output"], {"input": x.numpy()})[0])
    assert got.shape == want.shape
    assert float((got - want).abs().max()) <= ONNX_REL_TOL * max(1.0, float(want.abs().max()))


# lipnet_w2_cifar10 differs from lipnet_conv_cifar10 only in its widths, and its eval-mode weights alone take
# ~30 s of eigensolves on 2 cores; its small-width case runs above (at its registered size, measured once:
# plain 0, onnxruntime 6.3e-10)
@pytest.mark.parametrize("arch", sorted(set(SMALL) - {"lipnet_w2_cifar10"}))
def test_plain_export_at_registered_size(arch):
    """The registered configurations themselves (default init), float32: same logits, plain modules."""
    with torch.random.fork_rng():
        torch.manual_seed(0)
        model = dsnet_zoo.create(arch).eval()
    plain = export_plain(model)
    _assert_plain_modules(plain)
    x = _inputs(plain, 2, torch.float32)
    with torch.no_grad():
        assert torch.equal(plain(x), model(x))


def test_shipped_flagship_weights(tmp_path):
    """lipnet_cifar10 with the weights committed under hub/: same logits, same certified bound (from the
    exported tensors), same logits from onnxruntime."""
    model = dsnet_zoo.create("lipnet_cifar10", pretrained=True).eval()
    plain = export_plain(model)
    _assert_plain_modules(plain)
    x = _inputs(plain, 8, torch.float32)
    with torch.no_grad():
        want = model(x)
        assert torch.equal(plain(x), want)
    original = model.lipschitz_upper_bound()
    assert original <= 1.0
    _assert_same_bound(model, plain)
    assert plain.lipschitz_upper_bound() <= 1.0
    ort = pytest.importorskip("onnxruntime")
    export_onnx(model, tmp_path / "flagship.onnx")
    session = ort.InferenceSession(str(tmp_path / "flagship.onnx"), providers=["CPUExecutionProvider"])
    got = torch.from_numpy(session.run(None, {"input": x.numpy()})[0])
    assert float((got - want).abs().max()) <= ONNX_REL_TOL * max(1.0, float(want.abs().max()))


def test_pruned_flagship_exports_its_conv_features():
    """timm's feature extraction prunes LipFlowNet's dense part and head: the export follows."""
    model = _model("lipnet_cifar10", torch.float64)
    model.prune_intermediate_layers([1])  # the second conv feature: stage 1 and the dense part go
    plain = export_plain(model)
    assert not any(name.startswith("dense") for name, _ in plain.features.named_children())
    x = _inputs(plain, 2, torch.float64)
    with torch.no_grad():
        assert torch.equal(plain(x), model(x))
    # every exported layer is 1-Lipschitz by construction, and so is their product
    assert plain.lipschitz_upper_bound() <= 1.0


def test_switching_pairs_become_their_substeps():
    model = _model("lipnet_switch_cifar10")
    plain = export_plain(model)
    kinds = [type(m) for name, m in plain.features.named_children() if name.startswith("blocks_0_steps")]
    # prescribed pairs, 2 sub-steps each: (expansive residual step, contractive gradient step) x 2, per pair
    assert kinds == [ResidualStep, GradientStep] * 2 * (model.depth // 2)
    steps = [m for m in plain.modules() if isinstance(m, GradientStep)]
    assert all(s.sign < 0 and s.op.padding_mode == "circular" for s in steps)
    # the sub-steps of one pair run one map, as the pair does
    first = plain.features.blocks_0_steps_0_sub0_contract.op
    assert plain.features.blocks_0_steps_0_sub1_contract.op is first


def test_bound_is_recomputed_from_the_exported_weights():
    model = _model("lipnet_cifar10", torch.float64)
    plain = export_plain(model)
    before = plain.lipschitz_upper_bound()
    with torch.no_grad():
        plain.head.weight.mul_(3.0)
    assert math.isclose(plain.lipschitz_upper_bound(), 3.0 * before, rel_tol=1e-9)
    # the original is untouched: the export shares no tensor with it
    assert math.isclose(model.lipschitz_upper_bound(), before, rel_tol=1e-12)
    ours = {t.data_ptr() for t in list(plain.parameters()) + list(plain.buffers())}
    theirs = {t.data_ptr() for t in list(model.parameters()) + list(model.buffers())}
    assert not ours & theirs


def test_training_mode_model_is_exported_with_its_eval_weights():
    model = _model("lipnet_conv_cifar10").train()
    plain = export_plain(model)
    assert model.training  # left as it was
    x = _inputs(plain, 2, torch.float32)
    with torch.no_grad():
        want = model.eval()(x)
    assert torch.equal(plain(x), want)


def test_check_catches_a_forward_the_export_does_not_reproduce():
    class Shifted(LipNet):
        def forward(self, x):
            return super().forward(x) + 1.0

    model = Shifted(10, widths=(4, 6, 8)).eval()
    with pytest.raises(RuntimeError, match="differs from the model"):
        export_plain(model)
    assert isinstance(export_plain(model, check=False), PlainNet)


def test_unknown_models_are_refused():
    with pytest.raises(TypeError, match="cannot export Linear"):
        export_plain(nn.Linear(3, 3))


def test_onnx_write_is_atomic(tmp_path):
    pytest.importorskip("onnx")

    class Broken(LipNet):
        def forward(self, x):
            raise ValueError("broken forward")

    path = tmp_path / "model.onnx"
    path.write_bytes(b"previous")
    with pytest.raises(ValueError, match="broken forward"):
        export_onnx(Broken(10, widths=(4, 6, 8)).eval(), path, plain=False)
    assert path.read_bytes() == b"previous"
    assert os.listdir(tmp_path) == ["model.onnx"]  # no temp file left behind
    export_onnx(_model("massnet_sir"), path)
    assert path.read_bytes()[:8] != b"previous"[:8] and path.stat().st_size > 1000


def test_onnx_dynamo_exporter(tmp_path):
    """torch's torch.export-based exporter (needs onnxscript, part of the onnx extra)."""
    pytest.importorskip("onnxscript")
    ort = pytest.importorskip("onnxruntime")
    model = _model("massnet_sir")
    plain = export_onnx(model, tmp_path / "m.onnx", dynamo=True, opset=18)
    session = ort.InferenceSession(str(tmp_path / "m.onnx"), providers=["CPUExecutionProvider"])
    x = _inputs(plain, 4, torch.float32)
    with torch.no_grad():
        want = model(x)
    got = torch.from_numpy(session.run(None, {"input": x.numpy()})[0])
    assert float((got - want).abs().max()) <= ONNX_REL_TOL * max(1.0, float(want.abs().max()))
