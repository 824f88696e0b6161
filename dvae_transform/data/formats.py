"""Read and write the dataset formats of the ``dvae-purify`` command line.

Three formats, told apart by what is on disk:

* ``folder``: an image folder with one sub-folder per class (read by :mod:`.image_folder`); written
  back with the same class sub-folders and file names, as PNG.
* ``hf``: a Hugging Face ``datasets`` folder written by ``save_to_disk`` (a ``Dataset`` or a
  ``DatasetDict``, of which one split is read); written back with the image column replaced
  (:func:`replace_hf_images`, which ``PurifiedDataset.to_hf_dataset`` uses too).
* ``npz``: a numpy archive holding ``images`` (NCHW, NHWC or NHW; uint8 or float in [0, 1])
  and ``labels``; written back with uint8 images in the same layout.

:func:`read_dataset` returns the images, the labels and a :class:`DatasetMeta` that remembers
what :func:`write_dataset` needs to write purified images in the same format.
"""

from __future__ import annotations

import dataclasses
import io
import os
import zipfile
import zlib
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np
import torch
from torchvision.transforms.v2 import functional as F
from tqdm.auto import tqdm

from ..files import atomic_write, remove_stale_staging
from ..fingerprint import fingerprint
from ..images import batch_layout, describe, from_nchw, image_layout, to_float_images, to_nchw
from ..log import bar_options
from ..precision import as_uint8, decode
from .image_folder import list_image_folder
from .output import check_output, write_folder
from .sources import hf_columns, load_images_and_labels

FORMATS = ("folder", "hf", "npz")
# what datasets' save_to_disk writes at the top of a Dataset / a DatasetDict folder
_SAVE_TO_DISK_MARKERS = (("dataset_info.json", "state.json"), ("dataset_dict.json",))
_EXPECTED = "expected an image folder (one sub-folder per class), a save_to_disk dataset folder or a .npz file"


@dataclasses.dataclass
class DatasetMeta:
    """Where a dataset came from and how to write it back in the same format.

    Attributes:
        format: one of :data:`FORMATS`.
        source: the path it was read from.
        num_classes: the class count the format states (folder classes, an HF ``ClassLabel``), else None.
        classes: class sub-folder names (``folder``).
        files: each image's path relative to its class sub-folder (``folder``).
        layout: the array layout of the images, ``"NCHW"``, ``"NHWC"`` or ``"NHW"`` (``npz``).
        dataset: the loaded ``Dataset`` or ``DatasetDict`` (``hf``).
        split: the split that was read from a ``DatasetDict`` (``hf``).
        image_column, label_column: the columns read (``hf``).
    """

    format: str
    source: Path
    num_classes: int | None = None
    classes: list[str] = dataclasses.field(default_factory=list)
    files: list[str] = dataclasses.field(default_factory=list)
    layout: str = "NCHW"
    dataset: Any = None
    split: str | None = None
    image_column: str | None = None
    label_column: str | None = None


class LoadedDataset(NamedTuple):
    """What :func:`read_dataset` returns: NCHW images (uint8, or float32 in [0, 1]), int64 labels, meta."""

    images: torch.Tensor
    labels: torch.Tensor
    meta: DatasetMeta


def detect_format(path: str | os.PathLike) -> str:
    """The format of ``path`` (one of :data:`FORMATS`); raises for a missing path or an unknown file type."""
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"{path}: no such file or folder; {_EXPECTED}")
    if path.is_file():
        if path.suffix.lower() == ".npz":
            return "npz"
        raise ValueError(f"{path}: unsupported file type {path.suffix or '(no suffix)'!r}; {_EXPECTED}")
    if any(all((path / name).is_file() for name in group) for group in _SAVE_TO_DISK_MARKERS):
        return "hf"
    return "folder"


