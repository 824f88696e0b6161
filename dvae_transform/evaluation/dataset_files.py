"""The benchmark datasets' files: finding them under a root, fetching them, reading each format.

:mod:`.datasets` describes each dataset's files (:class:`DatasetFiles`) and picks the reader;
:func:`locate` finds the files (or says which are missing) and downloads them when asked. Every
reader returns ``(images, labels)``: uint8 NCHW images and int64 labels as numpy arrays, after
checking what it read, and names the file in every error.

- idx (Fashion-MNIST): parsed here, header checked against the data.
- CIFAR python batches: Python pickles, and a pickle can run code while it loads, so every file,
  official or not, is read with a restricted unpickler that resolves only the globals an array needs
  (numpy's ``_reconstruct``, ``ndarray`` and ``dtype``, and ``_codecs.encode`` for latin-1 text) and
  refuses any other global before it can be called.
- SVHN ``.mat``: read with ``scipy.io.loadmat``, which runs no code.
"""

from __future__ import annotations

import codecs
import gzip
import pickle
import struct
import zlib
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

try:  # numpy >= 2
    from numpy._core.multiarray import _reconstruct
except ImportError:  # pragma: no cover - numpy 1.x
    from numpy.core.multiarray import _reconstruct

Arrays = tuple[np.ndarray, np.ndarray]  # uint8 NCHW images, int64 labels


@dataclass(frozen=True)
class DatasetFiles:
    """Where a dataset's files live under ``root`` and how to fetch them."""

    names: tuple[tuple[str, ...], ...]  # per file: accepted names, preferred first
    folders: tuple[str, ...]  # candidate sub-folders of root, "" = root itself
    download: Callable[[Path], None]


# ---------------------------------------------------------------------------- shared checks


def check_count(images: int, labels: int, source: str) -> None:
    """One label per image, or an error naming ``source``."""
    if images != labels:
        raise ValueError(f"{source}: {images} images but {labels} labels; expected one label per image")


def check_labels(labels: np.ndarray, num_classes: int, source: str) -> np.ndarray:
    """``labels`` as int64, checked to be a 1-D integer array in ``[0, num_classes)``."""
    if labels.ndim != 1 or not np.issubdtype(labels.dtype, np.integer):
        raise ValueError(
            f"{source}: expected a 1-D array of integer labels, got {labels.dtype} of shape {labels.shape}"
        )
    if labels.size and (labels.min() < 0 or labels.max() >= num_classes):
        raise ValueError(
            f"{source}: labels must lie in [0, {num_classes}), got values in [{labels.min()}, {labels.max()}]"
        )
    return labels.astype(np.int64)


# ---------------------------------------------------------------------------- finding the files


def _describe_name(names: tuple[str, ...]) -> str:
    return names[0] if len(names) == 1 else f"{names[0]} (or {', '.join(names[1:])})"


def locate(
    name: str,
    root: str | Path | None,
    files: DatasetFiles,
    download: bool,
    layout: str,
    default: Path | None = None,
) -> list[Path]:
    """The paths of ``files`` under ``root`` (or ``default``), downloading them first when asked and missing.

    ``layout`` (the dataset's expected on-disk layout, one line) goes into the errors.
    """
    hint = "; pass download=True (--download on the command line) to fetch the files with torchvision"
    if root is None:
        if default is not None and default.is_dir():
            root = default
        else:
            where = f" and {default} does not exist" if default is not None else ""
            raise FileNotFoundError(f"{name}: no root given{where}; expected root=DIR holding {layout}")
    root = Path(root).expanduser()
    if root.exists() and not root.is_dir():
        raise FileNotFoundError(f"{name}: {root} is not a folder; expected a folder holding {layout}")
    if not root.exists() and not download:
        raise FileNotFoundError(f"{name}: dataset folder {root} does not exist{hint}")

    def search() -> tuple[list[Path] | None, Path, list[tuple[str, ...]]]:
        best: tuple[int, Path, list[tuple[str, ...]]] = (0, root, list(files.names))
        for sub in files.folders:
            folder = root / sub
            found = [next((folder / n for n in names if (folder / n).is_file()), None) for names in files.names]
            if all(found):
                return found, folder, []
            count = sum(path is not None for path in found)
            if count > best[0]:
                best = (count, folder, [names for names, path in zip(files.names, found) if path is None])
        return None, best[1], best[2] if best[0] else []

    found, folder, missing = search()
    if found is None and download:
        root.mkdir(parents=True, exist_ok=True)
        files.download(root)
        found, folder, missing = search()
        if found is None:
            raise FileNotFoundError(f"{name}: the download left no complete dataset in {root}")
    if found is None and missing:
        listed = ", ".join(_describe_name(names) for names in missing)
        raise FileNotFoundError(f"{name}: incomplete dataset folder {folder}: missing {listed}{hint}")
    if found is None:
        raise FileNotFoundError(f"{name}: no {name} files in {root}; expected {layout}{hint}")
    return found


