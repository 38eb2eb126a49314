"""Training: recipes, losses, the data pipeline, the loop (checkpoints, resume, logs, plots), DDP.

>>> from dsnet_zoo.training import default_recipe, train
>>> result = train(default_recipe("massnet_sir"), "runs/massnet")   # doctest: +SKIP
"""
from .data import TrainData, crop_flip, epoch_order, list_train_datasets, load_train_data, register_train_dataset
from .losses import build_loss, certified_cross_entropy, logit_offset, multiclass_hinge
from .loop import ModelEMA, TrainConfig, TrainResult, evaluate_model, final_metrics, resolve_device, run_training, train
from .recipes import FAMILY_DEFAULTS, Recipe, RecipeError, default_recipe

__all__ = [
    "Recipe", "RecipeError", "default_recipe", "FAMILY_DEFAULTS", "train", "run_training", "TrainConfig",
    "TrainResult", "ModelEMA",
    "evaluate_model", "final_metrics", "resolve_device", "multiclass_hinge", "certified_cross_entropy",
    "logit_offset", "build_loss", "TrainData", "register_train_dataset", "list_train_datasets",
    "load_train_data", "crop_flip", "epoch_order",
]
