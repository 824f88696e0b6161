"""The benchmark's dataset loaders, driven on small files written in each dataset's real format."""

from __future__ import annotations

import codecs
import os
import pickle
import struct

import numpy as np
import pytest
import torch
from dataset_writers import (
    CIFAR10_FILES,
    pixels,
    write_cifar10,
    write_cifar100,
    write_fashion,
    write_folder,
    write_idx,
    write_pickle,
    write_svhn,
)

from dvae_transform.evaluation.datasets import DATASETS, FASHION_MNIST_ROOT, BenchData, describe, load_bench_data

# ---------------------------------------------------------------------------- loaders: values, shapes, labels


def test_registry_lists_every_dataset_with_its_layout():
    assert DATASETS == ("mnist", "fashion-mnist", "cifar10", "cifar100", "svhn", "imagefolder")
    assert "batches.meta" in describe("cifar10") and "fine labels" in describe("cifar100")
    assert str(FASHION_MNIST_ROOT) in describe("fashion-mnist") and "train_32x32.mat" in describe("svhn")


@pytest.mark.parametrize("gz", [True, False], ids=["gz", "plain"])
def test_fashion_mnist_reads_idx_files_and_pads_to_32(tmp_path, gz):
    arrays = write_fashion(tmp_path, gz=gz)
    data = load_bench_data("fashion-mnist", tmp_path)
    assert isinstance(data, BenchData) and data.name == "fashion-mnist" and data.num_classes == 10
    assert data.train_images.shape == (12, 1, 32, 32) and data.test_images.shape == (5, 1, 32, 32)
    assert data.train_images.dtype == torch.float32 and data.train_labels.dtype == torch.int64
    train = arrays["train-images-idx3-ubyte"]
    assert data.train_images[3, 0, 2 + 5, 2 + 7].item() == pytest.approx(train[3, 5, 7] / 255)
    torch.testing.assert_close(data.train_images[:, 0, 2:30, 2:30], torch.from_numpy(train).float() / 255)
    padding = torch.ones(32, 32, dtype=torch.bool)
    padding[2:30, 2:30] = False
    assert (data.train_images[:, :, padding] == 0).all() and (data.test_images[:, :, padding] == 0).all()
    assert data.train_labels.tolist() == arrays["train-labels-idx1-ubyte"].tolist()
    assert data.test_labels.tolist() == arrays["t10k-labels-idx1-ubyte"].tolist()
    assert data.classes[0] == "T-shirt/top" and len(data.classes) == 10
    assert "12 train / 5 test images" in data.description and "1x32x32" in data.description
    assert str(tmp_path) in data.description


def test_fashion_mnist_reads_torchvisions_download_layout(tmp_path):
    write_fashion(tmp_path / "FashionMNIST" / "raw", gz=False)
    assert load_bench_data("fashion-mnist", tmp_path).train_images.shape == (12, 1, 32, 32)


def test_cifar10_reads_the_five_batches_test_batch_and_meta(tmp_path):
    batches = write_cifar10(tmp_path)
    data = load_bench_data("cifar10", tmp_path)
    assert data.train_images.shape == (15, 3, 32, 32) and data.test_images.shape == (3, 3, 32, 32)
    assert data.num_classes == 10 and data.classes[0] == "airplane" and data.classes[9] == "truck"
    batch_3 = batches["data_batch_3"][b"data"]  # rows: 1024 red, 1024 green, 1024 blue, each row-major
    channel, y, x = 1, 4, 9
    assert data.train_images[2 * 3 + 1, channel, y, x].item() == pytest.approx(
        batch_3[1, 1024 * channel + 32 * y + x] / 255
    )
    expected = np.concatenate([batches[f"data_batch_{i}"][b"data"] for i in range(1, 6)]).reshape(-1, 3, 32, 32)
    torch.testing.assert_close(data.train_images, torch.from_numpy(expected).float() / 255)
    assert data.train_labels.tolist() == sum((batches[f"data_batch_{i}"][b"labels"] for i in range(1, 6)), [])
    assert data.test_labels.tolist() == batches["test_batch"][b"labels"]


