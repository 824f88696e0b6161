"""What stage 1 of a fitted D-VAE did to a poisoned set: the benchmark's per-cell diagnostics.

D-VAE is meant to work by disentangling: stage 1's perturbation branch should explain the poison,
so its estimate ``x - x1`` should point along the true perturbation ``x_poisoned - x_clean``.
:func:`stage1_diagnostics` measures that, and what each step costs in fidelity to the clean images.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from ..model import DVAE
from ..purify import default_batch_size, remove_perturbation
from ..training.losses import psnr
from ..transforms import DVAEPurify

FIELDS: dict[str, str] = {
    "cosine": "cosine between stage 1's estimate x - x1 and the true perturbation, mean over images",
    "class_cosine": "cosine between the class means of the estimate and of the true perturbation, mean over classes",
    "psnr_poisoned": "PSNR (dB) of the poisoned images to the clean ones",
    "psnr_stage1": "PSNR (dB) of stage 1's output x1 to the clean images",
    "psnr_purified": "PSNR (dB) of the final output to the clean images",
    "kl_stage1": "stage 1's KL per latent position, last epoch of the fit",
    "kl_stage2": "stage 2's KL per latent position, last epoch of the fit",
    "out_of_range": "fraction of pixels where stage 1's reconstruction + perturbation leaves [0, 1]",
}


def _mean_cosine(estimate: torch.Tensor, truth: torch.Tensor) -> float | None:
    """Mean over rows of the cosine between ``estimate`` and ``truth`` (rows without a true part are skipped)."""
    estimate, truth = estimate.flatten(1).double(), truth.flatten(1).double()
    present = truth.norm(dim=1) > 0
    if not present.any():
        return None
    return F.cosine_similarity(estimate[present], truth[present], dim=1, eps=1e-12).mean().item()


def _class_means(values: torch.Tensor, labels: torch.Tensor, classes: torch.Tensor) -> torch.Tensor:
    return torch.stack([values[labels == label].double().mean(dim=0) for label in classes])


def _last_kl(history: list[dict[str, float]], stage: int) -> float | None:
    records = [record for record in history if record.get("stage") == stage]
    return records[-1]["kl"] if records else None


@torch.inference_mode()
def _out_of_range(model: DVAE, images: torch.Tensor, labels: torch.Tensor, batch_size: int | None) -> float:
    """Fraction of pixels where ``reconstruction + perturbation`` (latent mean) falls outside [0, 1]."""
    device = next(model.parameters()).device
    batch_size = batch_size or default_batch_size(model)
    training = model.training
    model.eval()
    outside = torch.zeros((), dtype=torch.int64, device=device)
    for start in range(0, images.shape[0], batch_size):
        x = images[start : start + batch_size].to(device)
        output = model(x, labels[start : start + batch_size].to(device), sample=False)
        combined = output.reconstruction.float() + output.perturbation.float()
        outside += ((combined < 0) | (combined > 1)).sum()
    model.train(training)
    return outside.item() / images.numel()


def stage1_diagnostics(
    purifier: DVAEPurify,
    clean: torch.Tensor,
    poisoned: torch.Tensor,
    purified: torch.Tensor,
    labels: torch.Tensor,
    *,
    batch_size: int | None = None,
) -> dict[str, float | None]:
    """The :data:`FIELDS` of one defended training set (float NCHW images in [0, 1], CPU).

    ``purified`` is the purifier's final output for ``poisoned``. Without a poison (``poisoned``
    equal to ``clean``) the cosines and the poisoned PSNR are None; without a fit history (saved
    weights applied as they are) so are the KL values.
    """
    x1 = remove_perturbation(purifier.stage1, poisoned, labels, batch_size=batch_size, subtract=purifier.subtract)
    estimate, truth = poisoned - x1, poisoned - clean
    classes = labels.unique()
    poisoned_at_all = bool(truth.any())
    return {
        "cosine": _mean_cosine(estimate, truth),
        "class_cosine": _mean_cosine(_class_means(estimate, labels, classes), _class_means(truth, labels, classes)),
        "psnr_poisoned": psnr(poisoned, clean).item() if poisoned_at_all else None,
        "psnr_stage1": psnr(x1, clean).item(),
        "psnr_purified": psnr(purified, clean).item(),
        "kl_stage1": _last_kl(purifier.history, 1),
        "kl_stage2": _last_kl(purifier.history, 2),
        "out_of_range": _out_of_range(purifier.stage1, poisoned, labels, batch_size),
    }
