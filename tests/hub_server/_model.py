"""What the fake Hub stores (files, commits, repos, users) and the error a route raises."""

from __future__ import annotations

import hashlib
import time
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

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
REPO_TYPES: dict[str, str] = {"model": "", "dataset": "datasets/"}  # repo type -> URL prefix of its pages


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
        return git_blob_sha1(self.pointer if self.lfs else self.data)

    @property
    def etag(self) -> str:
        """ETag the client caches the blob under (sha256 for LFS files, git blob sha1 otherwise).

        It is also the ``oid`` that preupload reports for a file already in the repo, which the client
        compares with its local file to skip unchanged ones.
        """
        return self.sha256 if self.lfs else self.blob_id


@dataclass
class Commit:
    """A snapshot of a repo: every file it holds, and where it comes from."""

    sha: str
    files: dict[str, HubFile]
    date: str
    title: str = ""
    message: str = ""
    author: str | None = None
    parent: str | None = None


@dataclass
class Repo:
    """A model or dataset repo: its commits and the refs pointing at them."""

    repo_id: str
    repo_type: str
    private: bool = False
    commits: dict[str, Commit] = field(default_factory=dict)
    branches: dict[str, str] = field(default_factory=dict)
    tags: dict[str, str] = field(default_factory=dict)

    @property
    def namespace(self) -> str:
        """The user or organisation owning the repo."""
        return self.repo_id.split("/", 1)[0]

    @property
    def web_path(self) -> str:
        """The repo's path on the Hub, as in ``{endpoint}/{web_path}/resolve/...`` (``datasets/`` for datasets)."""
        return REPO_TYPES[self.repo_type] + self.repo_id


@dataclass(frozen=True)
class User:
    """An account holding an access token; it may write to its own namespace and its organisations'."""

    name: str
    token: str
    orgs: tuple[str, ...] = ()
    role: str = "write"

    def can_read(self, repo: Repo) -> bool:
        """Whether the user may see ``repo`` (public repos are visible to anyone)."""
        return not repo.private or repo.namespace in (self.name, *self.orgs)

    def can_write(self, namespace: str) -> bool:
        """Whether the token may create repos and commit under ``namespace``."""
        return self.role == "write" and namespace in (self.name, *self.orgs)


class HubError(Exception):
    """An error answer, written Hub-style (``X-Error-Code``/``X-Error-Message`` headers, ``{"error": ...}`` body).

    ``headers`` and ``body`` add response headers and fields of the JSON body.
    """

    def __init__(
        self,
        status: int,
        message: str,
        code: str | None = None,
        headers: Mapping[str, str] | None = None,
        body: Mapping[str, Any] | None = None,
    ) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.code = code
        self.headers = dict(headers or {})
        self.body = dict(body or {})


def git_blob_sha1(data: bytes) -> str:
    """The git object id of a blob holding ``data``."""
    return hashlib.sha1(b"blob %d\0" % len(data) + data).hexdigest()


def iso(ts: float) -> str:
    """A UTC timestamp as the Hub writes dates."""
    return time.strftime("%Y-%m-%dT%H:%M:%S.000Z", time.gmtime(ts))


def now() -> str:
    """The current time as the Hub writes dates."""
    return iso(time.time())


def is_valid_path(path: str) -> bool:
    """Whether ``path`` is a relative POSIX path without empty, ``.`` or ``..`` segments."""
    return bool(path) and not path.startswith("/") and all(p not in ("", ".", "..") for p in path.split("/"))


def tree_digest(files: Iterable[HubFile]) -> str:
    """sha1 over the sorted (path, blob id) pairs: equal file sets give equal digests."""
    digest = hashlib.sha1()
    for f in sorted(files, key=lambda f: f.path):
        digest.update(f"{f.path}\0{f.blob_id}\n".encode())
    return digest.hexdigest()


def gitattributes(lfs_patterns: Iterable[str]) -> bytes:
    """The ``.gitattributes`` a new repo starts with: its LFS patterns."""
    return "".join(f"{pattern} filter=lfs diff=lfs merge=lfs -text\n" for pattern in lfs_patterns).encode()
