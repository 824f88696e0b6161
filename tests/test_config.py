"""Training recipes (``config.py``): the presets, overrides and the checks of every fit setting."""

from __future__ import annotations

import dataclasses

import pytest

from dvae_transform.config import PRESETS, SUBTRACTION_RULES, FitConfig, resolve_config
from dvae_transform.validation import InputTypeError


def test_a_preset_by_name_with_overrides() -> None:
    assert resolve_config("paper") == FitConfig() and resolve_config() == PRESETS["fast"]
    tuned = resolve_config("fast", epochs=2, lr=1e-3)
    assert (tuned.epochs, tuned.lr, tuned.width) == (2, 1e-3, PRESETS["fast"].width)
    assert PRESETS["fast"].epochs != 2  # the preset itself is left as it was


def test_a_given_config_takes_overrides_too() -> None:
    base = FitConfig(width=8, seed=3)
    assert resolve_config(base, seed=4) == FitConfig(width=8, seed=4) and base.seed == 3
    assert resolve_config(base) == base
    with pytest.raises(dataclasses.FrozenInstanceError):
        base.seed = 5  # type: ignore[misc]


def test_unknown_names_list_what_is_known() -> None:
    with pytest.raises(ValueError, match=r"unknown preset 'slow'; choose one of \['fast', 'paper'\]"):
        resolve_config("slow")
    with pytest.raises(InputTypeError, match=r"unknown fit setting\(s\) \['epoch', 'widht'\]; known settings: \[.*"
                                             r"'epochs'.*'width'.*\]"):
        resolve_config("fast", widht=8, epoch=3)


@pytest.mark.parametrize(("setting", "error", "message"), [
    ({"width": 0}, ValueError, "fit settings: width must be positive, got 0"),
    ({"batch_size": 2.0}, InputTypeError, r"fit settings: batch_size must be an int, got float"),
    ({"lr": 0.0}, ValueError, "fit settings: lr must be a positive finite number, got 0.0"),
    ({"grad_clip": float("nan")}, ValueError, "fit settings: grad_clip must be a positive finite number, got nan"),
    ({"kl_bounds": (1.0, 2.0, 3.0)}, ValueError, r"fit settings: kl_bounds needs one bound per stage, got \(1.0, 2"),
    ({"kl_bounds": (1.0, -3.0)}, ValueError, r"fit settings: kl_bounds \(stage 2\) must be a positive"),
    ({"kl_bounds": "1,3"}, InputTypeError, "fit settings: kl_bounds must be"),
    ({"warmup_fraction": 1.5}, ValueError, r"fit settings: warmup_fraction must be .*\[0, 1\], got 1.5"),
    ({"mixed_precision": "fp8"}, ValueError, "fit settings: mixed_precision must be 'bf16', 'fp16' or 'no', got 'fp8'"),
    ({"subtract": "both"}, ValueError, "fit settings: subtract must be 'effect' or 'raw', got 'both'"),
    ({"zero_init_perturbation": 1}, InputTypeError, "fit settings: zero_init_perturbation must be a bool, got int"),
    ({"seed": "0"}, InputTypeError, "fit settings: seed must be an int, got str"),
    ({"seed": True}, InputTypeError, r"fit settings: seed must be an int, got bool \(True\)"),
])
def test_every_setting_is_checked_and_named(setting, error, message) -> None:
    with pytest.raises(error, match=message):
        FitConfig(**setting)
    with pytest.raises(error, match=message):
        resolve_config("fast", **setting)


def test_embedding_target_is_checked_with_the_other_settings() -> None:
    with pytest.raises(ValueError, match="fit settings: embedding_target must be 'latent' or 'stem', got 'nowhere'"):
        FitConfig(embedding_target="nowhere")


def test_the_presets_and_the_limits_are_valid_settings() -> None:
    for config in PRESETS.values():
        assert FitConfig(**dataclasses.asdict(config)) == config
    for subtract in SUBTRACTION_RULES:
        assert FitConfig(subtract=subtract).subtract == subtract
    assert FitConfig(warmup_fraction=0, kl_bounds=[0.5, 2]).kl_bounds == [0.5, 2]  # a list, as read from JSON
    assert FitConfig(warmup_fraction=1, width=1, epochs=1, batch_size=1).warmup_fraction == 1
