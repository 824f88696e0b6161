"""Accelerate with two real processes: ``torchrun`` on the CPU (gloo), running ``_torchrun_purify.py``."""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
from pathlib import Path

import _torchrun_stream as stream_worker
import torch
from _cache_worker import load_purifier, make_dataset
from _torchrun_purify import NUM_ITEMS, SHARD_SIZE
from safetensors.torch import load_file

from dvae_transform import DVAE, DVAEPurify, FitConfig
from dvae_transform.cache.maintenance import cache_info
from dvae_transform.config import resolve_config
from dvae_transform.precision import decode, encode
from dvae_transform.purified_dataset import PurifiedDataset
from dvae_transform.purify import remove_perturbation
from dvae_transform.training.loop import RANK_SEED_STRIDE, _adam, build_model
from dvae_transform.training.losses import dvae_loss
from dvae_transform.training.sets import epoch_plan

SCRIPT = Path(__file__).with_name("_torchrun_purify.py")
STREAM_SCRIPT = Path(__file__).with_name("_torchrun_stream.py")


def torchrun(*args: str | Path) -> None:
    """Run ``_torchrun_purify.py`` on two local processes."""
    torchrun_script(SCRIPT, *args)


def torchrun_script(script: Path, *args: str | Path) -> None:
    """Run ``script`` on two local processes (a free port each time, so parallel runs do not clash)."""
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(Path.cwd()), os.environ.get("PYTHONPATH", "")])}
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2", str(script)]
    result = subprocess.run([*command, *map(str, args)], env=env, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]


def test_two_processes_purify_like_one(tiny_purifier, tmp_path):
    tiny_purifier.save_pretrained(tmp_path / "purifier")
    torchrun("purify", tmp_path / "purifier", tmp_path / "cache", tmp_path)

    purifier = load_purifier(tmp_path / "purifier")
    single = PurifiedDataset(
        make_dataset(purifier, count=NUM_ITEMS, seed=2), purifier, shard_size=SHARD_SIZE, cache=False, progress=False
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


def test_fit_without_an_accelerator_on_two_cpu_processes_cooperates_and_logs_once(tmp_path):
    torchrun("fit-own", tmp_path)
    assert [json.loads((tmp_path / f"rank{rank}.json").read_text()) for rank in range(2)] == [{"num_processes": 2}] * 2
    logs = [(tmp_path / f"rank{rank}.log").read_text() for rank in range(2)]
    assert logs[0].count("epoch 1/1") == 2 and logs[1] == ""


# --------------------------------------------------------------------------- a streamed dataset on two processes


def ddp_reference(images: torch.Tensor, labels: torch.Tensor, config: FitConfig, world: int = 2) -> list[DVAE]:
    """What a fit on ``world`` processes computes, computed in one process.

    Every step takes the one-process global batch of :func:`epoch_plan`; process ``r`` would run its
    ``r``-th part with its own noise generator and batch statistics, and the gradients are averaged
    (``loss / world`` per part, accumulated); the batch-norm running statistics are process 0's.
    """
    stages, data = [], decode(images)
    for stage in (1, 2):
        model = build_model(config, in_channels=1, image_size=8, num_classes=2, seed=config.seed + 1000 * stage)
        optimizer = _adam(model, config.lr, torch.device("cpu"))

        def plan(epoch: int, rank: int, stage: int = stage, size: int = len(data)) -> list[torch.Tensor]:
            return epoch_plan(size, config.batch_size, seed=config.seed + stage, epoch=epoch, rank=rank,
                              world=world)

        total = config.epochs * len(plan(0, 0))
        scheduler = torch.optim.lr_scheduler.LambdaLR(
            optimizer, lambda step, total=total: 0.5 * (1.0 + math.cos(math.pi * min(step, total) / total))
        )
        generators = [torch.Generator().manual_seed(config.seed * 7 + stage + RANK_SEED_STRIDE * rank)
                      for rank in range(world)]
        warmup = round(config.epochs * config.warmup_fraction)
        model.train()
        for epoch in range(config.epochs):
            parts = [plan(epoch, rank) for rank in range(world)]
            for step in range(len(parts[0])):
                optimizer.zero_grad(set_to_none=True)
                for rank in range(world):
                    statistics = [buffer.clone() for buffer in model.buffers()]
                    x, y = data[parts[rank][step]], labels[parts[rank][step]]
                    output = model(x, y, sample=True, generator=generators[rank])
                    terms = dvae_loss(output, x, kl_bound=config.kl_bounds[stage - 1],
                                      penalize_perturbation=epoch >= warmup)
                    (terms.total / world).backward()
                    if rank:
                        for buffer, saved in zip(model.buffers(), statistics):
                            buffer.copy_(saved)
                torch.nn.utils.clip_grad_norm_(model.parameters(), config.grad_clip)
                optimizer.step()
                scheduler.step()
        stages.append(model.eval())
        data = decode(encode(remove_perturbation(model, data, labels)))
    return stages


def _read_log(path: Path) -> list[int]:
    return [int(line) for line in path.read_text().split()]


def test_a_streamed_dataset_on_two_processes_matches_one(tmp_path):
    """Two processes fit and purify a streamed dataset as one process defines it (``ddp_reference``).

    "Matches" means: each process reads a disjoint part of the stream (together all of it, once per
    pass); both end with the same weights and batch-norm statistics, bit for bit; those weights are,
    bit for bit, the one-process computation of the same update (same global batches, gradients of
    the two halves averaged, process 0's batch statistics); and the purified dataset equals a
    one-process purification with those weights.
    """
    torchrun_script(STREAM_SCRIPT, tmp_path)
    for phase in ("fit", "purify"):
        reads = [_read_log(tmp_path / f"{phase}-rank{rank}.log") for rank in range(2)]
        assert sorted(reads[0] + reads[1]) == list(range(stream_worker.NUM_ITEMS)), phase
        assert reads[0] and reads[1] and not set(reads[0]) & set(reads[1]), phase
    results = [load_file(tmp_path / f"rank{rank}.safetensors") for rank in range(2)]
    for name, value in results[0].items():
        assert torch.equal(value, results[1][name]), name

    images, labels = stream_worker.items()
    reference = ddp_reference(images, labels, resolve_config("fast", **stream_worker.SETTINGS))
    for stage, model in zip(("stage1", "stage2"), reference):
        for key, value in model.state_dict().items():
            assert torch.equal(results[0][f"{stage}.{key}"], value), f"{stage}.{key}"
    purifier = DVAEPurify(*reference)
    single = PurifiedDataset((images, labels), purifier, shard_size=stream_worker.SHARD_SIZE, cache=False,
                             progress=False)
    assert torch.equal(results[0]["images"], single.stored_images) and torch.equal(results[0]["labels"], labels)
