"""PurifiedDataset on streamed input: iterable datasets, large sets served from the cache, a full disk, dead workers."""

from __future__ import annotations

import copy
import json
import os
import shutil
import signal
import subprocess
import sys
from pathlib import Path

import datasets
import pytest
import torch
from _cache_worker import make_dataset
from test_purified_dataset import count_calls
from torch.utils.data import DataLoader, Dataset, IterableDataset

from dvae_transform import purified_dataset as purified_module
from dvae_transform.cache.store import default_cache_dir
from dvae_transform.purified_dataset import PurifiedDataset

WORKER = Path(__file__).with_name("_full_disk_worker.py")


@pytest.fixture
def purifier(tiny_purifier):
    return copy.deepcopy(tiny_purifier)


@pytest.fixture
def data(purifier):
    return make_dataset(purifier, count=44)


def _purified(data, purifier, root, **kwargs) -> PurifiedDataset:
    return PurifiedDataset(data, purifier, cache_dir=root, cache=root is not None, shard_size=8, progress=False,
                           **kwargs)


class Stream(IterableDataset):
    def __init__(self, items: list) -> None:
        self.items = items

    def __iter__(self):
        return iter(self.items)


def test_iterable_datasets_purify_like_the_same_items(purifier, data, tmp_path) -> None:
    reference = _purified(data, purifier, None)
    images, labels = data.tensors
    hf_stream = datasets.Dataset.from_dict({"image": images.numpy(), "label": labels.numpy()}).to_iterable_dataset(
        num_shards=3
    )
    for stream in (hf_stream, Stream(list(zip(images, labels.tolist())))):
        dataset = _purified(stream, purifier, tmp_path)
        assert len(dataset) == 44 and dataset.fingerprint == reference.fingerprint  # the key follows the content
        assert torch.equal(dataset.images, reference.images) and torch.equal(dataset.labels, labels)
    assert not any((tmp_path / "tmp").iterdir())  # the spooled input is removed once the cache is complete


def test_a_large_set_is_served_from_the_cache_files(purifier, data, tmp_path, monkeypatch) -> None:
    monkeypatch.setattr(purified_module, "IN_MEMORY_BYTES", 44 * 256 - 1)
    reference = _purified(data, purifier, None).images
    dataset = _purified(data, purifier, tmp_path).prepare()
    assert dataset._memory is None  # nothing holds the whole purified set
    assert all(torch.equal(dataset[index][0], reference[index]) for index in (0, 9, 43))
    order = torch.randperm(44, generator=torch.Generator().manual_seed(0))
    images, labels = next(iter(DataLoader(dataset, batch_size=44, sampler=order.tolist(), num_workers=2)))
    assert torch.equal(images, reference[order]) and torch.equal(labels, data.tensors[1][order])

    shard = tmp_path / dataset.fingerprint / "shard-00003.safetensors"
    shard.unlink()  # gone after prepare: purified again on access
    calls = count_calls(monkeypatch, purifier)
    assert torch.equal(dataset[25][0], reference[25]) and calls == [8]


@pytest.mark.parametrize("tmp", ["link", "file"])
def test_an_unusable_cache_tmp_folder_spools_to_the_system_temp_folder(purifier, data, tmp_path, tmp) -> None:
    """A ``tmp`` that is a link (writes would land outside the cache) or cannot be made: the system's temp folder."""
    outside = tmp_path / "outside"
    outside.mkdir()
    root = tmp_path / "cache"
    root.mkdir()
    if tmp == "link":
        (root / "tmp").symlink_to(outside)
    else:
        (root / "tmp").write_text("not a folder")
    images, labels = data.tensors
    dataset = PurifiedDataset(Stream(list(zip(images, labels.tolist()))), purifier, cache_dir=root, cache=False,
                              shard_size=8, progress=False)
    assert torch.equal(dataset.labels, labels)
    assert not any(outside.iterdir())


def test_a_shard_changed_on_disk_after_prepare_is_never_served(purifier, data, tmp_path, monkeypatch) -> None:
    monkeypatch.setattr(purified_module, "IN_MEMORY_BYTES", 0)
    reference = _purified(data, purifier, None).images
    dataset = _purified(data, purifier, tmp_path).prepare()
    assert torch.equal(dataset[9][0], reference[9])  # shard 1 is open (memory-mapped) now
    folder = tmp_path / dataset.fingerprint
    shutil.copyfile(folder / "shard-00000.safetensors", folder / "shard-00001.safetensors")  # valid, but not shard 1
    calls = count_calls(monkeypatch, purifier)
    assert torch.equal(dataset[9][0], reference[9]) and calls == [8]  # purified again, not shard 0's item 1
    assert torch.equal(dataset[10][0], reference[10]) and calls == [8]


