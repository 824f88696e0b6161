"""The benchmark: how well a victim learns from poisoned MNIST after each defense.

For every attack and seed the embedded MNIST training split is poisoned once; each
defense purifies it (D-VAE and the plain VAE are fitted on the poisoned set itself),
a victim classifier (``victim.py``) is trained on the result, and the cell is that
victim's accuracy on the clean test split. A ``clean`` row (no attack) gives the ceiling.

Every finished cell is written to ``<out>/results.json`` at once, so a killed run keeps
its work and ``--resume`` skips it. The tables go to ``<out>/results.md`` and, between
the markers below, into a benchmarks file; figures go to ``<out>/*.png``.
"""

from __future__ import annotations

import argparse
import dataclasses
import functools
import inspect
import json
import os
import platform
import shlex
import statistics
import sys
import time
from collections.abc import Sequence
from datetime import datetime
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file, save

from . import plots, victim
from .attacks import ATTACKS, make_poison
from .baselines import BitDepthReduction, JPEGCompression, PlainVAE
from .cache import atomic_write
from .cli import positive_int
from .config import PRESETS, resolve_config
from .mnist import DigitSplit, load_mnist32
from .transforms import DVAEPurify

DEFENSES = ("none", "jpeg", "bitdepth", "plain_vae", "dvae", "dvae_warm", "dvae_zero_shot")
NEEDS_WEIGHTS = ("dvae_warm", "dvae_zero_shot")  # defenses that start from --warm-start weights
CLEAN = "clean"
NUM_CLASSES = 10
JPEG_QUALITY = 10
RESULTS_FILE, REPORT_FILE, SAMPLES_FILE = "results.json", "results.md", "samples.safetensors"
START_MARKER, END_MARKER = "<!-- bench:start -->", "<!-- bench:end -->"
QUICK_SIZES = (64, 64)  # train / test images
QUICK_VICTIM_EPOCHS = 1
QUICK_FIT = {"epochs": 1, "width": 8, "latent_dim": 8}
SAMPLE_DIGITS = 4
# Budgets for MNIST where the published ones (tuned on CIFAR) barely hurt the victim: clamping at the black
# background and white strokes removes much of a perturbation, and the digits are learnt as fast as a shortcut.
MNIST_BUDGETS: dict[str, dict[str, float]] = {
    "classwise_noise": {"eps": 32 / 255},
    "autoregressive": {"l2": 3.0},
    "error_minimizing": {"eps": 32 / 255},
}


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Add the benchmark's options to ``parser`` (used by ``dvae-purify bench`` and ``main``)."""
    parser.add_argument("--attacks", nargs="*", choices=list(ATTACKS), default=list(ATTACKS), metavar="ATTACK",
                        help=f"attacks to run (default: all of {', '.join(ATTACKS)}); the clean row always runs")
    parser.add_argument("--defenses", nargs="+", choices=DEFENSES, default=None, metavar="DEFENSE",
                        help=f"defenses to run, from {', '.join(DEFENSES)} (default: all; dvae_warm and dvae_zero_shot "
                             "only with --warm-start)")
    parser.add_argument("--preset", choices=sorted(PRESETS), default="fast", help="D-VAE / plain VAE recipe")
    parser.add_argument("--epochs", type=positive_int, default=None, help="override the preset's epochs per stage")
    parser.add_argument("--seeds", nargs="+", type=int, default=[0, 1], help="seeds of attack, fit and victim")
    parser.add_argument("--warm-start", type=Path, default=None, metavar="PATH",
                        help="purifier folder (save_pretrained) that dvae_warm fine-tunes and dvae_zero_shot "
                             "applies as it is")
    parser.add_argument("--quick", action="store_true",
                        help=f"tiny run for tests: {QUICK_SIZES[0]} train / {QUICK_SIZES[1]} test images, "
                             f"{QUICK_VICTIM_EPOCHS} victim epoch, fit settings {QUICK_FIT}")
    parser.add_argument("--out", type=Path, default=Path("bench-results"),
                        help="folder for results.json, results.md and figures (default: bench-results)")
    parser.add_argument("--benchmarks-file", type=Path, default=Path("BENCHMARKS.md"),
                        help="markdown file whose bench block gets the tables (default: BENCHMARKS.md)")
    parser.add_argument("--no-write", action="store_true", help="leave the benchmarks file alone")
    parser.add_argument("--resume", action="store_true", help="keep the finished cells of <out>/results.json")
    parser.add_argument("--no-clean", action="store_true",
                        help="skip the clean row (when one run is split between processes: give it to one of them)")
    parser.add_argument("--merge", nargs="+", type=Path, default=[], metavar="DIR",
                        help="fold the finished cells of these --out folders (same settings) into --out first")
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu",
                        help="device of the victim's training (D-VAE fits follow Accelerate's choice)")
    parser.set_defaults(command_line=None)


