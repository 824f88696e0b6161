"""Input adapters: training data as ``(float NCHW images in [0, 1], int64 labels)``.

Three kinds of input are read alike: an ``(images, labels)`` pair of tensors or arrays, a torch
``Dataset`` of ``(image, label)`` items (PIL or tensor images) and a Hugging Face ``datasets.Dataset``
(image and label columns found by name).
"""

from __future__ import annotations

import sys
from typing import Any

import numpy as np
import torch

from ..fingerprint import fingerprint
from ..images import image_to_chw, to_float_images
from ..validation import InputTypeError

IMAGE_COLUMNS = ("image", "img", "pixel_values")
LABEL_COLUMNS = ("label", "labels", "fine_label")


def is_hf_dataset(data: object) -> bool:
    """True for a Hugging Face ``datasets.Dataset`` (without importing ``datasets`` when nobody has)."""
    datasets = sys.modules.get("datasets")
    return datasets is not None and isinstance(data, datasets.Dataset)


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


def _split_item(item: Any, index: int) -> tuple[Any, Any]:
    if not isinstance(item, (tuple, list)) or len(item) < 2:
        raise InputTypeError(f"dataset item {index} must be an (image, label) pair, got {type(item).__name__}")
    return item[0], item[1]


def _label_value(label: Any, index: int) -> int:
    if isinstance(label, torch.Tensor) and label.numel() == 1 and not label.is_floating_point():
        return int(label.item())
    if isinstance(label, (int, np.integer)) and not isinstance(label, bool):
        return int(label)
    raise InputTypeError(f"dataset item {index}: label must be an integer, got {label!r}")


def _is_pair(data: Any) -> bool:
    return isinstance(data, (tuple, list)) and len(data) == 2 and not isinstance(data[0], (int, np.integer))


class Source:
    """Reads ``(float NCHW images in [0, 1], int64 labels)`` slices from any supported input."""

    def __init__(self, data: Any, *, image_column: str | None = None, label_column: str | None = None) -> None:
        self.data = data
        self.columns: tuple[str, str] | None = None
        self._scans: dict[int, tuple[list[str], torch.Tensor]] = {}
        if _is_pair(data):
            self._images = to_float_images(data[0])
            self._labels = torch.as_tensor(data[1])
            if self._labels.ndim != 1 or self._labels.numel() != self._images.shape[0]:
                raise ValueError(f"got {self._labels.numel()} labels for {self._images.shape[0]} images")
        elif is_hf_dataset(data):
            self.columns = hf_columns(data, image_column, label_column)
        elif not (hasattr(data, "__getitem__") and hasattr(data, "__len__")):
            raise InputTypeError(
                "data must be an (images, labels) pair, a torch Dataset of (image, label) items "
                f"or a datasets.Dataset, got {type(data).__name__}"
            )
        if len(self) == 0:
            raise ValueError("the dataset is empty")

    def __len__(self) -> int:
        return len(self._labels) if _is_pair(self.data) else len(self.data)

    def read(self, start: int, stop: int) -> tuple[torch.Tensor, torch.Tensor]:
        """Items ``start:stop`` as (float NCHW images, int64 labels)."""
        name = f"dataset items {start}-{stop - 1}"
        if _is_pair(self.data):
            return self._images[start:stop], self._labels[start:stop]
        if self.columns is not None:
            image_name, label_name = self.columns
            batch = self.data[start:stop]
            images = to_float_images([image_to_chw(value) for value in batch[image_name]], name=name)
            return images, torch.as_tensor(batch[label_name])
        pairs = [_split_item(self.data[index], index) for index in range(start, stop)]
        images = [image_to_chw(image) for image, _ in pairs]
        labels = torch.tensor([_label_value(label, start + offset) for offset, (_, label) in enumerate(pairs)])
        return to_float_images(images, name=name), labels

    def _scan(self, chunk: int) -> tuple[list[str], torch.Tensor]:
        """One pass in chunks: a digest of each chunk's images and labels, and all labels."""
        if chunk not in self._scans:
            digests, labels = [], []
            for start in range(0, len(self), chunk):
                images, chunk_labels = self.read(start, min(start + chunk, len(self)))
                digests.append(fingerprint(images, chunk_labels))
                labels.append(chunk_labels)
            self._scans[chunk] = digests, torch.cat(labels)
        return self._scans[chunk]

    def labels(self, chunk: int) -> torch.Tensor:
        """All labels (a Dataset of items is read once, in chunks of ``chunk``)."""
        if _is_pair(self.data):
            return self._labels
        if self.columns is not None:
            return torch.as_tensor(self.data[self.columns[1]])
        return self._scan(chunk)[1]

    def identity(self, chunk: int) -> object:
        """What identifies the input data: a Hugging Face dataset's fingerprint, else a hash of its content."""
        if self.columns is not None:
            return ["datasets", self.data._fingerprint, *self.columns]
        return ["content", self._scan(chunk)[0]]


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
    source = Source(data, image_column=image_column, label_column=label_column)
    return source.read(0, len(source))
