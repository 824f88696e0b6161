"""A small in-process fake of the Hugging Face Hub, for tests that drive the real ``huggingface_hub`` client.

``FakeHub`` serves model (and dataset) repos described in Python over plain HTTP on ``127.0.0.1``. It answers the
requests that ``hf_hub_download``, ``snapshot_download``, ``HfApi.model_info``/``repo_info``, ``list_repo_files``,
``list_repo_tree``, ``list_repo_refs``, ``get_paths_info`` and ``file_exists`` issue:

* ``HEAD``/``GET /{repo_id}/resolve/{revision}/{filename}`` (``/datasets/{repo_id}/...`` for datasets),
* ``GET /api/{models,datasets}/{repo_id}[/revision/{revision}]``,
* ``GET /api/{models,datasets}/{repo_id}/tree/{revision}[/{path}]``, ``GET .../refs``,
  ``POST .../paths-info/{revision}``.

Files matching ``lfs_patterns`` (or bigger than ``lfs_threshold``) behave like Git LFS files on the real Hub: the
resolve endpoint answers ``302`` with ``X-Linked-Etag`` (sha256) and ``X-Linked-Size`` and redirects to a second
"CDN" listener on another port, which serves the bytes. Other files are served directly with a git-blob-sha1 ``ETag``.
No ``X-Xet-*`` header is ever sent, so the client always uses plain HTTP downloads.

Usage::

    with FakeHub() as hub:
        sha = hub.add_repo("org/model", {"config.json": b"{}"})
        ...  # point HF_ENDPOINT / huggingface_hub.constants.ENDPOINT at hub.url (see hub_fixtures.py)
        assert ("HEAD", "/org/model/resolve/main/config.json") in hub.request_log
"""

from __future__ import annotations

import fnmatch
import hashlib
import json
import re
import threading
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, quote, unquote, urlsplit

__all__ = ["DEFAULT_LFS_PATTERNS", "FakeHub", "HubFile", "LoggedRequest"]

DEFAULT_LFS_PATTERNS: tuple[str, ...] = (
    "*.safetensors",
    "*.bin",
    "*.pt",
    "*.pth",
    "*.ckpt",
    "*.h5",
    "*.msgpack",
    "*.onnx",
    "*.npy",
    "*.npz",
    "*.pkl",
    "*.gguf",
)
_REPO_TYPES: dict[str, str] = {"model": "", "dataset": "datasets/"}  # repo type -> resolve URL prefix
_SHA1_RE = re.compile(r"[0-9a-f]{40}")
_SHORT_SHA_RE = re.compile(r"[0-9a-f]{7,39}")
_TRUE = {"1", "true", "yes", "on"}


@dataclass(frozen=True)
class HubFile:
    """One file of a commit, with the git/LFS identifiers the Hub reports for it."""

    path: str
    data: bytes
    lfs: bool

    @property
    def size(self) -> int:
        """Size of the real content in bytes."""
        return len(self.data)

    @property
    def sha256(self) -> str:
        """sha256 of the content (the LFS oid)."""
        return hashlib.sha256(self.data).hexdigest()

    @property
    def pointer(self) -> bytes:
        """Git LFS pointer file stored in git for LFS files."""
        return f"version https://git-lfs.github.com/spec/v1\noid sha256:{self.sha256}\nsize {self.size}\n".encode()

    @property
    def blob_id(self) -> str:
        """Git blob oid: of the pointer for LFS files, of the content otherwise."""
        return _git_blob_sha1(self.pointer if self.lfs else self.data)

    @property
    def etag(self) -> str:
        """ETag the client caches the blob under (sha256 for LFS files, git blob sha1 otherwise)."""
        return self.sha256 if self.lfs else self.blob_id


@dataclass
class _Commit:
    sha: str
    files: dict[str, HubFile]
    date: str


