"""Images in, checked: conversion to float NCHW in [0, 1], array layouts, labels.

Every public function that takes images or labels goes through here, so the transform, the dataset
wrapper, the baselines, the attacks and the command line accept the same inputs and reject bad ones
with the same words. Array layouts (``HW``, ``CHW``, ``HWC`` and their batches) are told apart here
too, for the dataset formats of the command line and for Hugging Face array columns.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
import torch
from PIL import Image

from .precision import decode
from .validation import InputTypeError

ImageInput = Any  # tensor (CHW / NCHW), PIL image, numpy array, or a sequence of those

CHANNEL_COUNTS = (1, 3, 4)
_GRAY_MODES = ("1", "L", "LA", "I", "I;16", "F")

# Channel mismatches are never fixed silently: the user converts explicitly.
_CONVERSION_HINTS = {
    (1, 3): "; convert grayscale images to RGB explicitly, e.g. v2.Grayscale(num_output_channels=3) "
    "or PIL's image.convert('RGB')",
    (3, 1): "; convert RGB images to grayscale explicitly, e.g. v2.Grayscale() or PIL's image.convert('L')",
}


# ----------------------------------------------------------------------------- layouts


def image_layout(shape: Sequence[int]) -> str | None:
    """The layout of one image of ``shape``: ``"HW"``, ``"CHW"`` or ``"HWC"`` (1, 3 or 4 channels), else None.

    A shape that reads both ways (``3x16x3``) is taken as CHW.
    """
    if len(shape) == 2:
        return "HW"
    if len(shape) == 3 and shape[0] in CHANNEL_COUNTS:
        return "CHW"
    if len(shape) == 3 and shape[-1] in CHANNEL_COUNTS:
        return "HWC"
    return None


def batch_layout(shape: Sequence[int], source: object) -> str:
    """``"NHW"``, ``"NCHW"`` or ``"NHWC"`` for an image batch of ``shape``; raises naming ``source`` otherwise."""
    layout = image_layout(shape[1:]) if len(shape) in (3, 4) else None
    if layout is None:
        raise ValueError(
            f"{source}: images of shape {tuple(shape)} are neither NHW, NCHW nor NHWC with 1, 3 or 4 channels"
        )
    return "N" + layout


def to_nchw(array: np.ndarray, layout: str) -> np.ndarray:
    """A batch in ``layout`` (``NHW``, ``NCHW`` or ``NHWC``) as an NCHW view."""
    if layout == "NHW":
        return array[:, None]
    if layout == "NHWC":
        return array.transpose(0, 3, 1, 2)
    return array


def from_nchw(array: np.ndarray, layout: str) -> np.ndarray:
    """An NCHW batch as a view in ``layout`` (``NHW``, ``NCHW`` or ``NHWC``)."""
    if layout == "NHW":
        return array[:, 0]
    if layout == "NHWC":
        return array.transpose(0, 2, 3, 1)
    return array


def image_to_chw(value: Any) -> torch.Tensor:
    """One image as a CHW tensor of its own dtype: a PIL image, or an HW / CHW / HWC array-like.

    An array of another rank, or a 3-D array that is neither layout, is returned as it is, for
    :func:`to_float_images` to report.
    """
    if isinstance(value, torch.Tensor):
        return value.as_subclass(torch.Tensor)
    array = np.asarray(value)
    layout = "HWC" if isinstance(value, Image.Image) and array.ndim == 3 else image_layout(array.shape)
    if layout is not None:
        array = to_nchw(array[None], "N" + layout)[0]
    return torch.from_numpy(np.array(array, order="C"))  # a writable copy (PIL arrays are read-only)


def open_image(path: str) -> Image.Image:
    """Open an image file as grayscale (``L``) if it has no colour, else as RGB."""
    with Image.open(path) as image:
        return image.convert("L" if image.mode in _GRAY_MODES else "RGB")


# ----------------------------------------------------------------------------- float batches


def _as_tensor(images: ImageInput, name: str) -> torch.Tensor:
    if isinstance(images, torch.Tensor):
        return images.as_subclass(torch.Tensor)
    if isinstance(images, Image.Image):
        return image_to_chw(images)
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
    raise InputTypeError(
        f"{name}: expected a torch.Tensor, PIL.Image, numpy array or a sequence of them, "
        f"got {type(images).__name__}"
    )


def _float_batch(
    images: ImageInput, channels: int | None, image_size: int | None, name: str
) -> tuple[torch.Tensor, bool]:
    """``(float32 NCHW batch in [0, 1], whether the input was one image without a batch dimension)``."""
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
        batch = decode(batch)
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
        raise InputTypeError(f"{name}: expected uint8 or floating point images, got dtype {batch.dtype}")
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


def to_float_images(
    images: ImageInput,
    *,
    channels: int | None = None,
    image_size: int | None = None,
    name: str = "images",
) -> torch.Tensor:
    """Convert images to a float32 NCHW batch in [0, 1] and check them.

    Accepts a CHW or NCHW tensor (uint8, or floating point in [0, 1]), a PIL image, a numpy array
    (CHW/NCHW), or a sequence of PIL images / CHW tensors; one image becomes a batch of one.
    Raises ``ValueError`` / :class:`~dvae_transform.validation.InputTypeError` naming the problem
    and the expected value.
    """
    return _float_batch(images, channels, image_size, name)[0]


def apply_to_batch(
    function: Callable[[torch.Tensor], torch.Tensor],
    images: ImageInput,
    *,
    channels: int | None = None,
    image_size: int | None = None,
    name: str = "images",
) -> torch.Tensor:
    """Batch in, same shape out: ``function`` on the checked float NCHW batch of ``images``.

    One CHW image gives one CHW image back; a batch gives a batch.
    """
    batch, was_single = _float_batch(images, channels, image_size, name)
    out = function(batch)
    return out[0] if was_single else out


def to_labels(labels: Any, num_images: int, num_classes: int, *, name: str = "labels") -> torch.Tensor:
    """Convert labels to an int64 tensor of length ``num_images`` in ``[0, num_classes)``."""
    if isinstance(labels, (int, np.integer)):
        labels = [int(labels)]
    tensor = torch.as_tensor(labels)
    if tensor.ndim == 0:
        tensor = tensor.reshape(1)
    if tensor.is_floating_point() or tensor.is_complex() or tensor.dtype == torch.bool:
        raise InputTypeError(f"{name}: expected integer class labels, got dtype {tensor.dtype}")
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
