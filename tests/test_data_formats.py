"""The command line's dataset formats: told apart on disk, read, and written back in the same format."""

from __future__ import annotations

from pathlib import Path

import datasets
import numpy as np
import pytest
import torch
from dataset_writers import pixels, write_folder
from PIL import Image

from dvae_transform.data.formats import (
    DatasetMeta,
    detect_format,
    hf_image_values,
    output_path,
    read_dataset,
    replace_hf_images,
    write_dataset,
)
from dvae_transform.precision import decode, encode

CLASSES = ["a", "b", "c"]


@pytest.fixture
def rgb() -> torch.Tensor:
    """Six seeded 3x8x8 uint8 images."""
    return torch.from_numpy(pixels(6, (3, 8, 8), seed=0))


def labels_of(count: int) -> torch.Tensor:
    return torch.arange(count) % len(CLASSES)


def save_hf(path: Path, images: torch.Tensor, *, splits: tuple[str, ...] = ()) -> datasets.Dataset:
    """A ``save_to_disk`` folder: an ``Image`` column, a ``ClassLabel`` and an ``id``; a DatasetDict of ``splits``."""
    features = datasets.Features({
        "image": datasets.Image(), "label": datasets.ClassLabel(names=CLASSES), "id": datasets.Value("string"),
    })
    dataset = datasets.Dataset.from_dict({
        "image": [Image.fromarray(image.permute(1, 2, 0).numpy()) for image in images],
        "label": labels_of(len(images)).tolist(),
        "id": [f"item{index}" for index in range(len(images))],
    }, features=features)
    (datasets.DatasetDict({split: dataset for split in splits}) if splits else dataset).save_to_disk(str(path))
    return dataset


def hf_images(dataset: datasets.Dataset) -> torch.Tensor:
    return torch.stack([torch.from_numpy(np.array(image)).permute(2, 0, 1) for image in dataset["image"]])


# ----------------------------------------------------------------------------- detect_format


def test_the_format_is_told_by_what_is_on_disk(tmp_path, rgb) -> None:
    with (tmp_path / "data.NPZ").open("wb") as file:  # the suffix in any case
        np.savez(file, images=rgb.numpy(), labels=labels_of(6).numpy())
    write_folder(tmp_path, {"folder": {"a": [np.zeros((4, 4), np.uint8)]}})
    save_hf(tmp_path / "dataset", rgb)
    save_hf(tmp_path / "dict", rgb, splits=("train",))
    assert [detect_format(tmp_path / name) for name in ("data.NPZ", "folder", "dataset", "dict")] == [
        "npz", "folder", "hf", "hf",
    ]
    with pytest.raises(FileNotFoundError, match="missing: no such file or folder; expected an image folder"):
        detect_format(tmp_path / "missing")
    (tmp_path / "data.csv").write_text("x")
    (tmp_path / "README").write_text("x")
    with pytest.raises(ValueError, match="unsupported file type '.csv'"):
        detect_format(tmp_path / "data.csv")
    with pytest.raises(ValueError, match=r"unsupported file type '\(no suffix\)'"):
        detect_format(tmp_path / "README")


# ----------------------------------------------------------------------------- npz


@pytest.mark.parametrize("layout", ["NCHW", "NHWC", "NHW"])
def test_npz_round_trip_keeps_the_layout(tmp_path, rgb, layout) -> None:
    stored = {"NCHW": rgb, "NHWC": rgb.permute(0, 2, 3, 1), "NHW": rgb[:, 0]}[layout].numpy()
    np.savez(tmp_path / "in.npz", images=stored, labels=labels_of(6).numpy())
    images, labels, meta = read_dataset(tmp_path / "in.npz")
    expected = rgb if layout != "NHW" else rgb[:, :1]
    assert images.dtype == torch.uint8 and torch.equal(images, expected) and torch.equal(labels, labels_of(6))
    assert meta.format == "npz" and meta.layout == layout and meta.num_classes is None

    written = write_dataset(tmp_path / "out", 255 - images, labels, meta, key="k", progress=False)
    assert written == tmp_path / "out" / "in.npz"
    with np.load(written) as archive:
        np.testing.assert_array_equal(archive["images"], 255 - stored)
        np.testing.assert_array_equal(archive["labels"], labels_of(6).numpy())


def test_npz_float_images_are_read_as_float32_in_0_1(tmp_path, rgb) -> None:
    np.savez(tmp_path / "in.npz", images=rgb.double().numpy() / 255, labels=labels_of(6).numpy().astype(np.uint8))
    images, labels, _ = read_dataset(tmp_path / "in.npz")
    assert images.dtype == torch.float32 and torch.allclose(images, rgb.float() / 255)
    assert labels.dtype == torch.int64


