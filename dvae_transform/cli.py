"""The ``dvae-purify`` command line.

Subcommands:

* ``purify``: read a dataset (image folder, ``save_to_disk`` folder or ``.npz``), purify it with
  saved weights or a purifier fitted on the spot through ``PurifiedDataset`` (so a killed run resumes
  from the cache, and an ``accelerate launch`` shares the work), and write it back in the same format.
* ``check``: say whether a labelled dataset still carries a learnable class shortcut
  (:func:`dvae_transform.check_shortcut`); exit status 0: none found, 1: found, 2: cannot tell.
* ``cache``: list or clear the on-disk cache of purified tensors.
* ``demo`` and ``bench``: thin wiring to :mod:`dvae_transform.evaluation.demo` and
  :mod:`dvae_transform.evaluation.bench`, imported only when used.

Bad input, files or settings (``ValueError``, ``InputTypeError``, ``OSError``) end with one line
``dvae-purify COMMAND: error: ...`` and exit status 1; bad options exit with 2; anything else is a bug
and keeps its traceback. An unwritable cache (read-only, disk full) gives a warning and the purified
images are kept in memory, so ``purify`` still writes its output. The output is staged and moved into
place (:mod:`dvae_transform.data.output`), so a failed write leaves an earlier output as it was.
Offline, ``--weights`` reads the Hugging Face cache; a repo not in it is an error naming it.
"""

from __future__ import annotations

import argparse
import importlib
import shlex
import sys
import time
from collections.abc import Sequence
from pathlib import Path

import torch
from accelerate import Accelerator

from .cache.maintenance import cache_info, clear_cache
from .cache.store import default_cache_dir
from .config import PRESETS
from .data.formats import FORMATS, output_path, read_dataset, write_dataset
from .data.output import check_apart
from .deprecation import warn_renamed
from .distributed import is_main_process, state_kept
from .log import datasets_bars, warn
from .metadata import __version__
from .purified_dataset import SHARD_SIZE, PurifiedDataset
from .shortcut import CANNOT_TELL, SHORTCUT, check_shortcut
from .transforms import DVAEPurify
from .validation import InputTypeError, positive_int

PLUGIN_COMMANDS = {
    "demo": "run the end-to-end demonstration (poison, purify, train, compare)",
    "bench": "benchmark D-VAE against the baseline defenses",
}


# ----------------------------------------------------------------------------- parser


def _device(value: str) -> torch.device:
    """An argparse type: a torch device string (``cpu``, ``cuda:1``, ``mps``), checked by ``torch.device``."""
    try:
        return torch.device(value)
    except RuntimeError as error:
        raise argparse.ArgumentTypeError(f"not a torch device: {value!r} ({error})") from error


# The FitConfig fields that --fit-epochs, --fit-width, --fit-latent-dim and --fit-batch-size set, and their help
FIT_SETTINGS = {"epochs": "epochs per stage", "width": "network stem width", "latent_dim": "latent channels",
                "batch_size": "images per training step"}


def add_purifier_arguments(parser: argparse.ArgumentParser) -> None:
    """The purifier's options, shared by ``dvae-purify purify`` and the training scripts of ``examples/``:
    ``--weights REPO_OR_DIR | --fit``, ``--preset`` and the ``--fit-*`` settings (:func:`purifier_from_args`)."""
    group = parser.add_argument_group("purifier", "saved weights (--weights), or a D-VAE fitted on the data (--fit)")
    source = group.add_mutually_exclusive_group(required=True)
    source.add_argument("--weights", metavar="REPO_OR_DIR",
                        help="purifier weights: a folder written by DVAEPurify.save_pretrained, a Hugging Face "
                             "Hub repo id (org/name) or an official pretrained name "
                             "(dvae_transform.list_pretrained())")
    source.add_argument("--fit", action="store_true", help="fit a purifier on the data (--data) first")
    group.add_argument("--preset", choices=sorted(PRESETS), default="fast",
                       help="training preset for --fit: 'fast' (CPU-friendly) or 'paper' (published settings); "
                            "default: fast")
    for field, meaning in FIT_SETTINGS.items():
        group.add_argument(f"--fit-{field.replace('_', '-')}", type=positive_int, metavar="N",
                           help=f"--fit: {meaning} (default: the preset's)")


