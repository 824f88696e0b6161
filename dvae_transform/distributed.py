"""Sharing work between the processes of an Accelerate launch, or running it all in one process.

Every helper takes an ``accelerate.Accelerator`` or None; None (or a one-process accelerator)
means a single process, where the helpers do nothing beyond returning their input. With several
processes every process must call the same helpers in the same order (they are collectives).
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any, TypeVar

import torch
from accelerate import Accelerator
from accelerate.state import AcceleratorState
from accelerate.utils import broadcast_object_list, gather_object

T = TypeVar("T")


def _several(accelerator: Accelerator | None) -> bool:
    return accelerator is not None and accelerator.num_processes > 1


def is_main_process(accelerator: Accelerator | None) -> bool:
    """True in the process that writes shared files (the only process when there is no accelerator)."""
    return accelerator is None or accelerator.is_main_process


def broadcast(accelerator: Accelerator | None, value: T) -> T:
    """The main process's ``value``, in every process."""
    if not _several(accelerator):
        return value
    return broadcast_object_list([value])[0]


def share(accelerator: Accelerator | None, items: list[T]) -> list[T]:
    """This process's contiguous share of ``items`` (process 0 gets the first share)."""
    if not _several(accelerator):
        return list(items)
    with accelerator.split_between_processes(list(items)) as mine:
        return list(mine)


def gather(accelerator: Accelerator | None, items: list[Any]) -> list[Any]:
    """Every process's ``items`` concatenated in process order, in every process."""
    if not _several(accelerator):
        return list(items)
    return gather_object(list(items))


def sync_buffers(accelerator: Accelerator | None, module: torch.nn.Module) -> None:
    """Give every process the main process's buffers of ``module`` (e.g. batch-norm running statistics)."""
    if _several(accelerator):
        for buffer in module.buffers():
            torch.distributed.broadcast(buffer, src=0)


def wait_for_everyone(accelerator: Accelerator | None) -> None:
    """Block until every process reaches this point."""
    if _several(accelerator):
        accelerator.wait_for_everyone()


def release(accelerator: Accelerator, *prepared: Any) -> None:
    """Drop ``prepared`` (what ``accelerator.prepare`` returned) from the accelerator's registries.

    Unlike ``free_memory()``, whatever else it holds (a user's models, optimizers, step count) stays.
    """
    for registry in (accelerator._models, accelerator._optimizers, accelerator._schedulers, accelerator._dataloaders):
        registry[:] = [item for item in registry if not any(item is gone for gone in prepared)]


@contextmanager
def state_kept() -> Iterator[None]:
    """Clear the process-wide Accelerate state that the block creates, if there was none before it.

    A state that was there (a user's Accelerator) is left alone.
    """
    fresh = not AcceleratorState._shared_state
    try:
        yield
    finally:
        if fresh:
            AcceleratorState._reset_state()
