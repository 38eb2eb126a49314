"""Write Hub-ready repo folders and read them back (``hf-hub:ORG/NAME`` names).

A repo folder holds ``model.safetensors`` (the state dict, deterministic bytes), ``config.json`` (the
keys timm's ``hf-hub:`` loader reads, ``architecture``, ``num_classes``, ``num_features``,
``pretrained_cfg``, ``model_args``, plus ``dsnet_zoo`` with the full :class:`WeightsCfg`) and
``README.md``, a model card with YAML front matter.
"""
from __future__ import annotations

import json
import os
import tempfile
from dataclasses import replace
from pathlib import Path
from typing import Any

import torch
from torch import nn

from ..utils import atomic_write_bytes
from .weights import WeightsCfg, WeightsError, _hf_download, sha256_file

__all__ = ["write_hub_repo", "save_state_dict", "read_hub_config", "render_model_card", "atomic_write_bytes"]

REPO_FILES = ("model.safetensors", "config.json", "README.md")


def save_state_dict(state_dict: dict[str, torch.Tensor], path: str | os.PathLike) -> str:
    """Save a state dict as safetensors, atomically, with deterministic bytes; return its sha256.

    Tensors are made contiguous CPU copies (shared storage is not allowed by safetensors). The
    only header metadata is ``format: pt``: safetensors writes several metadata keys in hash-map
    order, which would make the bytes (and so the pinned sha256) differ between runs. What the
    weights are is recorded in ``config.json`` instead.
    """
    from safetensors.torch import save

    tensors = {k: v.detach().to("cpu").contiguous().clone() for k, v in sorted(state_dict.items())}
    data = save(tensors, metadata={"format": "pt"})
    atomic_write_bytes(path, data)
    return sha256_file(path)


def _yaml_list(key: str, values: list[str]) -> list[str]:
    return [f"{key}:"] + [f"- {v}" for v in values] if values else []


def render_model_card(cfg: WeightsCfg, config: dict[str, Any], extra: str = "") -> str:
    """A model card (README.md) with Hugging Face YAML front matter, from the weights' metadata."""
    arch = cfg.architecture or config["architecture"]
    family = config.get("dsnet_zoo", {}).get("family") or ""
    tags = ["dsnet_zoo", "pytorch", "image-classification" if cfg.num_classes else "dynamical-systems"]
    tags += [t for t in ("structure-preserving", family) if t]
    if cfg.metrics.get("certified") is not None or "lipnet" in arch:
        tags.append("lipschitz")
    lines = ["---", "library_name: dsnet_zoo", f"license: {_license_id(cfg.license)}"]
    lines += _yaml_list("tags", tags)
    if cfg.dataset:
        lines += _yaml_list("datasets", [cfg.dataset.split("-")[0]])
    results = _model_index_results(cfg)
    if results:
        lines += ["model-index:", f"- name: {arch}.{cfg.tag}", "  results:"] + results
    lines.append("---")
    body = [
        f"# {arch}.{cfg.tag}",
        "",
        cfg.description or f"A `{arch}` model from dsnet_zoo.",
        "",
        "## Use",
        "",
        "```python",
        "import dsnet_zoo",
        f"model = dsnet_zoo.create('{arch}.{cfg.tag}', pretrained=True)  # inputs: images in [0, 1]",
        "```",
        "",
        "## Weights",
        "",
        f"- file: `{cfg.filename}`, sha256 `{cfg.sha256}`",
        f"- source: {cfg.source}" + (f" ({cfg.origin})" if cfg.origin else ""),
        f"- license: {cfg.license or 'unspecified'}",
        f"- dataset: {cfg.dataset or 'unspecified'}",
        f"- input: {tuple(cfg.input_size)} in {tuple(cfg.input_range)}; normalisation inside the model "
        f"(mean {tuple(cfg.norm_mean)}, std {tuple(cfg.norm_std)})",
    ]
    if cfg.recipe:
        body += ["", "## Recipe", "", "```json", json.dumps(dict(cfg.recipe), indent=2, sort_keys=True), "```"]
    if cfg.metrics:
        body += ["", "## Measured", "", "```json", json.dumps(dict(cfg.metrics), indent=2, sort_keys=True), "```"]
    if extra:
        body += ["", extra.strip()]
    body += ["", "## Citation", "", "```bibtex", cfg.citation, "```", ""]
    return "\n".join(lines + body)


def _license_id(license: str | None) -> str:
    if not license:
        return "other"
    first = license.split()[0].lower()
    return first if first in {"mit", "apache-2.0", "bsd-3-clause", "cc-by-4.0"} else "other"


