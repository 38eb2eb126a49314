"""Model registry: architectures keyed by name, each with its tagged pretrained weights.

A model name is ``arch`` or ``arch.tag``. ``arch`` names a registered entrypoint (a function
``fn(pretrained=False, **kwargs) -> nn.Module``); ``tag`` names one set of pretrained weights
(a :class:`dsnet_zoo.hub.WeightsCfg`). The first tag registered for an architecture that has
weights is its default, as in timm.

Retired weights (:func:`register_retired`) keep their record (recipe, sha256, measurements) but are no longer
hosted: the zoo keeps only the last weights of a chain of warm restarts (recipes with ``init_from``) in its hub
folder. They are not listed, loading them raises :class:`RetiredWeightsError` with the command that retrains
them, and a recipe that starts from them retrains them first (:mod:`dsnet_zoo.training.loop`).

Unlike timm, registering a name twice is an error: a silently replaced entrypoint would make
``create`` return a different model than the one whose weights and metrics are on record.
"""
from __future__ import annotations

import difflib
import fnmatch
from collections import OrderedDict
from dataclasses import replace
from typing import TYPE_CHECKING, Callable, Iterable

if TYPE_CHECKING:  # annotations only: the registry stores cfgs and never builds one, so it imports nothing of
    # the hub at run time and dsnet_zoo.hub (whose repo writer reads arch_info) can import it at module level
    from .hub import WeightsCfg

__all__ = [
    "register_model",
    "register_pretrained",
    "register_retired",
    "retired_successor",
    "split_model_name",
    "list_models",
    "list_pretrained",
    "is_model",
    "model_entrypoint",
    "get_pretrained_cfg",
    "get_pretrained_cfgs",
    "arch_info",
    "UnknownModelError",
    "RetiredWeightsError",
]

_entrypoints: "OrderedDict[str, Callable]" = OrderedDict()
_arch_meta: dict[str, dict] = {}
_pretrained: dict[str, "OrderedDict[str, WeightsCfg]"] = {}
_retired: dict[str, dict[str, tuple[WeightsCfg, str]]] = {}  # arch -> tag -> (cfg, the tag continuing from it)
_register_listeners: list[Callable[[str], None]] = []
_pretrained_listeners: list[Callable[[str, WeightsCfg], None]] = []


def add_register_listener(fn: Callable[[str], None]) -> None:
    """Call ``fn(arch)`` for every architecture registered from now on (used by the timm bridge)."""
    _register_listeners.append(fn)


def add_pretrained_listener(fn: Callable[[str, WeightsCfg], None]) -> None:
    """Call ``fn(arch, cfg)`` for every pretrained tag registered from now on."""
    _pretrained_listeners.append(fn)


class UnknownModelError(ValueError):
    """An architecture or tag that is not registered. The message lists the closest names."""


class RetiredWeightsError(UnknownModelError):
    """A tag whose weights are retired (:func:`register_retired`): on record, no longer hosted. The message
    says which tag continues from them and how to retrain them."""


def split_model_name(name: str) -> tuple[str, str]:
    """Split ``'arch.tag'`` into ``('arch', 'tag')``; ``'arch'`` gives ``('arch', '')``."""
    if not isinstance(name, str) or not name:
        raise UnknownModelError(f"model name must be a non-empty string, got {name!r}")
    arch, _, tag = name.partition(".")
    return arch, tag


def register_model(fn: Callable | None = None, *, family: str, dataset: str | None = None,
                   pretrained: Iterable[WeightsCfg] = (), description: str = "", num_classes: int | None = None,
                   input_size: tuple[int, ...] = (3, 32, 32)):
    """Register an architecture entrypoint under its function name.

    Usable as ``@register_model(family='lipnet', dataset='cifar10', num_classes=10, pretrained=[...])``.
    ``pretrained`` lists the tagged weights (each ``WeightsCfg.tag`` must be set); the first is the
    default tag. ``family`` and ``dataset`` are reported by :func:`arch_info` and filter listings.
    ``num_classes`` and ``input_size`` are the architecture's defaults (what ``build_model`` builds
    without weights, and what timm's registry reports before a model is built).
    """

    def _register(f: Callable) -> Callable:
        name = f.__name__
        if "." in name:
            raise ValueError(f"architecture name {name!r} must not contain '.' (it separates the tag)")
        if name in _entrypoints:
            raise ValueError(
                f"architecture {name!r} is already registered (by {_entrypoints[name].__module__}); "
                "names must be unique, pick another name")
        _entrypoints[name] = f
        _arch_meta[name] = {
            "family": family,
            "dataset": dataset,
            "description": description or (f.__doc__ or "").strip().split("\n")[0],
            "module": f.__module__,
            "num_classes": num_classes,
            "input_size": tuple(input_size),
        }
        _pretrained[name] = OrderedDict()
        _retired[name] = {}
        try:
            for cfg in pretrained:
                register_pretrained(name, cfg)
            for listener in _register_listeners:
                listener(name)
        except Exception:
            # a refused registration (bad tag, a name timm already uses) leaves no trace
            _entrypoints.pop(name, None)
            _arch_meta.pop(name, None)
            _pretrained.pop(name, None)
            _retired.pop(name, None)
            raise
        return f

    if fn is not None:
        return _register(fn)
    return _register


