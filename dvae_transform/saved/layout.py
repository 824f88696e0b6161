"""The saved layout of a purifier (local folder or Hub repo) and the checks of its configs.

A saved purifier holds::

    config.json                 format version and purification defaults (:class:`PurifierConfig`)
    README.md                   model card (:mod:`.card`)
    stage1/config.json          DVAE constructor arguments of each stage (:class:`~dvae_transform.model.DVAEConfig`)
    stage1/model.safetensors    its weights (safetensors only: pickle files are never read)
    stage2/...
    training.json               a fitted purifier's fit settings and per-epoch metrics (``DVAEPurify.history``)

Every config is checked (JSON types, unknown keys, types, values) before any tensor is read.
"""

from __future__ import annotations

import dataclasses
import json
import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from huggingface_hub import constants, snapshot_download

from ..config import SUBTRACTION_RULES
from ..model import DVAE, DVAEConfig
from ..purify import MAX_BATCH_SIZE
from ..validation import check_choice, check_int, check_type, read_config
from ..weights import WEIGHTS_NAME, HubDownload

FORMAT_VERSION = 1
STAGE_FOLDERS = ("stage1", "stage2")
CONFIG_NAME = constants.CONFIG_NAME
TRAINING_NAME = "training.json"


@dataclass(frozen=True)
class PurifierConfig:
    """The top-level ``config.json``: format version and the purifier's defaults (see ``DVAEPurify``)."""

    format_version: int
    batch_size: int | None = None  # None: derived from the image size (``DVAEPurify.micro_batch``)
    sample: bool = False
    seed: int | None = None
    subtract: str = "raw"  # a file without the key was written when stages always subtracted the raw p

    def __post_init__(self) -> None:
        check_int(self.format_version, "format_version")
        if self.format_version != FORMAT_VERSION:
            raise ValueError(
                f"format_version {self.format_version} is not supported by this dvae-transform "
                f"(it reads version {FORMAT_VERSION}); upgrade dvae-transform"
            )
        if self.batch_size is not None:
            check_int(self.batch_size, "batch_size", low=1, high=MAX_BATCH_SIZE)
        check_type(self.sample, "sample", bool)
        check_type(self.seed, "seed", int, type(None))
        check_choice(self.subtract, "subtract", SUBTRACTION_RULES)


def save_purifier(folder: Path, stages: Sequence[DVAE], *, batch_size: int | None, sample: bool,
                  seed: int | None, subtract: str) -> None:
    """Write the layout above, except the model card, into ``folder``; each stage as the network saves itself."""
    config = dataclasses.asdict(PurifierConfig(FORMAT_VERSION, batch_size, sample, seed, subtract))
    (folder / CONFIG_NAME).write_text(json.dumps(config, indent=2))
    for name, model in zip(STAGE_FOLDERS, stages):
        (folder / name).mkdir(exist_ok=True)
        model._save_pretrained(folder / name)  # config.json and model.safetensors (SafetensorsHubMixin)


def fetch_purifier(model_id: str, hub: HubDownload) -> Path:
    """The folder holding the purifier at ``model_id`` (the folder itself, or its Hub repo's configs and
    safetensors weights fetched in one snapshot through the Hugging Face cache), its configs checked
    (:func:`check_purifier`)."""
    root = Path(model_id)
    if not root.is_dir():
        stage_files = (f"{folder}/{name}" for folder in STAGE_FOLDERS for name in (CONFIG_NAME, WEIGHTS_NAME))
        root = Path(snapshot_download(model_id, **hub.keywords(), allow_patterns=[CONFIG_NAME, *stage_files]))
    check_purifier(root, model_id)
    return root


def check_purifier(root: Path, model_id: str) -> None:
    """Check every config of the purifier in ``root`` (fetched from ``model_id``), before any weights are read.

    Errors name the files under ``model_id``.
    """
    source = os.path.join(model_id, CONFIG_NAME)
    if not (root / CONFIG_NAME).is_file():
        raise FileNotFoundError(
            f"{source} not found: not a saved DVAEPurify (written by DVAEPurify.save_pretrained or push_to_hub); "
            "a single DVAE stage loads with DVAE.from_pretrained"
        )
    read_config(PurifierConfig, root / CONFIG_NAME, source)
    for folder in STAGE_FOLDERS:
        read_config(DVAEConfig, root / folder / CONFIG_NAME, os.path.join(model_id, folder, CONFIG_NAME),
                    missing="the purifier folder is incomplete")


def load_stages(root: Path) -> list[DVAE]:
    """Both stages of the purifier in the folder ``root`` (checked by :func:`check_purifier`)."""
    return [DVAE.from_pretrained(root / folder) for folder in STAGE_FOLDERS]


def save_training(folder: Path, fit_config: Any, history: list[dict[str, float]],
                  checks: dict[str, dict[str, Any]] | None = None) -> None:
    """Write ``training.json``: the fit's settings (a ``FitConfig`` or None), history and shortcut checks (their
    ``to_dict()``), when there is a history."""
    if history:
        config = None if fit_config is None else dataclasses.asdict(fit_config)
        record = {"config": config, "history": history, "checks": checks or {}}
        (folder / TRAINING_NAME).write_text(json.dumps(record, indent=1))


def load_history(folder: Path) -> list[dict[str, float]]:
    """The history in ``folder``'s ``training.json`` (empty without one); a damaged file is a ``ValueError``."""
    path = folder / TRAINING_NAME
    if not path.is_file():
        return []
    try:
        history = json.loads(path.read_text())["history"]
    except (ValueError, KeyError, TypeError) as error:
        raise ValueError(f"{path}: not a training record ({error}); delete it or save the purifier again") from error
    if not isinstance(history, list) or not all(isinstance(record, dict) for record in history):
        raise ValueError(f"{path}: its history is not a list of records; delete it or save the purifier again")
    return history
