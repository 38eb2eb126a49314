"""The leaderboard (``eval/LEADERBOARD.md``, ``eval/leaderboard.json``) and the accuracy-vs-eps plot,
rebuilt from result files.

Every number in them comes from a result JSON under ``eval/results/`` and is shown with the command
that reproduces it and the number of examples it was measured on. Results are merged per model weights
(``arch.tag`` and weights sha256) and test set (dataset, split, md5 of its files); a run on the first
``n`` examples (``--n``) belongs to its set. Each number (clean accuracy, certified accuracy at one
radius, AutoAttack at one threat, ...) is taken from the result with the largest ``n``, then the most
recent, and every cell says its ``n``: a smaller or later run never hides a larger one. Each table is
one test set, headed by the description of the largest set measured in it, with the description of
every other ``n`` below it. The primary tables, first, are the full real test sets (``cifar10-full``,
``cifar100-full``); regression models (:mod:`.regression`) get their own tables. Ported weights (the
paper's checkpoints) also get a table of their authors' published numbers (from the registry) next to the
AutoAttack and PGD-10 numbers measured on ``cifar10-full``.
"""
from __future__ import annotations

import json
import os
import textwrap
from pathlib import Path
from typing import Any, Iterable

from ..registry import UnknownModelError, arch_info, get_pretrained_cfg, retired_successor, split_model_name
from .metrics import DEFAULT_CERT_EPS, format_eps, parse_eps
from .regression import REGRESSION_METRICS
from .runner import SCHEMA, atomic_write_text

__all__ = ["load_results", "merge_results", "leaderboard_markdown", "write_leaderboard", "leaderboard_json",
           "write_leaderboard_json", "plot_accuracy_vs_eps", "authors_numbers", "DATASET_TITLES", "PRIMARY_DATASETS",
           "table_order", "threat_order", "LEADERBOARD_JSON_SCHEMA"]

# Titles of the whole test split of each dataset (in table order), for result files without a description.
DATASET_TITLES = {
    "cifar10-full": "CIFAR-10 test, 9,977 of 10,000 images (exact pixels)",
    "cifar100-full": "CIFAR-100 test, all 10,000 images (exact pixels)",
    "cifar10-real": "CIFAR-10, first 1,017 test images (exact pixels)",
    "cifar100-real": "CIFAR-100, first 916 test images (exact pixels)",
    "cifar10": "CIFAR-10 test (official)",
    "cifar100": "CIFAR-100 test (official)",
}
# The leaderboard's primary tables: the whole test split of these.
PRIMARY_DATASETS = ("cifar10-full", "cifar100-full")

AA_COLUMNS = (("L2", 0.5), ("L2", 36 / 255), ("Linf", 8 / 255))
PAPER_COLUMNS = (36 / 255, 0.5, 1.0)
CERT_KEYS = tuple(f"L2:{format_eps(e)}" for e in DEFAULT_CERT_EPS)
AA_KEYS = tuple(f"{n}:{format_eps(e)}" for n, e in AA_COLUMNS)
PAPER_KEYS = tuple(f"L2:{format_eps(e)}" for e in PAPER_COLUMNS)
REGRESSION_COLUMNS = (("mse", "float32"), ("mse", "float64"), ("conserved_sum_error", "float32"),
                      ("conserved_sum_error", "float64"))
LEADERBOARD_JSON_SCHEMA = "dsnet_zoo.leaderboard/1"


def load_results(results_dir: str | os.PathLike) -> list[dict[str, Any]]:
    """Every result JSON in ``results_dir`` (side files ``*.examples.json`` are skipped)."""
    out = []
    for f in sorted(Path(results_dir).glob("*.json")):
        if f.name.endswith(".examples.json"):
            continue
        try:
            r = json.loads(f.read_text())
        except json.JSONDecodeError as e:
            raise ValueError(f"{f} is not valid JSON ({e}); delete it and rerun its command") from e
        if r.get("schema") != SCHEMA:
            continue
        r["_file"] = f.name
        out.append(r)
    return out


def _task(r: dict[str, Any]) -> str:
    return r.get("task", "classification")


