"""The on-disk cache of purified tensors: one entry (``cache/store.py``); listing and clearing entries are tested in
``test_cache_maintenance.py``."""

from __future__ import annotations

import errno
import json
import subprocess
import sys
import time
import warnings
from pathlib import Path

import pytest
import torch

from dvae_transform import files
from dvae_transform.cache.maintenance import cache_info, clear_cache
from dvae_transform.cache.store import (
    CacheMissError,
    CacheUnavailableError,
    TensorCache,
    default_cache_dir,
    open_cache,
)
from dvae_transform.precision import STORAGE_DTYPES, decode, encode

SHAPE = (3, 4, 4)


def make_cache(root: Path, key: str = "entry", num_items: int = 10, **kwargs) -> TensorCache:
    return TensorCache(key, num_items=num_items, item_shape=SHAPE, shard_size=4, root=root, **kwargs)


def values_for(cache: TensorCache, index: int) -> torch.Tensor:
    """Shard ``index`` of random images, at the entry's storage precision."""
    generator = torch.Generator().manual_seed(index)
    return encode(torch.rand((len(cache.shard_range(index)), *SHAPE), generator=generator), cache.dtype)


def fill(cache: TensorCache) -> torch.Tensor:
    for index in cache.missing_shards():
        cache.write_shard(index, values_for(cache, index))
    return torch.cat([values_for(cache, index) for index in range(cache.num_shards)])


def shard_file(cache: TensorCache, index: int) -> Path:
    return cache.path / f"shard-{index:05d}.safetensors"


def test_default_cache_dir(monkeypatch, tmp_path):
    monkeypatch.setenv("DVAE_TRANSFORM_CACHE", str(tmp_path / "explicit"))
    assert default_cache_dir() == tmp_path / "explicit"
    monkeypatch.delenv("DVAE_TRANSFORM_CACHE")
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    assert default_cache_dir() == tmp_path / "xdg" / "dvae_transform"
    monkeypatch.delenv("XDG_CACHE_HOME")
    assert default_cache_dir() == Path.home() / ".cache" / "dvae_transform"


@pytest.mark.parametrize(("dtype", "tolerance"), [("uint8", 0.5 / 255), ("float16", 1e-3)])
def test_round_trip(tmp_path, dtype, tolerance):
    cache = make_cache(tmp_path, dtype=dtype)
    assert cache.num_shards == 3 and cache.shard_range(2) == range(8, 10)
    expected = fill(cache)
    assert cache.is_complete()
    loaded = make_cache(tmp_path, dtype=dtype).load()
    assert loaded.dtype == STORAGE_DTYPES[dtype] and loaded.shape == (10, *SHAPE)
    assert torch.equal(loaded, expected)  # stored as given: no conversion on the way in or out
    originals = torch.cat([torch.rand((len(cache.shard_range(i)), *SHAPE), generator=torch.Generator().manual_seed(i))
                           for i in range(cache.num_shards)])
    assert (decode(loaded) - originals).abs().max().item() <= tolerance + 1e-7
    assert torch.equal(cache.load_shard(1), loaded[4:8])
    assert 0 <= decode(loaded).min() and decode(loaded).max() <= 1
    manifest = json.loads((cache.path / "manifest.json").read_text())
    assert manifest["dtype"] == dtype and sorted(manifest["shards"]) == ["0", "1", "2"]


def test_missing_shards_are_resumable(tmp_path):
    cache = make_cache(tmp_path)
    assert cache.missing_shards() == [0, 1, 2]
    cache.write_shard(1, values_for(cache, 1))
    reopened = make_cache(tmp_path)
    assert reopened.missing_shards() == [0, 2]
    assert not reopened.is_complete()
    with pytest.raises(CacheMissError, match="shard 0"):
        reopened.load()
    reopened.write_shard(0, values_for(reopened, 0))
    reopened.write_shard(2, values_for(reopened, 2))
    assert make_cache(tmp_path).is_complete()


def test_write_shard_validates_values(tmp_path):
    cache = make_cache(tmp_path, dtype="float16")
    with pytest.raises(ValueError, match="shape"):
        cache.write_shard(0, torch.rand(3, *SHAPE).half())
    with pytest.raises(ValueError, match=r"\[0, 1\]"):
        cache.write_shard(0, (torch.rand(4, *SHAPE) + 1).half())
    with pytest.raises(ValueError, match="dtype"):
        cache.write_shard(0, torch.zeros(4, *SHAPE, dtype=torch.uint8))
    with pytest.raises(ValueError, match="dtype"):
        make_cache(tmp_path, key="bytes").write_shard(0, torch.rand(4, *SHAPE))  # floats are not encoded here
    with pytest.raises(IndexError):
        cache.write_shard(3, torch.rand(4, *SHAPE).half())
    assert cache.missing_shards() == [0, 1, 2]


