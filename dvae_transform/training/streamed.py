"""Training sets from any input: held in memory when small, streamed from disk when not.

**The rule** (:func:`training_set`): the pair form ``(images, labels)`` is already in memory and stays
there (the fast path: indexed on the accelerator, :class:`~dvae_transform.training.sets.TensorSet`). Any
other map-style input is read into memory too when its images, as read (uint8 levels stay uint8, other
images take float32), fit in ``IN_MEMORY_BYTES`` (1 GiB); a larger one, and every iterable dataset, is
*streamed*: read batch by batch through DataLoader workers into pinned memory, never whole
(:class:`StreamedSet`). ``stream=True`` / ``False`` overrides the rule. Iterable datasets are first
written to disk (:mod:`~dvae_transform.data.spool`).

A streamed fit also keeps the stage-1 output (stage 2's training set) on disk: computed in the micro-batches
of :func:`~dvae_transform.purify.default_batch_size` (as in memory), written shard by shard, as uint8
levels, in a :class:`~dvae_transform.cache.store.TensorCache` named after the stage-1 weights, read back
item by item. It is filled like a purified dataset's cache (:mod:`~dvae_transform.cache.fill`): with several
processes the main process writes what all of them compute. Everything a fit writes goes to
``resume_dir/data`` (kept, so a resumed fit reuses it; with several processes it must be a shared folder), or
else to a temporary folder under the cache root that is removed when the fit ends.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from typing import TYPE_CHECKING, Any

import torch

from ..cache.fill import Batch, fill_shards, shard_ranges
from ..cache.store import TensorCache, open_cache
from ..cache.work_folder import IN_MEMORY_BYTES, WorkFolder
from ..data.loader import default_workers, read_batches
from ..data.shards import ShardReader
from ..data.sources import Source, is_iterable
from ..data.spool import spool
from ..fingerprint import weights_hash
from ..precision import decode, encode
from ..purify import remove_perturbation
from ..validation import check_int, check_type
from .sets import TensorSet, TrainingSet

if TYPE_CHECKING:
    from accelerate import Accelerator

    from ..model import DVAE

SCAN_CHUNK = 256  # items per digest of the data's fingerprint
OUTPUT_SHARD = 256  # items per stage-1 output shard
READ_CHUNK = 1024  # items per read when loading a source into memory


def read_all(source: Source) -> tuple[torch.Tensor, torch.Tensor]:
    """The whole source in memory: (images at storage precision, int64 labels)."""
    if source.pair:
        return source.read_items(range(len(source)))
    chunks = [range(start, min(start + READ_CHUNK, len(source))) for start in range(0, len(source), READ_CHUNK)]
    images: torch.Tensor | None = None
    labels = torch.empty(len(source), dtype=torch.long)
    batches = zip(chunks, read_batches(source, chunks, num_workers=source.num_workers))
    for rows, (batch, batch_labels) in batches:
        if images is None:
            images = torch.empty((len(source), *batch.shape[1:]), dtype=batch.dtype)
        elif images.dtype != batch.dtype:  # uint8 so far, then a float image
            images, batch = decode(images), decode(batch)
        images[rows.start : rows.stop], labels[rows.start : rows.stop] = batch, batch_labels
    return images, labels


class StreamedSet:
    """A training set read from ``source`` in batches through DataLoader workers, never whole."""

    def __init__(self, source: Source, folder: WorkFolder, num_workers: int, progress: bool = True) -> None:
        self.source, self.folder, self.num_workers, self.progress = source, folder, num_workers, progress
        self.labels = source.labels(SCAN_CHUNK)
        self.item_shape = tuple(source.item_shape)

    def __len__(self) -> int:
        return len(self.source)

    def batches(self, plan: list[torch.Tensor], device: torch.device) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        pin = device.type == "cuda"
        for images, labels in read_batches(self.source, plan, num_workers=self.num_workers, pin_memory=pin):
            yield decode(images.to(device, non_blocking=True)), labels.to(device, non_blocking=True)

    def stage1_output(self, model: DVAE, accelerator: Accelerator, subtract: str) -> StreamedSet:
        ranges = shard_ranges(len(self), OUTPUT_SHARD)

        def compute(index: int, batch: Batch) -> torch.Tensor:
            images, labels = batch
            return encode(remove_perturbation(model, decode(images), labels, subtract=subtract))

        def open_entry() -> TensorCache | None:
            return open_cache(f"stage1-{subtract}-{weights_hash(model)}", num_items=len(self),
                              item_shape=self.item_shape, shard_size=OUTPUT_SHARD, dtype="uint8",
                              root=self.folder.path)

        filled = fill_shards(
            ranges, open_entry, compute,
            lambda chunks: read_batches(self.source, chunks, num_workers=self.num_workers, pin_memory=True),
            accelerator=accelerator, label="stage-1 output", verb="compute", progress=self.progress,
        )
        parts = filled.parts(lambda index: compute(index, self.source.read_items(ranges[index])))  # not seen here
        reader = ShardReader(parts, filled.counts, self.labels, signatures=filled.signatures())
        return StreamedSet(Source(reader), self.folder, self.num_workers, self.progress)

    def identity(self) -> object:
        return self.source.identity(SCAN_CHUNK)

    def close(self) -> None:
        self.folder.cleanup()


def training_set(
    data: Any,
    *,
    image_column: str | None = None,
    label_column: str | None = None,
    stream: bool | None = None,
    num_workers: int | None = None,
    accelerator: Accelerator | None = None,
    resume_dir: str | os.PathLike | None = None,
    progress: bool = True,
) -> TrainingSet:
    """``data`` as a training set, in memory or streamed by the rule of this module.

    ``data``: the pair form, a torch ``Dataset`` or ``IterableDataset`` of ``(image, label)`` items, or a
    Hugging Face ``datasets.Dataset`` / ``IterableDataset`` (columns by name). ``num_workers``: DataLoader
    workers (default :func:`~dvae_transform.data.loader.default_workers`). ``resume_dir``: where a
    streamed fit keeps its data (see the module docstring).
    """
    check_type(stream, "stream", bool, type(None))
    if num_workers is not None:
        check_int(num_workers, "num_workers", low=0)
    workers = default_workers() if num_workers is None else num_workers
    folder = WorkFolder(resume_dir, accelerator)
    if is_iterable(data):
        reader = spool(data, folder.path / "spool", image_column=image_column, label_column=label_column,
                       accelerator=accelerator, num_workers=workers, progress=progress)
        source = Source(reader, num_workers=workers)
    else:
        source = Source(data, image_column=image_column, label_column=label_column, num_workers=workers)
    if stream is None:
        stream = not source.pair and len(source) * source.item_bytes > IN_MEMORY_BYTES
    if stream:
        return StreamedSet(source, folder, workers, progress)
    try:
        return TensorSet(*read_all(source))
    finally:
        folder.cleanup()  # an iterable's spool is not needed once in memory