@pytest.mark.parametrize("in_memory", [True, False])
def test_negative_and_bad_indices_mean_the_same_on_every_path(purifier, data, tmp_path, monkeypatch, in_memory) -> None:
    if not in_memory:
        monkeypatch.setattr(purified_module, "IN_MEMORY_BYTES", 0)
    reference = _purified(data, purifier, None).images
    dataset = _purified(data, purifier, tmp_path).prepare()
    assert (dataset._memory is not None) == in_memory
    labels = data.tensors[1]
    for index in (-1, -37, -44, 43):
        image, label = dataset[index]
        assert torch.equal(image, reference[index]) and label == int(labels[index])
    for index in (44, -45):
        with pytest.raises(IndexError, match=f"item index {index} is out of range for 44 items"):
            dataset[index]
    with pytest.raises(TypeError, match="an item index must be an int, got float"):
        dataset[1.0]


class _Dying(Dataset):
    """Items of ``data``; the second read of item ``kill_at`` (the first is the fingerprint's pass) kills
    the DataLoader worker reading it."""

    def __init__(self, data, kill_at: int | None, flag: Path) -> None:
        self.data, self.kill_at, self.flag = data, kill_at, flag

    def __len__(self) -> int:
        return len(self.data)

    def __getitem__(self, index: int):
        if index == self.kill_at:
            if self.flag.exists() and torch.utils.data.get_worker_info() is not None:
                os.kill(os.getpid(), signal.SIGKILL)
            self.flag.touch()
        return self.data[index]


def test_a_dead_worker_is_reported_and_only_finished_shards_are_reused(purifier, data, tmp_path, monkeypatch) -> None:
    dying = _Dying(data, kill_at=42, flag=tmp_path / "read-once")  # in the last of 6 shards
    with pytest.raises(RuntimeError, match=r"a DataLoader worker process died while reading the dataset .*fewer"):
        _purified(dying, purifier, tmp_path, num_workers=1).prepare()  # one worker reads 2 shards ahead
    calls = count_calls(monkeypatch, purifier)
    resumed = _purified(_Dying(data, kill_at=None, flag=tmp_path / "unused"), purifier, tmp_path).images
    assert 0 < len(calls) <= 3  # the shards finished before the crash were reused
    assert torch.equal(resumed, _purified(data, purifier, None).images)


def _tmpfs_available() -> bool:
    if shutil.which("unshare") is None:
        return False
    probe = subprocess.run(["unshare", "-rm", "sh", "-c", "mount -t tmpfs -o size=16k tmpfs /mnt"],
                           capture_output=True)
    return probe.returncode == 0


@pytest.mark.parametrize("disk", ["tmpfs", "file-size-limit"])
def test_a_full_disk_keeps_the_purified_images_and_warns_once(purifier, tmp_path, disk) -> None:
    """A cache on a 16 KiB tmpfs (a real full disk; else a file-size limit) fills up part-way."""
    purifier.save_pretrained(tmp_path / "purifier")
    cache, out = tmp_path / "cache", tmp_path / "out.json"
    cache.mkdir()
    worker = [sys.executable, str(WORKER), str(tmp_path / "purifier"), str(cache), str(out)]
    if disk == "tmpfs":
        if not _tmpfs_available():
            pytest.skip("no user namespace to mount a tmpfs in")
        command = ["unshare", "-rm", "sh", "-c", 'mount -t tmpfs -o size=16k tmpfs "$0" && exec "$@"', str(cache),
                   *worker]
    else:
        command = [*worker, "2000"]  # shards take 2 KiB and more
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(Path.cwd()), str(Path(__file__).parent),
                                                        os.environ.get("PYTHONPATH", "")])}
    done = subprocess.run(command, env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    result = json.loads(out.read_text())
    assert result["equal"] and all(result["items"])
    assert len(result["warnings"]) == 1 and "continuing without a cache" in result["warnings"][0]
    reason = "No space left on device" if disk == "tmpfs" else "File too large"
    assert reason in result["warnings"][0]
    assert result["cached_shards"] < 6


def test_spooled_input_goes_to_the_cache_root(purifier, data) -> None:
    images, labels = data.tensors
    dataset = _purified(Stream(list(zip(images, labels.tolist()))), purifier, None)
    assert len(dataset) == 44
    assert [path.name.startswith("work-") for path in (default_cache_dir() / "tmp").iterdir()] == [True]
    dataset.prepare()  # no cache: the purified images are in memory, the spool stays readable
    assert torch.equal(dataset.labels, labels)