def _model_index_results(cfg: WeightsCfg) -> list[str]:
    """YAML lines of ``model-index`` results from ``cfg.metrics``.

    Understood layout: ``metrics[dataset_name] = {"clean": acc, "certified_l2_36/255": acc, ...}``
    with accuracies in percent; anything else is kept in the card body only.
    """
    out: list[str] = []
    for dataset, values in (cfg.metrics or {}).items():
        if not isinstance(values, dict):
            continue
        numeric = {k: v for k, v in values.items() if isinstance(v, (int, float)) and not isinstance(v, bool)}
        if not numeric:
            continue
        out += ["  - task:", "      type: image-classification", "    dataset:",
                f"      name: {dataset}", f"      type: {dataset.split('-')[0]}", "    metrics:"]
        for k, v in numeric.items():
            out += [f"    - type: {k}", f"      value: {v}", f"      name: {k}"]
    return out


def write_hub_repo(model: nn.Module, cfg: WeightsCfg, out_dir: str | os.PathLike, *,
                   card_extra: str = "", overwrite: bool = False) -> dict[str, Any]:
    """Write ``model``'s weights and ``cfg`` as a Hugging Face repo folder at ``out_dir``.

    The three files are first written to temp files and then renamed into place, weights first,
    so an interrupted call leaves either the old complete set or a config whose recorded sha256
    does not match (and so refuses to load), never a half-written file. Existing files are only
    replaced with ``overwrite=True``; other files in the folder (``.git``) are left alone.
    Returns ``{'path', 'sha256', 'cfg'}`` with the cfg completed by sha256 and num_params.
    """
    out = Path(out_dir)
    existing = [f for f in REPO_FILES if (out / f).exists()]
    if existing and not overwrite:
        raise FileExistsError(f"{out} already holds {', '.join(existing)}; pass overwrite=True "
                              "(--overwrite) to replace them, or choose another --out")
    if not cfg.tag or not cfg.architecture:
        raise ValueError("write_hub_repo needs a cfg with architecture and tag set")
    out.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix=".publish-", dir=out) as tmp:
        tmp_weights = Path(tmp) / cfg.filename
        sha = save_state_dict(model.state_dict(), tmp_weights)
        num_params = sum(p.numel() for p in model.parameters())
        cfg = replace(cfg, sha256=sha, num_params=num_params,
                      num_classes=getattr(model, "num_classes", cfg.num_classes))
        config = hub_config(model, cfg)
        (Path(tmp) / "config.json").write_text(json.dumps(config, indent=2, sort_keys=True) + "\n")
        (Path(tmp) / "README.md").write_text(render_model_card(cfg, config, card_extra))
        for name in (cfg.filename, "config.json", "README.md"):
            os.replace(Path(tmp) / name, out / name)
    return {"path": str(out), "sha256": sha, "cfg": cfg}


def hub_config(model: nn.Module, cfg: WeightsCfg) -> dict[str, Any]:
    from .. import __version__
    from ..registry import arch_info

    try:
        family = arch_info(cfg.architecture)["family"]
    except Exception:
        family = None
    return {
        "architecture": cfg.architecture,
        "num_classes": cfg.num_classes,
        "num_features": getattr(model, "num_features", None),
        "pretrained_cfg": cfg.timm_pretrained_cfg(),
        "model_args": dict(cfg.model_args),
        "dsnet_zoo": {"version": __version__, "family": family, "weights_cfg": cfg.to_dict()},
    }


def read_hub_config(repo: str) -> tuple[str, WeightsCfg]:
    """Read ``config.json`` of ``ORG/NAME[@REVISION]`` on the Hub and return ``(architecture, cfg)``.

    The returned cfg points at the same commit the config came from, so config and weights
    cannot come from two different revisions.
    """
    repo_id, _, revision = repo.partition("@")
    path = _hf_download(repo_id, "config.json", revision or None)
    try:
        config = json.loads(Path(path).read_text())
        arch = config["architecture"]
    except (ValueError, KeyError) as e:
        raise WeightsError(f"{repo_id}: config.json is not a dsnet_zoo/timm config ({e})") from e
    commit = Path(path).parent.name if Path(path).parent.parent.name == "snapshots" else (revision or None)
    raw = (config.get("dsnet_zoo") or {}).get("weights_cfg") or config.get("pretrained_cfg") or {}
    cfg = WeightsCfg.from_dict({**raw, "tag": raw.get("tag") or "hf-hub", "hf_hub_id": repo_id,
                                "revision": commit, "model_args": config.get("model_args") or {},
                                "num_classes": config.get("num_classes", raw.get("num_classes"))})
    return arch, cfg
