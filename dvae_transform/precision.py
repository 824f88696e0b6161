"""Image precision: 8-bit levels and the storage dtypes of purified images.

Images in [0, 1] are stored either as ``"uint8"`` (``round(x * 255)``, the authors' 8-bit levels) or
as ``"float16"``. :func:`encode` and :func:`decode` are the only conversions between float images and
storage; :func:`quantize` rounds float images to 8-bit levels without leaving float.
"""

from __future__ import annotations

import torch

STORAGE_DTYPES = {"uint8": torch.uint8, "float16": torch.float16}


def quantize(images: torch.Tensor) -> torch.Tensor:
    """Round to 8-bit levels, as the authors store each stage's output as uint8."""
    return torch.round(images.clamp(0.0, 1.0) * 255.0) / 255.0


def encode(values: torch.Tensor, dtype: str = "uint8") -> torch.Tensor:
    """Float values in [0, 1] at storage precision: ``"uint8"`` (8-bit levels) or ``"float16"``."""
    if dtype == "uint8":
        return values.mul(255).round_().to(torch.uint8)
    return values.to(torch.float16)


def decode(stored: torch.Tensor) -> torch.Tensor:
    """Stored values (uint8 levels or float16) back as float32 in [0, 1]."""
    if stored.dtype == torch.uint8:
        return stored.to(torch.float32).div_(255)
    return stored.to(torch.float32)


def as_uint8(stored: torch.Tensor) -> torch.Tensor:
    """Stored values as uint8 levels (uint8 as they are, float16 rounded)."""
    return stored if stored.dtype == torch.uint8 else encode(decode(stored), "uint8")
