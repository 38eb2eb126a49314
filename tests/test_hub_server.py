"""The local Hub server (``dsnet_zoo.hub.server``, ``dsnet-zoo serve-hub``) against the real
``huggingface_hub`` client: loopback only, a free port, and a fresh Hugging Face cache per test."""
from __future__ import annotations

import hashlib
import http.client
import json
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

import huggingface_hub
from huggingface_hub import HfApi, hf_hub_download, snapshot_download  # noqa: E402
from huggingface_hub.errors import (EntryNotFoundError, LocalEntryNotFoundError,  # noqa: E402
                                    RepositoryNotFoundError, RevisionNotFoundError)

from dsnet_zoo.hub.server import folder_commit_id, serve_hub  # noqa: E402

REPO_ROOT = Path(__file__).resolve().parents[1]
GIT_ENV = {**os.environ, "GIT_AUTHOR_NAME": "t", "GIT_AUTHOR_EMAIL": "t@example.org",
           "GIT_COMMITTER_NAME": "t", "GIT_COMMITTER_EMAIL": "t@example.org",
           "GIT_CONFIG_GLOBAL": os.devnull, "GIT_CONFIG_NOSYSTEM": "1"}


@pytest.fixture(autouse=True)
def loopback_only(monkeypatch):
    """Fail a test that looks up any host but the loopback one. ``huggingface_hub`` fetches
    ``{constants.ENDPOINT}/api/agent-harnesses`` for its user agent even when ``endpoint=`` points
    elsewhere, so telemetry is turned off here (it is read at call time)."""
    import socket

    from huggingface_hub import constants

    monkeypatch.setattr(constants, "HF_HUB_DISABLE_TELEMETRY", True)
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", False)  # conftest defaults to offline
    real, outside = socket.getaddrinfo, []

    def guarded(host, *args, **kwargs):
        if host not in ("127.0.0.1", "localhost", "::1", None):
            outside.append(host)
            raise OSError(f"this test may not reach {host}")
        return real(host, *args, **kwargs)

    monkeypatch.setattr(socket, "getaddrinfo", guarded)
    yield
    assert not outside, f"looked up non-loopback hosts: {sorted(set(outside))}"


def git(cwd: Path, *args: str) -> str:
    return subprocess.run(["git", *args], cwd=cwd, env=GIT_ENV, check=True,
                          capture_output=True).stdout.decode().strip()


def git_hash_object(path: Path) -> str:
    """The blob id git computes for a file: the independent oracle for the server's ETag."""
    return subprocess.run(["git", "hash-object", str(path)], env=GIT_ENV, check=True,
                          capture_output=True).stdout.decode().strip()


@pytest.fixture
def hub_root(tmp_path):
    """``hubtest/plain`` (a plain folder) and ``hubtest/gitrepo`` (two commits, tag v1.0)."""
    root = tmp_path / "root"
    plain = root / "hubtest" / "plain"
    (plain / "sub").mkdir(parents=True)
    (plain / "config.json").write_text('{"architecture": "x"}')
    (plain / "README.md").write_text("---\nlicense: mit\n---\n# plain\n")
    (plain / "model.safetensors").write_bytes(os.urandom(5000))
    (plain / "sub" / "extra.txt").write_text("nested")

    repo = root / "hubtest" / "gitrepo"
    repo.mkdir(parents=True)
    git(repo, "init", "-q", "-b", "main")
    (repo / "config.json").write_text("v1")
    (repo / "old.txt").write_text("only in the first commit")
    git(repo, "add", ".")
    git(repo, "commit", "-q", "-m", "first")
    git(repo, "tag", "v1.0")
    c1 = git(repo, "rev-parse", "HEAD")
    (repo / "config.json").write_text("v2, longer")
    git(repo, "rm", "-q", "old.txt")
    (repo / "new.txt").write_text("only in the second commit")
    git(repo, "add", ".")
    git(repo, "commit", "-q", "-m", "second")
    c2 = git(repo, "rev-parse", "HEAD")
    # the work tree differs from every commit: the server must read git objects, not files
    (repo / "config.json").write_text("uncommitted")
    return {"root": root, "plain": plain, "git": repo, "c1": c1, "c2": c2}


def raw(server, method: str, path: str, headers: dict | None = None):
    """A request sent exactly as written (http.client does not normalise '..')."""
    conn = http.client.HTTPConnection(server.host, server.port, timeout=10)
    try:
        conn.request(method, path, headers=headers or {})
        resp = conn.getresponse()
        return resp.status, dict(resp.getheaders()), resp.read()
    finally:
        conn.close()


