"""Datasets by name: the offline packs (read through DSNET_ZOO_DATA), the decoded-pack cache, the
descriptions of exact sets, root precedence and clear errors.

The full lossless packs are decoded once per test session (the session cache folder of conftest); the
tests of the cache itself use a small synthetic WebP pack built here."""
from __future__ import annotations

import hashlib
import io
import logging
import os
import shutil
import time
from pathlib import Path

import numpy as np
import pytest
import torch

from conftest import env_path
from dsnet_zoo import data as data_mod
from dsnet_zoo.data import (CACHE_ENV, DATA_ENV, DATASETS, GENERATED_DATASETS, DataError, data_root, decoded_cache_dir,
                            describe_set, generate_dataset, list_datasets, load_dataset, load_regression_set)
from dsnet_zoo.evaluation import regression
from dsnet_zoo.models import massnet
from dsnet_zoo.training.data import list_train_datasets, load_train_data
from dsnet_zoo.training.recipes import default_recipe

DATA = os.environ.get(DATA_ENV)
needs_data = pytest.mark.skipif(not DATA, reason=f"{DATA_ENV} is not set (point it at the offline CIFAR packs)")

FULL = {("cifar10-full", "test"): (9977, 10), ("cifar10-full", "train"): (49904, 10),
        ("cifar100-full", "test"): (10000, 100), ("cifar100-full", "train"): (50000, 100)}
WEBP_PACKS = {"cifar10-full": "cifar10_real_webp.npz", "cifar100-full": "cifar100_real_webp.npz"}


def _snapshot(folder: Path) -> dict[str, tuple[int, int]]:
    return {p.name: (p.stat().st_size, p.stat().st_mtime_ns) for p in sorted(folder.iterdir())}


@pytest.fixture(scope="session")
def full_sets():
    """Every split of both full packs, loaded once; the first load of each pack decodes it (unless the
    cache folder already holds it), the second reads the cache. Times are printed and kept."""
    root = env_path(DATA_ENV, *WEBP_PACKS.values())  # skips when unset, fails when set but files are missing
    before = _snapshot(root)
    sets, times = {}, {}
    for name, pack in WEBP_PACKS.items():
        cached = any(decoded_cache_dir().glob(f"{Path(pack).stem}-*.u8"))
        t0 = time.perf_counter()
        sets[name, "test"] = load_dataset(name, "test", data_dir=root)
        t1 = time.perf_counter()
        again = load_dataset(name, "test", data_dir=root)
        t2 = time.perf_counter()
        sets[name, "train"] = load_dataset(name, "train", data_dir=root)
        t3 = time.perf_counter()
        assert torch.equal(again.x, sets[name, "test"].x)
        times[name] = {"first_load_s": t1 - t0, "first_load_decoded": not cached, "cached_test_load_s": t2 - t1,
                       "cached_train_load_s": t3 - t2}
    assert _snapshot(root) == before, "loading wrote into the data folder"
    return sets, times, root


# -- the full lossless packs --------------------------------------------------------------------------
@pytest.mark.parametrize("name,split", list(FULL))
def test_every_split_of_the_full_packs(full_sets, name, split):
    sets, _, _ = full_sets
    d = sets[name, split]
    count, classes = FULL[name, split]
    assert len(d) == count and d.x.shape == (count, 3, 32, 32) and d.x.dtype == torch.uint8
    assert d.y.dtype == torch.int64 and d.indices.shape == (count,) and d.num_classes == classes
    assert 0 <= int(d.y.min()) and int(d.y.max()) < classes and len(set(d.y.tolist())) == classes
    assert d.info["md5"] == DATASETS[name].packs[split].md5 and d.info["available"] == count
    total = 10000 if split == "test" else 50000
    idx = d.indices.numpy()
    if name == "cifar10-full":  # official order, official indices, the unrecovered ones skipped
        assert (np.diff(idx) > 0).all() and idx[0] >= 0 and idx[-1] < total
        with np.load(Path(DATA) / WEBP_PACKS[name]) as f:
            missing = f[f"missing_{split}"]
        assert np.array_equal(np.setdiff1d(np.arange(total), idx), np.sort(missing))
        assert d.info["description"] == f"CIFAR-10 {split}, {count:,} of {total:,} images (exact pixels)"
    else:  # official index known for the first 916 test / 486 train images only
        known = idx[idx >= 0]
        assert np.array_equal(np.sort(known), np.arange(916 if split == "test" else 486))
        assert (idx[idx < 0] == -1).all()
        assert d.info["description"] == f"CIFAR-100 {split}, all {total:,} images (exact pixels)"
    x, y = d.float_batch(0, 5)
    assert x.dtype == torch.float32 and x.is_contiguous() and 0 <= float(x.min()) and float(x.max()) <= 1


