"""Hub repo folders: the one writer of ``model.safetensors``, ``config.json`` and model cards, and the
reader of a Hub repo's ``config.json`` (``hf-hub:ORG/NAME`` names).

Everything the zoo publishes goes through here: ``dsnet-zoo publish``, ``dsnet-zoo port-paper``,
training's ``hub/`` export, the committed ``hub/dsnet-zoo/*`` folders and the generated
``model_cards/*.md`` (whose bodies :mod:`dsnet_zoo.evaluation.cards` writes from the evaluation results;
their metadata is made here).

- :func:`safetensors_bytes`: the one serialiser. Deterministic bytes (sorted keys, contiguous CPU copies,
  metadata ``{"format": "pt"}`` only), so the same weights always hash to the same pinned sha256.
- :func:`read_hub_folder` and :func:`read_hub_config`: the readers of a local repo folder and of a Hub repo,
  one parser of ``config.json`` for both; a folder's weights are checked against its recorded sha256 there,
  a Hub repo's where they are resolved (:func:`dsnet_zoo.hub.resolve_weights_file`).
- :func:`hub_config`: ``config.json``, the keys timm's ``hf-hub:`` loader reads (``architecture``,
  ``num_classes``, ``num_features``, ``pretrained_cfg``, ``model_args``) plus ``dsnet_zoo`` with the
  full :class:`WeightsCfg` (and, for converted weights, their ``provenance``).
- :func:`card_metadata` and :func:`render_card`: the YAML front matter of every card, built with
  ``huggingface_hub.ModelCardData`` and ``EvalResult`` and parsed back by ``ModelCard`` before it is
  written: ``library_name: dsnet_zoo``, tags, Hub dataset ids, a license id from the Hub's list
  (:func:`hub_license`: a license the list does not have becomes ``other`` with ``license_name`` and,
  when the weights' origin is a repository, ``license_link``) and ``model-index`` with the measured
  numbers (:func:`cfg_eval_results` reads them from ``WeightsCfg.metrics``).
- :func:`write_hub_repo`: the three files, written completely before any is renamed into place.
"""
from __future__ import annotations

import hashlib
import json
import os
import re
import tempfile
from dataclasses import replace
from fractions import Fraction
from pathlib import Path
from typing import TYPE_CHECKING, Any, Iterable, Mapping

import torch
from safetensors.torch import save
from torch import nn

from .._version import __version__
from ..registry import UnknownModelError, arch_info
from ..utils import atomic_write_bytes
from .weights import PAPER_SOURCE, WeightsCfg, WeightsError, _check_sha256, _hf_download, sha256_file

if TYPE_CHECKING:  # huggingface_hub's card classes are imported when a card is made (0.6 s, measured)
    from huggingface_hub import EvalResult, ModelCardData

__all__ = ["REPO_FILES", "LIBRARY_NAME", "HUB_LICENSES", "HF_DATASETS", "safetensors_bytes", "save_state_dict",
           "hub_license", "card_tags", "eval_result", "cfg_eval_results", "card_metadata", "render_card",
           "render_model_card", "arch_family", "hub_config", "write_hub_repo", "read_hub_config", "read_hub_folder"]

REPO_FILES = ("model.safetensors", "config.json", "README.md")
LIBRARY_NAME = "dsnet_zoo"  # not "timm": the Hub's timm snippet cannot load a dsnet_zoo model

# The license identifiers the Hub accepts in a card's `license` field, from the table in
# huggingface/hub-docs, docs/hub/repositories-licenses.md (commit 008d54d). huggingface_hub has no copy.
HUB_LICENSES = frozenset("""
apache-2.0 mit openrail bigscience-openrail-m creativeml-openrail-m bigscience-bloom-rail-1.0 bigcode-openrail-m
afl-3.0 artistic-2.0 bsl-1.0 bsd bsd-2-clause bsd-3-clause bsd-3-clause-clear c-uda cc cc0-1.0 cc-by-2.0
cc-by-2.5 cc-by-3.0 cc-by-4.0 cc-by-sa-3.0 cc-by-sa-4.0 cc-by-nc-2.0 cc-by-nc-3.0 cc-by-nc-4.0 cc-by-nd-4.0
cc-by-nc-nd-3.0 cc-by-nc-nd-4.0 cc-by-nc-sa-2.0 cc-by-nc-sa-3.0 cc-by-nc-sa-4.0 cdla-sharing-1.0
cdla-permissive-1.0 cdla-permissive-2.0 wtfpl ecl-2.0 epl-1.0 epl-2.0 etalab-2.0 eupl-1.1 agpl-3.0 gfdl gpl
gpl-2.0 gpl-3.0 lgpl lgpl-2.1 lgpl-3.0 isc lppl-1.3c ms-pl mpl-2.0 odc-by odbl openrail++ osl-3.0 postgresql
ofl-1.1 ncsa unlicense zlib pddl lgpl-lr deepfloyd-if-license llama2 gemma unknown other
""".split())

