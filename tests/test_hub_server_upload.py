"""The fake Hub accepts uploads from the real ``huggingface_hub`` client: tokens, repo creation, commits, Git LFS.

The fixtures (``fake_hub``, ``hub_token``, ...) come from hub_fixtures.py through conftest.py.
"""

from __future__ import annotations

import hashlib
import http.client
import json
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest
from hub_fixtures import CLIENT_UPLOAD_WARNING, HUB_ORGS, HUB_USER, folder_files
from hub_server import FakeHub
from hub_server._uploads import is_ignored
from huggingface_hub import (
    CommitOperationAdd,
    CommitOperationCopy,
    CommitOperationDelete,
    HfApi,
    hf_hub_download,
    snapshot_download,
)
from huggingface_hub.errors import (
    EntryNotFoundError,
    HfHubHTTPError,
    LocalTokenNotFoundError,
    RepositoryNotFoundError,
)

pytestmark = CLIENT_UPLOAD_WARNING

REPO = "tests-org/uploads"
WEIGHTS = bytes(range(256)) * 20
FOLDER = {
    "README.md": b"---\nlicense: mit\ntags: [test]\n---\n# uploads\n",
    "config.json": b'{"width": 8}',
    "weights.safetensors": WEIGHTS,
    "sub/notes.txt": b"notes",
    "sub/deep/empty.bin": b"",  # empty files are committed inline even when they match an LFS pattern
}


@pytest.fixture
def api(hub_token: str) -> HfApi:
    """A client holding the write token of ``HUB_USER``, with ``REPO`` created."""
    client = HfApi(token=hub_token)
    client.create_repo(REPO)
    return client


@pytest.fixture
def folder(tmp_path: Path) -> Path:
    """``FOLDER`` written to disk."""
    root = tmp_path / "folder"
    for name, data in FOLDER.items():
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        (root / name).write_bytes(data)
    return root


def status_of(call: Any) -> int:
    """The HTTP status of the ``HfHubHTTPError`` that ``call()`` raises."""
    with pytest.raises(HfHubHTTPError) as info:
        call()
    return info.value.response.status_code


def raw_post(url: str, body: bytes | dict, token: str, content_type: str = "application/json") -> tuple[int, Any]:
    """POST without the client: the status and the parsed JSON answer."""
    data = json.dumps(body).encode() if isinstance(body, dict) else body
    headers = {"Authorization": f"Bearer {token}", "Content-Type": content_type}
    try:
        with urllib.request.urlopen(urllib.request.Request(url, data, headers, method="POST")) as response:
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as error:
        return error.code, json.loads(error.read())


def test_whoami_and_repo_creation_check_the_token(fake_hub: FakeHub, hub_token: str) -> None:
    me = HfApi(token=hub_token).whoami()
    assert me["name"] == HUB_USER and [org["name"] for org in me["orgs"]] == list(HUB_ORGS)
    with pytest.raises(HfHubHTTPError, match="Invalid user token") as info:
        HfApi(token="hf_not_a_token").whoami()
    assert info.value.response.status_code == 401
    with pytest.raises(LocalTokenNotFoundError):
        HfApi().whoami()  # the client refuses before asking

    read_only = fake_hub.add_user("reader", orgs=("tests-org",), role="read")
    assert status_of(lambda: HfApi().create_repo(REPO)) == 401
    assert status_of(lambda: HfApi(token="hf_not_a_token").create_repo(REPO)) == 401
    assert status_of(lambda: HfApi(token=hub_token).create_repo("someone-else/model")) == 403
    assert status_of(lambda: HfApi(token=read_only).create_repo(REPO)) == 403

    url = HfApi(token=hub_token).create_repo(REPO)
    assert url == f"{fake_hub.url}/{REPO}" and url.repo_id == REPO
    assert status_of(lambda: HfApi(token=hub_token).create_repo(REPO)) == 409
    assert HfApi(token=hub_token).create_repo(REPO, exist_ok=True) == url
    files = fake_hub.files(REPO)
    assert list(files) == [".gitattributes"]  # a new repo starts like on the Hub
    assert b"*.safetensors filter=lfs diff=lfs merge=lfs -text\n" in files[".gitattributes"]


