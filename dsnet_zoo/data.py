"""Evaluation datasets by name, as uint8 images that the harness turns into ``[0, 1]`` floats.

Names (``load_dataset(name, split=...)``):

- ``cifar10``, ``cifar100``: the official splits through torchvision, read from ``<root>/cifar-10-batches-py``
  (``cifar-100-python``); downloaded into ``root`` when ``download=True`` and the machine is online.
- ``cifar10-real``: the first 1,017 official CIFAR-10 test images, byte-exact (``cifar10_test_real.npz``).
- ``cifar100-real``: the first 916 official CIFAR-100 test images (``cifar100_test_real.npz``) and, as
  ``split='train'``, the first 486 train images (``cifar100_train_real.npz``).
- ``cifar10-jpeg75``: all of CIFAR-10 (train 50,000 / test 10,000), each image re-encoded once as JPEG
  quality 75 (``cifar10_jpeg75.npz``): lossy, label results on it as such.

The root is ``data_dir``, else ``$DSNET_ZOO_DATA``, else ``~/.cache/dsnet_zoo/data`` (``$XDG_CACHE_HOME``).
The offline packs are checked against their published md5 before use. A missing or corrupt file raises
:class:`DataError` naming the file and what to download or where to point; there is never a silent
fallback to another set.
"""
from __future__ import annotations

import hashlib
import io
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

__all__ = ["DataError", "EvalData", "DATASETS", "DATA_ENV", "data_root", "load_dataset", "list_datasets"]

DATA_ENV = "DSNET_ZOO_DATA"

CIFAR10_LABELS = ("airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck")


class DataError(FileNotFoundError):
    """A dataset could not be found or failed its integrity check. The message says what to do."""


@dataclass(frozen=True)
class _PackFile:
    filename: str
    md5: str
    images: int


@dataclass(frozen=True)
class _DatasetSpec:
    name: str
    num_classes: int
    description: str
    splits: tuple[str, ...]
    packs: dict[str, _PackFile] = field(default_factory=dict)  # offline packs, by split
    torchvision: str | None = None  # "CIFAR10" / "CIFAR100"


DATASETS: dict[str, _DatasetSpec] = {
    "cifar10": _DatasetSpec("cifar10", 10, "CIFAR-10, official split (torchvision)", ("test", "train"),
                            torchvision="CIFAR10"),
    "cifar100": _DatasetSpec("cifar100", 100, "CIFAR-100, official split (torchvision)", ("test", "train"),
                             torchvision="CIFAR100"),
    "cifar10-real": _DatasetSpec(
        "cifar10-real", 10, "CIFAR-10 test, first 1,017 images, exact pixels", ("test",),
        packs={"test": _PackFile("cifar10_test_real.npz", "74a8af4985e2dc5b7a4e91d6a26c6a6a", 1017)}),
    "cifar100-real": _DatasetSpec(
        "cifar100-real", 100, "CIFAR-100, first 916 test (486 train) images, exact pixels", ("test", "train"),
        packs={"test": _PackFile("cifar100_test_real.npz", "024a34848ed766a1ae1d429d15929494", 916),
               "train": _PackFile("cifar100_train_real.npz", "8d13eb4d96a5640753189fcd673d15c4", 486)}),
    "cifar10-jpeg75": _DatasetSpec(
        "cifar10-jpeg75", 10, "CIFAR-10 re-encoded as JPEG quality 75 (lossy)", ("test", "train"),
        packs={"test": _PackFile("cifar10_jpeg75.npz", "7b811410d56aab3a8e6773dc2f0314b2", 60000),
               "train": _PackFile("cifar10_jpeg75.npz", "7b811410d56aab3a8e6773dc2f0314b2", 60000)}),
}

_TV_FOLDERS = {"CIFAR10": ("cifar-10-batches-py", "https://www.cs.toronto.edu/~kriz/cifar-10-python.tar.gz"),
               "CIFAR100": ("cifar-100-python", "https://www.cs.toronto.edu/~kriz/cifar-100-python.tar.gz")}


@dataclass
class EvalData:
    """Images ``x`` (uint8, N x 3 x 32 x 32, RGB) and labels ``y`` (int64), plus provenance.

    ``indices`` are the images' positions in the official split. ``float_batch`` gives the model input:
    ``x / 255`` in ``[0, 1]``, contiguous (the upstream AutoAttack code calls ``.view`` on it)."""

    name: str
    split: str
    x: torch.Tensor
    y: torch.Tensor
    indices: torch.Tensor
    num_classes: int
    info: dict[str, Any]

    def __len__(self) -> int:
        return int(self.y.shape[0])

    def subset(self, n: int) -> "EvalData":
        """The first ``n`` examples."""
        if not 0 < n <= len(self):
            raise DataError(f"{self.name} ({self.split}) has {len(self)} images, cannot take n={n}")
        return EvalData(self.name, self.split, self.x[:n], self.y[:n], self.indices[:n], self.num_classes,
                        dict(self.info, images=n))

    def float_batch(self, start: int, stop: int) -> tuple[torch.Tensor, torch.Tensor]:
        x = self.x[start:stop].to(torch.float32).div_(255.0).contiguous()
        return x, self.y[start:stop].clone()


def list_datasets() -> list[str]:
    return sorted(DATASETS)


def data_root(data_dir: str | os.PathLike | None = None) -> Path:
    """``data_dir``, else ``$DSNET_ZOO_DATA``, else the user cache folder."""
    if data_dir:
        return Path(data_dir).expanduser()
    env = os.environ.get(DATA_ENV, "").strip()
    if env:
        return Path(env).expanduser()
    cache = os.environ.get("XDG_CACHE_HOME", "").strip() or str(Path.home() / ".cache")
    return Path(cache) / "dsnet_zoo" / "data"


