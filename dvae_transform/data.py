"""Datasets in and out: adapters for torch ``Dataset``, Hugging Face ``datasets.Dataset`` and
tensor pairs, and :class:`PurifiedDataset`, a dataset purified once (cached on disk) and served.
"""

from __future__ import annotations

import contextlib
import math
import os
import sys
import warnings
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import numpy as np
import torch
from PIL import Image
from torch.utils.data import Dataset
from torchvision.transforms.v2 import functional as F
from tqdm.auto import tqdm

from ._checks import to_float_images, to_labels
from .cache import STORAGE_DTYPES, CacheMissError, TensorCache, decode, encode, fingerprint, open_cache
from .distributed import broadcast, gather, is_main_process, share, wait_for_everyone
from .purify import DEFAULT_BATCH_SIZE

if TYPE_CHECKING:
    import datasets
    from accelerate import Accelerator

    from .transforms import DVAEPurify

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


def _array_to_chw(value: Any) -> torch.Tensor:
    """One image from PIL, or an HWC / HW / CHW array-like, as a CHW tensor."""
    if isinstance(value, Image.Image):
        value = np.asarray(value)
    array = np.asarray(value)
    if array.ndim == 2:
        array = array[None]
    elif array.ndim == 3 and array.shape[-1] in (1, 3, 4) and array.shape[0] not in (1, 3, 4):
        array = np.moveaxis(array, -1, 0)
    return torch.from_numpy(np.array(array, order="C"))  # a writable copy (PIL arrays are read-only)


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


def _is_pair(data: Any) -> bool:
    return isinstance(data, (tuple, list)) and len(data) == 2 and not isinstance(data[0], (int, np.integer))


