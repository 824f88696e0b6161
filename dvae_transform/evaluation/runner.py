"""The benchmark's cells: poison a dataset's training split, defend it, train the victim, score it.

For every attack and seed the training split is poisoned once; each defense (:mod:`.defenses`)
purifies it, a victim classifier (:mod:`.victims`) is trained on the result, and the cell is that
victim's accuracy on the clean test split. A ``clean`` row (no attack) gives the ceiling. A cell
whose defense is a fitted or saved D-VAE also records stage 1's diagnostics (:mod:`.diagnostics`).
Attacks, fits, purification and victims all run on one device (:func:`on_device`).
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import os
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import torch
from accelerate.state import AcceleratorState, PartialState

from ..config import resolve_config
from ..shortcut import check_shortcut
from ..transforms import DVAEPurify
from .attacks import make_poison
from .baselines import BitDepthReduction
from .datasets import BenchData
from .defenses import JPEG_QUALITY, DefenseContext, build_defense
from .diagnostics import stage1_diagnostics
from .mnist import MNIST_ATTACK_SETTINGS
from .results import Results, Samples
from .victims import VictimSettings, accuracy, train_victim

CLEAN = "clean"
QUICK_SIZES = (64, 64)  # train / test images
QUICK_VICTIM_EPOCHS = 1
QUICK_FIT = {"epochs": 1, "width": 8, "latent_dim": 8}
SUBSET_SEED = 0  # --train / --test keep the first images of this seeded permutation
SAMPLE_CLASSES = 4  # the sample figure shows one training image of each of the first classes


def attack_settings(data_name: str) -> dict[str, dict[str, Any]]:
    """The attacks' keyword arguments on dataset ``data_name``: MNIST's own, else the published defaults."""
    return dict(MNIST_ATTACK_SETTINGS) if data_name == "mnist" else {}


def fit_overrides(quick: bool, epochs: int | None) -> dict[str, Any]:
    """The fit settings that differ from the preset's."""
    overrides = dict(QUICK_FIT) if quick else {}
    if epochs is not None:
        overrides["epochs"] = epochs
    return overrides


def run_settings(preset: str, overrides: dict[str, Any], data: BenchData, victim: VictimSettings, victim_epochs: int,
                 *, warm_start: Path | None) -> dict[str, Any]:
    """What every cell depends on besides (attack, defense, seed); a resumed or merged run must match it."""
    fit = dataclasses.asdict(resolve_config(preset, **overrides))
    fit.pop("seed")
    return json.loads(json.dumps({
        "data": {
            "name": data.name,
            "num_train": len(data.train_images),
            "num_test": len(data.test_images),
            "image_shape": list(data.train_images.shape[1:]),
            "num_classes": data.num_classes,
            "subset_seed": SUBSET_SEED,
        },
        "preset": preset,
        "fit": fit,
        "victim": dataclasses.asdict(victim),
        "victim_epochs": victim_epochs,
        "attack_settings": attack_settings(data.name),
        "jpeg_quality": JPEG_QUALITY,
        "bitdepth_bits": BitDepthReduction().bits,
        "warm_start": None if warm_start is None else str(warm_start.resolve()),
    }))


@contextlib.contextmanager
def on_device(device: str | torch.device) -> Iterator[torch.device]:
    """Run the benchmark on ``device``: the attacks, purification and victims get it as an argument;
    Accelerate, which places the D-VAE and plain-VAE fits, reads it from ``ACCELERATE_TORCH_DEVICE``.

    A single-process Accelerate state left by an earlier fit on another device is reset.
    """
    device = torch.device(device)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ValueError(f"--device {device}: no CUDA device is available")
    state = PartialState._shared_state
    if state and state.get("device") != device:
        if state.get("num_processes", 1) > 1:
            raise ValueError(f"--device {device}: this process already runs a distributed launch on {state['device']}")
        AcceleratorState._reset_state(reset_partial_state=True)
    previous = os.environ.get("ACCELERATE_TORCH_DEVICE")
    os.environ["ACCELERATE_TORCH_DEVICE"] = str(device)
    try:
        yield device
    finally:
        if previous is None:
            os.environ.pop("ACCELERATE_TORCH_DEVICE")
        else:
            os.environ["ACCELERATE_TORCH_DEVICE"] = previous


def _poison(attack: str, data: BenchData, seed: int, device: torch.device) -> torch.Tensor:
    """The poisoned training split (on the CPU), computed on ``device``."""
    if attack == CLEAN:
        return data.train_images
    return make_poison(attack, data.train_images.to(device), data.train_labels, num_classes=data.num_classes,
                       seed=seed, **attack_settings(data.name).get(attack, {})).cpu()


def _sample_indices(labels: torch.Tensor) -> torch.Tensor:
    """The first image of each of the first ``SAMPLE_CLASSES`` classes present."""
    return torch.stack([(labels == label).nonzero()[0, 0] for label in labels.unique()[:SAMPLE_CLASSES]])


def _defend(defense: str, data: BenchData, poisoned: torch.Tensor, seed: int,
            context: DefenseContext) -> tuple[torch.Tensor, dict[str, Any]]:
    """The purified training split and the cell's record: the defense's wall time and, for D-VAE, diagnostics."""
    labels = data.train_labels
    started = time.perf_counter()
    purifier = build_defense(defense, poisoned, labels, seed, context)
    purified = purifier.purify(poisoned, labels).cpu()
    record: dict[str, Any] = {"defense_seconds": time.perf_counter() - started}
    record["check"] = {
        "intrinsic": check_shortcut(purified, labels, seed=seed).to_dict(),
        "clean": check_shortcut(purified, labels, clean=(data.test_images, data.test_labels), seed=seed).to_dict(),
    }
    if isinstance(purifier, DVAEPurify):
        record["diagnostics"] = stage1_diagnostics(purifier, data.train_images, poisoned, purified, labels)
    return purified, record


def run_cells(attacks: list[str], defenses: list[str], seeds: list[int], data: BenchData, results: Results,
              samples: Samples, context: DefenseContext, *, victim: VictimSettings, device: torch.device) -> None:
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
            started = time.perf_counter()
            poisoned = _poison(attack, data, seed, device)
            results.add_poison_time(attack, seed, time.perf_counter() - started)
            if attack != CLEAN:
                print(f"poisoned {attack} (seed {seed}) in {time.perf_counter() - started:.1f} s", flush=True)
            if seed == seeds[0] and attack != CLEAN:
                samples.add(attack, "poisoned", poisoned[shown])
            for defense in pending:
                purified, record = _defend(defense, data, poisoned, seed, context)
                started = time.perf_counter()
                model = train_victim(purified, data.train_labels, num_classes=data.num_classes, victim=victim,
                                     epochs=victim_epochs, seed=seed, device=device)
                record["victim_seconds"] = time.perf_counter() - started
                record["accuracy"] = accuracy(model, data.test_images, data.test_labels)
                results.add(attack, defense, seed, **record)
                if seed == seeds[0] and defense != "none":
                    samples.add(attack, defense, purified[shown])
                done += 1
                print(f"[{done}/{len(todo)}] {attack} / {defense} / seed {seed}: accuracy {record['accuracy']:.3f} "
                      f"(defense {record['defense_seconds']:.1f} s, victim {record['victim_seconds']:.1f} s)",
                      flush=True)