def _cells(r: dict[str, Any]) -> Iterable[tuple[tuple[str, str], Any]]:
    """The numbers of one result as ``((metric, key), value)``: ``('clean', '')``, ``('certified',
    'L2:36/255')``, ``('autoattack', 'Linf:8/255')``, ``('mse', 'float32')``, ..."""
    for metric, rec in (r.get("metrics") or {}).items():
        if _task(r) == "regression":
            for key, value in (rec.get("value") or {}).items():
                yield (metric, key), value
        elif metric == "clean":
            yield ("clean", ""), rec.get("accuracy")
        else:
            for key, value in (rec.get("accuracy") or {}).items():
                yield (metric, key), value


def merge_results(results: Iterable[dict[str, Any]]) -> dict[tuple[str, str, str, str, str], dict[str, Any]]:
    """``{(name, weights_sha256, dataset, split, md5): row}``, one row per model weights and test set.

    ``row['cells'][(metric, key)]`` is one number (see :func:`_cells`) from the result with the largest
    ``n``, then the most recent: ``{'value', 'n', 'description', 'command', 'file', 'finished'}``.
    ``row['sets']`` maps each ``n`` found to its set's description, ``row['title']`` describes the
    largest set, ``row['finished']`` says when its newest result finished, ``row['lipschitz']`` is the
    bound of the result the certified numbers come from (else the newest's). The model's metadata
    (source, license, parameters) is the newest result's."""
    merged: dict[tuple[str, str, str, str, str], dict[str, Any]] = {}
    for r in results:
        d = r["dataset"]
        key = (r["name"], r.get("weights_sha256") or "", d["name"], d.get("split", "test"), d.get("md5") or "")
        finished = (r.get("run") or {}).get("finished", "")
        row = merged.setdefault(key, {"name": r["name"], "weights_sha256": r.get("weights_sha256"),
                                      "dataset": d["name"], "split": d.get("split", "test"), "md5": d.get("md5"),
                                      "task": _task(r), "cells": {}, "sets": {}, "_newest": None, "_largest": None})
        if _task(r) != row["task"]:
            raise ValueError(f"{r.get('_file') or r['name']}: a {_task(r)} result for {r['name']} on {d['name']}, "
                             f"which also has {row['task']} results")
        n = int(d["n"])
        description = _set_title(d)
        row["sets"].setdefault(n, description)
        if row["_newest"] is None or finished >= row["_newest"][0]:
            row["_newest"] = (finished, r)
        if row["_largest"] is None or (n, finished) > row["_largest"][:2]:
            row["_largest"] = (n, finished, description)
        for ck, value in _cells(r):
            cand = {"value": value, "n": n, "description": description, "command": r.get("command"),
                    "file": r.get("_file"), "finished": finished, "lipschitz": r.get("lipschitz") or {}}
            old = row["cells"].get(ck)
            if old is None or (cand["n"], cand["finished"]) > (old["n"], old["finished"]):
                row["cells"][ck] = cand
    for row in merged.values():
        row["finished"], newest = row.pop("_newest")
        row["title"] = row.pop("_largest")[2]
        for k in ("model", "tag", "source", "license", "trained_on", "num_params", "checkpoint"):
            row[k] = newest.get(k)
        cert = [c for (m, _), c in row["cells"].items() if m == "certified"]
        row["lipschitz"] = max(cert, key=lambda c: (c["n"], c["finished"]))["lipschitz"] if cert \
            else (newest.get("lipschitz") or {})
    return merged


def _set_title(dataset: dict[str, Any]) -> str:
    """The description of the exact set of a result's ``dataset`` record (older files: from the name)."""
    if dataset.get("description"):
        return dataset["description"]
    title = DATASET_TITLES.get(dataset["name"], dataset["name"])
    return f"{title}, {int(dataset['n']):,} images" if dataset.get("n") else title


def table_order(table: tuple[str, str, str]) -> tuple:
    """Sort key of a test set ``(dataset, split, md5)``: the primary full real test sets first, then the
    known datasets in :data:`DATASET_TITLES` order, then by name."""
    name, split, md5 = table
    order = list(DATASET_TITLES)
    primary = name in PRIMARY_DATASETS and split == "test"
    return (not primary, order.index(name) if name in order else len(order), name, split != "test", split, md5)


