"""``push_to_hub`` and ``hub/publish.py`` against ``FakeHub``: what is pushed downloads back bit-identical."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from hub_fixtures import CLIENT_UPLOAD_WARNING, folder_files
from hub_server import FakeHub
from huggingface_hub import HfApi, snapshot_download
from huggingface_hub.errors import HfHubHTTPError, RepositoryNotFoundError
from registry_helpers import edit_recipe, make_registry
from safetensors.torch import load_file
from test_publish import official_tiny, publish  # hub/publish.py, imported by path

from dvae_transform import DVAEPurify
from dvae_transform.pretrained.registry import REGISTRY, Registry

pytestmark = CLIENT_UPLOAD_WARNING

ROOT = Path(__file__).resolve().parents[1]
SCRIPT = ROOT / "hub" / "publish.py"
RECIPE = REGISTRY.recipe_file("mnist32-lsp-fast")
TINY = [
    "--max-images",
    "128",
    "--set",
    "epochs=1",
    "--set",
    "width=8",
    "--set",
    "latent_dim=8",
    "--victim-epochs",
    "1",
    "--no-progress",
]
REPO = "tests-org/pushed-purifier"
WEIGHT_FILES = ("stage1/model.safetensors", "stage2/model.safetensors")


def downloaded(repo_id: str, cache: Path, revision: str | None = None) -> dict[str, bytes]:
    """The repo's files as the client downloads them into ``cache``, without the ``.gitattributes`` every repo has."""
    folder = Path(snapshot_download(repo_id, revision=revision, cache_dir=cache))
    return folder_files(folder, exclude=(".gitattributes",))


def push_status(purifier: DVAEPurify, repo_id: str, token: str | None) -> int:
    """The HTTP status of the error that pushing ``purifier`` raises."""
    with pytest.raises(HfHubHTTPError) as info:
        purifier.push_to_hub(repo_id, token=token)
    return info.value.response.status_code


def run_publish(hub: FakeHub, token: str, home: Path, *args: str | Path) -> subprocess.CompletedProcess:
    """Run ``hub/publish.py`` as a maintainer would, logged in (``HF_TOKEN``) to the fake hub (``HF_ENDPOINT``)."""
    env = {
        **os.environ,
        "PYTHONPATH": str(ROOT),
        "HF_HOME": str(home),
        "HF_ENDPOINT": hub.url,
        "HF_TOKEN": token,
        "HF_HUB_DISABLE_XET": "1",
        "HF_HUB_OFFLINE": "0",
    }
    for name in ("HF_HUB_CACHE", "HF_HUB_DISABLE_IMPLICIT_TOKEN"):  # set by the fixtures for this process only
        env.pop(name, None)
    return subprocess.run(
        [sys.executable, str(SCRIPT), *map(str, args)], env=env, capture_output=True, text=True, timeout=600
    )


def test_push_to_hub_downloads_back_bit_identical(
    fake_hub: FakeHub, hub_token: str, tiny_purifier: DVAEPurify, tiny_data, tmp_path: Path
) -> None:
    commit = tiny_purifier.push_to_hub(REPO, token=hub_token)
    tiny_purifier.save_pretrained(tmp_path / "saved")
    saved = folder_files(tmp_path / "saved")

    assert commit.oid == fake_hub.resolve(REPO) and commit.commit_url == f"{fake_hub.url}/{REPO}/commit/{commit.oid}"
    assert downloaded(REPO, tmp_path / "fresh") == saved
    loaded = DVAEPurify.from_pretrained(REPO, cache_dir=tmp_path / "fresh-too")
    assert torch.equal(loaded.purify(*tiny_data), tiny_purifier.purify(*tiny_data))
    siblings = {s.rfilename: s for s in HfApi().model_info(REPO, files_metadata=True).siblings or []}
    assert all(siblings[name].lfs is not None for name in WEIGHT_FILES)  # the weights went through Git LFS
    assert fake_hub.count("PUT", "/lfs-upload/") == len(WEIGHT_FILES)


def test_a_second_push_makes_a_new_commit_and_the_first_stays_loadable(
    fake_hub: FakeHub, hub_token: str, tiny_purifier: DVAEPurify, other_purifier: DVAEPurify, tiny_data
) -> None:
    first = tiny_purifier.push_to_hub(REPO, token=hub_token)
    fake_hub.clear_log()
    second = other_purifier.push_to_hub(REPO, token=hub_token, commit_message="Shift the stage-2 decoder")

    assert second.oid != first.oid and fake_hub.resolve(REPO) == second.oid
    assert fake_hub.count("PUT") == 1  # only stage2/model.safetensors changed
    commits = HfApi().list_repo_commits(REPO)
    assert [c.commit_id for c in commits[:2]] == [second.oid, first.oid]
    assert commits[0].title == "Shift the stage-2 decoder"
    old, new = tiny_purifier.purify(*tiny_data), other_purifier.purify(*tiny_data)
    assert not torch.equal(old, new)
    assert torch.equal(DVAEPurify.from_pretrained(REPO, revision=first.oid).purify(*tiny_data), old)
    assert torch.equal(DVAEPurify.from_pretrained(REPO).purify(*tiny_data), new)


