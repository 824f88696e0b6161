"""The write side of the fake Hub: accounts, repo creation, preupload, Git LFS uploads and commits.

It speaks the protocol of ``huggingface_hub``'s HTTP upload path (``create_repo``, ``upload_folder`` /
``create_commit`` / ``push_to_hub`` with ``HF_HUB_DISABLE_XET=1``):

1. ``POST /api/repos/create`` makes the repo, with a first commit holding ``.gitattributes`` (``409`` if it exists);
2. ``POST /api/validate-yaml`` checks a ``README.md``'s metadata block;
3. ``POST /api/{type}s/{repo}/preupload/{revision}`` tells, per file, ``uploadMode`` (``lfs`` for LFS patterns and
   big files, ``regular`` otherwise), ``shouldIgnore`` (``.gitignore``) and the ``oid`` of the file already there;
4. ``POST /{repo}.git/info/lfs/objects/batch`` hands out, per new LFS object, an upload URL on the CDN listener
   (``PUT``; the content must have the announced size and sha256) and a verify URL;
5. ``POST /api/{type}s/{repo}/commit/{branch}`` (NDJSON: ``header``, ``file``, ``lfsFile``, ``deletedFile``,
   ``deletedFolder``) makes a new commit on the branch and moves the branch to it.

Writes need ``Authorization: Bearer <token>`` of an account (``FakeHub.add_user``) with the ``write`` role that
owns the repo's namespace or belongs to it as an organisation: ``401`` without a valid token, ``403`` without rights.
"""

from __future__ import annotations

import base64
import binascii
import fnmatch
import hashlib
import json
import re
import secrets
from typing import Any

import yaml

from ._downloads import revision_arg
from ._http import Exchange
from ._model import REPO_TYPES, HubError, HubFile, Repo, User, gitattributes, is_valid_path
from ._state import HubState

_LFS_JSON = {"Content-Type": "application/vnd.git-lfs+json"}
_OID_RE = re.compile(r"[0-9a-f]{64}")
_REPO_NAME_RE = re.compile(r"[A-Za-z0-9](?:[A-Za-z0-9._-]{0,94}[A-Za-z0-9])?")
_FRONT_MATTER_RE = re.compile(r"\A\s*---\s*\n(.*?)\n---\s*(?:\n|\Z)", re.DOTALL)


def require_writer(caller: User | None, namespace: str) -> User:
    """The caller, if its token may write under ``namespace``: ``401`` without a token, ``403`` without rights."""
    if caller is None:
        raise HubError(401, "You must be authenticated to write to the Hub (Authorization: Bearer <token>)")
    if not caller.can_write(namespace):
        reason = "a read-only token" if caller.role != "write" else f"not a member of {namespace!r}"
        raise HubError(403, f"You don't have the rights to write to {namespace!r} ({caller.name}: {reason})")
    return caller


def is_ignored(path: str, gitignore: str | None) -> bool:
    """Whether a simple ``.gitignore`` ignores ``path``.

    One glob a line, ``#`` comments; a trailing ``/`` matches folders only, a ``/`` inside anchors the glob at the
    repo root, otherwise it matches any file or folder name. ``!`` negations are not supported (skipped).
    """
    parts = path.split("/")
    prefixes = ["/".join(parts[: i + 1]) for i in range(len(parts))]  # enclosing folders, then the file
    for line in (gitignore or "").splitlines():
        glob = line.strip()
        if not glob or glob.startswith(("#", "!")):
            continue
        anchored, folders_only, glob = "/" in glob.rstrip("/"), glob.endswith("/"), glob.strip("/")
        for candidate in prefixes[:-1] if folders_only else prefixes:
            if fnmatch.fnmatchcase(candidate if anchored else candidate.rsplit("/", 1)[-1], glob):
                return True
    return False


def _metadata_errors(content: Any) -> list[str]:
    """What is wrong with a model card's YAML metadata block (none if it has no block)."""
    if not isinstance(content, str):
        return ["content must be a string"]
    match = _FRONT_MATTER_RE.match(content)
    if match is None:
        return []
    try:
        metadata = yaml.safe_load(match.group(1))
    except yaml.YAMLError as error:
        return [f"invalid YAML: {error}"]
    return [] if metadata is None or isinstance(metadata, dict) else ["the metadata must be a YAML mapping"]


def _checked_path(value: dict[str, Any]) -> str:
    path = value.get("path")
    if not isinstance(path, str) or not is_valid_path(path.rstrip("/")):
        raise HubError(400, f"Invalid path in commit operation: {path!r}")
    return path.rstrip("/")


