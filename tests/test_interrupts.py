"""Ctrl-C in ``dsnet-zoo train`` and ``dsnet-zoo eval``: a one-line message saying how to continue, exit
status 130, no traceback, and the saved state intact (the rerun continues from it)."""
from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

TESTS = Path(__file__).resolve().parent
DATA = os.environ.get("DSNET_ZOO_DATA")

TRAIN_CHILD = textwrap.dedent("""
    import signal, sys
    signal.signal(signal.SIGINT, signal.default_int_handler)  # as in a terminal, however pytest was started
    sys.path.insert(0, {tests!r})
    import train_helpers as th
    th.register()
    from dsnet_zoo.cli import main
    recipe = sys.argv[1] + ".recipe.json"
    with open(recipe, "w") as f:
        f.write(th.tiny_recipe(epochs=int(sys.argv[2])).to_json())
    sys.exit(main(["train", th.ARCH, "--recipe", recipe, "--out", sys.argv[1], "--device", "cpu", "--no-progress",
                   "--no-plot"] + sys.argv[3:]))
""")

EVAL_CHILD = textwrap.dedent("""
    import signal, sys, time
    signal.signal(signal.SIGINT, signal.default_int_handler)  # as in a terminal, however pytest was started
    import torch
    import dsnet_zoo
    from dsnet_zoo.evaluation.reference import LinearReference
    from dsnet_zoo.models import build_model

    class SlowLinear(LinearReference):
        def forward(self, x):  # slow enough for the signal to land mid-run
            time.sleep(0.3)
            return super().forward(x)

    def slowlinear(pretrained=False, **kwargs):
        return build_model(SlowLinear, "slowlinear", pretrained, default_num_classes=10, **kwargs)

    dsnet_zoo.register_model(slowlinear, family="test", dataset="cifar10")
    from dsnet_zoo.cli import main
    from dsnet_zoo.hub import save_state_dict
    torch.manual_seed(0)
    save_state_dict(SlowLinear().state_dict(), sys.argv[1])
    sys.exit(main(["eval", sys.argv[1], "--arch", "slowlinear", "--dataset", "cifar10-real", "--n", "64",
                   "--batch-size", "4", "--out", sys.argv[2], "--no-progress"]))
""")


def _interrupt_when(proc: subprocess.Popen, ready, timeout: float = 120.0) -> tuple[int, str]:
    t = time.monotonic()
    while not ready():
        assert proc.poll() is None, proc.communicate()[1]
        assert time.monotonic() - t < timeout, "the child never got far enough to interrupt"
        time.sleep(0.05)
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=60)
    return proc.returncode, err


def test_ctrl_c_in_train_says_how_to_resume_and_the_rerun_resumes(tmp_path):
    out = tmp_path / "run"
    child = [sys.executable, "-c", TRAIN_CHILD.format(tests=str(TESTS)), str(out), "100000"]
    proc = subprocess.Popen(child, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    rc, err = _interrupt_when(proc, lambda: (out / "checkpoint.pt").is_file())
    assert rc == 130, err
    assert "Traceback" not in err
    assert "interrupted" in err and "--resume" in err and str(out / "checkpoint.pt") in err
    # the checkpoint left behind is whole: a resumed run starts from it
    proc = subprocess.Popen(child + ["--resume"], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    log = out / "log.jsonl"
    done = len(log.read_text().splitlines())
    rc, err = _interrupt_when(proc, lambda: len(log.read_text().splitlines()) > done)
    assert rc == 130 and "Traceback" not in err
    epochs = [int(line.split('"epoch": ')[1].split(",")[0]) for line in log.read_text().splitlines()]
    assert epochs == list(range(1, len(epochs) + 1))  # continued where it stopped, no epoch run twice


def test_ctrl_c_before_the_first_checkpoint_says_so(tmp_path, monkeypatch, capsys):
    # the CLI's handling alone: training itself is replaced by a Ctrl-C before any epoch finished
    sys.path.insert(0, str(TESTS))
    import train_helpers as th

    import dsnet_zoo.training as training
    from dsnet_zoo.cli import main

    th.register()
    try:
        def interrupted(*args, **kwargs):
            raise KeyboardInterrupt

        monkeypatch.setattr(training, "train", interrupted)
        recipe = tmp_path / "recipe.json"
        recipe.write_text(th.tiny_recipe().to_json())
        assert main(["train", th.ARCH, "--recipe", str(recipe), "--out", str(tmp_path / "run"), "--no-progress"]) == 130
    finally:
        th.unregister()
    err = capsys.readouterr().err
    assert "interrupted; no epoch had finished, so there is no checkpoint yet" in err and "--resume" in err


@pytest.mark.skipif(not DATA, reason="DSNET_ZOO_DATA is not set (point it at the offline CIFAR packs)")
def test_ctrl_c_in_eval_keeps_the_finished_batches(tmp_path):
    weights, out = tmp_path / "slow.safetensors", tmp_path / "r.json"
    child = [sys.executable, "-c", EVAL_CHILD, str(weights), str(out)]
    state = Path(str(out) + ".partial")
    proc = subprocess.Popen(child, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    rc, err = _interrupt_when(proc, lambda: len(list(state.glob("batch_*.json"))) >= 2)
    assert rc == 130, err
    assert "Traceback" not in err and "interrupted" in err and "Rerun the same command" in err
    kept = {p.name: p.read_bytes() for p in state.glob("batch_*.json")}
    assert len(kept) >= 2 and not out.exists()
    # the rerun uses the kept batches (unchanged) and finishes
    subprocess.run(child, check=True, capture_output=True, text=True, timeout=300)
    assert out.is_file() and not state.exists()


class _InterruptedInFinaliser:
    def __del__(self):
        os.kill(os.getpid(), signal.SIGINT)
        for _ in range(10_000):  # the handler runs here, inside __del__, where Python ignores what it raises
            pass


def test_a_ctrl_c_that_a_finaliser_swallows_still_stops_the_run(monkeypatch):
    from dsnet_zoo.utils import raise_if_interrupted, remembered_interrupts

    ignored = []
    monkeypatch.setattr(sys, "unraisablehook", lambda u: ignored.append(u.exc_type))
    # Python's own Ctrl-C handler, as in a terminal (a test runner started with `&` has SIGINT ignored)
    outer = signal.signal(signal.SIGINT, signal.default_int_handler)
    try:
        # the failure this guards against: with Python's handler the Ctrl-C is gone once the finaliser returns
        _InterruptedInFinaliser()
        assert ignored == [KeyboardInterrupt]
        raise_if_interrupted()  # nothing remembered outside the guard
        with remembered_interrupts():
            _InterruptedInFinaliser()
            assert ignored == [KeyboardInterrupt] * 2
            with pytest.raises(KeyboardInterrupt):
                raise_if_interrupted()  # what the training step and the evaluation batch loop call
        raise_if_interrupted()  # forgotten once the guarded run is over
        assert signal.getsignal(signal.SIGINT) is signal.default_int_handler
        # a process started with SIGINT ignored keeps ignoring it, as Python itself does
        signal.signal(signal.SIGINT, signal.SIG_IGN)
        with remembered_interrupts():
            assert signal.getsignal(signal.SIGINT) is signal.SIG_IGN
            _InterruptedInFinaliser()
            raise_if_interrupted()
        assert ignored == [KeyboardInterrupt] * 2
    finally:
        signal.signal(signal.SIGINT, outer)
