"""The fake Hub answers the real ``huggingface_hub`` client: downloads, cache reuse, offline mode, errors."""

from __future__ import annotations

import os
import urllib.error
import urllib.request
from collections.abc import Callable
from pathlib import Path

import huggingface_hub
import pytest
from hub_fixtures import fake_hub, hf_cache, hf_offline  # noqa: F401 - fixtures (also importable via a conftest)
from hub_server import FakeHub
from huggingface_hub import HfApi, constants, hf_hub_download, snapshot_download
from huggingface_hub.errors import (
    EntryNotFoundError,
    HfHubHTTPError,
    LocalEntryNotFoundError,
    RemoteEntryNotFoundError,
    RepositoryNotFoundError,
    RevisionNotFoundError,
)

REPO = "acme/tiny-dvae"
CONFIG = b'{"latent_dim": 4}'
WEIGHTS = bytes(range(256)) * 40  # LFS file (*.safetensors): served through the CDN redirect
FILES = {
    "config.json": CONFIG,
    "model.safetensors": WEIGHTS,
    "README.md": b"# tiny\n",
    "extra/notes.txt": b"notes",
    "extra/deep/blob.bin": b"\x00\x01",
}


@pytest.fixture
def hub(fake_hub: FakeHub) -> FakeHub:  # noqa: F811 - pytest fixture injection
    """The fake hub holding ``REPO`` at ``main``."""
    fake_hub.add_repo(REPO, FILES)
    return fake_hub


def test_fixtures_point_the_client_at_the_fake_hub(fake_hub: FakeHub, hf_cache: Path) -> None:  # noqa: F811
    assert os.environ["HF_ENDPOINT"] == fake_hub.url == constants.ENDPOINT
    assert constants.HUGGINGFACE_CO_URL_TEMPLATE.startswith(fake_hub.url + "/")
    assert huggingface_hub.hf_api.api.endpoint == fake_hub.url
    assert Path(constants.HF_HUB_CACHE) == hf_cache == Path(os.environ["HF_HUB_CACHE"])
    assert constants.HF_HUB_DISABLE_TELEMETRY and constants.HF_HUB_DISABLE_IMPLICIT_TOKEN
    assert not constants.HF_HUB_OFFLINE and "HF_TOKEN" not in os.environ


def test_hf_hub_download_returns_the_served_bytes(hub: FakeHub, hf_cache: Path) -> None:  # noqa: F811
    config = hf_hub_download(REPO, "config.json")
    weights = hf_hub_download(REPO, "model.safetensors")
    nested = hf_hub_download(REPO, "notes.txt", subfolder="extra")

    assert Path(config).read_bytes() == CONFIG
    assert Path(weights).read_bytes() == WEIGHTS
    assert Path(nested).read_bytes() == b"notes"
    assert Path(config).is_relative_to(hf_cache)
    assert f"/snapshots/{hub.resolve(REPO)}/" in config
    assert ("HEAD", f"/{REPO}/resolve/main/config.json") in hub.request_log
    assert ("GET", f"/{REPO}/resolve/main/config.json") in hub.request_log
    assert hub.count("GET", "/lfs/") == 1  # LFS bytes came from the CDN listener, not /resolve
    assert not any("authorization" in {k.lower() for k in r.headers} for r in hub.requests)


def test_cached_file_is_reused_after_stop(hub: FakeHub) -> None:
    sha = hub.resolve(REPO)
    path = hf_hub_download(REPO, "config.json")
    hub.clear_log()

    # Server still up: pinned commit or local_files_only -> no request at all.
    assert hf_hub_download(REPO, "config.json", revision=sha) == path
    assert hf_hub_download(REPO, "config.json", local_files_only=True) == path
    assert hub.request_log == []
    # By branch name the client revalidates with one HEAD, and downloads nothing.
    assert hf_hub_download(REPO, "config.json") == path
    assert hub.request_log == [("HEAD", f"/{REPO}/resolve/main/config.json")]

    hub.stop()
    hub.clear_log()
    assert hf_hub_download(REPO, "config.json", local_files_only=True) == path
    # Without local_files_only the refused connection makes the client fall back to refs/main in the cache.
    assert hf_hub_download(REPO, "config.json") == path
    assert Path(path).read_bytes() == CONFIG
    with pytest.raises(LocalEntryNotFoundError):
        hf_hub_download(REPO, "README.md", local_files_only=True)
    assert hub.request_log == []

    hub.start()  # same port again
    assert hf_hub_download(REPO, "README.md") != path
    assert hub.count("GET", "/README.md") == 1


