"""Purify a small deterministic dataset through the on-disk cache, in a process of its own.

Usage: ``python tests/_cache_worker.py PURIFIER_DIR CACHE_DIR OUT_FILE CALL_LOG``

Loads the purifier written by ``save_pretrained`` to PURIFIER_DIR, purifies
:func:`make_dataset` with ``PurifiedDataset`` (cache under CACHE_DIR, :data:`SHARD_SIZE`
items per shard) and saves the images and labels to OUT_FILE with safetensors. Every call
of ``purifier.purify`` (one per computed shard) appends a line to CALL_LOG; the env var
``DVAE_TEST_SHARD_DELAY`` (seconds) makes each call sleep first, so a test can kill the
process half-way or run two of them at once.
"""

from __future__ import annotations

import os
import sys
import time
from pathlib import Path

import torch
from safetensors.torch import save_file
from torch.utils.data import TensorDataset

from dvae_transform import DVAEPurify
from dvae_transform.purified_dataset import PurifiedDataset

torch.set_num_threads(1)  # as in the test process: bit-identical arithmetic

NUM_ITEMS = 48
SHARD_SIZE = 4


def make_dataset(purifier: DVAEPurify, count: int = NUM_ITEMS, seed: int = 1) -> TensorDataset:
    """``count`` random uint8 images shaped for ``purifier``, with labels cycling over its classes."""
    generator = torch.Generator().manual_seed(seed)
    shape = (count, purifier.in_channels, purifier.image_size, purifier.image_size)
    images = torch.randint(0, 256, shape, generator=generator, dtype=torch.uint8)
    return TensorDataset(images, torch.arange(count) % purifier.num_classes)


def load_purifier(directory: str | os.PathLike) -> DVAEPurify:
    """The purifier a test saved with ``save_pretrained``."""
    return DVAEPurify.from_pretrained(directory)


def count_calls(purifier: DVAEPurify, log: Path, delay: float) -> None:
    """Log (and delay) every ``purifier.purify`` call; the library itself is untouched."""
    purify = purifier.purify

    def logged(*args, **kwargs):
        time.sleep(delay)
        with open(log, "a") as handle:
            handle.write(f"{os.getpid()}\n")
        return purify(*args, **kwargs)

    purifier.purify = logged


def main(purifier_dir: str, cache_dir: str, out_file: str, call_log: str) -> None:
    torch.set_num_threads(1)
    purifier = load_purifier(purifier_dir)
    count_calls(purifier, Path(call_log), float(os.environ.get("DVAE_TEST_SHARD_DELAY", "0")))
    dataset = PurifiedDataset(
        make_dataset(purifier), purifier, cache_dir=cache_dir, shard_size=SHARD_SIZE, progress=False
    )
    save_file({"images": dataset.images, "labels": dataset.labels}, out_file)


if __name__ == "__main__":
    main(*sys.argv[1:5])
