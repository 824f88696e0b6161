"""Iterable datasets written to disk once, in a canonical order (``data/spool.py``), on real streams."""

from __future__ import annotations

import datasets
import numpy as np
import pytest
import torch
from torch.utils.data import IterableDataset

from dvae_transform.data.spool import CHUNK, spool
from dvae_transform.validation import InputTypeError


class Stream(IterableDataset):
    def __init__(self, items: list) -> None:
        self.items = items

    def __iter__(self):
        return iter(self.items)


def _images(count: int, size: int = 2) -> torch.Tensor:
    return torch.randint(0, 256, (count, 1, size, size), generator=torch.Generator().manual_seed(0), dtype=torch.uint8)


def _hf_stream(images: torch.Tensor, labels: torch.Tensor, num_shards: int) -> datasets.IterableDataset:
    table = datasets.Dataset.from_dict({"img": images.numpy(), "fine_label": labels.numpy()})
    return table.to_iterable_dataset(num_shards=num_shards)


def _read_all(reader) -> tuple[torch.Tensor, torch.Tensor]:
    return reader.read_items(range(len(reader)))


def test_a_torch_stream_is_served_by_index_in_its_own_order(tmp_path) -> None:
    images, labels = _images(CHUNK + 44), torch.arange(CHUNK + 44) % 7
    folder = tmp_path / "spool"
    folder.mkdir()
    (folder / "stale.safetensors").write_bytes(b"from an earlier run")
    reader = spool(Stream(list(zip(images, labels.tolist()))), folder, num_workers=1, progress=False)
    read, read_labels = _read_all(reader)
    assert read.dtype == torch.uint8 and torch.equal(read, images) and torch.equal(read_labels, labels)
    assert sorted(path.name for path in folder.iterdir()) == ["part-0000-000000.safetensors",
                                                              "part-0000-000001.safetensors"]  # chunks of CHUNK


@pytest.mark.parametrize("num_workers", [0, 2])
def test_a_sharded_hugging_face_stream_keeps_the_order_of_a_plain_pass(tmp_path, num_workers) -> None:
    """Two workers, one per shard of two chunks, hand over the chunks of both shards interleaved."""
    count = 2 * (CHUNK + 20)
    images, labels = _images(count), torch.arange(count) % 4
    stream = _hf_stream(images, labels, num_shards=2)
    reader = spool(stream, tmp_path / "spool", num_workers=num_workers, progress=False)
    read, read_labels = _read_all(reader)
    assert torch.equal(read, images) and torch.equal(read_labels, labels)


def test_float_images_are_stored_as_floats_in_range(tmp_path) -> None:
    images = torch.rand(5, 3, 4, 4, generator=torch.Generator().manual_seed(1))
    reader = spool(Stream([(image, 1) for image in images]), tmp_path / "spool", progress=False)
    read, read_labels = _read_all(reader)
    assert read.is_floating_point() and torch.allclose(read.float(), images, atol=1e-3)
    assert read_labels.tolist() == [1] * 5


def test_images_of_another_size_are_named(tmp_path) -> None:
    items = [(image, 0) for image in _images(CHUNK)] + [(_images(1, size=3)[0], 0)]
    with pytest.raises(ValueError, match=r"dataset item 256 of shard 0 has shape \(1, 3, 3\), not \(1, 2, 2\) like "
                                         r"the items before: all images must have one size"):
        spool(Stream(items), tmp_path / "spool", progress=False)
    with pytest.raises(ValueError, match=r"dataset item 1 has shape \(1, 3, 3\), not item 0's \(1, 2, 2\)"):
        spool(Stream([items[0], items[-1]]), tmp_path / "spool", progress=False)


def test_an_empty_stream_is_refused(tmp_path) -> None:
    with pytest.raises(ValueError, match="the dataset is empty"):
        spool(Stream([]), tmp_path / "spool", progress=False)


@pytest.mark.parametrize(("item", "error", "message"), [
    (torch.zeros(1, 2, 2), InputTypeError, "dataset item 0 must be an (image, label) pair, got Tensor"),
    ((torch.zeros(1, 2, 2), 0.5), InputTypeError, "dataset item 0: label must be an integer, got 0.5"),
])
def test_a_bad_item_is_named(tmp_path, item, error, message) -> None:
    with pytest.raises(error, match=message.replace("(", r"\(").replace(")", r"\)")):
        spool(Stream([item]), tmp_path / "spool", progress=False)


def test_hugging_face_labels_must_be_integers(tmp_path) -> None:
    stream = datasets.Dataset.from_dict({"image": _images(4).numpy(), "label": np.array([0.0, 1.0, 0.5, 1.0])})
    with pytest.raises(InputTypeError, match=r"0 of shard 0: labels must be integers, got \[0.0, 1.0, 0.5"):
        spool(stream.to_iterable_dataset(), tmp_path / "spool", progress=False)


def test_an_unwritable_folder_names_it_and_the_remedy(tmp_path) -> None:
    (tmp_path / "a-file").write_text("not a folder")
    with pytest.raises(OSError, match=r"writing the iterable dataset's copy to .*a-file/spool failed \(.*\): it needs "
                                      r"room for the whole dataset; .* cache_dir= \(or set DVAE_TRANSFORM_CACHE\)"):
        spool(Stream([(_images(1)[0], 0)]), tmp_path / "a-file" / "spool", progress=False)
