"""Input adapters: the pair form, Hugging Face uint8 array columns, storage precision, shard readers."""

from __future__ import annotations

import datasets
import numpy as np
import pytest
import torch
from safetensors.torch import save_file
from torch.utils.data import TensorDataset
from torchvision.transforms.v2 import functional as F

from dvae_transform.data.shards import ShardReader, ShardReadError
from dvae_transform.data.sources import Source, is_pair, load_images_and_labels


@pytest.fixture
def uint8_images() -> torch.Tensor:
    return torch.randint(0, 256, (6, 3, 5, 5), generator=torch.Generator().manual_seed(0), dtype=torch.uint8)


def test_a_list_of_two_items_is_a_dataset_not_a_pair(uint8_images) -> None:
    items = [(uint8_images[0], 3), (uint8_images[1], 1)]
    assert not is_pair(items)
    images, labels = load_images_and_labels(items)
    assert torch.equal(images, uint8_images[:2].float() / 255) and labels.tolist() == [3, 1]


def test_the_pair_form_is_images_and_labels(uint8_images) -> None:
    labels = torch.arange(6)
    pairs = [(uint8_images, labels), [uint8_images, labels], (uint8_images.numpy(), labels.numpy()),
             (uint8_images.permute(0, 2, 3, 1).numpy(), labels.tolist())]
    for pair in pairs:
        assert is_pair(pair)
        images, read_labels = load_images_and_labels(pair)
        assert torch.equal(images, uint8_images.float() / 255) and torch.equal(read_labels, labels)
    with pytest.raises(ValueError, match="got 5 labels for 6 images"):
        Source((uint8_images, labels[:5]))


def test_uint8_images_stay_uint8_until_decoded(uint8_images) -> None:
    source = Source(TensorDataset(uint8_images, torch.arange(6)))
    stored, _ = source.read_items([4, 1])
    assert stored.dtype == torch.uint8 and torch.equal(stored, uint8_images[[4, 1]])
    pil = Source([(F.to_pil_image(image), 0) for image in uint8_images])
    assert torch.equal(pil.read_items(range(6))[0], uint8_images)
    mixed = Source([(uint8_images[0], 0), (uint8_images[1].float() / 255, 1)])
    assert torch.equal(mixed.read_items([0, 1])[0], uint8_images[:2].float() / 255)


@pytest.mark.parametrize("layout", ["CHW", "HWC"])
@pytest.mark.parametrize("format", [None, "numpy", "torch"])
def test_hf_uint8_array_column_is_read_as_uint8_levels(uint8_images, layout, format) -> None:
    arrays = uint8_images.numpy() if layout == "CHW" else uint8_images.permute(0, 2, 3, 1).numpy()
    dataset = datasets.Dataset.from_dict({"image": arrays, "label": np.arange(6)}).with_format(format)
    stored, labels = Source(dataset).read_items(range(6))
    assert stored.dtype == torch.uint8 and torch.equal(stored, uint8_images) and labels.tolist() == list(range(6))


def test_hf_int64_array_column_is_still_refused(uint8_images) -> None:
    dataset = datasets.Dataset.from_dict({"image": uint8_images.long().numpy(), "label": np.arange(6)})
    with pytest.raises(TypeError, match="dataset item 0: expected uint8, uint16 or floating point images, got .*int64"):
        Source(dataset).read_items([0])


def test_shard_reader_reads_items_across_files_and_memory(uint8_images, tmp_path) -> None:
    save_file({"images": uint8_images[:4]}, str(tmp_path / "a.safetensors"))
    reader = ShardReader([tmp_path / "a.safetensors", uint8_images[4:]], [4, 2], torch.arange(6) * 10,
                         order=torch.tensor([5, 0, 1, 2, 3, 4]))
    images, labels = reader.read_items([0, 3, 5])
    assert torch.equal(images, uint8_images[[5, 2, 4]]) and labels.tolist() == [0, 30, 50]
    (tmp_path / "a.safetensors").unlink()
    with pytest.raises(ShardReadError, match="a.safetensors"):
        ShardReader([tmp_path / "a.safetensors"], [4], torch.arange(4)).read_items([1])
