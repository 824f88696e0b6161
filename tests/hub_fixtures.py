"""Pytest fixtures wiring the real ``huggingface_hub`` client to a ``FakeHub`` and an isolated cache.

Import them from a ``conftest.py`` with ``from hub_fixtures import *  # noqa: F403``.

``huggingface_hub`` reads its environment once, at import time, into ``huggingface_hub.constants`` (and a few
module-level copies), then reads those constants at call time. So every fixture here sets the public environment
variable (for subprocesses and libraries imported later) *and* monkeypatches the already-imported constants.

Fixtures:

* ``hf_cache``: isolated ``HF_HOME``/``HF_HUB_CACHE`` under ``tmp_path``, online mode, telemetry off, no token
  (``HF_TOKEN`` unset, ``HF_HUB_DISABLE_IMPLICIT_TOKEN=1``, token file inside the tmp home), uploads over HTTP
  rather than Xet storage (``HF_HUB_DISABLE_XET=1``, which ``FakeHub`` needs). Returns the hub cache ``Path``.
* ``fake_hub``: a started ``FakeHub`` the client talks to (``HF_ENDPOINT``); uses ``hf_cache``.
* ``hub_token``: the write token of ``HUB_USER`` on ``fake_hub``, a member of the organisations ``HUB_ORGS``; the
  client sends it only where it is passed explicitly (``token=...``), as implicit tokens are off.
* ``hf_offline``: a callable ``set_offline(enabled=True)`` toggling ``HF_HUB_OFFLINE`` for the rest of the test.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import huggingface_hub
import pytest
from hub_server import FakeHub
from huggingface_hub import constants
from huggingface_hub.utils import close_session

__all__ = [
    "CLIENT_UPLOAD_WARNING",
    "HUB_ORGS",
    "HUB_USER",
    "fake_hub",
    "folder_files",
    "hf_cache",
    "hf_offline",
    "hub_token",
    "isolate_hf_env",
    "point_hf_client_at",
    "set_hf_offline",
]

HUB_USER = "tester"
HUB_ORGS = ("tests-org", "dvae-transform")
# The client's LFS upload hands httpx a file as ``data=``, which httpx deprecates; not ours to fix.
CLIENT_UPLOAD_WARNING = pytest.mark.filterwarnings("ignore:Use 'content=<...>' to upload raw:DeprecationWarning")

_TOKEN_ENV_VARS = ("HF_TOKEN", "HUGGING_FACE_HUB_TOKEN", "HF_OIDC_RESOURCE", "HF_OIDC_ID_TOKEN", "HF_TOKEN_PATH")


def _patch(monkeypatch: pytest.MonkeyPatch, module: str, name: str, value: Any) -> None:
    """Monkeypatch ``module.name`` if this client version has it (internal names vary across versions)."""
    try:
        mod = importlib.import_module(module)
    except ImportError:
        return
    if hasattr(mod, name):
        monkeypatch.setattr(mod, name, value)


def isolate_hf_env(monkeypatch: pytest.MonkeyPatch, home: Path) -> Path:
    """Point the client's home and cache at ``home``, go online, disable telemetry, tokens and Xet; return hub cache."""
    hub_cache = home / "hub"
    hub_cache.mkdir(parents=True, exist_ok=True)
    paths = {
        "HF_HOME": home,
        "HF_HUB_CACHE": hub_cache,
        "HUGGINGFACE_HUB_CACHE": hub_cache,
        "HF_ASSETS_CACHE": home / "assets",
        "HUGGINGFACE_ASSETS_CACHE": home / "assets",
        "HF_XET_CACHE": home / "xet",
        "HF_TOKEN_PATH": home / "token",
        "HF_STORED_TOKENS_PATH": home / "stored_tokens",
        "CHECK_FOR_UPDATE_DONE_PATH": home / ".check_for_update_done",
        "CHECK_FOR_SKILL_UPDATE_DONE_PATH": home / ".check_for_skill_update_done",
        "AGENT_HARNESSES_PATH": home / ".agent_harnesses.json",
    }
    for name in ("HF_HOME", "HF_HUB_CACHE", "HF_ASSETS_CACHE", "HF_XET_CACHE"):
        monkeypatch.setenv(name, str(paths[name]))
    for name, path in paths.items():
        _patch(monkeypatch, "huggingface_hub.constants", name, str(path))
    # Module-level copies taken at import time.
    _patch(monkeypatch, "huggingface_hub.utils._cache_manager", "HF_HUB_CACHE", str(hub_cache))
    _patch(monkeypatch, "huggingface_hub.utils._cache_assets", "HF_ASSETS_CACHE", str(home / "assets"))

    for name in (*_TOKEN_ENV_VARS, "HUGGINGFACE_HUB_CACHE", "HUGGINGFACE_ASSETS_CACHE", "HUGGINGFACE_CO_STAGING"):
        monkeypatch.delenv(name, raising=False)
    for name in ("HF_HUB_DISABLE_TELEMETRY", "HF_HUB_DISABLE_IMPLICIT_TOKEN", "HF_HUB_DISABLE_UPDATE_CHECK",
                 "HF_HUB_DISABLE_XET"):
        monkeypatch.setenv(name, "1")
        _patch(monkeypatch, "huggingface_hub.constants", name, True)
    set_hf_offline(monkeypatch, False)
    return hub_cache