class Python2Pickler(pickle._Pickler):
    """Pickles as the official CIFAR files were written (Python 2 cPickle, protocol 2): bytes as
    Python 2 ``str`` (SHORT_BINSTRING / BINSTRING), numpy's ``_reconstruct`` under ``numpy.core``."""

    dispatch = dict(pickle._Pickler.dispatch)

    def save_python2_str(self, obj: bytes) -> None:
        size = len(obj)
        header = pickle.SHORT_BINSTRING + bytes([size]) if size < 256 else pickle.BINSTRING + struct.pack("<i", size)
        self.write(header + obj)
        self.memoize(obj)

    dispatch[bytes] = save_python2_str

    def save_global(self, obj, name=None):
        if getattr(obj, "__name__", None) == "_reconstruct":
            self.write(pickle.GLOBAL + b"numpy.core.multiarray\n_reconstruct\n")
            self.memoize(obj)
        else:
            super().save_global(obj, name)


def test_cifar_reads_python2_pickles_like_the_official_files(tmp_path):
    batches = write_cifar10(tmp_path)
    folder = tmp_path / "cifar-10-batches-py"
    for name in CIFAR10_FILES[:-1]:
        with (folder / name).open("wb") as file:
            Python2Pickler(file, protocol=2).dump(batches[name])
    assert b"cnumpy.core.multiarray\n_reconstruct\n" in (folder / "test_batch").read_bytes()
    assert b"U\x06labels" in (folder / "test_batch").read_bytes()  # a Python 2 str key
    data = load_bench_data("cifar10", tmp_path, download=True)  # complete files: nothing is downloaded
    expected = np.concatenate([batches[f"data_batch_{i}"][b"data"] for i in range(1, 6)]).reshape(-1, 3, 32, 32)
    torch.testing.assert_close(data.train_images, torch.from_numpy(expected).float() / 255)
    assert data.test_labels.tolist() == batches["test_batch"][b"labels"]


def test_cifar100_uses_the_fine_labels(tmp_path):
    batches = write_cifar100(tmp_path)
    data = load_bench_data("cifar100", tmp_path)
    assert data.num_classes == 100 and data.classes[42] == "class_42"
    assert data.train_images.shape == (7, 3, 32, 32) and data.test_images.shape == (4, 3, 32, 32)
    assert data.train_labels.tolist() == batches["train"][b"fine_labels"]
    assert data.test_labels.tolist() == batches["test"][b"fine_labels"]
    torch.testing.assert_close(
        data.test_images, torch.from_numpy(batches["test"][b"data"].reshape(-1, 3, 32, 32)).float() / 255
    )


def test_cifar_reads_the_batch_folder_itself_as_root(tmp_path):
    write_cifar10(tmp_path)
    assert load_bench_data("cifar10", tmp_path / "cifar-10-batches-py").train_images.shape == (15, 3, 32, 32)


def test_svhn_reads_mat_files_and_maps_label_10_to_0(tmp_path):
    content = write_svhn(tmp_path)
    data = load_bench_data("svhn", tmp_path)
    assert data.train_images.shape == (6, 3, 32, 32) and data.test_images.shape == (3, 3, 32, 32)
    assert data.train_labels.tolist() == [1, 2, 3, 4, 5, 6] and data.test_labels.tolist() == [1, 2, 3]
    X = content["train"]["X"]  # H x W x C x N
    assert data.train_images[4, 2, 5, 11].item() == pytest.approx(X[5, 11, 2, 4] / 255)
    torch.testing.assert_close(data.train_images, torch.from_numpy(X.transpose(3, 2, 0, 1).copy()).float() / 255)

    write_svhn(tmp_path, train=10)
    assert load_bench_data("svhn", tmp_path).train_labels.tolist() == [1, 2, 3, 4, 5, 6, 7, 8, 9, 0]