def test_upload_folder_stores_exactly_the_files_and_downloads_them_back(
    fake_hub: FakeHub,
    api: HfApi,
    folder: Path,
) -> None:
    info = api.upload_folder(repo_id=REPO, folder_path=folder, commit_message="first")

    assert info.oid == fake_hub.resolve(REPO) and info.commit_url == f"{fake_hub.url}/{REPO}/commit/{info.oid}"
    assert fake_hub.files(REPO, info.oid) == {".gitattributes": fake_hub.files(REPO)[".gitattributes"], **FOLDER}
    snapshot = Path(snapshot_download(REPO, revision=info.oid))
    assert folder_files(snapshot, exclude=(".gitattributes",)) == FOLDER

    siblings = {s.rfilename: s for s in api.model_info(REPO, files_metadata=True).siblings or []}
    assert siblings["weights.safetensors"].lfs.sha256 == hashlib.sha256(WEIGHTS).hexdigest()
    assert siblings["config.json"].lfs is None and siblings["sub/deep/empty.bin"].lfs is None
    # Only the one non-empty LFS file went through the LFS upload, without the Hub token.
    uploads = [r for r in fake_hub.requests if r.method == "PUT"]
    assert len(uploads) == 1 and uploads[0].cdn and "Authorization" not in uploads[0].headers
    assert fake_hub.count("POST", f"/{REPO}.git/info/lfs/objects/verify") == 1
    assert fake_hub.count("POST", f"/api/models/{REPO}/commit/main") == 1


def test_a_changed_file_makes_a_new_commit_and_old_revisions_stay(
    fake_hub: FakeHub,
    api: HfApi,
    folder: Path,
) -> None:
    first = api.upload_folder(repo_id=REPO, folder_path=folder, commit_message="first")
    (folder / "weights.safetensors").write_bytes(WEIGHTS[::-1])
    fake_hub.clear_log()
    second = api.upload_folder(repo_id=REPO, folder_path=folder, commit_message="second")

    assert second.oid != first.oid and fake_hub.resolve(REPO) == second.oid
    assert fake_hub.count("PUT") == 1  # the unchanged files were not sent again
    assert Path(hf_hub_download(REPO, "weights.safetensors", revision=first.oid)).read_bytes() == WEIGHTS
    assert Path(hf_hub_download(REPO, "weights.safetensors")).read_bytes() == WEIGHTS[::-1]
    commits = api.list_repo_commits(REPO)
    assert [c.title for c in commits] == ["second", "first", "initial commit"]
    assert [c.commit_id for c in commits[:2]] == [second.oid, first.oid] and commits[0].authors == [HUB_USER]

    fake_hub.clear_log()  # nothing changed: the client makes no commit
    assert api.upload_folder(repo_id=REPO, folder_path=folder).oid == second.oid
    assert fake_hub.count("POST", "/commit/") == 0 and fake_hub.resolve(REPO) == second.oid


def test_commit_operations_delete_copy_and_gitignore(fake_hub: FakeHub, api: HfApi, folder: Path) -> None:
    first = api.upload_folder(repo_id=REPO, folder_path=folder)
    operations = [
        CommitOperationDelete("sub/"),
        CommitOperationDelete("config.json"),
        CommitOperationCopy("weights.safetensors", "copy.safetensors"),
        CommitOperationAdd(".gitignore", b"# logs\n*.log\n"),
        CommitOperationAdd("run.log", b"ignored"),
    ]
    second = api.create_commit(REPO, operations, commit_message="reshape")

    files = fake_hub.files(REPO)
    assert sorted(files) == [".gitattributes", ".gitignore", "README.md", "copy.safetensors", "weights.safetensors"]
    assert files["copy.safetensors"] == WEIGHTS and fake_hub.count("PUT") == 1  # copied without uploading again

    with pytest.raises(EntryNotFoundError, match="doesn't exist"):
        api.create_commit(REPO, [CommitOperationDelete("config.json")], commit_message="again")
    stale = [CommitOperationAdd("new.txt", b"new")]
    assert status_of(lambda: api.create_commit(REPO, stale, commit_message="stale", parent_commit=first.oid)) == 412
    assert fake_hub.resolve(REPO) == second.oid