def _tables(merged: dict, task: str) -> list[tuple[tuple[str, str, str], list[dict[str, Any]]]]:
    """``[((dataset, split, md5), rows)]`` of one task, in table order."""
    tables: dict[tuple[str, str, str], list[dict[str, Any]]] = {}
    for row in merged.values():
        if row["task"] == task:
            tables.setdefault((row["dataset"], row["split"], row["md5"] or ""), []).append(row)
    return sorted(tables.items(), key=lambda item: table_order(item[0]))


def _table_title(rows: list[dict[str, Any]]) -> str:
    """The description of the largest set measured in a table."""
    return max(((n, d) for row in rows for n, d in row["sets"].items()), key=lambda t: t[0])[1]


def _labels(merged: dict) -> dict[tuple, str]:
    """Row label: ``arch.tag``, plus the weights' sha256 prefix when results of several weights exist, and
    ``(retired)`` for weights no longer hosted (their card names the successor)."""
    shas: dict[str, set] = {}
    for k in merged:
        shas.setdefault(k[0], set()).add(k[1])
    return {k: (k[0] if len(shas[k[0]]) == 1 else f"{k[0]} (weights {k[1][:8] or 'unknown'})")
            + (" (retired)" if retired_successor(k[0]) else "") for k in merged}


def _pct(v: Any) -> str:
    return "null" if v is None else f"{100 * v:.1f}"


def _cell(row: dict[str, Any], metric: str, key: str, fmt=_pct) -> str:
    c = row["cells"].get((metric, key))
    if c is None:
        return "–"
    return f"{fmt(c['value'])} (n={c['n']})"


def _sci(v: Any) -> str:
    return "null" if v is None else f"{v:.3g}"


def _commands(rows: list[dict[str, Any]]) -> list[str]:
    out: list[str] = []
    for row in rows:
        for c in sorted({c["command"] for c in row["cells"].values() if c.get("command")}):
            if c not in out:
                out.append(c)
    return out


def _set_notes(rows: list[dict[str, Any]], title: str) -> list[str]:
    """One line per ``n`` of the table whose set is not the title's."""
    sets: dict[int, str] = {}
    for row in rows:
        for c in row["cells"].values():
            sets.setdefault(c["n"], c["description"])
    extra = sorted((n, d) for n, d in sets.items() if d != title)
    if not extra:
        return []
    return ["Cells measured on fewer examples: " + "; ".join(f"n={n}: {d}" for n, d in extra) + ".", ""]


def _clean_value(row: dict[str, Any]) -> float:
    c = row["cells"].get(("clean", ""))
    return -(c["value"] or 0.0) if c else 0.0


def authors_numbers(name: str) -> dict[str, Any] | None:
    """What the authors of ported weights reported, from the registry record (``metrics['paper']``):
    ``{'what', 'clean', 'paper_pgd': {'L2:EPS': accuracy}}`` at the leaderboard's PGD-10 radii, accuracies
    as fractions; ``None`` for weights without such a record (the zoo's own)."""
    try:
        cfg = get_pretrained_cfg(name, retired=True)
    except UnknownModelError:
        return None
    paper = ((cfg.metrics if cfg is not None else None) or {}).get("paper")
    if not paper:
        return None
    pgd = {}
    for key, ref in zip(PAPER_KEYS, PAPER_COLUMNS):
        # the registry stores the radii to 10 digits (36/255 = 0.1411764706)
        hit = [a for e, a in zip(paper["eps"], paper["robust_accuracy"]) if abs(e - ref) < 1e-6]
        pgd[key] = hit[0] if hit else None
    return {"what": paper["what"], "clean": paper.get("clean_accuracy"), "paper_pgd": pgd}


