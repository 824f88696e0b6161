"""The victim classifier of the demo and the benchmark, and its training recipe (:data:`RECIPE`).

On the embedded MNIST split the small CNN is the stand-in for the paper's ResNet-18 victim.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from ..images import to_float_images, to_labels


@dataclass(frozen=True)
class VictimRecipe:
    """How the victim is built and trained; reports print :meth:`describe`."""

    model: str = "a small CNN (two conv-pool blocks, one hidden layer)"
    optimizer: str = "Adam"
    lr: float = 1e-3
    batch_size: int = 128
    epochs: int = 8
    augmentation: str = "random 2-pixel shifts"
    role: str = "On the embedded MNIST split it is the stand-in for the paper's ResNet-18 victim."

    def describe(self) -> str:
        """One paragraph: the model, its training settings and its role."""
        model = self.model[0].upper() + self.model[1:]
        return (
            f"{model} trained with {self.optimizer} (lr {self.lr:g}, batch {self.batch_size}, {self.epochs} epochs, "
            f"{self.augmentation} as augmentation). {self.role}"
        )


RECIPE = VictimRecipe()


def small_cnn(in_channels: int, num_classes: int) -> nn.Sequential:
    """Two conv-pool blocks and a small classifier head."""
    return nn.Sequential(
        nn.Conv2d(in_channels, 32, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
        nn.Conv2d(32, 64, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
        nn.Flatten(), nn.LazyLinear(128), nn.ReLU(), nn.Linear(128, num_classes),
    )


def _random_shift(batch: torch.Tensor, generator: torch.Generator, pad: int = 2) -> torch.Tensor:
    padded = F.pad(batch, (pad,) * 4)
    dx, dy = torch.randint(0, 2 * pad + 1, (2,), generator=generator).tolist()
    return padded[..., dy : dy + batch.shape[-2], dx : dx + batch.shape[-1]]


def train_victim(
    images: torch.Tensor,
    labels: torch.Tensor,
    *,
    num_classes: int = 10,
    epochs: int = RECIPE.epochs,
    seed: int = 0,
    device: str | torch.device = "cpu",
) -> nn.Module:
    """Train the victim on (possibly poisoned or purified) images; returns it in eval mode on ``device``."""
    images = to_float_images(images).to(device)
    labels = to_labels(labels, images.shape[0], num_classes).to(device)
    generator = torch.Generator().manual_seed(seed)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = small_cnn(images.shape[1], num_classes)
        model(images[:1].cpu())  # materialise the lazy layer under the seed
    model.to(device)
    optimizer = torch.optim.Adam(model.parameters(), lr=RECIPE.lr)
    model.train()
    for _ in range(epochs):
        order = torch.randperm(len(images), generator=generator).to(device)
        for start in range(0, len(images), RECIPE.batch_size):
            index = order[start : start + RECIPE.batch_size]
            loss = F.cross_entropy(model(_random_shift(images[index], generator)), labels[index])
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
    return model.eval()


@torch.inference_mode()
def accuracy(model: nn.Module, images: torch.Tensor, labels: torch.Tensor) -> float:
    """Top-1 accuracy on clean test images."""
    device = next(model.parameters()).device
    images, labels = images.to(device), labels.to(device)
    predictions = torch.cat([model(images[i : i + 500]).argmax(1) for i in range(0, len(images), 500)])
    return (predictions == labels).float().mean().item()
