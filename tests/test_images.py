"""Image conversion and layouts, and the storage precision of purified images."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image

from dvae_transform.images import apply_to_batch, batch_layout, from_nchw, image_layout, image_to_chw, to_nchw
from dvae_transform.precision import as_uint8, decode, encode, quantize


def test_layouts_are_told_apart_and_converted() -> None:
    assert [image_layout(shape) for shape in [(8, 8), (3, 8, 8), (8, 8, 1), (8, 8, 8)]] == ["HW", "CHW", "HWC", None]
    assert batch_layout((2, 8, 8, 3), "x") == "NHWC" and batch_layout((2, 8, 8), "x") == "NHW"
    with pytest.raises(ValueError, match="neither NHW, NCHW nor NHWC"):
        batch_layout((2, 8, 8, 8), "x.npz")
    array = np.arange(2 * 3 * 4 * 5).reshape(2, 4, 5, 3)
    assert to_nchw(array, "NHWC").shape == (2, 3, 4, 5)
    np.testing.assert_array_equal(from_nchw(to_nchw(array, "NHWC"), "NHWC"), array)


def test_one_image_becomes_chw_whatever_it_came_as() -> None:
    pixels = np.random.default_rng(0).integers(0, 256, (6, 7, 3), dtype=np.uint8)
    expected = torch.from_numpy(pixels).permute(2, 0, 1)
    for value in (Image.fromarray(pixels), pixels, pixels.transpose(2, 0, 1)):
        chw = image_to_chw(value)
        assert chw.dtype == torch.uint8 and torch.equal(chw, expected)
    assert image_to_chw(Image.fromarray(pixels[..., 0])).shape == (1, 6, 7)


def test_batch_in_same_shape_out() -> None:
    images = torch.rand(4, 1, 8, 8)
    assert torch.equal(apply_to_batch(lambda batch: 1 - batch, images), 1 - images)
    single = apply_to_batch(lambda batch: batch.flip(0), images[2])
    assert single.shape == (1, 8, 8) and torch.equal(single, images[2])
    assert torch.equal(apply_to_batch(lambda batch: batch, encode(images)), decode(encode(images)))


def test_storage_precision_round_trips() -> None:
    images = torch.rand(3, 1, 4, 4)
    stored = encode(images)
    assert stored.dtype == torch.uint8 and torch.equal(decode(stored), quantize(images))
    assert torch.equal(as_uint8(stored), stored)
    assert (as_uint8(encode(images, "float16")).int() - stored.int()).abs().max() <= 1
    assert decode(encode(images, "float16")).dtype == torch.float32
