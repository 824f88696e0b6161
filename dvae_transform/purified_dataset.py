""":class:`PurifiedDataset`: a dataset purified once (cached on disk, shared between processes) and served."""

from __future__ import annotations

import math
import os
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch
from torch.utils.data import Dataset

from .cache.fill import fill_shards
from .cache.store import CacheMissError, TensorCache, cache_root, open_cache
from .cache.work_folder import IN_MEMORY_BYTES, WorkFolder
from .data.formats import replace_hf_images
from .data.loader import default_workers, read_batches
from .data.shards import ShardReader, ShardReadError
from .data.sources import Source, is_iterable, is_pair
from .data.spool import spool
from .deprecation import renamed_attribute, renamed_keywords
from .distributed import broadcast, is_main_process, wait_for_everyone
from .files import refuse_link
from .fingerprint import purification_key, weights_hash
from .images import to_labels
from .log import datasets_bars, warn
from .precision import STORAGE_DTYPES, decode, encode
from .transforms import DVAEPurify
from .validation import InputTypeError, check_choice, check_int, check_type, item_index

if TYPE_CHECKING:
    import datasets
    from accelerate import Accelerator

SHARD_SIZE = 256  # items per chunk read and per cache shard


class PurifiedDataset(Dataset):
    """A dataset of ``(purified image, label)``: ``dataset`` purified once by ``purifier``, then served.

    ``dataset`` is a torch ``Dataset`` or ``IterableDataset`` of ``(image, label)`` items (PIL or tensor
    images), a Hugging Face ``datasets.Dataset`` or ``IterableDataset`` (``streaming=True``), or the
    ``(images, labels)`` pair form. It must be deterministic: put random augmentation in ``transform``,
    which runs on the purified float CHW tensor in [0, 1]. An iterable dataset is read once and
    written to a temporary folder under the cache root (:mod:`~dvae_transform.data.spool`), which
    is removed when the purified set is complete.

    The whole dataset is purified when it is built, in the calling process, so DataLoader workers
    forked later only serve it (``lazy=True`` defers this to first access or :meth:`prepare`); it is read in chunks of
    ``shard_size`` items by ``num_workers`` DataLoader workers; each chunk is one shard of the on-disk
    cache (:mod:`dvae_transform.cache.store`) under ``cache_dir`` (default ``$DVAE_TRANSFORM_CACHE``),
    keyed by :attr:`fingerprint`, written as soon as it is done. A later run, or a run killed half-way,
    reuses the finished shards; processes sharing a cache compute each shard once. Items are then
    served from the cache files one at a time (memory-mapped), or from memory when the purified set
    takes at most ``IN_MEMORY_BYTES`` (1 GiB), so a large set is never held whole in memory.
    An unwritable cache directory, and a cache that fails part-way (a full disk), give one warning:
    the shards not cached are kept in memory and the work carries on without a cache.
    Images are kept (and cached) at ``cache_dtype`` precision, ``"uint8"`` (8-bit levels, as the
    authors store them) or ``"float16"``.

    With an ``accelerate.Accelerator`` of several processes, every process must build the dataset
    and call :meth:`prepare` (or access it): the shards are shared out (each process reads its own,
    disjoint part of the data), passed to the main process a round at a time and written by it, and
    every process then serves them from the cache (which must be a shared folder; a process that
    cannot see a shard purifies it itself). Purification runs on ``accelerator.device``. With
    ``purifier.sample`` set, every shard is purified with ``purifier.seed``, so the output does not
    depend on the number of processes.

    Args:
        dataset: the (poisoned) training data.
        purifier: a fitted :class:`~dvae_transform.DVAEPurify`.
        cache_dir: cache root; overrides ``$DVAE_TRANSFORM_CACHE``.
        shard_size: items per chunk and per cache shard (each purified in micro-batches of
            ``purifier.micro_batch``).
        accelerator: share the work between the processes of an Accelerate launch.
        transform: applied to each purified image when it is served.
        image_column, label_column: column names for a Hugging Face dataset.
        cache: False purifies in memory without writing a cache.
        cache_dtype: ``"uint8"`` or ``"float16"``.
        progress: show a progress bar.
        num_workers: DataLoader workers that read the dataset (default: the usable CPUs, at most 4).
        lazy: purify on first access or :meth:`prepare` instead of now (call it before DataLoader workers start).
    """

    @renamed_keywords(batch_size="shard_size")
    def __init__(
        self,
        dataset: Any,
        purifier: DVAEPurify,
        cache_dir: str | os.PathLike | None = None,
        shard_size: int = SHARD_SIZE,
        accelerator: Accelerator | None = None,
        transform: Callable[[torch.Tensor], Any] | None = None,
        image_column: str | None = None,
        label_column: str | None = None,
        cache: bool = True,
        cache_dtype: str = "uint8",
        progress: bool = True,
        num_workers: int | None = None,
        lazy: bool = False,
    ) -> None:
        check_int(shard_size, "shard_size", low=1)
        check_choice(cache_dtype, "cache_dtype", STORAGE_DTYPES)
        if num_workers is not None:
            check_int(num_workers, "num_workers", low=0)
        if transform is not None and not callable(transform):
            raise InputTypeError(f"transform must be callable, got {type(transform).__name__}")
        if not isinstance(purifier, DVAEPurify):
            raise InputTypeError(f"purifier must be a DVAEPurify, got {type(purifier).__name__}")
        self.purifier, self.dataset, self.columns = purifier, dataset, (image_column, label_column)
        self.num_workers = default_workers() if num_workers is None else num_workers
        self.cache_dir, self.shard_size, self.accelerator = cache_dir, shard_size, accelerator
        self.transform, self.cache, self.cache_dtype, self.progress = transform, cache, cache_dtype, progress
        self._source = None if is_iterable(dataset) else self._map_source(dataset)
        self._spool: WorkFolder | None = None
        self._key: str | None = None
        self._store: ShardReader | None = None  # the purified images at cache_dtype precision, by shard
        self._memory: torch.Tensor | None = None  # all of them, when they fit in IN_MEMORY_BYTES
        if not check_type(lazy, "lazy", bool):
            self.prepare()

    batch_size = renamed_attribute("batch_size", "shard_size")

    def _map_source(self, data: Any) -> Source:
        workers = 0 if is_pair(data) else self.num_workers
        return Source(data, image_column=self.columns[0], label_column=self.columns[1], num_workers=workers)

    @property
    def source(self) -> Source:
        """The input as a map-style source (an iterable dataset is spooled to disk on first use)."""
        if self._source is None:
            self._spool = WorkFolder(None, self.accelerator, cache_root=self.cache_dir)
            reader = spool(self.dataset, self._spool.path / "spool", image_column=self.columns[0],
                           label_column=self.columns[1], accelerator=self.accelerator,
                           num_workers=self.num_workers, progress=self.progress)
            self._source = Source(reader, num_workers=self.num_workers)
        return self._source

    def __len__(self) -> int:
        return len(self.source)

    def __getitem__(self, index: int) -> tuple[Any, int]:
        self.prepare()
        index = item_index(index, len(self))
        stored = self._memory[index] if self._memory is not None else self._stored_item(index)
        image = decode(stored)
        if self.transform is not None:
            image = self.transform(image)
        return image, int(self._store.labels[index])

    def __repr__(self) -> str:
        return (
            f"PurifiedDataset(items={len(self)}, shard_size={self.shard_size}, cache={self.cache}, "
            f"cache_dtype={self.cache_dtype!r}, prepared={self._store is not None})"
        )

    @property
    def num_shards(self) -> int:
        """Chunks of ``shard_size`` items: the cache's shards."""
        return math.ceil(len(self) / self.shard_size)

    @property
    def fingerprint(self) -> str:
        """This purification's key (:func:`~dvae_transform.fingerprint.purification_key`): the cache entry's name.

        It covers the input (a Hugging Face dataset's ``_fingerprint``, else a hash of the images and
        labels read in chunks of ``shard_size``), both stages' weights and every setting that changes
        the output.
        """
        if self._key is None:
            purifier = self.purifier
            self._key = purification_key(
                self.source.identity(self.shard_size),
                weights_hash(purifier.stage1, purifier.stage2),
                sample=purifier.sample,
                seed=purifier.seed,
                subtract=purifier.subtract,
                micro_batch=purifier.micro_batch,
                shard_size=self.shard_size,
                cache_dtype=self.cache_dtype,
                layout=(purifier.in_channels, purifier.image_size, purifier.num_classes),
            )
        return self._key

    @property
    def images(self) -> torch.Tensor:
        """All purified images, float32 NCHW in [0, 1] (before ``transform``), in memory."""
        return decode(self.stored_images)

    @property
    def stored_images(self) -> torch.Tensor:
        """All purified images as kept: NCHW at ``cache_dtype`` precision (uint8 levels or float16), in memory."""
        self.prepare()
        if self._memory is not None:
            return self._memory
        return torch.cat([self._stored_shard(index) for index in range(self.num_shards)])

    @property
    def labels(self) -> torch.Tensor:
        """All labels, int64."""
        return self.prepare()._store.labels

    def prepare(self) -> PurifiedDataset:
        """Purify the whole dataset now (or read it from the cache); returns ``self``."""
        if self._store is not None:
            return self
        if torch.utils.data.get_worker_info() is not None:
            warn(
                "PurifiedDataset is purifying inside a DataLoader worker, so every worker does it; "
                "call .prepare() before building the DataLoader",
                RuntimeWarning,
            )
        labels = to_labels(self.source.labels(self.shard_size), len(self), self.purifier.num_classes)
        accelerator = self.accelerator
        if accelerator is not None:
            self.purifier.to(accelerator.device)
        if self.cache:  # the main process reads the data for the key; the others get it
            self._key = broadcast(accelerator, self.fingerprint if is_main_process(accelerator) else None)
        ranges = [self._shard_range(index) for index in range(self.num_shards)]
        filled = fill_shards(
            ranges, self._open_cache if self.cache else None,
            lambda index, batch: self._purify_shard(batch[0], labels[ranges[index].start : ranges[index].stop], index),
            lambda chunks: read_batches(self.source, chunks, num_workers=self.num_workers),
            accelerator=accelerator, label="purifying", verb="purify", progress=self.progress,
        )
        parts = filled.parts(lambda index: self._purify_shard(*self._read_shard(index), index))  # not seen here
        self._store = ShardReader(parts, filled.counts, labels, signatures=filled.signatures())
        if len(self) * math.prod(self._item_shape) * STORAGE_DTYPES[self.cache_dtype].itemsize <= IN_MEMORY_BYTES:
            self._memory = torch.cat([self._stored_shard(index) for index in range(self.num_shards)])
        wait_for_everyone(accelerator)
        if self._spool is not None and broadcast(accelerator, filled.all_cached):
            self._spool.cleanup()  # everything is served from the cache: the spooled input is no longer needed
            self._spool = None
        return self

    @property
    def _item_shape(self) -> tuple[int, int, int]:
        return self.purifier.in_channels, self.purifier.image_size, self.purifier.image_size

    def _shard_range(self, index: int) -> range:
        start = index * self.shard_size
        return range(start, min(start + self.shard_size, len(self)))

    def _open_cache(self) -> TensorCache | None:
        return open_cache(
            self.fingerprint,
            num_items=len(self),
            item_shape=self._item_shape,
            shard_size=self.shard_size,
            dtype=self.cache_dtype,
            root=self.cache_dir,
        )

    def _read_shard(self, index: int) -> tuple[torch.Tensor, torch.Tensor]:
        items = self._shard_range(index)
        if self._spool is None and self.source.reader is not None:
            raise CacheMissError(
                f"purified shard {index} is no longer in the cache and the iterable dataset it came from was "
                "read once: build the PurifiedDataset again"
            )
        return self.source.read(items.start, items.stop)

    def _purify_shard(self, images: torch.Tensor, labels: torch.Tensor, index: int) -> torch.Tensor:
        items = self._shard_range(index)
        images = self.purifier.check_images(images, name=f"dataset items {items.start}-{items.stop - 1}")
        return encode(self.purifier.purify(images, labels), self.cache_dtype)

    def _stored_shard(self, index: int) -> torch.Tensor:
        return self._read_store(index, 0, len(self._shard_range(index)))

    def _stored_item(self, item: int) -> torch.Tensor:
        index = item // self.shard_size
        offset = item - index * self.shard_size
        return self._read_store(index, offset, offset + 1)[0]

    def _read_store(self, index: int, start: int, stop: int) -> torch.Tensor:
        """Rows ``start:stop`` of purified shard ``index``; a shard file gone from the cache is purified again."""
        try:
            return self._store.read_part(index, start, stop)
        except ShardReadError:
            items = self._shard_range(index)
            images, _ = self._read_shard(index)
            self._store.replace(index, self._purify_shard(images, self._store.labels[items.start : items.stop], index))
            return self._store.read_part(index, start, stop)

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
        with datasets_bars(self.progress):
            return replace_hf_images(self.dataset, self.source.columns, self.stored_images, self.fingerprint,
                                     cache_file=self._hf_cache_file())

    def _hf_cache_file(self) -> Path | None:
        """Where :meth:`to_hf_dataset` writes its table: ``<cache root>/hf/<key>.arrow``; None (in memory) without a
        cache or when the cache root cannot be written."""
        if not self.cache:
            return None
        folder = cache_root(self.cache_dir) / "hf"
        try:
            refuse_link(folder).mkdir(parents=True, exist_ok=True)
            with tempfile.TemporaryFile(dir=folder):
                pass
        except OSError:
            return None
        return folder / f"{self.fingerprint}.arrow"

