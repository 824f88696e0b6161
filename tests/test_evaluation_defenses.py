"""The registry of defenses the benchmark compares."""

from __future__ import annotations

import pytest
import torch

from dvae_transform import DVAEPurify
from dvae_transform.evaluation.defenses import DEFENSES, NEEDS_WEIGHTS, DefenseContext, build_defense, describe

SETTINGS = {
    "preset": "fast", "fit": {"width": 8, "latent_dim": 8, "epochs": 1, "batch_size": 32, "lr": 0.005},
    "jpeg_quality": 10, "bitdepth_bits": 2, "warm_start": "/weights",
}


def test_every_defense_is_described_from_the_settings() -> None:
    lines = {name: describe(name, SETTINGS) for name in DEFENSES}
    assert all(line.startswith(f"{name} = ") for name, line in lines.items())
    assert lines["jpeg"] == "jpeg = JPEG quality 10" and "width 8, latent 8" in lines["dvae"]
    assert NEEDS_WEIGHTS == ("dvae_warm", "dvae_zero_shot")


def test_defenses_build_purifiers(tiny_purifier, tiny_data, tmp_path) -> None:
    images, labels = tiny_data
    tiny_purifier.save_pretrained(tmp_path / "weights")
    context = DefenseContext(4, {"epochs": 1, "width": 8, "latent_dim": 8, "progress": False}, tmp_path / "weights")
    for name in ("none", "jpeg", "bitdepth", "dvae_zero_shot"):
        purifier = build_defense(name, images, labels, 0, context)
        assert purifier.purify(images, labels).shape == images.shape
    saved = build_defense("dvae_zero_shot", images, labels, 0, context)
    assert isinstance(saved, DVAEPurify) and saved is context.saved_purifier()  # loaded once
    assert torch.equal(saved.purify(images, labels), tiny_purifier.purify(images, labels))
    with pytest.raises(ValueError, match="unknown defense 'magic'"):
        build_defense("magic", images, labels, 0, context)
    with pytest.raises(ValueError, match="needs saved weights"):
        DefenseContext(4).saved_purifier()
