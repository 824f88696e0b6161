"""On-disk cache of purified tensors.

A cache entry lives in ``root/<key>/`` and holds ``num_items`` tensors of one shape, split into
shards of ``shard_size`` items. Each shard is a safetensors file (tensor name ``"images"``) and a
``manifest.json`` records the layout plus the sha256 and byte size of every finished shard. All
files are written atomically (temp file in the same folder, fsync, ``os.replace``), so a crash
never leaves a half-written shard visible. A shard whose file is missing, has the wrong size or
checksum, or fails to load is reported missing and never served. Only safetensors and JSON are
read or written; nothing is pickled.

Keys come from :func:`fingerprint`; the key of a purification is
``fingerprint(input data identity, weights hash, settings)``.

Filling an entry from several processes computes each shard once::

    cache = TensorCache(key, num_items=n, item_shape=(3, 32, 32))
    with cache.lock():
        for i in cache.missing_shards():
            cache.write_shard(i, compute(cache.shard_range(i)))
    images = cache.load()

:func:`cache_info` and :func:`clear_cache` list and remove entries (they back ``dvae-purify cache``).
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import math
import os
import shutil
import tempfile
import warnings
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np
import torch
from filelock import FileLock, Timeout
from safetensors import SafetensorError
from safetensors.torch import load as _load_safetensors
from safetensors.torch import save as _save_safetensors

__all__ = [
    "CacheMissError",
    "CacheUnavailableError",
    "TensorCache",
    "cache_info",
    "clear_cache",
    "default_cache_dir",
    "fingerprint",
    "open_cache",
]

FORMAT = "dvae_transform.cache/1"
MANIFEST = "manifest.json"
TENSOR_NAME = "images"
STORAGE_DTYPES = {"uint8": torch.uint8, "float16": torch.float16}
_TMP_PREFIX = ".tmp-"


def encode(values: torch.Tensor, dtype: str) -> torch.Tensor:
    """Float values in [0, 1] at storage precision: ``"uint8"`` (8-bit levels) or ``"float16"``."""
    if dtype == "uint8":
        return values.mul(255).round_().to(torch.uint8)
    return values.to(torch.float16)


def decode(stored: torch.Tensor) -> torch.Tensor:
    """Stored values (uint8 levels or float16) back as float32 in [0, 1]."""
    if stored.dtype == torch.uint8:
        return stored.to(torch.float32).div_(255)
    return stored.to(torch.float32)


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


# ----------------------------------------------------------------------------- fingerprints


def _feed_sized(update: Callable[[bytes], None], tag: bytes, payload: bytes | memoryview) -> None:
    update(tag + len(payload).to_bytes(8, "little"))
    update(payload)


def _feed_tensor(update: Callable[[bytes], None], tensor: torch.Tensor) -> None:
    flat = tensor.detach().cpu().contiguous().reshape(-1)
    header = json.dumps([str(flat.dtype), list(tensor.shape)]).encode()
    _feed_sized(update, b"t", header)
    _feed_sized(update, b"", memoryview(flat.view(torch.uint8).numpy()))


def _feed(update: Callable[[bytes], None], part: object) -> None:
    """Feed a canonical, type-tagged encoding of ``part`` to ``update``."""
    if isinstance(part, np.generic):
        part = part.item()
    if part is None:
        update(b"N")
    elif isinstance(part, bool):
        update(b"B1" if part else b"B0")
    elif isinstance(part, int):
        _feed_sized(update, b"i", str(part).encode())
    elif isinstance(part, float):
        _feed_sized(update, b"f", part.hex().encode())
    elif isinstance(part, str):
        _feed_sized(update, b"s", part.encode())
    elif isinstance(part, (bytes, bytearray, memoryview)):
        _feed_sized(update, b"b", bytes(part))
    elif isinstance(part, np.ndarray):
        _feed_tensor(update, torch.from_numpy(np.ascontiguousarray(part)))
    elif isinstance(part, torch.Tensor):
        _feed_tensor(update, part)
    elif isinstance(part, (list, tuple)):
        update(b"l" + len(part).to_bytes(8, "little"))
        for item in part:
            _feed(update, item)
    elif isinstance(part, dict):
        _feed_dict(update, part)
    else:
        raise TypeError(
            f"fingerprint: cannot encode {type(part).__name__}; use tensors, arrays, bytes, str, numbers, "
            "None, lists, tuples or dicts of those"
        )


def _feed_dict(update: Callable[[bytes], None], mapping: dict) -> None:
    encoded = []
    for key, value in mapping.items():
        chunks: list[bytes] = []
        _feed(chunks.append, key)
        encoded.append((b"".join(chunks), value))
    update(b"d" + len(encoded).to_bytes(8, "little"))
    for key_bytes, value in sorted(encoded, key=lambda pair: pair[0]):
        update(key_bytes)
        _feed(update, value)


def fingerprint(*parts: object) -> str:
    """Stable 32-hex-digit sha256 key over ``parts``.

    Parts may be tensors or numpy arrays (dtype, shape and raw bytes are hashed), bytes, str,
    int, float, bool, None, lists/tuples (treated alike) and dicts (order-independent), nested.
    Equal inputs give equal keys across processes and machines; any change to a value gives a new key.
    """
    hasher = hashlib.sha256()
    _feed(hasher.update, list(parts))
    return hasher.hexdigest()[:32]


# ----------------------------------------------------------------------------- file helpers


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


def atomic_write(path: Path, data: bytes) -> None:
    """Write ``data`` to ``path`` all at once: a temp file in the same folder, fsync, ``os.replace``."""
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=_TMP_PREFIX, suffix=".part")
    try:
        with os.fdopen(fd, "wb") as handle:
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise


def _probe_writable(directory: Path) -> None:
    with _unavailable_on_oserror(directory):
        directory.mkdir(parents=True, exist_ok=True)
        with tempfile.NamedTemporaryFile(dir=directory, prefix=_TMP_PREFIX, suffix=".probe"):
            pass


def _read_manifest_file(path: Path) -> dict[str, Any] | None:
    try:
        manifest = json.loads(path.read_text())
    except (OSError, ValueError):
        return None
    if not isinstance(manifest, dict) or manifest.get("format") != FORMAT:
        return None
    return manifest


def _entry_lock(root: Path, key: str) -> FileLock:
    return FileLock(root / f"{key}.lock", is_singleton=True)


def _file_size(path: Path) -> int:
    try:
        return path.stat().st_size if path.is_file() else 0
    except FileNotFoundError:  # removed meanwhile (a temp file being replaced)
        return 0


def _folder_size(path: Path) -> int:
    return sum(_file_size(item) for item in path.rglob("*"))


def _shard_name(index: int) -> str:
    return f"shard-{index:05d}.safetensors"


def _stat_signature(stat: os.stat_result) -> tuple[int, int, int, int]:
    return stat.st_ino, stat.st_size, stat.st_mtime_ns, stat.st_ctime_ns


# ----------------------------------------------------------------------------- the cache entry


class TensorCache:
    """One cache entry: ``num_items`` tensors of ``item_shape`` stored in shards under ``root/key/``.

    Values are written as floats in [0, 1] and stored as ``"uint8"`` (``round(x * 255)``) or
    ``"float16"``; they are read back as float32 in [0, 1]. Sizes are checked on every read and
    sha256 checksums on the first read of each shard file by this object.

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
        self.root = Path(root) if root is not None else default_cache_dir()
        self.path = self.root / key
        self.num_shards = math.ceil(num_items / shard_size)
        self._lock = _entry_lock(self.root, key)
        self._verified: dict[int, tuple[tuple[int, int, int, int], str]] = {}
        _probe_writable(self.path)
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
        self._discard([index for index in missing if (self.path / _shard_name(index)).exists()])
        return missing

    def is_complete(self) -> bool:
        """Whether every shard is validly stored."""
        return not self.missing_shards()

    def write_shard(self, index: int, values: torch.Tensor) -> None:
        """Store shard ``index`` from float ``values`` in [0, 1] of shape ``(len(shard_range(index)), *item_shape)``.

        Raises:
            ValueError: for a wrong shape, a non-float tensor or values outside [0, 1].
            CacheUnavailableError: when the file cannot be written (permissions, disk full).
        """
        stored = encode(self._check_values(index, values), self.dtype).contiguous()
        data = _save_safetensors({TENSOR_NAME: stored})
        digest = hashlib.sha256(data).hexdigest()
        path = self.path / _shard_name(index)
        with _unavailable_on_oserror(self.path), self._lock:
            self.path.mkdir(parents=True, exist_ok=True)
            atomic_write(path, data)
            entries = self._entries()
            entries[index] = {"sha256": digest, "size": len(data)}
            self._write_manifest(entries)
            self._verified[index] = (_stat_signature(path.stat()), digest)

    def load_shard(self, index: int) -> torch.Tensor:
        """Shard ``index`` as float32 in [0, 1]; raises :class:`CacheMissError` if it is not validly stored."""
        self.shard_range(index)  # IndexError for an out-of-range shard
        stored = self._read_shard(index, self._entries().get(index))
        if stored is None:
            self._discard([index])
            raise CacheMissError(f"shard {index} of cache entry {self.path} is missing or invalid")
        return decode(stored)

    def load(self) -> torch.Tensor:
        """All items as a float32 tensor ``(num_items, *item_shape)``; raises :class:`CacheMissError` if incomplete."""
        out = torch.empty((self.num_items, *self.item_shape), dtype=torch.float32)
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
        manifest = _read_manifest_file(self.path / MANIFEST)
        if manifest is None or not isinstance(manifest.get("shards"), dict):
            return None
        if any(manifest.get(name) != value for name, value in self._layout().items()):
            return None
        return manifest

    def _entries(self) -> dict[int, dict[str, Any]]:
        manifest = self._read_manifest()
        if manifest is None:
            return {}
        return {int(index): entry for index, entry in manifest["shards"].items()}

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
            with open(self.path / _shard_name(index), "rb") as handle:
                signature = _stat_signature(os.fstat(handle.fileno()))
                data = handle.read()
        except FileNotFoundError:
            return None
        if len(data) != entry.get("size"):
            return None
        if self._verified.get(index) != (signature, entry.get("sha256")):
            if hashlib.sha256(data).hexdigest() != entry.get("sha256"):
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
            stat = (self.path / _shard_name(index)).stat()
        except FileNotFoundError:
            return False
        if stat.st_size != entry.get("size"):
            return False
        if self._verified.get(index) == (_stat_signature(stat), entry.get("sha256")):
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
            (self.path / _shard_name(index)).unlink(missing_ok=True)
            self._verified.pop(index, None)
        if any(index in entries for index in bad):
            self._write_manifest({index: entry for index, entry in entries.items() if index not in bad})

    # --- value conversion

    def _shard_shape(self, index: int) -> tuple[int, ...]:
        return (len(self.shard_range(index)), *self.item_shape)

    def _check_values(self, index: int, values: torch.Tensor) -> torch.Tensor:
        expected = self._shard_shape(index)
        if not isinstance(values, torch.Tensor):
            raise TypeError(f"write_shard: expected a torch.Tensor, got {type(values).__name__}")
        if tuple(values.shape) != expected:
            raise ValueError(f"write_shard: shard {index} needs values of shape {expected}, got {tuple(values.shape)}")
        if not values.is_floating_point():
            raise ValueError(f"write_shard: expected float values in [0, 1], got dtype {values.dtype}")
        values = values.detach().to("cpu", torch.float32)
        if values.numel():
            low, high = (bound.item() for bound in torch.aminmax(values))  # NaN propagates and fails the test
            if not (low >= 0 and high <= 1):
                raise ValueError(f"write_shard: values must lie in [0, 1], got range [{low}, {high}]")
        return values


