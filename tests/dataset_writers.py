"""Small dataset files in each benchmark dataset's real on-disk format, for the loader and bench tests."""

from __future__ import annotations

import gzip
import pickle
import struct
from pathlib import Path

import numpy as np
from PIL import Image


def pixels(count: int, shape: tuple[int, ...], seed: int) -> np.ndarray:
    """Seeded random uint8 pixels of shape ``(count, *shape)``."""
    return np.random.default_rng(seed).integers(0, 256, size=(count, *shape), dtype=np.uint8)


# ---------------------------------------------------------------------------- writers: the real on-disk formats


def write_idx(path: Path, array: np.ndarray, magic: int | None = None) -> Path:
    """An idx file: big-endian magic 0x0000080N, N big-endian uint32 sizes, then the bytes."""
    magic = 0x0800 | array.ndim if magic is None else magic
    raw = struct.pack(f">{array.ndim + 1}I", magic, *array.shape) + array.astype(np.uint8).tobytes()
    path.write_bytes(gzip.compress(raw) if path.suffix == ".gz" else raw)
    return path


def write_fashion(folder: Path, *, gz: bool = True, train: int = 12, test: int = 5) -> dict[str, np.ndarray]:
    folder.mkdir(parents=True, exist_ok=True)
    arrays = {
        "train-images-idx3-ubyte": pixels(train, (28, 28), 1),
        "train-labels-idx1-ubyte": np.arange(train, dtype=np.uint8) % 10,
        "t10k-images-idx3-ubyte": pixels(test, (28, 28), 2),
        "t10k-labels-idx1-ubyte": (np.arange(test, dtype=np.uint8) * 3) % 10,
    }
    for stem, array in arrays.items():
        write_idx(folder / (f"{stem}.gz" if gz else stem), array)
    return arrays


def write_pickle(path: Path, content: object) -> None:
    with path.open("wb") as file:
        pickle.dump(content, file, protocol=2)


CIFAR10_FILES = [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch", "batches.meta"]


def write_cifar10(root: Path, per_batch: int = 3, test: int | None = None) -> dict[str, dict]:
    """root/cifar-10-batches-py: five training batches of ``per_batch`` images, a test batch of ``test``."""
    folder = root / "cifar-10-batches-py"
    folder.mkdir(parents=True)
    batches = {}
    for index, name in enumerate(CIFAR10_FILES[:-1]):
        count = test if name == "test_batch" and test is not None else per_batch
        batch = {
            b"batch_label": f"batch {index}".encode(),
            b"labels": [(index * per_batch + i) % 10 for i in range(count)],
            b"data": pixels(count, (3072,), 10 + index),
            b"filenames": [f"img_{index}_{i}.png".encode() for i in range(count)],
        }
        write_pickle(folder / name, batch)
        batches[name] = batch
    names = [b"airplane", b"automobile", b"bird", b"cat", b"deer", b"dog", b"frog", b"horse", b"ship", b"truck"]
    write_pickle(folder / "batches.meta", {b"label_names": names, b"num_cases_per_batch": per_batch, b"num_vis": 3072})
    return batches


def write_cifar100(root: Path) -> dict[str, dict]:
    folder = root / "cifar-100-python"
    folder.mkdir(parents=True)
    batches = {}
    for name, count, seed in (("train", 7, 20), ("test", 4, 21)):
        batch = {
            b"filenames": [f"{name}_{i}.png".encode() for i in range(count)],
            b"batch_label": name.encode(),
            b"fine_labels": [(i * 37 + seed) % 100 for i in range(count)],
            b"coarse_labels": [i % 20 for i in range(count)],
            b"data": pixels(count, (3072,), seed),
        }
        write_pickle(folder / name, batch)
        batches[name] = batch
    names = [f"class_{i}".encode() for i in range(100)]
    write_pickle(folder / "meta", {b"fine_label_names": names, b"coarse_label_names": [b"c"] * 20})
    return batches


def write_svhn(root: Path, train: int = 6, test: int = 3) -> dict[str, dict[str, np.ndarray]]:
    from scipy.io import savemat

    root.mkdir(parents=True, exist_ok=True)
    content = {}
    for name, count, seed in (("train", train, 30), ("test", test, 31)):
        labels = (np.arange(count, dtype=np.uint8) % 10 + 1).reshape(-1, 1)  # 1..10, 10 = digit 0
        content[name] = {"X": pixels(count, (32, 32, 3), seed).transpose(1, 2, 3, 0).copy(), "y": labels}
        savemat(root / f"{name}_32x32.mat", content[name])
    return content


def write_folder(root: Path, tree: dict[str, dict[str, list[np.ndarray]]]) -> None:
    """root/<split>/<class>/<i>.png for every array (HxW grayscale or HxWx3 RGB)."""
    for split, classes in tree.items():
        for name, images in classes.items():
            folder = root / split / name
            folder.mkdir(parents=True, exist_ok=True)
            for image in images:
                Image.fromarray(image).save(folder / f"{len(list(folder.iterdir()))}.png")
