"""Run under ``torchrun`` (CPU, gloo) by ``test_distributed.py``; every rank writes its own results.

``purify PURIFIER_DIR CACHE_DIR OUT_DIR``: purifies :func:`make_dataset` twice with
``PurifiedDataset(..., accelerator=...)`` (the first pass fills the cache, the second reads it)
and writes ``rank<r>.safetensors`` (images and labels of both passes) and ``rank<r>.calls``
(number of ``purifier.purify`` calls in each pass).

``fit OUT_DIR``: fits a tiny purifier with ``DVAEPurify.fit(..., accelerator=...)`` and writes
``rank<r>.safetensors`` (both stages' parameters) and ``rank<r>.json`` (the fit history).
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import torch
from _cache_worker import load_purifier, make_dataset
from accelerate import Accelerator
from safetensors.torch import save_file

from dvae_transform import DVAEPurify
from dvae_transform.data.purified import PurifiedDataset

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
            dataset, purifier, cache_dir=cache_dir, batch_size=SHARD_SIZE, accelerator=accelerator, progress=False
        ).prepare()
        calls.append(len(counter))
        tensors[f"{attempt}_images"], tensors[f"{attempt}_labels"] = purified.images, purified.labels
    rank = accelerator.process_index
    save_file(tensors, str(out_dir / f"rank{rank}.safetensors"))
    (out_dir / f"rank{rank}.calls").write_text(json.dumps(calls))


def fit(accelerator: Accelerator, out_dir: Path) -> None:
    generator = torch.Generator().manual_seed(3)
    images = torch.rand(32, 1, 8, 8, generator=generator)
    labels = torch.arange(32) % 2
    purifier = DVAEPurify.fit(
        (images, labels), accelerator=accelerator, epochs=1, width=8, latent_dim=4, batch_size=16, progress=False
    )
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
