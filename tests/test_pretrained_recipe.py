"""An official purifier's recipe file, read and checked (dvae_transform.pretrained.recipe)."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import pytest
from registry_helpers import MEASURED, tiny_recipe, write_recipe

from dvae_transform.pretrained.recipe import MeasuredEffect, PretrainedRecipe, TrainingData, read_recipe

DIGEST = "0" * 64


def test_a_recipe_file_reads_into_checked_records_and_writes_back_the_same(tmp_path: Path) -> None:
    stored = tiny_recipe("tiny", bundle={"config.json": DIGEST}, measured=dataclasses.asdict(MEASURED))
    path = write_recipe(tmp_path, stored)
    recipe = read_recipe(path)
    assert recipe.data == TrainingData("mnist", None, 64, 64, 0) and recipe.measured == MEASURED
    assert recipe.attacks == ["lsp"] and recipe.overrides["epochs"] == 1
    path.write_text(recipe.to_json())
    assert read_recipe(path) == recipe and json.loads(recipe.to_json()) == stored


@pytest.mark.parametrize(
    ("changes", "sources"),
    [({}, ()), ({"revision": "1" * 40}, ("hub",)), ({"bundle": {"a/b.json": DIGEST}}, ("bundled",)),
     ({"revision": "1" * 40, "bundle": {"a.json": DIGEST}}, ("hub", "bundled"))],
)
def test_sources_say_where_the_purifier_can_come_from(changes: dict, sources: tuple) -> None:
    assert PretrainedRecipe(**tiny_recipe("tiny", **changes)).sources == sources


def test_nested_records_may_be_given_as_objects_or_json() -> None:
    data = TrainingData("fashion-mnist", "/data", train=10)
    recipe = PretrainedRecipe(**tiny_recipe("tiny", data=data, measured=MEASURED))
    assert recipe.data is data and recipe.measured is MEASURED


@pytest.mark.parametrize(
    ("changes", "error", "words"),
    [
        ({"image_size": 0}, ValueError, "image_size must be positive"),
        ({"revision": 3}, TypeError, "revision must be a str or None"),
        ({"preset": "fastest"}, ValueError, "fastest"),
        ({"attack_kwargs": {"lsp": 1.6}}, TypeError, "attack_kwargs lsp must be a dict"),
        ({"evaluate": {"attacks": []}}, ValueError, "evaluate attacks must name at least one attack"),
        ({"evaluate": {"victim_epochs": 0}}, ValueError, "evaluate victim_epochs must be positive"),
        ({"attacks": ["lsp", 3]}, TypeError, "attacks entry must be a str"),
        ({"bundle": {"/abs.json": DIGEST}}, ValueError, "'/abs.json' must be relative"),
        ({"bundle": {"a//b.json": DIGEST}}, ValueError, "must be relative, without"),
        ({"bundle": {"a.json": "A" * 64}}, ValueError, "64 lowercase hex digits"),
        ({"bundle": ["a.json"]}, TypeError, "bundle must be a dict"),
    ],
)
def test_bad_fields_are_named(changes: dict, error: type[Exception], words: str) -> None:
    with pytest.raises(error, match=words):
        PretrainedRecipe(**tiny_recipe("tiny", **changes))


@pytest.mark.parametrize(
    ("fields", "error", "words"),
    [
        ({"name": 3}, TypeError, "data name must be a str"),
        ({"name": "mnist", "root": Path("/data")}, TypeError, "data root must be a str or None"),
        ({"name": "mnist", "test": -1}, ValueError, "data test must be positive"),
        ({"name": "mnist", "seed": 0.5}, TypeError, "data seed must be an int"),
    ],
)
def test_bad_training_data_is_named(fields: dict, error: type[Exception], words: str) -> None:
    with pytest.raises(error, match=words):
        TrainingData(**fields)


@pytest.mark.parametrize(
    ("fields", "error", "words"),
    [
        ({"victim_epochs": 0}, ValueError, "measured victim_epochs must be positive"),
        ({"attacks": []}, TypeError, "measured attacks must be a dict"),
        ({"attacks": {"lsp": [0.1, 0.2]}}, TypeError, "measured attacks lsp must be a dict"),
        ({"attacks": {"lsp": {"poisoned": 0.1, "purified": 2.0}}}, ValueError,
         r"measured attacks lsp purified must be an accuracy in \[0, 1\]"),
    ],
)
def test_bad_measurements_are_named(fields: dict, error: type[Exception], words: str) -> None:
    with pytest.raises(error, match=words):
        MeasuredEffect(**{"victim_epochs": 1, "clean": 0.9, "attacks": {}, **fields})


def test_every_error_of_a_recipe_file_names_the_file(tmp_path: Path) -> None:
    path = write_recipe(tmp_path, tiny_recipe("bad", channels=0))
    with pytest.raises(ValueError, match="channels must be positive") as info:
        read_recipe(path)
    assert str(path) in str(info.value)
    path.write_bytes(b"\xff\xfe not text")
    with pytest.raises(ValueError, match=f"{path} is not valid JSON"):
        read_recipe(path)
    path.write_text(json.dumps({key: value for key, value in tiny_recipe("bad").items() if key != "repo_id"}))
    with pytest.raises((TypeError, ValueError), match="repo_id") as info:
        read_recipe(path)
    assert str(path) in str(info.value)
