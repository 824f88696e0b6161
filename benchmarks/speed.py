"""Throughput of fitting and purification at 32, 64 and 224 px: images/s, achieved TFLOP/s, share of peak.

Every row times the public API on random 3-channel images of 10 classes: ``DVAEPurify.fit(...,
progress=False)`` (the median of its per-epoch ``images_per_s``, leaving out each stage's first epoch when
there are more) and ``purifier.purify`` (best of ``--repeats``), so it measures whatever the loop becomes.
FLOPs per image are counted with ``torch.utils.flop_counter.FlopCounterMode``: one training step (forward,
loss and backward of a meta-device ``DVAE``; the optimiser's elementwise work is not counted) and one
purification of two images. The peak is measured on the device as dense matmul throughput at the run's
precision (fp32 with TF32 allowed, as cuDNN runs convolutions by default, or bf16), unless
``--peak-tflops`` gives it.

``--compare-ref REV`` also measures the code of a git revision (checked out in a temporary ``git
worktree``), or of a folder holding another version's source (where there is no git history, e.g. made
with ``git archive REV | tar -x -C DIR``), imported through ``PYTHONPATH`` by this same script, one process
after the other, and puts the two side by side. Each row goes to ``--json`` as soon as it is measured;
the table goes between the ``<!-- speed:start/end -->`` markers of ``--benchmarks-file``. From the
repository root:

    python benchmarks/speed.py --device cuda --compare-ref main --json speed.json
    python benchmarks/speed.py --device cpu --sizes 32 64 --presets fast --images 256 --compare-ref main
"""

from __future__ import annotations

import argparse
import functools
import json
import os
import platform
import shlex
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
ROW = "speed-row "  # prefix of the lines a measuring process prints


# ----------------------------------------------------------------------------- measuring (one process per code version)


def _seconds(device, function) -> float:
    import torch

    if device.type == "cuda":
        torch.cuda.synchronize(device)
    started = time.perf_counter()
    function()
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    return time.perf_counter() - started


def peak_flops(device, precision: str) -> float:
    """Dense matmul FLOP/s measured on ``device`` (fp32 with TF32 allowed, or bf16), best of five."""
    import torch

    side = 4096 if device.type == "cuda" else 1024
    dtype = torch.bfloat16 if precision == "bf16" else torch.float32
    a, b = (torch.randn(side, side, device=device, dtype=dtype) for _ in range(2))
    tf32 = torch.backends.cuda.matmul.allow_tf32
    torch.backends.cuda.matmul.allow_tf32 = True
    try:
        a @ b
        repeats = 20 if device.type == "cuda" else 4
        best = min(_seconds(device, lambda: [a @ b for _ in range(repeats)]) for _ in range(5))
    finally:
        torch.backends.cuda.matmul.allow_tf32 = tf32
    return 2 * side**3 * repeats / best


def training_flops(size: int, width: int, latent_dim: int) -> float:
    """FLOPs of one training step per image, counted on the meta device (nothing is computed)."""
    import torch
    from torch.utils.flop_counter import FlopCounterMode

    from dvae_transform import DVAE
    from dvae_transform.training.losses import dvae_loss

    with torch.device("meta"):
        model = DVAE(in_channels=3, image_size=size, num_classes=10, width=width, latent_dim=latent_dim)
        images, labels = torch.rand(2, 3, size, size), torch.tensor([0, 1])
    with FlopCounterMode(display=False) as counter:
        output = model(images, labels, sample=True)
        dvae_loss(output, images, kl_bound=1.0, penalize_perturbation=True).total.backward()
    return counter.get_total_flops() / 2


