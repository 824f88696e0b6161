"""Which copy ``DVAEPurify.from_pretrained(name)`` loads: the Hub repo at the pinned revision or the bundled copy.

Everything runs against ``FakeHub`` through the real ``huggingface_hub`` client. The official names come from a
registry folder in ``tmp_path`` (``Registry(folder)``, passed as ``registry=``): its bundled copy is the
``tiny_purifier``, while its Hub repo holds ``other_purifier``, so the purified output tells which copy loaded.
"""

from __future__ import annotations

import logging
from pathlib import Path

import pytest
import torch
from hub_fixtures import folder_files
from huggingface_hub.errors import LocalEntryNotFoundError, RepositoryNotFoundError, RevisionNotFoundError
from registry_helpers import MEASURED, edit_recipe, make_registry, tiny_recipe

from dvae_transform import DVAEPurify
from dvae_transform.pretrained.registry import Registry

NAME = "tiny-fast"
REPO = f"tests-org/{NAME}"
LOGGER = "dvae_transform.pretrained.resolve"


@pytest.fixture(scope="module")
def saved(tiny_purifier: DVAEPurify, other_purifier: DVAEPurify, tmp_path_factory) -> dict[str, Path]:
    """Both purifiers written by ``save_pretrained``: ``bundled`` (tiny) and ``hub`` (other)."""
    root = tmp_path_factory.mktemp("saved")
    tiny_purifier.save_pretrained(root / "bundled")
    other_purifier.save_pretrained(root / "hub")
    return {"bundled": root / "bundled", "hub": root / "hub"}


@pytest.fixture
def registry(tmp_path: Path, saved: dict[str, Path]) -> Registry:
    """A registry folder whose ``tiny-fast`` is bundled (the tiny purifier) and not published."""
    registry = make_registry(tmp_path / "registry", tiny_recipe(NAME), tiny_recipe("tiny-hub-only"))
    registry.write_bundle(NAME, saved["bundled"], MEASURED)
    return Registry(registry.folder)  # read back from the files


@pytest.fixture
def expected(tiny_purifier: DVAEPurify, other_purifier: DVAEPurify, tiny_data) -> dict[str, torch.Tensor]:
    """What each copy makes of ``tiny_data``."""
    return {"bundled": tiny_purifier.purify(*tiny_data), "hub": other_purifier.purify(*tiny_data)}


def publish(fake_hub, registry: Registry, saved: dict[str, Path]) -> tuple[Registry, str]:
    """Put the Hub copy on the server and pin its commit in the recipe."""
    sha = fake_hub.add_repo(REPO, folder_files(saved["hub"]))
    return edit_recipe(registry, NAME, revision=sha), sha


def which(purifier: DVAEPurify, tiny_data, expected: dict[str, torch.Tensor]) -> str:
    """``"bundled"`` or ``"hub"``: the copy whose output ``purifier`` reproduces."""
    output = purifier.purify(*tiny_data)
    return next(kind for kind, reference in expected.items() if torch.equal(output, reference))


# ----------------------------------------------------------------------------- the bundled copy


def test_unpublished_name_loads_the_bundled_copy_without_any_request(
    fake_hub, registry: Registry, tiny_data, expected, caplog
) -> None:
    with caplog.at_level(logging.INFO, logger=LOGGER):
        purifier = DVAEPurify.from_pretrained(NAME, registry=registry)

    assert which(purifier, tiny_data, expected) == "bundled"
    assert purifier.loaded_from.kind == "bundled" and purifier.loaded_from.name == NAME
    assert purifier.loaded_from.location == str(registry.bundle_folder(NAME))
    assert purifier.loaded_from.reason == "not published on the Hub yet"
    assert fake_hub.request_log == []
    assert f"loaded the copy of {NAME} bundled with dvae-transform" in caplog.text
    assert purifier.replace(batch_size=7).loaded_from == purifier.loaded_from


def test_offline_mode_and_local_files_only_go_straight_to_the_bundled_copy(
    fake_hub, registry: Registry, saved, hf_offline, tiny_data, expected
) -> None:
    registry, _ = publish(fake_hub, registry, saved)
    fake_hub.clear_log()

    local = DVAEPurify.from_pretrained(NAME, registry=registry, local_files_only=True)
    hf_offline()
    offline = DVAEPurify.from_pretrained(NAME, registry=registry)

    assert which(local, tiny_data, expected) == which(offline, tiny_data, expected) == "bundled"
    assert local.loaded_from.reason == "local_files_only=True"
    assert offline.loaded_from.reason == "offline mode (HF_HUB_OFFLINE=1)"
    assert fake_hub.request_log == []


