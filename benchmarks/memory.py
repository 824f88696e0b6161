"""Peak memory of purifying and of fitting on image files streamed from disk, at two image sizes and growing counts.

For every image side, the largest count's images (random smooth RGB content plus fine noise, so the JPEG
files have realistic sizes, 10 classes) are written once as an ImageFolder tree,
``ROOT/jpeg-<side>px/<class>/<index>.jpg``; a measurement at N images reads the files of index below N
through ``torchvision.datasets.ImageFolder`` (``PILToTensor``, so uint8 tensors). Two things are measured:

* ``PurifiedDataset``: two untrained ``DVAE`` stages wrapped in a ``DVAEPurify``; ``prepare()`` purifies
  every image into a fresh cache, then one ``DataLoader`` pass serves them all. A purified set of at most
  ``IN_MEMORY_BYTES`` (1 GiB of uint8 levels: 87,381 images at 64 px, 7,133 at 224 px) is served from
  memory, so its peak grows with N up to there; a larger one is served from the cache files, and its peak
  should not depend on N;
* ``fit``: ``DVAEPurify.fit(..., stream=True)`` from scratch (both stages, ``--epochs`` each), whose peak
  should not depend on N.

``--sizes`` and ``--fit-sizes`` give the counts per side, e.g. ``224=7200,8000``. Each measurement runs in a
fresh Python process, so the peaks are independent, with the cache root (``$DVAE_TRANSFORM_CACHE``) in a
temporary folder removed afterwards. Its (host) memory is sampled from ``/proc`` every ``SAMPLE_SECONDS``
over the process and all its descendants (the DataLoader workers): **peak RSS** is the largest sum of their
resident sets, which counts pages shared by the forked workers once per process (an upper bound);
**peak PSS** shares those pages out (what they use together). **Main max RSS** is the kernel's exact
high-water mark of the main process alone (``ru_maxrss``); the JSON rows also hold ``worker_max_rss``, the
largest worker's (which counts the pages it shares with the main process).
Seconds cover building the dataset to the end of the work (not the imports); images/s is N / seconds
for ``PurifiedDataset`` and N x epochs x 2 stages / seconds (training images) for ``fit``.

Linux only (``/proc``); a measurement's cache takes N x 3 x side^2 bytes of temporary disk (1.2 GB for
8,000 images of 224 px). Rows go to ``--json`` as soon as each is measured; the table is printed and,
with ``--benchmarks-file``, written between its ``<!-- memory:start/end -->`` markers. From the
repository root (about 30 minutes on 2 CPU cores):

    python benchmarks/memory.py --threads 1 --json memory.json --benchmarks-file BENCHMARKS.md
"""

from __future__ import annotations

import argparse
import functools
import json
import os
import platform
import resource
import shlex
import shutil
import subprocess
import sys
import tempfile
import time
from collections import defaultdict
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
from PIL import Image

if TYPE_CHECKING:
    from torchvision.datasets import ImageFolder

    from dvae_transform import DVAEPurify

CLASSES = 10
TASKS = ("PurifiedDataset", "fit")
SIZES = {64: [2000, 16000], 224: [7200, 8000]}  # PurifiedDataset; at 224 px both above the in-memory threshold
FIT_SIZES = {64: [1000, 2000], 224: [200, 400]}
SAMPLE_SECONDS = 0.1
SERVE_BATCH = 128  # images per batch of the DataLoader pass over the purified set
MIB = 1 << 20


# ----------------------------------------------------------------------------- the image files


def image_folder(root: Path, side: int) -> Path:
    """Where the images of side ``side`` live under ``root``."""
    return root / f"jpeg-{side}px"


