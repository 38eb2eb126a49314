"""The leaderboard (``eval/LEADERBOARD.md``) and the accuracy-vs-eps plot, rebuilt from result files.

Every number in them comes from a result JSON under ``eval/results/`` and is shown with the command
that reproduces it. Each table is one exact set of images (dataset, split, number of images, file md5),
headed by the set's description from the results ("CIFAR-10 test, 9,977 of 10,000 images (exact
pixels)"); numbers measured on different sets are never mixed in one row. The primary tables, first,
are the full real test sets (``cifar10-full``, ``cifar100-full``). Several result files for one model
and set are merged metric by metric; for each metric the most recent file wins.
"""
from __future__ import annotations

import json
import os
import textwrap
from pathlib import Path
from typing import Any, Iterable

from .metrics import DEFAULT_CERT_EPS, PAPER_EPS, format_eps
from .runner import SCHEMA, atomic_write_text

__all__ = ["load_results", "merge_results", "leaderboard_markdown", "write_leaderboard", "plot_accuracy_vs_eps",
           "DATASET_TITLES", "PRIMARY_DATASETS", "set_title", "set_order", "sorted_sets"]

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


def _set_key(r: dict[str, Any]) -> tuple[str, str, int, str]:
    """The exact set a result was measured on: (dataset, split, number of images, file md5)."""
    d = r["dataset"]
    return d["name"], d.get("split", "test"), int(d["n"]), d.get("md5") or ""


def set_title(dataset: dict[str, Any]) -> str:
    """The description of the exact set of a result's ``dataset`` record (older files: from the name)."""
    if dataset.get("description"):
        return dataset["description"]
    title = DATASET_TITLES.get(dataset["name"], dataset["name"])
    return f"{title}, {int(dataset['n']):,} images" if dataset.get("n") else title


def set_order(dataset: dict[str, Any]) -> tuple:
    """Sort key of exact sets (a result's ``dataset`` record) in table order: the full real test sets
    first, then by dataset, split and size (largest first)."""
    order = list(DATASET_TITLES)
    name, split, n = dataset["name"], dataset.get("split", "test"), int(dataset["n"])
    primary = name in PRIMARY_DATASETS and split == "test" and n == dataset.get("available", -1)
    return (not primary, order.index(name) if name in order else len(order), name, split != "test", split, -n,
            dataset.get("md5") or "")


def sorted_sets(sets: Iterable[tuple[tuple[str, str, int, str], dict[str, Any]]]) -> list:
    """``(set key, dataset record)`` pairs sorted by :func:`set_order`."""
    return sorted(sets, key=lambda item: set_order(item[1]))


def merge_results(results: Iterable[dict[str, Any]]) -> dict[tuple[str, str, str, int, str], dict[str, Any]]:
    """``{(name, dataset, split, n, md5): merged}``, one entry per model and exact set, where
    ``merged['metrics'][m]`` is the most recent record of metric ``m`` with its ``n``, ``command`` and
    source file, and ``merged['set']`` the dataset record (with its ``description``)."""
    merged: dict[tuple[str, str, str, int, str], dict[str, Any]] = {}
    for r in results:
        key = (r["name"], *_set_key(r))
        m = merged.setdefault(key, {"name": r["name"], "model": r.get("model"), "tag": r.get("tag"),
                                    "dataset": r["dataset"]["name"], "split": r["dataset"].get("split", "test"),
                                    "n": int(r["dataset"]["n"]), "set": dict(r["dataset"]), "set_finished": "",
                                    "source": r.get("source"),
                                    "license": r.get("license"), "trained_on": r.get("trained_on"),
                                    "lipschitz": r.get("lipschitz") or {}, "num_params": r.get("num_params"),
                                    "weights_sha256": r.get("weights_sha256"), "metrics": {}})
        if r["run"].get("finished", "") >= m["set_finished"]:  # the newest file describes the set
            m["set"], m["set_finished"] = dict(r["dataset"]), r["run"].get("finished", "")
        m["description"] = set_title(m["set"])
        for name, rec in r["metrics"].items():
            cand = {**rec, "n": r["dataset"]["n"], "command": r.get("command"), "file": r.get("_file"),
                    "finished": r["run"].get("finished", ""), "device": r["run"].get("device"),
                    "wall_time_s": r["run"].get("wall_time_s")}
            old = m["metrics"].get(name)
            if old is None or (cand["n"], cand["finished"]) > (old["n"], old["finished"]):
                m["metrics"][name] = cand
                if name == "certified" or not m["lipschitz"]:
                    m["lipschitz"] = r.get("lipschitz") or {}
    return merged


def _sets(merged: dict) -> list:
    """The exact sets in ``merged``, in table order, as ``(key, dataset record)``."""
    seen: dict[tuple, dict[str, Any]] = {}
    for k, m in merged.items():
        seen.setdefault(k[1:], m["set"])
    return sorted_sets(seen.items())


def _pct(v: Any) -> str:
    if v is None:
        return "null"
    return f"{100 * v:.1f}"


def _acc(metric: dict | None, key: str) -> str:
    if metric is None:
        return "–"
    acc = metric.get("accuracy") or {}
    if key not in acc:
        return "–"
    return _pct(acc[key])


