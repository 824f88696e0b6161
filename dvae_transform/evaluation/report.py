"""The benchmark's report: markdown tables of the victim's accuracy and the defenses' wall time.

:func:`write_block` puts a report between markers in a markdown file (``BENCHMARKS.md``), replacing
the previous one.
"""

from __future__ import annotations

import os
import platform
import statistics
from collections.abc import Sequence
from pathlib import Path

import torch

from ..files import atomic_write
from .defenses import describe
from .results import Results, now
from .runner import CLEAN
from .victims import RECIPE

Summary = dict[str, dict[str, tuple[float, float | None]]]


def _markers(name: str) -> tuple[str, str]:
    return f"<!-- {name}:start -->", f"<!-- {name}:end -->"


START_MARKER, END_MARKER = _markers("bench")


def summarise(results: Results, attacks: Sequence[str], defenses: Sequence[str], seeds: Sequence[int],
              field: str) -> Summary:
    """``table[attack][defense] = (mean, standard deviation or None)`` of ``field`` over the finished seeds."""
    table: Summary = {}
    for attack in attacks:
        row = {}
        for defense in defenses:
            values = [c[field] for s in seeds if (c := results.cell(attack, defense, s)) is not None]
            if values:
                row[defense] = (statistics.fmean(values), statistics.stdev(values) if len(values) > 1 else None)
        table[attack] = row
    return table


def _markdown_table(table: Summary, defenses: Sequence[str],
                    digits: int, *, show_spread: bool) -> str:
    """Rows = attacks, columns = defenses, and a mean-over-attacks row (the ``clean`` row excluded)."""
    def cell(value: tuple[float, float | None] | None) -> str:
        if value is None:
            return "–"
        mean, spread = value
        return f"{mean:.{digits}f}" + (f" ± {spread:.{digits}f}" if show_spread and spread is not None else "")

    lines = ["| attack | " + " | ".join(defenses) + " |", "|---" * (len(defenses) + 1) + "|"]
    lines += [f"| {attack} | " + " | ".join(cell(row.get(d)) for d in defenses) + " |" for attack, row in table.items()]
    attacked = [row for attack, row in table.items() if attack != CLEAN]
    if attacked:
        means = []
        for defense in defenses:
            values = [row[defense][0] for row in attacked if defense in row]
            means.append(f"**{statistics.fmean(values):.{digits}f}**" if len(values) == len(attacked) else "–")
        lines.append("| **mean over attacks** | " + " | ".join(means) + " |")
    return "\n".join(lines)


def render_report(results: Results, attacks: Sequence[str], defenses: Sequence[str], seeds: Sequence[int],
                  command: str) -> str:
    """The markdown block: command, date, machine, settings, accuracy and wall-time tables."""
    settings = results.data["settings"]
    spread = " ± standard deviation" if len(seeds) > 1 else ""
    accuracy = summarise(results, attacks, defenses, seeds, "accuracy")
    seconds = summarise(results, attacks, defenses, seeds, "defense_seconds")
    lines = [
        "## MNIST benchmark",
        "",
        f"Command: `{command}`",
        "",
        f"Date: {now()}. Machine: {os.cpu_count()} CPUs ({platform.machine()}), "
        f"{torch.get_num_threads()} torch threads, torch {torch.__version__}, Python {platform.python_version()}.",
        "",
        f"Data: embedded MNIST (`load_mnist32`), {settings['num_train']} train / {settings['num_test']} test "
        f"images of 1x32x32; seeds {', '.join(map(str, seeds))} (each seeds the attack, the fit and the victim).",
        "",
        "Attacks (defaults of `dvae_transform.evaluation.attacks` except): "
        + "; ".join(f"{name} {budget}" for name, budget in settings["attack_budgets"].items()) + ".",
        "",
        "Defenses: " + "; ".join(describe(name, settings) for name in defenses) + ".",
        "",
        f"Victim: {RECIPE.describe()} This run: {settings['victim_epochs']} epoch(s), batch {RECIPE.batch_size}, "
        f"{RECIPE.optimizer} lr {RECIPE.lr}.",
        "",
        f"Clean-test accuracy of the victim (mean{spread} over seeds; `clean` = no attack, the ceiling):",
        "",
        _markdown_table(accuracy, defenses, 3, show_spread=True),
        "",
        "Defense wall time in seconds (fit + purify of the training set, mean over seeds):",
        "",
        _markdown_table(seconds, defenses, 1, show_spread=False),
    ]
    return "\n".join(lines) + "\n"


def write_block(path: Path, block: str, name: str = "bench") -> None:
    """Put ``block`` between the ``<!-- name:start/end -->`` markers of ``path``, replacing the old block.

    A file without the markers gets the block appended; a missing file is created.
    """
    start_marker, end_marker = _markers(name)
    text = path.read_text() if path.is_file() else "# Benchmarks\n"
    new = f"{start_marker}\n{block.strip()}\n{end_marker}"
    starts, ends = text.count(start_marker), text.count(end_marker)
    if starts == ends == 0:
        text = text.rstrip("\n") + "\n\n" + new + "\n"
    elif starts == ends == 1 and text.index(start_marker) < text.index(end_marker):
        head, rest = text.split(start_marker, 1)
        text = head + new + rest.split(end_marker, 1)[1]
    else:
        raise ValueError(f"{path}: expected one {start_marker} ... {end_marker} block, found {starts} / {ends} markers")
    atomic_write(path, text.encode())
