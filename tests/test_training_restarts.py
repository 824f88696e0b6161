"""A fit that checks its output and fits again from another seed (dvae_transform.training.restarts)."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from accelerate import Accelerator

from dvae_transform import DVAEPurify
from dvae_transform.config import resolve_config
from dvae_transform.evaluation.mnist import load_mnist32
from dvae_transform.shortcut import check_sample
from dvae_transform.training.restarts import RESTART_SEED_STRIDE, Attempts, restart_folder
from dvae_transform.training.sets import TensorSet

TINY = resolve_config("fast", epochs=1, width=8, latent_dim=8, batch_size=32, seed=3)


@pytest.fixture(scope="module")
def digits():
    data = load_mnist32()
    return data.train_images[:400], data.train_labels[:400], data.test_images, data.test_labels


def _attempts(tiny_data, resume_dir: Path | None = None) -> Attempts:
    return Attempts(TensorSet(*tiny_data), TINY, Accelerator(cpu=True), num_classes=None, init=None,
                    resume_dir=resume_dir, progress=False, compile=False)


def test_fit_checks_its_output_and_refits_when_a_shortcut_is_left(digits):
    images, labels, test_images, test_labels = digits
    # A class-wise brightness offset is image content to a VAE: every reconstruction keeps it.
    poisoned = images[:400] * 0.5 + 0.5 * labels[:400, None, None, None] / 9
    small = {"epochs": 2, "width": 8, "latent_dim": 16, "lr": 2e-2}
    with pytest.warns(RuntimeWarning, match="shortcut"):
        purifier = DVAEPurify.fit((poisoned, labels[:400]), progress=False, restarts=1,
                                  validation=(test_images, test_labels), **small)
    assert purifier.attempts == 2
    assert purifier.checks["input"].found and purifier.checks["output"].found
    assert purifier.checks["output"].clean_accuracy is not None
    unchecked = DVAEPurify.fit((poisoned, labels[:400]), progress=False, check=False, **small)
    assert unchecked.attempts == 1 and unchecked.checks == {}


def test_the_first_attempt_resumes_in_the_folder_itself_and_each_restart_in_its_own(tmp_path: Path) -> None:
    assert restart_folder(None, 0) is None and restart_folder(None, 2) is None
    assert restart_folder(tmp_path, 0) == tmp_path
    assert restart_folder(str(tmp_path), 2) == tmp_path / "restart-2"


def test_attempt_k_fits_at_its_own_seed_into_its_own_folder(tiny_data, tmp_path: Path) -> None:
    attempts = _attempts(tiny_data, tmp_path)
    first, second = attempts.fit(DVAEPurify, 0), attempts.fit(DVAEPurify, 1)
    assert first.fit_config == TINY and second.fit_config == TINY.replace(seed=3 + RESTART_SEED_STRIDE)
    assert first.checks == {} and [record["stage"] for record in second.history] == [1, 2]
    assert (tmp_path / "fit.json").is_file() and (tmp_path / "restart-1" / "fit.json").is_file()
    images, labels = tiny_data
    assert not torch.equal(first.purify(images, labels), second.purify(images, labels))


def test_without_the_check_one_attempt_is_run(tiny_data) -> None:
    purifier = _attempts(tiny_data).run(DVAEPurify, check=False, validation=None, restarts=3)
    assert purifier.attempts == 1 and purifier.checks == {} and purifier.fit_config == TINY


def test_restarts_must_be_a_count(tiny_data) -> None:
    with pytest.raises(ValueError, match="restarts"):
        _attempts(tiny_data).run(DVAEPurify, check=False, validation=None, restarts=-1)


def test_the_check_reads_its_sample_from_the_training_set(tiny_data) -> None:
    images, labels = tiny_data
    sample_images, sample_labels = _attempts(tiny_data).check_sample()
    chosen = check_sample(labels)
    assert torch.equal(sample_images, images[chosen]) and torch.equal(sample_labels, labels[chosen])
