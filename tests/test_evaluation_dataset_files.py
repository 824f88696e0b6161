"""The benchmark datasets' files: located under a root, and each format read on small real files."""

from __future__ import annotations

import collections
import os
from pathlib import Path

import numpy as np
import pytest
from dataset_writers import pixels, write_cifar10, write_cifar100, write_idx, write_pickle, write_svhn

from dvae_transform.evaluation.dataset_files import (
    DatasetFiles,
    check_count,
    check_labels,
    locate,
    read_cifar_batches,
    read_cifar_names,
    read_idx,
    read_idx_pair,
    read_svhn,
)

LAYOUT = "one.bin and two.bin"


def files_writing(*names: str) -> DatasetFiles:
    """Two files, ``one.bin`` (or ``one.gz``) and ``two.bin``, in root or ``sub``; downloading writes ``names``."""

    def download(root: Path) -> None:
        for name in names:
            (root / name).write_bytes(b"x")

    return DatasetFiles(names=(("one.bin", "one.gz"), ("two.bin",)), folders=("", "sub"), download=download)


# ---------------------------------------------------------------------------- locate


def test_locate_finds_the_files_in_a_candidate_folder_by_any_accepted_name(tmp_path) -> None:
    (tmp_path / "sub").mkdir()
    for name in ("one.gz", "two.bin"):
        (tmp_path / "sub" / name).write_bytes(b"x")
    expected = [tmp_path / "sub" / "one.gz", tmp_path / "sub" / "two.bin"]
    assert locate("toy", tmp_path, files_writing(), False, LAYOUT) == expected
    assert locate("toy", None, files_writing(), False, LAYOUT, default=tmp_path) == expected


def test_locate_downloads_only_when_asked(tmp_path) -> None:
    root = tmp_path / "new"
    with pytest.raises(FileNotFoundError, match="dataset folder .*new does not exist; pass download=True"):
        locate("toy", root, files_writing("one.bin", "two.bin"), False, LAYOUT)
    found = locate("toy", root, files_writing("one.bin", "two.bin"), True, LAYOUT)
    assert found == [root / "one.bin", root / "two.bin"]
    with pytest.raises(FileNotFoundError, match="the download left no complete dataset in"):
        locate("toy", tmp_path / "other", files_writing("one.bin"), True, LAYOUT)


def test_locate_says_which_files_are_missing_and_where(tmp_path) -> None:
    with pytest.raises(FileNotFoundError, match=f"toy: no toy files in {tmp_path}; expected {LAYOUT}"):
        locate("toy", tmp_path, files_writing(), False, LAYOUT)
    (tmp_path / "sub").mkdir()
    (tmp_path / "sub" / "two.bin").write_bytes(b"x")
    with pytest.raises(FileNotFoundError, match=r"incomplete dataset folder .*sub: missing one\.bin \(or one\.gz\)"):
        locate("toy", tmp_path, files_writing(), False, LAYOUT)


def test_locate_checks_the_root(tmp_path) -> None:
    with pytest.raises(FileNotFoundError, match=f"toy: no root given; expected root=DIR holding {LAYOUT}"):
        locate("toy", None, files_writing(), False, LAYOUT)
    with pytest.raises(FileNotFoundError, match="no root given and .*absent does not exist"):
        locate("toy", None, files_writing(), False, LAYOUT, default=tmp_path / "absent")
    (tmp_path / "file").write_bytes(b"x")
    with pytest.raises(FileNotFoundError, match="file is not a folder"):
        locate("toy", tmp_path / "file", files_writing(), True, LAYOUT)


# ---------------------------------------------------------------------------- idx


@pytest.mark.parametrize("suffix", ["", ".gz"], ids=["plain", "gz"])
def test_read_idx_reads_what_was_written(tmp_path, suffix) -> None:
    images, labels = pixels(3, (28, 28), seed=0), np.array([9, 0, 4], np.uint8)
    read = read_idx(write_idx(tmp_path / f"images{suffix}", images), 3)
    assert read.flags.writeable and np.array_equal(read, images)
    assert np.array_equal(read_idx(write_idx(tmp_path / f"labels{suffix}", labels), 1), labels)


