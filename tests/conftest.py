"""Shared fixtures. Tests that need the shared data or the paper's weights read them from
``DSNET_ZOO_DATA`` / ``DSNET_ZOO_PAPER_WEIGHTS``: skipped only when the variable is unset, and
failing loudly when it is set but the files are not there."""
from __future__ import annotations

import os
import socket
import sys
from pathlib import Path

import pytest
import torch

from dsnet_zoo import registry
from dsnet_zoo.models import ZooClassifier, build_model

REPO_ROOT = Path(__file__).resolve().parent.parent


def randomise(model, seed=0, scale=2.0):
    """Random weights (``scale`` for matrices and kernels, 0.5 for vectors and scalars): property tests check
    certified bounds on weights far from any initialisation."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in model.parameters():
            p.copy_(torch.randn(p.shape, generator=g, dtype=p.dtype) * (scale if p.dim() > 1 else 0.5))
    return model


def env_path(var: str, *required: str) -> Path:
    """The folder named by ``var`` with ``required`` files checked; skip when ``var`` is unset."""
    value = os.environ.get(var)
    if not value:
        pytest.skip(f"{var} is not set")
    root = Path(value)
    missing = [r for r in required if not (root / r).exists()]
    if missing:
        pytest.fail(f"{var}={value} is set, but {', '.join(missing)} is missing there", pytrace=False)
    return root


@pytest.fixture
def data_dir() -> Path:
    return env_path("DSNET_ZOO_DATA", "cifar10_test_real.npz")


@pytest.fixture
def full_data_dir() -> Path:
    """The folder of the full lossless CIFAR packs (``cifar10-full``, ``cifar100-full``)."""
    return env_path("DSNET_ZOO_DATA", "cifar10_real_webp.npz", "cifar100_real_webp.npz")


@pytest.fixture(scope="session", autouse=True)
def _decoded_cache(tmp_path_factory):
    """The full packs are decoded at most once per test session, into a session temp folder (never the
    user's cache), unless ``DSNET_ZOO_CACHE`` names a folder to reuse across sessions."""
    if os.environ.get("DSNET_ZOO_CACHE"):
        yield Path(os.environ["DSNET_ZOO_CACHE"])
        return
    with pytest.MonkeyPatch.context() as mp:
        path = tmp_path_factory.mktemp("decoded")
        mp.setenv("DSNET_ZOO_CACHE", str(path))
        yield path


@pytest.fixture
def paper_weights_dir() -> Path:
    return env_path("DSNET_ZOO_PAPER_WEIGHTS", "cifar10/contractive_margin_0.07.pt")


@pytest.fixture(autouse=True)
def _isolate(monkeypatch, tmp_path):
    """No test reads a user's weights dir or Hugging Face cache, or writes into them."""
    monkeypatch.delenv("DSNET_ZOO_WEIGHTS_DIR", raising=False)
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf-home"))
    from huggingface_hub import constants

    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(tmp_path / "hf-home" / "hub"))
    # in-process tests never go online; downloads are tested in subprocesses against a loopback server
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", True)
    # huggingface_hub 2.x asks huggingface.co for its user agent unless telemetry is off
    monkeypatch.setattr(constants, "HF_HUB_DISABLE_TELEMETRY", True)
    torch.manual_seed(0)


def subprocess_env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("HF_", "DSNET_ZOO_WEIGHTS"))}
    env["PYTHONPATH"] = os.pathsep.join([str(REPO_ROOT), env.get("PYTHONPATH", "")]).rstrip(os.pathsep)
    env.setdefault("OMP_NUM_THREADS", "1")
    env["HF_HUB_DISABLE_TELEMETRY"] = "1"
    env.update(extra)
    return env


PYTHON = sys.executable


class _Linear(ZooClassifier):
    def __init__(self, num_classes=3, width=5):
        super().__init__()
        self.num_classes, self.num_features = num_classes, width
        self.body = torch.nn.Linear(12, width)
        self.head = self._make_head(num_classes)

    def _make_head(self, n):
        return torch.nn.Linear(self.num_features, n)

    def forward_features(self, x):
        return self.body(x.flatten(1))


@pytest.fixture
def scratch_arch():
    """A uniquely named architecture registered for one test, removed afterwards."""
    name = f"scratch_{id(object())}"

    def entry(pretrained=False, **kw):
        return build_model(_Linear, name, pretrained, default_num_classes=3, **kw)

    entry.__name__ = name
    registry.register_model(family="scratch", dataset="none")(entry)
    yield name
    registry._entrypoints.pop(name)
    registry._arch_meta.pop(name)
    registry._pretrained.pop(name)
