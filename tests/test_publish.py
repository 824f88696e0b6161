"""``hub/publish.py``: the recipes it reads (the registry's own files), an end-to-end ``--dry-run``, ``--bundle``
into a registry folder in ``tmp_path``, the poison mix and the datasets."""

from __future__ import annotations

import hashlib
import importlib.util
import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from dataset_writers import pixels, write_folder
from hub_fixtures import folder_files
from huggingface_hub import ModelCard
from registry_helpers import MEASURED, make_registry, tiny_recipe, write_recipe
from safetensors.torch import load_file
from test_evaluation_datasets import write_fashion

from dvae_transform import DVAEPurify
from dvae_transform.evaluation.attacks import ATTACKS, make_poison
from dvae_transform.pretrained.registry import PACKAGE_FOLDER, REGISTRY, Registry

ROOT = Path(__file__).resolve().parents[1]
SCRIPT = ROOT / "hub" / "publish.py"
RECIPES = sorted((PACKAGE_FOLDER / "recipes").glob("*.json"))
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
    assert {publish.load_recipe(str(path)).name for path in RECIPES} == set(REGISTRY)
    for path in RECIPES:
        recipe = publish.load_recipe(str(path))
        assert path.stem == recipe.name and recipe.data.name in publish.DATASETS
        assert recipe == publish.load_recipe(recipe.name) == REGISTRY[recipe.name]


@pytest.mark.parametrize(
    ("change", "error", "message"),
    [
        ({"colour": "red"}, ValueError, r"unknown key\(s\) \['colour'\]"),
        ({"attacks": ["rainbow"]}, ValueError, "unknown attack 'rainbow'"),
        ({"attack_kwargs": {"rainbow": {}}}, ValueError, "unknown attack 'rainbow'"),
        ({"evaluate": {"attacks": ["lsp", "rainbow"]}}, ValueError, "unknown attack 'rainbow'"),
        ({"data": {"name": "cifar10"}}, ValueError,
         r"unknown dataset 'cifar10'; known: \['fashion-mnist', 'imagefolder', 'mnist'\]"),
    ],
)
def test_bad_recipes_are_refused_naming_the_problem(tmp_path: Path, change: dict, error: type, message: str) -> None:
    recipe = json.loads(RECIPES[0].read_text())
    path = tmp_path / "recipe.json"
    path.write_text(json.dumps({**recipe, **change}))

    with pytest.raises(error, match=message):
        publish.load_recipe(str(path))


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
                     "stage2/config.json", "stage2/model.safetensors", "training.json"}
    assert f"wrote {out}" in result.stdout and "stage2/model.safetensors" in result.stdout

    batch = load_file(check)
    loaded = DVAEPurify.from_pretrained(out)
    assert torch.equal(loaded.purify(batch["images"], batch["labels"]), batch["purified"])
    assert loaded.stage1.config["width"] == 8 and loaded.num_classes == 10

    card = ModelCard.load(out / "README.md")
    assert card.data.library_name == "dvae-transform" and card.data.datasets == ["ylecun/mnist"]
    assert card.data.poisoning_attack == "lsp" and card.data.evaluated_attacks == list(ATTACKS)  # every built-in one
    accuracies = [result.metric_value for result in card.data.eval_results]
    assert len(accuracies) == len(ATTACKS) and all(0 <= value <= 1 for value in accuracies)
    assert "| attack | in the training poison | no defense | D-VAE purified |" in result.stdout
    rows = re.findall(r"^\| (\w+) \| (yes|no) \| 0\.\d{4} \| 0\.\d{4} \|$", result.stdout, re.M)
    assert rows == [(attack, "yes" if attack == "lsp" else "no") for attack in ATTACKS]
    assert 'DVAEPurify.from_pretrained("dvae-transform/mnist32-lsp-fast")' in card.text
    assert "| epochs | `1` |" in card.text and "| width | `8` |" in card.text


# ----------------------------------------------------------------------------- --bundle: the package's bundled copies


def official_tiny(name: str, **changes) -> dict:
    """A recipe of the embedded digits' shape (1x32x32, 10 classes), evaluated on every attack, fitted in seconds."""
    defaults = {"data": {"name": "mnist", "root": None, "train": 64, "test": 64, "seed": 0},
                "evaluate": {"victim_epochs": 1}}
    return tiny_recipe(name, image_size=32, num_classes=10, **{**defaults, **changes})


