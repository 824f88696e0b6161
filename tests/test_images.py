"""Image conversion and layouts, and the storage precision of purified images."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image

from dvae_transform.images import (
    apply_to_batch,
    batch_layout,
    from_nchw,
    image_layout,
    image_to_chw,
    read_image_file,
    to_float_images,
    to_nchw,
)
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


# ----------------------------------------------------------------------------- PIL modes, 16-bit, numpy layouts

GRAY = np.random.default_rng(1).integers(0, 256, (6, 7), dtype=np.uint8)
RGB = np.random.default_rng(2).integers(0, 256, (6, 7, 3), dtype=np.uint8)


def palette_image(palette: list[int], levels: int = 16) -> Image.Image:
    """Palette indices ``GRAY % levels`` with ``palette``."""
    image = Image.fromarray(GRAY % levels).convert("P")
    image.putpalette(palette)
    return image


def with_alpha(image: Image.Image, alpha: int) -> Image.Image:
    image = image.copy()
    image.putalpha(Image.new("L", image.size, alpha))
    return image


def test_gray_palette_images_are_read_as_their_gray_levels_not_their_indices() -> None:
    image = palette_image([level * 17 for level in range(16) for _ in "rgb"])
    chw = image_to_chw(image)
    assert chw.shape == (1, 6, 7) and torch.equal(chw[0], torch.from_numpy(GRAY % 16 * 17))
    assert torch.equal(to_float_images(image), torch.from_numpy(GRAY % 16 * 17)[None, None] / 255)


def test_colour_palette_images_are_read_as_rgb() -> None:
    image = palette_image([value for level in range(16) for value in (level * 17, 255 - level * 17, 7)])
    assert torch.equal(image_to_chw(image), torch.from_numpy(np.array(image.convert("RGB"))).permute(2, 0, 1))


@pytest.mark.parametrize("mode", ["YCbCr", "HSV", "LAB", "CMYK"])
def test_other_colour_spaces_are_converted_to_rgb(mode: str) -> None:
    image = Image.fromarray(RGB).convert(mode)
    chw = image_to_chw(image)
    expected = np.array(image.convert("RGB"))
    assert chw.shape == (3, 6, 7) and torch.equal(chw, torch.from_numpy(expected).permute(2, 0, 1))
    if mode != "LAB":  # Pillow's 8-bit LAB loses more; all come back close to the original colours
        assert np.abs(expected.astype(int) - RGB).max() <= 8


@pytest.mark.parametrize(
    ("image", "expected"),
    [
        (Image.fromarray(GRAY > 127), (GRAY > 127).astype(np.uint8) * 255),
        (with_alpha(Image.fromarray(GRAY), 255), GRAY),
        (with_alpha(Image.fromarray(RGB), 255), RGB),
        (Image.fromarray(RGB).convert("RGBX"), RGB),
        (with_alpha(palette_image([level * 17 for level in range(16) for _ in "rgb"]).convert("PA"), 255),
         GRAY % 16 * 17),
    ],
    ids=["1", "LA-opaque", "RGBA-opaque", "RGBX", "PA-opaque"],
)
def test_modes_read_without_loss(image: Image.Image, expected: np.ndarray) -> None:
    expected = torch.from_numpy(expected)
    assert torch.equal(image_to_chw(image), expected[None] if expected.ndim == 2 else expected.permute(2, 0, 1))


@pytest.mark.parametrize("mode", ["I;16", "I;16B"])
def test_sixteen_bit_images_are_scaled_by_their_full_range(mode: str) -> None:
    values = np.linspace(0, 65535, 42).astype(np.uint16).reshape(6, 7)
    image = Image.frombytes(mode, (7, 6), values.astype(">u2" if mode == "I;16B" else "<u2").tobytes())
    expected = torch.from_numpy(values.astype(np.float32) / 65535)[None, None]
    assert torch.equal(to_float_images(image), expected)
    assert torch.equal(to_float_images(values[None]), expected)  # a uint16 array or tensor alike
    assert torch.equal(to_float_images(torch.from_numpy(values)[None]), expected)


def test_images_of_different_bit_depths_each_get_their_own_scale() -> None:
    batch = to_float_images([Image.fromarray(GRAY), Image.fromarray(GRAY.astype(np.uint16) * 257)])
    assert batch.dtype == torch.float32 and torch.allclose(batch[0], batch[1], atol=1e-6)


def test_sixteen_bit_png_file_is_read_at_sixteen_bits(tmp_path) -> None:
    values = np.linspace(0, 65535, 42).astype(np.uint16).reshape(6, 7)
    Image.fromarray(values).save(tmp_path / "deep.png")
    chw = read_image_file(tmp_path / "deep.png")
    assert chw.dtype == torch.uint16 and torch.equal(chw[0].int(), torch.from_numpy(values.astype(np.int32)))


@pytest.mark.parametrize("layout", ["HW", "HWC", "CHW", "NHWC", "NCHW"])
def test_numpy_images_in_any_layout(layout: str) -> None:
    nchw = np.random.default_rng(3).integers(0, 256, (2, 3, 6, 7), dtype=np.uint8)
    array = {"HW": nchw[0, 0], "HWC": nchw[0].transpose(1, 2, 0), "CHW": nchw[0],
             "NHWC": nchw.transpose(0, 2, 3, 1), "NCHW": nchw}[layout]
    expected = torch.from_numpy({"HW": nchw[:1, :1], "HWC": nchw[:1], "CHW": nchw[:1]}.get(layout, nchw)) / 255
    assert torch.equal(to_float_images(array), expected)
    big_endian = to_float_images(array.astype(np.float64).astype(">f8") / 255)
    assert torch.allclose(big_endian, expected)
