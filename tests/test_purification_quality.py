"""A short fit on a set poisoned with a known class-wise pattern removes part of it."""

from __future__ import annotations

import torch
import torch.nn.functional as F

from dvae_transform import DVAEPurify
from dvae_transform.purify import remove_perturbation
from dvae_transform.training.losses import psnr

NUM_CLASSES = 4


def smooth_blobs(count: int, size: int = 16, seed: int = 0) -> torch.Tensor:
    """Structured clean images: one Gaussian blob each, at a random place and scale."""
    generator = torch.Generator().manual_seed(seed)
    centres = torch.rand(count, 2, generator=generator) * (size - 6) + 3
    radii = torch.rand(count, 1, 1, generator=generator) * 2 + 2
    grid = torch.arange(size, dtype=torch.float32)
    rows, cols = torch.meshgrid(grid, grid, indexing="ij")
    distance = (rows - centres[:, 0, None, None]) ** 2 + (cols - centres[:, 1, None, None]) ** 2
    return (torch.exp(-distance / (2 * radii**2)) * 0.6 + 0.2).unsqueeze(1)


def classwise_patches(eps: float, size: int = 16, seed: int = 5) -> torch.Tensor:
    """One +-eps pattern of 4x4-pixel cells per class."""
    signs = torch.sign(torch.randn(NUM_CLASSES, 1, 4, 4, generator=torch.Generator().manual_seed(seed)))
    return F.interpolate(signs, size=size) * eps


def _class_means(values: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    means = torch.stack([values[labels == k].mean(0) for k in range(NUM_CLASSES)])
    return (means - means.mean(0)).flatten(1)  # the class-specific part only


def test_short_fit_moves_poisoned_images_towards_clean_ones() -> None:
    clean = smooth_blobs(512)
    labels = torch.arange(512) % NUM_CLASSES
    pattern = classwise_patches(24 / 255)
    poisoned = (clean + pattern[labels]).clamp(0, 1)
    purifier = DVAEPurify.fit(
        (poisoned, labels), epochs=15, width=16, latent_dim=32, batch_size=32, progress=False, seed=0
    )
    purified = purifier.purify(poisoned, labels)
    assert psnr(purified, clean) > psnr(poisoned, clean) + 1.0

    estimate = poisoned - remove_perturbation(purifier.stage1, poisoned, labels)
    truth = poisoned - clean
    correlation = F.cosine_similarity(_class_means(estimate, labels), _class_means(truth, labels))
    assert torch.all(correlation > 0.3), correlation