def point_hf_client_at(monkeypatch: pytest.MonkeyPatch, endpoint: str) -> None:
    """Make the client send every Hub request to ``endpoint`` (as if ``HF_ENDPOINT`` was set before import)."""
    endpoint = endpoint.rstrip("/")
    monkeypatch.setenv("HF_ENDPOINT", endpoint)
    monkeypatch.setattr(constants, "ENDPOINT", endpoint)
    monkeypatch.setattr(constants, "HUGGINGFACE_CO_URL_TEMPLATE", endpoint + "/{repo_id}/resolve/{revision}/{filename}")
    # The module-level `HfApi()` behind `huggingface_hub.model_info`, `list_repo_files`, ... captured the endpoint.
    monkeypatch.setattr(huggingface_hub.hf_api.api, "endpoint", endpoint)
    _patch(monkeypatch, "huggingface_hub.utils._git_credential", "ENDPOINT", endpoint)
    from huggingface_hub.utils import _http

    if hasattr(_http, "_HUB_ORIGINS") and hasattr(_http, "_url_origin"):  # hosts trusted when following redirects
        monkeypatch.setattr(_http, "_HUB_ORIGINS", frozenset({*_http._HUB_ORIGINS, _http._url_origin(endpoint)}))
    if hasattr(constants, "HF_URL_HOSTS"):
        host = endpoint.split("://", 1)[-1].split("/", 1)[0].split(":", 1)[0].lower()
        monkeypatch.setattr(constants, "HF_URL_HOSTS", frozenset({*constants.HF_URL_HOSTS, host}))


def folder_files(folder: Path, *, exclude: tuple[str, ...] = ()) -> dict[str, bytes]:
    """Every file under ``folder`` (but ``exclude``) by its relative POSIX path: what ``FakeHub.add_repo`` takes."""
    files = {p.relative_to(folder).as_posix(): p for p in sorted(folder.rglob("*")) if p.is_file()}
    return {name: path.read_bytes() for name, path in files.items() if name not in exclude}


def set_hf_offline(monkeypatch: pytest.MonkeyPatch, enabled: bool = True) -> None:
    """Switch ``HF_HUB_OFFLINE`` on or off (env var and ``huggingface_hub.constants.HF_HUB_OFFLINE``)."""
    monkeypatch.setenv("HF_HUB_OFFLINE", "1" if enabled else "0")
    monkeypatch.delenv("TRANSFORMERS_OFFLINE", raising=False)
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", enabled)


@pytest.fixture
def hf_cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """Isolated Hugging Face home/cache (online, no telemetry, no token); returns the hub cache directory."""
    return isolate_hf_env(monkeypatch, tmp_path / "hf_home")


@pytest.fixture
def fake_hub(hf_cache: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[FakeHub]:
    """A started ``FakeHub`` that ``huggingface_hub`` talks to; stopped (if still running) after the test."""
    close_session()  # drop pooled connections from earlier tests
    hub = FakeHub().start()
    point_hf_client_at(monkeypatch, hub.url)
    try:
        yield hub
    finally:
        hub.stop()
        close_session()


@pytest.fixture
def hub_token(fake_hub: FakeHub) -> str:
    """A write token of ``HUB_USER``, who may write under its own name and the organisations ``HUB_ORGS``."""
    return fake_hub.add_user(HUB_USER, orgs=HUB_ORGS)


@pytest.fixture
def hf_offline(hf_cache: Path, monkeypatch: pytest.MonkeyPatch) -> Callable[..., None]:
    """Callable ``set_offline(enabled: bool = True)`` switching offline mode for the rest of the test."""

    def set_offline(enabled: bool = True) -> None:
        set_hf_offline(monkeypatch, enabled)

    return set_offline
