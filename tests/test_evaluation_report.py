"""The benchmark's report (dvae_transform.evaluation.report): summaries, markdown tables and the block in a file."""

from __future__ import annotations

import statistics
from pathlib import Path

import pytest
import torch

from dvae_transform.evaluation import report
from dvae_transform.evaluation.datasets import BenchData
from dvae_transform.evaluation.diagnostics import FIELDS
from dvae_transform.evaluation.results import RESULTS_FILE, Results
from dvae_transform.evaluation.runner import run_settings
from dvae_transform.evaluation.victims import VICTIMS

ACCURACY = {("clean", "none"): [0.9, 0.7, 0.8], ("lsp", "none"): [0.2, 0.1, 0.3], ("lsp", "dvae"): [0.6, 0.8],
            ("ops", "none"): [0.4]}  # ops/dvae: not computed
SEEDS = [0, 1, 2]


@pytest.fixture
def results(tmp_path: Path) -> Results:
    """A results file of a 3-seed grid whose cells hold only the fields the report reads."""
    images = torch.zeros(4, 1, 8, 8)
    data = BenchData(images, torch.arange(4), images, torch.arange(4), 4, "toy", "4 toy images", ("a", "b", "c", "d"))
    settings = run_settings("fast", {}, data, VICTIMS["small"], 2, warm_start=None)
    results = Results(tmp_path / RESULTS_FILE, settings, resume=False)
    results.start_run("bench", "cpu")
    for (attack, defense), values in ACCURACY.items():
        for seed, value in zip(SEEDS, values):
            record = {"accuracy": value, "defense_seconds": 10.0 * (seed + 1)}
            if defense == "dvae":
                record["diagnostics"] = {field: 0.5 if field == "cosine" else None for field in FIELDS}
                check = {"verdict": "shortcut" if seed == 0 else "no shortcut", "statistic": 0.1 * (seed + 1)}
                record["check"] = {"intrinsic": check, "clean": check}
            results.add(attack, defense, seed, **record)
    return results


def test_write_block_creates_appends_and_rejects_broken_markers(tmp_path):
    path = tmp_path / "B.md"
    report.write_block(path, "first")
    assert path.read_text().count("first") == 1
    path.write_text("# Kept\n")
    report.write_block(path, "second")
    assert path.read_text() == f"# Kept\n\n{report.START_MARKER}\nsecond\n{report.END_MARKER}\n"
    path.write_text(f"{report.START_MARKER}\nno end\n")
    with pytest.raises(ValueError, match="markers"):
        report.write_block(path, "third")


def test_summaries_hold_the_median_and_the_worst_seed_of_the_cells_there_are(results: Results) -> None:
    table = report.summarise(results, ["clean", "lsp", "ops"], ["none", "dvae"], SEEDS, "accuracy")
    assert table["clean"] == {"none": (0.8, 0.7)}
    assert table["lsp"] == {"none": (0.2, 0.1), "dvae": (statistics.median([0.6, 0.8]), 0.6)}
    assert table["ops"] == {"none": (0.4, None)}  # one seed: no worst seed to show
    assert report.summarise(results, ["lsp"], ["none"], [1], "defense_seconds") == {"lsp": {"none": (20.0, None)}}


def test_the_report_shows_each_table_with_a_mean_over_attacks_only_where_every_attack_has_the_cell(
        results: Results) -> None:
    text = report.render_report(results, ["clean", "lsp", "ops"], ["none", "dvae"], SEEDS, "bench --quick", "toy data")
    assert text.startswith("## Benchmark: toy, victim `small`") and "Command: `bench --quick`" in text
    assert "Data: toy data; seeds 0, 1, 2" in text and "Cells computed on: cpu, 1 run." in text
    assert "| clean | 0.800 (worst 0.700) | – |" in text
    assert "| lsp | 0.200 (worst 0.100) | 0.700 (worst 0.600) |" in text and "| ops | 0.400 | – |" in text
    mean = statistics.fmean([0.2, 0.4])  # the clean row is the ceiling, not an attack
    assert f"| **mean of the medians over attacks** | **{mean:.3f}** | – |" in text
    assert "| lsp | 20.0 | 15.0 |" in text  # wall time: medians only
    assert "| lsp | dvae | 1/2 (0.150) | 1/2 (0.150) | 0.700 |" in text  # the shortcut check of the dvae cells
    assert "| lsp | dvae | 0.500 | – |" in text  # diagnostics: the mean of the fields that were measured


def test_a_report_without_checks_or_diagnostics_leaves_their_tables_out(results: Results) -> None:
    text = report.render_report(results, ["lsp"], ["none"], [0], "bench", "toy data")
    assert "Shortcut check" not in text and "Stage-1 diagnostics" not in text
    assert "| lsp | 0.200 |" in text and "(median over seeds" in text and "worst" not in text


def test_named_blocks_live_side_by_side_and_a_new_file_gets_a_heading(tmp_path: Path) -> None:
    path = tmp_path / "B.md"
    report.write_block(path, "mnist table\n", name="bench-mnist")
    report.write_block(path, "cifar table", name="bench-cifar10")
    report.write_block(path, "new mnist table", name="bench-mnist")
    text = path.read_text()
    assert text.startswith("# Benchmarks\n") and "-->\nmnist table" not in text  # the old block is gone
    assert text.index("new mnist table") < text.index("cifar table")  # replaced where it was
    assert text.count("<!-- bench-mnist:start -->") == 1 and text.count("<!-- bench-cifar10:end -->") == 1


def test_two_blocks_of_one_name_are_refused(tmp_path: Path) -> None:
    path = tmp_path / "B.md"
    path.write_text(f"{report.START_MARKER}\na\n{report.END_MARKER}\n{report.START_MARKER}\nb\n{report.END_MARKER}\n")
    with pytest.raises(ValueError, match="found 2 / 2 markers"):
        report.write_block(path, "c")
    assert path.read_text().count("a\n") == 1  # the file is left as it was


def test_the_cpu_line_names_the_kernels_torch_uses_and_whether_they_were_forced(monkeypatch) -> None:
    monkeypatch.delenv("ATEN_CPU_CAPABILITY", raising=False)
    line = report.cpu_description()
    assert line.endswith(f"torch CPU kernels: {torch.backends.cpu.get_cpu_capability()}")
    assert any(words in line for words in ("AVX-512", "AVX2, no AVX-512", "no AVX2"))
    monkeypatch.setenv("ATEN_CPU_CAPABILITY", "default")
    assert report.cpu_description().endswith("(forced by ATEN_CPU_CAPABILITY=default)")
