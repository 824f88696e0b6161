"""Images in, checked: conversion to float NCHW in [0, 1], array layouts, PIL modes, labels.

Every public function that takes images or labels goes through here, so the transform, the dataset
wrapper, the trainer's input adapters, the baselines, the attacks and the command line accept the
same inputs and reject bad ones with the same words. Array layouts (``HW``, ``CHW``, ``HWC`` and their
batches) are told apart here too, for numpy images, the dataset formats of the command line and
Hugging Face array columns.

Pixel values: uint8 is scaled by 1/255, uint16 by 1/65535, floating point must already lie in
[0, 1]; every other dtype is refused. A PIL image is read by the rule of its mode
(:func:`pil_to_array`), the one place PIL modes are handled:

=========================================  ==================================================================
mode                                       read as
=========================================  ==================================================================
``1``, ``L``                               gray, 8-bit (``1`` as 0 / 255)
``P``, ``PA``                              through the palette: gray if every palette entry is gray
                                           (R = G = B), else RGB; a pixel beyond the palette is refused
``RGB``, ``RGBX``                          RGB (``X`` is padding)
``CMYK``, ``YCbCr``, ``HSV``, ``LAB``      converted to RGB by Pillow (CMYK without an ICC profile)
``LA``, ``La``, ``RGBA``, ``RGBa``, ``PA``  the alpha channel is dropped when every pixel is opaque; an image
                                           with transparent pixels is refused (its colours there are
                                           arbitrary): convert it explicitly
``I;16``, ``I;16L``, ``I;16B``, ``I;16N``  gray, 16-bit (scaled by 1/65535, never clipped to 8 bits)
``F``                                      gray, float32: must lie in [0, 1] like any float image
``I`` and any other mode                   refused with a hint (32-bit integers have no fixed range)
=========================================  ==================================================================
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from typing import Any, TypeAlias

import numpy as np
import torch
from PIL import Image

from .precision import decode
from .validation import InputTypeError, check_int

ImageLike: TypeAlias = torch.Tensor | Image.Image | np.ndarray  # one image, or a batch as one tensor or array
ImageInput: TypeAlias = ImageLike | Sequence[ImageLike]  # what the functions taking images accept

CHANNEL_COUNTS = (1, 3, 4)
_UNIT_SCALE = {torch.uint8: 255.0, torch.uint16: 65535.0}  # integer dtypes read as images, and their full scale
_AS_IS = ("L", "RGB", "F")
_TO_RGB = ("RGBX", "CMYK", "YCbCr", "HSV", "LAB")
_WITH_ALPHA = {"LA": "LA", "La": "LA", "RGBA": "RGBA", "RGBa": "RGBA"}
_SIXTEEN_BIT = ("I;16", "I;16L", "I;16B", "I;16N")

# Channel mismatches are never fixed silently: the user converts explicitly.
_CONVERSION_HINTS = {
    (1, 3): "; convert grayscale images to RGB explicitly, e.g. v2.Grayscale(num_output_channels=3) "
    "or PIL's image.convert('RGB')",
    (3, 1): "; convert RGB images to grayscale explicitly, e.g. v2.Grayscale() or PIL's image.convert('L')",
    (4, 3): "; a fourth channel is usually alpha: drop it explicitly, e.g. images[:, :3] or PIL's image.convert('RGB')",
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


# ----------------------------------------------------------------------------- PIL modes and arrays


def _through_palette(image: Image.Image, name: str) -> Image.Image:
    """A ``P`` / ``PA`` image converted through its palette: gray (L, LA) if the palette is gray, else RGB(A)."""
    colours = np.asarray(image.getpalette("RGB") or [], dtype=np.uint8).reshape(-1, 3)
    highest = int(np.asarray(image.getchannel(0)).max())
    if highest >= len(colours):
        raise ValueError(
            f"{name}: PIL image of mode {image.mode!r} uses palette index {highest} but its palette holds "
            f"{len(colours)} colour(s); give it a palette (image.putpalette) or, if the values are gray levels, "
            "pass it as mode 'L' (image.convert('L') would map them to black)"
        )
    alpha = image.mode == "PA" or image.has_transparency_data
    gray = bool((colours == colours[:, :1]).all())
    return image.convert(("LA" if alpha else "L") if gray else ("RGBA" if alpha else "RGB"))


def _drop_opaque_alpha(array: np.ndarray, mode: str, name: str) -> np.ndarray:
    transparent = int((array[..., -1] != 255).sum())
    if transparent:
        raise ValueError(
            f"{name}: PIL image of mode {mode!r} has {transparent} transparent pixel(s) of {array[..., 0].size}, "
            "whose colours are arbitrary; convert it explicitly: image.convert('RGB') (or 'L') drops the alpha "
            "channel as torchvision's ImageFolder loader does, Image.alpha_composite puts it on a background"
        )
    return array[..., :-1]


def pil_to_array(image: Image.Image, name: str = "image") -> np.ndarray:
    """A PIL image's pixels as an HW (gray) or HWC (RGB) array, by the rule of its mode (see the module docstring).

    uint8 for 8-bit modes, uint16 for the 16-bit ``I;16`` modes, float32 for ``F``. Raises ``ValueError``
    naming ``name``, the mode and the way to convert for a mode that has no faithful reading.
    """
    mode = image.mode
    if mode in ("P", "PA"):
        image = _through_palette(image, name)
    elif mode in _WITH_ALPHA:
        image = image.convert(_WITH_ALPHA[mode])
    elif mode == "1":
        image = image.convert("L")
    elif mode in _TO_RGB:
        image = image.convert("RGB")
    elif mode in _SIXTEEN_BIT:
        return np.asarray(image).astype(np.uint16)  # native byte order
    elif mode not in _AS_IS:
        raise ValueError(
            f"{name}: PIL images of mode {mode!r} have no fixed pixel range; convert explicitly to 'L' or 'RGB' "
            "(8-bit), 'I;16' (16-bit) or 'F' (floats in [0, 1]), e.g. image.convert('I;16') for 16-bit values"
        )
    array = np.asarray(image)
    return _drop_opaque_alpha(array, mode, name) if image.mode in ("LA", "RGBA") else array


def image_to_chw(value: Any, name: str = "image") -> torch.Tensor:
    """One image as a CHW tensor of its own dtype: a PIL image (:func:`pil_to_array`), or an HW / CHW / HWC array-like.

    An array of another rank, or a 3-D array that is neither layout, is returned as it is, for
    :func:`to_float_images` to report.
    """
    if isinstance(value, torch.Tensor):
        return value.as_subclass(torch.Tensor)
    array = pil_to_array(value, name) if isinstance(value, Image.Image) else _numeric(np.asarray(value), name)
    layout = "HWC" if isinstance(value, Image.Image) and array.ndim == 3 else image_layout(array.shape)
    if layout is not None:
        array = to_nchw(array[None], "N" + layout)[0]
    return torch.from_numpy(np.array(array, order="C"))  # a writable copy (PIL arrays are read-only)


@contextmanager
def _opened_image_file(path: str | os.PathLike) -> Iterator[Image.Image]:
    """The PIL image at ``path``, open; an unreadable file is a ``ValueError`` naming it (a missing one stays an
    ``OSError``)."""
    try:
        with Image.open(path) as image:
            yield image
    except (OSError, SyntaxError, Image.DecompressionBombError) as error:
        if isinstance(error, (FileNotFoundError, PermissionError)):
            raise
        raise ValueError(f"{path}: not a readable image file ({error})") from None


def read_image_file(path: str | os.PathLike) -> torch.Tensor:
    """The image file at ``path`` as a CHW tensor of its own dtype (see :func:`pil_to_array`); errors name the file."""
    with _opened_image_file(path) as image:
        image.load()
        return image_to_chw(image, name=str(path))


def image_file_mode(path: str | os.PathLike) -> str:
    """The PIL mode of the image file at ``path``, read from its header only."""
    with _opened_image_file(path) as image:
        return image.mode


def _numeric(array: np.ndarray, name: str) -> np.ndarray:
    """``array`` in native byte order; an array of non-numbers is refused."""
    if array.dtype.kind not in "biuf":
        raise InputTypeError(f"{name}: expected numeric pixel values, got a numpy array of dtype {array.dtype}")
    return array.astype(array.dtype.newbyteorder("="), copy=False)


# ----------------------------------------------------------------------------- float batches


def _as_tensor(images: ImageInput, name: str) -> torch.Tensor:
    if isinstance(images, torch.Tensor):
        return images.as_subclass(torch.Tensor)
    if isinstance(images, Image.Image):
        return image_to_chw(images, name)
    if isinstance(images, np.ndarray):
        array = _numeric(images, name)
        if array.ndim == 4:
            array = to_nchw(array, batch_layout(array.shape, name))
        return image_to_chw(array, name) if array.ndim <= 3 else torch.from_numpy(np.ascontiguousarray(array))
    if isinstance(images, Sequence) and len(images) > 0 and not isinstance(images, str):
        parts = [_as_tensor(item, f"{name}[{index}]") for index, item in enumerate(images)]
        shapes = {tuple(part.shape) for part in parts}
        if len(shapes) != 1:
            raise ValueError(f"{name}: all images must have the same shape, got {sorted(shapes)}")
        if len({part.dtype for part in parts}) > 1:  # e.g. 8- and 16-bit images: each by its own scale
            parts = [_unit_float(part, f"{name}[{index}]") for index, part in enumerate(parts)]
        return torch.stack(parts)
    if isinstance(images, Sequence) and len(images) == 0:
        raise ValueError(f"{name}: got an empty sequence, expected at least one image")
    raise InputTypeError(
        f"{name}: expected a torch.Tensor, PIL.Image, numpy array or a sequence of them, "
        f"got {type(images).__name__}"
    )


def _unit_float(images: torch.Tensor, name: str) -> torch.Tensor:
    """Pixel values as float32 in [0, 1]: uint8 / 255, uint16 / 65535, floats checked to lie in [0, 1]."""
    if images.dtype == torch.uint8:
        return decode(images)
    if images.dtype in _UNIT_SCALE:
        return images.float().div_(_UNIT_SCALE[images.dtype])
    if not images.is_floating_point():
        raise InputTypeError(
            f"{name}: expected uint8, uint16 or floating point images, got dtype {images.dtype}; "
            "convert 8-bit values with .to(torch.uint8) or scale to float in [0, 1]"
        )
    images = images.float()
    if images.numel() and not torch.isfinite(images).all():
        raise ValueError(f"{name}: contains NaN or infinite values")
    low, high = (bound.item() for bound in torch.aminmax(images)) if images.numel() else (0.0, 0.0)
    if low < 0.0 or high > 1.0:
        raise ValueError(
            f"{name}: float images must lie in [0, 1], got values in [{low:.4g}, {high:.4g}]; "
            "pass uint8 images or divide by 255"
        )
    return images


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
    if batch.numel() == 0:
        raise ValueError(f"{name}: got images of shape {tuple(batch.shape[1:])}, which hold no pixels")
    batch = _unit_float(batch, name)
    if channels is not None and batch.shape[1] != channels:
        raise ValueError(
            f"{name}: expected {channels} channel(s) (NCHW layout), got {batch.shape[1]} "
            f"in shape {tuple(batch.shape)}{_CONVERSION_HINTS.get((batch.shape[1], channels), '')}"
        )
    if image_size is not None and tuple(batch.shape[-2:]) != (image_size, image_size):
        height, width = batch.shape[-2:]
        raise ValueError(
            f"{name}: expected {image_size}x{image_size} images, got {height}x{width}; "
            f"{_size_hint(height, width, image_size)}"
        )
    return batch, was_single


def _size_hint(height: int, width: int, size: int) -> str:
    """How to bring ``height x width`` images to ``size x size``: pad when they fit centred, else resize."""
    if height == width < size and (size - height) % 2 == 0:
        return f"pad them, e.g. torchvision.transforms.v2.Pad({(size - height) // 2}) (28x28 MNIST into 32x32: Pad(2))"
    return f"resize them, e.g. torchvision.transforms.v2.Resize({size}) then v2.CenterCrop({size})"


def to_float_images(
    images: ImageInput,
    *,
    channels: int | None = None,
    image_size: int | None = None,
    name: str = "images",
) -> torch.Tensor:
    """Convert images to a float32 NCHW batch in [0, 1] and check them.

    Accepts a CHW or NCHW tensor (uint8, uint16, or floating point in [0, 1]), a PIL image (any mode
    the module docstring lists), a numpy array (HW, CHW, HWC, NCHW or NHWC; a shape that reads both
    ways is channels-first), or a sequence of those; one image becomes a batch of one.
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