def test_offline_mode_serves_from_cache(hub: FakeHub, hf_offline: Callable[..., None]) -> None:  # noqa: F811
    path = hf_hub_download(REPO, "config.json")
    snapshot = snapshot_download(REPO, allow_patterns=["*.json"])
    hub.clear_log()

    hf_offline()
    assert os.environ["HF_HUB_OFFLINE"] == "1" and huggingface_hub.is_offline_mode()
    assert hf_hub_download(REPO, "config.json") == path
    assert snapshot_download(REPO, allow_patterns=["*.json"]) == snapshot
    with pytest.raises(LocalEntryNotFoundError):
        hf_hub_download(REPO, "README.md")
    assert hub.request_log == []

    hf_offline(False)
    assert Path(hf_hub_download(REPO, "README.md")).read_bytes() == b"# tiny\n"


def test_offline_branch_lookup_needs_a_cached_ref(hub: FakeHub, hf_offline: Callable[..., None]) -> None:  # noqa: F811
    """Client quirk: a download pinned to a commit sha does not record ``refs/main`` in the cache."""
    sha = hub.resolve(REPO)
    path = hf_hub_download(REPO, "config.json", revision=sha)
    hf_offline()
    assert hf_hub_download(REPO, "config.json", revision=sha) == path
    with pytest.raises(LocalEntryNotFoundError):
        hf_hub_download(REPO, "config.json")  # "main" is unknown to the cache


def test_pinned_revisions_give_their_own_contents(fake_hub: FakeHub) -> None:  # noqa: F811
    sha_v1 = fake_hub.add_repo(REPO, {"config.json": b"v1"})
    sha_v2 = fake_hub.add_repo(REPO, {"config.json": b"v2", "new.txt": b"+"})
    sha_dev = fake_hub.add_repo(REPO, {"config.json": b"dev"}, revision="dev")
    fake_hub.set_ref(REPO, "v1.0", sha_v1, tag=True)

    assert len({sha_v1, sha_v2, sha_dev}) == 3 and all(len(s) == 40 for s in (sha_v1, sha_v2, sha_dev))
    assert fake_hub.add_repo("other/repo", {"config.json": b"v1"}) == sha_v1  # content-addressed
    assert fake_hub.resolve(REPO, "main") == sha_v2  # main follows the latest default-branch commit

    def read(revision: str | None) -> bytes:
        return Path(hf_hub_download(REPO, "config.json", revision=revision)).read_bytes()

    assert read(sha_v1) == b"v1"
    assert read(sha_v2) == b"v2"
    assert read(None) == b"v2"
    assert read("dev") == b"dev"
    assert read("v1.0") == b"v1"
    assert read(sha_v1[:10]) == b"v1"  # short sha
    api = HfApi()
    assert api.model_info(REPO, revision=sha_v1).sha == sha_v1
    assert api.model_info(REPO).sha == sha_v2
    assert api.list_repo_files(REPO, revision=sha_v1) == ["config.json"]
    refs = api.list_repo_refs(REPO)
    assert {b.name: b.target_commit for b in refs.branches} == {"main": sha_v2, "dev": sha_dev}
    assert [(t.name, t.target_commit) for t in refs.tags] == [("v1.0", sha_v1)]


def test_snapshot_download_with_allow_patterns(hub: FakeHub, tmp_path: Path) -> None:
    sha = hub.resolve(REPO)
    folder = Path(snapshot_download(REPO, allow_patterns=["*.json", "extra/*"]))

    assert folder.name == sha and folder.parent.name == "snapshots"
    got = {p.relative_to(folder).as_posix() for p in folder.rglob("*") if p.is_file()}
    assert got == {"config.json", "extra/notes.txt", "extra/deep/blob.bin"}
    assert (folder / "extra/deep/blob.bin").read_bytes() == b"\x00\x01"
    assert ("GET", f"/api/models/{REPO}/revision/main") in hub.request_log
    assert ("GET", f"/api/models/{REPO}/tree/{sha}") in hub.request_log

    hub.clear_log()  # everything cached: one revision lookup, no file request
    assert Path(snapshot_download(REPO, allow_patterns=["*.json", "extra/*"])) == folder
    assert hub.request_log == [("GET", f"/api/models/{REPO}/revision/main")]

    full = Path(snapshot_download(REPO, local_dir=tmp_path / "full"))
    assert (full / "model.safetensors").read_bytes() == WEIGHTS
    assert (full / "README.md").read_bytes() == b"# tiny\n"


