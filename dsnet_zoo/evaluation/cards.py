"""Model cards ``model_cards/<arch.tag>.md`` generated from the evaluation results.

The body is written here from the rows of :func:`~.report.merge_results`: each number from the result
with the largest ``n`` (then the newest), quoted with its ``n``, and the commands that reproduce it. The
YAML front matter comes from the zoo's one card writer, :mod:`dsnet_zoo.hub.repo` (``ModelCardData``
with one ``EvalResult`` per number, so the Hub shows the same numbers as the leaderboard; the Hub
license id, tags and ``library_name`` as on every card the zoo writes). A card describes one set of
weights: the registered ones when results for them exist, else those of the newest result.
"""
from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from ..hub.repo import arch_family, card_metadata, card_tags, eval_result, render_card
from ..registry import UnknownModelError, get_pretrained_cfg, retired_successor
from ..utils import atomic_write_text
from .regression import REGRESSION_METRICS
from .report import REGRESSION_COLUMNS, merge_results, table_order, threat_order

__all__ = ["model_card", "write_model_cards"]

_ACC_LABELS = (("certified", "certified accuracy"), ("autoattack", "AutoAttack robust accuracy"),
               ("paper-pgd", "PGD-10 (paper protocol) robust accuracy"))


def _cells_of(row: dict[str, Any], metric: str) -> list[tuple[str, dict[str, Any]]]:
    """``(NORM:EPS, cell)`` of one metric, by norm, then eps."""
    return sorted(((k, c) for (m, k), c in row["cells"].items() if m == metric), key=lambda kc: threat_order(kc[0]))


def _eval_results(rows: list[dict[str, Any]]):
    out = []
    for row in rows:
        regression = row["task"] == "regression"
        # the Hub groups results by (dataset type, config, split): the config names the set
        common = dict(task=row["task"], dataset=row["dataset"], dataset_name=row["title"], split=row["split"])
        if regression:
            for metric, key in REGRESSION_COLUMNS:
                c = row["cells"].get((metric, key))
                if c is None or c["value"] is None:
                    continue
                out.append(eval_result(metric=metric.replace("_", "-"), name=f"{metric.replace('_', ' ')}, {key} "
                                       f"(n={c['n']})", value=float(f"{c['value']:.6g}"), config=key, **common))
            continue
        clean = row["cells"].get(("clean", ""))
        if clean and clean["value"] is not None:
            out.append(eval_result(metric="accuracy", name=f"clean accuracy (n={clean['n']})",
                                   value=round(clean["value"], 4), **common))
        for metric, label in _ACC_LABELS:
            for key, c in _cells_of(row, metric):
                if c["value"] is None:
                    continue
                norm, _, eps = key.partition(":")
                out.append(eval_result(metric=f"{metric}-accuracy", name=f"{label}, {norm} eps={eps} (n={c['n']})",
                                       value=round(c["value"], 4), config=key, **common))
    return out


def _section(row: dict[str, Any]) -> list[str]:
    lines = [f"### {row['title']} (`{row['dataset']}`)", ""]
    if row["task"] == "regression":
        lines += ["| metric | dtype | value | n |", "|---|---|---|---|"]
        for metric, key in REGRESSION_COLUMNS:
            c = row["cells"].get((metric, key))
            if c is not None:
                shown = "null" if c["value"] is None else f"{c['value']:.4g}"
                lines.append(f"| {metric} | {key} | {shown} | {c['n']} |")
        lines += ["", "; ".join(f"{m}: {d}" for m, d in REGRESSION_METRICS.items()) + "."]
    else:
        lines += ["| metric | eps | accuracy | n |", "|---|---|---|---|"]
        clean = row["cells"].get(("clean", ""))
        if clean:
            shown = "null" if clean["value"] is None else f"{100 * clean['value']:.1f}"
            lines.append(f"| clean | – | {shown} | {clean['n']} |")
        for metric, _ in _ACC_LABELS:
            for key, c in _cells_of(row, metric):
                shown = "null (no bound)" if c["value"] is None else f"{100 * c['value']:.1f}"
                lines.append(f"| {metric} | {key} | {shown} | {c['n']} |")
    others = sorted({(c["n"], c["description"]) for c in row["cells"].values() if c["description"] != row["title"]})
    if others:
        lines += ["", "Fewer examples: " + "; ".join(f"n={n}: {d}" for n, d in others) + "."]
    lines += ["", "Reproduce:", ""]
    lines += [f"- `{c}`" for c in sorted({c["command"] for c in row["cells"].values() if c.get("command")})]
    lines.append("")
    return lines


