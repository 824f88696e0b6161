"""The benchmark: how well a victim learns from a poisoned dataset after each defense.

``dvae-purify bench`` (or ``python -m dvae_transform.evaluation.bench``) runs the cells of :mod:`.runner`
for every attack, defense (:mod:`.defenses`) and seed, on a dataset of :mod:`.datasets` (``--data``;
default: the embedded MNIST digits and their fixed split) with a victim of :mod:`.victims`
(``--victim``; default: the small CNN, or ``resnet18_cpu`` for Fashion-MNIST on the CPU). Every finished
cell is written to ``<out>/results.json`` at once (:mod:`.results`), so a killed run keeps its work and
``--resume`` skips it. The tables (:mod:`.report`) go to ``<out>/results.md`` and into a block of a
benchmarks file (``bench`` for the default data and victim, ``bench-DATA-VICTIM`` otherwise); figures
(:mod:`.figures`) go to ``<out>/*.png``. Bad input (a missing or partial dataset folder, an unknown ``--data`` or
``--victim``, a subset larger than the data, a ``--resume`` or ``--merge`` with other settings)
stops the run before any cell with one line naming it, exit status 2.

Running the grid on one GPU, split over processes
-------------------------------------------------
One process keeps a large GPU mostly idle (32x32 images, batches of 32-128), so run one process per
(attack, seed) side by side on the same GPU. Everything runs on ``--device`` (default ``cuda`` when
there is one): the attacks, the D-VAE and plain-VAE fits (Accelerate is pointed at it), the
purification and the victim, whose training set stays on the device. Give the clean row to one
process per seed (``--attacks`` with no name runs only the clean row; ``--no-clean`` skips it in the
others), keep each process's results in its own ``--out`` with ``--no-write``, limit the CPU threads
per process, then merge (a merge run loads the data, checks that every folder was made with the same
settings, and computes only the cells still missing)::

    export OMP_NUM_THREADS=1
    RUN="python -m dvae_transform.evaluation.bench --data fashion-mnist --train 20000 --test 5000 \\
         --victim resnet18 --no-write"
    for seed in 0 1; do
      $RUN --seeds $seed --attacks --out r/clean_$seed &
      for attack in lsp classwise_noise ops autoregressive error_minimizing cuda; do
        $RUN --seeds $seed --no-clean --attacks $attack --out r/${attack}_$seed &
      done
    done; wait
    python -m dvae_transform.evaluation.bench --data fashion-mnist --train 20000 --test 5000 \\
        --victim resnet18 --seeds 0 1 --resume --merge r/* --out merged

A killed process resumes with the same command plus ``--resume``. How fast such a split run goes on a GPU:
BENCHMARKS.md, "Speed".
"""

from __future__ import annotations

import argparse
import contextlib
import shlex
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import NamedTuple

import torch

from ..config import PRESETS
from ..files import atomic_write
from ..validation import positive_int
from . import figures
from .attacks import ATTACKS
from .datasets import DATASETS, BenchData, load_bench_data
from .defenses import DEFENSES, NEEDS_WEIGHTS, DefenseContext
from .report import render_report, summarise, write_block
from .results import RESULTS_FILE, SAMPLES_FILE, Results, Samples
from .runner import (
    CLEAN,
    QUICK_FIT,
    QUICK_SIZES,
    QUICK_VICTIM_EPOCHS,
    SUBSET_SEED,
    fit_overrides,
    on_device,
    run_cells,
    run_settings,
)
from .victims import CPU_VICTIM, DEFAULT_VICTIM, VICTIMS, VictimSettings

