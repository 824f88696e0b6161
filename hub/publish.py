"""Fit an official pretrained D-VAE purifier from its recipe, bundle it with the package and/or publish it on the Hub.

    python hub/publish.py mnist32-lsp-fast --dry-run            # fit, evaluate, write the folder
    python hub/publish.py mnist32-lsp-fast --dry-run --bundle   # ... and make it the package's bundled copy
    python hub/publish.py mnist32-lsp-fast                      # ... and push it (needs `hf auth login`)
    python hub/publish.py imagenet100-224-lsp-paper --dry-run --data-root DIR   # data you provide (class folders)

A recipe (``recipes/<name>.json`` of a registry folder, by default ``dvae_transform/pretrained/``) fixes the
data, the poison(s) applied to it, the fit settings and the seed. The script loads the data with
``dvae_transform.evaluation.datasets.load_bench_data``, poisons the training split (several attacks: a
permutation seeded with the recipe's seed splits it into equal parts, one attack each), fits with
``DVAEPurify.fit``, measures a victim classifier's clean-test accuracy trained on clean images and, for every
evaluated attack (default: every built-in one), on the poisoned and on the purified images, and writes the
folder it uploads (weights and model card) with ``save_pretrained``. ``--bundle`` copies that folder into the
registry's ``bundled/<name>/`` and records the sha256 of its files and the measured effect in the recipe.
``--dry-run`` pushes nothing and needs no network; ``--data-root`` says where the data is (recipes of data
you provide, such as class folders, name none). After a push, pin the printed commit sha as the recipe's
``revision``.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch
from huggingface_hub import HfApi, constants
from tqdm.auto import tqdm

from dvae_transform import DVAEPurify, FitConfig
from dvae_transform.config import resolve_config
from dvae_transform.evaluation.attacks import ATTACKS, make_poison
from dvae_transform.evaluation.check_batch import write_check_batch
from dvae_transform.evaluation.datasets import BenchData, describe, load_bench_data, needs_root
from dvae_transform.evaluation.victims import DEFAULT_SETTINGS, accuracy, train_victim
from dvae_transform.pretrained.recipe import MeasuredEffect, PretrainedRecipe, read_recipe
from dvae_transform.pretrained.registry import REGISTRY, Registry, folder_bytes, relative_files
from dvae_transform.saved.card import AttackResult
from dvae_transform.training.loop import build_model

CHECK_BATCH_SIZE = 16
BUNDLE_BUDGET_BYTES = 5_000_000  # every bundled copy together: package data must stay small
# The datasets a recipe can name (load_bench_data names): their Hub dataset ids and a line for the model card
# ({shape}: the recipe's CxHxW).
DATASETS: dict[str, tuple[tuple[str, ...], str]] = {
    "mnist": (("ylecun/mnist",), "real MNIST digits zero-padded to {shape} (the split embedded in dvae-transform)"),
    "fashion-mnist": (("zalando-datasets/fashion_mnist",), "Fashion-MNIST images zero-padded to {shape}"),
    "imagefolder": ((), "images of the publisher's class folders resized to {shape}"),
}
TRIAL_OPTIONS = ("max_images", "settings", "victim_epochs", "no_eval")  # change the recipe: refused with --bundle


def load_recipe(name_or_path: str, registry: Registry = REGISTRY) -> PretrainedRecipe:
    """A recipe by pretrained name (of ``registry``) or by file, whose dataset and attacks this script knows."""
    recipe = read_recipe(name_or_path) if Path(name_or_path).is_file() else registry.info(name_or_path)
    if recipe.data.name not in DATASETS:
        raise ValueError(f"{name_or_path}: unknown dataset {recipe.data.name!r}; known: {sorted(DATASETS)}")
    for attack in (*recipe.attacks, *recipe.attack_kwargs, *recipe.evaluate.get("attacks", ())):
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
    parser.add_argument("recipe", help="an official pretrained name (e.g. mnist32-lsp-fast) or a recipe file")
    parser.add_argument("--dry-run", action="store_true", help="push nothing (no network)")
    parser.add_argument("--bundle", action="store_true",
                        help="make the fitted purifier the bundled copy of the name in the registry folder and record "
                        "its files' sha256 and measured effect in the recipe (exactly as the recipe says: no trial "
                        "options)")
    parser.add_argument("--registry", type=Path, help="registry folder holding recipes/ and bundled/ "
                        "(default: the package's, dvae_transform/pretrained)")
    parser.add_argument("--data-root", type=Path, metavar="DIR",
                        help="where the recipe's data is (replaces the recipe's data root; needed when it has none)")
    parser.add_argument("--output", type=Path, help="folder to write (new or empty; default: a new temporary one)")
    parser.add_argument("--max-images", type=int, help="trial: fit on the first N training images only")
    parser.add_argument("--set", dest="settings", type=_parse_setting, action="append", default=[],
                        metavar="KEY=VALUE", help="trial: override a FitConfig setting, e.g. --set epochs=1")
    parser.add_argument("--victim-epochs", type=int, help="trial: override the recipe's victim training epochs")
    parser.add_argument("--no-eval", action="store_true", help="trial: skip the victim evaluation")
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


def estimated_bundle_bytes(recipe: PretrainedRecipe) -> int:
    """The bytes of the two stages' weights a fit of ``recipe`` saves (the bundle is slightly larger)."""
    config = resolve_config(recipe.preset, **recipe.overrides)
    with torch.device("meta"):  # shapes only: nothing is allocated or initialised
        model = build_model(config, in_channels=recipe.channels, image_size=recipe.image_size,
                            num_classes=recipe.num_classes, seed=recipe.seed)
    return 2 * sum(tensor.numel() * tensor.element_size() for tensor in model.state_dict().values())


