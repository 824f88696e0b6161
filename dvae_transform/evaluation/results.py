"""The benchmark's results store: ``results.json`` (one record per finished cell) and the sample images.

Every finished cell is written at once (atomically), so a killed run keeps its work and a resumed
run skips it.
"""

from __future__ import annotations

import json
from datetime import datetime
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file, save

from ..files import atomic_write

RESULTS_FILE, SAMPLES_FILE = "results.json", "samples.safetensors"


def differences(stored: dict[str, Any], settings: dict[str, Any], prefix: str = "") -> list[str]:
    """The settings that differ, as ``key.sub: stored value there, new value now`` (nested dicts by key)."""
    found = []
    for key in sorted(set(stored) | set(settings)):
        old, new = stored.get(key), settings.get(key)
        if isinstance(old, dict) and isinstance(new, dict):
            found += differences(old, new, f"{prefix}{key}.")
        elif old != new:
            found.append(f"{prefix}{key}: {old!r} there, {new!r} now")
    return found


def now() -> str:
    """The current local time, ISO format to the second."""
    return datetime.now().astimezone().isoformat(timespec="seconds")


class Results:
    """``results.json``: settings, one record per finished cell, and one record per run."""

    def __init__(self, path: Path, settings: dict[str, Any], *, resume: bool) -> None:
        self.path = path
        self.data: dict[str, Any] = {"settings": settings, "cells": {}, "poison_seconds": {}, "runs": []}
        if resume and path.is_file():
            stored = json.loads(path.read_text())
            if stored["settings"] != settings:
                raise ValueError(
                    f"--resume: {path} was made with other settings "
                    f"({'; '.join(differences(stored['settings'], settings))}); use the same options or another --out"
                )
            self.data = stored

    @staticmethod
    def key(attack: str, defense: str, seed: int) -> str:
        return f"{attack}/{defense}/{seed}"

    def cell(self, attack: str, defense: str, seed: int) -> dict[str, Any] | None:
        return self.data["cells"].get(self.key(attack, defense, seed))

    def start_run(self, command: str, device: str) -> None:
        """Record a new run of ``command``, computing its cells on ``device`` (in words)."""
        self.data["runs"].append({"started": now(), "command": command, "device": device, "computed": 0})
        self.save()

    def add(self, attack: str, defense: str, seed: int, **record: Any) -> None:
        record.update(attack=attack, defense=defense, seed=seed, finished=now())
        self.data["cells"][self.key(attack, defense, seed)] = record
        self.data["runs"][-1]["computed"] += 1
        self.save()

    def merge(self, other: Path) -> None:
        """Take the cells of another results file made with the same settings."""
        stored = json.loads((other / RESULTS_FILE).read_text())
        if stored["settings"] != self.data["settings"]:
            changed = "; ".join(differences(stored["settings"], self.data["settings"]))
            raise ValueError(f"--merge: {other} was made with other settings ({changed}); merge runs of one grid")
        for name in ("cells", "poison_seconds"):
            self.data[name].update(stored[name])
        self.data["runs"].extend(stored["runs"])
        self.save()

    def add_poison_time(self, attack: str, seed: int, seconds: float) -> None:
        self.data["poison_seconds"][f"{attack}/{seed}"] = seconds

    def save(self) -> None:
        atomic_write(self.path, json.dumps(self.data, indent=1).encode())


class Samples:
    """A few images of every input and output, kept in ``samples.safetensors`` for the image grid."""

    def __init__(self, path: Path, *, resume: bool) -> None:
        self.path = path
        self.tensors = load_file(str(path)) if resume and path.is_file() else {}

    def add(self, row: str, column: str, images: torch.Tensor) -> None:
        self.tensors[f"{row}/{column}"] = images.float().contiguous()
        atomic_write(self.path, save(self.tensors))

    def merge(self, other: Path) -> None:
        if (other / SAMPLES_FILE).is_file():
            for key, value in load_file(str(other / SAMPLES_FILE)).items():
                self.add(*key.split("/", 1), value)

    def grid(self) -> dict[tuple[str, str], torch.Tensor]:
        return {tuple(key.split("/", 1)): value for key, value in self.tensors.items()}
