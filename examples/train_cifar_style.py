"""Train a CIFAR-style classifier on a purified training set.

The defense is one line, ``train_set = PurifiedDataset(train_set, purifier, ...)``; the rest is an
ordinary training script (small ResNet, random crop + flip, SGD with cosine annealing). The purified
images are cached on disk ($DVAE_TRANSFORM_CACHE), so a second run starts training at once.

    # CIFAR-10 (downloaded to ./data), fitting D-VAE on it first
    python examples/train_cifar_style.py --fit
    # local poisoned data (.npz with images/labels, an image folder, or a save_to_disk dataset)
    python examples/train_cifar_style.py --data poisoned.npz --test-data clean_test.npz --weights ./purifier
"""

from __future__ import annotations

import argparse
import time
from collections.abc import Sequence

import torch
from torch import nn
from torch.utils.data import DataLoader, Dataset, TensorDataset
from torchvision.datasets import CIFAR10
from torchvision.transforms import v2

from dvae_transform import PurifiedDataset
from dvae_transform.cli import purifier_from_args, script_parser
from dvae_transform.data.formats import read_dataset
from dvae_transform.data.sources import load_images_and_labels


class ResidualBlock(nn.Module):
    """conv-BN-ReLU-conv-BN plus a (projected) shortcut."""

    def __init__(self, in_channels: int, out_channels: int, stride: int = 1) -> None:
        super().__init__()
        self.body = nn.Sequential(
            nn.Conv2d(in_channels, out_channels, 3, stride, 1, bias=False),
            nn.BatchNorm2d(out_channels),
            nn.ReLU(inplace=True),
            nn.Conv2d(out_channels, out_channels, 3, 1, 1, bias=False),
            nn.BatchNorm2d(out_channels),
        )
        self.shortcut = nn.Identity()
        if stride != 1 or in_channels != out_channels:
            self.shortcut = nn.Sequential(nn.Conv2d(in_channels, out_channels, 1, stride, bias=False),
                                          nn.BatchNorm2d(out_channels))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.relu(self.body(x) + self.shortcut(x))


def small_resnet(in_channels: int, num_classes: int, width: int = 32) -> nn.Sequential:
    """A three-stage ResNet for small images (widths ``width``, ``2 * width``, ``4 * width``)."""
    return nn.Sequential(
        nn.Conv2d(in_channels, width, 3, 1, 1, bias=False),
        nn.BatchNorm2d(width),
        nn.ReLU(inplace=True),
        ResidualBlock(width, width),
        ResidualBlock(width, 2 * width, stride=2),
        ResidualBlock(2 * width, 4 * width, stride=2),
        nn.AdaptiveAvgPool2d(1),
        nn.Flatten(),
        nn.Linear(4 * width, num_classes),
    )


def load_split(path: str | None, root: str, train: bool) -> Dataset:
    """A local dataset (.npz, image folder or save_to_disk folder), or CIFAR-10 downloaded to ``root``."""
    if path is None:
        return CIFAR10(root, train=train, download=True)
    images, labels, _ = read_dataset(path, progress=False)
    return TensorDataset(images, labels)


def accuracy(model: nn.Module, dataset: Dataset, device: torch.device, batch_size: int = 512) -> float:
    """Top-1 accuracy of ``model`` on ``dataset``."""
    images, labels = load_images_and_labels(dataset)
    model.eval()
    correct = 0
    for start in range(0, len(labels), batch_size):
        logits = model(images[start:start + batch_size].to(device))
        correct += (logits.argmax(1).cpu() == labels[start:start + batch_size]).sum().item()
    return correct / len(labels)


def train(model: nn.Module, loader: DataLoader, *, epochs: int, lr: float, device: torch.device) -> list[float]:
    """SGD with momentum and cosine annealing; returns the mean loss of each epoch."""
    optimizer = torch.optim.SGD(model.parameters(), lr=lr, momentum=0.9, weight_decay=5e-4, nesterov=True)
    scheduler = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, epochs * len(loader))
    losses = []
    for epoch in range(epochs):
        model.train()
        total, count, start = 0.0, 0, time.perf_counter()
        for images, labels in loader:
            images, labels = images.to(device), labels.to(device)
            loss = nn.functional.cross_entropy(model(images), labels)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            scheduler.step()
            total, count = total + loss.item() * len(labels), count + len(labels)
        losses.append(total / count)
        print(f"epoch {epoch + 1}/{epochs}: loss {losses[-1]:.4f} ({time.perf_counter() - start:.1f} s)")
    return losses


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = script_parser(__doc__.split("\n\n")[0], epochs=30, batch_size=128,
                           data="training data: .npz, image folder or save_to_disk folder "
                                "(default: CIFAR-10 train, downloaded)")
    parser.add_argument("--test-data", help="clean test data in the same formats (default: CIFAR-10 test "
                                            "when --data is not given, else no evaluation)")
    parser.add_argument("--root", default="./data", help="download folder for CIFAR-10 (default: ./data)")
    parser.add_argument("--width", type=int, default=32, help="classifier width (default: 32)")
    parser.add_argument("--lr", type=float, default=0.1, help="peak learning rate (default: 0.1)")
    parser.add_argument("--workers", type=int, default=2, help="DataLoader workers (default: 2)")
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu",
                        help="where to train (default: cuda when available)")
    return parser.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> dict[str, object]:
    """Fit or load a purifier, train on the purified set, evaluate; returns the losses and accuracy."""
    args = parse_args(argv)
    torch.manual_seed(args.seed)
    device = torch.device(args.device)
    train_set = load_split(args.data, args.root, train=True)
    purifier = purifier_from_args(args, train_set, seed=args.seed).replace(device=device)
    size = purifier.image_size
    augment = v2.Compose([v2.RandomCrop(size, padding=size // 8), v2.RandomHorizontalFlip()])

    train_set = PurifiedDataset(train_set, purifier, transform=augment)  # <- the defense: purified here, once
    loader = DataLoader(train_set, batch_size=args.batch_size, shuffle=True, drop_last=len(train_set) > args.batch_size,
                        num_workers=args.workers, persistent_workers=args.workers > 0)
    model = small_resnet(purifier.in_channels, purifier.num_classes, args.width).to(device)
    losses = train(model, loader, epochs=args.epochs, lr=args.lr, device=device)
    test_path = args.test_data
    if test_path is None and args.data is not None:
        print("no --test-data: skipping evaluation")
        return {"losses": losses, "test_accuracy": None}
    test_accuracy = accuracy(model, load_split(test_path, args.root, train=False), device)
    print(f"clean test accuracy: {test_accuracy:.2%}")
    return {"losses": losses, "test_accuracy": test_accuracy}


if __name__ == "__main__":
    main()
