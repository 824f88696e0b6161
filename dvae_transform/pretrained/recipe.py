"""An official pretrained purifier's recipe: one JSON file that says what it is, how it is fitted and where it lives.

A recipe (``recipes/<name>.json`` of a registry folder, see :mod:`.registry`) names the Hub repo and its
pinned revision, the training data, the poison(s) applied to it, the fit settings and the seed; once
``hub/publish.py --bundle`` has fitted it, also the sha256 of every file of the copy bundled with the
package and the measured effect (victim accuracies). Everything is checked when a recipe is read: unknown
or missing keys, types, values, presets and fit settings.
"""

from __future__ import annotations

import dataclasses
import json
import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..config import resolve_config
from ..validation import check_int, check_number, check_type, from_mapping

_SHA256_RE = re.compile(r"[0-9a-f]{64}")
_EVALUATE_KEYS = {"attacks", "victim_epochs"}
_SCORE_KEYS = {"poisoned", "purified"}


def _check_str_list(value: Any, name: str) -> None:
    check_type(value, name, list)
    if not value:
        raise ValueError(f"{name} must name at least one attack")
    for item in value:
        check_type(item, f"{name} entry", str)
    if len(set(value)) != len(value):
        raise ValueError(f"{name} names an attack twice: {value}")


def _nested(value: Any, cls: type, name: str) -> Any:
    """``value`` as the dataclass ``cls`` (built from a JSON object, or already one)."""
    return value if isinstance(value, cls) else from_mapping(cls, value, name)


@dataclass(frozen=True)
class TrainingData:
    """The images a pretrained purifier is fitted and evaluated on:
    ``load_bench_data(name, root, train=, test=, seed=)``.

    ``name`` is a dataset of ``dvae_transform.evaluation.datasets`` (``"mnist"``: the embedded digits;
    ``"fashion-mnist"``: its idx files, by default from the Debian package path; ``"imagefolder"``: class
    folders, resized to the recipe's ``image_size``); ``root`` ``None`` means the dataset's default, or for data
    the publisher provides (no default) the folder given to ``hub/publish.py --data-root``; ``train`` / ``test``
    keep a random subset of that many images seeded with ``seed`` (``None`` keeps the whole split).
    """

    name: str
    root: str | None = None
    train: int | None = None
    test: int | None = None
    seed: int = 0

    def __post_init__(self) -> None:
        check_type(self.name, "data name", str)
        check_type(self.root, "data root", str, type(None))
        for key in ("train", "test"):
            if getattr(self, key) is not None:
                check_int(getattr(self, key), f"data {key}", low=1)
        check_int(self.seed, "data seed")


@dataclass(frozen=True)
class MeasuredEffect:
    """Clean-test accuracies of the victim classifier, written by ``hub/publish.py``.

    ``clean``: trained on the clean training images; ``attacks[name]``: ``{"poisoned": ..., "purified": ...}``,
    trained on the images poisoned by that attack, without a defense and after purification by the purifier.
    """

    victim_epochs: int
    clean: float
    attacks: dict[str, dict[str, float]]

    def __post_init__(self) -> None:
        check_int(self.victim_epochs, "measured victim_epochs", low=1)
        check_number(self.clean, "measured clean", low=0, high=1, kind="an accuracy")
        check_type(self.attacks, "measured attacks", dict)
        for attack, scores in self.attacks.items():
            check_type(scores, f"measured attacks {attack}", dict)
            if set(scores) != _SCORE_KEYS:
                raise ValueError(f"measured attacks {attack} must hold {sorted(_SCORE_KEYS)}, got {sorted(scores)}")
            for key, value in scores.items():
                check_number(value, f"measured attacks {attack} {key}", low=0, high=1, kind="an accuracy")