def test_hugging_face_options_are_refused_for_other_formats(tmp_path, rgb) -> None:
    np.savez(tmp_path / "in.npz", images=rgb.numpy(), labels=labels_of(6).numpy())
    with pytest.raises(ValueError, match="is an .npz file; split and image_column only for save_to_disk"):
        read_dataset(tmp_path / "in.npz", split="train", image_column="img")


# ----------------------------------------------------------------------------- image folder


def test_image_folder_round_trip_keeps_classes_and_file_names(tmp_path, rgb) -> None:
    arrays = rgb.permute(0, 2, 3, 1).numpy()
    write_folder(tmp_path, {"in": {name: list(arrays[index::3]) for index, name in enumerate(CLASSES)}})
    Image.fromarray(arrays[0]).save(tmp_path / "in" / "c" / "photo.jpg", quality=95)
    images, labels, meta = read_dataset(tmp_path / "in", progress=False)
    assert meta.format == "folder" and meta.classes == CLASSES and meta.num_classes == 3
    assert meta.files == ["0.png", "1.png", "0.png", "1.png", "0.png", "1.png", "photo.jpg"]
    assert labels.tolist() == [0, 0, 1, 1, 2, 2, 2]
    assert torch.equal(images[:6], rgb[[0, 3, 1, 4, 2, 5]])

    written = write_dataset(tmp_path / "out", 255 - images, labels, meta, key="k", progress=False)
    assert sorted(path.relative_to(written).as_posix() for path in written.rglob("*.png")) == [
        "a/0.png", "a/1.png", "b/0.png", "b/1.png", "c/0.png", "c/1.png", "c/photo.png",
    ]
    reread, relabels, _ = read_dataset(written, progress=False)
    assert torch.equal(reread, 255 - images) and torch.equal(relabels, labels)


def test_a_gray_png_among_rgb_pngs_is_converted_like_imagefolder(tmp_path):
    rng = np.random.default_rng(0)
    (tmp_path / "c").mkdir()
    for index in range(3):
        Image.fromarray(rng.integers(0, 256, (8, 8, 3), dtype=np.uint8)).save(tmp_path / f"c/rgb{index}.png")
    gray = rng.integers(0, 256, (8, 8), dtype=np.uint8)
    Image.fromarray(gray).save(tmp_path / "c/gray.png")
    images, _, meta = read_dataset(tmp_path, progress=False)
    assert images.shape == (4, 3, 8, 8)
    converted = images[meta.files.index("gray.png")]
    assert all(torch.equal(channel, torch.from_numpy(gray)) for channel in converted)


def test_files_that_would_be_written_to_one_png_are_refused(tmp_path) -> None:
    (tmp_path / "in" / "cat").mkdir(parents=True)
    for suffix in ("png", "jpg"):
        Image.new("L", (4, 4)).save(tmp_path / "in" / "cat" / f"a.{suffix}")
    with pytest.raises(ValueError, match="differing only in their extension would be written to one .png"):
        read_dataset(tmp_path / "in", progress=False)


def test_labels_that_would_write_two_files_to_one_png_are_refused(tmp_path) -> None:
    for folder in ("cat", "dog"):
        (tmp_path / "in" / folder).mkdir(parents=True)
        Image.new("L", (4, 4)).save(tmp_path / "in" / folder / "a.png")
    images, labels, meta = read_dataset(tmp_path / "in", progress=False)
    with pytest.raises(ValueError, match=r"would be written to one \.png: a\.png and a\.png"):
        write_dataset(tmp_path / "out", images, torch.zeros_like(labels), meta, key="k", progress=False)
    assert not (tmp_path / "out").exists()


# ----------------------------------------------------------------------------- save_to_disk datasets


def test_save_to_disk_dataset_round_trip_keeps_the_other_columns(tmp_path, rgb) -> None:
    save_hf(tmp_path / "in", rgb)
    images, labels, meta = read_dataset(tmp_path / "in")
    assert meta.format == "hf" and meta.num_classes == 3 and meta.split is None
    assert (meta.image_column, meta.label_column) == ("image", "label")
    assert torch.equal(images, rgb.float() / 255) and torch.equal(labels, labels_of(6))

    written = write_dataset(tmp_path / "out", 255 - rgb, labels, meta, key="k")
    loaded = datasets.load_from_disk(str(written))
    assert loaded.features == meta.dataset.features and loaded["id"] == meta.dataset["id"]
    assert torch.equal(hf_images(loaded), 255 - rgb) and loaded["label"] == labels.tolist()


def test_a_dataset_dict_has_one_split_replaced(tmp_path, rgb) -> None:
    save_hf(tmp_path / "in", rgb, splits=("train", "test"))
    _, labels, meta = read_dataset(tmp_path / "in")
    assert meta.split == "train"
    written = write_dataset(tmp_path / "out", 255 - rgb, labels, meta, key="k")
    loaded = datasets.load_from_disk(str(written))
    assert torch.equal(hf_images(loaded["train"]), 255 - rgb) and torch.equal(hf_images(loaded["test"]), rgb)

    _, _, test_meta = read_dataset(tmp_path / "in", split="test")
    assert test_meta.split == "test"
    with pytest.raises(ValueError, match=r"choose a split with --split; the dataset holds \['train', 'test'\]"):
        read_dataset(tmp_path / "in", split="validation")


