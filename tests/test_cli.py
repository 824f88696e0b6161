"""Tests for the ``dvae-purify`` command line and its dataset readers/writers."""

from __future__ import annotations

import errno
import json
import os
import subprocess
import sys
import warnings
from pathlib import Path

import datasets
import numpy as np
import pytest
import torch
from PIL import Image

from dvae_transform import DVAEPurify
from dvae_transform.cache.maintenance import cache_info
from dvae_transform.cache.store import TensorCache
from dvae_transform.cli import build_parser, main
from dvae_transform.data.formats import read_dataset
from dvae_transform.precision import encode
from dvae_transform.purified_dataset import SHARD_SIZE, PurifiedDataset

REPO = Path(__file__).resolve().parents[1]
CLASSES = ["ant", "bee", "cat", "dog"]
TINY_FIT = ["--fit", "--fit-epochs", "1", "--fit-width", "8", "--fit-latent-dim", "8"]


def as_uint8(images: torch.Tensor) -> torch.Tensor:
    return images.mul(255).round().to(torch.uint8)


def assert_within_one_level(actual: torch.Tensor, expected: torch.Tensor) -> None:
    assert actual.dtype == torch.uint8 and actual.shape == expected.shape
    assert (actual.int() - expected.int()).abs().max().item() <= 1