def _check_layout(key: str, num_items: int, item_shape: tuple[int, ...], shard_size: int, dtype: str) -> None:
    if not key or key.startswith(".") or any(not (char.isalnum() or char in "._-") for char in key):
        raise ValueError(f"cache key must be a non-empty name of letters, digits, '.', '_' or '-', got {key!r}")
    if num_items < 0:
        raise ValueError(f"num_items must be >= 0, got {num_items}")
    if any(size < 0 for size in item_shape):
        raise ValueError(f"item_shape must hold sizes >= 0, got {tuple(item_shape)}")
    if shard_size < 1:
        raise ValueError(f"shard_size must be >= 1, got {shard_size}")
    if dtype not in STORAGE_DTYPES:
        raise ValueError(f"dtype must be one of {sorted(STORAGE_DTYPES)}, got {dtype!r}")


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
        warnings.warn(f"dvae_transform: {error}; continuing without a cache", RuntimeWarning, stacklevel=2)
        return None


# ----------------------------------------------------------------------------- maintenance


def _entry_complete(path: Path, manifest: dict[str, Any]) -> bool:
    """Cheap completeness check: every shard is in the manifest and its file has the recorded size."""
    try:
        num_shards = math.ceil(manifest["num_items"] / manifest["shard_size"])
        for index in range(num_shards):
            entry = manifest["shards"][str(index)]
            if (path / _shard_name(index)).stat().st_size != entry["size"]:
                return False
    except (KeyError, TypeError, ZeroDivisionError, OSError):
        return False
    return True


