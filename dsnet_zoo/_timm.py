"""Make every dsnet_zoo architecture a timm model.

After ``import dsnet_zoo``, ``timm.create_model(NAME[.TAG], pretrained=True)`` and
``timm.create_model('hf-hub:ORG/REPO')`` go through :func:`dsnet_zoo.create`, so they give the same
weights, the same sha256 check and the same strict loading. timm is optional: without it this
module does nothing.
"""
from __future__ import annotations

import dataclasses
import sys
from typing import Any

from . import registry
from ._api import create
from .hub.repo import read_hub_folder
from .hub.weights import WeightsCfg
from .layers.hamiltonian import HamiltonianBlock
from .layers.caching import CachedModule
from .layers.volume import VolumePreservingBlock
from .models.lipnet_paper import PaperBlock

_registered: set[str] = set()


def _timm_registry():
    try:  # timm stays in functions: optional, seconds to import, and a broken one only disables the bridge
        from timm.models import _registry as timm_registry
        from timm.models._pretrained import PretrainedCfg
    except Exception:  # timm missing or broken (e.g. a torchvision that cannot import)
        return None, None
    return timm_registry, PretrainedCfg


# pretrained_cfg_overlay keys that name another source of weights than the tag's registered file
_SOURCE_KEYS = ("file", "url", "state_dict", "hf_hub_id", "hf_hub_filename")


def _entrypoint(arch: str):
    def entry(pretrained: bool = False, pretrained_cfg: Any = None, pretrained_cfg_overlay: Any = None,
              cache_dir: Any = None, pretrained_model_args: Any = None, features_only: bool = False,
              out_indices: Any = None, feature_cls: Any = None, feature_cfg: Any = None, **kwargs: Any):
        tag = ""
        weights = None
        if isinstance(pretrained_cfg, str):
            tag = pretrained_cfg
        elif pretrained_cfg is not None:
            cfg = pretrained_cfg if isinstance(pretrained_cfg, dict) else pretrained_cfg.to_dict()
            source = cfg.get("source")
            if source == "hf-hub" and pretrained:
                repo, _, rev = cfg["hf_hub_id"].partition("@")
                weights = WeightsCfg.from_dict({**cfg, "hf_hub_id": repo, "revision": rev or cfg.get("revision"),
                                                "tag": cfg.get("tag") or "hf-hub"})
            elif source == "local-dir" and pretrained:
                # the folder's file, once its sha256 is the one the folder's config.json records; the cfg
                # (model_args, num_classes, metadata) is the folder's too
                _, weights, kwargs["checkpoint_path"] = read_hub_folder(cfg["file"])
                pretrained = False
            else:
                tag = cfg.get("tag") or ""
        overlay = dict(pretrained_cfg_overlay or {})
        sources = {k: overlay.pop(k) for k in _SOURCE_KEYS if overlay.get(k) is not None}
        if pretrained and sources:
            if set(sources) != {"file"}:
                raise ValueError(
                    f"pretrained_cfg_overlay for {arch}: dsnet_zoo loads weights from a file it can hash and load "
                    f"strictly; give file=PATH (.safetensors, .pt or .pth) instead of {sorted(sources)}, or use "
                    "timm.create_model('hf-hub:ORG/REPO') for a repo written by `dsnet-zoo publish`")
            # timm's way of loading a local file into the cfg's architecture: a strict, hashed checkpoint load
            kwargs["checkpoint_path"] = sources["file"]
            pretrained, weights = False, None
        name = f"{arch}.{tag}" if tag else arch
        if weights is not None:
            model = create(name, pretrained=True, weights=weights, **kwargs)
        else:
            model = create(name, pretrained=pretrained, **kwargs)
        if overlay:  # metadata (mean, std, crop_pct, ...) replaces the cfg's values, as in timm
            model.pretrained_cfg = {**model.pretrained_cfg, **overlay}
        if features_only:
            return _features(arch, model, out_indices, feature_cls, dict(feature_cfg or {}))
        return model

    entry.__name__ = arch
    entry.__qualname__ = arch
    entry.__module__ = __name__
    entry.__doc__ = f"dsnet_zoo architecture {arch!r} (see dsnet_zoo.model_info({arch!r}))."
    return entry


