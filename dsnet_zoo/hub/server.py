"""A local Hugging Face Hub: serves a folder of model repos over the part of the Hub's HTTP API
that ``huggingface_hub.hf_hub_download`` and ``snapshot_download`` use.

For tests (loopback, free port, fault injection) and for air-gapped sites (point ``HF_ENDPOINT`` at
it). Standard library only; ``git`` is needed only for repos that are git repositories.

Layout: ``ROOT/<org>/<name>/...``, one folder per repo (what ``dsnet-zoo publish`` writes).

* A repo folder that holds a ``.git`` is served with git's history: ``main`` (the ``main`` branch,
  or ``HEAD`` when there is none), any branch, tag, full ``refs/...`` name or 40-hex commit id.
  Files are read from git objects, never from the work tree; files stored with git LFS are served
  from ``.git/lfs/objects``.
* Any other folder is one revision, ``main``, whose commit id is a sha1 of every file's path and
  content: it changes whenever a file does, and a pinned id keeps working until then.

Routes (everything else is a plain 404):

* ``HEAD``/``GET /{org}/{name}/resolve/{rev}/{path}``: the file, with ``X-Repo-Commit``, ``ETag``
  and ``Content-Length``; single ``Range: bytes=`` requests get 206 (clients resume with them).
* ``GET /api/models/{org}/{name}[/revision/{rev}]``: repo info (``sha``, ``siblings``).
* ``GET /api/models/{org}/{name}/tree/{rev}[/{path}]?recursive=&cursor=``: the tree listing,
  paginated with a ``Link: <...>; rel="next"`` header like the Hub.

Errors carry the Hub's ``X-Error-Code`` (``RepoNotFound``, ``RevisionNotFound``,
``EntryNotFound``), which ``huggingface_hub`` maps to ``RepositoryNotFoundError``,
``RevisionNotFoundError`` and ``EntryNotFoundError``.

ETags follow the Hub: a file's git blob id (sha1 of ``b"blob <size>\\0" + content``), or the
sha256 of the content for git-LFS files (also sent as ``X-Linked-Etag``/``X-Linked-Size``).
``huggingface_hub`` names cache blobs by ETag, so equal ETags mean equal bytes.

Safety: a request path is served only when it equals a path in the repo's listing (never joined to
a filesystem path), repo names are checked against existing folders, and symbolic links in a plain
folder are followed only when they resolve inside ROOT. There is no authentication: bind to a
loopback address unless everyone who can reach the port may read every file under ROOT.
"""
from __future__ import annotations

import collections
import hashlib
import json
import os
import re
import shutil
import socket
import stat
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field
from datetime import datetime, timezone
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import IO, Iterator
from urllib.parse import parse_qs, unquote, urlencode

__all__ = ["HubServer", "RequestRecord", "serve_hub", "folder_commit_id", "git_blob_id"]

_SHA1_RE = re.compile(r"[0-9a-f]{40}")
# the Hub's repo name rule: letters, digits, '-', '_', '.'; no leading '.' here so that
# '.', '..' and hidden folders can never name a repo
_NAME_RE = re.compile(r"[A-Za-z0-9_\-][A-Za-z0-9_\-.]{0,95}")
# branch/tag names that can reach git: no option-like or relative forms
_REF_RE = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.\-/]*")
_LFS_POINTER_RE = re.compile(
    rb"version https://git-lfs\.github\.com/spec/v1\noid sha256:([0-9a-f]{64})\nsize ([0-9]+)\n")
_LFS_POINTER_MAX = 1024
_CHUNK = 1 << 20
_FOLDER_COMMIT_PREFIX = b"dsnet-zoo folder snapshot v1\0"


def git_blob_id(data: bytes) -> str:
    """The git blob id of ``data``: what ``git hash-object`` prints and the Hub's ETag for it."""
    return hashlib.sha1(b"blob %d\0" % len(data) + data).hexdigest()


def _git_blob_id_file(path: str, size: int) -> str:
    h = hashlib.sha1(b"blob %d\0" % size)
    with open(path, "rb") as f:
        while chunk := f.read(_CHUNK):
            h.update(chunk)
    return h.hexdigest()


