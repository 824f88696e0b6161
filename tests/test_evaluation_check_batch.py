"""Check batches: a purifier's output stored with its input, checked within a per-value tolerance
(dvae_transform.evaluation.check_batch)."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file, save_file

from dvae_transform import DVAEPurify
from dvae_transform.evaluation.check_batch import (
    FLOAT32_SPREAD,
    check_tolerance,
    verify_check_batch,
    write_check_batch,
)


def test_the_check_tolerance_is_the_float32_spread_except_near_a_rounding_flip(tiny_purifier: DVAEPurify,
                                                                                tiny_data, tmp_path: Path) -> None:
    images, labels = tiny_data
    purified, tolerance = check_tolerance(tiny_purifier, images, labels)
    assert torch.equal(purified, tiny_purifier.purify(images, labels)) and tolerance.min() >= FLOAT32_SPREAD
    assert tolerance.median() < 2 * FLOAT32_SPREAD  # most values keep (about) the tight bound
    write_check_batch(tiny_purifier, images, labels, tmp_path / "check.safetensors")
    assert sorted(load_file(tmp_path / "check.safetensors")) == ["images", "labels", "purified"]
    assert verify_check_batch(tiny_purifier, tmp_path / "check.safetensors") == 0.0  # same machine: bit for bit


@pytest.fixture
def check_file(tiny_purifier: DVAEPurify, tiny_data, tmp_path: Path) -> Path:
    images, labels = tiny_data
    path = tmp_path / "check.safetensors"
    write_check_batch(tiny_purifier, images[:8], labels[:8], path)
    return path


def test_another_purifier_fails_the_check_naming_how_many_values_differ(other_purifier: DVAEPurify,
                                                                         check_file: Path) -> None:
    with pytest.raises(ValueError, match=rf"{check_file.name}: \d+ of 2048 purified values differ .* not the one"):
        verify_check_batch(other_purifier, check_file)


def test_one_stored_value_moved_past_its_tolerance_fails(tiny_purifier: DVAEPurify, check_file: Path) -> None:
    batch = load_file(check_file)
    _, tolerance = check_tolerance(tiny_purifier, batch["images"], batch["labels"])
    batch["purified"].view(-1)[7] += 2 * tolerance.view(-1)[7]
    save_file(batch, check_file)
    with pytest.raises(ValueError, match=r"1 of 2048 purified values differ .* \(up to 2 times it\)"):
        verify_check_batch(tiny_purifier, check_file)


def test_a_file_that_is_no_check_batch_is_named(tiny_purifier: DVAEPurify, check_file: Path) -> None:
    batch = load_file(check_file)
    save_file({"images": batch["images"], "labels": batch["labels"]}, check_file)
    with pytest.raises(ValueError, match=r"a check batch holds \['images', 'labels', 'purified'\], found"):
        verify_check_batch(tiny_purifier, check_file)
    save_file({**batch, "purified": batch["purified"][:4]}, check_file)
    with pytest.raises(ValueError, match=r"purified has shape \(4, 1, 16, 16\), not \(8, 1, 16, 16\)"):
        verify_check_batch(tiny_purifier, check_file)

