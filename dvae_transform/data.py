"""Dataset adapters: torch ``Dataset``, Hugging Face ``datasets.Dataset`` and tensor pairs."""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
from PIL import Image

from ._checks import to_float_images

IMAGE_COLUMNS = ("image", "img", "pixel_values")
LABEL_COLUMNS = ("label", "labels", "fine_label")


def is_hf_dataset(data: object) -> bool:
    """True for a Hugging Face ``datasets.Dataset``."""
    import datasets

    return isinstance(data, datasets.Dataset)


def _pick_column(columns: list[str], requested: str | None, candidates: tuple[str, ...], role: str) -> str:
    if requested is not None:
        if requested not in columns:
            raise ValueError(f"{role} column {requested!r} not found; the dataset has columns {columns}")
        return requested
    for name in candidates:
        if name in columns:
            return name
    raise ValueError(
        f"no {role} column found: looked for {list(candidates)} in columns {columns}; "
        f"name it with {role}_column="
    )


def hf_columns(dataset: Any, image_column: str | None, label_column: str | None) -> tuple[str, str]:
    """The (image, label) column names of a Hugging Face dataset, defaults resolved."""
    columns = list(dataset.column_names)
    return (
        _pick_column(columns, image_column, IMAGE_COLUMNS, "image"),
        _pick_column(columns, label_column, LABEL_COLUMNS, "label"),
    )


def _array_to_chw(value: Any) -> torch.Tensor:
    """One image from PIL, or an HWC / HW / CHW array-like, as a CHW tensor."""
    if isinstance(value, Image.Image):
        value = np.asarray(value)
    array = np.asarray(value)
    if array.ndim == 2:
        array = array[None]
    elif array.ndim == 3 and array.shape[-1] in (1, 3, 4) and array.shape[0] not in (1, 3, 4):
        array = np.moveaxis(array, -1, 0)
    return torch.from_numpy(np.ascontiguousarray(array))


def hf_batch_to_tensors(images: list[Any], name: str = "images") -> torch.Tensor:
    """A column slice of a Hugging Face dataset (PIL images or arrays) as float NCHW in [0, 1]."""
    return to_float_images([_array_to_chw(value) for value in images], name=name)[0]


def _split_item(item: Any, index: int) -> tuple[Any, Any]:
    if not isinstance(item, (tuple, list)) or len(item) < 2:
        raise TypeError(f"dataset item {index} must be an (image, label) pair, got {type(item).__name__}")
    return item[0], item[1]


def _label_value(label: Any, index: int) -> int:
    if isinstance(label, torch.Tensor) and label.numel() == 1 and not label.is_floating_point():
        return int(label.item())
    if isinstance(label, (int, np.integer)) and not isinstance(label, bool):
        return int(label)
    raise TypeError(f"dataset item {index}: label must be an integer, got {label!r}")


def load_images_and_labels(
    data: Any,
    *,
    image_column: str | None = None,
    label_column: str | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Materialise ``data`` as (float NCHW images in [0, 1], int64 labels).

    ``data`` is an ``(images, labels)`` pair of tensors/arrays, a Hugging Face
    ``datasets.Dataset`` (columns picked by name, defaulting to the usual ones),
    or a torch ``Dataset`` whose items are ``(image, label)`` with PIL or tensor images.
    """
    if isinstance(data, (tuple, list)) and len(data) == 2 and not isinstance(data[0], (int, np.integer)):
        images, labels = to_float_images(data[0])[0], torch.as_tensor(data[1])
    elif is_hf_dataset(data):
        image_name, label_name = hf_columns(data, image_column, label_column)
        if len(data) == 0:
            raise ValueError("the dataset is empty")
        images = hf_batch_to_tensors(data[image_name])
        labels = torch.as_tensor(data[label_name])
    elif hasattr(data, "__getitem__") and hasattr(data, "__len__"):
        if len(data) == 0:
            raise ValueError("the dataset is empty")
        pairs = [_split_item(data[index], index) for index in range(len(data))]
        images = to_float_images([_array_to_chw(image) if not isinstance(image, torch.Tensor) else image
                                  for image, _ in pairs])[0]
        labels = torch.tensor([_label_value(label, index) for index, (_, label) in enumerate(pairs)])
    else:
        raise TypeError(
            "data must be an (images, labels) pair, a torch Dataset of (image, label) items "
            f"or a datasets.Dataset, got {type(data).__name__}"
        )
    if labels.ndim != 1 or labels.numel() != images.shape[0]:
        raise ValueError(f"got {labels.numel()} labels for {images.shape[0]} images")
    return images, labels