def test_lfs_upload_whose_content_does_not_match_its_sha256_is_rejected(
    fake_hub: FakeHub,
    api: HfApi,
    hub_token: str,
) -> None:
    head = fake_hub.resolve(REPO)
    announced = hashlib.sha256(b"what the client announced").hexdigest()
    operation = CommitOperationAdd("w.safetensors", b"what the client sends")
    operation.upload_info.sha256 = bytes.fromhex(announced)  # e.g. the file changed after it was hashed

    with pytest.raises(RuntimeError, match="Error while uploading 'w.safetensors'") as info:
        api.create_commit(REPO, [operation], commit_message="bad")
    cause = info.value.__cause__
    assert isinstance(cause, HfHubHTTPError) and cause.response.status_code == 400
    assert "sha256 mismatch" in str(cause)
    assert fake_hub.resolve(REPO) == head

    # Neither the verify step nor a commit can use an object that was never stored.
    lfs_api = f"{fake_hub.url}/{REPO}.git/info/lfs/objects"
    assert raw_post(f"{lfs_api}/verify", {"oid": announced, "size": 21}, hub_token)[0] == 404
    lines = [
        {"key": "header", "value": {"summary": "sneak"}},
        {"key": "lfsFile", "value": {"path": "w.safetensors", "algo": "sha256", "oid": announced, "size": 21}},
    ]
    body = b"".join(json.dumps(line).encode() + b"\n" for line in lines)
    status, answer = raw_post(f"{fake_hub.url}/api/models/{REPO}/commit/main", body, hub_token, "application/x-ndjson")
    assert status == 400 and "was not uploaded" in answer["error"]
    assert fake_hub.resolve(REPO) == head


def test_private_repos_bad_tokens_bad_metadata_and_xet(
    fake_hub: FakeHub,
    api: HfApi,
    hub_token: str,
) -> None:
    api.create_repo("tests-org/secret", private=True)
    assert api.model_info("tests-org/secret").private
    with pytest.raises(RepositoryNotFoundError):
        HfApi().model_info("tests-org/secret")
    assert status_of(lambda: HfApi(token="hf_not_a_token").model_info(REPO)) == 401

    with pytest.raises(ValueError, match="Invalid metadata in README.md"):
        api.upload_file(path_or_fileobj=b"---\nlicense: [mit\n---\n", path_in_repo="README.md", repo_id=REPO)

    # Uploads through Xet storage (the client's default when hf_xet is installed) stop at once, with the fix.
    request = urllib.request.Request(
        f"{fake_hub.url}/api/models/{REPO}/xet-write-token/main", headers={"Authorization": f"Bearer {hub_token}"}
    )
    with pytest.raises(urllib.error.HTTPError) as info:
        urllib.request.urlopen(request)
    assert info.value.code == 501 and "HF_HUB_DISABLE_XET=1" in info.value.headers["X-Error-Message"]


def test_lfs_batch_protocol_with_a_chunked_upload(fake_hub: FakeHub, api: HfApi, hub_token: str) -> None:
    data = b"chunked LFS content" * 100
    oid, lfs_api = hashlib.sha256(data).hexdigest(), f"{fake_hub.url}/{REPO}.git/info/lfs/objects"
    batch = {"operation": "upload", "transfers": ["basic"], "objects": [{"oid": oid, "size": len(data)}]}
    status, answer = raw_post(f"{lfs_api}/batch", batch, hub_token, "application/vnd.git-lfs+json")
    assert status == 200 and answer["transfer"] == "basic"
    upload = urlsplit(answer["objects"][0]["actions"]["upload"]["href"])
    assert f"{upload.scheme}://{upload.netloc}" == fake_hub.cdn_url

    connection = http.client.HTTPConnection(upload.hostname, upload.port, timeout=10)
    connection.request("PUT", upload.path, body=iter([data[:700], data[700:]]), encode_chunked=True)
    assert connection.getresponse().status == 200
    connection.close()
    assert raw_post(f"{lfs_api}/verify", {"oid": oid, "size": len(data)}, hub_token) == (200, {"success": True})
    status, answer = raw_post(f"{lfs_api}/batch", batch, hub_token, "application/vnd.git-lfs+json")
    assert "actions" not in answer["objects"][0]  # stored already: nothing to upload
    assert raw_post(f"{lfs_api}/batch", batch, "hf_not_a_token")[0] == 401


@pytest.mark.parametrize(
    ("path", "ignored"),
    [
        ("run.log", True),
        ("logs/deep/run.log", True),
        ("build/out.bin", True),
        ("src/build", False),  # "build/" matches folders only
        ("cache/x", True),
        ("sub/cache/x", False),  # "/cache" is anchored at the root
        ("keep.txt", False),
    ],
)
def test_preupload_applies_gitignore(path: str, ignored: bool) -> None:
    assert is_ignored(path, "# comment\n*.log\nbuild/\n/cache\n!keep.txt\n") is ignored
