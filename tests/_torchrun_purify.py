"""Run under ``torchrun`` (CPU, gloo) by ``test_distributed.py``; every rank writes its own results.

``purify PURIFIER_DIR CACHE_DIR OUT_DIR``: purifies :func:`make_dataset` twice with
``PurifiedDataset(..., accelerator=...)`` (the first pass fills the cache, the second reads it)
and writes ``rank<r>.safetensors`` (images and labels of both passes) and ``rank<r>.calls``
(number of ``purifier.purify`` calls in each pass).

``fit OUT_DIR``: fits a tiny purifier with ``DVAEPurify.fit(..., accelerator=...)`` and writes
``rank<r>.safetensors`` (both stages' parameters) and ``rank<r>.json`` (the fit history).

``fit-own OUT_DIR``: the same fit without an accelerator; writes ``rank<r>.json`` (the number of
processes Accelerate saw) and ``rank<r>.log`` (the package logger's INFO records).
"""

from __future__ import annotations

import json
import logging
import os
import sys
from pathlib import Path

import torch
from _cache_worker import load_purifier, make_dataset
from accelerate import Accelerator, PartialState
from safetensors.torch import save_file

from dvae_transform import DVAEPurify
from dvae_transform.purified_dataset import PurifiedDataset

NUM_ITEMS = 22
SHARD_SIZE = 4


def purify(accelerator: Accelerator, purifier_dir: str, cache_dir: str, out_dir: Path) -> None:
    purifier = load_purifier(purifier_dir)
    dataset = make_dataset(purifier, count=NUM_ITEMS, seed=2)
    calls = []
    original = purifier.purify
    tensors = {}
    for attempt in ("first", "second"):
        counter = []

        def counted(*args, counter=counter, **kwargs):
            counter.append(1)
            return original(*args, **kwargs)

        purifier.purify = counted
        purified = PurifiedDataset(
            dataset, purifier, cache_dir=cache_dir, shard_size=SHARD_SIZE, accelerator=accelerator, progress=False
        ).prepare()
        calls.append(len(counter))
        tensors[f"{attempt}_images"], tensors[f"{attempt}_labels"] = purified.images, purified.labels
    rank = accelerator.process_index
    save_file(tensors, str(out_dir / f"rank{rank}.safetensors"))
    (out_dir / f"rank{rank}.calls").write_text(json.dumps(calls))


def tiny_fit(accelerator: Accelerator | None) -> DVAEPurify:
    generator = torch.Generator().manual_seed(3)
    images = torch.rand(32, 1, 8, 8, generator=generator)
    labels = torch.arange(32) % 2
    return DVAEPurify.fit(
        (images, labels), accelerator=accelerator, epochs=1, width=8, latent_dim=4, batch_size=16, progress=False
    )


def fit_own(out_dir: Path) -> None:
    rank = int(os.environ["RANK"])
    logger = logging.getLogger("dvae_transform")
    logger.addHandler(logging.FileHandler(out_dir / f"rank{rank}.log"))
    logger.setLevel(logging.INFO)
    tiny_fit(None)
    (out_dir / f"rank{rank}.json").write_text(json.dumps({"num_processes": PartialState().num_processes}))
    PartialState().destroy_process_group()


def fit(accelerator: Accelerator, out_dir: Path) -> None:
    purifier = tiny_fit(accelerator)
    parameters = {
        f"{name}.{key}": value.detach().cpu().contiguous()
        for name, stage in (("stage1", purifier.stage1), ("stage2", purifier.stage2))
        for key, value in stage.named_parameters()
    }
    rank = accelerator.process_index
    save_file(parameters, str(out_dir / f"rank{rank}.safetensors"))
    (out_dir / f"rank{rank}.json").write_text(json.dumps(purifier.history))


def main() -> None:
    torch.set_num_threads(1)
    if sys.argv[1] == "fit-own":
        return fit_own(Path(sys.argv[2]))
    accelerator = Accelerator(cpu=True)
    mode, *args = sys.argv[1:]
    if mode == "purify":
        purify(accelerator, args[0], args[1], Path(args[2]))
    elif mode == "fit":
        fit(accelerator, Path(args[0]))
    else:
        raise SystemExit(f"unknown mode {mode!r}")
    accelerator.wait_for_everyone()
    accelerator.end_training()


if __name__ == "__main__":
    main()
