"""Registry: names, tags, wildcards, errors that point to the right name."""
from __future__ import annotations

import pytest
import torch

import dsnet_zoo
from dsnet_zoo import registry
from dsnet_zoo.hub import WeightsCfg
from dsnet_zoo.models import ZooClassifier


def test_every_registered_architecture_builds_and_follows_the_timm_interface():
    names = dsnet_zoo.list_models()
    assert names, "no architecture registered"
    for name in names:
        model = dsnet_zoo.create(name)
        assert model.pretrained_cfg["architecture"] == name
        if not isinstance(model, ZooClassifier):
            continue
        c, h, w = model.pretrained_cfg["input_size"]
        x = torch.rand(2, c, h, w)
        feats = model.forward_features(x)
        pre = model.forward_head(feats, pre_logits=True)
        assert pre.shape == (2, model.num_features)
        logits = model.forward_head(feats)
        assert logits.shape == (2, model.num_classes)
        torch.testing.assert_close(logits, model(x))
        assert model.get_classifier() is model.head


def test_list_models_wildcards_and_families(scratch_arch):
    assert scratch_arch in dsnet_zoo.list_models("scratch_*")
    assert scratch_arch not in dsnet_zoo.list_models("scratch_*", exclude_filters=[scratch_arch])
    assert dsnet_zoo.list_models("scratch_*", family="nope") == []
    assert scratch_arch not in dsnet_zoo.list_models("scratch_*", pretrained=True)


def test_tags_and_default_tag(scratch_arch):
    registry.register_pretrained(scratch_arch, WeightsCfg(tag="a", hf_hub_id="x/a", sha256="0" * 64, num_classes=3))
    registry.register_pretrained(scratch_arch, WeightsCfg(tag="b", hf_hub_id="x/b", sha256="1" * 64, num_classes=3))
    assert dsnet_zoo.list_pretrained(f"{scratch_arch}*") == [f"{scratch_arch}.a", f"{scratch_arch}.b"]
    assert registry.get_pretrained_cfg(scratch_arch).tag == "a"
    assert registry.get_pretrained_cfg(f"{scratch_arch}.b").hf_hub_id == "x/b"
    info = dsnet_zoo.model_info(scratch_arch)
    assert info["default_tag"] == "a" and set(info["pretrained"]) == {"a", "b"}
    assert info["num_params"] == sum(p.numel() for p in dsnet_zoo.create(scratch_arch).parameters())


def test_unknown_names_list_the_closest(scratch_arch):
    with pytest.raises(dsnet_zoo.UnknownModelError, match=scratch_arch):
        dsnet_zoo.create(scratch_arch[:-1] + "x")
    with pytest.raises(dsnet_zoo.UnknownModelError, match="no pretrained weights"):
        dsnet_zoo.create(scratch_arch, pretrained=True)
    registry.register_pretrained(scratch_arch, WeightsCfg(tag="good", hf_hub_id="x/g", num_classes=3))
    with pytest.raises(dsnet_zoo.UnknownModelError, match=r"Tags of .*: good"):
        dsnet_zoo.create(f"{scratch_arch}.goot", pretrained=True)
    with pytest.raises(dsnet_zoo.UnknownModelError):
        dsnet_zoo.create(f"{scratch_arch}.goot")  # an unknown tag is an error even without weights


def test_duplicates_are_refused(scratch_arch):
    def again(pretrained=False, **kw):
        raise AssertionError("never called")

    again.__name__ = scratch_arch
    with pytest.raises(ValueError, match="already registered"):
        registry.register_model(family="scratch")(again)
    registry.register_pretrained(scratch_arch, WeightsCfg(tag="t", hf_hub_id="x/t"))
    with pytest.raises(ValueError, match="already registered"):
        registry.register_pretrained(scratch_arch, WeightsCfg(tag="t", hf_hub_id="x/t2"))
    with pytest.raises(ValueError, match="must not contain"):
        registry.register_pretrained(scratch_arch, WeightsCfg(tag="a.b"))
