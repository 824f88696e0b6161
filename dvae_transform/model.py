"""The D-VAE network: a rate-constrained VAE with a class-conditioned perturbation branch.

Layout follows Yu et al., "Purify Unlearnable Examples via Rate-Constrained Variational
Autoencoders" (ICML 2024, :data:`~dvae_transform.metadata.PAPER_URL`): a ResNet-18 stem encodes the
image to a spatial latent, an image decoder reconstructs the content, and a second
decoder, fed the projected latent plus a learnable per-class spatial embedding,
explains what the reconstruction leaves out (the unlearnable perturbation).

**Resolution.** The published network halves a 32x32 image once (one stride-2 stage, a
16x16 latent). Larger images get more stride-2 stages (``downsamplings``), by default the
fewest that bring the latent side to 16 or less (:func:`default_downsamplings`): 64 px -> 2,
224 px -> 4 (a 14x14 latent). The extra encoder stages are stride-2 ResNet basic blocks at the
stem width, inserted before the published last stage (which widens to ``2 * width``), and
each decoder gains as many stride-2 transposed convolutions. The authors' ImageNet encoder
ran on through ResNet-18's ``layer3[0]`` and ``layer4[0]`` (256 and 512 channels at width 64, 1/8
of the side): those two blocks alone hold 4.6M parameters, 4x the whole 32 px network, and a
class embedding (``num_classes x channels x side^2``) on a 28x28 grid is 3x one on 16x16 per
channel. Capping the channels at ``2 * width`` and the latent side at 16 keeps a 224 px network
within 1.7x of the 32 px one at the same width and class count (1.5x with 10 classes, its
embedding being smaller), and the published 32 px layout unchanged. Inputs must be square:
resize them first (``torchvision.transforms.v2.Resize(S)`` then ``v2.CenterCrop(S)``).

**Decoder convolutions.** The published decoders use stride-1 ``ConvTranspose2d(k=3, p=1)``
layers; here they are the equivalent ``Conv2d`` (:class:`Conv3x3`, faster on CPUs: BENCHMARKS.md, "Speed").
Weights saved in the old layout (``decoder_layout: "transposed"``) are converted when loaded.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass
from typing import NamedTuple

import torch
from torch import nn

from .metadata import hub_metadata
from .validation import check_choice, check_int, reported_as
from .weights import SafetensorsHubMixin

EMBEDDING_TARGETS = ("latent", "stem")
DECODER_LAYOUTS = ("conv", "transposed")
MAX_LATENT_SIDE = 16
# Upper bounds of every size in a config (8-16x the paper's), checked before anything is built, so that
# an untrusted config.json cannot ask for a network that exhausts memory.
MAX_IMAGE_SIZE = 1024
MAX_WIDTH = 1024
MAX_LATENT_DIM = 4096
MAX_NUM_CLASSES = 100_000


def default_downsamplings(image_size: int) -> int:
    """The fewest stride-2 stages (at least 1, as published) that bring the latent side to 16 or less."""
    check_int(image_size, "image_size", low=1)
    stages = 1
    while image_size > MAX_LATENT_SIDE << stages:
        stages += 1
    return stages


def _nearest_multiples(value: int, step: int) -> str:
    below = max(step, value // step * step)
    return f"{below} or {below + step}" if below < value else f"{below}"


@dataclass(frozen=True)
class DVAEConfig:
    """A :class:`DVAE`'s ``config.json``, checked: its constructor arguments and its weights' layout.

    ``downsamplings`` and ``decoder_layout`` default to what a ``config.json`` without them means: it
    was written before they existed, by code that built one stride-2 stage and transposed decoder
    convolutions. Sizes are bounded by ``MAX_IMAGE_SIZE`` (1024), ``MAX_WIDTH`` (1024),
    ``MAX_LATENT_DIM`` (4096) and ``MAX_NUM_CLASSES`` (100,000).
    """

    in_channels: int
    image_size: int
    num_classes: int
    width: int
    latent_dim: int
    embedding_target: str
    downsamplings: int = 1
    decoder_layout: str = "transposed"

    def __post_init__(self) -> None:
        """Reject a configuration that cannot build a working network, naming the field."""
        with reported_as("DVAE config"):
            bounds = (
                ("in_channels", 1, None), ("image_size", 4, MAX_IMAGE_SIZE), ("num_classes", 1, MAX_NUM_CLASSES),
                ("width", 1, MAX_WIDTH), ("latent_dim", 1, MAX_LATENT_DIM),
                ("downsamplings", 1, MAX_IMAGE_SIZE.bit_length() - 1),
            )
            for name, low, high in bounds:
                check_int(getattr(self, name), name, low=low, high=high)
            check_choice(self.in_channels, "in_channels", (1, 3))
            if self.width % 2:
                raise ValueError(f"width must be even, got {self.width}")
            check_choice(self.embedding_target, "embedding_target", EMBEDDING_TARGETS)
            check_choice(self.decoder_layout, "decoder_layout", DECODER_LAYOUTS)
            self._check_divisible()
            if self.decoder_layout == "transposed" and self.downsamplings != 1:
                raise ValueError("decoder_layout 'transposed' (written by older versions) needs downsamplings 1")

    def _check_divisible(self) -> None:
        factor = 1 << self.downsamplings
        if self.image_size % factor:
            wanted = "even" if factor == 2 else f"divisible by {factor}"
            raise ValueError(
                f"image_size must be {wanted} for {self.downsamplings} stride-2 stage(s) (downsamplings), got "
                f"{self.image_size}; resize the images to {_nearest_multiples(self.image_size, factor)} "
                "(e.g. torchvision.transforms.v2.Resize) or choose downsamplings"
            )


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


def swap_conv_layout(weight: torch.Tensor) -> torch.Tensor:
    """A stride-1 ``ConvTranspose2d`` kernel ``(in, out, k, k)`` as the equivalent ``Conv2d`` kernel, and back.

    With padding ``k - 1 - p`` the two compute the same function; the swap is its own inverse.
    """
    return weight.transpose(0, 1).flip((2, 3)).contiguous()


class Conv3x3(nn.Conv2d):
    """A 3x3 same-size convolution, in place of the published decoders' ``ConvTranspose2d(k=3, s=1, p=1)``.

    It is initialised from the transposed layer's random draws (:func:`swap_conv_layout`), so a seed
    builds the same network, and a fit the same trajectory, as with the transposed layer.
    """

    def __init__(self, in_channels: int, out_channels: int) -> None:
        super().__init__(in_channels, out_channels, 3, padding=1)

    def reset_parameters(self) -> None:
        transposed = self.weight.new_empty(self.in_channels, self.out_channels, 3, 3)
        nn.init.kaiming_uniform_(transposed, a=math.sqrt(5))
        with torch.no_grad():
            self.weight.copy_(swap_conv_layout(transposed))
        bound = 1 / math.sqrt(self.out_channels * 9)  # the transposed kernel's fan-in
        nn.init.uniform_(self.bias, -bound, bound)


def _decoder(in_channels: int, width: int, out_channels: int, upsamplings: int, final: nn.Module) -> nn.Sequential:
    """The paper's decoder, with ``upsamplings - 1`` more stride-2 stages after its first 3x3 conv."""
    extra = [
        layer
        for _ in range(upsamplings - 1)
        for layer in (nn.ConvTranspose2d(width, width, 4, 2, 1), nn.InstanceNorm2d(width), nn.ReLU(inplace=True))
    ]
    return nn.Sequential(
        nn.ConvTranspose2d(in_channels, width, 4, 2, 1),
        Conv3x3(width, width),
        nn.InstanceNorm2d(width),
        nn.ReLU(inplace=True),
        *extra,
        Conv3x3(width, width // 2),
        nn.InstanceNorm2d(width // 2),
        nn.ReLU(inplace=True),
        Conv3x3(width // 2, out_channels),
        final,
    )


class DVAE(nn.Module, SafetensorsHubMixin, **hub_metadata()):
    """D-VAE for ``in_channels x image_size x image_size`` images in [0, 1].

    Args:
        in_channels: 1 (grayscale) or 3 (RGB).
        image_size: side of the square input, at most 1024; divisible by ``2 ** downsamplings``.
        num_classes: number of class embeddings for the perturbation branch.
        width: stem width (64 in the paper); the latent projection has ``2 * width`` channels.
        latent_dim: channels of the spatial latent (256 in the paper).
        embedding_target: ``"latent"`` adds the class embedding to the projected sampled
            latent (what the published scripts run); ``"stem"`` adds it to the stem features.
        downsamplings: stride-2 stages; ``None`` picks :func:`default_downsamplings` (1 up to 32 px).
        decoder_layout: always ``"conv"`` (the saved config records it; older files hold ``"transposed"``
            weights, which ``from_pretrained`` converts).

    ``save_pretrained`` / ``from_pretrained`` read and write ``config.json`` and ``model.safetensors``
    (see :mod:`dvae_transform.weights`).
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
        downsamplings: int | None = None,
        decoder_layout: str = "conv",
    ) -> None:
        super().__init__()
        with reported_as("DVAE config"):
            if downsamplings is None:
                downsamplings = default_downsamplings(image_size)
            if decoder_layout != "conv":
                raise ValueError(f"DVAE builds decoder_layout 'conv', got {decoder_layout!r}; "
                                 "DVAE.from_pretrained converts weights saved in the 'transposed' layout")
        self._config = DVAEConfig(in_channels, image_size, num_classes, width, latent_dim, embedding_target,
                                  downsamplings, decoder_layout)
        self.in_channels, self.image_size, self.num_classes = in_channels, image_size, num_classes
        self.width, self.latent_dim, self.embedding_target = width, latent_dim, embedding_target
        self.downsamplings = downsamplings
        feature_channels = 2 * width
        self.stem = nn.Sequential(
            nn.Conv2d(in_channels, width, 3, 1, 1, bias=False),
            nn.BatchNorm2d(width),
            nn.ReLU(inplace=True),
            BasicBlock(width, width),
            BasicBlock(width, width),
            *(BasicBlock(width, width, stride=2) for _ in range(downsamplings - 1)),
            BasicBlock(width, feature_channels, stride=2),
        )
        self.to_mu = nn.Conv2d(feature_channels, latent_dim, 1)
        self.to_log_var = nn.Conv2d(feature_channels, latent_dim, 1)
        self.from_latent = nn.Conv2d(latent_dim, feature_channels, 1)
        side = image_size >> downsamplings
        self.latent_shape = (feature_channels, side, side)
        self.class_embedding = nn.Embedding(num_classes, feature_channels * side * side)
        self.image_decoder = _decoder(feature_channels, width, in_channels, downsamplings, nn.Sigmoid())
        self.perturbation_decoder = _decoder(feature_channels, width, in_channels, downsamplings, nn.Identity())

    @property
    def config(self) -> dict[str, object]:
        """The constructor arguments, as saved in ``config.json``."""
        return dataclasses.asdict(self._config)

    @property
    def values_per_latent_position(self) -> int:
        """Input values one latent position stands for: ``in_channels x (2 ** downsamplings) ** 2``.

        12 for the published 3x32x32 network; a KL bound set per latent position for one resolution
        scales by the ratio of this number to carry the same rate per input value to another.
        """
        return self.in_channels << (2 * self.downsamplings)

    @classmethod
    def _from_config(cls, config: DVAEConfig) -> DVAE:
        return cls(**{**dataclasses.asdict(config), "decoder_layout": "conv"})

    def _weights_layout(self, tensors: dict[str, torch.Tensor], config: DVAEConfig) -> dict[str, torch.Tensor]:
        if config.decoder_layout == "conv":
            return tensors
        swapped = {f"{name}.weight" for name, module in self.named_modules() if isinstance(module, Conv3x3)}
        return {name: swap_conv_layout(tensor) if name in swapped else tensor for name, tensor in tensors.items()}

    _to_stored_layout = _from_stored_layout = _weights_layout  # the swap is its own inverse

    def _check_input(self, x: torch.Tensor) -> None:
        expected = (self.in_channels, self.image_size, self.image_size)
        if x.dim() != 4 or tuple(x.shape[1:]) != expected:
            raise ValueError(
                f"DVAE expects a batch of {'x'.join(map(str, expected))} images (N, C, H, W), got shape "
                f"{tuple(x.shape)}; it takes square images: resize them first, e.g. with "
                f"torchvision.transforms.v2.Resize({self.image_size}) then v2.CenterCrop({self.image_size})"
            )

    def encode(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Stem features ``h`` and the latent's ``mu`` and ``log_var``."""
        self._check_input(x)
        h = self.stem(x)
        return h, self.to_mu(h), self.to_log_var(h)

    def _latent(self, mu: torch.Tensor, log_var: torch.Tensor, sample: bool, generator: torch.Generator | None):
        if not sample:
            return mu
        eps = torch.randn(mu.shape, generator=generator, device=mu.device, dtype=mu.dtype)
        return mu + eps * torch.exp(0.5 * log_var)

    def _branch_input(self, h: torch.Tensor, projected: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        embedding = self.class_embedding(labels).view(-1, *self.latent_shape)
        return (projected if self.embedding_target == "latent" else h) + embedding

    def reconstruct(
        self, x: torch.Tensor, *, sample: bool = False, generator: torch.Generator | None = None
    ) -> torch.Tensor:
        """The image decoder's output alone: the label-free, rate-limited reconstruction."""
        _, mu, log_var = self.encode(x)
        return self.image_decoder(self.from_latent(self._latent(mu, log_var, sample, generator)))

    def perturbation(
        self, x: torch.Tensor, labels: torch.Tensor, *, sample: bool = False, generator: torch.Generator | None = None
    ) -> torch.Tensor:
        """The perturbation decoder's output alone (what purification subtracts); the image decoder is skipped."""
        h, mu, log_var = self.encode(x)
        projected = self.from_latent(self._latent(mu, log_var, sample, generator))
        return self.perturbation_decoder(self._branch_input(h, projected, labels))

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
        return DVAEOutput(
            reconstruction=self.image_decoder(projected),
            mu=mu,
            log_var=log_var,
            perturbation=self.perturbation_decoder(self._branch_input(h, projected, labels)),
        )
