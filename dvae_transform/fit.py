"""The two-stage D-VAE training loop, run through Accelerate.

Stage 1 fits a D-VAE with a tight KL bound on the poisoned images; its
perturbation branch is subtracted (``x1 = clamp(x - p)``). Stage 2 fits a fresh
D-VAE with a looser bound on ``x1``. See ``METHOD.md`` for the recipe.
"""

from __future__ import annotations

import dataclasses
import io
import json
import math
import os
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import torch
from accelerate import Accelerator
from accelerate.state import AcceleratorState, PartialState
from safetensors.torch import load_file, save
from torch.utils.data import DataLoader, Sampler, TensorDataset
from tqdm.auto import tqdm

from .config import FitConfig
from .files import atomic_write
from .losses import dvae_loss, psnr
from .model import DVAE
from .purify import remove_perturbation


@dataclass
class FitResult:
    """The two fitted stages and one metrics record per epoch."""

    stage1: DVAE
    stage2: DVAE
    history: list[dict[str, float]] = field(default_factory=list)


class EpochShuffle(Sampler[int]):
    """A permutation that depends only on (seed, epoch), so runs and resumes repeat exactly."""

    def __init__(self, size: int, seed: int) -> None:
        self.size, self.seed, self.epoch = size, seed, 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __iter__(self) -> Iterator[int]:
        generator = torch.Generator().manual_seed(self.seed * 100_003 + self.epoch)
        return iter(torch.randperm(self.size, generator=generator).tolist())

    def __len__(self) -> int:
        return self.size


def build_model(config: FitConfig, *, in_channels: int, image_size: int, num_classes: int, seed: int) -> DVAE:
    """A freshly initialised D-VAE for ``config``, independent of the global RNG state."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        return DVAE(
            in_channels=in_channels,
            image_size=image_size,
            num_classes=num_classes,
            width=config.width,
            latent_dim=config.latent_dim,
            embedding_target=config.embedding_target,
        )


class _StageCheckpoint:
    """Per-epoch checkpoint of one stage: weights in safetensors, optimizer state beside them."""

    def __init__(self, root: Path | None, stage: int) -> None:
        self.folder = None if root is None else root / f"stage{stage}"

    @property
    def final(self) -> Path | None:
        return None if self.folder is None else self.folder / "final"

    def finished_model(self) -> DVAE | None:
        if self.final is None or not (self.final / "config.json").is_file():
            return None
        return DVAE.from_pretrained(self.final)

    def save_epoch(self, model: DVAE, optimizer, scheduler, generator: torch.Generator, epoch: int) -> None:
        if self.folder is None:
            return
        self.folder.mkdir(parents=True, exist_ok=True)
        state = io.BytesIO()
        torch.save(
            {
                "epoch": epoch,
                "optimizer": optimizer.state_dict(),
                "scheduler": scheduler.state_dict(),
                "generator": generator.get_state(),
            },
            state,
        )
        atomic_write(self.folder / "last.safetensors", save({k: v.contiguous() for k, v in model.state_dict().items()}))
        atomic_write(self.folder / "last_state.pt", state.getvalue())

    def restore(self, model: DVAE, optimizer, scheduler, generator: torch.Generator) -> int:
        """Load the last epoch's state if there is one; returns the next epoch to run."""
        if self.folder is None or not (self.folder / "last_state.pt").is_file():
            return 0
        model.load_state_dict(load_file(str(self.folder / "last.safetensors")))
        state = torch.load(self.folder / "last_state.pt", weights_only=True)  # written by this process earlier
        optimizer.load_state_dict(state["optimizer"])
        scheduler.load_state_dict(state["scheduler"])
        generator.set_state(state["generator"])
        return int(state["epoch"]) + 1

    def save_final(self, model: DVAE) -> None:
        if self.final is not None:
            model.save_pretrained(self.final)


def _check_checkpoint_config(root: Path, config: FitConfig, num_classes: int) -> None:
    record = {"config": dataclasses.asdict(config), "num_classes": num_classes}
    record = json.loads(json.dumps(record))
    path = root / "fit_config.json"
    if path.is_file():
        stored = json.loads(path.read_text())
        if stored != record:
            raise ValueError(
                f"checkpoint_dir {root} holds a fit with other settings ({stored}); "
                "use a new directory or the same settings"
            )
    else:
        root.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(record, indent=2))


