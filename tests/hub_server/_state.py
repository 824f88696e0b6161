"""The state both sides of the fake Hub share, and the lookups the download and upload routes both need."""

from __future__ import annotations

import fnmatch
import hashlib
import itertools
import re
import threading

from ._model import REPO_TYPES, Commit, HubError, HubFile, Repo, User, now, tree_digest

_SHORT_SHA_RE = re.compile(r"[0-9a-f]{7,39}")
_BEARER_RE = re.compile(r"Bearer\s+(\S+)", re.IGNORECASE)


def repo_not_found() -> HubError:
    """What the Hub answers for a repo that does not exist or that the caller may not see."""
    return HubError(404, "Repository not found", "RepoNotFound")


class HubState:
    """Repos, LFS objects, accounts and listener ports of a ``FakeHub``, guarded by one lock."""

    def __init__(self, host: str, lfs_patterns: tuple[str, ...], lfs_threshold: int | None, lfs_redirect: bool) -> None:
        self.host = host
        self.lfs_patterns = tuple(lfs_patterns)
        self.lfs_threshold = lfs_threshold
        self.lfs_redirect = lfs_redirect
        self._repos: dict[tuple[str, str], Repo] = {}
        self._blobs: dict[str, bytes] = {}  # sha256 -> content of every LFS object, served by the CDN listener
        self._users: dict[str, User] = {}  # token -> account
        self._pending_uploads: dict[str, tuple[str, int]] = {}  # upload ticket -> (sha256, size) announced
        self._commit_counter = itertools.count()
        self._lock = threading.RLock()
        self._port: int | None = None
        self._cdn_port: int | None = None

    @property
    def url(self) -> str:
        """Base URL to use as ``HF_ENDPOINT`` (no trailing slash)."""
        if self._port is None:
            raise RuntimeError("FakeHub has never been started")
        return f"http://{self.host}:{self._port}"

    @property
    def cdn_url(self) -> str:
        """Base URL of the listener that serves and receives LFS objects."""
        if self._cdn_port is None:
            raise RuntimeError("FakeHub has never been started")
        return f"http://{self.host}:{self._cdn_port}"

    def _is_lfs(self, path: str, size: int) -> bool:
        """Whether a file is stored with Git LFS: its name matches an LFS pattern, or it is big."""
        if self.lfs_threshold is not None and size >= self.lfs_threshold:
            return True
        name = path.rsplit("/", 1)[-1]
        return any(fnmatch.fnmatch(name, pat) or fnmatch.fnmatch(path, pat) for pat in self.lfs_patterns)

    def _caller(self, authorization: str | None) -> User | None:
        """The account of an ``Authorization: Bearer`` header; ``None`` without one; ``401`` for an unknown token."""
        if not authorization:
            return None
        match = _BEARER_RE.fullmatch(authorization.strip())
        user = self._users.get(match.group(1)) if match else None
        if user is None:
            raise HubError(401, "Invalid credentials in Authorization header")
        return user

    @staticmethod
    def _resolve(repo: Repo, revision: str) -> str | None:
        """The commit sha a branch, tag, full or short sha names; ``None`` if none."""
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

    def _commit_at(self, repo: Repo, revision: str) -> Commit:
        """The commit ``revision`` names, or a ``404 RevisionNotFound``."""
        sha = self._resolve(repo, revision)
        if sha is None:
            raise HubError(404, f"Invalid rev id: {revision}", "RevisionNotFound")
        return repo.commits[sha]

    def _add_commit(
        self,
        repo: Repo,
        branch: str,
        files: dict[str, HubFile],
        *,
        sha: str | None = None,
        title: str = "",
        message: str = "",
        author: str | None = None,
    ) -> Commit:
        """Record a commit of exactly ``files`` on top of ``branch`` (created if new) and move the branch to it.

        Without ``sha`` the commit gets a new one (from its parent, tree, message and a counter), as git would;
        with one, an existing commit of that sha is reused.
        """
        parent = repo.branches.get(branch)
        if sha is None:
            seed = f"{parent}\n{tree_digest(files.values())}\n{title}\n{message}\n{next(self._commit_counter)}"
            sha = hashlib.sha1(seed.encode()).hexdigest()
        commit = repo.commits.setdefault(sha, Commit(sha, files, now(), title, message, author, parent))
        repo.branches[branch] = sha
        self._blobs.update((f.sha256, f.data) for f in files.values() if f.lfs)
        return commit

    def _find_repo(self, repo_type: str, rest: str, caller: User | None) -> tuple[Repo, str]:
        """The longest repo id the caller may see that prefixes ``rest`` on a segment boundary, and the remainder.

        A private repo the caller may not read is answered like a missing one (``404 RepoNotFound``).
        """
        best: Repo | None = None
        for (rtype, rid), repo in self._repos.items():
            if rtype == repo_type and (rest == rid or rest.startswith(rid + "/")):
                if best is None or len(rid) > len(best.repo_id):
                    best = repo
        if best is None or (best.private and (caller is None or not caller.can_read(best))):
            raise repo_not_found()
        return best, rest[len(best.repo_id) :]

    @staticmethod
    def _split_repo_type(path: str, api: bool) -> tuple[str, str]:
        """``(repo_type, rest)`` of ``/api/models/...`` (``api``) or ``/datasets/...``/``/...`` paths."""
        if api:
            for repo_type in REPO_TYPES:
                prefix = f"/api/{repo_type}s/"
                if path.startswith(prefix):
                    return repo_type, path[len(prefix) :]
            raise HubError(404, "Not found")
        rest = path[1:]
        if rest.startswith("datasets/"):
            return "dataset", rest[len("datasets/") :]
        return "model", rest