def test_imagefolder_reads_rgb_class_folders(tmp_path):
    images = pixels(5, (32, 32, 3), 40)
    write_folder(
        tmp_path,
        {
            "train": {"cat": [images[0], images[1]], "dog": [images[2]]},
            "test": {"cat": [images[3]], "dog": [images[4]]},
        },
    )
    data = load_bench_data("imagefolder", tmp_path)
    assert data.classes == ("cat", "dog") and data.num_classes == 2
    assert data.train_images.shape == (3, 3, 32, 32) and data.test_images.shape == (2, 3, 32, 32)
    assert data.train_labels.tolist() == [0, 0, 1] and data.test_labels.tolist() == [0, 1]
    assert data.train_images[2, 1, 6, 20].item() == pytest.approx(images[2, 6, 20, 1] / 255)
    torch.testing.assert_close(
        data.test_images, torch.from_numpy(images[3:].transpose(0, 3, 1, 2).copy()).float() / 255
    )


def test_imagefolder_resizes_and_keeps_grayscale_as_one_channel(tmp_path):
    gray = [np.full((40, 24), 200, np.uint8), np.zeros((64, 64), np.uint8)]
    write_folder(tmp_path, {"train": {"a": [gray[0]], "b": [gray[1]]}, "test": {"a": [gray[1]], "b": [gray[0]]}})
    data = load_bench_data("imagefolder", tmp_path, image_size=16)
    assert data.train_images.shape == (2, 1, 16, 16) and data.test_images.shape == (2, 1, 16, 16)
    assert torch.allclose(data.train_images[0], torch.tensor(200 / 255)) and (data.train_images[1] == 0).all()
    assert "1x16x16" in data.description

    write_folder(tmp_path, {"test": {"b": [pixels(1, (32, 32, 3), 41)[0]]}})  # one colour image: everything RGB
    data = load_bench_data("imagefolder", tmp_path)
    assert data.train_images.shape == (2, 3, 32, 32) and data.test_images.shape == (3, 3, 32, 32)
    assert torch.allclose(data.train_images[0], torch.tensor(200 / 255))  # gray -> RGB keeps the value


def test_imagefolder_reads_16_bit_images_at_16_bits(tmp_path):
    deep = np.linspace(0, 65535, 64).astype(np.uint16).reshape(8, 8)
    write_folder(tmp_path, {"train": {"a": [deep]}, "test": {"a": [deep]}})
    data = load_bench_data("imagefolder", tmp_path, image_size=8)
    assert data.train_images.shape == (1, 3, 8, 8)  # not 8-bit gray: RGB, as the layout says
    expected = torch.from_numpy(deep.astype(np.float32) / 65535)
    assert all(torch.allclose(channel, expected) for channel in data.train_images[0])


def test_mnist_is_the_embedded_split():
    data = load_bench_data("mnist", test=100)
    assert data.train_images.shape == (4000, 1, 32, 32) and data.test_images.shape == (100, 1, 32, 32)
    assert data.num_classes == 10 and set(data.train_labels.tolist()) == set(range(10))
    assert 0.0 <= data.train_images.min() and data.train_images.max() <= 1.0


# ---------------------------------------------------------------------------- seeded subsets


def test_subsets_are_seeded_fixed_and_consistent_with_the_labels(tmp_path):
    arrays = write_fashion(tmp_path, train=40, test=20)
    full = load_bench_data("fashion-mnist", tmp_path)
    first = load_bench_data("fashion-mnist", tmp_path, train=10, test=5, seed=3)
    again = load_bench_data("fashion-mnist", tmp_path, train=10, test=5, seed=3)
    other = load_bench_data("fashion-mnist", tmp_path, train=10, test=5, seed=4)
    smaller = load_bench_data("fashion-mnist", tmp_path, train=4, seed=3)
    assert first.train_images.shape == (10, 1, 32, 32) and first.test_images.shape == (5, 1, 32, 32)
    assert torch.equal(first.train_images, again.train_images) and torch.equal(first.test_labels, again.test_labels)
    assert not torch.equal(first.train_images, other.train_images)
    assert torch.equal(smaller.train_images, first.train_images[:4]) and smaller.test_images.shape[0] == 20
    index = torch.randperm(40, generator=torch.Generator().manual_seed(3))[:10]
    assert torch.equal(first.train_images, full.train_images[index])
    assert first.train_labels.tolist() == arrays["train-labels-idx1-ubyte"][index.numpy()].tolist()
    assert "10 train / 5 test images (seed-3 subset of 40 / 20)" in first.description
    assert load_bench_data("fashion-mnist", tmp_path, train=40, test=20).train_images.shape[0] == 40


