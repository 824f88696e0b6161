"""The two-stage D-VAE training loop, run through Accelerate.

Stage 1 fits a D-VAE with a tight KL bound on the poisoned images and subtracts its perturbation branch
(``x1 = clamp(x - p)``); stage 2 fits a fresh D-VAE with a looser bound on ``x1``. The recipe is Yu et al.'s
(ICML 2024, :data:`~dvae_transform.metadata.PAPER_URL`); README.md, "Training presets", lists its settings.
Each stage reads a :class:`~dvae_transform.training.sets.TrainingSet` in the batches of
:func:`~dvae_transform.training.sets.epoch_plan` and synchronises once per epoch. Same seed, same device and
process count: the same weights, bit for bit.
"""

from __future__ import annotations

import dataclasses
import math
import os
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from accelerate import Accelerator
from accelerate.state import AcceleratorState
from tqdm.auto import tqdm

from ..config import FitConfig
from ..distributed import broadcast, gather, release, state_kept, sync_buffers
from ..fingerprint import fingerprint, weights_hash
from ..images import to_labels
from ..log import bar_options, logger
from ..model import DVAE
from ..validation import check_type
from ..workers import worker_errors
from .losses import dvae_loss, psnr
from .resume import ResumeError, ResumeState, check_record
from .sets import TrainingSet, epoch_plan

METRICS = ("loss", "kl", "psnr", "psnr_combined", "perturbation_power")
RANK_SEED_STRIDE = 1_000_003  # process r draws its latent noise from seed + r * stride
INFERRED_CLASSES_FREE = 1000  # so many classes may be inferred from the labels whatever the number of images


@dataclass
class FitResult:
    """The two fitted stages and one metrics record per epoch."""

    stage1: DVAE
    stage2: DVAE
    history: list[dict[str, float]] = field(default_factory=list)


def build_model(config: FitConfig, *, in_channels: int, image_size: int, num_classes: int, seed: int) -> DVAE:
    """A freshly initialised D-VAE for ``config``, independent of the global RNG state."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = DVAE(
            in_channels=in_channels,
            image_size=image_size,
            num_classes=num_classes,
            width=config.width,
            latent_dim=config.latent_dim,
            embedding_target=config.embedding_target,
        )
    if config.zero_init_perturbation:
        last = model.perturbation_decoder[-2]  # the last convolution (before the identity output)
        torch.nn.init.zeros_(last.weight)
        torch.nn.init.zeros_(last.bias)
    return model


def _adam(model: torch.nn.Module, lr: float, device: torch.device) -> torch.optim.Adam:
    """Adam with the fused kernel on CUDA, the multi-tensor one elsewhere (the same update rule)."""
    options = {"fused": True} if device.type == "cuda" else {"foreach": True}
    return torch.optim.Adam(model.parameters(), lr=lr, **options)


def _memory_format(device: torch.device) -> torch.memory_format:
    """Channels-last on CUDA, where cuDNN's convolutions are faster in it; the default layout elsewhere."""
    return torch.channels_last if device.type == "cuda" else torch.contiguous_format


def _batch_metrics(terms: Any, output: Any, x: torch.Tensor) -> torch.Tensor:
    combined = torch.clamp(output.reconstruction.float() + output.perturbation.float(), 0, 1)
    values = (terms.total.detach(), terms.kl, psnr(output.reconstruction, x), psnr(combined, x),
              terms.perturbation_power)
    return torch.stack([value.float() for value in values]) * len(x)


class DivergedError(ValueError):
    """A fit's weights stopped being finite numbers: the training diverged (its settings, such as lr, are unfit)."""


def check_finite(model: torch.nn.Module, *, stage: int, epoch: int, config: FitConfig) -> None:
    """Raise :class:`DivergedError` if any weight or buffer of ``model`` is NaN or infinite after ``epoch`` (0-based).

    Run at the end of every epoch of every stage, before the epoch's resume state is saved, so a diverged fit is
    never returned, saved or resumed from.
    """
    for name, value in model.state_dict().items():
        if value.is_floating_point() and not bool(torch.isfinite(value).all()):
            raise DivergedError(
                f"stage {stage} diverged in epoch {epoch + 1}/{config.epochs}: its weights are no longer finite "
                f"(NaN or inf, first in {name!r}); lower the learning rate "
                f"(lr={config.lr:g}, e.g. lr={config.lr / 10:g}) or the gradient clip (grad_clip={config.grad_clip:g})"
            )


