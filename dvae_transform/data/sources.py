"""Input adapters: random access to ``(image, label)`` items of any map-style input.

Three kinds of map-style input are read alike:

* the **pair form** ``(images, labels)``: a tuple (or list) of exactly two elements, the first a tensor
  or numpy array of N images, the second N labels (a tensor, an array or a sequence of ints). A list
  of ``(image, label)`` items is never the pair form, whatever its length: its first element is a
  tuple, not a tensor or array;
* a torch ``Dataset`` of ``(image, label)`` items (PIL, tensor or array images);
* a Hugging Face ``datasets.Dataset`` (image and label columns found by name). An array column whose
  feature stores ``uint8`` values is read as uint8 levels, in any format (plain lists, ``"numpy"`` or
  ``"torch"``, which hand them out as int64).

:meth:`Source.read_items` returns images as stored: uint8 levels when every image of the batch is
uint8 (PIL images, uint8 arrays), else float32 in [0, 1]; :func:`~dvae_transform.precision.decode` makes
them float. Iterable datasets have no random access: :mod:`dvae_transform.data.spool` writes them to
disk first.
"""

from __future__ import annotations

import sys
from collections.abc import Sequence
from typing import Any

import numpy as np
import torch

from ..fingerprint import fingerprint
from ..images import batch_layout, image_to_chw, to_float_images, to_nchw
from ..precision import decode
from ..validation import InputTypeError
from ..workers import worker_errors
from .loader import read_batches
from .shards import ShardReader

IMAGE_COLUMNS = ("image", "img", "pixel_values")
LABEL_COLUMNS = ("label", "labels", "fine_label")


def is_hf_dataset(data: object) -> bool:
    """True for a Hugging Face ``datasets.Dataset`` (without importing ``datasets`` when nobody has)."""
    datasets = sys.modules.get("datasets")
    return datasets is not None and isinstance(data, datasets.Dataset)


def is_hf_iterable(data: object) -> bool:
    """True for a Hugging Face ``datasets.IterableDataset`` (``load_dataset(..., streaming=True)``)."""
    datasets = sys.modules.get("datasets")
    return datasets is not None and isinstance(data, datasets.IterableDataset)


def is_iterable(data: object) -> bool:
    """True for a dataset without random access: a torch ``IterableDataset`` or a Hugging Face one."""
    return is_hf_iterable(data) or isinstance(data, torch.utils.data.IterableDataset)


def is_pair(data: object) -> bool:
    """The pair form: a tuple or list of two elements, the first a tensor or array (see the module docstring)."""
    return isinstance(data, (tuple, list)) and len(data) == 2 and isinstance(data[0], (torch.Tensor, np.ndarray))


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


def hf_columns(dataset: Any, image_column: str | None, label_column: str | None,
               columns: list[str] | None = None) -> tuple[str, str]:
    """The (image, label) column names of a Hugging Face dataset (or of ``columns``), defaults resolved."""
    columns = list(dataset.column_names) if columns is None else columns
    return (
        _pick_column(columns, image_column, IMAGE_COLUMNS, "image"),
        _pick_column(columns, label_column, LABEL_COLUMNS, "label"),
    )


def stores_uint8(feature: Any) -> bool:
    """Whether a Hugging Face column feature stores uint8 values (a ``Value``, ``List`` or ``ArrayND`` of them)."""
    while feature is not None:
        if getattr(feature, "dtype", None) == "uint8":
            return True
        feature = getattr(feature, "feature", None)
    return False


def hf_values(values: Any) -> list[Any]:
    """A Hugging Face image column's values, tensors (``with_format("torch")``) as arrays, whose layout
    (HW, CHW or HWC) is then told apart like any array's."""
    return [value.numpy() if isinstance(value, torch.Tensor) else value for value in values]


