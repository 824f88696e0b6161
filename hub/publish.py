"""Fit an official D-VAE checkpoint from its recipe and publish it on the Hugging Face Hub.

    python hub/publish.py mnist32-lsp-fast --dry-run   # fit, evaluate, write the folder
    python hub/publish.py mnist32-lsp-fast             # ... and push it (needs `hf auth login`)

A recipe (``dvae_transform/checkpoints/recipes/<name>.json``, the files the registry of official
checkpoints is read from) fixes the data, the poison applied to it, the fit settings and the seed. The
script takes a checkpoint name or a recipe file, poisons the training split with
``dvae_transform.evaluation.attacks.make_poison``, fits with ``DVAEPurify.fit``, measures a victim
classifier's clean-test accuracy without and with purification, and writes the folder it uploads
(weights and model card) with ``save_pretrained``. ``--dry-run`` stops there, without any network access.
After a push, pin the printed commit sha as the ``revision`` of the recipe.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import sys
import tempfile
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from huggingface_hub import HfApi, constants
from safetensors.torch import save_file
from tqdm.auto import tqdm

from dvae_transform import DVAEPurify, FitConfig
from dvae_transform.checkpoints import registry
from dvae_transform.checkpoints.card import AttackResult
from dvae_transform.checkpoints.registry import PretrainedCheckpoint
from dvae_transform.config import resolve_config
from dvae_transform.evaluation.attacks import ATTACKS, make_poison
from dvae_transform.evaluation.mnist import load_mnist32
from dvae_transform.evaluation.victims import RECIPE, accuracy, train_victim

CHECK_BATCH_SIZE = 16


@dataclass(frozen=True)
class DatasetSource:
    """A training set a recipe can name: its loader, Hub dataset ids and descriptions for the card."""

    load: Callable[[], tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]]
    hub_ids: tuple[str, ...]
    description: str
    test_description: str


DATASETS = {
    "mnist32": DatasetSource(
        load=load_mnist32,
        hub_ids=("ylecun/mnist",),
        description="real MNIST digits zero-padded to 1x32x32 (the 4,000 / 1,000 split embedded in dvae-transform)",
        test_description="the 1,000 held-out MNIST digits of the embedded split",
    ),
}


def load_recipe(name_or_path: str | os.PathLike) -> PretrainedCheckpoint:
    """A recipe by checkpoint name or file (see ``registry.load_recipe``), whose dataset and attacks exist."""
    recipe = registry.load_recipe(name_or_path)
    if recipe.dataset not in DATASETS:
        raise ValueError(f"{name_or_path}: unknown dataset {recipe.dataset!r}; known: {sorted(DATASETS)}")
    for attack in (recipe.attack, *recipe.evaluate.get("attacks", ())):
        if attack not in ATTACKS:
            raise ValueError(f"{name_or_path}: unknown attack {attack!r}; known: {sorted(ATTACKS)}")
    return recipe


def _parse_setting(text: str) -> tuple[str, Any]:
    key, sep, value = text.partition("=")
    if not sep:
        raise argparse.ArgumentTypeError(f"expected KEY=VALUE, got {text!r}")
    try:
        return key, json.loads(value)
    except json.JSONDecodeError:
        return key, value


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("recipe", help="an official checkpoint name (e.g. mnist32-lsp-fast) or a recipe file")
    parser.add_argument("--dry-run", action="store_true", help="write the folder it would upload; no network")
    parser.add_argument("--output", type=Path, help="folder to write (new or empty; default: a new temporary one)")
    parser.add_argument("--max-images", type=int, help="fit on the first N training images only (for trials)")
    parser.add_argument("--set", dest="settings", type=_parse_setting, action="append", default=[],
                        metavar="KEY=VALUE", help="override a FitConfig setting, e.g. --set epochs=1")
    parser.add_argument("--victim-epochs", type=int, help="override the recipe's victim training epochs")
    parser.add_argument("--no-eval", action="store_true", help="skip the victim evaluation")
    parser.add_argument("--check-batch", type=Path, metavar="FILE",
                        help=f"also save {CHECK_BATCH_SIZE} training images, labels and their purification "
                        "by the fitted model (safetensors) to check the written folder against")
    parser.add_argument("--repo-id", help="push to this repo instead of the recipe's (e.g. to try under your user)")
    parser.add_argument("--private", action="store_true", help="create the repo as private")
    parser.add_argument("--token", help="Hub token (default: the logged-in user's)")
    parser.add_argument("--no-progress", action="store_true", help="hide progress bars")
    return parser


def _check_can_push(token: str | None) -> None:
    """Fail before an hour of fitting if the push cannot happen."""
    if constants.HF_HUB_OFFLINE:
        raise SystemExit("cannot push: HF_HUB_OFFLINE is set; use --dry-run to write the folder without pushing")
    try:
        HfApi(token=token).whoami()
    except OSError as error:  # no token, refused token, or no connection: the push would fail the same way
        raise SystemExit(f"cannot push: the Hub refused ({error}); run `hf auth login` or pass --token") from None


def _evaluate(
    purifier: DVAEPurify, recipe: PretrainedCheckpoint, data: tuple[torch.Tensor, ...], epochs: int, progress: bool
) -> tuple[float, list[AttackResult]]:
    """Victim clean-test accuracy when trained on clean images, and per attack on poisoned / purified images."""
    train_images, train_labels, test_images, test_labels = data

    def victim_accuracy(images: torch.Tensor) -> float:
        options = {"num_classes": recipe.num_classes, "epochs": epochs, "seed": recipe.seed, "device": purifier.device}
        victim = train_victim(images, train_labels, **options)
        return accuracy(victim, test_images, test_labels)

    clean = victim_accuracy(train_images)
    results = []
    for attack in tqdm(recipe.evaluate.get("attacks", ()), desc="evaluating attacks", disable=not progress):
        poisoned = make_poison(attack, train_images, train_labels, num_classes=recipe.num_classes, seed=recipe.seed)
        purified = purifier.purify(poisoned, train_labels)
        results.append(AttackResult(attack, victim_accuracy(poisoned), victim_accuracy(purified)))
    return clean, results


def _output_folder(path: Path | None, name: str) -> Path:
    if path is None:
        return Path(tempfile.mkdtemp(prefix=f"{name}-"))
    if path.exists() and any(path.iterdir()):
        raise SystemExit(f"--output {path} is not empty; choose a new folder")
    path.mkdir(parents=True, exist_ok=True)
    return path


def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    recipe = load_recipe(args.recipe)
    repo_id = args.repo_id or recipe.repo_id
    if not args.dry_run:
        _check_can_push(args.token)
    progress = not args.no_progress
    settings = dict(args.settings)
    if "seed" in settings:
        raise SystemExit("the seed is part of the recipe; edit the recipe instead of --set seed=...")
    config: FitConfig = resolve_config(recipe.preset, **{**recipe.overrides, **settings, "seed": recipe.seed})

    source = DATASETS[recipe.dataset]
    train_images, train_labels, test_images, test_labels = source.load()
    if args.max_images is not None:
        train_images, train_labels = train_images[: args.max_images], train_labels[: args.max_images]
    shape, found = (recipe.channels, recipe.image_size, recipe.image_size), tuple(train_images.shape[1:])
    if found != shape:
        raise SystemExit(f"dataset {recipe.dataset} has images {found}, the recipe says {shape}")

    attack, attack_kwargs = recipe.attack, recipe.attack_kwargs
    poisoned = make_poison(
        attack, train_images, train_labels, **{"num_classes": recipe.num_classes, "seed": recipe.seed, **attack_kwargs}
    )
    purifier = DVAEPurify.fit((poisoned, train_labels), recipe.num_classes, preset=config, progress=progress)

    card: dict[str, Any] = {
        "repo_id": repo_id,
        "datasets": list(source.hub_ids),
        "training_data": f"{len(train_images):,} {source.description}",
        "attack": attack,
        "recipe": {"recipe": recipe.name, "attack_kwargs": attack_kwargs, **dataclasses.asdict(config)},
        "eval_data": source.test_description,
    }
    if not args.no_eval:
        epochs = args.victim_epochs or recipe.evaluate.get("victim_epochs", RECIPE.epochs)
        data = (train_images, train_labels, test_images, test_labels)
        card["clean_accuracy"], card["results"] = _evaluate(purifier, recipe, data, epochs, progress)
        print(f"victim accuracy trained on clean images: {card['clean_accuracy']:.4f}")
        for result in card["results"]:
            print(f"  {result.attack}: no defense {result.poisoned:.4f}, D-VAE purified {result.purified:.4f}")

    folder = _output_folder(args.output, recipe.name)
    purifier.save_pretrained(folder, model_card_kwargs=card)
    if args.check_batch is not None:
        images, labels = poisoned[:CHECK_BATCH_SIZE].contiguous(), train_labels[:CHECK_BATCH_SIZE].contiguous()
        save_file({"images": images, "labels": labels, "purified": purifier.purify(images, labels)}, args.check_batch)
    print(f"wrote {folder}")
    for path in sorted(p for p in folder.rglob("*") if p.is_file()):
        print(f"  {path.relative_to(folder).as_posix()} ({path.stat().st_size:,} bytes)")
    if args.dry_run:
        return 0
    commit = purifier.push_to_hub(repo_id, token=args.token, private=args.private or None,
                                  commit_message=f"Publish {recipe.name}", model_card_kwargs=card)
    print(f"pushed {commit.commit_url}; pin revision={commit.oid!r} as the \"revision\" of recipe {recipe.name}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
