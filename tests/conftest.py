"""Shared fixtures: a tiny fitted purifier and the local Hub server."""

from __future__ import annotations

import copy

import pytest
import torch
from hub_fixtures import *  # noqa: F403

from dvae_transform import DVAEPurify

# Small tensors: one thread is as fast and does not oversubscribe when tests start subprocesses.
torch.set_num_threads(1)


@pytest.fixture(autouse=True)
def _private_cache(tmp_path_factory, monkeypatch) -> None:
    """No test writes to the user's cache: the default cache root is a fresh folder per test."""
    monkeypatch.setenv("DVAE_TRANSFORM_CACHE", str(tmp_path_factory.mktemp("dvae-cache")))


def make_images(count: int, channels: int = 1, size: int = 16, num_classes: int = 4, seed: int = 0):
    """Random float images in [0, 1] and balanced labels."""
    generator = torch.Generator().manual_seed(seed)
    images = torch.rand(count, channels, size, size, generator=generator)
    labels = torch.arange(count) % num_classes
    return images, labels


@pytest.fixture(scope="session")
def tiny_data():
    """64 random 1x16x16 images with labels in [0, 4)."""
    return make_images(64)


@pytest.fixture(scope="session")
def tiny_purifier(tiny_data) -> DVAEPurify:
    """A purifier fitted for one epoch on ``tiny_data`` (1x16x16, 4 classes): fast, not useful."""
    return DVAEPurify.fit(tiny_data, epochs=1, width=8, latent_dim=8, batch_size=32, progress=False, seed=0)


@pytest.fixture(scope="session")
def other_purifier(tiny_purifier: DVAEPurify) -> DVAEPurify:
    """A copy of ``tiny_purifier`` whose stage-2 image decoder is shifted: same shapes, other outputs."""
    other = copy.deepcopy(tiny_purifier)
    with torch.no_grad():
        other.stage2.image_decoder[-2].bias.add_(0.5)
    return other
