"""Fingerprints: stable, sensitive hashes of data, weights and settings."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from dvae_transform.fingerprint import fingerprint


def test_fingerprint_is_stable_and_sensitive():
    images = torch.arange(48, dtype=torch.uint8).reshape(3, 4, 4)
    settings = {"strength": 0.5, "batch": 64, "tags": ["a", None, True]}
    key = fingerprint(images, b"weights", settings)
    assert len(key) == 32 and int(key, 16) >= 0
    reordered = {"tags": ["a", None, True], "batch": 64, "strength": 0.5}
    assert fingerprint(images.clone(), b"weights", reordered) == key
    assert fingerprint(images.numpy(), b"weights", settings) == key

    changed = images.clone()
    changed[0, 0, 0] += 1
    assert fingerprint(changed, b"weights", settings) != key
    assert fingerprint(images, b"weights", {**settings, "strength": 0.25}) != key
    assert fingerprint(images.reshape(3, 16), b"weights", settings) != key
    assert fingerprint(images.float(), b"weights", settings) != key
    assert fingerprint(images, b"other", settings) != key
    assert fingerprint("ab", "c") != fingerprint("a", "bc")
    assert fingerprint(1) != fingerprint(True) != fingerprint(1.0)


def test_fingerprint_rejects_unknown_types():
    with pytest.raises(TypeError, match="cannot encode object"):
        fingerprint(object())


def test_numpy_scalars_fingerprint_like_python_numbers():
    assert fingerprint(np.int64(3), np.float64(0.5)) == fingerprint(3, 0.5)
