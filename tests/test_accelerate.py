"""Accelerate: a user's Accelerator is used and left as found; fit's own one leaves no process-wide state."""

from __future__ import annotations

import logging

import numpy as np
import pytest
import torch
from accelerate import Accelerator
from accelerate.state import AcceleratorState

from dvae_transform import DVAEPurify
from dvae_transform.cli import main

TINY = {"epochs": 1, "width": 8, "latent_dim": 8, "batch_size": 32, "progress": False}


@pytest.fixture(autouse=True)
def no_accelerate_state():
    """Each test starts and ends without an Accelerate state (tests elsewhere leave theirs)."""
    AcceleratorState._reset_state()
    yield
    AcceleratorState._reset_state()


def test_a_users_accelerator_keeps_its_models_optimizers_and_step(tiny_data):
    accelerator = Accelerator(mixed_precision="bf16")
    model = torch.nn.Linear(2, 2)
    model, optimizer = accelerator.prepare(model, torch.optim.SGD(model.parameters(), lr=0.1))
    accelerator.step = 5
    DVAEPurify.fit(tiny_data, accelerator=accelerator, **TINY)
    assert accelerator._models == [model] and accelerator._optimizers == [optimizer]
    assert accelerator.step == 5 and accelerator.mixed_precision == "bf16"


def test_fit_without_accelerator_refuses_to_reset_a_live_one(tiny_data):
    accelerator = Accelerator(mixed_precision="bf16")
    with pytest.raises(ValueError, match=r"already has an Accelerator with mixed_precision='bf16'.*accelerator="):
        DVAEPurify.fit(tiny_data, **TINY)
    assert accelerator.state.mixed_precision == "bf16" and AcceleratorState().mixed_precision == "bf16"
    DVAEPurify.fit(tiny_data, mixed_precision="bf16", **TINY)  # the same setting shares it
    assert AcceleratorState().mixed_precision == "bf16"


def test_fit_without_accelerator_leaves_no_state_behind(tiny_data):
    DVAEPurify.fit(tiny_data, mixed_precision="bf16", **TINY)
    assert not AcceleratorState._shared_state
    assert Accelerator().mixed_precision == "no"  # a user's later Accelerator gets its own setting


def test_fit_summaries_go_to_the_package_logger(tiny_data, caplog, capsys):
    with caplog.at_level(logging.INFO, logger="dvae_transform"):
        DVAEPurify.fit(tiny_data, **{**TINY, "progress": True})
    epochs = [record for record in caplog.records if "epoch 1/1" in record.getMessage()]
    assert [record.name for record in epochs] == ["dvae_transform"] * 2
    assert "loss" not in capsys.readouterr().out


def test_the_command_line_leaves_no_state_behind(tiny_purifier, tiny_data, tmp_path):
    tiny_purifier.save_pretrained(tmp_path / "weights")
    images, labels = tiny_data
    np.savez(tmp_path / "in.npz", images=images.numpy(), labels=labels.numpy())
    args = ["purify", "--data", str(tmp_path / "in.npz"), "--out", str(tmp_path / "out"), "--weights",
            str(tmp_path / "weights"), "--device", "cpu", "--no-progress"]
    assert main(args) == 0
    assert not AcceleratorState._shared_state
    DVAEPurify.fit(tiny_data, mixed_precision="bf16", **TINY)  # a later fit may choose its precision
