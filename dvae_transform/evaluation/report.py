"""The benchmark's report: markdown tables of the victim's accuracy, the defenses' wall time and D-VAE's diagnostics.

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
from .diagnostics import FIELDS
from .results import Results, now
from .runner import CLEAN
from .victims import VictimSettings

Summary = dict[str, dict[str, tuple[float, float | None]]]


def _markers(name: str) -> tuple[str, str]:
    return f"<!-- {name}:start -->", f"<!-- {name}:end -->"


START_MARKER, END_MARKER = _markers("bench")


def summarise(results: Results, attacks: Sequence[str], defenses: Sequence[str], seeds: Sequence[int],
              field: str) -> Summary:
    """``table[attack][defense] = (median, worst = lowest or None)`` of ``field`` over the finished seeds.

    A median and a worst seed, never a mean: a defense that fails on one seed in four must show it.
    """
    table: Summary = {}
    for attack in attacks:
        row = {}
        for defense in defenses:
            values = [c[field] for s in seeds if (c := results.cell(attack, defense, s)) is not None]
            if values:
                row[defense] = (statistics.median(values), min(values) if len(values) > 1 else None)
        table[attack] = row
    return table


def _markdown_table(table: Summary, defenses: Sequence[str],
                    digits: int, *, show_spread: bool) -> str:
    """Rows = attacks, columns = defenses, and a mean-over-attacks row (the ``clean`` row excluded)."""
    def cell(value: tuple[float, float | None] | None) -> str:
        if value is None:
            return "–"
        middle, worst = value
        return f"{middle:.{digits}f}" + (f" (worst {worst:.{digits}f})" if show_spread and worst is not None else "")

    lines = ["| attack | " + " | ".join(defenses) + " |", "|---" * (len(defenses) + 1) + "|"]
    lines += [f"| {attack} | " + " | ".join(cell(row.get(d)) for d in defenses) + " |" for attack, row in table.items()]
    attacked = [row for attack, row in table.items() if attack != CLEAN]
    if attacked:
        means = []
        for defense in defenses:
            values = [row[defense][0] for row in attacked if defense in row]
            means.append(f"**{statistics.fmean(values):.{digits}f}**" if len(values) == len(attacked) else "–")
        lines.append("| **mean of the medians over attacks** | " + " | ".join(means) + " |")
    return "\n".join(lines)


# (field, column header, number format) of the diagnostics table
_DIAGNOSTIC_COLUMNS = (
    ("cosine", "cos(x - x1, δ)", ".3f"),
    ("class_cosine", "class-mean cos", ".3f"),
    ("psnr_poisoned", "PSNR poisoned", ".1f"),
    ("psnr_stage1", "PSNR x1", ".1f"),
    ("psnr_purified", "PSNR output", ".1f"),
    ("kl_stage1", "KL stage 1", ".2f"),
    ("kl_stage2", "KL stage 2", ".2f"),
    ("out_of_range", "rec + p outside [0, 1]", ".2%"),
)


def _diagnostics_table(results: Results, attacks: Sequence[str], defenses: Sequence[str],
                       seeds: Sequence[int]) -> str | None:
    """One row per (attack, D-VAE defense) with diagnostics: each field's mean over the seeds that have it."""
    rows = []
    for attack in attacks:
        for defense in defenses:
            found = [c["diagnostics"] for s in seeds if (c := results.cell(attack, defense, s)) and "diagnostics" in c]
            if not found:
                continue
            cells = []
            for field, _, number in _DIAGNOSTIC_COLUMNS:
                values = [record[field] for record in found if record.get(field) is not None]
                cells.append(format(statistics.fmean(values), number) if values else "–")
            rows.append(f"| {attack} | {defense} | " + " | ".join(cells) + " |")
    if not rows:
        return None
    header = "| attack | defense | " + " | ".join(title for _, title, _ in _DIAGNOSTIC_COLUMNS) + " |"
    return "\n".join([header, "|---" * (len(_DIAGNOSTIC_COLUMNS) + 2) + "|", *rows])


def _check_table(results: Results, attacks: Sequence[str], defenses: Sequence[str],
                 seeds: Sequence[int]) -> str | None:
    """One row per (attack, defense) whose cells carry a shortcut check."""
    rows = []
    for attack in attacks:
        for defense in defenses:
            cells = [c for s in seeds if (c := results.cell(attack, defense, s)) and "check" in c]
            if not cells:
                continue
            parts = []
            for mode in ("intrinsic", "clean"):
                reports = [cell["check"][mode] for cell in cells]
                flagged = sum(report["verdict"] == "shortcut" for report in reports)
                values = [report["statistic"] for report in reports if report["statistic"] is not None]
                median = f"{statistics.median(values):.3f}" if values else "–"
                parts.append(f"{flagged}/{len(reports)} ({median})")
            accuracy = statistics.median(cell["accuracy"] for cell in cells)
            rows.append(f"| {attack} | {defense} | {parts[0]} | {parts[1]} | {accuracy:.3f} |")
    if not rows:
        return None
    header = "| attack | defense | flagged, no clean set (share) | flagged, clean set (gap) | victim accuracy |"
    return "\n".join([header, "|---" * 5 + "|", *rows])


