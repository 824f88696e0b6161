"""Run each script in ``examples/`` end to end on tiny local data (no downloads)."""

from __future__ import annotations

import importlib.util
import math
from pathlib import Path
from types import ModuleType

import datasets
import numpy as np
import pytest
import torch
from PIL import Image
from torchvision.transforms import v2

from dvae_transform import DVAEPurify
from dvae_transform.cache.maintenance import cache_info
from dvae_transform.cli import purifier_from_args
from dvae_transform.config import PRESETS
from dvae_transform.purified_dataset import PurifiedDataset

EXAMPLES = Path(__file__).resolve().parents[1] / "examples"
NAMES = ["compose_v2", "hf_datasets", "train_cifar_style"]
TINY_FIT = ["--fit", "--fit-epochs", "1", "--fit-width", "8", "--fit-latent-dim", "8"]


def load_example(name: str) -> ModuleType:
    spec = importlib.util.spec_from_file_location(f"example_{name}", EXAMPLES / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture
def cache_dir(tmp_path, monkeypatch) -> Path:
    root = tmp_path / "cache"
    monkeypatch.setenv("DVAE_TRANSFORM_CACHE", str(root))
    return root


@pytest.fixture
def npz_data(tmp_path, tiny_data) -> Path:
    images, labels = tiny_data
    path = tmp_path / "poisoned.npz"
    np.savez(path, images=images.mul(255).round().to(torch.uint8).numpy(), labels=labels.numpy())
    return path


@pytest.fixture(scope="module")
def weights_dir(tiny_purifier: DVAEPurify, tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("weights")
    tiny_purifier.save_pretrained(folder)
    return folder


def assert_finite_losses(losses: list[float], epochs: int) -> None:
    assert len(losses) == epochs and all(math.isfinite(loss) and loss > 0 for loss in losses)


@pytest.mark.parametrize("name", NAMES)
def test_the_examples_share_the_command_line_options(name):
    args = load_example(name).parse_args(["--data", "d", *TINY_FIT, "--preset", "paper", "--fit-batch-size", "16",
                                          "--batch-size", "8", "--epochs", "3", "--seed", "5"])
    assert (args.data, args.fit, args.weights, args.preset) == ("d", True, None, "paper")
    assert (args.fit_epochs, args.fit_width, args.fit_latent_dim, args.fit_batch_size) == (1, 8, 8, 16)  # the D-VAE's
    assert (args.batch_size, args.epochs, args.seed) == (8, 3, 5)  # the classifier's, and the seed of both
    assert load_example(name).parse_args(["--weights", "w"]).weights == "w"
    with pytest.raises(SystemExit):
        load_example(name).parse_args(["--fit", "--weights", "w"])


def test_the_fit_options_reach_the_fit_and_the_classifier_batch_does_not(tiny_data):
    args = load_example("compose_v2").parse_args([*TINY_FIT, "--preset", "paper", "--batch-size", "8"])
    purifier = purifier_from_args(args, tiny_data, seed=args.seed, progress=False, check=False)
    assert purifier.fit_config == PRESETS["paper"].replace(epochs=1, width=8, latent_dim=8, seed=0)  # batch: 128


def test_train_cifar_style_with_fit(npz_data, cache_dir):
    result = load_example("train_cifar_style").main([
        "--data", str(npz_data), "--test-data", str(npz_data), *TINY_FIT,
        "--epochs", "2", "--width", "8", "--batch-size", "16", "--workers", "0",
    ])
    assert_finite_losses(result["losses"], 2)
    assert 0.0 <= result["test_accuracy"] <= 1.0
    entries = cache_info(cache_dir)  # PurifiedDataset cached the purified training set once
    assert [(entry["items"], entry["item_shape"], entry["complete"]) for entry in entries] == [(64, [1, 16, 16], True)]


def test_train_cifar_style_with_weights_uses_them(npz_data, cache_dir, weights_dir, tiny_purifier, tiny_data):
    result = load_example("train_cifar_style").main([
        "--data", str(npz_data), "--weights", str(weights_dir), "--epochs", "1", "--width", "8", "--workers", "0",
    ])
    assert result["test_accuracy"] is None  # no --test-data
    images, labels = tiny_data
    expected_key = PurifiedDataset((images.mul(255).round().to(torch.uint8), labels), tiny_purifier).fingerprint
    assert [entry["key"] for entry in cache_info(cache_dir)] == [expected_key]


def test_compose_v2_pipeline(npz_data, weights_dir):
    result = load_example("compose_v2").main(["--data", str(npz_data), "--weights", str(weights_dir),
                                              "--epochs", "1", "--batch-size", "16"])
    assert_finite_losses(result["losses"], 1)
    assert result["images_per_s"] > 0


def test_compose_v2_pipeline_purifies_with_the_label(tiny_purifier, tiny_data):
    pipeline = load_example("compose_v2").build_pipeline(tiny_purifier)
    images, labels = tiny_data
    pil_image, label = Image.fromarray(images[3, 0].mul(255).round().byte().numpy(), mode="L"), int(labels[3])
    without_crop = pipeline.transforms[:-1]
    image, passed_label = v2.Compose(without_crop)(pil_image, label)
    assert passed_label == label
    expected = tiny_purifier.purify(torch.from_numpy(np.array(pil_image))[None], torch.tensor([label]))
    torch.testing.assert_close(image.as_subclass(torch.Tensor), expected)
    cropped, _ = pipeline(pil_image, label)
    assert cropped.shape == (1, 16, 16)


def test_compose_v2_with_fit(npz_data):
    result = load_example("compose_v2").main(["--data", str(npz_data), *TINY_FIT, "--epochs", "1"])
    assert_finite_losses(result["losses"], 1)


def test_hf_datasets(tmp_path, tiny_data, cache_dir):
    images, labels = tiny_data
    pixels = images.mul(255).round().to(torch.uint8)
    features = datasets.Features({"img": datasets.Image(), "label": datasets.ClassLabel(num_classes=4)})
    rows = {"img": [Image.fromarray(image[0].numpy(), mode="L") for image in pixels], "label": labels.tolist()}
    train = datasets.Dataset.from_dict(rows, features=features)
    datasets.DatasetDict(train=train, test=train.select(range(4))).save_to_disk(tmp_path / "saved")

    result = load_example("hf_datasets").main(["--data", str(tmp_path / "saved"), *TINY_FIT, "--epochs", "1",
                                               "--save-to", str(tmp_path / "purified")])

    assert_finite_losses(result["losses"], 1)
    saved = datasets.load_from_disk(tmp_path / "purified")
    assert saved.features == features and saved["label"] == rows["label"]
    purified = torch.stack([torch.from_numpy(np.array(image)) for image in saved["img"]])[:, None]
    assert purified.shape == pixels.shape and not torch.equal(purified, pixels)
