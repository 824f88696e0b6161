"""Bad input through every entry point: the exception type, and a message that names the value and what was expected.

One row per kind of bad input (issue #9), grouped by entry point: ``DVAEPurify.purify``, the transform
in v2 and v1 pipelines, ``PurifiedDataset``, ``DVAEPurify.fit``, ``DVAEPurify.from_pretrained`` on
folders with bad files, and the ``dvae-purify`` command line (exit status and the error line on
stderr). Every row fails before any training; the purifiers are the session's tiny one (1x16x16,
4 classes) and an untrained 3x16x16 one.
"""

from __future__ import annotations

import copy
import json
import shutil
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
import torchvision.transforms as v1
from PIL import Image
from torch.utils.data import TensorDataset
from torchvision import tv_tensors
from torchvision.transforms import v2

from dvae_transform import DVAE, DVAEPurify, PurifiedDataset
from dvae_transform.cli import main
from dvae_transform.validation import InputTypeError

GRAY = np.random.default_rng(0).integers(0, 256, (16, 16), dtype=np.uint8)


@dataclass
class Env:
    """What a row works with: the purifiers, a fresh folder and a saved copy of the gray purifier."""

    gray: DVAEPurify  # 1x16x16, 4 classes
    rgb: DVAEPurify  # 3x16x16, 4 classes, untrained
    tmp: Path
    weights: Path

    def folder(self, name: str, files: dict[str, Image.Image | bytes]) -> Path:
        """An image folder ``tmp/name`` holding ``files`` (relative path -> image or raw bytes)."""
        for relative, content in files.items():
            path = self.tmp / name / relative
            path.parent.mkdir(parents=True, exist_ok=True)
            if isinstance(content, bytes):
                path.write_bytes(content)
            else:
                content.save(path)
        return self.tmp / name

    def npz(self, name: str, **arrays: np.ndarray) -> Path:
        np.savez(self.tmp / name, **arrays)
        return self.tmp / name

    def npy_named_npz(self) -> Path:
        with open(self.tmp / "a.npz", "wb") as handle:
            np.save(handle, np.zeros(3))
        return self.tmp / "a.npz"

    def weights_copy(self, change: Callable[[Path], Any]) -> str:
        """A copy of the saved purifier with ``change(folder)`` applied."""
        folder = self.tmp / "weights"
        shutil.copytree(self.weights, folder)
        change(folder)
        return str(folder)

    def purified(self, data: Any, **options: Any) -> PurifiedDataset:
        return PurifiedDataset(data, self.gray, progress=False, **options).prepare()

    def fit(self, data: Any, **options: Any) -> DVAEPurify:
        return DVAEPurify.fit(data, **{"epochs": 1, "width": 8, "latent_dim": 8, "progress": False, **options})


@pytest.fixture(scope="module")
def purifiers(tiny_purifier: DVAEPurify, tmp_path_factory: pytest.TempPathFactory) -> tuple[DVAEPurify, ...]:
    torch.manual_seed(0)
    rgb = DVAEPurify(*[DVAE(in_channels=3, image_size=16, num_classes=4, width=8, latent_dim=8) for _ in range(2)])
    weights = tmp_path_factory.mktemp("weights")
    tiny_purifier.save_pretrained(weights)
    return copy.deepcopy(tiny_purifier), rgb, weights


@pytest.fixture
def env(purifiers, tmp_path: Path) -> Env:
    gray, rgb, weights = purifiers
    return Env(gray, rgb, tmp_path, weights)


Row = tuple[str, Callable[[Env], Any], type[BaseException], tuple[str, ...]]


def row(name: str, call: Callable[[Env], Any], error: type[BaseException], *parts: str) -> Row:
    """A table row: ``call(env)`` raises ``error`` with every one of ``parts`` in its message."""
    return name, call, error, parts


def table(**groups: list[Row]) -> list[Any]:
    """The rows of every group as test parameters, with ids ``group:name``."""
    return [pytest.param(*rest, id=f"{group}:{name}") for group, rows in groups.items() for name, *rest in rows]


# ----------------------------------------------------------------------------- inputs


def image(*shape: int, dtype: torch.dtype = torch.float32, fill: float = 0.5) -> torch.Tensor:
    return torch.full(shape, fill, dtype=dtype)


