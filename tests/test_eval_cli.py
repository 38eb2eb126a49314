"""`dsnet-zoo eval`, `eval/leaderboard.py`, the leaderboard page, the plot and the model cards."""
from __future__ import annotations

import argparse
import json
import os
import shlex
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import yaml

from dsnet_zoo.cli import eval_cmd
from dsnet_zoo.evaluation import evaluate
from dsnet_zoo.evaluation.cards import write_model_cards
from dsnet_zoo.evaluation.reference import LinearReference, nearest_prototype_weights, prototype_data
from dsnet_zoo.evaluation.report import leaderboard_markdown, load_results, plot_accuracy_vs_eps
from dsnet_zoo.hub import sha256_file

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
    files = sorted(p.name for p in paths["results"].iterdir())
    assert files == ["evaltest_linear.protos__cifar10-real__certified+clean.examples.json",
                     "evaltest_linear.protos__cifar10-real__certified+clean.json"]
    r = json.loads((paths["results"] / files[1]).read_text())
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
    assert "library_name" not in front
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
    assert f"| {100 * acc:.1f} |" in cert_row
    assert "null" in plain_row and "| 0.0 |" not in plain_row.split("|", 6)[-1][:40]
    png = plot_accuracy_vs_eps(results, tmp_path / "p.png")
    assert png.stat().st_size > 1000
    cards = write_model_cards(results, tmp_path / "cards")
    assert sorted(p.name for p in cards) == ["ref_cert.a.md", "ref_plain.a.md"]
    front = yaml.safe_load((tmp_path / "cards" / "ref_plain.a.md").read_text().split("---")[1])
    names = [m["name"] for x in front["model-index"][0]["results"] for m in x["metrics"]]
    assert not any("certified" in n for n in names)  # nothing claimed without a bound


def test_each_exact_set_gets_its_own_table(tmp_path):
    data, protos = prototype_data(24, seed=2, name="cifar10-real")
    m = LinearReference()
    m.load_state_dict(nearest_prototype_weights(protos))
    ident = {"name": "ref.a", "model": "ref", "tag": "a", "checkpoint": None}
    small = evaluate(m, data, n=8, metrics=["clean"], device="cpu", progress=False, out=tmp_path / "small.json",
                     ident=ident)
    big = evaluate(m, data, metrics=["clean"], device="cpu", progress=False, out=tmp_path / "big.json", ident=ident)
    assert small["dataset"]["description"] == "first 8 of: 24 synthetic images around 10 prototypes (seed 2)"
    md = leaderboard_markdown(load_results(tmp_path))
    heads = [line for line in md.splitlines() if line.startswith("## ")]
    assert heads == ["## 24 synthetic images around 10 prototypes (seed 2) (`cifar10-real`)",
                     "## first 8 of: 24 synthetic images around 10 prototypes (seed 2) (`cifar10-real`)"]
    rows = [line for line in md.splitlines() if line.startswith("| `ref.a`")]
    assert len(rows) == 2  # never one row mixing numbers of two sets
    assert f"| 24 | {100 * big['metrics']['clean']['accuracy']:.1f} |" in rows[0]
    assert f"| 8 | {100 * small['metrics']['clean']['accuracy']:.1f} |" in rows[1]


def _fake_result(dataset: str, n: int, available: int, description: str, acc: float) -> dict:
    return {"schema": "dsnet_zoo.eval/1", "name": "m.a", "model": "m", "tag": "a", "lipschitz": {},
            "dataset": {"name": dataset, "split": "test", "n": n, "available": available, "md5": dataset,
                        "description": description},
            "metrics": {"clean": {"accuracy": acc}}, "run": {"finished": "2026-01-01T00:00:00+00:00"},
            "command": f"dsnet-zoo eval m.a --dataset {dataset} --n {n}"}


def test_full_real_test_sets_are_the_primary_tables(tmp_path):
    results = [_fake_result("cifar10-real", 1017, 1017, "CIFAR-10 test, first 1,017 of 10,000 images", 0.8),
               _fake_result("cifar10-full", 1000, 9977, "CIFAR-10 test, first 1,000 of 10,000 images", 0.7),
               _fake_result("cifar100-full", 10000, 10000, "CIFAR-100 test, all 10,000 images (exact pixels)", 0.5),
               _fake_result("cifar10-full", 9977, 9977, "CIFAR-10 test, 9,977 of 10,000 images (exact pixels)", 0.75)]
    md = leaderboard_markdown(results)
    heads = [line for line in md.splitlines() if line.startswith("## ")]
    assert heads == ["## CIFAR-10 test, 9,977 of 10,000 images (exact pixels) (`cifar10-full`)",
                     "## CIFAR-100 test, all 10,000 images (exact pixels) (`cifar100-full`)",
                     "## CIFAR-10 test, first 1,000 of 10,000 images (`cifar10-full`)",
                     "## CIFAR-10 test, first 1,017 of 10,000 images (`cifar10-real`)"]
    card = write_model_cards(results, tmp_path)[0].read_text()
    assert [line for line in card.splitlines() if line.startswith("### ")] == [h.replace("## ", "### ") for h in heads]
    front = yaml.safe_load(card.split("---")[1])
    names = [x["dataset"]["name"] for x in front["model-index"][0]["results"]]
    assert names == [h[3:].rsplit(" (`", 1)[0] for h in heads]
