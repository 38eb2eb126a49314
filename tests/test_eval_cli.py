"""`dsnet-zoo eval`, `eval/leaderboard.py`, the leaderboard page, the plot and the model cards."""
from __future__ import annotations

import argparse
import json
import os
import shlex
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest
import yaml

from dsnet_zoo.cli import eval_cmd
from dsnet_zoo.evaluation import evaluate, result_stem
from dsnet_zoo.evaluation.cards import write_model_cards
from dsnet_zoo.evaluation.reference import LinearReference, nearest_prototype_weights, prototype_data
from dsnet_zoo.evaluation.report import (leaderboard_json, leaderboard_markdown, load_results, merge_results,
                                         plot_accuracy_vs_eps, write_leaderboard_json)
from dsnet_zoo.hub import sha256_file
from dsnet_zoo.registry import get_pretrained_cfg

ROOT = Path(__file__).resolve().parents[1]
DATA = os.environ.get("DSNET_ZOO_DATA")
needs_data = pytest.mark.skipif(not DATA, reason="DSNET_ZOO_DATA is not set (point it at the offline CIFAR packs)")
REPO = "evaltest/linear-protos"


# The test model is registered only inside child processes, so the shared registry of this pytest
# process (which other tests list and load) never sees it.
CHILD = textwrap.dedent("""
    import argparse, os, sys
    import dsnet_zoo
    from dsnet_zoo import WeightsCfg
    from dsnet_zoo.evaluation.reference import LinearReference
    from dsnet_zoo.hub import sha256_file
    from dsnet_zoo.models import build_model

    def evaltest_linear(pretrained=False, **kwargs):
        return build_model(LinearReference, "evaltest_linear", pretrained, default_num_classes=10, **kwargs)

    path = os.path.join(os.environ["DSNET_ZOO_WEIGHTS_DIR"], "evaltest", "linear-protos", "model.safetensors")
    dsnet_zoo.register_model(evaltest_linear, family="test", dataset="cifar10")
    dsnet_zoo.register_pretrained("evaltest_linear", WeightsCfg(
        tag="protos", hf_hub_id="evaltest/linear-protos", revision="0" * 40, sha256=sha256_file(path),
        num_classes=10, dataset="synthetic", license="mit", source="dsnet_zoo"))

    def evaltest_odd(pretrained=False, **kwargs):  # no classes and no known test set: the leaderboard skips it
        return build_model(LinearReference, "evaltest_odd", pretrained, default_num_classes=0, **kwargs)

    dsnet_zoo.register_model(evaltest_odd, family="test", dataset="nowhere")
    dsnet_zoo.register_pretrained("evaltest_odd", WeightsCfg(
        tag="x", hf_hub_id="evaltest/odd", revision="0" * 40, sha256="0" * 64, num_classes=0, dataset="nowhere"))
    if sys.argv[1] == "cli":
        from dsnet_zoo.cli import eval_cmd
        parser = argparse.ArgumentParser(prog="dsnet-zoo")
        eval_cmd.add_parser(parser.add_subparsers(dest="command"))
        args = parser.parse_args(sys.argv[2:])
        sys.exit(args.func(args))
    import runpy
    sys.argv = sys.argv[2:]
    runpy.run_path(sys.argv[0], run_name="__main__")
""")


@pytest.fixture(scope="module")
def weights_dir(tmp_path_factory):
    """Weights written by the test into a DSNET_ZOO_WEIGHTS_DIR layout (registered in the children)."""
    from safetensors.torch import save_file

    root = tmp_path_factory.mktemp("weights")
    _, protos = prototype_data(1, seed=0)
    path = root / REPO / "model.safetensors"
    path.parent.mkdir(parents=True)
    save_file(nearest_prototype_weights(protos, scale=0.2), str(path))
    (root / "child.py").write_text(CHILD)
    return root


def _child(weights_dir: Path, *argv: str) -> subprocess.CompletedProcess:
    env = dict(os.environ, DSNET_ZOO_WEIGHTS_DIR=str(weights_dir), OMP_NUM_THREADS="1",
               PYTHONPATH=str(ROOT) + os.pathsep + os.environ.get("PYTHONPATH", ""))
    return subprocess.run([sys.executable, str(weights_dir / "child.py"), *argv], env=env, capture_output=True,
                          text=True, timeout=600)


