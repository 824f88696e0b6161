"""A fit that checks its output and fits again from another seed when a shortcut is left.

A D-VAE fit either separates the poison from the images or it does not, and which one happens depends
on the seed and on the CPU's rounding (BENCHMARKS.md, "Seeds"). :class:`Attempts` runs the two-stage fit,
checks its input and output with :func:`~dvae_transform.shortcut.check_fit`, and fits again from seed
``seed + k * RESTART_SEED_STRIDE`` while :func:`~dvae_transform.shortcut.purification_failed` says so.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Protocol

import torch
from accelerate import Accelerator

from ..config import FitConfig
from ..distributed import broadcast
from ..model import DVAE
from ..shortcut import ShortcutReport, check_fit, check_sample, purification_failed
from ..validation import check_int
from .loop import fit_two_stage

RESTART_SEED_STRIDE = 7919  # attempt k of a fit runs at seed + k * stride


class FittedPurifier(Protocol):
    """What :class:`Attempts` builds and fills in: ``DVAEPurify``."""

    history: list[dict[str, float]]
    fit_config: FitConfig | None
    checks: dict[str, ShortcutReport]
    attempts: int

    def purify(self, images: Any, labels: Any = None) -> Any: ...


def restart_folder(resume_dir: str | os.PathLike | None, attempt: int) -> Path | None:
    """Where attempt ``attempt`` of a fit keeps its resume state: the folder itself, then a sub-folder per restart."""
    if resume_dir is None:
        return None
    return Path(resume_dir) if attempt == 0 else Path(resume_dir) / f"restart-{attempt}"


class Attempts:
    """The attempts of one fit: same data, settings and start, one seed each."""

    def __init__(self, train_set: Any, config: FitConfig, accelerator: Accelerator, *, num_classes: int | None,
                 init: tuple[DVAE, DVAE] | None, resume_dir: str | os.PathLike | None, progress: bool,
                 compile: bool) -> None:
        self.train_set, self.config, self.accelerator = train_set, config, accelerator
        self.options = {"num_classes": num_classes, "init": init, "progress": progress, "compile": compile}
        self.resume_dir = resume_dir

    def fit(self, build: Any, attempt: int) -> FittedPurifier:
        """Attempt ``attempt``: a two-stage fit at its own seed, made into a purifier by ``build``."""
        config = self.config.replace(seed=self.config.seed + attempt * RESTART_SEED_STRIDE)
        result = fit_two_stage(self.train_set, config=config, accelerator=self.accelerator,
                               resume_dir=restart_folder(self.resume_dir, attempt), **self.options)
        purifier = build(result.stage1, result.stage2, subtract=config.subtract,
                         device=result.stage1.to_mu.weight.device)
        purifier.history, purifier.fit_config, purifier.checks = result.history, config, {}
        return purifier

    def check_sample(self) -> tuple[torch.Tensor, torch.Tensor]:
        """The images and labels the check looks at: :func:`~dvae_transform.shortcut.check_sample` of the set."""
        return next(self.train_set.batches([check_sample(self.train_set.labels)], torch.device("cpu")))

    def run(self, build: Any, *, check: bool, validation: Any, restarts: int) -> Any:
        """Fit until the check passes or ``restarts`` more attempts are spent; the passing attempt, else the one
        whose output the check found least learnable (with a warning)."""
        check_int(restarts, "restarts", low=0)
        fitted: list[FittedPurifier] = []
        # The check's sample is read before the fit: a streamed set's files are gone once it ends.
        sample = self.check_sample() if check else ()
        for attempt in range(restarts + 1):
            purifier = self.fit(build, attempt)
            fitted.append(purifier)
            if not check:
                break
            reports = check_fit(purifier.purify, *sample, validation=validation, seed=self.config.seed,
                                warn=attempt == restarts, log=self.accelerator.is_main_process)
            # Each process may hold another part of a streamed set: the main process's reports decide for all,
            # so that every process refits, or stops, together.
            purifier.checks = broadcast(self.accelerator, reports)
            if not purification_failed(purifier.checks):
                break
        if check and purification_failed(purifier.checks):
            purifier = min(fitted, key=lambda each: each.checks["output"].statistic or 0.0)
        purifier.attempts = len(fitted)
        return purifier
