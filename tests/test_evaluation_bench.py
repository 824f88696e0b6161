"""The benchmark end to end on tiny data: its runner, results file, report, figures and its bad-input errors."""

from __future__ import annotations

import json

import pytest
import torch
from safetensors.torch import load_file

from dvae_transform import DVAEPurify
from dvae_transform.evaluation import bench, report
from dvae_transform.evaluation.diagnostics import FIELDS
from dvae_transform.evaluation.victims import VICTIMS

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def _table_rows(report: str, title: str) -> dict[str, list[str]]:
    """The rows of the markdown table that follows the line starting with ``title``, keyed by first cell."""
    lines = report.split(title, 1)[1].splitlines()
    start = next(i for i, line in enumerate(lines) if line.startswith("|"))
    rows = {}
    for line in lines[start:]:
        if not line.startswith("|"):
            break
        cells = [cell.strip() for cell in line.strip("|").split("|")]
        rows[cells[0]] = cells[1:]
    return rows


def test_quick_bench_writes_results_report_diagnostics_figures_and_resumes(tmp_path, capsys):
    out, notes = tmp_path / "out", tmp_path / "B.md"
    notes.write_text("# Notes\n\nintro\n\n<!-- bench:start -->\nstale table\n<!-- bench:end -->\n\noutro\n")
    attacks, defenses = ["classwise_noise", "lsp"], ["none", "jpeg", "dvae"]
    argv = ["--quick", "--attacks", *attacks, "--seeds", "0", "--out", str(out), "--benchmarks-file", str(notes)]

    assert bench.main([*argv, "--defenses", *defenses]) == 0

    results = json.loads((out / "results.json").read_text())
    rows = ["clean", *attacks]
    assert set(results["cells"]) == {f"{a}/{d}/0" for a in rows for d in defenses}
    assert all(0.0 <= cell["accuracy"] <= 1.0 for cell in results["cells"].values())
    assert results["runs"][-1]["computed"] == len(rows) * len(defenses)
    assert results["settings"]["data"]["name"] == "mnist" and results["settings"]["victim"]["name"] == "small"
    assert results["settings"]["attack_settings"]["lsp"] == {"l2": 1.6, "samplewise": False}  # MNIST's settings
    diagnostics = {key: cell.get("diagnostics") for key, cell in results["cells"].items()}
    assert {key for key, value in diagnostics.items() if value is not None} == {f"{a}/dvae/0" for a in rows}
    assert set(diagnostics["lsp/dvae/0"]) == set(FIELDS) and -1 <= diagnostics["lsp/dvae/0"]["cosine"] <= 1
    assert diagnostics["clean/dvae/0"]["cosine"] is None  # no poison, nothing to estimate
    markdown = (out / "results.md").read_text()
    assert markdown.startswith("## Benchmark: mnist, victim `small`")
    assert f"Victim: {VICTIMS['small'].describe(1)}" in markdown  # the recipe is data, not a docstring
    assert "64 train / 64 test images (seed-0 subset of 4000 / 1000)" in markdown
    assert "Cells computed on: cpu, 1 run." in markdown
    table = _table_rows(markdown, "Clean-test accuracy")
    assert table["attack"] == defenses
    assert set(table) == {"attack", "---", *rows, "**mean of the medians over attacks**"}
    for row in rows:
        assert all(0.0 <= float(value) <= 1.0 for value in table[row])
    assert _table_rows(markdown, "Defense wall time")["attack"] == defenses
    diagnostics_table = _table_rows(markdown, "Stage-1 diagnostics")
    assert set(diagnostics_table) == {"attack", "---", *rows} and diagnostics_table["lsp"][0] == "dvae"
    assert diagnostics_table["clean"][1] == "–" and float(diagnostics_table["lsp"][1]) == pytest.approx(
        diagnostics["lsp/dvae/0"]["cosine"], abs=5e-4)
    checks = {key: cell["check"] for key, cell in results["cells"].items()}
    assert all(set(check) == {"intrinsic", "clean"} for check in checks.values())
    # 64 images of 10 classes are too few for the check: it says so instead of passing them
    assert all(check[mode]["verdict"] == "cannot tell" and "per class" in check[mode]["reason"]
               for check in checks.values() for mode in check)
    checks_table = _table_rows(markdown, "Shortcut check")
    assert set(checks_table) == {"attack", "---", *rows} and checks_table["lsp"][0] in defenses
    for figure in ("accuracy.png", "samples.png"):
        assert (out / figure).read_bytes().startswith(PNG_MAGIC)
    text = notes.read_text()
    assert "stale table" not in text and text.startswith("# Notes\n\nintro") and text.endswith("outro\n")
    assert text.count(report.START_MARKER) == 1 and "--defenses none jpeg dvae" in text

    # Resuming with one more defense computes only the new column and keeps the finished cells as they were.
    assert bench.main([*argv, "--defenses", *defenses, "bitdepth", "--resume"]) == 0
    resumed = json.loads((out / "results.json").read_text())
    assert resumed["runs"][-1]["computed"] == len(rows)
    assert {key: resumed["cells"][key] for key in results["cells"]} == results["cells"]
    assert _table_rows((out / "results.md").read_text(), "Clean-test accuracy")["attack"] == [*defenses, "bitdepth"]
    text = notes.read_text()
    assert text.count(report.START_MARKER) == 1 and text.count(report.END_MARKER) == 1 and "bitdepth" in text

    assert bench.main([*argv, "--defenses", "none", "--resume", "--epochs", "3"]) == 2
    error = capsys.readouterr().err.strip()
    assert "\n" not in error and "other settings (fit.epochs: 1 there, 3 now)" in error


def test_warm_start_and_zero_shot_defenses_use_a_saved_purifier(tmp_path, monkeypatch):
    generator = torch.Generator().manual_seed(0)
    images, labels = torch.rand(20, 1, 32, 32, generator=generator), torch.arange(20) % 10
    start = DVAEPurify.fit((images, labels), 10, epochs=1, width=8, latent_dim=8, batch_size=32, progress=False)
    start.save_pretrained(tmp_path / "start")
    monkeypatch.chdir(tmp_path)
    argv = ["--quick", "--attacks", "lsp", "--defenses", "dvae_warm", "dvae_zero_shot", "--seeds", "0", "--no-write",
            "--warm-start", str(tmp_path / "start"), "--out", str(tmp_path / "out")]

    assert bench.main(argv) == 0

    cells = json.loads((tmp_path / "out" / "results.json").read_text())["cells"]
    defenses = ("dvae_warm", "dvae_zero_shot")
    assert set(cells) == {f"{row}/{defense}/0" for row in ("clean", "lsp") for defense in defenses}
    shown = load_file(str(tmp_path / "out" / "samples.safetensors"))
    clean = shown["clean/clean"]
    expected = start.purify(clean, torch.arange(len(clean)))  # the sampled digits are 0, 1, 2, 3 in order
    assert torch.allclose(shown["clean/dvae_zero_shot"], expected, atol=1e-6)
    assert not (tmp_path / "BENCHMARKS.md").exists()


@pytest.mark.parametrize("defense", ["dvae_warm", "dvae_zero_shot"])
def test_weight_based_defenses_need_a_warm_start(tmp_path, defense, capsys):
    assert bench.main(["--quick", "--defenses", defense, "--out", str(tmp_path)]) == 2
    assert f"the {defense} defense needs --warm-start PATH" in capsys.readouterr().err