def _md5(path: Path) -> str:
    h = hashlib.md5()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 22), b""):
            h.update(block)
    return h.hexdigest()


def _where_hint(root: Path) -> str:
    return (f"Point --data-dir or {DATA_ENV} at the folder that holds it (now: {root}), "
            "or copy the file there.")


def _open_pack(spec: _DatasetSpec, split: str, root: Path, check_md5: bool) -> tuple[Any, Path, str]:
    pack = spec.packs[split]
    path = root / pack.filename
    if not path.is_file():
        raise DataError(
            f"dataset {spec.name!r} ({split}) needs {pack.filename}, which is not in {root}. "
            f"{_where_hint(root)} The offline CIFAR packs ship with the project's shared data folder "
            "(see its README); the official sets are 'cifar10'/'cifar100'.")
    digest = _md5(path)
    if check_md5 and digest != pack.md5:
        raise DataError(
            f"{path} is corrupt or not the published file: md5 {digest}, expected {pack.md5}. "
            f"Copy {pack.filename} again from the shared data folder; it was not used.")
    try:
        return np.load(path, allow_pickle=False), path, digest
    except (OSError, ValueError) as e:
        raise DataError(f"{path} could not be read as .npz ({e}); copy {pack.filename} again.") from e


def _load_pack(spec: _DatasetSpec, split: str, root: Path, check_md5: bool):
    data, path, digest = _open_pack(spec, split, root, check_md5)
    with data:
        if spec.name == "cifar10-jpeg75":
            from PIL import Image

            rows = np.nonzero(data["split"] == (1 if split == "test" else 0))[0]
            offsets, blob = data["offsets"], data["jpeg"]
            x = np.empty((len(rows), 32, 32, 3), dtype=np.uint8)
            for k, i in enumerate(rows):
                img = Image.open(io.BytesIO(blob[offsets[i]:offsets[i + 1]].tobytes())).convert("RGB")
                x[k] = np.asarray(img)
            y = data["y"][rows]
            idx = data["orig_index"][rows]
        else:
            x, y, idx = data["x"], data["y"], data["idx"]
    if x.shape[1:] != (32, 32, 3) or x.dtype != np.uint8 or len(x) != len(y):
        raise DataError(f"{path} does not hold 32x32 RGB uint8 images with labels; copy it again.")
    info = {"source": "offline-pack", "file": path.name, "md5": digest}
    return x, y, idx, info


def _load_torchvision(spec: _DatasetSpec, split: str, root: Path, download: bool):
    import torchvision

    folder, url = _TV_FOLDERS[spec.torchvision]
    cls = getattr(torchvision.datasets, spec.torchvision)
    have = (root / folder).is_dir()
    try:
        ds = cls(str(root), train=(split == "train"), download=download and not have)
    except RuntimeError as e:  # torchvision: "Dataset not found or corrupted"
        state = "is incomplete or corrupt" if have else "is missing"
        raise DataError(
            f"{spec.name}: {root / folder} {state} ({e}). Download {url} and extract it into {root} "
            f"(or run once online with download enabled), or point --data-dir/{DATA_ENV} at the folder "
            "holding it. Offline alternatives are separate datasets with their own names "
            "('cifar10-real', 'cifar100-real', 'cifar10-jpeg75').") from e
    except OSError as e:  # download failed: no network
        raise DataError(
            f"{spec.name}: not found under {root} and the download of {url} failed ({e}). Download it "
            f"elsewhere and extract it into {root}, or point --data-dir/{DATA_ENV} at a copy.") from e
    x = np.asarray(ds.data, dtype=np.uint8)
    y = np.asarray(ds.targets, dtype=np.int64)
    info = {"source": "torchvision", "folder": folder}
    return x, y, np.arange(len(y), dtype=np.int64), info


def load_dataset(name: str, split: str = "test", *, data_dir: str | os.PathLike | None = None,
                 n: int | None = None, download: bool = True, check_md5: bool = True) -> EvalData:
    """Load ``name``'s ``split``, the first ``n`` images in official order (all when ``n`` is None).

    Raises :class:`DataError` when the files are missing, corrupt, or hold fewer than ``n`` images.
    """
    if name not in DATASETS:
        raise ValueError(f"unknown dataset {name!r}; known: {', '.join(list_datasets())}")
    spec = DATASETS[name]
    if split not in spec.splits:
        raise ValueError(f"dataset {name!r} has no split {split!r} (has: {', '.join(spec.splits)})")
    if n is not None and n <= 0:
        raise ValueError(f"n must be positive, got {n}")
    root = data_root(data_dir)
    if spec.torchvision:
        x, y, idx, info = _load_torchvision(spec, split, root, download)
    else:
        x, y, idx, info = _load_pack(spec, split, root, check_md5)
    if n is not None:
        if n > len(y):
            raise DataError(f"{name} ({split}) has {len(y)} images, fewer than the n={n} requested")
        x, y, idx = x[:n], y[:n], idx[:n]
    if y.min() < 0 or y.max() >= spec.num_classes:
        raise DataError(f"{name}: labels outside 0..{spec.num_classes - 1}; the file is not what it claims")
    xt = torch.from_numpy(np.ascontiguousarray(x.transpose(0, 3, 1, 2)))
    info.update(description=spec.description, images=len(y))
    return EvalData(name=name, split=split, x=xt, y=torch.from_numpy(np.asarray(y, dtype=np.int64)),
                    indices=torch.from_numpy(np.asarray(idx, dtype=np.int64)),
                    num_classes=spec.num_classes, info=info)
