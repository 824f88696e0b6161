"""Batched two-stage purification as plain functions on tensors.

All functions take float NCHW batches in [0, 1] (already checked), run the model
in ``eval()`` mode under ``torch.inference_mode`` in micro-batches, and return
float32 CPU tensors in [0, 1] (ordinary tensors, so they can be trained on).
The model's train/eval state (and, on the CPU, its weights' memory layout) is restored afterwards.
Results are bit-identical run to run on the same device.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator
from typing import Any, Protocol

import torch

from .config import DEFAULT_SUBTRACTION, SUBTRACTION_RULES
from .model import DVAE
from .precision import quantize
from .validation import check_choice, check_int


class Defense(Protocol):
    """What every defense offers (``DVAEPurify`` and the baselines of ``dvae_transform.evaluation``).

    ``purify(images, labels=None)`` takes a CHW image or an NCHW batch (uint8, or float in [0, 1]; PIL
    and numpy accepted) and returns float32 images in [0, 1] of the same shape. ``name`` identifies
    the defense in reports.
    """

    name: str

    def purify(self, images: Any, labels: Any = None) -> torch.Tensor: ...


MICRO_BATCH_BYTES = 1 << 30  # default activation memory of one micro-batch
MAX_MICRO_BATCH = 256
MAX_BATCH_SIZE = 4096  # the most images per micro-batch one may set (or a saved config.json may ask for)
ACTIVATION_MAPS = 5  # float32 full-resolution maps per image and channel; 2-4.6 measured on the CPU, 32-224 px
PINNED_MAX_BYTES = 256 * 2**20


def default_batch_size(*models: DVAE, budget: int = MICRO_BATCH_BYTES) -> int:
    """Images per micro-batch whose activations take about ``budget`` bytes: 1 to ``MAX_MICRO_BATCH``.

    An image costs ``ACTIVATION_MAPS`` float32 maps of ``width + in_channels`` channels at full resolution
    in the widest of ``models``: about 18 MiB at 224 px and width 16 (56 images in the default 1 GiB),
    0.4 MiB at 32 px (256, the cap). A ``batch_size`` given to any purification overrides this.
    """
    check_int(budget, "budget", low=1)
    side = max(model.image_size for model in models)
    channels = max(model.width + model.in_channels for model in models)
    return max(1, min(MAX_MICRO_BATCH, budget // (ACTIVATION_MAPS * 4 * channels * side**2)))


@contextlib.contextmanager
def _prepared(models: tuple[DVAE, ...], device: torch.device) -> Iterator[None]:
    """The models in ``eval()`` mode and, on the CPU, with channels-last weights (oneDNN runs these
    convolutions faster so: BENCHMARKS.md, "Speed"); their mode and weights are put back afterwards
    (no copy back)."""
    states = [model.training for model in models]
    weights = [{name: parameter.data for name, parameter in model.named_parameters()} for model in models]
    for model in models:
        model.eval()
        if device.type == "cpu":
            model.to(memory_format=torch.channels_last)
    try:
        yield
    finally:
        for model, state, saved in zip(models, states, weights):
            model.train(state)
            for name, parameter in model.named_parameters():
                parameter.data = saved[name]


def _device_of(model: DVAE) -> torch.device:
    return next(model.parameters()).device


def _generator(seed: int | None, device: torch.device) -> torch.Generator | None:
    return None if seed is None else torch.Generator(device).manual_seed(seed)


Step = Callable[[torch.Tensor, "torch.Tensor | None", "torch.Generator | None"], torch.Tensor]


def _run(models: tuple[DVAE, ...], images: torch.Tensor, labels: torch.Tensor | None, batch_size: int | None,
         seed: int | None, step: Step) -> torch.Tensor:
    """``step(x, y, generator)`` over micro-batches (``batch_size``, default :func:`default_batch_size`),
    models in eval mode, results gathered on the CPU.

    On a CUDA device, batches are copied without waiting, and results up to ``PINNED_MAX_BYTES`` in all land
    in pinned host memory asynchronously: the host then synchronises once, at the end (pinning more costs
    more than waiting per batch).
    """
    batch_size = default_batch_size(*models) if batch_size is None else check_int(batch_size, "batch_size", low=1)
    device = _device_of(models[0])
    generator = _generator(seed, device)
    asynchronous = device.type == "cuda"
    pinned = asynchronous and images[:1].numel() * 4 * len(images) <= PINNED_MAX_BYTES
    out = torch.empty(images.shape, dtype=torch.float32, pin_memory=pinned)
    with _prepared(models, device):
        for start in range(0, images.shape[0], batch_size):
            stop = start + batch_size
            x = images[start:stop].to(device, non_blocking=asynchronous).float()
            y = None if labels is None else labels[start:stop].to(device, non_blocking=asynchronous)
            with torch.inference_mode():
                result = step(x, y, generator)
            out[start:stop].copy_(result, non_blocking=pinned)  # outside inference mode: out can feed autograd
    if asynchronous:
        torch.cuda.synchronize(device)
    return out


def perturbation_estimate(model: DVAE, x: torch.Tensor, y: torch.Tensor, *, subtract: str = DEFAULT_SUBTRACTION,
                          sample: bool = False, generator: torch.Generator | None = None) -> torch.Tensor:
    """What a stage subtracts from ``x``: its estimate of the perturbation, by rule ``subtract``.

    ``"raw"`` (published): the perturbation branch's output ``p``. ``"effect"``: the part of ``p`` the
    objective sees, ``clamp(x_rec + p, 0, 1) - x_rec``; it equals ``p`` wherever the clamp is inactive.
    Where ``x_rec + p`` leaves [0, 1] (on a black or white background, about half of Fashion-MNIST's
    pixels) the loss gives ``p`` no gradient, so the raw ``p`` there is left over from initialisation
    and subtracting it writes a class-dependent pattern, a new shortcut, into the purified image.
    """
    if check_choice(subtract, "subtract", SUBTRACTION_RULES) == "raw":
        return model.perturbation(x, y, sample=sample, generator=generator).float()
    output = model(x, y, sample=sample, generator=generator)
    reconstruction = output.reconstruction.float()
    return (reconstruction + output.perturbation.float()).clamp(0.0, 1.0) - reconstruction


def _subtract_perturbation(model: DVAE, x: torch.Tensor, y: torch.Tensor, subtract: str, sample: bool,
                           generator: torch.Generator | None) -> torch.Tensor:
    return quantize(x - perturbation_estimate(model, x, y, subtract=subtract, sample=sample, generator=generator))


def remove_perturbation(
    model: DVAE,
    images: torch.Tensor,
    labels: torch.Tensor,
    *,
    batch_size: int | None = None,
    subtract: str = DEFAULT_SUBTRACTION,
    sample: bool = False,
    seed: int | None = None,
) -> torch.Tensor:
    """Stage-1 purification: ``clamp(x - p(x, y), 0, 1)``, rounded to 8-bit levels (``p`` by rule ``subtract``,
    see :func:`perturbation_estimate`)."""
    return _run((model,), images, labels, batch_size, seed,
                lambda x, y, generator: _subtract_perturbation(model, x, y, subtract, sample, generator))


def reconstruct(
    model: DVAE,
    images: torch.Tensor,
    *,
    batch_size: int | None = None,
    sample: bool = False,
    seed: int | None = None,
) -> torch.Tensor:
    """The label-free path: the model's rate-limited reconstruction of ``images``."""
    return _run((model,), images, None, batch_size, seed,
                lambda x, _, generator: model.reconstruct(x, sample=sample, generator=generator).clamp_(0.0, 1.0))


