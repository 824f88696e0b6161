"""``DVAEPurify``: the two fitted D-VAE stages as a torchvision transform.

It is a ``torchvision.transforms.v2.Transform`` (in a v2 ``Compose`` it receives
the image and the label together and passes the label through) and a plain
callable for v1 ``transforms.Compose``. Batches go through the same call.
"""

from __future__ import annotations

import os
import warnings
from pathlib import Path
from typing import Any

import numpy as np
import PIL.Image
import torch
from accelerate import Accelerator
from torch.utils._pytree import tree_flatten, tree_unflatten
from torchvision import tv_tensors
from torchvision.transforms import v2
from torchvision.transforms.v2 import functional as F

from ._checks import to_float_images, to_labels
from .config import FitConfig, resolve_config
from .data import load_images_and_labels
from .fit import fit_two_stage
from .model import DVAE
from .purify import DEFAULT_BATCH_SIZE, purify_two_stage, reconstruct

STAGE_FOLDERS = ("stage1", "stage2")


def _is_label(value: Any) -> bool:
    if isinstance(value, bool):
        return False
    if isinstance(value, (int, np.integer)):
        return True
    return (
        isinstance(value, torch.Tensor)
        and not isinstance(value, tv_tensors.TVTensor)
        and value.ndim <= 1
        and not value.is_floating_point()
        and value.dtype != torch.bool
    )


