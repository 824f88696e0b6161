"""One cache entry of purified tensors, stored in shards.

A cache entry lives in ``root/<key>/`` and holds ``num_items`` tensors of one shape, split into
shards of ``shard_size`` items. Each shard is a safetensors file (tensor name ``"images"``) and a
``manifest.json`` records the layout plus the sha256 and byte size of every finished shard. All
files are written atomically (temp file in the same folder, fsync, ``os.replace``), so a crash
never leaves a half-written shard visible. A shard whose file is missing, has the wrong size or
checksum, or fails to load is reported missing and never served; so is one whose manifest entry is
malformed, and every shard of a manifest that cannot be read: they are computed again, never an
error. Only safetensors and JSON are read or written; nothing is pickled.

The cache stores what it is given: tensors already at storage precision (``uint8`` levels or
``float16``, see :mod:`dvae_transform.precision`), and gives them back unchanged. Keys come from
:func:`dvae_transform.fingerprint.purification_key`.

Filling an entry from several processes computes each shard once::

    cache = TensorCache(key, num_items=n, item_shape=(3, 32, 32))
    with cache.lock():
        for i in cache.missing_shards():
            cache.write_shard(i, encode(compute(cache.shard_range(i))))
    stored = cache.load()
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import math
import os
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import torch
from filelock import FileLock, Timeout
from safetensors import SafetensorError
from safetensors.torch import load as _load_safetensors
from safetensors.torch import save as _save_safetensors

from ..files import TMP_PREFIX, atomic_write, refuse_link
from ..log import warn
from ..precision import STORAGE_DTYPES
from ..validation import check_choice, check_int

FORMAT = "dvae_transform.cache/1"
MANIFEST = "manifest.json"
TENSOR_NAME = "images"


class CacheUnavailableError(OSError):
    """The cache directory cannot be created or written (read-only, no permission, disk full)."""


class CacheMissError(LookupError):
    """A shard was requested that is not (validly) stored in the cache."""


def default_cache_dir() -> Path:
    """``$DVAE_TRANSFORM_CACHE``, else ``$XDG_CACHE_HOME/dvae_transform``, else ``~/.cache/dvae_transform``."""
    explicit = os.environ.get("DVAE_TRANSFORM_CACHE")
    if explicit:
        return Path(explicit).expanduser()
    xdg = os.environ.get("XDG_CACHE_HOME")
    base = Path(xdg).expanduser() if xdg else Path.home() / ".cache"
    return base / "dvae_transform"


def cache_root(root: str | os.PathLike | None) -> Path:
    """``root``, or :func:`default_cache_dir` when None."""
    return Path(root) if root is not None else default_cache_dir()


@contextlib.contextmanager
def _unavailable_on_oserror(path: Path) -> Iterator[None]:
    """Re-raise any ``OSError`` inside the block as :class:`CacheUnavailableError` naming ``path``."""
    try:
        yield
    except CacheUnavailableError:
        raise
    except OSError as error:
        reason = error.strerror or str(error)
        raise CacheUnavailableError(f"cache directory {path} is not writable: {reason}") from error


def _probe_writable(directory: Path, lock: Path) -> None:
    with _unavailable_on_oserror(directory):
        refuse_link(directory), refuse_link(lock)
        directory.mkdir(parents=True, exist_ok=True)
        with tempfile.NamedTemporaryFile(dir=directory, prefix=TMP_PREFIX, suffix=".probe"):
            pass


def read_manifest_file(path: Path) -> dict[str, Any] | None:
    """The cache manifest at ``path``, or None if it is missing, unreadable or not a cache manifest."""
    try:
        manifest = json.loads(path.read_text())
    except (OSError, ValueError):
        return None
    if not isinstance(manifest, dict) or manifest.get("format") != FORMAT:
        return None
    return manifest


def is_count(value: Any) -> bool:
    """Whether a JSON value is an int >= 0 (not a bool)."""
    return isinstance(value, int) and not isinstance(value, bool) and value >= 0


def shard_entries(shards: Any, num_shards: int) -> dict[int, dict[str, Any]]:
    """The well-formed entries of a manifest's ``shards``, by shard index.

    Well-formed: the key is a shard index in ``[0, num_shards)`` in decimal, the value an object with a
    ``sha256`` hex digest and a ``size`` >= 0. Any other entry (a hand-edited or damaged manifest) counts
    as a missing shard, which is computed again and replaces the entry: never an error.
    """
    entries = {}
    for key, entry in shards.items() if isinstance(shards, dict) else ():
        if not (isinstance(key, str) and key.isdecimal() and int(key) < num_shards and isinstance(entry, dict)):
            continue
        digest, size = entry.get("sha256"), entry.get("size")
        if isinstance(digest, str) and len(digest) == 64 and is_count(size):
            entries[int(key)] = {"sha256": digest, "size": size}
    return entries


def entry_lock(root: Path, key: str) -> FileLock:
    """The inter-process lock of entry ``key`` under ``root``."""
    return FileLock(root / f"{key}.lock", is_singleton=True)


def shard_name(index: int) -> str:
    """The file name of shard ``index``."""
    return f"shard-{index:05d}.safetensors"


def file_signature(stat: os.stat_result) -> tuple[int, int, int, int]:
    """What changes when a file is rewritten, replaced or edited: inode, size and modification/change times."""
    return stat.st_ino, stat.st_size, stat.st_mtime_ns, stat.st_ctime_ns


class TensorCache:
    """One cache entry: ``num_items`` tensors of ``item_shape`` stored in shards under ``root/key/``.

    Shards are written and read at storage precision, ``dtype`` ``"uint8"`` or ``"float16"``. Sizes
    are checked on every read and sha256 checksums on the first read of each shard file by this object.

    Raises:
        CacheUnavailableError: when ``root`` cannot be created or written.
        ValueError: for an unusable key, shape, shard size or dtype.
    """

    def __init__(
        self,
        key: str,
        *,
        num_items: int,
        item_shape: tuple[int, ...],
        shard_size: int = 1024,
        dtype: str = "uint8",
        root: Path | str | None = None,
    ) -> None:
        _check_layout(key, num_items, item_shape, shard_size, dtype)
        self.key = key
        self.num_items = num_items
        self.item_shape = tuple(int(size) for size in item_shape)
        self.shard_size = shard_size
        self.dtype = dtype
        self.root = cache_root(root)
        self.path = self.root / key
        self.num_shards = math.ceil(num_items / shard_size)
        self._lock = entry_lock(self.root, key)
        self._verified: dict[int, tuple[tuple[int, int, int, int], str]] = {}
        _probe_writable(self.path, Path(self._lock.lock_file))
        self._init_manifest()

    def __repr__(self) -> str:
        return (
            f"TensorCache(key={self.key!r}, num_items={self.num_items}, item_shape={self.item_shape}, "
            f"dtype={self.dtype!r}, path={str(self.path)!r})"
        )

    # --- public API

    def lock(self) -> FileLock:
        """Inter-process lock on ``root/<key>.lock``; hold it while filling missing shards."""
        return self._lock

    def shard_range(self, index: int) -> range:
        """Item indices covered by shard ``index``."""
        if not 0 <= index < self.num_shards:
            raise IndexError(f"shard index {index} out of range for {self.num_shards} shards")
        start = index * self.shard_size
        return range(start, min(start + self.shard_size, self.num_items))

    def missing_shards(self) -> list[int]:
        """Shards not validly stored; files of invalid shards are deleted unless another process is filling."""
        entries = self._entries()
        missing = [index for index in range(self.num_shards) if not self._is_valid(index, entries.get(index))]
        self._discard([index for index in missing if (self.path / shard_name(index)).exists()])
        return missing

    def verified_signature(self, index: int) -> tuple[int, int, int, int] | None:
        """The :func:`file_signature` of shard ``index``'s file when this object last checked its checksum (None:
        never): a reader comparing it before each read serves the shard only as checked."""
        verified = self._verified.get(index)
        return None if verified is None else verified[0]

    def is_complete(self) -> bool:
        """Whether every shard is validly stored."""
        return not self.missing_shards()

    def write_shard(self, index: int, stored: torch.Tensor) -> None:
        """Store shard ``index``: ``stored`` of shape ``(len(shard_range(index)), *item_shape)`` and the entry's dtype.

        Raises:
            ValueError: for a wrong shape or dtype, or float16 values outside [0, 1].
            CacheUnavailableError: when the file cannot be written (permissions, disk full).
        """
        data = _save_safetensors({TENSOR_NAME: self._check_stored(index, stored)})
        digest = hashlib.sha256(data).hexdigest()
        path = self.path / shard_name(index)
        with _unavailable_on_oserror(self.path), self._lock:
            self.path.mkdir(parents=True, exist_ok=True)
            atomic_write(path, data)
            entries = self._entries()
            entries[index] = {"sha256": digest, "size": len(data)}
            self._write_manifest(entries)
            self._verified[index] = (file_signature(path.stat()), digest)

    def load_shard(self, index: int) -> torch.Tensor:
        """Shard ``index`` as stored; raises :class:`CacheMissError` if it is not validly stored."""
        self.shard_range(index)  # IndexError for an out-of-range shard
        stored = self._read_shard(index, self._entries().get(index))
        if stored is None:
            self._discard([index])
            raise CacheMissError(f"shard {index} of cache entry {self.path} is missing or invalid")
        return stored

    def load(self) -> torch.Tensor:
        """All items as stored, ``(num_items, *item_shape)``; raises :class:`CacheMissError` if incomplete."""
        out = torch.empty((self.num_items, *self.item_shape), dtype=STORAGE_DTYPES[self.dtype])
        for index in range(self.num_shards):
            items = self.shard_range(index)
            out[items.start : items.stop] = self.load_shard(index)
        return out

    # --- manifest

    def _layout(self) -> dict[str, Any]:
        return {
            "format": FORMAT,
            "key": self.key,
            "num_items": self.num_items,
            "item_shape": list(self.item_shape),
            "dtype": self.dtype,
            "shard_size": self.shard_size,
        }

    def _read_manifest(self) -> dict[str, Any] | None:
        manifest = read_manifest_file(self.path / MANIFEST)
        if manifest is None or not isinstance(manifest.get("shards"), dict):
            return None
        if any(manifest.get(name) != value for name, value in self._layout().items()):
            return None
        return manifest

    def _entries(self) -> dict[int, dict[str, Any]]:
        manifest = self._read_manifest()
        return {} if manifest is None else shard_entries(manifest["shards"], self.num_shards)

    def _write_manifest(self, entries: dict[int, dict[str, Any]]) -> None:
        shards = {str(index): entries[index] for index in sorted(entries)}
        text = json.dumps({**self._layout(), "shards": shards}, indent=1)
        atomic_write(self.path / MANIFEST, text.encode())

    def _init_manifest(self) -> None:
        """Write an empty manifest, dropping shards of a different layout stored under the same key."""
        if self._read_manifest() is not None:
            return
        with _unavailable_on_oserror(self.path), self._lock:
            if self._read_manifest() is not None:
                return
            for stale in self.path.glob("shard-*.safetensors"):
                stale.unlink()
            self._write_manifest({})

    # --- shard validation

    def _read_shard(self, index: int, entry: dict[str, Any] | None) -> torch.Tensor | None:
        """The stored tensor of shard ``index`` if its file matches ``entry`` and loads, else None."""
        if entry is None:
            return None
        try:
            with open(self.path / shard_name(index), "rb") as handle:
                signature = file_signature(os.fstat(handle.fileno()))
                data = handle.read()
        except OSError:  # missing, or not a readable file
            return None
        if len(data) != entry["size"]:
            return None
        if self._verified.get(index) != (signature, entry["sha256"]):
            if hashlib.sha256(data).hexdigest() != entry["sha256"]:
                return None
        try:
            stored = _load_safetensors(data)[TENSOR_NAME]
        except (SafetensorError, KeyError):
            return None
        if stored.dtype != STORAGE_DTYPES[self.dtype] or tuple(stored.shape) != self._shard_shape(index):
            return None
        self._verified[index] = (signature, entry["sha256"])
        return stored

    def _is_valid(self, index: int, entry: dict[str, Any] | None) -> bool:
        if entry is None:
            return False
        try:
            stat = (self.path / shard_name(index)).stat()
        except FileNotFoundError:
            return False
        if stat.st_size != entry["size"]:
            return False
        if self._verified.get(index) == (file_signature(stat), entry["sha256"]):
            return True
        return self._read_shard(index, entry) is not None

    def _discard(self, indices: list[int]) -> None:
        """Delete invalid shard files, unless another process holds the lock (it may be writing them)."""
        if not indices:
            return
        try:
            self._lock.acquire(timeout=0)
        except Timeout:
            return
        try:
            with _unavailable_on_oserror(self.path):
                self._discard_locked(indices)
        finally:
            self._lock.release()

    def _discard_locked(self, indices: list[int]) -> None:
        entries = self._entries()
        bad = [index for index in indices if not self._is_valid(index, entries.get(index))]
        for index in bad:
            (self.path / shard_name(index)).unlink(missing_ok=True)
            self._verified.pop(index, None)
        if any(index in entries for index in bad):
            self._write_manifest({index: entry for index, entry in entries.items() if index not in bad})

    # --- stored values

    def _shard_shape(self, index: int) -> tuple[int, ...]:
        return (len(self.shard_range(index)), *self.item_shape)

    def _check_stored(self, index: int, stored: torch.Tensor) -> torch.Tensor:
        expected = self._shard_shape(index)
        if not isinstance(stored, torch.Tensor):
            raise TypeError(f"write_shard: expected a torch.Tensor, got {type(stored).__name__}")
        if tuple(stored.shape) != expected:
            raise ValueError(f"write_shard: shard {index} needs values of shape {expected}, got {tuple(stored.shape)}")
        if stored.dtype != STORAGE_DTYPES[self.dtype]:
            raise ValueError(f"write_shard: this entry stores dtype {self.dtype}, got {stored.dtype}")
        stored = stored.detach().cpu().contiguous()
        if stored.is_floating_point() and stored.numel():
            low, high = (bound.item() for bound in torch.aminmax(stored.float()))  # NaN fails the test
            if not (low >= 0 and high <= 1):
                raise ValueError(f"write_shard: values must lie in [0, 1], got range [{low}, {high}]")
        return stored


def _check_layout(key: str, num_items: int, item_shape: tuple[int, ...], shard_size: int, dtype: str) -> None:
    if not key or key.startswith(".") or any(not (char.isalnum() or char in "._-") for char in key):
        raise ValueError(f"cache key must be a non-empty name of letters, digits, '.', '_' or '-', got {key!r}")
    check_int(num_items, "num_items", low=0)
    if any(size < 0 for size in item_shape):
        raise ValueError(f"item_shape must hold sizes >= 0, got {tuple(item_shape)}")
    check_int(shard_size, "shard_size", low=1)
    check_choice(dtype, "dtype", STORAGE_DTYPES)


def open_cache(
    key: str,
    *,
    num_items: int,
    item_shape: tuple[int, ...],
    shard_size: int = 1024,
    dtype: str = "uint8",
    root: Path | str | None = None,
) -> TensorCache | None:
    """A :class:`TensorCache`, or None with one ``RuntimeWarning`` when the cache directory is not writable."""
    try:
        return TensorCache(
            key, num_items=num_items, item_shape=item_shape, shard_size=shard_size, dtype=dtype, root=root
        )
    except CacheUnavailableError as error:
        warn(f"dvae_transform: {error}; continuing without a cache", RuntimeWarning)
        return None