class _StageTraining:
    """One stage's training, set up once (model, optimizer, schedule, sampling generator, resume state), then
    run one epoch at a time (:meth:`epoch`) and handed back by :meth:`finish`."""

    def __init__(self, model: DVAE, data: TrainingSet, *, stage: int, config: FitConfig, accelerator: Accelerator,
                 resume_dir: Path | None, perturbation_branch: bool, compile: bool) -> None:
        self.data, self.stage, self.config, self.accelerator = data, stage, config, accelerator
        self.perturbation_branch = perturbation_branch
        self.resume = ResumeState(resume_dir, stage)
        device, rank = accelerator.device, accelerator.process_index
        self.memory_format = _memory_format(device)
        model = model.to(device, memory_format=self.memory_format)
        self.model, self.optimizer = accelerator.prepare(model, _adam(model, config.lr, device))
        total_steps = config.epochs * len(self.plan(0))
        self.scheduler = torch.optim.lr_scheduler.LambdaLR(
            self.optimizer, lambda step: 0.5 * (1.0 + math.cos(math.pi * min(step, total_steps) / total_steps))
        )
        self.generator = torch.Generator(device).manual_seed(config.seed * 7 + stage + RANK_SEED_STRIDE * rank)
        self.first_epoch = self.resume.restore(accelerator.unwrap_model(self.model), self.optimizer,
                                               self.scheduler, self.generator, rank)
        self.step_model = torch.compile(self.model) if compile else self.model
        self.model.train()

    def plan(self, epoch: int) -> list[torch.Tensor]:
        """This process's batches of ``epoch`` (:func:`~dvae_transform.training.sets.epoch_plan`)."""
        return epoch_plan(len(self.data), self.config.batch_size, seed=self.config.seed + self.stage, epoch=epoch,
                          rank=self.accelerator.process_index, world=self.accelerator.num_processes)

    def epoch(self, epoch: int, progress: bool) -> dict[str, float]:
        """Train epoch ``epoch`` (0-based), then close it (:meth:`_end_epoch`); returns its metrics record."""
        steps = self.plan(epoch)
        device = self.accelerator.device
        sums = torch.zeros(len(METRICS) + 1, device=device, dtype=torch.float64 if device.type != "mps" else None)
        started = time.perf_counter()
        show = progress and self.accelerator.is_local_main_process
        bar = tqdm(total=len(steps), desc=f"stage {self.stage} epoch {epoch + 1}/{self.config.epochs}",
                   **bar_options(show), leave=False)
        self._train(steps, epoch, sums, bar)
        bar.close()
        return self._end_epoch(epoch, sums, started)

    def _train(self, steps: list[torch.Tensor], epoch: int, sums: torch.Tensor, bar: tqdm) -> None:
        """One optimizer step per batch of ``steps``, adding the batch's metrics and image count to ``sums``."""
        config, accelerator = self.config, self.accelerator
        kl_bound = config.kl_bounds[self.stage - 1]
        penalize_perturbation = epoch >= round(config.epochs * config.warmup_fraction)  # after the warm-up
        with worker_errors():
            for x, y in self.data.batches(steps, accelerator.device):
                x = x.contiguous(memory_format=self.memory_format)
                output = self.step_model(x, y, sample=True, generator=self.generator)
                terms = dvae_loss(output, x, kl_bound=kl_bound, penalize_perturbation=penalize_perturbation,
                                  perturbation_branch=self.perturbation_branch)
                self.optimizer.zero_grad(set_to_none=True)
                accelerator.backward(terms.total)
                accelerator.clip_grad_norm_(self.model.parameters(), config.grad_clip)
                self.optimizer.step()
                self.scheduler.step()
                with torch.no_grad():
                    sums[:-1] += _batch_metrics(terms, output, x).to(sums.dtype)
                    sums[-1] += len(x)
                bar.update()

    def _end_epoch(self, epoch: int, sums: torch.Tensor, started: float) -> dict[str, float]:
        """The epoch's metrics over all processes, logged; the weights checked finite, then saved as resume state."""
        accelerator, stage = self.accelerator, self.stage
        *totals, count = accelerator.reduce(sums, reduction="sum").tolist()  # the epoch's one synchronisation
        seconds = time.perf_counter() - started
        record = {key: value / count for key, value in zip(METRICS, totals)}
        record.update(stage=stage, epoch=epoch + 1, seconds=seconds, images_per_s=count / seconds)
        if accelerator.is_main_process:
            logger.info("stage %d epoch %d/%d: loss %.4f kl %.2f psnr %.2f dB (%.0f img/s)", stage, epoch + 1,
                        self.config.epochs, record["loss"], record["kl"], record["psnr"], record["images_per_s"])
        check_finite(accelerator.unwrap_model(self.model), stage=stage, epoch=epoch, config=self.config)
        states = gather(accelerator, [self.generator.get_state()]) if self.resume.path is not None else []
        if accelerator.is_main_process:
            self.resume.save(accelerator.unwrap_model(self.model), self.optimizer, self.scheduler, states, epoch)
        accelerator.wait_for_everyone()
        return record

    def finish(self) -> DVAE:
        """The trained model, unwrapped, contiguous and in eval mode, with the main process's buffers everywhere."""
        accelerator = self.accelerator
        trained = accelerator.unwrap_model(self.model, keep_fp32_wrapper=False)
        trained = trained.to(memory_format=torch.contiguous_format)
        sync_buffers(accelerator, trained)  # batch-norm statistics: the main process's, in every process
        release(accelerator, self.model, self.optimizer)
        return trained.eval()