def purifier_from_args(args: argparse.Namespace, data: object, **fit_options: object) -> DVAEPurify:
    """The purifier that :func:`add_purifier_arguments`' options ask for: loaded, or fitted on ``data`` (with
    ``fit_options``, e.g. ``seed=``, passed to :meth:`DVAEPurify.fit`)."""
    if args.weights is not None:
        return DVAEPurify.from_pretrained(args.weights)
    settings = {field: value for field in FIT_SETTINGS if (value := getattr(args, f"fit_{field}")) is not None}
    return DVAEPurify.fit(data, preset=args.preset, **settings, **fit_options)


def script_parser(description: str, *, data: str, epochs: int, batch_size: int) -> argparse.ArgumentParser:
    """A training script's options (see ``examples/``): ``--data`` (``data`` is its help), the purifier's
    (:func:`add_purifier_arguments`), the classifier's ``--epochs`` and ``--batch-size`` (defaults) and ``--seed``."""
    parser = argparse.ArgumentParser(description=description)
    parser.add_argument("--data", help=data)
    add_purifier_arguments(parser)
    parser.add_argument("--epochs", type=positive_int, default=epochs, help=f"classifier epochs (default: {epochs})")
    parser.add_argument("--batch-size", type=positive_int, default=batch_size,
                        help=f"classifier batch size (default: {batch_size})")
    parser.add_argument("--seed", type=int, default=0, help="seed for fitting and training (default: 0)")
    return parser


def _add_purify_parser(commands: argparse._SubParsersAction) -> None:
    parser = commands.add_parser(
        "purify", help="purify a dataset and write it in the same format",
        description="Read a dataset, remove unlearnable perturbations with D-VAE and write the purified copy in the "
                    f"input's format ({', '.join(FORMATS)}): an image folder gets the same class sub-folders and "
                    "file names as PNG, a save_to_disk dataset gets its image column replaced, an .npz gets uint8 "
                    "images in the input layout and the labels.")
    parser.add_argument("--data", required=True, type=Path,
                        help="input: an image folder (one sub-folder per class), a folder written by "
                             "datasets' save_to_disk, or an .npz with 'images' (NCHW/NHWC/NHW, uint8 or float "
                             "in [0, 1]) and 'labels'")
    parser.add_argument("--out", required=True, type=Path,
                        help="output folder (for an .npz input it may also name the output .npz file)")
    add_purifier_arguments(parser)
    for old in ("--epochs", "--width", "--latent-dim"):  # renamed --fit-*: see _old_spellings
        parser.add_argument(old, type=positive_int, help=argparse.SUPPRESS)
    parser.add_argument("--batch-size", type=positive_int, metavar="N",
                        help="images per purification micro-batch (default: about 1 GiB of activations, 256 at "
                             "32 px; dvae_transform.purify.default_batch_size)")
    parser.add_argument("--shard-size", type=positive_int, default=SHARD_SIZE, metavar="N",
                        help=f"images per cache shard: a killed run resumes from its finished shards "
                             f"(default: {SHARD_SIZE})")
    parser.add_argument("--image-column", help="image column of a save_to_disk dataset (default: image/img/...)")
    parser.add_argument("--label-column", help="label column of a save_to_disk dataset (default: label/labels/...)")
    parser.add_argument("--split", help="split of a saved DatasetDict to purify (default: train); "
                                        "the other splits are written unchanged")
    parser.add_argument("--num-classes", type=positive_int,
                        help="number of classes (default: from the weights, the folder's classes, the dataset's "
                             "ClassLabel, or max(label) + 1)")
    parser.add_argument("--device", type=_device, default="cuda" if torch.cuda.is_available() else "cpu",
                        help="a torch device: cpu, cuda, cuda:1, mps, ... (default: cuda when available, else cpu)")
    parser.add_argument("--seed", type=int, default=0, help="seed for fitting and for latent sampling (default: 0)")
    parser.add_argument("--sample", action="store_true",
                        help="sample the latent when purifying (as the authors do) instead of using its mean")
    parser.add_argument("--save-weights", type=Path, metavar="DIR",
                        help="also save the purifier's weights here (loadable with --weights DIR)")
    parser.add_argument("--overwrite", action="store_true",
                        help="replace the output of an earlier dvae-purify run at --out as a whole (a folder "
                             "holding other files is refused, never deleted) or an existing .npz file")
    parser.add_argument("--no-progress", dest="progress", action="store_false", help="hide progress bars")
    parser.set_defaults(handler=_purify_command)