REPORT_FILE = "results.md"
DEFAULT_DATA = "mnist"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Add the benchmark's options to ``parser`` (used by ``dvae-purify bench`` and ``main``)."""
    data = parser.add_argument_group("data and victim")
    data.add_argument("--data", default=DEFAULT_DATA, metavar="NAME",
                      help=f"dataset, one of {', '.join(DATASETS)} (default: {DEFAULT_DATA}, the embedded digits)")
    data.add_argument("--root", type=Path, default=None, metavar="DIR",
                      help="folder of the dataset's files (fashion-mnist defaults to /usr/share/datasets/fashion-mnist,"
                           " where the Debian package dataset-fashion-mnist installs them)")
    data.add_argument("--download", action="store_true",
                      help="fetch missing files with torchvision (fashion-mnist, cifar10, cifar100, svhn; online)")
    data.add_argument("--train", type=positive_int, default=None, metavar="N",
                      help=f"use a fixed random subset of N training images (seed {SUBSET_SEED}; default: all)")
    data.add_argument("--test", type=positive_int, default=None, metavar="M",
                      help="use a fixed random subset of M test images (default: all)")
    data.add_argument("--image-size", type=positive_int, default=None, metavar="PIXELS",
                      help="imagefolder only: the side images are resized to (default: 32)")
    data.add_argument("--victim", default=None, metavar="NAME",
                      help=f"victim classifier, one of {', '.join(VICTIMS)} (default: {CPU_VICTIM} for fashion-mnist "
                           f"on the CPU, else {DEFAULT_VICTIM}); resnet18 is the paper's, meant for a GPU")
    data.add_argument("--victim-width", type=positive_int, default=None, metavar="N",
                      help="base width of a victim that has one (resnet18_cpu: 16)")
    data.add_argument("--victim-epochs", type=positive_int, default=None, metavar="N",
                      help="victim training epochs (default: the victim's: "
                           + ", ".join(f"{name} {victim.epochs}" for name, victim in VICTIMS.items()) + ")")
    parser.add_argument("--attacks", nargs="*", choices=list(ATTACKS), default=list(ATTACKS), metavar="ATTACK",
                        help=f"attacks to run (default: all of {', '.join(ATTACKS)}); the clean row runs too, "
                             "unless --no-clean")
    parser.add_argument("--defenses", nargs="+", choices=list(DEFENSES), default=None, metavar="DEFENSE",
                        help=f"defenses to run, from {', '.join(DEFENSES)} (default: all; dvae_warm and dvae_zero_shot "
                             "only with --warm-start)")
    parser.add_argument("--preset", choices=sorted(PRESETS), default="fast", help="D-VAE / plain VAE training preset")
    parser.add_argument("--epochs", type=positive_int, default=None, help="override the preset's epochs per stage")
    parser.add_argument("--seeds", nargs="+", type=int, default=[0, 1], help="seeds of attack, fit and victim")
    parser.add_argument("--warm-start", type=Path, default=None, metavar="PATH",
                        help="purifier folder (save_pretrained) that dvae_warm fine-tunes and dvae_zero_shot "
                             "applies as it is")
    parser.add_argument("--quick", action="store_true",
                        help=f"tiny run for tests: {QUICK_SIZES[0]} train / {QUICK_SIZES[1]} test images, "
                             f"{QUICK_VICTIM_EPOCHS} victim epoch, fit settings {QUICK_FIT} "
                             "(explicit --train, --test, --victim-epochs and --epochs win)")
    parser.add_argument("--out", type=Path, default=Path("bench-results"),
                        help="folder for results.json, results.md and figures (default: bench-results)")
    parser.add_argument("--benchmarks-file", type=Path, default=Path("BENCHMARKS.md"),
                        help="markdown file that gets the tables, in block bench (default data and victim) or "
                             "bench-DATA-VICTIM (default: BENCHMARKS.md)")
    parser.add_argument("--no-write", action="store_true", help="leave the benchmarks file alone")
    parser.add_argument("--block", metavar="NAME", default=None,
                        help="the benchmarks-file block to write (default: bench, or bench-DATA-VICTIM)")
    parser.add_argument("--resume", action="store_true", help="keep the finished cells of <out>/results.json")
    parser.add_argument("--no-clean", action="store_true",
                        help="skip the clean row (when one run is split between processes: give it to one of them)")
    parser.add_argument("--merge", nargs="+", type=Path, default=[], metavar="DIR",
                        help="fold the finished cells of these --out folders (same settings) into --out first")
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu",
                        help="device of every attack, fit, purification and victim (default: cuda if available)")
    parser.set_defaults(command_line=None, prog=parser.prog)


# ----------------------------------------------------------------------------- setting up a run


class _Run(NamedTuple):
    data: BenchData
    victim: VictimSettings
    attacks: list[str]
    defenses: list[str]
    seeds: list[int]
    results: Results
    samples: Samples
    context: DefenseContext


def _defenses(args: argparse.Namespace) -> list[str]:
    if args.warm_start is not None and not args.warm_start.is_dir():
        raise ValueError(f"--warm-start {args.warm_start}: no such purifier folder")
    if args.defenses is None:
        return [name for name in DEFENSES if name not in NEEDS_WEIGHTS or args.warm_start is not None]
    needing = [name for name in args.defenses if name in NEEDS_WEIGHTS]
    if needing and args.warm_start is None:
        raise ValueError(f"the {' and '.join(needing)} defense needs --warm-start PATH (weights to start from)")
    return list(dict.fromkeys(args.defenses))


