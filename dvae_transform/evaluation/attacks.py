"""Generators of unlearnable examples (availability poisons) for evaluation.

Every attack takes a float image batch in [0, 1] (NCHW, or one CHW image) with
its labels and returns poisoned images of the same shape, clamped to [0, 1].
All randomness comes from a local ``torch.Generator`` seeded with ``seed``, so
a call is reproducible and never touches the global RNG. ``fraction`` poisons
only a seeded random share of the images and leaves the others unchanged
(the shared calling convention lives in :mod:`.attack_runner`).

Budgets bound the perturbation before clamping; clamping to [0, 1] only moves
pixels back towards the clean image, so the actual change respects them too.
The defaults are the budgets published for natural images (CIFAR-10), each with its
source in the attack's docstring: class-wise and error-minimising noise L_inf 8/255, LSP
L2 ``sqrt(d) * 6/255``, AR L2 1.0 at 3x32x32 (per-pixel RMS kept at other sizes), OPS one
pixel. CUDA (:mod:`.convolution_attack`) is no additive perturbation and has no budget: it blurs
each class with its own random filter (blur parameter 0.3, 3x3, as published for CIFAR-10).
The benchmark and the demo attack MNIST harder (:data:`~.mnist.MNIST_ATTACK_SETTINGS`).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from functools import partial
from typing import Any

import torch

from ..images import ImageInput
from ..validation import check_int, check_number
from .attack_runner import run_attack
from .convolution_attack import convolution_poison
from .error_minimizing import error_minimizing_poison

_AR_WINDOW = 3
_AR_CANDIDATES = 64
_AR_MAX_DRAWS = 50
AR_L2_CIFAR10 = 1.0  # Sandoval-Segura et al. (NeurIPS 2022): L2 budget 1 on 3x32x32 images


# ----------------------------------------------------------------------------- shared helpers


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
    """Class-wise random noise (Huang et al., "Unlearnable Examples", ICLR 2021, their class-wise baseline).

    One noise image per class, uniform in ``[-eps, eps]``, added to every image of that
    class. The default L_inf budget, 8/255, is the paper's for CIFAR-10.
    """
    eps = check_number(eps, "eps", positive=True)
    return run_attack(partial(_classwise_poison, eps=eps), images, labels, num_classes, seed, fraction)


# ----------------------------------------------------------------------------- LSP

LSP_RMS = 6 / 255  # Yu et al. (KDD 2022): L2 budget sqrt(d) * 6/255, a per-pixel RMS of 6/255
LSP_CLASS_SEP = 10.0  # the authors' make_classification(class_sep=10): centroids at +-10 per cell


def _hypercube_vertices(count: int, features: int, generator: torch.Generator) -> torch.Tensor:
    """``count`` distinct random vertices of {-1, 1}^features, shape (count, features)."""
    if count > 2**features:
        raise ValueError(
            f"lsp needs a distinct centroid per class: {count} classes but only {2**features} for {features} "
            "patch cell(s); use a smaller patch_size"
        )
    vertices: dict[tuple[int, ...], None] = {}  # insertion-ordered set
    while len(vertices) < count:
        vertices.setdefault(tuple(torch.randint(0, 2, (features,), generator=generator).tolist()))
    return torch.tensor(list(vertices), dtype=torch.float32) * 2 - 1


def _lsp_points(labels: torch.Tensor, num_classes: int, features: int, generator: torch.Generator,
                samplewise: bool) -> torch.Tensor:
    """One point per image, shape (N, features): around its class's centroid, or the class's uniform draw."""
    if not samplewise:
        return (torch.rand(num_classes, features, generator=generator) * 2 - 1)[labels]
    centroids = _hypercube_vertices(num_classes, features, generator) * LSP_CLASS_SEP
    mixing = torch.rand(num_classes, features, features, generator=generator) * 2 - 1  # per-class covariance factor
    spread = torch.randn(labels.shape[0], features, generator=generator)
    for label in range(num_classes):
        members = labels == label
        spread[members] = spread[members] @ mixing[label]
    return centroids[labels] + spread


def _lsp_poison(
    batch: torch.Tensor,
    labels: torch.Tensor,
    num_classes: int,
    generator: torch.Generator,
    *,
    l2: float | None,
    patch_size: int,
    samplewise: bool,
) -> torch.Tensor:
    count, channels, height, width = batch.shape
    cells = (channels, math.ceil(height / patch_size), math.ceil(width / patch_size))
    points = _lsp_points(labels.cpu(), num_classes, math.prod(cells), generator, samplewise)
    patterns = points.view(count, *cells).repeat_interleave(patch_size, dim=2).repeat_interleave(patch_size, dim=3)
    budget = l2 if l2 is not None else LSP_RMS * math.sqrt(channels * height * width)
    return batch + _scale_l2(patterns[..., :height, :width], budget).to(batch.device)


def lsp(
    images: ImageInput,
    labels: Any,
    *,
    num_classes: int | None = None,
    seed: int = 0,
    l2: float | None = None,
    patch_size: int = 8,
    samplewise: bool = True,
    fraction: float = 1.0,
) -> torch.Tensor:
    """Linear-separable synthetic perturbations (Yu et al., "Availability Attacks Create Shortcuts", KDD 2022).

    As in the authors' code (``sklearn.datasets.make_classification`` with one cluster per class
    and ``class_sep=10``): every class gets a centroid on a hypercube with one coordinate per patch
    cell and channel (``ceil(H / patch_size) x ceil(W / patch_size)`` cells per channel), and every
    image its own point around it, ``centroid + g @ A`` with ``g`` standard Gaussian and ``A`` a
    per-class matrix uniform in [-1, 1]. Each cell is upsampled to a ``patch_size`` x ``patch_size``
    patch and every image's pattern scaled to L2 norm ``l2``: by default the paper's
    ``sqrt(C*H*W) * 6/255`` (1.30 for 3x32x32, 0.75 for 1x32x32). ``samplewise=False`` is the
    class-wise variant: one pattern per class, every cell uniform in [-1, 1] before scaling, the
    same for every image of the class (this project's LSP before it followed the authors' code;
    the MNIST settings of the benchmark and the demo use it).
    """
    if l2 is not None:
        l2 = check_number(l2, "l2", positive=True)
    patch_size = check_int(patch_size, "patch_size", low=1)
    poison = partial(_lsp_poison, l2=l2, patch_size=patch_size, samplewise=bool(samplewise))
    return run_attack(poison, images, labels, num_classes, seed, fraction)


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
    (L_0 = 1 position), as published; the choice is deterministic, ``seed`` only picks the subset.
    """
    return run_attack(_ops_poison, images, labels, num_classes, seed, fraction)


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
    batch: torch.Tensor, labels: torch.Tensor, num_classes: int, generator: torch.Generator, *, l2: float | None
) -> torch.Tensor:
    _, channels, height, width = batch.shape
    filters = _ar_filters(num_classes, channels, height, width, generator)
    noise = _ar_noise(filters[labels.cpu()], height, width, generator)
    budget = l2 if l2 is not None else AR_L2_CIFAR10 * math.sqrt(channels * height * width / 3072)
    return batch + _scale_l2(noise, budget).to(batch.device)