def _features(arch: str, model: Any, out_indices: Any, feature_cls: Any, feature_cfg: dict) -> Any:
    """timm's ``features_only=True``: the model wrapped by timm's FeatureGetterNet, which returns the
    features of ``model.forward_intermediates`` and prunes what follows the last one."""
    from timm.models._features import FeatureGetterNet  # lazy, as in _timm_registry
    from timm.models._builder import pretrained_cfg_for_features

    feature_cls = feature_cfg.pop("feature_cls", feature_cls) or "getter"
    out_indices = feature_cfg.pop("out_indices", out_indices)
    if not hasattr(model, "forward_intermediates"):
        raise ValueError(f"{arch} has no feature maps (it is not an image model): features_only does not apply")
    if feature_cls not in ("getter", FeatureGetterNet):
        # timm's list/dict/hook extractors run the model's child modules one by one and would skip the
        # normalisation each dsnet_zoo model applies to its [0, 1] input first
        raise ValueError(f"{arch} supports features_only with feature_cls='getter' (the default) only, "
                         f"got {feature_cls!r}")
    if out_indices is None:
        out_indices = tuple(range(len(model.feature_info)))
    cfg = model.pretrained_cfg
    features = FeatureGetterNet(model, out_indices=out_indices, **feature_cfg)
    features.pretrained_cfg = pretrained_cfg_for_features(cfg)
    features.default_cfg = features.pretrained_cfg
    return features


def _register_notrace_modules() -> None:
    """Modules timm's torch.fx tracer (feature extraction, ``feature_cls='fx'``) keeps as single calls.

    The constrained maps and steps (CachedModule) cache their certified weights in eval mode and advance a
    training-time normaliser held in buffers: traced through, one mode's branch would be frozen into the
    graph. The Hamiltonian, volume-preserving and paper blocks branch in Python on the shape of their
    state (dense or conv). timm marks its own such modules the same way."""
    from timm.layers import register_notrace_module  # lazy, as in _timm_registry

    for cls in (CachedModule, HamiltonianBlock, VolumePreservingBlock, PaperBlock):
        register_notrace_module(cls)


default_cfgs: dict[str, Any] = {}  # read by timm's register_model


def register_arch(arch: str) -> None:
    timm_registry, PretrainedCfg = _timm_registry()
    if timm_registry is None or arch in _registered:
        return
    existing = timm_registry._model_entrypoints.get(arch)
    if existing is not None and getattr(existing, "__module__", "") != __name__:
        raise RuntimeError(f"dsnet_zoo architecture {arch!r} collides with timm's own model of that name; "
                           "rename the dsnet_zoo architecture")
    cfgs = registry.get_pretrained_cfgs(arch)
    if cfgs:
        grouped = {f"{arch}.{t}": PretrainedCfg(**_timm_fields(c.timm_pretrained_cfg(), PretrainedCfg))
                   for t, c in cfgs.items()}
    else:
        # no weights: the architecture's own defaults (input size, classes, inputs in [0, 1]), not timm's
        # ImageNet ones
        info = registry.arch_info(arch)
        arch_cfg = WeightsCfg(tag="", num_classes=info["num_classes"], input_size=info["input_size"])
        grouped = {arch: PretrainedCfg(**_timm_fields(arch_cfg.timm_pretrained_cfg(), PretrainedCfg))}
    default_cfgs.update(timm_registry.generate_default_cfgs(grouped))
    fn = _entrypoint(arch)
    setattr(sys.modules[__name__], arch, fn)
    timm_registry.register_model(fn)
    _registered.add(arch)


def _timm_fields(d: dict, cls) -> dict:
    names = {f.name for f in dataclasses.fields(cls)}
    out = {k: (tuple(v) if isinstance(v, list) else v) for k, v in d.items() if k in names}
    out.pop("architecture", None)
    out.pop("tag", None)
    return out


def register_all() -> None:
    """Register every dsnet_zoo architecture (and every later one) with timm."""
    if _timm_registry()[0] is None:
        return
    _register_notrace_modules()
    for arch in registry.list_models():
        register_arch(arch)
    registry.add_register_listener(register_arch)
    registry.add_pretrained_listener(lambda arch, cfg: _refresh_arch(arch))


def _refresh_arch(arch: str) -> None:
    """A tag registered after import: tell timm it exists so list_models(pretrained=True) shows it."""
    timm_registry, PretrainedCfg = _timm_registry()
    if timm_registry is None or arch not in _registered:
        return
    for tag, c in registry.get_pretrained_cfgs(arch).items():
        key = f"{arch}.{tag}"
        if key in timm_registry._model_pretrained_cfgs:
            continue
        pc = PretrainedCfg(**_timm_fields(c.timm_pretrained_cfg(), PretrainedCfg))
        timm_registry._model_pretrained_cfgs[key] = pc
        timm_registry._model_with_tags[arch].append(key)
        if pc.has_weights:
            timm_registry._model_has_pretrained.add(arch)