# ----------------------------------------------------------------------------- setup


def _defenses(args: argparse.Namespace) -> list[str]:
    if args.defenses is None:
        return [name for name in DEFENSES if name not in NEEDS_WEIGHTS or args.warm_start is not None]
    needing = [name for name in args.defenses if name in NEEDS_WEIGHTS]
    if needing and args.warm_start is None:
        raise ValueError(f"the {' and '.join(needing)} defense needs --warm-start PATH (weights to start from)")
    return list(dict.fromkeys(args.defenses))


@functools.cache
def _load_data(quick: bool) -> DigitSplit:
    """The embedded split (or the quick slice of it), parsed once per process."""
    data = load_mnist32()
    if not quick:
        return data
    train, test = QUICK_SIZES
    return DigitSplit(data.train_images[:train], data.train_labels[:train], data.test_images[:test],
                      data.test_labels[:test])


def _fit_overrides(args: argparse.Namespace) -> dict[str, Any]:
    overrides = dict(QUICK_FIT) if args.quick else {}
    if args.epochs is not None:
        overrides["epochs"] = args.epochs
    return overrides


def _settings(args: argparse.Namespace, data: DigitSplit) -> dict[str, Any]:
    """What every cell depends on besides (attack, defense, seed); a resumed run must match it."""
    fit = dataclasses.asdict(resolve_config(args.preset, **_fit_overrides(args)))
    fit.pop("seed")
    return json.loads(json.dumps({
        "preset": args.preset,
        "fit": fit,
        "num_train": len(data.train_images),
        "num_test": len(data.test_images),
        "victim_epochs": QUICK_VICTIM_EPOCHS if args.quick else victim.EPOCHS,
        "jpeg_quality": JPEG_QUALITY,
        "attack_budgets": MNIST_BUDGETS,
        "bitdepth_bits": BitDepthReduction().bits,
        "warm_start": None if args.warm_start is None else str(args.warm_start.resolve()),
    }))


# ----------------------------------------------------------------------------- results on disk


class Results:
    """``results.json``: settings, one record per finished cell, and one record per run."""

    def __init__(self, path: Path, settings: dict[str, Any], *, resume: bool) -> None:
        self.path = path
        self.data: dict[str, Any] = {"settings": settings, "cells": {}, "poison_seconds": {}, "runs": []}
        if resume and path.is_file():
            stored = json.loads(path.read_text())
            if stored["settings"] != settings:
                raise ValueError(
                    f"--resume: {path} was made with other settings ({stored['settings']}, now {settings}); "
                    "use the same options or another --out"
                )
            self.data = stored

    @staticmethod
    def key(attack: str, defense: str, seed: int) -> str:
        return f"{attack}/{defense}/{seed}"

    def cell(self, attack: str, defense: str, seed: int) -> dict[str, Any] | None:
        return self.data["cells"].get(self.key(attack, defense, seed))

    def start_run(self, command: str) -> None:
        self.data["runs"].append({"started": _now(), "command": command, "computed": 0})
        self.save()

    def add(self, attack: str, defense: str, seed: int, **record: Any) -> None:
        record.update(attack=attack, defense=defense, seed=seed, finished=_now())
        self.data["cells"][self.key(attack, defense, seed)] = record
        self.data["runs"][-1]["computed"] += 1
        self.save()

    def merge(self, other: Path) -> None:
        """Take the cells of another results file made with the same settings."""
        stored = json.loads((other / RESULTS_FILE).read_text())
        if stored["settings"] != self.data["settings"]:
            raise ValueError(f"--merge: {other} was made with other settings ({stored['settings']})")
        for name in ("cells", "poison_seconds"):
            self.data[name].update(stored[name])
        self.data["runs"].extend(stored["runs"])
        self.save()

    def add_poison_time(self, attack: str, seed: int, seconds: float) -> None:
        self.data["poison_seconds"][f"{attack}/{seed}"] = seconds

    def save(self) -> None:
        atomic_write(self.path, json.dumps(self.data, indent=1).encode())


