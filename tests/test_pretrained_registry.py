"""The registry of official pretrained purifiers: its recipe files and their checks, bundled copies and their sha256s,
and the package data (what ships, within its budget, and what the README says about it)."""

from __future__ import annotations

import configparser
import json
import re
from pathlib import Path

import pytest
import torch
from registry_helpers import MEASURED, make_registry, tiny_recipe, write_recipe
from test_publish import publish  # hub/publish.py, imported by path

from dvae_transform import DVAEPurify, list_pretrained, pretrained_info
from dvae_transform.evaluation.check_batch import verify_check_batch
from dvae_transform.pretrained.recipe import TrainingData, read_recipe
from dvae_transform.pretrained.registry import PACKAGE_FOLDER, REGISTRY, Registry, relative_files

ROOT = Path(__file__).resolve().parents[1]
CHECK_BATCHES = Path(__file__).parent / "data" / "bundled-checks"  # 16 images each, written with the bundles
OFFICIAL = [
    "fashion-mnist32-lsp-fast",
    "fashion-mnist32-mix-fast",
    "imagenet100-224-lsp-paper",
    "mnist32-classwise-noise-fast",
    "mnist32-lsp-fast",
    "mnist32-mix-fast",
]


# ----------------------------------------------------------------------------- the package's registry


def test_list_pretrained_lists_what_loads_by_default() -> None:
    available = sorted({*list_pretrained(source="bundled"), *list_pretrained(source="hub")})
    assert list_pretrained() == available and available
    assert "mnist32-classwise-noise-fast" in list_pretrained(source="all")
    assert "mnist32-classwise-noise-fast" not in list_pretrained()  # no copy anywhere yet


def test_the_package_registry_holds_the_official_recipes() -> None:
    assert list_pretrained(source="all") == OFFICIAL == sorted(REGISTRY)
    assert list_pretrained("*-mix-*") == ["fashion-mnist32-mix-fast", "mnist32-mix-fast"]
    for name in list_pretrained("*mnist32-*", source="all"):
        info = pretrained_info(name)
        assert (info.repo_id, info.image_size, info.channels, info.num_classes, info.preset) == (
            f"dvae-transform/{name}", 32, 1, 10, "fast",
        )
        assert info.data == (TrainingData("mnist") if name.startswith("mnist32") else
                             TrainingData("fashion-mnist", None, 4000, 1000, 0))
    assert pretrained_info("mnist32-lsp-fast").attacks == ["lsp"]
    assert pretrained_info("mnist32-mix-fast").attacks == ["classwise_noise", "lsp", "ops", "autoregressive"]
    imagenet = pretrained_info("imagenet100-224-lsp-paper")  # the paper's ImageNet subset: data you provide
    assert (imagenet.image_size, imagenet.channels, imagenet.num_classes, imagenet.preset, imagenet.overrides) == (
        224, 3, 100, "paper", {"epochs": 20},
    )
    assert imagenet.data == TrainingData("imagefolder", None, 26000, None, 0) and imagenet.attacks == ["lsp"]
    assert all(entry.revision is None for entry in REGISTRY.values())  # nothing is published yet
    with pytest.raises(ValueError, match="did you mean 'mnist32-lsp-fast'.* known: fashion-mnist32-lsp-fast, "):
        pretrained_info("mnist32-lsp")


def test_recipe_files_are_stored_as_the_registry_writes_them() -> None:
    files = sorted((PACKAGE_FOLDER / "recipes").iterdir())
    assert [path.name for path in files] == [f"{name}.json" for name in OFFICIAL]
    for path in files:
        entry = REGISTRY[path.stem]
        assert read_recipe(path) == entry and path.read_text() == entry.to_json()


def test_bundled_copies_are_complete_verified_and_within_budget() -> None:
    bundled = list_pretrained(source="bundled")
    folder = PACKAGE_FOLDER / "bundled"
    folders = sorted(path.name for path in folder.iterdir() if path.is_dir()) if folder.is_dir() else []
    assert folders == bundled
    for name in bundled:
        copy = REGISTRY.verified_bundle(name)
        assert relative_files(copy) == sorted(REGISTRY[name].bundle)
        assert REGISTRY[name].measured is not None
    assert REGISTRY.bundled_bytes() <= publish.BUNDLE_BUDGET_BYTES == 5_000_000


