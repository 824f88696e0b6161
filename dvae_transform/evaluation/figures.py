"""Figures of the benchmark: victim accuracy per attack and a grid of sample images.

matplotlib (in the ``bench`` extra) is imported only when a figure is drawn. Figures
are rendered with the Agg canvas directly, so pyplot's global state is never touched.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from pathlib import Path

import torch
from torchvision.utils import make_grid

Summary = Mapping[str, Mapping[str, tuple[float, float | None]]]


def _new_figure(width: float, height: float):
    try:
        from matplotlib.backends.backend_agg import FigureCanvasAgg
        from matplotlib.figure import Figure
    except ImportError as error:
        raise ImportError("the benchmark figures need matplotlib: pip install 'dvae-transform[bench]'") from error
    figure = Figure(figsize=(width, height), layout="constrained")
    FigureCanvasAgg(figure)
    return figure


def accuracy_bars(summary: Summary, path: str | Path, *, ceiling: float | None = None, title: str = "") -> Path:
    """One bar panel per attack: mean accuracy per defense, error bars for the spread over seeds.

    ``summary[attack][defense]`` is ``(mean, spread or None)``; ``ceiling`` (the clean
    accuracy without defense) is drawn as a dashed line in every panel; ``title`` heads the figure.
    """
    attacks = list(summary)
    if not attacks:
        raise ValueError("accuracy_bars: the summary holds no attack")
    columns = min(3, len(attacks))
    rows = math.ceil(len(attacks) / columns)
    figure = _new_figure(4.2 * columns, 3.2 * rows)
    axes = figure.subplots(rows, columns, squeeze=False).ravel()
    for index, (ax, attack) in enumerate(zip(axes, attacks)):
        defenses = list(summary[attack])
        means = [summary[attack][name][0] for name in defenses]
        spreads = [summary[attack][name][1] or 0.0 for name in defenses]
        bars = ax.bar(range(len(defenses)), means, yerr=spreads, capsize=3, color="tab:blue")
        ax.bar_label(bars, labels=[f"{value:.2f}" for value in means], fontsize=7, padding=2)
        if ceiling is not None:
            ax.axhline(ceiling, color="gray", linestyle="--", linewidth=1, label="clean data, no defense")
            if index == 0:
                ax.legend(loc="upper right", fontsize=7)
        ax.set_xticks(range(len(defenses)), defenses, rotation=30, ha="right", fontsize=8)
        ax.set_ylim(0.0, 1.08)
        ax.set_title(attack, fontsize=10)
        ax.set_ylabel("clean-test accuracy", fontsize=8)
    for ax in axes[len(attacks):]:
        ax.set_visible(False)
    if title:
        figure.suptitle(title, fontsize=11)
    path = Path(path)
    figure.savefig(path, dpi=110)
    return path


def sample_grid(
    samples: Mapping[tuple[str, str], torch.Tensor],
    rows: Sequence[str],
    columns: Sequence[str],
    path: str | Path,
    *,
    title: str = "",
) -> Path:
    """A grid of image strips: ``samples[(row, column)]`` is an NCHW batch in [0, 1]; missing cells stay blank.

    ``title`` heads the figure.
    """
    if not rows or not columns:
        raise ValueError("sample_grid: needs at least one row and one column")
    strips = {
        key: make_grid(batch.float().clamp(0, 1), nrow=batch.shape[0], padding=1, pad_value=1.0).permute(1, 2, 0)
        for key, batch in samples.items()
    }
    if not strips:
        raise ValueError("sample_grid: no samples to show")
    blank = torch.ones_like(next(iter(strips.values())))
    column_width = 1.9
    row_height = column_width * blank.shape[0] / blank.shape[1] + 0.15
    figure = _new_figure(column_width * len(columns), row_height * len(rows) + (0.6 if title else 0.3))
    axes = figure.subplots(len(rows), len(columns), squeeze=False)
    for i, row in enumerate(rows):
        for j, column in enumerate(columns):
            ax = axes[i][j]
            strip = strips.get((row, column))
            ax.imshow((blank if strip is None else strip).numpy(), vmin=0.0, vmax=1.0, interpolation="nearest")
            ax.set_xticks([])
            ax.set_yticks([])
            ax.set_frame_on(strip is not None)
            if i == 0:
                ax.set_title(column, fontsize=8)
            if j == 0:
                ax.set_ylabel(row, fontsize=8, rotation=0, ha="right", va="center")
    if title:
        figure.suptitle(title, fontsize=10)
    path = Path(path)
    figure.savefig(path, dpi=110)
    return path
