"""DVAEPurify as a transform: v1 and v2 pipelines, input/output types, labels, workers, bad input."""

from __future__ import annotations

import copy
import warnings

import numpy as np
import PIL.Image
import pytest
import torch
from torch.utils.data import DataLoader, Dataset
from torchvision import transforms as v1
from torchvision import tv_tensors
from torchvision.transforms import v2
from torchvision.transforms.v2 import functional as F

from dvae_transform import DVAE, DVAEPurify
from dvae_transform.purify import purify_two_stage, reconstruct


@pytest.fixture
def purifier(tiny_purifier) -> DVAEPurify:
    """A private copy of the shared 1x16x16, 4-class purifier (tests change its state)."""
    return copy.deepcopy(tiny_purifier)


@pytest.fixture(scope="module")
def rgb_purifier() -> DVAEPurify:
    """An untrained 3x16x16 purifier: enough to check types, shapes and errors."""
    torch.manual_seed(0)
    stages = [DVAE(in_channels=3, image_size=16, num_classes=4, width=8, latent_dim=8) for _ in range(2)]
    return DVAEPurify(*stages)


def two_stage(purifier: DVAEPurify, images: torch.Tensor, labels) -> torch.Tensor:
    return purify_two_stage(purifier.stage1, purifier.stage2, images, torch.as_tensor(labels).reshape(-1))


def label_free(purifier: DVAEPurify, images: torch.Tensor) -> torch.Tensor:
    return reconstruct(purifier.stage2, images)


def as_pil(image: torch.Tensor) -> PIL.Image.Image:
    return F.to_pil_image((image * 255).round().to(torch.uint8))


# --------------------------------------------------------------------------- v2 pipelines with labels


@pytest.mark.parametrize("label", [2, torch.tensor(2), np.int64(2)])
def test_v2_compose_passes_label_through_and_runs_both_stages(purifier, tiny_data, label):
    image = tiny_data[0][5]
    out_image, out_label = v2.Compose([purifier])(image, label)
    assert out_label is label
    torch.testing.assert_close(out_image, two_stage(purifier, image[None], 2)[0], rtol=0, atol=0)


def test_batch_with_labels_matches_two_stage(purifier, tiny_data):
    images, labels = tiny_data[0][:6], tiny_data[1][:6]
    out_images, out_labels = purifier(images, labels)
    assert out_labels is labels
    assert torch.equal(out_images, two_stage(purifier, images, labels))
    assert torch.equal(purifier.purify(images, labels), out_images)


def test_label_found_in_a_dict_sample(purifier, tiny_data):
    sample = {"image": tv_tensors.Image(tiny_data[0][1]), "label": 3, "name": "x"}
    out = v2.Compose([purifier, v2.ToDtype(torch.float32)])(sample)
    assert out["label"] == 3 and out["name"] == "x"
    assert isinstance(out["image"], tv_tensors.Image)
    assert torch.equal(out["image"].as_subclass(torch.Tensor), two_stage(purifier, tiny_data[0][1:2], 3)[0])


def test_masks_and_boxes_pass_through(purifier, tiny_data):
    mask = tv_tensors.Mask(torch.zeros(16, 16, dtype=torch.uint8))
    image, label, out_mask = purifier(tv_tensors.Image(tiny_data[0][0]), 1, mask)
    assert out_mask is mask and label == 1
    assert torch.equal(image.as_subclass(torch.Tensor), two_stage(purifier, tiny_data[0][:1], 1)[0])


@pytest.mark.parametrize("key", ["label", "LABEL", "class_label"])
def test_dict_label_found_by_torchvisions_rule_not_by_position(purifier, tiny_data, key):
    image = tiny_data[0][5]
    _, target = purifier(image, {"image_id": 7, key: 3})  # id 7 is outside the 4 classes
    assert target == {"image_id": 7, key: 3}
    out = purifier({"image": tv_tensors.Image(image), "image_id": 1, key: 3})["image"]
    assert torch.equal(out.as_subclass(torch.Tensor), two_stage(purifier, image[None], 3)[0])
    assert not torch.equal(out.as_subclass(torch.Tensor), two_stage(purifier, image[None], 1)[0])


