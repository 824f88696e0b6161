"""A stage's training data, read in batches: the epoch plan and the in-memory set.

:class:`TrainingSet` is what :func:`~dvae_transform.training.loop.train_stage` reads: items in a fixed order,
each an image (uint8 levels or float32 in [0, 1], decoded on the device) and an int64 label, in the batches
of :func:`epoch_plan`, which do not depend on the number of processes. :class:`TensorSet` holds the images
in memory (on the accelerator when they fit, else in pinned host memory) and indexes its batches there, with
no DataLoader; :mod:`dvae_transform.training.streamed` implements the same protocol for data read from disk.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import TYPE_CHECKING, Protocol

import torch

from ..precision import decode, encode
from ..purify import default_batch_size, remove_perturbation

if TYPE_CHECKING:
    from accelerate import Accelerator

    from ..model import DVAE

PURIFY_CHUNK_BATCHES = 16  # micro-batches per call of remove_perturbation (4096 images at 32 px)


class TrainingSet(Protocol):
    """Items for one stage: images of ``item_shape`` (CHW) and their labels, read in planned batches."""

    labels: torch.Tensor  # int64, one per item, on the CPU
    item_shape: tuple[int, int, int]

    def __len__(self) -> int: ...

    def batches(self, plan: list[torch.Tensor], device: torch.device) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        """For each index tensor of ``plan``: (float32 NCHW images in [0, 1], int64 labels) on ``device``."""
        ...

    def stage1_output(self, model: DVAE, accelerator: Accelerator, subtract: str) -> TrainingSet:
        """The stage-1 output ``clamp(x - p(x, y))`` at 8-bit levels (``p`` by rule ``subtract``), as the next
        stage's training set."""
        ...

    def identity(self) -> object:
        """What identifies the items (for :func:`~dvae_transform.fingerprint.fingerprint`)."""
        ...

    def close(self) -> None:
        """Release what the set holds on disk."""
        ...


def epoch_plan(size: int, batch_size: int, *, seed: int, epoch: int, rank: int = 0,
               world: int = 1) -> list[torch.Tensor]:
    """This process's item indices for every step of ``epoch``.

    A permutation of ``range(size)`` seeded by ``(seed, epoch)`` is cut into global batches of
    ``batch_size``; process ``rank`` of ``world`` gets the ``rank``-th of ``world`` contiguous parts of each
    (``tensor_split``). A last global batch with fewer items than processes is left out.
    """
    generator = torch.Generator().manual_seed(seed * 100_003 + epoch)
    order = torch.randperm(size, generator=generator)
    plan = []
    for start in range(0, size, batch_size):
        batch = order[start : start + batch_size]
        if len(batch) < world:
            break
        plan.append(batch.tensor_split(world)[rank])
    return plan


def _fits_on(device: torch.device, nbytes: int) -> bool:
    if device.type != "cuda":
        return True
    free, _ = torch.cuda.mem_get_info(device)
    return nbytes <= free // 4


class TensorSet:
    """A training set held in memory: ``images`` (uint8 levels or float32 NCHW in [0, 1]) and int64 ``labels``."""

    def __init__(self, images: torch.Tensor, labels: torch.Tensor) -> None:
        self.images, self.labels = images, labels
        self.item_shape = tuple(images.shape[1:])
        self._placed: tuple[torch.device, torch.Tensor, torch.Tensor] | None = None

    def __len__(self) -> int:
        return len(self.labels)

    def _place(self, device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
        """The images and labels where batches are indexed: on ``device`` if they fit, else in pinned memory."""
        if self._placed is None or self._placed[0] != device:
            images, labels = self.images, self.labels
            if _fits_on(device, images.nbytes):
                images, labels = images.to(device), labels.to(device)
            elif device.type == "cuda":
                images, labels = images.pin_memory(), labels.pin_memory()
            self._placed = device, images, labels
        return self._placed[1], self._placed[2]

    def batches(self, plan: list[torch.Tensor], device: torch.device) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        images, labels = self._place(device)
        for indices in plan:
            indices = indices.to(images.device, non_blocking=True)
            x = images.index_select(0, indices).to(device, non_blocking=True)
            yield decode(x), labels.index_select(0, indices).to(device, non_blocking=True)

    def stage1_output(self, model: DVAE, accelerator: Accelerator, subtract: str) -> TensorSet:
        out = torch.empty(self.images.shape, dtype=torch.uint8)
        micro = default_batch_size(model)
        step = PURIFY_CHUNK_BATCHES * micro
        for start in range(0, len(self), step):
            images, labels = decode(self.images[start : start + step]), self.labels[start : start + step]
            out[start : start + step] = encode(remove_perturbation(model, images, labels, batch_size=micro,
                                                               subtract=subtract))
        return TensorSet(out, self.labels)

    def identity(self) -> object:
        return ["tensors", self.images, self.labels]

    def close(self) -> None:
        self._placed = None