class Samples:
    """A few digits of every input and output, kept in ``samples.safetensors`` for the image grid."""

    def __init__(self, path: Path, *, resume: bool) -> None:
        self.path = path
        self.tensors = load_file(str(path)) if resume and path.is_file() else {}

    def add(self, row: str, column: str, images: torch.Tensor) -> None:
        self.tensors[f"{row}/{column}"] = images.float().contiguous()
        atomic_write(self.path, save(self.tensors))

    def merge(self, other: Path) -> None:
        if (other / SAMPLES_FILE).is_file():
            for key, value in load_file(str(other / SAMPLES_FILE)).items():
                self.add(*key.split("/", 1), value)

    def grid(self) -> dict[tuple[str, str], torch.Tensor]:
        return {tuple(key.split("/", 1)): value for key, value in self.tensors.items()}


def _now() -> str:
    return datetime.now().astimezone().isoformat(timespec="seconds")


# ----------------------------------------------------------------------------- one cell


class Defender:
    """Runs a defense by name on a (poisoned) training set; returns the purified images."""

    def __init__(self, args: argparse.Namespace) -> None:
        self.fit_options = {"preset": args.preset, "progress": not args.quick, **_fit_overrides(args)}
        self.warm_start = args.warm_start
        self._warm: DVAEPurify | None = None

    def __call__(self, defense: str, images: torch.Tensor, labels: torch.Tensor, seed: int) -> torch.Tensor:
        fit_options = {**self.fit_options, "seed": seed}
        if defense == "none":
            return images
        if defense == "jpeg":
            return JPEGCompression(quality=JPEG_QUALITY)(images, labels)
        if defense == "bitdepth":
            return BitDepthReduction()(images, labels)
        if defense == "plain_vae":
            return PlainVAE.fit(images, **fit_options)(images)
        if defense == "dvae":
            return DVAEPurify.fit((images, labels), NUM_CLASSES, **fit_options).purify(images, labels)
        if defense in NEEDS_WEIGHTS:
            if self._warm is None:
                self._warm = DVAEPurify.from_pretrained(self.warm_start)
            if defense == "dvae_zero_shot":
                return self._warm.purify(images, labels)
            purifier = DVAEPurify.fit((images, labels), NUM_CLASSES, init=self._warm, **fit_options)
            return purifier.purify(images, labels)
        raise ValueError(f"unknown defense {defense!r}; known defenses: {', '.join(DEFENSES)}")


def _timed(function, *args: Any, **kwargs: Any) -> tuple[Any, float]:
    started = time.perf_counter()
    result = function(*args, **kwargs)
    return result, time.perf_counter() - started


def _poison(attack: str, data: DigitSplit, seed: int) -> torch.Tensor:
    if attack == CLEAN:
        return data.train_images
    return make_poison(attack, data.train_images, data.train_labels, num_classes=NUM_CLASSES, seed=seed,
                       **MNIST_BUDGETS.get(attack, {}))