def read_dataset(
    path: str | os.PathLike,
    *,
    image_column: str | None = None,
    label_column: str | None = None,
    split: str | None = None,
    progress: bool = True,
) -> LoadedDataset:
    """Read the images and labels at ``path``, whichever of :data:`FORMATS` it is.

    Args:
        path: an image folder, a ``save_to_disk`` folder or a ``.npz`` file.
        image_column, label_column: columns of a Hugging Face dataset (defaults: the usual names).
        split: the split of a ``DatasetDict`` to read (default ``"train"`` when there is one).
        progress: show a progress bar while reading an image folder.

    Raises:
        FileNotFoundError: ``path`` does not exist.
        ValueError: unknown format, an unreadable file, missing ``images``/``labels`` keys, an empty
            dataset, images of different sizes, bad labels, or Hugging Face options for another format.
    """
    kind = detect_format(path)
    path = Path(path)
    options = {"split": split, "image_column": image_column, "label_column": label_column}
    given = [name for name, value in options.items() if value is not None]
    if kind != "hf" and given:
        what = "an .npz file" if kind == "npz" else "an image folder"
        raise ValueError(f"{path} is {what}; {' and '.join(given)} only for save_to_disk datasets")
    if kind == "npz":
        return _read_npz(path)
    if kind == "hf":
        return _read_hf(path, image_column, label_column, split)
    return _read_folder(path, progress)


def write_dataset(
    out: str | os.PathLike,
    images: torch.Tensor,
    labels: torch.Tensor,
    meta: DatasetMeta,
    *,
    key: str,
    overwrite: bool = False,
    progress: bool = True,
) -> Path:
    """Write uint8 NCHW ``images`` with ``labels`` to ``out`` in the format of ``meta``; returns the written path.

    ``out`` is a folder; for ``npz`` it may also name the ``.npz`` file (else the file keeps the
    input's name inside ``out``). Refuses to write over existing output unless ``overwrite``, and
    then replaces only a previous output of this command, as a whole (:mod:`.output`); never writes
    over the input. ``key`` is the purification's key (it fingerprints a written Hugging Face dataset).
    """
    if not isinstance(images, torch.Tensor) or images.dtype != torch.uint8 or images.ndim != 4:
        raise TypeError(f"write_dataset: expected a uint8 NCHW tensor, got {describe(images)}")
    if len(labels) != images.shape[0]:
        raise ValueError(f"write_dataset: got {len(labels)} labels for {images.shape[0]} images")
    target = output_path(out, meta, overwrite=overwrite)
    if meta.format == "npz":
        _write_npz(target, images, labels, meta)
    elif meta.format == "hf":
        write_folder(target, lambda folder: _write_hf(folder, images, meta, key))
    else:
        write_folder(target, lambda folder: _write_folder(folder, images, labels, meta, progress))
    return target


def output_path(out: str | os.PathLike, meta: DatasetMeta, *, overwrite: bool = False) -> Path:
    """Where :func:`write_dataset` writes ``out`` for ``meta``, checked before any work is done.

    Raises:
        ValueError: the output would replace the input, or lie inside it.
        FileExistsError: the output exists and is not empty, and ``overwrite`` is not set; or it holds
            files that a previous run of this command did not write (see :func:`.output.check_output`).
    """
    if meta.format not in FORMATS:
        raise ValueError(f"unknown dataset format {meta.format!r}; expected one of {FORMATS}")
    target = Path(out)
    if meta.format == "npz" and target.suffix.lower() != ".npz":
        target = target / meta.source.name
    check_output(target, meta.source, is_file=meta.format == "npz", overwrite=overwrite)
    return target


# ----------------------------------------------------------------------------- shared helpers


def _int_labels(labels: np.ndarray, count: int, source: Path) -> torch.Tensor:
    if labels.ndim != 1 or labels.dtype.kind not in "iu":
        raise ValueError(f"{source}: labels must be a 1-D integer array, got {labels.dtype} of shape {labels.shape}")
    if labels.shape[0] != count:
        raise ValueError(f"{source}: got {labels.shape[0]} labels for {count} images")
    return torch.from_numpy(labels.astype(np.int64))


# ----------------------------------------------------------------------------- npz


