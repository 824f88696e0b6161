"""The benchmark's figures (dvae_transform.evaluation.figures): accuracy bars and the sample grid, as PNG files."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest
import torch
from PIL import Image

from dvae_transform.evaluation.figures import accuracy_bars, sample_grid


def _summary(attacks: int) -> dict[str, dict[str, tuple[float, float | None]]]:
    return {f"attack{index}": {"none": (0.2, 0.05), "dvae": (0.8, None)} for index in range(attacks)}


def _size(path: Path) -> tuple[int, int]:
    with Image.open(path) as image:
        assert image.format == "PNG"
        return image.size


def test_accuracy_bars_draw_one_panel_per_attack_three_to_a_row(tmp_path: Path) -> None:
    sizes = {}
    for attacks in (1, 4):
        path = accuracy_bars(_summary(attacks), str(tmp_path / f"{attacks}.png"), ceiling=0.9, title="a title")
        assert path == tmp_path / f"{attacks}.png"
        sizes[attacks] = _size(path)
    (width, height), (grid_width, grid_height) = sizes[1], sizes[4]
    assert grid_width == pytest.approx(3 * width, abs=3) and grid_height == pytest.approx(2 * height, abs=3)
    assert "matplotlib.pyplot" not in sys.modules  # the figures never touch pyplot's global state


def test_accuracy_bars_need_an_attack(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="the summary holds no attack"):
        accuracy_bars({}, tmp_path / "empty.png")
    assert not (tmp_path / "empty.png").exists()


def test_the_sample_grid_has_a_cell_per_row_and_column_and_leaves_missing_ones_blank(tmp_path: Path) -> None:
    strip = torch.rand(4, 1, 8, 8, generator=torch.Generator().manual_seed(0))
    samples = {("clean", "clean"): strip, ("lsp", "poisoned"): strip, ("lsp", "dvae"): strip * 2}  # clamped to 1
    full = _size(sample_grid(samples, ["clean", "lsp"], ["clean", "poisoned", "dvae"], tmp_path / "grid.png"))
    one_row = _size(sample_grid(samples, ["lsp"], ["clean", "poisoned", "dvae"], tmp_path / "row.png"))
    assert full[0] == one_row[0] and full[1] > one_row[1]
    assert _size(sample_grid(samples, ["clean", "lsp"], ["clean", "poisoned", "dvae"], tmp_path / "titled.png",
                             title="samples"))[1] > full[1]


@pytest.mark.parametrize(
    ("samples", "rows", "columns", "words"),
    [
        ({}, ["a"], ["b"], "no samples to show"),
        ({("a", "b"): torch.rand(1, 1, 4, 4)}, [], ["b"], "needs at least one row and one column"),
        ({("a", "b"): torch.rand(1, 1, 4, 4)}, ["a"], [], "needs at least one row and one column"),
    ],
)
def test_an_empty_sample_grid_is_refused(tmp_path: Path, samples: dict, rows: list, columns: list, words: str) -> None:
    with pytest.raises(ValueError, match=words):
        sample_grid(samples, rows, columns, tmp_path / "grid.png")