@pytest.mark.parametrize("change", ["flip a byte", "truncate", "delete"])
def test_a_damaged_bundled_copy_is_refused_never_loaded(
    fake_hub, registry: Registry, change: str, hf_offline
) -> None:
    weights = registry.bundle_folder(NAME) / "stage2" / "model.safetensors"
    data = weights.read_bytes()
    if change == "flip a byte":
        weights.write_bytes(data[:-1] + bytes([data[-1] ^ 1]))
    elif change == "truncate":
        weights.write_bytes(data[:-10])
    else:
        weights.unlink()
    hf_offline()

    error = ValueError if change != "delete" else FileNotFoundError
    message = "damaged or was tampered with" if change != "delete" else "is incomplete"
    with pytest.raises(error, match=message) as info:
        DVAEPurify.from_pretrained(NAME, registry=registry)
    assert "stage2/model.safetensors" in str(info.value)


def test_a_damaged_bundled_copy_is_refused_when_the_hub_fails_too(fake_hub, registry: Registry, saved) -> None:
    registry, _ = publish(fake_hub, registry, saved)
    registry = edit_recipe(registry, NAME, revision="0" * 40)  # a pin the Hub does not know
    config = registry.bundle_folder(NAME) / "stage1" / "config.json"
    config.write_text(config.read_text().replace('"width": 8', '"width": 10'))

    with pytest.raises(ValueError, match=r"bundled copy of tiny-fast is damaged .*/stage1/config\.json has sha256"):
        DVAEPurify.from_pretrained(NAME, registry=registry)


# ----------------------------------------------------------------------------- the Hub copy first, when published


def test_a_published_name_loads_the_hub_copy_at_its_pinned_revision(
    fake_hub, registry: Registry, saved, tiny_data, expected
) -> None:
    registry, sha = publish(fake_hub, registry, saved)
    fake_hub.add_repo(REPO, folder_files(saved["bundled"]))  # main moves on; the pin does not

    purifier = DVAEPurify.from_pretrained(NAME, registry=registry)

    assert which(purifier, tiny_data, expected) == "hub"
    loaded = purifier.loaded_from
    assert (loaded.kind, loaded.location, loaded.revision) == ("hub", REPO, sha)
    assert any(f"/{REPO}/resolve/{sha}/" in path for _, path in fake_hub.request_log)


def test_the_hub_copy_comes_from_the_cache_while_the_hub_is_down(
    fake_hub, registry: Registry, saved, tiny_data, expected
) -> None:
    registry, _ = publish(fake_hub, registry, saved)
    DVAEPurify.from_pretrained(NAME, registry=registry)  # downloads into the cache
    fake_hub.stop()

    purifier = DVAEPurify.from_pretrained(NAME, registry=registry)
    assert which(purifier, tiny_data, expected) == "hub" and purifier.loaded_from.kind == "hub"


def test_hub_down_falls_back_to_the_bundled_copy_and_says_so(
    fake_hub, registry: Registry, saved, tiny_data, expected, caplog
) -> None:
    registry, sha = publish(fake_hub, registry, saved)
    fake_hub.stop()

    with caplog.at_level(logging.WARNING, logger=LOGGER):
        purifier = DVAEPurify.from_pretrained(NAME, registry=registry)

    assert which(purifier, tiny_data, expected) == "bundled" and purifier.loaded_from.kind == "bundled"
    assert purifier.loaded_from.reason.startswith("the Hub copy could not be loaded (LocalEntryNotFoundError")
    assert f"{NAME}: could not load {REPO} at revision {sha}" in caplog.text
    assert "using the bundled copy" in caplog.text


@pytest.mark.parametrize("missing", ["revision", "repo"])
def test_an_unpublished_pin_falls_back_to_the_bundled_copy(
    fake_hub, registry: Registry, saved, missing: str, tiny_data, expected
) -> None:
    registry, sha = publish(fake_hub, registry, saved)
    if missing == "revision":
        registry = edit_recipe(registry, NAME, revision="0" * 40)
    else:
        fake_hub.remove_repo(REPO)

    purifier = DVAEPurify.from_pretrained(NAME, registry=registry)

    assert which(purifier, tiny_data, expected) == "bundled"
    error = "RevisionNotFoundError" if missing == "revision" else "RepositoryNotFoundError"
    assert f"could not be loaded ({error}" in purifier.loaded_from.reason