def test_bundle_writes_the_bundled_copy_and_records_it_in_the_recipe(
    tmp_path: Path, hf_offline, capsys: pytest.CaptureFixture
) -> None:
    registry = make_registry(tmp_path / "registry", official_tiny("tiny-mix", attacks=["lsp", "ops"]))
    out, check = tmp_path / "out", tmp_path / "check.safetensors"
    hf_offline()
    publish.main(["tiny-mix", "--registry", str(registry.folder), "--dry-run", "--bundle", "--output", str(out),
                  "--check-batch", str(check), "--no-progress"])
    stdout = capsys.readouterr().out

    entry = Registry(registry.folder)["tiny-mix"]  # what the recipe file now says
    bundled = registry.bundle_folder("tiny-mix")
    assert f"bundled tiny-mix in {bundled}" in stdout
    assert folder_files(bundled) == folder_files(out)  # the folder a push uploads, bit for bit
    assert entry.bundle == {path: hashlib.sha256(data).hexdigest() for path, data in folder_files(out).items()}
    assert list(entry.measured.attacks) == list(ATTACKS) and entry.measured.victim_epochs == 1
    for attack, score in entry.measured.attacks.items():
        seen = "yes" if attack in ("lsp", "ops") else "no"
        assert f"| {attack} | {seen} | {score['poisoned']:.4f} | {score['purified']:.4f} |" in stdout
    assert entry.revision is None and entry.sources == ("bundled",)

    batch = load_file(check)
    loaded = DVAEPurify.from_pretrained("tiny-mix", registry=Registry(registry.folder))
    assert loaded.loaded_from.kind == "bundled"
    assert torch.equal(loaded.purify(batch["images"], batch["labels"]), batch["purified"])
    card = ModelCard.load(bundled / "README.md")
    assert card.data.poisoning_attack == ["lsp", "ops"] and "a mix of `lsp`, `ops`" in card.text


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--set", "epochs=1", "--victim-epochs", "1"], "drop --set, --victim-epochs or edit the recipe"),
        (["--max-images", "8", "--no-eval"], "drop --max-images, --no-eval or edit the recipe"),
    ],
)
def test_bundle_fits_exactly_as_the_recipe_says(tmp_path: Path, args: list[str], message: str) -> None:
    registry = make_registry(tmp_path, official_tiny("tiny"))
    with pytest.raises(SystemExit, match=message):
        publish.main(["tiny", "--registry", str(tmp_path), "--dry-run", "--bundle", *args])
    with pytest.raises(SystemExit, match="--bundle needs a pretrained name of the registry"):
        publish.main([str(registry.recipe_file("tiny")), "--registry", str(tmp_path), "--dry-run", "--bundle"])
    assert not (tmp_path / "bundled").exists()


def test_bundles_stay_within_the_package_data_budget(tmp_path: Path, tiny_purifier: DVAEPurify) -> None:
    registry = make_registry(tmp_path / "registry", official_tiny("a"), official_tiny("b"))
    tiny_purifier.save_pretrained(tmp_path / "saved")
    filler = tmp_path / "big"
    filler.mkdir()
    (filler / "weights.bin").write_bytes(bytes(publish.BUNDLE_BUDGET_BYTES - 1000))
    registry.write_bundle("a", filler, MEASURED)

    with pytest.raises(SystemExit, match=r"over the budget of 5,000,000; bundle fewer purifiers"):
        publish._bundle(registry, registry["b"], tmp_path / "saved", MEASURED)
    assert registry["b"].bundle is None and not registry.bundle_folder("b").exists()
    registry.write_bundle("a", tmp_path / "saved", MEASURED)  # replacing a's copy frees its share
    publish._bundle(registry, registry["b"], tmp_path / "saved", MEASURED)
    assert registry.names(source="bundled") == ["a", "b"]


# ----------------------------------------------------------------------------- data and poisons