# the zoo's dataset names -> the Hub's dataset ids (`datasets:` and model-index `dataset.type`)
HF_DATASETS = {"cifar10-full": "cifar10", "cifar10-real": "cifar10", "cifar10": "cifar10",
               "cifar100-full": "cifar100", "cifar100-real": "cifar100", "cifar100": "cifar100"}
_TASKS = {"image-classification": "Image Classification", "tabular-regression": "Regression"}


# ------------------------------------------------------------------------------------------------
# weights


def safetensors_bytes(state_dict: Mapping[str, torch.Tensor]) -> bytes:
    """The state dict as safetensors bytes, deterministically: keys sorted, contiguous CPU copies
    (shared storage is not allowed by safetensors), metadata ``{"format": "pt"}`` only.

    One metadata entry on purpose: safetensors keeps metadata in a hash map whose order changes from
    process to process, so two or more entries would give different bytes (and so a different pinned
    sha256) on every run. What the weights are is recorded in ``config.json`` instead.
    """
    tensors = {k: state_dict[k].detach().to("cpu").contiguous().clone() for k in sorted(state_dict)}
    return save(tensors, metadata={"format": "pt"})


def save_state_dict(state_dict: Mapping[str, torch.Tensor], path: str | os.PathLike) -> str:
    """Write :func:`safetensors_bytes` of ``state_dict`` to ``path`` atomically; return the sha256."""
    atomic_write_bytes(path, safetensors_bytes(state_dict))
    return sha256_file(path)


# ------------------------------------------------------------------------------------------------
# card metadata


def _origin_url(origin: str | None) -> str | None:
    """The repository an ``origin`` names, as a URL: ``https://...`` as is, ``github.com/OWNER/REPO[@REV] ...``
    as ``https://github.com/OWNER/REPO[/tree/REV]``; ``None`` for anything else (a path in this checkout)."""
    if not origin:
        return None
    first = origin.split()[0]
    if first.startswith(("https://", "http://")):
        return first
    m = re.fullmatch(r"(github\.com|gitlab\.com)/([\w.-]+)/([\w.-]+?)(?:\.git)?(?:@([\w.-]+))?", first)
    if m is None:
        return None
    host, owner, name, rev = m.groups()
    return f"https://{host}/{owner}/{name}" + (f"/tree/{rev}" if rev else "")


def hub_license(license: str | None, origin: str | None = None) -> dict[str, str]:
    """The card's license fields for a license as the zoo records it (``WeightsCfg.license``).

    A Hub license id, in any case (``MIT``), gives ``{"license": "mit"}``; no license gives ``unknown``.
    Anything else (the paper ports' "unknown (no license file ...): not redistributable") is not an id the
    Hub accepts: it becomes ``license: other`` with ``license_name``, the text as an id
    (lowercase, ``[a-z0-9.-]``), and ``license_link``, the repository ``origin`` names, when it names one.
    """
    if not license or not license.strip():
        return {"license": "unknown"}
    text = license.strip()
    if text.lower() in HUB_LICENSES:
        return {"license": text.lower()}
    name = re.sub(r"-{2,}", "-", re.sub(r"[^a-z0-9.]+", "-", text.lower())).strip("-.")
    out = {"license": "other", "license_name": name or "unspecified"}
    link = _origin_url(origin)
    if link:
        out["license_link"] = link
    return out


