"""The calling convention every attack of :mod:`.attacks` shares: label checks, seeding, ``fraction``, clamping.

An attack states only its poison function (:data:`PoisonFn`: batch, labels, number of classes and a
local generator in; poisoned batch out) and hands it to :func:`run_attack` with the common arguments.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch

from ..images import ImageInput, apply_to_batch, to_labels
from ..validation import check_int, check_number

PoisonFn = Callable[[torch.Tensor, torch.Tensor, int, torch.Generator], torch.Tensor]


def _resolve_labels(labels: Any, num_images: int, num_classes: int | None) -> tuple[torch.Tensor, int]:
    """Validate labels; ``num_classes`` defaults to ``max(labels) + 1``."""
    if num_classes is None:
        raw = torch.as_tensor(labels)
        num_classes = max(int(raw.max()) + 1, 1) if raw.numel() and not raw.is_complex() else 1
    else:
        check_int(num_classes, "num_classes", low=1)
    return to_labels(labels, num_images, num_classes), num_classes


def _subset_mask(num_images: int, fraction: float, seed: int) -> torch.Tensor:
    """A seeded boolean mask selecting ``round(fraction * num_images)`` images."""
    order = torch.randperm(num_images, generator=torch.Generator().manual_seed(seed))
    mask = torch.zeros(num_images, dtype=torch.bool)
    mask[order[: round(fraction * num_images)]] = True
    return mask


def run_attack(
    poison: PoisonFn, images: ImageInput, labels: Any, num_classes: int | None, seed: int, fraction: float
) -> torch.Tensor:
    """Validate the common arguments, poison the batch, and keep only the chosen share."""
    check_int(seed, "seed")
    check_number(fraction, "fraction", low=0, high=1)

    def poison_batch(batch: torch.Tensor) -> torch.Tensor:
        label_tensor, classes = _resolve_labels(labels, batch.shape[0], num_classes)
        generator = torch.Generator().manual_seed(seed)
        poisoned = poison(batch, label_tensor.to(batch.device), classes, generator).clamp(0.0, 1.0)
        chosen = _subset_mask(batch.shape[0], fraction, seed).to(batch.device)
        return torch.where(chosen[:, None, None, None], poisoned, batch)

    return apply_to_batch(poison_batch, images)
