"""The victim classifiers of the demo and the benchmark, and their training settings (:data:`VICTIMS`).

A :class:`VictimSettings` is data: the architecture, optimiser, schedule, batch, epochs and
augmentation that :func:`train_victim` follows, and the words a report prints about it.

- ``small`` (the default, :data:`DEFAULT_SETTINGS`): a small CNN trained with Adam, the CPU-quick option.
  On the embedded MNIST split it stands in for the paper's ResNet-18.
- ``resnet18``: the paper's victim, a CIFAR-style ResNet-18 trained with SGD and a one-cycle
  schedule, random crop and flip; meant for GPUs.
- ``resnet18_cpu``: the same settings (ResNet-18 block layout, SGD with Nesterov momentum, one-cycle,
  per-image crop and flip) at base width 16 instead of 64 and 10 epochs: the attacks hurt it as they
  hurt the paper's victim (LSP takes Fashion-MNIST from 0.84 to about 0.2), and it is quick enough to
  train on a CPU (BENCHMARKS.md, "Speed"). The default victim of ``bench --data fashion-mnist`` on the
  CPU. Its width is a setting (``width``, ``bench --victim-width``).

Training keeps the whole set on ``device``. On CUDA the ResNet-18 runs in channels_last layout
with deterministic cuDNN kernels, and its crop and flip are drawn per image on the device,
vectorised. Initialisation, shuffling and augmentation are seeded, so one seed gives one result on
one device. It trains in float32 (cuDNN's TF32 convolutions): under bf16 autocast it did not learn
(Fashion-MNIST, 20,000 images, 3 epochs on an H200: test accuracy 0.097 with bf16, 0.879 in float32,
at the same speed).
"""

from __future__ import annotations

import contextlib
import dataclasses
from collections.abc import Callable, Iterator
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from ..images import to_float_images, to_labels
from ..model import BasicBlock
from ..validation import check_choice, check_int
from .augment import crop_flip, random_shift


@dataclass(frozen=True)
class VictimSettings:
    """How a victim is built and trained; reports print :meth:`describe`."""

    name: str
    architecture: str  # a key of ARCHITECTURES
    model: str  # the architecture in words
    optimizer: str  # "adam" or "sgd"
    lr: float
    momentum: float = 0.0
    weight_decay: float = 0.0
    schedule: str = "constant"  # a key of SCHEDULES
    batch_size: int = 128
    epochs: int = 8
    augmentation: str = "shift"  # a key of AUGMENTATIONS
    cuda_channels_last: bool = False  # channels_last layout and deterministic cuDNN when training on CUDA
    nesterov: bool = False
    width: int | None = None  # base width of architectures that take one (None: the architecture's own)
    role: str = ""

    def __post_init__(self) -> None:
        if self.width is not None:
            check_int(self.width, "victim width", low=1)

    def with_width(self, width: int | None) -> VictimSettings:
        """This victim at base ``width`` (``None``: unchanged); only for architectures that take a width."""
        if width is None:
            return self
        if self.width is None:
            raise ValueError(f"victim {self.name!r} has no width setting; victims with one: "
                             + ", ".join(name for name, victim in VICTIMS.items() if victim.width is not None))
        return dataclasses.replace(self, width=width)  # __post_init__ checks it

    def describe(self, epochs: int | None = None) -> str:
        """One paragraph: the model, its training settings (``epochs`` if this run changes them) and its role."""
        optimizer = [{"adam": "Adam", "sgd": "SGD"}[self.optimizer]]
        if self.momentum:
            optimizer.append(f"{'Nesterov ' if self.nesterov else ''}momentum {self.momentum:g}")
        if self.weight_decay:
            optimizer.append(f"weight decay {self.weight_decay:g}")
        optimizer += [f"batch {self.batch_size}", f"{self.epochs if epochs is None else epochs} epoch(s)"]
        precision = " On CUDA: channels_last, deterministic cuDNN." if self.cuda_channels_last else ""
        return (
            f"`{self.name}`: {self.model}{'' if self.width is None else f', base width {self.width}'}. "
            f"{', '.join(optimizer)}; lr: {SCHEDULES[self.schedule].format(lr=self.lr)}. "
            f"Augmentation: {AUGMENTATIONS[self.augmentation][0]}.{precision} {self.role}"
        )


