"""The victims' batch augmentation (dvae_transform.evaluation.augment): shifts, crops and flips."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from dvae_transform.evaluation.augment import crop_flip, random_shift


def _batch(count: int = 6) -> torch.Tensor:
    return torch.rand(count, 3, 8, 8, generator=torch.Generator().manual_seed(0)) + 0.1  # no pixel is 0


@pytest.mark.parametrize("pad", [1, 2])
def test_random_shift_moves_the_whole_batch_by_one_offset(pad: int) -> None:
    batch = _batch()
    offsets = set()
    for seed in range(12):
        shifted = random_shift(batch, generator=torch.Generator().manual_seed(seed), device_generator=torch.Generator(),
                               pad=pad)
        padded = F.pad(batch, (pad,) * 4)
        found = [(dy, dx) for dy in range(2 * pad + 1) for dx in range(2 * pad + 1)
                 if torch.equal(padded[..., dy : dy + 8, dx : dx + 8], shifted)]
        assert len(found) == 1, "one window of the zero-padded batch, the same for every image"
        offsets.update(found)
    assert len(offsets) > 1 and all(0 <= dy <= 2 * pad and 0 <= dx <= 2 * pad for dy, dx in offsets)


def test_random_shift_draws_from_the_cpu_generator_only() -> None:
    batch = _batch()
    device_generator = torch.Generator().manual_seed(3)
    state = device_generator.get_state()
    first = random_shift(batch, generator=torch.Generator().manual_seed(1), device_generator=device_generator)
    assert torch.equal(device_generator.get_state(), state)
    assert torch.equal(first, random_shift(batch, generator=torch.Generator().manual_seed(1),
                                           device_generator=torch.Generator()))
    assert torch.equal(random_shift(batch, generator=torch.Generator(), device_generator=device_generator, pad=0),
                       batch)


def test_crop_flip_without_padding_only_flips_some_images() -> None:
    batch = _batch(32)
    out = crop_flip(batch, generator=torch.Generator(), device_generator=torch.Generator().manual_seed(2), padding=0)
    flipped = torch.tensor([torch.equal(result, image.flip(-1)) for image, result in zip(batch, out)])
    kept = torch.tensor([torch.equal(result, image) for image, result in zip(batch, out)])
    assert (flipped ^ kept).all() and 0 < int(flipped.sum()) < 32


def test_crop_flip_draws_from_the_device_generator_only() -> None:
    batch = _batch()
    generator = torch.Generator().manual_seed(3)
    state = generator.get_state()
    first = crop_flip(batch, generator=generator, device_generator=torch.Generator().manual_seed(4))
    assert torch.equal(generator.get_state(), state)
    assert not torch.equal(first, crop_flip(batch, generator=generator, device_generator=torch.Generator()))
