"""A stage's training data: the epoch plan and the in-memory set (dvae_transform.training.sets)."""

from __future__ import annotations

import pytest
import torch

from dvae_transform.precision import decode, encode
from dvae_transform.purify import remove_perturbation
from dvae_transform.training.sets import TensorSet, epoch_plan

CPU = torch.device("cpu")


@pytest.mark.parametrize(("size", "batch_size"), [(10, 4), (12, 4), (5, 8)])
def test_one_process_reads_every_item_once_per_epoch_in_batches_of_the_batch_size(size: int, batch_size: int) -> None:
    plan = epoch_plan(size, batch_size, seed=0, epoch=0)
    assert [len(batch) for batch in plan[:-1]] == [batch_size] * (len(plan) - 1)
    assert 1 <= len(plan[-1]) <= batch_size
    assert sorted(torch.cat(plan).tolist()) == list(range(size))


def test_the_order_depends_only_on_seed_and_epoch() -> None:
    def order(seed: int, epoch: int) -> list[int]:
        return torch.cat(epoch_plan(32, 8, seed=seed, epoch=epoch)).tolist()

    torch.manual_seed(123)  # the global generator plays no part
    first = order(3, 1)
    torch.manual_seed(456)
    assert order(3, 1) == first
    assert order(3, 2) != first and order(4, 1) != first


@pytest.mark.parametrize("world", [2, 3])
def test_processes_read_contiguous_parts_of_the_same_global_batches(world: int) -> None:
    single = epoch_plan(20, 6, seed=1, epoch=0)
    parts = [epoch_plan(20, 6, seed=1, epoch=0, rank=rank, world=world) for rank in range(world)]
    kept = single if world == 2 else single[:-1]  # the last global batch holds 2 items: fewer than 3 processes
    assert all(len(plan) == len(kept) for plan in parts)
    for step, batch in enumerate(kept):
        assert torch.equal(torch.cat([plan[step] for plan in parts]), batch)
        assert [len(plan[step]) for plan in parts] == [len(part) for part in batch.tensor_split(world)]


def test_a_last_global_batch_with_fewer_items_than_processes_is_left_out() -> None:
    single = epoch_plan(13, 6, seed=0, epoch=0)  # batches of 6, 6 and 1
    assert [len(batch) for batch in single] == [6, 6, 1]
    for rank in range(2):
        plan = epoch_plan(13, 6, seed=0, epoch=0, rank=rank, world=2)
        assert [len(batch) for batch in plan] == [3, 3]


def test_a_tensor_set_yields_float_batches_of_the_planned_items(tiny_data) -> None:
    images, labels = tiny_data
    levels = encode(images)
    for stored in (images, levels):  # float32 in [0, 1], or uint8 levels decoded per batch
        train_set = TensorSet(stored, labels)
        assert len(train_set) == 64 and train_set.item_shape == (1, 16, 16)
        plan = epoch_plan(len(train_set), 16, seed=0, epoch=0)
        batches = list(train_set.batches(plan, CPU))
        assert len(batches) == len(plan)
        for indices, (x, y) in zip(plan, batches):
            assert x.dtype == torch.float32 and y.dtype == torch.int64
            assert torch.equal(x, decode(stored[indices])) and torch.equal(y, labels[indices])
        train_set.close()
        assert torch.equal(next(train_set.batches(plan[:1], CPU))[0], decode(stored[plan[0]]))  # usable after close


def test_the_identity_names_the_items_and_their_labels(tiny_data) -> None:
    images, labels = tiny_data
    kind, held_images, held_labels = TensorSet(images, labels).identity()
    assert kind == "tensors" and held_images is images and held_labels is labels


@pytest.mark.parametrize("subtract", ["effect", "raw"])
def test_the_stage1_output_is_the_purified_set_at_8_bit_levels(tiny_purifier, tiny_data, subtract: str) -> None:
    images, labels = tiny_data
    output = TensorSet(images, labels).stage1_output(tiny_purifier.stage1, None, subtract)
    assert isinstance(output, TensorSet) and output.images.dtype == torch.uint8 and output.labels is labels
    expected = remove_perturbation(tiny_purifier.stage1, images, labels, subtract=subtract)
    assert torch.equal(decode(output.images), expected)