def test_plain_folder_file_download(hub_root, tmp_path):
    plain = hub_root["plain"]
    with serve_hub(hub_root["root"], quiet=True) as s:
        path = hf_hub_download("hubtest/plain", "model.safetensors", endpoint=s.url,
                               cache_dir=tmp_path / "c")
        assert Path(path).read_bytes() == (plain / "model.safetensors").read_bytes()
        nested = hf_hub_download("hubtest/plain", "sub/extra.txt", endpoint=s.url,
                                 cache_dir=tmp_path / "c")
        assert Path(nested).read_text() == "nested"
        status, headers, body = raw(s, "HEAD", "/hubtest/plain/resolve/main/config.json")
    assert status == 200 and body == b""
    assert headers["ETag"] == f'"{git_hash_object(plain / "config.json")}"'
    assert headers["Content-Length"] == str((plain / "config.json").stat().st_size)
    commit = headers["X-Repo-Commit"]
    assert re.fullmatch(r"[0-9a-f]{40}", commit)
    # the snapshot folder is named after the commit the server sent
    assert Path(path).parent.name == commit


def test_plain_folder_commit_is_a_function_of_paths_and_contents(hub_root, tmp_path):
    plain = hub_root["plain"]

    def commit():
        status, headers, _ = raw(s, "HEAD", "/hubtest/plain/resolve/main/config.json")
        assert status == 200
        return headers["X-Repo-Commit"]

    with serve_hub(hub_root["root"], quiet=True) as s:
        c0 = commit()
        files = {p.relative_to(plain).as_posix(): git_hash_object(p)
                 for p in plain.rglob("*") if p.is_file()}
        assert c0 == folder_commit_id(files)
        os.utime(plain / "config.json", ns=(1, 10**18))  # new mtime, same bytes
        assert commit() == c0
        (plain / "config.json").write_text('{"architecture": "y"}')  # same size, new bytes
        c1 = commit()
        assert c1 != c0
        (plain / "sub" / "extra.txt").rename(plain / "sub" / "extra2.txt")  # same bytes, new path
        c2 = commit()
        assert c2 not in (c0, c1)
        # a pinned id works while the folder is unchanged, and is refused once it has changed
        assert raw(s, "HEAD", f"/hubtest/plain/resolve/{c2}/config.json")[0] == 200
        with pytest.raises(RevisionNotFoundError):
            hf_hub_download("hubtest/plain", "config.json", revision=c0, endpoint=s.url,
                            cache_dir=tmp_path / "c")


def test_git_repo_pinned_commit_tag_and_main(hub_root, tmp_path):
    repo, c1, c2 = hub_root["git"], hub_root["c1"], hub_root["c2"]
    cache = tmp_path / "c"
    with serve_hub(hub_root["root"], quiet=True) as s:
        at_main = hf_hub_download("hubtest/gitrepo", "config.json", endpoint=s.url, cache_dir=cache)
        at_c1 = hf_hub_download("hubtest/gitrepo", "config.json", revision=c1, endpoint=s.url,
                                cache_dir=cache)
        at_tag = hf_hub_download("hubtest/gitrepo", "config.json", revision="v1.0",
                                 endpoint=s.url, cache_dir=cache)
        old = hf_hub_download("hubtest/gitrepo", "old.txt", revision=c1, endpoint=s.url,
                              cache_dir=cache)
        with pytest.raises(EntryNotFoundError):
            hf_hub_download("hubtest/gitrepo", "old.txt", endpoint=s.url, cache_dir=cache)
        _, headers, _ = raw(s, "HEAD", "/hubtest/gitrepo/resolve/main/config.json")
    assert Path(at_main).read_bytes() == b"v2, longer"
    assert Path(at_c1).read_bytes() == b"v1" == Path(at_tag).read_bytes()
    assert Path(old).read_text() == "only in the first commit"
    assert Path(at_main).parent.name == c2 and Path(at_c1).parent.name == c1
    assert Path(at_tag).parent.name == c1
    assert headers["X-Repo-Commit"] == c2
    assert headers["ETag"] == f'"{git(repo, "rev-parse", f"{c2}:config.json")}"'


