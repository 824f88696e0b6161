"""The D-VAE objective of Yu et al. (ICML 2024, :data:`~dvae_transform.metadata.PAPER_URL`) as pure functions."""

from __future__ import annotations

from typing import NamedTuple

import torch
import torch.nn.functional as F

from ..model import DVAEOutput

KL_WEIGHT = 0.01
PERTURBATION_FLOOR = 0.002


class LossTerms(NamedTuple):
    """The total loss and its parts (detached parts are for logging)."""

    total: torch.Tensor
    reconstruction: torch.Tensor
    combined: torch.Tensor
    kl: torch.Tensor
    perturbation_power: torch.Tensor


def kl_divergence(mu: torch.Tensor, log_var: torch.Tensor) -> torch.Tensor:
    """KL to N(0, I): summed over latent channels, averaged over batch and positions."""
    per_position = -0.5 * torch.sum(1 + log_var - mu.pow(2) - log_var.exp(), dim=1)
    return per_position.mean()


def dvae_loss(
    output: DVAEOutput,
    target: torch.Tensor,
    *,
    kl_bound: float,
    penalize_perturbation: bool,
    perturbation_branch: bool = True,
    kl_weight: float = KL_WEIGHT,
    perturbation_floor: float = PERTURBATION_FLOOR,
) -> LossTerms:
    """``mse(x_rec, x) + mse(clamp(x_rec + p), x) + w * max(KL, bound) [+ max(mean p^2, floor)]``.

    The KL is only pushed down while it exceeds ``kl_bound``; the perturbation
    power term is added when ``penalize_perturbation`` (after the warm-up epochs).
    ``perturbation_branch=False`` gives the plain rate-constrained VAE objective
    ``mse(x_rec, x) + w * max(KL, bound)`` (the paper's ablation).
    """
    rec = output.reconstruction.float()
    perturbation = output.perturbation.float()
    reconstruction = F.mse_loss(rec, target)
    combined = F.mse_loss(torch.clamp(rec + perturbation, 0.0, 1.0), target)
    kl = kl_divergence(output.mu.float(), output.log_var.float())
    power = perturbation.pow(2).mean()
    total = reconstruction + kl_weight * torch.clamp(kl, min=kl_bound)
    if not perturbation_branch:
        return LossTerms(total, reconstruction.detach(), combined.detach(), kl.detach(), power.detach())
    total = total + combined
    if penalize_perturbation:
        total = total + torch.clamp(power, min=perturbation_floor)
    return LossTerms(total, reconstruction.detach(), combined.detach(), kl.detach(), power.detach())


def psnr(images: torch.Tensor, reference: torch.Tensor) -> torch.Tensor:
    """Mean peak signal-to-noise ratio in dB of images in [0, 1] (per image, then averaged)."""
    mse = (images.float() - reference.float()).pow(2).flatten(1).mean(dim=1).clamp_min(1e-10)
    return (10 * torch.log10(1.0 / mse)).mean()
