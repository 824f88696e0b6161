"""Simple pre-training purifications to compare D-VAE against.

Each baseline is a :class:`~dvae_transform.purify.Defense`, like ``DVAEPurify``:
``purify(images, labels=None)`` takes a CHW image or an NCHW batch (uint8 or float in
[0, 1], PIL or numpy also accepted) and optional labels, which are ignored, and returns
float images in [0, 1] of the same shape. ``name`` identifies the baseline in reports.
"""

from __future__ import annotations

import io
from abc import ABC, abstractmethod
from typing import Any

import PIL.Image
import torch
from torchvision.transforms.functional import rgb_to_grayscale
from torchvision.transforms.v2.functional import pil_to_tensor, to_pil_image

from ..config import FitConfig, resolve_config
from ..images import ImageInput, apply_to_batch, to_float_images
from ..model import DVAE
from ..precision import decode, encode
from ..purify import reconstruct
from ..training.loop import accelerator_for, build_model, train_stage
from ..training.sets import TensorSet
from ..validation import check_int


class Baseline(ABC):
    """Base class: converts the input once and delegates the math to :meth:`_purify_batch`."""

    name: str

    def purify(self, images: ImageInput, labels: Any = None) -> torch.Tensor:
        """Purify ``images`` (CHW or NCHW); ``labels`` are accepted and ignored."""
        return apply_to_batch(self._purify_batch, images)

    @abstractmethod
    def _purify_batch(self, batch: torch.Tensor) -> torch.Tensor:
        """Map a float32 NCHW batch in [0, 1] to a purified batch of the same shape."""


class NoDefense(Baseline):
    """The images as they are: the row of a benchmark that shows what the poison does."""

    name = "none"

    def _purify_batch(self, batch: torch.Tensor) -> torch.Tensor:
        return batch


class JPEGCompression(Baseline):
    """JPEG round trip at a low quality (image shortcut squeezing, Liu et al., ICML 2023)."""

    def __init__(self, quality: int = 10) -> None:
        self.quality = check_int(quality, "quality", low=1, high=100)
        self.name = f"jpeg_q{self.quality}"

    def _purify_batch(self, batch: torch.Tensor) -> torch.Tensor:
        if batch.shape[1] not in (1, 3):
            raise ValueError(f"JPEG needs 1 or 3 channels, got {batch.shape[1]} in shape {tuple(batch.shape)}")
        decoded = [self._round_trip(image) for image in encode(batch, "uint8").cpu()]
        return decode(torch.stack(decoded)).to(batch.device)

    def _round_trip(self, image: torch.Tensor) -> torch.Tensor:
        """One uint8 CHW image through Pillow's JPEG encoder and decoder (torchvision.io's codecs are deprecated)."""
        buffer = io.BytesIO()
        to_pil_image(image).save(buffer, format="JPEG", quality=self.quality)
        return pil_to_tensor(PIL.Image.open(buffer))


class BitDepthReduction(Baseline):
    """Quantise every channel to ``2**bits`` evenly spaced levels (feature squeezing, Xu et al., NDSS 2018)."""

    def __init__(self, bits: int = 2) -> None:
        self.bits = check_int(bits, "bits", low=1, high=8)
        self.name = f"bitdepth{self.bits}"

    def _purify_batch(self, batch: torch.Tensor) -> torch.Tensor:
        steps = 2**self.bits - 1
        return batch.mul(steps).round().div(steps)


class Grayscale(Baseline):
    """Convert RGB to luma (ITU-R 601) and repeat it over 3 channels (image shortcut squeezing)."""

    name = "grayscale"

    def _purify_batch(self, batch: torch.Tensor) -> torch.Tensor:
        if batch.shape[1] != 3:
            raise ValueError(f"Grayscale needs 3-channel (RGB) images, got shape {tuple(batch.shape)} (NCHW)")
        return rgb_to_grayscale(batch, num_output_channels=3)


class PlainVAE(Baseline):
    """A rate-constrained VAE: the D-VAE without its perturbation branch (the paper's first finding).

    Fitted on the (poisoned) images alone with ``mse(x_rec, x) + 0.01 * max(KL, kl_bound)``; it
    purifies by reconstruction, so it needs no labels. Build one with :meth:`fit`.
    """

    name = "plain_vae"

    def __init__(self, model: DVAE, *, batch_size: int | None = None) -> None:
        self.model = model.eval()
        self.batch_size = batch_size
        self.history: list[dict[str, float]] = []

    @classmethod
    def fit(
        cls,
        images: ImageInput,
        labels: Any = None,
        *,
        preset: str | FitConfig = "fast",
        kl_bound: float = 1.0,
        progress: bool = False,
        **overrides: Any,
    ) -> PlainVAE:
        """Train one stage on ``images`` (``labels`` are ignored) with a preset's recipe and ``overrides``."""
        config = resolve_config(preset, kl_bounds=(kl_bound, kl_bound), **overrides)
        batch = to_float_images(images)
        model = build_model(config, in_channels=batch.shape[1], image_size=batch.shape[-1], num_classes=1,
                            seed=config.seed)
        with accelerator_for(config) as accelerator:
            trained, history = train_stage(
                model, TensorSet(batch, torch.zeros(batch.shape[0], dtype=torch.long)), stage=1, config=config,
                accelerator=accelerator, progress=progress, perturbation_branch=False,
            )
        purifier = cls(trained)
        purifier.history = history
        return purifier

    def _purify_batch(self, batch: torch.Tensor) -> torch.Tensor:
        return reconstruct(self.model, batch, batch_size=self.batch_size)
