"""Small file helpers shared by the cache, the resume state, saved purifiers, the command line and the benchmark."""

from __future__ import annotations

import contextlib
import ctypes
import glob
import os
import shutil
import sys
import tempfile
from collections.abc import Callable
from pathlib import Path

TMP_PREFIX = ".tmp-"


def current_umask() -> int:
    """The process's umask (read by setting it and putting it back)."""
    mask = os.umask(0o077)
    os.umask(mask)
    return mask


def plain_mode(path: str | os.PathLike) -> None:
    """Give ``path``, made private by ``mkstemp`` / ``mkdtemp`` (0600 / 0700), the mode that ``open`` (0666) or
    ``mkdir`` (0777) gives under the current umask; called before it is renamed into place."""
    os.chmod(path, (0o777 if os.path.isdir(path) else 0o666) & ~current_umask())


class LinkError(OSError):
    """A path the library would write or delete through is a symbolic link."""


def refuse_link(path: Path) -> Path:
    """``path``, unless it is a symbolic link (:class:`LinkError`): the library writes and deletes only in folders
    it made, never through a link that could lead it elsewhere. The one check before every such write."""
    if path.is_symlink():
        raise LinkError(f"{path} is a symbolic link; dvae_transform never writes or deletes through links: "
                        "remove the link (or point the setting at the real folder)")
    return path


def atomic_write(path: Path, data: bytes) -> None:
    """Write ``data`` to ``path`` all at once: a temp file in the same folder, fsync, ``os.replace``.

    The temp file is named like a staging folder (``.tmp-<name>-<pid>-<random>``), so a killed write's is
    recognised as stale by :func:`remove_stale_staging`.
    """
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f"{_staging_prefix(path)}{os.getpid()}-")
    try:
        with os.fdopen(fd, "wb") as handle:
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())
        plain_mode(tmp)
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise


_RENAME_EXCHANGE = 2  # renameat2 flag (Linux 3.15+)
_AT_FDCWD = -100


def _exchange(first: Path, second: Path) -> bool:
    """Swap two paths in one step (Linux ``renameat2(RENAME_EXCHANGE)``); False where the system cannot."""
    renameat2 = getattr(ctypes.CDLL(None, use_errno=True), "renameat2", None) if sys.platform == "linux" else None
    if renameat2 is None:
        return False
    done = renameat2(_AT_FDCWD, os.fsencode(first), _AT_FDCWD, os.fsencode(second), _RENAME_EXCHANGE)
    return done == 0


def _staging_prefix(target: Path) -> str:
    return f"{TMP_PREFIX}{target.name}-"


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # another user's process
        return True
    return True


def _staging_pid(name: str, prefix: str) -> int | None:
    """The process id in a staging folder's name ``<prefix><pid>-<8 random characters>``, else None."""
    pid, _, rest = name.removeprefix(prefix).partition("-")
    return int(pid) if name.startswith(prefix) and pid.isdecimal() and len(rest) == 8 and "-" not in rest else None


def remove_stale_staging(target: Path) -> None:
    """Delete the staging folders of :func:`replace_folder` (and temp files of :func:`atomic_write`) for ``target``
    left by a killed process.

    They are named ``.tmp-<target name>-<pid>-<random>``; one whose process is gone is stale. Links are
    removed themselves, never followed.
    """
    prefix = _staging_prefix(target)
    for path in target.parent.glob(f"{glob.escape(prefix)}*"):
        pid = _staging_pid(path.name, prefix)
        if pid is not None and not _alive(pid):
            if path.is_symlink() or not path.is_dir():
                path.unlink(missing_ok=True)
            else:
                shutil.rmtree(path, ignore_errors=True)


def replace_folder(target: Path, write: Callable[[Path], None]) -> None:
    """Write a folder all at once: ``write(staging)`` fills a fresh sibling of ``target``, which then takes
    ``target``'s place in one step (an exchange of the two where the system has one), so ``target`` holds
    either all of its old content or all of the new, never a mix. Stale staging folders of ``target`` (a
    killed earlier write) are removed first; a failed ``write`` removes its own and leaves ``target`` alone.

    Raises:
        LinkError: ``target`` is a link.
        FileExistsError: ``target`` is a file.
    """
    target = Path(os.path.abspath(target))  # "." has a name and a parent; links are not followed
    if refuse_link(target).exists() and not target.is_dir():
        raise FileExistsError(f"{target} is a file, not a folder: remove it or choose another folder")
    target.parent.mkdir(parents=True, exist_ok=True)
    remove_stale_staging(target)
    staging = _new_staging(target)
    try:
        write(staging)
        plain_mode(staging)
        if not target.exists():
            os.replace(staging, target)
        elif not _exchange(staging, target):
            old = _new_staging(target)
            os.replace(target, old)  # onto the empty folder just made
            try:
                os.replace(staging, target)
            except OSError:
                os.replace(old, target)
                raise
            staging = old
    finally:
        shutil.rmtree(staging, ignore_errors=True)  # the old content, or a failed write's


def _new_staging(target: Path) -> Path:
    return Path(tempfile.mkdtemp(dir=target.parent, prefix=f"{_staging_prefix(target)}{os.getpid()}-"))