def card_tags(*, task: str, certified: bool, family: str | None = None, source: str | None = None) -> list[str]:
    """The tags of every card: library, task, what the zoo is about, then certified / family / provenance."""
    tags = [LIBRARY_NAME, "pytorch", "image-classification" if task == "classification" else "regression",
            "structure-preserving", "dynamical-systems"]
    if certified:
        tags.append("certified-robustness")
    if family:
        tags.append(family)
    if source == PAPER_SOURCE:
        tags.append("paper-authors-weights")
    return tags


def eval_result(*, task: str, dataset: str, dataset_name: str, metric: str, value: float, name: str,
                config: str | None = None, split: str | None = None,
                source: tuple[str, str] | None = None) -> "EvalResult":
    """One model-index number. ``task``: ``classification`` or ``regression``; ``dataset``: the zoo's
    name (``cifar10-full``; the Hub id goes into ``dataset.type``, the zoo's name into ``dataset.config``,
    since the Hub groups results by type, config and split); ``source``: ``(name, url)`` for numbers the
    zoo did not measure (the paper authors' own)."""
    from huggingface_hub import EvalResult  # lazy: huggingface_hub's card classes take 0.6 s to import

    task_type = "image-classification" if task == "classification" else "tabular-regression"
    return EvalResult(task_type=task_type, task_name=_TASKS[task_type], dataset_type=HF_DATASETS.get(dataset, dataset),
                      dataset_name=dataset_name, dataset_config=dataset, dataset_split=split, metric_type=metric,
                      metric_value=value, metric_name=name, metric_config=config,
                      source_name=source[0] if source else None, source_url=source[1] if source else None)


def _number(v: Any) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool)


def _accuracy_order(key: str) -> tuple:
    """``clean`` first, then ``certified_l2_EPS`` by norm and radius, then anything else by name."""
    m = re.fullmatch(r"certified_(l2|linf)_(.+)", key)
    if key == "clean":
        return (0, "", 0.0)
    if m:
        try:
            return (1, m[1], float(Fraction(m[2])))
        except (ValueError, ZeroDivisionError):
            return (1, m[1], float("inf"))
    return (2, key, 0.0)


def cfg_eval_results(cfg: WeightsCfg) -> list["EvalResult"]:
    """``model-index`` numbers from ``cfg.metrics``, in the layouts the zoo writes (anything else stays
    in the card body only):

    - classification (the flagships, ``dsnet-zoo train``): ``{DATASET: {"clean": %, "certified_l2_EPS": %,
      ...}, "evaluated_on": description | "eval_images": n, "eval_split": split}``; accuracies in percent
      become fractions, as in ``model_cards/``;
    - regression (``dsnet-zoo train``): ``{"test_mse": float64, "test_mse_float32": ...,
      "conserved_sum_max_rel_error_float64": ..., "test_examples": n, "eval_set": "DATASET (SPLIT)"}``;
    - the paper authors' own numbers: ``{"paper": {"what", "eps": [...], "robust_accuracy": [...]}}``, with
      the authors' repository as their source.
    """
    m = dict(cfg.metrics or {})
    out = []
    n = m.get("eval_images")
    suffix = f" (n={n})" if _number(n) else ""
    for dataset, values in m.items():
        if dataset == "paper" or not isinstance(values, Mapping):
            continue
        split = m.get("eval_split") or (cfg.recipe or {}).get("eval_split")
        title = m.get("evaluated_on") or f"{dataset} ({split or 'evaluation'} split)"
        common = dict(task="classification", dataset=dataset, dataset_name=title, split=split)
        for key, v in sorted(values.items(), key=lambda kv: _accuracy_order(kv[0])):
            if not _number(v):
                continue
            cert = re.fullmatch(r"certified_(l2|linf)_(.+)", key)
            if key == "clean":
                out.append(eval_result(metric="accuracy", value=round(v / 100, 6), name="clean accuracy" + suffix,
                                       **common))
            elif cert:
                norm, eps = {"l2": "L2", "linf": "Linf"}[cert[1]], cert[2]
                out.append(eval_result(metric="certified-accuracy", value=round(v / 100, 6), config=f"{norm}:{eps}",
                                       name=f"certified accuracy, {norm} eps={eps}{suffix}", **common))
    if _number(m.get("test_mse")):
        match = re.fullmatch(r"(.+) \((\w+)\)", str(m.get("eval_set") or ""))
        dataset, split = (match[1], match[2]) if match else (cfg.dataset or "unknown", None)
        n = m.get("test_examples")
        suffix = f" (n={n})" if _number(n) else ""
        common = dict(task="regression", dataset=dataset, dataset_name=m.get("eval_set") or dataset, split=split)
        for key, metric, label, dtype in (
                ("test_mse_float32", "mse", "test MSE", "float32"), ("test_mse", "mse", "test MSE", "float64"),
                ("conserved_sum_max_rel_error_float64", "conserved-sum-max-rel-error",
                 "max relative error of the conserved sum", "float64")):
            if _number(m.get(key)):
                out.append(eval_result(metric=metric, value=float(f"{m[key]:.6g}"), config=dtype,
                                       name=f"{label}, {dtype}{suffix}", **common))
    paper = m.get("paper")
    if isinstance(paper, Mapping) and paper.get("eps") and paper.get("robust_accuracy"):
        url = _origin_url(cfg.origin)
        source = ("reported by the paper's authors", url) if url else None
        common = dict(task="classification", dataset=cfg.dataset or "cifar10",
                      dataset_name=str(paper.get("what") or "the authors' evaluation"), split="test", source=source)
        for eps, acc in zip(paper["eps"], paper["robust_accuracy"]):
            if eps == 0:
                out.append(eval_result(metric="accuracy", value=acc, name="clean accuracy (authors)", **common))
            else:
                out.append(eval_result(metric="robust-accuracy", value=acc, config=f"L2:{eps:.4f}",
                                       name=f"PGD robust accuracy (authors), L2 eps={eps:.4f}", **common))
    return out