@pytest.mark.parametrize("corruption", ["truncate", "flip"])
def test_corrupted_shard_is_never_served(tmp_path, corruption):
    fill(make_cache(tmp_path))
    path = shard_file(make_cache(tmp_path), 1)
    data = bytearray(path.read_bytes())
    if corruption == "truncate":
        data = data[: len(data) // 2]
    else:
        data[-5:] = bytes(255 - byte for byte in data[-5:])
    path.write_bytes(bytes(data))

    reopened = make_cache(tmp_path)
    with pytest.raises(CacheMissError, match="shard 1"):
        reopened.load_shard(1)
    assert not path.exists()
    assert make_cache(tmp_path).missing_shards() == [1]


def test_corrupted_shard_reported_missing_before_any_read(tmp_path):
    fill(make_cache(tmp_path))
    path = shard_file(make_cache(tmp_path), 0)
    data = bytearray(path.read_bytes())
    data[-1] ^= 0xFF
    path.write_bytes(bytes(data))
    assert make_cache(tmp_path).missing_shards() == [0]
    assert not path.exists()


def test_stray_temp_file_is_ignored(tmp_path):
    cache = make_cache(tmp_path)
    cache.write_shard(0, values_for(cache, 0))
    (cache.path / ".tmp-crashed.part").write_bytes(shard_file(cache, 0).read_bytes()[:10])
    assert make_cache(tmp_path).missing_shards() == [1, 2]


def test_shard_file_without_manifest_entry_is_ignored(tmp_path):
    cache = make_cache(tmp_path)
    cache.write_shard(0, values_for(cache, 0))
    shard_file(cache, 0).rename(shard_file(cache, 2))  # a file the manifest does not vouch for
    assert make_cache(tmp_path).missing_shards() == [0, 1, 2]
    assert not shard_file(cache, 2).exists()


def test_failed_write_leaves_no_shard(tmp_path, monkeypatch):
    cache = make_cache(tmp_path)

    def disk_full(fd):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(files.os, "fsync", disk_full)
    with pytest.raises(CacheUnavailableError, match="No space left"):
        cache.write_shard(0, values_for(cache, 0))
    monkeypatch.undo()
    assert sorted(item.name for item in cache.path.iterdir()) == ["manifest.json"]
    assert cache.missing_shards() == [0, 1, 2]


def _damage_entry(manifest: dict, how: str) -> None:
    shards, good = manifest["shards"], manifest["shards"]["1"]
    if how in ("null", "int", "list", "string"):
        shards["1"] = {"null": None, "int": 5, "list": [1, 2], "string": "x"}[how]
    elif how in ("size-string", "size-negative", "size-bool", "sha-int", "sha-short", "no-sha"):
        shards["1"] = {**good, **{"size-string": {"size": "x"}, "size-negative": {"size": -1},
                                  "size-bool": {"size": True}, "sha-int": {"sha256": 5},
                                  "sha-short": {"sha256": "ab"}, "no-sha": {"sha256": None}}[how]}
    else:  # a bad key beside a removed good one
        del shards["1"]
        shards[{"key-word": "one", "key-float": "1.0", "key-negative": "-1", "key-beyond": "99"}[how]] = good


@pytest.mark.parametrize(
    "how",
    ["null", "int", "list", "string", "size-string", "size-negative", "size-bool", "sha-int", "sha-short", "no-sha",
     "key-word", "key-float", "key-negative", "key-beyond"],
)
def test_malformed_manifest_entry_is_a_missing_shard_and_heals(tmp_path, how):
    expected = fill(make_cache(tmp_path))
    manifest_path = make_cache(tmp_path).path / "manifest.json"
    manifest = json.loads(manifest_path.read_text())
    _damage_entry(manifest, how)
    manifest_path.write_text(json.dumps(manifest))

    cache = make_cache(tmp_path)
    assert cache.missing_shards() == [1]
    assert not cache_info(tmp_path)[0]["complete"]
    assert torch.equal(fill(cache), expected) and torch.equal(cache.load(), expected)
    assert sorted(json.loads(manifest_path.read_text())["shards"]) == ["0", "1", "2"]  # healed


@pytest.mark.parametrize("text", ["", "{", "[]", "5", '{"format": "dvae_transform.cache/1", "shards": [1]}', "\x00"])
def test_unreadable_manifest_means_every_shard_is_computed_again(tmp_path, text):
    expected = fill(make_cache(tmp_path))
    (make_cache(tmp_path).path / "manifest.json").write_text(text)
    cache = make_cache(tmp_path)
    assert cache.missing_shards() == [0, 1, 2]
    assert torch.equal(fill(cache), expected) and cache.is_complete()


def test_changed_layout_under_same_key_starts_over(tmp_path):
    fill(make_cache(tmp_path))
    other = TensorCache("entry", num_items=10, item_shape=SHAPE, shard_size=5, root=tmp_path)
    assert other.missing_shards() == [0, 1]
    assert not shard_file(other, 2).exists()


def test_invalid_arguments(tmp_path):
    with pytest.raises(ValueError, match="key"):
        TensorCache("../escape", num_items=1, item_shape=SHAPE, root=tmp_path)
    with pytest.raises(ValueError, match="dtype"):
        TensorCache("k", num_items=1, item_shape=SHAPE, dtype="float32", root=tmp_path)
    with pytest.raises(ValueError, match="shard_size"):
        TensorCache("k", num_items=1, item_shape=SHAPE, shard_size=0, root=tmp_path)


def test_unwritable_root(tmp_path):
    (tmp_path / "afile").write_text("not a folder")
    root = tmp_path / "afile" / "cache"
    with pytest.raises(CacheUnavailableError):
        make_cache(root)
    with pytest.warns(RuntimeWarning, match="afile") as record:
        assert open_cache("entry", num_items=10, item_shape=SHAPE, root=root) is None
    assert len(record) == 1


def test_open_cache_writable_root_does_not_warn(tmp_path):
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        cache = open_cache("entry", num_items=10, item_shape=SHAPE, root=tmp_path / "new")
    assert isinstance(cache, TensorCache) and cache.missing_shards() == [0]


WORKER = """
import sys, time
from pathlib import Path
import torch

from dvae_transform.cache import store as cache_module
from dvae_transform.fingerprint import fingerprint

root, folder, name = Path(sys.argv[1]), Path(sys.argv[2]), sys.argv[3]
(folder / f"ready-{name}").touch()
while not (folder / "go").exists():
    time.sleep(0.01)
cache = cache_module.TensorCache("shared", num_items=10, item_shape=(3, 4, 4), shard_size=4, root=root)
with cache.lock():
    for index in cache.missing_shards():
        with (folder / "computed.log").open("a") as handle:
            handle.write(f"{index}\\n")
        time.sleep(0.05)
        generator = torch.Generator().manual_seed(index)
        values = torch.rand((len(cache.shard_range(index)), 3, 4, 4), generator=generator)
        cache.write_shard(index, values.mul(255).round().to(torch.uint8))
print(fingerprint(cache.load()))
"""


def test_concurrent_processes_compute_each_shard_once(tmp_path):
    command = [sys.executable, "-c", WORKER, str(tmp_path / "cache"), str(tmp_path)]
    workers = [subprocess.Popen([*command, name], stdout=subprocess.PIPE, text=True) for name in "ab"]
    deadline = time.monotonic() + 120
    while not all((tmp_path / f"ready-{name}").exists() for name in "ab") and time.monotonic() < deadline:
        time.sleep(0.01)
    (tmp_path / "go").touch()
    outputs = [worker.communicate(timeout=120)[0].strip() for worker in workers]
    assert [worker.returncode for worker in workers] == [0, 0]
    assert sorted((tmp_path / "computed.log").read_text().split()) == ["0", "1", "2"]
    assert outputs[0] == outputs[1] != ""


def test_a_symlinked_entry_is_never_written_deleted_or_followed(tmp_path):
    outside = tmp_path / "outside"
    fill(make_cache(outside))  # a folder laid out like an entry, holding shards
    before = sorted(path.name for path in (outside / "entry").iterdir())
    root = tmp_path / "cache"
    root.mkdir()
    (root / "entry").symlink_to(outside / "entry")
    with pytest.warns(RuntimeWarning, match=r"entry is a symbolic link; .* never writes .* remove the link"):
        assert open_cache("entry", num_items=12, item_shape=SHAPE, shard_size=4, root=root) is None  # other layout
    (root / "linked.lock").symlink_to(outside / "victim.txt")
    (outside / "victim.txt").write_text("kept")
    with pytest.raises(CacheUnavailableError, match="linked.lock is a symbolic link"):
        make_cache(root, key="linked")
    assert cache_info(root) == []
    assert clear_cache(root) == 0  # removes the link itself and goes on
    assert not (root / "entry").is_symlink() and (root / "linked.lock").is_symlink()
    assert sorted(path.name for path in (outside / "entry").iterdir()) == before
    assert (outside / "victim.txt").read_text() == "kept"
