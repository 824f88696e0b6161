"""The D-VAE network: a rate-constrained VAE with a class-conditioned perturbation branch.

Layout follows Yu et al. (ICML 2024), see ``METHOD.md``: a ResNet-18 stem encodes the
image to a spatial latent, an image decoder reconstructs the content, and a second
decoder, fed the projected latent plus a learnable per-class spatial embedding,
explains what the reconstruction leaves out (the unlearnable perturbation).
"""

from __future__ import annotations

import inspect
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any, NamedTuple

import torch
from huggingface_hub import PyTorchModelHubMixin, constants, hf_hub_download
from huggingface_hub.errors import RemoteEntryNotFoundError
from safetensors import SafetensorError, safe_open
from torch import nn

EMBEDDING_TARGETS = ("latent", "stem")
WEIGHTS_NAME = constants.SAFETENSORS_SINGLE_FILE
_PICKLE_SUFFIXES = (".bin", ".pt", ".pth", ".ckpt", ".pkl")


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


class DVAE(nn.Module, PyTorchModelHubMixin, library_name="dvae-transform", tags=["dvae-transform", "purification"]):
    """D-VAE for ``in_channels x image_size x image_size`` images in [0, 1].

    Args:
        in_channels: 1 (grayscale) or 3 (RGB).
        image_size: side of the square input; must be even (the stem halves it).
        num_classes: number of class embeddings for the perturbation branch.
        width: stem width (64 in the paper); the latent projection has ``2 * width`` channels.
        latent_dim: channels of the spatial latent (256 in the paper).
        embedding_target: ``"latent"`` adds the class embedding to the projected sampled
            latent (what the published scripts run); ``"stem"`` adds it to the stem features.
    """

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
        validate_config(in_channels, image_size, num_classes, width, latent_dim, embedding_target)
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

    @classmethod
    def _from_pretrained(
        cls,
        *,
        model_id: str,
        revision: str | None,
        cache_dir: str | Path | None,
        force_download: bool,
        local_files_only: bool,
        token: str | bool | None,
        config: dict[str, Any] | None = None,
        map_location: str = "cpu",
        **model_kwargs: Any,
    ) -> DVAE:
        """``from_pretrained``'s loader: the config is checked, then only ``model.safetensors`` is read.

        Unlike the mixin's default it never falls back to a pickled ``pytorch_model.bin``, and it
        checks every tensor's name, shape and dtype against the config before loading any.
        """
        if os.path.isdir(model_id):
            weights = Path(model_id) / WEIGHTS_NAME
            if not weights.is_file():
                raise FileNotFoundError(_missing_weights_message(str(weights), Path(model_id)))
        else:
            try:
                weights = Path(hf_hub_download(
                    model_id, WEIGHTS_NAME, revision=revision, cache_dir=cache_dir, force_download=force_download,
                    token=token, local_files_only=local_files_only,
                ))
            except RemoteEntryNotFoundError as error:
                raise FileNotFoundError(_missing_weights_message(f"{model_id}/{WEIGHTS_NAME}")) from error
        source = os.path.join(model_id, constants.CONFIG_NAME)
        if config is None:
            raise FileNotFoundError(f"{source} not found: the network settings are needed to build the model")
        check_config(config, source=source)
        model = cls(**model_kwargs)
        load_safetensors(model, weights, device=map_location)
        return model.eval()

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


def validate_config(
    in_channels: object,
    image_size: object,
    num_classes: object,
    width: object,
    latent_dim: object,
    embedding_target: object,
) -> None:
    """Reject a configuration that cannot build a working network, naming the field."""
    for name, value in (
        ("in_channels", in_channels),
        ("image_size", image_size),
        ("num_classes", num_classes),
        ("width", width),
        ("latent_dim", latent_dim),
    ):
        if isinstance(value, bool) or not isinstance(value, int):
            raise TypeError(f"DVAE config: {name} must be an int, got {type(value).__name__} ({value!r})")
        if value <= 0:
            raise ValueError(f"DVAE config: {name} must be positive, got {value}")
    if in_channels not in (1, 3):
        raise ValueError(f"DVAE config: in_channels must be 1 or 3, got {in_channels}")
    if image_size % 2 or image_size < 4:
        raise ValueError(f"DVAE config: image_size must be even and at least 4, got {image_size}")
    if width % 2:
        raise ValueError(f"DVAE config: width must be even, got {width}")
    if embedding_target not in EMBEDDING_TARGETS:
        raise ValueError(f"DVAE config: embedding_target must be one of {EMBEDDING_TARGETS}, got {embedding_target!r}")


def check_config(config: Mapping[str, object], source: str = "config") -> None:
    """Validate a stored DVAE config before anything is built from it: exactly the known keys, then values."""
    if not isinstance(config, Mapping):
        raise TypeError(f"{source}: expected a JSON object, got {type(config).__name__}")
    keys = list(inspect.signature(validate_config).parameters)
    unknown, missing = sorted(set(config) - set(keys)), sorted(set(keys) - set(config))
    if unknown:
        raise ValueError(f"{source}: unknown DVAE config key(s) {unknown}; expected {keys}")
    if missing:
        raise ValueError(f"{source}: missing DVAE config key(s) {missing}")
    try:
        validate_config(**config)
    except (TypeError, ValueError) as error:
        raise type(error)(f"{source}: {error}") from None


def _missing_weights_message(where: str, folder: Path | None = None) -> str:
    pickles = sorted(p.name for p in folder.iterdir() if p.suffix in _PICKLE_SUFFIXES) if folder else []
    found = f" (found only {', '.join(pickles)})" if pickles else ""
    return (
        f"{where} not found{found}. dvae-transform reads weights only from safetensors files: pickle checkpoints "
        "(pytorch_model.bin, *.pt, *.pth, *.ckpt) are refused because unpickling can execute arbitrary code. "
        "Convert a trusted checkpoint with safetensors.torch.save_file."
    )


def load_safetensors(model: nn.Module, path: str | os.PathLike, *, device: str | torch.device = "cpu") -> None:
    """Load a safetensors file into ``model`` after checking it holds exactly its tensors, shapes and dtypes.

    A corrupt or truncated file, a missing or extra tensor, a wrong shape or dtype, or a non-finite
    value raises ``ValueError`` naming the file; ``model`` is left untouched then.
    """
    expected = model.state_dict()
    try:
        with safe_open(os.fspath(path), framework="pt", device=str(device)) as file:
            names = set(file.keys())
            missing, extra = sorted(set(expected) - names), sorted(names - set(expected))
            if missing or extra:
                raise ValueError(f"{path}: tensors do not match the config: missing {missing}, unexpected {extra}")
            for name in sorted(names):
                shape = list(file.get_slice(name).get_shape())
                if shape != list(expected[name].shape):
                    raise ValueError(
                        f"{path}: tensor {name!r} has shape {shape} but the config needs {list(expected[name].shape)}"
                    )
            tensors = {name: file.get_tensor(name) for name in sorted(names)}
    except SafetensorError as error:
        raise ValueError(f"{path} is not a readable safetensors file (truncated or corrupted?): {error}") from None
    for name, tensor in tensors.items():
        if tensor.dtype != expected[name].dtype:
            raise ValueError(f"{path}: tensor {name!r} is {tensor.dtype}, expected {expected[name].dtype}")
        if tensor.is_floating_point() and not torch.isfinite(tensor).all():
            raise ValueError(f"{path}: tensor {name!r} holds NaN or infinite values")
    model.load_state_dict(tensors)
