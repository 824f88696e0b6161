"""The shortcut check on real digits: clean sets pass, poisoned sets are flagged, bad input is named."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from dvae_transform import DVAEPurify, check_shortcut
from dvae_transform.cli import main
from dvae_transform.evaluation.attacks import classwise_noise, lsp
from dvae_transform.evaluation.mnist import MNIST_ATTACK_SETTINGS, load_mnist32
from dvae_transform.shortcut import (
    CANNOT_TELL,
    MIN_PER_CLASS,
    NO_SHORTCUT,
    SHORTCUT,
    ShortcutReport,
    purification_failed,
)

TRAIN = 2000


@pytest.fixture(scope="module")
def digits():
    data = load_mnist32()
    return data.train_images[:TRAIN], data.train_labels[:TRAIN], data.test_images, data.test_labels


def test_clean_digits_show_no_shortcut(digits):
    images, labels, *_ = digits
    report = check_shortcut(images, labels)
    assert report.verdict == NO_SHORTCUT and not report.found
    assert report.statistic < report.threshold
    assert report.heldout_accuracy > 0.8  # the probe does learn the digits


def test_classwise_noise_is_flagged_without_a_clean_set(digits):
    images, labels, *_ = digits
    poisoned = classwise_noise(images, labels, seed=0, **MNIST_ATTACK_SETTINGS["classwise_noise"])
    report = check_shortcut((poisoned, labels))
    assert report.verdict == SHORTCUT and report.found
    assert report.statistic > report.threshold and report.few_shot_share == report.statistic
    assert "shortcut" in str(report)


def test_a_clean_set_turns_the_decision_into_the_transfer_gap(digits):
    images, labels, test_images, test_labels = digits
    poisoned = lsp(images, labels, seed=0, **MNIST_ATTACK_SETTINGS["lsp"])
    flagged = check_shortcut(poisoned, labels, clean=test_images, clean_labels=test_labels)
    passed = check_shortcut(images, labels, clean=(test_images, test_labels))
    assert flagged.verdict == SHORTCUT and flagged.statistic == flagged.transfer_gap > flagged.threshold
    assert flagged.clean_accuracy < flagged.heldout_accuracy
    assert passed.verdict == NO_SHORTCUT and passed.transfer_gap < passed.threshold


def test_the_same_seed_gives_the_same_report(digits):
    images, labels, *_ = digits
    first, second = (check_shortcut(images[:400], labels[:400], seed=3) for _ in range(2))
    assert first.to_dict() | {"seconds": 0} == second.to_dict() | {"seconds": 0}


def test_a_torch_dataset_is_read_like_a_pair(digits):
    images, labels, *_ = digits
    dataset = torch.utils.data.TensorDataset(images[:400], labels[:400])
    from_dataset, from_pair = check_shortcut(dataset), check_shortcut(images[:400], labels[:400])
    assert from_dataset.to_dict() | {"seconds": 0} == from_pair.to_dict() | {"seconds": 0}


def test_one_class_or_too_few_images_cannot_tell(digits):
    images, labels, *_ = digits
    one_class = check_shortcut(images[:50], torch.zeros(50, dtype=torch.long))
    assert one_class.verdict == CANNOT_TELL and "one class" in one_class.reason and one_class.statistic is None
    scarce = torch.arange(100) % 3
    scarce[:MIN_PER_CLASS - 1] = 9  # class 9: one image short
    report = check_shortcut(images[:100], scarce)
    assert report.verdict == CANNOT_TELL and "class 9" in report.reason


def test_unlabelled_data_is_an_error(digits):
    images, *_ = digits
    with pytest.raises((ValueError, TypeError), match="label"):
        check_shortcut(images[:100])


def test_a_clean_set_of_another_shape_is_an_error(digits):
    images, labels, *_ = digits
    with pytest.raises(ValueError, match="same kind"):
        check_shortcut(images[:100], labels[:100], clean=torch.rand(20, 3, 32, 32), clean_labels=labels[:20])


def test_cli_check_exit_status_says_the_verdict(digits, tmp_path, capsys):
    images, labels, *_ = digits
    poisoned = classwise_noise(images, labels, seed=0, **MNIST_ATTACK_SETTINGS["classwise_noise"])
    for name, batch, expected in (("clean", images, 0), ("poisoned", poisoned, 1), ("tiny", images[:12], 2)):
        path = tmp_path / f"{name}.npz"
        np.savez(path, images=(batch * 255).round().to(torch.uint8).numpy(), labels=labels[: len(batch)].numpy())
        assert main(["check", str(path)]) == expected, name
        assert str(path) in capsys.readouterr().out
    assert main(["check", str(tmp_path / "missing.npz")]) == 2
    assert "error" in capsys.readouterr().err


def test_a_purification_fails_when_its_output_is_flagged_or_cannot_be_cleared_after_a_flagged_input():
    def report(verdict, statistic=0.5):
        return ShortcutReport(verdict, statistic, 0.8, "reason")

    assert purification_failed({"input": report(SHORTCUT), "output": report(SHORTCUT)})
    assert purification_failed({"input": report(SHORTCUT), "output": report(CANNOT_TELL)})
    assert not purification_failed({"input": report(SHORTCUT), "output": report(NO_SHORTCUT)})
    assert not purification_failed({"input": report(NO_SHORTCUT), "output": report(CANNOT_TELL)})
    assert not purification_failed({"input": report(SHORTCUT), "output": report(CANNOT_TELL, None)})  # too few


def test_a_saved_fit_keeps_its_checks_in_training_json_and_the_model_card(digits, tmp_path):
    images, labels, *_ = digits
    purifier = DVAEPurify.fit((images[:400], labels[:400]), progress=False, epochs=1, width=4, latent_dim=4)
    purifier.save_pretrained(tmp_path / "fitted")
    record = json.loads((tmp_path / "fitted" / "training.json").read_text())
    assert set(record["checks"]) == {"input", "output"}
    assert record["checks"]["output"]["verdict"] == purifier.checks["output"].verdict
    assert "shortcut check of the output" in (tmp_path / "fitted" / "README.md").read_text()
