"""The optimisation behind error-minimising noise (:func:`~.attacks.error_minimizing`).

Bi-level min-min optimisation against a small surrogate CNN: train the CNN on the poisoned images,
then lower its loss further by changing every image's noise (PGD within the L_inf budget), until the
CNN learns the poisoned set almost perfectly.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


def _small_cnn(channels: int, num_classes: int, generator: torch.Generator, device: torch.device) -> nn.Sequential:
    """Two strided conv blocks and a linear head, initialised from ``generator`` (the global RNG is untouched)."""
    with torch.device("meta"):
        model = nn.Sequential(
            nn.Conv2d(channels, 16, 3, stride=2, padding=1),
            nn.BatchNorm2d(16),
            nn.ReLU(),
            nn.Conv2d(16, 32, 3, stride=2, padding=1),
            nn.BatchNorm2d(32),
            nn.ReLU(),
            nn.AdaptiveAvgPool2d(4),
            nn.Flatten(),
            nn.Linear(32 * 16, num_classes),
        )
    model = model.to_empty(device="cpu")
    for layer in model:
        if isinstance(layer, (nn.Conv2d, nn.Linear)):
            nn.init.kaiming_normal_(layer.weight, nonlinearity="relu", generator=generator)
            nn.init.zeros_(layer.bias)
        elif isinstance(layer, nn.BatchNorm2d):
            layer.reset_parameters()
    return model.to(device)


def _train_model(
    model: nn.Module,
    optimizer: torch.optim.Optimizer,
    poisoned: torch.Tensor,
    labels: torch.Tensor,
    steps: int,
    batch_size: int,
    generator: torch.Generator,
) -> None:
    model.train()
    batches = torch.stack([torch.randperm(poisoned.shape[0], generator=generator)[:batch_size] for _ in range(steps)])
    for index in batches.to(poisoned.device):  # one copy to the device per round, not one per step
        optimizer.zero_grad()
        F.cross_entropy(model(poisoned[index]), labels[index]).backward()
        optimizer.step()


def _minimise_noise(
    model: nn.Module,
    batch: torch.Tensor,
    delta: torch.Tensor,
    labels: torch.Tensor,
    *,
    eps: float,
    step_size: float,
    steps: int,
    batch_size: int,
) -> torch.Tensor:
    """PGD that lowers the loss: signed-gradient descent on delta within the L_inf ball and [0, 1]."""
    model.eval()
    updated = []
    for start in range(0, batch.shape[0], batch_size):
        clean, noise, target = (t[start : start + batch_size] for t in (batch, delta, labels))
        for _ in range(steps):
            noise = noise.detach().requires_grad_(True)
            (grad,) = torch.autograd.grad(F.cross_entropy(model(clean + noise), target), noise)
            noise = (noise - step_size * grad.sign()).clamp(-eps, eps)
            noise = (clean + noise).clamp(0.0, 1.0) - clean
        updated.append(noise.detach())
    return torch.cat(updated)


@torch.no_grad()
def _accuracy(model: nn.Module, images: torch.Tensor, labels: torch.Tensor, batch_size: int) -> float:
    model.eval()
    correct = sum(
        (model(images[start : start + batch_size]).argmax(dim=1) == labels[start : start + batch_size]).sum()
        for start in range(0, images.shape[0], batch_size)
    )
    return int(correct) / images.shape[0]


def error_minimizing_poison(
    batch: torch.Tensor,
    labels: torch.Tensor,
    num_classes: int,
    generator: torch.Generator,
    *,
    eps: float,
    step_size: float,
    pgd_steps: int,
    train_steps: int,
    max_rounds: int,
    stop_accuracy: float,
    batch_size: int,
) -> torch.Tensor:
    """``batch`` plus error-minimising noise within L_inf ``eps`` (see :func:`~.attacks.error_minimizing`)."""
    model = _small_cnn(batch.shape[1], num_classes, generator, batch.device)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9, weight_decay=5e-4)
    delta = ((torch.rand(batch.shape, generator=generator) * 2 - 1) * eps).to(batch.device)
    delta = (batch + delta).clamp(0.0, 1.0) - batch
    with torch.enable_grad():
        for _ in range(max_rounds):
            _train_model(model, optimizer, batch + delta, labels, train_steps, batch_size, generator)
            delta = _minimise_noise(
                model, batch, delta, labels, eps=eps, step_size=step_size, steps=pgd_steps, batch_size=batch_size
            )
            if _accuracy(model, batch + delta, labels, batch_size) > stop_accuracy:
                break
    return batch + delta
