"""The official D-VAE checkpoints: one recipe file each, the only place they are described.

``recipes/<name>.json`` (shipped with the package) fixes what a checkpoint is fitted on and how, and
where it is published; :data:`REGISTRY` is read from these files, and ``hub/publish.py`` fits and
publishes from the same files. Nothing is published yet: every ``revision`` is ``null`` (the ``main``
branch) until a maintainer publishes the checkpoint and pins the commit sha in its recipe.
"""

from __future__ import annotations

import fnmatch
import json
import os
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any

from ..config import resolve_config
from ..validation import check_int, check_type, from_mapping

RECIPES = resources.files(__package__).joinpath("recipes")
_EVALUATE_KEYS = {"attacks", "victim_epochs"}


@dataclass(frozen=True)
class PretrainedCheckpoint:
    """One official D-VAE checkpoint on the Hub, and the recipe that builds it.

    Attributes:
        name: the short name ``DVAEPurify.from_pretrained`` accepts (and the recipe's file name).
        repo_id: the Hub repository.
        revision: the commit sha the name is pinned to; ``None`` (the ``main`` branch) until published.
        dataset: the training data (``"mnist32"``: the embedded MNIST digits).
        image_size, channels, num_classes: the images and classes it purifies.
        preset: the ``FitConfig`` preset it is fitted with; ``overrides`` changes fields of it.
        attack: the poison (``dvae_transform.evaluation.attacks``) applied to its training set, with
            ``attack_kwargs``.
        seed: seeds the poison, the fit and the victims of the evaluation.
        evaluate: the evaluation for the model card: ``attacks`` (names) and ``victim_epochs``.
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
    attack_kwargs: dict[str, Any] = field(default_factory=dict)
    overrides: dict[str, Any] = field(default_factory=dict)
    seed: int = 0
    evaluate: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        for name in ("name", "repo_id", "dataset", "preset", "attack"):
            check_type(getattr(self, name), name, str)
        check_type(self.revision, "revision", str, type(None))
        for name in ("image_size", "channels", "num_classes"):
            check_int(getattr(self, name), name, low=1)
        check_int(self.seed, "seed")
        for name in ("attack_kwargs", "overrides", "evaluate"):
            check_type(getattr(self, name), name, dict)
        if set(self.evaluate) - _EVALUATE_KEYS:
            unknown = sorted(set(self.evaluate) - _EVALUATE_KEYS)
            raise ValueError(f"unknown evaluate key(s) {unknown}; known: {sorted(_EVALUATE_KEYS)}")
        resolve_config(self.preset, **self.overrides)  # unknown presets and settings fail here


def load_recipe(name_or_path: str | os.PathLike) -> PretrainedCheckpoint:
    """A recipe by checkpoint name (one of the package's recipes) or by path, checked.

    Unknown or missing keys, wrong types, and unknown presets or fit settings raise an error naming the file.
    """
    path = Path(name_or_path)
    if not path.is_file():
        packaged = RECIPES.joinpath(f"{name_or_path}.json")
        if not packaged.is_file():
            raise FileNotFoundError(f"{name_or_path}: no such recipe file or official checkpoint name")
        path = Path(str(packaged))
    try:
        raw = json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as error:
        raise ValueError(f"{path} is not valid JSON: {error}") from None
    return from_mapping(PretrainedCheckpoint, raw, str(path))


def _read_registry() -> dict[str, PretrainedCheckpoint]:
    registry = {}
    for item in sorted(RECIPES.iterdir(), key=lambda item: item.name):
        if item.name.endswith(".json"):
            recipe = load_recipe(str(item))
            if item.name != f"{recipe.name}.json":
                raise ValueError(f"{item}: the recipe named {recipe.name!r} must be stored as {recipe.name}.json")
            registry[recipe.name] = recipe
    return registry


REGISTRY: dict[str, PretrainedCheckpoint] = _read_registry()


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
