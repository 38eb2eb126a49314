"""Datasets by name, as uint8 images that the harness turns into ``[0, 1]`` floats.

Names (``load_dataset(name, split=...)``):

- ``cifar10-full``: the real CIFAR-10 train and test splits, byte-exact pixels, in official order:
  49,904 of the 50,000 train and 9,977 of the 10,000 test images (the 119 others could not be
  recovered), from ``cifar10_real_webp.npz``. ``indices`` are the official indices.
- ``cifar100-full``: all of the real CIFAR-100 train (50,000) and test (10,000) images, byte-exact,
  fine labels, from ``cifar100_real_webp.npz``. Rows are rank-major (the r-th image of class 0, 1, ...,
  99, then rank r + 1), so every prefix of ``100 k`` rows holds ``k`` images of each class; ``indices``
  are official indices where known (the first 486 train / 916 test images), ``-1`` elsewhere.
- ``cifar10-real``: the first 1,017 official CIFAR-10 test images, byte-exact (``cifar10_test_real.npz``;
  the same rows as the first 1,017 of ``cifar10-full`` test): the paper's evaluation set.
- ``cifar100-real``: the first 916 official CIFAR-100 test images (``cifar100_test_real.npz``) and, as
  ``split='train'``, the first 486 train images (``cifar100_train_real.npz``).
- ``cifar10``, ``cifar100``: the official splits through torchvision, read from ``<root>/cifar-10-batches-py``
  (``cifar-100-python``); downloaded into ``root`` when ``download=True`` and the machine is online.

Generated sets (no files; ``generate_dataset(name, **args)``, the arrays in float64):

- ``sir``: initial conditions of the SIR model on the simplex and their states at time ``t``
  (:func:`sir_dataset`; MassNet's experiment). Training reads it as recipe ``dataset='sir'`` with the
  recipe's ``dataset_args``; the regression test set ``sir`` (:func:`load_regression_set`, the set the
  leaderboard evaluates regression models on) is its held-out part for ``n=1000, seed=0, train_fraction=0.9``.

The root is ``data_dir``, else ``$DSNET_ZOO_DATA``, else ``~/.cache/dsnet_zoo/data`` (``$XDG_CACHE_HOME``);
it is only read, never written. The offline packs are checked against their published md5 before use.
A missing or corrupt file raises :class:`DataError` naming the file and what to do; there is never a
silent fallback to another set.

The full packs store each image as lossless WebP; decoding one takes 10-30 s, so the decoded uint8
array of the whole pack is cached once in :func:`decoded_cache_dir` (``$DSNET_ZOO_CACHE``, else
``~/.cache/dsnet_zoo/decoded``), in a file named by the pack's md5 and holding the sha256 of its own
content: a stale cache (another md5) is never read, a corrupt or truncated one is rebuilt with a
logged warning.

``EvalData.info['description']`` names the exact set, e.g. "CIFAR-10 test, 9,977 of 10,000 images (exact
pixels)" or, for ``n=1000``, "CIFAR-10 test, first 1,000 of 10,000 images (official indices 0-999, exact
pixels)"; results, cards and the leaderboard quote it.
"""
from __future__ import annotations

import hashlib
import io
import json
import logging
import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import numpy as np
import torch
from PIL import Image

from .utils import atomic_writer

__all__ = ["DataError", "EvalData", "DATASETS", "DATA_ENV", "CACHE_ENV", "data_root", "decoded_cache_dir",
           "describe_set", "load_dataset", "list_datasets",
           "GENERATED_DATASETS", "generate_dataset", "sir_dataset", "sir_flow_map", "sir_vector_field",
           "SIR_BETA", "SIR_GAMMA",
           "RegressionSet", "REGRESSION_SETS", "register_regression_set", "load_regression_set"]

DATA_ENV = "DSNET_ZOO_DATA"
CACHE_ENV = "DSNET_ZOO_CACHE"

logger = logging.getLogger(__name__)

CIFAR10_LABELS = ("airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck")


class DataError(FileNotFoundError):
    """A dataset could not be found or failed its integrity check. The message says what to do."""


@dataclass(frozen=True)
class _PackFile:
    filename: str
    md5: str
    images: int  # images of this split in the file
    webp: bool = False  # a lossless-WebP pack of both splits (decoded once, cached), else plain x/y/idx arrays


