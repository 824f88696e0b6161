"""The network: shapes, ranges, options and configuration checks."""

from __future__ import annotations

import pytest
import torch

from dvae_transform import DVAE


@pytest.mark.parametrize("channels, size", [(1, 16), (3, 32), (3, 12)])
def test_forward_shapes_and_ranges(channels: int, size: int) -> None:
    model = DVAE(in_channels=channels, image_size=size, num_classes=5, width=8, latent_dim=12)
    x = torch.rand(3, channels, size, size)
    out = model(x, torch.tensor([0, 2, 4]))
    assert out.reconstruction.shape == x.shape
    assert out.perturbation.shape == x.shape
    assert out.mu.shape == out.log_var.shape == (3, 12, size // 2, size // 2)
    assert 0.0 <= out.reconstruction.min() and out.reconstruction.max() <= 1.0
    assert out.perturbation.min() < 0.0  # no sigmoid on the perturbation branch


def test_eval_uses_latent_mean_and_train_samples() -> None:
    model = DVAE(in_channels=1, image_size=16, num_classes=2, width=8, latent_dim=8)
    x, y = torch.rand(2, 1, 16, 16), torch.tensor([0, 1])
    model.eval()
    assert torch.equal(model(x, y).reconstruction, model(x, y).reconstruction)
    first = model(x, y, sample=True, generator=torch.Generator().manual_seed(1)).reconstruction
    again = model(x, y, sample=True, generator=torch.Generator().manual_seed(1)).reconstruction
    other = model(x, y, sample=True, generator=torch.Generator().manual_seed(2)).reconstruction
    assert torch.equal(first, again)
    assert not torch.equal(first, other)


def test_class_embedding_changes_only_the_perturbation() -> None:
    model = DVAE(in_channels=1, image_size=16, num_classes=3, width=8, latent_dim=8).eval()
    x = torch.rand(1, 1, 16, 16)
    a, b = model(x, torch.tensor([0])), model(x, torch.tensor([2]))
    assert torch.equal(a.reconstruction, b.reconstruction)
    assert not torch.equal(a.perturbation, b.perturbation)
    assert torch.equal(model.reconstruct(x), a.reconstruction)


def test_stem_embedding_target_option() -> None:
    model = DVAE(in_channels=1, image_size=16, num_classes=3, width=8, latent_dim=8, embedding_target="stem").eval()
    out = model(torch.rand(2, 1, 16, 16), torch.tensor([0, 1]))
    assert out.perturbation.shape == (2, 1, 16, 16)


def test_no_classifier_head() -> None:
    model = DVAE(in_channels=3, image_size=32, num_classes=10)
    assert not any(isinstance(module, torch.nn.Linear) for module in model.modules())


@pytest.mark.parametrize(
    "kwargs, error, words",
    [
        ({"in_channels": 2}, ValueError, "in_channels must be 1 or 3"),
        ({"image_size": 15}, ValueError, "image_size must be even"),
        ({"num_classes": 0}, ValueError, "num_classes must be positive"),
        ({"width": 12.0}, TypeError, "width must be an int"),
        ({"embedding_target": "pixels"}, ValueError, "embedding_target"),
    ],
)
def test_bad_config_is_named(kwargs: dict, error: type, words: str) -> None:
    with pytest.raises(error, match=words):
        DVAE(**kwargs)


def test_save_load_round_trip_gives_identical_outputs(tmp_path) -> None:
    model = DVAE(in_channels=1, image_size=16, num_classes=3, width=8, latent_dim=8).eval()
    model.save_pretrained(tmp_path)
    assert (tmp_path / "model.safetensors").is_file() and (tmp_path / "config.json").is_file()
    loaded = DVAE.from_pretrained(tmp_path).eval()
    x, y = torch.rand(4, 1, 16, 16), torch.tensor([0, 1, 2, 0])
    for a, b in zip(model(x, y), loaded(x, y)):
        assert torch.equal(a, b)
    assert loaded.config == model.config