@pytest.mark.parametrize(
    "sample",
    [lambda image: (image,), lambda image: (image, None), lambda image: ({"image": image, "target": 2},),
     lambda image: (image, {"target": 2})],
    ids=["image-alone", "label-none", "dict-with-target", "tuple-with-target-dict"],
)
def test_a_sample_without_a_findable_label_is_an_error(purifier, tiny_data, sample):
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # no silent label-free path either
        with pytest.raises(ValueError, match="found no label.*labels_getter=None"):
            purifier(*sample(tv_tensors.Image(tiny_data[0][5])))


def test_labels_getter_callable_finds_the_label(purifier, tiny_data):
    getter = DVAEPurify(purifier.stage1, purifier.stage2, labels_getter=lambda sample: sample["target"])
    out = getter({"image": tv_tensors.Image(tiny_data[0][5]), "target": 2})["image"]
    assert torch.equal(out.as_subclass(torch.Tensor), two_stage(purifier, tiny_data[0][5:6], 2)[0])
    with pytest.raises(ValueError, match="labels_getter must be 'default', a callable or None"):
        purifier.replace(labels_getter="label")


# --------------------------------------------------------------------------- types in and out


def test_pil_in_pil_out(purifier, tiny_data):
    image = as_pil(tiny_data[0][0])
    out, label = purifier(image, 1)
    assert isinstance(out, PIL.Image.Image) and out.mode == "L" and out.size == (16, 16) and label == 1
    expected = two_stage(purifier, F.pil_to_tensor(image)[None].float() / 255, 1)[0]
    assert torch.equal(F.pil_to_tensor(out), (expected * 255).round().to(torch.uint8))


def test_palette_pil_in_gray_pil_out(purifier, tiny_data):
    gray = as_pil(tiny_data[0][0])
    palette = gray.quantize(16)  # a palette image of 16 gray levels, as optimised PNGs and GIFs hold
    levels = palette.convert("L")
    out, label = purifier(palette, 1)
    assert out.mode == "L" and label == 1
    assert torch.equal(F.pil_to_tensor(out), F.pil_to_tensor(purifier(levels, 1)[0]))


def test_rgb_pil_in_rgb_pil_out(rgb_purifier):
    image = PIL.Image.fromarray(np.random.default_rng(0).integers(0, 256, (16, 16, 3), dtype=np.uint8))
    out, _ = rgb_purifier(image, 0)
    assert isinstance(out, PIL.Image.Image) and out.mode == "RGB" and out.size == (16, 16)


def test_tv_image_in_tv_image_out(purifier, tiny_data):
    out, _ = purifier(tv_tensors.Image(tiny_data[0][2]), 0)
    assert type(out) is tv_tensors.Image and out.dtype == torch.float32 and out.shape == (1, 16, 16)


@pytest.mark.parametrize("shape", [(1, 16, 16), (5, 1, 16, 16)])
def test_tensors_in_float_tensors_out(purifier, shape):
    images = torch.randint(0, 256, shape, generator=torch.Generator().manual_seed(1), dtype=torch.uint8)
    labels = torch.zeros(shape[0] if len(shape) == 4 else 1, dtype=torch.long)
    out, _ = purifier(images, labels)
    assert type(out) is torch.Tensor and out.dtype == torch.float32 and out.shape == shape
    assert 0 <= out.min() and out.max() <= 1
    # uint8 input means the same as the float input it stands for
    assert torch.equal(out, purifier(images.float() / 255, labels)[0])


# --------------------------------------------------------------------------- v1 pipelines (no label)


def test_label_free_path_warns_once_and_reconstructs(purifier, tiny_data):
    images = tiny_data[0][:3]
    label_free_purifier = purifier.replace(labels_getter=None)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        outputs = [label_free_purifier(image) for image in images]
        label_free_purifier.purify(images)
    messages = [str(w.message) for w in caught if issubclass(w.category, UserWarning)]
    assert len(messages) == 1 and "no label" in messages[0]
    for image, output in zip(images, outputs):
        assert torch.equal(output, label_free(purifier, image[None])[0])


