"""Every pretrained tag carries complete metadata, and it agrees with the model it builds."""
from __future__ import annotations

import re
from pathlib import Path

import pytest

import dsnet_zoo
from dsnet_zoo import registry

HUB = Path(__file__).resolve().parents[1] / "hub"

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


def _retired():
    return [f"{a}.{t}" for a, tags in registry._retired.items() for t in tags]


@pytest.mark.parametrize("name", _retired())
def test_retired_tags_keep_their_record_and_lead_to_hosted_weights(name):
    arch, tag = registry.split_model_name(name)
    cfg, successor = registry._retired[arch][tag]
    missing = [k for k in REQUIRED if getattr(cfg, k) in (None, "", {}, ())]
    assert not missing, f"{name} lacks {missing}"
    assert name not in dsnet_zoo.list_pretrained() and not (HUB / cfg.hf_hub_id).exists()
    with pytest.raises(dsnet_zoo.RetiredWeightsError, match=re.escape(f"{successor} continues from them")):
        dsnet_zoo.create(name, pretrained=True)
    # the chain of successors ends at hosted weights, each link's recipe starting from the one before
    prev = name
    while True:
        nxt = registry.get_pretrained_cfg(successor, retired=True)
        assert nxt.recipe["init_from"] == prev
        if successor in dsnet_zoo.list_pretrained():
            break
        prev, successor = successor, registry._retired[arch][nxt.tag][1]
    assert (HUB / registry.get_pretrained_cfg(successor).hf_hub_id).is_dir()
    # its model card (from its measured results) says so
    assert f"**Retired weights**: no longer hosted; `{registry.retired_successor(name)}`" in \
        (HUB.parent / "model_cards" / f"{name}.md").read_text()