def split_item(item: Any, index: int) -> tuple[Any, Any]:
    """An item's ``(image, label)``, or an error naming the item."""
    if not isinstance(item, (tuple, list)) or len(item) < 2:
        raise InputTypeError(f"dataset item {index} must be an (image, label) pair, got {type(item).__name__}")
    return item[0], item[1]


def label_value(label: Any, index: int) -> int:
    """An item's label as an int that fits int64, or an error naming the item."""
    if isinstance(label, torch.Tensor) and label.numel() == 1 and is_integer_dtype(label.dtype):
        label = label.item()
    if not isinstance(label, (int, np.integer)) or isinstance(label, bool):
        raise InputTypeError(f"dataset item {index}: label must be an integer, got {label!r}")
    if not -(2**63) <= int(label) < 2**63:
        raise ValueError(f"dataset item {index}: label {int(label)} is not a class id (too large for int64): "
                         "labels are ints from 0 to the number of classes - 1")
    return int(label)


def is_integer_dtype(dtype: torch.dtype) -> bool:
    """Whether ``dtype`` holds integers (not floats, complex numbers or bools)."""
    return not (dtype.is_floating_point or dtype.is_complex or dtype == torch.bool)


def stack_images(values: Sequence[Any], indices: Sequence[int], expected: tuple[int, ...] | None = None,
                 uint8: bool = False) -> torch.Tensor:
    """Images as one NCHW batch at storage precision (uint8 if all are uint8, else float32 in [0, 1]).

    Every image must have the shape ``expected`` (or the first one's); an error names the item.
    ``uint8=True`` reads integer arrays as uint8 levels (their column stores uint8).
    """
    images = [image_to_chw(value, f"dataset item {index}") for value, index in zip(values, indices)]
    if uint8:
        images = [image.to(torch.uint8) if not image.is_floating_point() else image for image in images]
    reference, first = (tuple(images[0].shape), indices[0]) if expected is None else (expected, None)
    for image, index in zip(images, indices):
        if tuple(image.shape) != reference:
            of = f"item {first}'s {reference}" if first is not None else f"the first item's {reference}"
            raise ValueError(
                f"dataset item {index} has shape {tuple(image.shape)}, not {of}: all images must have one "
                "size (resize them first, e.g. torchvision.transforms.v2.Resize and CenterCrop)"
            )
    name = f"dataset items {indices[0]}-{indices[-1]}" if len(indices) > 1 else f"dataset item {indices[0]}"
    if all(image.dtype == torch.uint8 for image in images) and images[0].ndim == 3:
        return torch.stack(images)
    return to_float_images(images, name=name)


def _is_map_style(data: object) -> bool:
    return not is_iterable(data) and hasattr(data, "__getitem__") and hasattr(data, "__len__")


def _as_stored_batch(images: Any) -> torch.Tensor:
    """The pair form's images at storage precision: a uint8 batch as NCHW uint8, anything else checked as float."""
    if isinstance(images, np.ndarray) and images.dtype == np.uint8 and images.ndim == 4:
        return torch.from_numpy(np.ascontiguousarray(to_nchw(images, batch_layout(images.shape, "images"))))
    if isinstance(images, torch.Tensor) and images.dtype == torch.uint8 and images.ndim == 4:
        return images.as_subclass(torch.Tensor)
    return to_float_images(images)