def train_stage(
    model: DVAE,
    data: TrainingSet,
    *,
    stage: int,
    config: FitConfig,
    accelerator: Accelerator,
    resume_dir: Path | None = None,
    progress: bool = True,
    perturbation_branch: bool = True,
    compile: bool = False,
) -> tuple[DVAE, list[dict[str, float]]]:
    """Fit one D-VAE stage on the training set ``data`` (:mod:`.sets`, :mod:`.streamed`); returns the model and metrics.

    ``perturbation_branch=False`` trains the image path alone (a plain rate-constrained VAE).
    ``compile=True`` runs the model through ``torch.compile``.
    """
    training = _StageTraining(model, data, stage=stage, config=config, accelerator=accelerator,
                              resume_dir=resume_dir, perturbation_branch=perturbation_branch, compile=compile)
    history = [training.epoch(epoch, progress) for epoch in range(training.first_epoch, config.epochs)]
    return training.finish(), history


def _cpu_launch() -> bool:
    """A launch of several processes on a machine without CUDA, which Accelerate distributes only with ``cpu=True``."""
    return not torch.cuda.is_available() and int(os.environ.get("WORLD_SIZE", "1")) > 1


@contextmanager
def accelerator_for(config: FitConfig, accelerator: Accelerator | None = None) -> Iterator[Accelerator]:
    """``accelerator`` as it is, or for the block a new one with the config's mixed precision.

    Accelerate keeps one state per process. A state this creates is cleared after the block, so the
    process is left as it was found; an existing one with another precision belongs to a live
    Accelerator and is an error, never reset.
    """
    if accelerator is not None:
        yield accelerator
        return
    state = AcceleratorState._shared_state
    if state and state.get("_mixed_precision") != config.mixed_precision:
        raise ValueError(
            f"this process already has an Accelerator with mixed_precision={state.get('_mixed_precision')!r} "
            f"(Accelerate allows one per process), the fit asks for {config.mixed_precision!r}: pass that "
            f"Accelerator as accelerator=, or mixed_precision={state.get('_mixed_precision')!r}"
        )
    with state_kept():
        yield Accelerator(mixed_precision=config.mixed_precision, cpu=_cpu_launch())


def inferred_classes(labels: torch.Tensor) -> int:
    """The class count the labels imply (largest label + 1), refused when it is far beyond what the data can fill:
    more than ``max(len(labels), INFERRED_CLASSES_FREE)`` classes (a stray id would size the class embedding)."""
    largest = int(labels.max())
    if largest + 1 > max(len(labels), INFERRED_CLASSES_FREE):
        raise ValueError(
            f"labels go up to {largest} (dataset item {int(labels.argmax())}), which makes {largest + 1} classes "
            f"for {len(labels)} images; relabel the classes 0 to K-1, or pass num_classes= explicitly if the ids are "
            "meant"
        )
    return largest + 1