def test_read_idx_checks_the_header_against_the_data(tmp_path) -> None:
    path = write_idx(tmp_path / "labels", np.zeros(4, np.uint8), magic=0x0803)
    with pytest.raises(ValueError, match="idx magic 0x00000803, expected 0x00000801"):
        read_idx(path, 1)
    path.write_bytes(path.read_bytes()[:6])
    with pytest.raises(ValueError, match=r"6 bytes, too short for an idx header of 3 dimension\(s\)"):
        read_idx(path, 3)
    path = write_idx(tmp_path / "images", np.zeros((2, 3, 3), np.uint8))
    path.write_bytes(path.read_bytes()[:-1])
    with pytest.raises(ValueError, match="the header's sizes 2x3x3 need 18 bytes, found 17"):
        read_idx(path, 3)
    (tmp_path / "broken.gz").write_bytes(b"not gzip")
    with pytest.raises(ValueError, match="broken.gz: not a readable gzip file"):
        read_idx(tmp_path / "broken.gz", 1)


def test_read_idx_pair_gives_nchw_images_and_int64_labels(tmp_path) -> None:
    images, labels = pixels(4, (28, 28), seed=1), np.array([1, 2, 3, 9], np.uint8)
    image_file, label_file = write_idx(tmp_path / "i.gz", images), write_idx(tmp_path / "l.gz", labels)
    read_images, read_labels = read_idx_pair(image_file, label_file)
    assert read_images.shape == (4, 1, 28, 28) and np.array_equal(read_images[:, 0], images)
    assert read_labels.dtype == np.int64 and read_labels.tolist() == labels.tolist()

    write_idx(label_file, labels[:3])
    with pytest.raises(ValueError, match=r"i\.gz / l\.gz in .*: 4 images but 3 labels"):
        read_idx_pair(image_file, label_file)
    write_idx(label_file, np.array([0, 1, 2, 10], np.uint8))
    with pytest.raises(ValueError, match=r"labels must lie in \[0, 10\), got values in \[0, 10\]"):
        read_idx_pair(image_file, label_file)
    write_idx(image_file, np.zeros((4, 32, 32), np.uint8))
    with pytest.raises(ValueError, match="32x32 images, expected 28x28"):
        read_idx_pair(image_file, label_file)


# ---------------------------------------------------------------------------- CIFAR


def test_read_cifar_batches_concatenates_the_batches_in_order(tmp_path) -> None:
    batches = write_cifar10(tmp_path, per_batch=2)
    folder = tmp_path / "cifar-10-batches-py"
    images, labels = read_cifar_batches([folder / "data_batch_3", folder / "data_batch_1"], "labels", 10)
    expected = np.concatenate([batches[name][b"data"] for name in ("data_batch_3", "data_batch_1")])
    assert images.dtype == np.uint8 and np.array_equal(images, expected.reshape(4, 3, 32, 32))
    assert labels.dtype == np.int64
    assert labels.tolist() == batches["data_batch_3"][b"labels"] + batches["data_batch_1"][b"labels"]
    assert read_cifar_names(folder / "batches.meta", "label_names", 10)[:3] == ("airplane", "automobile", "bird")


def test_cifar100_reads_the_label_key_it_is_given(tmp_path) -> None:
    batches = write_cifar100(tmp_path)
    folder = tmp_path / "cifar-100-python"
    assert read_cifar_batches([folder / "test"], "fine_labels", 100)[1].tolist() == batches["test"][b"fine_labels"]
    assert read_cifar_batches([folder / "test"], "coarse_labels", 20)[1].tolist() == batches["test"][b"coarse_labels"]
    assert read_cifar_names(folder / "meta", "fine_label_names", 100)[42] == "class_42"
    with pytest.raises(ValueError, match="'coarse_label_names' must list 100 class names"):
        read_cifar_names(folder / "meta", "coarse_label_names", 100)


