"""Datasets by name: the offline packs (read through DSNET_ZOO_DATA), root precedence, clear errors."""
from __future__ import annotations

import os
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch

from dsnet_zoo.data import DATA_ENV, DataError, data_root, list_datasets, load_dataset

DATA = os.environ.get(DATA_ENV)
needs_data = pytest.mark.skipif(not DATA, reason=f"{DATA_ENV} is not set (point it at the offline CIFAR packs)")


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
    x, y = d.float_batch(0, 5)
    assert x.dtype == torch.float32 and x.is_contiguous() and 0 <= float(x.min()) and float(x.max()) <= 1


@needs_data
def test_real_and_jpeg_test_images_agree():
    real = load_dataset("cifar10-real")
    jpeg = load_dataset("cifar10-jpeg75", "test")
    assert len(jpeg) == 10000 and torch.equal(jpeg.y[:len(real)], real.y)
    a = real.x.double() / 255
    b = jpeg.x[:len(real)].double() / 255
    mse = ((a - b) ** 2).flatten(1).mean(1)
    psnr = 10 * torch.log10(1 / mse)
    assert float(psnr.min()) > 20  # same images, lossy (the pack's README: min 23 dB, median 30.5 dB)
    # and a misaligned pairing is far worse, so this check can fail
    psnr_shift = 10 * torch.log10(1 / ((a[1:] - b[:-1]) ** 2).flatten(1).mean(1))
    assert float(psnr_shift.median()) < 15


@needs_data
def test_jpeg_train_split_and_n():
    d = load_dataset("cifar10-jpeg75", "train", n=100)
    assert len(d) == 100 and d.indices.tolist() == list(range(100))
    with pytest.raises(DataError, match="fewer than"):
        load_dataset("cifar10-real", n=1018)


@needs_data
def test_corrupt_pack_is_refused(tmp_path):
    src = Path(DATA) / "cifar10_test_real.npz"
    dst = tmp_path / src.name
    shutil.copyfile(src, dst)
    with open(dst, "r+b") as f:
        f.seek(5000)
        byte = f.read(1)
        f.seek(5000)
        f.write(bytes([byte[0] ^ 0xFF]))
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
    assert "cifar-10-python.tar.gz" in str(e.value) and "cifar10-real" in str(e.value)
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
    assert {"cifar10", "cifar100", "cifar10-real", "cifar100-real", "cifar10-jpeg75"} == set(list_datasets())
    with pytest.raises(ValueError, match="unknown dataset"):
        load_dataset("imagenet")
    with pytest.raises(ValueError, match="no split"):
        load_dataset("cifar10-real", "train")
