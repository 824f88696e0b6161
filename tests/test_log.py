"""Library output: the package logger, warnings that point at the caller, and progress bars that can be silenced."""

from __future__ import annotations

import logging
import os
import subprocess
import sys
import warnings
from pathlib import Path

import datasets
import numpy as np
import torch
from torchvision.transforms import v2

from dvae_transform import PurifiedDataset
from dvae_transform.cli import main


def test_the_package_logger_has_a_null_handler():
    handlers = logging.getLogger("dvae_transform").handlers
    assert any(isinstance(handler, logging.NullHandler) for handler in handlers)


def test_cache_hits_and_misses_are_logged(tiny_purifier, tiny_data, tmp_path, caplog):
    with caplog.at_level(logging.INFO, logger="dvae_transform"):
        for _ in range(2):
            PurifiedDataset(tiny_data, tiny_purifier, cache_dir=tmp_path, shard_size=32, progress=False)
    messages = [record.getMessage() for record in caplog.records if record.name == "dvae_transform"]
    assert [message.split(": ")[1] for message in messages] == ["0 of 2 shards cached, 2 to purify",
                                                                "2 of 2 shards cached, 0 to purify"]


def _caught(action) -> list[warnings.WarningMessage]:
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        action()
    return caught


def test_warnings_point_at_the_callers_code(tiny_purifier, tiny_data, tmp_path):
    label_free = tiny_purifier.replace(labels_getter=None)
    caught = _caught(lambda: v2.Compose([label_free])(tiny_data[0][0]))
    (tmp_path / "file").write_text("not a folder")
    unusable = tmp_path / "file" / "cache"
    caught += _caught(lambda: PurifiedDataset(tiny_data, tiny_purifier, cache_dir=unusable, progress=False))
    ours = [w for w in caught if "got no label" in str(w.message) or "continuing without a cache" in str(w.message)]
    assert [Path(w.filename).name for w in ours] == ["test_log.py"] * 2, [str(w.message) for w in caught]


def _hf_dataset(tiny_data) -> datasets.Dataset:
    images, labels = tiny_data
    return datasets.Dataset.from_dict({"image": images.numpy(), "label": labels.tolist()})


def test_progress_false_silences_datasets_bars(tiny_purifier, tiny_data, tmp_path, capsys):
    PurifiedDataset(_hf_dataset(tiny_data), tiny_purifier, cache=False, progress=False).to_hf_dataset()
    _hf_dataset(tiny_data).save_to_disk(tmp_path / "hf")
    capsys.readouterr()
    tiny_purifier.save_pretrained(tmp_path / "weights")
    args = ["--data", str(tmp_path / "hf"), "--out", str(tmp_path / "out"), "--weights", str(tmp_path / "weights")]
    assert main(["purify", *args, "--device", "cpu", "--no-progress"]) == 0
    assert datasets.is_progress_bar_enabled()  # as it was before
    assert "%|" not in capsys.readouterr().err


def test_tqdm_disable_silences_the_bars(tiny_purifier, tiny_data, tmp_path):
    tiny_purifier.save_pretrained(tmp_path / "weights")
    images, labels = tiny_data
    np.savez(tmp_path / "in.npz", images=(images * 255).to(torch.uint8).numpy(), labels=labels.numpy())
    code = "import sys; from dvae_transform.cli import main; sys.exit(main(sys.argv[1:]))"
    command = [sys.executable, "-c", code, "purify", "--data", str(tmp_path / "in.npz"), "--device", "cpu",
               "--weights", str(tmp_path / "weights"), "--overwrite"]
    errors = []
    environment = {key: value for key, value in os.environ.items() if not key.startswith("TQDM_")}
    for extra in ({}, {"TQDM_DISABLE": "1"}):
        env = {**environment, **extra, "PYTHONPATH": str(Path.cwd())}
        result = subprocess.run([*command, "--out", str(tmp_path / str(len(extra)))], env=env, capture_output=True,
                                text=True, timeout=600)
        assert result.returncode == 0, result.stderr[-2000:]
        errors.append(result.stderr)
    assert "purifying" in errors[0] and "purifying" not in errors[1]
