"""The D-VAE network: a rate-constrained VAE with a class-conditioned perturbation branch.

Layout follows Yu et al. (ICML 2024), see ``METHOD.md``: a ResNet-18 stem encodes the
image to a spatial latent, an image decoder reconstructs the content, and a second
decoder, fed the projected latent plus a learnable per-class spatial embedding,
explains what the reconstruction leaves out (the unlearnable perturbation).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import NamedTuple

import torch
from torch import nn

from .checkpoints.weights import SafetensorsHubMixin
from .metadata import hub_metadata
from .validation import check_choice, check_int, reported_as

EMBEDDING_TARGETS = ("latent", "stem")


@dataclass(frozen=True)
class DVAEConfig:
    """The constructor arguments of :class:`DVAE` (its ``config.json``), checked."""

    in_channels: int
    image_size: int
    num_classes: int
    width: int
    latent_dim: int
    embedding_target: str

    def __post_init__(self) -> None:
        """Reject a configuration that cannot build a working network, naming the field."""
        with reported_as("DVAE config"):
            for name in ("in_channels", "image_size", "num_classes", "width", "latent_dim"):
                check_int(getattr(self, name), name, low=1)
            check_choice(self.in_channels, "in_channels", (1, 3))
            if self.image_size % 2 or self.image_size < 4:
                raise ValueError(f"image_size must be even and at least 4, got {self.image_size}")
            if self.width % 2:
                raise ValueError(f"width must be even, got {self.width}")
            check_choice(self.embedding_target, "embedding_target", EMBEDDING_TARGETS)


class DVAEOutput(NamedTuple):
    """What :meth:`DVAE.forward` returns."""

    reconstruction: torch.Tensor
    mu: torch.Tensor
    log_var: torch.Tensor
    perturbation: torch.Tensor


class BasicBlock(nn.Module):
    """The two-conv residual block of ResNet-18."""

    def __init__(self, in_channels: int, out_channels: int, stride: int = 1) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(in_channels, out_channels, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(out_channels)
        self.conv2 = nn.Conv2d(out_channels, out_channels, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(out_channels)
        self.shortcut = nn.Identity()
        if stride != 1 or in_channels != out_channels:
            self.shortcut = nn.Sequential(
                nn.Conv2d(in_channels, out_channels, 1, stride, bias=False), nn.BatchNorm2d(out_channels)
            )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = torch.relu(self.bn1(self.conv1(x)))
        return torch.relu(self.bn2(self.conv2(out)) + self.shortcut(x))


def _decoder(in_channels: int, width: int, out_channels: int, final: nn.Module) -> nn.Sequential:
    return nn.Sequential(
        nn.ConvTranspose2d(in_channels, width, 4, 2, 1),
        nn.ConvTranspose2d(width, width, 3, 1, 1),
        nn.InstanceNorm2d(width),
        nn.ReLU(inplace=True),
        nn.ConvTranspose2d(width, width // 2, 3, 1, 1),
        nn.InstanceNorm2d(width // 2),
        nn.ReLU(inplace=True),
        nn.ConvTranspose2d(width // 2, out_channels, 3, 1, 1),
        final,
    )


class DVAE(nn.Module, SafetensorsHubMixin, **hub_metadata()):
    """D-VAE for ``in_channels x image_size x image_size`` images in [0, 1].

    Args:
        in_channels: 1 (grayscale) or 3 (RGB).
        image_size: side of the square input; must be even (the stem halves it).
        num_classes: number of class embeddings for the perturbation branch.
        width: stem width (64 in the paper); the latent projection has ``2 * width`` channels.
        latent_dim: channels of the spatial latent (256 in the paper).
        embedding_target: ``"latent"`` adds the class embedding to the projected sampled
            latent (what the published scripts run); ``"stem"`` adds it to the stem features.

    ``save_pretrained`` / ``from_pretrained`` read and write ``config.json`` and ``model.safetensors``
    (see :mod:`dvae_transform.checkpoints.weights`).
    """

    config_class = DVAEConfig

    def __init__(
        self,
        in_channels: int = 3,
        image_size: int = 32,
        num_classes: int = 10,
        width: int = 64,
        latent_dim: int = 256,
        embedding_target: str = "latent",
    ) -> None:
        super().__init__()
        DVAEConfig(in_channels, image_size, num_classes, width, latent_dim, embedding_target)
        self.in_channels, self.image_size, self.num_classes = in_channels, image_size, num_classes
        self.width, self.latent_dim, self.embedding_target = width, latent_dim, embedding_target
        feature_channels = 2 * width
        self.stem = nn.Sequential(
            nn.Conv2d(in_channels, width, 3, 1, 1, bias=False),
            nn.BatchNorm2d(width),
            nn.ReLU(inplace=True),
            BasicBlock(width, width),
            BasicBlock(width, width),
            BasicBlock(width, feature_channels, stride=2),
        )
        self.to_mu = nn.Conv2d(feature_channels, latent_dim, 1)
        self.to_log_var = nn.Conv2d(feature_channels, latent_dim, 1)
        self.from_latent = nn.Conv2d(latent_dim, feature_channels, 1)
        self.latent_shape = (feature_channels, image_size // 2, image_size // 2)
        self.class_embedding = nn.Embedding(num_classes, feature_channels * (image_size // 2) ** 2)
        self.image_decoder = _decoder(feature_channels, width, in_channels, nn.Sigmoid())
        self.perturbation_decoder = _decoder(feature_channels, width, in_channels, nn.Identity())

    @property
    def config(self) -> dict[str, object]:
        """The constructor arguments, as saved in ``config.json``."""
        return {
            "in_channels": self.in_channels,
            "image_size": self.image_size,
            "num_classes": self.num_classes,
            "width": self.width,
            "latent_dim": self.latent_dim,
            "embedding_target": self.embedding_target,
        }

    def encode(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Stem features ``h`` and the latent's ``mu`` and ``log_var``."""
        h = self.stem(x)
        return h, self.to_mu(h), self.to_log_var(h)

    def _latent(self, mu: torch.Tensor, log_var: torch.Tensor, sample: bool, generator: torch.Generator | None):
        if not sample:
            return mu
        eps = torch.randn(mu.shape, generator=generator, device=mu.device, dtype=mu.dtype)
        return mu + eps * torch.exp(0.5 * log_var)

    def reconstruct(
        self, x: torch.Tensor, *, sample: bool = False, generator: torch.Generator | None = None
    ) -> torch.Tensor:
        """The image decoder's output alone: the label-free, rate-limited reconstruction."""
        _, mu, log_var = self.encode(x)
        return self.image_decoder(self.from_latent(self._latent(mu, log_var, sample, generator)))

    def forward(
        self,
        x: torch.Tensor,
        labels: torch.Tensor,
        *,
        sample: bool | None = None,
        generator: torch.Generator | None = None,
    ) -> DVAEOutput:
        """Run both decoders on a float NCHW batch ``x`` in [0, 1] with class ``labels``.

        ``sample`` draws ``z = mu + eps * std`` (default: in training mode only);
        otherwise the latent mean is used. ``generator`` seeds the draw.
        """
        if sample is None:
            sample = self.training
        h, mu, log_var = self.encode(x)
        projected = self.from_latent(self._latent(mu, log_var, sample, generator))
        embedding = self.class_embedding(labels).view(-1, *self.latent_shape)
        branch_input = projected + embedding if self.embedding_target == "latent" else h + embedding
        return DVAEOutput(
            reconstruction=self.image_decoder(projected),
            mu=mu,
            log_var=log_var,
            perturbation=self.perturbation_decoder(branch_input),
        )