def write_images(folder: Path, count: int, side: int) -> None:
    """Images ``0..count-1`` as JPEG files ``folder/<index % CLASSES>/<index>.jpg`` (those already there are kept)."""
    for label in range(CLASSES):
        (folder / str(label)).mkdir(parents=True, exist_ok=True)
    for index in range(count):
        path = folder / str(index % CLASSES) / f"{index:07d}.jpg"
        if path.is_file():
            continue
        rng = np.random.default_rng(index)
        coarse = Image.fromarray(rng.integers(0, 256, (8, 8, 3), dtype=np.uint8))
        smooth = np.asarray(coarse.resize((side, side), Image.Resampling.BICUBIC), dtype=np.float32)
        pixels = np.clip(smooth + rng.normal(0, 8, smooth.shape), 0, 255).astype(np.uint8)
        Image.fromarray(pixels).save(path, quality=90)


def _below(count: int, path: str) -> bool:
    return int(Path(path).stem) < count


def load_images(folder: Path, count: int) -> ImageFolder:
    """The first ``count`` images of ``folder`` as an ImageFolder of (uint8 CHW tensor, label)."""
    from torchvision.datasets import ImageFolder
    from torchvision.transforms import v2

    return ImageFolder(str(folder), transform=v2.PILToTensor(), is_valid_file=functools.partial(_below, count))


# ----------------------------------------------------------------------------- one measurement (in its own process)


def untrained_purifier(args: argparse.Namespace) -> DVAEPurify:
    """Two untrained stages for ``args``' image size, width and latent size, as a purifier."""
    import torch

    from dvae_transform import DVAE, DVAEPurify

    torch.manual_seed(0)
    stages = [DVAE(in_channels=3, image_size=args.image_size, num_classes=CLASSES, width=args.width,
                   latent_dim=args.latent_dim) for _ in range(2)]
    return DVAEPurify(*stages)


def purify_folder(args: argparse.Namespace) -> tuple[int, int]:
    """Purify ``args.images`` files into a fresh cache, then serve them all once: (images served, workers)."""
    from torch.utils.data import DataLoader

    from dvae_transform import PurifiedDataset

    dataset = load_images(image_folder(args.root, args.image_size), args.images)
    purified = PurifiedDataset(dataset, untrained_purifier(args), num_workers=args.workers, progress=False).prepare()
    loader = DataLoader(purified, batch_size=SERVE_BATCH, num_workers=purified.num_workers)
    return sum(len(labels) for _, labels in loader), purified.num_workers


def fit_folder(args: argparse.Namespace) -> tuple[int, int]:
    """A streamed two-stage fit on ``args.images`` files: (training images, workers)."""
    from dvae_transform import DVAEPurify
    from dvae_transform.data.loader import default_workers

    dataset = load_images(image_folder(args.root, args.image_size), args.images)
    DVAEPurify.fit(dataset, num_classes=CLASSES, stream=True, epochs=args.epochs, width=args.width,
                   latent_dim=args.latent_dim, progress=False)
    return 2 * args.epochs * len(dataset), default_workers()  # fit takes no num_workers


def run_task(args: argparse.Namespace) -> dict:
    """This process's measurement: what it did, how long it took and its exact high-water marks."""
    import torch

    torch.set_num_threads(args.threads)
    started = time.perf_counter()
    images, workers = (purify_folder if args.task == "PurifiedDataset" else fit_folder)(args)
    seconds = time.perf_counter() - started
    return {
        "what": args.task, "images": args.images, "seconds": seconds, "images_per_s": images / seconds,
        "workers": workers, "threads": torch.get_num_threads(), "torch": torch.__version__,
        "main_max_rss": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024,
        "worker_max_rss": resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss * 1024,
    }


# ----------------------------------------------------------------------------- sampling a process tree from /proc


def process_tree(pid: int) -> list[int]:
    """``pid`` and all its descendants alive now."""
    children: dict[int, list[int]] = defaultdict(list)
    for entry in os.scandir("/proc"):
        if not entry.name.isdigit():
            continue
        try:
            stat = Path(entry.path, "stat").read_text()
        except OSError:  # gone meanwhile
            continue
        children[int(stat.rsplit(")", 1)[1].split()[1])].append(int(entry.name))
    tree, todo = [], [pid]
    while todo:
        tree.append(todo.pop())
        todo.extend(children[tree[-1]])
    return tree


