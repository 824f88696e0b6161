"""CUDA, the convolution-based unlearnable dataset (Sadasivan et al., CVPR 2023), for :data:`~.attacks.ATTACKS`.

Unlike the other attacks this is not an additive, bounded perturbation: every image of a class is
blurred by that class's random filter, and a network learns the filter instead of the content.
The recipe follows the authors' code (github.com/vinusankars/Convolution-based-Unlearnability,
``final_filter_unlearnable.py``), re-implemented here from its description.
"""

from __future__ import annotations

from functools import partial
from typing import Any

import torch
import torch.nn.functional as F

from ..images import ImageInput
from ..validation import check_number, check_type
from .attack_runner import run_attack

CUDA_BLUR_CIFAR10 = 0.3  # the authors' blur parameter for CIFAR-10 (their default for CIFAR-100 too)
CUDA_KERNEL_SIZE = 3  # the authors' filter size
_PEAK = 1.0  # their "center parameter": the value of one filter entry, at a random position


def class_filters(
    num_classes: int, kernel_size: int, blur_parameter: float, generator: torch.Generator
) -> torch.Tensor:
    """One filter per class, shape (K, k, k): entries uniform in [0, blur_parameter], one random entry 1."""
    filters = torch.rand(num_classes, kernel_size * kernel_size, generator=generator) * blur_parameter
    peaks = torch.randint(kernel_size * kernel_size, (num_classes,), generator=generator)
    filters[torch.arange(num_classes), peaks] = _PEAK
    return filters.view(num_classes, kernel_size, kernel_size)


def _cuda_poison(
    batch: torch.Tensor,
    labels: torch.Tensor,
    num_classes: int,
    generator: torch.Generator,
    *,
    blur_parameter: float,
    kernel_size: int,
    grayscale: bool,
) -> torch.Tensor:
    count, channels, height, width = batch.shape
    filters = class_filters(num_classes, kernel_size, blur_parameter, generator).to(batch.device, batch.dtype)
    weight = filters[labels].repeat_interleave(channels, dim=0)[:, None]  # (N*C, 1, k, k): per image, per channel
    flat = batch.reshape(1, count * channels, height, width)
    blurred = F.conv2d(flat, weight, padding=kernel_size // 2, groups=count * channels).view_as(batch)
    if grayscale:
        blurred = blurred.mean(dim=1, keepdim=True).expand_as(blurred)
    peak = blurred.amax(dim=(1, 2, 3), keepdim=True).clamp_min(torch.finfo(blurred.dtype).tiny)
    return blurred / peak


def convolution_poison(
    images: ImageInput,
    labels: Any,
    *,
    num_classes: int | None = None,
    seed: int = 0,
    blur_parameter: float = CUDA_BLUR_CIFAR10,
    kernel_size: int = CUDA_KERNEL_SIZE,
    grayscale: bool = False,
    fraction: float = 1.0,
) -> torch.Tensor:
    """Class-wise random blurs (Sadasivan et al., "CUDA: Convolution-based Unlearnable Datasets", CVPR 2023).

    As in the authors' code: each class draws a ``kernel_size`` x ``kernel_size`` filter with entries
    uniform in [0, ``blur_parameter``] and then sets one entry, at a uniformly random position (not
    necessarily the centre), to 1. Every image of the class is filtered depthwise with it, the same
    filter on every channel, zero-padded so the size is kept, without bias. ``grayscale=True`` (their
    black-and-white option, off by default) then replaces every channel by the channel mean. Each
    image is finally divided by its own maximum over all channels and pixels, and clamped to [0, 1]
    (the authors store it as 8-bit pixels; here it stays float). The defaults are the published
    CIFAR-10 ones, blur parameter 0.3 and 3x3 filters; their code uses the same for CIFAR-100. One
    channel works alike. Their ``same`` switch (one filter for every class) is an ablation, left out.
    Given the number of classes and these settings, ``seed`` (the paper's private key) fixes the filters.
    """
    blur_parameter = check_number(blur_parameter, "blur_parameter", positive=True)
    check_type(kernel_size, "kernel_size", int)
    if kernel_size < 1 or kernel_size % 2 == 0:
        raise ValueError(f"kernel_size must be a positive odd int, got {kernel_size}")
    check_type(grayscale, "grayscale", bool)
    poison = partial(_cuda_poison, blur_parameter=blur_parameter, kernel_size=kernel_size, grayscale=grayscale)
    return run_attack(poison, images, labels, num_classes, seed, fraction)
