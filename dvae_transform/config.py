"""Training recipes: the published settings and a CPU-friendly one."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any

from .model import EMBEDDING_TARGETS
from .validation import InputTypeError, check_choice, check_int, check_number, check_type, reported_as

SUBTRACTION_RULES = ("effect", "raw")  # what a stage subtracts: see purify.perturbation_estimate
DEFAULT_SUBTRACTION = "raw"  # as published; "effect" is measured in BENCHMARKS.md (issue #16)


@dataclass(frozen=True)
class FitConfig:
    """Everything that decides a two-stage D-VAE fit.

    Attributes:
        width: stem width of both networks (64 in the paper).
        latent_dim: latent channels (256 in the paper).
        epochs: epochs per stage.
        batch_size: images per optimisation step (over all processes).
        lr: Adam learning rate, annealed to 0 with a cosine schedule.
        grad_clip: gradient-norm clip.
        kl_bounds: KL bound of stage 1 (tight rate) and stage 2.
        warmup_fraction: share of each stage's epochs before the perturbation-power
            penalty switches on (10 of 60 in the paper).
        embedding_target: where the class embedding enters the perturbation branch
            (``"latent"``, as published, or ``"stem"``).
        subtract: what stage 1's output, the next stage's training set, subtracts and what the fitted
            purifier subtracts (:func:`~dvae_transform.purify.perturbation_estimate`): ``"raw"``, the
            perturbation branch's output, as published, or ``"effect"``, its effect inside the objective's clamp.
        zero_init_perturbation: start the perturbation decoder's last convolution at zero, so that the branch
            begins as ``p = 0`` (published: PyTorch's default initialisation, under which the N(0, 1) class
            embedding makes ``p`` large and ``clamp(x_rec + p)`` saturate from the first step).
        mixed_precision: ``"no"``, ``"fp16"`` or ``"bf16"``, passed to Accelerate.
        seed: seeds initialisation, shuffling and latent sampling.
    """

    width: int = 64
    latent_dim: int = 256
    epochs: int = 60
    batch_size: int = 128
    lr: float = 5e-3
    grad_clip: float = 5.0
    kl_bounds: tuple[float, float] = (1.0, 3.0)
    warmup_fraction: float = 1 / 6
    embedding_target: str = "latent"
    subtract: str = DEFAULT_SUBTRACTION
    zero_init_perturbation: bool = False
    mixed_precision: str = "no"
    seed: int = 0

    def replace(self, **overrides: Any) -> FitConfig:
        """A copy with ``overrides`` applied; unknown names raise ``TypeError``."""
        known = {field.name for field in dataclasses.fields(self)}
        unknown = sorted(set(overrides) - known)
        if unknown:
            raise InputTypeError(f"unknown fit setting(s) {unknown}; known settings: {sorted(known)}")
        return dataclasses.replace(self, **overrides)

    def __post_init__(self) -> None:
        with reported_as("fit settings"):
            for name in ("width", "latent_dim", "epochs", "batch_size"):
                check_int(getattr(self, name), name, low=1)
            check_number(self.lr, "lr", positive=True)
            check_number(self.grad_clip, "grad_clip", positive=True)
            check_type(self.kl_bounds, "kl_bounds", tuple, list)
            if len(self.kl_bounds) != 2:
                raise ValueError(f"kl_bounds needs one bound per stage, got {self.kl_bounds!r}")
            for stage, bound in enumerate(self.kl_bounds, 1):
                check_number(bound, f"kl_bounds (stage {stage})", positive=True)
            check_number(self.warmup_fraction, "warmup_fraction", low=0, high=1)
            check_choice(self.mixed_precision, "mixed_precision", ("no", "fp16", "bf16"))
            check_choice(self.subtract, "subtract", SUBTRACTION_RULES)
            check_choice(self.embedding_target, "embedding_target", EMBEDDING_TARGETS)
            check_type(self.zero_init_perturbation, "zero_init_perturbation", bool)
            check_type(self.seed, "seed", int)


PRESETS: dict[str, FitConfig] = {
    # The paper's CIFAR-10 settings (Yu et al., ICML 2024; README.md, "Training presets").
    "paper": FitConfig(),
    # The cheapest settings found that still purify: a quarter of the width, 8 epochs per stage
    # (sweep in BENCHMARKS.md). Same losses, bounds, optimiser, schedule and start as "paper"; the zero start of
    # the perturbation branch (zero_init_perturbation) was measured over seeds and not adopted (BENCHMARKS.md, "Seeds").
    "fast": FitConfig(width=16, latent_dim=64, epochs=8, batch_size=32),
}


def resolve_config(preset: str | FitConfig = "fast", **overrides: Any) -> FitConfig:
    """A preset by name (or a given config) with ``overrides`` applied."""
    if isinstance(preset, FitConfig):
        return preset.replace(**overrides)
    if preset not in PRESETS:
        raise ValueError(f"unknown preset {preset!r}; choose one of {sorted(PRESETS)}")
    return PRESETS[preset].replace(**overrides)