# ---------------------------------------------------------------------------- bad input: one clear line each


def error_of(kind: type[Exception], *args, **kwargs) -> str:
    with pytest.raises(kind) as caught:
        load_bench_data(*args, **kwargs)
    message = str(caught.value)
    assert "\n" not in message
    return message


def test_unknown_name_lists_the_known_ones():
    message = error_of(ValueError, "cifar-10")
    assert "'cifar-10'" in message and "fashion-mnist, cifar10, cifar100, svhn, imagefolder" in message


@pytest.mark.parametrize("name", ["fashion-mnist", "cifar10", "cifar100", "svhn"])
def test_a_missing_or_empty_folder_names_it_and_download_true(tmp_path, name):
    message = error_of(FileNotFoundError, name, tmp_path / "nowhere")
    assert str(tmp_path / "nowhere") in message and "does not exist" in message and "download=True" in message
    message = error_of(FileNotFoundError, name, tmp_path)
    assert str(tmp_path) in message and "download=True" in message


def test_imagefolder_missing_folders_and_roots(tmp_path):
    assert "does not exist" in error_of(FileNotFoundError, "imagefolder", tmp_path / "nowhere")
    assert "no root given" in error_of(FileNotFoundError, "imagefolder")
    assert "download=True" in error_of(ValueError, "imagefolder", tmp_path, download=True)
    write_folder(tmp_path, {"train": {"a": [np.zeros((8, 8), np.uint8)]}})
    assert "missing test/" in error_of(FileNotFoundError, "imagefolder", tmp_path)
    (tmp_path / "test").mkdir()
    assert f"{tmp_path / 'test'}: no class sub-folders found" in error_of(ValueError, "imagefolder", tmp_path)
    (tmp_path / "test" / "a").mkdir()
    assert "the class sub-folders ['a'] hold no image files" in error_of(ValueError, "imagefolder", tmp_path)


def test_partial_folders_name_the_missing_files(tmp_path):
    write_fashion(tmp_path / "fashion")
    (tmp_path / "fashion" / "t10k-labels-idx1-ubyte.gz").unlink()
    message = error_of(FileNotFoundError, "fashion-mnist", tmp_path / "fashion")
    assert "missing t10k-labels-idx1-ubyte.gz (or t10k-labels-idx1-ubyte)" in message and "download=True" in message
    assert "train-images" not in message

    write_cifar10(tmp_path / "cifar")
    (tmp_path / "cifar" / "cifar-10-batches-py" / "data_batch_3").unlink()
    (tmp_path / "cifar" / "cifar-10-batches-py" / "batches.meta").unlink()
    message = error_of(FileNotFoundError, "cifar10", tmp_path / "cifar")
    assert (
        str(tmp_path / "cifar" / "cifar-10-batches-py") in message and "missing data_batch_3, batches.meta" in message
    )

    write_svhn(tmp_path / "svhn")
    (tmp_path / "svhn" / "test_32x32.mat").unlink()
    assert "missing test_32x32.mat" in error_of(FileNotFoundError, "svhn", tmp_path / "svhn")


def test_corrupt_idx_files_name_the_file(tmp_path):
    write_fashion(tmp_path, gz=False)
    labels = tmp_path / "train-labels-idx1-ubyte"
    write_idx(labels, np.zeros(12, np.uint8), magic=0x0803)
    assert f"{labels}: idx magic 0x00000803, expected 0x00000801" in error_of(ValueError, "fashion-mnist", tmp_path)

    images = tmp_path / "t10k-images-idx3-ubyte"
    write_fashion(tmp_path, gz=False)
    images.write_bytes(images.read_bytes()[:-10])
    message = error_of(ValueError, "fashion-mnist", tmp_path)
    assert f"{images}: the header's sizes 5x28x28 need 3920 bytes, found 3910" in message

    write_fashion(tmp_path, gz=False)
    write_idx(images, np.zeros((5, 27, 28), np.uint8))
    assert f"{images}: 27x28 images, expected 28x28" in error_of(ValueError, "fashion-mnist", tmp_path)

    write_fashion(tmp_path, gz=False)
    images.write_bytes(b"\x00\x00")
    assert f"{images}: 2 bytes, too short" in error_of(ValueError, "fashion-mnist", tmp_path)

    write_fashion(tmp_path / "gz")
    broken = tmp_path / "gz" / "train-images-idx3-ubyte.gz"
    broken.write_bytes(b"not gzip at all")
    assert f"{broken}: not a readable gzip file" in error_of(ValueError, "fashion-mnist", tmp_path / "gz")