def rss_and_pss(pid: int) -> tuple[int, int]:
    """Resident and proportional set sizes of ``pid`` in bytes (0, 0 for a process gone meanwhile)."""
    try:
        lines = Path(f"/proc/{pid}/smaps_rollup").read_text().splitlines()[1:]
    except OSError:
        return 0, 0
    fields = {name: int(value) * 1024 for name, value, *_ in (line.split() for line in lines)}
    return fields.get("Rss:", 0), fields.get("Pss:", 0)


def watch(process: subprocess.Popen) -> tuple[int, int]:
    """The largest summed RSS and PSS of ``process``'s tree, sampled until it ends."""
    peak_rss = peak_pss = 0
    while process.poll() is None:
        sizes = [rss_and_pss(pid) for pid in process_tree(process.pid)]
        peak_rss = max(peak_rss, sum(rss for rss, _ in sizes))
        peak_pss = max(peak_pss, sum(pss for _, pss in sizes))
        time.sleep(SAMPLE_SECONDS)
    return peak_rss, peak_pss


def measure(task: str, side: int, count: int, args: argparse.Namespace) -> dict:
    """Run one measurement in a fresh process with its own cache root; its row with the sampled peaks."""
    options = ["--root", str(args.root), "--image-size", str(side), "--width", str(args.width),
               "--latent-dim", str(args.latent_dim), "--threads", str(args.threads), "--epochs", str(args.epochs)]
    if args.workers is not None:
        options += ["--workers", str(args.workers)]
    with tempfile.TemporaryDirectory(prefix="dvae-memory-cache-") as cache:
        result = Path(cache) / "result.json"
        command = [sys.executable, str(Path(__file__).resolve()), "--task", task, "--images", str(count),
                   "--result", str(result), *options]
        env = {**os.environ, "DVAE_TRANSFORM_CACHE": str(Path(cache) / "cache"), "OMP_NUM_THREADS": str(args.threads)}
        process = subprocess.Popen(command, env=env)
        peak_rss, peak_pss = watch(process)
        if process.returncode:
            raise SystemExit(f"measuring {task} on {count} images of {side} px failed with exit code "
                             f"{process.returncode}")
        row = json.loads(result.read_text())
    return {**row, "side": side, "peak_rss": peak_rss, "peak_pss": peak_pss}


# ----------------------------------------------------------------------------- orchestrating and reporting


def table(rows: list[dict]) -> list[str]:
    """One Markdown row per measurement."""
    lines = ["| what | px | images | peak RSS (MiB) | peak PSS (MiB) | main max RSS (MiB) | seconds | images/s |",
             "| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: |"]
    for row in rows:
        lines.append(f"| {row['what']} | {row['side']} | {row['images']:,} | {row['peak_rss'] / MIB:,.0f} | "
                     f"{row['peak_pss'] / MIB:,.0f} | {row['main_max_rss'] / MIB:,.0f} | {row['seconds']:,.1f} | "
                     f"{row['images_per_s']:,.1f} |")
    return lines


def header(argv: list[str], args: argparse.Namespace, rows: list[dict]) -> str:
    """The line above the table: the command, the machine and the settings."""
    first = rows[0]
    workers = ", ".join(f"{what} {count}" for what, count in {row["what"]: row["workers"] for row in rows}.items())
    return (
        f"Command: `python benchmarks/memory.py {shlex.join(argv)}` ({time.strftime('%Y-%m-%d')}, {os.cpu_count()} "
        f"CPU cores, {total_memory() / (1 << 30):.0f} GiB RAM, torch {first['torch']}, torch threads: "
        f"{first['threads']}, DataLoader workers: {workers}; Python {platform.python_version()}). RGB JPEG files "
        f"of {CLASSES} classes; DVAE width {args.width}, latent {args.latent_dim}; "
        f"fit: {args.epochs} epoch(s) per stage. Peak RSS / PSS: the process and its DataLoader workers together, "
        f"sampled every {SAMPLE_SECONDS} s; main max RSS: the main process's exact high-water mark."
    )


