"""PurifiedDataset: purification, the on-disk cache (reuse, keys, kills, concurrency), HF datasets."""

from __future__ import annotations

import copy
import json
import os
import signal
import subprocess
import sys
import time
import warnings
from pathlib import Path

import datasets
import numpy as np
import pytest
import torch
from _cache_worker import NUM_ITEMS, SHARD_SIZE, make_dataset
from safetensors.torch import load_file
from torch.utils.data import DataLoader, Dataset, TensorDataset
from torchvision.transforms import v2
from torchvision.transforms.v2 import functional as F

from dvae_transform import DVAE, DVAEPurify
from dvae_transform.cache.maintenance import cache_info
from dvae_transform.data.sources import load_images_and_labels
from dvae_transform.fingerprint import weights_hash
from dvae_transform.purified_dataset import PurifiedDataset
from dvae_transform.purify import purify_two_stage

WORKER = Path(__file__).with_name("_cache_worker.py")


@pytest.fixture
def purifier(tiny_purifier) -> DVAEPurify:
    """A private copy of the shared 1x16x16, 4-class purifier (tests count its calls)."""
    return copy.deepcopy(tiny_purifier)


@pytest.fixture
def data(purifier) -> TensorDataset:
    return make_dataset(purifier, count=20)


def count_calls(monkeypatch, purifier: DVAEPurify) -> list[int]:
    """Record the batch size of every ``purifier.purify`` call (the call itself is unchanged)."""
    calls: list[int] = []
    purify = purifier.purify

    def counted(images, labels=None):
        calls.append(len(images))
        return purify(images, labels)

    monkeypatch.setattr(purifier, "purify", counted)
    return calls


def expected(purifier: DVAEPurify, dataset: TensorDataset, chunk: int = 8) -> torch.Tensor:
    """Both stages on ``chunk`` items at a time, at the uint8 precision the dataset keeps."""
    images, labels = load_images_and_labels(dataset)
    out = purify_two_stage(purifier.stage1, purifier.stage2, images, labels, batch_size=chunk)
    return (out * 255).round() / 255


def purification_fingerprint(dataset, purifier, **kwargs) -> str:
    """The cache key of purifying ``dataset`` (computed without purifying)."""
    return PurifiedDataset(dataset, purifier, progress=False, lazy=True, **kwargs).fingerprint


def purified(dataset, purifier, root: Path | None, **kwargs) -> PurifiedDataset:
    kwargs.setdefault("shard_size", 8)
    return PurifiedDataset(dataset, purifier, cache_dir=root, cache=root is not None, progress=False, **kwargs)


# --------------------------------------------------------------------------- serving


def test_serves_purified_images_and_labels(purifier, data, tmp_path):
    dataset = purified(data, purifier, tmp_path)
    assert len(dataset) == 20
    image, label = dataset[13]
    assert image.dtype == torch.float32 and image.shape == (1, 16, 16) and label == int(data[13][1])
    torch.testing.assert_close(dataset.images, expected(purifier, data), rtol=0, atol=1e-6)
    assert torch.equal(dataset.labels, data.tensors[1])
    batch_images, batch_labels = next(iter(DataLoader(dataset, batch_size=20)))
    assert torch.equal(batch_images, dataset.images) and torch.equal(batch_labels, dataset.labels)


def test_user_transform_runs_after_purification(purifier, data):
    flip = v2.RandomHorizontalFlip(p=1.0)
    plain = purified(data, purifier, None)
    flipped = purified(data, purifier, None, transform=flip)
    for index in (0, 7, 19):
        assert torch.equal(flipped[index][0], plain[index][0].flip(-1))


def test_pil_items_and_explicit_prepare(purifier, data, tmp_path, monkeypatch):
    class PilImages(Dataset):
        def __len__(self):
            return len(data)

        def __getitem__(self, index):
            image, label = data[index]
            return F.to_pil_image(image), int(label)

    calls = count_calls(monkeypatch, purifier)
    dataset = purified(PilImages(), purifier, tmp_path)
    assert dataset.prepare() is dataset and calls == [8, 8, 4]
    torch.testing.assert_close(dataset.images, expected(purifier, data), rtol=0, atol=1e-6)


def test_purified_when_built_so_dataloader_workers_only_serve(purifier, data, monkeypatch):
    calls = count_calls(monkeypatch, purifier)
    dataset = purified(data, purifier, None)
    assert calls == [8, 8, 4] and "prepared=True" in repr(dataset)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        batches = list(DataLoader(dataset, batch_size=5, num_workers=2))
    served = torch.cat([images for images, _ in batches])
    torch.testing.assert_close(served, expected(purifier, data), rtol=0, atol=1e-6)
    lazy = purified(data, purifier, None, lazy=True)
    assert calls == [8, 8, 4] and "prepared=False" in repr(lazy) and lazy.prepare() is lazy and len(calls) == 6


