"""Image folders: class sub-folders listed, then read into one NCHW batch."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from dataset_writers import pixels
from PIL import Image
from torchvision.transforms.v2.functional import resize

from dvae_transform.data.image_folder import ImageFolderFiles, list_image_folder


def save(path, array: np.ndarray) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(array).save(path)


@pytest.fixture
def gray() -> np.ndarray:
    """Four seeded 8x8 uint8 gray images."""
    return pixels(4, (8, 8), seed=1)


def test_classes_samples_and_labels_are_listed_in_sorted_order(tmp_path, gray) -> None:
    save(tmp_path / "dog" / "b.png", gray[0])
    save(tmp_path / "dog" / "nested" / "a.png", gray[1])
    save(tmp_path / "cat" / "x.png", gray[2])
    (tmp_path / "cat" / "notes.txt").write_text("not an image")
    folder = list_image_folder(tmp_path)
    assert isinstance(folder, ImageFolderFiles) and folder.root == tmp_path and folder.classes == ["cat", "dog"]
    assert folder.samples == [
        (str(tmp_path / "cat" / "x.png"), 0), (str(tmp_path / "dog" / "b.png"), 1),
        (str(tmp_path / "dog" / "nested" / "a.png"), 1),
    ]
    assert folder.labels.dtype == torch.int64 and folder.labels.tolist() == [0, 1, 1]


def test_missing_or_empty_class_folders_are_refused(tmp_path) -> None:
    with pytest.raises(ValueError, match="no class sub-folders found; expected one sub-folder of images per class"):
        list_image_folder(tmp_path / "missing")
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    (tmp_path / "b" / "notes.txt").write_text("x")
    with pytest.raises(ValueError, match=r"the class sub-folders \['a', 'b'\] hold no image files \(none with .*\.png"):
        list_image_folder(tmp_path)


def test_header_channels_tell_gray_from_colour_before_reading(tmp_path, gray) -> None:
    save(tmp_path / "a" / "0.png", gray[0])
    save(tmp_path / "b" / "1.png", gray[1])
    assert list_image_folder(tmp_path).header_channels() == 1
    save(tmp_path / "b" / "2.png", np.stack([gray[2]] * 3, axis=-1))
    assert list_image_folder(tmp_path).header_channels() == 3


def test_read_returns_the_pixels_of_the_chosen_files(tmp_path, gray) -> None:
    for index, image in enumerate(gray):
        save(tmp_path / "a" / f"{index}.png", image)
    folder = list_image_folder(tmp_path)
    images = folder.read()
    assert images.dtype == torch.uint8 and torch.equal(images, torch.from_numpy(gray)[:, None])
    assert torch.equal(folder.read([3, 1]), images[[3, 1]])
    assert torch.equal(folder.read([0], channels=3), images[:1].expand(1, 3, 8, 8))


def test_gray_images_among_colour_ones_become_rgb(tmp_path, gray) -> None:
    colour = pixels(1, (8, 8, 3), seed=2)[0]
    save(tmp_path / "a" / "0.png", gray[0])
    save(tmp_path / "a" / "1.png", colour)
    images = list_image_folder(tmp_path).read()
    assert images.shape == (2, 3, 8, 8)
    assert torch.equal(images[0], torch.from_numpy(gray[0]).expand(3, 8, 8))
    assert torch.equal(images[1], torch.from_numpy(colour).permute(2, 0, 1))


def test_size_resizes_every_image_and_mixed_sizes_are_refused_without_it(tmp_path, gray) -> None:
    save(tmp_path / "a" / "0.png", gray[0])
    big = pixels(1, (12, 6), seed=3)[0]
    save(tmp_path / "a" / "1.png", big)
    folder = list_image_folder(tmp_path)
    with pytest.raises(ValueError, match=r"1\.png: image has shape \(1, 12, 6\), the others \(1, 8, 8\)"):
        folder.read()
    images = folder.read(size=8)
    assert images.shape == (2, 1, 8, 8) and torch.equal(images[0, 0], torch.from_numpy(gray[0]))
    assert torch.equal(images[1], resize(torch.from_numpy(big)[None], [8, 8], antialias=True))


def test_sixteen_bit_and_eight_bit_images_are_read_as_float_at_their_own_range(tmp_path, gray) -> None:
    deep = np.linspace(0, 65535, 64).astype(np.uint16).reshape(8, 8)
    save(tmp_path / "a" / "0.png", gray[0])
    save(tmp_path / "a" / "1.png", deep)
    images = list_image_folder(tmp_path).read()
    assert images.dtype == torch.float32
    assert torch.equal(images[0, 0], torch.from_numpy(gray[0]).float() / 255)
    assert torch.equal(images[1, 0], torch.from_numpy(deep.astype(np.float32) / 65535))


def test_an_unreadable_file_is_named(tmp_path, gray) -> None:
    save(tmp_path / "a" / "0.png", gray[0])
    (tmp_path / "a" / "broken.png").write_bytes(b"not a png")
    with pytest.raises(ValueError, match="broken.png: not a readable image file"):
        list_image_folder(tmp_path).read()
