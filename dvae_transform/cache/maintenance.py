"""Listing and removing cache entries (behind ``dvae-purify cache info | clear``)."""

from __future__ import annotations

import math
import shutil
from pathlib import Path
from typing import Any

from ..precision import STORAGE_DTYPES
from .store import MANIFEST, cache_root, entry_lock, is_count, read_manifest_file, shard_entries, shard_name


def _file_size(path: Path) -> int:
    try:
        return path.stat().st_size if path.is_file() else 0
    except FileNotFoundError:  # removed meanwhile (a temp file being replaced)
        return 0


def _folder_size(path: Path) -> int:
    return sum(_file_size(item) for item in path.rglob("*"))


def _layout(manifest: dict[str, Any]) -> tuple[int | None, list[int] | None, str | None]:
    """``(items, item_shape, dtype)`` of a manifest, each None where the manifest holds no valid value."""
    items, shape, dtype = manifest.get("num_items"), manifest.get("item_shape"), manifest.get("dtype")
    return (
        items if is_count(items) else None,
        shape if isinstance(shape, list) and all(is_count(size) for size in shape) else None,
        dtype if isinstance(dtype, str) and dtype in STORAGE_DTYPES else None,
    )


def _entry_complete(path: Path, manifest: dict[str, Any]) -> bool:
    """Cheap completeness check: a valid layout, every shard in the manifest, each file of the recorded size."""
    layout, shard_size = _layout(manifest), manifest.get("shard_size")
    if None in layout or not is_count(shard_size) or shard_size == 0:
        return False
    items = layout[0]
    num_shards = math.ceil(items / shard_size)
    entries = shard_entries(manifest.get("shards"), num_shards)
    return len(entries) == num_shards and all(
        _file_size(path / shard_name(index)) == entry["size"] for index, entry in entries.items()
    )


def cache_info(root: Path | str | None = None) -> list[dict[str, Any]]:
    """Describe every entry under ``root`` (default :func:`~dvae_transform.cache.store.default_cache_dir`), by key.

    Each dict holds ``key``, ``items`` (number of items), ``item_shape``, ``dtype``, ``complete``
    (all shards present with their recorded sizes; checksums are verified only on read), ``size``
    (bytes on disk) and ``path``; ``items``, ``item_shape`` and ``dtype`` are None where a damaged
    manifest holds no valid value (such an entry can still be cleared). Folders without a cache
    manifest, and symbolic links, are ignored.
    """
    root = cache_root(root)
    if not root.is_dir():
        return []
    info = []
    for path in sorted(root.iterdir()):
        manifest = read_manifest_file(path / MANIFEST) if path.is_dir() and not path.is_symlink() else None
        if manifest is None:
            continue
        items, item_shape, dtype = _layout(manifest)
        info.append(
            {
                "key": path.name,
                "items": items,
                "item_shape": item_shape,
                "dtype": dtype,
                "complete": _entry_complete(path, manifest),
                "size": _folder_size(path),
                "path": str(path),
            }
        )
    return info


def clear_cache(root: Path | str | None = None, key: str | None = None) -> int:
    """Remove the entry ``key`` (or every entry) under ``root``; returns the number of bytes freed.

    Each entry is removed while holding its lock, so an entry being filled is removed after the
    filler releases it. Folders without a cache manifest are left alone; an entry that is a symbolic link
    (never made by the cache) is removed as a link, never followed.
    """
    root = cache_root(root)
    freed = 0
    for link in _linked_entries(root):
        if key is None or link.name == key:
            link.unlink()  # the link itself: what it points to is not the cache's
    for entry in cache_info(root):
        if key is None or entry["key"] == key:
            freed += _remove_entry(root, entry["key"])
    return freed


def _linked_entries(root: Path) -> list[Path]:
    """Symbolic links under ``root`` named like cache entries (to a folder holding a cache manifest)."""
    if not root.is_dir():
        return []
    return [path for path in sorted(root.iterdir())
            if path.is_symlink() and read_manifest_file(path / MANIFEST) is not None]


def _remove_entry(root: Path, key: str) -> int:
    lock = entry_lock(root, key)
    with lock:
        if not (root / key).is_dir():  # removed meanwhile by another process
            return 0
        size = _folder_size(root / key)
        shutil.rmtree(root / key)
    Path(lock.lock_file).unlink(missing_ok=True)
    return size