def folder_commit_id(files: dict[str, str]) -> str:
    """Commit id of a plain-folder repo from ``{path: git blob id}``: a sha1 over the sorted
    paths and blob ids, so it is a function of the files' paths and contents only."""
    h = hashlib.sha1(_FOLDER_COMMIT_PREFIX)
    for path in sorted(files):
        h.update(path.encode("utf-8") + b"\0" + files[path].encode("ascii") + b"\n")
    return h.hexdigest()


def _iso(ts: float) -> str:
    # the only date format huggingface_hub's parse_datetime accepts
    return datetime.fromtimestamp(ts, tz=timezone.utc).strftime("%Y-%m-%dT%H:%M:%S.%f")[:-3] + "Z"


class HubError(Exception):
    """An answer with a Hub error code (``code`` None: a plain error without one)."""

    def __init__(self, status: int, code: str | None, message: str, *, commit: str | None = None):
        super().__init__(message)
        self.status, self.code, self.message, self.commit = status, code, message, commit


@dataclass(frozen=True)
class RepoFile:
    path: str
    size: int  # bytes served
    blob_id: str  # git blob id of what is stored (the pointer, for an LFS file)
    source: str  # filesystem path (plain file, LFS object) or git blob id
    in_git: bool = False
    lfs_sha256: str | None = None
    lfs_pointer_size: int | None = None
    mtime_ns: int | None = None  # plain files: to notice a change between listing and reading

    @property
    def etag(self) -> str:
        return self.lfs_sha256 or self.blob_id


@dataclass(frozen=True)
class Snapshot:
    commit: str
    files: dict[str, RepoFile]
    dirs: dict[str, str]  # folder path -> oid
    last_modified: str


def _dir_oids(files: dict[str, RepoFile]) -> dict[str, str]:
    children: dict[str, list[str]] = collections.defaultdict(list)
    for p, f in files.items():
        parts = p.split("/")
        for i in range(1, len(parts)):
            children["/".join(parts[:i])].append(f"{p}\0{f.blob_id}")
    return {d: hashlib.sha1("\n".join(sorted(c)).encode()).hexdigest() for d, c in children.items()}


class _FolderRepo:
    """A plain folder: one revision, ``main``, identified by :func:`folder_commit_id`."""

    def __init__(self, path: Path, root: Path):
        self.path, self.root = path, root
        self._blob_ids: dict[str, tuple[tuple[int, int, int], str]] = {}
        # one listing at a time: parallel first requests (snapshot_download uses 8 threads)
        # would otherwise all hash the same large files
        self._lock = threading.Lock()

    def _walk(self) -> Iterator[tuple[str, str, os.stat_result]]:
        for dirpath, dirnames, filenames in os.walk(self.path, followlinks=False):
            # hidden folders (.git, .cache/huggingface of local_dir downloads) are not repo content
            dirnames[:] = sorted(d for d in dirnames if not d.startswith("."))
            for name in sorted(filenames):
                full = os.path.join(dirpath, name)
                if os.path.islink(full):
                    target = os.path.realpath(full)
                    if os.path.commonpath([target, str(self.root)]) != str(self.root):
                        continue  # a link out of ROOT is never served
                try:
                    st = os.stat(full)
                except OSError:
                    continue  # dangling link, or removed while walking
                if stat.S_ISREG(st.st_mode):
                    yield os.path.relpath(full, self.path).replace(os.sep, "/"), full, st

    def snapshot(self) -> Snapshot:
        files: dict[str, RepoFile] = {}
        newest = 0.0
        with self._lock:
            for rel, full, st in self._walk():
                key = (st.st_size, st.st_mtime_ns, st.st_ino)
                cached = self._blob_ids.get(full)
                if cached is None or cached[0] != key:
                    cached = self._blob_ids[full] = (key, _git_blob_id_file(full, st.st_size))
                files[rel] = RepoFile(rel, st.st_size, cached[1], full, mtime_ns=st.st_mtime_ns)
                newest = max(newest, st.st_mtime)
            seen = {f.source for f in files.values()}
            for gone in [k for k in self._blob_ids if k not in seen]:
                del self._blob_ids[gone]
        commit = folder_commit_id({p: f.blob_id for p, f in files.items()})
        return Snapshot(commit, files, _dir_oids(files), _iso(newest or time.time()))

    def resolve(self, revision: str) -> Snapshot | None:
        snap = self.snapshot()
        return snap if revision in ("main", snap.commit) else None

    def read(self, f: RepoFile, start: int, length: int) -> Iterator[bytes]:
        fh = open(f.source, "rb")
        try:
            st = os.fstat(fh.fileno())
            if st.st_size != f.size or st.st_mtime_ns != f.mtime_ns:
                raise HubError(503, None, f"{f.path} changed while being served; retry")
        except BaseException:
            fh.close()
            raise
        return _read_file(fh, start, length)


