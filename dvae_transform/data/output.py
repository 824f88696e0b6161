"""Where ``dvae-purify purify`` writes: checked before the work, written whole, replacing only its own output.

A folder output (an image folder, a ``save_to_disk`` dataset) is written into a temporary folder
beside ``--out``, listed in the marker file :data:`MARKER` and then moved into place, so ``--out``
never holds a half-written dataset; a failed write (a full disk) leaves the previous output as it
was. ``--overwrite`` replaces a previous output of this command as a whole, so no stale class folder
or split survives to shift the labels read back; it refuses a folder without a marker, or one that
holds files the marker does not list, and deletes nothing else. An ``.npz`` output is one file,
replaced atomically.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping
from pathlib import Path

from ..files import replace_folder

MARKER = ".dvae-purify.json"
_FOREIGN = "--overwrite replaces only a previous output of dvae-purify; remove it yourself or choose another --out"


def _files(folder: Path) -> set[str]:
    return {path.relative_to(folder).as_posix() for path in folder.rglob("*") if not path.is_dir()} - {MARKER}


def _check_own(folder: Path) -> None:
    """Raise unless ``folder`` holds exactly files that a previous run listed in its marker."""
    try:
        listed = json.loads((folder / MARKER).read_text(encoding="utf-8"))["files"]
        if not isinstance(listed, list):
            raise TypeError
    except (OSError, ValueError, KeyError, TypeError):
        raise FileExistsError(f"output {folder} was not written by dvae-purify (no {MARKER}); {_FOREIGN}") from None
    foreign = sorted(_files(folder) - set(listed))
    if foreign:
        shown = ", ".join(foreign[:3]) + (f" and {len(foreign) - 3} more" if len(foreign) > 3 else "")
        raise FileExistsError(f"output {folder} holds files that dvae-purify did not write ({shown}); {_FOREIGN}")


def check_apart(target: Path, option: str, others: Mapping[str, Path]) -> None:
    """Raise ``ValueError`` before any work if ``target``, written by ``option``, is one of the paths ``others``
    (by what they are: the input, another output), lies inside one or holds one: a write there would change
    or replace it."""
    mine = target.resolve()
    for what, other in others.items():
        theirs = other.resolve()
        if mine == theirs:
            raise ValueError(f"{option} {target} is {what}; choose another {option}")
        if mine.is_relative_to(theirs) or theirs.is_relative_to(mine):
            raise ValueError(f"{option} {target} and {what} {other} lie one inside the other; choose another {option}")


def check_output(target: Path, source: Path, *, is_file: bool, overwrite: bool) -> None:
    """Raise before any work if writing ``target`` (a file if ``is_file``, else a folder) is not safe.

    Raises:
        ValueError: the output would be the input, lie inside it, or hold it (:func:`check_apart`).
        FileExistsError: the output exists (a non-empty folder) and ``overwrite`` is not set, or
            ``overwrite`` would delete something that a previous run of this command did not write.
    """
    check_apart(target, "--out", {"the input (--data)": source})
    if is_file:
        if target.is_dir():
            raise FileExistsError(f"output {target} is a folder; name the .npz file or its folder with --out")
        if target.exists() and not overwrite:
            raise FileExistsError(f"output {target} exists; choose another --out or pass --overwrite")
        return
    if target.exists() and not target.is_dir():
        raise FileExistsError(f"output {target} is a file, not a folder; choose another --out")
    if target.is_dir() and any(target.iterdir()):
        if not overwrite:
            raise FileExistsError(f"output {target} exists and is not empty; choose another --out or pass --overwrite")
        _check_own(target)


def write_folder(target: Path, write: Callable[[Path], None]) -> None:
    """Run ``write(folder)`` on a fresh folder beside ``target``, list its files in :data:`MARKER`, then put it in
    ``target``'s place (:func:`~dvae_transform.files.replace_folder`), replacing what is there (an empty folder
    or an earlier output: see :func:`check_output`).

    Raises:
        OSError: naming ``target`` when the write fails (a full disk); ``target`` is then left as it was.
    """
    def write_listed(staged: Path) -> None:
        write(staged)
        (staged / MARKER).write_text(json.dumps({"tool": "dvae-purify", "files": sorted(_files(staged))}, indent=1))

    try:
        replace_folder(target, write_listed)
    except OSError as error:
        raise OSError(error.errno, f"writing {target} failed ({error.strerror or error}); "
                                   "what was there is left as it was") from error
