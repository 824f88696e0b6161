"""Items stored in shard files (``data/shards.py``): one sequence over files and tensors, read item by item."""

from __future__ import annotations

import os
import pickle
from pathlib import Path

import pytest
import torch
from safetensors.torch import save_file

from dvae_transform.cache.store import file_signature
from dvae_transform.data.loader import read_batches
from dvae_transform.data.shards import OPEN_FILES, ShardReader, ShardReadError
from dvae_transform.precision import decode, encode
from dvae_transform.validation import InputTypeError

PER_FILE = 3


def _images(count: int, seed: int = 0) -> torch.Tensor:
    return torch.randint(0, 256, (count, 1, 4, 4), generator=torch.Generator().manual_seed(seed), dtype=torch.uint8)


def _write_parts(folder: Path, images: torch.Tensor) -> list[Path]:
    paths = []
    for index, start in enumerate(range(0, len(images), PER_FILE)):
        paths.append(folder / f"part-{index}.safetensors")
        save_file({"images": images[start : start + PER_FILE].contiguous()}, str(paths[-1]))
    return paths


def _reader(paths: list[Path], labels: torch.Tensor, **kwargs) -> ShardReader:
    return ShardReader(paths, [PER_FILE] * len(paths), labels, **kwargs)


def test_more_files_than_are_kept_open_are_read_in_any_order(tmp_path) -> None:
    images = _images(PER_FILE * (OPEN_FILES + 3))
    order = torch.randperm(len(images), generator=torch.Generator().manual_seed(1))
    labels = torch.arange(len(images))[order]  # the labels of the items in their order
    reader = _reader(_write_parts(tmp_path, images), labels, order=order)
    assert len(reader) == len(images)
    for _ in range(2):  # the second pass reopens files closed to keep only OPEN_FILES open
        read, read_labels = reader.read_items(range(len(images)))
        assert torch.equal(read, images[order]) and torch.equal(read_labels, labels)


def test_part_of_finds_the_part_of_each_row_at_the_boundaries() -> None:
    reader = ShardReader([_images(3), _images(1), _images(2)], [3, 1, 2], torch.arange(6))
    assert [reader.part_of(row) for row in range(6)] == [0, 0, 0, 1, 2, 2]


def test_indices_are_checked_and_negative_ones_count_from_the_end(tmp_path) -> None:
    images = _images(6)
    reader = _reader(_write_parts(tmp_path, images), torch.arange(6) * 10)
    read, labels = reader.read_items([-1, torch.tensor(0)])
    assert torch.equal(read, images[[5, 0]]) and labels.tolist() == [50, 0]
    with pytest.raises(IndexError, match=r"item index 6 is out of range for 6 items \(valid: -6 to 5\)"):
        reader.read_items([6])
    with pytest.raises(InputTypeError, match=r"an item index must be an int, got float \(1.0\)"):
        reader.read_items([1.0])


def test_parts_of_uint8_and_of_float_items_are_read_together_as_floats(tmp_path) -> None:
    images = _images(6)
    stored = [_write_parts(tmp_path, images[:3])[0], encode(decode(images[3:]), "float16")]
    read, _ = ShardReader(stored, [3, 3], torch.arange(6)).read_items([4, 0])
    assert read.dtype == torch.float32 and torch.allclose(read, decode(images[[4, 0]]), atol=1e-3)
    uint8_only, _ = ShardReader(stored, [3, 3], torch.arange(6)).read_items([1, 0])
    assert torch.equal(uint8_only, images[[1, 0]])  # one dtype: as stored


def test_a_file_changed_since_it_was_checked_is_never_served(tmp_path) -> None:
    images = _images(6)
    paths = _write_parts(tmp_path, images)
    signatures = [file_signature(os.stat(path)) for path in paths]
    reader = _reader(paths, torch.arange(6), signatures=signatures)
    assert torch.equal(reader.read_items([4])[0], images[[4]])
    save_file({"images": 255 - images[3:]}, str(paths[1]))  # rewritten under the same name
    with pytest.raises(ShardReadError, match=r"part-1.safetensors is gone or changed on disk since it was checked"):
        reader.read_items([4])
    paths[0].unlink()
    with pytest.raises(ShardReadError, match=r"part-0.safetensors is gone or changed"):
        reader.read_items([0])
    reader.replace(1, images[3:])  # served from memory, unchecked, from now on
    assert torch.equal(reader.read_items([5])[0], images[[5]])


@pytest.mark.parametrize("damage", ["not-safetensors", "other-tensor-name"])
def test_an_unreadable_file_is_a_shard_read_error_naming_it(tmp_path, damage) -> None:
    path = tmp_path / "part.safetensors"
    if damage == "not-safetensors":
        path.write_bytes(b"\x08\x00\x00\x00\x00\x00\x00\x00{}")
    else:
        save_file({"pixels": _images(3)}, str(path))
    with pytest.raises(ShardReadError, match="cannot read shard file .*part.safetensors"):
        _reader([path], torch.arange(3)).read_items([0])


def test_a_pickled_reader_opens_its_own_files(tmp_path) -> None:
    images = _images(6)
    reader = _reader(_write_parts(tmp_path, images), torch.arange(6))
    reader.read_items([0, 5])  # files now open in this reader
    copy = pickle.loads(pickle.dumps(reader))
    read, labels = copy.read_items([5, 1])
    assert torch.equal(read, images[[5, 1]]) and labels.tolist() == [5, 1]


def test_worker_processes_read_a_reader_whose_files_this_process_opened(tmp_path) -> None:
    images = _images(12)
    reader = _reader(_write_parts(tmp_path, images), torch.arange(12))
    reader.read_items(range(12))  # every file open here before the workers start
    batches = [[11, 0], [5, 6, 7], [3], [10, 1]]
    for (read, labels), batch in zip(read_batches(reader, batches, num_workers=2), batches, strict=True):
        assert torch.equal(read, images[batch]) and labels.tolist() == batch