def model_card(name: str, rows: list[dict[str, Any]]) -> str:
    """The card text of ``name`` from its merged rows (one per test set, in table order, one weights sha256)."""
    if len({row["weights_sha256"] for row in rows}) > 1:
        raise ValueError(f"the rows of {name}'s card come from different weights; pass those of one sha256")
    first = rows[0]
    regression = first["task"] == "regression"
    lip = first["lipschitz"]
    cfg = _registered_cfg(name)
    successor = retired_successor(name)
    same = cfg is not None and cfg.sha256 == first["weights_sha256"] and not successor  # retired: no origin to link
    data = card_metadata(name=name, task=first["task"], license=first.get("license"),
                         origin=cfg.origin if same else None, datasets=[row["dataset"] for row in rows],
                         tags=card_tags(task=first["task"], certified=lip.get("bound") is not None,
                                        family=arch_family(first.get("model")), source=first.get("source")),
                         eval_results=_eval_results(rows))
    lines = [f"# {name}", "",
             f"Architecture `{first.get('model')}`, weights tag `{first.get('tag')}`"
             + (f", produced by {first['source']}" if first.get("source") else "")
             + (f", trained on `{first['trained_on']}`" if first.get("trained_on") else "") + ".", ""]
    if successor:
        lines += [f"**Retired weights**: no longer hosted; `{successor}` continues from them. `dsnet-zoo train {name} "
                  "--out DIR` retrains them from their recorded recipe (a recipe starting from them does it by "
                  "itself).", ""]
    lines += [f"- weights sha256: `{first.get('weights_sha256')}`",
              f"- parameters: {first.get('num_params'):,}" if first.get("num_params") else "- parameters: unknown"]
    if not regression:
        lines.append("- certified L2 Lipschitz bound (pixel space): "
                     + (f"{lip['bound']:.6g} ({lip.get('method')})" if lip.get("bound") is not None else
                        "none: no certified accuracy is claimed"))
    lines.append("")
    units = ("Values as measured; the weights run as stored (float32) and cast to float64." if regression else
             "Accuracy in %, eps in pixel units (images in [0, 1]).")
    lines += ["## Evaluation", "",
              f"{units} Generated from `eval/results/` by `python eval/leaderboard.py`. Each table is one test set, "
              "named in its heading; `n` is the number of examples a value was measured on (the first `n` of the "
              "set), the largest measured.", ""]
    for row in rows:
        lines += _section(row)
    return render_card(data, "\n".join(lines))


def _registered_cfg(name: str):
    try:
        return get_pretrained_cfg(name, retired=True)
    except UnknownModelError:
        return None


def write_model_cards(results: list[dict[str, Any]], cards_dir: str | os.PathLike) -> list[Path]:
    """Write one card per evaluated ``arch.tag`` (checkpoint evaluations get none)."""
    by_name: dict[str, list[dict[str, Any]]] = {}
    for row in merge_results(results).values():
        if row.get("tag"):
            by_name.setdefault(row["name"], []).append(row)
    written = []
    for name, rows in sorted(by_name.items()):
        shas = {row["weights_sha256"] for row in rows}
        cfg = _registered_cfg(name)
        sha = cfg.sha256 if cfg is not None else None
        if sha not in shas:
            sha = max(rows, key=lambda row: row["finished"])["weights_sha256"]
        rows = sorted((row for row in rows if row["weights_sha256"] == sha),
                      key=lambda row: table_order((row["dataset"], row["split"], row["md5"] or "")))
        path = Path(cards_dir) / f"{name}.md"
        atomic_write_text(path, model_card(name, rows))
        written.append(path)
    return written