def test_every_bundled_name_loads_offline_and_purifies_as_publish_py_wrote_it(hf_offline) -> None:
    hf_offline()
    for name in list_pretrained(source="bundled"):
        purifier = DVAEPurify.from_pretrained(name)
        entry = REGISTRY[name]
        assert purifier.loaded_from.kind == "bundled"
        assert (purifier.in_channels, purifier.image_size, purifier.num_classes) == (
            entry.channels, entry.image_size, entry.num_classes,
        )
        # publish.py --bundle --check-batch, same run; bit for bit there, within check_tolerance anywhere
        assert verify_check_batch(purifier, CHECK_BATCHES / f"{name}.safetensors") <= 1.0


def _scale_a_weight(purifier: DVAEPurify) -> None:
    purifier.stage2.image_decoder[-2].weight.mul_(1.01)


def _move_one_bias(purifier: DVAEPurify) -> None:
    purifier.stage2.image_decoder[-2].bias[0] += 1e-4


def _scale_the_stem(purifier: DVAEPurify) -> None:
    purifier.stage1.stem[0].weight.mul_(1.01)


@pytest.mark.parametrize("tamper", [_scale_a_weight, _move_one_bias, _scale_the_stem])
def test_a_changed_bundled_checkpoint_fails_its_check_batch(hf_offline, tamper) -> None:
    hf_offline()
    name = list_pretrained(source="bundled")[0]
    purifier = DVAEPurify.from_pretrained(name)
    with torch.no_grad():
        tamper(purifier)
    with pytest.raises(ValueError, match=rf"{name}\.safetensors: \d+ of 16384 purified values differ .* not the one"):
        verify_check_batch(purifier, CHECK_BATCHES / f"{name}.safetensors")


def test_package_data_ships_the_recipes_templates_and_bundles(tmp_path: Path, tiny_purifier: DVAEPurify) -> None:
    config = configparser.ConfigParser()
    config.read(ROOT / "setup.cfg")
    patterns = [p.strip() for p in config["options.package_data"]["dvae_transform.pretrained"].split(",")]

    def packaged(root: Path) -> set[str]:  # what setuptools globs under the package folder
        return {path.relative_to(root).as_posix() for pattern in patterns for path in root.glob(pattern)}

    shipped = {path for path in relative_files(PACKAGE_FOLDER) if not path.endswith((".py", ".pyc"))}
    assert shipped and packaged(PACKAGE_FOLDER) == shipped
    tiny_purifier.save_pretrained(tmp_path / "bundled" / "any-name")  # a bundle as publish.py --bundle writes it
    assert packaged(tmp_path) == set(relative_files(tmp_path))


def test_readme_says_truthfully_where_each_checkpoint_is() -> None:
    readme = (ROOT / "README.md").read_text()
    table = readme.split("<!-- pretrained:start -->")[1].split("<!-- pretrained:end -->")[0]
    rows = {match[0]: match[1:] for match in re.findall(r"^\| `([^`]+)` \|.*\| ([^|]+?) \| ([^|]+?) \|$", table, re.M)}
    assert sorted(rows) == OFFICIAL
    for name, (hub, bundled) in rows.items():
        entry = REGISTRY[name]
        too_large = publish.estimated_bundle_bytes(entry) > publish.BUNDLE_BUDGET_BYTES
        assert hub == ("not yet" if entry.revision is None else f"`{entry.revision[:12]}`"), name
        assert bundled == ("yes" if entry.bundle else "no (too large)" if too_large else "not yet"), name


# ----------------------------------------------------------------------------- any registry folder


def test_a_registry_folder_lists_its_names_by_source(tmp_path: Path, tiny_purifier: DVAEPurify) -> None:
    registry = make_registry(tmp_path, tiny_recipe("a-bundled"), tiny_recipe("b-hub", revision="1" * 40),
                             tiny_recipe("c-none"))
    tiny_purifier.save_pretrained(tmp_path / "saved")
    registry.write_bundle("a-bundled", tmp_path / "saved", MEASURED)

    assert registry.names() == ["a-bundled", "b-hub", "c-none"] and len(registry) == 3
    assert registry.names(source="bundled") == ["a-bundled"] and registry.names(source="hub") == ["b-hub"]
    assert registry.names("b*", source="bundled") == []
    assert registry["b-hub"].sources == ("hub",) and registry["c-none"].sources == ()
    with pytest.raises(ValueError, match="source must be one of"):
        registry.names(source="cdn")
    with pytest.raises(FileNotFoundError, match="a registry folder holds recipes/<name>.json"):
        Registry(tmp_path / "nowhere")