def test_missing_repo_raises_repository_not_found(hub: FakeHub) -> None:
    with pytest.raises(RepositoryNotFoundError):
        hf_hub_download("acme/nope", "config.json")
    with pytest.raises(RepositoryNotFoundError):
        snapshot_download("acme/nope")
    with pytest.raises(RepositoryNotFoundError):
        HfApi().model_info("acme/nope")
    assert not HfApi().repo_exists("acme/nope")
    assert HfApi().repo_exists(REPO)


def test_missing_file_raises_entry_not_found(hub: FakeHub) -> None:
    with pytest.raises(RemoteEntryNotFoundError) as info:
        hf_hub_download(REPO, "missing.bin")
    assert isinstance(info.value, EntryNotFoundError)
    assert not HfApi().file_exists(REPO, "missing.bin")
    assert HfApi().file_exists(REPO, "extra/notes.txt")


def test_missing_revision_raises_revision_not_found(hub: FakeHub) -> None:
    with pytest.raises(RevisionNotFoundError):
        hf_hub_download(REPO, "config.json", revision="no-such-branch")
    with pytest.raises(RevisionNotFoundError):
        snapshot_download(REPO, revision="no-such-branch")
    with pytest.raises(RevisionNotFoundError):
        HfApi().model_info(REPO, revision="0" * 40)


def test_list_repo_files_and_model_info(hub: FakeHub) -> None:
    api = HfApi()
    assert sorted(api.list_repo_files(REPO)) == sorted(FILES)
    assert sorted(huggingface_hub.list_repo_files(REPO)) == sorted(FILES)  # module-level HfApi instance

    info = api.model_info(REPO, files_metadata=True)
    assert info.id == REPO and info.sha == hub.resolve(REPO)
    siblings = {s.rfilename: s for s in info.siblings or []}
    assert set(siblings) == set(FILES)
    assert siblings["model.safetensors"].lfs is not None and siblings["model.safetensors"].size == len(WEIGHTS)
    assert siblings["config.json"].lfs is None

    top = {(type(e).__name__, e.path) for e in api.list_repo_tree(REPO, path_in_repo="extra")}
    assert top == {("RepoFile", "extra/notes.txt"), ("RepoFolder", "extra/deep")}
    paths = api.get_paths_info(REPO, ["config.json", "extra", "missing"])
    assert [p.path for p in paths] == ["config.json", "extra"]


def test_dataset_repos_and_http_details(fake_hub: FakeHub) -> None:  # noqa: F811
    fake_hub.add_repo("acme/data", {"train.csv": b"a,b\n1,2\n"}, repo_type="dataset")
    path = hf_hub_download("acme/data", "train.csv", repo_type="dataset")
    assert Path(path).read_bytes() == b"a,b\n1,2\n"
    assert HfApi().list_repo_files("acme/data", repo_type="dataset") == ["train.csv"]

    fake_hub.add_repo(REPO, FILES)
    request = urllib.request.Request(fake_hub.file_url(REPO, "README.md"), headers={"Range": "bytes=2-"})
    with urllib.request.urlopen(request) as response:
        assert response.status == 206 and response.read() == b"tiny\n"
        assert response.headers["Content-Range"] == "bytes 2-6/7"

    fake_hub.fail_with(503)
    with pytest.raises(HfHubHTTPError) as info:
        HfApi().model_info(REPO)
    assert info.value.response.status_code == 503
    fake_hub.fail_with(None)

    fake_hub.stop()
    with pytest.raises(urllib.error.URLError):
        urllib.request.urlopen(fake_hub.url + "/api/models/" + REPO, timeout=5)