def test_git_repo_without_main_branch_serves_head_as_main(tmp_path):
    repo = tmp_path / "root" / "hubtest" / "legacy"
    repo.mkdir(parents=True)
    git(repo, "init", "-q", "-b", "master")
    (repo / "config.json").write_text("legacy")
    git(repo, "add", ".")
    git(repo, "commit", "-q", "-m", "c")
    with serve_hub(tmp_path / "root", quiet=True) as s:
        p = hf_hub_download("hubtest/legacy", "config.json", endpoint=s.url, cache_dir=tmp_path / "c")
        assert Path(p).read_text() == "legacy"
        assert Path(p).parent.name == git(repo, "rev-parse", "HEAD")
        for bad in ("HEAD", "master~0", "-h", "main..master", git(repo, "rev-parse", "HEAD")[:12]):
            status, headers, _ = raw(s, "HEAD", f"/hubtest/legacy/resolve/{bad}/config.json")
            assert (status, headers.get("X-Error-Code")) == (404, "RevisionNotFound"), bad


def test_snapshot_download_whole_repo(hub_root, tmp_path):
    plain = hub_root["plain"]
    with serve_hub(hub_root["root"], quiet=True) as s:
        folder = Path(snapshot_download("hubtest/plain", endpoint=s.url, cache_dir=tmp_path / "c"))
        got = {p.relative_to(folder).as_posix(): p.read_bytes() for p in folder.rglob("*") if p.is_file()}
        want = {p.relative_to(plain).as_posix(): p.read_bytes() for p in plain.rglob("*") if p.is_file()}
        assert got == want
        old = Path(snapshot_download("hubtest/gitrepo", revision=hub_root["c1"], endpoint=s.url,
                                     cache_dir=tmp_path / "c"))
        new = Path(snapshot_download("hubtest/gitrepo", endpoint=s.url, cache_dir=tmp_path / "c"))
        tree_calls = [r.path for r in s.requests if "/tree/" in r.path]
    assert sorted(p.name for p in old.iterdir()) == ["config.json", "old.txt"]
    assert sorted(p.name for p in new.iterdir()) == ["config.json", "new.txt"]
    assert (old / "config.json").read_bytes() == b"v1" and (new / "config.json").read_bytes() == b"v2, longer"
    assert all("recursive=" in p for p in tree_calls) and tree_calls


