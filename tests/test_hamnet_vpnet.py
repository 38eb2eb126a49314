"""hamnet / vpnet: registered, CIFAR-sized, <= 10 MB of float32 weights, and every block of the
shipped architectures symplectic / volume-preserving and exactly invertible."""
import os

import pytest
import torch
from safetensors.torch import save_file

import dsnet_zoo
from dsnet_zoo.layers import HamiltonianBlock, VolumePreservingBlock
from dsnet_zoo.verify import block_jacobian, symplectic_error, volume_error

ARCHS = {"hamnet_cifar10": 10, "hamnet_cifar100": 100, "vpnet_cifar10": 10, "vpnet_cifar100": 100}
STRUCT_TOL = 1e-10
INVERSE_TOL64 = 1e-10
INVERSE_TOL32 = 1e-4


@pytest.fixture(scope="module")
def models():
    torch.manual_seed(0)
    return {name: dsnet_zoo.create(name) for name in ARCHS}


@pytest.mark.parametrize("name", ARCHS)
def test_registered_shapes_and_contract(models, name, tmp_path):
    assert name in dsnet_zoo.list_models(name.split("_")[0] + "*")
    model = models[name].eval()
    x = torch.rand(2, 3, 32, 32)
    with torch.no_grad():
        logits = model(x)
        feats = model.forward_head(model.forward_features(x), pre_logits=True)
    assert logits.shape == (2, ARCHS[name]) and torch.isfinite(logits).all()
    assert feats.shape == (2, model.num_features)
    assert model.num_classes == ARCHS[name]
    assert model.lipschitz_upper_bound() is None and model.feature_lipschitz_upper_bound() is None
    assert model.pretrained_cfg["architecture"] == name
    n_params = model.num_params()
    assert 1_000_000 < n_params <= 2_500_000
    path = tmp_path / "model.safetensors"
    save_file({k: v.contiguous() for k, v in model.state_dict().items()}, str(path))
    assert os.path.getsize(path) <= 10 * 1024 * 1024


def test_cifar100_bodies_equal_cifar10_bodies(models):
    """The 100-class variants differ only in the head, so the block tests below cover them."""
    def shapes(m):
        return {k: v.shape for k, v in m.state_dict().items() if not k.startswith("head.")}

    for family in ("hamnet", "vpnet"):
        a, b = models[f"{family}_cifar10"], models[f"{family}_cifar100"]
        assert shapes(a) == shapes(b)
        assert [(n, type(m)) for n, m, _ in a.structure_blocks()] == [(n, type(m)) for n, m, _ in b.structure_blocks()]


@pytest.mark.parametrize("name", ["hamnet_cifar10", "vpnet_cifar10"])
def test_every_block_is_structured_and_invertible_float64(models, name):
    model = models[name]
    blocks = model.structure_blocks()
    kind = "symplectic" if name.startswith("hamnet") else "volume"
    cls = HamiltonianBlock if kind == "symplectic" else VolumePreservingBlock
    assert len(blocks) == sum(isinstance(m, cls) for m in model.modules()) >= 6
    gen = torch.Generator().manual_seed(1)
    for bname, block, k in blocks:
        assert k == kind
        block = block.double()
        try:
            with torch.no_grad():  # a trained step can be large: test beyond the initial 0.2
                block.step.fill_(0.5 + torch.rand((), generator=gen).item())
            x = block.sample_input(spatial=2, dtype=torch.float64, generator=gen)
            jac = block_jacobian(block, x)
            err = symplectic_error(jac) if kind == "symplectic" else volume_error(jac)
            assert err <= STRUCT_TOL, (bname, err)
            with torch.no_grad():
                y = block(x)
                assert (block.inverse(y) - x).abs().max().item() <= INVERSE_TOL64, bname
        finally:
            block.float()


@pytest.mark.parametrize("name", ["hamnet_cifar10", "vpnet_cifar10"])
def test_every_block_inverse_float32_cifar_sized(models, name):
    """On the activations a CIFAR image actually produces, stage by stage (32x32, 16x16, 8x8)."""
    model = models[name].eval()
    checked = 0
    with torch.no_grad():
        x = model.stem((torch.rand(4, 3, 32, 32) - model.mean) / model.std)
        for layer in model.stages.modules():
            if hasattr(layer, "inverse"):
                y = layer(x)
                assert (y - x).abs().max() > 1e-3
                assert (layer.inverse(y) - x).abs().max().item() <= INVERSE_TOL32
                x, checked = y, checked + 1
            elif isinstance(layer, torch.nn.Conv2d):
                x = layer(x)
    assert checked == len(model.structure_blocks())


def test_reset_classifier_and_kwargs():
    model = dsnet_zoo.create("vpnet_cifar10", widths=(8, 16), depths=(1, 2))
    assert [k for _, _, k in model.structure_blocks()] == ["volume"] * 3
    model.reset_classifier(7)
    assert model(torch.rand(1, 3, 32, 32)).shape == (1, 7)
    with pytest.raises(ValueError, match="even"):
        dsnet_zoo.create("hamnet_cifar10", widths=(7,), depths=(1,))