@dataclass(frozen=True)
class PretrainedRecipe:
    """One official pretrained D-VAE purifier: where it is published, what ships with the package, how it is fitted.

    Attributes:
        name: the short name ``DVAEPurify.from_pretrained`` accepts (and the recipe's file name).
        repo_id: the Hub repository.
        revision: the commit sha the name is pinned to; ``None`` until it is published.
        image_size, channels, num_classes: the images and classes it purifies.
        data: the training (and evaluation) data, :class:`TrainingData`.
        attacks: the poison(s) (``dvae_transform.evaluation.attacks``) applied to the training set; with several,
            a seeded permutation splits the training images into equal parts, one attack each.
        attack_kwargs: settings per attack name (budgets), used for the training poison and the evaluation alike.
        preset: the ``FitConfig`` preset it is fitted with; ``overrides`` changes fields of it.
        seed: seeds the poison, the fit and the victims of the evaluation.
        evaluate: ``attacks`` to evaluate (default: every built-in attack) and ``victim_epochs``.
        bundle: relative path -> sha256 of every file of the copy bundled with the package; ``None`` if none is.
        measured: the victim accuracies measured when the bundled copy was fitted (:class:`MeasuredEffect`).
    """

    name: str
    repo_id: str
    revision: str | None
    image_size: int
    channels: int
    num_classes: int
    data: TrainingData
    attacks: list[str]
    attack_kwargs: dict[str, dict[str, Any]]
    preset: str
    overrides: dict[str, Any] = field(default_factory=dict)
    seed: int = 0
    evaluate: dict[str, Any] = field(default_factory=dict)
    bundle: dict[str, str] | None = None
    measured: MeasuredEffect | None = None

    def __post_init__(self) -> None:
        for key in ("name", "repo_id", "preset"):
            check_type(getattr(self, key), key, str)
        check_type(self.revision, "revision", str, type(None))
        for key in ("image_size", "channels", "num_classes"):
            check_int(getattr(self, key), key, low=1)
        check_int(self.seed, "seed")
        object.__setattr__(self, "data", _nested(self.data, TrainingData, "data"))
        _check_str_list(self.attacks, "attacks")
        for key in ("attack_kwargs", "overrides", "evaluate"):
            check_type(getattr(self, key), key, dict)
        for attack, kwargs in self.attack_kwargs.items():
            check_type(kwargs, f"attack_kwargs {attack}", dict)
        self._check_evaluate()
        self._check_bundle()
        if self.measured is not None:
            object.__setattr__(self, "measured", _nested(self.measured, MeasuredEffect, "measured"))
        resolve_config(self.preset, **self.overrides)  # unknown presets and settings fail here

    def _check_evaluate(self) -> None:
        unknown = sorted(set(self.evaluate) - _EVALUATE_KEYS)
        if unknown:
            raise ValueError(f"unknown evaluate key(s) {unknown}; known: {sorted(_EVALUATE_KEYS)}")
        if "attacks" in self.evaluate:
            _check_str_list(self.evaluate["attacks"], "evaluate attacks")
        if "victim_epochs" in self.evaluate:
            check_int(self.evaluate["victim_epochs"], "evaluate victim_epochs", low=1)

    def _check_bundle(self) -> None:
        if self.bundle is None:
            return
        check_type(self.bundle, "bundle", dict)
        if not self.bundle:
            raise ValueError("bundle must list at least one file (or be null)")
        for path, digest in self.bundle.items():
            parts = path.split("/")
            if path.startswith("/") or any(part in ("", ".", "..") for part in parts):
                raise ValueError(f"bundle path {path!r} must be relative, without '.' or '..' segments")
            if not isinstance(digest, str) or not _SHA256_RE.fullmatch(digest):
                raise ValueError(f"bundle {path}: expected a sha256 (64 lowercase hex digits), got {digest!r}")

    @property
    def sources(self) -> tuple[str, ...]:
        """Where the pretrained purifier can come from: ``"hub"`` (a pinned revision) and/or ``"bundled"``."""
        return tuple(name for name, present in (("hub", self.revision), ("bundled", self.bundle)) if present)

    def to_json(self) -> str:
        """The recipe file's text."""
        return json.dumps(dataclasses.asdict(self), indent=2) + "\n"


def read_recipe(path: str | os.PathLike) -> PretrainedRecipe:
    """The recipe in the JSON file ``path``, checked; every error names the file."""
    path = Path(path)
    try:
        raw = json.loads(path.read_text(encoding="utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as error:
        raise ValueError(f"{path} is not valid JSON: {error}") from None
    return from_mapping(PretrainedRecipe, raw, str(path))