@dataclass
class _Repo:
    repo_id: str
    repo_type: str
    commits: dict[str, _Commit] = field(default_factory=dict)
    branches: dict[str, str] = field(default_factory=dict)
    tags: dict[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class LoggedRequest:
    """A request received by the hub or its CDN listener."""

    method: str
    path: str
    query: str
    headers: dict[str, str]
    cdn: bool


def _git_blob_sha1(data: bytes) -> str:
    return hashlib.sha1(b"blob %d\0" % len(data) + data).hexdigest()


def _iso(ts: float) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%S.000Z", time.gmtime(ts))


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    request_queue_size = 128

    def __init__(self, address: tuple[str, int], hub: FakeHub, cdn: bool) -> None:
        self.hub = hub
        self.is_cdn = cdn
        super().__init__(address, _Handler)


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.0"  # one request per connection: nothing lingers after stop()
    timeout = 30
    server: _Server

    def do_GET(self) -> None:
        self.server.hub._handle(self, "GET")

    def do_HEAD(self) -> None:
        self.server.hub._handle(self, "HEAD")

    def do_POST(self) -> None:
        self.server.hub._handle(self, "POST")

    def log_message(self, format: str, *args: Any) -> None:  # silence the stderr access log
        pass


class FakeHub:
    """Threaded HTTP server emulating the Hub endpoints ``huggingface_hub`` uses to read model repos.

    Args:
        host: interface to bind (the port is picked at random on first ``start()`` and kept across restarts).
        lfs_patterns: fnmatch patterns (on the file name and the full path) of files served as LFS files.
        lfs_threshold: files at least this big are LFS files too (``None``: patterns only).
        lfs_redirect: serve LFS files through a ``302`` to a second listener (like the real Hub's CDN);
            if ``False`` they are answered directly, still with ``X-Linked-Etag``/``X-Linked-Size``.
    """

    def __init__(
        self,
        host: str = "127.0.0.1",
        *,
        lfs_patterns: tuple[str, ...] = DEFAULT_LFS_PATTERNS,
        lfs_threshold: int | None = 10 * 1024 * 1024,
        lfs_redirect: bool = True,
    ) -> None:
        self.host = host
        self.lfs_patterns = tuple(lfs_patterns)
        self.lfs_threshold = lfs_threshold
        self.lfs_redirect = lfs_redirect
        self.request_log: list[tuple[str, str]] = []
        self.requests: list[LoggedRequest] = []
        self._repos: dict[tuple[str, str], _Repo] = {}
        self._blobs: dict[str, bytes] = {}  # sha256 -> content, served by the CDN listener
        self._lock = threading.RLock()
        self._fail_status: int | None = None
        self._port: int | None = None
        self._cdn_port: int | None = None
        self._servers: list[tuple[_Server, threading.Thread]] = []

    # ------------------------------------------------------------------ lifecycle

    @property
    def url(self) -> str:
        """Base URL to use as ``HF_ENDPOINT`` (no trailing slash)."""
        if self._port is None:
            raise RuntimeError("FakeHub has never been started")
        return f"http://{self.host}:{self._port}"

    @property
    def cdn_url(self) -> str:
        """Base URL of the listener that serves LFS blobs."""
        if self._cdn_port is None:
            raise RuntimeError("FakeHub has never been started")
        return f"http://{self.host}:{self._cdn_port}"

    @property
    def is_running(self) -> bool:
        """Whether the listeners are accepting connections."""
        return bool(self._servers)

    def start(self) -> FakeHub:
        """Start listening (same ports as before after a ``stop()``, so ``url`` stays valid)."""
        if self._servers:
            return self
        hub = _Server((self.host, self._port or 0), self, cdn=False)
        try:
            cdn = _Server((self.host, self._cdn_port or 0), self, cdn=True)
        except OSError:
            hub.server_close()
            raise
        self._port, self._cdn_port = hub.server_address[1], cdn.server_address[1]
        for server in (hub, cdn):
            thread = threading.Thread(
                target=server.serve_forever, kwargs={"poll_interval": 0.05}, name=f"FakeHub:{server.server_address[1]}"
            )
            thread.daemon = True
            thread.start()
            self._servers.append((server, thread))
        return self

    def stop(self) -> None:
        """Stop listening; afterwards connections are refused (repos and logs are kept)."""
        servers, self._servers = self._servers, []
        for server, thread in servers:
            server.shutdown()
            server.server_close()
            thread.join(timeout=5)

    def __enter__(self) -> FakeHub:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # ------------------------------------------------------------------ repo description

    def add_repo(
        self,
        repo_id: str,
        files: Mapping[str, bytes | str],
        revision: str = "main",
        *,
        repo_type: str = "model",
    ) -> str:
        """Add a commit holding exactly ``files`` and point the branch ``revision`` at it; return the commit sha.

        The sha is derived from the contents, so identical file sets give identical shas. If the repo has no
        ``main`` branch yet, ``main`` also points at this first commit.
        """
        if repo_type not in _REPO_TYPES:
            raise ValueError(f"unsupported repo_type {repo_type!r}; expected one of {sorted(_REPO_TYPES)}")
        if not revision or _SHA1_RE.fullmatch(revision):
            raise ValueError(f"revision must be a branch or tag name, got {revision!r}")
        hub_files: dict[str, HubFile] = {}
        for path, content in files.items():
            parts = path.split("/")
            if not path or path.startswith("/") or any(p in ("", ".", "..") for p in parts):
                raise ValueError(f"invalid file path {path!r}")
            data = content.encode() if isinstance(content, str) else bytes(content)
            hub_files[path] = HubFile(path=path, data=data, lfs=self._is_lfs(path, data))
        digest = hashlib.sha1()
        for path in sorted(hub_files):
            digest.update(f"{path}\0{hub_files[path].blob_id}\n".encode())
        sha = digest.hexdigest()
        with self._lock:
            repo = self._repos.setdefault((repo_type, repo_id), _Repo(repo_id, repo_type))
            repo.commits.setdefault(sha, _Commit(sha=sha, files=hub_files, date=_iso(time.time())))
            repo.branches[revision] = sha
            repo.branches.setdefault("main", sha)
            for f in hub_files.values():
                if f.lfs:
                    self._blobs[f.sha256] = f.data
        return sha

    def set_ref(self, repo_id: str, name: str, revision: str, *, tag: bool = False, repo_type: str = "model") -> str:
        """Point branch (or tag) ``name`` at ``revision`` (a commit sha or an existing ref); return the sha."""
        with self._lock:
            repo = self._repos[(repo_type, repo_id)]
            sha = self._resolve(repo, revision)
            if sha is None:
                raise KeyError(f"unknown revision {revision!r} of {repo_id}")
            (repo.tags if tag else repo.branches)[name] = sha
            return sha

    def remove_repo(self, repo_id: str, *, repo_type: str = "model") -> None:
        """Forget a repo (subsequent requests get ``RepoNotFound``)."""
        with self._lock:
            del self._repos[(repo_type, repo_id)]

    def resolve(self, repo_id: str, revision: str = "main", *, repo_type: str = "model") -> str:
        """Commit sha a revision currently resolves to."""
        with self._lock:
            sha = self._resolve(self._repos[(repo_type, repo_id)], revision)
        if sha is None:
            raise KeyError(f"unknown revision {revision!r} of {repo_id}")
        return sha

    def file_url(self, repo_id: str, filename: str, revision: str = "main", *, repo_type: str = "model") -> str:
        """URL of ``/resolve/`` for a file, as ``hf_hub_url`` would build it."""
        prefix = _REPO_TYPES[repo_type]
        return f"{self.url}/{prefix}{repo_id}/resolve/{quote(revision, safe='')}/{quote(filename)}"

    # ------------------------------------------------------------------ test helpers

    def fail_with(self, status: int | None) -> None:
        """Answer every request with HTTP ``status`` (e.g. 503) until called with ``None``."""
        self._fail_status = status

    def clear_log(self) -> None:
        """Forget the requests received so far."""
        with self._lock:
            self.request_log.clear()
            self.requests.clear()

    def count(self, method: str | None = None, path_contains: str = "") -> int:
        """Number of logged requests with this method (any if ``None``) whose path contains ``path_contains``."""
        with self._lock:
            return sum(1 for m, p in self.request_log if (method is None or m == method) and path_contains in p)

    # ------------------------------------------------------------------ internals

    def _is_lfs(self, path: str, data: bytes) -> bool:
        if self.lfs_threshold is not None and len(data) >= self.lfs_threshold:
            return True
        name = path.rsplit("/", 1)[-1]
        return any(fnmatch.fnmatch(name, pat) or fnmatch.fnmatch(path, pat) for pat in self.lfs_patterns)

    @staticmethod
    def _resolve(repo: _Repo, revision: str) -> str | None:
        if revision in repo.branches:
            return repo.branches[revision]
        if revision in repo.tags:
            return repo.tags[revision]
        if revision in repo.commits:
            return revision
        if _SHORT_SHA_RE.fullmatch(revision):
            matches = [sha for sha in repo.commits if sha.startswith(revision)]
            if len(matches) == 1:
                return matches[0]
        return None

    def _match_repo(self, repo_type: str, rest: str) -> tuple[_Repo | None, str]:
        """Longest known repo id that prefixes ``rest`` on a segment boundary, and the remainder."""
        best: _Repo | None = None
        for (rtype, rid), repo in self._repos.items():
            if rtype == repo_type and (rest == rid or rest.startswith(rid + "/")):
                if best is None or len(rid) > len(best.repo_id):
                    best = repo
        return best, (rest[len(best.repo_id) :] if best else rest)

    def _handle(self, handler: _Handler, method: str) -> None:
        split = urlsplit(handler.path)
        path, query = split.path, split.query
        is_cdn = handler.server.is_cdn
        with self._lock:
            self.request_log.append((method, path))
            self.requests.append(LoggedRequest(method, path, query, dict(handler.headers.items()), is_cdn))
        reply = _Reply(handler, head=method == "HEAD")
        try:
            if self._fail_status is not None:
                reply.json(self._fail_status, {"error": "Simulated failure"})
            elif is_cdn:
                self._serve_cdn(reply, path)
            elif path.startswith("/api/"):
                self._serve_api(reply, method, path, query)
            else:
                self._serve_resolve(reply, method, path)
        except (BrokenPipeError, ConnectionResetError):
            pass

    def _serve_cdn(self, reply: _Reply, path: str) -> None:
        sha256 = path.removeprefix("/lfs/")
        with self._lock:
            data = self._blobs.get(sha256)
        if data is None or not path.startswith("/lfs/"):
            reply.json(404, {"error": "Not found"})
            return
        reply.content(data, {"ETag": f'"{sha256}"'})

    def _serve_resolve(self, reply: _Reply, method: str, path: str) -> None:
        rest = path[1:]
        repo_type = "model"
        if rest.startswith("datasets/"):
            repo_type, rest = "dataset", rest[len("datasets/") :]
        with self._lock:
            repo, sub = self._match_repo(repo_type, rest)
            if repo is None or not sub.startswith("/resolve/") or method == "POST":
                if "/resolve/" in path:
                    reply.error(404, "RepoNotFound", "Repository not found")
                else:
                    reply.json(404, {"error": "Not found"})
                return
            rev_raw, _, filename_raw = sub[len("/resolve/") :].partition("/")
            revision, filename = unquote(rev_raw), unquote(filename_raw)
            sha = self._resolve(repo, revision)
            if sha is None:
                reply.error(404, "RevisionNotFound", f"Invalid rev id: {revision}")
                return
            hub_file = repo.commits[sha].files.get(filename)
        if hub_file is None:
            reply.error(404, "EntryNotFound", "Entry not found", {"X-Repo-Commit": sha})
            return
        headers = {"X-Repo-Commit": sha, "ETag": f'"{hub_file.blob_id}"'}
        if hub_file.lfs:
            headers.update({"X-Linked-Etag": f'"{hub_file.sha256}"', "X-Linked-Size": str(hub_file.size)})
            if self.lfs_redirect:
                headers["Location"] = f"{self.cdn_url}/lfs/{hub_file.sha256}?filename={quote(filename, safe='')}"
                reply.send(302, headers, b"")
                return
            headers["ETag"] = f'"{hub_file.sha256}"'
        reply.content(hub_file.data, headers)

    def _serve_api(self, reply: _Reply, method: str, path: str, query: str) -> None:
        if path == "/api/agent-harnesses":  # queried by the client's user-agent builder when telemetry is on
            reply.json(200, {"standardEnvVars": [], "harnesses": {}})
            return
        params = parse_qs(query)
        for repo_type in _REPO_TYPES:
            prefix = f"/api/{repo_type}s/"
            if path.startswith(prefix):
                break
        else:
            reply.json(404, {"error": "Not found"})
            return
        with self._lock:
            repo, sub = self._match_repo(repo_type, path[len(prefix) :])
            if repo is None:
                reply.error(404, "RepoNotFound", "Repository not found")
                return
            parts = sub.split("/")  # sub starts with "/" unless empty
            route = parts[1] if len(parts) > 1 else ""
            if method == "GET" and sub in ("", "/"):
                self._info(reply, repo, "main", params)
            elif method == "GET" and route == "revision" and len(parts) == 3:
                self._info(reply, repo, unquote(parts[2]), params)
            elif method == "GET" and route == "tree" and len(parts) >= 3:
                tree_path = unquote("/".join(parts[3:])).strip("/")
                recursive = params.get("recursive", ["false"])[0].lower() in _TRUE
                self._tree(reply, repo, unquote(parts[2]), tree_path, recursive)
            elif method == "GET" and route == "refs" and len(parts) == 2:
                self._refs(reply, repo, params)
            elif method == "POST" and route == "paths-info" and len(parts) == 3:
                form = parse_qs(reply.read_body().decode())
                self._paths_info(reply, repo, unquote(parts[2]), form.get("paths", []))
            else:
                reply.error(404, "RepoNotFound", "Repository not found")

    def _commit_or_error(self, reply: _Reply, repo: _Repo, revision: str) -> _Commit | None:
        sha = self._resolve(repo, revision)
        if sha is None:
            reply.error(404, "RevisionNotFound", f"Invalid rev id: {revision}")
            return None
        return repo.commits[sha]

    def _info(self, reply: _Reply, repo: _Repo, revision: str, params: dict[str, list[str]]) -> None:
        commit = self._commit_or_error(reply, repo, revision)
        if commit is None:
            return
        blobs = params.get("blobs", ["false"])[0].lower() in _TRUE
        siblings: list[dict[str, Any]] = []
        for f in sorted(commit.files.values(), key=lambda f: f.path):
            sibling: dict[str, Any] = {"rfilename": f.path}
            if blobs:
                sibling.update({"size": f.size, "blobId": f.blob_id})
                if f.lfs:
                    sibling["lfs"] = {"sha256": f.sha256, "size": f.size, "pointerSize": len(f.pointer)}
            siblings.append(sibling)
        first_date = min(c.date for c in repo.commits.values())
        author = repo.repo_id.split("/")[0] if "/" in repo.repo_id else None
        reply.json(
            200,
            {
                "_id": hashlib.sha1(repo.repo_id.encode()).hexdigest()[:24],
                "id": repo.repo_id,
                **({"modelId": repo.repo_id} if repo.repo_type == "model" else {}),
                "author": author,
                "sha": commit.sha,
                "lastModified": commit.date,
                "createdAt": first_date,
                "private": False,
                "disabled": False,
                "gated": False,
                "downloads": 0,
                "likes": 0,
                "tags": [],
                "siblings": siblings,
                "usedStorage": sum(f.size for f in commit.files.values()),
            },
        )

    @staticmethod
    def _file_entry(f: HubFile) -> dict[str, Any]:
        entry: dict[str, Any] = {"type": "file", "oid": f.blob_id, "size": f.size, "path": f.path}
        if f.lfs:
            entry["lfs"] = {"oid": f.sha256, "size": f.size, "pointerSize": len(f.pointer)}
        return entry

    @staticmethod
    def _dir_entry(commit: _Commit, path: str) -> dict[str, Any]:
        return {
            "type": "directory",
            "oid": hashlib.sha1(f"{commit.sha}:{path}".encode()).hexdigest(),
            "size": 0,
            "path": path,
        }

    @staticmethod
    def _dirs(commit: _Commit) -> set[str]:
        dirs: set[str] = set()
        for path in commit.files:
            parts = path.split("/")[:-1]
            dirs.update("/".join(parts[: i + 1]) for i in range(len(parts)))
        return dirs

    def _tree(self, reply: _Reply, repo: _Repo, revision: str, tree_path: str, recursive: bool) -> None:
        commit = self._commit_or_error(reply, repo, revision)
        if commit is None:
            return
        dirs = self._dirs(commit)
        if tree_path and tree_path not in dirs:
            message = f"{tree_path} does not exist on {revision!r}"
            reply.error(404, "EntryNotFound", message, {"X-Repo-Commit": commit.sha})
            return
        base = f"{tree_path}/" if tree_path else ""

        def wanted(path: str) -> bool:
            return path.startswith(base) and (recursive or "/" not in path[len(base) :])

        entries = [self._dir_entry(commit, d) for d in sorted(dirs) if wanted(d)]
        entries += [self._file_entry(f) for p, f in sorted(commit.files.items()) if wanted(p)]
        reply.json(200, entries)

    def _refs(self, reply: _Reply, repo: _Repo, params: dict[str, list[str]]) -> None:
        def refs(names: dict[str, str], kind: str) -> list[dict[str, str]]:
            return [{"name": n, "ref": f"refs/{kind}/{n}", "targetCommit": s} for n, s in sorted(names.items())]

        body: dict[str, Any] = {
            "branches": refs(repo.branches, "heads"),
            "tags": refs(repo.tags, "tags"),
            "converts": [],
        }
        if "include_prs" in params:
            body["pullRequests"] = []
        reply.json(200, body)

    def _paths_info(self, reply: _Reply, repo: _Repo, revision: str, paths: list[str]) -> None:
        commit = self._commit_or_error(reply, repo, revision)
        if commit is None:
            return
        dirs = self._dirs(commit)
        entries: list[dict[str, Any]] = []
        for p in (p.strip("/") for p in paths):
            if p in commit.files:
                entries.append(self._file_entry(commit.files[p]))
            elif p in dirs:
                entries.append(self._dir_entry(commit, p))
        reply.json(200, entries)


class _Reply:
    """Writes responses on a handler (headers only for HEAD), with Range support for content."""

    def __init__(self, handler: _Handler, head: bool) -> None:
        self.handler = handler
        self.head = head

    def read_body(self) -> bytes:
        length = int(self.handler.headers.get("Content-Length") or 0)
        return self.handler.rfile.read(length) if length else b""

    def send(self, status: int, headers: Mapping[str, str], body: bytes) -> None:
        h = self.handler
        h.send_response(status)
        for name, value in headers.items():
            h.send_header(name, value)
        if "Content-Length" not in headers:
            h.send_header("Content-Length", str(len(body)))
        h.send_header("Connection", "close")
        h.end_headers()
        if body and not self.head:
            h.wfile.write(body)

    def json(self, status: int, payload: Any, headers: Mapping[str, str] | None = None) -> None:
        body = json.dumps(payload).encode()
        self.send(status, {"Content-Type": "application/json; charset=utf-8", **(headers or {})}, body)

    def error(self, status: int, code: str, message: str, headers: Mapping[str, str] | None = None) -> None:
        """Hub-style error: ``X-Error-Code``/``X-Error-Message`` headers plus ``{"error": ...}`` body."""
        self.json(status, {"error": message}, {"X-Error-Code": code, "X-Error-Message": message, **(headers or {})})

    def content(self, data: bytes, headers: Mapping[str, str]) -> None:
        """Serve file bytes, honouring a single ``Range: bytes=a-b`` request."""
        base = {"Content-Type": "application/octet-stream", "Accept-Ranges": "bytes", **headers}
        range_header = self.handler.headers.get("Range")
        match = re.fullmatch(r"bytes=(\d*)-(\d*)", range_header.strip()) if range_header else None
        if match is None or match.groups() == ("", ""):
            self.send(200, {**base, "Content-Length": str(len(data))}, data)
            return
        size = len(data)
        first, last = match.groups()
        if first:
            start, end = int(first), min(int(last), size - 1) if last else size - 1
        else:
            start, end = max(size - int(last), 0), size - 1
        if start >= size or start > end:
            self.send(416, {**base, "Content-Range": f"bytes */{size}"}, b"")
            return
        chunk = data[start : end + 1]
        self.send(
            206, {**base, "Content-Range": f"bytes {start}-{end}/{size}", "Content-Length": str(len(chunk))}, chunk
        )
