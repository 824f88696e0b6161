"""The official D-VAE checkpoints: one :class:`PretrainedCheckpoint` per entry in :data:`REGISTRY`,
listed by :func:`list_pretrained` and accepted by name in ``DVAEPurify.from_pretrained``.
"""

from __future__ import annotations

import fnmatch
import os
from dataclasses import dataclass


@dataclass(frozen=True)
class PretrainedCheckpoint:
    """One official D-VAE checkpoint on the Hub.

    Attributes:
        name: the short name ``DVAEPurify.from_pretrained`` accepts.
        repo_id: the Hub repository.
        revision: the commit sha the name is pinned to; ``None`` (the ``main`` branch) until published.
        dataset: the training data (``"mnist32"``: the embedded MNIST digits, ``load_mnist32``).
        image_size, channels, num_classes: the images and classes it purifies.
        preset: the ``FitConfig`` preset it was fitted with (``hub/recipes/<name>.json`` has the overrides).
        attack: the poison (``dvae_transform.evaluation.attacks``) applied to its training set.
    """

    name: str
    repo_id: str
    revision: str | None
    dataset: str
    image_size: int
    channels: int
    num_classes: int
    preset: str
    attack: str


# Nothing is published yet: these are what ``hub/publish.py`` builds from ``hub/recipes/``. Their revision
# is None (the main branch) until a maintainer publishes them and pins the commit sha here.
REGISTRY: dict[str, PretrainedCheckpoint] = {
    entry.name: entry
    for entry in (
        PretrainedCheckpoint(
            name="mnist32-lsp-fast",
            repo_id="dvae-transform/mnist32-lsp-fast",
            revision=None,
            dataset="mnist32",
            image_size=32,
            channels=1,
            num_classes=10,
            preset="fast",
            attack="lsp",
        ),
        PretrainedCheckpoint(
            name="mnist32-classwise-noise-fast",
            repo_id="dvae-transform/mnist32-classwise-noise-fast",
            revision=None,
            dataset="mnist32",
            image_size=32,
            channels=1,
            num_classes=10,
            preset="fast",
            attack="classwise_noise",
        ),
    )
}


def list_pretrained(pattern: str = "*") -> list[str]:
    """Sorted names of the official checkpoints matching the shell-style ``pattern``."""
    return sorted(name for name in REGISTRY if fnmatch.fnmatch(name, pattern))


def pretrained_info(name: str) -> PretrainedCheckpoint:
    """The registry entry of an official checkpoint."""
    if name not in REGISTRY:
        raise ValueError(f"unknown pretrained checkpoint {name!r}; known: {', '.join(list_pretrained())}")
    return REGISTRY[name]


def resolve_source(name_or_path: str | os.PathLike, revision: str | None) -> tuple[str, str | None]:
    """Where ``DVAEPurify.from_pretrained`` loads from: a local folder, or a Hub repo id and revision.

    An existing directory wins; then a registry name (its pinned revision unless ``revision`` is given);
    then an ``org/name`` repo id.
    """
    text = os.fspath(name_or_path)
    if os.path.isdir(text):
        return text, revision
    if isinstance(name_or_path, os.PathLike) or text.startswith((".", "/", "~")) or os.path.exists(text):
        raise FileNotFoundError(f"{text} is not a folder holding a saved purifier")
    if text in REGISTRY:
        entry = REGISTRY[text]
        return entry.repo_id, entry.revision if revision is None else revision
    if text.count("/") != 1:
        raise ValueError(
            f"{text!r} is neither a local folder, an official checkpoint ({', '.join(list_pretrained())}) "
            "nor a Hub repo id of the form 'org/name'"
        )
    return text, revision
