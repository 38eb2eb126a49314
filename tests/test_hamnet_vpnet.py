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
    """On the activations a CIFAR image actually produces, stage by stage (16x16, 8x8)."""
    model = models[name].eval()
    checked = 0
    with torch.no_grad():
        x = (torch.rand(4, 3, 32, 32) - model.mean) / model.std
        for stage in model.stages:
            for layer in stage.children():
                y = layer(x)
                if getattr(layer, "kind", None) is not None:
                    assert (y - x).abs().max() > 1e-3
                    assert (layer.inverse(y) - x).abs().max().item() <= INVERSE_TOL32
                    checked += 1
                x = y
    assert checked == len(model.structure_blocks())


def _randomise_norms(model, gen):
    """Trained batch norms are not the identity: give every one random statistics and affine parameters."""
    for m in model.modules():
        if isinstance(m, torch.nn.BatchNorm2d):
            with torch.no_grad():
                m.running_mean.copy_(torch.randn(m.num_features, generator=gen))
                m.running_var.copy_(torch.rand(m.num_features, generator=gen) + 0.5)
                m.weight.copy_(torch.rand(m.num_features, generator=gen) + 0.5)
                m.bias.copy_(torch.randn(m.num_features, generator=gen))


@pytest.mark.parametrize("name", ARCHS)
def test_model_inverse_reconstructs_images_float64(name):
    """The whole feature extractor is invertible in eval mode: inverse(forward_features(x)) == x."""
    torch.manual_seed(3)
    model = dsnet_zoo.create(name).double().eval()
    gen = torch.Generator().manual_seed(4)
    _randomise_norms(model, gen)
    for _, block, _ in model.structure_blocks():
        with torch.no_grad():
            block.step.fill_(0.3 + torch.rand((), generator=gen).item())
    x = torch.rand(3, 3, 32, 32, dtype=torch.float64, generator=gen)
    with torch.no_grad():
        feats = model.forward_features(x)
        assert feats.shape == (3, model.num_features, 8, 8)
        rec = model.inverse(feats)
    rel = ((rec - x).norm() / x.norm()).item()
    assert rel <= 1e-12, rel
    # a different feature map gives different images: the map is not trivially the identity
    assert ((model.inverse(feats * 1.01) - x).norm() / x.norm()).item() > 1e-4


def test_model_inverse_refuses_training_mode_and_bad_features(models):
    model = models["hamnet_cifar10"].train()
    feats = torch.zeros(1, model.num_features, 8, 8)
    with pytest.raises(RuntimeError, match="eval mode"):
        model.inverse(feats)
    model.eval()
    with pytest.raises(ValueError, match="forward_features"):
        model.inverse(torch.zeros(1, 3, 32, 32))


def test_injective_lift_left_inverse_and_rank_check():
    from dsnet_zoo.models.hamnet import InjectiveLift

    torch.manual_seed(0)
    lift = InjectiveLift(12, 64).double()
    x = torch.randn(2, 12, 5, 5, dtype=torch.float64)
    with torch.no_grad():
        assert (lift.inverse(lift(x)) - x).abs().max().item() <= 1e-12
        lift.weight[:, 0] = lift.weight[:, 1]  # two equal columns: rank-deficient
        with pytest.raises(ValueError, match="rank-deficient"):
            lift.inverse(lift(x))
    with pytest.raises(ValueError, match="out_channels >= in_channels"):
        InjectiveLift(16, 8)


def test_reset_classifier_and_kwargs():
    model = dsnet_zoo.create("vpnet_cifar10", widths=(16, 64), depths=(1, 2))
    assert [k for _, _, k in model.structure_blocks()] == ["volume"] * 3
    model.reset_classifier(7)
    assert model(torch.rand(1, 3, 32, 32)).shape == (1, 7)
    with pytest.raises(ValueError, match="even"):
        dsnet_zoo.create("hamnet_cifar10", widths=(15,), depths=(1,))
    with pytest.raises(ValueError, match="injective"):
        dsnet_zoo.create("hamnet_cifar10", widths=(16, 32), depths=(1, 1))


def test_max_pool_head_and_its_export():
    from dsnet_zoo.export import export_plain

    torch.manual_seed(0)
    model = dsnet_zoo.create("hamnet_cifar10", widths=(16, 64), depths=(1, 1), global_pool="max").eval()
    x = torch.rand(2, 3, 32, 32)
    with torch.no_grad():
        feats = model.forward_features(x)
        torch.testing.assert_close(model(x), model.head(feats.amax(dim=(2, 3))))
        assert not torch.allclose(model(x), model.head(feats.mean(dim=(2, 3))))
        torch.testing.assert_close(export_plain(model)(x), model(x))


@pytest.mark.parametrize("name", dsnet_zoo.list_pretrained("hamnet_*") + dsnet_zoo.list_pretrained("vpnet_*"))
def test_shipped_weights_are_structured_invertible_and_meet_their_recorded_metrics(name, full_data_dir):
    """Every committed HamNet / VPNet tag (hub/, sha256-checked): in float64 each block of the trained weights is
    symplectic / volume-preserving and exactly invertible, the model reconstructs real test images from their
    features, and the clean accuracy on the full real test set is the recorded one."""
    from dsnet_zoo.data import load_dataset
    from dsnet_zoo.evaluation import evaluate
    from dsnet_zoo.registry import get_pretrained_cfg
    from dsnet_zoo.verify import verify_model

    cfg = get_pretrained_cfg(name, required=True)
    assert cfg.source == "dsnet_zoo" and cfg.sha256
    model = dsnet_zoo.create(name, pretrained=True)
    images = load_dataset(cfg.dataset, "test", n=8, data_dir=full_data_dir)
    report = verify_model(model, name, spatial=2, images=images.float_batch(0, 8)[0],
                          images_label=images.info["description"])
    assert report.passed, [c.label for c in report.failures()]
    kind = "symplectic" if name.startswith("hamnet") else "volume"
    for claim in (kind, "inverse", "model_inverse"):
        assert report.claims[claim].blocks and report.claims[claim].value <= 1e-10, (claim, report.claims[claim].value)
    record = evaluate(name, cfg.dataset, data_dir=full_data_dir, metrics=["clean"], progress=False)
    assert record["dataset"]["n"] == len(load_dataset(cfg.dataset, "test", data_dir=full_data_dir))
    assert 100 * record["metrics"]["clean"]["accuracy"] == pytest.approx(cfg.metrics[cfg.dataset]["clean"], abs=0.05)
