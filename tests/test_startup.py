"""Start-up: ``import dsnet_zoo`` does not import timm, and timm still sees every architecture whichever
of the two a program imports first."""
from __future__ import annotations

import subprocess
import sys

import pytest

pytest.importorskip("timm")


def _run(code: str) -> str:
    out = subprocess.run([sys.executable, "-c", code], check=True, capture_output=True, text=True)
    return out.stdout.strip()


def test_import_does_not_load_timm_or_torchvision():
    assert _run("import sys, dsnet_zoo; print(sorted(m for m in ('timm', 'torchvision') if m in sys.modules))") \
        == "[]"


def test_cli_help_and_list_do_not_load_timm():
    code = ("import sys, contextlib, io\n"
            "from dsnet_zoo.cli import main\n"
            "for argv in (['list'], ['--help']):\n"
            "    with contextlib.redirect_stdout(io.StringIO()):\n"
            "        try:\n"
            "            main(argv)\n"
            "        except SystemExit:\n"
            "            pass\n"
            "print('timm' in sys.modules)")
    assert _run(code) == "False"


@pytest.mark.parametrize("order", ["dsnet_zoo, timm", "timm, dsnet_zoo"])
def test_timm_sees_every_architecture_in_either_import_order(order):
    code = (f"import {order}\n"
            "ours = set(dsnet_zoo.list_models())\n"
            "theirs = set(timm.list_models())\n"
            "print(sorted(ours - theirs), len(ours))\n"
            "m = timm.create_model('lipnet_cifar10')\n"
            "print(type(m).__module__.split('.')[0])")
    missing, module = _run(code).splitlines()
    assert missing.startswith("[] ") and int(missing.split()[-1]) > 10
    assert module == "dsnet_zoo"
