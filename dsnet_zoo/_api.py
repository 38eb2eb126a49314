"""The public entry points: ``create`` and ``model_info``."""
from __future__ import annotations

import os
from typing import Any

from torch import nn

from .hub.repo import read_hub_config
from .registry import arch_info, get_pretrained_cfg, get_pretrained_cfgs, model_entrypoint, split_model_name

__all__ = ["create", "model_info"]


def create(name: str, pretrained: bool = False, num_classes: int | None = None,
           checkpoint_path: str | os.PathLike | None = None, **kwargs: Any) -> nn.Module:
    """Build a registered model, optionally with weights.

    ``name`` is ``arch`` or ``arch.tag``; ``pretrained=True`` loads the tag's weights (the default
    tag for a bare ``arch``); ``checkpoint_path`` loads your own file instead. ``num_classes``
    must match the weights when they are loaded. Other keyword arguments go to the architecture.

    ``name`` may also be ``'hf-hub:ORG/REPO[@REVISION]'``: a repo written by ``dsnet-zoo publish``;
    its ``config.json`` names the architecture and the sha256 of its weights.
    """
    if isinstance(name, str) and name.startswith("hf-hub:"):
        arch, weights = read_hub_config(name[len("hf-hub:"):])
        return model_entrypoint(arch)(pretrained=pretrained, weights=weights, num_classes=num_classes,
                                      checkpoint_path=checkpoint_path, **kwargs)
    arch, tag = split_model_name(name)
    fn = model_entrypoint(arch)
    if tag:
        get_pretrained_cfg(name)  # raises for an unknown tag, listing the known ones
    return fn(pretrained=pretrained, pretrained_tag=tag, num_classes=num_classes,
              checkpoint_path=checkpoint_path, **kwargs)


def model_info(name: str) -> dict[str, Any]:
    """Family, dataset, parameter count and pretrained tags (with their metadata) of a model."""
    arch, tag = split_model_name(name)
    fn = model_entrypoint(arch)
    if tag:
        get_pretrained_cfg(name)
    info = {"name": arch, **arch_info(arch)}
    model = fn(pretrained=False, pretrained_tag=tag)
    info["num_params"] = sum(p.numel() for p in model.parameters())
    info["num_classes"] = getattr(model, "num_classes", None)
    info["num_features"] = getattr(model, "num_features", None)
    bound = getattr(model, "lipschitz_upper_bound", None)
    info["certified"] = bool(bound is not None and bound() is not None)
    cfgs = get_pretrained_cfgs(arch)
    info["default_tag"] = next(iter(cfgs), None)
    info["pretrained"] = {t: c.to_dict() for t, c in cfgs.items() if not tag or t == tag}
    return info
