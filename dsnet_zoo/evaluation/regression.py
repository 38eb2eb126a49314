"""Regression models on the leaderboard: test MSE and conserved-sum error on a named, seeded test set.

A regression set is registered by name in :data:`dsnet_zoo.data.REGRESSION_SETS` (the sets, their
``load_regression_set`` and ``RegressionSet`` live in :mod:`dsnet_zoo.data` and are re-exported here); a
pretrained regression model (``num_classes == 0``, recipe task ``regression``) is evaluated on the set named
by its weights' ``dataset``. The one set so far:

- ``sir`` (split ``test``): the 100 held-out initial conditions of
  ``dsnet_zoo.data.sir_dataset(n=1000, seed=0, train_fraction=0.9)`` (rows 900-999, the split
  ``massnet_sir.sir1k`` was evaluated on and not trained on) and their SIR states at ``t = 1``
  (beta = gamma = 1, float64 RK4 with 1,000 steps).

Measured numbers (:func:`evaluate_regression`), each for the weights run as stored (float32) and the same
weights cast to float64:

- ``mse``: mean over examples and coordinates of ``(f(x) - y)^2``;
- ``conserved_sum_error``: ``max_i |sum_k f(x_i)_k - sum_k x_i_k|``, absolute, the sums taken in float64
  of the values the model received and returned (the SIR inputs sum to 1, so it is also the relative error).

Reproduce one result: ``python -m dsnet_zoo.evaluation.regression massnet_sir.sir1k --dataset sir --out r.json``.
"""
from __future__ import annotations

import argparse
import copy
import os
import shlex
import sys
import time
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from ..data import REGRESSION_SETS, RegressionSet, load_regression_set, register_regression_set
from .runner import SCHEMA, _describe_device, _parameters_sha256, _versions, atomic_write_json, load_for_eval

__all__ = ["RegressionSet", "REGRESSION_SETS", "register_regression_set", "load_regression_set",
           "is_regression_model", "evaluate_regression", "REGRESSION_METRICS"]

# metric name -> what it is (shown by the leaderboard)
REGRESSION_METRICS = {
    "mse": "test MSE: mean over examples and coordinates of (f(x) - y)^2",
    "conserved_sum_error": "max over examples of |sum f(x) - sum x| (absolute; sums in float64)",
}
DTYPES = {"float32": torch.float32, "float64": torch.float64}


def is_regression_model(cfg) -> bool:
    """Whether the weights ``cfg`` (a :class:`~dsnet_zoo.hub.WeightsCfg`) are a regression model with a
    registered test set: no classes, recipe task ``regression`` (when a recipe is recorded), and its
    ``dataset`` in :data:`REGRESSION_SETS`."""
    task = (cfg.recipe or {}).get("task", "regression")
    return cfg.num_classes == 0 and task == "regression" and cfg.dataset in REGRESSION_SETS


def _measure(model: nn.Module, x: np.ndarray, y: np.ndarray, dtype: torch.dtype) -> dict[str, np.ndarray]:
    xt = torch.from_numpy(np.ascontiguousarray(x)).to(dtype)
    with torch.no_grad():
        out = model(xt)
    if tuple(out.shape) != tuple(y.shape):
        raise ValueError(f"the model returns shape {tuple(out.shape)} for inputs {tuple(xt.shape)}, but the "
                         f"targets have shape {tuple(y.shape)}: not a regression model for this set")
    out64 = out.to(torch.float64).numpy()
    sq = ((out64 - y) ** 2).mean(axis=1)
    sum_err = np.abs(out64.sum(axis=1) - xt.to(torch.float64).numpy().sum(axis=1))
    return {"sq_error": sq, "sum_error": sum_err}


