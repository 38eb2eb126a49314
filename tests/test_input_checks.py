"""Every zoo model refuses inputs it would silently turn into garbage, with a message that says what it
expects: integer (uint8) images, 0-255 floats, images standardised twice, NaN/inf, wrong shapes. Small
perturbations outside [0, 1] (attacks, noise) pass. The checks survive torch.fx tracing and do not break
a torch.compile graph."""
from __future__ import annotations

import math

import numpy as np
import pytest
import torch

import dsnet_zoo
from dsnet_zoo import registry
from dsnet_zoo.models import ZooClassifier
from dsnet_zoo.models.hamnet import HamNet
from dsnet_zoo.models.lipflow import LipFlowNet
from dsnet_zoo.models.lipnet import LipNet
from dsnet_zoo.models.lipnet_paper import LipNetPaper
from dsnet_zoo.models.massnet import MassNet
from dsnet_zoo.models.vpnet import VPNet

# one registered architecture per model class (family); the checks run before any computation, so the
# shipped sizes cost only their construction
IMAGE_ARCHS = {
    "HamNet": "hamnet_cifar10",
    "VPNet": "vpnet_cifar100",
    "LipFlowNet": "lipnet_cifar10",
    "LipNet": "lipnet_conv_cifar10",
    "LipNetPaper": "lipnet_paper_switch_prescribed_cifar10",
}
SHAPE = r"images \[N, 3, 32, 32\] \(float, values in \[0, 1\]\)"


@pytest.fixture(scope="module")
def models():
    return {cls: dsnet_zoo.create(arch).eval() for cls, arch in IMAGE_ARCHS.items()}


def test_every_zoo_model_class_is_covered():
    ours = [a for a in registry.list_models() if registry.arch_info(a)["module"].startswith("dsnet_zoo.")]
    with torch.device("meta"):  # the classes only: no weights allocated
        classes = {type(dsnet_zoo.create(a)).__name__ for a in ours}
    assert classes == set(IMAGE_ARCHS) | {"MassNet"}


def _entry_points(model):
    """Every public way into the model: forward, forward_features and timm's forward_intermediates."""
    return [model, model.forward_features, lambda x: model.forward_intermediates(x, intermediates_only=True)]


def _images():
    return torch.rand(2, 3, 32, 32, generator=torch.Generator().manual_seed(0))


@pytest.mark.parametrize("cls", IMAGE_ARCHS)
def test_uint8_images_are_refused_with_the_fix(models, cls):
    x = (_images() * 255).to(torch.uint8)
    for fn in _entry_points(models[cls]):
        with pytest.raises(TypeError, match=rf"{cls} expected {SHAPE}, got dtype torch.uint8: divide uint8 images "
                                            r"by 255 \(x.float\(\) / 255\)"):
            fn(x)
    with pytest.raises(TypeError, match="got dtype torch.int64: convert it to a float tensor"):
        models[cls](x.long())


@pytest.mark.parametrize("cls", IMAGE_ARCHS)
def test_0_255_floats_are_refused(models, cls):
    x = _images() * 255
    for fn in _entry_points(models[cls]):
        with pytest.raises(ValueError, match=rf"{cls} expected {SHAPE}, got values up to 2\d\d(\.\d+)?, above the "
                                             r"accepted \[-1, 2\] \(0-255 images\? divide them by 255\)"):
            fn(x)


@pytest.mark.parametrize("cls", IMAGE_ARCHS)
def test_standardised_images_are_refused(models, cls):
    """Images already normalised with a mean and std (the models normalise inside)."""
    x = (_images() - 0.4914) / 0.2470  # CIFAR-10 red channel statistics
    with pytest.raises(ValueError, match=r"got values down to -1\.9\d*, below the accepted \[-1, 2\] \(normalised "
                                         r"with a mean and std\? the model normalises inside"):
        models[cls](x)