def _add_cache_parser(commands: argparse._SubParsersAction) -> None:
    summary = "List the entries of the on-disk cache of purified tensors, or remove them."
    parser = commands.add_parser("cache", help="list or clear the cache of purified tensors", description=summary)
    parser.add_argument("action", nargs="?", choices=("info", "clear"), default="info",
                        help="'info' prints a table of entries (default); 'clear' removes them and prints "
                             "the bytes freed")
    parser.add_argument("--cache-dir", type=Path, metavar="DIR",
                        help=f"cache folder (default: $DVAE_TRANSFORM_CACHE or {default_cache_dir()})")
    parser.add_argument("--key", help="act on this entry only (a key from 'cache info')")
    parser.set_defaults(handler=_cache_command)


def _add_check_parser(commands: argparse._SubParsersAction) -> None:
    parser = commands.add_parser(
        "check", help="say whether a labelled dataset still carries a learnable class shortcut",
        description="Train a tiny probe on the dataset and say whether its labels can be learned from a shortcut "
                    "(dvae_transform.check_shortcut). Exit status: 0 no shortcut found, 1 shortcut found, 2 cannot "
                    "tell (too few images per class, one class, or an unreadable input).")
    parser.add_argument("data", type=Path, help="an image folder (one sub-folder per class), a folder written by "
                                                "datasets' save_to_disk, or an .npz with 'images' and 'labels'")
    parser.add_argument("--clean", type=Path, help="a clean labelled dataset of the same kind (e.g. a validation "
                                                   "split), in any of the same formats: the check then compares")
    parser.add_argument("--image-column", help="image column of a save_to_disk dataset")
    parser.add_argument("--label-column", help="label column of a save_to_disk dataset")
    parser.add_argument("--split", help="split of a saved DatasetDict (default: train)")
    parser.add_argument("--seed", type=int, default=0, help="seed of the probe (default: 0)")
    parser.set_defaults(handler=_check_command, error_status=2)


def _add_plugin_parser(commands: argparse._SubParsersAction, name: str, summary: str) -> None:
    # The options belong to the plugin module; they are parsed when the command runs (see _plugin_command).
    parser = commands.add_parser(name, help=summary, add_help=False, description=summary)
    parser.set_defaults(handler=_plugin_command, plugin=name)


def build_parser() -> argparse.ArgumentParser:
    """The ``dvae-purify`` argument parser."""
    parser = argparse.ArgumentParser(prog="dvae-purify", description="Remove unlearnable-example perturbations "
                                     "from image datasets with D-VAE (Yu et al., ICML 2024). Run "
                                     "'dvae-purify COMMAND --help' for a command's options.")
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    _add_purify_parser(commands)
    _add_check_parser(commands)
    _add_cache_parser(commands)
    for name, summary in PLUGIN_COMMANDS.items():
        _add_plugin_parser(commands, name, summary)
    return parser


# ----------------------------------------------------------------------------- purify


def _seconds(start: float) -> str:
    return f"{time.perf_counter() - start:.2f} s"


def _get_purifier(args: argparse.Namespace, images: torch.Tensor, labels: torch.Tensor,
                  num_classes: int | None, accelerator: Accelerator) -> DVAEPurify:
    start = time.perf_counter()
    purifier = purifier_from_args(args, (images, labels), num_classes=args.num_classes or num_classes,
                                  accelerator=accelerator, progress=args.progress, seed=args.seed)
    if args.weights is not None:
        if args.num_classes is not None and args.num_classes != purifier.num_classes:
            raise ValueError(f"--num-classes {args.num_classes} does not match the weights' {purifier.num_classes}")
        if num_classes is not None and num_classes > purifier.num_classes:
            raise ValueError(f"{args.data} has {num_classes} classes but the weights {args.weights} were fitted "
                             f"for {purifier.num_classes}; use weights for these classes, or --fit")
        _report(accelerator, f"loaded purifier from {args.weights} in {_seconds(start)}")
    else:
        _report(accelerator, f"fitted purifier ({args.preset} preset) in {_seconds(start)}")
    if args.save_weights is not None:
        purifier.save_pretrained(args.save_weights)
        _report(accelerator, f"saved weights to {args.save_weights}")
    return purifier


