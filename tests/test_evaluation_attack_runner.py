"""The calling convention every attack shares (dvae_transform.evaluation.attack_runner), with toy poisons."""

from __future__ import annotations

import pytest
import torch
from conftest import make_images

from dvae_transform.evaluation.attack_runner import run_attack


def _brighten(batch: torch.Tensor, labels: torch.Tensor, num_classes: int, generator: torch.Generator) -> torch.Tensor:
    """A toy poison: each image shifted by ``(label + 1) / num_classes`` plus one draw of the generator."""
    return batch + (labels[:, None, None, None] + 1) / num_classes + torch.rand(1, generator=generator)


def test_the_poison_is_clamped_to_the_unit_range_and_seeded_locally() -> None:
    images, labels = make_images(8)
    torch.manual_seed(0)
    state = torch.get_rng_state()
    poisoned = run_attack(_brighten, images, labels, None, 5, 1.0)
    assert torch.equal(torch.get_rng_state(), state)  # the global generator is not used
    draw = torch.rand(1, generator=torch.Generator().manual_seed(5))
    expected = (images + (labels[:, None, None, None] + 1) / 4 + draw).clamp(0, 1)
    assert torch.equal(poisoned, expected)


def test_the_class_count_defaults_to_the_largest_label_plus_one() -> None:
    seen = []

    def record(batch: torch.Tensor, labels: torch.Tensor, num_classes: int, generator: torch.Generator) -> torch.Tensor:
        seen.append((labels.tolist(), num_classes))
        return batch

    images, _ = make_images(3)
    run_attack(record, images, [0, 2, 1], None, 0, 1.0)
    run_attack(record, images, torch.tensor([0, 2, 1]), 7, 0, 1.0)
    run_attack(record, images[0], 6, None, 0, 1.0)  # one CHW image and one int label
    assert seen == [([0, 2, 1], 3), ([0, 2, 1], 7), ([6], 7)]


@pytest.mark.parametrize(("fraction", "changed"), [(0.0, 0), (0.25, 3), (0.5, 6), (1.0, 12)])
def test_fraction_poisons_a_seeded_share_and_keeps_the_others(fraction: float, changed: int) -> None:
    images, labels = make_images(12)
    poisoned = run_attack(_brighten, images, labels, None, 1, fraction)
    hit = (poisoned != images).flatten(1).any(dim=1)
    assert int(hit.sum()) == changed and torch.equal(poisoned[~hit], images[~hit])
    full = run_attack(_brighten, images, labels, None, 1, 1.0)
    assert torch.equal(poisoned[hit], full[hit])  # the chosen images get the full poison
    assert torch.equal(poisoned, run_attack(_brighten, images, labels, None, 1, fraction))


def test_a_single_image_comes_back_as_one_image() -> None:
    images, labels = make_images(1)
    single = run_attack(_brighten, images[0], labels[:1], None, 0, 1.0)
    batch = run_attack(_brighten, images, labels, None, 0, 1.0)
    assert single.shape == images[0].shape and torch.equal(single, batch[0])


@pytest.mark.parametrize(
    ("arguments", "error", "words"),
    [
        ({"seed": 0.5}, TypeError, "seed must be an int"),
        ({"fraction": -0.1}, ValueError, "fraction"),
        ({"num_classes": 0}, ValueError, "num_classes must be positive"),
        ({"num_classes": 2}, ValueError, "labels must lie in"),
        ({"labels": [0, 1]}, ValueError, "2 labels for 4 images"),
    ],
)
def test_bad_common_arguments_are_named(arguments: dict, error: type[Exception], words: str) -> None:
    images, labels = make_images(4)
    call = {"images": images, "labels": labels, "num_classes": None, "seed": 0, "fraction": 1.0, **arguments}
    with pytest.raises(error, match=words):
        run_attack(_brighten, **call)
