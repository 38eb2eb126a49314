"""Every card the zoo writes passes huggingface_hub's own checks and says what the weights and results say.

The writers: ``dsnet-zoo publish`` / ``write_hub_repo`` (also training's export), the paper port's
``write_paper_repo``, ``model_cards/`` (``eval/leaderboard.py``) and the committed ``hub/dsnet-zoo/*``
folders. Each card is checked with huggingface_hub's parsers, without ``ignore_metadata_errors``:
``metadata_load``, ``ModelCard`` (which parses ``model-index`` through ``model_index_to_eval_results``),
and a ``ModelCardData`` round trip that must give back exactly the metadata in the file; the license
against the Hub's license ids pinned below (huggingface_hub has no copy). The Hub's server-side check,
``ModelCard.validate()`` (a POST to ``/api/validate-yaml``), needs the network: it runs as well when
``DSNET_ZOO_HUB_VALIDATE=1``.
"""
from __future__ import annotations

import json
import os
import re
from dataclasses import replace
from pathlib import Path

import pytest
import torch

import dsnet_zoo
from conftest import REPO_ROOT
from dsnet_zoo.hub import WeightsCfg, WeightsError, sha256_file, write_hub_repo
from dsnet_zoo.hub.repo import hub_license
from dsnet_zoo.hub.weights import PAPER_SOURCE, PAPER_WEIGHTS_URL
from dsnet_zoo.registry import get_pretrained_cfg

# The Hub's license identifiers: the table in huggingface/hub-docs, docs/hub/repositories-licenses.md
# (https://huggingface.co/docs/hub/repositories-licenses), commit 008d54d08fd9d5d05ed2840bebb0b61111326a15.
HUB_LICENSE_IDS = {
    "apache-2.0", "mit", "openrail", "bigscience-openrail-m", "creativeml-openrail-m", "bigscience-bloom-rail-1.0",
    "bigcode-openrail-m", "afl-3.0", "artistic-2.0", "bsl-1.0", "bsd", "bsd-2-clause", "bsd-3-clause",
    "bsd-3-clause-clear", "c-uda", "cc", "cc0-1.0", "cc-by-2.0", "cc-by-2.5", "cc-by-3.0", "cc-by-4.0",
    "cc-by-sa-3.0", "cc-by-sa-4.0", "cc-by-nc-2.0", "cc-by-nc-3.0", "cc-by-nc-4.0", "cc-by-nd-4.0",
    "cc-by-nc-nd-3.0", "cc-by-nc-nd-4.0", "cc-by-nc-sa-2.0", "cc-by-nc-sa-3.0", "cc-by-nc-sa-4.0",
    "cdla-sharing-1.0", "cdla-permissive-1.0", "cdla-permissive-2.0", "wtfpl", "ecl-2.0", "epl-1.0", "epl-2.0",
    "etalab-2.0", "eupl-1.1", "agpl-3.0", "gfdl", "gpl", "gpl-2.0", "gpl-3.0", "lgpl", "lgpl-2.1", "lgpl-3.0", "isc",
    "lppl-1.3c", "ms-pl", "mpl-2.0", "odc-by", "odbl", "openrail++", "osl-3.0", "postgresql", "ofl-1.1", "ncsa",
    "unlicense", "zlib", "pddl", "lgpl-lr", "deepfloyd-if-license", "llama2", "gemma", "unknown", "other",
}
PAPER_REPO_LINK = f"{PAPER_WEIGHTS_URL}/tree/8ad721a"  # the authors' repository at the released commit


def check_card(path: Path) -> tuple[dict, list]:
    """Check one card file with huggingface_hub; return its metadata and its model-index results."""
    from huggingface_hub import ModelCard, ModelCardData
    from huggingface_hub.repocard import metadata_load
    from huggingface_hub.repocard_data import model_index_to_eval_results

    meta = metadata_load(path)
    assert isinstance(meta, dict) and meta, f"{path}: no YAML front matter"
    card = ModelCard(path.read_text(encoding="utf-8"))  # raises on metadata it cannot parse
    assert card.data.to_dict() == meta
    assert ModelCardData(**meta).to_dict() == meta  # nothing huggingface_hub cannot represent
    assert meta.get("library_name") == "dsnet_zoo"
    assert meta["license"] in HUB_LICENSE_IDS, f"{path}: license {meta['license']!r} is not a Hub license id"
    if meta["license"] == "other":
        assert re.fullmatch(r"[a-z0-9][a-z0-9.-]*", meta["license_name"]), meta["license_name"]
        assert meta.get("license_link", "https://").startswith("https://")
    else:
        assert "license_name" not in meta and "license_link" not in meta
    assert all(isinstance(d, str) and d for d in meta["datasets"])
    assert meta["tags"][0] == "dsnet_zoo" and len(set(meta["tags"])) == len(meta["tags"])
    results = []
    if "model-index" in meta:
        name, results = model_index_to_eval_results(meta["model-index"])
        assert name and results
        for r in results:
            assert r.task_type in ("image-classification", "tabular-regression")
            assert isinstance(r.metric_value, (int, float)) and not isinstance(r.metric_value, bool)
            assert r.dataset_type in meta["datasets"]
    if os.environ.get("DSNET_ZOO_HUB_VALIDATE") == "1":
        card.validate()  # the Hub's own validation, online
    return meta, results


