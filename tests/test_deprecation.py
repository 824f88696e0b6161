"""Renamed public names keep working for one release, each use warned with a ``FutureWarning``."""

from __future__ import annotations

import pytest
import torch

from dvae_transform import DVAEPurify, PurifiedDataset
from dvae_transform.deprecation import renamed_attribute, renamed_keywords


@renamed_keywords(old="new")
def _echo(*, new: int) -> int:
    return new


class _Holder:
    old = renamed_attribute("old", "new")

    def __init__(self) -> None:
        self.new = 1


def test_an_old_keyword_is_forwarded_with_a_warning_naming_the_new_one() -> None:
    with pytest.warns(FutureWarning, match="'old' is renamed 'new'"):
        assert _echo(old=3) == 3
    assert _echo(new=4) == 4


def test_both_names_at_once_are_refused() -> None:
    with pytest.raises(TypeError, match="both 'old' and its new name 'new'"):
        _echo(old=1, new=2)


def test_an_old_attribute_reads_and_writes_the_new_one() -> None:
    holder = _Holder()
    with pytest.warns(FutureWarning, match="_Holder: 'old' is renamed 'new'"):
        assert holder.old == 1
    with pytest.warns(FutureWarning):
        holder.old = 5
    assert holder.new == 5


def test_purifier_source_is_loaded_from(tiny_purifier: DVAEPurify, tmp_path) -> None:
    tiny_purifier.save_pretrained(tmp_path)
    loaded = DVAEPurify.from_pretrained(tmp_path)
    with pytest.warns(FutureWarning, match="'source' is renamed 'loaded_from'"):
        assert loaded.source == loaded.loaded_from
    assert loaded.loaded_from.kind == "folder"


def test_purified_dataset_batch_size_is_shard_size(tiny_data, tiny_purifier: DVAEPurify) -> None:
    with pytest.warns(FutureWarning, match="'batch_size' is renamed 'shard_size'"):
        dataset = PurifiedDataset(tiny_data, tiny_purifier, batch_size=16, cache=False, progress=False)
    assert dataset.shard_size == 16 and dataset.num_shards == 4
    new = PurifiedDataset(tiny_data, tiny_purifier, shard_size=16, cache=False, progress=False)
    assert torch.equal(dataset.stored_images, new.stored_images)


def test_fit_checkpoint_dir_is_resume_dir(tiny_data, tmp_path) -> None:
    options = {"epochs": 1, "width": 8, "latent_dim": 8, "batch_size": 32, "progress": False, "check": False}
    with pytest.warns(FutureWarning, match="'checkpoint_dir' is renamed 'resume_dir'"):
        DVAEPurify.fit(tiny_data, checkpoint_dir=tmp_path / "state", **options)
    assert (tmp_path / "state").is_dir()
    with pytest.raises(TypeError, match="both 'checkpoint_dir' and its new name 'resume_dir'"):
        DVAEPurify.fit(tiny_data, checkpoint_dir=tmp_path / "a", resume_dir=tmp_path / "b", **options)


def test_model_card_recipe_is_training_settings(tiny_purifier: DVAEPurify) -> None:
    with pytest.warns(FutureWarning, match="'recipe' is renamed 'training_settings'"):
        card = tiny_purifier.generate_model_card(recipe={"epochs": 3})
    assert "| epochs | `3` |" in str(card)
    assert str(card) == str(tiny_purifier.generate_model_card(training_settings={"epochs": 3}))