def test_no_cache_touches_no_disk(purifier, data, tmp_path, monkeypatch):
    monkeypatch.setenv("DVAE_TRANSFORM_CACHE", str(tmp_path / "default"))
    dataset = purified(data, purifier, None)
    torch.testing.assert_close(dataset.images, expected(purifier, data), rtol=0, atol=1e-6)
    assert not (tmp_path / "default").exists()


def test_default_cache_root_comes_from_the_environment(purifier, data, tmp_path, monkeypatch):
    monkeypatch.setenv("DVAE_TRANSFORM_CACHE", str(tmp_path / "default"))
    dataset = PurifiedDataset(data, purifier, shard_size=8, progress=False).prepare()
    entries = cache_info(tmp_path / "default")
    assert [entry["key"] for entry in entries] == [dataset.fingerprint] and entries[0]["complete"]


# --------------------------------------------------------------------------- cache reuse and keys


def test_second_pass_reads_the_cache(purifier, data, tmp_path, monkeypatch):
    calls = count_calls(monkeypatch, purifier)
    first = purified(data, purifier, tmp_path).images
    assert calls == [8, 8, 4]
    second = purified(data, purifier, tmp_path).images
    assert calls == [8, 8, 4]
    assert torch.equal(first, second)


def test_cache_key_follows_data_weights_and_settings(purifier, data):
    key = purification_fingerprint(data, purifier)
    same_content = TensorDataset(data.tensors[0].clone(), data.tensors[1].clone())
    assert purification_fingerprint(same_content, purifier) == key
    assert purification_fingerprint(data, copy.deepcopy(purifier)) == key

    images = data.tensors[0].clone()
    images[3, 0, 5, 5] ^= 1
    assert purification_fingerprint(TensorDataset(images, data.tensors[1]), purifier) != key
    labels = data.tensors[1].clone()
    labels[0] = (labels[0] + 1) % 4
    assert purification_fingerprint(TensorDataset(data.tensors[0], labels), purifier) != key

    changed = copy.deepcopy(purifier)
    with torch.no_grad():
        next(changed.stage2.parameters()).view(-1)[0] += 1e-3
    assert weights_hash(changed.stage1, changed.stage2) != weights_hash(purifier.stage1, purifier.stage2)
    assert purification_fingerprint(data, changed) != key

    sampling = copy.deepcopy(purifier)
    sampling.sample, sampling.seed = True, 0
    assert purification_fingerprint(data, sampling) != key
    assert purification_fingerprint(data, purifier.replace(subtract="effect")) != key
    assert purification_fingerprint(data, purifier, cache_dtype="float16") != key
    assert purification_fingerprint(data, purifier, shard_size=8) != key


def test_corrupt_shard_is_recomputed(purifier, data, tmp_path, monkeypatch):
    first = purified(data, purifier, tmp_path)
    reference = first.images
    shard = tmp_path / first.fingerprint / "shard-00001.safetensors"
    shard.write_bytes(b"not a safetensors file")
    calls = count_calls(monkeypatch, purifier)
    assert torch.equal(purified(data, purifier, tmp_path).images, reference)
    assert calls == [8]


def test_unusable_cache_dir_warns_and_still_purifies(purifier, data, tmp_path):
    blocker = tmp_path / "a-file"
    blocker.write_text("not a directory")
    with pytest.warns(RuntimeWarning, match="continuing without a cache"):
        images = purified(data, purifier, blocker / "cache").images
    torch.testing.assert_close(images, expected(purifier, data), rtol=0, atol=1e-6)


def test_float16_storage(purifier, data, tmp_path):
    dataset = purified(data, purifier, tmp_path, cache_dtype="float16")
    images, labels = load_images_and_labels(data)
    reference = purify_two_stage(purifier.stage1, purifier.stage2, images, labels, batch_size=8).half().float()
    assert torch.equal(dataset.images, reference)
    assert torch.equal(purified(data, purifier, tmp_path, cache_dtype="float16").images, reference)


# --------------------------------------------------------------------------- processes


def _start_worker(purifier_dir: Path, cache: Path, out: Path, log: Path, delay: float) -> subprocess.Popen:
    env = {**os.environ, "DVAE_TEST_SHARD_DELAY": str(delay)}
    env["PYTHONPATH"] = os.pathsep.join([str(Path.cwd()), env.get("PYTHONPATH", "")])
    args = [sys.executable, str(WORKER), str(purifier_dir), str(cache), str(out), str(log)]
    return subprocess.Popen(args, env=env, stderr=subprocess.PIPE)