def register_pretrained(arch: str, cfg: WeightsCfg) -> WeightsCfg:
    """Add one tagged set of weights to a registered architecture and return the stored cfg.

    This is also how users make their own weights (for example published with
    ``dsnet-zoo publish``) loadable by ``create('arch.tag', pretrained=True)``.
    """
    if arch not in _entrypoints:
        raise UnknownModelError(_unknown_message("architecture", arch, list(_entrypoints)))
    if not cfg.tag:
        raise ValueError(f"WeightsCfg for {arch!r} needs a tag")
    if "." in cfg.tag:
        raise ValueError(f"tag {cfg.tag!r} must not contain '.'")
    if cfg.tag in _pretrained[arch] or cfg.tag in _retired[arch]:
        raise ValueError(f"{arch}.{cfg.tag} is already registered; choose another tag")
    cfg = replace(cfg, architecture=arch)
    _pretrained[arch][cfg.tag] = cfg
    for listener in _pretrained_listeners:
        listener(arch, cfg)
    return cfg


def register_retired(arch: str, cfg: WeightsCfg, *, successor: str) -> WeightsCfg:
    """Keep the record of weights that are no longer hosted and return the stored cfg.

    ``cfg`` is the record as it was registered while hosted (its recipe reruns them; its sha256 and metrics
    are what that run gave); ``successor`` is the registered ``arch.tag`` whose recipe starts from them
    (``init_from``), the reason they were retired rather than dropped; it may be retired itself (a chain of
    warm restarts keeps only its last weights hosted). Retired tags are not listed and do not
    load (:class:`RetiredWeightsError`); ``get_pretrained_cfg(name, retired=True)`` returns them for training.
    """
    if arch not in _entrypoints:
        raise UnknownModelError(_unknown_message("architecture", arch, list(_entrypoints)))
    if not cfg.tag or "." in cfg.tag:
        raise ValueError(f"a retired WeightsCfg for {arch!r} needs a tag without '.', got {cfg.tag!r}")
    if cfg.tag in _pretrained[arch] or cfg.tag in _retired[arch]:
        raise ValueError(f"{arch}.{cfg.tag} is already registered; choose another tag")
    if not cfg.recipe or not cfg.sha256:
        raise ValueError(f"{arch}.{cfg.tag}: only weights with a recorded recipe and sha256 can be retired "
                         "(nothing else could bring them back)")
    s_arch, s_tag = split_model_name(successor)
    if s_arch != arch or (s_tag not in _pretrained[arch] and s_tag not in _retired[arch]):
        raise ValueError(f"successor {successor!r} must be a registered (or retired) tag of {arch}; register it "
                         "first")
    succ = _pretrained[arch][s_tag] if s_tag in _pretrained[arch] else _retired[arch][s_tag][0]
    if (succ.recipe or {}).get("init_from") != f"{arch}.{cfg.tag}":
        raise ValueError(f"successor {successor!r} does not start from {arch}.{cfg.tag} (its recipe's init_from is "
                         f"{(succ.recipe or {}).get('init_from')!r}); only weights another tag continues from are "
                         "retired, any others are removed with their registration")
    cfg = replace(cfg, architecture=arch)
    _retired[arch][cfg.tag] = (cfg, successor)
    return cfg


def retired_successor(name: str) -> str | None:
    """For a retired ``arch.tag``, the registered tag continuing from it; ``None`` for any other name."""
    arch, tag = split_model_name(name)
    entry = _retired.get(arch, {}).get(tag)
    return entry[1] if entry else None


def _hosted_end(name: str) -> str:
    while (nxt := retired_successor(name)) is not None:
        name = nxt
    return name


