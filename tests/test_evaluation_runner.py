"""The benchmark's cells (dvae_transform.evaluation.runner): settings, the device, and the cells on tiny data."""

from __future__ import annotations

import dataclasses
import json
import os
from pathlib import Path

import pytest
import torch

from dvae_transform.config import resolve_config
from dvae_transform.evaluation.attacks import make_poison
from dvae_transform.evaluation.datasets import BenchData
from dvae_transform.evaluation.defenses import DefenseContext
from dvae_transform.evaluation.mnist import MNIST_ATTACK_SETTINGS
from dvae_transform.evaluation.results import RESULTS_FILE, SAMPLES_FILE, Results, Samples
from dvae_transform.evaluation.runner import (
    CLEAN,
    QUICK_FIT,
    attack_settings,
    fit_overrides,
    on_device,
    run_cells,
    run_settings,
)
from dvae_transform.evaluation.victims import VICTIMS

DEVICE_VARIABLE = "ACCELERATE_TORCH_DEVICE"


def _data(name: str = "toy") -> BenchData:
    generator = torch.Generator().manual_seed(0)
    train, test = torch.rand(24, 1, 16, 16, generator=generator), torch.rand(8, 1, 16, 16, generator=generator)
    return BenchData(train, torch.arange(24) % 4, test, torch.arange(8) % 4, 4, name, "toy images", tuple("abcd"))


def test_mnist_has_its_own_attack_settings_and_other_data_the_defaults() -> None:
    settings = attack_settings("mnist")
    assert settings == MNIST_ATTACK_SETTINGS and attack_settings("cifar10") == {}
    settings.pop("lsp")
    assert "lsp" in MNIST_ATTACK_SETTINGS  # every call gets its own copy


def test_fit_overrides_are_the_quick_settings_and_the_epochs_given() -> None:
    assert fit_overrides(False, None) == {} and fit_overrides(False, 3) == {"epochs": 3}
    assert fit_overrides(True, None) == QUICK_FIT and fit_overrides(True, 5) == {**QUICK_FIT, "epochs": 5}
    fit_overrides(True, 5)
    assert QUICK_FIT["epochs"] == 1


def test_the_run_settings_are_plain_json_of_everything_a_cell_depends_on_but_its_seed(tmp_path: Path) -> None:
    data = _data("mnist")
    settings = run_settings("fast", {"epochs": 2}, data, VICTIMS["small"], 3, warm_start=tmp_path / "." / "start")
    assert json.loads(json.dumps(settings)) == settings
    fit = dataclasses.asdict(resolve_config("fast", epochs=2))
    fit.pop("seed")
    assert settings["fit"] == json.loads(json.dumps(fit))
    assert settings["preset"] == "fast" and settings["victim_epochs"] == 3
    assert settings["data"] == {"name": "mnist", "num_train": 24, "num_test": 8, "image_shape": [1, 16, 16],
                                "num_classes": 4, "subset_seed": 0}
    assert settings["victim"]["name"] == "small" and settings["attack_settings"]["lsp"]["samplewise"] is False
    assert settings["warm_start"] == str((tmp_path / "start").resolve())
    assert run_settings("fast", {}, data, VICTIMS["small"], 3, warm_start=None)["warm_start"] is None


def test_on_device_sets_accelerates_device_for_its_block_only(monkeypatch) -> None:
    monkeypatch.delenv(DEVICE_VARIABLE, raising=False)
    with on_device("cpu") as device:
        assert device == torch.device("cpu") and os.environ[DEVICE_VARIABLE] == "cpu"
    assert DEVICE_VARIABLE not in os.environ
    monkeypatch.setenv(DEVICE_VARIABLE, "meta")
    with pytest.raises(RuntimeError, match="inside"), on_device(torch.device("cpu")):
        assert os.environ[DEVICE_VARIABLE] == "cpu"
        raise RuntimeError("inside")
    assert os.environ[DEVICE_VARIABLE] == "meta"


@pytest.mark.skipif(torch.cuda.is_available(), reason="needs a machine without CUDA")
def test_a_cuda_device_without_cuda_is_refused() -> None:
    with pytest.raises(ValueError, match="--device cuda:0: no CUDA device is available"), on_device("cuda:0"):
        pass


def test_run_cells_computes_each_missing_cell_once_and_keeps_sample_images(tmp_path: Path, capsys) -> None:
    data = _data()
    settings = run_settings("fast", {}, data, VICTIMS["small"], 1, warm_start=None)
    results = Results(tmp_path / RESULTS_FILE, settings, resume=False)
    results.start_run("test", "cpu")
    samples = Samples(tmp_path / SAMPLES_FILE, resume=False)
    arguments = {"victim": VICTIMS["small"], "device": torch.device("cpu")}
    run_cells([CLEAN, "lsp"], ["none"], [0], data, results, samples, DefenseContext(4), **arguments)

    assert set(results.data["cells"]) == {"clean/none/0", "lsp/none/0"}
    cell = results.cell("lsp", "none", 0)
    assert 0 <= cell["accuracy"] <= 1 and set(cell["check"]) == {"intrinsic", "clean"} and "diagnostics" not in cell
    assert set(results.data["poison_seconds"]) == {"clean/0", "lsp/0"}
    shown = samples.grid()
    assert set(shown) == {("clean", "clean"), ("lsp", "poisoned")}  # the "none" defense shows nothing new
    first = torch.stack([(data.train_labels == label).nonzero()[0, 0] for label in range(4)])
    assert torch.equal(shown["clean", "clean"], data.train_images[first])
    assert torch.equal(shown["lsp", "poisoned"], make_poison("lsp", data.train_images, data.train_labels)[first])
    assert "bench: 2 cell(s) to compute, 0 done" in capsys.readouterr().out

    run_cells([CLEAN, "lsp"], ["none"], [0], data, results, samples, DefenseContext(4), **arguments)
    assert "bench: 0 cell(s) to compute, 2 done" in capsys.readouterr().out
    assert results.data["runs"][-1]["computed"] == 2