@dataclass(frozen=True)
class _DatasetSpec:
    name: str
    num_classes: int
    description: str  # one line for listings; EvalData.info['description'] names the exact set
    splits: tuple[str, ...]
    packs: dict[str, _PackFile] = field(default_factory=dict)  # offline packs, by split
    torchvision: str | None = None  # "CIFAR10" / "CIFAR100"
    title: str = ""  # "CIFAR-10", "CIFAR-100"
    pixels: str = "exact pixels"  # how the pixels relate to the official files
    rank_major: bool = False  # rows ordered by rank within class (class-balanced prefixes)


_OFFICIAL_SIZE = {"train": 50000, "test": 10000}  # CIFAR-10 and CIFAR-100 alike

_C10_WEBP = ("cifar10_real_webp.npz", "113d7e226591225e3be60f59ec894497")
_C100_WEBP = ("cifar100_real_webp.npz", "18d5d80315e1a72ad09da7e73435fce1")

DATASETS: dict[str, _DatasetSpec] = {
    "cifar10-full": _DatasetSpec(
        "cifar10-full", 10, "CIFAR-10, real train (49,904 of 50,000) and test (9,977 of 10,000) images, exact pixels",
        ("test", "train"), title="CIFAR-10",
        packs={"test": _PackFile(*_C10_WEBP, 9977, webp=True), "train": _PackFile(*_C10_WEBP, 49904, webp=True)}),
    "cifar100-full": _DatasetSpec(
        "cifar100-full", 100, "CIFAR-100, all real train (50,000) and test (10,000) images, exact pixels, "
        "rank-major order", ("test", "train"), title="CIFAR-100", rank_major=True,
        packs={"test": _PackFile(*_C100_WEBP, 10000, webp=True), "train": _PackFile(*_C100_WEBP, 50000, webp=True)}),
    "cifar10-real": _DatasetSpec(
        "cifar10-real", 10, "CIFAR-10 test, first 1,017 images, exact pixels", ("test",), title="CIFAR-10",
        packs={"test": _PackFile("cifar10_test_real.npz", "74a8af4985e2dc5b7a4e91d6a26c6a6a", 1017)}),
    "cifar100-real": _DatasetSpec(
        "cifar100-real", 100, "CIFAR-100, first 916 test (486 train) images, exact pixels", ("test", "train"),
        title="CIFAR-100",
        packs={"test": _PackFile("cifar100_test_real.npz", "024a34848ed766a1ae1d429d15929494", 916),
               "train": _PackFile("cifar100_train_real.npz", "8d13eb4d96a5640753189fcd673d15c4", 486)}),
    "cifar10": _DatasetSpec("cifar10", 10, "CIFAR-10, official split (torchvision)", ("test", "train"),
                            torchvision="CIFAR10", title="CIFAR-10", pixels="official files via torchvision"),
    "cifar100": _DatasetSpec("cifar100", 100, "CIFAR-100, official split (torchvision)", ("test", "train"),
                             torchvision="CIFAR100", title="CIFAR-100", pixels="official files via torchvision"),
}

_TV_FOLDERS = {"CIFAR10": ("cifar-10-batches-py", "https://www.cs.toronto.edu/~kriz/cifar-10-python.tar.gz"),
               "CIFAR100": ("cifar-100-python", "https://www.cs.toronto.edu/~kriz/cifar-100-python.tar.gz")}


def describe_set(name: str, split: str, indices: np.ndarray | torch.Tensor, available: int) -> str:
    """A human description of exactly which images these are: the first ``len(indices)`` of the
    ``available`` rows of ``name``'s ``split`` (``indices``: their official indices, ``-1`` = unknown).

    For example "CIFAR-10 test, 9,977 of 10,000 images (exact pixels)" (all of ``cifar10-full`` test),
    "CIFAR-10 test, first 1,000 of 10,000 images (official indices 0-999, exact pixels)" (``n=1000``),
    "CIFAR-100 test, ranks 0-9 of each class (1,000 of 10,000 images, exact pixels)".
    """
    spec = DATASETS[name]
    idx = np.asarray(indices, dtype=np.int64)
    n, total = len(idx), _OFFICIAL_SIZE[split]
    head, px = f"{spec.title} {split}", spec.pixels
    if n == total:
        return f"{head}, all {total:,} images ({px})"
    if spec.rank_major:
        k, r = divmod(n, spec.num_classes)
        if r == 0:
            ranks = "rank 0" if k == 1 else f"ranks 0-{k - 1}"
            return f"{head}, {ranks} of each class ({n:,} of {total:,} images, {px})"
        part = f"rank {k} of classes 0-{r - 1}" if r > 1 else f"rank {k} of class 0"
        if k:
            part = ("rank 0" if k == 1 else f"ranks 0-{k - 1}") + f" of each class and {part}"
        return f"{head}, first {n:,} of {total:,} images in rank-major order ({part}; {px})"
    if n and np.array_equal(idx, np.arange(n)):
        return f"{head}, first {n:,} of {total:,} images (official indices 0-{n - 1}, {px})"
    if n == available:
        return f"{head}, {n:,} of {total:,} images ({px})"
    lo, hi = int(idx.min()), int(idx.max())
    gaps = hi - lo + 1 - n
    where = f"official indices {lo}-{hi}" + (f" less {gaps} missing" if gaps > 0 else "")
    return f"{head}, first {n:,} of the {available:,} available images ({where}, {px})"