def measure(args: argparse.Namespace) -> Iterator[dict]:
    """The rows of this process's code version: the peak, then fit and purify per size and preset."""
    import torch
    from accelerate import Accelerator
    from torch.utils.flop_counter import FlopCounterMode

    from dvae_transform import PRESETS, DVAEPurify

    device = torch.device(args.device)
    precision = args.fit_options.get("mixed_precision", "no")
    peak = args.peak_tflops * 1e12 if args.peak_tflops else peak_flops(device, precision)
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else platform.processor() or "CPU"
    yield {"task": "peak", "flops": peak, "device": f"{name} ({os.cpu_count()} CPU cores, "
           f"{torch.get_num_threads()} torch threads)", "torch": torch.__version__}
    accelerator = Accelerator(cpu=device.type == "cpu", mixed_precision=precision)
    for size in args.sizes:
        generator = torch.Generator().manual_seed(size)
        images = torch.randint(0, 256, (args.images, 3, size, size), dtype=torch.uint8, generator=generator)
        labels = torch.arange(args.images) % 10
        for preset in args.presets:
            config = PRESETS[preset]
            purifier = DVAEPurify.fit((images, labels), num_classes=10, preset=preset, epochs=args.epochs,
                                      accelerator=accelerator, progress=False, **args.fit_options)
            history = purifier.history
            steady = [record["images_per_s"] for record in history if record["epoch"] > 1] or [
                record["images_per_s"] for record in history]
            fit_rate = statistics.median(steady)
            flops = training_flops(size, config.width, config.latent_dim)
            yield {"task": "fit", "preset": preset, "size": size, "images_per_s": fit_rate, "flop_per_image": flops}
            purifier.purify(images[:2], labels[:2])  # warm-up
            with FlopCounterMode(display=False) as counter:
                purifier.purify(images[:2], labels[:2])
            run = functools.partial(purifier.purify, images, labels)
            best = min(_seconds(device, run) for _ in range(args.repeats))
            yield {"task": "purify", "preset": preset, "size": size, "images_per_s": args.images / best,
                   "flop_per_image": counter.get_total_flops() / 2}


# ----------------------------------------------------------------------------- orchestrating and reporting


def _worker_command(argv: list[str]) -> list[str]:
    return [sys.executable, str(Path(__file__).resolve()), "--worker", *argv]


def run_version(label: str, source: Path, argv: list[str], rows: list[dict], json_path: Path | None) -> None:
    """Measure the package at ``source`` in a fresh process; rows are appended (and saved) as they come."""
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(source), os.environ.get("PYTHONPATH", "")])}
    process = subprocess.Popen(_worker_command(argv), cwd=source, env=env, stdout=subprocess.PIPE, text=True)
    for line in process.stdout:
        if not line.startswith(ROW):
            continue
        rows.append({"version": label, **json.loads(line[len(ROW):])})
        print(f"{label}: {rows[-1]}", file=sys.stderr, flush=True)
        if json_path is not None:
            from dvae_transform.files import atomic_write

            atomic_write(json_path, json.dumps(rows, indent=2).encode())
    if process.wait():
        raise SystemExit(f"measuring {label} ({source}) failed with exit code {process.returncode}")


