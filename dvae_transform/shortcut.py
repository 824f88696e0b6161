"""Does a labelled image set still carry a learnable class shortcut? A quick probe, no victim training.

Availability poisons work because they give every class a pattern far easier to learn than the images
(Yu et al., KDD 2022): a tiny model picks such a pattern up from a handful of images per class, where it
needs hundreds of natural images to reach the same skill. :func:`check_shortcut` measures exactly that
on the set alone. It trains a tiny probe (a linear layer on the pixels plus a two-layer CNN, summed
logits) twice: on ``FEW_SHOT`` images per class and on half of the set, and scores both on the other
half. Its statistic is the *few-shot share*,

    (few-shot accuracy - chance) / (half-set accuracy - chance),

about 0.7 on digits (the probe keeps learning from more of them) and close to 1 when a shortcut carries
the labels; it counts as fast above ``FEW_SHOT_SHARE`` plus two standard errors of the few-shot accuracy.
A set is flagged when its labels are learned both fast and far (the held-out half separated with an
error below ``SEPARABLE_ERROR`` of chance's), ``"cannot tell"`` when only one holds: few-shot skill alone
also marks coarse, easy classes (clean Fashion-MNIST: share 0.80), near-perfect separation alone also
marks an easy task or a partly purified set.
Given a clean labelled set (a validation split), it also scores the half-set probe there: a shortcut
is learnable within the set and does not transfer, so the *transfer gap* (held-out accuracy within the
set minus accuracy on the clean set) decides instead, which also catches shortcuts that take many
examples to learn (a partly purified set). Class-wise textures (autoregressive, blur poisons) escape
both on the digits measured. Verdicts per attack and defense are in BENCHMARKS.md.
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from .data.sources import load_images_and_labels
from .log import warn as warn_user
from .validation import check_int

logger = logging.getLogger(__name__)

SHORTCUT, NO_SHORTCUT, CANNOT_TELL = "shortcut", "no shortcut", "cannot tell"
FEW_SHOT = 4  # images per class of the few-shot probe
FEW_SHOT_SHARE = 0.75  # learned fast: above this share (digits: about 0.7, class-wise patterns: 0.85-1)
SEPARABLE_ERROR = 0.05  # learned far: held-out error below this share of chance's error
TRANSFER_TOLERANCE = 0.05  # accuracy a working purification may lose (the issue-#21 "5 points")
MIN_PER_CLASS = 20  # below this many images in some class the check cannot tell
PROBE_SIDE = 32  # the probe looks at images through a stride that brings them to about this side
PROBE_EPOCHS = 3
PROBE_BATCH = 64
PROBE_LR = 3e-3
CHECK_IMAGES = 4000  # a fit checks at most this many of its training images


@dataclass(frozen=True)
class ShortcutReport:
    """What :func:`check_shortcut` found.

    Attributes:
        verdict: ``"shortcut"``, ``"no shortcut"`` or ``"cannot tell"``.
        statistic: the number the verdict compares with ``threshold``: the transfer gap when a clean set
            was given, else the few-shot share (None when the check cannot tell).
        threshold: the verdict is ``"shortcut"`` when ``statistic`` exceeds it.
        reason: one sentence: what decided.
        few_shot_share, heldout_accuracy, few_shot_accuracy: the probe's numbers within the set.
        clean_accuracy, transfer_gap: on the clean set, when one was given.
        num_images, num_classes, seconds: the set's size and the time taken.
    """

    verdict: str
    statistic: float | None
    threshold: float | None
    reason: str
    few_shot_share: float | None = None
    heldout_accuracy: float | None = None
    few_shot_accuracy: float | None = None
    clean_accuracy: float | None = None
    transfer_gap: float | None = None
    num_images: int = 0
    num_classes: int = 0
    seconds: float = 0.0

    @property
    def found(self) -> bool:
        """Whether a shortcut was found."""
        return self.verdict == SHORTCUT

    def to_dict(self) -> dict[str, Any]:
        """The report as JSON-ready values."""
        return asdict(self)

    def __str__(self) -> str:
        return f"shortcut check: {self.verdict} ({self.reason}; {self.seconds:.1f} s)"


class _Probe(nn.Module):
    """A linear layer on the pixels plus a two-layer CNN, their logits summed."""

    def __init__(self, channels: int, side: int, num_classes: int) -> None:
        super().__init__()
        stride = max(1, side // PROBE_SIDE)
        self.pool = nn.AvgPool2d(stride) if stride > 1 else nn.Identity()
        pooled = side // stride
        self.linear = nn.Linear(channels * pooled * pooled, num_classes)
        self.cnn = nn.Sequential(
            nn.Conv2d(channels, 16, 3, padding=1), nn.ReLU(),
            nn.Conv2d(16, 32, 3, stride=2, padding=1), nn.ReLU(),
            nn.AdaptiveAvgPool2d(4), nn.Flatten(), nn.Linear(32 * 16, num_classes),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.pool(x)
        return self.linear(x.flatten(1)) + self.cnn(x)


def _train(x: torch.Tensor, y: torch.Tensor, num_classes: int, steps: int, seed: int) -> _Probe:
    generator = torch.Generator().manual_seed(seed)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        probe = _Probe(x.shape[1], x.shape[-1], num_classes)
    optimizer = torch.optim.Adam(probe.parameters(), lr=PROBE_LR)
    for step in range(steps):
        if step % max(1, math.ceil(len(x) / PROBE_BATCH)) == 0:
            order = torch.randperm(len(x), generator=generator)
        start = (step * PROBE_BATCH) % len(x)
        batch = order[start:start + PROBE_BATCH]
        loss = F.cross_entropy(probe(x[batch]), y[batch])
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
    return probe.eval()


@torch.inference_mode()
def _accuracy(probe: _Probe, x: torch.Tensor, y: torch.Tensor) -> float:
    correct = sum(int((probe(x[i:i + 512]).argmax(1) == y[i:i + 512]).sum()) for i in range(0, len(x), 512))
    return correct / len(x)


def _standardise(images: torch.Tensor, mean: torch.Tensor, std: torch.Tensor) -> torch.Tensor:
    return (images.float() - mean) / std


def _load(data: Any, labels: Any, what: str) -> tuple[torch.Tensor, torch.Tensor]:
    if data is None:
        raise ValueError(f"{what}: no data given")
    if labels is not None:
        data = (data, labels)
    images, found = load_images_and_labels(data)
    if found is None or len(found) != len(images):
        raise ValueError(f"{what}: the check needs a label for every image (unlabelled data cannot show a shortcut)")
    return images, found.long()


def _split(labels: torch.Tensor, seed: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Two halves stratified by class, and ``FEW_SHOT`` images per class of the first half."""
    generator = torch.Generator().manual_seed(seed)
    first, second, few = [], [], []
    for label in labels.unique():
        members = torch.nonzero(labels == label).flatten()
        members = members[torch.randperm(len(members), generator=generator)]
        half = len(members) // 2
        first.append(members[:half])
        second.append(members[half:])
        few.append(members[:FEW_SHOT])
    return torch.cat(first), torch.cat(second), torch.cat(few)


