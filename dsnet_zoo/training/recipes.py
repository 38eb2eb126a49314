"""Training recipes: every choice that determines a set of trained weights, as one record.

A :class:`Recipe` names the architecture, the data (training set, evaluation set, how many
images), the optimisation (optimizer, learning rate, schedule, epochs, global batch size), the
loss and its parameters, the augmentation, the EMA decay and the seeds. Two runs of the same
recipe on the same device type, thread count and library versions produce the same weights
bit for bit (on CPU; GPU kernels are not all deterministic): the model initialisation is drawn
from ``seed``, the data order of epoch ``e`` is a permutation drawn from ``(data_seed, e)`` and the
augmentation of step ``s`` from ``(seed, s)``, so nothing depends on how a run was interrupted.

The recipe is stored in each pretrained tag's ``WeightsCfg.recipe`` (``to_dict``), and
``dsnet-zoo train ARCH.TAG`` rebuilds it with ``from_dict`` and reruns it.
"""
from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field, fields, replace
from typing import Any, Mapping

from ..registry import arch_info

__all__ = ["Recipe", "RecipeError", "default_recipe", "FAMILY_DEFAULTS", "ARCH_DEFAULTS", "RECIPE_VERSION"]

RECIPE_VERSION = 1

LOSSES = ("hinge", "ce", "certified_ce", "mse")
OPTIMIZERS = ("sgd", "adam", "adamw")
SCHEDULES = ("cosine", "onecycle", "constant")
AUGMENTS = ("crop_flip", "none")
AMP = ("auto", "bf16", "none")
TASKS = ("classification", "regression")


class RecipeError(ValueError):
    """A recipe with a missing, unknown or inconsistent field. The message names it."""