@dataclass
class EvalData:
    """Images ``x`` (uint8, N x 3 x 32 x 32, RGB) and labels ``y`` (int64), plus provenance.

    ``indices`` are the images' positions in the official split (``-1`` where unknown). ``info`` holds
    the provenance, with ``description`` naming the exact set. ``float_batch`` gives the model input:
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
        """The first ``n`` examples (the description says which)."""
        if not 0 < n <= len(self):
            raise DataError(f"{self.name} ({self.split}) has {len(self)} images, cannot take n={n}")
        info = dict(self.info, images=n)
        if n < len(self):
            if self.name in DATASETS and "available" in self.info:
                info["description"] = describe_set(self.name, self.split, self.indices[:n], self.info["available"])
            elif self.info.get("description"):
                info["description"] = f"first {n:,} of: {self.info['description']}"
        return EvalData(self.name, self.split, self.x[:n], self.y[:n], self.indices[:n], self.num_classes, info)

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


def decoded_cache_dir() -> Path:
    """Where decoded packs are cached: ``$DSNET_ZOO_CACHE``, else ``~/.cache/dsnet_zoo/decoded``
    (``$XDG_CACHE_HOME`` respected)."""
    env = os.environ.get(CACHE_ENV, "").strip()
    if env:
        return Path(env).expanduser()
    cache = os.environ.get("XDG_CACHE_HOME", "").strip() or str(Path.home() / ".cache")
    return Path(cache) / "dsnet_zoo" / "decoded"


def _md5(path: Path) -> str:
    h = hashlib.md5()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 22), b""):
            h.update(block)
    return h.hexdigest()


def _where_hint(root: Path) -> str:
    return (f"Point --data-dir or {DATA_ENV} at the folder that holds it (now: {root}), "
            "or copy the file there.")


def _check_pack(spec: _DatasetSpec, split: str, root: Path, check_md5: bool) -> tuple[Path, str]:
    """The pack's path and md5, after checking that it exists and (``check_md5``) is the published file."""
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
    return path, digest


def _npz(path: Path) -> Any:
    try:
        return np.load(path, allow_pickle=False)
    except (OSError, ValueError) as e:
        raise DataError(f"{path} could not be read as .npz ({e}); copy {path.name} again.") from e


# -- decoded-pack cache -----------------------------------------------------------------------------
_CACHE_MAGIC = b"dsnet_zoo.decoded/1\n"


def _cache_path(pack_name: str, digest: str, cache_dir: Path) -> Path:
    return cache_dir / f"{Path(pack_name).stem}-{digest}.u8"


def _read_cache(path: Path, digest: str, count: int) -> tuple[np.ndarray | None, str | None]:
    """``(images, None)`` from a valid cache file, ``(None, None)`` when there is none, or
    ``(None, why)`` when it is there but unusable (truncated, corrupt, another pack)."""
    try:
        f = open(path, "rb")
    except (FileNotFoundError, NotADirectoryError):
        return None, None
    except OSError as e:
        return None, f"cannot be opened ({e})"
    with f:
        if f.read(len(_CACHE_MAGIC)) != _CACHE_MAGIC:
            return None, "does not start with the cache header"
        try:
            head = json.loads(f.readline(4096))
            shape = tuple(int(v) for v in head["shape"])
            want_sha, pack_md5 = str(head["sha256"]), str(head["pack_md5"])
        except (ValueError, KeyError, TypeError) as e:
            return None, f"has an unreadable header ({e})"
        if pack_md5 != digest or shape != (count, 32, 32, 3):
            return None, f"was made from another pack (md5 {pack_md5}, shape {shape})"
        x = np.empty(shape, dtype=np.uint8)
        got = f.readinto(memoryview(x).cast("B"))
        if got != x.nbytes:
            return None, f"holds {got:,} of the {x.nbytes:,} image bytes (truncated)"
        if f.read(1):
            return None, f"holds more than the {x.nbytes:,} image bytes (padded)"
    if hashlib.sha256(memoryview(x).cast("B")).hexdigest() != want_sha:
        return None, "fails its sha256 content check (corrupt)"
    return x, None