class Source:
    """Reads ``(images at storage precision, int64 labels)`` from any map-style input."""

    def __init__(self, data: Any, *, image_column: str | None = None, label_column: str | None = None,
                 num_workers: int = 0) -> None:
        self.data = data
        self.num_workers = num_workers
        self.columns: tuple[str, str] | None = None
        self._uint8_column = False
        self._scans: dict[int, tuple[list[str], torch.Tensor]] = {}
        self._item_shape: tuple[int, ...] | None = None
        self.pair = is_pair(data)
        self.reader = data if isinstance(data, ShardReader) else None
        if self.pair:
            self._images = _as_stored_batch(data[0])
            self._labels = torch.as_tensor(data[1])
            if self._labels.ndim != 1 or self._labels.numel() != self._images.shape[0]:
                raise ValueError(f"got {self._labels.numel()} labels for {self._images.shape[0]} images")
        elif is_hf_dataset(data):
            self.columns = hf_columns(data, image_column, label_column)
            self._uint8_column = stores_uint8(data.features[self.columns[0]])
        elif self.reader is None and not _is_map_style(data):
            raise InputTypeError(
                "data must be an (images, labels) pair, a torch Dataset of (image, label) items "
                f"or a datasets.Dataset, got {type(data).__name__}"
            )
        if len(self) == 0:
            raise ValueError("the dataset is empty")

    def __len__(self) -> int:
        return len(self._labels) if self.pair else len(self.data)

    @property
    def item_shape(self) -> tuple[int, ...]:
        """The CHW shape of every image (the first item's; others are checked against it when read)."""
        if self._item_shape is None:
            self._item_shape = tuple(self.read_items([0])[0].shape[1:])
        return self._item_shape

    @property
    def item_bytes(self) -> int:
        """Bytes of one image as read (uint8 levels or float32)."""
        if self.pair:
            return self._images[0].nbytes
        return self.read_items([0])[0][0].nbytes

    def read_items(self, indices: Sequence[int]) -> tuple[torch.Tensor, torch.Tensor]:
        """Items ``indices`` as (images at storage precision, int64 labels)."""
        indices = [int(index) for index in indices]
        if self.reader is not None:
            return self.reader.read_items(indices)
        if self.pair:
            chosen = torch.as_tensor(indices)
            return self._images[chosen], self._labels[chosen]
        expected = self._item_shape
        if self.columns is not None:
            image_name, label_name = self.columns
            batch = self.data[indices]
            images = stack_images(hf_values(batch[image_name]), indices, expected, uint8=self._uint8_column)
            return images, torch.as_tensor(batch[label_name]).long()
        pairs = [split_item(self._get(index), index) for index in indices]
        labels = torch.tensor([label_value(label, index) for index, (_, label) in zip(indices, pairs)])
        return stack_images([image for image, _ in pairs], indices, expected), labels

    def _get(self, index: int) -> Any:
        try:
            return self.data[index]
        except Exception as error:
            raise RuntimeError(f"reading dataset item {index} failed: {type(error).__name__}: {error}") from error

    def read(self, start: int, stop: int) -> tuple[torch.Tensor, torch.Tensor]:
        """Items ``start:stop`` as (float32 NCHW images in [0, 1], int64 labels)."""
        images, labels = self.read_items(range(start, stop))
        return decode(images), labels

    def _scan(self, chunk: int) -> tuple[list[str], torch.Tensor]:
        """One pass in chunks (through DataLoader workers): a digest of each chunk, and all labels."""
        if chunk not in self._scans:
            digests, labels = [], []
            chunks = [range(start, min(start + chunk, len(self))) for start in range(0, len(self), chunk)]
            with worker_errors():
                for images, chunk_labels in read_batches(self, chunks, num_workers=self.num_workers):
                    digests.append(fingerprint(decode(images), chunk_labels))
                    labels.append(chunk_labels)
            self._scans[chunk] = digests, torch.cat(labels)
        return self._scans[chunk]

    def labels(self, chunk: int) -> torch.Tensor:
        """All labels (a Dataset of items is read once, in chunks of ``chunk``)."""
        if self.pair:
            return self._labels
        if self.reader is not None:
            return self.reader.labels
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
    """Materialise map-style ``data`` as (float NCHW images in [0, 1], int64 labels).

    ``data`` is the pair form (see the module docstring), a Hugging Face ``datasets.Dataset``
    (columns picked by name, defaulting to the usual ones), or a torch ``Dataset`` whose items are
    ``(image, label)`` with PIL or tensor images.
    """
    source = Source(data, image_column=image_column, label_column=label_column)
    return source.read(0, len(source))
