"""Regression models on the leaderboard: the SIR test set, MSE and conserved-sum error, the tables."""
from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from torch import nn

from dsnet_zoo import create
from dsnet_zoo.evaluation.regression import evaluate_regression, is_regression_model, load_regression_set
from dsnet_zoo.evaluation.report import leaderboard_json, leaderboard_markdown, load_results
from dsnet_zoo.models.massnet import sir_dataset
from dsnet_zoo.registry import get_pretrained_cfg


def test_the_sir_set_is_the_held_out_split_of_the_recipe():
    cfg = get_pretrained_cfg("massnet_sir.sir1k")
    data = load_regression_set("sir")
    d = sir_dataset(**cfg.recipe["dataset_args"])  # what the weights were trained and evaluated on
    assert np.array_equal(data.x, d["x_test"]) and np.array_equal(data.y, d["y_test"])
    assert not any(np.isclose(d["x_train"], x).all(axis=1).any() for x in data.x)  # never trained on
    assert load_regression_set("sir").info["md5"] == data.info["md5"]  # seeded: the same set every time
    first = load_regression_set("sir", n=10)
    assert np.array_equal(first.x, data.x[:10]) and first.info["description"].startswith("first 10 of: ")
    assert first.info["md5"] == data.info["md5"]  # a prefix belongs to its set
    with pytest.raises(ValueError, match="cannot take n=101"):
        load_regression_set("sir", n=101)
    with pytest.raises(ValueError, match="unknown regression set"):
        load_regression_set("lorenz")
    assert is_regression_model(cfg)
    assert not is_regression_model(get_pretrained_cfg("lipnet_cifar10"))


def test_massnet_mse_and_conserved_sum_are_measured(tmp_path):
    out = tmp_path / "r.json"
    r = evaluate_regression("massnet_sir.sir1k", "sir", out=out)
    assert json.loads(out.read_text())["metrics"] == r["metrics"]
    side = json.loads((tmp_path / r["examples_file"]).read_text())
    data = load_regression_set("sir")
    model = create("massnet_sir.sir1k", pretrained=True)
    with torch.no_grad():
        f64 = model.double()(torch.from_numpy(data.x)).numpy()
    mse = r["metrics"]["mse"]["value"]
    assert mse["float64"] == pytest.approx(float(((f64 - data.y) ** 2).mean()), rel=1e-12)
    assert np.mean(side["sq_error/float64"]) == pytest.approx(mse["float64"], rel=1e-12)
    # the training loop measured the same number on the same set in its own code
    assert mse["float64"] == pytest.approx(get_pretrained_cfg("massnet_sir.sir1k").metrics["test_mse"], rel=1e-9)
    assert mse["float32"] == pytest.approx(mse["float64"], rel=1e-3)
    cons = r["metrics"]["conserved_sum_error"]["value"]
    assert cons["float64"] == pytest.approx(np.abs(f64.sum(1) - data.x.sum(1)).max(), abs=1e-18)
    assert cons["float64"] < 1e-12 and cons["float32"] < 1e-5  # conserved up to rounding
    assert r["dataset"]["n"] == 100 and r["task"] == "regression"
    assert r["command"] == "python -m dsnet_zoo.evaluation.regression massnet_sir.sir1k --dataset sir --n 100"


def test_a_map_that_does_not_conserve_the_sum_is_caught(tmp_path):
    torch.manual_seed(0)
    lin = nn.Linear(3, 3).double()
    r = evaluate_regression(lin, "sir", ident={"name": "lin.a", "model": "lin", "tag": "a", "checkpoint": None})
    data = load_regression_set("sir")
    with torch.no_grad():
        out = lin(torch.from_numpy(data.x)).numpy()
    assert r["metrics"]["conserved_sum_error"]["value"]["float64"] == pytest.approx(
        np.abs(out.sum(1) - data.x.sum(1)).max(), rel=1e-12)
    assert r["metrics"]["conserved_sum_error"]["value"]["float64"] > 1e-3
    with pytest.raises(ValueError, match="not a regression model for this set"):
        evaluate_regression(nn.Linear(3, 2), "sir", ident={"name": "bad.a", "model": "bad", "tag": "a",
                                                            "checkpoint": None})


def test_regression_results_get_their_own_table(tmp_path):
    torch.manual_seed(0)
    for name, n in (("lin.a", 100), ("lin.a", 40), ("lin2.a", 40)):
        lin = nn.Linear(3, 3)
        evaluate_regression(lin, "sir", n=n, out=tmp_path / f"{name}-{n}.json",
                            ident={"name": name, "model": name[:-2], "tag": "a", "checkpoint": None,
                                   "weights_sha256": "ab" * 32})
    results = load_results(tmp_path)
    md = leaderboard_markdown(results)
    assert "## Regression models" in md and "| model | source | test MSE float32" in md
    rows = {line.split("`")[1]: [c.strip() for c in line.strip("|").split("|")]
            for line in md.splitlines() if line.startswith("| `")}
    full = next(r for r in results if r["name"] == "lin.a" and r["dataset"]["n"] == 100)
    assert rows["lin.a"][2] == f"{full['metrics']['mse']['value']['float32']:.3g} (n=100)"  # largest n
    assert rows["lin2.a"][2].endswith("(n=40)")
    assert "n=40: first 40 of: SIR flow map" in md
    board = leaderboard_json(results)
    entry = next(e for e in board["entries"] if e["name"] == "lin.a")
    assert entry["test_mse"] == full["metrics"]["mse"]["value"] and entry["test_mse_n"] == {"float32": 100,
                                                                                             "float64": 100}
    assert "clean_acc" not in entry and entry["task"] == "regression"
