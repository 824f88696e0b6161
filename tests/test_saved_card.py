"""The model card of a saved purifier (dvae_transform.saved.card), rendered without saving anything."""

from __future__ import annotations

import dataclasses

import pytest
from huggingface_hub import ModelCardData

from dvae_transform.config import resolve_config
from dvae_transform.saved.card import AttackResult, render_model_card, training_summary
from dvae_transform.saved.layout import FORMAT_VERSION
from dvae_transform.shortcut import ShortcutReport

BASE = ModelCardData(library_name="dvae-transform", tags=["unlearnable-examples"], license="mit")
SHAPE = {"in_channels": 3, "image_size": 32, "num_classes": 10}


def test_a_card_without_options_says_nothing_was_recorded() -> None:
    card = render_model_card(BASE, **SHAPE)
    assert card.data.library_name == "dvae-transform" and card.data.tags == ["unlearnable-examples"]
    assert not {"datasets", "eval_results", "poisoning_attack", "evaluated_attacks"} & set(card.data.to_dict())
    assert "# dvae-purifier" in card.text and "3x32x32 images of 10 classes" in card.text
    assert 'from_pretrained("path/to/this/folder")' in card.text and f"({FORMAT_VERSION})" in card.text
    assert "No training details were recorded" in card.text and "No evaluation was recorded" in card.text


def test_results_without_a_dataset_are_shown_but_give_no_model_index() -> None:
    results = [AttackResult("lsp", 0.1, 0.9)]
    card = render_model_card(BASE, **SHAPE, repo_id="org/purifier", results=results, clean_accuracy=0.95)
    assert card.data.evaluated_attacks == ["lsp"] and card.data.eval_results is None and card.data.model_name is None
    assert "# purifier" in card.text and "| `lsp` | 0.1000 | 0.9000 |" in card.text
    assert "(trained on clean images: 0.9500)" in card.text
    indexed = render_model_card(BASE, **SHAPE, repo_id="org/purifier", results=results, datasets="uoft-cs/cifar10")
    assert indexed.data.datasets == ["uoft-cs/cifar10"] and indexed.data.model_name == "purifier"
    [metric] = indexed.data.eval_results
    assert (metric.dataset_type, metric.dataset_name, metric.metric_value) == ("uoft-cs/cifar10",) * 2 + (0.9,)
    assert "(lsp poison)" in metric.metric_name


def test_a_mix_of_attacks_is_listed_in_order() -> None:
    card = render_model_card(BASE, **SHAPE, attack=["lsp", "ops"], training_data="CIFAR-10 train split")
    assert card.data.poisoning_attack == ["lsp", "ops"]
    assert "- Training data: CIFAR-10 train split" in card.text
    assert "a mix of `lsp`, `ops`" in card.text and "No training details" not in card.text


@pytest.mark.parametrize(
    ("fields", "error", "words"),
    [
        (("", 0.1, 0.2), ValueError, "must be an attack name, got ''"),
        ((3, 0.1, 0.2), TypeError, "AttackResult attack must be a str"),
        (("lsp", -0.1, 0.2), ValueError, r"AttackResult poisoned must be an accuracy in \[0, 1\]"),
        (("lsp", 0.1, "0.2"), TypeError, "AttackResult purified"),
    ],
)
def test_bad_attack_results_are_named(fields: tuple, error: type[Exception], words: str) -> None:
    with pytest.raises(error, match=words):
        AttackResult(*fields)


def test_a_bad_clean_accuracy_is_named() -> None:
    with pytest.raises(ValueError, match=r"clean_accuracy must be an accuracy in \[0, 1\]"):
        render_model_card(BASE, **SHAPE, clean_accuracy=97.0)


def test_the_training_summary_holds_the_settings_the_checks_and_each_stages_last_epoch() -> None:
    config = resolve_config("fast", epochs=2)
    history = [{"stage": stage, "epoch": epoch, "loss": 0.5 / epoch, "kl": 3.0, "psnr": 20.0 + epoch}
               for stage in (1, 2) for epoch in (1, 2)]
    report = ShortcutReport("no shortcut", 0.3, 0.8, "a reason")
    summary = training_summary(config, history, {"output": report})
    assert {key: summary[key] for key in dataclasses.asdict(config)} == dataclasses.asdict(config)
    assert summary["shortcut check of the output"] == str(report)
    assert summary["stage 1 final epoch"] == "2: loss 0.2500, kl 3.00, psnr 22.00 dB"
    assert set(summary) == {*dataclasses.asdict(config), "shortcut check of the output", "stage 1 final epoch",
                            "stage 2 final epoch"}
    assert training_summary(None, []) == {}