def test_pushing_needs_a_valid_token_with_rights_and_reuses_an_existing_repo(
    fake_hub: FakeHub, hub_token: str, tiny_purifier: DVAEPurify
) -> None:
    assert push_status(tiny_purifier, REPO, token=None) == 401  # implicit tokens are off: none is sent
    assert push_status(tiny_purifier, REPO, token="hf_not_a_token") == 401
    assert push_status(tiny_purifier, "someone-else/purifier", token=hub_token) == 403
    with pytest.raises(RepositoryNotFoundError):
        HfApi().model_info(REPO)  # nothing was created

    first = tiny_purifier.push_to_hub(REPO, token=hub_token)
    url = HfApi(token=hub_token).create_repo(REPO, exist_ok=True)
    assert url == f"{fake_hub.url}/{REPO}" and fake_hub.resolve(REPO) == first.oid
    assert push_status(tiny_purifier, REPO, token=None) == 401  # the repo exists, but the commit needs a token
    assert tiny_purifier.push_to_hub(REPO, token=hub_token).oid == first.oid  # same files: no new commit


def test_publish_with_a_refused_token_stops_before_fitting(
    fake_hub: FakeHub, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("HF_TOKEN", "hf_not_a_token")
    out = tmp_path / "out"
    with pytest.raises(SystemExit, match=r"cannot push: the Hub refused \(Invalid user token"):
        publish.main([str(RECIPE), "--output", str(out), *TINY])

    assert not out.exists()
    assert fake_hub.request_log == [("GET", "/api/whoami-v2")]


@pytest.mark.slow
def test_publish_pushes_a_checkpoint_that_downloads_back_bit_identical(
    fake_hub: FakeHub, hub_token: str, tmp_path: Path
) -> None:
    out, check = tmp_path / "out", tmp_path / "check.safetensors"
    result = run_publish(fake_hub, hub_token, tmp_path / "home", RECIPE, "--output", out, "--check-batch", check, *TINY)
    assert result.returncode == 0, result.stderr

    repo_id = json.loads(RECIPE.read_text())["repo_id"]
    sha = fake_hub.resolve(repo_id)
    assert f"pushed {fake_hub.url}/{repo_id}/commit/{sha}; pin revision={sha!r}" in result.stdout
    assert HfApi().list_repo_commits(repo_id)[0].title == "Publish mnist32-lsp-fast"
    assert downloaded(repo_id, tmp_path / "fresh", revision=sha) == folder_files(out)

    batch = load_file(check)
    loaded = DVAEPurify.from_pretrained(repo_id, revision=sha, cache_dir=tmp_path / "fresh")
    assert torch.equal(loaded.purify(batch["images"], batch["labels"]), batch["purified"])


def test_one_publish_run_pushes_and_bundles_the_same_files_and_the_pin_then_loads_them(
    fake_hub: FakeHub, hub_token: str, tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    registry = make_registry(tmp_path / "registry", official_tiny("tiny-pushed"))
    publish.main(["tiny-pushed", "--registry", str(registry.folder), "--bundle", "--token", hub_token,
                  "--repo-id", "tests-org/tiny-pushed", "--output", str(tmp_path / "out"), "--no-progress"])
    sha = fake_hub.resolve("tests-org/tiny-pushed")
    assert f"pin revision={sha!r}" in capsys.readouterr().out

    bundled = folder_files(registry.bundle_folder("tiny-pushed"))
    assert downloaded("tests-org/tiny-pushed", tmp_path / "fresh", revision=sha) == bundled
    pinned = edit_recipe(Registry(registry.folder), "tiny-pushed", revision=sha)  # the maintainer pins the sha
    from_hub = DVAEPurify.from_pretrained("tiny-pushed", registry=pinned)
    from_bundle = DVAEPurify.from_pretrained("tiny-pushed", registry=pinned, local_files_only=True)

    hub_copy, bundled_copy = from_hub.loaded_from, from_bundle.loaded_from
    assert (hub_copy.kind, hub_copy.revision, bundled_copy.kind) == ("hub", sha, "bundled")
    images = torch.rand(8, 1, 32, 32, generator=torch.Generator().manual_seed(0))
    labels = torch.arange(8)
    assert torch.equal(from_hub.purify(images, labels), from_bundle.purify(images, labels))