def cache_info(root: Path | str | None = None) -> list[dict[str, Any]]:
    """Describe every entry under ``root`` (default :func:`default_cache_dir`), sorted by key.

    Each dict holds ``key``, ``items`` (number of items), ``item_shape``, ``dtype``, ``complete``
    (all shards present with their recorded sizes; checksums are verified only on read), ``size``
    (bytes on disk) and ``path``. Folders without a cache manifest are ignored.
    """
    root = Path(root) if root is not None else default_cache_dir()
    if not root.is_dir():
        return []
    info = []
    for path in sorted(root.iterdir()):
        manifest = _read_manifest_file(path / MANIFEST) if path.is_dir() else None
        if manifest is None:
            continue
        info.append(
            {
                "key": path.name,
                "items": manifest.get("num_items"),
                "item_shape": manifest.get("item_shape"),
                "dtype": manifest.get("dtype"),
                "complete": _entry_complete(path, manifest),
                "size": _folder_size(path),
                "path": str(path),
            }
        )
    return info


def clear_cache(root: Path | str | None = None, key: str | None = None) -> int:
    """Remove the entry ``key`` (or every entry) under ``root``; returns the number of bytes freed.

    Each entry is removed while holding its lock, so an entry being filled is removed after the
    filler releases it. Folders without a cache manifest are left alone.
    """
    root = Path(root) if root is not None else default_cache_dir()
    freed = 0
    for entry in cache_info(root):
        if key is None or entry["key"] == key:
            freed += _remove_entry(root, entry["key"])
    return freed


def _remove_entry(root: Path, key: str) -> int:
    lock = _entry_lock(root, key)
    with lock:
        if not (root / key).is_dir():  # removed meanwhile by another process
            return 0
        size = _folder_size(root / key)
        shutil.rmtree(root / key)
    Path(lock.lock_file).unlink(missing_ok=True)
    return size