SCHEDULES = {
    "constant": "constant {lr:g}",
    "one-cycle": "one-cycle peaking at {lr:g} (torch's OneCycleLR: 30% warm-up from lr/25, cosine annealing to "
    "lr/250000, momentum not cycled)",
}


# ----------------------------------------------------------------------------- architectures


def small_cnn(in_channels: int, num_classes: int) -> nn.Sequential:
    """Two conv-pool blocks and a small classifier head."""
    return nn.Sequential(
        nn.Conv2d(in_channels, 32, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
        nn.Conv2d(32, 64, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
        nn.Flatten(), nn.LazyLinear(128), nn.ReLU(), nn.Linear(128, num_classes),
    )


def resnet18_cifar(in_channels: int, num_classes: int) -> nn.Module:
    """torchvision's ResNet-18 in its CIFAR form: a 3x3 stride-1 stem for ``in_channels``, no max-pool."""
    from torchvision.models import resnet18

    model = resnet18(num_classes=num_classes)
    model.conv1 = nn.Conv2d(in_channels, 64, kernel_size=3, stride=1, padding=1, bias=False)
    nn.init.kaiming_normal_(model.conv1.weight, mode="fan_out", nonlinearity="relu")  # as torchvision's convs
    model.maxpool = nn.Identity()
    return model


def resnet18_layout(in_channels: int, num_classes: int, width: int) -> nn.Sequential:
    """ResNet-18's CIFAR layout at base ``width``: a 3x3 stride-1 stem, four stages of two basic blocks
    (``width``, 2x, 4x, 8x channels; stride 2 from the second), global average pooling, a linear head.
    At width 64 it is :func:`resnet18_cifar`'s network."""
    stages, channels = [], width
    for index in range(4):
        out = width << index
        stages += [BasicBlock(channels, out, stride=1 if index == 0 else 2), BasicBlock(out, out)]
        channels = out
    model = nn.Sequential(
        nn.Conv2d(in_channels, width, 3, 1, 1, bias=False), nn.BatchNorm2d(width), nn.ReLU(inplace=True),
        *stages, nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(channels, num_classes),
    )
    for module in model.modules():
        if isinstance(module, nn.Conv2d):
            nn.init.kaiming_normal_(module.weight, mode="fan_out", nonlinearity="relu")  # as torchvision's ResNets
    return model


ARCHITECTURES: dict[str, Callable[..., nn.Module]] = {
    "small_cnn": small_cnn, "resnet18": resnet18_cifar, "resnet18_layout": resnet18_layout,
}
AUGMENTATIONS = {
    "shift": ("random 2-pixel shifts (one per batch)", random_shift),
    "crop_flip": ("random crop (padding 4) and horizontal flip, drawn per image", crop_flip),
}

VICTIMS: dict[str, VictimSettings] = {
    "small": VictimSettings(
        name="small", architecture="small_cnn", model="a small CNN (two conv-pool blocks, one hidden layer)",
        optimizer="adam", lr=1e-3, batch_size=128, epochs=8, augmentation="shift",
        role="The CPU-quick victim; on the embedded MNIST split it stands in for the paper's ResNet-18.",
    ),
    "resnet18": VictimSettings(
        name="resnet18", architecture="resnet18",
        model="a CIFAR-style ResNet-18 (torchvision's, 3x3 stride-1 stem, no max-pool)",
        optimizer="sgd", lr=0.1, momentum=0.9, weight_decay=5e-4, schedule="one-cycle", batch_size=128, epochs=12,
        augmentation="crop_flip", cuda_channels_last=True,
        role="The paper's victim (it trains 60 epochs; 12 here by default).",
    ),
    "resnet18_cpu": VictimSettings(
        name="resnet18_cpu", architecture="resnet18_layout",
        model="ResNet-18's CIFAR layout (2-2-2-2 basic blocks, 3x3 stride-1 stem, no max-pool)",
        optimizer="sgd", lr=0.1, momentum=0.9, nesterov=True, weight_decay=5e-4, schedule="one-cycle",
        batch_size=128, epochs=10, augmentation="crop_flip", cuda_channels_last=True, width=16,
        role="The paper's victim at a quarter of its width and 10 epochs: hurt by the attacks as the paper's is, "
             "about a minute per 4,000 images on two CPU cores.",
    ),
}
DEFAULT_VICTIM = "small"
CPU_VICTIM = "resnet18_cpu"  # the default of a Fashion-MNIST benchmark on the CPU
DEFAULT_SETTINGS = VICTIMS[DEFAULT_VICTIM]


# ----------------------------------------------------------------------------- training


def _build(victim: VictimSettings, sample: torch.Tensor, num_classes: int, seed: int) -> nn.Module:
    """The victim's model, initialised under ``seed`` on the CPU (the global RNG is restored)."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        width = {} if victim.width is None else {"width": victim.width}
        model = ARCHITECTURES[victim.architecture](sample.shape[1], num_classes, **width)
        with torch.no_grad():
            model.eval()(sample.cpu())  # materialises lazy layers under the seed, running statistics untouched
    return model.train()


def _optimizer(victim: VictimSettings, model: nn.Module) -> torch.optim.Optimizer:
    if victim.optimizer == "adam":
        return torch.optim.Adam(model.parameters(), lr=victim.lr, weight_decay=victim.weight_decay)
    return torch.optim.SGD(model.parameters(), lr=victim.lr, momentum=victim.momentum,
                           weight_decay=victim.weight_decay, nesterov=victim.nesterov)


def _scheduler(victim: VictimSettings, optimizer: torch.optim.Optimizer,
               total_steps: int) -> torch.optim.lr_scheduler.LRScheduler | None:
    if victim.schedule == "constant":
        return None
    return torch.optim.lr_scheduler.OneCycleLR(optimizer, max_lr=victim.lr, total_steps=total_steps,
                                               cycle_momentum=False)


@contextlib.contextmanager
def _deterministic(fast: bool) -> Iterator[None]:
    """Deterministic cuDNN kernels while training a channels_last model on CUDA; nothing otherwise."""
    if not fast:
        yield
        return
    with torch.backends.cudnn.flags(enabled=True, benchmark=False, deterministic=True):
        yield


def train_victim(
    images: torch.Tensor,
    labels: torch.Tensor,
    *,
    num_classes: int = 10,
    victim: VictimSettings | str = DEFAULT_SETTINGS,
    epochs: int | None = None,
    seed: int = 0,
    device: str | torch.device = "cpu",
) -> nn.Module:
    """Train a victim on (possibly poisoned or purified) images; returns it in eval mode on ``device``.

    ``victim`` is a :class:`VictimSettings` or a name in :data:`VICTIMS`; ``epochs`` overrides its epochs.
    """
    if isinstance(victim, str):
        victim = VICTIMS[check_choice(victim, "victim", VICTIMS)]
    epochs = victim.epochs if epochs is None else check_int(epochs, "epochs", low=1)
    device = torch.device(device)
    images = to_float_images(images).to(device)
    labels = to_labels(labels, images.shape[0], num_classes).to(device)
    fast = victim.cuda_channels_last and device.type == "cuda"
    model = _build(victim, images[:1], num_classes, seed).to(device)
    if fast:
        model = model.to(memory_format=torch.channels_last)
    optimizer = _optimizer(victim, model)
    steps_per_epoch = -(-len(images) // victim.batch_size)
    scheduler = _scheduler(victim, optimizer, epochs * steps_per_epoch)
    augment = AUGMENTATIONS[victim.augmentation][1]
    generator = torch.Generator().manual_seed(seed)  # shuffling (and batch-wise shifts), on the CPU
    device_generator = torch.Generator(device).manual_seed(seed)  # per-image augmentation, on the device
    model.train()
    with _deterministic(fast):
        for _ in range(epochs):
            order = torch.randperm(len(images), generator=generator).to(device)
            for start in range(0, len(images), victim.batch_size):
                index = order[start : start + victim.batch_size]
                batch = augment(images[index], generator=generator, device_generator=device_generator)
                if fast:
                    batch = batch.contiguous(memory_format=torch.channels_last)
                loss = F.cross_entropy(model(batch), labels[index])
                optimizer.zero_grad(set_to_none=True)
                loss.backward()
                optimizer.step()
                if scheduler is not None:
                    scheduler.step()
    return model.eval()


@torch.inference_mode()
def accuracy(model: nn.Module, images: torch.Tensor, labels: torch.Tensor, batch_size: int = 500) -> float:
    """Top-1 accuracy on clean test images."""
    device = next(model.parameters()).device
    images, labels = images.to(device), labels.to(device)
    predictions = torch.cat([model(images[i : i + batch_size]).argmax(1) for i in range(0, len(images), batch_size)])
    return (predictions == labels).float().mean().item()
