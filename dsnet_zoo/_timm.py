"""Make every dsnet_zoo architecture a timm model.

After ``import dsnet_zoo``, ``timm.create_model(NAME[.TAG], pretrained=True)`` and
``timm.create_model('hf-hub:ORG/REPO')`` go through :func:`dsnet_zoo.create`, so they give the same
weights, the same sha256 check and the same strict loading. timm is optional: without it this
module does nothing.
"""
from __future__ import annotations

import sys
from typing import Any

from . import registry

_registered: set[str] = set()


def _timm_registry():
    try:
        from timm.models import _registry as timm_registry
        from timm.models._pretrained import PretrainedCfg
    except Exception:  # timm missing or broken (e.g. a torchvision that cannot import)
        return None, None
    return timm_registry, PretrainedCfg


def _entrypoint(arch: str):
    def entry(pretrained: bool = False, pretrained_cfg: Any = None, pretrained_cfg_overlay: Any = None,
              cache_dir: Any = None, pretrained_model_args: Any = None, **kwargs: Any):
        from ._api import create
        from .hub.weights import WeightsCfg

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
                kwargs["checkpoint_path"] = f"{cfg['file']}/model.safetensors"
                pretrained = False
            else:
                tag = cfg.get("tag") or ""
        name = f"{arch}.{tag}" if tag else arch
        if weights is not None:
            return create(name, pretrained=True, weights=weights, **kwargs)
        return create(name, pretrained=pretrained, **kwargs)

    entry.__name__ = arch
    entry.__qualname__ = arch
    entry.__module__ = __name__
    entry.__doc__ = f"dsnet_zoo architecture {arch!r} (see dsnet_zoo.model_info({arch!r}))."
    return entry


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
        grouped = {arch: PretrainedCfg()}
    default_cfgs.update(timm_registry.generate_default_cfgs(grouped))
    fn = _entrypoint(arch)
    setattr(sys.modules[__name__], arch, fn)
    timm_registry.register_model(fn)
    _registered.add(arch)


def _timm_fields(d: dict, cls) -> dict:
    import dataclasses

    names = {f.name for f in dataclasses.fields(cls)}
    out = {k: (tuple(v) if isinstance(v, list) else v) for k, v in d.items() if k in names}
    out.pop("architecture", None)
    out.pop("tag", None)
    return out


def register_all() -> None:
    """Register every dsnet_zoo architecture (and every later one) with timm."""
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