def _retired_message(arch: str, tag: str) -> str:
    cfg, successor = _retired[arch][tag]
    name = f"{arch}.{tag}"
    return (f"{name} is retired: its weights are on record (recipe, sha256 {cfg.sha256[:12]}..., measurements) "
            f"but no longer hosted; {successor} continues from them"
            + (f" (retired too; {_hosted_end(successor)} is the chain's hosted end)" if split_model_name(successor)[1]
               in _retired[arch] else f" and is hosted (create('{successor}', pretrained=True))")
            + f". `dsnet-zoo train {name} --out DIR` retrains them from "
            f"their recipe (bit for bit on CPU with OMP_NUM_THREADS=1 and the same library versions), and a "
            f"recipe with init_from='{name}' retrains them first by itself.")


def _unknown_message(kind: str, name: str, candidates: list[str]) -> str:
    close = difflib.get_close_matches(name, candidates, n=5, cutoff=0.4)
    hint = f" Closest registered names: {', '.join(close)}." if close else ""
    return (f"unknown {kind} {name!r}.{hint} "
            "Run `dsnet-zoo list` (or dsnet_zoo.list_models()) to see every name.")


def is_model(name: str) -> bool:
    arch, tag = split_model_name(name)
    return arch in _entrypoints and (not tag or tag in _pretrained[arch])


def model_entrypoint(name: str) -> Callable:
    arch, _ = split_model_name(name)
    if arch not in _entrypoints:
        raise UnknownModelError(_unknown_message("model", arch, list_models() + list_pretrained()))
    return _entrypoints[arch]


def get_pretrained_cfgs(arch: str) -> "OrderedDict[str, WeightsCfg]":
    if arch not in _entrypoints:
        raise UnknownModelError(_unknown_message("model", arch, list(_entrypoints)))
    return OrderedDict(_pretrained[arch])


def get_pretrained_cfg(name: str, *, required: bool = False, retired: bool = False) -> WeightsCfg | None:
    """The WeightsCfg for ``arch.tag``, or the default tag's for ``arch``.

    Returns ``None`` for an architecture with no weights unless ``required``; an unknown tag
    always raises, listing the tags that exist. A retired tag raises :class:`RetiredWeightsError`
    unless ``retired`` (the trainer's view: its recipe and sha256, not weights to load).
    """
    arch, tag = split_model_name(name)
    cfgs = get_pretrained_cfgs(arch)
    if tag:
        if tag in _retired[arch]:
            if retired:
                return _retired[arch][tag][0]
            raise RetiredWeightsError(_retired_message(arch, tag))
        if tag not in cfgs:
            known = [f"{arch}.{t}" for t in cfgs]
            raise UnknownModelError(_unknown_message(
                "pretrained tag", f"{arch}.{tag}",
                known + list_pretrained()) + (f" Tags of {arch}: {', '.join(cfgs) or 'none'}."))
        return cfgs[tag]
    if cfgs:
        return next(iter(cfgs.values()))
    if required:
        raise UnknownModelError(
            f"{arch!r} has no pretrained weights registered. Use pretrained=False, pass "
            "checkpoint_path=..., or see `dsnet-zoo list --pretrained` for models with weights.")
    return None


def _matches(name: str, patterns) -> bool:
    if not patterns:
        return True
    if isinstance(patterns, str):
        patterns = [patterns]
    return any(fnmatch.fnmatchcase(name, p) for p in patterns)


def list_models(filter: str | Iterable[str] = "", pretrained: bool = False,
                exclude_filters: str | Iterable[str] = "", family: str | None = None) -> list[str]:
    """Registered architecture names matching shell wildcards, sorted.

    With ``pretrained=True``, returns ``arch.tag`` names that have weights (as timm does with
    ``pretrained=True`` and tags), filtered on the full name.
    """
    names = list(_entrypoints) if not pretrained else [
        f"{a}.{t}" for a in _entrypoints for t in _pretrained[a]]
    out = []
    for n in names:
        arch = split_model_name(n)[0]
        if family and _arch_meta[arch]["family"] != family:
            continue
        if not (_matches(n, filter) or (pretrained and _matches(arch, filter))):
            continue
        if exclude_filters and _matches(n, exclude_filters):
            continue
        out.append(n)
    return sorted(out)


def list_pretrained(filter: str | Iterable[str] = "") -> list[str]:
    """Every ``arch.tag`` with registered weights that matches the filter."""
    return list_models(filter, pretrained=True)


def arch_info(arch: str) -> dict:
    """Registry metadata of one architecture (family, dataset, description, module)."""
    if arch not in _entrypoints:
        raise UnknownModelError(_unknown_message("model", arch, list(_entrypoints)))
    return dict(_arch_meta[arch])