def total_memory() -> int:
    """Bytes of RAM (``MemTotal`` of ``/proc/meminfo``)."""
    line = next(line for line in Path("/proc/meminfo").read_text().splitlines() if line.startswith("MemTotal:"))
    return int(line.split()[1]) * 1024


def run_all(argv: list[str], args: argparse.Namespace) -> None:
    """Write the images, measure every task at every size, report."""
    from dvae_transform.files import atomic_write

    rows: list[dict] = []
    for side in sorted({*args.sizes, *args.fit_sizes}):
        started = time.perf_counter()
        count = max(args.sizes.get(side, []) + args.fit_sizes.get(side, []))
        write_images(image_folder(args.root, side), count, side)
        print(f"{count} images in {image_folder(args.root, side)} ({time.perf_counter() - started:.0f} s)",
              file=sys.stderr, flush=True)
        for task, sizes in zip(TASKS, (args.sizes, args.fit_sizes)):
            for count in sizes.get(side, []):
                rows.append(measure(task, side, count, args))
                print(f"memory: {rows[-1]}", file=sys.stderr, flush=True)
                if args.json is not None:
                    atomic_write(args.json, json.dumps(rows, indent=2).encode())
    block = "\n".join([header(argv, args, rows), "", *table(rows)])
    print(block)
    if args.benchmarks_file is not None:
        from dvae_transform.evaluation.report import write_block

        write_block(args.benchmarks_file, block, name="memory")


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", type=side_counts, nargs="+", default=SIZES,
                        help="PurifiedDataset's image counts per side, e.g. 224=7200,8000 (default: %(default)s)")
    parser.add_argument("--fit-sizes", type=side_counts, nargs="+", default=FIT_SIZES,
                        help="the streamed fit's image counts per side (default: %(default)s)")
    parser.add_argument("--width", type=int, default=2, help="DVAE stem width of both stages")
    parser.add_argument("--latent-dim", type=int, default=4, help="DVAE latent channels")
    parser.add_argument("--epochs", type=int, default=1, help="fit epochs per stage (1: a 2-epoch fit)")
    parser.add_argument("--threads", type=int, default=usable_cpus(), help="torch threads per measurement")
    parser.add_argument("--workers", type=int,
                        help="PurifiedDataset's DataLoader workers (default: the library's; fit takes no such option)")
    parser.add_argument("--root", type=Path, help="where the image files go (default: a temporary folder)")
    parser.add_argument("--keep", action="store_true", help="keep the temporary image folder")
    parser.add_argument("--json", type=Path, help="write every measured row here as it goes")
    parser.add_argument("--benchmarks-file", type=Path, help="write the table into this file's memory block")
    parser.add_argument("--task", choices=TASKS, help=argparse.SUPPRESS)
    parser.add_argument("--image-size", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--images", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--result", type=Path, help=argparse.SUPPRESS)
    return parser


def side_counts(text: str) -> tuple[int, list[int]]:
    """An ``argparse`` type: ``SIDE=N,N,...`` as (side, counts)."""
    side, _, counts = text.partition("=")
    try:
        return int(side), [int(count) for count in counts.split(",")]
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected SIDE=N,N,... (e.g. 224=7200,8000), got {text!r}") from None


def usable_cpus() -> int:
    """The CPUs this process may run on (torch's default thread count)."""
    return len(os.sched_getaffinity(0))


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    args = _parser().parse_args(argv)
    args.sizes, args.fit_sizes = (dict(sizes) if isinstance(sizes, list) else sizes
                                  for sizes in (args.sizes, args.fit_sizes))
    if args.task is not None:
        args.result.write_text(json.dumps(run_task(args)))
        return 0
    temporary = args.root is None
    if temporary:
        args.root = Path(tempfile.mkdtemp(prefix="dvae-memory-images-"))
    try:
        run_all(argv, args)
    finally:
        if temporary and not args.keep:
            shutil.rmtree(args.root, ignore_errors=True)
        elif temporary:
            print(f"images kept in {args.root}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
