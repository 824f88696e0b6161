"""The read side of the fake Hub: ``/resolve/``, the CDN, and the repo API that downloads and listings use."""

from __future__ import annotations

import hashlib
from typing import Any
from urllib.parse import parse_qs, quote, unquote

from ._http import Exchange
from ._model import Commit, HubError, HubFile, Repo, User
from ._state import HubState, repo_not_found


def revision_arg(args: list[str]) -> str:
    """The single path argument of ``.../{route}/{revision}``; anything else is an unknown route."""
    if len(args) != 1:
        raise repo_not_found()
    return args[0]


def _file_entry(f: HubFile) -> dict[str, Any]:
    entry: dict[str, Any] = {"type": "file", "oid": f.blob_id, "size": f.size, "path": f.path}
    if f.lfs:
        entry["lfs"] = {"oid": f.sha256, "size": f.size, "pointerSize": len(f.pointer)}
    return entry


def _dir_entry(commit: Commit, path: str) -> dict[str, Any]:
    return {
        "type": "directory",
        "oid": hashlib.sha1(f"{commit.sha}:{path}".encode()).hexdigest(),
        "size": 0,
        "path": path,
    }


def _dirs(commit: Commit) -> set[str]:
    dirs: set[str] = set()
    for path in commit.files:
        parts = path.split("/")[:-1]
        dirs.update("/".join(parts[: i + 1]) for i in range(len(parts)))
    return dirs


def _sibling(f: HubFile, blobs: bool) -> dict[str, Any]:
    sibling: dict[str, Any] = {"rfilename": f.path}
    if blobs:
        sibling.update({"size": f.size, "blobId": f.blob_id})
        if f.lfs:
            sibling["lfs"] = {"sha256": f.sha256, "size": f.size, "pointerSize": len(f.pointer)}
    return sibling