def test_malformed_cifar_batches_are_refused_naming_the_file(tmp_path) -> None:
    path = tmp_path / "batch"
    write_pickle(path, {b"data": np.zeros((2, 1024), np.uint8), b"labels": [0, 1]})
    with pytest.raises(ValueError, match=r"batch: 'data' must be a uint8 array of shape \(N, 3072\), got uint8"):
        read_cifar_batches([path], "labels", 10)
    write_pickle(path, {b"data": pixels(2, (3072,), seed=0)})
    with pytest.raises(ValueError, match=r"no 'labels' entry, found \['data'\]"):
        read_cifar_batches([path], "labels", 10)
    write_pickle(path, {b"data": pixels(2, (3072,), seed=0), b"labels": [0, 12]})
    with pytest.raises(ValueError, match=r"batch 'labels': labels must lie in \[0, 10\)"):
        read_cifar_batches([path], "labels", 10)
    write_pickle(path, (1, 2))
    with pytest.raises(ValueError, match="expected a pickled dict, got tuple"):
        read_cifar_batches([path], "labels", 10)
    path.write_bytes(b"\x80\x02garbage")
    with pytest.raises(ValueError, match="not a readable CIFAR pickle"):
        read_cifar_batches([path], "labels", 10)


def test_the_unpickler_refuses_any_global_an_array_does_not_need(tmp_path) -> None:
    marker = tmp_path / "executed"

    class Payload:
        def __reduce__(self):
            return os.system, (f"touch {marker}",)

    path = tmp_path / "batch"
    write_pickle(path, {b"data": Payload(), b"labels": []})
    with pytest.raises(ValueError, match=f"refused the global {os.system.__module__}.system; CIFAR files may only"):
        read_cifar_batches([path], "labels", 10)
    assert not marker.exists()

    write_pickle(path, {b"label_names": collections.OrderedDict(a=1)})
    with pytest.raises(ValueError, match="refused the global collections.OrderedDict"):
        read_cifar_names(path, "label_names", 1)


# ---------------------------------------------------------------------------- SVHN


def test_read_svhn_gives_nchw_images_and_maps_label_10_to_0(tmp_path) -> None:
    content = write_svhn(tmp_path)["train"]
    images, labels = read_svhn(tmp_path / "train_32x32.mat")
    assert images.shape == (6, 3, 32, 32) and images.dtype == np.uint8
    assert np.array_equal(images[4], content["X"][:, :, :, 4].transpose(2, 0, 1))
    assert labels.dtype == np.int64 and labels.tolist() == (content["y"].reshape(-1) % 10).tolist()


def test_malformed_svhn_files_are_refused_naming_the_file(tmp_path) -> None:
    from scipy.io import savemat

    path = tmp_path / "train_32x32.mat"
    images = pixels(2, (32, 32, 3), seed=0).transpose(1, 2, 3, 0)
    for content, message in [
        ({"X": images}, "no variable y; expected X"),
        ({"X": images[:28], "y": np.ones((2, 1))}, r"X is uint8 \(28, 32, 3, 2\)"),
        ({"X": images, "y": np.array([[1.5], [2]])}, "y must hold whole numbers 1-10, got dtype float64"),
        ({"X": images, "y": np.array([[1]])}, "2 images but 1 labels"),
        ({"X": images, "y": np.array([[0], [11]])},
            r"y must lie in 1-10 \(10 is the digit 0\), got values in \[0, 11\]"),
    ]:
        savemat(path, content)
        with pytest.raises(ValueError, match=message):
            read_svhn(path)
    path.write_bytes(b"garbage" * 20)
    with pytest.raises(ValueError, match="train_32x32.mat: not a readable MATLAB .mat file"):
        read_svhn(path)


# ---------------------------------------------------------------------------- shared checks


def test_check_count_and_check_labels() -> None:
    check_count(3, 3, "source")
    with pytest.raises(ValueError, match="source: 3 images but 2 labels; expected one label per image"):
        check_count(3, 2, "source")
    checked = check_labels(np.array([0, 2, 1], np.uint8), 3, "source")
    assert checked.dtype == np.int64 and checked.tolist() == [0, 2, 1]
    assert check_labels(np.array([], np.int32), 3, "source").dtype == np.int64
    for bad, message in [
        (np.array([[0, 1]]), "expected a 1-D array of integer labels, got int64 of shape"),
        (np.array([0.0, 1.0]), "expected a 1-D array of integer labels, got float64"),
        (np.array([-1, 2]), r"labels must lie in \[0, 3\), got values in \[-1, 2\]"),
    ]:
        with pytest.raises(ValueError, match=message):
            check_labels(bad, 3, "source")
