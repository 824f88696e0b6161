"""The Hugging Face Hub side of ``DVAEPurify``: the saved layout, official checkpoints, model cards.

A saved purifier (local folder or Hub repo) holds::

    config.json                 format version and purification defaults (this module checks it)
    README.md                   model card rendered from ``templates/model_card.md``
    stage1/config.json          DVAE constructor arguments of each stage
    stage1/model.safetensors    its weights (safetensors only: pickle files are never read)
    stage2/...

Official checkpoints are data: one :class:`PretrainedCheckpoint` per entry in :data:`REGISTRY`,
listed by :func:`list_pretrained` and accepted by name in ``DVAEPurify.from_pretrained``.
"""

from __future__ import annotations

import fnmatch
import json
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import TYPE_CHECKING, Any

from huggingface_hub import EvalResult, ModelCard, ModelCardData

if TYPE_CHECKING:
    from .transforms import DVAEPurify

LIBRARY_NAME = "dvae-transform"
TAGS = ("dvae-transform", "unlearnable-examples", "availability-poisoning", "data-purification", "pytorch")
PAPER_URL = "https://arxiv.org/abs/2405.01460"
LICENSE = "mit"
PIPELINE_TAG = "image-to-image"

# ----------------------------------------------------------------------------- top-level config.json

FORMAT_VERSION = 1
_PURIFIER_TYPES = {"format_version": (int,), "batch_size": (int,), "sample": (bool,), "seed": (int, type(None))}


def purifier_config(*, batch_size: int, sample: bool, seed: int | None) -> dict[str, Any]:
    """The top-level ``config.json`` of a saved purifier."""
    return {"format_version": FORMAT_VERSION, "batch_size": batch_size, "sample": sample, "seed": seed}


def check_purifier_config(config: Any, source: str) -> None:
    """Reject a top-level ``config.json`` with unknown keys, wrong types or an unsupported format version."""
    if config is None:
        raise FileNotFoundError(
            f"{source} not found: not a DVAEPurify checkpoint (written by DVAEPurify.save_pretrained or push_to_hub); "
            "a single DVAE stage loads with DVAE.from_pretrained"
        )
    if not isinstance(config, Mapping):
        raise TypeError(f"{source}: expected a JSON object, got {type(config).__name__}")
    unknown = sorted(set(config) - set(_PURIFIER_TYPES))
    if unknown:
        raise ValueError(f"{source}: unknown key(s) {unknown}; expected {sorted(_PURIFIER_TYPES)}")
    if "format_version" not in config:
        raise ValueError(f"{source}: format_version is missing")
    for key, value in config.items():
        allowed = _PURIFIER_TYPES[key]
        if isinstance(value, bool) != (bool in allowed) or not isinstance(value, allowed):
            names = " or ".join("None" if kind is type(None) else kind.__name__ for kind in allowed)
            raise TypeError(f"{source}: {key} must be {names}, got {type(value).__name__} ({value!r})")
    if config["format_version"] != FORMAT_VERSION:
        raise ValueError(
            f"{source}: format_version {config['format_version']} is not supported by this dvae-transform "
            f"(it reads version {FORMAT_VERSION}); upgrade dvae-transform"
        )
    if "batch_size" in config and config["batch_size"] <= 0:
        raise ValueError(f"{source}: batch_size must be positive, got {config['batch_size']}")


def read_json(path: str | os.PathLike) -> Any:
    """A JSON file's content; a missing or malformed file raises an error naming it."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path} not found: the purifier folder is incomplete")
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as error:
        raise ValueError(f"{path} is not valid JSON: {error}") from None


# ----------------------------------------------------------------------------- registry


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
        attack: the poison (``dvae_transform.attacks``) applied to its training set.
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


# ----------------------------------------------------------------------------- model card


@dataclass(frozen=True)
class AttackResult:
    """Clean-test accuracy of a victim trained on a training set poisoned with ``attack``.

    ``poisoned``: trained on the poisoned images as they are; ``purified``: on this purifier's output.
    """

    attack: str
    poisoned: float
    purified: float

    def __post_init__(self) -> None:
        if not isinstance(self.attack, str) or not self.attack:
            raise TypeError(f"AttackResult attack must be an attack name, got {self.attack!r}")
        for key in ("poisoned", "purified"):
            value = getattr(self, key)
            if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0 <= value <= 1:
                raise ValueError(f"AttackResult {key} must be an accuracy in [0, 1], got {value!r}")


def _template() -> str:
    return resources.files("dvae_transform").joinpath("templates/model_card.md").read_text(encoding="utf-8")


def render_model_card(
    purifier: DVAEPurify,
    base: ModelCardData,
    *,
    repo_id: str | None = None,
    datasets: Sequence[str] = (),
    training_data: str | None = None,
    attack: str | None = None,
    recipe: Mapping[str, Any] | None = None,
    eval_data: str | None = None,
    results: Sequence[AttackResult] = (),
    clean_accuracy: float | None = None,
) -> ModelCard:
    """The model card of ``purifier``; ``base`` holds the library-wide metadata (library name, tags, license).

    Args:
        repo_id: the repo the card describes (used in the usage snippet).
        datasets: Hub dataset ids of the training data (card metadata; needed for ``model-index``).
        training_data: one line describing the training images.
        attack: the poison applied to the training set the purifier was fitted on.
        recipe: training settings, shown as a table.
        eval_data: the clean test images the victim is scored on (default: the first of ``datasets``).
        results: victim accuracies per evaluated attack (``model-index`` metrics when ``datasets`` is given).
        clean_accuracy: the victim's accuracy when trained on clean images, for reference.
    """
    if clean_accuracy is not None and not (isinstance(clean_accuracy, (int, float)) and 0 <= clean_accuracy <= 1):
        raise ValueError(f"clean_accuracy must be an accuracy in [0, 1], got {clean_accuracy!r}")
    if any(not isinstance(result, AttackResult) for result in results):
        raise TypeError("results must be AttackResult records")
    datasets = [datasets] if isinstance(datasets, str) else list(datasets)
    model_name = repo_id.split("/")[-1] if repo_id else "dvae-purifier"
    eval_results = [
        EvalResult(
            task_type="image-classification",
            dataset_type=datasets[0],
            dataset_name=eval_data or datasets[0],
            metric_type="accuracy",
            metric_name=f"victim accuracy after D-VAE purification ({result.attack} poison)",
            metric_value=round(result.purified, 4),
        )
        for result in results
        if datasets
    ]
    data = ModelCardData(
        **base.to_dict(),
        datasets=datasets or None,
        model_name=model_name if eval_results else None,
        eval_results=eval_results or None,
        poisoning_attack=attack,
        evaluated_attacks=[result.attack for result in results] or None,
    )
    return ModelCard.from_template(
        data,
        template_str=_template(),
        title=model_name,
        repo_id=repo_id or "path/to/this/folder",
        in_channels=purifier.in_channels,
        image_size=purifier.image_size,
        num_classes=purifier.num_classes,
        training_data=training_data,
        attack=attack,
        recipe=dict(recipe or {}),
        eval_data=eval_data,
        results=list(results),
        clean_accuracy=clean_accuracy,
        paper_url=PAPER_URL,
        format_version=FORMAT_VERSION,
    )
