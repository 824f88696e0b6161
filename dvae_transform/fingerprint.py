"""Fingerprints: stable hashes of data, weights and settings, and the key of a purification.

Every cache key derives from :func:`purification_key`: the on-disk tensor cache and the
``new_fingerprint`` of ``Dataset.map`` when purified images are written back to a Hugging Face dataset.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable, Sequence

import numpy as np
import torch
from torch import nn

from .metadata import __version__


def _feed_sized(update: Callable[[bytes], None], tag: bytes, payload: bytes | memoryview) -> None:
    update(tag + len(payload).to_bytes(8, "little"))
    update(payload)


def _feed_tensor(update: Callable[[bytes], None], tensor: torch.Tensor) -> None:
    flat = tensor.detach().cpu().contiguous().reshape(-1)
    header = json.dumps([str(flat.dtype), list(tensor.shape)]).encode()
    _feed_sized(update, b"t", header)
    _feed_sized(update, b"", memoryview(flat.view(torch.uint8).numpy()))


def _feed(update: Callable[[bytes], None], part: object) -> None:
    """Feed a canonical, type-tagged encoding of ``part`` to ``update``."""
    if isinstance(part, np.generic):
        part = part.item()
    if part is None:
        update(b"N")
    elif isinstance(part, bool):
        update(b"B1" if part else b"B0")
    elif isinstance(part, int):
        _feed_sized(update, b"i", str(part).encode())
    elif isinstance(part, float):
        _feed_sized(update, b"f", part.hex().encode())
    elif isinstance(part, str):
        _feed_sized(update, b"s", part.encode())
    elif isinstance(part, (bytes, bytearray, memoryview)):
        _feed_sized(update, b"b", bytes(part))
    elif isinstance(part, np.ndarray):
        _feed_tensor(update, torch.from_numpy(np.ascontiguousarray(part)))
    elif isinstance(part, torch.Tensor):
        _feed_tensor(update, part)
    elif isinstance(part, (list, tuple)):
        update(b"l" + len(part).to_bytes(8, "little"))
        for item in part:
            _feed(update, item)
    elif isinstance(part, dict):
        _feed_dict(update, part)
    else:
        raise TypeError(
            f"fingerprint: cannot encode {type(part).__name__}; use tensors, arrays, bytes, str, numbers, "
            "None, lists, tuples or dicts of those"
        )


def _feed_dict(update: Callable[[bytes], None], mapping: dict) -> None:
    encoded = []
    for key, value in mapping.items():
        chunks: list[bytes] = []
        _feed(chunks.append, key)
        encoded.append((b"".join(chunks), value))
    update(b"d" + len(encoded).to_bytes(8, "little"))
    for key_bytes, value in sorted(encoded, key=lambda pair: pair[0]):
        update(key_bytes)
        _feed(update, value)


def fingerprint(*parts: object) -> str:
    """Stable 32-hex-digit sha256 key over ``parts``.

    Parts may be tensors or numpy arrays (dtype, shape and raw bytes are hashed), bytes, str,
    int, float, bool, None, lists/tuples (treated alike) and dicts (order-independent), nested.
    Equal inputs give equal keys across processes and machines; any change to a value gives a new key.
    """
    hasher = hashlib.sha256()
    _feed(hasher.update, list(parts))
    return hasher.hexdigest()[:32]


def weights_hash(*models: nn.Module) -> str:
    """A hash of the models' configs (their ``config`` dicts) and weights (parameters and buffers)."""
    return fingerprint([[model.config, model.state_dict()] for model in models])


def purification_key(
    source: object,
    weights: str,
    *,
    sample: bool,
    seed: int | None,
    subtract: str,
    micro_batch: int,
    shard_size: int,
    cache_dtype: str,
    layout: Sequence[int],
) -> str:
    """The key of purifying the data identified by ``source`` with the weights hashed as ``weights``.

    Besides the two, the key covers every setting that changes the output: latent sampling and its
    seed, the subtraction rule, the micro-batch size (with sampling the draws depend on how a shard is cut),
    the shard size, the storage dtype, the image layout ``(channels, size, classes)`` and the library version.
    """
    settings = {
        "version": __version__,
        "sample": sample,
        "seed": seed,
        "subtract": subtract,
        "micro_batch": micro_batch if sample else None,
        "shard_size": shard_size,
        "cache_dtype": cache_dtype,
        "layout": list(layout),
    }
    return fingerprint(source, weights, settings)
