"""File helpers (``files.py``): atomic writes of files and folders, stale staging, links refused."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest

from dvae_transform.files import (
    TMP_PREFIX,
    LinkError,
    atomic_write,
    current_umask,
    refuse_link,
    remove_stale_staging,
    replace_folder,
)


def _mode(path: Path) -> int:
    return path.stat().st_mode & 0o777


def _dead_pid() -> int:
    """The id of a process that has exited."""
    done = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    return int(done.stdout)


def write_files(contents: dict[str, str]) -> Callable[[Path], None]:
    """A ``write`` for :func:`replace_folder` that writes ``contents`` (relative path: text)."""
    def write(folder: Path) -> None:
        for name, text in contents.items():
            (folder / name).parent.mkdir(parents=True, exist_ok=True)
            (folder / name).write_text(text)
    return write


def listing(folder: Path) -> dict[str, str]:
    """Every file under ``folder``: relative path, text."""
    return {path.relative_to(folder).as_posix(): path.read_text() for path in folder.rglob("*") if path.is_file()}


def test_current_umask_is_read_without_changing_it() -> None:
    before = os.umask(0o027)
    try:
        assert current_umask() == 0o027 and current_umask() == 0o027
    finally:
        os.umask(before)


def test_atomic_write_replaces_a_file_with_open_s_mode_and_leaves_no_temp_file(tmp_path) -> None:
    target = tmp_path / "state.json"
    target.write_text("old")
    before = os.umask(0o027)
    try:
        atomic_write(target, b"new")
    finally:
        os.umask(before)
    assert target.read_bytes() == b"new" and _mode(target) == 0o640
    assert [path.name for path in tmp_path.iterdir()] == ["state.json"]


def test_a_failed_atomic_write_keeps_the_old_file_and_removes_its_temp_file(tmp_path) -> None:
    target = tmp_path / "state.json"
    target.write_text("old")
    with pytest.raises(TypeError):
        atomic_write(target, "not bytes")  # type: ignore[arg-type]
    assert target.read_text() == "old" and [path.name for path in tmp_path.iterdir()] == ["state.json"]


def test_refuse_link_names_the_link_and_passes_anything_else(tmp_path) -> None:
    (tmp_path / "real").mkdir()
    (tmp_path / "link").symlink_to(tmp_path / "real")
    assert refuse_link(tmp_path / "real") == tmp_path / "real"
    assert refuse_link(tmp_path / "absent") == tmp_path / "absent"
    with pytest.raises(LinkError, match=r"link is a symbolic link; dvae_transform never writes or deletes through"):
        refuse_link(tmp_path / "link")
    (tmp_path / "dangling").symlink_to(tmp_path / "nowhere")
    with pytest.raises(OSError, match="dangling is a symbolic link"):
        refuse_link(tmp_path / "dangling")


def test_replace_folder_swaps_the_whole_content(tmp_path) -> None:
    target = tmp_path / "out"
    replace_folder(target, write_files({"a.txt": "1", "old/b.txt": "2"}))
    assert listing(target) == {"a.txt": "1", "old/b.txt": "2"}
    replace_folder(target, write_files({"a.txt": "3", "c.txt": "4"}))
    assert listing(target) == {"a.txt": "3", "c.txt": "4"}  # nothing of the old content survives
    assert [path.name for path in tmp_path.iterdir()] == ["out"]  # no staging folder left
    assert _mode(target) == 0o777 & ~current_umask()


def test_a_failed_folder_write_leaves_the_target_as_it_was(tmp_path) -> None:
    target = tmp_path / "out"
    replace_folder(target, write_files({"a.txt": "1"}))

    def half_written(folder: Path) -> None:
        (folder / "a.txt").write_text("partial")
        raise OSError("No space left on device")

    with pytest.raises(OSError, match="No space left"):
        replace_folder(target, half_written)
    assert listing(target) == {"a.txt": "1"} and [path.name for path in tmp_path.iterdir()] == ["out"]


def test_replace_folder_refuses_a_file_and_a_link(tmp_path) -> None:
    (tmp_path / "file").write_text("kept")
    with pytest.raises(FileExistsError, match="file is a file, not a folder"):
        replace_folder(tmp_path / "file", write_files({"a.txt": "1"}))
    (tmp_path / "real").mkdir()
    (tmp_path / "link").symlink_to(tmp_path / "real")
    with pytest.raises(LinkError, match="link is a symbolic link"):
        replace_folder(tmp_path / "link", write_files({"a.txt": "1"}))
    assert (tmp_path / "file").read_text() == "kept" and not any((tmp_path / "real").iterdir())


def test_replace_folder_takes_a_relative_target(tmp_path, monkeypatch) -> None:
    monkeypatch.chdir(tmp_path)
    replace_folder(Path("out"), write_files({"a.txt": "1"}))
    assert listing(tmp_path / "out") == {"a.txt": "1"}


def test_only_the_staging_of_dead_processes_is_removed(tmp_path) -> None:
    target, dead = tmp_path / "out", _dead_pid()
    prefix = f"{TMP_PREFIX}out-"
    stale_folder, stale_file = tmp_path / f"{prefix}{dead}-abcdefgh", tmp_path / f"{prefix}{dead}-ijklmnop"
    stale_folder.mkdir()
    (stale_folder / "half.txt").write_text("x")
    stale_file.write_text("x")
    (tmp_path / "outside").mkdir()
    (tmp_path / "outside" / "kept.txt").write_text("kept")
    stale_link = tmp_path / f"{prefix}{dead}-qrstuvwx"
    stale_link.symlink_to(tmp_path / "outside")
    kept = [tmp_path / f"{prefix}{os.getpid()}-abcdefgh",  # a live process's write
            tmp_path / f"{prefix}{dead}-short",  # not a staging name: a user's
            tmp_path / f"{TMP_PREFIX}other-{dead}-abcdefgh"]  # another target's
    for path in kept:
        path.mkdir()

    remove_stale_staging(target)
    assert not stale_folder.exists() and not stale_file.exists() and not stale_link.is_symlink()
    assert all(path.is_dir() for path in kept)
    assert (tmp_path / "outside" / "kept.txt").read_text() == "kept"  # the link was not followed
