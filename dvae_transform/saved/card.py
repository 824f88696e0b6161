"""The model card of a saved purifier, rendered from ``templates/model_card.md``."""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from importlib import resources
from typing import Any

from huggingface_hub import EvalResult, ModelCard, ModelCardData

from ..deprecation import renamed_keywords
from ..metadata import PAPER_URL
from ..validation import InputTypeError, check_number, check_type
from .layout import FORMAT_VERSION


@dataclass(frozen=True)
class AttackResult:
    """Clean-test accuracy of a victim trained on a training set poisoned with ``attack``.

    ``poisoned``: trained on the poisoned images as they are; ``purified``: on this purifier's output.
    """

    attack: str
    poisoned: float
    purified: float

    def __post_init__(self) -> None:
        check_type(self.attack, "AttackResult attack", str)
        if not self.attack:
            raise ValueError("AttackResult attack must be an attack name, got ''")
        for key in ("poisoned", "purified"):
            check_number(getattr(self, key), f"AttackResult {key}", low=0, high=1, kind="an accuracy")


def _template() -> str:
    return resources.files(__package__).joinpath("templates/model_card.md").read_text(encoding="utf-8")


@renamed_keywords(recipe="training_settings")
def render_model_card(
    base: ModelCardData,
    *,
    in_channels: int,
    image_size: int,
    num_classes: int,
    repo_id: str | None = None,
    datasets: Sequence[str] = (),
    training_data: str | None = None,
    attack: str | Sequence[str] | None = None,
    training_settings: Mapping[str, Any] | None = None,
    eval_data: str | None = None,
    results: Sequence[AttackResult] = (),
    clean_accuracy: float | None = None,
) -> ModelCard:
    """The model card of a purifier of ``in_channels x image_size x image_size`` images of ``num_classes`` classes.

    ``base`` holds the library-wide metadata (library name, tags, license). The other options are
    ``DVAEPurify.save_pretrained``'s ``model_card_kwargs``:

    Args:
        repo_id: the repo the card describes (used in the usage snippet).
        datasets: Hub dataset ids of the training data (card metadata; needed for ``model-index``).
        training_data: one line describing the training images.
        attack: the poison applied to the training set the purifier was fitted on, or the attacks of a mix
            (the training images split into equal seeded parts, one attack each).
        training_settings: the fit's settings (and final metrics), shown as a table.
        eval_data: the clean test images the victim is scored on (default: the first of ``datasets``).
        results: victim accuracies per evaluated attack (``model-index`` metrics when ``datasets`` is given).
        clean_accuracy: the victim's accuracy when trained on clean images, for reference.
    """
    if clean_accuracy is not None:
        check_number(clean_accuracy, "clean_accuracy", low=0, high=1, kind="an accuracy")
    if any(not isinstance(result, AttackResult) for result in results):
        raise InputTypeError("results must be AttackResult records")
    datasets = [datasets] if isinstance(datasets, str) else list(datasets)
    attacks = [attack] if isinstance(attack, str) else list(attack or ())
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
        poisoning_attack=attacks[0] if len(attacks) == 1 else attacks or None,
        evaluated_attacks=[result.attack for result in results] or None,
    )
    return ModelCard.from_template(
        data,
        template_str=_template(),
        title=model_name,
        repo_id=repo_id or "path/to/this/folder",
        in_channels=in_channels,
        image_size=image_size,
        num_classes=num_classes,
        training_data=training_data,
        attacks=attacks,
        training_settings=dict(training_settings or {}),
        eval_data=eval_data,
        results=list(results),
        clean_accuracy=clean_accuracy,
        paper_url=PAPER_URL,
        format_version=FORMAT_VERSION,
    )


def training_summary(fit_config: Any, history: Sequence[Mapping[str, Any]],
                     checks: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """A fit's settings (a ``FitConfig`` or None), each stage's last epoch and its shortcut checks (reports by
    stage): the model card's training table."""
    summary: dict[str, Any] = {} if fit_config is None else dataclasses.asdict(fit_config)
    for stage, report in (checks or {}).items():
        summary[f"shortcut check of the {stage}"] = str(report)
    for record in history:  # a stage's last record wins
        summary[f"stage {record['stage']} final epoch"] = (
            f"{record['epoch']}: loss {record['loss']:.4f}, kl {record['kl']:.2f}, psnr {record['psnr']:.2f} dB"
        )
    return summary
