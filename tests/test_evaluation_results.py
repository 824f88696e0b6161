"""The benchmark's results store (dvae_transform.evaluation.results): results.json and the sample images."""

from __future__ import annotations

import json
from datetime import datetime
from pathlib import Path

import pytest
import torch

from dvae_transform.evaluation.results import RESULTS_FILE, SAMPLES_FILE, Results, Samples, differences, now

SETTINGS = {"preset": "fast", "fit": {"epochs": 1, "width": 8}, "victim_epochs": 1}


def test_differences_name_every_changed_nested_key() -> None:
    new = {"preset": "fast", "fit": {"epochs": 3, "width": 8, "lr": 0.1}}
    assert differences(SETTINGS, new) == ["fit.epochs: 1 there, 3 now", "fit.lr: None there, 0.1 now",
                                          "victim_epochs: 1 there, None now"]
    assert differences(SETTINGS, json.loads(json.dumps(SETTINGS))) == []


def test_now_is_local_time_to_the_second() -> None:
    stamp = datetime.fromisoformat(now())
    assert stamp.tzinfo is not None and stamp.microsecond == 0


def _results(folder: Path, *, resume: bool = False, settings: dict = SETTINGS) -> Results:
    folder.mkdir(exist_ok=True)
    return Results(folder / RESULTS_FILE, settings, resume=resume)


def test_every_finished_cell_is_on_disk_and_a_resumed_run_keeps_it(tmp_path: Path) -> None:
    results = _results(tmp_path)
    results.start_run("bench --quick", "cpu")
    results.add_poison_time("lsp", 0, 1.5)
    results.add("lsp", "dvae", 0, accuracy=0.5)
    stored = json.loads((tmp_path / RESULTS_FILE).read_text())
    assert stored["settings"] == SETTINGS and stored["poison_seconds"] == {"lsp/0": 1.5}
    assert stored["cells"]["lsp/dvae/0"]["accuracy"] == 0.5 and stored["runs"][0]["computed"] == 1
    assert stored["runs"][0]["command"] == "bench --quick" and stored["runs"][0]["device"] == "cpu"

    resumed = _results(tmp_path, resume=True)
    assert resumed.cell("lsp", "dvae", 0) == stored["cells"]["lsp/dvae/0"] and resumed.cell("lsp", "none", 0) is None
    resumed.start_run("bench --quick --resume", "cpu")
    assert [run["computed"] for run in resumed.data["runs"]] == [1, 0]
    assert _results(tmp_path).cell("lsp", "dvae", 0) is None  # without resume a run starts afresh


def test_a_resume_with_other_settings_is_refused_naming_them(tmp_path: Path) -> None:
    _results(tmp_path).save()
    with pytest.raises(ValueError, match=r"--resume: .* other settings \(fit.epochs: 1 there, 2 now\); use the same"):
        _results(tmp_path, resume=True, settings={**SETTINGS, "fit": {"epochs": 2, "width": 8}})


def test_merge_takes_the_cells_and_runs_of_a_run_with_the_same_settings(tmp_path: Path) -> None:
    part = _results(tmp_path / "part")
    part.start_run("part", "cpu")
    part.add_poison_time("ops", 1, 2.0)
    part.add("ops", "none", 1, accuracy=0.25)
    merged = _results(tmp_path / "all")
    merged.start_run("all", "cuda")
    merged.merge(tmp_path / "part")
    assert merged.cell("ops", "none", 1)["accuracy"] == 0.25 and merged.data["poison_seconds"] == {"ops/1": 2.0}
    assert [run["command"] for run in merged.data["runs"]] == ["all", "part"]
    assert json.loads((tmp_path / "all" / RESULTS_FILE).read_text()) == merged.data
    other = _results(tmp_path / "other", settings={**SETTINGS, "preset": "paper"})
    with pytest.raises(ValueError, match=r"--merge: .* \(preset: 'fast' there, 'paper' now\); merge runs of one grid"):
        other.merge(tmp_path / "part")


def test_samples_are_kept_as_float_images_by_row_and_column(tmp_path: Path) -> None:
    samples = Samples(tmp_path / SAMPLES_FILE, resume=False)
    images = torch.arange(8, dtype=torch.uint8).view(2, 1, 2, 2)
    samples.add("lsp", "dvae/warm", images)
    grid = Samples(tmp_path / SAMPLES_FILE, resume=True).grid()
    assert list(grid) == [("lsp", "dvae/warm")] and torch.equal(grid["lsp", "dvae/warm"], images.float())
    assert Samples(tmp_path / SAMPLES_FILE, resume=False).grid() == {}


def test_merged_samples_add_to_the_kept_ones(tmp_path: Path) -> None:
    (tmp_path / "part").mkdir()
    Samples(tmp_path / "part" / SAMPLES_FILE, resume=False).add("ops", "poisoned", torch.ones(1, 1, 2, 2))
    samples = Samples(tmp_path / SAMPLES_FILE, resume=False)
    samples.add("clean", "clean", torch.zeros(1, 1, 2, 2))
    samples.merge(tmp_path / "part")
    samples.merge(tmp_path / "nothing-here")  # a run without samples adds none
    assert sorted(Samples(tmp_path / SAMPLES_FILE, resume=True).grid()) == [("clean", "clean"), ("ops", "poisoned")]