def card_metadata(*, name: str, task: str, license: str | None, origin: str | None, datasets: Iterable[str],
                  tags: list[str], eval_results: list["EvalResult"]) -> "ModelCardData":
    """The front matter of a card (``huggingface_hub.ModelCardData``): library, license fields
    (:func:`hub_license`), Hub dataset ids, tags, and ``model-index`` named ``name`` when there are results."""
    from huggingface_hub import ModelCardData  # lazy, as in eval_result

    ids = sorted({HF_DATASETS.get(d, d) for d in datasets if d})
    return ModelCardData(library_name=LIBRARY_NAME, **hub_license(license, origin), datasets=ids or None,
                         tags=tags, metrics=["accuracy"] if task == "classification" else ["mse"],
                         pipeline_tag="image-classification" if task == "classification" else None,
                         model_name=name if eval_results else None, eval_results=eval_results or None)


def render_card(data: "ModelCardData", body: str) -> str:
    """``README.md`` text: ``data`` as YAML front matter, then ``body``. The text is parsed back with
    ``huggingface_hub.ModelCard`` (model-index included, metadata errors not ignored) before it is returned."""
    from huggingface_hub import ModelCard  # lazy, as in eval_result

    card = ModelCard(f"---\n{data.to_yaml()}\n---\n\n{body.lstrip()}")
    return str(card)


# ------------------------------------------------------------------------------------------------
# the repo folder


def arch_family(arch: str | None) -> str | None:
    """The registered family of ``arch`` (``None`` when this process has not registered it)."""
    try:
        return arch_info(arch)["family"] if arch else None
    except UnknownModelError:  # an architecture this process has not registered
        return None


def _task(cfg: WeightsCfg) -> str:
    return "classification" if cfg.num_classes else "regression"


