"""``dvae-purify demo`` end to end on the embedded MNIST digits (one epoch per stage)."""

from __future__ import annotations

import json

import pytest
from PIL import Image

from dvae_transform.cli import main


@pytest.mark.slow
def test_demo_runs_and_reports(tmp_path, capsys) -> None:
    out, report = tmp_path / "demo", tmp_path / "BENCHMARKS.md"
    assert main(["demo", "--epochs", "1", "--out", str(out), "--no-progress", "--benchmarks-file", str(report)]) == 0
    summary = json.loads((out / "demo.json").read_text())
    accuracy = summary["accuracy"]
    assert set(accuracy) == {"clean", "poisoned", "purified"}
    assert accuracy["clean"] > 0.9 and accuracy["poisoned"] < accuracy["clean"] - 0.2  # the poison bites
    assert accuracy["purified"] > accuracy["poisoned"]
    assert Image.open(out / "grid.png").size[0] > 10 * 32
    text = report.read_text()
    assert text.count("<!-- demo:start -->") == 1 and "dvae-purify demo --epochs 1" in text
    assert "clean test accuracy" in capsys.readouterr().out
