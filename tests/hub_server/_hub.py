"""``FakeHub``: the listeners, the Python API that describes repos and accounts, and the request router."""

from __future__ import annotations

import hashlib
import re
import threading
from collections.abc import Callable, Mapping
from urllib.parse import quote, unquote

from ._downloads import DownloadRoutes
from ._http import Exchange, LoggedRequest, Server
from ._model import DEFAULT_LFS_PATTERNS, REPO_TYPES, HubError, HubFile, Repo, User, is_valid_path, tree_digest
from ._state import repo_not_found
from ._uploads import UploadRoutes

_SHA1_RE = re.compile(r"[0-9a-f]{40}")
_LFS_API_RE = re.compile(r"/(?P<dataset>datasets/)?(?P<repo>.+)\.git/info/lfs/objects/(?P<action>batch|verify)")

_AccountRoute = Callable[["FakeHub", Exchange, "User | None"], None]
_RepoRoute = Callable[["FakeHub", Exchange, Repo, "list[str]", "User | None"], None]

_ACCOUNT_ROUTES: dict[tuple[str, str], _AccountRoute] = {
    ("GET", "/api/whoami-v2"): UploadRoutes._whoami,
    ("POST", "/api/repos/create"): UploadRoutes._create_repo,
    ("POST", "/api/validate-yaml"): UploadRoutes._validate_yaml,
    ("GET", "/api/agent-harnesses"): DownloadRoutes._agent_harnesses,
}
# (method, first path segment after the repo id) -> route; the remaining segments are its arguments.
_REPO_ROUTES: dict[tuple[str, str], _RepoRoute] = {
    ("GET", ""): DownloadRoutes._info,
    ("GET", "revision"): DownloadRoutes._info,
    ("GET", "tree"): DownloadRoutes._tree,
    ("GET", "refs"): DownloadRoutes._refs,
    ("GET", "commits"): DownloadRoutes._commits,
    ("POST", "paths-info"): DownloadRoutes._paths_info,
    ("POST", "preupload"): UploadRoutes._preupload,
    ("POST", "commit"): UploadRoutes._commit,
    ("GET", "xet-read-token"): UploadRoutes._no_xet,
    ("GET", "xet-write-token"): UploadRoutes._no_xet,
}