def _check_bundle_request(args: argparse.Namespace, registry: Registry, recipe: PretrainedRecipe) -> None:
    """A bundle is fitted exactly as its registry recipe says, so that the recipe describes it truthfully."""
    if args.recipe not in registry:
        raise SystemExit(f"--bundle needs a pretrained name of the registry {registry.folder}, got {args.recipe!r}")
    size = estimated_bundle_bytes(recipe)
    if size > BUNDLE_BUDGET_BYTES:
        raise SystemExit(f"{recipe.name} cannot be bundled: its weights alone take {size:,} bytes, over the budget "
                         f"of {BUNDLE_BUDGET_BYTES:,} for all bundled copies; publish it on the Hub only")
    trials = [name for name in TRIAL_OPTIONS if getattr(args, name) not in (None, False, [])]
    if trials:
        options = ", ".join("--" + ("set" if name == "settings" else name.replace("_", "-")) for name in trials)
        raise SystemExit(f"--bundle fits exactly as the recipe says; drop {options} or edit the recipe instead")


def check_data_root(recipe: PretrainedRecipe, root: Path | None = None) -> None:
    """Fail before any work if the recipe's data has no folder: neither in the recipe nor given (``root``)."""
    if root is None and recipe.data.root is None and needs_root(recipe.data.name):
        raise SystemExit(f"{recipe.name}: its {recipe.data.name} data is yours to provide and the recipe names no "
                         f"folder; pass --data-root DIR holding {describe(recipe.data.name)}")


def load_data(recipe: PretrainedRecipe, root: Path | None = None) -> BenchData:
    """The recipe's train and test split (from ``root`` if given), checked against its image shape and classes."""
    spec = recipe.data
    data = load_bench_data(spec.name, spec.root if root is None else root, train=spec.train, test=spec.test,
                           seed=spec.seed, image_size=recipe.image_size)
    shape, found = (recipe.channels, recipe.image_size, recipe.image_size), tuple(data.train_images.shape[1:])
    if found != shape or data.num_classes != recipe.num_classes:
        raise SystemExit(f"dataset {spec.name} has images {found} and {data.num_classes} classes, the recipe says "
                         f"{shape} and {recipe.num_classes}")
    return data