def pil(mode: str, alpha: int | None = None, palette: list[int] | None = None) -> Image.Image:
    """A 16x16 PIL image of ``mode`` holding :data:`GRAY` (alpha ``alpha``, ``P`` palette ``palette``)."""
    if mode in ("P", "PA"):
        picture = Image.fromarray(GRAY // 16).convert("P")  # palette indices 0..15
        picture.putpalette(palette if palette is not None else [level * 17 for level in range(16) for _ in "rgb"])
        if mode == "PA":
            picture = picture.convert("PA")
            picture.putalpha(Image.new("L", picture.size, 255 if alpha is None else alpha))
        return picture
    picture = Image.fromarray(GRAY).convert(mode)
    if alpha is not None:
        picture.putalpha(Image.new("L", picture.size, alpha))
    return picture


# ----------------------------------------------------------------------------- the table

NO_RANGE = "have no fixed pixel range"
TRANSPARENT = "transparent pixel(s) of 256"
NOT_INT = "expected integer class labels"
PALETTE = "uses palette index 15 but its palette holds 2 colour(s)"
SHORT_PALETTE = [0, 0, 0, 255, 255, 255]
COLOURS = [channel * level * 17 for level in range(16) for channel in (1, 0, 0)]  # shades of red

PURIFY = [
    row("int64-tensor", lambda e: e.gray.purify(image(1, 16, 16, dtype=torch.int64), 0), InputTypeError,
        "expected uint8, uint16 or floating point images, got dtype torch.int64"),
    row("int32-array", lambda e: e.gray.purify(np.zeros((1, 16, 16), np.int32), 0), InputTypeError,
        "got dtype torch.int32"),
    row("bool-tensor", lambda e: e.gray.purify(image(1, 16, 16, dtype=torch.bool), 0), InputTypeError,
        "got dtype torch.bool"),
    row("complex-tensor", lambda e: e.gray.purify(image(1, 16, 16, dtype=torch.complex64), 0), InputTypeError,
        "got dtype torch.complex64"),
    row("object-array", lambda e: e.gray.purify(np.array([None] * 4, dtype=object), 0), InputTypeError,
        "expected numeric pixel values, got a numpy array of dtype object"),
    row("string", lambda e: e.gray.purify("img.png", 0), InputTypeError, "expected a torch.Tensor", "got str"),
    row("none", lambda e: e.gray.purify(None, 0), InputTypeError, "got NoneType"),
    row("dict", lambda e: e.gray.purify({"image": 1}, 0), InputTypeError, "got dict"),
    row("empty-batch", lambda e: e.gray.purify(image(0, 1, 16, 16), []), ValueError, "the batch is empty"),
    row("empty-list", lambda e: e.gray.purify([], 0), ValueError, "got an empty sequence"),
    row("zero-size-image", lambda e: e.gray.purify(image(1, 0, 0), 0), ValueError,
        "images of shape (1, 0, 0), which hold no pixels"),
    row("rank-2-tensor", lambda e: e.gray.purify(image(16, 16), 0), ValueError, "rank 2 with shape (16, 16)"),
    row("rank-5-tensor", lambda e: e.gray.purify(image(1, 1, 1, 16, 16), 0), ValueError, "rank 5"),
    row("nan", lambda e: e.gray.purify(image(1, 16, 16, fill=float("nan")), 0), ValueError, "NaN or infinite"),
    row("inf", lambda e: e.gray.purify(image(1, 16, 16, fill=float("inf")), 0), ValueError, "NaN or infinite"),
    row("float-0-255", lambda e: e.gray.purify(image(1, 16, 16, fill=200.0), 0), ValueError,
        "must lie in [0, 1], got values in [200, 200]", "divide by 255"),
    row("negative-float", lambda e: e.gray.purify(image(1, 16, 16, fill=-0.5), 0), ValueError,
        "must lie in [0, 1], got values in [-0.5, -0.5]"),
    row("two-channels", lambda e: e.gray.purify(image(2, 16, 16), 0), ValueError, "expected 1 channel(s)", "got 2"),
    row("rgb-into-gray", lambda e: e.gray.purify(image(3, 16, 16), 0), ValueError,
        "convert RGB images to grayscale explicitly"),
    row("gray-into-rgb", lambda e: e.rgb.purify(image(1, 16, 16), 0), ValueError,
        "convert grayscale images to RGB explicitly"),
    row("rgba-array-into-rgb", lambda e: e.rgb.purify(np.zeros((16, 16, 4), np.uint8), 0), ValueError,
        "expected 3 channel(s)", "fourth channel is usually alpha"),
    row("wrong-size", lambda e: e.gray.purify(image(1, 8, 8), 0), ValueError, "expected 16x16 images, got 8x8"),
    row("non-square", lambda e: e.gray.purify(image(1, 16, 8), 0), ValueError, "expected 16x16 images, got 16x8"),
    row("mixed-shapes", lambda e: e.gray.purify([image(1, 16, 16), image(1, 8, 8)], [0, 1]), ValueError,
        "all images must have the same shape, got [(1, 8, 8), (1, 16, 16)]"),
    row("array-no-layout", lambda e: e.gray.purify(np.zeros((2, 2, 16, 16), np.uint8), [0, 1]), ValueError,
        "(2, 2, 16, 16) are neither NHW, NCHW nor NHWC"),
    row("pil-mode-I", lambda e: e.gray.purify(pil("I"), 0), ValueError, "mode 'I' " + NO_RANGE, "'I;16'"),
    row("pil-rgba-transparent", lambda e: e.rgb.purify(pil("RGBA", alpha=0), 0), ValueError,
        "mode 'RGBA' has 256 " + TRANSPARENT, "image.convert('RGB')"),
    row("pil-la-half-transparent", lambda e: e.gray.purify(pil("LA", alpha=128), 0), ValueError, "mode 'LA' has 256"),
    row("pil-pa-transparent", lambda e: e.gray.purify(pil("PA", alpha=0), 0), ValueError, "mode 'PA' has 256"),
    row("pil-p-short-palette", lambda e: e.gray.purify(pil("P", palette=SHORT_PALETTE), 0), ValueError,
        "mode 'P' " + PALETTE, "putpalette"),
    row("pil-f-out-of-range", lambda e: e.gray.purify(pil("F"), 0), ValueError, "must lie in [0, 1]"),
    row("pil-list-mixed-modes", lambda e: e.rgb.purify([pil("RGB"), pil("L")], [0, 1]), ValueError,
        "all images must have the same shape"),
    row("label-float", lambda e: e.gray.purify(image(1, 16, 16), 1.0), InputTypeError, NOT_INT, "got float (1.0)"),
    row("label-bool", lambda e: e.gray.purify(image(1, 16, 16), True), InputTypeError, "got bool (True)"),
    row("label-numpy-bool", lambda e: e.gray.purify(image(1, 16, 16), np.True_), InputTypeError, NOT_INT),
    row("label-string", lambda e: e.gray.purify(image(1, 16, 16), "3"), InputTypeError, "got str ('3')"),
    row("label-float-tensor", lambda e: e.gray.purify(image(1, 16, 16), torch.tensor(1.0)), InputTypeError,
        "got a Tensor of dtype torch.float32"),
    row("label-list-of-strings", lambda e: e.gray.purify(image(2, 1, 16, 16), ["a", "b"]), InputTypeError,
        "got list (['a', 'b'])"),
    row("label-dict", lambda e: e.gray.purify(image(1, 16, 16), {"label": 1}), InputTypeError, "got dict"),
    row("label-object", lambda e: e.gray.purify(image(1, 16, 16), object()), InputTypeError, NOT_INT, "got object"),
    row("label-too-large", lambda e: e.gray.purify(image(1, 16, 16), 4), ValueError,
        "class labels must lie in [0, 4) for 4 classes, got values in [4, 4]"),
    row("label-negative", lambda e: e.gray.purify(image(1, 16, 16), -1), ValueError, "got values in [-1, -1]"),
    row("label-count", lambda e: e.gray.purify(image(3, 1, 16, 16), [0, 1]), ValueError, "got 2 labels for 3 images"),
    row("label-2d", lambda e: e.gray.purify(image(1, 16, 16), torch.tensor([[1]])), ValueError,
        "expected a 1-D sequence of labels, got shape (1, 1)"),
]

TRANSFORM = [
    row("v2-float-label", lambda e: v2.Compose([e.gray])(image(1, 16, 16), 1.0), InputTypeError, "got float (1.0)"),
    row("v2-numpy-float-label", lambda e: v2.Compose([e.gray])(image(1, 16, 16), np.float64(2)), InputTypeError,
        NOT_INT, "got float64"),
    row("v2-string-label", lambda e: v2.Compose([e.gray])(image(1, 16, 16), "cat"), InputTypeError, "got str ('cat')"),
    row("v2-bool-label", lambda e: v2.Compose([e.gray])(image(1, 16, 16), True), InputTypeError, "got bool (True)"),
    row("v2-float-tensor-label", lambda e: v2.Compose([e.gray])(image(1, 16, 16), torch.tensor(2.0)),
        InputTypeError, "dtype torch.float32 and shape ()"),
    row("v2-dict-float-label", lambda e: v2.Compose([e.gray])({"image": tv_tensors.Image(image(1, 16, 16)),
                                                               "label": 2.5}), InputTypeError, "got float (2.5)"),
    row("v2-one-hot-labels", lambda e: e.gray(image(2, 1, 16, 16), torch.eye(4)[:2]), InputTypeError,
        "dtype torch.float32 and shape (2, 4)"),
    row("v2-label-out-of-range", lambda e: v2.Compose([e.gray])(image(1, 16, 16), 7), ValueError,
        "must lie in [0, 4)"),
    row("v2-numpy-image", lambda e: v2.Compose([e.gray])(np.zeros((16, 16, 1), np.uint8), 0), TypeError,
        "found no image", "v2.ToImage()"),
    row("v2-no-input", lambda e: e.gray(), TypeError, "needs an image"),
    row("v2-label-only", lambda e: e.gray(3), TypeError, "found no image in its input (got int)"),
    row("v2-int32-image", lambda e: e.gray(tv_tensors.Image(image(1, 16, 16, dtype=torch.int32)), 0),
        InputTypeError, "got dtype torch.int32"),
    row("v2-pil-short-palette", lambda e: v2.Compose([e.gray])(pil("P", palette=SHORT_PALETTE), 0), ValueError,
        PALETTE),
    row("v2-pil-transparent", lambda e: v2.Compose([v2.RandomHorizontalFlip(0), e.rgb])(pil("RGBA", alpha=0), 0),
        ValueError, TRANSPARENT),
    row("v1-pil-transparent", lambda e: v1.Compose([e.gray.replace(labels_getter=None)])(pil("LA", alpha=0)),
        ValueError, TRANSPARENT),
    row("v1-pil-mode-I", lambda e: v1.Compose([e.gray.replace(labels_getter=None)])(pil("I")), ValueError, NO_RANGE),
    row("v1-wrong-size",
        lambda e: v1.Compose([v1.ToTensor(), e.gray.replace(labels_getter=None)])(Image.new("L", (8, 8))), ValueError,
        "expected 16x16 images, got 8x8"),
    row("v1-rgb-into-gray", lambda e: v1.Compose([v1.ToTensor(), e.gray.replace(labels_getter=None)])(pil("RGB")),
        ValueError, "convert RGB images to grayscale explicitly"),
    row("v1-numpy", lambda e: v1.Compose([e.gray])(GRAY), TypeError, "found no image"),
    row("batch-size-zero", lambda e: e.gray.replace(batch_size=0), ValueError,
        "batch_size must be an int in [1, 4096], got 0"),
    row("device-unknown", lambda e: e.gray.replace(device="tpu"), ValueError,
        "device must name a torch device", "'tpu'"),
    row("sample-string", lambda e: e.gray.replace(sample="yes"), InputTypeError, "sample must be a bool, got str"),
    row("seed-float", lambda e: e.gray.replace(seed=1.5), InputTypeError, "seed must be an int or None, got float"),
]

DATASET = [
    row("purifier-none", lambda e: PurifiedDataset(TensorDataset(image(4, 1, 16, 16)), None), InputTypeError,
        "purifier must be a DVAEPurify, got NoneType"),
    row("batch-size-zero", lambda e: PurifiedDataset((image(4, 1, 16, 16), [0] * 4), e.gray, shard_size=0),
        ValueError, "shard_size must be positive, got 0"),
    row("cache-dtype", lambda e: PurifiedDataset((image(4, 1, 16, 16), [0] * 4), e.gray, cache_dtype="int8"),
        ValueError, "cache_dtype must be 'float16' or 'uint8', got 'int8'"),
    row("transform-not-callable", lambda e: PurifiedDataset((image(4, 1, 16, 16), [0] * 4), e.gray, transform=3),
        InputTypeError, "transform must be callable, got int"),
    row("dataset-none", lambda e: PurifiedDataset(None, e.gray), InputTypeError,
        "data must be an (images, labels) pair", "got NoneType"),
    row("dataset-empty", lambda e: PurifiedDataset(TensorDataset(image(0, 1, 16, 16), torch.zeros(0)), e.gray),
        ValueError, "the dataset is empty"),
    row("rgb-into-gray", lambda e: e.purified(TensorDataset(image(4, 3, 16, 16), torch.zeros(4, dtype=torch.long))),
        ValueError, "dataset items 0-3: expected 1 channel(s)", "grayscale explicitly"),
    row("wrong-size", lambda e: e.purified(TensorDataset(image(4, 1, 8, 8), torch.zeros(4, dtype=torch.long))),
        ValueError, "dataset items 0-3: expected 16x16 images, got 8x8"),
    row("label-out-of-range", lambda e: e.purified((image(4, 1, 16, 16), torch.tensor([0, 1, 2, 9]))), ValueError,
        "class labels must lie in [0, 4) for 4 classes, got values in [0, 9]"),
    row("float-labels", lambda e: e.purified(TensorDataset(image(4, 1, 16, 16), torch.zeros(4))), InputTypeError,
        "dataset item 0: label must be an integer, got tensor(0.)"),
    row("string-labels", lambda e: e.purified([(image(1, 16, 16), "ant")] * 3), InputTypeError,
        "label must be an integer, got 'ant'"),
    row("int64-images", lambda e: e.purified(TensorDataset(image(4, 1, 16, 16, dtype=torch.int64),
                                                           torch.zeros(4, dtype=torch.long))),
        InputTypeError, "dataset items 0-3: expected uint8, uint16 or floating point images, got dtype torch.int64"),
    row("pil-transparent", lambda e: e.purified([(pil("LA", alpha=0), 0)] * 3), ValueError, TRANSPARENT),
    row("pil-short-palette", lambda e: e.purified([(pil("P", palette=SHORT_PALETTE), 0)] * 3), ValueError, PALETTE),
    row("pil-mode-I", lambda e: e.purified([(pil("I"), 0)] * 3), ValueError, NO_RANGE),
    row("to-hf-of-tensors", lambda e: e.purified((image(4, 1, 16, 16), [0] * 4)).to_hf_dataset(), InputTypeError,
        "to_hf_dataset needs a datasets.Dataset source, got tuple"),
    row("mixed-sizes", lambda e: e.purified([(image(1, 16, 16), 0)] * 3 + [(image(1, 18, 18), 1)]), ValueError,
        "dataset item 3 has shape (1, 18, 18), not item 0's (1, 16, 16): all images must have one size"),
    row("stream-without-labels", lambda e: e.purified(_Stream([image(1, 16, 16)] * 3)), InputTypeError,
        "dataset item 0 must be an (image, label) pair, got Tensor"),
    row("hf-stream-without-labels", lambda e: e.purified(_hf_stream({"image": [GRAY] * 3})), ValueError,
        "no label column found", "in columns ['image']"),
    row("stream-mixed-sizes", lambda e: e.purified(_Stream([(image(1, 16, 16), 0), (image(1, 18, 18), 1)])),
        ValueError, "dataset item 1 has shape (1, 18, 18), not item 0's (1, 16, 16)"),
    row("num-workers-negative", lambda e: PurifiedDataset((image(4, 1, 16, 16), [0] * 4), e.gray, num_workers=-1),
        ValueError, "num_workers must be >= 0, got -1"),
]

_PAIR = (image(8, 1, 16, 16), torch.arange(8) % 4)


class _Stream(torch.utils.data.IterableDataset):
    """A torch IterableDataset over ``items``."""

    def __init__(self, items: list) -> None:
        self.items = items

    def __iter__(self):
        return iter(self.items)


def _hf_stream(columns: dict[str, list]) -> Any:
    import datasets

    return datasets.Dataset.from_dict(columns).to_iterable_dataset()

FIT = [
    row("float-labels", lambda e: e.fit((_PAIR[0], _PAIR[1].float())), InputTypeError, NOT_INT,
        "dtype torch.float32"),
    row("num-classes-string", lambda e: e.fit(_PAIR, num_classes="4"), InputTypeError,
        "num_classes must be an int, got str ('4')"),
    row("num-classes-zero", lambda e: e.fit(_PAIR, num_classes=0, init=None), ValueError,
        "num_classes must be positive, got 0"),
    row("labels-beyond-num-classes", lambda e: e.fit(_PAIR, num_classes=2), ValueError,
        "class labels must lie in [0, 2) for 2 classes, got values in [0, 3]"),
    row("negative-labels", lambda e: e.fit((_PAIR[0], _PAIR[1] - 1)), ValueError, "got values in [-1, 2]"),
    row("float-0-255", lambda e: e.fit((_PAIR[0] * 255, _PAIR[1])), ValueError, "divide by 255"),
    row("int64-images", lambda e: e.fit((_PAIR[0].long(), _PAIR[1])), InputTypeError, "got dtype torch.int64"),
    row("empty", lambda e: e.fit((_PAIR[0][:0], _PAIR[1][:0])), ValueError, "the batch is empty"),
    row("data-none", lambda e: e.fit(None), InputTypeError, "data must be an (images, labels) pair"),
    row("unknown-setting", lambda e: e.fit(_PAIR, epoch=3), InputTypeError, "unknown fit setting(s) ['epoch']"),
    row("epochs-zero", lambda e: e.fit(_PAIR, epochs=0), ValueError, "epochs must be positive, got 0"),
    row("preset-unknown", lambda e: e.fit(_PAIR, preset="slow"), ValueError, "unknown preset 'slow'"),
    row("init-int", lambda e: e.fit(_PAIR, init=3), TypeError, "init must be a DVAEPurify", "got int"),
    row("init-missing-folder", lambda e: e.fit(_PAIR, init=str(e.tmp / "none")), FileNotFoundError,
        "none is not a folder holding a saved purifier"),
    row("pil-transparent", lambda e: e.fit([(pil("RGBA", alpha=0), index % 2) for index in range(4)]), ValueError,
        "mode 'RGBA' has 256 " + TRANSPARENT),
    row("pil-mode-I", lambda e: e.fit([(pil("I"), index % 2) for index in range(4)]), ValueError, NO_RANGE),
    row("five-channels", lambda e: e.fit((image(4, 5, 16, 16), [0, 1, 0, 1])), ValueError,
        "in_channels must be 1 or 3, got 5"),
    row("odd-size", lambda e: e.fit((image(4, 1, 15, 15), [0, 1, 0, 1])), ValueError,
        "image_size must be even", "got 15; resize the images to 14 or 16"),
    row("string-labels", lambda e: e.fit([(image(1, 16, 16), "a")] * 3), InputTypeError,
        "label must be an integer, got 'a'"),
    row("non-square", lambda e: e.fit((image(4, 1, 16, 24), [0, 1, 0, 1])), ValueError,
        "images are 16x24 (height x width); D-VAE fits square images", "v2.Resize(16)"),
    row("warm-start-more-classes", lambda e: e.fit((_PAIR[0], torch.arange(8) % 6), init=e.gray), ValueError,
        "warm start: the starting weights have 4 classes, this fit needs 6 (labels up to 5)"),
    row("warm-start-other-size", lambda e: e.fit((image(4, 1, 32, 32), [0, 1, 2, 3]), init=e.gray), ValueError,
        "warm start: the starting weights take 1x16x16 images, the data holds 1x32x32"),
    row("mixed-sizes", lambda e: e.fit([(image(1, 16, 16), 0)] * 3 + [(image(1, 18, 18), 1)]), ValueError,
        "dataset item 3 has shape (1, 18, 18), not item 0's (1, 16, 16)"),
    row("stream-without-labels", lambda e: e.fit(_Stream([image(1, 16, 16)] * 3)), InputTypeError,
        "dataset item 0 must be an (image, label) pair, got Tensor"),
    row("hf-stream-without-labels", lambda e: e.fit(_hf_stream({"img": [GRAY] * 3})), ValueError,
        "no label column found", "in columns ['img']"),
    row("stream-string", lambda e: e.fit(_PAIR, stream="yes"), InputTypeError, "stream must be a bool or None"),
    row("compile-string", lambda e: e.fit(_PAIR, compile="yes"), InputTypeError, "compile must be a bool, got str"),
    row("resume-record-damaged", lambda e: e.fit(_PAIR, resume_dir=_damaged_record(e)), ValueError,
        "fit.json is not a readable fit record", "delete the resume folder"),
    row("resume-state-of-an-older-version", lambda e: e.fit(_PAIR, resume_dir=_old_checkpoint(e)), ValueError,
        "was written by an older version; use a new folder"),
]


def _damaged_record(e: Env) -> Path:
    (e.tmp / "checkpoint").mkdir()
    (e.tmp / "checkpoint" / "fit.json").write_text('{"format": ')
    return e.tmp / "checkpoint"


def _old_checkpoint(e: Env) -> Path:
    (e.tmp / "checkpoint").mkdir()
    (e.tmp / "checkpoint" / "fit_config.json").write_text("{}")
    return e.tmp / "checkpoint"


def _edit_json(path: Path, **changes: Any) -> None:
    path.write_text(json.dumps({**json.loads(path.read_text()), **changes}))


def _load(e: Env, change: Callable[[Path], Any], **options: Any) -> DVAEPurify:
    return DVAEPurify.from_pretrained(e.weights_copy(change), **options)


def _truncate(path: Path) -> None:
    path.write_bytes(path.read_bytes()[:100])


FROM_PRETRAINED = [
    row("missing-folder", lambda e: DVAEPurify.from_pretrained(str(e.tmp / "none")), FileNotFoundError,
        "none is not a folder holding a saved purifier"),
    row("empty-folder", lambda e: DVAEPurify.from_pretrained(str(e.tmp)), FileNotFoundError,
        "config.json not found: not a saved DVAEPurify"),
    row("config-not-json", lambda e: _load(e, lambda f: (f / "config.json").write_text("{")), ValueError,
        "config.json is not valid JSON"),
    row("config-a-list", lambda e: _load(e, lambda f: (f / "config.json").write_text("[1, 2]")), InputTypeError,
        "config.json: expected a JSON object, got list"),
    row("config-a-string", lambda e: _load(e, lambda f: (f / "config.json").write_text('"fast"')), InputTypeError,
        "config.json: expected a JSON object, got str"),
    row("format-version-2", lambda e: _load(e, lambda f: _edit_json(f / "config.json", format_version=2)),
        ValueError, "format_version 2 is not supported"),
    row("config-batch-size-zero", lambda e: _load(e, lambda f: _edit_json(f / "config.json", batch_size=0)),
        ValueError, "config.json: batch_size must be an int in [1, 4096], got 0"),
    row("config-unknown-key", lambda e: _load(e, lambda f: _edit_json(f / "config.json", colour=1)), ValueError,
        "config.json: unknown key(s) ['colour']"),
    row("stage1-missing", lambda e: _load(e, lambda f: shutil.rmtree(f / "stage1")), FileNotFoundError,
        "stage1/config.json not found"),
    row("stage1-config-not-json", lambda e: _load(e, lambda f: (f / "stage1" / "config.json").write_text("x")),
        ValueError, "stage1/config.json is not valid JSON"),
    row("stage2-config-a-list", lambda e: _load(e, lambda f: (f / "stage2" / "config.json").write_text("[]")),
        InputTypeError, "stage2/config.json: expected a JSON object, got list"),
    row("stage1-width-string", lambda e: _load(e, lambda f: _edit_json(f / "stage1" / "config.json", width="8")),
        InputTypeError, "stage1/config.json: DVAE config: width must be an int, got str ('8')"),
    row("stage1-weights-truncated", lambda e: _load(e, lambda f: _truncate(f / "stage1" / "model.safetensors")),
        ValueError, "stage1/model.safetensors is not a readable safetensors file"),
    row("stage1-weights-missing", lambda e: _load(e, lambda f: (f / "stage1" / "model.safetensors").unlink()),
        FileNotFoundError, "stage1/model.safetensors not found"),
    row("stage1-pickle-only", lambda e: _load(e, lambda f: (f / "stage1" / "model.safetensors").rename(
        f / "stage1" / "pytorch_model.bin")), FileNotFoundError, "found only pytorch_model.bin"),
    row("stage2-other-classes", lambda e: _load(e, lambda f: _edit_json(f / "stage2" / "config.json", num_classes=5)),
        ValueError, "stage2/model.safetensors: tensor 'class_embedding.weight' has shape"),
    row("a-file", lambda e: DVAEPurify.from_pretrained(str(e.weights / "config.json")), FileNotFoundError,
        "config.json is not a folder holding a saved purifier"),
    row("bad-repo-id", lambda e: DVAEPurify.from_pretrained("not a repo!"), ValueError,
        "'not a repo!' is neither a local folder"),
    row("device-unknown", lambda e: DVAEPurify.from_pretrained(str(e.weights), device="tpu"), ValueError,
        "device must name a torch device"),
    row("batch-size-zero", lambda e: DVAEPurify.from_pretrained(str(e.weights), batch_size=0), ValueError,
        "batch_size must be an int in [1, 4096], got 0"),
]


@pytest.mark.parametrize(
    ("call", "error", "parts"),
    table(purify=PURIFY, transform=TRANSFORM, dataset=DATASET, fit=FIT, from_pretrained=FROM_PRETRAINED),
)
def test_bad_input_raises_naming_the_problem(env: Env, call, error, parts) -> None:
    with pytest.raises(error) as raised:
        call(env)
    message = str(raised.value)
    assert all(part in message for part in parts), message


# ----------------------------------------------------------------------------- the command line


def _purify(data: Path | str, out: Path | str, weights: Path, *extra: str) -> list[str]:
    return ["purify", "--data", str(data), "--out", str(out), "--weights", str(weights), "--device", "cpu",
            "--no-progress", *extra]


def _own_output(e: Env) -> Path:
    """An earlier output folder with a file added by hand."""
    out = e.folder("out", {"ant/x.png": pil("L")})
    (out / ".dvae-purify.json").write_text(json.dumps({"tool": "dvae-purify", "files": []}))
    return out


L8 = pil("L")
CLI = [
    row("no-command", lambda e: [], SystemExit, "2", "the following arguments are required: COMMAND"),
    row("unknown-command", lambda e: ["frobnicate"], SystemExit, "2", "invalid choice: 'frobnicate'"),
    row("missing-data", lambda e: _purify(e.tmp / "none", e.tmp / "o", e.weights), SystemExit, "1",
        "none: no such file or folder"),
    row("text-file", lambda e: _purify(e.folder("t", {"x.txt": b"x"}) / "x.txt", e.tmp / "o", e.weights),
        SystemExit, "1", "unsupported file type '.txt'"),
    row("folder-without-classes", lambda e: _purify(e.folder("flat", {"x.png": L8}), e.tmp / "o", e.weights),
        SystemExit, "1", "flat: no class sub-folders found"),
    row("folder-without-images", lambda e: _purify(e.folder("f", {"a/read.txt": b"x"}), e.tmp / "o", e.weights),
        SystemExit, "1", "the class sub-folders ['a'] hold no image files"),
    row("corrupt-png", lambda e: _purify(e.folder("f", {"a/x.png": b"\x89PNG broken", "b/y.png": L8}),
                                         e.tmp / "o", e.weights),
        SystemExit, "1", "a/x.png: not a readable image file"),
    row("mixed-sizes", lambda e: _purify(e.folder("f", {"a/x.png": L8, "b/y.png": L8.resize((8, 8))}),
                                         e.tmp / "o", e.weights),
        SystemExit, "1", "b/y.png: image has shape (1, 8, 8)", "must share one size"),
    row("transparent-png", lambda e: _purify(e.folder("f", {"a/x.png": L8, "b/y.png": pil("LA", alpha=0)}),
                                             e.tmp / "o", e.weights),
        SystemExit, "1", "b/y.png: PIL image of mode 'LA' has 256 " + TRANSPARENT),
    row("colour-palette-png-into-gray", lambda e: _purify(e.folder("f", {"a/x.png": pil("P", palette=COLOURS)}),
                                                          e.tmp / "o", e.weights),
        SystemExit, "1", "expected 1 channel(s)", "convert RGB images to grayscale explicitly"),
    row("int32-tiff", lambda e: _purify(e.folder("f", {"a/x.tif": pil("I")}), e.tmp / "o", e.weights),
        SystemExit, "1", "a/x.tif: PIL images of mode 'I' " + NO_RANGE),
    row("float-tiff-out-of-range", lambda e: _purify(e.folder("f", {"a/x.tif": pil("F")}), e.tmp / "o", e.weights),
        SystemExit, "1", "a/x.tif: float images must lie in [0, 1]"),
    row("more-classes-than-weights", lambda e: _purify(e.folder("f", {f"{c}/x.png": L8 for c in "abcde"}),
                                                       e.tmp / "o", e.weights),
        SystemExit, "1", "f has 5 classes but the weights", "fitted for 4"),
    row("npz-missing-labels", lambda e: _purify(e.npz("a.npz", images=np.zeros((2, 16, 16), np.uint8)),
                                                e.tmp / "o", e.weights),
        SystemExit, "1", "a.npz: missing array(s) ['labels']"),
    row("npz-float-labels", lambda e: _purify(e.npz("a.npz", images=np.zeros((2, 16, 16), np.uint8),
                                                    labels=np.zeros(2)), e.tmp / "o", e.weights),
        SystemExit, "1", "a.npz: labels must be a 1-D integer array, got float64"),
    row("npz-int64-images", lambda e: _purify(e.npz("a.npz", images=np.zeros((2, 16, 16), np.int64),
                                                    labels=np.zeros(2, int)), e.tmp / "o", e.weights),
        SystemExit, "1", "a.npz: expected uint8, uint16 or floating point images, got dtype torch.int64"),
    row("npz-object-array", lambda e: _purify(e.npz("a.npz", images=np.array([None, None]), labels=np.zeros(2, int)),
                                              e.tmp / "o", e.weights),
        SystemExit, "1", "a.npz: not a readable .npz archive", "allow_pickle=False"),
    row("npz-truncated", lambda e: _purify(e.folder("f", {"a.npz": b"PK\x03\x04 truncated"}) / "a.npz",
                                           e.tmp / "o", e.weights),
        SystemExit, "1", "a.npz: not a readable .npz archive"),
    row("npz-single-array", lambda e: _purify(e.npy_named_npz(), e.tmp / "o", e.weights),
        SystemExit, "1", "a.npz: not a readable .npz archive", "single array"),
    row("npz-float-0-255", lambda e: _purify(e.npz("a.npz", images=np.full((2, 16, 16), 200.0),
                                                   labels=np.zeros(2, int)), e.tmp / "o", e.weights),
        SystemExit, "1", "a.npz: float images must lie in [0, 1]", "divide by 255"),
    row("npz-no-layout", lambda e: _purify(e.npz("a.npz", images=np.zeros((2, 16, 16, 16), np.uint8),
                                                 labels=np.zeros(2, int)), e.tmp / "o", e.weights),
        SystemExit, "1", "a.npz: images of shape (2, 16, 16, 16) are neither NHW, NCHW nor NHWC"),
    row("npz-labels-out-of-range", lambda e: _purify(e.npz("a.npz", images=np.zeros((2, 16, 16), np.uint8),
                                                           labels=np.array([0, 9])), e.tmp / "o", e.weights),
        SystemExit, "1", "class labels must lie in [0, 4) for 4 classes, got values in [0, 9]"),
    row("out-is-input", lambda e: _purify(e.npz("a.npz", images=np.zeros((2, 16, 16), np.uint8),
                                                labels=np.zeros(2, int)), e.tmp / "a.npz", e.weights, "--overwrite"),
        SystemExit, "1", "a.npz is the input"),
    row("out-npz-exists", lambda e: _purify(e.npz("a.npz", images=np.zeros((2, 16, 16), np.uint8),
                                                  labels=np.zeros(2, int)), e.folder("o", {"a.npz": b"x"}), e.weights),
        SystemExit, "1", "o/a.npz exists; choose another --out or pass --overwrite"),
    row("out-folder-not-ours", lambda e: _purify(e.folder("f", {"a/x.png": L8}), e.folder("o", {"notes.txt": b"x"}),
                                                 e.weights, "--overwrite"),
        SystemExit, "1", "o was not written by dvae-purify", "remove it yourself"),
    row("out-folder-with-foreign-file", lambda e: _purify(e.folder("f", {"a/x.png": L8}), _own_output(e),
                                                          e.weights, "--overwrite"),
        SystemExit, "1", "out holds files that dvae-purify did not write (ant/x.png)"),
    row("out-inside-input", lambda e: _purify(e.folder("f", {"a/x.png": L8}), e.tmp / "f" / "purified", e.weights),
        SystemExit, "1", "lie one inside the other"),
    row("weights-missing", lambda e: _purify(e.folder("f", {"a/x.png": L8}), e.tmp / "o", e.tmp / "none"),
        SystemExit, "1", "none is not a folder holding a saved purifier"),
    row("epochs-zero", lambda e: ["purify", "--data", "d", "--out", "o", "--fit", "--epochs", "0"], SystemExit, "2",
        "argument --epochs: expected a positive integer, got 0"),
    row("fit-and-weights", lambda e: ["purify", "--data", "d", "--out", "o", "--fit", "--weights", "w"],
        SystemExit, "2", "argument --weights: not allowed with argument --fit"),
    row("num-classes-mismatch", lambda e: _purify(e.folder("f", {"a/x.png": L8}), e.tmp / "o", e.weights,
                                                  "--num-classes", "3"),
        SystemExit, "1", "--num-classes 3 does not match the weights' 4"),
    row("split-for-a-folder", lambda e: _purify(e.folder("f", {"a/x.png": L8}), e.tmp / "o", e.weights,
                                                "--split", "test"),
        SystemExit, "1", "f is an image folder; split only for save_to_disk datasets"),
    row("cache-dir-is-a-file", lambda e: ["cache", "info", "--cache-dir", str(e.folder("f", {"c": b"x"}) / "c")],
        SystemExit, "1", "--cache-dir", "is a file, not a cache folder"),
    row("cache-unknown-key", lambda e: ["cache", "clear", "--key", "nope", "--cache-dir", str(e.tmp)], SystemExit,
        "1", "no cache entry 'nope'"),
]


@pytest.mark.parametrize(("argv", "error", "parts"), table(cli=CLI))
def test_bad_command_line_exits_with_an_error_naming_the_problem(env: Env, capsys, argv, error, parts) -> None:
    code, *expected = parts
    try:
        status = main(argv(env))
    except error as raised:
        status = raised.code
    assert str(status) == code
    message = capsys.readouterr().err.strip().splitlines()[-1]
    assert message.startswith("dvae-purify") and all(part in message for part in expected), message