@dataclass(frozen=True)
class Recipe:
    """All hyper-parameters of one training run.

    Data:
        dataset: training set name (``cifar10-full``, ``cifar100-full``, ``cifar10``, ``sir``, ...); ``train_split``
            is read from it. ``eval_dataset``/``eval_split``: the set whose metrics are recorded
            (default: ``dataset``'s ``test`` split). ``train_limit``/``eval_limit``: use only the
            first ``n`` examples (in the set's official order) when set.
        dataset_args: extra arguments of the data generator (for ``sir``: ``n``, ``seed``, ...).
    Optimisation:
        epochs, batch_size (global: split evenly over DDP ranks), lr (peak), optimizer,
        momentum, nesterov, weight_decay, schedule (``cosine``/``onecycle``/``constant``, stepped
        per batch), warmup_epochs (linear warm-up of ``cosine``), grad_clip (max global norm).
    Loss:
        loss: ``hinge`` (the paper's multi-class hinge with margin ``margin``), ``ce``
        (cross-entropy, ``label_smoothing``), ``certified_ce`` (cross-entropy with the non-target
        logits raised by ``sqrt(2) * L * cert_eps``, temperature ``temperature``; for
        1-Lipschitz nets), ``mse`` (regression).
    Start: init_from: ``ARCH.TAG`` of registered pretrained weights of the same architecture (hash-checked, as
        ``create(..., pretrained=True)`` loads them) that replace the seeded initialisation: a warm restart,
        e.g. a second cosine cycle after a finished run. The optimizer, schedule and EMA start afresh.
        ``None`` (the default) trains from the seeded initialisation.
    Other: augment (``crop_flip``: 4-pixel zero-padded random crop and horizontal flip),
        ema (decay of a weight EMA, or None), amp (``auto``: bf16 autocast on CUDA, none on CPU;
        ``bf16``: bf16 autocast on any device), channels_last (NHWC model and inputs),
        seed (model init, augmentation), data_seed (data order), tag (the weights' tag).
    """

    model: str
    dataset: str
    epochs: int
    batch_size: int
    lr: float
    loss: str
    model_args: Mapping[str, Any] = field(default_factory=dict)
    task: str = "classification"
    train_split: str = "train"
    eval_dataset: str | None = None
    eval_split: str = "test"
    train_limit: int | None = None
    eval_limit: int | None = None
    dataset_args: Mapping[str, Any] = field(default_factory=dict)
    optimizer: str = "sgd"
    momentum: float = 0.9
    nesterov: bool = True
    weight_decay: float = 0.0
    schedule: str = "cosine"
    warmup_epochs: float = 0.0
    grad_clip: float | None = None
    margin: float = 0.15
    cert_eps: float = 36 / 255
    temperature: float = 1.0
    label_smoothing: float = 0.0
    augment: str = "none"
    ema: float | None = None
    amp: str = "auto"
    channels_last: bool = False
    seed: int = 0
    data_seed: int = 0
    tag: str = "custom"
    init_from: str | None = None
    version: int = RECIPE_VERSION

    def __post_init__(self) -> None:
        self.validate()

    # -- checks ---------------------------------------------------------------------------------
    def validate(self) -> None:
        def bad(msg: str) -> RecipeError:
            return RecipeError(f"recipe for {self.model!r}: {msg}")

        for name, allowed in (("loss", LOSSES), ("optimizer", OPTIMIZERS), ("schedule", SCHEDULES),
                              ("augment", AUGMENTS), ("amp", AMP), ("task", TASKS)):
            if getattr(self, name) not in allowed:
                raise bad(f"{name}={getattr(self, name)!r} is not one of {', '.join(allowed)}")
        if not isinstance(self.epochs, int) or self.epochs < 1:
            raise bad(f"epochs must be a positive integer, got {self.epochs!r}")
        if not isinstance(self.batch_size, int) or self.batch_size < 1:
            raise bad(f"batch_size must be a positive integer, got {self.batch_size!r}")
        if not self.lr > 0:
            raise bad(f"lr must be > 0, got {self.lr!r}")
        if self.ema is not None and not 0.0 < self.ema < 1.0:
            raise bad(f"ema is a decay in (0, 1) or None, got {self.ema!r}")
        if (self.loss == "mse") != (self.task == "regression"):
            raise bad(f"loss {self.loss!r} does not fit task {self.task!r} (mse <-> regression)")
        if self.loss == "hinge" and not self.margin > 0:
            raise bad(f"the hinge loss needs margin > 0, got {self.margin!r}")
        if self.loss == "certified_ce" and not (self.cert_eps > 0 and self.temperature > 0):
            raise bad(f"certified_ce needs cert_eps > 0 and temperature > 0, got {self.cert_eps!r}, "
                      f"{self.temperature!r}")
        for name in ("train_limit", "eval_limit"):
            v = getattr(self, name)
            if v is not None and (not isinstance(v, int) or v < 1):
                raise bad(f"{name} must be a positive integer or None, got {v!r}")
        if self.grad_clip is not None and not self.grad_clip > 0:
            raise bad(f"grad_clip must be > 0 or None, got {self.grad_clip!r}")
        if not 0 <= self.warmup_epochs < self.epochs:
            raise bad(f"warmup_epochs must be in [0, epochs), got {self.warmup_epochs!r}")
        if not self.tag or "." in self.tag:
            raise bad(f"tag must be a non-empty name without '.', got {self.tag!r}")
        if self.init_from is not None:
            arch, _, tag = str(self.init_from).partition(".")
            if not isinstance(self.init_from, str) or arch != self.model or not tag:
                raise bad(f"init_from must name pretrained weights of the same architecture, "
                          f"'{self.model}.TAG', got {self.init_from!r}")
            if tag == self.tag:
                raise bad(f"init_from {self.init_from!r} names the tag this recipe trains; give the new weights "
                          "another tag")
        if self.version != RECIPE_VERSION:
            raise bad(f"recipe version {self.version} is not understood by this dsnet_zoo "
                      f"(which writes version {RECIPE_VERSION})")

    # -- serialisation --------------------------------------------------------------------------
    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready dict; ``Recipe.from_dict(r.to_dict()) == r``. Fields added after version 1 are
        left out while they hold their default, so a recipe recorded before them reads and prints unchanged."""
        d = asdict(self)
        for name, default in _LATER_FIELDS.items():
            if d[name] == default:
                del d[name]
        d["model_args"] = _jsonable(dict(self.model_args))
        d["dataset_args"] = _jsonable(dict(self.dataset_args))
        return d

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> "Recipe":
        """Rebuild a recipe; unknown keys are an error (a silently dropped hyper-parameter would
        make the rerun differ from the recorded one) and missing ones take the defaults."""
        if not isinstance(d, Mapping):
            raise RecipeError(f"a recipe is a JSON object, got {type(d).__name__}")
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(d) - known)
        if unknown:
            raise RecipeError(f"unknown recipe field(s) {', '.join(unknown)}; known: {', '.join(sorted(known))}")
        missing = [k for k in ("model", "dataset", "epochs", "batch_size", "lr", "loss") if k not in d]
        if missing:
            raise RecipeError(f"recipe misses required field(s) {', '.join(missing)}")
        kw = dict(d)
        kw["model_args"] = dict(kw.get("model_args") or {})
        kw["dataset_args"] = dict(kw.get("dataset_args") or {})
        return cls(**kw)

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=2, sort_keys=True)

    @classmethod
    def from_json(cls, text: str) -> "Recipe":
        try:
            return cls.from_dict(json.loads(text))
        except json.JSONDecodeError as e:
            raise RecipeError(f"recipe is not valid JSON: {e}") from e

    def replace(self, **changes: Any) -> "Recipe":
        unknown = sorted(set(changes) - {f.name for f in fields(self)})
        if unknown:
            raise RecipeError(f"unknown recipe field(s) {', '.join(unknown)}")
        return replace(self, **changes)

    # -- derived --------------------------------------------------------------------------------
    @property
    def eval_set(self) -> str:
        return self.eval_dataset or self.dataset


# fields added after RECIPE_VERSION 1 was recorded in shipped weights, with the default that means "absent"
_LATER_FIELDS: dict[str, Any] = {"init_from": None}


def _jsonable(d: dict[str, Any]) -> dict[str, Any]:
    try:
        return json.loads(json.dumps(d))
    except TypeError as e:
        raise RecipeError(f"recipe arguments must be JSON values (numbers, strings, lists): {e}") from e


# Default recipe of each family (``dsnet-zoo train ARCH`` without a tag). The CIFAR recipes follow
# the paper's setting where it has one: multi-class hinge with margin 0.15 for the 1-Lipschitz
# LipNet (the paper trains margins 0.07/0.15/0.3), cross-entropy for the unconstrained-norm
# Hamiltonian and volume-preserving nets; SGD + Nesterov, cosine schedule, crop + flip.
FAMILY_DEFAULTS: dict[str, dict[str, Any]] = {
    "lipnet": dict(dataset="cifar10-full", eval_dataset="cifar10-full", epochs=100, batch_size=256,
                   lr=0.05, loss="hinge", margin=0.15, optimizer="sgd", weight_decay=0.0,
                   schedule="cosine", warmup_epochs=2.0, augment="crop_flip", ema=0.999),
    # hamnet / vpnet: the fast CPU path (bf16 autocast, channels_last) and airbench's short-schedule
    # choices: Nesterov SGD, 1-epoch warm-up then cosine, label smoothing, weight EMA, crop + flip.
    "hamnet": dict(dataset="cifar10-full", eval_dataset="cifar10-full", epochs=18, batch_size=256,
                   lr=0.1, loss="ce", label_smoothing=0.1, optimizer="sgd", weight_decay=5e-4, schedule="cosine",
                   warmup_epochs=1.0, augment="crop_flip", ema=0.999, grad_clip=5.0, amp="bf16",
                   channels_last=True),
    "vpnet": dict(dataset="cifar10-full", eval_dataset="cifar10-full", epochs=15, batch_size=256,
                  lr=0.1, loss="ce", label_smoothing=0.1, optimizer="sgd", weight_decay=5e-4, schedule="cosine",
                  warmup_epochs=1.0, augment="crop_flip", ema=0.999, grad_clip=5.0, amp="bf16",
                  channels_last=True),
    # SIR flow map: 1,000 initial conditions on the simplex (900 train / 100 test), full-batch-ish
    # Adam, cosine schedule: about 40 s on one CPU core, test MSE ~1e-7.
    "massnet": dict(dataset="sir", task="regression", epochs=200, batch_size=100, lr=2e-3, loss="mse",
                    optimizer="adam", momentum=0.0, nesterov=False, schedule="cosine", augment="none",
                    dataset_args={"n": 1000, "seed": 0, "train_fraction": 0.9}),
}


# Architectures whose default differs from their family's. The certified flagship (``lipnet_cifar10``,
# :class:`~dsnet_zoo.models.lipflow.LipFlowNet`) trains with the recipe of its shipped weights:
# certified cross-entropy (offset sqrt(2) * 0.2, logits scaled by 4 inside the softmax), Adam, bf16
# autocast and channels_last (the fast CPU path), certified normaliser refresh every 50 steps.
_FLAGSHIP = dict(dataset="cifar10-full", eval_dataset="cifar10-full", epochs=50, batch_size=256, lr=2e-3,
                 optimizer="adam", momentum=0.0, nesterov=False, loss="certified_ce", cert_eps=0.2,
                 temperature=4.0, schedule="cosine", warmup_epochs=2.0, augment="crop_flip", ema=0.999,
                 amp="bf16", channels_last=True, model_args={"cert_every": 50})
ARCH_DEFAULTS: dict[str, dict[str, Any]] = {
    "lipnet_cifar10": _FLAGSHIP,
    "lipnet_cifar100": dict(_FLAGSHIP, epochs=30),
}


# The family defaults name CIFAR-10 sets (the real train and test splits, ``cifar10-full``); an
# architecture registered with ``dataset="cifar100"`` gets the CIFAR-100 set of the same kind.
_CIFAR100_COUNTERPART = {"cifar10-full": "cifar100-full", "cifar10-real": "cifar100-real", "cifar10": "cifar100"}


def default_recipe(arch: str, **overrides: Any) -> Recipe:
    """The default recipe of ``arch`` (its own in ``ARCH_DEFAULTS``, else its family's), with ``overrides``
    applied (``None`` values ignored).

    The warm-up is ``min(family warm-up, epochs / 10)`` epochs unless given, so ``--epochs 1`` works.
    """
    info = arch_info(arch)
    family = info["family"]
    if family not in FAMILY_DEFAULTS:
        raise RecipeError(
            f"no default training recipe for family {family!r} (of {arch}); known families: "
            f"{', '.join(sorted(FAMILY_DEFAULTS))}. Pass a full recipe with --recipe FILE.json.")
    base = dict(ARCH_DEFAULTS.get(arch, FAMILY_DEFAULTS[family]))
    # a CIFAR-100 architecture trains and evaluates on the CIFAR-100 counterpart of its family's sets
    if info.get("dataset") == "cifar100":
        for key in ("dataset", "eval_dataset"):
            base[key] = _CIFAR100_COUNTERPART.get(base.get(key), base.get(key))
    base.update({k: v for k, v in overrides.items() if v is not None})
    if "warmup_epochs" not in overrides:  # shorter runs get a proportionally shorter warm-up
        base["warmup_epochs"] = min(base.get("warmup_epochs", 0.0), base["epochs"] / 10)
    return Recipe(model=arch, **base)