def _by_metric(results) -> dict[tuple[str, str | None], float]:
    return {(r.metric_type, r.metric_config): r.metric_value for r in results}


# ------------------------------------------------------------------------------------------------
# the license fields


def test_hub_license_fields():
    assert hub_license("MIT") == {"license": "mit"}
    assert hub_license("Apache-2.0") == {"license": "apache-2.0"}
    assert hub_license(None) == hub_license("  ") == {"license": "unknown"}
    paper = hub_license("unknown (no license file in the authors repository): not redistributable",
                        "github.com/davidemurari/StructuredNeuralNetworks@8ad721a Adversarial Robustness/x.pt")
    assert paper == {"license": "other",
                     "license_name": "unknown-no-license-file-in-the-authors-repository-not-redistributable",
                     "license_link": PAPER_REPO_LINK}
    assert hub_license("Proprietary, ask us", "hub/dsnet-zoo/x (this repository)") == {
        "license": "other", "license_name": "proprietary-ask-us"}  # no repository to link to
    assert hub_license("custom", "https://example.org/LICENSE.txt")["license_link"] == "https://example.org/LICENSE.txt"


@pytest.mark.parametrize("name", dsnet_zoo.list_pretrained())
def test_every_registered_license_has_hub_fields(name):
    cfg = get_pretrained_cfg(name)
    fields = hub_license(cfg.license, cfg.origin)
    assert fields["license"] in HUB_LICENSE_IDS
    if cfg.source == PAPER_SOURCE:  # license unknown: `other`, linked to the authors' repository
        assert fields["license"] == "other" and fields["license_link"] == PAPER_REPO_LINK
    else:  # the zoo's own weights: the repository's license (pyproject.toml: MIT)
        assert fields == {"license": "mit"}


# ------------------------------------------------------------------------------------------------
# publish (write_hub_repo), on a small model


def _small_cfg(arch: str, **kw) -> WeightsCfg:
    return WeightsCfg(tag="t", architecture=arch, hf_hub_id="org/repo", dataset="cifar10-full", license="MIT",
                      metrics={"cifar10-full": {"clean": 61.5, "certified_l2_72/255": 20.25,
                                                "certified_l2_36/255": 40.0},
                               "eval_images": 512, "eval_split": "test"}, **kw)


def test_publish_card_and_config(scratch_arch, tmp_path):
    torch.manual_seed(0)
    model = dsnet_zoo.create(scratch_arch)
    result = write_hub_repo(model, _small_cfg(scratch_arch), tmp_path / "repo")
    meta, results = check_card(tmp_path / "repo" / "README.md")
    assert meta["license"] == "mit" and meta["datasets"] == ["cifar10"]
    assert meta["model-index"][0]["name"] == f"{scratch_arch}.t"
    # every number of the cfg, as a fraction, in the order clean, then by radius
    assert [(r.metric_type, r.metric_config, r.metric_value) for r in results] == [
        ("accuracy", None, 0.615), ("certified-accuracy", "L2:36/255", 0.4),
        ("certified-accuracy", "L2:72/255", 0.2025)]
    assert {(r.dataset_type, r.dataset_config, r.dataset_split) for r in results} == {
        ("cifar10", "cifar10-full", "test")}
    assert all(r.metric_name.endswith("(n=512)") for r in results)
    assert "certified-robustness" in meta["tags"] and "scratch" in meta["tags"]
    config = json.loads((tmp_path / "repo" / "config.json").read_text())
    assert config["architecture"] == scratch_arch and config["num_classes"] == model.num_classes
    assert config["num_features"] == model.num_features and config["pretrained_cfg"]["mean"] == [0.0, 0.0, 0.0]
    assert config["dsnet_zoo"]["weights_cfg"] == result["cfg"].to_dict()
    assert config["dsnet_zoo"]["weights_cfg"]["sha256"] == sha256_file(tmp_path / "repo" / "model.safetensors")
    assert config["dsnet_zoo"]["family"] == "scratch" and "provenance" not in config["dsnet_zoo"]