def cpu_description() -> str:
    """The CPU's model name, its widest vector extension and the kernels torch dispatches to."""
    model = platform.machine()
    try:
        info = Path("/proc/cpuinfo").read_text()
    except OSError:
        info = ""
    names = [line.split(":", 1)[1].strip() for line in info.splitlines() if line.startswith("model name")]
    flags = next((line.split(":", 1)[1].split() for line in info.splitlines() if line.startswith("flags")), [])
    vector = "AVX-512" if "avx512f" in flags else "AVX2, no AVX-512" if "avx2" in flags else "no AVX2"
    kernels = torch.backends.cpu.get_cpu_capability()
    forced = os.environ.get("ATEN_CPU_CAPABILITY")
    return (f"{names[0] if names else model}, {vector}; torch CPU kernels: {kernels}"
            + (f" (forced by ATEN_CPU_CAPABILITY={forced})" if forced else ""))


def _devices(results: Results) -> str:
    computed = [run.get("device", "unrecorded") for run in results.data["runs"] if run["computed"]]
    counts = {device: computed.count(device) for device in computed}
    return "; ".join(f"{device}, {count} run{'s' * (count > 1)}" for device, count in counts.items()) or "none"


def _attacks_line(settings: dict) -> str:
    line = "Attacks: the published budgets (defaults of `dvae_transform.evaluation.attacks`)"
    overrides = settings["attack_settings"]
    if overrides:
        line += ", except " + "; ".join(
            f"{name} " + ", ".join(f"{key}={value:.4g}" if isinstance(value, float) else f"{key}={value}"
                                   for key, value in budget.items())
            for name, budget in overrides.items()
        )
    return line + "."


def render_report(results: Results, attacks: Sequence[str], defenses: Sequence[str], seeds: Sequence[int],
                  command: str, data_description: str) -> str:
    """The markdown block: command, date, machine, settings, accuracy, wall-time and diagnostics tables."""
    settings = results.data["settings"]
    victim = VictimSettings(**settings["victim"])
    spread = " (worst seed)" if len(seeds) > 1 else ""
    accuracy = summarise(results, attacks, defenses, seeds, "accuracy")
    seconds = summarise(results, attacks, defenses, seeds, "defense_seconds")
    lines = [
        f"## Benchmark: {settings['data']['name']}, victim `{victim.name}`",
        "",
        f"Command: `{command}`",
        "",
        f"Date: {now()}. Machine: {os.cpu_count()} CPUs ({cpu_description()}), "
        f"{torch.get_num_threads()} torch threads, torch {torch.__version__}, Python {platform.python_version()}. "
        f"Cells computed on: {_devices(results)}.",
        "",
        f"Data: {data_description}; seeds {', '.join(map(str, seeds))} "
        "(each seeds the attack, the fit and the victim).",
        "",
        _attacks_line(settings),
        "",
        "Defenses: " + "; ".join(describe(name, settings) for name in defenses) + ".",
        "",
        f"Victim: {victim.describe(settings['victim_epochs'])}",
        "",
        f"Clean-test accuracy of the victim (median{spread} over seeds; `clean` = no attack, the ceiling):",
        "",
        _markdown_table(accuracy, defenses, 3, show_spread=True),
        "",
        "Defense wall time in seconds (fit + purify of the training set, median over seeds):",
        "",
        _markdown_table(seconds, defenses, 1, show_spread=False),
    ]
    checks = _check_table(results, attacks, defenses, seeds)
    if checks is not None:
        lines += ["", "Shortcut check (`dvae_transform.check_shortcut`) of each defended training set: seeds flagged "
                      "out of seeds run, without a clean set (few-shot share, median) and with the clean test split "
                      "as the clean set (transfer gap, median), beside the victim's median accuracy:", "", checks]
    diagnostics = _diagnostics_table(results, attacks, defenses, seeds)
    if diagnostics is not None:
        legend = "; ".join(f"{title}: {FIELDS[field]}" for field, title, _ in _DIAGNOSTIC_COLUMNS)
        lines += ["", f"Stage-1 diagnostics of the D-VAE cells (mean over seeds; δ = x_poisoned - x_clean). {legend}.",
                  "", diagnostics]
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
