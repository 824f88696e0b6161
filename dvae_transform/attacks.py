"""Generators of unlearnable examples (availability poisons) for evaluation.

Every attack takes a float image batch in [0, 1] (NCHW, or one CHW image) with
its labels and returns poisoned images of the same shape, clamped to [0, 1].
All randomness comes from a local ``torch.Generator`` seeded with ``seed``, so
a call is reproducible and never touches the global RNG. ``fraction`` poisons
only a seeded random share of the images and leaves the others unchanged.

Budgets bound the perturbation before clamping; clamping to [0, 1] only moves
pixels back towards the clean image, so the actual change respects them too.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from functools import partial
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from dvae_transform._checks import ImageInput, to_float_images, to_labels

_PoisonFn = Callable[[torch.Tensor, torch.Tensor, int, torch.Generator], torch.Tensor]

_AR_WINDOW = 3
_AR_CANDIDATES = 64
_AR_MAX_DRAWS = 50


# ----------------------------------------------------------------------------- shared machinery


def _check_positive(value: Any, name: str) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise TypeError(f"{name} must be a number, got {type(value).__name__} ({value!r})")
    if not math.isfinite(value) or value <= 0:
        raise ValueError(f"{name} must be a positive finite number, got {value}")
    return float(value)


def _check_positive_int(value: Any, name: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise TypeError(f"{name} must be an int, got {type(value).__name__} ({value!r})")
    if value <= 0:
        raise ValueError(f"{name} must be positive, got {value}")
    return value


def _resolve_labels(labels: Any, num_images: int, num_classes: int | None) -> tuple[torch.Tensor, int]:
    """Validate labels; ``num_classes`` defaults to ``max(labels) + 1``."""
    if num_classes is None:
        raw = torch.as_tensor(labels)
        num_classes = max(int(raw.max()) + 1, 1) if raw.numel() and not raw.is_complex() else 1
    else:
        _check_positive_int(num_classes, "num_classes")
    return to_labels(labels, num_images, num_classes), num_classes


def _subset_mask(num_images: int, fraction: float, seed: int) -> torch.Tensor:
    """A seeded boolean mask selecting ``round(fraction * num_images)`` images."""
    order = torch.randperm(num_images, generator=torch.Generator().manual_seed(seed))
    mask = torch.zeros(num_images, dtype=torch.bool)
    mask[order[: round(fraction * num_images)]] = True
    return mask


def _run_attack(
    poison: _PoisonFn, images: ImageInput, labels: Any, num_classes: int | None, seed: int, fraction: float
) -> torch.Tensor:
    """Validate the common arguments, poison the batch, and keep only the chosen share."""
    if isinstance(seed, bool) or not isinstance(seed, int):
        raise TypeError(f"seed must be an int, got {type(seed).__name__} ({seed!r})")
    if isinstance(fraction, bool) or not isinstance(fraction, (int, float)) or not 0.0 <= fraction <= 1.0:
        raise ValueError(f"fraction must be a number in [0, 1], got {fraction!r}")
    batch, was_single = to_float_images(images)
    label_tensor, num_classes = _resolve_labels(labels, batch.shape[0], num_classes)
    generator = torch.Generator().manual_seed(seed)
    poisoned = poison(batch, label_tensor.to(batch.device), num_classes, generator).clamp(0.0, 1.0)
    chosen = _subset_mask(batch.shape[0], fraction, seed).to(batch.device)
    result = torch.where(chosen[:, None, None, None], poisoned, batch)
    return result[0] if was_single else result


def _scale_l2(noise: torch.Tensor, l2: float) -> torch.Tensor:
    """Rescale every item of ``noise`` (first dimension) to L2 norm ``l2``."""
    norms = noise.flatten(1).norm(dim=1).clamp_min(1e-12)
    return noise * (l2 / norms).view(-1, *([1] * (noise.ndim - 1)))


# ----------------------------------------------------------------------------- class-wise noise


def _classwise_poison(
    batch: torch.Tensor, labels: torch.Tensor, num_classes: int, generator: torch.Generator, *, eps: float
) -> torch.Tensor:
    noise = (torch.rand((num_classes, *batch.shape[1:]), generator=generator) * 2 - 1) * eps
    return batch + noise.to(batch.device)[labels]


def classwise_noise(
    images: ImageInput,
    labels: Any,
    *,
    num_classes: int | None = None,
    seed: int = 0,
    eps: float = 8 / 255,
    fraction: float = 1.0,
) -> torch.Tensor:
    """Class-wise random noise (Huang et al., ICLR 2021, the random-noise baseline).

    One noise image per class, uniform in ``[-eps, eps]`` (L_inf budget, default
    8/255), added to every image of that class.
    """
    eps = _check_positive(eps, "eps")
    return _run_attack(partial(_classwise_poison, eps=eps), images, labels, num_classes, seed, fraction)


# ----------------------------------------------------------------------------- LSP


def _lsp_poison(
    batch: torch.Tensor,
    labels: torch.Tensor,
    num_classes: int,
    generator: torch.Generator,
    *,
    l2: float | None,
    patch_size: int,
) -> torch.Tensor:
    _, channels, height, width = batch.shape
    grid = (num_classes, channels, math.ceil(height / patch_size), math.ceil(width / patch_size))
    cells = torch.rand(grid, generator=generator) * 2 - 1
    patterns = cells.repeat_interleave(patch_size, dim=2).repeat_interleave(patch_size, dim=3)[..., :height, :width]
    budget = l2 if l2 is not None else 0.05 * math.sqrt(channels * height * width)
    return batch + _scale_l2(patterns, budget).to(batch.device)[labels]


def lsp(
    images: ImageInput,
    labels: Any,
    *,
    num_classes: int | None = None,
    seed: int = 0,
    l2: float | None = None,
    patch_size: int = 8,
    fraction: float = 1.0,
) -> torch.Tensor:
    """Linear-separable synthetic patches (Yu et al., "Availability Attacks Create Shortcuts", KDD 2022).

    Each class gets a grid of ``patch_size`` x ``patch_size`` cells, every cell a
    uniform random value per channel, upsampled (nearest) to the image size and
    scaled to L2 norm ``l2``. The default budget is ``0.05 * sqrt(C*H*W)``
    (1.6 for 1x32x32, per-pixel RMS 0.05 ~ 12.75/255): about twice the paper's
    ``6/255 * sqrt(d)``, because on MNIST-like images clamping at the black
    background and white strokes removes roughly half of the perturbation.
    """
    if l2 is not None:
        l2 = _check_positive(l2, "l2")
    patch_size = _check_positive_int(patch_size, "patch_size")
    poison = partial(_lsp_poison, l2=l2, patch_size=patch_size)
    return _run_attack(poison, images, labels, num_classes, seed, fraction)


# ----------------------------------------------------------------------------- OPS


def _corner_colours(channels: int) -> torch.Tensor:
    """All ``2**channels`` colours with every channel at 0 or 1, shape (2**C, C)."""
    codes = torch.arange(2**channels)[:, None]
    return ((codes >> torch.arange(channels)) & 1).float()


def _ops_scores(members: torch.Tensor, colours: torch.Tensor) -> torch.Tensor:
    """Mean minus standard deviation of the per-image change at every (colour, pixel), shape (M, H*W)."""
    scores = []
    for colour in colours.to(members.device):
        change = (members - colour[:, None, None]).abs().mean(dim=1).flatten(1)
        scores.append(change.mean(dim=0) - change.std(dim=0, correction=0))
    return torch.stack(scores)


def _ops_poison(
    batch: torch.Tensor, labels: torch.Tensor, num_classes: int, generator: torch.Generator
) -> torch.Tensor:
    _, channels, height, width = batch.shape
    if num_classes > height * width:
        raise ValueError(f"ops needs one pixel per class: {num_classes} classes but only {height * width} pixels")
    colours = _corner_colours(channels).to(batch.device)
    taken = torch.zeros(height * width, dtype=torch.bool, device=batch.device)
    poisoned = batch.clone()
    for label in range(num_classes):
        members = labels == label
        if not members.any():
            continue
        scores = _ops_scores(batch[members], colours).masked_fill(taken, -math.inf)
        colour_index, position = divmod(int(scores.argmax()), height * width)
        taken[position] = True
        row, col = divmod(position, width)
        poisoned[members, :, row, col] = colours[colour_index]
    return poisoned


def ops(
    images: ImageInput,
    labels: Any,
    *,
    num_classes: int | None = None,
    seed: int = 0,
    fraction: float = 1.0,
) -> torch.Tensor:
    """One-pixel shortcut (Wu et al., "One-Pixel Shortcut", ICLR 2023).

    Greedily, class by class, picks a pixel position not used by an earlier class
    and a colour with every channel at 0 or 1, then sets that pixel in all images
    of the class. Following the paper's aim (a large and consistent change), the
    pair maximises the mean minus the standard deviation, over the class's clean
    images, of the channel-averaged ``|pixel - colour|``. The budget is one pixel
    (L_0 = 1 position); the choice is deterministic, ``seed`` only picks the subset.
    """
    return _run_attack(_ops_poison, images, labels, num_classes, seed, fraction)


# ----------------------------------------------------------------------------- autoregressive


def _balanced(noise: torch.Tensor) -> torch.Tensor:
    """Per item: whether the energy of each image half stays within a factor 2 of the other half."""
    energy = noise.pow(2).sum(dim=1)
    half_rows, half_cols = energy.shape[1] // 2, energy.shape[2] // 2
    ratios = torch.stack(
        [
            energy[:, half_rows:].mean(dim=(1, 2)) / energy[:, :half_rows].mean(dim=(1, 2)),
            energy[:, :, half_cols:].mean(dim=(1, 2)) / energy[:, :, :half_cols].mean(dim=(1, 2)),
        ]
    )
    return (torch.isfinite(ratios) & (ratios > 0.5) & (ratios < 2.0)).all(dim=0)


def _ar_filters(num_classes: int, channels: int, height: int, width: int, generator: torch.Generator) -> torch.Tensor:
    """Random causal 3x3 filters, one per class and channel, shape (K, C, 3, 3).

    As in the paper, Gaussian coefficients are normalised to sum 1 with the generated
    (bottom-right) entry 0. Most such processes blow up or die out, so a candidate is
    kept only if a probe sequence of the image size keeps its energy balanced.
    """
    needed, kept = num_classes * channels, []
    for _ in range(_AR_MAX_DRAWS):
        coefficients = torch.randn(_AR_CANDIDATES, 1, _AR_WINDOW * _AR_WINDOW, generator=generator)
        coefficients[..., -1] = 0.0
        candidates = (coefficients / coefficients.sum(dim=-1, keepdim=True)).view(-1, 1, _AR_WINDOW, _AR_WINDOW)
        probe = _ar_noise(candidates, max(height, 8), max(width, 8), generator)
        kept.extend(candidates[_balanced(probe)])
        if len(kept) >= needed:
            return torch.stack(kept[:needed]).view(num_classes, channels, _AR_WINDOW, _AR_WINDOW)
    raise RuntimeError(f"found only {len(kept)} of {needed} stable AR filters for {height}x{width} images")


def _ar_noise(filters: torch.Tensor, height: int, width: int, generator: torch.Generator) -> torch.Tensor:
    """Scan row by row, each pixel the filtered window above and left of it; crop the random start."""
    pad = _AR_WINDOW - 1
    noise = torch.randn(filters.shape[0], filters.shape[1], height + pad, width + pad, generator=generator)
    for row in range(pad, height + pad):
        for col in range(pad, width + pad):
            window = noise[:, :, row - pad : row + 1, col - pad : col + 1]
            noise[:, :, row, col] = (window * filters).sum(dim=(-2, -1))
    return noise[:, :, pad:, pad:]


def _ar_poison(
    batch: torch.Tensor, labels: torch.Tensor, num_classes: int, generator: torch.Generator, *, l2: float
) -> torch.Tensor:
    _, channels, height, width = batch.shape
    filters = _ar_filters(num_classes, channels, height, width, generator)
    noise = _ar_noise(filters[labels.cpu()], height, width, generator)
    return batch + _scale_l2(noise, l2).to(batch.device)


def autoregressive(
    images: ImageInput,
    labels: Any,
    *,
    num_classes: int | None = None,
    seed: int = 0,
    l2: float = 1.0,
    fraction: float = 1.0,
) -> torch.Tensor:
    """Autoregressive perturbations (Sandoval-Segura et al., NeurIPS 2022).

    Each class gets one random, stable 3x3 causal AR filter per channel (coefficients
    summing to 1; the bottom-right entry is the generated pixel). Every image gets its
    own Gaussian start on a canvas two pixels larger, the process scans it row by row,
    the start is cropped away, and the result is scaled to L2 norm ``l2`` per image
    (default 1.0, the paper's CIFAR-10 budget).
    """
    l2 = _check_positive(l2, "l2")
    return _run_attack(partial(_ar_poison, l2=l2), images, labels, num_classes, seed, fraction)


# ----------------------------------------------------------------------------- error-minimising noise


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
    for _ in range(steps):
        index = torch.randperm(poisoned.shape[0], generator=generator)[:batch_size].to(poisoned.device)
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
        int((model(images[start : start + batch_size]).argmax(dim=1) == labels[start : start + batch_size]).sum())
        for start in range(0, images.shape[0], batch_size)
    )
    return correct / images.shape[0]


def _em_poison(
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


def error_minimizing(
    images: ImageInput,
    labels: Any,
    *,
    num_classes: int | None = None,
    seed: int = 0,
    eps: float = 8 / 255,
    step_size: float | None = None,
    pgd_steps: int = 20,
    train_steps: int = 10,
    max_rounds: int = 10,
    stop_accuracy: float = 0.99,
    batch_size: int = 256,
    fraction: float = 1.0,
) -> torch.Tensor:
    """Sample-wise error-minimising noise (Huang et al., "Unlearnable Examples", ICLR 2021).

    Bi-level min-min optimisation against a small CNN (two strided conv blocks with
    batch norm, SGD lr 0.1, momentum 0.9). Each round trains the CNN for
    ``train_steps`` mini-batches on the poisoned images, then runs ``pgd_steps``
    steps of PGD that *minimises* the loss over every image's noise, within L_inf
    ``eps`` (default 8/255) with step ``step_size`` (default ``eps / 10``), as
    published: 20 steps of 0.8/255 and 10 training steps per round. It stops once
    the CNN's accuracy on the poisoned images exceeds ``stop_accuracy`` (0.99, as
    published) or after ``max_rounds`` rounds (10, to bound CPU time). Runs on the
    images' device; 4,000 1x32x32 images take about 7 s per round on two CPU cores.
    """
    eps = _check_positive(eps, "eps")
    step_size = eps / 10 if step_size is None else _check_positive(step_size, "step_size")
    if _check_positive(stop_accuracy, "stop_accuracy") > 1:
        raise ValueError(f"stop_accuracy must lie in (0, 1], got {stop_accuracy}")
    poison = partial(
        _em_poison,
        eps=eps,
        step_size=step_size,
        pgd_steps=_check_positive_int(pgd_steps, "pgd_steps"),
        train_steps=_check_positive_int(train_steps, "train_steps"),
        max_rounds=_check_positive_int(max_rounds, "max_rounds"),
        stop_accuracy=stop_accuracy,
        batch_size=_check_positive_int(batch_size, "batch_size"),
    )
    return _run_attack(poison, images, labels, num_classes, seed, fraction)


# ----------------------------------------------------------------------------- registry

ATTACKS: dict[str, Callable[..., torch.Tensor]] = {
    "classwise_noise": classwise_noise,
    "lsp": lsp,
    "ops": ops,
    "autoregressive": autoregressive,
    "error_minimizing": error_minimizing,
}


def make_poison(name: str, images: ImageInput, labels: Any, **kwargs: Any) -> torch.Tensor:
    """Run the attack registered as ``name`` in :data:`ATTACKS` with ``kwargs``."""
    if name not in ATTACKS:
        raise ValueError(f"unknown attack {name!r}; known attacks: {', '.join(sorted(ATTACKS))}")
    return ATTACKS[name](images, labels, **kwargs)
