"""Registry folders of tiny checkpoints for tests: recipes written to a tmp folder, read with ``Registry(folder)``."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from dvae_transform.pretrained.recipe import MeasuredEffect
from dvae_transform.pretrained.registry import Registry

TINY_FIT = {"epochs": 1, "width": 8, "latent_dim": 8, "batch_size": 32}
MEASURED = MeasuredEffect(victim_epochs=1, clean=0.5, attacks={"lsp": {"poisoned": 0.25, "purified": 0.5}})


def tiny_recipe(name: str, **changes: Any) -> dict[str, Any]:
    """A valid recipe (as JSON data) for the purifiers of ``conftest.tiny_data``: 1x16x16 images, 4 classes."""
    recipe = {
        "name": name,
        "repo_id": f"tests-org/{name}",
        "revision": None,
        "image_size": 16,
        "channels": 1,
        "num_classes": 4,
        "data": {"name": "mnist", "root": None, "train": 64, "test": 64, "seed": 0},
        "attacks": ["lsp"],
        "attack_kwargs": {},
        "preset": "fast",
        "overrides": dict(TINY_FIT),
        "seed": 0,
        "evaluate": {"attacks": ["lsp", "ops"], "victim_epochs": 1},
        "bundle": None,
        "measured": None,
    }
    return {**recipe, **changes}


def write_recipe(folder: Path, recipe: dict[str, Any]) -> Path:
    """Store ``recipe`` as ``folder/recipes/<name>.json``, as a maintainer edits it."""
    path = folder / "recipes" / f"{recipe['name']}.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(recipe, indent=2))
    return path


def make_registry(folder: Path, *recipes: dict[str, Any]) -> Registry:
    """A registry folder holding ``recipes``, read back."""
    for recipe in recipes:
        write_recipe(folder, recipe)
    return Registry(folder)


def edit_recipe(registry: Registry, name: str, **changes: Any) -> Registry:
    """Change fields of a stored recipe (e.g. pin a ``revision``) and read the registry again."""
    path = registry.recipe_file(name)
    path.write_text(json.dumps({**json.loads(path.read_text()), **changes}, indent=2))
    return Registry(registry.folder)
