"""End to end through a loopback Hub: publish -> serve-hub -> create / timm / torch.hub.

The zoo's own weights are made here (random lipnet_cifar10 weights), published twice into a git
repo folder (two revisions), served on 127.0.0.1 with a free port, and loaded in fresh processes
with HF_ENDPOINT pointing at the server, as a user would.
"""
from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pytest
import torch

import dsnet_zoo
from dsnet_zoo.hub import WeightsCfg, write_hub_repo
from dsnet_zoo.hub.server import serve_hub

from conftest import PYTHON, REPO_ROOT, subprocess_env

ARCH = "lipnet_cifar10"
REPO = "dsnet-zoo/lipnet_cifar10-roundtrip"


def _git(cwd: Path, *args: str) -> str:
    env = {"GIT_AUTHOR_NAME": "t", "GIT_AUTHOR_EMAIL": "t@t", "GIT_COMMITTER_NAME": "t",
           "GIT_COMMITTER_EMAIL": "t@t", "PATH": "/usr/bin:/bin:/usr/local/bin"}
    return subprocess.run(["git", *args], cwd=cwd, env=env, check=True, capture_output=True,
                          text=True).stdout.strip()


@pytest.fixture(scope="module")
def published(tmp_path_factory):
    """Two revisions of one repo: v1 (pinned) and v2 (main)."""
    root = tmp_path_factory.mktemp("hub-root")
    repo_dir = root / REPO
    repo_dir.mkdir(parents=True)
    _git(repo_dir, "init", "-q", "-b", "main")
    models, shas, commits = [], [], []
    for seed in (1, 2):
        torch.manual_seed(seed)
        model = dsnet_zoo.create(ARCH).eval()
        cfg = WeightsCfg(tag="roundtrip", architecture=ARCH, hf_hub_id=REPO, num_classes=10, dataset="cifar10")
        result = write_hub_repo(model, cfg, repo_dir, overwrite=True)
        _git(repo_dir, "add", "-A")
        _git(repo_dir, "commit", "-q", "-m", f"weights v{seed}")
        models.append(model)
        shas.append(result["sha256"])
        commits.append(_git(repo_dir, "rev-parse", "HEAD"))
    x = torch.rand(4, 3, 32, 32, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        expected = [m(x) for m in models]
    return {"root": root, "shas": shas, "commits": commits, "expected": expected, "cfg": result["cfg"]}


def _run_client(tmp_path: Path, spec: dict, **env: str) -> dict:
    spec = {"input_seed": 0, "repo_root": str(REPO_ROOT), **spec}
    (tmp_path / "spec.json").write_text(json.dumps(spec))
    out = tmp_path / "out.pt"
    proc = subprocess.run([PYTHON, str(REPO_ROOT / "tests" / "hub_client.py"), str(tmp_path / "spec.json"),
                           str(out)], env=subprocess_env(**env), capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return torch.load(out, weights_only=True)


def _tag(published, tag, **changes):
    cfg = published["cfg"].to_dict()
    cfg.update(tag=tag, architecture=None, revision=published["commits"][0], sha256=published["shas"][0])
    cfg.update(changes)
    return {"arch": ARCH, "cfg": cfg}


def test_round_trip_is_bit_identical_through_every_entry_point_and_pins_revisions(published, tmp_path):
    hf_home = tmp_path / "hf-home"
    v1, v2 = published["expected"]
    assert not torch.equal(v1, v2)
    spec = {
        "register": [_tag(published, "v1"),
                     _tag(published, "main", revision=None, sha256=published["shas"][1])],
        "scenarios": [
            {"id": "create", "how": "create", "name": f"{ARCH}.v1"},
            {"id": "timm", "how": "timm", "name": f"{ARCH}.v1"},
            {"id": "torch.hub", "how": "torch.hub", "name": f"{ARCH}.v1"},
            {"id": "main", "how": "create", "name": f"{ARCH}.main"},
            {"id": "hf-hub", "how": "hf-hub", "name": f"{REPO}@{published['commits'][0]}"},
            {"id": "timm-hf-hub", "how": "timm-hf-hub", "name": f"{REPO}@{published['commits'][0]}"},
        ],
    }
    with serve_hub(published["root"], host="127.0.0.1", port=0, quiet=True) as server:
        out = _run_client(tmp_path, spec, HF_ENDPOINT=server.url, HF_HOME=str(hf_home))
    for key in ("create", "timm", "torch.hub", "hf-hub", "timm-hf-hub"):
        assert isinstance(out[key], torch.Tensor), out[key]
        assert torch.equal(out[key], v1), key  # bit-identical, and the pinned v1, not main's v2
    assert torch.equal(out["main"], v2)

    # second load: server gone, HF_HUB_OFFLINE=1, from the cache
    offline = {"register": spec["register"][:1],
               "scenarios": [{"id": "create", "how": "create", "name": f"{ARCH}.v1"},
                             {"id": "timm", "how": "timm", "name": f"{ARCH}.v1"}]}
    out = _run_client(tmp_path, offline, HF_ENDPOINT=server.url, HF_HOME=str(hf_home), HF_HUB_OFFLINE="1")
    assert torch.equal(out["create"], v1) and torch.equal(out["timm"], v1)


def test_bad_cases_give_clear_errors_and_no_model(published, tmp_path):
    hf_home = tmp_path / "hf-home"
    spec = {
        "register": [
            _tag(published, "norepo", hf_hub_id="dsnet-zoo/does-not-exist"),
            _tag(published, "nofile", filename="other.safetensors"),
            _tag(published, "norev", revision="0" * 40),
            _tag(published, "badsha", sha256="0" * 64),
        ],
        "scenarios": [
            {"id": "norepo", "how": "create", "name": f"{ARCH}.norepo"},
            {"id": "nofile", "how": "create", "name": f"{ARCH}.nofile"},
            {"id": "norev", "how": "create", "name": f"{ARCH}.norev"},
            {"id": "badsha", "how": "create", "name": f"{ARCH}.badsha"},
            {"id": "unknown", "how": "create", "name": f"{ARCH}.not_registered"},
            {"id": "unknown-timm", "how": "timm", "name": "lipnet_cifar1O"},
        ],
    }
    with serve_hub(published["root"], host="127.0.0.1", port=0, quiet=True) as server:
        out = _run_client(tmp_path, spec, HF_ENDPOINT=server.url, HF_HOME=str(hf_home))
    assert out["norepo"].startswith("WeightsError: the Hub has no repository 'dsnet-zoo/does-not-exist'")
    assert out["nofile"].startswith("WeightsError: the Hub repository") and "other.safetensors" in out["nofile"]
    assert out["norev"].startswith("WeightsError:") and "no revision" in out["norev"]
    assert out["badsha"].startswith("ChecksumError:") and "removed from the Hugging Face cache" in out["badsha"]
    assert out["unknown"].startswith("UnknownModelError:") and "Tags of lipnet_cifar10" in out["unknown"]
    assert "Unknown model" in out["unknown-timm"] or "unknown" in out["unknown-timm"].lower()
    # the refused file is not left in the cache as if it were valid
    blobs = list(hf_home.rglob("blobs/*"))
    assert all(p.stat().st_size < 1_000_000 for p in blobs), [str(p) for p in blobs]
    assert not [p for p in hf_home.rglob("model.safetensors")]


def test_server_errors_are_retried_then_reported(published, tmp_path):
    spec = {"register": [_tag(published, "v1")],
            "scenarios": [{"id": "retry", "how": "create", "name": f"{ARCH}.v1"}]}
    with serve_hub(published["root"], host="127.0.0.1", port=0, quiet=True, fail_first=2) as server:
        out = _run_client(tmp_path, spec, HF_ENDPOINT=server.url, HF_HOME=str(tmp_path / "a"))
    assert torch.equal(out["retry"], published["expected"][0])
    # downloads (GET) failing for good: the zoo retries 3 times, then says so
    with serve_hub(published["root"], host="127.0.0.1", port=0, quiet=True, fail_first=10_000,
                   fail_match=r"^GET .*/resolve/") as server:
        out = _run_client(tmp_path, spec, HF_ENDPOINT=server.url, HF_HOME=str(tmp_path / "b"))
    assert out["retry"].startswith("WeightsError:") and "after 3 attempts" in out["retry"]