def _cli(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="dsnet-zoo")
    eval_cmd.add_parser(parser.add_subparsers(dest="command"))
    args = parser.parse_args(argv)
    return args.func(args)


@needs_data
def test_eval_cli_writes_a_result_that_its_own_command_reproduces(weights_dir, tmp_path):
    out = tmp_path / "r.json"
    proc = _child(weights_dir, "cli", "eval", "evaltest_linear.protos", "--dataset", "cifar10-full", "--n", "24",
                  "--device", "cpu", "--batch-size", "10", "--out", str(out), "--no-progress")
    assert proc.returncode == 0, proc.stderr[-2000:]
    r = json.loads(out.read_text())
    assert r["name"] == "evaltest_linear.protos" and r["tag"] == "protos"
    assert r["weights_sha256"] == sha256_file(weights_dir / REPO / "model.safetensors")
    assert r["dataset"]["name"] == "cifar10-full" and r["dataset"]["n"] == 24
    assert r["dataset"]["description"] == "CIFAR-10 test, first 24 of 10,000 images (official indices 0-23, exact pixels)"
    assert r["dataset"]["indices"] == "0..23" and r["dataset"]["available"] == 9977
    assert (tmp_path / "r.examples.json").is_file()
    argv = shlex.split(r["command"])
    assert argv[:2] == ["dsnet-zoo", "eval"]
    again = tmp_path / "again.json"
    proc = _child(weights_dir, "cli", *argv[1:], "--out", str(again), "--device", "cpu", "--no-progress")
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert json.loads(again.read_text())["metrics"] == r["metrics"]


@needs_data
def test_eval_cli_takes_a_checkpoint_path(weights_dir, tmp_path):
    ckpt = weights_dir / REPO / "model.safetensors"
    out = tmp_path / "c.json"
    proc = _child(weights_dir, "cli", "eval", str(ckpt), "--arch", "evaltest_linear", "--dataset", "cifar10-real",
                  "--n", "8", "--device", "cpu", "--out", str(out), "--no-progress")
    assert proc.returncode == 0, proc.stderr[-2000:]
    r = json.loads(out.read_text())
    assert r["checkpoint"] == "model.safetensors" and r["weights_sha256"] == sha256_file(ckpt)
    proc = _child(weights_dir, "cli", "eval", str(ckpt), "--dataset", "cifar10-real", "--n", "8", "--device", "cpu")
    assert proc.returncode != 0 and "--arch" in proc.stderr


def test_eval_cli_refuses_bad_arguments():
    with pytest.raises(ValueError, match="unknown metric"):
        _cli(["eval", "evaltest_linear.protos", "--dataset", "cifar10-real", "--metrics", "clean,bogus"])
    with pytest.raises(ValueError, match="NORM:EPS"):
        _cli(["eval", "evaltest_linear.protos", "--dataset", "cifar10-real", "--metrics", "autoattack",
              "--aa-threats", "L3:0.5"])
    with pytest.raises(SystemExit):
        _cli(["eval", "x", "--dataset", "mnist"])


