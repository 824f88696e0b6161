"""The D-VAE objective against hand-computed values."""

from __future__ import annotations

import math

import pytest
import torch

from dvae_transform.model import DVAEOutput
from dvae_transform.training.losses import dvae_loss, kl_divergence, psnr


def _output(rec: float, pert: float, mu: float, log_var: float) -> DVAEOutput:
    return DVAEOutput(
        reconstruction=torch.full((1, 1, 2, 2), rec),
        mu=torch.full((1, 3, 1, 1), mu),
        log_var=torch.full((1, 3, 1, 1), log_var),
        perturbation=torch.full((1, 1, 2, 2), pert),
    )


def test_kl_sums_channels_and_averages_positions() -> None:
    mu = torch.tensor([[[[1.0, 0.0]], [[2.0, 0.0]]]])  # batch 1, 2 channels, 1x2 positions
    log_var = torch.zeros_like(mu)
    # per position: 0.5 * sum(mu^2) -> (0.5 * 5, 0) -> mean 1.25
    assert kl_divergence(mu, log_var).item() == pytest.approx(1.25)


def test_hand_checked_loss_terms() -> None:
    target = torch.full((1, 1, 2, 2), 0.5)
    out = _output(rec=0.3, pert=0.1, mu=1.0, log_var=0.0)
    terms = dvae_loss(out, target, kl_bound=1.0, penalize_perturbation=True)
    rec = (0.3 - 0.5) ** 2
    combined = (0.4 - 0.5) ** 2
    kl = 0.5 * 3 * 1.0  # three channels with mu = 1
    power = max(0.1**2, 0.002)
    assert terms.reconstruction.item() == pytest.approx(rec)
    assert terms.combined.item() == pytest.approx(combined)
    assert terms.kl.item() == pytest.approx(kl)
    assert terms.total.item() == pytest.approx(rec + combined + 0.01 * kl + power)


def test_combined_term_clamps_to_image_range() -> None:
    target = torch.ones(1, 1, 2, 2)
    terms = dvae_loss(_output(rec=0.9, pert=0.5, mu=0.0, log_var=0.0), target, kl_bound=0.0,
                      penalize_perturbation=False)
    assert terms.combined.item() == pytest.approx(0.0)  # clamp(1.4) == 1


def test_perturbation_penalty_only_when_enabled_and_floored() -> None:
    target = torch.full((1, 1, 2, 2), 0.5)
    small = _output(rec=0.5, pert=0.01, mu=0.0, log_var=0.0)  # power 1e-4 < floor 0.002
    off = dvae_loss(small, target, kl_bound=0.0, penalize_perturbation=False).total
    on = dvae_loss(small, target, kl_bound=0.0, penalize_perturbation=True).total
    assert (on - off).item() == pytest.approx(0.002)


def test_kl_bound_stops_pushing_below_it() -> None:
    target = torch.full((1, 1, 2, 2), 0.5)
    mu = torch.full((1, 3, 1, 1), 0.5, requires_grad=True)  # KL = 0.375
    out = DVAEOutput(torch.full((1, 1, 2, 2), 0.5), mu, torch.zeros(1, 3, 1, 1), torch.zeros(1, 1, 2, 2))
    dvae_loss(out, target, kl_bound=1.0, penalize_perturbation=False).total.backward()
    assert torch.count_nonzero(mu.grad) == 0
    mu2 = torch.full((1, 3, 1, 1), 2.0, requires_grad=True)  # KL = 6 > bound
    out2 = DVAEOutput(out.reconstruction, mu2, out.log_var, out.perturbation)
    dvae_loss(out2, target, kl_bound=1.0, penalize_perturbation=False).total.backward()
    assert torch.all(mu2.grad > 0)


def test_plain_vae_objective_drops_perturbation_terms() -> None:
    target = torch.full((1, 1, 2, 2), 0.5)
    out = _output(rec=0.3, pert=0.4, mu=0.0, log_var=0.0)
    terms = dvae_loss(out, target, kl_bound=0.0, penalize_perturbation=True, perturbation_branch=False)
    assert terms.total.item() == pytest.approx((0.3 - 0.5) ** 2)


def test_psnr() -> None:
    a = torch.zeros(2, 1, 4, 4)
    b = torch.full((2, 1, 4, 4), 0.1)
    assert psnr(a, b).item() == pytest.approx(10 * math.log10(1 / 0.01), rel=1e-5)
