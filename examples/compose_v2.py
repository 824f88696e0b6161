"""D-VAE as one step of a torchvision ``transforms.v2`` pipeline.

A v2 transform sees the image and the label together, so ``DVAEPurify`` can use the label
(stage 1 of D-VAE needs it) and pass it on unchanged::

    pipeline = v2.Compose([v2.ToImage(), v2.ToDtype(torch.float32, scale=True), purifier,
                           v2.RandomCrop(32, padding=4)])
    image, label = pipeline(pil_image, label)

This purifies every sample each time it is loaded. That is simple, but for training over many
epochs ``PurifiedDataset`` (see ``train_cifar_style.py``) purifies once and caches the result.

    python examples/compose_v2.py --fit                       # CIFAR-10, downloaded to ./data
    python examples/compose_v2.py --data poisoned.npz --weights ./purifier
"""

from __future__ import annotations

import argparse
import time
from collections.abc import Callable, Sequence
from typing import Any

import torch
from torch import nn
from torch.utils.data import DataLoader, Dataset, TensorDataset
from torchvision.datasets import CIFAR10
from torchvision.transforms import v2

from dvae_transform import DVAEPurify
from dvae_transform.cli import purifier_from_args, script_parser
from dvae_transform.data.formats import read_dataset
from dvae_transform.evaluation.victims import small_cnn


class PairTransformed(Dataset):
    """Apply a transform to each ``(image, label)`` pair (torchvision datasets transform the image alone)."""

    def __init__(self, dataset: Dataset, transforms: Callable[[Any, Any], tuple[Any, Any]]) -> None:
        self.dataset, self.transforms = dataset, transforms

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitem__(self, index: int) -> tuple[Any, Any]:
        return self.transforms(*self.dataset[index])


def build_pipeline(purifier: DVAEPurify) -> v2.Compose:
    """PIL / tensor image -> float in [0, 1] -> purified (using the label) -> random crop."""
    return v2.Compose([
        v2.ToImage(),
        v2.ToDtype(torch.float32, scale=True),
        purifier,  # uses the label that travels with the image
        v2.RandomCrop(purifier.image_size, padding=4),
    ])


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = script_parser(__doc__.split("\n\n")[0], epochs=1, batch_size=64,
                           data="training data: .npz, image folder or save_to_disk folder "
                                "(default: CIFAR-10 train, downloaded to --root)")
    parser.add_argument("--root", default="./data", help="download folder for CIFAR-10 (default: ./data)")
    return parser.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> dict[str, object]:
    """Train a small classifier through the purifying pipeline; returns the losses and throughput."""
    args = parse_args(argv)
    torch.manual_seed(args.seed)
    if args.data is None:
        dataset = CIFAR10(args.root, train=True, download=True)
    else:
        images, labels, _ = read_dataset(args.data, progress=False)
        dataset = TensorDataset(images, labels)
    purifier = purifier_from_args(args, dataset, seed=args.seed)

    loader = DataLoader(PairTransformed(dataset, build_pipeline(purifier)), batch_size=args.batch_size, shuffle=True)

    model = small_cnn(purifier.in_channels, purifier.num_classes)
    model(torch.zeros(1, purifier.in_channels, purifier.image_size, purifier.image_size))  # size the lazy layer
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-3)
    losses, seen, start = [], 0, time.perf_counter()
    for epoch in range(args.epochs):
        total = 0.0
        for images, labels in loader:
            loss = nn.functional.cross_entropy(model(images), labels)
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
            total, seen = total + loss.item() * len(labels), seen + len(labels)
        losses.append(total / len(dataset))
        print(f"epoch {epoch + 1}/{args.epochs}: loss {losses[-1]:.4f}")
    images_per_s = seen / (time.perf_counter() - start)
    print(f"{images_per_s:.0f} images/s through the purifying pipeline (purified on every load)")
    return {"losses": losses, "images_per_s": images_per_s}


if __name__ == "__main__":
    main()