def _finished_shards(cache: Path) -> int:
    manifests = list(cache.glob("*/manifest.json"))
    if not manifests:
        return 0
    try:
        return len(json.loads(manifests[0].read_text())["shards"])
    except (ValueError, KeyError):  # being replaced
        return 0


def _calls(log: Path) -> list[str]:
    return log.read_text().split() if log.exists() else []


def _wait(process: subprocess.Popen) -> None:
    _, stderr = process.communicate(timeout=120)
    assert process.returncode == 0, stderr.decode()


@pytest.fixture
def saved_purifier(purifier, tmp_path) -> Path:
    purifier.save_pretrained(tmp_path / "purifier")
    return tmp_path / "purifier"


def test_killed_run_resumes_from_finished_shards(purifier, saved_purifier, tmp_path):
    cache, log = tmp_path / "cache", tmp_path / "calls.log"
    num_shards = NUM_ITEMS // SHARD_SIZE
    process = _start_worker(saved_purifier, cache, tmp_path / "killed.safetensors", log, delay=0.5)
    deadline = time.monotonic() + 300
    while _finished_shards(cache) < 3 and process.poll() is None and time.monotonic() < deadline:
        time.sleep(0.05)
    process.send_signal(signal.SIGKILL)
    process.wait()
    finished = _finished_shards(cache)
    assert 3 <= finished < num_shards, "the worker was not killed half-way"

    log.unlink()
    _wait(_start_worker(saved_purifier, cache, tmp_path / "resumed.safetensors", log, delay=0))
    assert len(_calls(log)) == num_shards - finished
    resumed = load_file(tmp_path / "resumed.safetensors")
    uninterrupted = purified(make_dataset(purifier), purifier, None, shard_size=SHARD_SIZE).images
    assert torch.equal(resumed["images"], uninterrupted)


def test_concurrent_processes_compute_each_shard_once(purifier, saved_purifier, tmp_path):
    cache, log = tmp_path / "cache", tmp_path / "calls.log"
    outs = [tmp_path / f"out{index}.safetensors" for index in range(2)]
    processes = [_start_worker(saved_purifier, cache, out, log, delay=0.05) for out in outs]
    for process in processes:
        _wait(process)
    assert len(_calls(log)) == NUM_ITEMS // SHARD_SIZE
    results = [load_file(out)["images"] for out in outs]
    assert torch.equal(results[0], results[1])
    assert torch.equal(results[0], purified(make_dataset(purifier), purifier, None, shard_size=SHARD_SIZE).images)
    assert len(cache_info(cache)) == 1


# --------------------------------------------------------------------------- Hugging Face datasets


@pytest.fixture
def hf_images(data) -> datasets.Dataset:
    """The same images as an ``Image`` column, labels as a ``ClassLabel`` column, plus an extra column."""
    images, labels = data.tensors
    features = datasets.Features(
        {"img": datasets.Image(), "label": datasets.ClassLabel(num_classes=4), "id": datasets.Value("int64")}
    )
    return datasets.Dataset.from_dict(
        {"img": [F.to_pil_image(image) for image in images], "label": labels.tolist(), "id": list(range(len(data)))},
        features=features,
    )


@pytest.fixture
def hf_arrays(data) -> datasets.Dataset:
    """The same images as float CHW arrays in a column with an unusual name."""
    images, labels = data.tensors
    return datasets.Dataset.from_dict({"pixels": (images.float() / 255).numpy(), "target": labels.numpy()})


def test_hf_image_column_stays_an_image_column(purifier, data, hf_images, tmp_path):
    dataset = purified(hf_images, purifier, tmp_path)
    assert torch.equal(dataset.images, purified(data, purifier, None).images)
    out = dataset.to_hf_dataset()
    assert isinstance(out.features["img"], datasets.Image) and out.column_names == ["img", "label", "id"]
    as_torch = out.with_format("torch")[:]
    assert torch.equal(as_torch["img"].float() / 255, dataset.images)
    assert torch.equal(as_torch["label"], dataset.labels) and as_torch["id"].tolist() == list(range(20))

    out.save_to_disk(tmp_path / "saved")
    reloaded = datasets.load_from_disk(str(tmp_path / "saved")).with_format("torch")
    assert torch.equal(reloaded[:]["img"], as_torch["img"])


