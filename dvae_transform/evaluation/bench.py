"""The benchmark: how well a victim learns from poisoned MNIST after each defense.

``dvae-purify bench`` (or ``python -m dvae_transform.evaluation.bench``) runs the cells of
:mod:`.runner` for every attack, defense (:mod:`.defenses`) and seed. Every finished cell is written
to ``<out>/results.json`` at once (:mod:`.results`), so a killed run keeps its work and ``--resume``
skips it. The tables (:mod:`.report`) go to ``<out>/results.md`` and, between the markers
``<!-- bench:start/end -->``, into a benchmarks file; figures (:mod:`.figures`) go to ``<out>/*.png``.
"""

from __future__ import annotations

import argparse
import shlex
import sys
from collections.abc import Sequence
from pathlib import Path

import torch

from ..config import PRESETS
from ..files import atomic_write
from ..validation import positive_int
from . import figures
from .attacks import ATTACKS
from .defenses import DEFENSES, NEEDS_WEIGHTS, DefenseContext
from .report import render_report, summarise, write_block
from .results import RESULTS_FILE, SAMPLES_FILE, Results, Samples
from .runner import (
    CLEAN,
    NUM_CLASSES,
    QUICK_FIT,
    QUICK_SIZES,
    QUICK_VICTIM_EPOCHS,
    fit_overrides,
    load_data,
    run_cells,
    run_settings,
)

REPORT_FILE = "results.md"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Add the benchmark's options to ``parser`` (used by ``dvae-purify bench`` and ``main``)."""
    parser.add_argument("--attacks", nargs="*", choices=list(ATTACKS), default=list(ATTACKS), metavar="ATTACK",
                        help=f"attacks to run (default: all of {', '.join(ATTACKS)}); the clean row always runs")
    parser.add_argument("--defenses", nargs="+", choices=list(DEFENSES), default=None, metavar="DEFENSE",
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


# ----------------------------------------------------------------------------- entry points


def _defenses(args: argparse.Namespace) -> list[str]:
    if args.defenses is None:
        return [name for name in DEFENSES if name not in NEEDS_WEIGHTS or args.warm_start is not None]
    needing = [name for name in args.defenses if name in NEEDS_WEIGHTS]
    if needing and args.warm_start is None:
        raise ValueError(f"the {' and '.join(needing)} defense needs --warm-start PATH (weights to start from)")
    return list(dict.fromkeys(args.defenses))


def _figures(results: Results, samples: Samples, attacks: list[str], defenses: list[str], seeds: list[int],
             out: Path) -> None:
    accuracy = summarise(results, attacks, defenses, seeds, "accuracy")
    ceiling = accuracy.get(CLEAN, {}).get("none", (None, None))[0]
    figures.accuracy_bars(accuracy, out / "accuracy.png", ceiling=ceiling)
    grid = samples.grid()
    grid.update({(attack, "clean"): grid[CLEAN, "clean"] for attack in attacks})
    columns = ["clean", "poisoned", *(d for d in defenses if d != "none")]
    figures.sample_grid(grid, attacks, columns, out / "samples.png")


def run(args: argparse.Namespace) -> int:
    """Run (or resume) the benchmark described by ``args``; returns the exit status."""
    defenses = _defenses(args)
    if args.warm_start is not None and not args.warm_start.is_dir():
        raise ValueError(f"--warm-start {args.warm_start}: no such purifier folder")
    seeds = list(dict.fromkeys(args.seeds))
    attacks = [*([] if args.no_clean else [CLEAN]), *dict.fromkeys(args.attacks)]
    command = args.command_line or shlex.join(["dvae-purify", *sys.argv[1:]])
    data = load_data(args.quick)
    args.out.mkdir(parents=True, exist_ok=True)
    overrides = fit_overrides(args.quick, args.epochs)
    settings = run_settings(args.preset, overrides, data, quick=args.quick, warm_start=args.warm_start)
    results = Results(args.out / RESULTS_FILE, settings, resume=args.resume)
    samples = Samples(args.out / SAMPLES_FILE, resume=args.resume)
    for folder in args.merge:
        results.merge(folder)
        samples.merge(folder)
    results.start_run(command)
    context = DefenseContext(NUM_CLASSES, {"preset": args.preset, "progress": not args.quick, **overrides},
                             args.warm_start)
    run_cells(attacks, defenses, seeds, data, results, samples, context, device=args.device)
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
    """``python -m dvae_transform.evaluation.bench [options]``."""
    prog = "python -m dvae_transform.evaluation.bench"
    parser = argparse.ArgumentParser(prog=prog, description=__doc__.split("\n\n")[0])
    add_arguments(parser)
    argv = list(sys.argv[1:] if argv is None else argv)
    args = parser.parse_args(argv)
    args.command_line = shlex.join([*prog.split(), *argv])
    return run(args)


if __name__ == "__main__":
    sys.exit(main())