class FakeHub(DownloadRoutes, UploadRoutes):
    """Threaded HTTP server emulating the Hub endpoints ``huggingface_hub`` uses to read and write model repos.

    Args:
        host: interface to bind (the port is picked at random on first ``start()`` and kept across restarts).
        lfs_patterns: fnmatch patterns (on the file name and the full path) of files stored as LFS files.
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
        super().__init__(host, lfs_patterns, lfs_threshold, lfs_redirect)
        self.request_log: list[tuple[str, str]] = []
        self.requests: list[LoggedRequest] = []
        self._fail_status: int | None = None
        self._servers: list[tuple[Server, threading.Thread]] = []

    # ------------------------------------------------------------------ lifecycle

    @property
    def is_running(self) -> bool:
        """Whether the listeners are accepting connections."""
        return bool(self._servers)

    def start(self) -> FakeHub:
        """Start listening (same ports as before after a ``stop()``, so ``url`` stays valid)."""
        if self._servers:
            return self
        hub = Server((self.host, self._port or 0), self, cdn=False)
        try:
            cdn = Server((self.host, self._cdn_port or 0), self, cdn=True)
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

    # ------------------------------------------------------------------ repos and accounts

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
        if repo_type not in REPO_TYPES:
            raise ValueError(f"unsupported repo_type {repo_type!r}; expected one of {sorted(REPO_TYPES)}")
        if not revision or _SHA1_RE.fullmatch(revision):
            raise ValueError(f"revision must be a branch or tag name, got {revision!r}")
        hub_files: dict[str, HubFile] = {}
        for path, content in files.items():
            if not is_valid_path(path):
                raise ValueError(f"invalid file path {path!r}")
            data = content.encode() if isinstance(content, str) else bytes(content)
            hub_files[path] = HubFile(path=path, data=data, lfs=self._is_lfs(path, len(data)))
        with self._lock:
            repo = self._repos.setdefault((repo_type, repo_id), Repo(repo_id, repo_type))
            sha = tree_digest(hub_files.values())
            self._add_commit(repo, revision, hub_files, sha=sha, title=f"Add {len(hub_files)} file(s)")
            repo.branches.setdefault("main", sha)
        return sha

    def add_user(self, name: str, *, orgs: tuple[str, ...] = (), role: str = "write", token: str | None = None) -> str:
        """Create an account that may write under ``name`` and ``orgs`` (``role="read"``: read only); return its token.

        Pass the token as ``token=`` or ``HF_TOKEN``; ``whoami`` answers with this account.
        """
        if role not in ("read", "write"):
            raise ValueError(f"role must be 'read' or 'write', got {role!r}")
        token = token or "hf_" + hashlib.sha1(f"{name}:{role}:{orgs}".encode()).hexdigest()[:34]
        with self._lock:
            self._users[token] = User(name, token, tuple(orgs), role)
        return token

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

    def files(self, repo_id: str, revision: str = "main", *, repo_type: str = "model") -> dict[str, bytes]:
        """The exact contents of every file of a revision, by path (what a commit stored)."""
        with self._lock:
            commit = self._repos[(repo_type, repo_id)].commits[self.resolve(repo_id, revision, repo_type=repo_type)]
        return {path: f.data for path, f in sorted(commit.files.items())}

    def file_url(self, repo_id: str, filename: str, revision: str = "main", *, repo_type: str = "model") -> str:
        """URL of ``/resolve/`` for a file, as ``hf_hub_url`` would build it."""
        prefix = REPO_TYPES[repo_type]
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

    # ------------------------------------------------------------------ routing

    def _handle(self, ex: Exchange) -> None:
        """Log a request and answer it; a ``HubError`` becomes a Hub-style error response."""
        with self._lock:
            self.request_log.append((ex.method, ex.path))
            self.requests.append(ex.logged())
        try:
            try:
                if self._fail_status is not None:
                    raise HubError(self._fail_status, "Simulated failure")
                self._route(ex)
            except HubError as error:
                ex.error(error)
        except (BrokenPipeError, ConnectionResetError):
            pass

    def _route(self, ex: Exchange) -> None:
        if ex.cdn:
            (self._receive_lfs_object if ex.method == "PUT" else self._serve_cdn_object)(ex)
            return
        caller = self._caller(ex.headers.get("Authorization"))
        account_route = _ACCOUNT_ROUTES.get((ex.method, ex.path))
        lfs_api = _LFS_API_RE.fullmatch(ex.path) if ex.method == "POST" else None
        if account_route is not None:
            account_route(self, ex, caller)
        elif ex.path.startswith("/api/"):
            self._route_repo_api(ex, caller)
        elif lfs_api is not None:
            self._route_lfs_api(ex, lfs_api, caller)
        else:
            self._serve_resolve(ex, caller)

    def _route_repo_api(self, ex: Exchange, caller: User | None) -> None:
        """``/api/{models,datasets}/{repo_id}/{route}/{args...}``."""
        repo_type, rest = self._split_repo_type(ex.path, api=True)
        with self._lock:
            repo, sub = self._find_repo(repo_type, rest, caller)
            route, *args = [unquote(part) for part in sub.split("/")[1:]] or [""]
            handler = _REPO_ROUTES.get((ex.method, route))
            if handler is None:
                raise repo_not_found()
            handler(self, ex, repo, args, caller)

    def _route_lfs_api(self, ex: Exchange, match: re.Match[str], caller: User | None) -> None:
        """``POST /[datasets/]{repo_id}.git/info/lfs/objects/{batch,verify}``."""
        repo_type = "dataset" if match["dataset"] else "model"
        with self._lock:
            repo, sub = self._find_repo(repo_type, match["repo"], caller)
            if sub:
                raise repo_not_found()
            (self._lfs_batch if match["action"] == "batch" else self._lfs_verify)(ex, repo, caller)