@needs_data
def test_leaderboard_script_end_to_end(weights_dir, tmp_path):
    paths = dict(results=tmp_path / "results", md=tmp_path / "LEADERBOARD.md", png=tmp_path / "acc.png",
                 cards=tmp_path / "cards")
    argv = ["--models", "evaltest_*", "--dataset", "cifar10-real", "--n", "16", "--device", "cpu",
            "--results-dir", str(paths["results"]), "--leaderboard", str(paths["md"]), "--plot", str(paths["png"]),
            "--cards-dir", str(paths["cards"]), "--no-progress"]
    script = str(ROOT / "eval" / "leaderboard.py")
    proc = _child(weights_dir, "script", script, *argv)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert "Traceback" not in proc.stderr
    assert "evaltest_odd.x: skipped: neither a classifier nor a regression model" in proc.stderr
    files = sorted(p.name for p in paths["results"].iterdir())
    sha = sha256_file(weights_dir / REPO / "model.safetensors")
    stem = f"evaltest_linear.protos__cifar10-real__n16__w{sha[:8]}__certified+clean"
    assert files == [f"{stem}.examples.json", f"{stem}.json"]
    assert (tmp_path / "leaderboard.json").is_file()  # beside LEADERBOARD.md
    r = json.loads((paths["results"] / files[1]).read_text())
    assert r["examples_file"] == files[0]
    md = paths["md"].read_text()
    assert "`evaltest_linear.protos`" in md and f"{100 * r['metrics']['clean']['accuracy']:.1f}" in md
    assert r["command"] in md
    title = "CIFAR-10 test, first 16 of 10,000 images (official indices 0-15, exact pixels)"
    assert r["dataset"]["description"] == title and f"## {title} (`cifar10-real`)" in md
    assert paths["png"].read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    card = (paths["cards"] / "evaltest_linear.protos.md").read_text()
    front = yaml.safe_load(card.split("---")[1])
    res = front["model-index"][0]["results"]
    clean = [m for x in res for m in x["metrics"] if m["type"] == "accuracy"]
    assert clean and clean[0]["value"] == round(r["metrics"]["clean"]["accuracy"], 4)
    assert front["library_name"] == "dsnet_zoo"  # not timm: the Hub's timm snippet cannot load it
    # an existing result is kept, not recomputed
    mtime = (paths["results"] / files[1]).stat().st_mtime_ns
    proc = _child(weights_dir, "script", script, *argv)
    assert proc.returncode == 0 and "kept" in proc.stderr
    assert (paths["results"] / files[1]).stat().st_mtime_ns == mtime


def _synthetic_results(tmp_path):
    data, protos = prototype_data(24, seed=1, name="cifar10-real")
    certified = LinearReference()
    certified.load_state_dict(nearest_prototype_weights(protos))

    class NoBound(LinearReference):
        def lipschitz_upper_bound(self):
            return None

    plain = NoBound()
    plain.load_state_dict(nearest_prototype_weights(protos))
    for name, m in (("ref_cert.a", certified), ("ref_plain.a", plain)):
        evaluate(m, data, metrics=["clean", "certified"], device="cpu", progress=False, batch_size=12,
                 out=tmp_path / f"{name}.json",
                 ident={"name": name, "model": name.split(".")[0], "tag": "a", "checkpoint": None,
                        "source": "dsnet_zoo", "license": "mit", "trained_on": "synthetic"})
    return load_results(tmp_path)


def test_leaderboard_cards_and_plot_from_results(tmp_path):
    results = _synthetic_results(tmp_path)
    assert len(results) == 2
    md = leaderboard_markdown(results)
    cert_row = next(line for line in md.splitlines() if line.startswith("| `ref_cert.a`"))
    plain_row = next(line for line in md.splitlines() if line.startswith("| `ref_plain.a`"))
    r = next(x for x in results if x["name"] == "ref_cert.a")
    acc = r["metrics"]["certified"]["accuracy"]["L2:36/255"]
    n = r["dataset"]["n"]
    assert f"| {100 * acc:.1f} (n={n}) |" in cert_row
    plain_cert = plain_row.split(" | ")[4:8]  # model, source, L bound, clean, then the certified radii
    assert plain_cert == [f"null (n={n})"] * 4  # measured, nothing claimed: never 0
    png = plot_accuracy_vs_eps(results, tmp_path / "p.png")
    assert png.stat().st_size > 1000
    cards = write_model_cards(results, tmp_path / "cards")
    assert sorted(p.name for p in cards) == ["ref_cert.a.md", "ref_plain.a.md"]
    front = yaml.safe_load((tmp_path / "cards" / "ref_plain.a.md").read_text().split("---")[1])
    names = [m["name"] for x in front["model-index"][0]["results"] for m in x["metrics"]]
    assert not any("certified" in n for n in names)  # nothing claimed without a bound


def _row(md: str, name: str) -> list[str]:
    """The cells of ``name``'s row in a markdown table (one row expected)."""
    rows = [line for line in md.splitlines() if line.startswith(f"| `{name}`")]
    assert len(rows) == 1, rows
    return [c.strip() for c in rows[0].strip("|").split("|")]


