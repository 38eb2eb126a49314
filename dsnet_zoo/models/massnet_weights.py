"""The zoo's own ``massnet_sir`` weights: tag ``sir1k``, trained by ``dsnet-zoo train`` (kept apart
from :mod:`dsnet_zoo.models.massnet` so that training and architecture change independently).

The file lives in the checkout's ``hub/dsnet-zoo/massnet_sir/`` (Hugging Face repo layout) and is
pinned by its sha256. ``dsnet-zoo train massnet_sir.sir1k --out DIR`` reruns the recorded recipe
(on CPU with 1 thread and the same library versions it reproduces the file bit for bit).
"""
from __future__ import annotations

from ..hub import WeightsCfg
from ..registry import register_pretrained
from . import massnet  # noqa: F401  (registers the architecture first)

__all__ = ["MASSNET_SIR_SIR1K"]

# the recipe exactly as recorded in the weights' config.json (Recipe.to_dict())
_RECIPE = {
    "amp": "auto",
    "augment": "none",
    "batch_size": 100,
    "cert_eps": 0.1411764705882353,
    "data_seed": 0,
    "dataset": "sir",
    "dataset_args": {
        "n": 1000,
        "seed": 0,
        "train_fraction": 0.9
    },
    "ema": None,
    "epochs": 200,
    "eval_dataset": None,
    "eval_limit": None,
    "eval_split": "test",
    "grad_clip": None,
    "label_smoothing": 0.0,
    "loss": "mse",
    "lr": 0.002,
    "margin": 0.15,
    "model": "massnet_sir",
    "model_args": {},
    "momentum": 0.0,
    "nesterov": False,
    "optimizer": "adam",
    "schedule": "cosine",
    "seed": 0,
    "tag": "sir1k",
    "task": "regression",
    "temperature": 1.0,
    "train_limit": None,
    "train_split": "train",
    "version": 1,
    "warmup_epochs": 0.0,
    "weight_decay": 0.0
}

MASSNET_SIR_SIR1K = register_pretrained("massnet_sir", WeightsCfg(
    tag="sir1k",
    hf_hub_id="dsnet-zoo/massnet_sir",
    sha256="44ea081de50be0dbde937ad7bf4f1410078458e9ec8569711873ab5975035c32",
    num_classes=0,
    input_size=(3,),
    input_range=(0.0, 1.0),
    dataset="sir",
    recipe=_RECIPE,
    license="MIT",
    source="dsnet_zoo",
    origin="hub/dsnet-zoo/massnet_sir (this repository)",
    description=("Mass-preserving network for the time-1 flow map of the SIR model (beta = gamma = 1), "
                 "trained on 900 of 1,000 generated initial conditions on the simplex (sir_dataset(n=1000, "
                 "seed=0)), evaluated on the other 100; S + I + R is conserved by construction."),
    metrics={
        "test_mse": 1.4195211818748042e-07,
        "test_mse_float32": 1.4195516996551304e-07,
        "conserved_sum_max_rel_error_float64": 6.661338147750941e-16,
        "test_examples": 100,
        "eval_set": 'sir (test)',
    },
    num_params=35769,
))
