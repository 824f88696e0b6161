"""Check batches: a few images purified when a purifier was saved, to check any copy of it on any machine.

A check batch is a safetensors file of ``images``, ``labels`` and ``purified`` (the fitted purifier's output,
written by ``hub/publish.py --check-batch``). On the machine that wrote it a copy purifies it bit for bit;
another CPU sums in another order, so two things differ:

* every float32 value, by its accumulation error: at most 1.6e-6 was seen on the bundled 32 px purifiers
  between the machine that wrote them and another CPU, so :data:`FLOAT32_SPREAD` (1e-5) bounds it with room
  to spare;
* a stage-1 value that lies within that spread of an 8-bit rounding boundary may round to the other
  level (:func:`~dvae_transform.precision.quantize`), and the one-level step then moves the output by far
  more (5.6e-5 seen).

:func:`check_tolerance` measures the second effect where it can happen: it purifies the images shifted by
``+-FLOAT32_SPREAD``, which moves the stage-1 values by about as much, so those that close to a boundary
round the other way, and allows each output value ``FLOAT32_SPREAD`` plus how far either shift moved it.
Values far from a boundary keep the tight bound, so changed weights (a weight scaled by 1.01, one bias
moved by 1e-4) still fails.
"""

from __future__ import annotations

import os
from typing import TYPE_CHECKING

import torch
from safetensors.torch import load_file, save_file

if TYPE_CHECKING:
    from ..transforms import DVAEPurify

FLOAT32_SPREAD = 1e-5
KEYS = ("images", "labels", "purified")


def write_check_batch(purifier: DVAEPurify, images: torch.Tensor, labels: torch.Tensor,
                      path: str | os.PathLike) -> None:
    """Store ``images``, ``labels`` and ``purifier``'s purification of them at ``path``."""
    images, labels = images.contiguous(), labels.contiguous()
    save_file({"images": images, "labels": labels, "purified": purifier.purify(images, labels)}, os.fspath(path))


def check_tolerance(purifier: DVAEPurify, images: torch.Tensor,
                    labels: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """``purifier``'s output for the batch here, and how far another machine's may lie from it, per value."""
    purified = purifier.purify(images, labels)
    tolerance = torch.full_like(purified, FLOAT32_SPREAD)
    for shift in (FLOAT32_SPREAD, -FLOAT32_SPREAD):
        tolerance += (purifier.purify((images + shift).clamp(0.0, 1.0), labels) - purified).abs()
    return purified, tolerance


def verify_check_batch(purifier: DVAEPurify, path: str | os.PathLike) -> float:
    """Check that ``purifier`` purifies the check batch at ``path`` as its writer did, on any machine.

    Returns the largest ratio of a difference to its tolerance (at most 1); raises ``ValueError`` naming
    the file and how many values lie outside their tolerance.
    """
    batch = load_file(os.fspath(path))
    if sorted(batch) != sorted(KEYS):
        raise ValueError(f"{path}: a check batch holds {list(KEYS)}, found {sorted(batch)}")
    purified, tolerance = check_tolerance(purifier, batch["images"], batch["labels"])
    if purified.shape != batch["purified"].shape:
        raise ValueError(f"{path}: purified has shape {tuple(batch['purified'].shape)}, not {tuple(purified.shape)}")
    ratio = (purified - batch["purified"]).abs() / tolerance
    outside = int((ratio > 1).sum())
    if outside:
        raise ValueError(
            f"{path}: {outside} of {ratio.numel()} purified values differ from the stored ones by more than "
            f"their tolerance (up to {ratio.max():.3g} times it): the weights, or the purification code, "
            "is not the one that wrote it"
        )
    return float(ratio.max())