def test_largest_n_wins_per_number_and_every_cell_says_n(tmp_path):
    data, protos = prototype_data(24, seed=2, name="cifar10-real")
    m = LinearReference()
    m.load_state_dict(nearest_prototype_weights(protos))
    ident = {"name": "ref.a", "model": "ref", "tag": "a", "checkpoint": None, "weights_sha256": "ab" * 32}
    # clean on all 24 images first, then clean + certified on the first 8 (newer, fewer images)
    big = evaluate(m, data, metrics=["clean"], device="cpu", progress=False, out=tmp_path / "big.json", ident=ident)
    small = evaluate(m, data, n=8, metrics=["clean", "certified"], device="cpu", progress=False,
                     out=tmp_path / "small.json", ident=ident)
    assert small["dataset"]["description"] == "first 8 of: 24 synthetic images around 10 prototypes (seed 2)"
    results = load_results(tmp_path)
    md = leaderboard_markdown(results)
    heads = [line for line in md.splitlines() if line.startswith("## ")]
    assert heads == ["## 24 synthetic images around 10 prototypes (seed 2) (`cifar10-real`)"]  # one set, one table
    cells = _row(md, "ref.a")
    assert cells[3] == f"{100 * big['metrics']['clean']['accuracy']:.1f} (n=24)"  # the larger run, though older
    cert = small["metrics"]["certified"]["accuracy"]
    assert cells[4:8] == [f"{100 * v:.1f} (n=8)" for v in cert.values()]  # only measured on 8: shown with n=8
    assert all(c == "–" for c in cells[8:])  # not run
    assert "n=8: first 8 of: 24 synthetic images around 10 prototypes (seed 2)" in md  # n=8 named exactly
    # the card takes the same numbers, each with its n
    card = write_model_cards(results, tmp_path / "cards")[0].read_text()
    assert f"| clean | – | {100 * big['metrics']['clean']['accuracy']:.1f} | 24 |" in card
    assert f"| certified | L2:36/255 | {100 * cert['L2:36/255']:.1f} | 8 |" in card
    front = yaml.safe_load(card.split("---")[1])
    metrics = [x for r in front["model-index"][0]["results"] for x in r["metrics"]]
    assert {x["name"] for x in metrics if x["type"] == "accuracy"} == {"clean accuracy (n=24)"}
    # at equal n the newer result wins, whatever the order the files are read in
    time.sleep(1.1)  # "finished" has a resolution of one second
    evaluate(m, data, metrics=["clean"], device="cpu", progress=False, out=tmp_path / "again.json", ident=ident)
    results = load_results(tmp_path)
    for order in (results, results[::-1]):
        (row,) = merge_results(order).values()
        assert row["cells"][("clean", "")]["file"] == "again.json"
        assert row["cells"][("certified", "L2:36/255")]["file"] == "small.json"


def test_results_of_other_weights_are_separate_rows(tmp_path):
    results = [_fake_result("cifar10-full", 9977, 9977, "CIFAR-10 test, 9,977 of 10,000 images (exact pixels)", 0.7),
               _fake_result("cifar10-full", 9977, 9977, "CIFAR-10 test, 9,977 of 10,000 images (exact pixels)", 0.6)]
    results[0]["weights_sha256"], results[1]["weights_sha256"] = "1" * 64, "2" * 64
    results[1]["run"]["finished"] = "2026-02-01T00:00:00+00:00"
    md = leaderboard_markdown(results)
    assert _row(md, "m.a (weights 11111111)")[3] == "70.0 (n=9977)"
    assert _row(md, "m.a (weights 22222222)")[3] == "60.0 (n=9977)"
    card = write_model_cards(results, tmp_path)[0].read_text()  # m.a is not registered: the newest weights
    assert "2" * 64 in card and "1" * 64 not in card


def _fake_result(dataset: str, n: int, available: int, description: str, acc: float) -> dict:
    return {"schema": "dsnet_zoo.eval/1", "name": "m.a", "model": "m", "tag": "a", "lipschitz": {},
            "dataset": {"name": dataset, "split": "test", "n": n, "available": available, "md5": dataset,
                        "description": description},
            "metrics": {"clean": {"accuracy": acc}}, "run": {"finished": "2026-01-01T00:00:00+00:00"},
            "command": f"dsnet-zoo eval m.a --dataset {dataset} --n {n}"}


