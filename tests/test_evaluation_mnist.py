"""The embedded MNIST digits and their attack settings (dvae_transform.evaluation.mnist)."""

from __future__ import annotations

import pytest
import torch

from dvae_transform.evaluation.attacks import ATTACKS, make_poison
from dvae_transform.evaluation.mnist import MNIST_ATTACK_SETTINGS, NUM_TRAIN, load_mnist32

CHEAP_EM = {"pgd_steps": 1, "train_steps": 1, "max_rounds": 1, "batch_size": 16}


@pytest.mark.parametrize("name", sorted(MNIST_ATTACK_SETTINGS))
def test_the_mnist_settings_are_arguments_of_their_attack_and_stronger_than_its_defaults(name: str) -> None:
    assert name in ATTACKS
    generator = torch.Generator().manual_seed(0)
    images, labels = 0.2 + 0.6 * torch.rand(16, 1, 32, 32, generator=generator), torch.arange(16) % 4
    extra = CHEAP_EM if name == "error_minimizing" else {}
    default = make_poison(name, images, labels, **extra) - images
    stronger = make_poison(name, images, labels, **MNIST_ATTACK_SETTINGS[name], **extra) - images
    assert stronger.norm() > default.norm()


@pytest.fixture(scope="module")
def digits():
    return load_mnist32()


@pytest.mark.slow  # parsing the digits takes a few seconds, once per process
def test_the_split_is_4000_train_and_1000_test_zero_padded_32px_digits(digits) -> None:
    train_images, train_labels, test_images, test_labels = digits
    assert train_images.shape == (NUM_TRAIN, 1, 32, 32) and test_images.shape == (1000, 1, 32, 32)
    assert train_labels.dtype == test_labels.dtype == torch.int64
    assert set(train_labels.tolist()) == set(test_labels.tolist()) == set(range(10))
    for images in (train_images, test_images):
        assert images.dtype == torch.float32 and images.min() == 0 and images.max() == 1
        border = torch.ones(32, 32, dtype=torch.bool)
        border[2:30, 2:30] = False
        assert not images[:, :, border].any()  # the 28x28 digits padded by 2 pixels of black


@pytest.mark.slow
def test_every_call_gets_the_same_split_in_its_own_tensors(digits) -> None:
    again = load_mnist32()
    for first, second in zip(digits, again):
        assert torch.equal(first, second) and first.data_ptr() != second.data_ptr()
    again.train_images.zero_()
    assert torch.equal(load_mnist32().train_images, digits.train_images)
