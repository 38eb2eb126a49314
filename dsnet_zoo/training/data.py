"""Training data: named sets as tensors on the training device, a seeded data order, and augmentation.

The whole training set lives on the training device (CIFAR-10 as uint8 is 150 MB), so a batch is
an index into a device tensor: no worker processes, no host-to-device copies per step (the
GPU-resident pipeline). Augmentation runs on the same device.

Determinism: the order of epoch ``e`` is ``randperm`` from a CPU generator seeded with
``(data_seed, e)``, and the augmentation of global step ``s`` is drawn for the whole global batch
from a generator seeded with ``(seed, s)``, then each DDP rank takes its slice. A run therefore
sees the same batches whether or not it was interrupted, and ``R`` ranks with global batch ``B``
see exactly the samples (and augmentations) of a single process with batch ``B``.
"""
from __future__ import annotations

import os
from dataclasses import dataclass, field
from typing import Any, Callable, Iterator

import numpy as np
import torch

__all__ = ["TrainData", "register_train_dataset", "list_train_datasets", "load_train_data",
           "epoch_order", "global_batches", "crop_flip", "mix_seed"]


@dataclass
class TrainData:
    """Training and evaluation tensors of one task.

    Classification: ``x_*`` uint8 images ``(N, C, H, W)`` (fed to the model as ``x / 255``, in
    ``[0, 1]``) and ``y_*`` int64 labels. Regression: float ``x_*`` inputs and ``y_*`` targets.
    """

    x_train: torch.Tensor
    y_train: torch.Tensor
    x_eval: torch.Tensor
    y_eval: torch.Tensor
    task: str = "classification"
    num_classes: int | None = None
    info: dict[str, Any] = field(default_factory=dict)  # JSON-ready provenance
    extra: dict[str, torch.Tensor] = field(default_factory=dict)  # task-specific tensors (e.g. float64 test set)

    def to(self, device: torch.device) -> "TrainData":
        return TrainData(self.x_train.to(device), self.y_train.to(device), self.x_eval.to(device),
                         self.y_eval.to(device), self.task, self.num_classes, dict(self.info), dict(self.extra))


_LOADERS: dict[str, Callable[..., TrainData]] = {}


def register_train_dataset(name: str, loader: Callable[..., TrainData], *, overwrite: bool = False) -> None:
    """Make ``loader(recipe, data_dir) -> TrainData`` available as recipe ``dataset=name``."""
    if name in _LOADERS and not overwrite:
        raise ValueError(f"training dataset {name!r} is already registered")
    _LOADERS[name] = loader


def list_train_datasets() -> list[str]:
    return sorted(set(_LOADERS) | set(_image_dataset_names()))


def _image_dataset_names() -> list[str]:
    try:
        from ..data import list_datasets
    except ImportError:
        return []
    return list_datasets()


def _load_images(name: str, split: str, data_dir: str | os.PathLike | None, n: int | None):
    """``(x uint8 NCHW, y int64, num_classes, info)`` of a named image set.

    The one place that depends on :func:`dsnet_zoo.data.load_dataset` (the evaluation package's
    dataset loader: same names, roots and checks as ``dsnet-zoo eval``).
    """
    try:
        from ..data import load_dataset
    except ImportError as e:  # the evaluation package is not installed in this checkout
        raise ValueError(f"image dataset {name!r} needs dsnet_zoo.data (the dataset loader); "
                         f"it is not available here ({e})") from e
    ds = load_dataset(name, split, data_dir=data_dir, n=n)
    return ds.x, ds.y, ds.num_classes, dict(ds.info)


def _load_image_task(recipe, data_dir) -> TrainData:
    x, y, k, info = _load_images(recipe.dataset, recipe.train_split, data_dir, recipe.train_limit)
    xe, ye, ke, info_e = _load_images(recipe.eval_set, recipe.eval_split, data_dir, recipe.eval_limit)
    if k != ke:
        raise ValueError(f"training set {recipe.dataset} has {k} classes but evaluation set "
                         f"{recipe.eval_set} has {ke}")
    return TrainData(x, y, xe, ye, "classification", k, {"train": info, "eval": info_e})


def _load_sir(recipe, data_dir) -> TrainData:
    """The paper's SIR experiment: initial conditions on the simplex and their time-1 states,
    generated deterministically by :func:`dsnet_zoo.models.massnet.sir_dataset`."""
    from ..models.massnet import sir_dataset

    d = sir_dataset(**dict(recipe.dataset_args))
    f32 = {k: torch.from_numpy(np.asarray(v, dtype=np.float32)) for k, v in d.items()}
    return TrainData(f32["x_train"], f32["y_train"], f32["x_test"], f32["y_test"], "regression", None,
                     {"generator": "dsnet_zoo.models.massnet.sir_dataset", "args": dict(recipe.dataset_args)},
                     {"x_eval_float64": torch.from_numpy(d["x_test"]), "y_eval_float64": torch.from_numpy(d["y_test"])})


register_train_dataset("sir", _load_sir)