def test_a_mix_poisons_equal_seeded_parts_one_attack_each(tiny_data) -> None:
    images, labels = tiny_data
    recipe = REGISTRY["mnist32-mix-fast"]
    mixed = publish.poison_training_set(recipe, images, labels)

    order = torch.randperm(len(images), generator=torch.Generator().manual_seed(recipe.seed))
    parts = [part.sort().values for part in order.tensor_split(len(recipe.attacks))]
    assert sorted(len(part) for part in parts) == [16, 16, 16, 16]
    for attack, part in zip(recipe.attacks, parts):
        options = {"num_classes": 10, "seed": recipe.seed, **recipe.attack_kwargs.get(attack, {})}
        assert torch.equal(mixed[part], make_poison(attack, images[part], labels[part], **options)), attack
        assert not torch.equal(mixed[part], images[part])
    single = REGISTRY["mnist32-lsp-fast"]
    lsp = make_poison("lsp", images, labels, num_classes=10, seed=single.seed)
    assert torch.equal(publish.poison_training_set(single, images, labels), lsp)  # one attack: the whole set


def test_a_fashion_mnist_recipe_publishes_from_its_idx_files(
    tmp_path: Path, hf_offline, capsys: pytest.CaptureFixture
) -> None:
    write_fashion(tmp_path / "fashion", train=40, test=20)
    data = {"name": "fashion-mnist", "root": str(tmp_path / "fashion"), "train": 32, "test": 16, "seed": 0}
    recipe = write_recipe(tmp_path / "registry", official_tiny("fashion-tiny", data=data,
                                                               evaluate={"attacks": ["lsp"], "victim_epochs": 1}))
    hf_offline()
    publish.main([str(recipe), "--dry-run", "--output", str(tmp_path / "out"), "--no-progress"])

    assert "fit: " in capsys.readouterr().out
    card = ModelCard.load(tmp_path / "out" / "README.md")
    assert card.data.datasets == ["zalando-datasets/fashion_mnist"] and card.data.evaluated_attacks == ["lsp"]
    assert "32 Fashion-MNIST images zero-padded to 1x32x32" in card.text
    assert "16 held-out fashion-mnist test images" in card.text


# ----------------------------------------------------------------------------- data you provide: --data-root

IMAGENET = "imagenet100-224-lsp-paper"


def test_a_recipe_of_your_own_data_needs_data_root_up_front(tmp_path: Path, hf_offline) -> None:
    hf_offline()
    for args in ([], ["--dry-run"], ["--dry-run", "--bundle"]):
        with pytest.raises(SystemExit, match=f"^{IMAGENET}: its imagefolder data is yours to provide and the "
                           r"recipe names no folder; pass --data-root DIR holding ROOT/train/<class>/") as info:
            publish.main([IMAGENET, "--output", str(tmp_path / "out"), *args])
        assert "\n" not in str(info.value)
    with pytest.raises(SystemExit, match=f"{IMAGENET} cannot be bundled: its weights alone take 31,946,560 bytes"):
        publish.main([IMAGENET, "--dry-run", "--bundle", "--data-root", str(tmp_path)])
    assert not (tmp_path / "out").exists()


def test_class_folders_publish_at_the_recipes_image_size(tmp_path: Path, hf_offline) -> None:
    """The ImageNet recipe's pipeline (224 px, RGB) on 3 classes of 4 + 2 images: the architecture follows."""
    tree = {split: {f"n0{label}": list(pixels(count, (224, 224, 3), 10 * label + count)) for label in range(3)}
            for split, count in (("train", 4), ("test", 2))}
    write_folder(tmp_path / "data", tree)
    recipe = {**json.loads(REGISTRY.recipe_file(IMAGENET).read_text()), "num_classes": 3}
    recipe["data"] = {**recipe["data"], "train": None}
    path = write_recipe(tmp_path / "registry", recipe)
    out = tmp_path / "out"
    hf_offline()
    publish.main([str(path), "--dry-run", "--data-root", str(tmp_path / "data"), "--output", str(out), "--no-eval",
                  "--no-progress", "--set", "epochs=1", "--set", "width=4", "--set", "latent_dim=4"])

    loaded = DVAEPurify.from_pretrained(out)
    for stage in (loaded.stage1, loaded.stage2):
        assert (stage.config["image_size"], stage.config["in_channels"], stage.config["downsamplings"]) == (224, 3, 4)
    assert loaded.num_classes == 3
    card = ModelCard.load(out / "README.md")
    assert "12 images of the publisher's class folders resized to 3x224x224" in card.text
    assert str(tmp_path / "data") not in card.text  # the card holds the recipe's data, not your local folder
