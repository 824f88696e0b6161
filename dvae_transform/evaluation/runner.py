"""The benchmark's cells: poison the embedded MNIST digits, defend, train the victim, score it.

For every attack and seed the training split is poisoned once; each defense (:mod:`.defenses`)
purifies it, a victim classifier (:mod:`.victims`) is trained on the result, and the cell is that
victim's accuracy on the clean test split. A ``clean`` row (no attack) gives the ceiling.
"""

from __future__ import annotations

import dataclasses
import functools
import json
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch

from ..config import resolve_config
from .attacks import make_poison
from .baselines import BitDepthReduction
from .defenses import JPEG_QUALITY, DefenseContext, build_defense
from .mnist import DigitSplit, load_mnist32
from .results import Results, Samples
from .victims import RECIPE, accuracy, train_victim

CLEAN = "clean"
NUM_CLASSES = 10
QUICK_SIZES = (64, 64)  # train / test images
QUICK_VICTIM_EPOCHS = 1
QUICK_FIT = {"epochs": 1, "width": 8, "latent_dim": 8}
SAMPLE_DIGITS = 4
# Budgets for MNIST where the published ones (tuned on CIFAR) barely hurt the victim: clamping at the black
# background and white strokes removes much of a perturbation, and the digits are learnt as fast as a shortcut.
MNIST_BUDGETS: dict[str, dict[str, float]] = {
    "classwise_noise": {"eps": 32 / 255},
    "autoregressive": {"l2": 3.0},
    "error_minimizing": {"eps": 32 / 255},
}


@functools.cache
def load_data(quick: bool) -> DigitSplit:
    """The embedded split (or the quick slice of it), parsed once per process."""
    data = load_mnist32()
    if not quick:
        return data
    train, test = QUICK_SIZES
    return DigitSplit(data.train_images[:train], data.train_labels[:train], data.test_images[:test],
                      data.test_labels[:test])


def fit_overrides(quick: bool, epochs: int | None) -> dict[str, Any]:
    """The fit settings that differ from the preset's."""
    overrides = dict(QUICK_FIT) if quick else {}
    if epochs is not None:
        overrides["epochs"] = epochs
    return overrides


def run_settings(preset: str, overrides: dict[str, Any], data: DigitSplit, *, quick: bool,
                 warm_start: Path | None) -> dict[str, Any]:
    """What every cell depends on besides (attack, defense, seed); a resumed run must match it."""
    fit = dataclasses.asdict(resolve_config(preset, **overrides))
    fit.pop("seed")
    return json.loads(json.dumps({
        "preset": preset,
        "fit": fit,
        "num_train": len(data.train_images),
        "num_test": len(data.test_images),
        "victim_epochs": QUICK_VICTIM_EPOCHS if quick else RECIPE.epochs,
        "jpeg_quality": JPEG_QUALITY,
        "attack_budgets": MNIST_BUDGETS,
        "bitdepth_bits": BitDepthReduction().bits,
        "warm_start": None if warm_start is None else str(warm_start.resolve()),
    }))


def _timed(function: Callable[..., Any], *args: Any, **kwargs: Any) -> tuple[Any, float]:
    started = time.perf_counter()
    result = function(*args, **kwargs)
    return result, time.perf_counter() - started


def _poison(attack: str, data: DigitSplit, seed: int) -> torch.Tensor:
    if attack == CLEAN:
        return data.train_images
    return make_poison(attack, data.train_images, data.train_labels, num_classes=NUM_CLASSES, seed=seed,
                       **MNIST_BUDGETS.get(attack, {}))


def _defend(defense: str, images: torch.Tensor, labels: torch.Tensor, seed: int,
            context: DefenseContext) -> torch.Tensor:
    return build_defense(defense, images, labels, seed, context).purify(images, labels)


def _sample_indices(labels: torch.Tensor) -> torch.Tensor:
    """The first image of each of the first ``SAMPLE_DIGITS`` classes."""
    return torch.stack([(labels == digit).nonzero()[0, 0] for digit in range(SAMPLE_DIGITS)])


def run_cells(attacks: list[str], defenses: list[str], seeds: list[int], data: DigitSplit, results: Results,
              samples: Samples, context: DefenseContext, *, device: str) -> None:
    """Compute every cell not yet in ``results``, saving each as soon as it is done."""
    victim_epochs = results.data["settings"]["victim_epochs"]
    shown = _sample_indices(data.train_labels)
    samples.add(CLEAN, "clean", data.train_images[shown])
    todo = [(a, s, d) for a in attacks for s in seeds for d in defenses if results.cell(a, d, s) is None]
    print(f"bench: {len(todo)} cell(s) to compute, {len(attacks) * len(seeds) * len(defenses) - len(todo)} done")
    done = 0
    for attack in attacks:
        for seed in seeds:
            pending = [d for d in defenses if results.cell(attack, d, seed) is None]
            if not pending:
                continue
            poisoned, seconds = _timed(_poison, attack, data, seed)
            results.add_poison_time(attack, seed, seconds)
            if attack != CLEAN:
                print(f"poisoned {attack} (seed {seed}) in {seconds:.1f} s", flush=True)
            if seed == seeds[0] and attack != CLEAN:
                samples.add(attack, "poisoned", poisoned[shown])
            for defense in pending:
                purified, defense_seconds = _timed(_defend, defense, poisoned, data.train_labels, seed, context)
                model, victim_seconds = _timed(train_victim, purified, data.train_labels, num_classes=NUM_CLASSES,
                                               epochs=victim_epochs, seed=seed, device=device)
                score = accuracy(model, data.test_images, data.test_labels)
                results.add(attack, defense, seed, accuracy=score, defense_seconds=defense_seconds,
                            victim_seconds=victim_seconds)
                if seed == seeds[0] and defense != "none":
                    samples.add(attack, defense, purified[shown])
                done += 1
                print(f"[{done}/{len(todo)}] {attack} / {defense} / seed {seed}: accuracy {score:.3f} "
                      f"(defense {defense_seconds:.1f} s, victim {victim_seconds:.1f} s)", flush=True)
