"""Iterable datasets written to disk once, in a canonical order, for random access.

A torch ``IterableDataset`` or a Hugging Face ``datasets.IterableDataset`` (``streaming=True``) is read
once through DataLoader workers and written in chunks to safetensors files (images at storage
precision, labels, and where each item came from); a :class:`~dvae_transform.data.shards.ShardReader`
then serves it by index. Nothing holds the whole set in memory.

**Who reads what.** With ``N`` processes, each reads a disjoint part of the stream: a Hugging Face
dataset with at least ``N`` shards gives process ``r`` its shards ``r, r + N, ...`` (spread again over
its workers); any other stream is read by one worker per process, which keeps the items at positions
``i`` with ``i % N == r``. **Order.** Items are ordered by (shard, position in the shard), the order of a
plain single-process pass over the dataset, so the spooled set is the same whatever the number of
processes and workers. With several processes the folder must be shared between them.
"""

from __future__ import annotations

import contextlib
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch
from safetensors.torch import save
from torch.utils.data import DataLoader, get_worker_info
from torch.utils.data import IterableDataset as TorchIterable
from tqdm.auto import tqdm

from ..distributed import gather, is_main_process, wait_for_everyone
from ..files import atomic_write
from ..log import bar_options
from ..validation import InputTypeError
from ..workers import worker_errors
from .loader import usable_workers
from .shards import ShardReader
from .sources import hf_columns, hf_values, is_hf_iterable, label_value, split_item, stack_images, stores_uint8

if TYPE_CHECKING:
    from accelerate import Accelerator

CHUNK = 256  # items per spool file


def _hf_labels(values: Any, names: list[str]) -> torch.Tensor:
    labels = torch.as_tensor(values)
    if labels.is_floating_point() or labels.dtype == torch.bool or labels.ndim != 1:
        raise InputTypeError(f"the chunk from dataset item {names[0]}: labels must be integers, got {values!r}"[:300])
    return labels.long()


class _Stream(TorchIterable):
    """This process's part of the stream, as chunks ``(images, labels, shard ids, positions)``."""

    def __init__(self, data: Any, *, shards: list[int] | None, rank: int, world: int,
                 columns: tuple[str, str] | None) -> None:
        self.data, self.shards, self.rank, self.world, self.columns = data, shards, rank, world, columns
        self.uint8 = columns is not None and data.features is not None and stores_uint8(data.features[columns[0]])

    def __iter__(self) -> Iterator[tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]]:
        if self.shards is None:  # a stream without shards: every world-th item, one worker
            yield from self._chunks(0, self._items(self.data), keep=lambda position: position % self.world == self.rank)
            return
        info = get_worker_info()
        mine = self.shards if info is None else self.shards[info.id :: info.num_workers]
        for shard in mine:
            part = self.data.shard(num_shards=self.data.num_shards, index=shard)
            yield from self._chunks(shard, self._items(part), keep=lambda position: True)

    def _items(self, data: Any) -> Iterator[tuple[Any, Any]]:
        if self.columns is None:
            yield from enumerate(data)
            return
        position = 0
        for batch in data.iter(batch_size=CHUNK):
            for image, label in zip(hf_values(batch[self.columns[0]]), batch[self.columns[1]]):
                yield position, (image, label)
                position += 1

    def _chunks(self, shard: int, items: Iterator[tuple[int, Any]], keep: Any) -> Iterator[tuple[torch.Tensor, ...]]:
        positions: list[int] = []
        pairs: list[tuple[Any, Any]] = []
        for position, item in items:
            if keep(position):
                positions.append(position)
                pairs.append(split_item(item, position) if self.columns is None else item)
            if len(pairs) == CHUNK:
                yield self._convert(shard, positions, pairs)
                positions, pairs = [], []
        if pairs:
            yield self._convert(shard, positions, pairs)

    def _convert(self, shard: int, positions: list[int], pairs: list[tuple[Any, Any]]) -> tuple[torch.Tensor, ...]:
        names = [f"{position} of shard {shard}" if self.shards is not None else str(position) for position in positions]
        images = stack_images([image for image, _ in pairs], names, uint8=self.uint8)
        if self.columns is None:
            labels = torch.tensor([label_value(label, name) for name, (_, label) in zip(names, pairs)])
        else:
            labels = _hf_labels([label for _, label in pairs], names)
        return images, labels, torch.full((len(pairs),), shard), torch.tensor(positions)