def _write_cache(path: Path, x: np.ndarray, pack_name: str, digest: str) -> None:
    head = {"pack": pack_name, "pack_md5": digest, "shape": list(x.shape), "dtype": "uint8",
            "layout": "N x H x W x C, RGB, every row of the pack in file order",
            "sha256": hashlib.sha256(memoryview(x).cast("B")).hexdigest()}
    with atomic_writer(path) as f:
        f.write(_CACHE_MAGIC)
        f.write(json.dumps(head).encode() + b"\n")
        f.write(memoryview(x).cast("B"))


def _decode_webp(data: Any, path: Path) -> np.ndarray:
    offsets, blob = data["offsets"], data["webp"]
    count = len(offsets) - 1
    x = np.empty((count, 32, 32, 3), dtype=np.uint8)
    for i in range(count):
        try:
            img = Image.open(io.BytesIO(blob[offsets[i]:offsets[i + 1]].tobytes()))
            x[i] = np.asarray(img.convert("RGB"))
        except (OSError, ValueError) as e:
            raise DataError(f"{path}: image {i} does not decode as a 32x32 WebP ({e}); copy {path.name} again.") from e
    return x


def _decoded_pack(data: Any, path: Path, digest: str) -> np.ndarray:
    """The decoded uint8 images (N x 32 x 32 x 3) of every row of a WebP pack, from the cache when it
    holds a valid copy, else decoded now and cached (atomically) for the next time."""
    count = len(data["y"])
    cache_dir = decoded_cache_dir()
    cpath = _cache_path(path.name, digest, cache_dir)
    x, why = _read_cache(cpath, digest, count)
    if x is not None:
        return x
    if why is not None:
        logger.warning("decoded cache %s %s: ignoring it, decoding %s again and rewriting the cache",
                       cpath, why, path.name)
    logger.info("decoding the %s WebP images of %s (once; cached in %s)", f"{count:,}", path.name, cache_dir)
    t0 = time.perf_counter()
    x = _decode_webp(data, path)
    decode_s = time.perf_counter() - t0
    try:
        _write_cache(cpath, x, path.name, digest)
    except OSError as e:
        logger.warning("could not write the decoded cache %s (%s); %s will be decoded again next time "
                       "(set %s to a writable folder)", cpath, e, path.name, CACHE_ENV)
    logger.info("decoded %s in %.1f s", path.name, decode_s)
    return x


def _load_pack(spec: _DatasetSpec, split: str, root: Path, check_md5: bool):
    pack = spec.packs[split]
    path, digest = _check_pack(spec, split, root, check_md5)
    with _npz(path) as data:
        try:
            if pack.webp:
                rows = np.nonzero(data["split"] == (1 if split == "test" else 0))[0]
                y, idx = data["y"][rows], data["orig_index"][rows]
                x_all = _decoded_pack(data, path, digest)
                if len(rows) and rows[-1] - rows[0] + 1 == len(rows):  # contiguous: a view, no copy
                    x = x_all[rows[0]:rows[-1] + 1]
                else:
                    x = x_all[rows]
            else:
                x, y, idx = data["x"], data["y"], data["idx"]
        except KeyError as e:
            raise DataError(f"{path} lacks the array {e}; it is not the published file, copy it again.") from e
    if x.shape[1:] != (32, 32, 3) or x.dtype != np.uint8 or len(x) != len(y) or len(y) != pack.images:
        raise DataError(f"{path} does not hold the {pack.images:,} 32x32 RGB uint8 {split} images with labels "
                        f"it should; copy it again.")
    info = {"source": "offline-pack", "file": path.name, "md5": digest}
    return x, y, idx, info