def _load_npz(path: Path) -> tuple[dict[str, np.ndarray], list[str]]:
    """The ``images`` and ``labels`` arrays of the archive at ``path`` (those present), and all its names."""
    try:
        archive = np.load(path, allow_pickle=False)
        if not isinstance(archive, np.lib.npyio.NpzFile):
            raise ValueError(f"it holds a single array of shape {archive.shape}")
        with archive:
            return {key: archive[key] for key in ("images", "labels") if key in archive.files}, sorted(archive.files)
    except (zipfile.BadZipFile, zlib.error, EOFError, ValueError) as error:  # truncated, not a zip, pickled arrays
        raise ValueError(f"{path}: not a readable .npz archive of numeric arrays ({error})") from None


def _read_npz(path: Path) -> LoadedDataset:
    arrays, names = _load_npz(path)
    missing = [key for key in ("images", "labels") if key not in arrays]
    if missing:
        raise ValueError(f"{path}: missing array(s) {missing}; the archive holds {names}")
    images, labels = arrays["images"], arrays["labels"]
    layout = batch_layout(images.shape, path)
    if images.shape[0] == 0:
        raise ValueError(f"{path}: the archive holds no images")
    nchw = to_nchw(images, layout)
    if nchw.dtype == np.uint8:  # kept as it is; anything else checked and converted to float32 in [0, 1]
        tensor = torch.from_numpy(np.ascontiguousarray(nchw))
    else:
        tensor = to_float_images(nchw, name=str(path))
    return LoadedDataset(tensor, _int_labels(labels, images.shape[0], path), DatasetMeta("npz", path, layout=layout))


def _write_npz(target: Path, images: torch.Tensor, labels: torch.Tensor, meta: DatasetMeta) -> None:
    target.parent.mkdir(parents=True, exist_ok=True)
    remove_stale_staging(target)
    buffer = io.BytesIO()
    np.savez(buffer, images=np.ascontiguousarray(from_nchw(images.numpy(), meta.layout)),
             labels=np.asarray(labels, dtype=np.int64))
    atomic_write(target, buffer.getvalue())


# ----------------------------------------------------------------------------- image folder


def _read_folder(path: Path, progress: bool) -> LoadedDataset:
    folder = list_image_folder(path)
    inputs = [file for file, _ in folder.samples]
    _refuse_png_clashes(inputs, [Path(file).with_suffix(".png") for file in inputs])  # before any work
    images = folder.read(progress=progress)
    files = [Path(os.path.relpath(file, path / folder.classes[label])).as_posix() for file, label in folder.samples]
    meta = DatasetMeta("folder", path, num_classes=len(folder.classes), classes=folder.classes, files=files)
    return LoadedDataset(images, folder.labels, meta)


def _refuse_png_clashes(inputs: list[str], outputs: list[Path]) -> None:
    """Refuse input files that would be written to one output file (``a.png`` and ``a.jpg``)."""
    by_output: dict[Path, list[str]] = {}
    for file, output in zip(inputs, outputs):
        by_output.setdefault(output, []).append(file)
    clashes = [files for files in by_output.values() if len(files) > 1]
    if clashes:
        named = "; ".join(" and ".join(files) for files in clashes[:3])
        raise ValueError(f"input files differing only in their extension would be written to one .png: {named}")


def _write_folder(
    target: Path, images: torch.Tensor, labels: torch.Tensor, meta: DatasetMeta, progress: bool
) -> None:
    paths = [
        target / meta.classes[int(label)] / Path(file).with_suffix(".png") for label, file in zip(labels, meta.files)
    ]
    _refuse_png_clashes(meta.files, paths)
    for image, path in tqdm(zip(images, paths), total=len(paths), desc="writing images", unit="img",
                            **bar_options(progress)):
        path.parent.mkdir(parents=True, exist_ok=True)
        F.to_pil_image(image).save(path)


# ----------------------------------------------------------------------------- Hugging Face datasets