def _read_file(fh: IO[bytes], start: int, length: int) -> Iterator[bytes]:
    with fh:
        fh.seek(start)
        while length > 0:
            chunk = fh.read(min(_CHUNK, length))
            if not chunk:
                raise OSError(f"{fh.name} ended early")
            length -= len(chunk)
            yield chunk


class _GitRepo:
    """A git repository: branches, tags and commits, files read from git's objects."""

    _CACHE = 64  # listings kept, by commit id (commits are immutable)

    def __init__(self, path: Path):
        self.path = path
        self._listings: collections.OrderedDict[str, Snapshot] = collections.OrderedDict()
        self._lock = threading.Lock()
        self._git_dir: Path | None = None

    def _cmd(self, *args: str) -> tuple[list[str], dict[str, str]]:
        if shutil.which("git") is None:
            raise HubError(500, None, f"{self.path} is a git repository but git is not installed")
        # the ceiling keeps git from ever using a repository above the repo folder
        env = {**os.environ, "GIT_TERMINAL_PROMPT": "0", "LC_ALL": "C",
               "GIT_CEILING_DIRECTORIES": str(self.path.parent)}
        return ["git", "-C", str(self.path), *args], env

    def _git(self, *args: str, check: bool = True, stdin: bytes | None = None) -> subprocess.CompletedProcess:
        cmd, env = self._cmd(*args)
        proc = subprocess.run(cmd, input=stdin, capture_output=True, env=env)
        if check and proc.returncode != 0:
            raise HubError(500, None, f"git {' '.join(args)} failed in {self.path}: "
                                      f"{proc.stderr.decode(errors='replace').strip()}")
        return proc

    def _rev_parse(self, spec: str) -> str | None:
        proc = self._git("rev-parse", "--verify", "--quiet", spec + "^{commit}", check=False)
        out = proc.stdout.decode().strip()
        return out if proc.returncode == 0 and _SHA1_RE.fullmatch(out) else None

    def resolve_commit(self, revision: str) -> str | None:
        if _SHA1_RE.fullmatch(revision):
            return self._rev_parse(revision)
        if not _REF_RE.fullmatch(revision) or ".." in revision or "//" in revision \
                or revision.endswith(("/", ".lock")) or "@{" in revision:
            return None
        candidates = ([revision] if revision.startswith("refs/")
                      else [f"refs/heads/{revision}", f"refs/tags/{revision}"])
        for ref in candidates:
            commit = self._rev_parse(ref)
            if commit:
                return commit
        if revision == "main":  # a repo made with `git init` on older git has `master` instead
            return self._rev_parse("HEAD")
        return None

    def resolve(self, revision: str) -> Snapshot | None:
        commit = self.resolve_commit(revision)
        if commit is None:
            return None
        with self._lock:
            if commit in self._listings:
                self._listings.move_to_end(commit)
                return self._listings[commit]
        snap = self._list(commit)
        with self._lock:
            self._listings[commit] = snap
            while len(self._listings) > self._CACHE:
                self._listings.popitem(last=False)
        return snap

    def _lfs_objects(self) -> Path:
        if self._git_dir is None:
            common = self._git("rev-parse", "--git-common-dir").stdout.decode().strip()
            self._git_dir = (self.path / common).resolve()
        return self._git_dir / "lfs" / "objects"

    def _list(self, commit: str) -> Snapshot:
        out = self._git("ls-tree", "-r", "-t", "-z", "--long", commit).stdout
        files: dict[str, RepoFile] = {}
        dirs: dict[str, str] = {}
        small: list[tuple[str, str, int]] = []
        for entry in out.split(b"\0"):
            if not entry:
                continue
            meta, _, raw_path = entry.partition(b"\t")
            _mode, kind, oid, size = meta.decode().split()
            path = raw_path.decode("utf-8", errors="surrogateescape")
            if kind == "tree":
                dirs[path] = oid
            elif kind == "blob":
                files[path] = RepoFile(path, int(size), oid, oid, in_git=True)
                if int(size) <= _LFS_POINTER_MAX:
                    small.append((path, oid, int(size)))
        for path, content in self._cat_blobs(small).items():
            m = _LFS_POINTER_RE.match(content)
            if m:
                sha256, size = m.group(1).decode(), int(m.group(2))
                obj = self._lfs_objects() / sha256[:2] / sha256[2:4] / sha256
                files[path] = RepoFile(path, size, files[path].blob_id, str(obj),
                                       lfs_sha256=sha256, lfs_pointer_size=len(content))
        date = self._git("show", "-s", "--format=%ct", commit).stdout.decode().strip()
        return Snapshot(commit, dict(sorted(files.items())), dirs, _iso(float(date or 0)))

    def _cat_blobs(self, blobs: list[tuple[str, str, int]]) -> dict[str, bytes]:
        """Contents of small blobs in one ``git cat-file --batch`` call."""
        if not blobs:
            return {}
        stdin = "".join(f"{oid}\n" for _, oid, _ in blobs).encode()
        out = self._git("cat-file", "--batch", stdin=stdin).stdout
        pos, result = 0, {}
        for path, oid, size in blobs:
            header_end = out.index(b"\n", pos)
            header = out[pos:header_end].split()
            if header[1] != b"blob" or int(header[2]) != size:
                raise HubError(500, None, f"git cat-file gave {header!r} for {oid} in {self.path}")
            result[path] = out[header_end + 1:header_end + 1 + size]
            pos = header_end + 1 + size + 1
        return result

    def read(self, f: RepoFile, start: int, length: int) -> Iterator[bytes]:
        if not f.in_git:  # an LFS object
            try:
                fh = open(f.source, "rb")
            except FileNotFoundError:
                raise HubError(500, None, f"{f.path} is stored with git LFS and its object "
                                          f"{f.lfs_sha256} is not in {self.path}; run "
                                          f"`git lfs fetch --all` there") from None
            return _read_file(fh, start, length)
        return self._read_blob(f.source, start, length)

    def _read_blob(self, oid: str, start: int, length: int) -> Iterator[bytes]:
        cmd, env = self._cmd("cat-file", "blob", oid)
        proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, env=env)
        assert proc.stdout is not None
        try:
            skip = start
            while skip > 0:  # a pipe cannot seek
                chunk = proc.stdout.read(min(_CHUNK, skip))
                if not chunk:
                    break
                skip -= len(chunk)
            while length > 0:
                chunk = proc.stdout.read(min(_CHUNK, length))
                if not chunk:
                    raise OSError(f"git cat-file blob {oid} ended early in {self.path}")
                length -= len(chunk)
                yield chunk
        finally:
            proc.stdout.close()
            proc.kill()
            proc.wait()


