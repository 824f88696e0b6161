"""The baselines: JPEG, bit-depth, grayscale, no defense and the plain rate-constrained VAE."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from dvae_transform.config import resolve_config
from dvae_transform.evaluation.baselines import (
    Baseline,
    BitDepthReduction,
    Grayscale,
    JPEGCompression,
    NoDefense,
    PlainVAE,
)
from dvae_transform.purify import Defense
from dvae_transform.training.loop import build_model
from dvae_transform.training.losses import psnr

pytestmark = pytest.mark.filterwarnings("ignore:The image decoding and encoding:DeprecationWarning")


def _images(num: int = 4, channels: int = 3, size: int = 16) -> torch.Tensor:
    return torch.rand(num, channels, size, size, generator=torch.Generator().manual_seed(0))


BASELINES = [JPEGCompression(), BitDepthReduction(), Grayscale()]


@pytest.mark.parametrize("purifier", BASELINES, ids=lambda p: p.name)
def test_batch_and_single_image_keep_shape_and_range(purifier: Defense) -> None:
    images = _images()
    batch = purifier.purify(images)
    assert batch.shape == images.shape and batch.dtype == torch.float32
    assert batch.min() >= 0 and batch.max() <= 1
    single = purifier.purify(images[1])
    assert single.shape == images[1].shape
    torch.testing.assert_close(single, batch[1])


@pytest.mark.parametrize("purifier", BASELINES, ids=lambda p: p.name)
def test_labels_are_ignored_and_uint8_is_accepted(purifier: Defense) -> None:
    images = _images()
    assert torch.equal(purifier.purify(images, torch.arange(4)), purifier.purify(images))
    as_bytes = (images * 255).round().to(torch.uint8)
    torch.testing.assert_close(purifier.purify(as_bytes), purifier.purify(as_bytes.float() / 255))


@pytest.mark.parametrize("purifier", BASELINES, ids=lambda p: p.name)
def test_bad_input_is_named(purifier: Defense) -> None:
    with pytest.raises(ValueError, match="CHW image or an NCHW batch"):
        purifier.purify(torch.rand(16, 16))
    with pytest.raises(ValueError, match=r"\[0, 1\]"):
        purifier.purify(torch.full((1, 3, 8, 8), 3.0))
    with pytest.raises(TypeError, match="torch.Tensor, PIL.Image, numpy array"):
        purifier.purify("image.png")


def test_names() -> None:
    assert [p.name for p in BASELINES] == ["jpeg_q10", "bitdepth2", "grayscale"]
    assert JPEGCompression(quality=50).name == "jpeg_q50"
    assert BitDepthReduction(bits=4).name == "bitdepth4"


def test_baseline_needs_its_math() -> None:
    with pytest.raises(TypeError):
        Baseline()


@pytest.mark.parametrize("purifier", [*BASELINES, NoDefense()], ids=lambda p: p.name)
def test_baselines_are_purifiers_like_dvae_purify(purifier: Defense, tiny_purifier) -> None:
    for defense in (purifier, tiny_purifier):
        assert isinstance(defense.name, str) and callable(defense.purify)


def test_no_defense_returns_the_images() -> None:
    images = _images()
    assert torch.equal(NoDefense().purify(images, torch.arange(4)), images)


@pytest.mark.parametrize("channels", [1, 3])
def test_jpeg_changes_images_and_keeps_channels(channels: int) -> None:
    images = _images(channels=channels, size=32)
    purified = JPEGCompression().purify(images)
    assert purified.shape == images.shape
    assert (purified - images).abs().mean() > 0.01


def test_jpeg_lower_quality_loses_more_and_accepts_numpy() -> None:
    images = _images(size=32)
    low = (JPEGCompression(quality=10).purify(images) - images).abs().mean()
    high = (JPEGCompression(quality=95).purify(images) - images).abs().mean()
    assert low > high
    as_array = (images[0].numpy() * 255).round().astype(np.uint8)
    assert JPEGCompression().purify(as_array).shape == (3, 32, 32)


def test_jpeg_rejects_other_channel_counts_and_bad_quality() -> None:
    with pytest.raises(ValueError, match="1 or 3 channels"):
        JPEGCompression().purify(torch.rand(2, 2, 8, 8))
    with pytest.raises(ValueError, match="quality"):
        JPEGCompression(quality=0)
    with pytest.raises(TypeError, match="quality"):
        JPEGCompression(quality=10.5)


@pytest.mark.parametrize("bits", [1, 2, 3])
def test_bit_depth_leaves_at_most_two_to_the_bits_levels(bits: int) -> None:
    purified = BitDepthReduction(bits=bits).purify(_images())
    levels = purified.unique()
    assert levels.numel() <= 2**bits
    torch.testing.assert_close(levels * (2**bits - 1), (levels * (2**bits - 1)).round())


def test_bit_depth_is_close_to_the_input_and_checks_bits() -> None:
    images = _images()
    assert (BitDepthReduction(bits=2).purify(images) - images).abs().max() <= 1 / 6 + 1e-6
    with pytest.raises(ValueError, match="bits"):
        BitDepthReduction(bits=9)
    with pytest.raises(TypeError, match="bits"):
        BitDepthReduction(bits=True)


def test_grayscale_gives_equal_channels_with_luma_weights() -> None:
    images = _images()
    purified = Grayscale().purify(images)
    assert torch.equal(purified[:, 0], purified[:, 1]) and torch.equal(purified[:, 1], purified[:, 2])
    luma = 0.2989 * images[:, 0] + 0.587 * images[:, 1] + 0.114 * images[:, 2]
    torch.testing.assert_close(purified[:, 0], luma, atol=1e-5, rtol=0)


def test_grayscale_rejects_single_channel_images() -> None:
    with pytest.raises(ValueError, match="3-channel"):
        Grayscale().purify(torch.rand(2, 1, 8, 8))


# ----------------------------------------------------------------------------- PlainVAE


def _blobs(count: int, size: int = 16, seed: int = 0) -> torch.Tensor:
    """Smooth images: one Gaussian blob each, at a random place with a random width."""
    generator = torch.Generator().manual_seed(seed)
    centres = torch.rand(count, 2, generator=generator) * size
    widths = 1.5 + 2.5 * torch.rand(count, generator=generator)
    grid = torch.arange(size, dtype=torch.float32)
    rows = (grid[None, :] - centres[:, :1]) ** 2
    cols = (grid[None, :] - centres[:, 1:]) ** 2
    squared = rows[:, :, None] + cols[:, None, :]
    return torch.exp(-squared / (2 * widths[:, None, None] ** 2))[:, None]


@pytest.fixture(scope="module")
def blob_vae() -> tuple[PlainVAE, torch.Tensor]:
    images = _blobs(64)
    vae = PlainVAE.fit(images, preset="fast", epochs=10, width=8, latent_dim=8, batch_size=16, seed=0)
    return vae, images


def test_plain_vae_reconstructs_better_than_untrained(blob_vae):
    vae, images = blob_vae
    config = resolve_config("fast", width=8, latent_dim=8, seed=0)
    untrained = PlainVAE(build_model(config, in_channels=1, image_size=16, num_classes=1, seed=config.seed))

    purified = vae.purify(images)

    assert purified.shape == images.shape and purified.dtype == torch.float32
    assert 0.0 <= purified.min() and purified.max() <= 1.0
    assert psnr(purified, images) > psnr(untrained.purify(images), images) + 5.0


def test_plain_vae_ignores_labels(blob_vae):
    vae, images = blob_vae
    batch = images[:8]
    without = vae.purify(batch)
    assert torch.equal(vae.purify(batch, torch.arange(8)), without)
    assert torch.equal(vae.purify(batch, torch.zeros(8, dtype=torch.long)), without)