def leaderboard_markdown(results: list[dict[str, Any]]) -> str:
    merged = merge_results(results)
    sets = _sets(merged)
    lines = [
        "# dsnet_zoo leaderboard",
        "",
        "Generated by `python eval/leaderboard.py` from the result files in `eval/results/`; do not edit by hand.",
        "Each table is one exact set of test images, named in its heading. The primary tables come first: the",
        "full real test sets (`cifar10-full`: CIFAR-10 test, 9,977 of the 10,000 images, the others could not be",
        "recovered; `cifar100-full`: CIFAR-100 test, all 10,000 images), byte-exact pixels. `cifar10-real`, the",
        "first 1,017 CIFAR-10 test images, is kept for the comparison with the paper (which used the first 1,024).",
        "",
        "Accuracies in %. Certified: L2, radius > eps from the model's provable Lipschitz bound (the larger of the",
        "global and the per-class-pair certificate); `null` = the model has no certified bound (nothing claimed).",
        "AutoAttack: standard version (APGD-CE, APGD-T, FAB-T, Square 5,000 queries). paper-pgd: Foolbox",
        "`L2PGD(steps=10)`, the paper's protocol (a weak attack). `–` = not evaluated. eps are in pixel units",
        "(images in [0, 1]). Every run passed the per-example cross-checks (certified implies unbroken).",
        "",
    ]
    cert_keys = [f"L2:{format_eps(e)}" for e in DEFAULT_CERT_EPS]
    for key, d in sets:
        rows = [m for k, m in merged.items() if k[1:] == key]
        rows.sort(key=lambda m: -((m["metrics"].get("clean") or {}).get("accuracy") or 0))
        title = max(rows, key=lambda m: m["set_finished"])["description"]
        split = "" if key[1] == "test" else f", split `{key[1]}`"
        lines += [f"## {title} (`{key[0]}`{split})", ""]
        head = (["model", "source", "L bound", "n", "clean"] + [f"cert {k[3:]}" for k in cert_keys]
                + [f"AA {n} {format_eps(e)}" for n, e in AA_COLUMNS]
                + [f"PGD-10 {format_eps(e)}" for e in PAPER_COLUMNS])
        lines.append("| " + " | ".join(head) + " |")
        lines.append("|" + "---|" * len(head))
        for m in rows:
            met = m["metrics"]
            bound = m["lipschitz"].get("bound")
            ns = sorted({v["n"] for v in met.values()})
            cells = [f"`{m['name']}`", m.get("source") or "", "–" if bound is None else f"{bound:.4g}",
                     "/".join(str(x) for x in ns), _pct((met.get("clean") or {}).get("accuracy"))]
            cert = met.get("certified")
            cells += [(_acc(cert, k) if cert else "–") for k in cert_keys]
            cells += [_acc(met.get("autoattack"), f"{n}:{format_eps(e)}") for n, e in AA_COLUMNS]
            cells += [_acc(met.get("paper-pgd"), f"L2:{format_eps(e)}") for e in PAPER_COLUMNS]
            lines.append("| " + " | ".join(cells) + " |")
        lines += ["", "Reproduce:", ""]
        for m in rows:
            cmds = sorted({v["command"] for v in m["metrics"].values() if v.get("command")})
            for c in cmds:
                lines.append(f"- `{c}`")
        lines.append("")
    if not merged:
        lines += ["No results yet: run `python eval/leaderboard.py`.", ""]
    return "\n".join(lines)


def plot_accuracy_vs_eps(results: list[dict[str, Any]], path: str | os.PathLike) -> Path | None:
    """Accuracy vs L2 eps per dataset: certified (solid), AutoAttack (markers), paper-pgd (dashed)."""
    merged = merge_results(results)
    if not merged:
        return None
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    sets = _sets(merged)
    fig, axes = plt.subplots(1, len(sets), figsize=(6.5 * len(sets), 4.8), squeeze=False)
    names = sorted({mkey[0] for mkey in merged})  # one color per model across the panels
    for ax, (key, _) in zip(axes[0], sets):
        title = ""
        for mkey, m in sorted(merged.items()):
            if mkey[1:] != key:
                continue
            name, title = m["name"], m["description"]
            color = f"C{names.index(name) % 10}"
            clean = (m["metrics"].get("clean") or {}).get("accuracy")
            for metric, style, label in (("certified", "-o", "certified"), ("paper-pgd", "--^", "PGD-10"),
                                         ("autoattack", "s", "AutoAttack")):
                rec = m["metrics"].get(metric)
                if not rec:
                    continue
                pts = sorted((_eps_value(e[3:]), v) for e, v in (rec.get("accuracy") or {}).items()
                             if e.startswith("L2:") and v is not None)
                if not pts:
                    continue
                if clean is not None and metric != "autoattack":
                    pts = [(0.0, clean)] + pts
                xs, ys = zip(*pts)
                ax.plot(xs, [100 * y for y in ys], style, color=color, label=f"{name} {label}",
                        markerfacecolor="none" if metric == "autoattack" else color)
        ax.set_title(textwrap.fill(f"{title} ({key[0]})", 60), fontsize=9)
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
    from .metrics import parse_eps

    return parse_eps(text)


def write_leaderboard(results: list[dict[str, Any]], path: str | os.PathLike) -> Path:
    path = Path(path)
    atomic_write_text(path, leaderboard_markdown(results))
    return path