def test_tree_listing_pagination(hub_root):
    plain = hub_root["plain"]
    for i in range(7):
        (plain / "sub" / f"f{i}.bin").write_bytes(bytes([i]) * (i + 1))
    with serve_hub(hub_root["root"], quiet=True) as big, \
            serve_hub(hub_root["root"], quiet=True, tree_page_size=3) as small:
        one_page = [(f.path, getattr(f, "size", None)) for f in
                    HfApi(endpoint=big.url).list_repo_tree("hubtest/plain", recursive=True)]
        paged = [(f.path, getattr(f, "size", None)) for f in
                 HfApi(endpoint=small.url).list_repo_tree("hubtest/plain", recursive=True)]
        top = [f.path for f in HfApi(endpoint=big.url).list_repo_tree("hubtest/plain")]
        under = [f.path for f in HfApi(endpoint=big.url).list_repo_tree("hubtest/plain", "sub")]
        pages = [r for r in small.requests if "/tree/" in r.path]
    assert paged == one_page
    assert {p for p, _ in one_page} == {p.relative_to(plain).as_posix() for p in plain.rglob("*")}
    assert len(pages) == -(-len(one_page) // 3) > 1 and "cursor=" in pages[-1].path
    assert sorted(top) == ["README.md", "config.json", "model.safetensors", "sub"]
    assert sorted(under) == sorted(f"sub/{p.name}" for p in (plain / "sub").iterdir())


def test_error_kinds_map_to_huggingface_hub_errors(hub_root, tmp_path):
    cache = tmp_path / "c"
    with serve_hub(hub_root["root"], quiet=True) as s:
        for repo in ("hubtest/plain", "hubtest/gitrepo"):
            with pytest.raises(RepositoryNotFoundError):
                hf_hub_download(repo + "-missing", "config.json", endpoint=s.url, cache_dir=cache)
            with pytest.raises(EntryNotFoundError):
                hf_hub_download(repo, "no-such-file.json", endpoint=s.url, cache_dir=cache)
            with pytest.raises(RevisionNotFoundError):
                hf_hub_download(repo, "config.json", revision="no-such-branch", endpoint=s.url,
                                cache_dir=cache)
            with pytest.raises(RevisionNotFoundError):
                hf_hub_download(repo, "config.json", revision="0" * 40, endpoint=s.url,
                                cache_dir=cache)
            with pytest.raises(RevisionNotFoundError):
                snapshot_download(repo, revision="no-such-branch", endpoint=s.url, cache_dir=cache)
        # a folder is not a file
        assert raw(s, "HEAD", "/hubtest/plain/resolve/main/sub")[1]["X-Error-Code"] == "EntryNotFound"
        # routes the server does not implement: plain 404s with no Hub error code
        for method, path in [("GET", "/"), ("GET", "/api/datasets/hubtest/plain"),
                             ("GET", "/api/models/hubtest/plain/commits/main"),
                             ("GET", "/hubtest/plain/blob/main/config.json"),
                             ("POST", "/api/models/hubtest/plain/paths-info/main")]:
            status, headers, _ = raw(s, method, path)
            assert status == 404 and "X-Error-Code" not in headers, (method, path)


def _fetch_script() -> str:
    return ("import json, sys\n"
            "from huggingface_hub import hf_hub_download\n"
            "try:\n"
            "    p = hf_hub_download(sys.argv[1], sys.argv[2], revision=sys.argv[3])\n"
            "    print(json.dumps({'path': p, 'data': open(p, 'rb').read().hex()}))\n"
            "except Exception as e:\n"
            "    print(json.dumps({'error': type(e).__name__}))\n")


def test_offline_second_load_comes_from_cache(hub_root, tmp_path):
    """HF_ENDPOINT/HF_HUB_OFFLINE are read at import, so each load is its own process."""
    env = {**os.environ, "HF_HOME": str(tmp_path / "hf_home"), "HF_HUB_DISABLE_TELEMETRY": "1"}
    env.pop("HF_HUB_CACHE", None)

    def fetch(url, offline, repo, filename, revision="main"):
        out = subprocess.run([sys.executable, "-c", _fetch_script(), repo, filename, revision],
                             env={**env, "HF_ENDPOINT": url, "HF_HUB_OFFLINE": offline},
                             capture_output=True, text=True, timeout=120)
        assert out.returncode == 0, out.stderr
        return json.loads(out.stdout.strip().splitlines()[-1])

    with serve_hub(hub_root["root"], quiet=True) as s:
        online = fetch(s.url, "0", "hubtest/gitrepo", "config.json")
        pinned = fetch(s.url, "0", "hubtest/gitrepo", "config.json", hub_root["c1"])
        n_requests = len(s.requests)
        offline = fetch(s.url, "1", "hubtest/gitrepo", "config.json")
        offline_pinned = fetch(s.url, "1", "hubtest/gitrepo", "config.json", hub_root["c1"])
        never_downloaded = fetch(s.url, "1", "hubtest/gitrepo", "new.txt")
        assert len(s.requests) == n_requests  # offline processes never reached the server
        # online again after the repo moved on: the new commit's bytes, not the cached ones
        repo = hub_root["git"]
        (repo / "config.json").write_text("v3")
        git(repo, "commit", "-q", "-am", "third")
        moved = fetch(s.url, "0", "hubtest/gitrepo", "config.json")
    assert bytes.fromhex(online["data"]) == b"v2, longer"
    assert offline == online
    assert bytes.fromhex(offline_pinned["data"]) == b"v1" and offline_pinned == pinned
    assert never_downloaded == {"error": "LocalEntryNotFoundError"}
    assert bytes.fromhex(moved["data"]) == b"v3" and moved["path"] != online["path"]


def test_fail_first_answers_500_then_recovers(hub_root):
    with serve_hub(hub_root["root"], quiet=True, fail_first=2) as s:
        # paths outside the Hub routes are not counted (huggingface_hub fetches some on its own)
        assert raw(s, "GET", "/api/agent-harnesses")[0] == 404
        first = raw(s, "HEAD", "/hubtest/plain/resolve/main/config.json")
        second = raw(s, "GET", "/api/models/hubtest/plain/revision/main")
        third = raw(s, "HEAD", "/hubtest/plain/resolve/main/config.json")
    assert first[0] == second[0] == 500
    assert "injected failure 1 of 2" in first[1]["X-Error-Message"]
    assert "injected failure 2 of 2" in json.loads(second[2])["error"]
    assert third[0] == 200


def test_hf_hub_download_retries_through_injected_failures(hub_root, tmp_path):
    with serve_hub(hub_root["root"], quiet=True, fail_first=2) as s:
        p = hf_hub_download("hubtest/plain", "config.json", endpoint=s.url, cache_dir=tmp_path / "c")
        statuses = [r.status for r in s.requests if "/resolve/" in r.path]
    assert Path(p).read_bytes() == (hub_root["plain"] / "config.json").read_bytes()
    assert statuses[:2] == [500, 500] and statuses[-1] == 200


@pytest.fixture
def zoo_hub_endpoint(monkeypatch, tmp_path):
    """Point this process's huggingface_hub (read by dsnet_zoo's downloader) at a server."""
    from huggingface_hub import constants

    monkeypatch.delenv("DSNET_ZOO_WEIGHTS_DIR", raising=False)
    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(tmp_path / "zoo-cache"))
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", False)

    def point(url):
        monkeypatch.setattr(constants, "ENDPOINT", url)
        monkeypatch.setattr(constants, "HUGGINGFACE_CO_URL_TEMPLATE",
                            url + "/{repo_id}/resolve/{revision}/{filename}")
    return point