def _columns(data: Any, image_column: str | None, label_column: str | None) -> tuple[str, str] | None:
    if not is_hf_iterable(data):
        return None
    columns = data.column_names
    if columns is None:  # unknown features (e.g. after map): the first example tells
        first = next(iter(data), None)
        columns = [] if first is None else list(first)
    return hf_columns(data, image_column, label_column, columns)


@contextlib.contextmanager
def _spool_errors(folder: Path) -> Iterator[None]:
    """An ``OSError`` in the block (a full or read-only disk) raised again naming ``folder`` and the remedy."""
    try:
        yield
    except OSError as error:
        raise OSError(error.errno, f"writing the iterable dataset's copy to {folder} failed "
                                   f"({error.strerror or error}): it needs room for the whole dataset; free space "
                                   "there, or pass cache_dir= (or set DVAE_TRANSFORM_CACHE) to a writable folder "
                                   "with room") from error


def spool(data: Any, folder: Path, *, image_column: str | None = None, label_column: str | None = None,
          accelerator: Accelerator | None = None, num_workers: int = 0, progress: bool = True) -> ShardReader:
    """Write the iterable ``data`` to ``folder`` (emptied first) and return a reader of its items in canonical order."""
    rank = 0 if accelerator is None else accelerator.process_index
    world = 1 if accelerator is None else accelerator.num_processes
    columns = _columns(data, image_column, label_column)
    sharded = columns is not None and data.num_shards >= world
    shards = list(range(rank, data.num_shards, world)) if sharded else None
    workers = min(num_workers, len(shards)) if sharded else min(num_workers, 1)
    if is_main_process(accelerator):
        shutil.rmtree(folder, ignore_errors=True)
        with _spool_errors(folder):
            folder.mkdir(parents=True)
    wait_for_everyone(accelerator)
    stream = _Stream(data, shards=shards, rank=rank, world=world, columns=columns)
    written: list[tuple[str, int, torch.Tensor, torch.Tensor, torch.Tensor]] = []
    shape = None
    chunks = DataLoader(stream, batch_size=None, num_workers=usable_workers(workers))
    show = progress and is_main_process(accelerator)
    with tqdm(desc="spooling", unit="img", **bar_options(show)) as bar, worker_errors():
        for images, labels, shard_ids, positions in chunks:
            if shape is not None and tuple(images.shape[1:]) != shape:
                raise ValueError(
                    f"dataset item {int(positions[0])} of shard {int(shard_ids[0])} has shape "
                    f"{tuple(images.shape[1:])}, not {shape} like the items before: all images must have one size "
                    "(resize them first)"
                )
            shape = tuple(images.shape[1:])
            name = f"part-{rank:04d}-{len(written):06d}.safetensors"
            with _spool_errors(folder):
                atomic_write(folder / name, save({"images": images.contiguous(), "labels": labels}))
            written.append((name, len(labels), labels, shard_ids, positions))
            bar.update(len(labels))
    everyone = gather(accelerator, written)
    shapes = {shape for shape in gather(accelerator, [shape]) if shape is not None}
    if len(shapes) > 1:
        raise ValueError(f"the processes read images of shapes {sorted(shapes)}: all images must have one size")
    if not everyone:
        raise ValueError("the dataset is empty")
    missing = [name for name, *_ in everyone if not (folder / name).is_file()]
    if missing:
        raise RuntimeError(
            f"spool folder {folder} is not shared between the processes: this one cannot see {missing[:3]}; "
            "use a folder on a shared filesystem"
        )
    key = torch.cat([shard_ids * (1 << 40) + positions for *_, shard_ids, positions in everyone])
    return ShardReader([folder / name for name, *_ in everyone], [count for _, count, *_ in everyone],
                       torch.cat([labels for _, _, labels, *_ in everyone])[key.argsort()], order=key.argsort())