def evaluate_regression(model: str | nn.Module, dataset: str = "sir", *, n: int | None = None,
                        out: str | os.PathLike | None = None, ident: dict[str, Any] | None = None) -> dict[str, Any]:
    """Test MSE and conserved-sum error of a regression model on a registered set, on CPU.

    ``model`` is ``arch[.tag]`` (its pretrained weights) or an ``nn.Module`` named by ``ident``. The
    result record (schema ``dsnet_zoo.eval/1``, ``task: regression``) is returned and, with ``out``,
    written atomically, the per-example errors beside it in ``<out stem>.examples.json``."""
    t0 = time.time()
    started = datetime.now(timezone.utc).isoformat(timespec="seconds")
    data = load_regression_set(dataset, n)
    if isinstance(model, (str, os.PathLike)):
        model, ident = load_for_eval(str(model))
    elif ident is None:
        ident = {"name": type(model).__name__, "model": type(model).__name__, "tag": None, "checkpoint": None,
                 "weights_sha256": None}
    if ident.get("checkpoint") is not None:
        raise ValueError("evaluate_regression takes a registered arch.tag or a module, not a checkpoint file")
    model = model.to("cpu").eval()
    as_run = next(iter(model.parameters()), torch.zeros((), dtype=torch.float32)).dtype
    as_run_name = str(as_run).replace("torch.", "")
    measured: dict[str, dict[str, np.ndarray]] = {}
    metrics = {m: {"value": {}, "definition": d, "weights_dtype": as_run_name} for m, d in REGRESSION_METRICS.items()}
    for label, dtype in DTYPES.items():
        m = model if dtype == as_run else copy.deepcopy(model).to(dtype).eval()
        measured[label] = _measure(m, data.x, data.y, dtype)
        metrics["mse"]["value"][label] = float(measured[label]["sq_error"].mean())
        metrics["conserved_sum_error"]["value"][label] = float(measured[label]["sum_error"].max())
    command = ["python", "-m", "dsnet_zoo.evaluation.regression", ident["name"], "--dataset", dataset,
               "--n", str(len(data))]
    result = {
        "schema": SCHEMA, "task": "regression",
        **{k: ident.get(k) for k in ("name", "model", "tag", "checkpoint", "source", "license", "trained_on")},
        "weights_sha256": ident.get("weights_sha256"), "weights_source": ident.get("weights_source"),
        "parameters_sha256": _parameters_sha256(model),
        "num_params": int(sum(p.numel() for p in model.parameters())),
        "dataset": {"name": data.name, "split": data.split, "n": len(data), **data.info, "images": len(data)},
        "lipschitz": {},
        "metrics": metrics,
        "run": {"device": _describe_device(torch.device("cpu")), "world_size": 1,
                "wall_time_s": round(time.time() - t0, 3), "started": started,
                "finished": datetime.now(timezone.utc).isoformat(timespec="seconds"), "versions": _versions()},
        "command": " ".join(shlex.quote(p) for p in command),
    }
    if out is not None:
        out = Path(out)
        stem = out.name[:-len(".json")] if out.name.endswith(".json") else out.name
        result["examples_file"] = f"{stem}.examples.json"
        examples = {"name": ident["name"], "dataset": data.name, "split": data.split, "index": list(range(len(data))),
                    **{f"{k}/{label}": v for label, rec in measured.items() for k, v in rec.items()}}
        atomic_write_json(out.parent / result["examples_file"], examples)
        atomic_write_json(out, result)
    return result


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m dsnet_zoo.evaluation.regression",
                                description="Test MSE and conserved-sum error of a pretrained regression model.")
    p.add_argument("model", help="arch.tag of a pretrained regression model (e.g. massnet_sir.sir1k)")
    p.add_argument("--dataset", default="sir", help=f"regression set ({', '.join(sorted(REGRESSION_SETS))})")
    p.add_argument("--n", type=int, help="the first N examples (default: all)")
    p.add_argument("--out", help="result JSON to write (default: print only)")
    args = p.parse_args(argv)
    r = evaluate_regression(args.model, args.dataset, n=args.n, out=args.out)
    for name, rec in r["metrics"].items():
        print(f"{r['name']} on {r['dataset']['description']}: {name} " +
              ", ".join(f"{k} {v:.4g}" for k, v in rec["value"].items()))
    return 0


if __name__ == "__main__":
    sys.exit(main())
