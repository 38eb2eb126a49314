"""DDP through torchrun: 2 CPU processes (gloo) on tiny data.

What is proved: with a global batch B split over 2 ranks (B/2 each) and DDP's gradient averaging,
a run equals the single-process run of the same recipe (batch B) up to float rounding, including
crop + flip augmentation, Nesterov momentum, weight decay and the cosine schedule, because the
data order and augmentation are drawn per global batch and each rank takes its slice, and the
loss is a mean over examples (GroupNorm is per example; BatchNorm would break the equality).
Both ranks end with identical parameters.
"""
from __future__ import annotations

import json
import subprocess
import sys

import pytest
import torch

import train_helpers as th
from conftest import REPO_ROOT, subprocess_env
from dsnet_zoo.training import train


@pytest.fixture(scope="module", autouse=True)
def _tiny_registered():
    th.register()
    yield
    th.unregister()


def _torchrun(out, recipe):
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2",
           str(REPO_ROOT / "tests" / "ddp_worker.py"), str(out), recipe.to_json()]
    proc = subprocess.run(cmd, env=subprocess_env(), capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]


def test_ddp_two_ranks_equal_single_process_global_batch(tmp_path):
    recipe = th.tiny_recipe(epochs=2, batch_size=16, ema=None)
    _torchrun(tmp_path, recipe)
    r0 = torch.load(tmp_path / "rank0.pt")
    r1 = torch.load(tmp_path / "rank1.pt")
    for k in r0:
        assert torch.equal(r0[k], r1[k]), f"ranks disagree on {k}"
    single_run = train(recipe, tmp_path / "single", device="cpu", progress=False, plot=False)
    single = single_run.state
    init = train(recipe.replace(epochs=1, lr=1e-12), tmp_path / "init", progress=False, plot=False).state
    moved = max(float((single[k] - init[k]).abs().max()) for k in single)
    assert moved > 1e-2  # training moved the weights well beyond the tolerance below
    for k in single:
        torch.testing.assert_close(r0[k], single[k], rtol=1e-5, atol=1e-6, msg=k)
    # a different split is not equal: the comparison can fail
    half = train(recipe.replace(batch_size=8), tmp_path / "half", device="cpu", progress=False, plot=False).state
    assert max(float((half[k] - r0[k]).abs().max()) for k in half) > 1e-3
    # rank 0 wrote the files; the logged training loss is the all-reduced one over both ranks
    assert (tmp_path / "run" / "hub" / "model.safetensors").is_file()
    logged = json.loads((tmp_path / "history.json").read_text())
    for a, b in zip(logged, single_run.history):
        assert a["train_loss"] == pytest.approx(b["train_loss"], rel=1e-5)
        assert a["train_acc"] == pytest.approx(b["train_acc"], abs=1e-9)
