"""Model cards ``model_cards/<arch.tag>.md`` generated from the evaluation results.

The YAML front matter is Hugging Face's ``model-index`` (rendered by ``huggingface_hub.ModelCardData``
with one ``EvalResult`` per measured number), so the Hub shows the same numbers as the leaderboard.
``library_name`` is deliberately not ``timm``: the Hub's timm snippet cannot load a dsnet_zoo model.
"""
from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from .metrics import format_eps
from .report import merge_results, set_order
from .runner import atomic_write_text

__all__ = ["model_card", "write_model_cards"]

_HF_DATASET = {"cifar10-full": "cifar10", "cifar10-real": "cifar10", "cifar10": "cifar10",
               "cifar100-full": "cifar100", "cifar100-real": "cifar100", "cifar100": "cifar100"}


def _eval_results(entries: list[dict[str, Any]]):
    from huggingface_hub import EvalResult

    out = []
    for m in entries:
        ds = m["dataset"]
        # the Hub groups results by (dataset type, config, split): the config names the exact set
        common = dict(task_type="image-classification", task_name="Image Classification",
                      dataset_type=_HF_DATASET.get(ds, ds), dataset_name=m["description"],
                      dataset_config=f"{ds}, n={m['n']}", dataset_split=m.get("split", "test"))
        clean = m["metrics"].get("clean")
        if clean and clean.get("accuracy") is not None:
            out.append(EvalResult(metric_type="accuracy", metric_name=f"clean accuracy (n={clean['n']})",
                                  metric_value=round(clean["accuracy"], 4), **common))
        for metric, label in (("certified", "certified accuracy"), ("autoattack", "AutoAttack robust accuracy"),
                              ("paper-pgd", "PGD-10 (paper protocol) robust accuracy")):
            rec = m["metrics"].get(metric)
            if not rec:
                continue
            for key, value in (rec.get("accuracy") or {}).items():
                if value is None:
                    continue
                norm, _, eps = key.partition(":")
                out.append(EvalResult(metric_type=f"{metric}-accuracy",
                                      metric_name=f"{label}, {norm} eps={eps} (n={rec['n']})",
                                      metric_value=round(value, 4), metric_config=f"{norm}:{eps}", **common))
    return out


def model_card(name: str, entries: list[dict[str, Any]]) -> str:
    """The card text of ``name`` from its merged results (one entry per exact set, in table order)."""
    from huggingface_hub import ModelCard, ModelCardData

    first = entries[0]
    datasets = sorted({_HF_DATASET.get(m["dataset"], m["dataset"]) for m in entries})
    data = ModelCardData(model_name=name, license=first.get("license") or None, datasets=datasets,
                         tags=["dsnet_zoo", "image-classification", "structure-preserving",
                               "certified-robustness" if first["lipschitz"].get("bound") is not None
                               else "dynamical-systems"],
                         metrics=["accuracy"], eval_results=_eval_results(entries))
    lip = first["lipschitz"]
    lines = [f"# {name}", "",
             f"Architecture `{first.get('model')}`, weights tag `{first.get('tag')}`"
             + (f", produced by {first['source']}" if first.get("source") else "")
             + (f", trained on `{first['trained_on']}`" if first.get("trained_on") else "") + ".", ""]
    lines += [f"- weights sha256: `{first.get('weights_sha256')}`",
              f"- parameters: {first.get('num_params'):,}" if first.get("num_params") else "- parameters: unknown",
              f"- certified L2 Lipschitz bound (pixel space): "
              + (f"{lip['bound']:.6g} ({lip.get('method')})" if lip.get("bound") is not None else
                 "none: no certified accuracy is claimed"), ""]
    lines += ["## Evaluation", "",
              "Accuracy in %, eps in pixel units (images in [0, 1]). Generated from `eval/results/` by "
              "`python eval/leaderboard.py`. Each table is one exact set of test images, named in its heading.", ""]
    for m in entries:
        lines += [f"### {m['description']} (`{m['dataset']}`)", "", "| metric | eps | accuracy | n |",
                  "|---|---|---|---|"]
        clean = m["metrics"].get("clean")
        if clean:
            lines.append(f"| clean | – | {100 * clean['accuracy']:.1f} | {clean['n']} |")
        for metric in ("certified", "autoattack", "paper-pgd"):
            rec = m["metrics"].get(metric)
            for key, value in ((rec or {}).get("accuracy") or {}).items():
                shown = "null (no bound)" if value is None else f"{100 * value:.1f}"
                lines.append(f"| {metric} | {key} | {shown} | {rec['n']} |")
        lines += ["", "Reproduce:", ""]
        lines += [f"- `{c}`" for c in sorted({v["command"] for v in m["metrics"].values() if v.get("command")})]
        lines.append("")
    card = ModelCard(f"---\n{data.to_yaml()}\n---\n\n" + "\n".join(lines))
    return str(card)


def write_model_cards(results: list[dict[str, Any]], cards_dir: str | os.PathLike) -> list[Path]:
    """Write one card per evaluated ``arch.tag`` (checkpoint evaluations get none)."""
    merged = merge_results(results)
    by_name: dict[str, list[dict[str, Any]]] = {}
    for key, m in merged.items():
        if m.get("tag"):
            by_name.setdefault(key[0], []).append(m)
    written = []
    for name, entries in sorted(by_name.items()):
        entries = sorted(entries, key=lambda m: set_order(m["set"]))
        path = Path(cards_dir) / f"{name}.md"
        atomic_write_text(path, model_card(name, entries))
        written.append(path)
    return written