def _cannot_tell(reason: str, started: float, images: int, classes: int) -> ShortcutReport:
    return ShortcutReport(CANNOT_TELL, None, None, reason, num_images=images, num_classes=classes,
                          seconds=time.perf_counter() - started)


def check_shortcut(
    data: Any,
    labels: Any = None,
    *,
    clean: Any = None,
    clean_labels: Any = None,
    seed: int = 0,
) -> ShortcutReport:
    """Whether a learnable class shortcut remains in a labelled image set (see the module docstring).

    Args:
        data: the images to check with their labels: an ``(images, labels)`` pair (NCHW float in [0, 1]
            or uint8), a torch ``Dataset`` of ``(image, label)`` (a :class:`~dvae_transform.PurifiedDataset`
            too) or a Hugging Face ``datasets.Dataset``; or images, with ``labels`` given apart.
        labels: the labels, when ``data`` holds images only.
        clean: optional clean labelled images of the same kind (e.g. a validation split), in any form
            ``data`` takes; then the transfer gap decides.
        clean_labels: the clean set's labels, when ``clean`` holds images only.
        seed: seeds the split and the probe (same inputs and seed: the same report).

    Returns:
        a :class:`ShortcutReport`. ``"cannot tell"`` (never a silent pass) when a class has fewer than
        ``MIN_PER_CLASS`` images, when there is one class only, or when the probe learns nothing.

    Raises:
        ValueError: unlabelled data, or a clean set whose image shape differs from ``data``'s.
    """
    started = time.perf_counter()
    check_int(seed, "seed")
    images, targets = _load(data, labels, "data")
    reference = None
    if clean is not None:
        reference = _load(clean, clean_labels, "clean")
        if reference[0].shape[1:] != images.shape[1:]:
            raise ValueError(f"clean images are {tuple(reference[0].shape[1:])}, the data's "
                             f"{tuple(images.shape[1:])}: give a clean set of the same kind")
    classes, counts = targets.unique(return_counts=True)
    if len(classes) < 2:
        return _cannot_tell(f"one class only ({classes.tolist()}): nothing to separate", started, len(images), 1)
    if int(counts.min()) < MIN_PER_CLASS:
        scarce = int(classes[counts.argmin()])
        return _cannot_tell(f"class {scarce} has {int(counts.min())} images; the check needs at least "
                            f"{MIN_PER_CLASS} per class", started, len(images), len(classes))
    dense = torch.full((int(classes.max()) + 1,), -1, dtype=torch.long)
    dense[classes] = torch.arange(len(classes))
    targets = dense[targets]
    mean, std = images.float().mean(), images.float().std().clamp_min(1e-3)
    x = _standardise(images, mean, std)
    first, second, few = _split(targets, seed)
    steps = PROBE_EPOCHS * math.ceil(len(first) / PROBE_BATCH)
    chance = 1 / len(classes)
    with torch.enable_grad():
        probe = _train(x[first], targets[first], len(classes), steps, seed)
        few_probe = _train(x[few], targets[few], len(classes), steps, seed)
    heldout = _accuracy(probe, x[second], targets[second])
    few_shot = _accuracy(few_probe, x[second], targets[second])
    numbers = {"heldout_accuracy": heldout, "few_shot_accuracy": few_shot, "num_images": len(images),
               "num_classes": len(classes)}
    if reference is not None:
        clean_targets = dense[reference[1].clamp(0, len(dense) - 1)]
        if (reference[1] >= len(dense)).any() or (clean_targets < 0).any():
            raise ValueError("clean: its labels include classes the data does not have")
        clean_accuracy = _accuracy(probe, _standardise(reference[0], mean, std), clean_targets)
        gap = heldout - clean_accuracy
        spread = 2 * math.sqrt(heldout * (1 - heldout) / len(second)
                               + clean_accuracy * (1 - clean_accuracy) / len(clean_targets))
        threshold = TRANSFER_TOLERANCE + spread
        verdict = SHORTCUT if gap > threshold else NO_SHORTCUT
        reason = (f"a probe scores {heldout:.3f} on held-out images of the set and {clean_accuracy:.3f} on the "
                  f"clean set: gap {gap:+.3f}, threshold {threshold:.3f}")
        return ShortcutReport(verdict, gap, threshold, reason, clean_accuracy=clean_accuracy, transfer_gap=gap,
                              seconds=time.perf_counter() - started, **numbers)
    margin = 3 * math.sqrt(chance * (1 - chance) / len(second))
    if heldout - chance <= margin:
        return ShortcutReport(CANNOT_TELL, None, None, f"the probe learns nothing ({heldout:.3f} held-out accuracy, "
                              f"chance {chance:.3f})", seconds=time.perf_counter() - started, **numbers)
    share = max(0.0, few_shot - chance) / (heldout - chance)
    # Two standard errors of the few-shot accuracy on the held-out half, in units of the share.
    threshold = FEW_SHOT_SHARE + 2 * math.sqrt(few_shot * (1 - few_shot) / len(second)) / (heldout - chance)
    fast = share > threshold
    separable = heldout >= 1 - SEPARABLE_ERROR * (1 - chance)
    verdict = SHORTCUT if fast and separable else CANNOT_TELL if fast or separable else NO_SHORTCUT
    reason = (f"a probe trained on {FEW_SHOT} images per class reaches {share:.2f} of the skill it reaches on half "
              f"the set ({few_shot:.3f} vs {heldout:.3f} held-out accuracy; share threshold {threshold:.2f}); the "
              f"held-out half is {'' if separable else 'not '}separated almost perfectly")
    return ShortcutReport(verdict, share, threshold, reason, few_shot_share=share,
                          seconds=time.perf_counter() - started, **numbers)


