"""The README's "Fits with" rows that no other test covers: ``datasets``' ``with_transform`` and ``map``."""

from __future__ import annotations

import datasets
import numpy as np
import torch


def _hf(tiny_data) -> datasets.Dataset:
    images, labels = tiny_data
    return datasets.Dataset.from_dict({"image": images[:8].numpy(), "label": labels[:8].tolist()})


def _purify(purifier, batch: dict) -> dict:
    images = torch.as_tensor(np.asarray(batch["image"], dtype=np.float32))
    return {"image": purifier.purify(images, batch["label"]), "label": batch["label"]}


def test_with_transform_and_map_purify_with_the_labels(tiny_purifier, tiny_data):
    expected = tiny_purifier.purify(tiny_data[0][:8], tiny_data[1][:8])
    served = _hf(tiny_data).with_transform(lambda batch: _purify(tiny_purifier, batch))[:8]
    torch.testing.assert_close(served["image"], expected, rtol=0, atol=1e-6)
    mapped = _hf(tiny_data).map(lambda batch: _purify(tiny_purifier, batch), batched=True, batch_size=4)
    torch.testing.assert_close(mapped.with_format("torch")[:8]["image"], expected, rtol=0, atol=1e-6)