def _parse_commit(body: bytes) -> tuple[dict[str, Any], list[tuple[str, dict[str, Any]]]]:
    """The header and operations of an NDJSON commit payload (one ``{"key": ..., "value": ...}`` a line)."""
    try:
        items = [json.loads(line) for line in body.decode().splitlines() if line.strip()]
    except (UnicodeDecodeError, json.JSONDecodeError) as error:
        raise HubError(400, f"Invalid NDJSON commit payload: {error}") from None
    if not all(isinstance(item, dict) and isinstance(item.get("value"), dict) for item in items):
        raise HubError(400, 'Every commit line must be {"key": ..., "value": {...}}')
    if not items or items[0].get("key") != "header":
        raise HubError(400, "A commit payload starts with its header line")
    return items[0]["value"], [(item.get("key"), item["value"]) for item in items[1:]]


class UploadRoutes(HubState):
    """Answers ``whoami``, ``create_repo``, ``upload_folder``/``create_commit`` and their LFS uploads.

    Routes taking a ``repo`` run under the hub's lock; ``_receive_lfs_object`` takes it itself.
    """

    # ------------------------------------------------------------------ accounts and repos

    def _whoami(self, ex: Exchange, caller: User | None) -> None:
        """``GET /api/whoami-v2``: the token's account (``401`` without a token)."""
        if caller is None:
            raise HubError(401, "You must be authenticated (Authorization: Bearer <token>)")
        orgs = [{"type": "org", "name": org, "fullname": org, "roleInOrg": caller.role} for org in caller.orgs]
        token = {"displayName": f"{caller.name}-token", "role": caller.role}
        ex.json(
            200,
            {
                "type": "user",
                "id": hashlib.sha1(caller.name.encode()).hexdigest()[:24],
                "name": caller.name,
                "fullname": caller.name,
                "isPro": False,
                "orgs": orgs,
                "auth": {"type": "access_token", "accessToken": token},
            },
        )

    def _create_repo(self, ex: Exchange, caller: User | None) -> None:
        """``POST /api/repos/create`` (``{"name", "organization", "type", "visibility"}``): a new repo or ``409``."""
        payload = ex.json_body()
        if not isinstance(payload, dict):
            raise HubError(400, "Expected a JSON object")
        repo_type, name = payload.get("type") or "model", payload.get("name")
        if repo_type not in REPO_TYPES:
            raise HubError(400, f"FakeHub has no {repo_type!r} repos; it serves {sorted(REPO_TYPES)}")
        if not isinstance(name, str) or not _REPO_NAME_RE.fullmatch(name):
            raise HubError(400, f"Invalid repo name {name!r}")
        namespace = payload.get("organization") or (caller.name if caller else "")
        user = require_writer(caller, namespace)
        private = payload.get("visibility") == "private" or payload.get("private") is True
        repo = Repo(f"{namespace}/{name}", repo_type, private=private)
        url = f"{self.url}/{repo.web_path}"
        with self._lock:
            if (repo_type, repo.repo_id) in self._repos:  # the client's exist_ok reads the url of this answer
                raise HubError(409, f"You already created this {repo_type} repo", body={"url": url})
            self._repos[(repo_type, repo.repo_id)] = repo
            attributes = HubFile(".gitattributes", gitattributes(self.lfs_patterns), lfs=False)
            self._add_commit(repo, "main", {attributes.path: attributes}, title="initial commit", author=user.name)
        ex.json(200, {"url": url, "name": repo.repo_id, "id": hashlib.sha1(repo.repo_id.encode()).hexdigest()[:24]})

    def _validate_yaml(self, ex: Exchange, caller: User | None) -> None:
        """``POST /api/validate-yaml`` (``{"content", "repoType"}``): ``400`` with ``errors`` for bad metadata."""
        payload = ex.json_body()
        errors = _metadata_errors(payload.get("content") if isinstance(payload, dict) else None)
        ex.json(400 if errors else 200, {"errors": [{"message": e} for e in errors], "warnings": []})

    # ------------------------------------------------------------------ preupload and LFS

    def _preupload(self, ex: Exchange, repo: Repo, args: list[str], caller: User | None) -> None:
        """``POST .../preupload/{revision}`` (``{"files": [{"path", "sample", "size"}], "gitIgnore"?}``)."""
        require_writer(caller, repo.namespace)
        commit = self._commit_at(repo, revision_arg(args))
        payload = ex.json_body()
        entries = payload.get("files") if isinstance(payload, dict) else None
        if not isinstance(entries, list):
            raise HubError(400, 'preupload expects {"files": [{"path", "sample", "size"}, ...]}')
        gitignore = payload.get("gitIgnore")
        if gitignore is None and ".gitignore" in commit.files:
            gitignore = commit.files[".gitignore"].data.decode(errors="replace")
        ex.json(
            200,
            {
                "files": [self._upload_mode(entry, commit.files, gitignore) for entry in entries],
                "commitOid": commit.sha,
            },
        )

    def _upload_mode(self, entry: Any, files: dict[str, HubFile], gitignore: str | None) -> dict[str, Any]:
        """One file's preupload answer; ``oid`` (as the client computes it) if the revision already has it."""
        path, size = (entry.get("path"), entry.get("size")) if isinstance(entry, dict) else (None, None)
        if not isinstance(path, str) or not is_valid_path(path) or type(size) is not int or size < 0:
            raise HubError(400, f"Invalid preupload entry {entry!r}")
        answer = {
            "path": path,
            "uploadMode": "lfs" if self._is_lfs(path, size) else "regular",
            "shouldIgnore": is_ignored(path, gitignore),
        }
        return {**answer, "oid": files[path].etag} if path in files else answer

    def _lfs_batch(self, ex: Exchange, repo: Repo, caller: User | None) -> None:
        """``POST /{repo}.git/info/lfs/objects/batch``: upload (and verify) actions for the objects not stored yet."""
        require_writer(caller, repo.namespace)
        payload = ex.json_body()
        if not isinstance(payload, dict) or payload.get("operation") != "upload":
            raise HubError(422, "FakeHub's LFS batch API only handles uploads")
        objects = payload.get("objects")
        if not isinstance(objects, list) or not all(isinstance(obj, dict) for obj in objects):
            raise HubError(422, 'Expected "objects": [{"oid", "size"}, ...]')
        answers = [self._batch_answer(repo, obj.get("oid"), obj.get("size")) for obj in objects]
        ex.json(200, {"transfer": "basic", "objects": answers, "hash_algo": "sha256"}, _LFS_JSON)

    def _batch_answer(self, repo: Repo, oid: Any, size: Any) -> dict[str, Any]:
        """Actions for one object: none if stored already, else a one-time upload URL and the verify URL."""
        if not isinstance(oid, str) or not _OID_RE.fullmatch(oid) or type(size) is not int or size < 0:
            error = {"code": 422, "message": f"Invalid object: oid {oid!r}, size {size!r}"}
            return {"oid": str(oid), "size": size if type(size) is int else 0, "error": error}
        stored = self._blobs.get(oid)
        if stored is not None:
            if len(stored) == size:
                return {"oid": oid, "size": size}
            return {"oid": oid, "size": size, "error": {"code": 422, "message": f"{oid} has {len(stored)} bytes"}}
        ticket = secrets.token_urlsafe(16)
        self._pending_uploads[ticket] = (oid, size)
        upload = {"href": f"{self.cdn_url}/lfs-upload/{ticket}", "expires_in": 3600}
        verify = {"href": f"{self.url}/{repo.web_path}.git/info/lfs/objects/verify"}
        return {"oid": oid, "size": size, "authenticated": True, "actions": {"upload": upload, "verify": verify}}

    def _receive_lfs_object(self, ex: Exchange) -> None:
        """``PUT /lfs-upload/{ticket}`` on the CDN listener: stored only with the announced size and sha256."""
        ticket = ex.path.removeprefix("/lfs-upload/")
        with self._lock:
            pending = self._pending_uploads.get(ticket)
        if pending is None:
            raise HubError(404, "Unknown or already used upload URL")
        oid, size = pending
        if len(ex.body) != size:
            raise HubError(400, f"Upload of {oid} announced {size} bytes, received {len(ex.body)}")
        actual = hashlib.sha256(ex.body).hexdigest()
        if actual != oid:
            raise HubError(400, f"sha256 mismatch: the upload announced {oid}, its content hashes to {actual}")
        with self._lock:
            self._blobs[oid] = ex.body
            self._pending_uploads.pop(ticket, None)
        ex.send(200, {"ETag": f'"{hashlib.md5(ex.body).hexdigest()}"'}, b"")

    def _lfs_verify(self, ex: Exchange, repo: Repo, caller: User | None) -> None:
        """``POST /{repo}.git/info/lfs/objects/verify`` (``{"oid", "size"}``): ``404`` unless the object is stored."""
        require_writer(caller, repo.namespace)
        payload = ex.json_body()
        oid, size = (payload.get("oid"), payload.get("size")) if isinstance(payload, dict) else (None, None)
        stored = self._blobs.get(oid) if isinstance(oid, str) else None
        if stored is None:
            raise HubError(404, f"LFS object {oid} was not uploaded (or its upload was rejected)")
        if len(stored) != size:
            raise HubError(422, f"LFS object {oid} has {len(stored)} bytes, not {size}")
        ex.json(200, {"success": True}, _LFS_JSON)

    # ------------------------------------------------------------------ commits

    def _commit(self, ex: Exchange, repo: Repo, args: list[str], caller: User | None) -> None:
        """``POST .../commit/{branch}`` (NDJSON): apply the operations to the branch head as one new commit."""
        branch = revision_arg(args)
        user = require_writer(caller, repo.namespace)
        if ex.flag("create_pr"):
            raise HubError(400, "FakeHub does not open pull requests (create_pr)")
        header, operations = _parse_commit(ex.body)
        if branch not in repo.branches:
            raise HubError(404, f"Invalid rev id: {branch} is not a branch", "RevisionNotFound")
        head = repo.commits[repo.branches[branch]]
        if header.get("parentCommit") not in (None, head.sha):
            raise HubError(412, "A commit has happened since. Please refresh and try again.")
        files = dict(head.files)
        for key, value in operations:
            self._apply(files, key, value)
        commit = self._add_commit(
            repo,
            branch,
            files,
            title=str(header.get("summary") or ""),
            message=str(header.get("description") or ""),
            author=user.name,
        )
        commit_url = f"{self.url}/{repo.web_path}/commit/{commit.sha}"
        ex.json(200, {"success": True, "commitOid": commit.sha, "commitUrl": commit_url, "hookOutput": ""})

    def _apply(self, files: dict[str, HubFile], key: Any, value: dict[str, Any]) -> None:
        """Apply one commit operation to ``files``."""
        path = _checked_path(value)
        if key == "file":
            files[path] = HubFile(path, _file_content(value), lfs=False)
        elif key == "lfsFile":
            files[path] = HubFile(path, self._lfs_content(value), lfs=True)
        elif key == "deletedFile":
            if files.pop(path, None) is None:
                raise HubError(404, f"A file with this name doesn't exist: {path}", "EntryNotFound")
        elif key == "deletedFolder":
            inside = [p for p in files if p.startswith(path + "/")]
            if not inside:
                raise HubError(404, f"A folder with this name doesn't exist: {path}", "EntryNotFound")
            for p in inside:
                del files[p]
        else:
            raise HubError(400, f"Unknown commit operation {key!r}")

    def _lfs_content(self, value: dict[str, Any]) -> bytes:
        """The stored object an ``lfsFile`` operation points at; ``400`` if it was never uploaded."""
        oid, size = value.get("oid"), value.get("size")
        if value.get("algo", "sha256") != "sha256" or not isinstance(oid, str):
            raise HubError(400, f"lfsFile {value.get('path')!r}: expected a sha256 oid")
        data = self._blobs.get(oid)
        if data is None:
            raise HubError(400, f"lfsFile {value.get('path')!r}: LFS object {oid} was not uploaded")
        if size is not None and size != len(data):
            raise HubError(400, f"lfsFile {value.get('path')!r}: LFS object {oid} has {len(data)} bytes, not {size}")
        return data

    def _no_xet(self, ex: Exchange, repo: Repo, args: list[str], caller: User | None) -> None:
        """``GET .../xet-{read,write}-token/...``: FakeHub has no Xet storage, so say how to avoid it."""
        raise HubError(501, "FakeHub speaks the Git LFS protocol only, not Xet: set HF_HUB_DISABLE_XET=1")


def _file_content(value: dict[str, Any]) -> bytes:
    """The bytes of a ``file`` operation (``encoding``: ``base64`` or ``utf-8``)."""
    content, encoding = value.get("content"), value.get("encoding", "utf-8")
    if not isinstance(content, str) or encoding not in ("base64", "utf-8"):
        raise HubError(400, f"file {value.get('path')!r}: expected string content in base64 or utf-8")
    try:
        return base64.b64decode(content, validate=True) if encoding == "base64" else content.encode()
    except binascii.Error as error:
        raise HubError(400, f"file {value.get('path')!r}: invalid base64 ({error})") from None
