"""Reading a map-style source in given batches (``data/loader.py``), in this process or through workers."""

from __future__ import annotations

import os
import time
from multiprocessing import resource_sharer
from pathlib import Path

import pytest
import torch

from dvae_transform.data.loader import MAX_WORKERS, default_workers, read_batches, usable_workers


class _Items:
    """``count`` items: item ``i`` is a 1x2x2 image of value ``i`` labelled ``i % 3``; ``fail_at`` raises."""

    def __init__(self, count: int, fail_at: int | None = None) -> None:
        self.count, self.fail_at = count, fail_at

    def __len__(self) -> int:
        return self.count

    def read_items(self, indices: list[int]) -> tuple[torch.Tensor, torch.Tensor]:
        if self.fail_at in indices:
            raise ValueError(f"item {self.fail_at} is unreadable")
        chosen = torch.tensor(indices)
        return chosen.float().view(-1, 1, 1, 1).expand(-1, 1, 2, 2), chosen % 3


class _ReadsThroughWorkers(_Items):
    """Each batch read by ``read_batches`` with workers of its own: what a worker process cannot start."""

    def read_items(self, indices: list[int]) -> tuple[torch.Tensor, torch.Tensor]:
        [(images, labels)] = read_batches(_Items(self.count), [indices], num_workers=2)
        return images, labels


BATCHES = [[4, 0], [2], [5, 1, 3]]


def _values(batches) -> list[tuple[list[int], list[int]]]:
    return [(images[:, 0, 0, 0].long().tolist(), labels.tolist()) for images, labels in batches]


@pytest.mark.parametrize("num_workers", [0, 2])
def test_batches_come_in_the_order_given(num_workers) -> None:
    read = _values(read_batches(_Items(6), BATCHES, num_workers=num_workers, pin_memory=True))
    assert read == [(batch, [index % 3 for index in batch]) for batch in BATCHES]


def test_indices_may_be_tensors_and_no_batches_read_nothing() -> None:
    read = _values(read_batches(_Items(6), [torch.tensor([5, 0]), [torch.tensor(2)]], num_workers=1))
    assert read == [([5, 0], [2, 0]), ([2], [2])]
    assert list(read_batches(_Items(6), [], num_workers=2)) == []


@pytest.mark.parametrize("num_workers", [0, 1])
def test_a_reader_s_error_is_raised_as_itself(num_workers) -> None:
    with pytest.raises(ValueError, match="^item 2 is unreadable$"):
        list(read_batches(_Items(6, fail_at=2), BATCHES, num_workers=num_workers))


def test_a_reader_reading_through_workers_works_inside_a_worker() -> None:
    read = _values(read_batches(_ReadsThroughWorkers(6), BATCHES, num_workers=1))
    assert read == _values(read_batches(_Items(6), BATCHES))


def test_worker_counts() -> None:
    assert usable_workers(3) == 3  # outside a worker
    cpus = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    assert default_workers() == min(MAX_WORKERS, cpus) >= 1


class _LosesItsHandOver:
    """Three one-item batches; the worker reading batch 2 closes its end of the hand-over of batch 1 (already
    queued for the main process), touches ``flag`` and waits: the state of a worker killed mid-hand-over before
    the main process sees it gone, which torch reports as a bare ``multiprocessing`` error."""

    def __init__(self, flag: Path) -> None:
        self.flag = flag

    def __len__(self) -> int:
        return 3

    def read_items(self, indices: list[int]) -> tuple[torch.Tensor, torch.Tensor]:
        if indices == [2]:
            while not resource_sharer._resource_sharer._cache:  # batch 1's tensors are not yet offered
                time.sleep(0.01)
            resource_sharer.stop()
            self.flag.touch()
            time.sleep(60)
        return torch.zeros(len(indices), 1, 4, 4), torch.zeros(len(indices), dtype=torch.long)


def test_a_batch_lost_in_a_workers_hand_over_is_reported_as_its_death(tmp_path) -> None:
    flag = tmp_path / "handed-over"
    batches = read_batches(_LosesItsHandOver(flag), [[0], [1], [2]], num_workers=1)
    next(batches)  # the worker now reads batch 2 and has queued batch 1
    while not flag.exists():
        time.sleep(0.01)
    with pytest.raises(RuntimeError, match=r"a DataLoader worker process died while reading the dataset \(a batch "
                                           r"it handed over could not be received: .*Error.*fewer workers"):
        next(batches)