def _sample_indices(labels: torch.Tensor) -> torch.Tensor:
    """The first image of each of the first ``SAMPLE_DIGITS`` classes."""
    return torch.stack([(labels == digit).nonzero()[0, 0] for digit in range(SAMPLE_DIGITS)])


def _run_cells(args: argparse.Namespace, attacks: list[str], defenses: list[str], seeds: list[int],
               data: DigitSplit, results: Results, samples: Samples) -> None:
    defend = Defender(args)
    victim_epochs = results.data["settings"]["victim_epochs"]
    shown = _sample_indices(data.train_labels)
    samples.add(CLEAN, "clean", data.train_images[shown])
    todo = [(a, s, d) for a in attacks for s in seeds for d in defenses if results.cell(a, d, s) is None]
    print(f"bench: {len(todo)} cell(s) to compute, {len(attacks) * len(seeds) * len(defenses) - len(todo)} done")
    done = 0
    for attack in attacks:
        for seed in seeds:
            pending = [d for d in defenses if results.cell(attack, d, seed) is None]
            if not pending:
                continue
            poisoned, seconds = _timed(_poison, attack, data, seed)
            results.add_poison_time(attack, seed, seconds)
            if attack != CLEAN:
                print(f"poisoned {attack} (seed {seed}) in {seconds:.1f} s", flush=True)
            if seed == seeds[0] and attack != CLEAN:
                samples.add(attack, "poisoned", poisoned[shown])
            for defense in pending:
                purified, defense_seconds = _timed(defend, defense, poisoned, data.train_labels, seed)
                model, victim_seconds = _timed(victim.train_victim, purified, data.train_labels,
                                               num_classes=NUM_CLASSES, epochs=victim_epochs, seed=seed,
                                               device=args.device)
                score = victim.accuracy(model, data.test_images, data.test_labels)
                results.add(attack, defense, seed, accuracy=score, defense_seconds=defense_seconds,
                            victim_seconds=victim_seconds)
                if seed == seeds[0] and defense != "none":
                    samples.add(attack, defense, purified[shown])
                done += 1
                print(f"[{done}/{len(todo)}] {attack} / {defense} / seed {seed}: accuracy {score:.3f} "
                      f"(defense {defense_seconds:.1f} s, victim {victim_seconds:.1f} s)", flush=True)


# ----------------------------------------------------------------------------- report


def summarise(results: Results, attacks: Sequence[str], defenses: Sequence[str], seeds: Sequence[int],
              field: str) -> dict[str, dict[str, tuple[float, float | None]]]:
    """``table[attack][defense] = (mean, standard deviation or None)`` of ``field`` over the finished seeds."""
    table: dict[str, dict[str, tuple[float, float | None]]] = {}
    for attack in attacks:
        row = {}
        for defense in defenses:
            values = [c[field] for s in seeds if (c := results.cell(attack, defense, s)) is not None]
            if values:
                row[defense] = (statistics.fmean(values), statistics.stdev(values) if len(values) > 1 else None)
        table[attack] = row
    return table