def _authors_markdown(merged: dict, labels: dict) -> list[str]:
    """The ported checkpoints' own numbers next to what is measured here on the primary CIFAR-10 set."""
    rows = [row for (dataset, split, _), table in _tables(merged, "classification")
            if dataset == "cifar10-full" and split == "test" for row in table if authors_numbers(row["name"])]
    if not rows:
        return []
    rows.sort(key=lambda row: labels[_key(row)])
    # every port so far reports on the same set; name each distinct one rather than assume it
    what = "; ".join(dict.fromkeys(authors_numbers(row["name"])["what"] for row in rows))
    aa = [k for k in AA_KEYS if k.startswith("L2:")]
    head = (["model", "authors: clean"] + [f"authors: PGD-10 {k[3:]}" for k in PAPER_KEYS] + ["clean"]
            + [f"AA {k.replace(':', ' ')}" for k in aa] + [f"PGD-10 {k[3:]}" for k in PAPER_KEYS])
    intro = (f"The `authors:` columns are the numbers the authors published ({what}; recorded in the registry). "
             "The other columns are measured here on `cifar10-full` (CIFAR-10 test, exact pixels), each cell with "
             "its `n` (the first `n` images of that set) and the same as in that table above. Standard AutoAttack "
             "far below the authors' PGD-10 number at the same radius means that PGD-10 overstated the robustness.")
    lines = ["## The paper's checkpoints: the authors' numbers next to AutoAttack", ""]
    lines += textwrap.wrap(intro, 110) + ["", "| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for row in rows:
        a = authors_numbers(row["name"])
        cells = [f"`{labels[_key(row)]}`", _pct(a["clean"])] + [_pct(a["paper_pgd"][k]) for k in PAPER_KEYS]
        cells += [_cell(row, "clean", "")] + [_cell(row, "autoattack", k) for k in aa]
        cells += [_cell(row, "paper-pgd", k) for k in PAPER_KEYS]
        lines.append("| " + " | ".join(cells) + " |")
    return lines + [""]


def leaderboard_markdown(results: list[dict[str, Any]]) -> str:
    merged = merge_results(results)
    labels = _labels(merged)
    lines = [
        "# dsnet_zoo leaderboard",
        "",
        "Generated by `python eval/leaderboard.py` from the result files in `eval/results/`; do not edit by hand",
        "(`eval/leaderboard.json` holds the same numbers for programs). Each table is one test set, named in its",
        "heading. The primary tables come first: the full real test sets (`cifar10-full`: CIFAR-10 test, 9,977 of",
        "the 10,000 images, the others could not be recovered; `cifar100-full`: CIFAR-100 test, all 10,000",
        "images), byte-exact pixels. `cifar10-real`, the first 1,017 CIFAR-10 test images, is kept for the",
        "comparison with the paper (which used the first 1,024).",
        "",
        "Every cell says `n`, the number of images it was measured on: the first `n` of the table's set (in the",
        "set's order). Each number comes from the result with the largest `n`, then the most recent; runs on",
        "fewer images never replace it. Accuracies in %. Certified: L2, radius > eps from the model's provable",
        "Lipschitz bound (the larger of the global and the per-class-pair certificate); `null` = the model has no",
        "certified bound (nothing claimed). AutoAttack: standard version (APGD-CE, APGD-T, FAB-T, Square 5,000",
        "queries). paper-pgd: Foolbox `L2PGD(steps=10)`, the paper's protocol (a weak attack). `–` = not",
        "evaluated. eps are in pixel units (images in [0, 1]). Every run passed the per-example cross-checks",
        "(certified implies unbroken).",
        "",
    ]
    for (dataset, split, _), rows in _tables(merged, "classification"):
        rows.sort(key=lambda row: (_clean_value(row), labels[_key(row)]))
        title = _table_title(rows)
        where = "" if split == "test" else f", split `{split}`"
        lines += [f"## {title} (`{dataset}`{where})", ""]
        head = (["model", "source", "L bound", "clean"] + [f"cert {k[3:]}" for k in CERT_KEYS]
                + [f"AA {k.replace(':', ' ')}" for k in AA_KEYS] + [f"PGD-10 {k[3:]}" for k in PAPER_KEYS])
        lines.append("| " + " | ".join(head) + " |")
        lines.append("|" + "---|" * len(head))
        for row in rows:
            bound = row["lipschitz"].get("bound")
            cells = [f"`{labels[_key(row)]}`", row.get("source") or "", "–" if bound is None else f"{bound:.4g}",
                     _cell(row, "clean", "")]
            cells += [_cell(row, "certified", k) for k in CERT_KEYS]
            cells += [_cell(row, "autoattack", k) for k in AA_KEYS]
            cells += [_cell(row, "paper-pgd", k) for k in PAPER_KEYS]
            lines.append("| " + " | ".join(cells) + " |")
        lines.append("")
        lines += _set_notes(rows, title)
        lines += ["Reproduce:", ""] + [f"- `{c}`" for c in _commands(rows)] + [""]
    lines += _authors_markdown(merged, labels)
    regression = _tables(merged, "regression")
    if regression:
        lines += ["## Regression models", "",
                  "Measured on CPU, the weights run as stored (float32) and cast to float64. "
                  f"Test MSE: {REGRESSION_METRICS['mse'].split(': ', 1)[1]}. Conserved-sum error: "
                  f"{REGRESSION_METRICS['conserved_sum_error']}: the models conserve the sum of their state "
                  "by construction, so this is float rounding.", ""]
    for (dataset, split, _), rows in regression:
        rows.sort(key=lambda row: (row["cells"].get(("mse", "float32"), {}).get("value") or float("inf"),
                                   labels[_key(row)]))
        title = _table_title(rows)
        where = "" if split == "test" else f", split `{split}`"
        lines += [f"### {title} (`{dataset}`{where})", ""]
        head = ["model", "source", "test MSE float32", "test MSE float64", "max abs sum error float32",
                "max abs sum error float64"]
        lines += ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
        for row in rows:
            cells = [f"`{labels[_key(row)]}`", row.get("source") or ""]
            cells += [_cell(row, m, k, _sci) for m, k in REGRESSION_COLUMNS]
            lines.append("| " + " | ".join(cells) + " |")
        lines.append("")
        lines += _set_notes(rows, title)
        lines += ["Reproduce:", ""] + [f"- `{c}`" for c in _commands(rows)] + [""]
    if not merged:
        lines += ["No results yet: run `python eval/leaderboard.py`.", ""]
    return "\n".join(lines)


def write_leaderboard(results: list[dict[str, Any]], path: str | os.PathLike) -> Path:
    path = Path(path)
    atomic_write_text(path, leaderboard_markdown(results))
    return path


# ------------------------------------------------------------------------------------------------
# machine-readable leaderboard

_JSON_FIELDS = {
    "name": "arch.tag of the weights (RobustBench: the model id)",
    "architecture": "the dsnet_zoo architecture (`dsnet_zoo.create(architecture)`)",
    "family": "the architecture's family in the registry, null when not registered here",
    "number_of_parameters": "parameters of the model as evaluated",
    "weights_sha256": "sha256 of the weights file",
    "source": "who produced the weights: dsnet_zoo or paper-authors",
    "link": "where the weights come from (registry `origin`), null when not registered here",
    "license": "license of the weights",
    "trained_on": "the training set recorded with the weights",
    "dataset": "the test set (`dsnet_zoo.data.load_dataset` name, or a regression set)",
    "split": "its split",
    "dataset_md5": "md5 of the set's files",
    "dataset_description": "the largest set measured in this row, exactly (RobustBench: dataset)",
    "sets": "description of the exact set of every n that occurs in this row",
    "number_forward_passes": "forward passes per prediction (RobustBench field; 1: deterministic models)",
    "lipschitz_bound": "the provable pixel-space L2 Lipschitz bound used by the certificate, null = none",
    "clean_acc": "clean accuracy in % (RobustBench: clean_acc), null = not run",
    "clean_acc_n": "images clean_acc was measured on",
    "autoattack_acc": "robust accuracy in % under standard AutoAttack per threat NORM:EPS (RobustBench: "
                      "autoattack_acc, one threat per entry there), null = not run",
    "autoattack_acc_n": "images per AutoAttack number, null = not run",
    "certified_acc": "certified L2 accuracy in % per radius L2:EPS, null with n = no bound (nothing claimed), "
                     "null without n = not run",
    "certified_acc_n": "images per certified number",
    "paper_pgd_acc": "accuracy in % under the paper's PGD-10 protocol per L2:EPS (a weak attack)",
    "paper_pgd_acc_n": "images per PGD-10 number",
    "reported_by_authors": "ported weights: the authors' own clean and PGD-10 accuracy in % per L2:EPS and "
                           "the set they measured on (from the registry), null for the zoo's own weights",
    "test_mse": "regression: test MSE per dtype the weights ran in (float32 as stored, float64 cast)",
    "test_mse_n": "examples per test_mse number",
    "conserved_sum_max_abs_error": "regression: max |sum f(x) - sum x| per dtype (sums in float64)",
    "conserved_sum_max_abs_error_n": "examples per conserved-sum number",
    "commands": "the commands that reproduce the numbers of this row",
    "result_files": "the files in eval/results/ the numbers come from",
}


PERCENT_DECIMALS = 2


def _percent(fraction: float | None) -> float | None:
    """A fraction as a percentage rounded to ``PERCENT_DECIMALS`` (RobustBench's precision): exact
    enough that the count ``round(acc * n / 100)`` is recovered for any n up to 10,000, and free of
    binary noise such as ``45.800000000000004``."""
    return None if fraction is None else round(100 * fraction, PERCENT_DECIMALS)


def _values(row: dict[str, Any], metric: str, keys: Iterable[str], convert) -> tuple[dict, dict]:
    vals, ns = {}, {}
    extra = sorted((k for m, k in row["cells"] if m == metric and k not in keys), key=threat_order)
    for k in [*keys, *extra]:
        c = row["cells"].get((metric, k))
        vals[k] = None if c is None else convert(c["value"])
        ns[k] = None if c is None else c["n"]
    return vals, ns


def _as_is(value: float | None) -> float | None:
    return value


def _registry_info(name: str) -> dict[str, Any]:
    try:
        cfg = get_pretrained_cfg(name, retired=True)
        family = arch_info(split_model_name(name)[0]).get("family")
    except UnknownModelError:
        return {"link": None, "family": None}
    hosted = cfg is not None and not retired_successor(name)
    return {"link": cfg.origin if hosted else None, "family": family}


def leaderboard_json(results: list[dict[str, Any]]) -> dict[str, Any]:
    """The leaderboard as data: one entry per row of the markdown tables, in the same order, with
    the fields of RobustBench's ``model_info`` entries where they apply (see ``fields``)."""
    merged = merge_results(results)
    labels = _labels(merged)
    entries = []
    for task in ("classification", "regression"):
        for _, rows in _tables(merged, task):
            if task == "classification":
                rows.sort(key=lambda row: (_clean_value(row), labels[_key(row)]))
            else:
                rows.sort(key=lambda row: (row["cells"].get(("mse", "float32"), {}).get("value") or float("inf"),
                                           labels[_key(row)]))
            for row in rows:
                reg = _registry_info(row["name"])
                e = {"name": row["name"], "label": labels[_key(row)], "task": task,
                     "architecture": row.get("model"), "family": reg["family"],
                     "number_of_parameters": row.get("num_params"), "weights_sha256": row.get("weights_sha256"),
                     "source": row.get("source"), "link": reg["link"], "license": row.get("license"),
                     "trained_on": row.get("trained_on"), "dataset": row["dataset"], "split": row["split"],
                     "dataset_md5": row["md5"], "dataset_description": row["title"],
                     "sets": {str(n): d for n, d in sorted(row["sets"].items(), reverse=True)},
                     "number_forward_passes": 1}
                if task == "classification":
                    clean = row["cells"].get(("clean", ""))
                    e["lipschitz_bound"] = row["lipschitz"].get("bound")
                    e["clean_acc"] = None if clean is None else _percent(clean["value"])
                    e["clean_acc_n"] = None if clean is None else clean["n"]
                    e["autoattack_acc"], e["autoattack_acc_n"] = _values(row, "autoattack", AA_KEYS, _percent)
                    e["certified_acc"], e["certified_acc_n"] = _values(row, "certified", CERT_KEYS, _percent)
                    e["paper_pgd_acc"], e["paper_pgd_acc_n"] = _values(row, "paper-pgd", PAPER_KEYS, _percent)
                    a = authors_numbers(row["name"])
                    e["reported_by_authors"] = None if a is None else {
                        "what": a["what"], "clean_acc": _percent(a["clean"]),
                        "paper_pgd_acc": {k: _percent(v) for k, v in a["paper_pgd"].items()}}
                else:
                    e["test_mse"], e["test_mse_n"] = _values(row, "mse", ("float32", "float64"), _as_is)
                    e["conserved_sum_max_abs_error"], e["conserved_sum_max_abs_error_n"] = _values(
                        row, "conserved_sum_error", ("float32", "float64"), _as_is)
                e["commands"] = sorted({c["command"] for c in row["cells"].values() if c.get("command")})
                e["result_files"] = sorted({c["file"] for c in row["cells"].values() if c.get("file")})
                entries.append(e)
    return {"schema": LEADERBOARD_JSON_SCHEMA,
            "generated_by": "python eval/leaderboard.py (from eval/results/; do not edit by hand)",
            "units": f"accuracies in %, rounded to {PERCENT_DECIMALS} decimals (the count is round(acc * n / 100)); "
                     "eps in pixel units (images in [0, 1])",
            "fields": _JSON_FIELDS, "entries": entries}


def _key(row: dict[str, Any]) -> tuple[str, str, str, str, str]:
    return row["name"], row["weights_sha256"] or "", row["dataset"], row["split"], row["md5"] or ""


def write_leaderboard_json(results: list[dict[str, Any]], path: str | os.PathLike) -> Path:
    """Write :func:`leaderboard_json` to ``path`` atomically."""
    path = Path(path)
    atomic_write_text(path, json.dumps(leaderboard_json(results), indent=1, allow_nan=False) + "\n")
    return path


# ------------------------------------------------------------------------------------------------
# plot


def plot_accuracy_vs_eps(results: list[dict[str, Any]], path: str | os.PathLike) -> Path | None:
    """Accuracy vs L2 eps per test set: certified (solid), AutoAttack (markers), paper-pgd (dashed),
    each number from the largest ``n`` (given in the legend)."""
    merged = merge_results(results)
    tables = _tables(merged, "classification")
    if not tables:
        return None
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    labels = _labels(merged)
    fig, axes = plt.subplots(1, len(tables), figsize=(6.5 * len(tables), 4.8), squeeze=False)
    names = sorted(set(labels.values()))  # one color per model across the panels
    for ax, ((dataset, _, _), rows) in zip(axes[0], tables):
        for row in sorted(rows, key=lambda row: labels[_key(row)]):
            label = labels[_key(row)]
            color = f"C{names.index(label) % 10}"
            clean = row["cells"].get(("clean", ""))
            for metric, style, what in (("certified", "-o", "certified"), ("paper-pgd", "--^", "PGD-10"),
                                        ("autoattack", "s", "AutoAttack")):
                pts = sorted((_eps_value(k[3:]), c["value"], c["n"]) for (m, k), c in row["cells"].items()
                             if m == metric and k.startswith("L2:") and c["value"] is not None)
                if not pts:
                    continue
                if clean is not None and clean["value"] is not None and metric != "autoattack":
                    pts = [(0.0, clean["value"], clean["n"])] + pts
                xs, ys, ns = zip(*pts)
                n_text = "/".join(str(n) for n in sorted(set(ns), reverse=True))
                ax.plot(xs, [100 * y for y in ys], style, color=color, label=f"{label} {what} (n={n_text})",
                        markerfacecolor="none" if metric == "autoattack" else color)
        ax.set_title(textwrap.fill(f"{_table_title(rows)} ({dataset})", 60), fontsize=9)
        ax.set_xlabel("L2 radius eps (pixels in [0, 1])")
        ax.set_ylabel("accuracy (%)")
        ax.set_ylim(0, 100)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7)
    fig.tight_layout()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp.png")
    fig.savefig(tmp, dpi=110)
    plt.close(fig)
    os.replace(tmp, path)
    return path


def _eps_value(text: str) -> float:
    return parse_eps(text)


def threat_order(key: str) -> tuple:
    """Sort key of ``NORM:EPS`` (L2 before Linf, then by eps); other keys sort by name after them."""
    norm, sep, eps = key.partition(":")
    try:
        return (0, norm, _eps_value(eps), key) if sep else (1, key, 0.0, key)
    except ValueError:
        return (1, key, 0.0, key)