def test_paper_ports_get_the_authors_numbers_next_to_autoattack():
    port = "lipnet_paper_ne_cifar10.margin_0_07"
    paper = get_pretrained_cfg(port).metrics["paper"]
    authors = dict(zip(paper["eps"], paper["robust_accuracy"]))
    clean = _fake_result("cifar10-full", 9977, 9977, "CIFAR-10 test, 9,977 of 10,000 images (exact pixels)", 0.826)
    aa = _fake_result("cifar10-full", 500, 9977, "CIFAR-10 test, first 500 of 10,000 images", 0.83)
    aa["metrics"]["autoattack"] = {"accuracy": {"L2:0.5": 0.032}}
    own = _fake_result("cifar10-full", 9977, 9977, "CIFAR-10 test, 9,977 of 10,000 images (exact pixels)", 0.7)
    for r in (clean, aa):
        r["name"], r["model"], r["tag"] = port, port.split(".")[0], port.split(".")[1]
    md = leaderboard_markdown([clean, aa, own])
    section = md.split("## The paper's checkpoints: the authors' numbers next to AutoAttack\n", 1)[1].split("\n## ")[0]
    assert "`m.a`" not in section  # the zoo's own weights have no authors' numbers
    cells = _row(section, port)
    assert cells[1] == f"{100 * paper['clean_accuracy']:.1f}"
    assert cells[2:5] == [f"{100 * authors[e]:.1f}" for e in (0.1411764706, 0.5, 1.0)]
    assert cells[5:8] == ["82.6 (n=9977)", "3.2 (n=500)", "–"]  # measured clean, AA L2 0.5, AA L2 36/255
    entries = {e["name"]: e for e in leaderboard_json([clean, aa, own])["entries"]}
    assert entries["m.a"]["reported_by_authors"] is None
    rep = entries[port]["reported_by_authors"]
    assert rep["paper_pgd_acc"]["L2:0.5"] == round(100 * authors[0.5], 2) and "1,024" in rep["what"]
    assert entries[port]["autoattack_acc"]["L2:0.5"] == pytest.approx(3.2)
    # without a primary CIFAR-10 row of a port, there is no such section
    assert "## The paper's checkpoints" not in leaderboard_markdown([own])


def test_full_real_test_sets_are_the_primary_tables(tmp_path):
    results = [_fake_result("cifar10-real", 1017, 1017, "CIFAR-10 test, first 1,017 of 10,000 images", 0.8),
               _fake_result("cifar10-full", 1000, 9977, "CIFAR-10 test, first 1,000 of 10,000 images", 0.7),
               _fake_result("cifar100-full", 10000, 10000, "CIFAR-100 test, all 10,000 images (exact pixels)", 0.5),
               _fake_result("cifar10-full", 9977, 9977, "CIFAR-10 test, 9,977 of 10,000 images (exact pixels)", 0.75)]
    md = leaderboard_markdown(results)
    heads = [line for line in md.splitlines() if line.startswith("## ")]
    assert heads == ["## CIFAR-10 test, 9,977 of 10,000 images (exact pixels) (`cifar10-full`)",
                     "## CIFAR-100 test, all 10,000 images (exact pixels) (`cifar100-full`)",
                     "## CIFAR-10 test, first 1,017 of 10,000 images (`cifar10-real`)"]
    first_table = md.split("\n## ")[1]
    assert "| 75.0 (n=9977) |" in first_table and "(n=1000)" not in first_table  # the first 1,000 are inside
    card = write_model_cards(results, tmp_path)[0].read_text()
    assert [line for line in card.splitlines() if line.startswith("### ")] == [h.replace("## ", "### ") for h in heads]
    front = yaml.safe_load(card.split("---")[1])
    names = [x["dataset"]["name"] for x in front["model-index"][0]["results"]]
    assert names == [h[3:].rsplit(" (`", 1)[0] for h in heads]