def test_zoo_downloader_retries_server_errors_then_succeeds(hub_root, zoo_hub_endpoint):
    from dsnet_zoo.hub import WeightsCfg, resolve_weights_file

    plain = hub_root["plain"]
    digest = hashlib.sha256((plain / "model.safetensors").read_bytes()).hexdigest()
    # HEAD calls pass, the first two downloads fail: only a retry around hf_hub_download recovers
    with serve_hub(hub_root["root"], quiet=True, fail_first=2, fail_match=r"^GET .*/resolve/") as s:
        zoo_hub_endpoint(s.url)
        commit = raw(s, "HEAD", "/hubtest/plain/resolve/main/model.safetensors")[1]["X-Repo-Commit"]
        cfg = WeightsCfg(tag="t", hf_hub_id="hubtest/plain", revision=commit, sha256=digest)
        path, source = resolve_weights_file(cfg)
        gets = [r.status for r in s.requests if r.method == "GET"]
    assert source == "hf-hub"
    assert hashlib.sha256(Path(path).read_bytes()).hexdigest() == digest
    assert gets == [500, 500, 200]


def test_zoo_downloader_gives_a_clear_error_when_the_server_keeps_failing(hub_root, zoo_hub_endpoint):
    from dsnet_zoo.hub import WeightsCfg, WeightsError, resolve_weights_file

    with serve_hub(hub_root["root"], quiet=True, fail_first=1000, fail_match=r"^GET ") as s:
        zoo_hub_endpoint(s.url)
        cfg = WeightsCfg(tag="t", hf_hub_id="hubtest/plain", revision="main")
        with pytest.raises(WeightsError, match=r"failed after 3 attempts \(the server keeps failing"):
            resolve_weights_file(cfg)
        assert {r.status for r in s.requests if r.method == "GET"} == {500}


def test_range_requests(hub_root):
    data = (hub_root["plain"] / "model.safetensors").read_bytes()
    n = len(data)
    url = "/hubtest/plain/resolve/main/model.safetensors"
    gurl = "/hubtest/gitrepo/resolve/main/config.json"
    with serve_hub(hub_root["root"], quiet=True) as s:
        st, h, body = raw(s, "GET", url, {"Range": "bytes=100-199"})
        assert (st, h["Content-Range"], body) == (206, f"bytes 100-199/{n}", data[100:200])
        st, h, body = raw(s, "GET", url, {"Range": "bytes=4000-"})
        assert (st, h["Content-Length"], body) == (206, str(n - 4000), data[4000:])
        st, h, body = raw(s, "GET", url, {"Range": "bytes=-10"})
        assert (st, body) == (206, data[-10:])
        st, h, body = raw(s, "GET", url, {"Range": f"bytes={n}-"})
        assert (st, h["Content-Range"]) == (416, f"bytes */{n}")
        st, h, body = raw(s, "GET", url, {"Range": "bytes=0-1,5-6"})  # several: whole file
        assert (st, body) == (200, data)
        st, h, body = raw(s, "GET", gurl, {"Range": "bytes=4-"})  # a git blob, read from a pipe
        assert (st, body) == (206, b"longer")