def _check_shapes(data: TrainingSet, num_classes: int, init: tuple[DVAE, DVAE] | None) -> None:
    """Refuse data the stages cannot be fitted on, before any training."""
    needed = int(data.labels.max()) + 1
    channels, height, width = data.item_shape
    if height != width:
        raise ValueError(
            f"images are {height}x{width} (height x width); D-VAE fits square images: resize them first, "
            f"e.g. torchvision.transforms.v2.Resize({min(height, width)}) then v2.CenterCrop({min(height, width)})"
        )
    if init is not None:
        start = init[0]
        if start.num_classes != num_classes or needed > start.num_classes:
            raise ValueError(
                f"warm start: the starting weights have {start.num_classes} classes, this fit needs "
                f"{max(num_classes, needed)} (labels up to {needed - 1}); "
                "a warm start keeps the class count (its class embedding is learned per class): fit from scratch "
                "(no init) or use weights fitted for the same classes"
            )
        if (start.in_channels, start.image_size) != (channels, height):
            raise ValueError(
                f"warm start: the starting weights take {start.in_channels}x{start.image_size}x{start.image_size} "
                f"images, the data holds {channels}x{height}x{width}"
            )


def _check_record(root: Path, data: TrainingSet, config: FitConfig, num_classes: int,
                  init: tuple[DVAE, DVAE] | None, accelerator: Accelerator) -> None:
    """Record (or compare) what ``root`` holds the resume state of; every process raises on a mismatch, before the fit's
    first collective operation but the one that shares the verdict."""
    problem = None
    if accelerator.is_main_process:
        record = {
            "config": dataclasses.asdict(config),
            "num_classes": num_classes,
            "data": fingerprint(data.identity()),
            "init": None if init is None else weights_hash(*init),
            "processes": accelerator.num_processes,  # each saves its own sampling state: a resume needs as many
        }
        try:
            check_record(root, record)
        except ResumeError as error:
            problem = str(error)
    problem = broadcast(accelerator, problem)
    if problem is not None:
        raise ResumeError(problem)


def fit_two_stage(
    data: TrainingSet,
    *,
    num_classes: int | None = None,
    config: FitConfig,
    accelerator: Accelerator | None = None,
    init: tuple[DVAE, DVAE] | None = None,
    resume_dir: str | os.PathLike | None = None,
    progress: bool = True,
    compile: bool = False,
) -> FitResult:
    """Train stage 1 on ``data``, purify it, train stage 2 on the result.

    ``data`` is a training set: :mod:`dvae_transform.training.streamed` builds one from any input,
    :class:`~dvae_transform.training.sets.TensorSet` holds tensors. ``num_classes`` defaults to ``init``'s, else
    to the largest label + 1. ``init`` warm-starts both stages from existing models (their architecture
    wins over ``config``'s width/latent settings; channels, size and classes must match the data).
    ``resume_dir`` saves every epoch and resumes a killed fit where it stopped; it records the
    data's fingerprint and the warm start, and refuses to resume a fit of other data or settings.
    ``compile=True`` runs the models through ``torch.compile``. The stage-1 output is kept like the
    data: in memory, or written to disk in shards (see :mod:`dvae_transform.training.streamed`).
    """
    check_type(compile, "compile", bool)
    with accelerator_for(config, accelerator) as accelerator:
        return _fit_two_stage(data, num_classes, config, accelerator, init, resume_dir, progress, compile)


def _fit_two_stage(data: TrainingSet, num_classes: int | None, config: FitConfig, accelerator: Accelerator,
                   init: tuple[DVAE, DVAE] | None, resume_dir: str | os.PathLike | None, progress: bool,
                   compile: bool) -> FitResult:
    """:func:`fit_two_stage` with its accelerator."""
    if num_classes is None:
        num_classes = init[0].num_classes if init is not None else inferred_classes(data.labels)
    _check_shapes(data, num_classes, init)
    to_labels(data.labels, len(data), num_classes)  # labels in [0, num_classes), or an error naming them
    root = None if resume_dir is None else Path(resume_dir)
    if root is not None:
        _check_record(root, data, config, num_classes, init, accelerator)
    channels, size, _ = data.item_shape
    history: list[dict[str, float]] = []
    models: list[DVAE] = []
    stage_data = data
    try:
        for stage in (1, 2):
            if init is None:
                model = build_model(config, seed=config.seed + 1000 * stage, in_channels=channels, image_size=size,
                                    num_classes=num_classes)
            else:
                model = DVAE(**init[stage - 1].config)
                model.load_state_dict(init[stage - 1].state_dict())
            trained, stage_history = train_stage(
                model, stage_data, stage=stage, config=config, accelerator=accelerator,
                resume_dir=root, progress=progress, compile=compile,
            )
            history.extend(stage_history)
            models.append(trained)
            if stage == 1 and ResumeState(root, 2).finished_epochs() < config.epochs:
                stage_data = data.stage1_output(trained, accelerator, config.subtract)
    finally:
        if stage_data is not data:
            stage_data.close()
    return FitResult(models[0], models[1], history)