def test_counts_and_label_ranges_are_checked(tmp_path):
    write_fashion(tmp_path / "fashion")
    write_idx(tmp_path / "fashion" / "t10k-labels-idx1-ubyte.gz", np.zeros(4, np.uint8))
    message = error_of(ValueError, "fashion-mnist", tmp_path / "fashion")
    assert "t10k-images-idx3-ubyte.gz / t10k-labels-idx1-ubyte.gz" in message and "5 images but 4 labels" in message
    write_idx(tmp_path / "fashion" / "t10k-labels-idx1-ubyte.gz", np.full(5, 10, np.uint8))
    assert "labels must lie in [0, 10), got values in [10, 10]" in error_of(
        ValueError, "fashion-mnist", tmp_path / "fashion"
    )

    batches = write_cifar10(tmp_path / "cifar")
    path = tmp_path / "cifar" / "cifar-10-batches-py" / "test_batch"
    write_pickle(path, {**batches["test_batch"], b"labels": [0, 1]})
    assert f"{path}: 3 images but 2 labels" in error_of(ValueError, "cifar10", tmp_path / "cifar")

    content = write_svhn(tmp_path / "svhn")
    from scipy.io import savemat

    path = tmp_path / "svhn" / "train_32x32.mat"
    savemat(path, {"X": content["train"]["X"], "y": content["train"]["y"][:5]})
    assert f"{path}: 6 images but 5 labels" in error_of(ValueError, "svhn", tmp_path / "svhn")
    savemat(path, {"X": content["train"]["X"], "y": content["train"]["y"] - 1})
    assert "y must lie in 1-10 (10 is the digit 0), got values in [0, 5]" in error_of(
        ValueError, "svhn", tmp_path / "svhn"
    )


def test_a_pickle_with_a_forbidden_global_is_refused_and_nothing_runs(tmp_path):
    batches = write_cifar10(tmp_path)
    marker = tmp_path / "executed"

    class Payload:
        def __reduce__(self):
            return os.system, (f"touch {marker}",)

    path = tmp_path / "cifar-10-batches-py" / "data_batch_2"
    write_pickle(path, {**batches["data_batch_2"], b"data": Payload()})
    message = error_of(ValueError, "cifar10", tmp_path)
    assert f"{path}: refused the global {os.system.__module__}.system" in message
    assert "numpy.ndarray" in message
    assert not marker.exists()

    class Rot13:
        def __reduce__(self):
            return codecs.encode, ("text", "rot13")

    write_pickle(path, {**batches["data_batch_2"], b"filenames": Rot13()})
    assert "only latin-1 is allowed" in error_of(ValueError, "cifar10", tmp_path)


def test_corrupt_cifar_files_name_the_file(tmp_path):
    batches = write_cifar10(tmp_path)
    folder = tmp_path / "cifar-10-batches-py"
    (folder / "test_batch").write_bytes(b"\x80\x02garbage")
    assert f"{folder / 'test_batch'}: not a readable CIFAR pickle" in error_of(ValueError, "cifar10", tmp_path)

    write_pickle(folder / "test_batch", {**batches["test_batch"], b"data": np.zeros((3, 1024), np.uint8)})
    message = error_of(ValueError, "cifar10", tmp_path)
    assert f"{folder / 'test_batch'}: 'data' must be a uint8 array of shape (N, 3072), got uint8 (3, 1024)" in message

    write_pickle(folder / "test_batch", {b"data": batches["test_batch"][b"data"]})
    assert f"{folder / 'test_batch'}: no 'labels' entry, found ['data']" in error_of(ValueError, "cifar10", tmp_path)

    write_pickle(folder / "test_batch", [1, 2, 3])
    assert "expected a pickled dict, got list" in error_of(ValueError, "cifar10", tmp_path)

    write_pickle(folder / "test_batch", batches["test_batch"])
    write_pickle(folder / "batches.meta", {b"label_names": [b"one", b"two"]})
    assert f"{folder / 'batches.meta'}: 'label_names' must list 10 class names" in error_of(
        ValueError, "cifar10", tmp_path
    )


