"""Image precision (``precision.py``): 8-bit levels and the two storage dtypes."""

from __future__ import annotations

import pytest
import torch

from dvae_transform.precision import STORAGE_DTYPES, as_uint8, decode, encode, quantize


def _images(seed: int = 0) -> torch.Tensor:
    return torch.rand(4, 3, 8, 8, generator=torch.Generator().manual_seed(seed))


def test_quantize_rounds_to_the_nearest_8_bit_level_and_clamps() -> None:
    images = _images()
    quantized = quantize(images)
    levels = quantized * 255
    assert torch.allclose(levels, levels.round(), atol=1e-4)
    assert (quantized - images).abs().max() <= 0.5 / 255 + 1e-7
    assert torch.equal(quantize(quantized), quantized)
    assert quantize(torch.tensor([-0.3, 1.7])).tolist() == [0.0, 1.0]
    assert quantized.dtype == images.dtype


def test_every_8_bit_level_survives_encode_and_decode() -> None:
    levels = torch.arange(256, dtype=torch.float32) / 255
    stored = encode(levels)
    assert stored.dtype == torch.uint8 and torch.equal(stored, torch.arange(256, dtype=torch.uint8))
    assert torch.equal(decode(stored), levels)


@pytest.mark.parametrize(("dtype", "tolerance"), [("uint8", 0.5 / 255), ("float16", 2**-12)])
def test_encode_stores_at_the_dtype_and_decode_gives_float32_in_range(dtype, tolerance) -> None:
    images = _images(1)
    stored = encode(images, dtype)
    assert stored.dtype == STORAGE_DTYPES[dtype] and stored.shape == images.shape
    decoded = decode(stored)
    assert decoded.dtype == torch.float32 and 0 <= decoded.min() and decoded.max() <= 1
    assert (decoded - images).abs().max() <= tolerance + 1e-7
    if dtype == "uint8":
        assert torch.equal(decoded, quantize(images))


def test_decode_leaves_the_stored_values_as_they_are() -> None:
    stored = encode(_images(2))
    copy = stored.clone()
    decode(stored)
    assert torch.equal(stored, copy)


def test_as_uint8_keeps_uint8_and_rounds_float16_to_the_nearest_level() -> None:
    as_bytes = encode(_images(3))
    assert as_uint8(as_bytes) is as_bytes
    half = encode(_images(3), "float16")
    assert as_uint8(half).dtype == torch.uint8
    assert (as_uint8(half).int() - encode(_images(3)).int()).abs().max() <= 1  # float16 can move a tie
    assert (decode(as_uint8(half)) - decode(half)).abs().max() <= 0.5 / 255 + 1e-7
