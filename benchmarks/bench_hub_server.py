"""Throughput and latency of ``dsnet-zoo serve-hub`` on loopback, measured with the real client.

    PYTHONPATH=. python benchmarks/bench_hub_server.py [--mb 64]

For a plain folder, a git repo (the file stored in git) and a git-LFS file, it prints the first
``HEAD`` (plain folder: includes hashing the file), a repeated ``HEAD``, and an
``hf_hub_download`` into an empty cache (HEAD + GET + write), in MB/s.
"""
from __future__ import annotations

import argparse
import hashlib
import http.client
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from huggingface_hub import hf_hub_download
from huggingface_hub.utils import disable_progress_bars

from dsnet_zoo.hub.server import serve_hub

_GIT_ENV = {**os.environ, "GIT_AUTHOR_NAME": "b", "GIT_AUTHOR_EMAIL": "b@example.org",
            "GIT_COMMITTER_NAME": "b", "GIT_COMMITTER_EMAIL": "b@example.org"}


def _git(cwd: Path, *args: str) -> None:
    subprocess.run(["git", *args], cwd=cwd, env=_GIT_ENV, check=True, capture_output=True)


def _head_ms(server, path: str) -> float:
    conn = http.client.HTTPConnection(server.host, server.port, timeout=600)
    t = time.perf_counter()
    conn.request("HEAD", path)
    resp = conn.getresponse()
    resp.read()
    conn.close()
    assert resp.status == 200, (path, resp.status)
    return (time.perf_counter() - t) * 1e3


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--mb", type=int, default=64, help="file size in MiB (default 64)")
    args = ap.parse_args(argv)
    disable_progress_bars()
    data = os.urandom(args.mb << 20)
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp) / "root"
        plain = root / "bench" / "plain"
        plain.mkdir(parents=True)
        (plain / "model.safetensors").write_bytes(data)
        repo = root / "bench" / "git"
        repo.mkdir(parents=True)
        _git(repo, "init", "-q", "-b", "main")
        (repo / "model.safetensors").write_bytes(data)
        _git(repo, "add", ".")
        _git(repo, "commit", "-q", "-m", "m")
        lfs = root / "bench" / "lfs"
        lfs.mkdir(parents=True)
        _git(lfs, "init", "-q", "-b", "main")
        sha = hashlib.sha256(data).hexdigest()
        (lfs / "model.safetensors").write_text(
            f"version https://git-lfs.github.com/spec/v1\noid sha256:{sha}\nsize {len(data)}\n")
        _git(lfs, "add", ".")
        _git(lfs, "commit", "-q", "-m", "m")
        obj = lfs / ".git" / "lfs" / "objects" / sha[:2] / sha[2:4] / sha
        obj.parent.mkdir(parents=True)
        obj.write_bytes(data)

        print(f"file: {args.mb} MiB; loopback; {os.cpu_count()} CPUs")
        print(f"{'repo':<8} {'first HEAD ms':>14} {'next HEAD ms':>13} {'download s':>11} {'MB/s':>8}")
        with serve_hub(root, quiet=True) as s:
            for name in ("plain", "git", "lfs"):
                path = f"/bench/{name}/resolve/main/model.safetensors"
                first = _head_ms(s, path)
                again = min(_head_ms(s, path) for _ in range(5))
                t = time.perf_counter()
                p = hf_hub_download(f"bench/{name}", "model.safetensors", endpoint=s.url,
                                    cache_dir=Path(tmp) / f"cache-{name}")
                dt = time.perf_counter() - t
                assert Path(p).stat().st_size == len(data)
                print(f"{name:<8} {first:>14.1f} {again:>13.1f} {dt:>11.2f} {len(data) / dt / 1e6:>8.0f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