def purify_two_stage(
    stage1: DVAE,
    stage2: DVAE,
    images: torch.Tensor,
    labels: torch.Tensor,
    *,
    batch_size: int | None = None,
    subtract: str = DEFAULT_SUBTRACTION,
    sample: bool = False,
    seed: int | None = None,
) -> torch.Tensor:
    """Both stages: ``x1 = clamp(x - p1)``, then stage 2's reconstruction of ``clamp(x1 - p2)``.

    Both models must sit on the same device. ``subtract`` is the rule for ``p1`` and ``p2``
    (:func:`perturbation_estimate`: ``"raw"`` by default, as published, or ``"effect"``).

    ``sample=True`` draws the latent (as the authors do) with a generator seeded by
    ``seed``; the default uses the latent mean and is deterministic.
    """

    def step(x: torch.Tensor, y: torch.Tensor | None, generator: torch.Generator | None) -> torch.Tensor:
        x1 = _subtract_perturbation(stage1, x, y, subtract, False, None)
        x1_clean = torch.clamp(x1 - perturbation_estimate(stage2, x1, y, subtract=subtract), 0.0, 1.0)
        return stage2.reconstruct(x1_clean, sample=sample, generator=generator).clamp_(0.0, 1.0)

    return _run((stage1, stage2), images, labels, batch_size, seed, step)