def default_victim(data: str, device: torch.device) -> str:
    """The victim a run gets without ``--victim``: :data:`CPU_VICTIM` for Fashion-MNIST on the CPU (the small
    CNN is hardly hurt by the attacks there), else :data:`~.victims.DEFAULT_VICTIM`."""
    return CPU_VICTIM if (data, device.type) == ("fashion-mnist", "cpu") else DEFAULT_VICTIM


def _victim(name: str | None, width: int | None, data: str, device: torch.device) -> VictimSettings:
    name = default_victim(data, device) if name is None else name
    if name not in VICTIMS:
        raise ValueError(f"--victim {name!r}: unknown victim; known: {', '.join(VICTIMS)}")
    try:
        return VICTIMS[name].with_width(width)
    except ValueError as error:
        raise ValueError(f"--victim-width {width}: {error}") from None


def _set_up(args: argparse.Namespace, command: str, device: torch.device) -> _Run:
    """Check the options, load the data and open the results; raises ValueError / OSError on bad input."""
    defenses = _defenses(args)
    victim = _victim(args.victim, args.victim_width, args.data, device)
    train, test = QUICK_SIZES if args.quick else (None, None)
    data = load_bench_data(args.data, args.root, train=args.train or train, test=args.test or test,
                           seed=SUBSET_SEED, download=args.download, image_size=args.image_size)
    victim_epochs = args.victim_epochs or (QUICK_VICTIM_EPOCHS if args.quick else victim.epochs)
    overrides = fit_overrides(args.quick, args.epochs)
    settings = run_settings(args.preset, overrides, data, victim, victim_epochs, warm_start=args.warm_start)
    for folder in args.merge:
        if not (folder / RESULTS_FILE).is_file():
            raise FileNotFoundError(f"--merge {folder}: no {RESULTS_FILE} in it")
    args.out.mkdir(parents=True, exist_ok=True)
    results = Results(args.out / RESULTS_FILE, settings, resume=args.resume)
    samples = Samples(args.out / SAMPLES_FILE, resume=args.resume)
    for folder in args.merge:
        results.merge(folder)
        samples.merge(folder)
    where = f"{device} ({torch.cuda.get_device_name(device)})" if device.type == "cuda" else str(device)
    results.start_run(command, where)
    context = DefenseContext(data.num_classes, {"preset": args.preset, "progress": not args.quick, **overrides},
                             args.warm_start, validation=(data.test_images, data.test_labels))
    attacks = [*([] if args.no_clean else [CLEAN]), *dict.fromkeys(args.attacks)]
    return _Run(data, victim, attacks, defenses, list(dict.fromkeys(args.seeds)), results, samples, context)


def _figures(run: _Run, out: Path) -> None:
    title = f"{run.data.name}, victim {run.victim.name}"
    accuracy = summarise(run.results, run.attacks, run.defenses, run.seeds, "accuracy")
    ceiling = accuracy.get(CLEAN, {}).get("none", (None, None))[0]
    figures.accuracy_bars(accuracy, out / "accuracy.png", ceiling=ceiling, title=title)
    grid = run.samples.grid()
    grid.update({(attack, "clean"): grid[CLEAN, "clean"] for attack in run.attacks})
    columns = ["clean", "poisoned", *(d for d in run.defenses if d != "none")]
    figures.sample_grid(grid, run.attacks, columns, out / "samples.png", title=title)


def block_name(data: str, victim: str) -> str:
    """The benchmarks-file block a run writes: ``bench`` for the default data and victim."""
    return "bench" if (data, victim) == (DEFAULT_DATA, DEFAULT_VICTIM) else f"bench-{data}-{victim}"


# ----------------------------------------------------------------------------- entry points


def run(args: argparse.Namespace) -> int:
    """Run (or resume) the benchmark described by ``args``; returns the exit status (2 for bad input)."""
    command = args.command_line or shlex.join(["dvae-purify", *sys.argv[1:]])
    with contextlib.ExitStack() as stack:
        try:
            device = stack.enter_context(on_device(args.device))
            bench = _set_up(args, command, device)
        except (ValueError, OSError) as error:
            print(f"{args.prog}: error: {error}", file=sys.stderr)
            return 2
        run_cells(bench.attacks, bench.defenses, bench.seeds, bench.data, bench.results, bench.samples,
                  bench.context, victim=bench.victim, device=device)
    report = render_report(bench.results, bench.attacks, bench.defenses, bench.seeds, command, bench.data.description)
    print(report)
    atomic_write(args.out / REPORT_FILE, report.encode())
    _figures(bench, args.out)
    if not args.no_write:
        write_block(args.benchmarks_file, report, name=args.block or block_name(bench.data.name, bench.victim.name))
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
