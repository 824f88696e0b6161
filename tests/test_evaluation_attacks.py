"""Tests for the unlearnable-example generators in dvae_transform.evaluation.attacks."""

from __future__ import annotations

import math

import pytest
import torch

from dvae_transform.evaluation import attacks

NUM_CLASSES = 4
CHEAP_EM = {"pgd_steps": 2, "train_steps": 2, "max_rounds": 2, "batch_size": 32}
CHEAP = {"error_minimizing": CHEAP_EM}


def _data(num: int = 32, channels: int = 1, size: int = 16, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """Images in [0.3, 0.7] so that small budgets are never clamped, and balanced labels."""
    generator = torch.Generator().manual_seed(seed)
    images = 0.3 + 0.4 * torch.rand(num, channels, size, size, generator=generator)
    return images, torch.arange(num) % NUM_CLASSES


def _poison(name: str, images: torch.Tensor, labels: torch.Tensor, **kwargs) -> torch.Tensor:
    return attacks.make_poison(name, images, labels, **{**CHEAP.get(name, {}), **kwargs})


@pytest.mark.parametrize("name", sorted(attacks.ATTACKS))
@pytest.mark.parametrize("channels", [1, 3])
def test_shape_range_and_dtype(name: str, channels: int) -> None:
    images, labels = _data(channels=channels)
    poisoned = _poison(name, images, labels)
    assert poisoned.shape == images.shape
    assert poisoned.dtype == torch.float32
    assert poisoned.min() >= 0 and poisoned.max() <= 1
    assert not torch.equal(poisoned, images)


@pytest.mark.parametrize("name", sorted(attacks.ATTACKS))
def test_deterministic_for_a_seed_without_global_rng(name: str) -> None:
    images, labels = _data()
    state = torch.get_rng_state()
    first = _poison(name, images, labels, seed=3)
    assert torch.equal(torch.get_rng_state(), state)
    assert torch.equal(first, _poison(name, images, labels, seed=3))


@pytest.mark.parametrize("name", sorted(set(attacks.ATTACKS) - {"ops"}))
def test_another_seed_gives_another_poison(name: str) -> None:
    images, labels = _data()
    assert not torch.equal(_poison(name, images, labels, seed=0), _poison(name, images, labels, seed=1))


def test_ops_is_data_driven_and_seed_only_picks_the_subset() -> None:
    images, labels = _data()
    assert torch.equal(attacks.ops(images, labels, seed=0), attacks.ops(images, labels, seed=1))
    assert not torch.equal(
        attacks.ops(images, labels, seed=0, fraction=0.5), attacks.ops(images, labels, seed=1, fraction=0.5)
    )


@pytest.mark.parametrize("name", sorted(attacks.ATTACKS))
def test_fraction_poisons_a_seeded_share(name: str) -> None:
    images, labels = _data(num=40)
    poisoned = _poison(name, images, labels, fraction=0.5)
    changed = (poisoned != images).flatten(1).any(dim=1)
    assert int(changed.sum()) == 20
    assert torch.equal(poisoned[~changed], images[~changed])
    assert torch.equal(poisoned, _poison(name, images, labels, fraction=0.5))


def test_fraction_zero_leaves_images_unchanged_and_subset_keeps_full_poison() -> None:
    images, labels = _data()
    assert torch.equal(attacks.classwise_noise(images, labels, fraction=0.0), images)
    full = attacks.classwise_noise(images, labels)
    half = attacks.classwise_noise(images, labels, fraction=0.5)
    changed = (half != images).flatten(1).any(dim=1)
    assert torch.equal(half[changed], full[changed])


def test_classwise_noise_budget_and_shared_direction() -> None:
    images, labels = _data()
    eps = 8 / 255
    delta = attacks.classwise_noise(images, labels, eps=eps) - images
    assert delta.abs().max() <= eps + 1e-6
    assert delta.abs().max() > 0.9 * eps
    for label in range(NUM_CLASSES):
        members = delta[labels == label]
        torch.testing.assert_close(members, members[:1].expand_as(members), atol=1e-6, rtol=0)
    assert not torch.allclose(delta[labels == 0][0], delta[labels == 1][0])


def test_classwise_noise_respects_budget_when_clamped() -> None:
    images = torch.randint(0, 2, (16, 3, 8, 8)).float()
    labels = torch.arange(16) % NUM_CLASSES
    delta = attacks.classwise_noise(images, labels, eps=0.1) - images
    assert delta.abs().max() <= 0.1 + 1e-6


@pytest.mark.parametrize("channels", [1, 3])
def test_lsp_default_is_the_papers_budget_on_patches(channels: int) -> None:
    images, labels = _data(channels=channels)
    delta = attacks.lsp(images, labels) - images
    expected = 6 / 255 * math.sqrt(channels * 16 * 16)  # Yu et al.: sqrt(d) * 6/255
    torch.testing.assert_close(delta.flatten(1).norm(dim=1), torch.full((32,), expected), atol=1e-4, rtol=0)
    cell = delta[:, :, 8:, :8]  # every 8x8 patch is one value per image and channel
    torch.testing.assert_close(cell, cell[:, :, :1, :1].expand_as(cell), atol=1e-6, rtol=0)


def test_lsp_is_samplewise_and_linearly_separable_by_class() -> None:
    images, labels = _data(num=200, channels=3)
    delta = (attacks.lsp(images, labels) - images).flatten(1)
    assert not torch.allclose(delta[0], delta[NUM_CLASSES])  # two images of class 0 get their own points
    means = torch.stack([delta[labels == label].mean(dim=0) for label in range(NUM_CLASSES)])
    nearest = torch.cdist(delta, means).argmin(dim=1)  # the perturbation alone tells the class (the shortcut)
    assert torch.equal(nearest, labels)
    cosine = torch.nn.functional.cosine_similarity(delta[:, None], delta[None], dim=-1)
    same = labels[:, None] == labels[None]
    assert cosine[same].mean() > 0.6 > cosine[~same].mean()


def test_lsp_classwise_variant_shares_one_pattern_per_class() -> None:
    images, labels = _data()
    delta = attacks.lsp(images, labels, l2=1.6, samplewise=False) - images
    torch.testing.assert_close(delta.flatten(1).norm(dim=1), torch.full((32,), 1.6), atol=1e-4, rtol=0)
    for label in range(NUM_CLASSES):
        members = delta[labels == label]
        torch.testing.assert_close(members, members[:1].expand_as(members), atol=1e-6, rtol=0)
    assert not torch.allclose(delta[labels == 0][0], delta[labels == 1][0])


def test_lsp_explicit_budget_and_uneven_patch_grid() -> None:
    images, labels = _data(size=12)
    delta = attacks.lsp(images, labels, l2=0.5, patch_size=5) - images
    torch.testing.assert_close(delta.flatten(1).norm(dim=1), torch.full((32,), 0.5), atol=1e-4, rtol=0)


def test_lsp_needs_a_distinct_centroid_per_class() -> None:
    images, labels = _data(size=8)  # one 8x8 patch, one channel: only the centroids -1 and +1
    with pytest.raises(ValueError, match="distinct centroid per class: 4 classes but only 2"):
        attacks.lsp(images, labels)
    assert attacks.lsp(images, labels % 2).shape == images.shape


def test_ops_changes_one_pixel_per_image_at_a_class_position() -> None:
    images, labels = _data(channels=3)
    poisoned = attacks.ops(images, labels)
    changed = (poisoned != images).any(dim=1).flatten(1)
    assert (changed.sum(dim=1) == 1).all()
    positions = changed.float().argmax(dim=1)
    per_class = [positions[labels == label].unique() for label in range(NUM_CLASSES)]
    assert all(p.numel() == 1 for p in per_class)
    assert len({int(p) for p in per_class}) == NUM_CLASSES
    rows, cols = positions // 16, positions % 16
    new_values = poisoned[torch.arange(32), :, rows, cols]
    assert ((new_values == 0) | (new_values == 1)).all()


def test_ops_picks_the_pixel_that_changes_most_consistently() -> None:
    images = torch.full((8, 1, 4, 4), 0.5)
    images[:, :, 2, 3] = 0.0
    labels = torch.zeros(8, dtype=torch.long)
    poisoned = attacks.ops(images, labels)
    assert torch.equal(poisoned[:, 0, 2, 3], torch.ones(8))


def test_ops_needs_a_pixel_per_class() -> None:
    with pytest.raises(ValueError, match="one pixel per class"):
        attacks.ops(torch.rand(6, 1, 2, 2), torch.arange(6))


def test_autoregressive_per_image_l2_budget_and_fresh_starts() -> None:
    images, labels = _data()
    delta = attacks.autoregressive(images, labels, l2=0.3) - images
    torch.testing.assert_close(delta.flatten(1).norm(dim=1), torch.full((32,), 0.3), atol=1e-4, rtol=0)
    assert not torch.allclose(delta[0], delta[NUM_CLASSES])
    clamped = attacks.autoregressive(torch.zeros(8, 1, 16, 16), torch.arange(8) % 2, l2=1.0) - 0
    assert (clamped.flatten(1).norm(dim=1) <= 1.0 + 1e-4).all()


@pytest.mark.parametrize(("channels", "size"), [(3, 32), (1, 32), (1, 16)])
def test_autoregressive_default_is_the_cifar10_budget_at_its_per_pixel_rms(channels: int, size: int) -> None:
    images, labels = _data(num=8, channels=channels, size=size)
    delta = attacks.autoregressive(images, labels) - images
    expected = 1.0 * math.sqrt(channels * size * size / 3072)  # 1.0 on 3x32x32 (Sandoval-Segura et al.)
    torch.testing.assert_close(delta.flatten(1).norm(dim=1), torch.full((8,), expected), atol=1e-4, rtol=0)


def test_error_minimizing_linf_budget() -> None:
    images, labels = _data(num=64)
    delta = attacks.error_minimizing(images, labels, eps=4 / 255, **CHEAP_EM) - images
    assert delta.abs().max() <= 4 / 255 + 1e-6
    assert delta.abs().max() > 2 / 255
    default = attacks.error_minimizing(images, labels, **CHEAP_EM) - images  # Huang et al.: 8/255
    assert 6 / 255 < default.abs().max() <= 8 / 255 + 1e-6


def test_classwise_noise_default_is_the_published_linf_budget() -> None:
    images, labels = _data()
    delta = attacks.classwise_noise(images, labels) - images
    assert 7 / 255 < delta.abs().max() <= 8 / 255 + 1e-6


def test_single_image_and_uint8_input() -> None:
    images, labels = _data()
    single = attacks.classwise_noise(images[0], labels[:1], num_classes=NUM_CLASSES)
    assert single.shape == images[0].shape
    as_bytes = (images * 255).round().to(torch.uint8)
    poisoned = attacks.lsp(as_bytes, labels)
    assert poisoned.dtype == torch.float32 and poisoned.shape == images.shape


def test_num_classes_defaults_to_largest_label_and_is_checked() -> None:
    images, labels = _data()
    default = attacks.classwise_noise(images, labels)
    assert torch.equal(default, attacks.classwise_noise(images, labels, num_classes=NUM_CLASSES))
    with pytest.raises(ValueError, match="labels must lie in"):
        attacks.classwise_noise(images, labels, num_classes=2)
    with pytest.raises(ValueError, match="num_classes"):
        attacks.classwise_noise(images, labels, num_classes=0)


@pytest.mark.parametrize(
    ("kwargs", "error", "words"),
    [
        ({"labels": torch.arange(3)}, ValueError, "3 labels for 32 images"),
        ({"labels": torch.zeros(32)}, TypeError, "integer class labels"),
        ({"images": torch.rand(16, 16)}, ValueError, "CHW image or an NCHW batch"),
        ({"images": torch.full((32, 1, 16, 16), 2.0)}, ValueError, r"\[0, 1\]"),
        ({"images": "not images"}, TypeError, "images"),
        ({"eps": -0.1}, ValueError, "eps"),
        ({"eps": "big"}, TypeError, "eps"),
        ({"fraction": 1.5}, ValueError, "fraction"),
        ({"seed": 1.5}, TypeError, "seed"),
    ],
)
def test_bad_arguments_are_named(kwargs: dict, error: type[Exception], words: str) -> None:
    images, labels = _data()
    arguments = {"images": images, "labels": labels, **kwargs}
    with pytest.raises(error, match=words):
        attacks.classwise_noise(**arguments)


@pytest.mark.parametrize(
    ("name", "kwargs", "words"),
    [
        ("lsp", {"l2": 0.0}, "l2"),
        ("autoregressive", {"l2": -1.0}, "l2"),
        ("lsp", {"patch_size": 0}, "patch_size"),
        ("autoregressive", {"l2": float("nan")}, "l2"),
        ("error_minimizing", {"pgd_steps": 2.5}, "pgd_steps"),
        ("error_minimizing", {"step_size": 0}, "step_size"),
        ("error_minimizing", {"stop_accuracy": 1.5}, "stop_accuracy"),
        ("cuda", {"blur_parameter": 0.0}, "blur_parameter must be a positive finite number, got 0.0"),
        ("cuda", {"blur_parameter": "0.3"}, "blur_parameter"),
        ("cuda", {"kernel_size": 4}, "kernel_size must be a positive odd int, got 4"),
        ("cuda", {"kernel_size": -1}, "kernel_size must be a positive odd int, got -1"),
        ("cuda", {"kernel_size": 3.0}, r"kernel_size must be an int, got float \(3.0\)"),
        ("cuda", {"grayscale": 1}, "grayscale must be a bool"),
    ],
)
def test_bad_budgets_are_named(name: str, kwargs: dict, words: str) -> None:
    images, labels = _data()
    with pytest.raises((ValueError, TypeError), match=words):
        attacks.make_poison(name, images, labels, **kwargs)


def test_make_poison_dispatches_and_rejects_unknown_names() -> None:
    images, labels = _data()
    assert torch.equal(attacks.make_poison("lsp", images, labels, seed=2), attacks.lsp(images, labels, seed=2))
    with pytest.raises(ValueError, match="unknown attack 'nope'.*classwise_noise.*ops"):
        attacks.make_poison("nope", images, labels)
