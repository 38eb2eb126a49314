"""timm and torch.hub see the same architectures as dsnet_zoo, with no name taken from timm."""
from __future__ import annotations

import importlib.util

import pytest
import timm
import torch

import dsnet_zoo
from dsnet_zoo import registry

from conftest import REPO_ROOT


def _hubconf():
    spec = importlib.util.spec_from_file_location("dsnet_zoo_hubconf", REPO_ROOT / "hubconf.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def test_every_architecture_is_a_timm_model_with_the_same_weights():
    ours = dsnet_zoo.list_models()
    assert ours and set(ours) <= set(timm.list_models())
    assert set(dsnet_zoo.list_pretrained()) <= set(timm.list_models(pretrained=True))
    for name in ours:
        torch.manual_seed(0)
        a = dsnet_zoo.create(name)
        torch.manual_seed(0)
        b = timm.create_model(name)
        assert type(a) is type(b)
        sa, sb = a.state_dict(), b.state_dict()
        assert sa.keys() == sb.keys() and all(torch.equal(sa[k], sb[k]) for k in sa)


def test_names_colliding_with_timm_are_refused():
    def resnet18(pretrained=False, **kwargs):
        raise AssertionError("never built")

    with pytest.raises(RuntimeError, match="collides with timm"):
        registry.register_model(family="x")(resnet18)
    assert "resnet18" not in dsnet_zoo.list_models()
    assert timm.create_model("resnet18").__class__.__module__.startswith("timm")


def test_hubconf_has_one_documented_entry_point_per_architecture():
    hubconf = _hubconf()
    assert set(hubconf.dependencies) >= {"torch", "timm", "huggingface_hub", "safetensors"}
    public = sorted(n for n in vars(hubconf) if not n.startswith("_") and callable(getattr(hubconf, n)))
    assert public == dsnet_zoo.list_models()
    for name in public:
        assert name in getattr(hubconf, name).__doc__


def test_torch_hub_load_local_matches_create():
    name = dsnet_zoo.list_models()[0]
    torch.manual_seed(0)
    a = dsnet_zoo.create(name)
    torch.manual_seed(0)
    b = torch.hub.load(str(REPO_ROOT), name, source="local", trust_repo=True)
    assert type(a) is type(b)
    assert all(torch.equal(x, y) for x, y in zip(a.state_dict().values(), b.state_dict().values()))
