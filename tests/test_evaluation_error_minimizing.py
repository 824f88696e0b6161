"""The min-min optimisation behind error-minimising noise (dvae_transform.evaluation.error_minimizing)."""

from __future__ import annotations

import torch
from conftest import make_images

from dvae_transform.evaluation.error_minimizing import error_minimizing_poison

NUM_CLASSES = 4
CHEAP = {"eps": 8 / 255, "step_size": 2 / 255, "pgd_steps": 2, "train_steps": 2, "max_rounds": 2,
         "stop_accuracy": 0.99, "batch_size": 16}


def _poison(images: torch.Tensor, labels: torch.Tensor, seed: int = 0, **changes) -> torch.Tensor:
    generator = torch.Generator().manual_seed(seed)
    return error_minimizing_poison(images, labels, NUM_CLASSES, generator, **{**CHEAP, **changes})


def test_the_noise_stays_within_the_budget_and_the_unit_range() -> None:
    images, labels = make_images(32, channels=3)
    poisoned = _poison(images, labels, eps=4 / 255)
    assert poisoned.shape == images.shape
    assert (poisoned - images).abs().max() <= 4 / 255 + 1e-6
    assert poisoned.min() >= 0 and poisoned.max() <= 1


def test_the_generator_alone_decides_the_noise() -> None:
    images, labels = make_images(32)
    torch.manual_seed(0)
    state = torch.get_rng_state()
    first = _poison(images, labels, seed=1)
    assert torch.equal(torch.get_rng_state(), state)
    assert torch.equal(first, _poison(images, labels, seed=1))
    assert not torch.equal(first, _poison(images, labels, seed=2))


def test_the_rounds_stop_once_the_surrogate_reaches_the_stop_accuracy() -> None:
    images, labels = make_images(32)
    one_round = _poison(images, labels, max_rounds=1)
    assert torch.equal(_poison(images, labels, max_rounds=3, stop_accuracy=0.0), one_round)
    assert not torch.equal(_poison(images, labels, max_rounds=3, stop_accuracy=1.0), one_round)


def test_the_descent_moves_the_noise_from_its_random_start_within_the_budget() -> None:
    images, labels = make_images(64)
    start = _poison(images, labels, pgd_steps=0, max_rounds=1)  # only the random start, within the budget
    optimised = _poison(images, labels, pgd_steps=5, max_rounds=4, train_steps=10)
    assert (optimised - images).abs().max() <= CHEAP["eps"] + 1e-6
    assert not torch.equal(optimised, start)