# ---------------------------------------------------------------------------- fetching the files


def download_fashion_mnist(root: Path) -> None:
    """Fetch the four Fashion-MNIST idx files into ``root/FashionMNIST/raw`` (torchvision, md5-checked)."""
    from torchvision.datasets import FashionMNIST

    FashionMNIST(str(root), train=True, download=True)


def download_cifar(dataset: str) -> Callable[[Path], None]:
    """A function that fetches and unpacks torchvision's ``dataset`` (``CIFAR10`` / ``CIFAR100``) archive."""

    def download(root: Path) -> None:
        from torchvision import datasets
        from torchvision.datasets.utils import download_and_extract_archive

        cls = getattr(datasets, dataset)
        download_and_extract_archive(cls.url, str(root), filename=cls.filename, md5=cls.tgz_md5)

    return download


def download_svhn(root: Path) -> None:
    """Fetch the missing SVHN ``.mat`` files into ``root`` (torchvision's URLs and checksums)."""
    from torchvision.datasets import SVHN
    from torchvision.datasets.utils import download_url

    for split in ("train", "test"):
        url, filename, md5 = SVHN.split_list[split]
        if not (root / filename).is_file():
            download_url(url, str(root), filename, md5)


# ---------------------------------------------------------------------------- idx (Fashion-MNIST)


def read_idx(path: Path, ndim: int) -> np.ndarray:
    """An idx file of unsigned bytes (magic 0x0000080N, N big-endian uint32 sizes, then the data)."""
    try:
        raw = gzip.decompress(path.read_bytes()) if path.suffix == ".gz" else path.read_bytes()
    except (OSError, EOFError, zlib.error) as error:
        raise ValueError(f"{path}: not a readable gzip file ({error})") from None
    expected = 0x0800 | ndim
    if len(raw) < 4 * (ndim + 1):
        raise ValueError(f"{path}: {len(raw)} bytes, too short for an idx header of {ndim} dimension(s)")
    magic, *dims = struct.unpack(f">{ndim + 1}I", raw[: 4 * (ndim + 1)])
    if magic != expected:
        raise ValueError(f"{path}: idx magic 0x{magic:08x}, expected 0x{expected:08x} (unsigned bytes, {ndim}-D)")
    body = raw[4 * (ndim + 1) :]
    if len(body) != int(np.prod(dims)):
        raise ValueError(
            f"{path}: the header's sizes {'x'.join(map(str, dims))} need {int(np.prod(dims))} bytes, found {len(body)}"
        )
    return np.frombuffer(body, dtype=np.uint8).reshape(dims).copy()  # writable, for torch


def read_idx_pair(image_file: Path, label_file: Path) -> Arrays:
    """28x28 images (as Nx1x28x28) and their labels 0-9 from two idx files."""
    images = read_idx(image_file, 3)
    if images.shape[1:] != (28, 28):
        raise ValueError(f"{image_file}: {images.shape[1]}x{images.shape[2]} images, expected 28x28")
    labels = read_idx(label_file, 1)
    check_count(len(images), len(labels), f"{image_file.name} / {label_file.name} in {image_file.parent}")
    return images[:, None], check_labels(labels, 10, str(label_file))


# ---------------------------------------------------------------------------- CIFAR (restricted pickle)


def _latin1_encode(text: str, encoding: str = "latin1") -> bytes:
    """``_codecs.encode`` as protocol-2 pickles use it for bytes, and only that."""
    if codecs.lookup(encoding).name != "iso8859-1":
        raise pickle.UnpicklingError(f"_codecs.encode with encoding {encoding!r}; only latin-1 is allowed")
    return codecs.encode(text, "latin1")


_ALLOWED_GLOBALS: dict[tuple[str, str], Any] = {
    ("numpy.core.multiarray", "_reconstruct"): _reconstruct,
    ("numpy._core.multiarray", "_reconstruct"): _reconstruct,
    ("numpy", "ndarray"): np.ndarray,
    ("numpy", "dtype"): np.dtype,
    ("_codecs", "encode"): _latin1_encode,
}


class _RefusedGlobal(pickle.UnpicklingError):
    pass


