"""``DVAEPurify``: the two fitted D-VAE stages as a torchvision transform.

It is a ``torchvision.transforms.v2.Transform`` (in a v2 ``Compose`` it receives the image and the label together
and passes the label through) and a plain callable for v1 ``transforms.Compose``. Batches go through the same call.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import PIL.Image
import torch
from accelerate import Accelerator
from huggingface_hub import ModelCard, ModelHubMixin
from torch.utils._pytree import tree_flatten, tree_unflatten
from torchvision import tv_tensors
from torchvision.transforms import v2
from torchvision.transforms.v2 import functional as F

from .config import FitConfig, resolve_config
from .deprecation import renamed_attribute, renamed_keywords
from .images import apply_to_batch, to_float_images, to_labels
from .labels import LabelsGetter, check_labels_getter, default_labels_getter
from .log import warn
from .metadata import hub_metadata
from .model import DVAE
from .precision import encode
from .pretrained.registry import Registry
from .pretrained.resolve import LoadedFrom, load_pretrained
from .purify import (
    DEFAULT_SUBTRACTION,
    MAX_BATCH_SIZE,
    SUBTRACTION_RULES,
    default_batch_size,
    purify_two_stage,
    reconstruct,
)
from .saved.card import render_model_card, training_summary
from .saved.layout import fetch_purifier, load_history, load_stages, save_purifier, save_training
from .shortcut import ShortcutReport
from .training.loop import accelerator_for
from .training.restarts import Attempts
from .training.streamed import training_set
from .validation import check_choice, check_device, check_int, check_type
from .weights import AtomicSave, HubDownload


class DVAEPurify(
    AtomicSave,  # save_pretrained written all at once
    ModelHubMixin,  # before v2.Transform: v2.Transform.__init_subclass__ takes no class keywords
    v2.Transform,
    **hub_metadata(),
):
    """Remove unlearnable perturbations with a fitted two-stage D-VAE.

    As a transform, call it on ``(image, label)``: one CHW image or an NCHW batch
    (tensor or ``tv_tensors.Image``, uint8, uint16 or float in [0, 1]) or a PIL image (each mode
    read by the rule of :mod:`dvae_transform.images`), with an int label or a 1-D tensor of labels.
    Like every v2 transform it returns its inputs with the image(s) replaced:
    ``purifier(x, y) -> (purified, y)``; PIL in, PIL out (mode ``L`` or ``RGB``); tensors in,
    float tensors in [0, 1] out. The label is found as torchvision's ``MixUp`` finds it
    (:func:`default_labels_getter`); a sample without one is an error unless ``labels_getter=None``
    (a v1 pipeline) asks for the label-free path: the stage-2 reconstruction of the input, with a
    one-time warning. A label that is there but is not an integer (a float, a string, a bool) is an error.
    :meth:`purify` is the plain batch API: ``purifier.purify(x, y) -> purified`` (numpy
    arrays and lists of PIL images accepted too), shared with the baselines (:class:`Defense`).
    :meth:`replace` gives a copy with other purification settings.

    Args:
        stage1: the stage-1 D-VAE (tight KL bound).
        stage2: the stage-2 D-VAE (trained on stage-1 output).
        batch_size: images per micro-batch (default: :attr:`micro_batch`, from the image size and width).
        sample: draw the latent instead of using its mean (the authors' choice).
        seed: seeds the draw when ``sample`` is set.
        subtract: ``"raw"`` (published) or ``"effect"`` (:func:`~dvae_transform.purify.perturbation_estimate`).
        device: where to run; models move there on first use.
        labels_getter: how ``forward`` finds the label in a sample: ``"default"``
            (:func:`default_labels_getter`), a callable taking the sample, or ``None`` (no label: the
            label-free path).
    """

    name = "dvae"
    loaded_from: LoadedFrom | None = None  # where from_pretrained loaded it from (None: fitted or built here)
    source = renamed_attribute("source", "loaded_from")
    fit_config: FitConfig | None = None  # the settings of the fit that made it (None: loaded or built here)

    def __init__(
        self,
        stage1: DVAE,
        stage2: DVAE,
        *,
        batch_size: int | None = None,
        sample: bool = False,
        seed: int | None = None,
        subtract: str = DEFAULT_SUBTRACTION,
        device: str | torch.device = "cpu",
        labels_getter: str | LabelsGetter | None = "default",
    ) -> None:
        super().__init__()
        if any(stage1.config[key] != stage2.config[key] for key in ("in_channels", "image_size", "num_classes")):
            raise ValueError(f"stage1 and stage2 were built for different data: {stage1.config} vs {stage2.config}")
        self.stage1, self.stage2 = stage1.eval(), stage2.eval()
        if batch_size is not None:
            check_int(batch_size, "batch_size", low=1, high=MAX_BATCH_SIZE)
        self.batch_size = batch_size
        self.sample = check_type(sample, "sample", bool)
        self.seed = check_type(seed, "seed", int, type(None))
        self.subtract = check_choice(subtract, "subtract", SUBTRACTION_RULES)
        self.device = check_device(device)
        self.labels_getter = check_labels_getter(labels_getter)
        self.history: list[dict[str, float]] = []
        self.checks: dict[str, ShortcutReport] = {}
        self.attempts = 0  # fits run by DVAEPurify.fit (restarts included); 0 for loaded weights
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

    @property
    def micro_batch(self) -> int:
        """Images per micro-batch: ``batch_size``, else :func:`~dvae_transform.purify.default_batch_size`
        (activations within 1 GiB)."""
        return default_batch_size(self.stage1, self.stage2) if self.batch_size is None else self.batch_size

    def replace(self, **options: Any) -> DVAEPurify:
        """A purifier on the same stages with other ``batch_size``, ``sample``, ``seed``, ``subtract``, ``device``
        or ``labels_getter``."""
        keys = ("batch_size", "sample", "seed", "subtract", "device", "labels_getter")
        current = {key: getattr(self, key) for key in keys}
        purifier = type(self)(self.stage1, self.stage2, **{**current, **options})
        purifier.history, purifier.loaded_from, purifier.fit_config = self.history, self.loaded_from, self.fit_config
        purifier.checks = self.checks
        return purifier

    def __repr__(self) -> str:
        """One line, like torchvision's transforms (the stages' layers are left out)."""
        return f"{type(self).__name__}({self.extra_repr()})"

    def extra_repr(self) -> str:
        return (f"in_channels={self.in_channels}, image_size={self.image_size}, num_classes={self.num_classes}, "
                f"sample={self.sample}, subtract={self.subtract!r}, device={self.device}")

    # --- fitting -----------------------------------------------------------------------
    @classmethod
    @renamed_keywords(checkpoint_dir="resume_dir")
    def fit(
        cls,
        data: Any,
        num_classes: int | None = None,
        preset: str | FitConfig = "fast",
        *,
        image_column: str | None = None,
        label_column: str | None = None,
        init: DVAEPurify | str | os.PathLike | None = None,
        accelerator: Accelerator | None = None,
        resume_dir: str | os.PathLike | None = None,
        progress: bool = True,
        stream: bool | None = None,
        num_workers: int | None = None,
        compile: bool = False,
        check: bool = True,
        validation: Any = None,
        restarts: int = 1,
        **overrides: Any,
    ) -> DVAEPurify:
        """Fit both stages on poisoned ``data`` and return a ready purifier.

        Which start to choose (zero-shot, warm start, from scratch): see the README.

        Args:
            data: an ``(images, labels)`` pair (NCHW float in [0, 1] or uint8), a torch ``Dataset`` or
                ``IterableDataset`` of ``(image, label)``, or a Hugging Face ``datasets.Dataset`` or
                ``IterableDataset`` (``streaming=True``).
            num_classes: defaults to ``max(label) + 1`` (or ``init``'s class count).
            preset: ``"fast"`` (CPU-friendly) or ``"paper"`` (published settings), or a ``FitConfig``.
            image_column, label_column: column names for a Hugging Face dataset.
            init: warm-start both stages from a purifier's weights: a ``DVAEPurify``, or anything
                :meth:`from_pretrained` accepts (a folder, a Hub repo id, an official pretrained name).
            accelerator: an ``accelerate.Accelerator``, used and left as it was (default: one for the fit, with
                ``cpu=True`` in a multi-process launch without CUDA).
            resume_dir: save every epoch here and resume from it.
            progress: show progress bars.
            stream: read the data in batches from its source instead of holding it in memory (default:
                only inputs over 1 GiB and iterable datasets; :mod:`dvae_transform.training.streamed`).
            num_workers: DataLoader workers reading a dataset (default: up to 4, one per CPU).
            compile: run the models through ``torch.compile`` (faster steps after a compilation).
            check: run :func:`~dvae_transform.check_shortcut` on (a sample of) the training set before and
                after purification; the reports land in ``purifier.checks`` and a shortcut left in the
                output is a warning.
            validation: clean labelled images of the same kind (e.g. your validation split), in any form
                ``data`` takes: the check then compares with them, which also catches textures.
            restarts: when the check finds a shortcut left in the output, fit again from another seed up to
                this many times (a fit either separates the poison or it does not, and which one depends on
                the seed: BENCHMARKS.md, "Seeds"); the first attempt whose output passes is returned.
            **overrides: any ``FitConfig`` field, e.g. ``epochs=5``.
        """
        config = resolve_config(preset, **overrides)
        check_int(restarts, "restarts", low=0)
        init = cls._warm_start(init)
        with accelerator_for(config, accelerator) as accelerator:
            train_set = training_set(data, image_column=image_column, label_column=label_column, stream=stream,
                                     num_workers=num_workers, accelerator=accelerator, resume_dir=resume_dir,
                                     progress=progress)
            fits = Attempts(train_set, config, accelerator, num_classes=num_classes,
                            init=None if init is None else (init.stage1, init.stage2),
                            resume_dir=resume_dir, progress=progress, compile=compile)
            return fits.run(cls, check=check, validation=validation, restarts=restarts)

    # --- saving and loading ---------------------------------------------------------
    # ``save_pretrained`` (:class:`AtomicSave`: the folder is replaced at once) and ``push_to_hub`` come from
    # ``ModelHubMixin``; they write the layout below plus a README.md model card (kept if already there).

    def _save_pretrained(self, save_directory: Path) -> None:
        """Write ``config.json`` (purification defaults), ``stage1/``, ``stage2/`` (config + safetensors) and, for a
        fitted purifier, ``training.json`` (its settings and history)."""
        save_purifier(save_directory, (self.stage1, self.stage2), batch_size=self.batch_size, sample=self.sample,
                      seed=self.seed, subtract=self.subtract)
        save_training(save_directory, self.fit_config, self.history, {k: r.to_dict() for k, r in self.checks.items()})

    @renamed_keywords(recipe="training_settings")
    def generate_model_card(self, **card_kwargs: Any) -> ModelCard:
        """The README.md model card; ``card_kwargs``: see :func:`~dvae_transform.saved.card.render_model_card`
        (``training_settings`` defaults to a fitted purifier's settings and final metrics)."""
        card_kwargs.setdefault("training_settings", training_summary(self.fit_config, self.history, self.checks))
        return render_model_card(self._hub_mixin_info.model_card_data, in_channels=self.in_channels,
                                 image_size=self.image_size, num_classes=self.num_classes, **card_kwargs)

    @classmethod
    def from_pretrained(
        cls,
        repo_id_or_path: str | os.PathLike,
        *,
        revision: str | None = None,
        cache_dir: str | os.PathLike | None = None,
        local_files_only: bool = False,
        token: str | bool | None = None,
        force_download: bool = False,
        registry: Registry | None = None,
        **purifier_kwargs: Any,
    ) -> DVAEPurify:
        """Load a purifier from a local folder, a Hub repo, or an official pretrained purifier by name.

        An official name loads its Hub repo at the pinned revision when published and reachable, otherwise
        (not published, offline, Hub down) the sha256-verified copy bundled with the package; :attr:`loaded_from`
        says which (every case: :mod:`dvae_transform.pretrained.resolve`). Hub files go through the Hugging
        Face cache. Only safetensors weights are read, after every config is checked.

        Args:
            repo_id_or_path: a folder written by ``save_pretrained``, a Hub repo id (``"org/name"``) or
                an official pretrained name (:func:`dvae_transform.list_pretrained`).
            revision: a branch, tag or commit sha on the Hub (with a name: of its repo, never the bundled copy).
            cache_dir: the cache folder (default: the shared Hugging Face cache).
            local_files_only: use the cache (and bundled copies) only, never the network.
            token: a Hub token for private repos (default: the logged-in user's).
            force_download: download again even if the files are cached.
            registry: where names are looked up (default: the package's; ``Registry(folder)`` reads another).
            **purifier_kwargs: override the saved ``batch_size``, ``sample``, ``seed``, ``subtract``; or ``device``,
                ``labels_getter``.
        """
        hub_load = super().from_pretrained  # on the fetched folder, whose configs are checked before it reads them
        hub = HubDownload(revision=revision, cache_dir=cache_dir, force_download=force_download,
                          local_files_only=local_files_only, token=token)

        def load(location: str, download: HubDownload) -> DVAEPurify:
            return hub_load(fetch_purifier(location, download), **purifier_kwargs)

        purifier, purifier.loaded_from = load_pretrained(repo_id_or_path, load, hub, registry=registry)
        return purifier

    @classmethod
    def _from_pretrained(cls, *, model_id: str, **keywords: Any) -> DVAEPurify:
        """The mixin's loading hook, on the folder :meth:`from_pretrained` fetched and checked (so its Hub download
        keywords are spent)."""
        purifier = cls(*load_stages(Path(model_id)), **HubDownload.split(keywords)[1])
        purifier.history = load_history(Path(model_id))
        return purifier

    @classmethod
    def _warm_start(cls, init: DVAEPurify | str | os.PathLike | None) -> DVAEPurify | None:
        """``fit``'s ``init``: a purifier as it is, or one loaded with :meth:`from_pretrained`."""
        if init is None or isinstance(init, DVAEPurify):
            return init
        if isinstance(init, (str, os.PathLike)):
            return cls.from_pretrained(init)
        raise TypeError(
            f"init must be a DVAEPurify, a folder, a Hub repo id or an official pretrained name, "
            f"got {type(init).__name__}"
        )

    # --- purification ---------------------------------------------------------------
    def check_images(self, images: Any, *, name: str = "images") -> torch.Tensor:
        """``images`` as a float NCHW batch, checked against the model's channels and size."""
        return to_float_images(images, channels=self.in_channels, image_size=self.image_size, name=name)

    def _apply(self, fn: Any, recurse: bool = True) -> DVAEPurify:
        # ``.to(device)`` / ``.cuda()`` / ``.cpu()`` move the stages; make the move stick.
        super()._apply(fn, recurse)
        self.device = next(self.stage1.parameters()).device
        return self

    def _models(self) -> tuple[DVAE, DVAE]:
        """Both stages on ``self.device``, or on the CPU inside DataLoader workers (with a warning)."""
        device = self.device
        in_worker = torch.utils.data.get_worker_info() is not None
        if device.type != "cpu" and in_worker:
            warn(
                f"DVAEPurify runs on the CPU inside DataLoader workers instead of {device}; "
                "use PurifiedDataset to purify once on the accelerator",
                RuntimeWarning,
            )
            device = torch.device("cpu")
        current = next(self.stage1.parameters()).device
        if current != device:
            try:
                self.stage1.to(device)
                self.stage2.to(device)
            except RuntimeError as error:
                if not in_worker:
                    raise
                raise RuntimeError(
                    f"DVAEPurify's weights are on {current}, which a forked DataLoader worker cannot read; "
                    "purify before loading with PurifiedDataset, keep the purifier on the CPU until the "
                    "workers have started, or use DataLoader(..., multiprocessing_context='spawn')"
                ) from error
        return self.stage1, self.stage2

    def purify(self, images: Any, labels: Any = None) -> torch.Tensor:
        """Purify a batch (or one image) and return a float tensor in [0, 1] of the same shape.

        ``images``: a CHW image or NCHW batch (tensor, or numpy also HWC / NHWC), PIL image(s), uint8,
        uint16 or float in [0, 1] (see :mod:`dvae_transform.images`). ``labels``: an int or an integer
        tensor with one label per image; without labels the label-free path runs (stage-2
        reconstruction of the input) and warns once.
        """
        options = {"batch_size": self.micro_batch, "sample": self.sample, "seed": self.seed}

        def purify_batch(batch: torch.Tensor) -> torch.Tensor:
            stage1, stage2 = self._models()
            if labels is not None:
                batch_labels = to_labels(labels, batch.shape[0], self.num_classes)
                return purify_two_stage(stage1, stage2, batch, batch_labels, subtract=self.subtract, **options)
            if not self._warned_label_free:
                warn(
                    "DVAEPurify got no label: using the label-free path (stage-2 reconstruction of the "
                    "input), which removes less of a class-wise perturbation. Pass (image, label) pairs, "
                    "e.g. with a v2 Compose or PurifiedDataset.",
                    UserWarning,
                )
                self._warned_label_free = True
            return reconstruct(stage2, batch, **options)

        return apply_to_batch(purify_batch, images, channels=self.in_channels, image_size=self.image_size)

    def transform(self, inpt: Any, params: dict[str, Any]) -> Any:
        if isinstance(inpt, tv_tensors.TVTensor) and not isinstance(inpt, tv_tensors.Image):
            return inpt  # masks, boxes, videos: not images this model purifies
        purified = self.purify(inpt, params.get("labels"))
        if isinstance(inpt, PIL.Image.Image):
            return F.to_pil_image(encode(purified, "uint8"))
        if isinstance(inpt, tv_tensors.Image):
            return tv_tensors.wrap(purified, like=inpt)
        return purified

    def _find_label(self, sample: Any) -> Any:
        """The label of ``sample`` by :attr:`labels_getter` (None: the label-free path)."""
        if self.labels_getter is None:
            return None
        if self.labels_getter == "default":
            return default_labels_getter(sample)
        return self.labels_getter(sample)

    def forward(self, *inputs: Any) -> Any:
        """Purify the image(s) in ``inputs``, using a label found beside them; pass the rest through."""
        if not inputs:
            raise TypeError("DVAEPurify needs an image, or an (image, label) pair")
        sample = inputs if len(inputs) > 1 else inputs[0]
        flat_inputs, spec = tree_flatten(sample)
        needs_transform = self._needs_transform_list(flat_inputs)
        if not any(needs_transform):
            kinds = sorted({type(item).__name__ for item in flat_inputs})
            raise TypeError(
                f"DVAEPurify found no image in its input (got {', '.join(kinds)}); pass a torch.Tensor, "
                "tv_tensors.Image or PIL image (convert numpy arrays with v2.ToImage())"
            )
        params = {"labels": self._find_label(sample)}
        pairs = zip(flat_inputs, needs_transform)
        outputs = [self.transform(item, params) if needed else item for item, needed in pairs]
        return tree_unflatten(outputs, spec)