@pytest.mark.parametrize(
    "sample",
    [lambda image: (image,), lambda image: (image, 1), lambda image: ({"image": image, "label": 1},)],
    ids=["image-alone", "with-label", "dict-with-label"],
)
def test_labels_getter_none_takes_the_label_free_path(purifier, tiny_data, sample):
    image = tv_tensors.Image(tiny_data[0][5])
    with pytest.warns(UserWarning, match="got no label"):
        out = v2.Compose([purifier.replace(labels_getter=None)])(*sample(image))
    out_image = out[0] if isinstance(out, tuple) else out["image"] if isinstance(out, dict) else out
    assert torch.equal(out_image.as_subclass(torch.Tensor), label_free(purifier, tiny_data[0][5:6])[0])


@pytest.mark.parametrize("label", [1.0, torch.tensor(1.0), np.float32(1), "1", True, torch.tensor(True)])
def test_a_present_label_that_is_not_an_integer_is_an_error_every_time(purifier, tiny_data, label):
    image = tiny_data[0][5]
    with pytest.warns(UserWarning, match="got no label"):
        purifier.purify(image)  # the one warning of the label-free path is spent
    for _ in range(2):
        with pytest.raises(TypeError, match="expected integer class labels"):
            v2.Compose([purifier])(image, label)


@pytest.mark.filterwarnings("ignore:DVAEPurify got no label")
def test_v1_compose_before_and_after_to_tensor(purifier, tiny_data):
    purifier = purifier.replace(labels_getter=None)
    pil = as_pil(tiny_data[0][4])
    expected = label_free(purifier, v1.ToTensor()(pil)[None])[0]

    after = v1.Compose([v1.ToTensor(), purifier])(pil)
    assert type(after) is torch.Tensor and torch.equal(after, expected)

    before = v1.Compose([purifier, v1.ToTensor()])(pil)
    assert torch.equal(before, (expected * 255).round() / 255)

    to_image = v1.Compose([v2.ToImage(), v2.ToDtype(torch.float32, scale=True)])
    v2_style = v1.Compose([to_image, purifier])(pil)
    assert type(v2_style) is tv_tensors.Image
    assert torch.equal(v2_style.as_subclass(torch.Tensor), label_free(purifier, to_image(pil)[None])[0])


# --------------------------------------------------------------------------- workers and devices


class _Images(Dataset):
    """Images with labels, purified by ``transform`` (a v2 transform of (image, label))."""

    def __init__(self, images: torch.Tensor, labels: torch.Tensor, transform) -> None:
        self.images, self.labels, self.transform = images, labels, transform

    def __len__(self) -> int:
        return len(self.images)

    def __getitem__(self, index: int):
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            image, label = self.transform(self.images[index], int(self.labels[index]))
        fallbacks = sum("inside DataLoader workers" in str(w.message) for w in caught)
        return image, label, fallbacks


def _load_all(dataset: Dataset, num_workers: int) -> tuple[torch.Tensor, torch.Tensor, int]:
    loader = DataLoader(dataset, batch_size=5, num_workers=num_workers)
    batches = list(loader)
    images = torch.cat([batch[0] for batch in batches])
    labels = torch.cat([batch[1] for batch in batches])
    return images, labels, int(sum(batch[2].sum() for batch in batches))


def test_dataloader_workers_match_main_process(purifier, tiny_data):
    dataset = _Images(tiny_data[0][:20], tiny_data[1][:20], purifier)
    main_images, main_labels, _ = _load_all(dataset, num_workers=0)
    worker_images, worker_labels, _ = _load_all(dataset, num_workers=2)
    assert torch.equal(worker_labels, tiny_data[1][:20]) and torch.equal(main_labels, worker_labels)
    torch.testing.assert_close(worker_images, main_images, rtol=0, atol=1e-6)
    assert torch.allclose(main_images, two_stage(purifier, tiny_data[0][:20], tiny_data[1][:20]), atol=1e-6)


