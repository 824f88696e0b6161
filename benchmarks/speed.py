"""Speed of fitting, purification, PurifiedDataset and its cache on the embedded MNIST digits.

Writes a table between the ``<!-- speed:start/end -->`` markers of BENCHMARKS.md, with the
command line that produced it. Run from the repository root:

    python benchmarks/speed.py [--images 1024] [--benchmarks-file BENCHMARKS.md]
"""

from __future__ import annotations

import argparse
import os
import platform
import shlex
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import torch
from torch.utils.data import DataLoader, Dataset, TensorDataset
from torchvision.transforms import v2

from dvae_transform import PRESETS, DVAEPurify, PurifiedDataset
from dvae_transform.evaluation.attacks import lsp
from dvae_transform.evaluation.mnist import load_mnist32
from dvae_transform.evaluation.report import write_block


class _PerSample(Dataset):
    """The naive alternative: the transform purifies every item as it is read."""

    def __init__(self, images: torch.Tensor, labels: torch.Tensor, transform: Callable) -> None:
        self.images, self.labels, self.transform = images, labels, transform

    def __len__(self) -> int:
        return len(self.images)

    def __getitem__(self, index: int):
        return self.transform(self.images[index], int(self.labels[index]))


def _rate(count: int, function: Callable[[], object]) -> tuple[float, float]:
    started = time.perf_counter()
    function()
    seconds = time.perf_counter() - started
    return count / seconds, seconds


def _epoch(dataset: Dataset, batch_size: int = 64) -> None:
    for _ in DataLoader(dataset, batch_size=batch_size, shuffle=True):
        pass


def measure(count: int) -> list[tuple[str, str]]:
    data = load_mnist32()
    images, labels = data.train_images[:count], data.train_labels[:count]
    poisoned = lsp(images, labels, seed=0)
    rows: list[tuple[str, str]] = []
    purifiers = {}
    for name in ("fast", "paper"):
        preset = PRESETS[name]
        purifier = DVAEPurify.fit((poisoned, labels), preset=name, epochs=1, progress=False)
        rate = sum(h["images_per_s"] for h in purifier.history) / len(purifier.history)
        full = 2 * preset.epochs * 4000 / rate
        rows.append((f"fit, `{name}` preset (width {preset.width}, batch {preset.batch_size})",
                     f"{rate:.0f} images/s per epoch; 2 x {preset.epochs} epochs on 4,000 images"
                     f" ~ {full / 60:.1f} min"))
        purifiers[name] = purifier
    for name, purifier in purifiers.items():
        rate, _ = _rate(count, lambda p=purifier: p.purify(poisoned, labels))
        rows.append((f"purify (two stages), `{name}` preset, batched", f"{rate:.0f} images/s"))

    purifier = purifiers["fast"]
    pipeline = v2.Compose([purifier])
    per_sample, _ = _rate(count, lambda: _epoch(_PerSample(poisoned, labels, pipeline)))
    with tempfile.TemporaryDirectory() as cache_dir:
        first, _ = _rate(count, lambda: _epoch(PurifiedDataset((poisoned, labels), purifier, cache_dir=cache_dir,
                                                                progress=False)))
        cached, _ = _rate(count, lambda: _epoch(PurifiedDataset((poisoned, labels), purifier, cache_dir=cache_dir,
                                                                 progress=False)))
    raw, _ = _rate(count, lambda: _epoch(TensorDataset(poisoned, labels)))
    rows.append(("first epoch: DVAEPurify per sample in a DataLoader (v2 Compose)", f"{per_sample:.0f} images/s"))
    rows.append(("first epoch: PurifiedDataset (purify once in batches, write cache)",
                 f"{first:.0f} images/s ({first / per_sample:.1f}x the per-sample rate)"))
    rows.append(("later epoch / run: PurifiedDataset read from the disk cache",
                 f"{cached:.0f} images/s (raw tensor dataset: {raw:.0f} images/s)"))
    return rows


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=1024, help="poisoned MNIST images to time on")
    parser.add_argument("--benchmarks-file", type=Path, default=Path("BENCHMARKS.md"))
    args = parser.parse_args(argv)
    rows = measure(args.images)
    command = "python benchmarks/speed.py " + shlex.join(argv if argv is not None else sys.argv[1:])
    lines = [
        f"Command: `{command.strip()}` ({time.strftime('%Y-%m-%d')}, {os.cpu_count()} CPU cores, "
        f"{torch.get_num_threads()} torch threads, torch {torch.__version__}, Python {platform.python_version()}, "
        f"{args.images} LSP-poisoned MNIST digits 1x32x32, batch 64 for the DataLoader epochs).",
        "",
        "| what | measured |",
        "| --- | --- |",
        *[f"| {what} | {value} |" for what, value in rows],
    ]
    block = "\n".join(lines)
    print(block)
    write_block(args.benchmarks_file, block, name="speed")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