class _ArrayUnpickler(pickle.Unpickler):
    """Resolves only the globals in ``_ALLOWED_GLOBALS``; anything else is refused, never imported."""

    def find_class(self, module: str, name: str) -> Any:
        try:
            return _ALLOWED_GLOBALS[(module, name)]
        except KeyError:
            allowed = ", ".join(sorted({f"{m}.{n}" for m, n in _ALLOWED_GLOBALS}))
            raise _RefusedGlobal(f"refused the global {module}.{name}; CIFAR files may only use {allowed}") from None


def _unpickle(path: Path) -> dict[str, Any]:
    """A CIFAR pickle read with ``_ArrayUnpickler``: a dict with str keys."""
    try:
        with path.open("rb") as file:
            content = _ArrayUnpickler(file, encoding="latin1").load()
    except _RefusedGlobal as error:
        raise ValueError(f"{path}: {error}") from None
    except Exception as error:  # a corrupt pickle fails in many ways; nothing was executed
        raise ValueError(f"{path}: not a readable CIFAR pickle ({type(error).__name__}: {error})") from None
    if not isinstance(content, dict):
        raise ValueError(f"{path}: expected a pickled dict, got {type(content).__name__}")
    return {key.decode("latin1") if isinstance(key, bytes) else str(key): value for key, value in content.items()}


def _entry(content: dict[str, Any], key: str, path: Path) -> Any:
    if key not in content:
        raise ValueError(f"{path}: no '{key}' entry, found {sorted(content)}")
    return content[key]


def read_cifar_batches(paths: Sequence[Path], label_key: str, num_classes: int) -> Arrays:
    """The 3x32x32 images and the ``label_key`` labels of CIFAR python batch files, in order."""
    images, labels = [], []
    for path in paths:
        content = _unpickle(path)
        data = _entry(content, "data", path)
        if not isinstance(data, np.ndarray) or data.dtype != np.uint8 or data.ndim != 2 or data.shape[1] != 3072:
            got = f"{data.dtype} {data.shape}" if isinstance(data, np.ndarray) else type(data).__name__
            raise ValueError(f"{path}: 'data' must be a uint8 array of shape (N, 3072), got {got}")
        batch_labels = np.asarray(_entry(content, label_key, path))
        check_count(len(data), len(batch_labels), str(path))
        images.append(data.reshape(-1, 3, 32, 32))
        labels.append(check_labels(batch_labels, num_classes, f"{path} '{label_key}'"))
    return np.concatenate(images), np.concatenate(labels)


def read_cifar_names(path: Path, key: str, num_classes: int) -> tuple[str, ...]:
    """The class names listed under ``key`` in a CIFAR meta file."""
    names = _entry(_unpickle(path), key, path)
    if not isinstance(names, (list, tuple)) or len(names) != num_classes:
        raise ValueError(f"{path}: '{key}' must list {num_classes} class names")
    return tuple(name.decode("latin1") if isinstance(name, bytes) else str(name) for name in names)


# ---------------------------------------------------------------------------- SVHN (.mat)


def read_svhn(path: Path) -> Arrays:
    """The cropped-digit images and labels of an SVHN ``.mat`` file (label 10, the digit 0, becomes 0)."""
    try:
        from scipy.io import loadmat
    except ImportError as error:  # pragma: no cover - depends on the environment
        raise ImportError("svhn needs scipy: pip install 'dvae-transform[bench]'") from error
    try:
        content = loadmat(str(path), variable_names=("X", "y"))
    except Exception as error:  # scipy raises many kinds on a corrupt file
        raise ValueError(f"{path}: not a readable MATLAB .mat file ({type(error).__name__}: {error})") from None
    expected = "X (32x32x3xN uint8) and y (N labels 1-10)"
    missing = [key for key in ("X", "y") if key not in content]
    if missing:
        raise ValueError(f"{path}: no variable {' or '.join(missing)}; expected {expected}")
    images, labels = content["X"], content["y"]
    if images.dtype != np.uint8 or images.ndim != 4 or images.shape[:3] != (32, 32, 3):
        raise ValueError(f"{path}: X is {images.dtype} {images.shape}; expected {expected}")
    labels = labels.reshape(-1)
    if not np.issubdtype(labels.dtype, np.number) or not np.array_equal(labels, np.round(labels)):
        raise ValueError(f"{path}: y must hold whole numbers 1-10, got dtype {labels.dtype}")
    labels = labels.astype(np.int64)
    check_count(images.shape[3], len(labels), str(path))
    if labels.size and (labels.min() < 1 or labels.max() > 10):
        raise ValueError(
            f"{path}: y must lie in 1-10 (10 is the digit 0), got values in [{labels.min()}, {labels.max()}]"
        )
    return images.transpose(3, 2, 0, 1), labels % 10