class _Source:
    """Reads ``(float NCHW images in [0, 1], int64 labels)`` slices from any supported input."""

    def __init__(self, data: Any, *, image_column: str | None = None, label_column: str | None = None) -> None:
        self.data = data
        self.columns: tuple[str, str] | None = None
        self._scans: dict[int, tuple[list[str], torch.Tensor]] = {}
        if _is_pair(data):
            self._images = to_float_images(data[0])[0]
            self._labels = torch.as_tensor(data[1])
            if self._labels.ndim != 1 or self._labels.numel() != self._images.shape[0]:
                raise ValueError(f"got {self._labels.numel()} labels for {self._images.shape[0]} images")
        elif is_hf_dataset(data):
            self.columns = hf_columns(data, image_column, label_column)
        elif not (hasattr(data, "__getitem__") and hasattr(data, "__len__")):
            raise TypeError(
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
            return hf_batch_to_tensors(batch[image_name], name=name), torch.as_tensor(batch[label_name])
        pairs = [_split_item(self.data[index], index) for index in range(start, stop)]
        images = [image if isinstance(image, torch.Tensor) else _array_to_chw(image) for image, _ in pairs]
        labels = torch.tensor([_label_value(label, start + offset) for offset, (_, label) in enumerate(pairs)])
        return to_float_images(images, name=name)[0], labels

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
    source = _Source(data, image_column=image_column, label_column=label_column)
    return source.read(0, len(source))


# ----------------------------------------------------------------------------- purified datasets


def _check_purifier(purifier: Any) -> DVAEPurify:
    from .transforms import DVAEPurify  # transforms imports this module

    if not isinstance(purifier, DVAEPurify):
        raise TypeError(f"purifier must be a DVAEPurify, got {type(purifier).__name__}")
    return purifier


def weights_hash(purifier: DVAEPurify) -> str:
    """A hash of both stages' configs and weights (parameters and buffers)."""
    stages = (purifier.stage1, purifier.stage2)
    return fingerprint([[stage.config, stage.state_dict()] for stage in stages])


def purification_fingerprint(
    data: Any,
    purifier: DVAEPurify,
    *,
    image_column: str | None = None,
    label_column: str | None = None,
    batch_size: int = DEFAULT_BATCH_SIZE,
    cache_dtype: str = "uint8",
) -> str:
    """The cache key of purifying ``data`` with ``purifier``: every cache key derives from it.

    Combines the input's identity (a Hugging Face dataset's ``_fingerprint``, else a hash of the
    images and labels read in chunks of ``batch_size``), :func:`weights_hash` and the settings that
    change the output (sampling, seed, storage dtype, shard size, image layout, library version).
    """
    from . import __version__

    purifier = _check_purifier(purifier)
    source = data if isinstance(data, _Source) else _Source(data, image_column=image_column, label_column=label_column)
    settings = {
        "version": __version__,
        "sample": purifier.sample,
        "seed": purifier.seed,
        # with sampling, the draws depend on how a shard is cut into micro-batches
        "micro_batch": purifier.batch_size if purifier.sample else None,
        "shard_size": batch_size,
        "cache_dtype": cache_dtype,
        "layout": [purifier.in_channels, purifier.image_size, purifier.num_classes],
    }
    return fingerprint(source.identity(batch_size), weights_hash(purifier), settings)


class PurifiedDataset(Dataset):
    """A dataset of ``(purified image, label)``: ``dataset`` purified once by ``purifier``, then served.

    ``dataset`` is a torch ``Dataset`` of ``(image, label)`` items (PIL or tensor images), a Hugging
    Face ``datasets.Dataset`` or an ``(images, labels)`` pair. It must be deterministic: put random
    augmentation in ``transform``, which runs on the purified float CHW tensor in [0, 1].

    The whole dataset is purified on first access (or by :meth:`prepare`), reading it in chunks of
    ``batch_size`` items; each chunk is one shard of the on-disk cache (:mod:`dvae_transform.cache`)
    under ``cache_dir`` (default ``$DVAE_TRANSFORM_CACHE``), keyed by :func:`purification_fingerprint`.
    A later run, or a run killed half-way, reuses the finished shards; processes sharing a cache
    compute each shard once. An unwritable cache directory gives a warning and no cache.
    Images are kept (and cached) at ``cache_dtype`` precision, ``"uint8"`` (8-bit levels, as the
    authors store them) or ``"float16"``, with or without a cache.

    With an ``accelerate.Accelerator`` of several processes, every process must build the dataset
    and call :meth:`prepare` (or access it): the shards are shared out, the results are gathered in
    order, and only the main process writes the cache. Purification then runs on
    ``accelerator.device``. With ``purifier.sample`` set, every shard is purified with
    ``purifier.seed``, so the output does not depend on the number of processes.

    Args:
        dataset: the (poisoned) training data.
        purifier: a fitted :class:`~dvae_transform.DVAEPurify`.
        cache_dir: cache root; overrides ``$DVAE_TRANSFORM_CACHE``.
        batch_size: items per chunk and per cache shard.
        accelerator: share the work between the processes of an Accelerate launch.
        transform: applied to each purified image when it is served.
        image_column, label_column: column names for a Hugging Face dataset.
        cache: False purifies in memory without touching the disk.
        cache_dtype: ``"uint8"`` or ``"float16"``.
        progress: show a progress bar.
    """

    def __init__(
        self,
        dataset: Any,
        purifier: DVAEPurify,
        cache_dir: str | os.PathLike | None = None,
        batch_size: int = DEFAULT_BATCH_SIZE,
        accelerator: Accelerator | None = None,
        transform: Callable[[torch.Tensor], Any] | None = None,
        image_column: str | None = None,
        label_column: str | None = None,
        cache: bool = True,
        cache_dtype: str = "uint8",
        progress: bool = True,
    ) -> None:
        if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size <= 0:
            raise ValueError(f"batch_size must be a positive int, got {batch_size!r}")
        if cache_dtype not in STORAGE_DTYPES:
            raise ValueError(f"cache_dtype must be one of {sorted(STORAGE_DTYPES)}, got {cache_dtype!r}")
        if transform is not None and not callable(transform):
            raise TypeError(f"transform must be callable, got {type(transform).__name__}")
        self.purifier = _check_purifier(purifier)
        self.source = _Source(dataset, image_column=image_column, label_column=label_column)
        self.dataset = dataset
        self.cache_dir, self.batch_size, self.accelerator = cache_dir, batch_size, accelerator
        self.transform, self.cache, self.cache_dtype, self.progress = transform, cache, cache_dtype, progress
        self.num_shards = math.ceil(len(self.source) / batch_size)
        self._key: str | None = None
        self._images: torch.Tensor | None = None  # at cache_dtype precision
        self._labels: torch.Tensor | None = None

    def __len__(self) -> int:
        return len(self.source)

    def __getitem__(self, index: int) -> tuple[Any, int]:
        self.prepare()
        image = decode(self._images[index])
        if self.transform is not None:
            image = self.transform(image)
        return image, int(self._labels[index])

    def __repr__(self) -> str:
        return (
            f"PurifiedDataset(items={len(self)}, batch_size={self.batch_size}, cache={self.cache}, "
            f"cache_dtype={self.cache_dtype!r}, prepared={self._images is not None})"
        )

    @property
    def fingerprint(self) -> str:
        """This purification's cache key (see :func:`purification_fingerprint`)."""
        if self._key is None:
            self._key = purification_fingerprint(
                self.source, self.purifier, batch_size=self.batch_size, cache_dtype=self.cache_dtype
            )
        return self._key

    @property
    def images(self) -> torch.Tensor:
        """All purified images, float32 NCHW in [0, 1] (before ``transform``)."""
        return decode(self.prepare()._images)

    @property
    def labels(self) -> torch.Tensor:
        """All labels, int64."""
        return self.prepare()._labels

    def prepare(self) -> PurifiedDataset:
        """Purify the whole dataset now (or read it from the cache); returns ``self``."""
        if self._images is not None:
            return self
        if torch.utils.data.get_worker_info() is not None:
            warnings.warn(
                "PurifiedDataset is purifying inside a DataLoader worker, so every worker does it; "
                "call .prepare() before building the DataLoader",
                RuntimeWarning,
                stacklevel=2,
            )
        labels = to_labels(self.source.labels(self.batch_size), len(self), self.purifier.num_classes)
        accelerator = self.accelerator
        if accelerator is not None:
            self.purifier.to(accelerator.device)
        cache = self._open_cache() if self.cache and is_main_process(accelerator) else None
        cached = broadcast(accelerator, cache is not None)
        with cache.lock() if cache is not None else contextlib.nullcontext():
            todo = broadcast(accelerator, cache.missing_shards() if cache is not None else range(self.num_shards))
            mine = self._purify_shards(share(accelerator, list(todo)), labels, cache)
            computed = dict(gather(accelerator, mine))
            if cache is not None:  # the main process stores what the other processes computed
                for index in computed.keys() - dict(mine).keys():
                    cache.write_shard(index, decode(computed[index]))
        wait_for_everyone(accelerator)
        if cached and cache is None:  # the other processes read what the main process wrote
            cache = self._open_cache()
        images = torch.empty((len(self), *self._item_shape), dtype=STORAGE_DTYPES[self.cache_dtype])
        for index in range(self.num_shards):
            items = self._shard_range(index)
            stored = computed.get(index)
            images[items.start : items.stop] = stored if stored is not None else self._load(cache, index, labels)
        self._images, self._labels = images, labels
        return self

    @property
    def _item_shape(self) -> tuple[int, int, int]:
        return self.purifier.in_channels, self.purifier.image_size, self.purifier.image_size

    def _shard_range(self, index: int) -> range:
        start = index * self.batch_size
        return range(start, min(start + self.batch_size, len(self)))

    def _open_cache(self) -> TensorCache | None:
        return open_cache(
            self.fingerprint,
            num_items=len(self),
            item_shape=self._item_shape,
            shard_size=self.batch_size,
            dtype=self.cache_dtype,
            root=self.cache_dir,
        )

    def _purify_shard(self, index: int, labels: torch.Tensor) -> torch.Tensor:
        items = self._shard_range(index)
        images, _ = self.source.read(items.start, items.stop)
        images = self.purifier.check_images(images, name=f"dataset items {items.start}-{items.stop - 1}")
        return encode(self.purifier.purify(images, labels[items.start : items.stop]), self.cache_dtype)

    def _purify_shards(
        self, indices: list[int], labels: torch.Tensor, cache: TensorCache | None
    ) -> list[tuple[int, torch.Tensor]]:
        """Purify the given shards; each is written to ``cache`` (if any) as soon as it is done,
        so a run killed half-way keeps its finished shards."""
        total = sum(len(self._shard_range(index)) for index in indices)
        show = self.progress and is_main_process(self.accelerator)
        results = []
        with tqdm(total=total, desc="purifying", unit="img", disable=not show) as bar:
            for index in indices:
                stored = self._purify_shard(index, labels)
                if cache is not None:
                    cache.write_shard(index, decode(stored))
                results.append((index, stored))
                bar.update(len(self._shard_range(index)))
        return results

    def _load(self, cache: TensorCache | None, index: int, labels: torch.Tensor) -> torch.Tensor:
        """Shard ``index`` from the cache, or purified again if it is not (or no longer) there."""
        if cache is not None:
            with contextlib.suppress(CacheMissError):
                return encode(cache.load_shard(index), self.cache_dtype)
        return self._purify_shard(index, labels)

    def to_hf_dataset(self) -> datasets.Dataset:
        """The source Hugging Face dataset with its image column replaced by the purified images.

        An ``Image`` column stays an ``Image`` column (PIL images at 8-bit precision, so a drop-in
        replacement); any other image column becomes float32 ``Array3D`` CHW arrays in [0, 1]. Other
        columns are kept. Built with ``Dataset.map`` under a ``new_fingerprint`` derived from
        :attr:`fingerprint`, so ``datasets``' caching, ``save_to_disk`` and ``with_format("torch")``
        work. Purifies first (see :meth:`prepare`).
        """
        import datasets

        if self.source.columns is None:
            raise TypeError(f"to_hf_dataset needs a datasets.Dataset source, got {type(self.dataset).__name__}")
        image_name = self.source.columns[0]
        as_pil = isinstance(self.dataset.features[image_name], datasets.Image)
        features = self.dataset.features.copy()
        if not as_pil:
            features[image_name] = datasets.Array3D(shape=self._item_shape, dtype="float32")
        self.prepare()

        def replace_images(batch: dict[str, list], indices: list[int]) -> dict[str, list]:
            images = decode(self._images[indices])
            if as_pil:
                batch[image_name] = [F.to_pil_image(encode(image, "uint8")) for image in images]
            else:
                batch[image_name] = list(images.numpy())
            return batch

        return self.dataset.map(
            replace_images,
            batched=True,
            with_indices=True,
            batch_size=self.batch_size,
            features=features,
            new_fingerprint=fingerprint(self.fingerprint, "to_hf_dataset", image_name, as_pil),
            desc="writing purified images",
        )
