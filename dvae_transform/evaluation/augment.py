"""The victims' data augmentation, on whole batches on their device.

Every function takes a float NCHW batch and two generators, ``generator`` (on the CPU) and
``device_generator`` (on the batch's device), and uses the one it needs, so that drawing the
augmentation never waits for the device.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F


def random_shift(batch: torch.Tensor, *, generator: torch.Generator, device_generator: torch.Generator,
                 pad: int = 2) -> torch.Tensor:
    """Shift the whole batch by one random offset of up to ``pad`` pixels each way (zero fill)."""
    padded = F.pad(batch, (pad,) * 4)
    dx, dy = torch.randint(0, 2 * pad + 1, (2,), generator=generator).tolist()
    return padded[..., dy : dy + batch.shape[-2], dx : dx + batch.shape[-1]]


def crop_flip(batch: torch.Tensor, *, generator: torch.Generator, device_generator: torch.Generator,
              padding: int = 4) -> torch.Tensor:
    """Per image: a random crop of the zero-padded image (torchvision's ``RandomCrop(size, padding)``)
    and a horizontal flip with probability 1/2, as one gather on the device.

    The result is laid out channels-last in memory.
    """
    count, _, height, width = batch.shape
    device = batch.device
    padded = F.pad(batch, (padding,) * 4)
    offsets = torch.randint(0, 2 * padding + 1, (2, count, 1), generator=device_generator, device=device)
    flip = torch.rand(count, 1, generator=device_generator, device=device) < 0.5
    rows = offsets[0] + torch.arange(height, device=device)
    columns = torch.arange(width, device=device)
    columns = offsets[1] + torch.where(flip, width - 1 - columns, columns)
    images = torch.arange(count, device=device)[:, None, None]
    return padded[images, :, rows[:, :, None], columns[:, None, :]].permute(0, 3, 1, 2)  # (N, H, W, C) -> NCHW
