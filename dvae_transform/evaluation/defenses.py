"""The defenses a benchmark compares, by name: a registry like :data:`~.attacks.ATTACKS`.

A defense builds a :class:`~dvae_transform.transforms.Defense` for one poisoned training set: a
baseline as it is, D-VAE fitted on the poisoned set itself, or D-VAE started from saved weights.
The benchmark then calls ``purifier.purify(images, labels)`` on every defense alike.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import torch

from ..purify import Defense
from ..transforms import DVAEPurify
from .baselines import BitDepthReduction, JPEGCompression, NoDefense, PlainVAE

JPEG_QUALITY = 10


@dataclass
class DefenseContext:
    """What a defense may use besides the poisoned set: fit settings, the class count and saved weights.

    Attributes:
        num_classes: classes of the labels.
        fit_options: ``DVAEPurify.fit`` / ``PlainVAE.fit`` options (preset and overrides) besides the seed.
        warm_start: a saved purifier folder, loaded once, for the defenses that start from weights.
        validation: clean labelled images ``(images, labels)`` a fit's shortcut check compares with.
    """

    num_classes: int
    fit_options: dict[str, Any] = field(default_factory=dict)
    warm_start: str | os.PathLike | None = None
    validation: tuple[torch.Tensor, torch.Tensor] | None = None
    _saved: DVAEPurify | None = field(default=None, repr=False)

    def saved_purifier(self) -> DVAEPurify:
        """The purifier at ``warm_start`` (loaded on first use)."""
        if self.warm_start is None:
            raise ValueError("this defense needs saved weights to start from (warm_start)")
        if self._saved is None:
            self._saved = DVAEPurify.from_pretrained(self.warm_start)
        return self._saved

    def fit(self, images: torch.Tensor, labels: torch.Tensor, seed: int, **options: Any) -> DVAEPurify:
        """D-VAE fitted on the poisoned set with this context's settings and ``seed``."""
        return DVAEPurify.fit((images, labels), self.num_classes, **self.fit_options, seed=seed,
                              validation=self.validation, **options)


Build = Callable[[torch.Tensor, torch.Tensor, int, DefenseContext], Defense]


@dataclass(frozen=True)
class Defense:
    """One entry of :data:`DEFENSES`.

    Attributes:
        build: ``build(images, labels, seed, context)`` gives the purifier for one poisoned training set.
        description: one line for reports, formatted with the run's settings (and ``recipe``, the fit
            settings in words).
        needs_weights: whether it starts from ``context.warm_start``.
    """

    build: Build
    description: str
    needs_weights: bool = False


DEFENSES: dict[str, Defense] = {
    "none": Defense(lambda images, labels, seed, context: NoDefense(), "none = the poisoned set as it is"),
    "jpeg": Defense(
        lambda images, labels, seed, context: JPEGCompression(quality=JPEG_QUALITY),
        "jpeg = JPEG quality {jpeg_quality}",
    ),
    "bitdepth": Defense(
        lambda images, labels, seed, context: BitDepthReduction(), "bitdepth = {bitdepth_bits}-bit reduction"
    ),
    "plain_vae": Defense(
        lambda images, labels, seed, context: PlainVAE.fit(images, **context.fit_options, seed=seed),
        "plain_vae = the D-VAE without its perturbation branch (one stage, KL bound 1, same recipe)",
    ),
    "dvae": Defense(
        lambda images, labels, seed, context: context.fit(images, labels, seed),
        "dvae = two-stage D-VAE fitted on the poisoned set ({fit_summary})",
    ),
    "dvae_warm": Defense(
        lambda images, labels, seed, context: context.fit(images, labels, seed, init=context.saved_purifier()),
        "dvae_warm = dvae warm-started from `{warm_start}`",
        needs_weights=True,
    ),
    "dvae_zero_shot": Defense(
        lambda images, labels, seed, context: context.saved_purifier(),
        "dvae_zero_shot = `{warm_start}` applied as it is (no fit)",
        needs_weights=True,
    ),
}
NEEDS_WEIGHTS = tuple(name for name, defense in DEFENSES.items() if defense.needs_weights)


def build_defense(name: str, images: torch.Tensor, labels: torch.Tensor, seed: int,
                  context: DefenseContext) -> Defense:
    """The purifier of the defense registered as ``name`` for this poisoned training set."""
    if name not in DEFENSES:
        raise ValueError(f"unknown defense {name!r}; known defenses: {', '.join(DEFENSES)}")
    return DEFENSES[name].build(images, labels, seed, context)


def describe(name: str, settings: dict[str, Any]) -> str:
    """The report line of defense ``name`` for a run with ``settings``."""
    fit = settings["fit"]
    fit_summary = (f"preset `{settings['preset']}`: width {fit['width']}, latent {fit['latent_dim']}, "
                   f"{fit['epochs']} epoch(s) per stage, batch {fit['batch_size']}, lr {fit['lr']}")
    return DEFENSES[name].description.format(**settings, fit_summary=fit_summary)