def autoregressive(
    images: ImageInput,
    labels: Any,
    *,
    num_classes: int | None = None,
    seed: int = 0,
    l2: float | None = None,
    fraction: float = 1.0,
) -> torch.Tensor:
    """Autoregressive perturbations (Sandoval-Segura et al., NeurIPS 2022).

    Each class gets one random, stable 3x3 causal AR filter per channel (coefficients
    summing to 1; the bottom-right entry is the generated pixel). Every image gets its
    own Gaussian start on a canvas two pixels larger, the process scans it row by row,
    the start is cropped away, and the result is scaled to L2 norm ``l2`` per image. The
    default is the paper's CIFAR-10 budget, 1.0 for d = 3x32x32 = 3072 values, scaled by
    ``sqrt(d / 3072)`` so that the per-pixel RMS (about 4.6/255) is the same at every image size:
    0.577 for 1x32x32.
    """
    if l2 is not None:
        l2 = check_number(l2, "l2", positive=True)
    return run_attack(partial(_ar_poison, l2=l2), images, labels, num_classes, seed, fraction)


# ----------------------------------------------------------------------------- error-minimising noise


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
    ``eps`` (default 8/255, the paper's budget for CIFAR-10) with step ``step_size``
    (default ``eps / 10``), as published: 20 steps of 0.8/255 and 10 training steps per round. It stops once
    the CNN's accuracy on the poisoned images exceeds ``stop_accuracy`` (0.99, as
    published) or after ``max_rounds`` rounds (10, to bound CPU time). Runs on the
    images' device (the time a round takes: BENCHMARKS.md, "Speed").
    """
    eps = check_number(eps, "eps", positive=True)
    step_size = eps / 10 if step_size is None else check_number(step_size, "step_size", positive=True)
    stop_accuracy = check_number(stop_accuracy, "stop_accuracy", positive=True, high=1)
    poison = partial(
        error_minimizing_poison,
        eps=eps,
        step_size=step_size,
        pgd_steps=check_int(pgd_steps, "pgd_steps", low=1),
        train_steps=check_int(train_steps, "train_steps", low=1),
        max_rounds=check_int(max_rounds, "max_rounds", low=1),
        stop_accuracy=stop_accuracy,
        batch_size=check_int(batch_size, "batch_size", low=1),
    )
    return run_attack(poison, images, labels, num_classes, seed, fraction)


# ----------------------------------------------------------------------------- registry

ATTACKS: dict[str, Callable[..., torch.Tensor]] = {
    "classwise_noise": classwise_noise,
    "lsp": lsp,
    "ops": ops,
    "autoregressive": autoregressive,
    "error_minimizing": error_minimizing,
    "cuda": convolution_poison,
}


def make_poison(name: str, images: ImageInput, labels: Any, **kwargs: Any) -> torch.Tensor:
    """Run the attack registered as ``name`` in :data:`ATTACKS` with ``kwargs``."""
    if name not in ATTACKS:
        raise ValueError(f"unknown attack {name!r}; known attacks: {', '.join(sorted(ATTACKS))}")
    return ATTACKS[name](images, labels, **kwargs)