def _load_torchvision(spec: _DatasetSpec, split: str, root: Path, download: bool):
    # imported here, for the two torchvision-backed names only: importing torchvision takes about a second
    # and every other set (the offline packs, the generated sets) does without it
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
            "('cifar10-full', 'cifar100-full', 'cifar10-real', 'cifar100-real').") from e
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
    """Load ``name``'s ``split``: the first ``n`` images in the set's order (all when ``n`` is None).

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
    available = len(y)
    if n is not None:
        if n > len(y):
            raise DataError(f"{name} ({split}) has {len(y)} images, fewer than the n={n} requested")
        x, y, idx = x[:n], y[:n], idx[:n]
    if y.min() < 0 or y.max() >= spec.num_classes:
        raise DataError(f"{name}: labels outside 0..{spec.num_classes - 1}; the file is not what it claims")
    xt = torch.from_numpy(np.ascontiguousarray(x.transpose(0, 3, 1, 2)))
    info.update(description=describe_set(name, split, idx, available), images=len(y), available=available)
    return EvalData(name=name, split=split, x=xt, y=torch.from_numpy(np.asarray(y, dtype=np.int64)),
                    indices=torch.from_numpy(np.asarray(idx, dtype=np.int64)),
                    num_classes=spec.num_classes, info=info)


# -- generated sets ---------------------------------------------------------------------------------
# The paper's repository integrates f(y) = (-R0 y0 y1, R0 y0 y1 - y1, y1) with R0 = 1, i.e. beta = gamma = 1.
SIR_BETA = 1.0
SIR_GAMMA = 1.0


def sir_vector_field(y: np.ndarray, beta: float = SIR_BETA, gamma: float = SIR_GAMMA) -> np.ndarray:
    """``(S, I, R)' = (-beta S I, beta S I - gamma I, gamma I)`` for states of shape ``(..., 3)``."""
    s, i = y[..., 0], y[..., 1]
    infection = beta * s * i
    recovery = gamma * i
    return np.stack([-infection, infection - recovery, recovery], axis=-1)


def sir_flow_map(x0: np.ndarray, t: float = 1.0, *, beta: float = SIR_BETA, gamma: float = SIR_GAMMA,
                 steps: int = 1000) -> np.ndarray:
    """The SIR state at time ``t`` from ``x0`` (shape ``(N, 3)``), classical RK4 in float64 with
    ``steps`` equal steps. RK4 conserves the linear invariant ``S + I + R`` exactly (up to
    rounding); with ``t = 1`` and 1,000 steps the global error is below 1e-13 (checked in the tests
    against 2,000 steps)."""
    if steps < 1:
        raise ValueError(f"steps must be >= 1, got {steps}")
    y = np.asarray(x0, dtype=np.float64).copy()
    if y.ndim != 2 or y.shape[1] != 3:
        raise ValueError(f"x0 must have shape (N, 3) (S, I, R), got {y.shape}")
    h = t / steps
    for _ in range(steps):
        k1 = sir_vector_field(y, beta, gamma)
        k2 = sir_vector_field(y + 0.5 * h * k1, beta, gamma)
        k3 = sir_vector_field(y + 0.5 * h * k2, beta, gamma)
        k4 = sir_vector_field(y + h * k3, beta, gamma)
        y = y + (h / 6.0) * (k1 + 2.0 * k2 + 2.0 * k3 + k4)
    return y


def sir_dataset(n: int = 1000, *, seed: int = 0, t: float = 1.0, beta: float = SIR_BETA, gamma: float = SIR_GAMMA,
                steps: int = 1000, train_fraction: float = 0.9) -> dict[str, np.ndarray]:
    """Deterministic SIR flow-map data: ``n`` initial conditions on the simplex and their states
    at time ``t``, split ``train_fraction`` / rest in order, float64.

    Initial conditions are drawn as in the paper's repository: uniform on ``[0, 1]^3``, then
    divided by their sum (``numpy.random.default_rng(seed)``). Returns ``x_train, y_train, x_test,
    y_test`` (``y = flow_t(x)``), each ``(M, 3)``.
    """
    if n < 2 or not 0.0 < train_fraction < 1.0:
        raise ValueError(f"need n >= 2 and 0 < train_fraction < 1, got n={n}, train_fraction={train_fraction}")
    rng = np.random.default_rng(seed)
    x0 = rng.random((n, 3))
    x0 = x0 / x0.sum(axis=1, keepdims=True)
    x1 = sir_flow_map(x0, t, beta=beta, gamma=gamma, steps=steps)
    n_train = int(round(train_fraction * n))
    return {"x_train": x0[:n_train], "y_train": x1[:n_train], "x_test": x0[n_train:], "y_test": x1[n_train:]}