def test_publish_command_card(scratch_arch, tmp_path, capsys):
    from safetensors.torch import save_file

    from dsnet_zoo.cli import main

    save_file(dsnet_zoo.create(scratch_arch).state_dict(), tmp_path / "w.safetensors")
    for license, expected in (("Apache-2.0", {"license": "apache-2.0"}), (None, {"license": "unknown"})):
        out = tmp_path / f"repo-{license}"
        argv = ["publish", "--model", f"{scratch_arch}.mine", "--weights", str(tmp_path / "w.safetensors"),
                "--out", str(out)] + (["--license", license] if license else [])
        assert main(argv) == 0
        meta, results = check_card(out / "README.md")
        assert {k: v for k, v in meta.items() if k.startswith("license")} == expected
        assert results == [] and "model-index" not in meta  # nothing measured, nothing claimed
    capsys.readouterr()


def test_regression_metrics_of_training_in_the_model_index(tmp_path):
    cfg = get_pretrained_cfg("massnet_sir.sir1k")  # the layout `dsnet-zoo train` records for regression
    torch.manual_seed(0)
    model = dsnet_zoo.create("massnet_sir")  # a small regression model, random weights
    write_hub_repo(model, replace(cfg, tag="t", sha256=None, hf_hub_id="org/repo"), tmp_path / "repo")
    meta, results = check_card(tmp_path / "repo" / "README.md")
    m = cfg.metrics
    assert _by_metric(results) == {("mse", "float32"): float(f"{m['test_mse_float32']:.6g}"),
                                   ("mse", "float64"): float(f"{m['test_mse']:.6g}"),
                                   ("conserved-sum-max-rel-error", "float64"):
                                       float(f"{m['conserved_sum_max_rel_error_float64']:.6g}")}
    assert {(r.task_type, r.dataset_type, r.dataset_split) for r in results} == {("tabular-regression", "sir", "test")}
    assert meta["metrics"] == ["mse"] and "regression" in meta["tags"] and "pipeline_tag" not in meta


def test_training_export_card(tmp_path):
    import train_helpers as th
    from dsnet_zoo.training import train

    th.register()
    try:
        res = train(th.tiny_recipe(epochs=1, tag="cards"), tmp_path / "run", progress=False, plot=False)
    finally:
        th.unregister()
    meta, results = check_card(tmp_path / "run" / "hub" / "README.md")
    m = res.hub["cfg"].metrics
    assert meta["license"] == "mit" and meta["datasets"] == [th.DATASET]
    assert [(r.metric_type, r.metric_value, r.metric_name, r.dataset_split) for r in results] == [
        ("accuracy", round(m[th.DATASET]["clean"] / 100, 6), f"clean accuracy (n={m['eval_images']})", m["eval_split"])]
    assert "## Training run" in (tmp_path / "run" / "hub" / "README.md").read_text()


def test_keep_weights_rerenders_only_card_and_config(scratch_arch, tmp_path):
    torch.manual_seed(0)
    model = dsnet_zoo.create(scratch_arch)
    repo = tmp_path / "repo"
    first = write_hub_repo(model, _small_cfg(scratch_arch), repo)
    weights = repo / "model.safetensors"
    stat = weights.stat()
    again = write_hub_repo(model, _small_cfg(scratch_arch, description="Re-rendered."), repo,
                           card_extra="## Extra\n\nkept", keep_weights=True)
    assert again["sha256"] == first["sha256"] and weights.stat().st_ino == stat.st_ino  # not rewritten
    card = (repo / "README.md").read_text()
    assert "Re-rendered." in card and "## Extra\n\nkept\n\n## Citation" in card
    check_card(repo / "README.md")
    # other weights: refused, nothing changes
    before = {p.name: p.read_bytes() for p in repo.iterdir()}
    with torch.no_grad():
        model.head.bias.add_(1.0)
    with pytest.raises(WeightsError, match="does not hold these weights"):
        write_hub_repo(model, _small_cfg(scratch_arch, description="Other."), repo, keep_weights=True)
    assert {p.name: p.read_bytes() for p in repo.iterdir()} == before


