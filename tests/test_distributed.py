"""Accelerate with two real processes: ``torchrun`` on the CPU (gloo), running ``_torchrun_purify.py``."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import torch
from _cache_worker import load_purifier, make_dataset
from _torchrun_purify import NUM_ITEMS, SHARD_SIZE
from safetensors.torch import load_file

from dvae_transform.cache.maintenance import cache_info
from dvae_transform.data.purified import PurifiedDataset

SCRIPT = Path(__file__).with_name("_torchrun_purify.py")


def torchrun(*args: str | Path) -> None:
    """Run the script on two local processes (a free port each time, so parallel runs do not clash)."""
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(Path.cwd()), os.environ.get("PYTHONPATH", "")])}
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2", str(SCRIPT)]
    result = subprocess.run([*command, *map(str, args)], env=env, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]


def test_two_processes_purify_like_one(tiny_purifier, tmp_path):
    tiny_purifier.save_pretrained(tmp_path / "purifier")
    torchrun("purify", tmp_path / "purifier", tmp_path / "cache", tmp_path)

    purifier = load_purifier(tmp_path / "purifier")
    single = PurifiedDataset(
        make_dataset(purifier, count=NUM_ITEMS, seed=2), purifier, batch_size=SHARD_SIZE, cache=False, progress=False
    )
    ranks = [load_file(tmp_path / f"rank{rank}.safetensors") for rank in range(2)]
    for result in ranks:
        for attempt in ("first", "second"):
            assert torch.equal(result[f"{attempt}_images"], single.images)
            assert torch.equal(result[f"{attempt}_labels"], single.labels)
    calls = [json.loads((tmp_path / f"rank{rank}.calls").read_text()) for rank in range(2)]
    num_shards = -(-NUM_ITEMS // SHARD_SIZE)
    # the first pass shares the shards out (each computed once), the second reads the cache
    assert all(first > 0 for first, _ in calls) and sum(first for first, _ in calls) == num_shards
    assert [second for _, second in calls] == [0, 0]
    assert [entry["complete"] for entry in cache_info(tmp_path / "cache")] == [True]


def test_fit_with_an_accelerator_on_two_processes(tmp_path):
    torchrun("fit", tmp_path)
    weights = [load_file(tmp_path / f"rank{rank}.safetensors") for rank in range(2)]
    assert weights[0].keys() == weights[1].keys() and any(name.startswith("stage2.") for name in weights[0])
    for name, value in weights[0].items():  # gradients were averaged across processes
        assert torch.equal(value, weights[1][name]), name
    history = json.loads((tmp_path / "rank0.json").read_text())
    assert [(record["stage"], record["epoch"]) for record in history] == [(1, 1), (2, 1)]