def test_interrupted_download_resumes_with_a_range_request(hub_root, tmp_path, monkeypatch):
    from huggingface_hub import constants

    # the client writes what it received only per chunk; small chunks make a cut body resumable
    monkeypatch.setattr(constants, "DOWNLOAD_CHUNK_SIZE", 1024)
    data = os.urandom(300_000)
    (hub_root["plain"] / "big.bin").write_bytes(data)
    with serve_hub(hub_root["root"], quiet=True, interrupt_first=1) as s:
        p = hf_hub_download("hubtest/plain", "big.bin", endpoint=s.url, cache_dir=tmp_path / "c")
        gets = [r for r in s.requests if r.method == "GET"]
    assert Path(p).read_bytes() == data
    assert [g.status for g in gets] == [200, 206]
    resumed_at = int(re.fullmatch(r"bytes=(\d+)-", gets[1].range).group(1))
    assert 0 < resumed_at <= len(data) // 2


def test_path_traversal_is_refused(hub_root, tmp_path):
    root, plain = hub_root["root"], hub_root["plain"]
    secret = tmp_path / "secret.txt"
    secret.write_text("TOP SECRET")
    (plain / "link-out.txt").symlink_to(secret)  # points out of ROOT: never served
    (plain / "link-in.txt").symlink_to(plain / "config.json")  # stays inside ROOT: served
    (root / "hubtest" / "escape").symlink_to(tmp_path, target_is_directory=True)
    # (path, status): '..', separators inside a segment and empty segments are refused outright
    attempts = [
        ("/hubtest/plain/resolve/main/../../../secret.txt", 400),
        ("/hubtest/plain/resolve/main/%2e%2e/%2e%2e/%2e%2e/secret.txt", 400),
        ("/hubtest/plain/resolve/main/..%2f..%2f..%2fsecret.txt", 400),
        ("/hubtest/plain/resolve/main/sub/..%5c..%5csecret.txt", 400),
        ("/hubtest/plain/resolve/main//" + str(secret).lstrip("/"), 400),
        ("/hubtest/plain/resolve/main/" + str(secret).lstrip("/"), 404),
        ("/hubtest/plain/resolve/main/link-out.txt", 404),
        ("/hubtest/..%2f..%2f/resolve/main/secret.txt", 404),
        ("/../../resolve/main/secret.txt", 404),
        ("/hubtest/escape/resolve/main/secret.txt", 404),
        ("//" + str(secret), 404),
        ("/api/models/hubtest/plain/tree/main/..%2f..", 400),
    ]
    with serve_hub(root, quiet=True) as s:
        for path, expected in attempts:
            status, _, body = raw(s, "GET", path)
            assert status == expected, path
            assert b"TOP SECRET" not in body, path
        listing = [f.path for f in HfApi(endpoint=s.url).list_repo_tree("hubtest/plain", recursive=True)]
        status, _, body = raw(s, "GET", "/hubtest/plain/resolve/main/link-in.txt")
    assert "link-out.txt" not in listing and "link-in.txt" in listing
    assert (status, body) == (200, (plain / "config.json").read_bytes())