def test_a_failed_write_leaves_the_old_files(scratch_arch, tmp_path):
    model = dsnet_zoo.create(scratch_arch)
    repo = tmp_path / "repo"
    write_hub_repo(model, _small_cfg(scratch_arch), repo)
    before = {p.name: p.read_bytes() for p in repo.iterdir()}
    with torch.no_grad():
        model.head.bias.add_(1.0)
    bad = _small_cfg(scratch_arch, recipe={"not json": object()})  # fails after the new weights are written
    with pytest.raises(TypeError):
        write_hub_repo(model, bad, repo, overwrite=True)
    assert {p.name: p.read_bytes() for p in repo.iterdir()} == before  # no temp folder, no new file


# ------------------------------------------------------------------------------------------------
# the paper port's writer, on a small fake


def test_paper_port_card_on_a_small_fake(scratch_arch, tmp_path):
    from dsnet_zoo.paper_port import write_paper_repo

    real = get_pretrained_cfg("lipnet_paper_ne_cifar10.margin_0_07")
    fake = replace(real, architecture=scratch_arch, hf_hub_id="dsnet-zoo/fake-paper", model_args={}, sha256=None,
                   num_params=None)
    model = dsnet_zoo.create(scratch_arch)
    info = write_paper_repo(model, fake, tmp_path, provenance={"source_file": "fake.pt", "source_sha256": "0" * 64})
    folder = tmp_path / "dsnet-zoo" / "fake-paper"
    assert Path(info["path"]) == folder and info["files"] == ["README.md", "config.json", "model.safetensors"]
    meta, results = check_card(folder / "README.md")
    assert meta["license"] == "other" and meta["license_link"] == PAPER_REPO_LINK
    assert "paper-authors-weights" in meta["tags"] and "certified-robustness" not in meta["tags"]
    paper = real.metrics["paper"]
    # the authors' numbers, each with its radius, attributed to them
    assert [r.metric_value for r in results] == paper["robust_accuracy"]
    assert [r.metric_type for r in results] == ["accuracy"] + ["robust-accuracy"] * (len(paper["eps"]) - 1)
    assert [r.metric_config for r in results[1:]] == [f"L2:{e:.4f}" for e in paper["eps"][1:]]
    assert {(r.source_name, r.source_url) for r in results} == {("reported by the paper's authors", PAPER_REPO_LINK)}
    card = (folder / "README.md").read_text()
    assert "authors' own weights" in card and "not redistributable" in card and "do not commit or" in card
    config = json.loads((folder / "config.json").read_text())
    assert config["dsnet_zoo"]["provenance"] == {"source_file": "fake.pt", "source_sha256": "0" * 64}
    assert config["pretrained_cfg"]["source"] == PAPER_SOURCE
    assert config["dsnet_zoo"]["weights_cfg"]["sha256"] == info["sha256"] == sha256_file(folder / "model.safetensors")


# ------------------------------------------------------------------------------------------------
# the committed outputs


def _result_value(r: dict, metric_type: str, config: str | None):
    if r.get("task") == "regression":
        return ((r["metrics"].get(metric_type.replace("-", "_")) or {}).get("value") or {}).get(config)
    if metric_type == "accuracy":
        return (r["metrics"].get("clean") or {}).get("accuracy")
    return ((r["metrics"].get(metric_type[:-len("-accuracy")]) or {}).get("accuracy") or {}).get(config)


def test_committed_leaderboard_is_what_the_writer_writes_from_the_results():
    from dsnet_zoo.evaluation.report import leaderboard_json, leaderboard_markdown, load_results

    results = load_results(REPO_ROOT / "eval" / "results")
    stale = "is stale: run python eval/leaderboard.py --report-only"
    markdown = (REPO_ROOT / "eval" / "LEADERBOARD.md").read_text()
    assert markdown == leaderboard_markdown(results), f"LEADERBOARD.md {stale}"
    board = json.loads((REPO_ROOT / "eval" / "leaderboard.json").read_text())
    assert board == leaderboard_json(results), f"leaderboard.json {stale}"
    for e in board["entries"]:
        if e["task"] != "classification":
            continue
        percents = [e["clean_acc"]] + [v for key in ("autoattack_acc", "certified_acc", "paper_pgd_acc")
                                       for v in e[key].values()]
        for v in percents:  # two decimals, as RobustBench: no binary noise such as 45.800000000000004
            assert v is None or len(repr(v).partition(".")[2]) <= 2, (e["name"], v)
        if e["clean_acc"] is not None:  # the count survives the rounding
            n = e["clean_acc_n"]
            accs = {r["metrics"]["clean"]["accuracy"] for r in results
                    if r["name"] == e["name"] and r["weights_sha256"] == e["weights_sha256"]
                    and r["dataset"]["name"] == e["dataset"] and r["dataset"]["n"] == n and "clean" in r["metrics"]}
            assert len(accs) == 1, f"{e['name']}: results on the same {n} images disagree on clean accuracy: {accs}"
            (acc,) = accs
            assert round(e["clean_acc"] * n / 100) == round(acc * n), (e["name"], e["clean_acc"], acc, n)


