"""Small file helpers shared by the cache, the fit checkpoints and the benchmark."""

from __future__ import annotations

import contextlib
import os
import tempfile
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


def atomic_write(path: Path, data: bytes) -> None:
    """Write ``data`` to ``path`` all at once: a temp file in the same folder, fsync, ``os.replace``."""
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=TMP_PREFIX, suffix=".part")
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
