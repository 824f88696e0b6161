""":class:`PurifiedDataset`: a dataset purified once (cached on disk, shared between processes) and served."""

from __future__ import annotations

import contextlib
import math
import os
import warnings
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import torch
from torch.utils.data import Dataset
from tqdm.auto import tqdm

from ..cache.store import CacheMissError, TensorCache, open_cache
from ..distributed import broadcast, gather, is_main_process, share, wait_for_everyone
from ..fingerprint import purification_key, weights_hash
from ..images import to_labels
from ..precision import STORAGE_DTYPES, decode, encode
from ..purify import DEFAULT_BATCH_SIZE
from ..transforms import DVAEPurify
from ..validation import InputTypeError, check_choice, check_int
from .formats import replace_hf_images
from .sources import Source

if TYPE_CHECKING:
    import datasets
    from accelerate import Accelerator


class PurifiedDataset(Dataset):
    """A dataset of ``(purified image, label)``: ``dataset`` purified once by ``purifier``, then served.

    ``dataset`` is a torch ``Dataset`` of ``(image, label)`` items (PIL or tensor images), a Hugging
    Face ``datasets.Dataset`` or an ``(images, labels)`` pair. It must be deterministic: put random
    augmentation in ``transform``, which runs on the purified float CHW tensor in [0, 1].

    The whole dataset is purified on first access (or by :meth:`prepare`), reading it in chunks of
    ``batch_size`` items; each chunk is one shard of the on-disk cache (:mod:`dvae_transform.cache.store`)
    under ``cache_dir`` (default ``$DVAE_TRANSFORM_CACHE``), keyed by :attr:`fingerprint`.
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
        check_int(batch_size, "batch_size", low=1)
        check_choice(cache_dtype, "cache_dtype", STORAGE_DTYPES)
        if transform is not None and not callable(transform):
            raise InputTypeError(f"transform must be callable, got {type(transform).__name__}")
        if not isinstance(purifier, DVAEPurify):
            raise InputTypeError(f"purifier must be a DVAEPurify, got {type(purifier).__name__}")
        self.purifier = purifier
        self.source = Source(dataset, image_column=image_column, label_column=label_column)
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
        """This purification's key (:func:`~dvae_transform.fingerprint.purification_key`): the cache entry's name.

        It covers the input (a Hugging Face dataset's ``_fingerprint``, else a hash of the images and
        labels read in chunks of ``batch_size``), both stages' weights and every setting that changes
        the output.
        """
        if self._key is None:
            purifier = self.purifier
            self._key = purification_key(
                self.source.identity(self.batch_size),
                weights_hash(purifier.stage1, purifier.stage2),
                sample=purifier.sample,
                seed=purifier.seed,
                micro_batch=purifier.batch_size,
                shard_size=self.batch_size,
                cache_dtype=self.cache_dtype,
                layout=(purifier.in_channels, purifier.image_size, purifier.num_classes),
            )
        return self._key

    @property
    def images(self) -> torch.Tensor:
        """All purified images, float32 NCHW in [0, 1] (before ``transform``)."""
        return decode(self.stored_images)

    @property
    def stored_images(self) -> torch.Tensor:
        """All purified images as kept: NCHW at ``cache_dtype`` precision (uint8 levels or float16)."""
        return self.prepare()._images

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
                    cache.write_shard(index, computed[index])
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
                    cache.write_shard(index, stored)
                results.append((index, stored))
                bar.update(len(self._shard_range(index)))
        return results

    def _load(self, cache: TensorCache | None, index: int, labels: torch.Tensor) -> torch.Tensor:
        """Shard ``index`` from the cache, or purified again if it is not (or no longer) there."""
        if cache is not None:
            with contextlib.suppress(CacheMissError):
                return cache.load_shard(index)
        return self._purify_shard(index, labels)

    def to_hf_dataset(self) -> datasets.Dataset:
        """The source Hugging Face dataset with its image column replaced by the purified images.

        The column keeps its feature type and layout (see :func:`~dvae_transform.data.formats.hf_image_values`):
        an ``Image`` column stays an ``Image`` column (PIL images at 8-bit precision, so a drop-in
        replacement), an array column keeps its layout and dtype. Other columns are kept. Built with
        ``Dataset.map`` under a ``new_fingerprint`` derived from :attr:`fingerprint`, so ``datasets``'
        caching, ``save_to_disk`` and ``with_format("torch")`` work. Purifies first (see :meth:`prepare`).
        """
        if self.source.columns is None:
            raise InputTypeError(f"to_hf_dataset needs a datasets.Dataset source, got {type(self.dataset).__name__}")
        return replace_hf_images(self.dataset, self.source.columns, self.stored_images, self.fingerprint)
