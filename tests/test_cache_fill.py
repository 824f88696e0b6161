"""Filling a shard cache (``cache/fill.py``) in one process, on real cache entries: what is written, what is
skipped, what a full disk leaves in memory. ``test_distributed.py`` runs the same protocol on two processes."""

from __future__ import annotations

import contextlib
import logging
import resource
import signal
import warnings
from collections.abc import Callable, Iterator
from pathlib import Path

import torch

from dvae_transform.cache.fill import FilledShards, fill_shards, shard_ranges
from dvae_transform.cache.store import TensorCache, open_cache, read_manifest_file, shard_name

NUM_ITEMS, SHARD_SIZE, SHAPE = 20, 8, (1, 16, 16)  # shards of 8, 8 and 4 items; a full shard's file is over 2 KiB
FILE_SIZE_LIMIT = 2000
RANGES = shard_ranges(NUM_ITEMS, SHARD_SIZE)


def data() -> tuple[torch.Tensor, torch.Tensor]:
    generator = torch.Generator().manual_seed(0)
    return torch.randint(0, 256, (NUM_ITEMS, *SHAPE), generator=generator, dtype=torch.uint8), torch.arange(NUM_ITEMS)


def computed(images: torch.Tensor) -> torch.Tensor:
    """What the tests store for ``images``: the inverted levels."""
    return 255 - images


class Job:
    """The shards of :func:`data` to fill, recording which shards are computed and which items read."""

    def __init__(self, before_compute: Callable[[int], None] = lambda index: None) -> None:
        self.images, self.labels = data()
        self.before_compute = before_compute
        self.computed: list[int] = []
        self.read: list[range] = []

    def compute(self, index: int, batch: tuple[torch.Tensor, torch.Tensor]) -> torch.Tensor:
        self.before_compute(index)
        self.computed.append(index)
        images, labels = batch
        assert torch.equal(labels, self.labels[RANGES[index].start : RANGES[index].stop])
        return computed(images)

    def reads(self, chunks: list[range]) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        self.read.extend(chunks)
        return ((self.images[items.start : items.stop], self.labels[items.start : items.stop]) for items in chunks)

    def fill(self, root: Path | None) -> FilledShards:
        opener = None if root is None else lambda: open_cache("entry", num_items=NUM_ITEMS, item_shape=SHAPE,
                                                              shard_size=SHARD_SIZE, root=root)
        return fill_shards(RANGES, opener, self.compute, self.reads, label="test", verb="compute", progress=False)


def entry(root: Path) -> TensorCache:
    return TensorCache("entry", num_items=NUM_ITEMS, item_shape=SHAPE, shard_size=SHARD_SIZE, root=root)


def no_recompute(index: int) -> torch.Tensor:
    raise AssertionError(f"shard {index} computed again")


def test_shard_ranges_cover_the_items_in_order() -> None:
    assert RANGES == [range(0, 8), range(8, 16), range(16, 20)]
    assert shard_ranges(0, 8) == []


def test_every_missing_shard_is_written_and_served_from_the_cache(tmp_path) -> None:
    job = Job()
    filled = job.fill(tmp_path)
    assert job.computed == [0, 1, 2] and job.read == RANGES
    assert filled.valid == {0, 1, 2} and not filled.kept and filled.all_cached
    assert torch.equal(entry(tmp_path).load(), computed(job.images))
    assert filled.parts(no_recompute) == [tmp_path / "entry" / shard_name(index) for index in range(3)]
    assert None not in filled.signatures() and filled.counts == [8, 8, 4]


def test_valid_shards_are_neither_read_nor_computed(tmp_path, caplog) -> None:
    marker = torch.zeros((SHARD_SIZE, *SHAPE), dtype=torch.uint8)  # not what the job computes
    entry(tmp_path).write_shard(1, marker)
    job = Job()
    with caplog.at_level(logging.INFO, logger="dvae_transform"):
        filled = job.fill(tmp_path)
    assert job.computed == [0, 2] and job.read == [RANGES[0], RANGES[2]]
    assert "cache entry: 1 of 3 shards cached, 2 to compute" in caplog.messages
    assert filled.all_cached and torch.equal(entry(tmp_path).load_shard(1), marker)
    assert torch.equal(entry(tmp_path).load_shard(2), computed(job.images[16:]))


@contextlib.contextmanager
def file_size_limit_lifted() -> Iterator[None]:
    """The block may set a file size limit: it is lifted when the block ends."""
    limits = resource.getrlimit(resource.RLIMIT_FSIZE)
    handler = signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # a write past a limit then fails, not the process
    try:
        yield
    finally:
        resource.setrlimit(resource.RLIMIT_FSIZE, limits)
        signal.signal(signal.SIGXFSZ, handler)


def fill_the_disk_at_shard_1(index: int) -> None:
    """From shard 1 on, file writes past ``FILE_SIZE_LIMIT`` bytes fail like on a full disk (``EFBIG``)."""
    if index == 1:
        resource.setrlimit(resource.RLIMIT_FSIZE, (FILE_SIZE_LIMIT, resource.getrlimit(resource.RLIMIT_FSIZE)[1]))


def test_a_failing_write_warns_once_and_keeps_the_rest_in_memory(tmp_path) -> None:
    job = Job(fill_the_disk_at_shard_1)
    with file_size_limit_lifted(), warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        filled = job.fill(tmp_path)
    assert [str(warning.message) for warning in caught] == [
        f"dvae_transform: cache directory {tmp_path / 'entry'} is not writable: File too large; continuing without a "
        "cache (shards not cached are kept in memory)"
    ]
    assert job.computed == [0, 1, 2]  # the work carries on after the failed write
    assert filled.valid == {0} and sorted(filled.kept) == [1, 2] and not filled.all_cached
    parts = filled.parts(no_recompute)
    assert parts[0] == tmp_path / "entry" / shard_name(0)
    assert torch.equal(torch.cat(parts[1:]), computed(job.images[8:]))
    assert list(read_manifest_file(tmp_path / "entry" / "manifest.json")["shards"]) == ["0"]


def test_without_a_cache_every_shard_is_kept_in_memory(tmp_path) -> None:
    job = Job()
    filled = job.fill(None)
    assert filled.cache is None and not filled.valid and not filled.all_cached
    assert torch.equal(torch.cat(filled.parts(no_recompute)), computed(job.images))
    assert filled.signatures() == [None] * 3
    assert not any(tmp_path.iterdir())


def test_an_unwritable_cache_root_warns_and_keeps_every_shard(tmp_path) -> None:
    (tmp_path / "file").write_text("not a folder")
    job = Job()
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        filled = job.fill(tmp_path / "file" / "cache")
    assert len(caught) == 1 and "continuing without a cache" in str(caught[0].message)
    assert filled.cache is None and sorted(filled.kept) == [0, 1, 2]


def test_a_shard_this_process_cannot_see_is_computed_again(tmp_path) -> None:
    job = Job()
    filled = job.fill(tmp_path)
    unseen = FilledShards(filled.ranges, filled.cache, {}, {0, 2})  # shard 1 not valid where this process looks
    parts = unseen.parts(lambda index: computed(job.images[RANGES[index].start : RANGES[index].stop]))
    assert isinstance(parts[1], torch.Tensor) and torch.equal(parts[1], computed(job.images[8:16]))
    assert unseen.signatures()[1] is None and None not in unseen.signatures()[::2]