def test_hf_array_column_keeps_its_layout(purifier, hf_arrays, tmp_path):
    dataset = purified(hf_arrays, purifier, tmp_path, image_column="pixels", label_column="target")
    out = dataset.to_hf_dataset()
    assert out.features == hf_arrays.features  # float CHW arrays stay float CHW arrays, in [0, 1]
    assert torch.equal(out.with_format("torch")[:]["pixels"], dataset.images)

    channels_last = hf_arrays.map(lambda row: {"pixels": np.moveaxis(np.asarray(row["pixels"]), 0, -1)})
    out = purified(channels_last, purifier, None, image_column="pixels", label_column="target").to_hf_dataset()
    assert torch.equal(out.with_format("torch")[:]["pixels"], dataset.images.permute(0, 2, 3, 1))


def test_hf_fingerprints_are_deterministic(purifier, hf_images, tmp_path):
    first = purified(hf_images, purifier, tmp_path).to_hf_dataset()
    second = purified(hf_images, purifier, None).to_hf_dataset()
    assert first._fingerprint == second._fingerprint != hf_images._fingerprint
    changed = copy.deepcopy(purifier)
    changed.seed = 5
    assert purified(hf_images, changed, None).to_hf_dataset()._fingerprint != first._fingerprint
    assert purification_fingerprint(hf_images, purifier) != purification_fingerprint(hf_images, changed)


@pytest.mark.parametrize("cached", [True, False])
def test_to_hf_dataset_never_writes_beside_a_save_to_disk_source(purifier, hf_images, tmp_path, cached):
    hf_images.save_to_disk(tmp_path / "user")
    before = sorted(path.name for path in (tmp_path / "user").iterdir())
    source = datasets.load_from_disk(str(tmp_path / "user"))
    dataset = purified(source, purifier, tmp_path / "cache" if cached else None)
    out = dataset.to_hf_dataset()
    assert torch.equal(out.with_format("torch")[:]["img"].float() / 255, dataset.images)
    assert sorted(path.name for path in (tmp_path / "user").iterdir()) == before
    written = [Path(file["filename"]).parent for file in out.cache_files]
    assert written == ([tmp_path / "cache" / "hf"] if cached else [])


def test_to_hf_dataset_needs_an_hf_source(purifier, data):
    with pytest.raises(TypeError, match="needs a datasets.Dataset source"):
        purified(data, purifier, None).to_hf_dataset()


# --------------------------------------------------------------------------- bad input


class _Items(Dataset):
    def __init__(self, items: list) -> None:
        self.items = items

    def __len__(self) -> int:
        return len(self.items)

    def __getitem__(self, index: int):
        return self.items[index]


def _error(dataset, purifier, **kwargs) -> str:
    with pytest.raises((ValueError, TypeError)) as caught:
        purified(dataset, purifier, None, **kwargs).prepare()
    return str(caught.value)


def test_items_must_be_pairs(purifier):
    assert "dataset item 1 must be an (image, label) pair" in _error(
        _Items([(torch.rand(1, 16, 16), 0), torch.rand(1, 16, 16)]), purifier
    )


def test_mixed_image_sizes_are_rejected(purifier):
    items = [(torch.rand(1, 16, 16), 0)] * 3 + [(torch.rand(1, 18, 18), 1)]
    assert "dataset item 3 has shape (1, 18, 18), not item 0's (1, 16, 16)" in _error(_Items(items), purifier)
    assert "expected 16x16 images, got 18x18" in _error(_Items(items), purifier, shard_size=3)


def test_missing_hf_column_lists_the_columns(purifier, hf_images):
    message = _error(hf_images, purifier, image_column="picture")
    assert "'picture' not found" in message and "['img', 'label', 'id']" in message


def test_grayscale_into_rgb_model_asks_for_conversion(data):
    stages = [DVAE(in_channels=3, image_size=16, num_classes=4, width=8, latent_dim=8) for _ in range(2)]
    assert "v2.Grayscale(num_output_channels=3)" in _error(data, DVAEPurify(*stages))


def test_labels_out_of_range_and_bad_settings(purifier, data):
    wrong = TensorDataset(data.tensors[0], data.tensors[1] + 4)
    assert "labels must lie in [0, 4)" in _error(wrong, purifier)
    assert "shard_size must be positive" in _error(data, purifier, shard_size=0)
    assert "cache_dtype must be 'float16' or 'uint8'" in _error(data, purifier, cache_dtype="int8")
    with pytest.raises(TypeError, match="purifier must be a DVAEPurify"):
        PurifiedDataset(data, purifier.stage1)


def test_empty_dataset_is_rejected(purifier):
    assert "empty" in _error(_Items([]), purifier)


def test_unprepared_dataset_in_a_worker(purifier, data):
    """Unprepared, a DataLoader worker purifies the dataset itself (and warns that it does)."""
    dataset = purified(data, purifier, None)
    loader = DataLoader(dataset, batch_size=20, num_workers=1)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the warning is raised in the worker
        images, _ = next(iter(loader))
    assert torch.equal(images, dataset.images)