def _markdown_table(table: dict[str, dict[str, tuple[float, float | None]]], defenses: Sequence[str],
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


def _victim_recipe(epochs: int) -> str:
    paragraph = inspect.cleandoc(victim.__doc__ or "").split("\n\n")[1].replace("\n", " ")
    return f"{paragraph} This run: {epochs} epoch(s), batch {victim.BATCH_SIZE}, Adam lr {victim.LR}."


def _describe(defense: str, settings: dict[str, Any]) -> str:
    fit = settings["fit"]
    recipe = (f"preset `{settings['preset']}`: width {fit['width']}, latent {fit['latent_dim']}, "
              f"{fit['epochs']} epoch(s) per stage, batch {fit['batch_size']}, lr {fit['lr']}")
    return {
        "none": "none = the poisoned set as it is",
        "jpeg": f"jpeg = JPEG quality {settings['jpeg_quality']}",
        "bitdepth": f"bitdepth = {settings['bitdepth_bits']}-bit reduction",
        "plain_vae": "plain_vae = the D-VAE without its perturbation branch (one stage, KL bound 1, same recipe)",
        "dvae": f"dvae = two-stage D-VAE fitted on the poisoned set ({recipe})",
        "dvae_warm": f"dvae_warm = dvae warm-started from `{settings['warm_start']}`",
        "dvae_zero_shot": f"dvae_zero_shot = `{settings['warm_start']}` applied as it is (no fit)",
    }[defense]


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
        f"Date: {_now()}. Machine: {os.cpu_count()} CPUs ({platform.machine()}), "
        f"{torch.get_num_threads()} torch threads, torch {torch.__version__}, Python {platform.python_version()}.",
        "",
        f"Data: embedded MNIST (`load_mnist32`), {settings['num_train']} train / {settings['num_test']} test "
        f"images of 1x32x32; seeds {', '.join(map(str, seeds))} (each seeds the attack, the fit and the victim).",
        "",
        "Attacks (defaults of `dvae_transform.attacks` except): "
        + "; ".join(f"{name} {budget}" for name, budget in MNIST_BUDGETS.items()) + ".",
        "",
        "Defenses: " + "; ".join(_describe(name, settings) for name in defenses) + ".",
        "",
        f"Victim: {_victim_recipe(settings['victim_epochs'])}",
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
    start_marker, end_marker = f"<!-- {name}:start -->", f"<!-- {name}:end -->"
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


def _figures(results: Results, samples: Samples, attacks: list[str], defenses: list[str], seeds: list[int],
             out: Path) -> None:
    accuracy = summarise(results, attacks, defenses, seeds, "accuracy")
    ceiling = accuracy.get(CLEAN, {}).get("none", (None, None))[0]
    plots.accuracy_bars(accuracy, out / "accuracy.png", ceiling=ceiling)
    grid = samples.grid()
    grid.update({(attack, "clean"): grid[CLEAN, "clean"] for attack in attacks})
    columns = ["clean", "poisoned", *(d for d in defenses if d != "none")]
    plots.sample_grid(grid, attacks, columns, out / "samples.png")


# ----------------------------------------------------------------------------- entry points


def run(args: argparse.Namespace) -> int:
    """Run (or resume) the benchmark described by ``args``; returns the exit status."""
    defenses = _defenses(args)
    if args.warm_start is not None and not args.warm_start.is_dir():
        raise ValueError(f"--warm-start {args.warm_start}: no such purifier folder")
    seeds = list(dict.fromkeys(args.seeds))
    attacks = [*([] if args.no_clean else [CLEAN]), *dict.fromkeys(args.attacks)]
    command = args.command_line or shlex.join(["dvae-purify", *sys.argv[1:]])
    data = _load_data(args.quick)
    args.out.mkdir(parents=True, exist_ok=True)
    results = Results(args.out / RESULTS_FILE, _settings(args, data), resume=args.resume)
    samples = Samples(args.out / SAMPLES_FILE, resume=args.resume)
    for folder in args.merge:
        results.merge(folder)
        samples.merge(folder)
    results.start_run(command)
    _run_cells(args, attacks, defenses, seeds, data, results, samples)
    report = render_report(results, attacks, defenses, seeds, command)
    print(report)
    atomic_write(args.out / REPORT_FILE, report.encode())
    _figures(results, samples, attacks, defenses, seeds, args.out)
    if not args.no_write:
        write_block(args.benchmarks_file, report)
        print(f"bench: tables written to {args.benchmarks_file}")
    print(f"bench: results, tables and figures in {args.out}")
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    """``python -m dvae_transform.bench [options]``."""
    parser = argparse.ArgumentParser(prog="python -m dvae_transform.bench", description=__doc__.split("\n\n")[0])
    add_arguments(parser)
    argv = list(sys.argv[1:] if argv is None else argv)
    args = parser.parse_args(argv)
    args.command_line = shlex.join(["python", "-m", "dvae_transform.bench", *argv])
    return run(args)


if __name__ == "__main__":
    sys.exit(main())