def test_model_cards_are_what_the_writer_writes_and_equal_the_results(tmp_path):
    from dsnet_zoo.evaluation.cards import write_model_cards
    from dsnet_zoo.evaluation.report import load_results

    results = load_results(REPO_ROOT / "eval" / "results")
    written = write_model_cards(results, tmp_path)
    committed = sorted((REPO_ROOT / "model_cards").glob("*.md"))
    assert [p.name for p in written] == [p.name for p in committed]
    for path in written:
        assert path.read_bytes() == (REPO_ROOT / "model_cards" / path.name).read_bytes(), \
            f"model_cards/{path.name} is stale: run python eval/leaderboard.py --report-only"
        name = path.name[:-3]
        meta, card_results = check_card(path)
        cfg = get_pretrained_cfg(name, retired=True)  # retired weights keep their card
        assert {k: v for k, v in meta.items() if k.startswith("license")} == hub_license(cfg.license, cfg.origin)
        mine = [r for r in results if r["name"] == name and r["weights_sha256"] == cfg.sha256]
        assert mine, name
        # card -> results: each number is a result file's, at the n the card names
        for e in card_results:
            n = int(re.search(r"\(n=(\d+)\)", e.metric_name)[1])
            values = [_result_value(r, e.metric_type, e.metric_config) for r in mine
                      if r["dataset"]["name"] == e.dataset_config and r["dataset"]["n"] == n]
            values = [v for v in values if v is not None]
            assert values, (name, e)
            tol = 5e-5 if e.task_type == "image-classification" else 1e-5 * abs(values[0])
            assert any(abs(e.metric_value - v) <= tol for v in values), (name, e, values)
        # results -> card: every measured number is on the card, from a set at least as large
        on_card = {(e.dataset_config, e.metric_type, e.metric_config): int(re.search(r"\(n=(\d+)\)", e.metric_name)[1])
                   for e in card_results}
        for r in mine:
            for metric, rec in r["metrics"].items():
                if r.get("task") == "regression":
                    keys = [(metric.replace("_", "-"), k) for k, v in rec["value"].items() if v is not None]
                elif metric == "clean":
                    keys = [("accuracy", None)] if rec["accuracy"] is not None else []
                else:
                    keys = [(f"{metric}-accuracy", k) for k, v in rec["accuracy"].items() if v is not None]
                for key in keys:
                    assert on_card[(r["dataset"]["name"], *key)] >= r["dataset"]["n"], (name, r["_file"], key)


def _committed_hub_folders():
    return sorted(p.parent for p in (REPO_ROOT / "hub").glob("*/*/config.json"))


@pytest.mark.parametrize("folder", _committed_hub_folders(), ids=lambda p: p.name)
def test_committed_hub_folders(folder):
    config = json.loads((folder / "config.json").read_text())
    recorded = config["dsnet_zoo"]["weights_cfg"]
    cfg = get_pretrained_cfg(f"{config['architecture']}.{recorded['tag']}")
    assert cfg.hf_hub_id == str(folder.relative_to(REPO_ROOT / "hub"))
    assert sha256_file(folder / cfg.filename) == cfg.sha256 == recorded["sha256"]
    assert recorded == cfg.to_dict()  # the registered metadata, as registered
    meta, results = check_card(folder / "README.md")
    assert meta["license"] == "mit" and meta["model-index"][0]["name"] == cfg.name
    card = (folder / "README.md").read_text()
    assert cfg.description in card and cfg.sha256 in card
    m = cfg.metrics
    if cfg.num_classes:  # accuracies in percent in the cfg, fractions on the card
        expected = {("accuracy" if k == "clean" else "certified-accuracy",
                     None if k == "clean" else "L2:" + k[len("certified_l2_"):]): round(v / 100, 6)
                    for k, v in m[cfg.dataset].items()}
    else:
        expected = {("mse", "float32"): float(f"{m['test_mse_float32']:.6g}"),
                    ("mse", "float64"): float(f"{m['test_mse']:.6g}"),
                    ("conserved-sum-max-rel-error", "float64"):
                        float(f"{m['conserved_sum_max_rel_error_float64']:.6g}")}
    assert _by_metric(results) == expected