@dataclass(frozen=True)
class _Generator:
    fn: Callable[..., dict[str, np.ndarray]]
    # the generator's name in the provenance of results and trained weights: the one recorded before the
    # generator moved here from dsnet_zoo.models.massnet (which re-exports it, so the name still imports)
    recorded_as: str


# name -> generator of ``{'x_train', 'y_train', 'x_test', 'y_test'}`` (float64 arrays)
GENERATED_DATASETS: dict[str, _Generator] = {
    "sir": _Generator(sir_dataset, "dsnet_zoo.models.massnet.sir_dataset"),
}


def generate_dataset(name: str, **args: Any) -> tuple[dict[str, np.ndarray], dict[str, Any]]:
    """The arrays of generated set ``name`` made with ``args`` (its generator's keyword arguments), and
    their provenance ``{'generator', 'args'}``. Deterministic: the same arguments give the same arrays."""
    if name not in GENERATED_DATASETS:
        raise ValueError(f"unknown generated dataset {name!r}; known: {', '.join(sorted(GENERATED_DATASETS))}")
    gen = GENERATED_DATASETS[name]
    return gen.fn(**args), {"generator": gen.recorded_as, "args": dict(args)}


# -- regression test sets by name --------------------------------------------------------------------
@dataclass(frozen=True)
class RegressionSet:
    """Inputs ``x`` and targets ``y`` (float64 arrays, ``(N, d)``) of one named test set, with
    ``info`` (provenance: generator, arguments, ``md5`` of the whole set, ``description``)."""

    name: str
    split: str
    x: np.ndarray
    y: np.ndarray
    info: dict[str, Any] = field(default_factory=dict)

    def __len__(self) -> int:
        return int(self.x.shape[0])


REGRESSION_SETS: dict[str, Callable[[], RegressionSet]] = {}


def register_regression_set(name: str, loader: Callable[[], RegressionSet]) -> None:
    if name in REGRESSION_SETS:
        raise ValueError(f"regression set {name!r} is already registered")
    REGRESSION_SETS[name] = loader


def _md5_arrays(*arrays: np.ndarray) -> str:
    h = hashlib.md5()
    for a in arrays:
        a = np.ascontiguousarray(a, dtype=np.float64)
        h.update(str(a.shape).encode())
        h.update(a.tobytes())
    return h.hexdigest()


def _sir_test() -> RegressionSet:
    args = {"n": 1000, "seed": 0, "train_fraction": 0.9}
    d, prov = generate_dataset("sir", **args)
    x, y = d["x_test"], d["y_test"]
    first = len(d["x_train"])
    info = {"source": "generated", "generator": prov["generator"], "args": args,
            "part": "x_test, y_test", "rows": f"{first}..{first + len(x) - 1}", "beta": SIR_BETA, "gamma": SIR_GAMMA,
            "targets": "SIR state at t = 1, float64 RK4 with 1,000 steps", "md5": _md5_arrays(x, y),
            "available": len(x),
            "description": (f"SIR flow map at t = 1 (beta = gamma = 1): the {len(x):,} held-out initial conditions "
                            f"of sir_dataset(n=1000, seed=0, train_fraction=0.9) (rows {first}-{first + len(x) - 1})")}
    return RegressionSet("sir", "test", x, y, info)


register_regression_set("sir", _sir_test)


def load_regression_set(name: str, n: int | None = None) -> RegressionSet:
    """The set ``name``, or its first ``n`` examples (the description says which)."""
    if name not in REGRESSION_SETS:
        raise ValueError(f"unknown regression set {name!r}; known: {', '.join(sorted(REGRESSION_SETS))}")
    data = REGRESSION_SETS[name]()
    if n is None or n == len(data):
        return data
    if not 0 < n <= len(data):
        raise ValueError(f"regression set {name!r} has {len(data)} examples, cannot take n={n}")
    info = dict(data.info, description=f"first {n:,} of: {data.info['description']}")
    return RegressionSet(data.name, data.split, data.x[:n], data.y[:n], info)