@pytest.mark.parametrize("cls", IMAGE_ARCHS)
@pytest.mark.parametrize("bad, what", [(math.nan, "NaN"), (math.inf, "infinite"), (-math.inf, "infinite")])
def test_nan_and_inf_are_refused(models, cls, bad, what):
    x = _images()
    x[1, 2, 5, 7] = bad  # one value is enough
    for fn in _entry_points(models[cls]):
        with pytest.raises(ValueError, match=rf"{cls} expected {SHAPE}, got {what} values"):
            fn(x)


@pytest.mark.parametrize("cls", IMAGE_ARCHS)
@pytest.mark.parametrize("shape", [(2, 3, 28, 28), (3, 32, 32), (2, 1, 32, 32), (2, 32, 32, 3)])
def test_wrong_shapes_are_refused(models, cls, shape):
    x = torch.rand(shape)
    for fn in _entry_points(models[cls]):
        with pytest.raises(ValueError, match=rf"{cls} expected {SHAPE}, got shape {re_tuple(shape)}"):
            fn(x)


def re_tuple(shape):
    return str(tuple(shape)).replace("(", r"\(").replace(")", r"\)")


@pytest.mark.parametrize("cls", IMAGE_ARCHS)
def test_non_tensors_are_refused(models, cls):
    with pytest.raises(TypeError, match=rf"{cls} expected {SHAPE}, got a ndarray: pass a torch.Tensor"):
        models[cls](np.zeros((2, 3, 32, 32), dtype=np.float32))


@pytest.mark.parametrize("cls", IMAGE_ARCHS)
def test_images_and_small_perturbations_pass(models, cls):
    m = models[cls]
    x = _images()
    assert m.check_input(x) is x
    # an attack or additive noise may leave [0, 1]; [-1, 2] is accepted, in any float dtype
    noisy = (x + 0.5 * torch.randn(x.shape, generator=torch.Generator().manual_seed(1))).clamp(-1, 2)
    assert noisy.min() < 0 and noisy.max() > 1
    for dtype in (torch.float32, torch.float64, torch.bfloat16, torch.float16):
        m.check_input(noisy.to(dtype))
    m.check_input(torch.empty(0, 3, 32, 32))  # an empty batch has no values to check
    # an instance can widen (or drop) the value check, e.g. for randomised smoothing with large noise
    m.input_range = None
    try:
        m.check_input(x * 255)
        with pytest.raises(TypeError, match="uint8"):
            m.check_input((x * 255).to(torch.uint8))  # dtype and shape are still checked
    finally:
        del m.input_range


def test_a_model_runs_on_accepted_inputs_and_refuses_before_computing():
    """The check is the first thing forward does: a refused input costs one reduction."""
    m = HamNet(10, widths=(12, 48), depths=(1, 1)).eval()
    x = _images()
    with torch.no_grad():
        assert m(x).shape == (2, 10) and torch.isfinite(m(x)).all()
        assert m(x.clamp(0, 1) + 0.3).shape == (2, 10)
    calls = []
    m.stages[0].lift.register_forward_hook(lambda *a: calls.append(1))
    with pytest.raises(ValueError):
        m(x * 255)
    assert calls == []
    with torch.no_grad():
        m(x)
    assert calls == [1]  # the hook sits on the first layer that computes


def test_massnet_states():
    m = dsnet_zoo.create("massnet_sir")
    x = torch.tensor([[0.5, 0.3, 0.2], [0.9, 0.05, 0.05]])
    assert m(x).shape == (2, 3)
    expected = r"MassNet expected \(N, 3\) states \(float population fractions in \[0, 1\]\)"
    with pytest.raises(TypeError, match=rf"{expected}, got dtype torch.uint8: convert it to a float tensor"):
        m((x * 255).to(torch.uint8))
    with pytest.raises(ValueError, match=rf"{expected}, got values up to 229\.5, above the accepted \[-1, 2\]$"):
        m(x * 255)  # population counts instead of fractions
    y = x.clone()
    y[0, 1] = math.nan
    with pytest.raises(ValueError, match=rf"{expected}, got NaN values"):
        m(y)
    with pytest.raises(ValueError, match=rf"{expected}, got shape \(2, 4\)"):
        m(torch.rand(2, 4))


