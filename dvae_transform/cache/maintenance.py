"""Listing and removing cache entries (behind ``dvae-purify cache info | clear``)."""

from __future__ import annotations

import math
import shutil
from pathlib import Path
from typing import Any

from .store import MANIFEST, default_cache_dir, entry_lock, read_manifest_file, shard_name


def _file_size(path: Path) -> int:
    try:
        return path.stat().st_size if path.is_file() else 0
    except FileNotFoundError:  # removed meanwhile (a temp file being replaced)
        return 0


def _folder_size(path: Path) -> int:
    return sum(_file_size(item) for item in path.rglob("*"))


def _entry_complete(path: Path, manifest: dict[str, Any]) -> bool:
    """Cheap completeness check: every shard is in the manifest and its file has the recorded size."""
    try:
        num_shards = math.ceil(manifest["num_items"] / manifest["shard_size"])
        for index in range(num_shards):
            entry = manifest["shards"][str(index)]
            if (path / shard_name(index)).stat().st_size != entry["size"]:
                return False
    except (KeyError, TypeError, ZeroDivisionError, OSError):
        return False
    return True


def cache_info(root: Path | str | None = None) -> list[dict[str, Any]]:
    """Describe every entry under ``root`` (default :func:`~dvae_transform.cache.store.default_cache_dir`), by key.

    Each dict holds ``key``, ``items`` (number of items), ``item_shape``, ``dtype``, ``complete``
    (all shards present with their recorded sizes; checksums are verified only on read), ``size``
    (bytes on disk) and ``path``. Folders without a cache manifest are ignored.
    """
    root = Path(root) if root is not None else default_cache_dir()
    if not root.is_dir():
        return []
    info = []
    for path in sorted(root.iterdir()):
        manifest = read_manifest_file(path / MANIFEST) if path.is_dir() else None
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
    lock = entry_lock(root, key)
    with lock:
        if not (root / key).is_dir():  # removed meanwhile by another process
            return 0
        size = _folder_size(root / key)
        shutil.rmtree(root / key)
    Path(lock.lock_file).unlink(missing_ok=True)
    return size