def load_train_data(recipe, data_dir: str | os.PathLike | None = None) -> TrainData:
    """The training and evaluation data of ``recipe`` (registered loaders first, then image sets)."""
    loader = _LOADERS.get(recipe.dataset)
    if loader is not None:
        data = loader(recipe, data_dir)
    elif recipe.dataset in _image_dataset_names():
        if recipe.task != "classification":
            raise ValueError(f"{recipe.dataset!r} is an image classification set, but {recipe.model}'s recipe "
                             f"is a {recipe.task} task; pick a {recipe.task} dataset (e.g. 'sir')")
        data = _load_image_task(recipe, data_dir)
    else:
        raise ValueError(f"unknown training dataset {recipe.dataset!r}; known: {', '.join(list_train_datasets())}")
    if data.task != recipe.task:
        raise ValueError(f"dataset {recipe.dataset!r} is a {data.task} task, the recipe says {recipe.task}")
    if len(data.x_train) != len(data.y_train) or len(data.x_eval) != len(data.y_eval):
        raise ValueError(f"dataset {recipe.dataset!r}: inputs and targets differ in length")
    return data


# -- order and batches ------------------------------------------------------------------------------
def mix_seed(*parts: int) -> int:
    """A 63-bit seed from integers (splitmix64-style), so (seed, epoch) pairs never collide trivially."""
    h = 0x9E3779B97F4A7C15
    for p in parts:
        h = (h ^ (int(p) & 0xFFFFFFFFFFFFFFFF)) * 0xBF58476D1CE4E5B9 & 0xFFFFFFFFFFFFFFFF
        h ^= h >> 31
    return h & 0x7FFFFFFFFFFFFFFF


def epoch_order(n: int, data_seed: int, epoch: int) -> torch.Tensor:
    """The permutation of ``range(n)`` used in ``epoch`` (CPU, int64): a function of its arguments only."""
    g = torch.Generator().manual_seed(mix_seed(data_seed, epoch))
    return torch.randperm(n, generator=g)


def global_batches(n: int, batch_size: int, data_seed: int, epoch: int) -> list[torch.Tensor]:
    """The epoch's global batches of ``batch_size`` indices; the incomplete last batch is dropped
    (every step has the same size, which DDP's even split and the step-size schedule rely on)."""
    if batch_size > n:
        raise ValueError(f"batch size {batch_size} exceeds the {n} training examples")
    order = epoch_order(n, data_seed, epoch)
    return list(order[: (n // batch_size) * batch_size].split(batch_size))


def rank_slice(batch_size: int, rank: int, world: int) -> slice:
    if batch_size % world:
        raise ValueError(f"global batch size {batch_size} is not divisible by the {world} DDP processes")
    b = batch_size // world
    return slice(rank * b, (rank + 1) * b)


# -- augmentation -----------------------------------------------------------------------------------
def crop_flip_params(batch: int, padding: int, generator: torch.Generator, device: torch.device):
    """Per-example crop offsets in ``[0, 2 padding]`` and flip flags for a global batch."""
    offs = torch.randint(0, 2 * padding + 1, (batch, 2), generator=generator, device=device)
    flip = torch.rand(batch, generator=generator, device=device) < 0.5
    return offs, flip


def crop_flip(x: torch.Tensor, offs: torch.Tensor, flip: torch.Tensor, padding: int = 4) -> torch.Tensor:
    """Random crop of the zero-padded image (``padding`` pixels each side) back to its size, and a
    horizontal flip where ``flip``; on ``x``'s device, any dtype. ``offs[:, 0]``/``offs[:, 1]`` are
    the row/column offsets of the crop in the padded image (``padding`` = no shift)."""
    n, c, h, w = x.shape
    if offs.shape != (n, 2) or flip.shape != (n,):
        raise ValueError(f"crop parameters for {n} images expected, got {tuple(offs.shape)}, {tuple(flip.shape)}")
    xp = torch.nn.functional.pad(x, (padding, padding, padding, padding))
    rows = offs[:, 0, None] + torch.arange(h, device=x.device)  # (n, h)
    cols = offs[:, 1, None] + torch.arange(w, device=x.device)  # (n, w)
    cols = torch.where(flip[:, None], cols.flip(1), cols)
    idx_n = torch.arange(n, device=x.device)[:, None, None, None]
    idx_c = torch.arange(c, device=x.device)[None, :, None, None]
    return xp[idx_n, idx_c, rows[:, None, :, None], cols[:, None, None, :]]


def step_generator(seed: int, step: int, device: torch.device) -> torch.Generator:
    return torch.Generator(device=device).manual_seed(mix_seed(seed, 1_000_003, step))


def iterate_epoch(data: TrainData, recipe, epoch: int, step0: int, rank: int, world: int,
                  device: torch.device, dtype: torch.dtype = torch.float32) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
    """This rank's ``(inputs, targets)`` of every step of ``epoch`` (global step numbers from ``step0``)."""
    sl = rank_slice(recipe.batch_size, rank, world)
    batches = global_batches(len(data.y_train), recipe.batch_size, recipe.data_seed, epoch)
    for i, idx in enumerate(batches):
        idx = idx.to(data.x_train.device)
        if recipe.augment == "crop_flip":
            g = step_generator(recipe.seed, step0 + i, data.x_train.device)
            offs, flip = crop_flip_params(len(idx), 4, g, data.x_train.device)
            idx, offs, flip = idx[sl], offs[sl], flip[sl]
            x = crop_flip(data.x_train[idx], offs, flip, 4)
        else:
            idx = idx[sl]
            x = data.x_train[idx]
        yield to_model_input(x, dtype).to(device, non_blocking=True), data.y_train[idx].to(device, non_blocking=True)


def to_model_input(x: torch.Tensor, dtype: torch.dtype = torch.float32) -> torch.Tensor:
    """uint8 images become ``x / 255`` in ``[0, 1]``; float inputs pass through."""
    if x.dtype == torch.uint8:
        return x.to(dtype).div_(255.0)
    return x.to(dtype)