def train_stage(
    model: DVAE,
    images: torch.Tensor,
    labels: torch.Tensor,
    *,
    stage: int,
    config: FitConfig,
    accelerator: Accelerator,
    checkpoint_dir: Path | None = None,
    progress: bool = True,
    perturbation_branch: bool = True,
) -> tuple[DVAE, list[dict[str, float]]]:
    """Fit one D-VAE stage; returns the trained (unwrapped) model and per-epoch metrics.

    ``perturbation_branch=False`` trains the image path alone (a plain rate-constrained VAE).
    """
    checkpoint = _StageCheckpoint(checkpoint_dir, stage)
    finished = checkpoint.finished_model()
    if finished is not None:
        return finished.to(accelerator.device), []
    kl_bound = config.kl_bounds[stage - 1]
    warmup_epochs = round(config.epochs * config.warmup_fraction)
    per_process_batch = max(1, config.batch_size // accelerator.num_processes)
    loader = DataLoader(
        TensorDataset(images, labels),
        batch_size=per_process_batch,
        sampler=EpochShuffle(len(images), config.seed + stage),
        generator=torch.Generator().manual_seed(config.seed),  # keeps the global RNG untouched
    )
    optimizer = torch.optim.Adam(model.parameters(), lr=config.lr)
    model, optimizer, loader = accelerator.prepare(model, optimizer, loader)
    total_steps = config.epochs * len(loader)
    scheduler = torch.optim.lr_scheduler.LambdaLR(
        optimizer, lambda step: 0.5 * (1.0 + math.cos(math.pi * min(step, total_steps) / total_steps))
    )
    generator = torch.Generator(accelerator.device).manual_seed(config.seed * 7 + stage)
    first_epoch = checkpoint.restore(accelerator.unwrap_model(model), optimizer, scheduler, generator)
    history = []
    model.train()
    for epoch in range(first_epoch, config.epochs):
        loader.set_epoch(epoch)
        sums = {"loss": 0.0, "kl": 0.0, "psnr": 0.0, "psnr_combined": 0.0, "perturbation_power": 0.0}
        count, started = 0, time.perf_counter()
        bar = tqdm(
            loader,
            desc=f"stage {stage} epoch {epoch + 1}/{config.epochs}",
            disable=not (progress and accelerator.is_local_main_process),
            leave=False,
        )
        for x, y in bar:
            output = model(x, y, sample=True, generator=generator)
            terms = dvae_loss(
                output, x, kl_bound=kl_bound, penalize_perturbation=epoch >= warmup_epochs,
                perturbation_branch=perturbation_branch,
            )
            optimizer.zero_grad(set_to_none=True)
            accelerator.backward(terms.total)
            accelerator.clip_grad_norm_(model.parameters(), config.grad_clip)
            optimizer.step()
            scheduler.step()
            with torch.no_grad():
                combined = torch.clamp(output.reconstruction.float() + output.perturbation.float(), 0, 1)
                batch = {
                    "loss": terms.total.item(),
                    "kl": terms.kl.item(),
                    "psnr": psnr(output.reconstruction, x).item(),
                    "psnr_combined": psnr(combined, x).item(),
                    "perturbation_power": terms.perturbation_power.item(),
                }
            for key, value in batch.items():
                sums[key] += value * len(x)
            count += len(x)
            bar.set_postfix(loss=f"{batch['loss']:.4f}", kl=f"{batch['kl']:.2f}", psnr=f"{batch['psnr']:.1f}")
        seconds = time.perf_counter() - started
        record = {key: value / count for key, value in sums.items()}
        images_per_s = count * accelerator.num_processes / seconds
        record.update(stage=stage, epoch=epoch + 1, seconds=seconds, images_per_s=images_per_s)
        history.append(record)
        if progress and accelerator.is_local_main_process:
            tqdm.write(
                f"stage {stage} epoch {epoch + 1}/{config.epochs}: loss {record['loss']:.4f} "
                f"kl {record['kl']:.2f} psnr {record['psnr']:.2f} dB ({record['images_per_s']:.0f} img/s)"
            )
        if accelerator.is_main_process:
            checkpoint.save_epoch(accelerator.unwrap_model(model), optimizer, scheduler, generator, epoch)
        accelerator.wait_for_everyone()
    trained = accelerator.unwrap_model(model)
    if accelerator.is_main_process:
        checkpoint.save_final(trained)
    accelerator.wait_for_everyone()
    accelerator.free_memory()
    return trained.eval(), history


def accelerator_for(config: FitConfig) -> Accelerator:
    """An Accelerator with the config's mixed precision.

    Accelerate keeps one process-wide state and refuses a second Accelerator with another
    precision; a single-process state is reset first so consecutive fits may differ.
    """
    state = AcceleratorState._shared_state
    if state and state.get("_mixed_precision", config.mixed_precision) != config.mixed_precision:
        if PartialState().num_processes > 1:
            raise ValueError(
                f"mixed_precision={config.mixed_precision!r} differs from this launch's Accelerator; "
                "pass accelerator= or the same setting"
            )
        AcceleratorState._reset_state()
    return Accelerator(mixed_precision=config.mixed_precision)


def fit_two_stage(
    images: torch.Tensor,
    labels: torch.Tensor,
    *,
    num_classes: int,
    config: FitConfig,
    accelerator: Accelerator | None = None,
    init: tuple[DVAE, DVAE] | None = None,
    checkpoint_dir: str | os.PathLike | None = None,
    progress: bool = True,
) -> FitResult:
    """Train stage 1 on ``images``, purify them, train stage 2 on the result.

    ``images`` are float NCHW in [0, 1], ``labels`` int64 (both already checked).
    ``init`` warm-starts both stages from existing models (their architecture wins
    over ``config``'s width/latent settings). ``checkpoint_dir`` saves every epoch and
    resumes a killed fit where it stopped.
    """
    accelerator = accelerator or accelerator_for(config)
    root = None if checkpoint_dir is None else Path(checkpoint_dir)
    if root is not None and accelerator.is_main_process:
        _check_checkpoint_config(root, config, num_classes)
    shape = {"in_channels": images.shape[1], "image_size": images.shape[-1], "num_classes": num_classes}
    history: list[dict[str, float]] = []
    inputs = images
    models = []
    for stage in (1, 2):
        if init is None:
            model = build_model(config, seed=config.seed + 1000 * stage, **shape)
        else:
            model = DVAE(**init[stage - 1].config)
            model.load_state_dict(init[stage - 1].state_dict())
        trained, stage_history = train_stage(
            model, inputs, labels, stage=stage, config=config, accelerator=accelerator,
            checkpoint_dir=root, progress=progress,
        )
        history.extend(stage_history)
        models.append(trained)
        if stage == 1:
            inputs = remove_perturbation(trained, images, labels)
    return FitResult(models[0], models[1], history)
