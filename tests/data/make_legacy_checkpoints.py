"""Write the legacy checkpoints in this folder with the code of commit 9a787dc (stride-1 transposed decoder convs).

They are test data for loading checkpoints saved before ``decoder_layout`` and ``downsamplings`` existed
(tests/test_weights.py). Regenerate from the repository root with::

    git worktree add /tmp/legacy-9a787dc 9a787dc
    PYTHONPATH=/tmp/legacy-9a787dc python tests/data/make_legacy_checkpoints.py
"""

from __future__ import annotations

from pathlib import Path

import torch
from safetensors.torch import save_file

from dvae_transform import DVAE

HERE = Path(__file__).resolve().parent
# name -> constructor arguments; 40 px is a size the old code built with one stride-2 stage.
MODELS = {
    "legacy-dvae-3x32": {"in_channels": 3, "image_size": 32, "num_classes": 3, "width": 8, "latent_dim": 8},
    "legacy-dvae-1x40": {"in_channels": 1, "image_size": 40, "num_classes": 2, "width": 4, "latent_dim": 4},
}


def main() -> None:
    for index, (name, kwargs) in enumerate(MODELS.items()):
        torch.manual_seed(index)
        model = DVAE(**kwargs)
        size, channels = kwargs["image_size"], kwargs["in_channels"]
        images = torch.rand(2, channels, size, size)
        labels = torch.tensor([0, kwargs["num_classes"] - 1])
        with torch.no_grad():
            for _ in range(3):  # non-trivial batch-norm running statistics
                model.train()(torch.rand(8, channels, size, size), labels[:1].repeat(8))
            out = model.eval()(images, labels)
        assert "decoder_layout" not in model.config and "downsamplings" not in model.config
        model.save_pretrained(HERE / name)
        (HERE / name / "README.md").unlink()
        save_file({"images": images, "labels": labels, **out._asdict()}, HERE / f"{name}.outputs.safetensors")


if __name__ == "__main__":
    main()
