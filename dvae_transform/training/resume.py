"""Resume state: one atomic safetensors file per stage, and the record of what a resume_dir fits.

``resume_dir/fit.json`` records what was fitted (settings, class count, data fingerprint, warm start,
process count); a later fit into the same folder must match it. ``stage<k>/last.safetensors`` holds all a
resume of stage ``k`` needs after its last finished epoch (weights, optimizer and scheduler state, each
process's generator state, the epoch), written in one :func:`~dvae_transform.files.atomic_write`, so a kill
leaves the previous epoch's file or the new one. A stage whose file holds its last epoch is finished.
Nothing is ever unpickled.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError, safe_open
from safetensors.torch import save

from ..files import atomic_write

FORMAT = "dvae_transform.fit-checkpoint/2"
RECORD = "fit.json"
STATE = "last.safetensors"


class ResumeError(ValueError):
    """A resume_dir that cannot be resumed: unreadable files, or a fit of other data or settings."""


def _read_json(path: Path) -> Any:
    try:
        return json.loads(path.read_text())
    except (OSError, UnicodeDecodeError, ValueError) as error:
        raise ResumeError(
            f"{path} is not a readable fit record ({error}); delete the resume folder {path.parent} to start over"
        ) from None


def check_record(root: Path, record: dict[str, Any]) -> None:
    """Write ``record`` as ``root/fit.json``, or check it against the one already there.

    Raises:
        ResumeError: naming the first entry (settings, classes, data, warm start, processes) that differs.
    """
    path = root / RECORD
    if not path.is_file():
        if (root / "fit_config.json").is_file():
            raise ResumeError(f"resume_dir {root} was written by an older version; use a new folder")
        root.mkdir(parents=True, exist_ok=True)
        atomic_write(path, json.dumps({"format": FORMAT, **record}, indent=2).encode())
        return
    stored = _read_json(path)
    if not isinstance(stored, dict) or stored.get("format") != FORMAT:
        raise ResumeError(f"{path} is not a fit record of this version; use a new resume_dir")
    wanted = json.loads(json.dumps(record))
    names = {"config": "other settings", "num_classes": "another class count", "data": "other data",
             "init": "another warm start", "processes": "another number of processes"}
    for key, what in names.items():
        if stored.get(key) != wanted.get(key):
            raise ResumeError(
                f"resume_dir {root} holds a fit of {what} ({key}: {stored.get(key)!r}, this fit: "
                f"{wanted.get(key)!r}); use a new directory, or the same data, settings and number of processes"
            )


def _optimizer_tensors(optimizer: torch.optim.Optimizer) -> tuple[dict[str, torch.Tensor], list[dict[str, Any]]]:
    state = optimizer.state_dict()
    tensors = {
        f"optimizer.{index}.{name}": value.detach().cpu().contiguous()
        for index, entries in state["state"].items()
        for name, value in entries.items()
    }
    return tensors, state["param_groups"]


def _optimizer_state(tensors: dict[str, torch.Tensor], groups: list[dict[str, Any]]) -> dict[str, Any]:
    state: dict[int, dict[str, torch.Tensor]] = {}
    for key, value in tensors.items():
        if key.startswith("optimizer."):
            _, index, name = key.split(".", 2)
            state.setdefault(int(index), {})[name] = value
    return {"state": state, "param_groups": groups}


def _match_parameter_layout(optimizer: torch.optim.Optimizer) -> None:
    """Give loaded optimizer states the memory layout of their parameter (the model may be channels-last)."""
    for group in optimizer.param_groups:
        for parameter in group["params"]:
            state = optimizer.state.get(parameter, {})
            for name, value in state.items():
                if value.shape == parameter.shape:
                    state[name] = torch.empty_like(parameter, dtype=value.dtype).copy_(value)


class ResumeState:
    """The per-epoch resume state of one stage under ``root/stage<k>/`` (none when ``root`` is None)."""

    def __init__(self, root: Path | None, stage: int) -> None:
        self.path = None if root is None else root / f"stage{stage}" / STATE

    def save(self, model: torch.nn.Module, optimizer: torch.optim.Optimizer, scheduler: Any,
             generator_states: list[torch.Tensor], epoch: int) -> None:
        """Write the state after ``epoch`` (0-based) in one atomic file; ``generator_states``: one per process."""
        if self.path is None:
            return
        tensors = {f"model.{name}": value.detach().cpu().contiguous() for name, value in model.state_dict().items()}
        optimizer_tensors, groups = _optimizer_tensors(optimizer)
        tensors.update(optimizer_tensors)
        tensors.update({f"rng.{rank}": state for rank, state in enumerate(generator_states)})
        metadata = {"format": FORMAT, "epoch": str(epoch), "optimizer": json.dumps(groups),
                    "scheduler": json.dumps(scheduler.state_dict())}
        self.path.parent.mkdir(parents=True, exist_ok=True)
        atomic_write(self.path, save(tensors, metadata=metadata))

    def _read(self) -> tuple[dict[str, torch.Tensor], dict[str, str]] | None:
        if self.path is None or not self.path.is_file():
            return None
        try:
            with safe_open(self.path, "pt") as handle:
                metadata = handle.metadata() or {}
                tensors = {name: handle.get_tensor(name) for name in handle.keys()}
            if metadata.get("format") != FORMAT:
                raise ValueError(f"format {metadata.get('format')!r}, expected {FORMAT!r}")
            int(metadata["epoch"]), json.loads(metadata["optimizer"]), json.loads(metadata["scheduler"])
        except (OSError, SafetensorError, ValueError, KeyError) as error:
            raise ResumeError(
                f"{self.path} is not a readable resume state ({error}); delete it to restart this stage"
            ) from None
        return tensors, metadata

    def finished_epochs(self) -> int:
        """How many epochs the resume state holds (0 without one)."""
        read = self._read()
        return 0 if read is None else int(read[1]["epoch"]) + 1

    def restore(self, model: torch.nn.Module, optimizer: torch.optim.Optimizer, scheduler: Any,
                generator: torch.Generator, rank: int = 0) -> int:
        """Load the saved state into the given objects (``generator``: process ``rank``'s); returns the number
        of finished epochs (0: nothing saved)."""
        read = self._read()
        if read is None:
            return 0
        tensors, metadata = read
        weights = {key[len("model."):]: value for key, value in tensors.items() if key.startswith("model.")}
        if f"rng.{rank}" not in tensors:
            saved = sum(key.startswith("rng.") for key in tensors)
            raise ResumeError(f"{self.path} was written by {saved} process(es); resume it with as many")
        try:
            model.load_state_dict(weights)
            optimizer.load_state_dict(_optimizer_state(tensors, json.loads(metadata["optimizer"])))
            _match_parameter_layout(optimizer)
            scheduler.load_state_dict(json.loads(metadata["scheduler"]))
            generator.set_state(tensors[f"rng.{rank}"])
        except (RuntimeError, KeyError, ValueError) as error:
            raise ResumeError(f"{self.path} does not fit this model ({error}); use a new resume_dir") from None
        return int(metadata["epoch"]) + 1