@needs_data
def test_a_smaller_run_never_replaces_a_larger_one(weights_dir, tmp_path):
    paths = dict(results=tmp_path / "results", md=tmp_path / "LEADERBOARD.md", png=tmp_path / "acc.png",
                 cards=tmp_path / "cards")
    common = ["--models", "evaltest_linear*", "--dataset", "cifar10-real", "--device", "cpu",
              "--results-dir", str(paths["results"]), "--leaderboard", str(paths["md"]), "--plot", str(paths["png"]),
              "--cards-dir", str(paths["cards"]), "--no-progress"]
    script = str(ROOT / "eval" / "leaderboard.py")
    proc = _child(weights_dir, "script", script, *common, "--n", "128")
    assert proc.returncode == 0, proc.stderr[-2000:]
    (large,) = [f for f in paths["results"].glob("*__n128__*.json") if not f.name.endswith(".examples.json")]
    before = large.read_bytes()
    proc = _child(weights_dir, "script", script, *common, "--n", "64")
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert large.read_bytes() == before  # untouched
    (small,) = [f for f in paths["results"].glob("*__n64__*.json") if not f.name.endswith(".examples.json")]
    big, little = json.loads(before), json.loads(small.read_text())
    assert (big["dataset"]["n"], little["dataset"]["n"]) == (128, 64)
    # the tables, the JSON and the card show the 128-image numbers
    cells = _row(paths["md"].read_text(), "evaltest_linear.protos")
    assert cells[3] == f"{100 * big['metrics']['clean']['accuracy']:.1f} (n=128)"
    assert cells[4:8] == [f"{100 * v:.1f} (n=128)" for v in big["metrics"]["certified"]["accuracy"].values()]
    (entry,) = json.loads((tmp_path / "leaderboard.json").read_text())["entries"]
    assert entry["clean_acc"] == round(100 * big["metrics"]["clean"]["accuracy"], 2) and entry["clean_acc_n"] == 128
    assert set(entry["certified_acc_n"].values()) == {128}
    assert entry["result_files"] == [large.name]
    card = (paths["cards"] / "evaltest_linear.protos.md").read_text()
    assert f"| clean | – | {100 * big['metrics']['clean']['accuracy']:.1f} | 128 |" in card
    assert "| 64 |" not in card


def test_result_stem_keys_everything_that_defines_a_result():
    base = dict(n=9977, weights_sha256="ab" * 32)
    stem = result_stem("m.t", "cifar10-full", ["clean", "certified"], **base)
    assert stem == "m.t__cifar10-full__n9977__wabababab__certified+clean"
    others = [result_stem("m.t", "cifar10-full", ["clean", "certified"], n=64, weights_sha256="ab" * 32),
              result_stem("m.t", "cifar10-full", ["clean", "certified"], n=9977, weights_sha256="cd" * 32),
              result_stem("m.t", "cifar10-real", ["clean", "certified"], **base),
              result_stem("m.t", "cifar10-full", ["clean"], **base),
              result_stem("m.t", "cifar10-full", ["clean", "certified"], split="train", **base),
              result_stem("m.t", "cifar10-full", ["clean", "certified"], settings={"cert_eps": ["0.1"]}, **base)]
    assert len({stem, *others}) == 1 + len(others)
    with pytest.raises(ValueError, match="positive"):
        result_stem("m.t", "cifar10-full", ["clean"], n=0, weights_sha256="ab" * 32)
    with pytest.raises(ValueError, match="hex digest"):
        result_stem("m.t", "cifar10-full", ["clean"], n=8, weights_sha256="not-a-sha")