def test_value_checks_skip_functorch_transforms():
    """verify.py takes Jacobians of MassNet with torch.func.jacrev (vmap cannot read batched values)."""
    m = dsnet_zoo.create("massnet_sir").double()
    x = torch.tensor([0.5, 0.3, 0.2], dtype=torch.float64)
    jac = torch.func.jacrev(lambda z: m(z[None])[0])(x)
    assert jac.shape == (3, 3)
    # the rows of the Jacobian of a sum-preserving map sum to the all-ones vector
    torch.testing.assert_close(jac.sum(0), torch.ones(3, dtype=torch.float64))


class _Checked(torch.nn.Module):
    def __init__(self, model):
        super().__init__()
        self.model = model

    def forward(self, x):
        return self.model.check_input(x) + 0


@pytest.mark.parametrize("cls", IMAGE_ARCHS)
def test_fx_traced_graphs_keep_the_shape_and_dtype_checks(models, cls):
    gm = torch.fx.symbolic_trace(_Checked(models[cls]))
    asserts = [n for n in gm.graph.nodes if n.op == "call_function" and n.target is torch._assert]
    assert len(asserts) == 5  # rank, channels, height, width, dtype
    x = _images()
    torch.testing.assert_close(gm(x), x)
    with pytest.raises(AssertionError, match=rf"{cls} expected {SHAPE} \(checked in the traced graph\)"):
        gm(torch.rand(2, 3, 28, 28))
    with pytest.raises(AssertionError, match=rf"{cls} expected {SHAPE}"):
        gm((x * 255).to(torch.uint8))


def test_fx_feature_extractor_of_a_whole_model_keeps_the_check():
    """timm's fx path (the layers are leaf modules, see dsnet_zoo/_timm.py) on a whole model."""
    from timm.models import get_notrace_functions, get_notrace_modules
    from torchvision.models.feature_extraction import create_feature_extractor

    m = HamNet(10, widths=(12, 48), depths=(1, 1)).eval()
    fx = create_feature_extractor(m, return_nodes=["head"], tracer_kwargs=dict(
        leaf_modules=get_notrace_modules(), autowrap_functions=get_notrace_functions()))
    x = _images()
    with torch.no_grad():
        torch.testing.assert_close(fx(x)["head"], m(x))
        with pytest.raises(AssertionError, match=r"HamNet expected images \[N, 3, 32, 32\]"):
            fx(torch.rand(2, 3, 16, 16))


def test_torch_compile_traces_the_check_without_a_graph_break(models):
    m = models["LipNet"]
    x = _images()
    fullgraph = torch.compile(lambda z: m.check_input(z) * 1, fullgraph=True, backend="eager")
    torch.testing.assert_close(fullgraph(x), x)
    # a refused shape raises our error once dynamo hands the call back to Python
    compiled = torch.compile(lambda z: m.check_input(z) * 1, backend="eager")
    with pytest.raises(ValueError, match=rf"LipNet expected {SHAPE}, got shape \(2, 3, 28, 28\)"):
        compiled(torch.rand(2, 3, 28, 28))


def test_the_base_class_holds_the_one_implementation():
    """No model class overrides the check or the forward paths that call it."""
    for cls in (HamNet, VPNet, LipFlowNet, LipNet, LipNetPaper):
        for name in ("check_input", "forward", "forward_features", "forward_intermediates"):
            assert getattr(cls, name) is getattr(ZooClassifier, name), (cls.__name__, name)
    assert MassNet.forward.__code__.co_names.count("check_input") == 1
