"""CUDA, the convolution-based unlearnable dataset (dvae_transform.evaluation.convolution_attack)."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from conftest import make_images

from dvae_transform.evaluation.convolution_attack import class_filters, convolution_poison

NUM_CLASSES = 4


def _data(channels: int = 1) -> tuple[torch.Tensor, torch.Tensor]:
    """32 random 16x16 images and balanced labels of ``NUM_CLASSES`` classes."""
    return make_images(32, channels, num_classes=NUM_CLASSES)


def _cuda_filters(channels: int, **kwargs) -> torch.Tensor:
    """Each class's filter, shape (K, k, k), read off the poisoned delta image (a unit pixel in the centre)."""
    deltas = torch.zeros(NUM_CLASSES, channels, 16, 16)
    deltas[:, :, 8, 8] = 1.0
    poisoned = convolution_poison(deltas, torch.arange(NUM_CLASSES), **kwargs)
    assert torch.equal(poisoned, poisoned[:, :1].expand_as(poisoned))  # one filter for all channels
    half = kwargs.get("kernel_size", 3) // 2
    response = poisoned[:, 0]
    patch = response[:, 8 - half : 9 + half, 8 - half : 9 + half].clone()
    response[:, 8 - half : 9 + half, 8 - half : 9 + half] = 0.0
    assert not response.any()  # nothing outside the filter's support
    return patch.flip(-2, -1)  # conv2d correlates, so the delta's response is the flipped filter


@pytest.mark.parametrize("channels", [1, 3])
@pytest.mark.parametrize(
    ("kwargs", "blur", "size"), [({}, 0.3, 3), ({"blur_parameter": 0.1, "kernel_size": 5}, 0.1, 5)]
)
def test_cuda_is_one_real_convolution_per_class(channels: int, kwargs: dict, blur: float, size: int) -> None:
    images, labels = _data(channels=channels)
    filters = _cuda_filters(channels, **kwargs)
    assert filters.shape == (NUM_CLASSES, size, size)
    flat = filters.flatten(1)
    assert ((flat == 1.0).sum(dim=1) == 1).all()  # one entry set to 1 (Sadasivan et al.'s code) ...
    assert ((flat == 1.0) | ((flat >= 0) & (flat <= blur))).all()  # ... the others uniform in [0, blur]
    assert len({tuple(row.tolist()) for row in flat}) == NUM_CLASSES
    poisoned = convolution_poison(images, labels, **kwargs)
    for label in range(NUM_CLASSES):
        weight = filters[label].expand(channels, 1, size, size)
        blurred = F.conv2d(images[labels == label], weight, padding=size // 2, groups=channels)
        expected = blurred / blurred.amax(dim=(1, 2, 3), keepdim=True)  # each image over its own maximum
        torch.testing.assert_close(poisoned[labels == label], expected, atol=1e-6, rtol=1e-5)


def test_cuda_gives_a_constant_image_one_look_per_class() -> None:
    labels = torch.arange(12) % NUM_CLASSES
    poisoned = convolution_poison(torch.full((12, 3, 8, 8), 0.5), labels)
    for label in range(NUM_CLASSES):
        members = poisoned[labels == label]
        assert torch.equal(members, members[:1].expand_as(members))
    assert len({tuple(image.flatten().tolist()) for image in poisoned[:NUM_CLASSES]}) == NUM_CLASSES
    torch.testing.assert_close(poisoned[:, :, 1:-1, 1:-1], torch.ones(12, 3, 6, 6))  # the padding darkens only the rim


def test_cuda_grayscale_option_averages_the_channels_before_normalising() -> None:
    images, labels = _data(channels=3)
    colour = convolution_poison(images, labels)
    gray = convolution_poison(images, labels, grayscale=True)
    assert torch.equal(gray, gray[:, :1].expand_as(gray))
    mean = colour.mean(dim=1)
    torch.testing.assert_close(gray[:, 0], mean / mean.amax(dim=(1, 2), keepdim=True))
    replicated = images[:, :1].expand_as(images)  # a grayscale image stays gray even without the option
    poison = convolution_poison
    torch.testing.assert_close(poison(replicated, labels), poison(replicated, labels, grayscale=True))
    assert torch.equal(poison(images[:, :1], labels, grayscale=True), poison(images[:, :1], labels))


def test_the_filters_are_drawn_from_the_generator_alone() -> None:
    filters = class_filters(5, 3, 0.2, torch.Generator().manual_seed(1))
    assert filters.shape == (5, 3, 3)
    assert torch.equal(filters, class_filters(5, 3, 0.2, torch.Generator().manual_seed(1)))
    assert not torch.equal(filters, class_filters(5, 3, 0.2, torch.Generator().manual_seed(2)))
    flat = filters.flatten(1)
    assert ((flat == 1.0).sum(dim=1) == 1).all() and (flat[flat != 1.0] <= 0.2).all()


def test_the_seed_is_the_key_that_fixes_the_filters() -> None:
    images, labels = _data(channels=3)
    first = convolution_poison(images, labels, seed=4)
    assert torch.equal(first, convolution_poison(images, labels, seed=4))
    assert not torch.equal(first, convolution_poison(images, labels, seed=5))


def test_a_one_pixel_filter_only_rescales_each_image_to_its_maximum() -> None:
    images, labels = _data(channels=3)
    images = 0.5 * images  # maxima below 1: the division shows
    expected = images / images.amax(dim=(1, 2, 3), keepdim=True)
    torch.testing.assert_close(convolution_poison(images, labels, kernel_size=1), expected)


def test_a_black_image_stays_black() -> None:
    images, labels = _data()
    images[0] = 0.0
    poisoned = convolution_poison(images, labels)
    assert torch.equal(poisoned[0], images[0]) and poisoned.isfinite().all()
