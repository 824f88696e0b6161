"""A small in-process fake of the Hugging Face Hub, for tests that drive the real ``huggingface_hub`` client.

``FakeHub`` serves model (and dataset) repos over plain HTTP on ``127.0.0.1``, and accepts uploads to them.

Downloads (``_downloads.py``): it answers the requests that ``hf_hub_download``, ``snapshot_download``,
``HfApi.model_info``/``repo_info``, ``list_repo_files``, ``list_repo_tree``, ``list_repo_refs``,
``list_repo_commits``, ``get_paths_info`` and ``file_exists`` issue:

* ``HEAD``/``GET /{repo_id}/resolve/{revision}/{filename}`` (``/datasets/{repo_id}/...`` for datasets),
* ``GET /api/{models,datasets}/{repo_id}[/revision/{revision}]``,
* ``GET /api/{models,datasets}/{repo_id}/tree/{revision}[/{path}]``, ``GET .../refs``, ``GET .../commits/{revision}``,
  ``POST .../paths-info/{revision}``.

Files matching ``lfs_patterns`` (or bigger than ``lfs_threshold``) behave like Git LFS files on the real Hub: the
resolve endpoint answers ``302`` with ``X-Linked-Etag`` (sha256) and ``X-Linked-Size`` and redirects to a second
"CDN" listener on another port, which serves the bytes. Other files are served directly with a git-blob-sha1 ``ETag``.
No ``X-Xet-*`` header is ever sent, so the client always uses plain HTTP downloads.

Uploads (``_uploads.py``): ``whoami``, ``create_repo``, and ``upload_folder``/``create_commit``/``push_to_hub``
through the client's HTTP upload path (preupload, Git LFS batch/upload/verify, NDJSON commit). A commit makes a new
revision that the download endpoints serve; its branch moves to it. The client must not use Xet storage for uploads
(``HF_HUB_DISABLE_XET=1``, set by the ``hf_cache`` fixture). Writing needs the token of an account made with
``add_user``; downloads need none, except from private repos.

Usage::

    with FakeHub() as hub:
        sha = hub.add_repo("org/model", {"config.json": b"{}"})
        token = hub.add_user("me", orgs=("org",))
        ...  # point HF_ENDPOINT / huggingface_hub.constants.ENDPOINT at hub.url (see hub_fixtures.py)
        assert ("HEAD", "/org/model/resolve/main/config.json") in hub.request_log
"""

from ._http import LoggedRequest
from ._hub import FakeHub
from ._model import DEFAULT_LFS_PATTERNS, HubFile

__all__ = ["DEFAULT_LFS_PATTERNS", "FakeHub", "HubFile", "LoggedRequest"]