def render_model_card(cfg: WeightsCfg, config: Mapping[str, Any], extra: str = "") -> str:
    """The ``README.md`` of a repo folder, from the weights' metadata (``extra``: markdown sections added
    before the citation, e.g. the training run or the paper authors' numbers)."""
    arch = cfg.architecture or config["architecture"]
    family = (config.get("dsnet_zoo") or {}).get("family")
    results = cfg_eval_results(cfg)
    certified = any(r.metric_type == "certified-accuracy" for r in results)
    data = card_metadata(name=f"{arch}.{cfg.tag}", task=_task(cfg), license=cfg.license, origin=cfg.origin,
                         datasets=[cfg.dataset] if cfg.dataset else [],
                         tags=card_tags(task=_task(cfg), certified=certified, family=family, source=cfg.source),
                         eval_results=results)
    lo, hi = cfg.input_range
    body = [
        f"# {arch}.{cfg.tag}",
        "",
        cfg.description or f"A `{arch}` model from dsnet_zoo.",
        "",
        "## Use",
        "",
        "```python",
        "import dsnet_zoo",
        f"model = dsnet_zoo.create('{arch}.{cfg.tag}', pretrained=True)  "
        f"# input: float tensor (N, {', '.join(map(str, cfg.input_size))}) in [{lo:g}, {hi:g}]",
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
    return render_card(data, "\n".join(body))


def hub_config(model: nn.Module, cfg: WeightsCfg, provenance: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """``config.json``: what timm's ``hf-hub:`` loader reads, plus ``dsnet_zoo`` (version, family, the full
    cfg and, for converted weights, ``provenance``: where they were converted from and how)."""
    zoo: dict[str, Any] = {"version": __version__, "family": arch_family(cfg.architecture),
                           "weights_cfg": cfg.to_dict()}
    if provenance:
        zoo["provenance"] = dict(provenance)
    return {
        "architecture": cfg.architecture,
        "num_classes": cfg.num_classes,
        "num_features": getattr(model, "num_features", None),
        "pretrained_cfg": cfg.timm_pretrained_cfg(),
        "model_args": json.loads(json.dumps(dict(cfg.model_args))),
        "dsnet_zoo": zoo,
    }


def write_hub_repo(model: nn.Module, cfg: WeightsCfg, out_dir: str | os.PathLike, *, card_extra: str = "",
                   overwrite: bool = False, provenance: Mapping[str, Any] | None = None,
                   keep_weights: bool = False) -> dict[str, Any]:
    """Write ``model``'s weights and ``cfg`` as a Hugging Face repo folder at ``out_dir``.

    The three files are first written completely to a temp folder inside ``out_dir``, then renamed into
    place, weights first: whatever interrupts the call, each file is the old one or the new one, never a
    half-written one, and an error before the renames leaves the folder as it was. Existing files are only replaced with ``overwrite=True``; other files
    in the folder (``.git``) are left alone. ``keep_weights=True`` re-renders ``config.json`` and
    ``README.md`` only: the folder's ``model.safetensors`` must already hold exactly the bytes these
    weights serialise to (else nothing is written), and is not touched.
    Returns ``{'path', 'sha256', 'cfg', 'files'}`` with the cfg completed by sha256 and num_params.
    """
    out = Path(out_dir)
    if not cfg.tag or not cfg.architecture:
        raise ValueError("write_hub_repo needs a cfg with architecture and tag set")
    names = (cfg.filename, "config.json", "README.md")
    existing = [f for f in names if (out / f).exists()]
    if existing and not overwrite and not keep_weights:
        raise FileExistsError(f"{out} already holds {', '.join(existing)}; pass overwrite=True "
                              "(--overwrite) to replace them, or choose another --out")
    blob = safetensors_bytes(model.state_dict())
    if keep_weights:
        current = out / cfg.filename
        if not current.is_file() or current.read_bytes() != blob:
            raise WeightsError(f"{current} does not hold these weights' bytes: keep_weights=True only re-renders "
                               "config.json and README.md of the weights already there")
    out.mkdir(parents=True, exist_ok=True)
    sha = hashlib.sha256(blob).hexdigest()
    num_params = sum(p.numel() for p in model.parameters())
    with tempfile.TemporaryDirectory(prefix=".write-", dir=out) as tmp:
        tmp = Path(tmp)
        if not keep_weights:
            atomic_write_bytes(tmp / cfg.filename, blob)
        cfg = replace(cfg, sha256=sha, num_params=num_params,
                      num_classes=getattr(model, "num_classes", cfg.num_classes))
        config = hub_config(model, cfg, provenance)
        atomic_write_bytes(tmp / "config.json", (json.dumps(config, indent=2, sort_keys=True) + "\n").encode())
        atomic_write_bytes(tmp / "README.md", render_model_card(cfg, config, card_extra).encode("utf-8"))
        for name in names[1:] if keep_weights else names:
            os.replace(tmp / name, out / name)
    return {"path": str(out), "sha256": sha, "cfg": cfg, "files": sorted(p.name for p in out.iterdir())}


def _parse_config(path: Path, where: str, *, default_tag: str, **where_from: Any) -> tuple[str, WeightsCfg]:
    """The one parser of a repo's ``config.json`` (a Hub download or a local folder): ``(architecture, cfg)``,
    the cfg from ``dsnet_zoo.weights_cfg`` (what :func:`hub_config` writes) or else timm's ``pretrained_cfg``,
    with the top-level ``model_args`` and ``num_classes``. ``where_from`` (``hf_hub_id``, ``revision``) replaces
    the recorded values; ``default_tag`` is the tag of a config that records none."""
    try:
        config = json.loads(path.read_text())
        arch = config["architecture"]
        raw = (config.get("dsnet_zoo") or {}).get("weights_cfg") or config.get("pretrained_cfg") or {}
        cfg = WeightsCfg.from_dict({**raw, "tag": raw.get("tag") or default_tag, **where_from,
                                    "model_args": config.get("model_args") or {},
                                    "num_classes": config.get("num_classes", raw.get("num_classes"))})
    except (OSError, ValueError, KeyError, TypeError, AttributeError) as e:
        raise WeightsError(f"{where}: config.json is not a dsnet_zoo/timm config ({type(e).__name__}: {e})") from e
    return arch, cfg


def read_hub_config(repo: str) -> tuple[str, WeightsCfg]:
    """Read ``config.json`` of ``ORG/NAME[@REVISION]`` on the Hub and return ``(architecture, cfg)``.

    The returned cfg points at the same commit the config came from, so config and weights
    cannot come from two different revisions; its sha256 is checked when the weights are resolved.
    """
    repo_id, _, revision = repo.partition("@")
    path = Path(_hf_download(repo_id, "config.json", revision or None))
    commit = path.parent.name if path.parent.parent.name == "snapshots" else (revision or None)
    return _parse_config(path, repo_id, default_tag="hf-hub", hf_hub_id=repo_id, revision=commit)


def read_hub_folder(path: str | os.PathLike) -> tuple[str, WeightsCfg, Path]:
    """Read a local repo folder (``config.json`` and the weights file, as :func:`write_hub_repo` writes it:
    ``dsnet-zoo publish``, ``port-paper``, training's ``hub/``, the checkout's ``hub/dsnet-zoo/*``) and return
    ``(architecture, cfg, weights_file)`` once the file's sha256 is the one ``config.json`` records.

    A mismatch raises :class:`ChecksumError` (nothing is deleted). A config that records no sha256 (a folder
    written by other tools) raises :class:`WeightsError` saying how to re-publish it: every path that loads a
    repo's weights checks them. Load such a file as your own with ``create(arch, checkpoint_path=FILE)``.
    """
    folder = Path(path)
    config = folder / "config.json"
    if not config.is_file():
        raise WeightsError(f"{folder} is not a repo folder: it has no config.json (write one with `dsnet-zoo "
                           "publish --out FOLDER`, or give a weights file and its architecture instead)")
    arch, cfg = _parse_config(config, str(folder), default_tag="local-dir")
    if Path(cfg.filename).name != cfg.filename or cfg.filename in ("", ".", ".."):
        raise WeightsError(f"{config}: filename {cfg.filename!r} is not a file name inside the folder")
    weights = folder / cfg.filename
    if not weights.is_file():
        raise WeightsError(f"{folder} has no {cfg.filename}, the weights file its config.json names")
    republish = (f"dsnet-zoo publish --model {arch}.{cfg.tag} --weights {weights} --out {folder} --overwrite")
    if not cfg.sha256:
        raise WeightsError(
            f"{config} records no sha256 for {cfg.filename} (not a folder written by dsnet_zoo), so its weights "
            f"cannot be checked and were not loaded. Re-publish the folder, which writes the weights and their "
            f"sha256 together: `{republish}`; or load the file unchecked as your own checkpoint: "
            f"dsnet_zoo.create({arch!r}, checkpoint_path={str(weights)!r}) (`dsnet-zoo eval {weights} --arch {arch}`).")
    _check_sha256(weights, cfg, evict=False, expected_by=f"{config} ({arch}.{cfg.tag})", fix=(
        f". Get a fresh copy of the folder; if you changed the weights on purpose, re-publish it so that "
        f"config.json records them: `{republish}`."))
    return arch, cfg, weights