def test_git_lfs_files_are_served_from_lfs_objects(tmp_path):
    repo = tmp_path / "root" / "hubtest" / "lfs"
    repo.mkdir(parents=True)
    git(repo, "init", "-q", "-b", "main")
    content = os.urandom(3000)
    sha = hashlib.sha256(content).hexdigest()
    pointer = f"version https://git-lfs.github.com/spec/v1\noid sha256:{sha}\nsize {len(content)}\n"
    (repo / "model.safetensors").write_text(pointer)
    git(repo, "add", ".")
    git(repo, "commit", "-q", "-m", "lfs")
    with serve_hub(tmp_path / "root", quiet=True) as s:
        missing = raw(s, "GET", "/hubtest/lfs/resolve/main/model.safetensors")
        obj = repo / ".git" / "lfs" / "objects" / sha[:2] / sha[2:4] / sha
        obj.parent.mkdir(parents=True)
        obj.write_bytes(content)
        p = hf_hub_download("hubtest/lfs", "model.safetensors", endpoint=s.url, cache_dir=tmp_path / "c")
        _, headers, _ = raw(s, "HEAD", "/hubtest/lfs/resolve/main/model.safetensors")
        (entry,) = HfApi(endpoint=s.url).list_repo_tree("hubtest/lfs")
    assert missing[0] == 500 and b"git lfs fetch" in missing[2]
    assert Path(p).read_bytes() == content
    assert Path(p).resolve().name == sha  # the cache names LFS blobs by sha256, like the Hub's
    assert headers["X-Linked-Etag"] == headers["ETag"] == f'"{sha}"'
    assert headers["X-Linked-Size"] == headers["Content-Length"] == str(len(content))
    assert entry.lfs.sha256 == sha and entry.size == len(content)
    assert entry.lfs.pointer_size == len(pointer)


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT])
def test_cli_prints_its_url_and_stops_cleanly(hub_root, tmp_path, sig):
    env = {**os.environ, "PYTHONPATH": str(REPO_ROOT) + os.pathsep + os.environ.get("PYTHONPATH", "")}
    proc = subprocess.Popen([sys.executable, "-m", "dsnet_zoo", "serve-hub", str(hub_root["root"]),
                             "--port", "0"], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True, env=env)
    try:
        url = None
        deadline = time.monotonic() + 120
        while url is None and time.monotonic() < deadline:
            line = proc.stdout.readline()
            if not line:
                break
            m = re.fullmatch(r"HF_ENDPOINT=(http://127\.0\.0\.1:\d+)\s*", line)
            url = m.group(1) if m else None
        assert url, proc.stderr.read() if proc.poll() is not None else "no URL printed"
        p = hf_hub_download("hubtest/gitrepo", "config.json", endpoint=url, cache_dir=tmp_path / "c")
        assert Path(p).read_bytes() == b"v2, longer"
        proc.send_signal(sig)
        out, err = proc.communicate(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode == 0, err
    assert "stopped" in out
    assert '"HEAD /hubtest/gitrepo/resolve/main/config.json" 200' in err  # one line per request


def test_cli_refuses_a_missing_folder(tmp_path, capsys):
    from dsnet_zoo.cli import main

    assert main(["serve-hub", str(tmp_path / "nope"), "--port", "0"]) == 2
    assert "is not a folder" in capsys.readouterr().err


def test_cli_refuses_a_port_in_use(hub_root, capsys):
    import socket

    from dsnet_zoo.cli import main

    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        assert main(["serve-hub", str(hub_root["root"]), "--port", str(port)]) == 2
    assert f"cannot listen on 127.0.0.1:{port}" in capsys.readouterr().err


@pytest.mark.parametrize("raw_path", ["/%E7%BB%84%E7%BB%87/x/resolve/main/config.json".encode(),
                                      "/组织/x/resolve/main/config.json".encode("utf-8"),
                                      "/hubtest/%E2%9C%93/resolve/main/config.json".encode()])
def test_non_latin1_paths_get_an_answer_and_the_server_keeps_serving(hub_root, raw_path):
    import socket

    with serve_hub(hub_root["root"], quiet=True) as server:
        with socket.create_connection(("127.0.0.1", server.port), timeout=10) as sock:
            sock.sendall(b"GET " + raw_path + b" HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
            data = b""
            while chunk := sock.recv(65536):
                data += chunk
        head, _, body = data.partition(b"\r\n\r\n")
        assert head.startswith(b"HTTP/1.1 404"), head
        message = [line for line in head.split(b"\r\n") if line.lower().startswith(b"x-error-message:")][0]
        message.decode("ascii")  # escaped: Latin-1 on the wire, and readable
        assert "not found" in json.loads(body)["error"].lower()
        # the handler answered and the server still serves a good request
        conn = http.client.HTTPConnection("127.0.0.1", server.port, timeout=10)
        conn.request("HEAD", "/hubtest/plain/resolve/main/config.json")
        assert conn.getresponse().status == 200
        conn.close()


def test_idle_connections_are_closed(hub_root):
    import socket

    with serve_hub(hub_root["root"], quiet=True, idle_timeout=0.5) as server:
        with socket.create_connection(("127.0.0.1", server.port), timeout=10) as sock:
            t = time.monotonic()
            assert sock.recv(1) == b""  # the server closed the idle connection
            assert time.monotonic() - t < 5
        with pytest.raises(ValueError, match="idle_timeout"):
            serve_hub(hub_root["root"], idle_timeout=0)


@pytest.mark.parametrize("port", ["99999", "-1", "http"])
def test_cli_refuses_a_port_out_of_range(hub_root, capsys, port):
    from dsnet_zoo.cli import main

    with pytest.raises(SystemExit) as e:
        main(["serve-hub", str(hub_root["root"]), "--port", port])
    assert e.value.code == 2
    err = capsys.readouterr().err
    assert "is not a port number: give 1-65535, or 0 for a free one" in err and "Traceback" not in err
    with pytest.raises(ValueError, match="port must be an integer from 0 to 65535"):
        serve_hub(hub_root["root"], port=99999)


def test_unreachable_hub_fails_fast_with_a_clear_error(zoo_hub_endpoint):
    import socket

    from dsnet_zoo.hub import WeightsCfg, WeightsError, resolve_weights_file

    with socket.socket() as s:  # a port nothing listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    zoo_hub_endpoint(f"http://127.0.0.1:{port}")
    cfg = WeightsCfg(tag="t", hf_hub_id="hubtest/plain", revision="main")
    t = time.monotonic()
    with pytest.raises(WeightsError, match=r"failed after 3 attempts \(the Hub cannot be reached: ConnectError"):
        resolve_weights_file(cfg)
    assert time.monotonic() - t < 10  # the zoo's 3 attempts only, not 3 x huggingface_hub's 5 retries


def test_missing_repo_fails_at_once(hub_root, zoo_hub_endpoint):
    from dsnet_zoo.hub import WeightsCfg, WeightsError, resolve_weights_file

    with serve_hub(hub_root["root"], quiet=True) as s:
        zoo_hub_endpoint(s.url)
        t = time.monotonic()
        with pytest.raises(WeightsError, match="the Hub has no repository 'hubtest/missing'"):
            resolve_weights_file(WeightsCfg(tag="t", hf_hub_id="hubtest/missing", revision="main"))
        assert time.monotonic() - t < 5
        assert len(s.requests) == 1  # one request, no retries


def test_a_request_is_recorded_before_its_answer_can_be_read(hub_root, monkeypatch):
    # the race behind a flaky request count: the server kept a request only after writing its body, so a
    # client that had read the answer could look at `requests` before the record was there. A slow record
    # makes the old order fail every time; recorded before the status line, the answer waits for it.
    from dsnet_zoo.hub.server import HubServer

    keep = HubServer._record

    def slow_record(self, rec):
        time.sleep(0.3)
        keep(self, rec)

    monkeypatch.setattr(HubServer, "_record", slow_record)
    with serve_hub(hub_root["root"], quiet=True) as s:
        for method, path, status in [("GET", "/api/models/hubtest/missing", 404),
                                     ("GET", "/hubtest/plain/resolve/main/config.json", 200),
                                     ("POST", "/api/models/hubtest/plain", 404)]:
            before = len(s.requests)
            assert raw(s, method, path)[0] == status
            assert len(s.requests) == before + 1
            assert (s.requests[-1].method, s.requests[-1].status) == (method, status)


def test_a_download_cut_every_time_gives_a_clear_error(hub_root, zoo_hub_endpoint, tmp_path, monkeypatch):
    from dsnet_zoo.hub import WeightsCfg, WeightsError, resolve_weights_file

    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf"))
    with serve_hub(hub_root["root"], quiet=True, interrupt_first=1000) as s:
        zoo_hub_endpoint(s.url)
        with pytest.raises(WeightsError, match=r"failed after 3 attempts \(the server keeps failing"):
            resolve_weights_file(WeightsCfg(tag="t", hf_hub_id="hubtest/plain", revision="main"))
        assert sum(r.method == "GET" for r in s.requests) >= 3


@pytest.mark.parametrize("name", ["hf-hub:", "hf-hub:a//b", "hf-hub:-bad-/x"])
def test_bad_hf_hub_names_are_refused_clearly(name):
    import dsnet_zoo
    from dsnet_zoo.hub import WeightsError

    with pytest.raises(WeightsError, match="is not a Hub repository id: write ORG/NAME"):
        dsnet_zoo.create(name)


def test_paper_tag_not_ported_says_how_to_port_it(monkeypatch, tmp_path):
    import dsnet_zoo
    from dsnet_zoo.hub import WeightsError

    monkeypatch.setenv("DSNET_ZOO_WEIGHTS_DIR", str(tmp_path))  # an empty folder: nothing ported there
    t = time.monotonic()
    with pytest.raises(WeightsError, match=r"dsnet-zoo port-paper --src PATH/TO/paper-weights"):
        dsnet_zoo.create("lipnet_paper_ne_cifar10.margin_0_07", pretrained=True)
    assert time.monotonic() - t < 5
