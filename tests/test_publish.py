"""``hub/publish.py``: the recipes it reads (the registry's own files), and an end-to-end ``--dry-run``."""

from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from huggingface_hub import ModelCard
from safetensors.torch import load_file

from dvae_transform import DVAEPurify
from dvae_transform.checkpoints.registry import RECIPES as RECIPE_FOLDER
from dvae_transform.checkpoints.registry import REGISTRY

ROOT = Path(__file__).resolve().parents[1]
SCRIPT = ROOT / "hub" / "publish.py"
RECIPES = sorted(Path(str(RECIPE_FOLDER)).glob("*.json"))
TINY = ["--max-images", "64", "--set", "epochs=1", "--set", "width=8", "--set", "latent_dim=8", "--set",
        "batch_size=64", "--victim-epochs", "1", "--no-progress"]


def _load_publish():
    """Import the script (not a package module) by path."""
    spec = importlib.util.spec_from_file_location("hub_publish", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses resolve annotations through sys.modules
    spec.loader.exec_module(module)
    return module


publish = _load_publish()


def run_script(*args: str | Path, home: Path) -> subprocess.CompletedProcess:
    """Run the script offline with an isolated Hugging Face home; any Hub call would fail."""
    env = {**os.environ, "PYTHONPATH": str(ROOT), "HF_HOME": str(home), "HF_HUB_OFFLINE": "1", "HF_TOKEN": ""}
    env.pop("HF_HUB_CACHE", None)
    return subprocess.run(
        [sys.executable, str(SCRIPT), *map(str, args)], env=env, capture_output=True, text=True, timeout=600
    )


def test_every_recipe_is_valid_and_is_its_registry_entry() -> None:
    assert {publish.load_recipe(path).name for path in RECIPES} == set(REGISTRY)
    for path in RECIPES:
        recipe = publish.load_recipe(path)
        assert path.stem == recipe.name
        assert recipe == publish.load_recipe(recipe.name) == REGISTRY[recipe.name]


@pytest.mark.parametrize(
    ("change", "error", "message"),
    [
        ({"colour": "red"}, ValueError, r"unknown key\(s\) \['colour'\]"),
        ({"seed": "0"}, TypeError, "seed must be an int"),
        ({"attack": "rainbow"}, ValueError, "unknown attack 'rainbow'"),
        ({"evaluate": {"attacks": ["lsp", "rainbow"]}}, ValueError, "unknown attack 'rainbow'"),
        ({"overrides": {"epochz": 3}}, TypeError, "unknown fit setting"),
        ({"dataset": "cifar10"}, ValueError, "unknown dataset 'cifar10'"),
    ],
)
def test_bad_recipes_are_refused_naming_the_problem(tmp_path: Path, change: dict, error: type, message: str) -> None:
    recipe = json.loads(RECIPES[0].read_text())
    path = tmp_path / "recipe.json"
    path.write_text(json.dumps({**recipe, **change}))

    with pytest.raises(error, match=message):
        publish.load_recipe(path)


def test_push_without_network_stops_before_fitting(tmp_path: Path) -> None:
    out = tmp_path / "out"
    result = run_script(RECIPES[0], "--output", out, *TINY, home=tmp_path / "hf")

    assert result.returncode != 0
    assert "HF_HUB_OFFLINE is set; use --dry-run" in result.stderr
    assert not out.exists()


def test_dry_run_writes_a_folder_that_loads_and_purifies_identically(tmp_path: Path) -> None:
    out, check = tmp_path / "out", tmp_path / "check.safetensors"
    result = run_script("mnist32-lsp-fast", "--dry-run", "--output", out, "--check-batch", check, *TINY,
                        home=tmp_path / "hf")

    assert result.returncode == 0, result.stderr
    files = {p.relative_to(out).as_posix() for p in out.rglob("*") if p.is_file()}
    assert files == {"README.md", "config.json", "stage1/config.json", "stage1/model.safetensors",
                     "stage2/config.json", "stage2/model.safetensors"}
    assert f"wrote {out}" in result.stdout and "stage2/model.safetensors" in result.stdout

    batch = load_file(check)
    loaded = DVAEPurify.from_pretrained(out)
    assert torch.equal(loaded.purify(batch["images"], batch["labels"]), batch["purified"])
    assert loaded.stage1.config["width"] == 8 and loaded.num_classes == 10

    card = ModelCard.load(out / "README.md")
    assert card.data.library_name == "dvae-transform" and card.data.datasets == ["ylecun/mnist"]
    assert card.data.poisoning_attack == "lsp" and card.data.evaluated_attacks == ["lsp", "classwise_noise"]
    accuracies = [result.metric_value for result in card.data.eval_results]
    assert len(accuracies) == 2 and all(0 <= value <= 1 for value in accuracies)
    assert 'DVAEPurify.from_pretrained("dvae-transform/mnist32-lsp-fast")' in card.text
    assert "| epochs | `1` |" in card.text and "| width | `8` |" in card.text
