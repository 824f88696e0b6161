"""The work folder: where a fit or a dataset writes its data on disk, kept or temporary."""

from __future__ import annotations

import os
import shutil
import tempfile
import weakref
from pathlib import Path
from typing import TYPE_CHECKING

from ..distributed import broadcast, is_main_process
from ..files import refuse_link
from .store import cache_root

if TYPE_CHECKING:
    from accelerate import Accelerator

IN_MEMORY_BYTES = 1 << 30  # data up to this size is held in memory, larger data is read from disk


class WorkFolder:
    """Where data goes on disk: ``resume_dir/data``, or a temporary folder under the cache root
    (``cache_root``, default the user's cache) removed with this object.

    The folder is made on first use; with several processes every process must ask at the same point.
    """

    def __init__(self, resume_dir: str | os.PathLike | None, accelerator: Accelerator | None, *,
                 cache_root: str | os.PathLike | None = None) -> None:
        self.accelerator, self.cache_root = accelerator, cache_root
        self._path = None if resume_dir is None else Path(resume_dir) / "data"
        self._temporary = resume_dir is None
        self._finalizer: weakref.finalize | None = None

    @property
    def path(self) -> Path:
        if self._path is None:
            made = None
            if is_main_process(self.accelerator):
                made = _make_work_folder(self.cache_root)
                self._finalizer = weakref.finalize(self, shutil.rmtree, made, True)
            self._path = Path(broadcast(self.accelerator, made))
        return self._path

    def cleanup(self) -> None:
        """Remove a temporary folder now (a resume_dir's folder is kept)."""
        if self._finalizer is not None:
            self._finalizer()


def _make_work_folder(root_setting: str | os.PathLike | None) -> str:
    """A fresh ``work-*`` folder in the cache root's ``tmp`` (never through a link), else in the system's temporary
    folder when that one cannot be written (read-only, full, a link)."""
    root = cache_root(root_setting) / "tmp"
    try:
        refuse_link(root).mkdir(parents=True, exist_ok=True)
        return tempfile.mkdtemp(prefix="work-", dir=root)
    except OSError:
        return tempfile.mkdtemp(prefix="work-")