class DVAEPurify(v2.Transform):
    """Remove unlearnable perturbations with a fitted two-stage D-VAE.

    Call it on ``(images, labels)``: one CHW image or an NCHW batch (tensor,
    ``tv_tensors.Image``, numpy) or PIL image(s), uint8 or float in [0, 1]. It returns
    the same kind of thing: PIL in, PIL out; tensors in, float tensors in [0, 1] out.
    Without a label (a v1 pipeline) it falls back to the stage-2 reconstruction of
    the input, and warns once that it does.

    Args:
        stage1: the stage-1 D-VAE (tight KL bound).
        stage2: the stage-2 D-VAE (trained on stage-1 output).
        batch_size: micro-batch size for large calls.
        sample: draw the latent instead of using its mean (the authors' choice).
        seed: seeds the draw when ``sample`` is set.
        device: where to run; models move there on first use.
    """

    def __init__(
        self,
        stage1: DVAE,
        stage2: DVAE,
        *,
        batch_size: int = DEFAULT_BATCH_SIZE,
        sample: bool = False,
        seed: int | None = None,
        device: str | torch.device = "cpu",
    ) -> None:
        super().__init__()
        data_keys = ("in_channels", "image_size", "num_classes")
        if any(stage1.config[key] != stage2.config[key] for key in data_keys):
            raise ValueError(
                f"stage1 and stage2 were built for different data: {stage1.config} vs {stage2.config}"
            )
        self.stage1, self.stage2 = stage1.eval(), stage2.eval()
        self.batch_size, self.sample, self.seed = batch_size, sample, seed
        self.device = torch.device(device)
        self.history: list[dict[str, float]] = []
        self._warned_label_free = False

    # --- properties -----------------------------------------------------------------
    @property
    def num_classes(self) -> int:
        return self.stage1.num_classes

    @property
    def in_channels(self) -> int:
        return self.stage1.in_channels

    @property
    def image_size(self) -> int:
        return self.stage1.image_size

    def extra_repr(self) -> str:
        return (
            f"in_channels={self.in_channels}, image_size={self.image_size}, num_classes={self.num_classes}, "
            f"sample={self.sample}, device={self.device}"
        )

    # --- fitting -----------------------------------------------------------------------
    @classmethod
    def fit(
        cls,
        data: Any,
        num_classes: int | None = None,
        preset: str | FitConfig = "fast",
        *,
        image_column: str | None = None,
        label_column: str | None = None,
        init: DVAEPurify | None = None,
        accelerator: Accelerator | None = None,
        checkpoint_dir: str | os.PathLike | None = None,
        progress: bool = True,
        **overrides: Any,
    ) -> DVAEPurify:
        """Fit both stages on poisoned ``data`` and return a ready purifier.

        Args:
            data: an ``(images, labels)`` pair (NCHW float in [0, 1] or uint8), a torch
                ``Dataset`` of ``(image, label)`` or a Hugging Face ``datasets.Dataset``.
            num_classes: defaults to ``max(label) + 1`` (or ``init``'s class count).
            preset: ``"fast"`` (CPU-friendly) or ``"paper"`` (published settings), or a ``FitConfig``.
            image_column, label_column: column names for a Hugging Face dataset.
            init: warm-start both stages from this purifier's weights.
            accelerator: an ``accelerate.Accelerator`` (one is created if not given).
            checkpoint_dir: save every epoch here and resume from it.
            progress: show progress bars.
            **overrides: any ``FitConfig`` field, e.g. ``epochs=5``.
        """
        config = resolve_config(preset, **overrides)
        images, labels = load_images_and_labels(data, image_column=image_column, label_column=label_column)
        if init is not None:
            num_classes = num_classes or init.num_classes
            init.check_images(images, name="data")
        elif num_classes is None:
            num_classes = int(labels.max()) + 1
        labels = to_labels(labels, images.shape[0], num_classes)
        result = fit_two_stage(
            images,
            labels,
            num_classes=num_classes,
            config=config,
            accelerator=accelerator,
            init=None if init is None else (init.stage1, init.stage2),
            checkpoint_dir=checkpoint_dir,
            progress=progress,
        )
        purifier = cls(result.stage1, result.stage2, device=next(result.stage1.parameters()).device)
        purifier.history = result.history
        return purifier

    # --- saving and loading ---------------------------------------------------------
    def save_pretrained(self, save_directory: str | os.PathLike) -> Path:
        """Write ``stage1/`` and ``stage2/`` (``config.json`` + ``model.safetensors`` each)."""
        root = Path(save_directory)
        for folder, model in zip(STAGE_FOLDERS, (self.stage1, self.stage2)):
            model.save_pretrained(root / folder)
        return root

    @classmethod
    def from_folder(cls, directory: str | os.PathLike, **kwargs: Any) -> DVAEPurify:
        """Load a purifier written by :meth:`save_pretrained`."""
        root = Path(directory)
        stages = [DVAE.from_pretrained(root / folder) for folder in STAGE_FOLDERS]
        return cls(*stages, **kwargs)

    # --- purification ---------------------------------------------------------------
    def check_images(self, images: Any, *, name: str = "images") -> torch.Tensor:
        """``images`` as a float NCHW batch, checked against the model's channels and size."""
        return to_float_images(images, channels=self.in_channels, image_size=self.image_size, name=name)[0]

    def _models(self) -> tuple[DVAE, DVAE]:
        device = self.device
        if device.type != "cpu" and torch.utils.data.get_worker_info() is not None:
            warnings.warn(
                f"DVAEPurify runs on the CPU inside DataLoader workers instead of {device}; "
                "use PurifiedDataset to purify once on the accelerator",
                RuntimeWarning,
                stacklevel=3,
            )
            device = torch.device("cpu")
        if next(self.stage1.parameters()).device != device:
            self.stage1.to(device)
            self.stage2.to(device)
        return self.stage1, self.stage2

    def purify(self, images: Any, labels: Any = None) -> torch.Tensor:
        """Purify a batch (or one image) and return a float tensor in [0, 1] of the same shape."""
        batch, was_single = to_float_images(images, channels=self.in_channels, image_size=self.image_size)
        stage1, stage2 = self._models()
        options = {"batch_size": self.batch_size, "sample": self.sample, "seed": self.seed}
        if labels is None:
            if not self._warned_label_free:
                warnings.warn(
                    "DVAEPurify got no label: using the label-free path (stage-2 reconstruction of the "
                    "input), which removes less of a class-wise perturbation. Pass (image, label) pairs, "
                    "e.g. with a v2 Compose or PurifiedDataset.",
                    UserWarning,
                    stacklevel=3,
                )
                self._warned_label_free = True
            out = reconstruct(stage2, batch, **options)
        else:
            out = purify_two_stage(stage1, stage2, batch, to_labels(labels, batch.shape[0], self.num_classes),
                                   **options)
        return out[0] if was_single else out

    def transform(self, inpt: Any, params: dict[str, Any]) -> Any:
        purified = self.purify(inpt, params.get("labels"))
        if isinstance(inpt, PIL.Image.Image):
            return F.to_pil_image(purified)
        if isinstance(inpt, tv_tensors.Image):
            return tv_tensors.wrap(purified, like=inpt)
        return purified

    def forward(self, *inputs: Any) -> Any:
        """Purify the image(s) in ``inputs``, using a label found beside them; pass the rest through."""
        flat_inputs, spec = tree_flatten(inputs if len(inputs) > 1 else inputs[0])
        needs_transform = self._needs_transform_list(flat_inputs)
        candidates = [item for item, needed in zip(flat_inputs, needs_transform) if not needed and _is_label(item)]
        params = {"labels": candidates[0] if candidates else None}
        outputs = [self.transform(item, params) if needed else item for item, needed in zip(flat_inputs, needs_transform)]
        return tree_unflatten(outputs, spec)
