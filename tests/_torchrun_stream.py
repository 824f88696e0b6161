"""Run under ``torchrun`` (CPU, gloo) by ``test_distributed.py``: fit and purify a streamed dataset.

``python _torchrun_stream.py OUT_DIR``: every rank fits a tiny purifier on :func:`stream` (a Hugging
Face ``IterableDataset`` of 4 shards) with ``DVAEPurify.fit(..., accelerator=...)``, then purifies the
stream with ``PurifiedDataset(..., accelerator=...)``. Each rank writes ``rank<r>.safetensors`` (both
stages' weights and buffers, the purified images and labels) and logs the ``id`` of every item it
reads from the stream to ``fit-rank<r>.log`` and ``purify-rank<r>.log``.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

import datasets
import torch
from accelerate import Accelerator
from safetensors.torch import save_file

from dvae_transform import DVAEPurify
from dvae_transform.purified_dataset import PurifiedDataset

NUM_ITEMS = 40
SETTINGS = {"epochs": 2, "width": 8, "latent_dim": 4, "batch_size": 16, "seed": 0}
SHARD_SIZE = 8


def items() -> tuple[torch.Tensor, torch.Tensor]:
    """The data: uint8 1x8x8 images and labels in [0, 2)."""
    generator = torch.Generator().manual_seed(5)
    return torch.randint(0, 256, (NUM_ITEMS, 1, 8, 8), generator=generator, dtype=torch.uint8), torch.arange(40) % 2


def _log_read(example: dict) -> dict:
    with open(os.environ["READ_LOG"], "a") as handle:
        handle.write(f"{example['id']}\n")
    return example


def stream() -> datasets.IterableDataset:
    """:func:`items` as a streamed dataset of 4 shards that logs every item read to ``$READ_LOG``."""
    images, labels = items()
    table = datasets.Dataset.from_dict({"image": images.numpy(), "label": labels.numpy(), "id": list(range(40))})
    iterable = table.to_iterable_dataset(num_shards=4)
    return iterable.map(_log_read, features=iterable.features)


def main(out_dir: Path) -> None:
    torch.set_num_threads(1)
    accelerator = Accelerator(cpu=True)
    rank = accelerator.process_index
    os.environ["READ_LOG"] = str(out_dir / f"fit-rank{rank}.log")
    purifier = DVAEPurify.fit(stream(), accelerator=accelerator, progress=False, **SETTINGS)
    tensors = {
        f"{name}.{key}": value.detach().cpu().contiguous()
        for name, stage in (("stage1", purifier.stage1), ("stage2", purifier.stage2))
        for key, value in stage.state_dict().items()
    }
    os.environ["READ_LOG"] = str(out_dir / f"purify-rank{rank}.log")
    purified = PurifiedDataset(stream(), purifier, cache_dir=out_dir / "cache", shard_size=SHARD_SIZE,
                               accelerator=accelerator, progress=False)
    tensors.update(images=purified.stored_images, labels=purified.labels)
    save_file(tensors, str(out_dir / f"rank{rank}.safetensors"))
    accelerator.wait_for_everyone()
    accelerator.end_training()


if __name__ == "__main__":
    main(Path(sys.argv[1]))