# ----------------------------------------------------------------------------- as before: revisions, repo ids, folders


def test_an_explicit_revision_loads_that_revision_and_never_the_bundle(
    fake_hub, registry: Registry, saved, tiny_data, expected
) -> None:
    sha = fake_hub.add_repo(REPO, folder_files(saved["hub"]))
    purifier = DVAEPurify.from_pretrained(NAME, registry=registry, revision=sha)
    assert which(purifier, tiny_data, expected) == "hub" and purifier.loaded_from.revision == sha

    with pytest.raises(RevisionNotFoundError):
        DVAEPurify.from_pretrained(NAME, registry=registry, revision="v9")


def test_a_repo_id_and_a_folder_load_as_before(fake_hub, registry: Registry, saved, tiny_data, expected) -> None:
    fake_hub.add_repo(REPO, folder_files(saved["hub"]))

    by_repo = DVAEPurify.from_pretrained(REPO, registry=registry)  # the repo id of a bundled name: still the Hub
    by_folder = DVAEPurify.from_pretrained(saved["bundled"])

    assert which(by_repo, tiny_data, expected) == "hub" and by_repo.loaded_from.kind == "hub"
    assert (by_folder.loaded_from.kind, by_folder.loaded_from.location) == ("folder", str(saved["bundled"]))
    with pytest.raises(RepositoryNotFoundError):
        DVAEPurify.from_pretrained("tests-org/absent", registry=registry)


def test_a_name_neither_pinned_nor_bundled_loads_the_main_branch(fake_hub, registry: Registry, saved, caplog) -> None:
    fake_hub.add_repo("tests-org/tiny-hub-only", folder_files(saved["hub"]))

    with caplog.at_level(logging.WARNING, logger=LOGGER):
        purifier = DVAEPurify.from_pretrained("tiny-hub-only", registry=registry)

    assert purifier.loaded_from.kind == "hub" and purifier.loaded_from.revision is None
    assert "tiny-hub-only: no revision is pinned and no copy is bundled" in caplog.text


# ----------------------------------------------------------------------------- errors that name the problem


def test_an_unknown_name_lists_the_known_ones(registry: Registry) -> None:
    with pytest.raises(ValueError, match=r"'tiny-fsat'.*did you mean 'tiny-fast'\? known: tiny-fast, tiny-hub-only"):
        DVAEPurify.from_pretrained("tiny-fsat", registry=registry)
    with pytest.raises(ValueError, match=r"did you mean 'mnist32-lsp-fast'\? known: .*mnist32-lsp-fast"):
        DVAEPurify.from_pretrained("mnist32-lsp-fats")


def test_offline_with_an_empty_cache_names_the_repo_and_offline_mode(fake_hub, registry: Registry, hf_offline) -> None:
    hf_offline()
    with pytest.raises(LocalEntryNotFoundError, match=r"tests-org/someone \(revision main\) is not in the Hugging "
                       r"Face cache .* offline mode is on \(HF_HUB_OFFLINE=1\)"):
        DVAEPurify.from_pretrained("tests-org/someone", registry=registry)
    with pytest.raises(LocalEntryNotFoundError, match=r"tiny-hub-only: no copy is bundled with dvae-transform, and "
                       r"its Hub repo tests-org/tiny-hub-only .* offline mode is on"):
        DVAEPurify.from_pretrained("tiny-hub-only", registry=registry)
    with pytest.raises(LocalEntryNotFoundError, match=r"^tiny-fast: its Hub repo tests-org/tiny-fast \(revision v2\)"):
        DVAEPurify.from_pretrained(NAME, registry=registry, revision="v2")  # a revision, not the bundled copy


def test_hub_down_with_an_empty_cache_says_the_hub_could_not_be_reached(fake_hub, tmp_path: Path) -> None:
    url = fake_hub.url
    fake_hub.stop()
    with pytest.raises(LocalEntryNotFoundError, match=rf"the Hub at {url} could not be reached \(.*Connect"):
        DVAEPurify.from_pretrained("tests-org/someone")
    with pytest.raises(LocalEntryNotFoundError, match=r"not in the Hugging Face cache .* local_files_only=True"):
        DVAEPurify.from_pretrained("tests-org/someone", local_files_only=True, cache_dir=tmp_path)
