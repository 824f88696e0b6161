"""The work folder (``cache/work_folder.py``): a checkpoint's ``data`` folder, or a temporary one in the cache root."""

from __future__ import annotations

import tempfile
from pathlib import Path

import pytest

from dvae_transform.cache.store import default_cache_dir
from dvae_transform.cache.work_folder import WorkFolder


def test_a_checkpoint_s_data_folder_is_kept(tmp_path) -> None:
    folder = WorkFolder(tmp_path / "checkpoint", None)
    assert folder.path == tmp_path / "checkpoint" / "data"
    folder.path.mkdir(parents=True)
    folder.cleanup()
    assert (tmp_path / "checkpoint" / "data").is_dir()


def test_a_temporary_folder_is_made_once_in_the_cache_root_and_removed_by_cleanup(tmp_path) -> None:
    folder = WorkFolder(None, None, cache_root=tmp_path)
    path = folder.path
    assert path.is_dir() and path.parent == tmp_path / "tmp" and path.name.startswith("work-")
    assert folder.path == path and list((tmp_path / "tmp").iterdir()) == [path]
    (path / "part.safetensors").write_bytes(b"data")
    folder.cleanup()
    assert not path.exists()
    folder.cleanup()  # a second time: nothing left to do


def test_a_temporary_folder_goes_with_its_object(tmp_path) -> None:
    folder = WorkFolder(None, None, cache_root=tmp_path)
    path = folder.path
    del folder  # its last reference
    assert not path.exists()


def test_two_work_folders_never_share_a_folder(tmp_path) -> None:
    first, second = (WorkFolder(None, None, cache_root=tmp_path) for _ in range(2))
    assert first.path != second.path
    first.cleanup()
    assert second.path.is_dir()


def test_without_a_setting_the_folder_is_in_the_default_cache_root() -> None:
    folder = WorkFolder(None, None)
    assert folder.path.parent == default_cache_dir() / "tmp"  # conftest points it at a fresh folder


@pytest.mark.parametrize("tmp", ["link", "file", "root-a-file"])
def test_an_unusable_cache_tmp_folder_falls_back_to_the_system_temporary_folder(tmp_path, tmp) -> None:
    root = tmp_path / "cache"
    (tmp_path / "elsewhere").mkdir()
    if tmp == "root-a-file":
        root.write_text("not a folder")
    else:
        root.mkdir()
        if tmp == "link":
            (root / "tmp").symlink_to(tmp_path / "elsewhere")
        else:
            (root / "tmp").write_text("not a folder")
    folder = WorkFolder(None, None, cache_root=root)
    assert folder.path.parent == Path(tempfile.gettempdir()) and folder.path.is_dir()
    assert not any((tmp_path / "elsewhere").iterdir())  # never written through the link
    folder.cleanup()
    assert not folder.path.exists()
