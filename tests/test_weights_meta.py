"""Every pretrained tag carries complete metadata, and it agrees with the model it builds."""
from __future__ import annotations

import pytest

import dsnet_zoo
from dsnet_zoo import registry

REQUIRED = ("hf_hub_id", "filename", "sha256", "num_classes", "input_size", "input_range", "dataset",
            "recipe", "license", "citation", "source")


def _tags():
    return dsnet_zoo.list_pretrained()


def test_there_are_pretrained_tags():
    assert _tags(), "the zoo registers no pretrained weights"


@pytest.mark.parametrize("name", _tags())
def test_tag_metadata_is_complete_and_consistent(name):
    cfg = registry.get_pretrained_cfg(name)
    missing = [k for k in REQUIRED if getattr(cfg, k) in (None, "", {}, ())]
    assert not missing, f"{name} lacks {missing}"
    assert len(cfg.sha256) == 64 and int(cfg.sha256, 16) >= 0
    assert cfg.source in ("dsnet_zoo", "paper-authors")
    if cfg.source == "paper-authors":
        assert "not redistributable" in cfg.license and cfg.origin
    model = dsnet_zoo.create(name)  # architecture only: builds with the tag's model_args
    assert model.pretrained_cfg["sha256"] == cfg.sha256
    if cfg.num_params is not None:
        assert cfg.num_params == sum(p.numel() for p in model.parameters())
    if cfg.num_classes:
        assert getattr(model, "num_classes", cfg.num_classes) == cfg.num_classes
