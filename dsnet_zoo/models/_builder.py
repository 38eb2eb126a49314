"""``build_model``: the one path from an entrypoint's arguments to a model with (optional) weights."""
from __future__ import annotations

import os
from dataclasses import replace
from typing import Any, Callable

import torch
from torch import nn

from ..hub import WeightsCfg, WeightsError, load_weights
from ..registry import arch_info, get_pretrained_cfg
from ._base import ZooClassifier

__all__ = ["build_model"]


def build_model(model_cls: Callable[..., nn.Module], arch: str, pretrained: bool = False, *,
                pretrained_tag: str = "", num_classes: int | None = None,
                checkpoint_path: str | os.PathLike | None = None,
                default_num_classes: int | None = None, weights: WeightsCfg | None = None,
                input_size: tuple[int, ...] | None = None, device: torch.device | str | None = None,
                dtype: torch.dtype | None = None, **model_kwargs: Any) -> nn.Module:
    """Build ``model_cls`` for architecture ``arch`` and load weights when asked.

    - ``pretrained=True`` loads the registered tag (``pretrained_tag`` or the default tag).
    - ``checkpoint_path`` loads that file instead (strict, sha256 recorded).
    - ``num_classes`` must agree with the weights' when weights are loaded: a silently replaced
      head would void the weights' metrics and certificate; call ``reset_classifier`` explicitly.
    - ``weights`` is a cfg not in the registry (e.g. read from a Hub repo's ``config.json``).
    - ``default_num_classes`` and ``input_size`` default to what ``register_model`` recorded for
      ``arch``; ``input_size`` is used when no weights cfg gives one.
    - ``device`` and ``dtype`` (timm's factory arguments) move the finished model, weights loaded.
    """
    info = arch_info(arch)
    if default_num_classes is None:
        default_num_classes = info["num_classes"]
    if input_size is None:
        input_size = info["input_size"]
    name = f"{arch}.{pretrained_tag}" if pretrained_tag else arch
    if weights is not None:
        cfg = replace(weights, architecture=arch)
    else:
        cfg = get_pretrained_cfg(name, required=pretrained and checkpoint_path is None)
    if cfg is not None:
        model_kwargs = {**dict(cfg.model_args), **model_kwargs}
    weights_classes = cfg.num_classes if cfg is not None else None
    if pretrained and checkpoint_path is None and num_classes is not None and weights_classes is not None \
            and num_classes != weights_classes:
        raise WeightsError(
            f"{cfg.name} was trained with num_classes={weights_classes}, but num_classes={num_classes} "
            "was requested. Load the weights as they are, then call model.reset_classifier("
            f"{num_classes}) to train a new head (this voids the weights' metrics and certificate).")
    if num_classes is None:
        num_classes = weights_classes if weights_classes is not None else default_num_classes
    if num_classes is None:
        raise ValueError(f"{arch} needs num_classes")
    model = model_cls(num_classes=num_classes, **model_kwargs)

    meta: dict[str, Any] = (cfg if cfg is not None else WeightsCfg(tag="", input_size=tuple(input_size))
                             ).timm_pretrained_cfg()
    meta["architecture"] = arch
    meta["num_classes"] = num_classes
    meta["model_args"] = {k: v for k, v in model_kwargs.items()}
    if isinstance(model, ZooClassifier):
        meta.update(model._cfg_layout())
    if pretrained or checkpoint_path is not None:
        provenance = load_weights(model, cfg if pretrained else None, checkpoint_path=checkpoint_path)
        meta["loaded_from"] = provenance
        model.eval()
    else:
        meta["loaded_from"] = None
    model.pretrained_cfg = meta
    if device is not None or dtype is not None:
        model.to(device=device, dtype=dtype)
    return model