class DownloadRoutes(HubState):
    """Answers ``hf_hub_download``, ``snapshot_download``, ``model_info``, ``list_repo_*`` and ``get_paths_info``."""

    def _agent_harnesses(self, ex: Exchange, caller: User | None) -> None:
        """``GET /api/agent-harnesses``: queried by the client's user-agent builder when telemetry is on."""
        ex.json(200, {"standardEnvVars": [], "harnesses": {}})

    def _serve_cdn_object(self, ex: Exchange) -> None:
        """``GET /lfs/{sha256}`` on the CDN listener: the bytes of an LFS object."""
        sha256 = ex.path.removeprefix("/lfs/")
        with self._lock:
            data = self._blobs.get(sha256) if ex.path.startswith("/lfs/") else None
        if data is None:
            raise HubError(404, "Not found")
        ex.content(data, {"ETag": f'"{sha256}"'})

    def _serve_resolve(self, ex: Exchange, caller: User | None) -> None:
        """``HEAD``/``GET /{repo}/resolve/{revision}/{filename}``; LFS files redirect to the CDN listener."""
        if ex.method not in ("GET", "HEAD") or "/resolve/" not in ex.path:
            raise HubError(404, "Not found")
        repo_type, rest = self._split_repo_type(ex.path, api=False)
        with self._lock:
            repo, sub = self._find_repo(repo_type, rest, caller)
            if not sub.startswith("/resolve/"):
                raise repo_not_found()
            rev_raw, _, filename_raw = sub[len("/resolve/") :].partition("/")
            filename = unquote(filename_raw)
            commit = self._commit_at(repo, unquote(rev_raw))
        hub_file = commit.files.get(filename)
        if hub_file is None:
            raise HubError(404, "Entry not found", "EntryNotFound", {"X-Repo-Commit": commit.sha})
        headers = {"X-Repo-Commit": commit.sha, "ETag": f'"{hub_file.blob_id}"'}
        if hub_file.lfs:
            headers.update({"X-Linked-Etag": f'"{hub_file.sha256}"', "X-Linked-Size": str(hub_file.size)})
            if self.lfs_redirect:
                headers["Location"] = f"{self.cdn_url}/lfs/{hub_file.sha256}?filename={quote(filename, safe='')}"
                ex.send(302, headers, b"")
                return
            headers["ETag"] = f'"{hub_file.sha256}"'
        ex.content(hub_file.data, headers)

    def _info(self, ex: Exchange, repo: Repo, args: list[str], caller: User | None) -> None:
        """``GET /api/{type}s/{repo}[/revision/{revision}]``: repo info with its files (``?blobs=1``: sizes, oids)."""
        commit = self._commit_at(repo, revision_arg(args) if args else "main")
        files = sorted(commit.files.values(), key=lambda f: f.path)
        ex.json(
            200,
            {
                "_id": hashlib.sha1(repo.repo_id.encode()).hexdigest()[:24],
                "id": repo.repo_id,
                **({"modelId": repo.repo_id} if repo.repo_type == "model" else {}),
                "author": repo.namespace if "/" in repo.repo_id else None,
                "sha": commit.sha,
                "lastModified": commit.date,
                "createdAt": min(c.date for c in repo.commits.values()),
                "private": repo.private,
                "disabled": False,
                "gated": False,
                "downloads": 0,
                "likes": 0,
                "tags": [],
                "siblings": [_sibling(f, ex.flag("blobs")) for f in files],
                "usedStorage": sum(f.size for f in files),
            },
        )

    def _tree(self, ex: Exchange, repo: Repo, args: list[str], caller: User | None) -> None:
        """``GET .../tree/{revision}[/{path}][?recursive=1]``: files and folders under ``path``."""
        if not args:
            raise repo_not_found()
        revision, tree_path = args[0], "/".join(args[1:]).strip("/")
        commit = self._commit_at(repo, revision)
        dirs = _dirs(commit)
        if tree_path and tree_path not in dirs:
            message = f"{tree_path} does not exist on {revision!r}"
            raise HubError(404, message, "EntryNotFound", {"X-Repo-Commit": commit.sha})
        base = f"{tree_path}/" if tree_path else ""
        recursive = ex.flag("recursive")

        def wanted(path: str) -> bool:
            return path.startswith(base) and (recursive or "/" not in path[len(base) :])

        entries = [_dir_entry(commit, d) for d in sorted(dirs) if wanted(d)]
        entries += [_file_entry(f) for p, f in sorted(commit.files.items()) if wanted(p)]
        ex.json(200, entries)

    def _refs(self, ex: Exchange, repo: Repo, args: list[str], caller: User | None) -> None:
        """``GET .../refs``: branches and tags (and no pull requests)."""
        if args:
            raise repo_not_found()

        def refs(names: dict[str, str], kind: str) -> list[dict[str, str]]:
            return [{"name": n, "ref": f"refs/{kind}/{n}", "targetCommit": s} for n, s in sorted(names.items())]

        body: dict[str, Any] = {
            "branches": refs(repo.branches, "heads"),
            "tags": refs(repo.tags, "tags"),
            "converts": [],
        }
        if "include_prs" in ex.params:
            body["pullRequests"] = []
        ex.json(200, body)

    def _paths_info(self, ex: Exchange, repo: Repo, args: list[str], caller: User | None) -> None:
        """``POST .../paths-info/{revision}`` (form ``paths=...``): the entries among ``paths`` that exist."""
        commit = self._commit_at(repo, revision_arg(args))
        paths = (p.strip("/") for p in parse_qs(ex.body.decode()).get("paths", []))
        dirs = _dirs(commit)
        entries = [
            _file_entry(commit.files[p]) if p in commit.files else _dir_entry(commit, p)
            for p in paths
            if p in commit.files or p in dirs
        ]
        ex.json(200, entries)

    def _commits(self, ex: Exchange, repo: Repo, args: list[str], caller: User | None) -> None:
        """``GET .../commits/{revision}``: the history from ``revision`` back to the first commit, newest first."""
        commit: Commit | None = self._commit_at(repo, revision_arg(args))
        history = []
        while commit is not None:
            authors = [{"user": commit.author}] if commit.author else []
            history.append(
                {
                    "id": commit.sha,
                    "title": commit.title,
                    "message": commit.message,
                    "authors": authors,
                    "date": commit.date,
                }
            )
            commit = repo.commits[commit.parent] if commit.parent else None
        ex.json(200, history)
