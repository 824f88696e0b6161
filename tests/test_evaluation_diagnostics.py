"""Stage-1 diagnostics, on a fitted purifier whose perturbation branch is set to a known output."""

from __future__ import annotations

import copy

import pytest
import torch

from dvae_transform import DVAEPurify
from dvae_transform.evaluation.diagnostics import FIELDS, stage1_diagnostics


def _constant_branch(purifier: DVAEPurify, value: float) -> DVAEPurify:
    """A copy whose stage-1 perturbation branch outputs ``value`` at every pixel."""
    changed = copy.deepcopy(purifier)
    last = changed.stage1.perturbation_decoder[-2]
    with torch.no_grad():
        last.weight.zero_()
        last.bias.fill_(value)
    return changed


@pytest.fixture(scope="module")
def poisoned_set(tiny_data):
    images, labels = tiny_data
    clean = 0.2 + 0.6 * images  # no clamping by the shifts below
    return clean, clean + 0.03, labels


@pytest.mark.parametrize(("value", "sign"), [(0.05, 1.0), (-0.05, -1.0)])
def test_the_cosines_see_whether_stage_1_estimates_the_poison(tiny_purifier, poisoned_set, value, sign) -> None:
    clean, poisoned, labels = poisoned_set
    purifier = _constant_branch(tiny_purifier, value)
    result = stage1_diagnostics(purifier, clean, poisoned, purifier.purify(poisoned, labels), labels)
    assert set(result) == set(FIELDS)
    assert result["cosine"] == pytest.approx(sign, abs=0.05)  # x - x1 = value (up to 8-bit rounding), delta = 0.03
    assert result["class_cosine"] == pytest.approx(sign, abs=1e-3)
    assert result["psnr_poisoned"] == pytest.approx(-10 * torch.log10(torch.tensor(0.03**2)).item(), abs=1e-3)
    x1_error = 0.03 - value  # x1 = poisoned - value
    assert result["psnr_stage1"] == pytest.approx(-10 * torch.log10(torch.tensor(x1_error**2)).item(), abs=0.5)


def test_out_of_range_counts_the_pixels_the_clamp_cuts(tiny_purifier, poisoned_set) -> None:
    clean, poisoned, labels = poisoned_set
    for value, expected in ((2.0, 1.0), (0.0, 0.0)):  # the reconstruction is a sigmoid, inside (0, 1)
        purifier = _constant_branch(tiny_purifier, value)
        purified = purifier.purify(poisoned, labels)
        assert stage1_diagnostics(purifier, clean, poisoned, purified, labels)["out_of_range"] == expected


def test_kl_comes_from_the_last_epoch_of_each_stage_and_a_clean_set_has_no_cosine(tiny_purifier, tiny_data) -> None:
    images, labels = tiny_data
    result = stage1_diagnostics(tiny_purifier, images, images, tiny_purifier.purify(images, labels), labels)
    assert result["cosine"] is None and result["class_cosine"] is None and result["psnr_poisoned"] is None
    last = {record["stage"]: record["kl"] for record in tiny_purifier.history}  # records are in epoch order
    assert (result["kl_stage1"], result["kl_stage2"]) == (last[1], last[2])
    saved = copy.deepcopy(tiny_purifier)
    saved.history = []  # weights applied as they are: no fit, no KL
    without = stage1_diagnostics(saved, images, images, saved.purify(images, labels), labels)
    assert without["kl_stage1"] is None and without["psnr_stage1"] == result["psnr_stage1"]