def _report(accelerator: Accelerator, message: str) -> None:
    """Print ``message`` once per launch: on the main process."""
    if accelerator.is_main_process:
        print(message)


def _old_spellings(args: argparse.Namespace) -> None:
    """``purify --epochs/--width/--latent-dim``, and ``--batch-size`` as the training batch: until the next release."""
    for field in ("epochs", "width", "latent_dim"):
        old, new = f"--{field.replace('_', '-')}", f"--fit-{field.replace('_', '-')}"
        if getattr(args, field) is not None:
            if getattr(args, f"fit_{field}") is not None:
                raise ValueError(f"{old} is the old name of {new}: give {new} only")
            warn_renamed("dvae-purify purify", old, new)
            setattr(args, f"fit_{field}", getattr(args, field))
    if args.fit and args.batch_size is not None and args.fit_batch_size is None:
        warn("dvae-purify purify: --batch-size is the purification micro-batch; with --fit it also sets the training "
             "batch, until the next release: pass --fit-batch-size", FutureWarning)
        args.fit_batch_size = args.batch_size


def _purify_command(args: argparse.Namespace) -> int:
    _old_spellings(args)
    device = args.device
    if device.type == "cuda" and (device.index or 0) >= torch.cuda.device_count():
        raise ValueError(f"--device {device}: no such CUDA device ({torch.cuda.device_count()} available)")
    accelerator = Accelerator(cpu=device.type == "cpu")
    start = time.perf_counter()
    images, labels, meta = read_dataset(args.data, image_column=args.image_column, label_column=args.label_column,
                                        split=args.split, progress=args.progress)
    shape = "x".join(str(size) for size in images.shape[1:])
    _report(accelerator, f"read {len(images)} images ({shape}) from {args.data} [{meta.format}] in {_seconds(start)}")
    target = output_path(args.out, meta, overwrite=args.overwrite)
    if args.save_weights is not None:
        written = {"the input (--data)": meta.source, "the output (--out)": target}
        check_apart(args.save_weights, "--save-weights", written)

    purifier = _get_purifier(args, images, labels, meta.num_classes, accelerator)
    micro_batch = {} if args.batch_size is None else {"batch_size": args.batch_size}
    device = device if accelerator.num_processes == 1 else accelerator.device
    purifier = purifier.replace(device=device, seed=args.seed, sample=args.sample, **micro_batch)

    start = time.perf_counter()
    purified = PurifiedDataset((images, labels), purifier, accelerator=accelerator, progress=args.progress,
                               shard_size=args.shard_size).prepare()
    seconds = time.perf_counter() - start
    rate = len(images) / max(seconds, 1e-9)
    _report(accelerator, f"purified {len(images)} images in {seconds:.2f} s ({rate:.0f} images/s)")
    if not is_main_process(accelerator):
        return 0
    print(f"purified set: {check_shortcut(purified.stored_images, labels, seed=args.seed)}")

    start = time.perf_counter()
    written = write_dataset(args.out, purified.stored_images, labels, meta, key=purified.fingerprint,
                            overwrite=args.overwrite, progress=args.progress)
    print(f"wrote {written} [{meta.format}] in {_seconds(start)}")
    return 0


# ----------------------------------------------------------------------------- check


def _read_labelled(args: argparse.Namespace, path: Path) -> tuple[torch.Tensor, torch.Tensor]:
    images, labels, _ = read_dataset(path, image_column=args.image_column, label_column=args.label_column,
                                     split=args.split, progress=False)
    return images, labels