def test_write_bundle_replaces_the_copy_and_records_its_files(
    tmp_path: Path, tiny_purifier: DVAEPurify, other_purifier: DVAEPurify
) -> None:
    registry = make_registry(tmp_path / "registry", tiny_recipe("tiny"))
    tiny_purifier.save_pretrained(tmp_path / "first")
    (tmp_path / "first" / "notes.txt").write_text("only in the first copy")
    other_purifier.save_pretrained(tmp_path / "second")

    registry.write_bundle("tiny", tmp_path / "first", MEASURED)
    first = registry["tiny"].bundle
    updated = registry.write_bundle("tiny", tmp_path / "second", MEASURED)

    assert "notes.txt" in first and "notes.txt" not in updated.bundle
    assert first["stage2/model.safetensors"] != updated.bundle["stage2/model.safetensors"]
    assert first["stage1/model.safetensors"] == updated.bundle["stage1/model.safetensors"]
    assert relative_files(registry.verified_bundle("tiny")) == sorted(updated.bundle)
    assert Registry(registry.folder)["tiny"] == updated == registry["tiny"]  # the recipe file holds it
    assert updated.measured == MEASURED
    assert [path.name for path in (registry.folder / "bundled").iterdir()] == ["tiny"]  # no temporary folder left
    assert registry.verified_bundle("tiny") == registry.bundle_folder("tiny")
    other = make_registry(registry.folder, tiny_recipe("other"))
    with pytest.raises(FileNotFoundError, match="no copy of other is bundled"):
        other.verified_bundle("other")


@pytest.mark.parametrize(
    ("change", "error", "message"),
    [
        ({"colour": "red"}, ValueError, r"unknown key\(s\) \['colour'\]"),
        ({"seed": "0"}, TypeError, "seed must be an int"),
        ({"attacks": []}, ValueError, "attacks must name at least one attack"),
        ({"attacks": ["lsp", "lsp"]}, ValueError, "names an attack twice"),
        ({"attacks": "lsp"}, TypeError, "attacks must be a list"),
        ({"data": {"name": "mnist", "size": 3}}, ValueError, r"data: unknown key\(s\) \['size'\]"),
        ({"data": {"name": "mnist", "train": 0}}, ValueError, "data train must be positive"),
        ({"evaluate": {"attacks": ["lsp"], "victims": 2}}, ValueError, r"unknown evaluate key\(s\) \['victims'\]"),
        ({"overrides": {"epochz": 3}}, TypeError, "unknown fit setting"),
        ({"bundle": {"../escape.json": "0" * 64}}, ValueError, "must be relative, without '.' or '..'"),
        ({"bundle": {"config.json": "abc"}}, ValueError, "expected a sha256"),
        ({"bundle": {}}, ValueError, "bundle must list at least one file"),
        ({"measured": {"victim_epochs": 1, "clean": 1.5, "attacks": {}}}, ValueError, r"clean must be an accuracy"),
        ({"measured": {"victim_epochs": 1, "clean": 0.5, "attacks": {"lsp": {"poisoned": 0.1}}}}, ValueError,
         r"must hold \['poisoned', 'purified'\]"),
    ],
)
def test_bad_recipes_are_refused_naming_the_file_and_the_problem(
    tmp_path: Path, change: dict, error: type, message: str
) -> None:
    path = write_recipe(tmp_path, tiny_recipe("bad", **change))
    with pytest.raises(error, match=message) as info:
        Registry(tmp_path)
    assert str(path) in str(info.value)


def test_a_recipe_stored_under_another_name_or_not_json_is_refused(tmp_path: Path) -> None:
    path = write_recipe(tmp_path, tiny_recipe("right"))
    path.rename(path.with_name("wrong.json"))
    with pytest.raises(ValueError, match=r"the recipe named 'right' must be stored as right\.json"):
        Registry(tmp_path)
    path.with_name("wrong.json").write_text(json.dumps(tiny_recipe("wrong"))[:-2])
    with pytest.raises(ValueError, match=r"wrong\.json is not valid JSON"):
        Registry(tmp_path)


def test_a_folder_named_like_an_official_checkpoint_does_not_replace_it(hf_offline, tiny_purifier: DVAEPurify,
                                                                        tmp_path: Path, monkeypatch, caplog) -> None:
    hf_offline()
    name = list_pretrained(source="bundled")[0]
    tiny_purifier.save_pretrained(tmp_path / name)  # not the official weights
    monkeypatch.chdir(tmp_path)
    with caplog.at_level("WARNING", logger="dvae_transform.pretrained.resolve"):
        official = DVAEPurify.from_pretrained(name)
    assert official.loaded_from.kind == "bundled"
    assert f"load that one as './{name}'" in caplog.text
    for path in (f"./{name}", Path(name)):
        assert DVAEPurify.from_pretrained(path).loaded_from.kind == "folder"