def test_split_choices_are_checked(tmp_path, rgb) -> None:
    save_hf(tmp_path / "single", rgb)
    with pytest.raises(ValueError, match="holds a single Dataset, not splits; drop --split train"):
        read_dataset(tmp_path / "single", split="train")
    save_hf(tmp_path / "no-train", rgb, splits=("test", "validation"))
    with pytest.raises(ValueError, match="choose a split with --split"):
        read_dataset(tmp_path / "no-train")


# ----------------------------------------------------------------------------- hf_image_values, replace_hf_images


def test_an_image_column_gets_pil_images_of_the_levels(rgb) -> None:
    def levels(values: list) -> torch.Tensor:
        assert all(isinstance(value, Image.Image) for value in values)
        return torch.stack([torch.from_numpy(np.array(value)).permute(2, 0, 1) for value in values])

    assert torch.equal(levels(hf_image_values(rgb, datasets.Image(), None)), rgb)
    assert torch.equal(levels(hf_image_values(encode(rgb.float() / 255, "float16"), datasets.Image(), None)), rgb)


@pytest.mark.parametrize("layout", ["CHW", "HWC"])
def test_an_array_column_keeps_its_layout_and_kind(rgb, layout) -> None:
    first = rgb[0].numpy() if layout == "CHW" else rgb[0].permute(1, 2, 0).numpy()
    expected = rgb if layout == "CHW" else rgb.permute(0, 2, 3, 1)
    levels = hf_image_values(rgb, None, first)
    assert levels[0].dtype == np.uint8 and np.array_equal(np.stack(levels), expected.numpy())
    floats = hf_image_values(rgb, None, first.astype(np.float32) / 255)
    assert floats[0].dtype == np.float32
    np.testing.assert_array_equal(np.stack(floats), decode(expected).numpy())


def test_an_array_column_of_another_shape_is_refused(rgb) -> None:
    with pytest.raises(ValueError, match=r"image column values of shape \(8,\) are neither HW, CHW nor HWC"):
        hf_image_values(rgb, None, np.zeros(8, np.uint8))


def test_replace_hf_images_fingerprints_by_key_and_writes_the_cache_file(tmp_path, rgb) -> None:
    dataset = save_hf(tmp_path / "in", rgb)
    first = replace_hf_images(dataset, ("image", "label"), 255 - rgb, "key-1")
    again = replace_hf_images(dataset, ("image", "label"), 255 - rgb, "key-1")
    other = replace_hf_images(dataset, ("image", "label"), 255 - rgb, "key-2", cache_file=tmp_path / "cache.arrow")
    assert first._fingerprint == again._fingerprint != other._fingerprint
    assert torch.equal(hf_images(other), 255 - rgb) and other["id"] == dataset["id"]
    assert (tmp_path / "cache.arrow").is_file()


# ----------------------------------------------------------------------------- output_path, write_dataset checks


def test_output_path_places_and_checks_the_output(tmp_path) -> None:
    source = tmp_path / "in.npz"
    source.write_bytes(b"")
    npz = DatasetMeta("npz", source)
    assert output_path(tmp_path / "out", npz) == tmp_path / "out" / "in.npz"
    assert output_path(tmp_path / "clean.npz", npz) == tmp_path / "clean.npz"
    (tmp_path / "clean.npz").write_bytes(b"x")
    with pytest.raises(FileExistsError, match="exists; choose another --out or pass --overwrite"):
        output_path(tmp_path / "clean.npz", npz)
    assert output_path(tmp_path / "clean.npz", npz, overwrite=True) == tmp_path / "clean.npz"
    with pytest.raises(ValueError):
        output_path(tmp_path, npz)  # the input's own path
    (tmp_path / "folder" / "a").mkdir(parents=True)
    with pytest.raises(ValueError):
        output_path(tmp_path / "folder" / "out", DatasetMeta("folder", tmp_path / "folder"))
    with pytest.raises(ValueError, match="unknown dataset format 'csv'"):
        output_path(tmp_path / "out", DatasetMeta("csv", source))


def test_write_dataset_wants_uint8_nchw_and_one_label_per_image(tmp_path, rgb) -> None:
    meta = DatasetMeta("npz", tmp_path / "in.npz")
    with pytest.raises(TypeError, match="expected a uint8 NCHW tensor"):
        write_dataset(tmp_path / "out", rgb.float(), labels_of(6), meta, key="k")
    with pytest.raises(ValueError, match="got 5 labels for 6 images"):
        write_dataset(tmp_path / "out", rgb, labels_of(5), meta, key="k")
    assert not (tmp_path / "out").exists()