def table(rows: list[dict], labels: list[str]) -> list[str]:
    """One Markdown row per (task, preset, size): this version's numbers, then the reference's and the speed-up."""
    peaks = {row["version"]: row["flops"] for row in rows if row["task"] == "peak"}
    found = {(row["version"], row["task"], row["preset"], row["size"]): row for row in rows if row["task"] != "peak"}
    header = "| what | px | GFLOP / image | images/s | TFLOP/s | % of peak |"
    rule = "| --- | ---: | ---: | ---: | ---: | ---: |"
    if len(labels) > 1:
        header += f" images/s at `{labels[1]}` | TFLOP/s at `{labels[1]}` | speed-up |"
        rule += " ---: | ---: | ---: |"
    lines = [header, rule]
    keys = sorted({key[1:] for key in found if key[0] == labels[0]}, key=lambda key: (key[2], key[0], key[1]))
    for task, preset, size in keys:
        cells = []
        for label in labels:
            row = found.get((label, task, preset, size))
            if row is None:
                cells.append(None)
                continue
            tflops = row["images_per_s"] * row["flop_per_image"] / 1e12
            cells.append((row["images_per_s"], tflops, 100 * tflops * 1e12 / peaks[label], row["flop_per_image"]))
        rate, tflops, share, flops = cells[0]
        line = f"| {task} `{preset}` | {size} | {flops / 1e9:.2f} | {rate:,.0f} | {tflops:.3f} | {share:.1f} |"
        if len(labels) > 1:
            ref = cells[1]
            line += " - | - | - |" if ref is None else f" {ref[0]:,.0f} | {ref[1]:.3f} | {rate / ref[0]:.2f}x |"
        lines.append(line)
    return lines


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", choices=("cpu", "cuda"), default="cpu")
    parser.add_argument("--sizes", type=int, nargs="+", default=[32, 64, 224], help="image sides in pixels")
    parser.add_argument("--presets", nargs="+", default=["paper", "fast"])
    parser.add_argument("--images", type=int, default=1024, help="images per size (fit and purify)")
    parser.add_argument("--epochs", type=int, default=2, help="epochs per stage")
    parser.add_argument("--repeats", type=int, default=3, help="timed purifications (best kept)")
    parser.add_argument("--fit-option", dest="fit_options", action="append", default=[], metavar="KEY=VALUE",
                        help="a FitConfig field for every fit, e.g. mixed_precision=bf16 (VALUE parsed as JSON)")
    parser.add_argument("--peak-tflops", type=float, help="the device's peak instead of the measured matmul rate")
    parser.add_argument("--compare-ref", metavar="REV", help="also measure this git revision (or source folder)")
    parser.add_argument("--json", type=Path, help="write every measured row here as it goes")
    parser.add_argument("--benchmarks-file", type=Path, default=ROOT / "BENCHMARKS.md")
    parser.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    return parser


def _option(text: str) -> tuple[str, object]:
    key, _, value = text.partition("=")
    try:
        return key, json.loads(value)
    except json.JSONDecodeError:
        return key, value


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    args = _parser().parse_args(argv)
    args.fit_options = dict(_option(text) for text in args.fit_options)
    if args.worker:
        for row in measure(args):
            print(ROW + json.dumps(row), flush=True)
        return 0
    worker_argv = [a for a in argv if a not in ("--compare-ref", args.compare_ref)] if args.compare_ref else argv
    rows: list[dict] = []
    labels = ["this checkout"]
    run_version(labels[0], ROOT, worker_argv, rows, args.json)
    if args.compare_ref and Path(args.compare_ref).is_dir():
        labels.append(args.compare_ref)
        run_version(args.compare_ref, Path(args.compare_ref).resolve(), worker_argv, rows, args.json)
    elif args.compare_ref:
        labels.append(args.compare_ref)
        with tempfile.TemporaryDirectory(prefix="dvae-speed-ref-") as folder:
            subprocess.run(["git", "-C", str(ROOT), "worktree", "add", "--detach", folder, args.compare_ref],
                           check=True, capture_output=True)
            try:
                run_version(args.compare_ref, Path(folder), worker_argv, rows, args.json)
            finally:
                subprocess.run(["git", "-C", str(ROOT), "worktree", "remove", "--force", folder], check=True)
    peak = next(row for row in rows if row["task"] == "peak" and row["version"] == labels[0])
    options = " ".join(f"{key}={value}" for key, value in args.fit_options.items()) or "none"
    lines = [
        f"Command: `python benchmarks/speed.py {shlex.join(argv)}` ({time.strftime('%Y-%m-%d')}, {peak['device']}, "
        f"torch {peak['torch']}, Python {platform.python_version()}; {args.images} random 3-channel images of 10 "
        f"classes per size, epochs per stage: {args.epochs}, fit options: {options}; peak "
        f"{peak['flops'] / 1e12:.2f} TFLOP/s{' (given)' if args.peak_tflops else ' (measured dense matmul)'}).",
        "",
        *table(rows, labels),
    ]
    block = "\n".join(lines)
    print(block)
    from dvae_transform.evaluation.report import write_block

    write_block(args.benchmarks_file, block, name="speed")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