@pytest.fixture(scope="module")
def weights_dir(tiny_purifier: DVAEPurify, tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("weights")
    tiny_purifier.save_pretrained(folder)
    return folder


@pytest.fixture(scope="module")
def data_u8(tiny_data) -> tuple[torch.Tensor, torch.Tensor]:
    images, labels = tiny_data
    return as_uint8(images), labels


def purify(args: list[str], weights: Path | str) -> int:
    return main(["purify", *args, "--weights", str(weights), "--device", "cpu", "--no-progress"])


def expected_output(purifier: DVAEPurify, images: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    return as_uint8(purifier.purify(images, labels))


# ----------------------------------------------------------------------------- format round trips


@pytest.mark.parametrize("layout", ["NCHW-float", "NHWC-uint8", "NHW-uint8"])
def test_npz_round_trip_keeps_layout_and_matches_purify(layout, tmp_path, data_u8, tiny_purifier, weights_dir):
    images, labels = data_u8
    stored = {
        "NCHW-float": images.float().numpy() / 255,
        "NHWC-uint8": images.permute(0, 2, 3, 1).numpy(),
        "NHW-uint8": images[:, 0].numpy(),
    }[layout]
    np.savez(tmp_path / "poisoned.npz", images=stored, labels=labels.numpy())

    assert purify(["--data", str(tmp_path / "poisoned.npz"), "--out", str(tmp_path / "out")], weights_dir) == 0

    with np.load(tmp_path / "out" / "poisoned.npz") as archive:
        out_images, out_labels = archive["images"], archive["labels"]
    assert out_images.dtype == np.uint8 and out_images.shape == stored.shape
    np.testing.assert_array_equal(out_labels, labels.numpy())
    out_nchw = torch.from_numpy(out_images).reshape(images.shape) if layout != "NHWC-uint8" else (
        torch.from_numpy(out_images).permute(0, 3, 1, 2))
    assert_within_one_level(out_nchw, expected_output(tiny_purifier, images, labels))
    assert not torch.equal(out_nchw, images)


def test_npz_out_may_name_the_file(tmp_path, data_u8, weights_dir):
    images, labels = data_u8
    np.savez(tmp_path / "in.npz", images=images.numpy(), labels=labels.numpy())
    assert purify(["--data", str(tmp_path / "in.npz"), "--out", str(tmp_path / "clean.npz")], weights_dir) == 0
    with np.load(tmp_path / "clean.npz") as archive:
        assert archive["images"].shape == tuple(images.shape)


def write_image_folder(root: Path, images: torch.Tensor, labels: torch.Tensor) -> list[str]:
    """PNG files in class sub-folders (every fifth one in a nested folder); returns their relative paths."""
    relative = []
    for index, (image, label) in enumerate(zip(images, labels)):
        name = f"{CLASSES[label]}/{'nested/' if index % 5 == 0 else ''}img_{index:03d}.png"
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        Image.fromarray(image[0].numpy(), mode="L").save(root / name)
        relative.append(name)
    return relative


def test_image_folder_round_trip(tmp_path, data_u8, tiny_purifier, weights_dir):
    images, labels = data_u8
    relative = write_image_folder(tmp_path / "poisoned", images, labels)

    assert purify(["--data", str(tmp_path / "poisoned"), "--out", str(tmp_path / "out")], weights_dir) == 0

    written = sorted(path.relative_to(tmp_path / "out").as_posix() for path in (tmp_path / "out").rglob("*.png"))
    assert written == sorted(relative)
    for index in (0, 7, 63):
        out = torch.from_numpy(np.array(Image.open(tmp_path / "out" / relative[index])))
        want = expected_output(tiny_purifier, images[index : index + 1], labels[index : index + 1])[0, 0]
        assert_within_one_level(out, want)
    reread, reread_labels, meta = read_dataset(tmp_path / "out", progress=False)
    assert meta.format == "folder" and meta.classes == CLASSES
    assert reread.shape == images.shape
    assert sorted(reread_labels.tolist()) == sorted(labels.tolist())


def test_sixteen_bit_pngs_are_read_at_their_range_not_clipped(tmp_path, tiny_purifier, weights_dir):
    gradient = np.linspace(0, 65535, 256).astype(np.uint16).reshape(16, 16)
    for index, label in enumerate([0, 1, 2, 3]):
        (tmp_path / "deep" / CLASSES[label]).mkdir(parents=True)
        Image.fromarray(np.roll(gradient, index)).save(tmp_path / "deep" / CLASSES[label] / "x.png")
    images, labels, _ = read_dataset(tmp_path / "deep", progress=False)
    expected = torch.stack([torch.from_numpy(np.roll(gradient, index).astype(np.float32) / 65535)[None]
                            for index in range(4)])
    assert images.dtype == torch.float32 and torch.equal(images, expected)

    assert purify(["--data", str(tmp_path / "deep"), "--out", str(tmp_path / "out")], weights_dir) == 0
    out = torch.from_numpy(np.array(Image.open(tmp_path / "out" / "cat" / "x.png")))
    assert_within_one_level(out, expected_output(tiny_purifier, expected[2:3], labels[2:3])[0, 0])


def test_overwrite_replaces_the_previous_output_as_a_whole(tmp_path, data_u8, weights_dir, capsys):
    images, labels = data_u8
    write_image_folder(tmp_path / "four", images, labels)
    two = labels % 2 == 1  # bee and dog only
    write_image_folder(tmp_path / "two", images[two], labels[two])
    out = tmp_path / "out"
    assert purify(["--data", str(tmp_path / "four"), "--out", str(out)], weights_dir) == 0
    assert purify(["--data", str(tmp_path / "two"), "--out", str(out), "--overwrite"], weights_dir) == 0
    reread, reread_labels, meta = read_dataset(out, progress=False)
    assert meta.classes == ["bee", "dog"] and len(reread) == int(two.sum())  # no stale ant/ or cat/ shifting labels
    assert sorted(path.name for path in tmp_path.iterdir()) == ["four", "out", "two"]  # no staging folder left

    (out / "bee" / "mine.txt").write_text("kept")
    err = run_error(["purify", "--data", str(tmp_path / "four"), "--out", str(out), "--weights", str(weights_dir),
                     "--overwrite"], capsys)
    assert "holds files that dvae-purify did not write (bee/mine.txt)" in err
    assert (out / "bee" / "mine.txt").read_text() == "kept" and sorted(os.listdir(out))[1:] == ["bee", "dog"]


def test_a_failed_write_leaves_the_earlier_output_as_it_was(tmp_path, data_u8, weights_dir, capsys, monkeypatch):
    images, labels = data_u8
    write_image_folder(tmp_path / "in", images[:8], labels[:8])
    args = ["purify", "--data", str(tmp_path / "in"), "--out", str(tmp_path / "out"), "--weights", str(weights_dir),
            "--device", "cpu", "--no-progress", "--overwrite"]
    assert main(args) == 0
    before = {path: path.read_bytes() for path in (tmp_path / "out").rglob("*") if path.is_file()}
    saved = []

    def disk_full(image, path, *options, **keywords):
        if saved:
            raise OSError(errno.ENOSPC, "No space left on device")
        saved.append(path)

    monkeypatch.setattr(Image.Image, "save", disk_full)
    assert "writing " + str(tmp_path / "out") + " failed (No space left on device)" in run_error(args, capsys)
    assert {path: path.read_bytes() for path in (tmp_path / "out").rglob("*") if path.is_file()} == before
    assert sorted(path.name for path in tmp_path.iterdir()) == ["in", "out"]


def test_jpeg_files_become_png_with_the_same_stem(tmp_path, data_u8, weights_dir):
    images, labels = data_u8
    for index, (image, label) in enumerate(zip(images[:8], labels[:8])):
        (tmp_path / "in" / CLASSES[label]).mkdir(parents=True, exist_ok=True)
        Image.fromarray(image[0].numpy(), mode="L").save(tmp_path / "in" / CLASSES[label] / f"photo{index}.jpg")
    assert purify(["--data", str(tmp_path / "in"), "--out", str(tmp_path / "out")], weights_dir) == 0
    assert (tmp_path / "out" / CLASSES[labels[3]] / "photo3.png").is_file()
    assert not list((tmp_path / "out").rglob("*.jpg"))


def test_save_to_disk_dataset_dict_replaces_the_train_images_only(tmp_path, data_u8, tiny_purifier, weights_dir):
    images, labels = data_u8
    features = datasets.Features(
        {"image": datasets.Image(), "label": datasets.ClassLabel(names=CLASSES), "id": datasets.Value("int32")}
    )
    rows = {
        "image": [Image.fromarray(image[0].numpy(), mode="L") for image in images],
        "label": labels.tolist(),
        "id": list(range(len(labels))),
    }
    train = datasets.Dataset.from_dict(rows, features=features)
    test = train.select(range(5))
    datasets.DatasetDict(train=train, test=test).save_to_disk(tmp_path / "poisoned")

    assert purify(["--data", str(tmp_path / "poisoned"), "--out", str(tmp_path / "out")], weights_dir) == 0

    out = datasets.load_from_disk(tmp_path / "out")
    assert set(out) == {"train", "test"} and out["train"].features == features
    assert out["train"]["id"] == rows["id"] and out["train"]["label"] == rows["label"]
    purified = torch.stack([torch.from_numpy(np.array(image))[None] for image in out["train"]["image"]])
    assert_within_one_level(purified, expected_output(tiny_purifier, images, labels))
    untouched = torch.stack([torch.from_numpy(np.array(image))[None] for image in out["test"]["image"]])
    assert torch.equal(untouched, images[:5])


def test_save_to_disk_array_column_with_named_columns(tmp_path, data_u8, tiny_purifier, weights_dir):
    images, labels = data_u8
    floats = images.float() / 255
    features = datasets.Features(
        {"pixels": datasets.Array3D(shape=(1, 16, 16), dtype="float32"), "target": datasets.Value("int64")}
    )
    datasets.Dataset.from_dict({"pixels": floats.numpy(), "target": labels.tolist()}, features=features).save_to_disk(
        tmp_path / "poisoned"
    )
    args = ["--data", str(tmp_path / "poisoned"), "--out", str(tmp_path / "out"),
            "--image-column", "pixels", "--label-column", "target"]

    assert purify(args, weights_dir) == 0

    out = datasets.load_from_disk(tmp_path / "out").with_format("torch")
    assert out.features == features
    purified = out[:]["pixels"]
    assert purified.dtype == torch.float32 and 0 <= purified.min() and purified.max() <= 1
    assert_within_one_level(as_uint8(purified), expected_output(tiny_purifier, images, labels))


# ----------------------------------------------------------------------------- purifier sources


def fit_settings(weights: Path) -> dict[str, int]:
    """The training settings that a fit saved with ``--save-weights`` records (its ``FitConfig``)."""
    config = json.loads((weights / "training.json").read_text())["config"]
    return {name: config[name] for name in ("epochs", "width", "latent_dim", "batch_size")}


def assert_cached_as(images: torch.Tensor, labels: torch.Tensor, purifier: DVAEPurify, shard_size: int) -> None:
    """The cache holds one entry: ``(images, labels)`` purified by ``purifier`` (its micro-batch included) in shards
    of ``shard_size``."""
    expected = PurifiedDataset((images, labels), purifier, shard_size=shard_size, lazy=True)
    [entry] = cache_info()
    assert entry["key"] == expected.fingerprint
    assert json.loads((Path(entry["path"]) / "manifest.json").read_text())["shard_size"] == shard_size


def our_warnings(caught: list[warnings.WarningMessage]) -> list[str]:
    return [str(warning.message) for warning in caught if str(warning.message).startswith("dvae-purify")]


def test_fit_saves_weights_that_reproduce_the_output(tmp_path, data_u8, capsys):
    images, labels = data_u8
    np.savez(tmp_path / "in.npz", images=images.numpy(), labels=labels.numpy())
    args = ["purify", "--data", str(tmp_path / "in.npz"), "--out", str(tmp_path / "out"), *TINY_FIT,
            "--fit-batch-size", "16", "--batch-size", "8", "--shard-size", "24", "--save-weights", str(tmp_path / "w"),
            "--device", "cpu", "--no-progress"]

    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        assert main(args) == 0

    assert our_warnings(caught) == []
    printed = capsys.readouterr().out
    assert "fitted purifier" in printed and "purified 64 images" in printed
    fitted = DVAEPurify.from_pretrained(tmp_path / "w")
    assert fitted.num_classes == 4 and fitted.stage1.config["width"] == 8
    # three batch sizes, three places: the training step, the purification micro-batch, the cache shard
    assert fit_settings(tmp_path / "w") == {"epochs": 1, "width": 8, "latent_dim": 8, "batch_size": 16}
    assert_cached_as(images, labels, fitted.replace(batch_size=8, seed=0), shard_size=24)  # --seed: 0
    with np.load(tmp_path / "out" / "in.npz") as archive:
        out = torch.from_numpy(archive["images"])
    assert_within_one_level(out, expected_output(fitted, images, labels))


def test_the_old_fit_options_warn_and_still_work(tmp_path, npz_path, data_u8):
    args = ["purify", "--data", str(npz_path), "--out", str(tmp_path / "o"), "--fit", "--epochs", "1", "--width", "8",
            "--latent-dim", "8", "--batch-size", "32", "--save-weights", str(tmp_path / "w"), "--device", "cpu",
            "--no-progress"]

    with pytest.warns(FutureWarning) as caught:
        assert main(args) == 0

    renamed = [f"dvae-purify purify: '--{old}' is renamed '--fit-{old}'; the old name goes in the next release"
               for old in ("epochs", "width", "latent-dim")]
    assert our_warnings(caught)[:3] == renamed
    assert our_warnings(caught)[3:] == ["dvae-purify purify: --batch-size is the purification micro-batch; with "
                                        "--fit it also sets the training batch, until the next release: pass "
                                        "--fit-batch-size"]
    assert fit_settings(tmp_path / "w") == {"epochs": 1, "width": 8, "latent_dim": 8, "batch_size": 32}
    assert_cached_as(*data_u8, DVAEPurify.from_pretrained(tmp_path / "w").replace(batch_size=32, seed=0), SHARD_SIZE)


def test_an_old_and_a_new_fit_option_together_are_refused(tmp_path, capsys):
    err = run_error(["purify", "--data", str(tmp_path), "--out", str(tmp_path / "o"), *TINY_FIT, "--epochs", "2"],
                    capsys)
    assert "--epochs is the old name of --fit-epochs: give --fit-epochs only" in err


@pytest.mark.parametrize("where", ["data", "data/w", "out", "out/w"])
def test_save_weights_into_the_input_or_the_output_is_refused_before_any_work(tmp_path, data_u8, capsys, where):
    write_image_folder(tmp_path / "data", *data_u8)
    before = sorted(path.as_posix() for path in (tmp_path / "data").rglob("*"))
    args = ["purify", "--data", str(tmp_path / "data"), "--out", str(tmp_path / "out"), *TINY_FIT,
            "--save-weights", str(tmp_path / where), "--device", "cpu", "--no-progress"]
    assert main(args) == 1
    printed, error = capsys.readouterr()
    what = "the input (--data)" if where.startswith("data") else "the output (--out)"
    assert f"--save-weights {tmp_path / where} " in error and what in error and "choose another --save-weights" in error
    assert "fitted" not in printed  # refused before the work
    assert sorted(path.as_posix() for path in (tmp_path / "data").rglob("*")) == before


def test_a_killed_writes_leftovers_are_removed_by_the_next_write(tmp_path, npz_path, data_u8, weights_dir):
    """What a SIGKILL leaves beside an output (a staging folder, a temp file), named with the dead process's id."""
    write_image_folder(tmp_path / "data", *data_u8)
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    (tmp_path / "o").mkdir()
    leftovers = [tmp_path / f".tmp-out-{dead.pid}-abcdefgh", tmp_path / "o" / f".tmp-in.npz-{dead.pid}-abcdefgh"]
    leftovers[0].mkdir()
    leftovers[1].write_bytes(b"half")
    alive = tmp_path / f".tmp-out-{os.getpid()}-abcdefgh"  # another write under way
    alive.mkdir()
    assert purify(["--data", str(tmp_path / "data"), "--out", str(tmp_path / "out")], weights_dir) == 0
    assert purify(["--data", str(npz_path), "--out", str(tmp_path / "o")], weights_dir) == 0
    assert not any(path.exists() for path in leftovers) and alive.is_dir()


def test_weights_from_a_hub_repo(npz_path, tmp_path, data_u8, tiny_purifier, weights_dir, fake_hub):
    files = {path.relative_to(weights_dir).as_posix(): path.read_bytes()
             for path in weights_dir.rglob("*") if path.is_file()}
    fake_hub.add_repo("tester/tiny-dvae", files)
    assert purify(["--data", str(npz_path), "--out", str(tmp_path / "o")], "tester/tiny-dvae") == 0
    with np.load(tmp_path / "o" / "in.npz") as archive:
        assert_within_one_level(torch.from_numpy(archive["images"]), expected_output(tiny_purifier, *data_u8))


def test_batch_and_shard_size_reach_the_purifier_and_the_cache_not_the_output(tmp_path, data_u8, tiny_purifier,
                                                                             weights_dir):
    images, labels = data_u8
    np.savez(tmp_path / "in.npz", images=images.numpy(), labels=labels.numpy())
    args = ["--data", str(tmp_path / "in.npz"), "--out", str(tmp_path / "o"), "--batch-size", "5", "--shard-size", "16"]
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        assert purify(args, weights_dir) == 0
    assert our_warnings(caught) == []
    assert_cached_as(images, labels, tiny_purifier.replace(batch_size=5, seed=0), shard_size=16)  # --seed: 0
    with np.load(tmp_path / "o" / "in.npz") as archive:
        assert_within_one_level(torch.from_numpy(archive["images"]), expected_output(tiny_purifier, images, labels))


def test_purify_goes_through_the_cache_and_reuses_it(npz_path, tmp_path, data_u8, tiny_purifier, weights_dir,
                                                    monkeypatch):
    args = ["--data", str(npz_path), "--out", str(tmp_path / "o"), "--batch-size", "16"]
    assert purify(args, weights_dir) == 0
    entries = cache_info()  # the default cache root ($DVAE_TRANSFORM_CACHE)
    assert [(entry["items"], entry["complete"]) for entry in entries] == [(64, True)]
    with np.load(tmp_path / "o" / "in.npz") as archive:
        first = archive["images"]

    def no_purification(*args, **kwargs):
        raise AssertionError("the second run must read the cache")

    monkeypatch.setattr(DVAEPurify, "purify", no_purification)
    assert purify([*args, "--overwrite"], weights_dir) == 0
    with np.load(tmp_path / "o" / "in.npz") as archive:
        np.testing.assert_array_equal(archive["images"], first)


@pytest.fixture
def umask_027():
    """The umask 027 (group may read, others nothing) for one test."""
    previous = os.umask(0o027)
    yield
    os.umask(previous)


def _modes(root: Path) -> set[tuple[str, int]]:
    """(``dir`` or ``file``, permission bits) of ``root`` and everything in it."""
    paths = [root, *root.rglob("*")]
    return {("dir" if path.is_dir() else "file", path.stat().st_mode & 0o777) for path in paths}


def test_outputs_and_cache_files_follow_the_umask(npz_path, tmp_path, data_u8, weights_dir, monkeypatch, umask_027):
    monkeypatch.setenv("DVAE_TRANSFORM_CACHE", str(tmp_path / "cache"))
    assert purify(["--data", str(npz_path), "--out", str(tmp_path / "npz")], weights_dir) == 0
    write_image_folder(tmp_path / "poisoned", *data_u8)
    assert purify(["--data", str(tmp_path / "poisoned"), "--out", str(tmp_path / "folder")], weights_dir) == 0
    images, labels = data_u8
    rows = {"image": [Image.fromarray(image[0].numpy(), mode="L") for image in images], "label": labels.tolist()}
    datasets.Dataset.from_dict(rows).save_to_disk(tmp_path / "hf")
    assert purify(["--data", str(tmp_path / "hf"), "--out", str(tmp_path / "hf-out")], weights_dir) == 0
    for output in ("npz", "folder", "hf-out", "cache"):
        assert _modes(tmp_path / output) <= {("dir", 0o750), ("file", 0o640)}, output
    assert ("file", 0o640) in _modes(tmp_path / "cache")


# ----------------------------------------------------------------------------- errors


def run_error(args: list[str], capsys) -> str:
    assert main(args) == 1
    return capsys.readouterr().err


@pytest.fixture
def npz_path(tmp_path, data_u8) -> Path:
    images, labels = data_u8
    np.savez(tmp_path / "in.npz", images=images.numpy(), labels=labels.numpy())
    return tmp_path / "in.npz"


def test_missing_path_and_unknown_file_type(tmp_path, weights_dir, capsys):
    base = ["purify", "--out", str(tmp_path / "o"), "--weights", str(weights_dir)]
    assert "no such file or folder" in run_error([*base, "--data", str(tmp_path / "nope")], capsys)
    (tmp_path / "table.csv").write_text("a,b\n")
    err = run_error([*base, "--data", str(tmp_path / "table.csv")], capsys)
    assert "unsupported file type '.csv'" in err and ".npz" in err


def test_npz_without_labels(tmp_path, data_u8, weights_dir, capsys):
    np.savez(tmp_path / "x.npz", images=data_u8[0].numpy(), targets=data_u8[1].numpy())
    err = run_error(["purify", "--data", str(tmp_path / "x.npz"), "--out", str(tmp_path / "o"),
                     "--weights", str(weights_dir)], capsys)
    assert "missing array(s) ['labels']" in err and "targets" in err


def test_npz_bad_contents(tmp_path, data_u8, weights_dir, capsys):
    images, labels = data_u8
    base = ["purify", "--out", str(tmp_path / "o"), "--weights", str(weights_dir), "--data", str(tmp_path / "x.npz")]
    np.savez(tmp_path / "x.npz", images=images.numpy(), labels=labels.numpy()[:10])
    assert "got 10 labels for 64 images" in run_error(base, capsys)
    np.savez(tmp_path / "x.npz", images=images.float().numpy() * 2, labels=labels.numpy())
    assert "must lie in [0, 1]" in run_error(base, capsys)
    np.savez(tmp_path / "x.npz", images=images.numpy(), labels=labels.float().numpy())
    assert "1-D integer array" in run_error(base, capsys)


def test_empty_and_malformed_folders(tmp_path, data_u8, weights_dir, capsys):
    base = ["purify", "--out", str(tmp_path / "o"), "--weights", str(weights_dir), "--data"]
    (tmp_path / "empty").mkdir()
    assert "no class sub-folders" in run_error([*base, str(tmp_path / "empty")], capsys)
    (tmp_path / "no_images" / "cat").mkdir(parents=True)
    (tmp_path / "no_images" / "cat" / "notes.txt").write_text("hi")
    assert "hold no image files" in run_error([*base, str(tmp_path / "no_images")], capsys)
    (tmp_path / "mixed" / "cat").mkdir(parents=True)
    Image.new("L", (16, 16)).save(tmp_path / "mixed" / "cat" / "a.png")
    Image.new("L", (8, 8)).save(tmp_path / "mixed" / "cat" / "b.png")
    assert "must share one size" in run_error([*base, str(tmp_path / "mixed")], capsys)


def test_bad_input_types_are_reported_and_bugs_are_not(tmp_path, weights_dir, capsys, monkeypatch):
    np.savez(tmp_path / "ints.npz", images=np.zeros((4, 1, 16, 16), np.int64), labels=np.zeros(4, np.int64))
    base = ["purify", "--out", str(tmp_path / "o"), "--weights", str(weights_dir), "--data"]
    assert "expected uint8, uint16 or floating point images" in run_error([*base, str(tmp_path / "ints.npz")], capsys)

    def bug(*args, **kwargs):
        raise TypeError("a programming error")

    monkeypatch.setattr("dvae_transform.cli.read_dataset", bug)
    with pytest.raises(TypeError, match="a programming error"):
        main([*base, str(tmp_path / "ints.npz")])


def test_images_that_do_not_fit_the_weights(tmp_path, weights_dir, capsys):
    np.savez(tmp_path / "rgb.npz", images=np.zeros((4, 3, 16, 16), np.uint8), labels=np.zeros(4, np.int64))
    err = run_error(["purify", "--data", str(tmp_path / "rgb.npz"), "--out", str(tmp_path / "o"),
                     "--weights", str(weights_dir)], capsys)
    assert "expected 1 channel(s)" in err


def test_existing_output_is_refused_before_purifying(npz_path, tmp_path, weights_dir, capsys):
    args = ["purify", "--data", str(npz_path), "--out", str(tmp_path / "o"), "--weights", str(weights_dir),
            "--device", "cpu", "--no-progress"]
    assert main(args) == 0
    capsys.readouterr()
    assert main(args) == 1
    out, err = capsys.readouterr()
    assert "o/in.npz exists" in err and "--overwrite" in err
    assert "read 64 images" in out and "purified" not in out  # refused before the work
    assert main([*args, "--overwrite"]) == 0
    assert "input" in run_error([*args, "--out", str(npz_path), "--overwrite"], capsys)


def test_bad_weights_folder_and_option_clashes(npz_path, tmp_path, weights_dir, capsys):
    base = ["purify", "--data", str(npz_path), "--out", str(tmp_path / "o")]
    assert "not a saved DVAEPurify" in run_error([*base, "--weights", str(tmp_path)], capsys)
    assert "does not match the weights' 4" in run_error([*base, "--weights", str(weights_dir), "--num-classes", "9"],
                                                        capsys)
    with pytest.raises(SystemExit) as exit_info:
        main(base)  # neither --weights nor --fit
    assert exit_info.value.code == 2
    with pytest.raises(SystemExit):
        main([*base, "--fit", "--weights", str(weights_dir)])


# ----------------------------------------------------------------------------- cache, demo, bench, help


def test_cache_info_and_clear(tmp_path, capsys):
    for key, items in (("alpha", 3), ("beta", 5)):
        entry = TensorCache(key, num_items=items, item_shape=(1, 4, 4), shard_size=4, root=tmp_path)
        for index in range(entry.num_shards):
            entry.write_shard(index, encode(torch.rand(len(entry.shard_range(index)), 1, 4, 4)))
    beta_size = next(entry["size"] for entry in cache_info(tmp_path) if entry["key"] == "beta")

    assert main(["cache", "--cache-dir", str(tmp_path)]) == 0
    table = capsys.readouterr().out.splitlines()
    assert table[0].split() == ["KEY", "ITEMS", "SHAPE", "DTYPE", "COMPLETE", "SIZE"]
    assert table[1].split()[:5] == ["alpha", "3", "1x4x4", "uint8", "yes"]
    assert table[2].split()[:5] == ["beta", "5", "1x4x4", "uint8", "yes"]
    assert "2 entries" in table[-1]

    manifest_path = tmp_path / "alpha" / "manifest.json"  # damaged by hand: listed with '?', still clearable
    manifest_path.write_text(json.dumps({**json.loads(manifest_path.read_text()), "item_shape": 5, "dtype": None}))
    assert main(["cache", "--cache-dir", str(tmp_path)]) == 0
    assert capsys.readouterr().out.splitlines()[1].split()[:5] == ["alpha", "3", "?", "?", "no"]

    assert main(["cache", "clear", "--cache-dir", str(tmp_path), "--key", "beta"]) == 0
    assert f"freed {beta_size} bytes" in capsys.readouterr().out
    assert [entry["key"] for entry in cache_info(tmp_path)] == ["alpha"]
    assert "no cache entry 'beta'" in run_error(["cache", "clear", "--cache-dir", str(tmp_path), "--key", "beta"],
                                                capsys)
    assert main(["cache", "clear", "--cache-dir", str(tmp_path)]) == 0
    assert main(["cache", "info", "--cache-dir", str(tmp_path)]) == 0
    assert "no cache entries" in capsys.readouterr().out


def test_missing_plugin_module_fails_clearly(monkeypatch, capsys):
    monkeypatch.setitem(sys.modules, "dvae_transform.evaluation.demo", None)  # as if demo.py were not installed
    err = run_error(["demo", "--seed", "1"], capsys)
    assert err.startswith("dvae-purify demo: error: not available") and "dvae_transform.evaluation.demo" in err


def test_plugin_options_are_forwarded(capsys):
    with pytest.raises(SystemExit) as exit_info:
        main(["bench", "--help"])
    assert exit_info.value.code == 0
    assert "usage: dvae-purify bench" in capsys.readouterr().out


def test_unknown_option_is_rejected():
    with pytest.raises(SystemExit) as exit_info:
        main(["cache", "--bogus"])
    assert exit_info.value.code == 2


def test_help_in_a_subprocess():
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(REPO), os.environ.get("PYTHONPATH")]))}
    command = [sys.executable, "-m", "dvae_transform.cli", "purify", "--help"]
    result = subprocess.run(command, capture_output=True, text=True, env=env, timeout=120, check=True)
    for option in ("--data", "--out", "--weights", "--fit", "--preset", "--fit-epochs", "--fit-width",
                   "--fit-latent-dim", "--fit-batch-size", "--batch-size", "--shard-size", "--image-column",
                   "--label-column", "--num-classes", "--device", "--seed", "--save-weights"):
        assert option in result.stdout


def test_device_takes_any_torch_device_string(capsys):
    parser = build_parser()
    for device in ("cpu", "cuda:1", "mps"):
        assert parser.parse_args(["purify", "--data", "d", "--out", "o", "--fit", "--device", device]).device == \
            torch.device(device)
    with pytest.raises(SystemExit):
        parser.parse_args(["purify", "--data", "d", "--out", "o", "--fit", "--device", "gpu"])
    assert "not a torch device: 'gpu'" in capsys.readouterr().err


def test_output_name_clashes_are_refused_before_reading_naming_the_files(tmp_path, weights_dir, capsys, monkeypatch):
    (tmp_path / "in/cat").mkdir(parents=True)
    for suffix in ("png", "jpg"):
        Image.new("L", (16, 16)).save(tmp_path / f"in/cat/a.{suffix}")
    monkeypatch.setattr(DVAEPurify, "purify", lambda *args, **kwargs: pytest.fail("purified before the check"))
    message = run_error(["purify", "--data", str(tmp_path / "in"), "--out", str(tmp_path / "out"),
                         "--weights", str(weights_dir), "--device", "cpu", "--no-progress"], capsys)
    assert "a.jpg and " in message and "cat/a.png" in message and "written to one .png" in message
