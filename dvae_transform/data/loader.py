"""Reading a map-style source in given batches of item indices, through DataLoader workers.

Anything with ``read_items(indices) -> (images, labels)`` and ``len()`` is read this way: the batches
are fetched by ``num_workers`` worker processes (none: in this process), in the order given, into
pinned memory when asked. Errors from the workers are plain errors (:mod:`dvae_transform.workers`); a
consumer that does long work between batches wraps its loop in
:func:`~dvae_transform.workers.worker_errors` too, since a dying worker is reported wherever it runs.
"""

from __future__ import annotations

import os
from collections.abc import Iterator, Sequence
from typing import Any, Protocol

import torch
from torch.utils.data import DataLoader, Dataset, get_worker_info

from ..workers import worker_errors

MAX_WORKERS = 4


class ItemReader(Protocol):
    """What :func:`read_batches` reads."""

    def __len__(self) -> int: ...

    def read_items(self, indices: Sequence[int]) -> tuple[torch.Tensor, torch.Tensor]: ...


def usable_workers(requested: int) -> int:
    """``requested``, or 0 inside a DataLoader worker (a worker process cannot start workers of its own)."""
    return 0 if get_worker_info() is not None else requested


def default_workers() -> int:
    """DataLoader worker processes used when none are given: the usable CPUs, at most ``MAX_WORKERS``."""
    usable = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1
    return min(MAX_WORKERS, usable)


class _Batches(Dataset):
    """A torch Dataset whose batched fetch (``__getitems__``) is the reader's ``read_items``."""

    def __init__(self, reader: ItemReader) -> None:
        self.reader = reader

    def __len__(self) -> int:
        return len(self.reader)

    def __getitems__(self, indices: list[int]) -> tuple[torch.Tensor, torch.Tensor]:
        return self.reader.read_items(indices)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, torch.Tensor]:
        return self.reader.read_items([index])


def _as_is(batch: Any) -> Any:
    return batch


def read_batches(
    reader: ItemReader,
    batches: Sequence[Sequence[int]],
    *,
    num_workers: int = 0,
    pin_memory: bool = False,
) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
    """``reader.read_items(batch)`` for every batch of ``batches``, in order, read ahead by ``num_workers`` workers."""
    batches = [[int(index) for index in batch] for batch in batches]
    if not batches:
        return
    workers = usable_workers(min(num_workers, len(batches)))
    loader = DataLoader(_Batches(reader), batch_sampler=batches, collate_fn=_as_is, num_workers=workers,
                        pin_memory=pin_memory and torch.cuda.is_available())
    with worker_errors():
        iterator = iter(loader)
        try:
            yield from iterator
        finally:
            _shut_down(iterator)


def _shut_down(iterator: Any) -> None:
    """Stop the workers of a DataLoader iterator now, not when it is collected: a death noticed by a failed
    hand-over is then not reported a second time, by torch's signal handler, at a later line."""
    shutdown = getattr(iterator, "_shutdown_workers", None)  # absent without workers
    if shutdown is not None:
        shutdown()