@dataclass(frozen=True)
class RequestRecord:
    """One answered request, as kept in :attr:`HubServer.requests`."""

    method: str
    path: str
    status: int
    range: str | None = None


def _header_text(text: str) -> str:
    """``text`` with every non-ASCII and every control character backslash-escaped."""
    out = text.encode("ascii", errors="backslashreplace").decode("ascii")
    return "".join(c if c >= " " and c != "\x7f" else f"\\x{ord(c):02x}" for c in out)


def _parse_range(header: str | None, size: int) -> tuple[int, int] | None | str:
    """``(start, end_inclusive)`` for one satisfiable range, ``None`` to send the whole file
    (no header, or one we do not honour: several ranges), ``'unsatisfiable'`` for a 416."""
    if not header:
        return None
    m = re.fullmatch(r"\s*bytes\s*=\s*(\d*)\s*-\s*(\d*)\s*", header)
    if not m or (not m.group(1) and not m.group(2)):
        return None
    first, last = m.group(1), m.group(2)
    if not first:  # suffix: the last N bytes
        n = int(last)
        if n == 0:
            return "unsatisfiable"
        return (max(size - n, 0), size - 1) if size else "unsatisfiable"
    start = int(first)
    if last and int(last) < start:
        return None  # an invalid range-spec: RFC 9110 says ignore the header
    if start >= size:
        return "unsatisfiable"
    return start, min(int(last), size - 1) if last else size - 1


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server_version = "dsnet-zoo-hub/1"
    server: "_HTTPServer"

    # ---------------------------------------------------------------- plumbing
    def setup(self):
        # an idle keep-alive connection is closed after this many seconds instead of holding its thread
        # forever (StreamRequestHandler applies it as the socket timeout; a timed-out read ends the
        # connection)
        self.timeout = self.server.hub.idle_timeout
        super().setup()

    def send_header(self, keyword, value):
        # header values are Latin-1 on the wire and clients read them as ASCII: anything else (a path or
        # repo name echoed in an error message) is escaped, or the handler thread would die on
        # UnicodeEncodeError mid-response
        super().send_header(keyword, _header_text(str(value)))

    def log_request(self, code="-", size="-"):  # one line per request is written in _finish
        pass

    def send_response(self, code, message=None):
        # recorded before the status line goes out: a client that has read the answer must find its request
        # in HubServer.requests (recording after the body raced with tests that count requests at once)
        self._record(code)
        super().send_response(code, message)

    def _record(self, status: int) -> None:
        # _rec is None from the start of a routed request until it is recorded; requests the base class
        # refuses before routing (malformed request lines) are not kept, as before
        if getattr(self, "_rec", False) is None:
            self._rec = RequestRecord(self.command, self.path, status, self.headers.get("Range"))
            self.server.hub._record(self._rec)

    def log_message(self, format, *args):
        if not self.server.hub.quiet:
            sys.stderr.write(f"serve-hub: {self.address_string()} {format % args}\n")

    def do_GET(self):
        self._handle(head=False)

    def do_HEAD(self):
        self._handle(head=True)

    def _not_supported(self):
        self._t0 = time.perf_counter()
        self._rec = None
        self.close_connection = True  # a body we did not read may follow
        self._status = 404
        self._send_simple(404, b"Not Found", head=False)
        self._finish()

    do_POST = do_PUT = do_DELETE = do_PATCH = do_OPTIONS = _not_supported

    def _send_simple(self, status: int, body: bytes, head: bool, headers: dict | None = None,
                     content_type: str = "text/plain; charset=utf-8"):
        self.send_response(status)
        for k, v in (headers or {}).items():
            self.send_header(k, v)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        if not head:
            self.wfile.write(body)

    def _send_error(self, err: HubError, head: bool):
        headers = {}
        if err.code:
            headers["X-Error-Code"] = err.code
        headers["X-Error-Message"] = err.message.replace("\r", " ").replace("\n", " ")
        if err.commit:
            headers["X-Repo-Commit"] = err.commit
        self._status = err.status
        self._send_simple(err.status, json.dumps({"error": err.message}).encode(), head, headers,
                          content_type="application/json")

    def _send_json(self, obj, head: bool, headers: dict | None = None):
        self._status = 200
        self._send_simple(200, json.dumps(obj).encode(), head, headers, content_type="application/json")

    def _finish(self):
        hub = self.server.hub
        self._record(getattr(self, "_status", 0))  # a request that got no status line (the client went away)
        rec = self._rec
        if not hub.quiet:
            ms = (time.perf_counter() - self._t0) * 1e3
            rng = f" [{rec.range}]" if rec.range else ""
            sys.stderr.write(f'serve-hub: {self.client_address[0]} "{self.command} {self.path}"{rng} '
                             f"{rec.status} {ms:.1f}ms\n")

    # ---------------------------------------------------------------- routing
    def _handle(self, head: bool):
        self._t0 = time.perf_counter()
        self._status = 0
        self._rec = None
        self._headers_sent = False
        hub = self.server.hub
        try:
            answer = self._route(head)
            injected = hub._take_injected_failure(f"{self.command} {self.path}")
            if injected:
                raise HubError(500, None, injected)
            answer()
        except HubError as e:
            self._send_error(e, head)
        except (BrokenPipeError, ConnectionResetError):
            self.close_connection = True
        except Exception as e:  # noqa: BLE001 - a server answers 500, it does not die
            self.close_connection = True
            self.log_message("error on %s: %s: %s", self.path, type(e).__name__, e)
            if not self._headers_sent:  # else the client sees a short body and retries
                try:
                    self._send_error(HubError(500, None, f"{type(e).__name__}: {e}"), head)
                except OSError:
                    pass
        finally:
            self._finish()

    def _route(self, head: bool):
        """The function answering this request (raises a plain 404 for anything else)."""
        # split by hand: urlsplit would read '//x/...' as a host name
        raw_path, _, raw_query = self.path.partition("?")
        raw = raw_path.split("/")
        if raw[:1] != [""] or len(raw) < 2:
            raise HubError(404, None, "Not Found")
        parts = [unquote(p) for p in raw[1:]]
        query = parse_qs(raw_query)
        repo = self.server.hub._repo  # looked up when answering, after any injected failure
        if parts[0] == "api":
            if len(parts) >= 4 and parts[1] == "models":
                org, name, rest = parts[2], parts[3], parts[4:]
                if not rest:
                    return lambda: self._info(repo(org, name), org, name, "main", head)
                if rest[0] == "revision" and len(rest) == 2:
                    return lambda: self._info(repo(org, name), org, name, rest[1], head)
                if rest[0] == "tree" and len(rest) >= 2:
                    return lambda: self._tree(repo(org, name), rest[1],
                                              self._file_path(rest[2:], allow_empty=True),
                                              query, raw_path, head)
            raise HubError(404, None, "Not Found")
        if len(parts) >= 5 and parts[2] == "resolve":
            org, name = parts[0], parts[1]
            return lambda: self._resolve(repo(org, name), parts[3], self._file_path(parts[4:]), head)
        raise HubError(404, None, "Not Found")

    @staticmethod
    def _file_path(parts: list[str], allow_empty: bool = False) -> str:
        if allow_empty and all(p == "" for p in parts):
            return ""
        for p in parts:
            if p in ("", ".", "..") or "/" in p or "\\" in p or "\0" in p:
                raise HubError(400, None, f"invalid path in repo: {'/'.join(parts)!r} "
                                          "(empty, '.', '..' or separator inside a segment)")
        return "/".join(parts)

    @staticmethod
    def _snapshot(repo, revision: str) -> Snapshot:
        snap = repo.resolve(revision)
        if snap is None:
            raise HubError(404, "RevisionNotFound", f"Invalid rev id: {revision}")
        return snap

    def _resolve(self, repo, revision: str, path: str, head: bool):
        snap = self._snapshot(repo, revision)
        f = snap.files.get(path)
        if f is None:
            raise HubError(404, "EntryNotFound", f"{path} does not exist at revision {revision}",
                           commit=snap.commit)
        headers = {"X-Repo-Commit": snap.commit, "ETag": f'"{f.etag}"', "Accept-Ranges": "bytes"}
        if f.lfs_sha256:
            headers["X-Linked-Etag"] = f'"{f.lfs_sha256}"'
            headers["X-Linked-Size"] = str(f.size)
        rng = None if head else _parse_range(self.headers.get("Range"), f.size)
        if rng == "unsatisfiable":
            self._status = 416
            self._send_simple(416, b"", head, {**headers, "Content-Range": f"bytes */{f.size}"})
            return
        start, end = rng if rng else (0, f.size - 1)
        length = end - start + 1
        body = None if head or length == 0 else repo.read(f, start, length)
        self._status = 206 if rng else 200
        self.send_response(self._status)
        for k, v in headers.items():
            self.send_header(k, v)
        if rng:
            self.send_header("Content-Range", f"bytes {start}-{end}/{f.size}")
        self.send_header("Content-Type", "application/octet-stream")
        self.send_header("Content-Length", str(length))
        self._headers_sent = True
        self.end_headers()
        if body is None:
            return
        cut = self.server.hub._take_interruption(length)
        sent = 0
        try:
            for chunk in body:
                if cut is not None and sent + len(chunk) >= cut:
                    # the interrupt_first testing aid: half the body, then a dropped connection
                    self.wfile.write(chunk[:cut - sent])
                    self.close_connection = True
                    self.connection.shutdown(socket.SHUT_RDWR)
                    return
                self.wfile.write(chunk)
                sent += len(chunk)
        finally:
            body.close()

    @staticmethod
    def _entry(snap: Snapshot, path: str) -> dict:
        f = snap.files.get(path)
        if f is None:
            return {"type": "directory", "oid": snap.dirs[path], "size": 0, "path": path}
        e = {"type": "file", "oid": f.blob_id, "size": f.size, "path": path}
        if f.lfs_sha256:
            e["lfs"] = {"oid": f.lfs_sha256, "size": f.size, "pointerSize": f.lfs_pointer_size}
        return e

    def _info(self, repo, org: str, name: str, revision: str, head: bool):
        snap = self._snapshot(repo, revision)
        siblings = []
        for f in snap.files.values():
            s = {"rfilename": f.path, "size": f.size, "blobId": f.blob_id}
            if f.lfs_sha256:
                s["lfs"] = {"sha256": f.lfs_sha256, "size": f.size, "pointerSize": f.lfs_pointer_size}
            siblings.append(s)
        repo_id = f"{org}/{name}"
        self._send_json({
            "_id": hashlib.sha1(repo_id.encode()).hexdigest()[:24], "id": repo_id, "modelId": repo_id,
            "author": org, "sha": snap.commit, "lastModified": snap.last_modified, "private": False,
            "gated": False, "disabled": False, "downloads": 0, "likes": 0, "tags": [],
            "siblings": siblings,
        }, head)

    def _tree(self, repo, revision: str, path: str, query: dict, raw_path: str, head: bool):
        snap = self._snapshot(repo, revision)
        recursive = (query.get("recursive", ["false"])[-1].lower() in ("1", "true", "yes"))
        if path and path not in snap.dirs:
            if path in snap.files:  # the Hub lists a file path as that one entry
                entries = [path]
            else:
                raise HubError(404, "EntryNotFound", f"{path} does not exist at revision {revision}",
                               commit=snap.commit)
        else:
            prefix = path + "/" if path else ""
            entries = sorted(
                p for p in (*snap.dirs, *snap.files)
                if p.startswith(prefix) and (recursive or "/" not in p[len(prefix):]))
        try:
            start = int(query.get("cursor", ["0"])[-1])
        except ValueError:
            raise HubError(400, None, "invalid cursor") from None
        page_size = self.server.hub.tree_page_size
        page = entries[start:start + page_size]
        headers = {}
        if start + page_size < len(entries):
            q = {k: v[-1] for k, v in query.items()}
            q["cursor"] = str(start + page_size)
            host = self.headers.get("Host") or self.server.hub.netloc
            headers["Link"] = f'<http://{host}{raw_path}?{urlencode(q)}>; rel="next"'
        self._send_json([self._entry(snap, p) for p in page], head, headers)