def test_cifar10_full_test_starts_with_cifar10_real(full_sets):
    sets, _, root = full_sets
    full = sets["cifar10-full", "test"]
    real = load_dataset("cifar10-real", data_dir=root)
    assert len(real) == 1017
    for a, b in ((full.x[:1017], real.x), (full.y[:1017], real.y), (full.indices[:1017], real.indices)):
        assert a.dtype == b.dtype and a.shape == b.shape
        assert a.contiguous().numpy().tobytes() == b.contiguous().numpy().tobytes()
    # the same exact set gets the same description either way
    assert load_dataset("cifar10-full", n=1017, data_dir=root).info["description"] == real.info["description"]


@pytest.mark.parametrize("split", ["train", "test"])
def test_every_cifar100_prefix_is_class_balanced(full_sets, split):
    sets, _, root = full_sets
    d = sets["cifar100-full", split]
    y = d.y.numpy()
    counts = np.cumsum(np.eye(100, dtype=np.int32)[y], axis=0)[99::100]  # class counts of each prefix 100 k
    k = np.arange(1, len(y) // 100 + 1)
    assert counts.shape == (len(k), 100) and (counts == k[:, None]).all()
    # the rows whose official index is known are exactly the small real CIFAR-100 subsets
    real = load_dataset("cifar100-real", split, data_dir=root)
    known = np.nonzero(d.indices.numpy() >= 0)[0]
    rows = known[np.argsort(d.indices.numpy()[known])]
    assert torch.equal(d.x[rows], real.x) and torch.equal(d.y[rows], real.y)


def test_prefixes_say_which_images(full_sets):
    sets, _, root = full_sets
    c10 = load_dataset("cifar10-full", "test", n=1000, data_dir=root)
    assert torch.equal(c10.x, sets["cifar10-full", "test"].x[:1000]) and c10.indices.tolist() == list(range(1000))
    assert c10.info["description"] == "CIFAR-10 test, first 1,000 of 10,000 images (official indices 0-999, exact pixels)"
    c10b = load_dataset("cifar10-full", "test", n=2000, data_dir=root)  # spans unrecovered indices
    assert c10b.info["description"].startswith("CIFAR-10 test, first 2,000 of the 9,977 available images (official")
    c100 = load_dataset("cifar100-full", "test", n=1000, data_dir=root)
    assert torch.equal(c100.y, sets["cifar100-full", "test"].y[:1000])
    assert c100.info["description"] == "CIFAR-100 test, ranks 0-9 of each class (1,000 of 10,000 images, exact pixels)"
    # subset() of a loaded set describes itself like n= does
    assert sets["cifar100-full", "test"].subset(1000).info["description"] == c100.info["description"]
    assert sets["cifar10-full", "test"].subset(1000).info["description"] == c10.info["description"]
    with pytest.raises(DataError, match="fewer than"):
        load_dataset("cifar10-full", n=9978, data_dir=root)


def test_decode_and_cached_load_times(full_sets, record_property):
    _, times, _ = full_sets
    for name, t in times.items():
        record_property(f"{name}_load_times", t)
        print(f"{name}: first load {t['first_load_s']:.2f} s ({'decoded' if t['first_load_decoded'] else 'cached'}), "
              f"cached test {t['cached_test_load_s']:.2f} s, cached train {t['cached_train_load_s']:.2f} s")
        if t["first_load_decoded"]:
            assert t["cached_test_load_s"] < t["first_load_s"]


@needs_data
def test_corrupt_full_pack_is_refused(tmp_path):
    src = env_path(DATA_ENV, "cifar10_real_webp.npz") / "cifar10_real_webp.npz"
    dst = tmp_path / src.name
    shutil.copyfile(src, dst)
    _flip(dst, 1_000_000)
    with pytest.raises(DataError) as e:
        load_dataset("cifar10-full", data_dir=tmp_path)
    msg = str(e.value)
    assert str(dst) in msg and "md5" in msg and "Copy cifar10_real_webp.npz again" in msg


@pytest.mark.parametrize("name", list(WEBP_PACKS))
def test_missing_full_pack_names_the_file_and_the_variable(tmp_path, name):
    with pytest.raises(DataError) as e:
        load_dataset(name, "train", data_dir=tmp_path)
    assert WEBP_PACKS[name] in str(e.value) and DATA_ENV in str(e.value)


# -- the decoded-pack cache, on a small synthetic WebP pack -------------------------------------------
def _flip(path: Path, offset: int) -> None:
    with open(path, "r+b") as f:
        f.seek(offset)
        byte = f.read(1)
        f.seek(offset)
        f.write(bytes([byte[0] ^ 0xFF]))


def _write_webp_pack(path: Path, seed: int, n_train: int = 12, n_test: int = 8) -> tuple[np.ndarray, str]:
    """A pack in the layout of ``cifar10_real_webp.npz`` (lossless WebP); returns its images and md5."""
    from PIL import Image

    rng = np.random.default_rng(seed)
    n = n_train + n_test
    x = rng.integers(0, 256, (n, 32, 32, 3), dtype=np.uint8)
    blobs = []
    for img in x:
        buf = io.BytesIO()
        Image.fromarray(img).save(buf, format="WEBP", lossless=True)
        blobs.append(np.frombuffer(buf.getvalue(), np.uint8))
    offsets = np.concatenate([[0], np.cumsum([len(b) for b in blobs])]).astype(np.int64)
    split = np.array([0] * n_train + [1] * n_test, np.int8)
    orig = np.concatenate([np.arange(n_train), np.arange(n_test)]).astype(np.int64)
    np.savez(path, webp=np.concatenate(blobs), offsets=offsets, y=rng.integers(0, 10, n).astype(np.int64),
             split=split, orig_index=orig, label_names=np.array([f"c{i}" for i in range(10)]))
    return x, hashlib.md5(path.read_bytes()).hexdigest()


@pytest.fixture
def synthetic(tmp_path, monkeypatch):
    """A synthetic WebP pack registered as dataset ``synthetic-webp`` (md5 passed in), and an empty cache."""
    root, cache = tmp_path / "data", tmp_path / "cache"
    root.mkdir()
    monkeypatch.setenv(CACHE_ENV, str(cache))

    def make(seed: int = 0):
        x, md5 = _write_webp_pack(root / "synthetic_webp.npz", seed)
        spec = data_mod._DatasetSpec(
            "synthetic-webp", 10, "synthetic", ("test", "train"), title="Synthetic",
            packs={"test": data_mod._PackFile("synthetic_webp.npz", md5, 8, webp=True),
                   "train": data_mod._PackFile("synthetic_webp.npz", md5, 12, webp=True)})
        monkeypatch.setitem(DATASETS, "synthetic-webp", spec)
        return x, md5

    return make, root, cache


def _no_decoding(monkeypatch):
    def fail(*a, **k):
        raise AssertionError("decoded again although a valid cache exists")

    monkeypatch.setattr(data_mod, "_decode_webp", fail)


def _as_nhwc(d):
    return d.x.permute(0, 2, 3, 1).numpy()


def test_decoded_pack_is_cached_once_and_reused(synthetic, monkeypatch, caplog):
    make, root, cache = synthetic
    x, md5 = make()
    before = _snapshot(root)
    train = load_dataset("synthetic-webp", "train", data_dir=root)
    assert np.array_equal(_as_nhwc(train), x[:12])  # lossless
    assert [p.name for p in cache.iterdir()] == [f"synthetic_webp-{md5}.u8"]
    assert _snapshot(root) == before  # the data folder is only read
    _no_decoding(monkeypatch)
    with caplog.at_level(logging.WARNING, logger="dsnet_zoo.data"):
        test = load_dataset("synthetic-webp", "test", data_dir=root)
    assert np.array_equal(_as_nhwc(test), x[12:]) and test.indices.tolist() == list(range(8))
    assert not caplog.records
    assert test.info["description"] == "Synthetic test, first 8 of 10,000 images (official indices 0-7, exact pixels)"


@pytest.mark.parametrize("damage", ["flip-pixels", "flip-header", "truncate", "pad", "empty"])
def test_corrupt_cache_is_rebuilt_with_a_warning(synthetic, monkeypatch, caplog, damage):
    make, root, cache = synthetic
    x, md5 = make()
    first = load_dataset("synthetic-webp", "train", data_dir=root)
    cfile = cache / f"synthetic_webp-{md5}.u8"
    good = cfile.read_bytes()
    if damage == "flip-pixels":
        _flip(cfile, len(good) - 1000)
    elif damage == "flip-header":
        _flip(cfile, 3)
    elif damage == "truncate":
        cfile.write_bytes(good[:-100])
    elif damage == "pad":
        cfile.write_bytes(good + b"\0")
    else:
        cfile.write_bytes(b"")
    with caplog.at_level(logging.WARNING, logger="dsnet_zoo.data"):
        again = load_dataset("synthetic-webp", "train", data_dir=root)
    assert torch.equal(again.x, first.x) and torch.equal(again.y, first.y)
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 1 and str(cfile) in warnings[0] and "decoding synthetic_webp.npz again" in warnings[0]
    assert cfile.read_bytes() == good  # rebuilt
    _no_decoding(monkeypatch)
    assert torch.equal(load_dataset("synthetic-webp", "train", data_dir=root).x, first.x)


def test_stale_cache_is_never_used(synthetic, caplog):
    make, root, cache = synthetic
    xa, md5a = make(seed=0)
    load_dataset("synthetic-webp", "test", data_dir=root)
    xb, md5b = make(seed=1)  # the pack changed: other pixels, other md5
    assert md5a != md5b
    b = load_dataset("synthetic-webp", "test", data_dir=root)
    assert np.array_equal(_as_nhwc(b), xb[12:])
    # a cache file of pack A under pack B's name is detected by its header, not used
    shutil.copyfile(cache / f"synthetic_webp-{md5a}.u8", cache / f"synthetic_webp-{md5b}.u8")
    with caplog.at_level(logging.WARNING, logger="dsnet_zoo.data"):
        b2 = load_dataset("synthetic-webp", "test", data_dir=root)
    assert np.array_equal(_as_nhwc(b2), xb[12:])
    assert any("another pack" in r.getMessage() for r in caplog.records)


def test_unwritable_cache_still_loads(synthetic, monkeypatch, caplog):
    make, root, cache = synthetic
    x, _ = make()
    blocker = cache.parent / "not-a-folder"
    blocker.write_text("")
    monkeypatch.setenv(CACHE_ENV, str(blocker))
    with caplog.at_level(logging.WARNING, logger="dsnet_zoo.data"):
        d = load_dataset("synthetic-webp", "train", data_dir=root)
    assert np.array_equal(_as_nhwc(d), x[:12])
    assert any("could not write the decoded cache" in r.getMessage() for r in caplog.records)


def test_corrupt_synthetic_pack_is_refused(synthetic):
    make, root, cache = synthetic
    make()
    _flip(root / "synthetic_webp.npz", 200)
    with pytest.raises(DataError, match="is corrupt or not the published file: md5") as e:
        load_dataset("synthetic-webp", "test", data_dir=root)
    assert "synthetic_webp.npz" in str(e.value) and not cache.exists()


def test_cache_dir_precedence(tmp_path, monkeypatch):
    monkeypatch.setenv(CACHE_ENV, str(tmp_path / "c"))
    assert decoded_cache_dir() == tmp_path / "c"
    monkeypatch.delenv(CACHE_ENV)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    assert decoded_cache_dir() == tmp_path / "xdg" / "dsnet_zoo" / "decoded"
    monkeypatch.delenv("XDG_CACHE_HOME")
    assert decoded_cache_dir() == Path.home() / ".cache" / "dsnet_zoo" / "decoded"


def test_descriptions_of_exact_sets():
    missing = np.array([3, 7])
    idx = np.setdiff1d(np.arange(10000), missing)
    assert describe_set("cifar10-full", "test", idx, 9998) == "CIFAR-10 test, 9,998 of 10,000 images (exact pixels)"
    assert describe_set("cifar10-full", "test", idx[:3], 9998) == \
        "CIFAR-10 test, first 3 of 10,000 images (official indices 0-2, exact pixels)"
    assert describe_set("cifar10-full", "test", idx[:9], 9998) == \
        "CIFAR-10 test, first 9 of the 9,998 available images (official indices 0-10 less 2 missing, exact pixels)"
    assert describe_set("cifar100-full", "train", -np.ones(50000), 50000) == \
        "CIFAR-100 train, all 50,000 images (exact pixels)"
    assert describe_set("cifar100-full", "test", -np.ones(100), 10000) == \
        "CIFAR-100 test, rank 0 of each class (100 of 10,000 images, exact pixels)"
    assert describe_set("cifar100-full", "test", -np.ones(1050), 10000) == (
        "CIFAR-100 test, first 1,050 of 10,000 images in rank-major order "
        "(ranks 0-9 of each class and rank 10 of classes 0-49; exact pixels)")
    assert describe_set("cifar10", "test", np.arange(10000), 10000) == \
        "CIFAR-10 test, all 10,000 images (official files via torchvision)"


# -- the small real packs ------------------------------------------------------------------------------
@needs_data
@pytest.mark.parametrize("name,split,count,classes", [
    ("cifar10-real", "test", 1017, 10), ("cifar100-real", "test", 916, 100), ("cifar100-real", "train", 486, 100),
])
def test_real_packs(name, split, count, classes):
    d = load_dataset(name, split)  # fails loudly if DSNET_ZOO_DATA is set but the file is missing
    assert len(d) == count and d.x.shape == (count, 3, 32, 32) and d.x.dtype == torch.uint8
    assert d.indices.tolist() == list(range(count))
    assert 0 <= int(d.y.min()) and int(d.y.max()) < classes
    if classes == 10:
        assert set(d.y.tolist()) == set(range(10))
    assert d.info["md5"] and d.num_classes == classes
    total = 10000 if split == "test" else 50000
    assert d.info["description"] == (f"{'CIFAR-10' if classes == 10 else 'CIFAR-100'} {split}, first {count:,} of "
                                     f"{total:,} images (official indices 0-{count - 1}, exact pixels)")
    x, y = d.float_batch(0, 5)
    assert x.dtype == torch.float32 and x.is_contiguous() and 0 <= float(x.min()) and float(x.max()) <= 1
    with pytest.raises(DataError, match="fewer than"):
        load_dataset(name, split, n=count + 1)


@needs_data
def test_corrupt_pack_is_refused(tmp_path):
    src = Path(DATA) / "cifar10_test_real.npz"
    dst = tmp_path / src.name
    shutil.copyfile(src, dst)
    _flip(dst, 5000)
    with pytest.raises(DataError, match="md5"):
        load_dataset("cifar10-real", data_dir=tmp_path)


def test_missing_pack_names_the_file_and_the_variable(tmp_path):
    with pytest.raises(DataError) as e:
        load_dataset("cifar100-real", data_dir=tmp_path)
    assert "cifar100_test_real.npz" in str(e.value) and DATA_ENV in str(e.value)


def test_wrong_file_content_is_refused(tmp_path):
    np.savez(tmp_path / "cifar10_test_real.npz", x=np.zeros((3, 32, 32, 3), np.uint8), y=np.zeros(3, np.int64),
             idx=np.arange(3))
    with pytest.raises(DataError, match="md5"):
        load_dataset("cifar10-real", data_dir=tmp_path)


def test_official_set_missing_offline_points_to_the_download(tmp_path):
    with pytest.raises(DataError) as e:
        load_dataset("cifar10", data_dir=tmp_path, download=False)
    assert "cifar-10-python.tar.gz" in str(e.value) and "cifar10-full" in str(e.value)
    with pytest.raises(DataError, match="cifar-100-python"):
        load_dataset("cifar100", data_dir=tmp_path, download=False)


def test_root_precedence(tmp_path, monkeypatch):
    monkeypatch.setenv(DATA_ENV, str(tmp_path / "env"))
    assert data_root(tmp_path / "arg") == tmp_path / "arg"
    assert data_root() == tmp_path / "env"
    monkeypatch.delenv(DATA_ENV)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    assert data_root() == tmp_path / "cache" / "dsnet_zoo" / "data"


def test_unknown_names_and_splits():
    assert {"cifar10", "cifar100", "cifar10-real", "cifar100-real", "cifar10-full", "cifar100-full"} == \
        set(list_datasets())
    with pytest.raises(ValueError, match="unknown dataset"):
        load_dataset("imagenet")
    with pytest.raises(ValueError, match="no split"):
        load_dataset("cifar10-real", "train")


def test_generated_sets_have_one_home():
    """``sir`` is generated by dsnet_zoo.data only: models.massnet and evaluation.regression re-export its names,
    training (recipe ``dataset='sir'``) and the regression test set read the same arrays through it."""
    for name in ("sir_dataset", "sir_flow_map", "sir_vector_field", "SIR_BETA", "SIR_GAMMA"):
        assert getattr(massnet, name) is getattr(data_mod, name)
    for name in ("RegressionSet", "REGRESSION_SETS", "register_regression_set", "load_regression_set"):
        assert getattr(regression, name) is getattr(data_mod, name)
    assert set(GENERATED_DATASETS) == {"sir"} and "sir" in list_train_datasets() and "sir" not in list_datasets()
    args = {"n": 50, "seed": 3, "train_fraction": 0.8}
    d, info = generate_dataset("sir", **args)
    assert info == {"generator": "dsnet_zoo.models.massnet.sir_dataset", "args": args}
    ref = data_mod.sir_dataset(**args)
    assert all(np.array_equal(d[k], ref[k]) and d[k].dtype == np.float64 for k in ref)
    train = load_train_data(default_recipe("massnet_sir", dataset_args=args))
    assert train.task == "regression" and train.info == info
    assert torch.equal(train.x_train, torch.from_numpy(d["x_train"]).float())
    assert torch.equal(train.extra["y_eval_float64"], torch.from_numpy(d["y_test"]))
    full, _ = generate_dataset("sir", n=1000, seed=0, train_fraction=0.9)
    test = load_regression_set("sir")
    assert np.array_equal(test.x, full["x_test"]) and np.array_equal(test.y, full["y_test"])
    with pytest.raises(ValueError, match="unknown generated dataset"):
        generate_dataset("lorenz")
