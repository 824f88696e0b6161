"""Streamed fits: map-style and iterable inputs read in batches, the stage-1 output on disk, the rule, bad input."""

from __future__ import annotations

import os
import signal

import datasets
import pytest
import torch
from conftest import make_images
from safetensors import safe_open
from test_training_loop import TINY, _assert_same_weights
from torch.utils.data import Dataset, IterableDataset, TensorDataset

from dvae_transform import DVAEPurify
from dvae_transform.cache.store import default_cache_dir
from dvae_transform.training import streamed
from dvae_transform.training.sets import TensorSet, epoch_plan
from dvae_transform.training.streamed import StreamedSet, training_set


class Stream(IterableDataset):
    """A plain torch IterableDataset over ``(image, label)`` items."""

    def __init__(self, items: list) -> None:
        self.items = items

    def __iter__(self):
        return iter(self.items)


def _hf(images: torch.Tensor, labels: torch.Tensor) -> datasets.Dataset:
    """uint8 images as an array column (a list of lists of ``Value("uint8")``)."""
    return datasets.Dataset.from_dict({"image": images.numpy(), "label": labels.numpy()})


@pytest.fixture(scope="module")
def data():
    images, labels = make_images(72)
    return (images * 255).round().byte(), labels  # uint8, as streamed images usually are


@pytest.fixture(scope="module")
def in_memory(data) -> DVAEPurify:
    return DVAEPurify.fit(data, seed=2, **TINY)


def test_epoch_plan_splits_every_global_batch_between_processes() -> None:
    one = epoch_plan(70, 16, seed=3, epoch=1)
    two = [epoch_plan(70, 16, seed=3, epoch=1, rank=rank, world=2) for rank in range(2)]
    assert [len(batch) for batch in one] == [16, 16, 16, 16, 6]
    for step, batch in enumerate(one):
        assert torch.equal(torch.cat([two[0][step], two[1][step]]), batch)  # rank 0 the first half, rank 1 the rest
    assert sorted(torch.cat(one).tolist()) == list(range(70))
    assert not torch.equal(torch.cat(one), torch.cat(epoch_plan(70, 16, seed=3, epoch=2)))
    assert len(epoch_plan(65, 16, seed=0, epoch=0, world=2)) == 4  # a last global batch of 1 item: left out


def test_streamed_fit_matches_the_in_memory_fit(data, in_memory, tmp_path) -> None:
    streamed = DVAEPurify.fit(TensorDataset(*data), seed=2, stream=True, resume_dir=tmp_path, **TINY)
    _assert_same_weights(in_memory, streamed)
    shards = sorted((tmp_path / "data").glob("stage1-*/shard-*.safetensors"))
    assert len(shards) == 1  # 72 items in shards of 256: the stage-1 output, on disk as uint8 levels
    with safe_open(shards[0], "pt") as handle:
        stored = handle.get_tensor("images")
    assert stored.dtype == torch.uint8 and stored.shape == (72, 1, 16, 16)
    again = DVAEPurify.fit(TensorDataset(*data), seed=2, stream=True, resume_dir=tmp_path, **TINY)
    _assert_same_weights(in_memory, again)  # resumed from the finished checkpoint


def test_streamed_fit_in_the_main_process_is_quiet_without_progress(data, in_memory, capsys) -> None:
    streamed = DVAEPurify.fit(TensorDataset(*data), seed=2, stream=True, num_workers=0, **TINY)  # TINY: progress=False
    _assert_same_weights(in_memory, streamed)
    assert "stage-1 output" not in capsys.readouterr().err  # no progress bar of any kind
    with pytest.raises(ValueError, match="num_workers must be"):
        DVAEPurify.fit(TensorDataset(*data), stream=True, num_workers=-1, **TINY)


def test_iterable_datasets_fit_like_the_same_items_in_memory(data, in_memory) -> None:
    images, labels = data
    hf_stream = _hf(images, labels).to_iterable_dataset(num_shards=3)
    _assert_same_weights(in_memory, DVAEPurify.fit(hf_stream, seed=2, **TINY))
    torch_stream = Stream(list(zip(images, labels.tolist())))
    _assert_same_weights(in_memory, DVAEPurify.fit(torch_stream, seed=2, stream=True, **TINY))
    assert not any((default_cache_dir() / "tmp").iterdir())  # the spool and stage-1 output are gone


def test_hf_uint8_array_column_is_read_as_uint8(data, in_memory) -> None:
    dataset = _hf(*data)
    assert dataset.features["image"].feature.feature.feature.dtype == "uint8"
    for formatted in (dataset, dataset.with_format("torch"), dataset.with_format("numpy")):
        _assert_same_weights(in_memory, DVAEPurify.fit(formatted, seed=2, **TINY))


def test_the_rule_keeps_small_inputs_in_memory_and_streams_large_ones(data, monkeypatch) -> None:
    dataset = TensorDataset(*data)
    assert isinstance(training_set(dataset), TensorSet)
    assert isinstance(training_set(data, stream=None), TensorSet)
    monkeypatch.setattr(streamed, "IN_MEMORY_BYTES", 72 * 256 - 1)  # one byte less than the uint8 images
    assert isinstance(training_set(dataset), StreamedSet)
    assert isinstance(training_set(data), TensorSet)  # the pair form is in memory already
    assert isinstance(training_set(Stream(list(zip(*data))), stream=False), TensorSet)


# --------------------------------------------------------------------------- bad input


class _Items(Dataset):
    def __init__(self, items: list, kill_at: int | None = None) -> None:
        self.items, self.kill_at = items, kill_at

    def __len__(self) -> int:
        return len(self.items)

    def __getitem__(self, index: int):
        if index == self.kill_at and torch.utils.data.get_worker_info() is not None:
            os.kill(os.getpid(), signal.SIGKILL)
        return self.items[index]


def test_mixed_sizes_name_the_item(data) -> None:
    items = [(image, int(label)) for image, label in zip(*data)]
    items[40] = (torch.zeros(1, 18, 18, dtype=torch.uint8), 0)
    with pytest.raises(ValueError, match=r"dataset item 40 has shape \(1, 18, 18\), not .*\(1, 16, 16\)"):
        DVAEPurify.fit(_Items(items), stream=True, **TINY)
    with pytest.raises(ValueError, match=r"dataset item 40 has shape \(1, 18, 18\)"):
        DVAEPurify.fit(Stream(items), **TINY)


def test_iterable_without_labels_is_named(data) -> None:
    with pytest.raises(TypeError, match="dataset item 0 must be an \\(image, label\\) pair, got Tensor"):
        DVAEPurify.fit(Stream(list(data[0])), **TINY)
    unlabelled = datasets.Dataset.from_dict({"image": data[0].numpy()}).to_iterable_dataset()
    with pytest.raises(ValueError, match=r"no label column found: looked for .* in columns \['image'\]"):
        DVAEPurify.fit(unlabelled, **TINY)


def test_a_dead_worker_is_reported(data) -> None:
    items = [(image, int(label)) for image, label in zip(*data)]
    with pytest.raises(RuntimeError, match="DataLoader worker process died while reading the dataset .* fewer"):
        DVAEPurify.fit(_Items(items, kill_at=50), stream=True, **TINY)


def test_a_failing_item_is_named(data) -> None:
    class Broken(_Items):
        def __getitem__(self, index: int):
            if index == 33:
                raise OSError("disk read error")
            return super().__getitem__(index)

    with pytest.raises(RuntimeError, match="reading dataset item 33 failed: OSError: disk read error"):
        DVAEPurify.fit(Broken([(image, int(label)) for image, label in zip(*data)]), **TINY)