def test_to_device_sticks(purifier, tiny_data):
    assert purifier.to("cpu") is purifier and purifier.device == torch.device("cpu")
    moved = copy.deepcopy(purifier).to("meta")
    assert moved.device.type == "meta" and next(moved.stage2.parameters()).device.type == "meta"


def test_accelerator_device_falls_back_to_cpu_in_workers(purifier, tiny_data):
    """A purifier set to a device a worker cannot use runs on the CPU there, with a warning.

    "meta" stands in for a CUDA device here: the stages stay on the CPU until first use in the
    main process, as with ``device="cuda"``. (Checked by hand on an H100: that case falls back the
    same way; weights already on the GPU give a clear error in forked workers and fall back in
    spawned ones.)
    """
    elsewhere = DVAEPurify(purifier.stage1, purifier.stage2, device="meta")
    images, _, fallbacks = _load_all(_Images(tiny_data[0][:10], tiny_data[1][:10], elsewhere), num_workers=2)
    assert fallbacks == 10
    torch.testing.assert_close(images, two_stage(purifier, tiny_data[0][:10], tiny_data[1][:10]), rtol=0, atol=1e-6)


# --------------------------------------------------------------------------- bad input


def test_grayscale_into_rgb_model_asks_for_explicit_conversion(rgb_purifier):
    gray = PIL.Image.fromarray(np.zeros((16, 16), dtype=np.uint8))
    with pytest.raises(ValueError, match=r"expected 3 channel.*Grayscale\(num_output_channels=3\)"):
        rgb_purifier(gray, 0)
    with pytest.raises(ValueError, match="convert grayscale images to RGB explicitly"):
        rgb_purifier(torch.rand(1, 16, 16), 0)
    converted = v2.Compose([v2.Grayscale(num_output_channels=3), rgb_purifier])(gray, 0)[0]
    assert converted.mode == "RGB"


@pytest.mark.parametrize(
    ("inputs", "error", "match"),
    [
        ((torch.rand(16, 16), 0), ValueError, "rank 2"),
        ((torch.rand(1, 1, 1, 16, 16), 0), ValueError, "rank 5"),
        ((torch.rand(2, 16, 16), 0), ValueError, "expected 1 channel"),
        ((torch.rand(1, 8, 8), 0), ValueError, "expected 16x16 images, got 8x8"),
        ((torch.rand(1, 16, 16), 4), ValueError, r"labels must lie in \[0, 4\)"),
        ((torch.rand(1, 16, 16), -1), ValueError, r"labels must lie in \[0, 4\)"),
        ((torch.rand(3, 1, 16, 16), torch.tensor([0, 1])), ValueError, "got 2 labels for 3 images"),
        ((torch.full((1, 16, 16), float("nan")), 0), ValueError, "NaN"),
        ((torch.rand(1, 16, 16) * 255, 0), ValueError, r"must lie in \[0, 1\].*divide by 255"),
        ((torch.rand(1, 16, 16) - 1, 0), ValueError, r"must lie in \[0, 1\]"),
        ((torch.ones(1, 16, 16, dtype=torch.int32), 0), TypeError, "uint8, uint16 or floating point"),
        ((np.zeros((16, 16, 1), dtype=np.uint8), 0), TypeError, "found no image.*ToImage"),
    ],
)
def test_bad_input_is_rejected_clearly(purifier, inputs, error, match):
    with pytest.raises(error, match=match):
        purifier(*inputs)


def test_repr_is_short_inside_a_compose(purifier):
    text = repr(v2.Compose([v2.ToImage(), purifier]))
    assert len(text.splitlines()) <= 4 and "DVAEPurify(in_channels=1, image_size=16, num_classes=4" in text


def test_a_smaller_image_gets_a_padding_hint(purifier):
    with pytest.raises(ValueError, match=r"expected 16x16 images, got 12x12; pad them, e.g\. .*v2\.Pad\(2\)"):
        purifier(torch.rand(1, 12, 12), 0)
    with pytest.raises(ValueError, match=r"got 13x13; resize them, e.g\. .*v2\.Resize\(16\)"):
        purifier(torch.rand(1, 13, 13), 0)