def _pick_split(loaded: Any, split: str | None, path: Path) -> tuple[Any, str | None]:
    import datasets

    if not isinstance(loaded, datasets.DatasetDict):
        if split is not None:
            raise ValueError(f"{path}: holds a single Dataset, not splits; drop --split {split}")
        return loaded, None
    splits = list(loaded)
    chosen = split if split is not None else ("train" if "train" in loaded else None)
    if chosen not in loaded:
        raise ValueError(f"{path}: choose a split with --split; the dataset holds {splits}")
    return loaded[chosen], chosen


def _read_hf(path: Path, image_column: str | None, label_column: str | None, split: str | None) -> LoadedDataset:
    import datasets

    loaded = datasets.load_from_disk(str(path))
    dataset, chosen = _pick_split(loaded, split, path)
    plain = dataset.with_format(None)
    image_name, label_name = hf_columns(plain, image_column, label_column)
    images, labels = load_images_and_labels(plain, image_column=image_name, label_column=label_name)
    label_feature = plain.features[label_name]
    meta = DatasetMeta(
        "hf",
        path,
        num_classes=label_feature.num_classes if isinstance(label_feature, datasets.ClassLabel) else None,
        dataset=loaded,
        split=chosen,
        image_column=image_name,
        label_column=label_name,
    )
    return LoadedDataset(images, _int_labels(labels.numpy(), len(plain), path), meta)


def hf_image_values(stored: torch.Tensor, feature: Any, first: Any) -> list[Any]:
    """Purified images (uint8 levels or float16, NCHW) as values of a Hugging Face image column.

    The one rule for writing purified images back: the column keeps its feature type and layout. An
    ``Image`` column gets PIL images (8-bit levels); an array column gets arrays in the layout of its
    first value ``first`` (HW, CHW or HWC), uint8 levels if it holds integers, else float32 in [0, 1].
    """
    import datasets

    if isinstance(feature, datasets.Image):
        return [F.to_pil_image(image) for image in as_uint8(stored)]
    first = np.asarray(first)
    layout = image_layout(first.shape)
    if layout is None:
        raise ValueError(f"image column values of shape {first.shape} are neither HW, CHW nor HWC")
    values = decode(stored) if first.dtype.kind == "f" else as_uint8(stored)
    return list(from_nchw(values.numpy(), "N" + layout))


def replace_hf_images(
    dataset: Any,
    columns: tuple[str, str],
    stored: torch.Tensor,
    key: str,
    *,
    cache_file: Path | None = None,
) -> Any:
    """``dataset`` with its image column replaced by ``stored`` images (see :func:`hf_image_values`).

    ``columns`` are the (image, label) column names; the others are kept. Built with ``Dataset.map``
    under a ``new_fingerprint`` derived from ``key``, the purification's key, so ``datasets``' caching,
    ``save_to_disk`` and ``with_format("torch")`` work. The result is written to ``cache_file``, else kept
    in memory: never beside the source dataset's files (a user's ``save_to_disk`` folder, perhaps read-only).
    """
    image_name, label_name = columns
    feature, first = dataset.features[image_name], dataset.with_format(None)[0][image_name]

    def replace(_: list[Any], indices: list[int]) -> dict[str, list[Any]]:
        return {image_name: hf_image_values(stored[indices], feature, first)}

    return dataset.map(
        replace,
        with_indices=True,
        batched=True,
        input_columns=[label_name],  # the images themselves are never decoded
        features=dataset.features,
        keep_in_memory=cache_file is None,
        cache_file_name=None if cache_file is None else str(cache_file),
        new_fingerprint=fingerprint(key, image_name),
        desc="writing purified images",
    )


def _write_hf(target: Path, images: torch.Tensor, meta: DatasetMeta, key: str) -> None:
    dataset = meta.dataset if meta.split is None else meta.dataset[meta.split]
    columns = (meta.image_column, meta.label_column)
    purified = replace_hf_images(dataset, columns, images, key)
    if meta.split is not None:
        purified = type(meta.dataset)({**meta.dataset, meta.split: purified})
    purified.save_to_disk(str(target))