def _poison(recipe: PretrainedRecipe, attack: str, images: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    options = {"num_classes": recipe.num_classes, "seed": recipe.seed, **recipe.attack_kwargs.get(attack, {})}
    return make_poison(attack, images, labels, **options)


def poison_training_set(recipe: PretrainedRecipe, images: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """The recipe's training poison: its one attack on every image, or a mix of several.

    A mix splits the images into ``len(attacks)`` parts of equal size (+-1) by a permutation seeded with the
    recipe's seed; part ``k`` (in image order) is poisoned by ``attacks[k]``, run on that part alone. With one
    attack this is the attack applied to the whole set.
    """
    order = torch.randperm(len(images), generator=torch.Generator().manual_seed(recipe.seed))
    poisoned = images.clone()
    for attack, part in zip(recipe.attacks, order.tensor_split(len(recipe.attacks))):
        part = part.sort().values
        poisoned[part] = _poison(recipe, attack, images[part], labels[part])
    return poisoned


def evaluate(
    purifier: DVAEPurify, recipe: PretrainedRecipe, data: BenchData, epochs: int, progress: bool
) -> MeasuredEffect:
    """Victim clean-test accuracy trained on clean images, and per attack on poisoned / purified images."""

    def victim_accuracy(images: torch.Tensor) -> float:
        options = {"num_classes": recipe.num_classes, "epochs": epochs, "seed": recipe.seed, "device": purifier.device}
        return accuracy(train_victim(images, data.train_labels, **options), data.test_images, data.test_labels)

    scores = {}
    for attack in tqdm(recipe.evaluate.get("attacks", list(ATTACKS)), desc="evaluating attacks", disable=not progress):
        poisoned = _poison(recipe, attack, data.train_images, data.train_labels)
        purified = purifier.purify(poisoned, data.train_labels)
        scores[attack] = {"poisoned": victim_accuracy(poisoned), "purified": victim_accuracy(purified)}
    return MeasuredEffect(epochs, victim_accuracy(data.train_images), scores)


def print_measured(recipe: PretrainedRecipe, measured: MeasuredEffect) -> None:
    """The measured effect as a Markdown table (one row per attack), for BENCHMARKS.md."""
    print(f"victim clean-test accuracy ({measured.victim_epochs} epochs) trained on clean images: {measured.clean:.4f}")
    print("| attack | in the training poison | no defense | D-VAE purified |\n|---|---|---|---|")
    for attack, score in measured.attacks.items():
        seen = "yes" if attack in recipe.attacks else "no"
        print(f"| {attack} | {seen} | {score['poisoned']:.4f} | {score['purified']:.4f} |")


def _output_folder(path: Path | None, name: str) -> Path:
    if path is None:
        return Path(tempfile.mkdtemp(prefix=f"{name}-"))
    if path.exists() and any(path.iterdir()):
        raise SystemExit(f"--output {path} is not empty; choose a new folder")
    path.mkdir(parents=True, exist_ok=True)
    return path


def _bundle(registry: Registry, recipe: PretrainedRecipe, folder: Path, measured: MeasuredEffect) -> None:
    """Write ``folder`` as the bundled copy of the recipe, within :data:`BUNDLE_BUDGET_BYTES` for all bundles."""
    size = folder_bytes(folder)
    others = registry.bundled_bytes() - folder_bytes(registry.bundle_folder(recipe.name))
    if others + size > BUNDLE_BUDGET_BYTES:
        raise SystemExit(f"bundling {recipe.name} ({size:,} bytes) would make the bundled copies {others + size:,} "
                         f"bytes, over the budget of {BUNDLE_BUDGET_BYTES:,}; bundle fewer purifiers")
    registry.write_bundle(recipe.name, folder, measured)
    print(f"bundled {recipe.name} in {registry.bundle_folder(recipe.name)} ({size:,} bytes); "
          f"recorded its sha256s and measured effect in {registry.recipe_file(recipe.name)}")


def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    registry = REGISTRY if args.registry is None else Registry(args.registry)
    recipe = load_recipe(args.recipe, registry)
    check_data_root(recipe, args.data_root)
    if args.bundle:
        _check_bundle_request(args, registry, recipe)
    repo_id = args.repo_id or recipe.repo_id
    if not args.dry_run:
        _check_can_push(args.token)
    progress = not args.no_progress
    settings = dict(args.settings)
    if "seed" in settings:
        raise SystemExit("the seed is part of the recipe; edit the recipe instead of --set seed=...")
    config: FitConfig = resolve_config(recipe.preset, **{**recipe.overrides, **settings, "seed": recipe.seed})

    data = load_data(recipe, args.data_root)
    if args.max_images is not None:
        data = dataclasses.replace(data, train_images=data.train_images[: args.max_images],
                                   train_labels=data.train_labels[: args.max_images])
    train_labels = data.train_labels
    poisoned = poison_training_set(recipe, data.train_images, train_labels)
    start = time.perf_counter()
    purifier = DVAEPurify.fit((poisoned, train_labels), recipe.num_classes, preset=config, progress=progress)
    print(f"fit: {time.perf_counter() - start:.1f} s on {len(train_labels):,} images")

    hub_ids, description = DATASETS[recipe.data.name]
    shape = f"{recipe.channels}x{recipe.image_size}x{recipe.image_size}"
    card: dict[str, Any] = {
        "repo_id": repo_id,
        "datasets": list(hub_ids),
        "training_data": f"{len(train_labels):,} {description.format(shape=shape)}",
        "attack": recipe.attacks,
        "training_settings": {"recipe": recipe.name, "data": dataclasses.asdict(recipe.data),
                              "attack_kwargs": recipe.attack_kwargs, **dataclasses.asdict(config)},
        "eval_data": f"{len(data.test_labels):,} held-out {recipe.data.name} test images",
    }
    measured = None
    if not args.no_eval:
        start = time.perf_counter()
        epochs = args.victim_epochs or recipe.evaluate.get("victim_epochs", DEFAULT_SETTINGS.epochs)
        measured = evaluate(purifier, recipe, data, epochs, progress)
        print(f"evaluation: {time.perf_counter() - start:.1f} s")
        print_measured(recipe, measured)
        card["clean_accuracy"] = measured.clean
        card["results"] = [AttackResult(name, **score) for name, score in measured.attacks.items()]

    folder = _output_folder(args.output, recipe.name)
    purifier.save_pretrained(folder, model_card_kwargs=card)
    if args.check_batch is not None:
        write_check_batch(purifier, poisoned[:CHECK_BATCH_SIZE], train_labels[:CHECK_BATCH_SIZE], args.check_batch)
    print(f"wrote {folder}")
    for path in relative_files(folder):
        print(f"  {path} ({(folder / path).stat().st_size:,} bytes)")
    if args.bundle:
        _bundle(registry, recipe, folder, measured)
    if args.dry_run:
        return 0
    commit = purifier.push_to_hub(repo_id, token=args.token, private=args.private or None,
                                  commit_message=f"Publish {recipe.name}", model_card_kwargs=card)
    print(f"pushed {commit.commit_url}; pin revision={commit.oid!r} as the \"revision\" of recipe {recipe.name}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
