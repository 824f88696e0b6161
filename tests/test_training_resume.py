"""Resume state: the fit record of a resume_dir and the per-stage state file (dvae_transform.training.resume)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from torch import nn

from dvae_transform.training.resume import FORMAT, RECORD, ResumeError, ResumeState, check_record

RECORD_ENTRIES = {"config": {"epochs": 2}, "num_classes": 4, "data": "abc", "init": None, "processes": 1}


def test_the_first_fit_writes_the_record_and_the_same_fit_matches_it(tmp_path: Path) -> None:
    root = tmp_path / "resume"
    check_record(root, RECORD_ENTRIES)
    assert json.loads((root / RECORD).read_text()) == {"format": FORMAT, **RECORD_ENTRIES}
    check_record(root, dict(RECORD_ENTRIES))  # matches: nothing raised, nothing changed
    assert json.loads((root / RECORD).read_text()) == {"format": FORMAT, **RECORD_ENTRIES}


@pytest.mark.parametrize(
    ("key", "value", "what"),
    [
        ("config", {"epochs": 3}, "other settings"),
        ("num_classes", 10, "another class count"),
        ("data", "xyz", "other data"),
        ("init", "warm", "another warm start"),
        ("processes", 2, "another number of processes"),
    ],
)
def test_a_fit_of_other_data_or_settings_is_refused_naming_the_entry(tmp_path: Path, key: str, value,
                                                                     what: str) -> None:
    check_record(tmp_path, RECORD_ENTRIES)
    with pytest.raises(ResumeError, match=rf"holds a fit of {what} \({key}: .*this fit: {value!r}"):
        check_record(tmp_path, {**RECORD_ENTRIES, key: value})


def test_unreadable_or_old_records_are_refused(tmp_path: Path) -> None:
    (tmp_path / RECORD).write_text("{not json")
    with pytest.raises(ResumeError, match="is not a readable fit record.*delete the resume folder"):
        check_record(tmp_path, RECORD_ENTRIES)
    (tmp_path / RECORD).write_text(json.dumps({"format": "dvae_transform.fit-checkpoint/1", **RECORD_ENTRIES}))
    with pytest.raises(ResumeError, match="not a fit record of this version"):
        check_record(tmp_path, RECORD_ENTRIES)
    older = tmp_path / "older"
    older.mkdir()
    (older / "fit_config.json").write_text("{}")
    with pytest.raises(ResumeError, match="written by an older version"):
        check_record(older, RECORD_ENTRIES)


def _training(seed: int) -> tuple[nn.Module, torch.optim.Optimizer, torch.optim.lr_scheduler.LRScheduler]:
    torch.manual_seed(seed)
    model = nn.Sequential(nn.Linear(3, 4), nn.ReLU(), nn.Linear(4, 2))
    optimizer = torch.optim.Adam(model.parameters(), lr=0.1)
    return model, optimizer, torch.optim.lr_scheduler.StepLR(optimizer, step_size=1, gamma=0.5)


def _step(model: nn.Module, optimizer: torch.optim.Optimizer, scheduler, generator: torch.Generator) -> None:
    inputs = torch.randn(8, 3, generator=generator)
    optimizer.zero_grad()
    model(inputs).square().mean().backward()
    optimizer.step()
    scheduler.step()


def test_a_restored_stage_continues_exactly_as_the_uninterrupted_one(tmp_path: Path) -> None:
    state = ResumeState(tmp_path, stage=1)
    assert state.path == tmp_path / "stage1" / "last.safetensors" and state.finished_epochs() == 0
    model, optimizer, scheduler = _training(0)
    generator = torch.Generator().manual_seed(5)
    _step(model, optimizer, scheduler, generator)
    state.save(model, optimizer, scheduler, [generator.get_state()], epoch=0)
    assert state.finished_epochs() == 1

    resumed, resumed_optimizer, resumed_scheduler = _training(1)  # other weights, fresh optimizer
    resumed_generator = torch.Generator()
    assert state.restore(resumed, resumed_optimizer, resumed_scheduler, resumed_generator) == 1
    _step(model, optimizer, scheduler, generator)
    _step(resumed, resumed_optimizer, resumed_scheduler, resumed_generator)
    for name, value in model.state_dict().items():
        assert torch.equal(resumed.state_dict()[name], value), name
    assert resumed_scheduler.get_last_lr() == scheduler.get_last_lr()


def test_without_a_root_nothing_is_saved_or_restored(tmp_path: Path) -> None:
    state = ResumeState(None, stage=2)
    model, optimizer, scheduler = _training(0)
    state.save(model, optimizer, scheduler, [torch.Generator().get_state()], epoch=3)
    assert state.path is None and state.finished_epochs() == 0
    assert state.restore(model, optimizer, scheduler, torch.Generator()) == 0


def test_resume_state_resumes_only_with_as_many_processes_and_the_same_model(tmp_path: Path) -> None:
    state = ResumeState(tmp_path, stage=2)
    model, optimizer, scheduler = _training(0)
    state.save(model, optimizer, scheduler, [torch.Generator().get_state()], epoch=0)
    with pytest.raises(ResumeError, match=r"written by 1 process\(es\); resume it with as many"):
        state.restore(model, optimizer, scheduler, torch.Generator(), rank=1)
    other = nn.Linear(3, 2)
    other_optimizer = torch.optim.Adam(other.parameters())
    with pytest.raises(ResumeError, match=r"(?s)does not fit this model .*; use a new resume_dir"):
        state.restore(other, other_optimizer, torch.optim.lr_scheduler.StepLR(other_optimizer, 1), torch.Generator())


def test_an_unreadable_resume_state_is_named(tmp_path: Path) -> None:
    state = ResumeState(tmp_path, stage=1)
    state.path.parent.mkdir(parents=True)
    state.path.write_bytes(b"not a safetensors file")
    with pytest.raises(ResumeError, match=r"last\.safetensors is not a readable resume state .* delete it"):
        state.finished_epochs()