def check_sample(labels: torch.Tensor, limit: int = CHECK_IMAGES, seed: int = 0) -> torch.Tensor:
    """Sorted indices of at most ``limit`` items, the same share of every class (all when there are fewer)."""
    if len(labels) <= limit:
        return torch.arange(len(labels))
    order = torch.randperm(len(labels), generator=torch.Generator().manual_seed(seed))
    by_class = order[torch.sort(labels[order], stable=True).indices]
    keep = torch.zeros(len(labels), dtype=torch.bool)
    keep[by_class[torch.linspace(0, len(labels) - 1, limit).round().long()]] = True
    return torch.nonzero(keep).flatten()


def check_purification(
    poisoned: torch.Tensor,
    purified: torch.Tensor,
    labels: torch.Tensor,
    *,
    clean: Any = None,
    seed: int = 0,
) -> dict[str, ShortcutReport]:
    """:func:`check_shortcut` on a set before (``"input"``) and after (``"output"``) purification."""
    return {
        "input": check_shortcut(poisoned, labels, clean=clean, seed=seed),
        "output": check_shortcut(purified, labels, clean=clean, seed=seed),
    }


def purification_failed(reports: dict[str, ShortcutReport]) -> bool:
    """Whether :func:`check_purification`'s reports say a shortcut was left: the output is flagged, or the input
    was and the check cannot clear the output."""
    output, given = reports["output"], reports["input"]
    return output.found or (output.verdict == CANNOT_TELL and given.found and output.statistic is not None)


def failure_warning(reports: dict[str, ShortcutReport], remedy: str) -> str | None:
    """The warning due when purification left a shortcut, else None."""
    if not purification_failed(reports):
        return None
    return f"purification left a learnable shortcut: {reports['output'].reason}. {remedy}"


def check_fit(purify: Callable[[torch.Tensor, torch.Tensor], torch.Tensor], images: torch.Tensor,
              labels: torch.Tensor, *, validation: Any = None, seed: int = 0, warn: bool = True,
              log: bool = True) -> dict[str, ShortcutReport]:
    """The check before and after ``purify`` on a fit's sample of its training set (:func:`check_sample`); logs
    both when ``log`` (the main process), and warns when ``warn`` too and the output still carries a shortcut."""
    reports = check_purification(images, purify(images, labels), labels, clean=validation, seed=seed)
    message = failure_warning(reports, "Refit with another seed or preset='paper', and check the result with "
                                       "dvae_transform.check_shortcut.")
    if not log:
        return reports
    for stage, report in reports.items():
        logger.info("fit %s: %s", stage, report)
    if message is not None and not warn:
        logger.info("fit: %s; fitting again from another seed", message)
    if message is not None and warn:
        warn_user(message, RuntimeWarning)
    return reports