def test_corrupt_mat_files_name_the_file(tmp_path):
    from scipy.io import savemat

    write_svhn(tmp_path)
    path = tmp_path / "test_32x32.mat"
    savemat(path, {"images": np.zeros((32, 32, 3, 1), np.uint8), "y": np.ones((1, 1))})
    assert f"{path}: no variable X; expected X (32x32x3xN uint8)" in error_of(ValueError, "svhn", tmp_path)
    savemat(path, {"X": np.zeros((28, 28, 3, 1), np.uint8), "y": np.ones((1, 1))})
    assert f"{path}: X is uint8 (28, 28, 3, 1)" in error_of(ValueError, "svhn", tmp_path)
    path.write_bytes(b"garbage" * 50)
    assert f"{path}: not a readable MATLAB .mat file" in error_of(ValueError, "svhn", tmp_path)


def test_imagefolder_class_mismatch_and_unreadable_images(tmp_path):
    image = np.zeros((8, 8), np.uint8)
    write_folder(tmp_path, {"train": {"a": [image], "b": [image]}, "test": {"a": [image], "c": [image]}})
    message = error_of(ValueError, "imagefolder", tmp_path)
    assert "same class folders" in message and "only in train: ['b'], only in test: ['c']" in message

    (tmp_path / "test" / "c").rename(tmp_path / "test" / "b")
    (tmp_path / "train" / "b" / "broken.png").write_bytes(b"not a png")
    message = error_of(ValueError, "imagefolder", tmp_path)
    assert f"{tmp_path / 'train' / 'b' / 'broken.png'}: not a readable image file" in message


def test_sizes_and_roots_are_checked(tmp_path):
    write_fashion(tmp_path)
    assert "train=13 > 12 images" in error_of(ValueError, "fashion-mnist", tmp_path, train=13)
    assert "test=6 > 5 images" in error_of(ValueError, "fashion-mnist", tmp_path, test=6)
    for bad in (0, -5, 2.5, True):
        assert f"train={bad!r}: expected a positive number" in error_of(
            ValueError, "fashion-mnist", tmp_path, train=bad
        )
    assert "test=0: expected a positive number" in error_of(ValueError, "fashion-mnist", tmp_path, test=0)
    assert "image_size=0" in error_of(ValueError, "imagefolder", tmp_path, image_size=0)
    assert "only imagefolder resizes" in error_of(ValueError, "fashion-mnist", tmp_path, image_size=64)
    assert "mnist: the embedded digits take no root" in error_of(ValueError, "mnist", tmp_path)
    file = tmp_path / "train-images-idx3-ubyte.gz"
    assert f"{file} is not a folder" in error_of(FileNotFoundError, "cifar10", file)


# ---------------------------------------------------------------------------- the real Fashion-MNIST


@pytest.mark.skipif(not FASHION_MNIST_ROOT.is_dir(), reason="Debian package dataset-fashion-mnist not installed")
def test_the_installed_fashion_mnist():
    data = load_bench_data("fashion-mnist", test=1000)
    assert "subset of 60000 / 10000" in data.description and str(FASHION_MNIST_ROOT) in data.description
    assert data.train_images.shape == (60000, 1, 32, 32) and data.test_images.shape == (1000, 1, 32, 32)
    assert data.train_labels.min() == 0 and data.train_labels.max() == 9
    assert data.train_labels.bincount().tolist() == [6000] * 10
    assert data.train_images.max() == 1.0 and data.train_images[:, :, :2].abs().sum() == 0
