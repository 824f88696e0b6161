"""The benchmark's victims: their settings, the CIFAR-style ResNet-18, per-image augmentation, seeded training."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from dvae_transform.evaluation.augment import crop_flip
from dvae_transform.evaluation.bench import default_victim
from dvae_transform.evaluation.victims import VICTIMS, accuracy, resnet18_cifar, resnet18_layout, train_victim


def _easy_task(count: int = 64, channels: int = 3, size: int = 16) -> tuple[torch.Tensor, torch.Tensor]:
    """Two classes a classifier learns in a few steps: dark and bright images."""
    generator = torch.Generator().manual_seed(0)
    labels = torch.arange(count) % 2
    noise = 0.1 * torch.rand(count, channels, size, size, generator=generator)
    return noise + 0.2 + 0.6 * labels[:, None, None, None], labels


def _same_weights(first: nn.Module, second: nn.Module) -> bool:
    return all(torch.equal(a, b) for a, b in zip(first.state_dict().values(), second.state_dict().values()))


@pytest.mark.parametrize(("channels", "size", "classes"), [(1, 32, 10), (3, 16, 100)])
def test_resnet18_is_cifar_style(channels: int, size: int, classes: int) -> None:
    model = resnet18_cifar(channels, classes)
    stem = model.conv1
    assert (stem.in_channels, stem.kernel_size, stem.stride, stem.padding) == (channels, (3, 3), (1, 1), (1, 1))
    assert isinstance(model.maxpool, nn.Identity) and model.fc.out_features == classes
    assert model(torch.rand(2, channels, size, size)).shape == (2, classes)


def test_resnet18_layout_is_resnet18_cifar_at_a_chosen_width() -> None:
    full, narrow = resnet18_layout(3, 10, width=64), resnet18_layout(1, 10, width=16)
    reference = resnet18_cifar(3, 10)

    def parameters(model: nn.Module) -> int:
        return sum(p.numel() for p in model.parameters())

    assert parameters(full) == parameters(reference)  # the same network as torchvision's at width 64
    convs = [m for m in narrow.modules() if isinstance(m, nn.Conv2d) and m.kernel_size == (3, 3)]
    assert len(convs) == 17 and [c.out_channels for c in convs[::4]] == [16, 16, 32, 64, 128]
    assert narrow(torch.rand(2, 1, 32, 32)).shape == (2, 10)


def test_the_cpu_victim_is_the_paper_settings_narrower_and_the_fashion_mnist_cpu_default() -> None:
    cpu, paper = VICTIMS["resnet18_cpu"], VICTIMS["resnet18"]
    assert (cpu.optimizer, cpu.lr, cpu.momentum, cpu.weight_decay, cpu.schedule, cpu.augmentation) == (
        paper.optimizer, paper.lr, paper.momentum, paper.weight_decay, paper.schedule, paper.augmentation)
    assert (cpu.width, cpu.epochs, cpu.nesterov, cpu.batch_size) == (16, 10, True, 128)
    assert "base width 16" in cpu.describe() and "Nesterov momentum 0.9" in cpu.describe()
    assert cpu.with_width(8).width == 8 and cpu.with_width(None) is cpu
    assert default_victim("fashion-mnist", torch.device("cpu")) == "resnet18_cpu"
    cuda = torch.device("cuda")
    assert default_victim("mnist", torch.device("cpu")) == default_victim("fashion-mnist", cuda) == "small"
    for width in (0, -3, 2.5, True):
        with pytest.raises((ValueError, TypeError), match="victim width"):
            cpu.with_width(width)
    with pytest.raises(ValueError, match="victim 'small' has no width setting; victims with one: resnet18_cpu"):
        VICTIMS["small"].with_width(8)


def test_crop_flip_crops_the_padded_image_per_sample_and_sometimes_flips() -> None:
    batch = torch.rand(32, 3, 8, 8, generator=torch.Generator().manual_seed(1))
    out = crop_flip(batch, generator=torch.Generator(), device_generator=torch.Generator().manual_seed(5))
    assert out.shape == batch.shape and out.is_contiguous(memory_format=torch.channels_last)
    padded = torch.nn.functional.pad(batch, (4,) * 4)
    seen = set()
    for image, result in zip(padded, out):
        found = [(dy, dx, flip) for dy in range(9) for dx in range(9) for flip in (False, True)
                 if torch.equal(image[:, dy : dy + 8, dx : dx + 8].flip(-1) if flip else image[:, dy : dy + 8,
                                dx : dx + 8], result)]
        assert found, "every output is a crop of the zero-padded image, flipped or not"
        seen.update(found)
    assert {flip for _, _, flip in seen} == {False, True} and len({(dy, dx) for dy, dx, _ in seen}) > 10
    again = crop_flip(batch, generator=torch.Generator(), device_generator=torch.Generator().manual_seed(5))
    assert torch.equal(out, again)


def test_victim_settings_are_data_the_report_prints() -> None:
    small, resnet = VICTIMS["small"], VICTIMS["resnet18"]
    assert (small.optimizer, small.lr, small.epochs) == ("adam", 1e-3, 8)
    assert (resnet.optimizer, resnet.lr, resnet.momentum, resnet.weight_decay) == ("sgd", 0.1, 0.9, 5e-4)
    assert (resnet.schedule, resnet.batch_size, resnet.epochs) == ("one-cycle", 128, 12)
    text = resnet.describe(epochs=60)
    for words in ("ResNet-18", "SGD, momentum 0.9, weight decay 0.0005, batch 128, 60 epoch(s)",
                  "one-cycle peaking at 0.1", "random crop (padding 4) and horizontal flip", "channels_last"):
        assert words in text
    assert "Adam, batch 128, 8 epoch(s); lr: constant 0.001" in small.describe()


@pytest.mark.parametrize(("victim", "epochs"), [("small", 20), ("resnet18_cpu", 3)])
def test_victims_learn_and_leave_the_global_rng_alone(victim: str, epochs: int) -> None:
    images, labels = _easy_task()
    state = torch.get_rng_state()
    model = train_victim(images, labels, num_classes=2, victim=victim, epochs=epochs, seed=0)
    assert torch.equal(torch.get_rng_state(), state)
    assert not model.training and accuracy(model, images, labels) == 1.0


@pytest.mark.parametrize("victim", ["small", "resnet18", "resnet18_cpu"])
def test_training_is_seeded(victim: str) -> None:
    images, labels = _easy_task(count=16, size=8)
    state = torch.get_rng_state()
    model = train_victim(images, labels, num_classes=2, victim=victim, epochs=1, seed=0)
    assert torch.equal(torch.get_rng_state(), state)
    assert _same_weights(model, train_victim(images, labels, num_classes=2, victim=victim, epochs=1, seed=0))
    assert not _same_weights(model, train_victim(images, labels, num_classes=2, victim=victim, epochs=1, seed=1))


def test_unknown_victims_and_bad_epochs_are_named() -> None:
    images, labels = _easy_task(count=8)
    with pytest.raises(ValueError, match="victim"):
        train_victim(images, labels, victim="vgg")
    with pytest.raises(ValueError, match="epochs"):
        train_victim(images, labels, epochs=0)