class _HTTPServer(ThreadingHTTPServer):
    daemon_threads = True
    hub: "HubServer"


class _HTTPServer6(_HTTPServer):
    address_family = socket.AF_INET6


class HubServer:
    """A local Hub serving the repos under ``root``; see the module docstring for what it answers.

    Testing aids, to show that a client retries and resumes:

    * ``fail_first=N`` answers HTTP 500 to the first N requests for the Hub routes above (other
      paths, such as ``huggingface_hub``'s own ``/api/agent-harnesses`` fetch, are not counted);
      with ``fail_match=REGEX`` only requests whose ``"METHOD /path"`` matches are counted
      (``"^GET "``: fail downloads, let ``HEAD`` metadata calls through).
    * ``interrupt_first=N`` cuts the body of the first N file downloads in half and drops the
      connection (a client resumes with a ``Range`` request).

    ``requests`` holds the last requests answered (method, path, status, Range header).
    """

    def __init__(self, root: str | os.PathLike, host: str = "127.0.0.1", port: int = 0, *,
                 fail_first: int = 0, fail_match: str | None = None, interrupt_first: int = 0,
                 quiet: bool = False, idle_timeout: float = 30.0,
                 tree_page_size: int = 1000, keep_requests: int = 10_000):
        root_path = Path(root).expanduser()
        if not root_path.is_dir():
            raise FileNotFoundError(f"{root} is not a folder; give the folder that holds "
                                    "<org>/<name>/ repo folders")
        if fail_first < 0 or interrupt_first < 0:
            raise ValueError("fail_first and interrupt_first must be >= 0")
        if tree_page_size < 1:
            raise ValueError("tree_page_size must be >= 1")
        if not (isinstance(port, int) and 0 <= port <= 65535):
            raise ValueError(f"port must be an integer from 0 to 65535 (0 picks a free one), got {port!r}")
        if not (idle_timeout > 0):
            raise ValueError(f"idle_timeout must be positive (seconds), got {idle_timeout!r}")
        self.idle_timeout = float(idle_timeout)
        self.root = root_path.resolve()
        self.quiet = quiet
        self.tree_page_size = tree_page_size
        self.fail_first = fail_first
        self.fail_match = re.compile(fail_match) if fail_match else None
        self.requests: collections.deque[RequestRecord] = collections.deque(maxlen=keep_requests)
        self._fail_left = fail_first
        self._interrupt_left = interrupt_first
        self._lock = threading.Lock()
        self._repos: dict[Path, _FolderRepo | _GitRepo] = {}
        cls = _HTTPServer6 if ":" in host else _HTTPServer
        self._httpd = cls((host, port), _Handler)
        self._httpd.hub = self
        self.host = host
        self.port = self._httpd.server_address[1]
        self.netloc = f"[{host}]:{self.port}" if ":" in host else f"{host}:{self.port}"
        self.url = f"http://{self.netloc}"
        self._thread: threading.Thread | None = None

    # state shared by the handler threads
    def _record(self, rec: RequestRecord) -> None:
        with self._lock:
            self.requests.append(rec)

    def _take_injected_failure(self, request_line: str) -> str | None:
        if self.fail_match is not None and not self.fail_match.search(request_line):
            return None
        with self._lock:
            if self._fail_left <= 0:
                return None
            self._fail_left -= 1
            k = self.fail_first - self._fail_left
        return f"injected failure {k} of {self.fail_first} (fail_first testing aid)"

    def _take_interruption(self, length: int) -> int | None:
        with self._lock:
            if self._interrupt_left <= 0 or length < 2:
                return None
            self._interrupt_left -= 1
        return length // 2

    def _repo(self, org: str, name: str):
        if not (_NAME_RE.fullmatch(org) and _NAME_RE.fullmatch(name)):
            raise HubError(404, "RepoNotFound", f"Repository {org}/{name} not found")
        # org and name are single path segments that cannot be '.', '..' or hidden
        path = self.root / org / name
        if not path.is_dir() or not path.resolve().is_relative_to(self.root):
            raise HubError(404, "RepoNotFound", f"Repository {org}/{name} not found")
        is_git = (path / ".git").exists()
        with self._lock:
            repo = self._repos.get(path)
            if repo is None or isinstance(repo, _GitRepo) != is_git:
                repo = _GitRepo(path) if is_git else _FolderRepo(path, self.root)
                self._repos[path] = repo
        return repo

    def repo_ids(self) -> list[str]:
        """The ``org/name`` of every repo folder under ``root``."""
        out = []
        for org in sorted(self.root.iterdir()):
            if org.is_dir() and _NAME_RE.fullmatch(org.name):
                out += [f"{org.name}/{r.name}" for r in sorted(org.iterdir())
                        if r.is_dir() and _NAME_RE.fullmatch(r.name)]
        return out

    # life cycle
    def serve_forever(self) -> None:
        """Serve in this thread until :meth:`shutdown` is called from another one."""
        self._httpd.serve_forever(poll_interval=0.2)

    def start(self) -> "HubServer":
        """Serve from a daemon thread; return self."""
        if self._thread is None:
            self._thread = threading.Thread(target=self.serve_forever, name="dsnet-zoo-hub",
                                            daemon=True)
            self._thread.start()
        return self

    def shutdown(self) -> None:
        """Stop serving and close the listening socket (idempotent)."""
        if self._thread is not None:
            self._httpd.shutdown()
            self._thread.join()
            self._thread = None
        self._httpd.server_close()

    def __enter__(self) -> "HubServer":
        return self.start()

    def __exit__(self, *exc) -> None:
        self.shutdown()


def serve_hub(root: str | os.PathLike, host: str = "127.0.0.1", port: int = 0, **kwargs) -> HubServer:
    """Start a :class:`HubServer` on ``host:port`` (0: a free port) in a daemon thread.

    Use it as a context manager, or call ``.shutdown()``; ``.url`` is the ``HF_ENDPOINT`` to use.
    """
    return HubServer(root, host, port, **kwargs).start()