def describe(value: Any) -> str:
    """``value`` in a few words for error messages: dtype and shape of a tensor or array, else type and value."""
    if isinstance(value, (torch.Tensor, np.ndarray)):
        return f"a {type(value).__name__} of dtype {value.dtype} and shape {tuple(value.shape)}"
    text = repr(value)
    return f"{type(value).__name__} ({text if len(text) <= 40 else text[:37] + '...'})"


def to_labels(labels: Any, num_images: int, num_classes: int, *, name: str = "labels") -> torch.Tensor:
    """Convert labels to an int64 tensor of length ``num_images`` in ``[0, num_classes)``.

    ``labels`` is an int (a bool is not a label), or an integer tensor, array or sequence with one
    label per image; anything else raises :class:`~dvae_transform.validation.InputTypeError` or
    ``ValueError`` naming the value and what was expected.
    """
    check_int(num_classes, "num_classes", low=1)
    expected = f"{name}: expected integer class labels (an int, or integer tensor/array/list with one per image)"
    if isinstance(labels, (int, np.integer)) and not isinstance(labels, bool):
        labels = [int(labels)]
    try:
        tensor = torch.as_tensor(labels)
    except (TypeError, ValueError, RuntimeError):  # strings, dicts, ragged lists
        raise InputTypeError(f"{expected}, got {describe(labels)}") from None
    if tensor.is_floating_point() or tensor.is_complex() or tensor.dtype == torch.bool:
        raise InputTypeError(f"{expected}, got {describe(labels)}")
    if tensor.ndim == 0:
        tensor = tensor.reshape(1)
    if tensor.ndim != 1:
        raise ValueError(f"{name}: expected a 1-D sequence of labels, got shape {tuple(tensor.shape)}")
    if tensor.numel() != num_images:
        raise ValueError(f"{name}: got {tensor.numel()} labels for {num_images} images")
    tensor = tensor.long()
    if tensor.numel() and (tensor.min() < 0 or tensor.max() >= num_classes):
        raise ValueError(
            f"{name}: class labels must lie in [0, {num_classes}) for {num_classes} classes, got values in "
            f"[{int(tensor.min())}, {int(tensor.max())}]"
        )
    return tensor
