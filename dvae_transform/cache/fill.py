"""Filling a shard cache from the processes of an Accelerate launch: the one protocol behind every cache the
library fills (a purified dataset, a streamed fit's stage-1 output).

:func:`fill_shards`: the main process opens the cache entry and holds its lock while the entry is filled. It
lists the missing shards and tells the other processes; the shards are shared out
(:func:`~dvae_transform.distributed.share`: each process reads its own contiguous part) and computed a round at
a time, one shard per process per round; each round's results are gathered and written by the main process.
A write that fails (a full disk) gives one warning: the shards of that round and of every later one are kept
in memory, in every process. Afterwards each process finds every shard (:meth:`FilledShards.parts`) kept in
memory, else in its cache file when that is valid where the process looks, else computes it again itself (a
cache folder that is not shared between the processes).
"""

from __future__ import annotations

import contextlib
import math
from collections.abc import Callable, Generator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import torch
from tqdm.auto import tqdm

from ..distributed import broadcast, gather, is_main_process, share, wait_for_everyone
from ..log import bar_options, logger, warn
from ..workers import worker_errors
from .store import CacheUnavailableError, TensorCache, shard_name

if TYPE_CHECKING:
    from accelerate import Accelerator

Batch = tuple[torch.Tensor, torch.Tensor]  # (images, labels) of one shard, as read
Signature = tuple[int, int, int, int]


def shard_ranges(num_items: int, shard_size: int) -> list[range]:
    """The items of each shard: ``num_items`` in consecutive chunks of ``shard_size`` (the last one shorter)."""
    return [range(start, min(start + shard_size, num_items)) for start in range(0, num_items, shard_size)]


@dataclass
class FilledShards:
    """Where one process finds each shard once :func:`fill_shards` is done.

    ``cache``: the entry as this process opened it (None: no cache); ``kept``: shards held in memory (the
    cache could not take them); ``valid``: shards validly stored in ``cache`` as this process sees it.
    """

    ranges: list[range]
    cache: TensorCache | None
    kept: dict[int, torch.Tensor]
    valid: set[int]

    @property
    def counts(self) -> list[int]:
        """Items per shard."""
        return [len(items) for items in self.ranges]

    @property
    def all_cached(self) -> bool:
        """Whether every shard is served from the cache (none kept in memory, none to compute again)."""
        return not self.kept and len(self.valid) == len(self.ranges)

    def parts(self, recompute: Callable[[int], torch.Tensor]) -> list[Path | torch.Tensor]:
        """Every shard: the kept tensor, else its cache file if valid, else ``recompute(index)`` (one this
        process cannot see)."""
        return [
            self.kept[index] if index in self.kept
            else self.cache.path / shard_name(index) if index in self.valid
            else recompute(index)
            for index in range(len(self.ranges))
        ]

    def signatures(self) -> list[Signature | None]:
        """The checked signature of every valid cache file (see ``ShardReader``), None for the other shards."""
        return [self.cache.verified_signature(index) if index in self.valid else None
                for index in range(len(self.ranges))]


def fill_shards(
    ranges: Sequence[range],
    open_entry: Callable[[], TensorCache | None] | None,
    compute: Callable[[int, Batch], torch.Tensor],
    reads: Callable[[list[range]], Generator[Batch, None, None]],
    *,
    accelerator: Accelerator | None = None,
    label: str,
    verb: str,
    progress: bool = True,
) -> FilledShards:
    """Compute the shards missing from a cache entry, shared between the processes, and write them.

    Every process of the launch must call it at the same point. ``ranges``: the items of each shard;
    ``open_entry``: opens the entry (it gives None, with a warning, when the cache cannot be written; the
    argument None: no cache, every shard is computed and kept in memory); ``compute(index, batch)``: shard
    ``index`` at storage precision (on the CPU) from its ``batch``; ``reads(chunks)``: the batches of the item
    ranges ``chunks``, in order. ``label`` names the progress bar (shown in the main process when ``progress``
    and there is work), ``verb`` the work in the log line.
    """
    cache = open_entry() if open_entry is not None and is_main_process(accelerator) else None
    with cache.lock() if cache is not None else contextlib.nullcontext():
        todo = list(broadcast(accelerator, cache.missing_shards() if cache is not None else range(len(ranges))))
        if cache is not None:
            logger.info("cache %s: %d of %d shards cached, %d to %s", cache.key, len(ranges) - len(todo),
                        len(ranges), len(todo), verb)
        show = progress and is_main_process(accelerator) and bool(todo)
        with tqdm(total=sum(len(ranges[index]) for index in todo), desc=label, unit="img",
                  **bar_options(show)) as bar:
            kept = _fill(ranges, todo, cache, compute, reads, accelerator, bar.update)
    cached = broadcast(accelerator, cache is not None)
    wait_for_everyone(accelerator)
    if cached and cache is None:  # the other processes read what the main process wrote
        cache = open_entry()
    return FilledShards(list(ranges), cache, kept, _valid_shards(cache))


def _fill(ranges: Sequence[range], todo: list[int], cache: TensorCache | None,
          compute: Callable[[int, Batch], torch.Tensor], reads: Callable[[list[range]], Generator[Batch, None, None]],
          accelerator: Accelerator | None, advance: Callable[[int], object]) -> dict[int, torch.Tensor]:
    """Compute the shards ``todo``, a round at a time; the main process writes each round to ``cache`` until a
    write fails; returns the shards not written, in every process."""
    mine = share(accelerator, todo)
    rounds = math.ceil(len(todo) / (1 if accelerator is None else accelerator.num_processes))
    kept: dict[int, torch.Tensor] = {}
    batches = reads([ranges[index] for index in mine])
    with worker_errors(), contextlib.closing(batches):
        for step in range(rounds):
            done = [(mine[step], compute(mine[step], next(batches)))] if step < len(mine) else []
            results = gather(accelerator, done)
            cache = _write(cache, results)
            if not broadcast(accelerator, cache is not None):
                kept.update(results)
            advance(sum(len(ranges[index]) for index, _ in results))
    return kept


def _valid_shards(cache: TensorCache | None) -> set[int]:
    """The shards ``cache`` holds validly (none without a cache, or when a full disk keeps it from checking)."""
    if cache is None:
        return set()
    try:
        return set(range(cache.num_shards)) - set(cache.missing_shards())
    except CacheUnavailableError:
        return set()


def _write(cache: TensorCache | None, results: list[tuple[int, torch.Tensor]]) -> TensorCache | None:
    """Write shards to ``cache``; when it fails (a full disk), warn once and go on without it (None)."""
    if cache is None:
        return None
    try:
        for index, stored in results:
            cache.write_shard(index, stored)
    except CacheUnavailableError as error:
        warn(
            f"dvae_transform: {error}; continuing without a cache (shards not cached are kept in memory)",
            RuntimeWarning,
        )
        return None
    return cache
