"""Listing and clearing cache entries (``cache/maintenance.py``), on real entries written by ``cache/store.py``."""

from __future__ import annotations

import json
from pathlib import Path

from test_cache_store import fill, make_cache, shard_file, values_for

from dvae_transform.cache.maintenance import cache_info, clear_cache


def test_cache_info_of_a_damaged_layout_shows_what_is_valid(tmp_path):
    fill(make_cache(tmp_path))
    manifest_path = make_cache(tmp_path).path / "manifest.json"
    manifest = json.loads(manifest_path.read_text())
    manifest.update(num_items="10", item_shape=5, dtype=["uint8"], shard_size=0)
    manifest_path.write_text(json.dumps(manifest))
    [entry] = cache_info(tmp_path)
    assert (entry["items"], entry["item_shape"], entry["dtype"], entry["complete"]) == (None, None, None, False)
    assert clear_cache(tmp_path) == entry["size"] and cache_info(tmp_path) == []


def test_cache_info_and_clear_cache(tmp_path):
    fill(make_cache(tmp_path, key="full"))
    partial = make_cache(tmp_path, key="partial", dtype="float16")
    partial.write_shard(0, values_for(partial, 0))
    (tmp_path / "unrelated").mkdir()

    info = {entry["key"]: entry for entry in cache_info(tmp_path)}
    assert sorted(info) == ["full", "partial"]
    assert info["full"]["complete"] and not info["partial"]["complete"]
    assert info["full"]["items"] == 10 and info["partial"]["dtype"] == "float16"
    assert info["full"]["size"] > 0 and Path(info["full"]["path"]) == tmp_path / "full"

    assert clear_cache(tmp_path, key="missing") == 0
    assert clear_cache(tmp_path, key="partial") == info["partial"]["size"]
    assert [entry["key"] for entry in cache_info(tmp_path)] == ["full"]
    assert clear_cache(tmp_path) == info["full"]["size"]
    assert cache_info(tmp_path) == []
    assert (tmp_path / "unrelated").is_dir() and not list(tmp_path.glob("*.lock"))
    assert cache_info(tmp_path / "nowhere") == [] and clear_cache(tmp_path / "nowhere") == 0


def test_completeness_checks_each_shard_file_size_not_its_checksum(tmp_path):
    cache = make_cache(tmp_path)
    fill(cache)
    [entry] = cache_info(tmp_path)
    assert entry["complete"] and (entry["items"], entry["item_shape"], entry["dtype"]) == (10, [3, 4, 4], "uint8")
    assert entry["size"] == sum(path.stat().st_size for path in cache.path.iterdir())

    flipped = bytearray(shard_file(cache, 1).read_bytes())
    flipped[-1] ^= 0xFF  # same size: found only when the shard is read
    shard_file(cache, 1).write_bytes(bytes(flipped))
    assert cache_info(tmp_path)[0]["complete"]

    shard_file(cache, 1).write_bytes(bytes(flipped[:-1]))
    assert not cache_info(tmp_path)[0]["complete"]
    shard_file(cache, 1).write_bytes(bytes(flipped))
    shard_file(cache, 2).unlink()
    assert not cache_info(tmp_path)[0]["complete"]


def test_only_folders_holding_a_cache_manifest_are_listed_or_cleared(tmp_path):
    fill(make_cache(tmp_path, key="entry"))
    (tmp_path / "notes.txt").write_text("kept")
    (tmp_path / "other").mkdir()
    (tmp_path / "other" / "manifest.json").write_text("{}")  # not a cache manifest
    (tmp_path / "other" / "data.bin").write_bytes(b"kept")

    assert [entry["key"] for entry in cache_info(tmp_path)] == ["entry"]
    assert clear_cache(tmp_path, key="other") == 0 and clear_cache(tmp_path, key="notes.txt") == 0
    assert clear_cache(tmp_path) > 0
    assert sorted(path.name for path in tmp_path.iterdir()) == ["notes.txt", "other"]
    assert (tmp_path / "other" / "data.bin").read_bytes() == b"kept"
    assert cache_info(tmp_path / "notes.txt") == []  # a root that is a file holds no entries