def test_leaderboard_json_is_rebuilt_from_the_results_and_matches_the_markdown(tmp_path):
    results = _synthetic_results(tmp_path)
    path = write_leaderboard_json(results, tmp_path / "out" / "leaderboard.json")
    board = json.loads(path.read_text())
    assert board == leaderboard_json(results) and [p.name for p in path.parent.iterdir()] == ["leaderboard.json"]
    md = leaderboard_markdown(results)
    order = [line.split("`")[1] for line in md.splitlines() if line.startswith("| `")]
    assert [e["label"] for e in board["entries"]] == order
    for e in board["entries"]:
        r = next(x for x in results if x["name"] == e["name"])
        for key in ("name", "architecture", "number_of_parameters", "weights_sha256", "source", "link", "dataset",
                    "dataset_description", "clean_acc", "autoattack_acc", "certified_acc"):
            assert key in e
        assert (e["architecture"], e["number_of_parameters"], e["weights_sha256"]) == \
            (r["model"], r["num_params"], r["weights_sha256"])
        assert e["dataset_description"] == r["dataset"]["description"] and e["sets"] == {"24": e["dataset_description"]}
        acc = r["metrics"]["clean"]["accuracy"]
        assert e["clean_acc"] == round(100 * acc, 2) and e["clean_acc_n"] == 24
        assert round(e["clean_acc"] * 24 / 100) == round(acc * 24)  # the count survives the rounding
        assert set(e["autoattack_acc"]) == {"L2:0.5", "L2:36/255", "Linf:8/255"}
        assert set(e["autoattack_acc"].values()) == set(e["autoattack_acc_n"].values()) == {None}  # not run
        cells = _row(md, e["label"])
        assert cells[3] == f"{e['clean_acc']:.1f} (n={e['clean_acc_n']})"
        shown = [("null" if v is None else f"{v:.1f}") + f" (n={e['certified_acc_n'][k]})"
                 for k, v in e["certified_acc"].items()]
        assert cells[4:8] == shown
        assert cells[8:11] == ["–"] * 3
    plain = next(e for e in board["entries"] if e["name"] == "ref_plain.a")
    assert plain["lipschitz_bound"] is None and set(plain["certified_acc"].values()) == {None}
    assert set(plain["certified_acc_n"].values()) == {24}  # measured, nothing claimed
    # rebuilt from what is there: a removed result leaves the board
    (tmp_path / "ref_plain.a.json").unlink()
    write_leaderboard_json(load_results(tmp_path), path)
    assert [e["name"] for e in json.loads(path.read_text())["entries"]] == ["ref_cert.a"]


@needs_data
def test_leaderboard_script_regression_models_and_skips(weights_dir, tmp_path):
    results = tmp_path / "results"
    argv = ["--models", "evaltest_odd*,massnet_sir*,lipnet_cifar100*", "--dataset", "cifar10-real", "--device", "cpu",
            "--results-dir", str(results), "--leaderboard", str(tmp_path / "LEADERBOARD.md"),
            "--plot", str(tmp_path / "acc.png"), "--cards-dir", str(tmp_path / "cards"), "--no-progress"]
    proc = _child(weights_dir, "script", str(ROOT / "eval" / "leaderboard.py"), *argv)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert "Traceback" not in proc.stderr
    lines = proc.stderr.splitlines()
    assert any(line.startswith("evaltest_odd.x: skipped: neither a classifier nor a regression model")
               for line in lines)
    c100 = f"lipnet_cifar100.{get_pretrained_cfg('lipnet_cifar100').tag}"  # the default tag, whichever is shipped
    assert any(line.startswith(f"{c100}: skipped: 100 classes, cifar10-real has 10") for line in lines)
    sha = get_pretrained_cfg("massnet_sir.sir1k").sha256
    stem = f"massnet_sir.sir1k__sir__n100__w{sha[:8]}__conserved_sum_error+mse"
    assert sorted(p.name for p in results.iterdir()) == [f"{stem}.examples.json", f"{stem}.json"]
    r = json.loads((results / f"{stem}.json").read_text())
    assert r["task"] == "regression" and r["weights_sha256"] == sha
    md = (tmp_path / "LEADERBOARD.md").read_text()
    assert "## Regression models" in md and r["command"] in md
    cells = _row(md, "massnet_sir.sir1k")
    assert cells[2:] == [f"{r['metrics'][m]['value'][k]:.3g} (n=100)"
                         for m, k in (("mse", "float32"), ("mse", "float64"), ("conserved_sum_error", "float32"),
                                      ("conserved_sum_error", "float64"))]
    (entry,) = json.loads((tmp_path / "leaderboard.json").read_text())["entries"]
    assert entry["task"] == "regression" and entry["test_mse"] == r["metrics"]["mse"]["value"]
    assert entry["conserved_sum_max_abs_error"] == r["metrics"]["conserved_sum_error"]["value"]
    assert set(entry["test_mse_n"].values()) == {100}
    card = (tmp_path / "cards" / "massnet_sir.sir1k.md").read_text()
    front = yaml.safe_load(card.split("---")[1])
    values = {m["name"]: m["value"] for x in front["model-index"][0]["results"] for m in x["metrics"]}
    assert values["mse, float64 (n=100)"] == pytest.approx(r["metrics"]["mse"]["value"]["float64"], rel=1e-5)
