"""Input checking and conversion shared by every entry point.

Every public function that takes images or labels goes through here, so the
transform, the dataset wrapper, the baselines and the CLI reject bad input the
same way and with the same words.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import torch
from PIL import Image

ImageInput = Any  # tensor (CHW / NCHW), PIL image, numpy array, or a sequence of those

# Channel mismatches are never fixed silently: the user converts explicitly.
_CONVERSION_HINTS = {
    (1, 3): "; convert grayscale images to RGB explicitly, e.g. v2.Grayscale(num_output_channels=3) "
    "or PIL's image.convert('RGB')",
    (3, 1): "; convert RGB images to grayscale explicitly, e.g. v2.Grayscale() or PIL's image.convert('L')",
}


def _pil_to_tensor(image: Image.Image) -> torch.Tensor:
    array = np.asarray(image)
    if array.ndim == 2:
        array = array[:, :, None]
    return torch.from_numpy(array.copy()).permute(2, 0, 1)


def _as_tensor(images: ImageInput, name: str) -> torch.Tensor:
    if isinstance(images, torch.Tensor):
        return images.as_subclass(torch.Tensor)
    if isinstance(images, Image.Image):
        return _pil_to_tensor(images)
    if isinstance(images, np.ndarray):
        return torch.from_numpy(images)
    if isinstance(images, Sequence) and len(images) > 0 and not isinstance(images, str):
        parts = [_as_tensor(item, name) for item in images]
        shapes = {tuple(part.shape) for part in parts}
        if len(shapes) != 1:
            raise ValueError(f"{name}: all images must have the same shape, got {sorted(shapes)}")
        return torch.stack(parts)
    if isinstance(images, Sequence) and len(images) == 0:
        raise ValueError(f"{name}: got an empty sequence, expected at least one image")
    raise TypeError(
        f"{name}: expected a torch.Tensor, PIL.Image, numpy array or a sequence of them, "
        f"got {type(images).__name__}"
    )


def to_float_images(
    images: ImageInput,
    *,
    channels: int | None = None,
    image_size: int | None = None,
    name: str = "images",
) -> tuple[torch.Tensor, bool]:
    """Convert images to a float32 NCHW batch in [0, 1] and check them.

    Accepts a CHW or NCHW tensor (uint8, or floating point in [0, 1]), a PIL
    image, a numpy array (CHW/NCHW), or a sequence of PIL images / CHW tensors.
    Returns ``(batch, was_single)``, where ``was_single`` says the input held one
    image without a batch dimension. Raises ``ValueError``/``TypeError`` naming
    the problem and the expected value.
    """
    tensor = _as_tensor(images, name)
    if tensor.ndim not in (3, 4):
        raise ValueError(
            f"{name}: expected a CHW image or an NCHW batch, got a tensor of rank {tensor.ndim} "
            f"with shape {tuple(tensor.shape)}"
        )
    was_single = tensor.ndim == 3
    batch = tensor.unsqueeze(0) if was_single else tensor
    if batch.shape[0] == 0:
        raise ValueError(f"{name}: the batch is empty, expected at least one image")
    if batch.dtype == torch.uint8:
        batch = batch.float().div_(255.0)
    elif batch.is_floating_point():
        batch = batch.float()
        if not torch.isfinite(batch).all():
            raise ValueError(f"{name}: contains NaN or infinite values")
        low, high = batch.min().item(), batch.max().item()
        if low < 0.0 or high > 1.0:
            raise ValueError(
                f"{name}: float images must lie in [0, 1], got values in [{low:.4g}, {high:.4g}]; "
                "pass uint8 images or divide by 255"
            )
    else:
        raise TypeError(f"{name}: expected uint8 or floating point images, got dtype {batch.dtype}")
    if channels is not None and batch.shape[1] != channels:
        raise ValueError(
            f"{name}: expected {channels} channel(s) (NCHW layout), got {batch.shape[1]} "
            f"in shape {tuple(batch.shape)}{_CONVERSION_HINTS.get((batch.shape[1], channels), '')}"
        )
    if image_size is not None and tuple(batch.shape[-2:]) != (image_size, image_size):
        raise ValueError(
            f"{name}: expected {image_size}x{image_size} images, got "
            f"{batch.shape[-2]}x{batch.shape[-1]}"
        )
    return batch, was_single


def to_labels(labels: Any, num_images: int, num_classes: int, *, name: str = "labels") -> torch.Tensor:
    """Convert labels to an int64 tensor of length ``num_images`` in ``[0, num_classes)``."""
    if isinstance(labels, (int, np.integer)):
        labels = [int(labels)]
    tensor = torch.as_tensor(labels)
    if tensor.ndim == 0:
        tensor = tensor.reshape(1)
    if tensor.is_floating_point() or tensor.is_complex() or tensor.dtype == torch.bool:
        raise TypeError(f"{name}: expected integer class labels, got dtype {tensor.dtype}")
    if tensor.ndim != 1:
        raise ValueError(f"{name}: expected a 1-D sequence of labels, got shape {tuple(tensor.shape)}")
    if tensor.numel() != num_images:
        raise ValueError(f"{name}: got {tensor.numel()} labels for {num_images} images")
    tensor = tensor.long()
    if tensor.numel() and (tensor.min() < 0 or tensor.max() >= num_classes):
        raise ValueError(
            f"{name}: labels must lie in [0, {num_classes}), got values in "
            f"[{int(tensor.min())}, {int(tensor.max())}]"
        )
    return tensor
