"""``dvae-purify demo``: the defense end to end on the embedded MNIST digits.

Poisons the 4,000 training digits with class-wise patches (LSP in its MNIST setting,
:data:`~.mnist.MNIST_ATTACK_SETTINGS`), fits D-VAE with a
preset, and trains the small victim CNN on clean, poisoned and purified data; the
clean-test accuracies show what the poison does and what purification recovers.
The fit gets the clean test split as its ``validation`` set: its shortcut check compares with it and
refits from another seed when a shortcut is left (one selection among at most two fits by a tiny probe,
never by the victim). The checks are printed beside the accuracies.
Writes ``grid.png`` (rows: clean / poisoned / purified) and ``demo.json``.
"""

from __future__ import annotations

import argparse
import json
import os
import time
from pathlib import Path

import torch
from torchvision.utils import save_image

from ..config import PRESETS
from ..transforms import DVAEPurify
from .attacks import lsp
from .mnist import MNIST_ATTACK_SETTINGS, load_mnist32
from .report import write_block
from .victims import accuracy, train_victim

GRID_COLUMNS = 10


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Options of the ``demo`` subcommand."""
    parser.add_argument("--out", type=Path, default=Path("dvae_demo"), help="folder for grid.png and demo.json")
    parser.add_argument("--preset", choices=sorted(PRESETS), default="fast", help="D-VAE training preset")
    parser.add_argument("--epochs", type=int, default=None, help="override the preset's epochs per stage")
    parser.add_argument("--seed", type=int, default=0, help="seed of the poison, the fit and the victims")
    parser.add_argument("--no-progress", action="store_true", help="hide progress bars")
    parser.add_argument("--benchmarks-file", type=Path, default=None,
                        help="also write the accuracies and timings into this markdown file's demo block")
    parser.set_defaults(command_line="dvae-purify demo")


def _grid(clean: torch.Tensor, poisoned: torch.Tensor, purified: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """One example per class, in class order, for each row."""
    picks = torch.stack([torch.nonzero(labels == k)[0, 0] for k in range(GRID_COLUMNS)])
    return torch.cat([clean[picks], poisoned[picks], purified[picks]])


def run(args: argparse.Namespace) -> int:
    """Run the demo and print accuracies and timings."""
    timings: dict[str, float] = {}
    started = time.perf_counter()
    data = load_mnist32()
    poisoned = lsp(data.train_images, data.train_labels, seed=args.seed, **MNIST_ATTACK_SETTINGS["lsp"])
    timings["poison_s"] = time.perf_counter() - started

    overrides = {} if args.epochs is None else {"epochs": args.epochs}
    started = time.perf_counter()
    purifier = DVAEPurify.fit(
        (poisoned, data.train_labels), preset=args.preset, seed=args.seed, progress=not args.no_progress,
        validation=(data.test_images, data.test_labels), **overrides
    )
    timings["fit_s"] = time.perf_counter() - started
    started = time.perf_counter()
    purified = purifier.purify(poisoned, data.train_labels)
    timings["purify_s"] = time.perf_counter() - started

    results: dict[str, float] = {}
    for name, images in (("clean", data.train_images), ("poisoned", poisoned), ("purified", purified)):
        started = time.perf_counter()
        victim = train_victim(images, data.train_labels, seed=args.seed)
        results[name] = accuracy(victim, data.test_images, data.test_labels)
        timings[f"victim_{name}_s"] = time.perf_counter() - started
        print(f"victim trained on {name:>8} data: clean test accuracy {results[name]:.1%}", flush=True)
    checks = {stage: report.to_dict() for stage, report in purifier.checks.items()}
    for stage, report in purifier.checks.items():
        print(f"{stage:>6} of the fit, {report}", flush=True)

    args.out.mkdir(parents=True, exist_ok=True)
    save_image(_grid(data.train_images, poisoned, purified, data.train_labels), args.out / "grid.png",
               nrow=GRID_COLUMNS, padding=2, pad_value=1.0)
    summary = {"preset": args.preset, "seed": args.seed, "accuracy": results, "timings_s": timings, "checks": checks}
    (args.out / "demo.json").write_text(json.dumps(summary, indent=2))
    total = sum(timings.values())
    parts = ", ".join(f"{key[:-2]} {value:.1f} s" for key, value in timings.items())
    print(f"timings: {parts}; total {total:.1f} s")
    print(f"wrote {args.out / 'grid.png'} (rows: clean / poisoned / purified) and {args.out / 'demo.json'}")
    if args.benchmarks_file is not None:
        write_block(args.benchmarks_file, _report(summary, args.command_line), name="demo")
    return 0


def _report(summary: dict, command: str) -> str:
    accuracy, timings = summary["accuracy"], summary["timings_s"]
    lines = [
        f"Command: `{command}` ({time.strftime('%Y-%m-%d')}, {os.cpu_count()} CPU cores, "
        f"torch {torch.__version__}). LSP poison (MNIST setting: class-wise, L2 1.6), preset `{summary['preset']}`, "
        f"seed {summary['seed']}.",
        "",
        "| victim trained on | clean-test accuracy |",
        "| --- | --- |",
        *[f"| {name} data | {value:.3f} |" for name, value in accuracy.items()],
        "",
        "| step | seconds |",
        "| --- | --- |",
        *[f"| {name[:-2]} | {value:.1f} |" for name, value in timings.items()],
        f"| total | {sum(timings.values()):.1f} |",
    ]
    return "\n".join(lines)