def _check_command(args: argparse.Namespace) -> int:
    images, labels = _read_labelled(args, args.data)
    clean = None if args.clean is None else _read_labelled(args, args.clean)
    report = check_shortcut((images, labels), clean=clean, seed=args.seed)
    print(f"{args.data}: {report}")
    return {SHORTCUT: 1, CANNOT_TELL: 2}.get(report.verdict, 0)


# ----------------------------------------------------------------------------- cache


def _human_size(size: float) -> str:
    units = ("B", "KiB", "MiB", "GiB", "TiB")
    power = 0
    while size >= 1024 and power < len(units) - 1:
        size, power = size / 1024, power + 1
    return f"{size:.0f} B" if power == 0 else f"{size:.1f} {units[power]}"


def _cell(value: object) -> str:
    """A table cell: a shape as ``3x32x32``, a field that a damaged manifest lacks as ``?``."""
    if value is None:
        return "?"
    return "x".join(map(str, value)) if isinstance(value, list) else str(value)


def _print_table(rows: list[list[str]]) -> None:
    widths = [max(len(row[column]) for row in rows) for column in range(len(rows[0]))]
    for row in rows:
        print("  ".join(cell.ljust(width) for cell, width in zip(row, widths)).rstrip())


def _cache_command(args: argparse.Namespace) -> int:
    root = args.cache_dir if args.cache_dir is not None else default_cache_dir()
    if root.exists() and not root.is_dir():
        raise NotADirectoryError(f"--cache-dir {root} is a file, not a cache folder")
    entries = [entry for entry in cache_info(root) if args.key in (None, entry["key"])]
    if args.key is not None and not entries:
        raise ValueError(f"no cache entry {args.key!r} in {root}")
    if args.action == "clear":
        freed = clear_cache(root, key=args.key)
        print(f"removed {len(entries)} entr{'y' if len(entries) == 1 else 'ies'} from {root}, "
              f"freed {freed} bytes ({_human_size(freed)})")
        return 0
    if not entries:
        print(f"no cache entries in {root}")
        return 0
    rows = [["KEY", "ITEMS", "SHAPE", "DTYPE", "COMPLETE", "SIZE"]]
    rows += [
        [entry["key"], _cell(entry["items"]), _cell(entry["item_shape"]),
         _cell(entry["dtype"]), "yes" if entry["complete"] else "no", _human_size(entry["size"])]
        for entry in entries
    ]
    _print_table(rows)
    total = sum(entry["size"] for entry in entries)
    print(f"{len(entries)} entr{'y' if len(entries) == 1 else 'ies'}, {_human_size(total)} in {root}")
    return 0


# ----------------------------------------------------------------------------- demo / bench


def _plugin_command(args: argparse.Namespace, extra: list[str]) -> int:
    module_name = f"{__package__}.evaluation.{args.plugin}"
    try:
        module = importlib.import_module(module_name)
    except ModuleNotFoundError as error:
        if error.name != module_name:
            raise
        raise ValueError(f"not available (this installation has no {module_name} module)") from error
    parser = argparse.ArgumentParser(prog=f"dvae-purify {args.plugin}", description=PLUGIN_COMMANDS[args.plugin])
    module.add_arguments(parser)
    options = parser.parse_args(extra)
    options.command_line = shlex.join(["dvae-purify", args.plugin, *extra])
    return int(module.run(options))


# ----------------------------------------------------------------------------- entry point


def main(argv: Sequence[str] | None = None) -> int:
    """Run ``dvae-purify`` with ``argv`` (default: ``sys.argv[1:]``); returns the exit status."""
    parser = build_parser()
    args, extra = parser.parse_known_args(argv)
    if extra and args.handler is not _plugin_command:
        parser.error(f"unrecognized arguments: {' '.join(extra)}")
    try:
        if args.handler is _plugin_command:
            return _plugin_command(args, extra)
        with datasets_bars(getattr(args, "progress", True)), state_kept():
            return args.handler(args)
    except (ValueError, InputTypeError, OSError) as error:  # bad input, files or settings; bugs surface
        print(f"dvae-purify {args.command}: error: {error}", file=sys.stderr)
        return getattr(args, "error_status", 1)


if __name__ == "__main__":
    sys.exit(main())
