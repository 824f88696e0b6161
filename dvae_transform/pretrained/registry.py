"""The official pretrained D-VAE purifiers: a registry folder of recipes and of the copies bundled with the package.

A registry folder holds::

    recipes/<name>.json      the recipe of each pretrained purifier (:class:`~.recipe.PretrainedRecipe`)
    bundled/<name>/...       its bundled copy, a saved purifier (the files listed in the recipe's ``bundle``)

The package's own folder (``dvae_transform/pretrained/``, :data:`PACKAGE_FOLDER`) is :data:`REGISTRY`, the
one ``list_pretrained()``, ``pretrained_info()`` and ``DVAEPurify.from_pretrained(name)`` read by default.
``Registry(folder)`` reads another one: an organisation's own pretrained purifiers, or a copy to regenerate bundles
into (``hub/publish.py --registry FOLDER --bundle``). A bundled copy is loaded only after the sha256 of each
of its files matches the recipe.
"""

from __future__ import annotations

import dataclasses
import difflib
import fnmatch
import hashlib
import os
import shutil
from collections.abc import Iterator, Mapping
from importlib import resources
from pathlib import Path

from ..files import atomic_write, replace_folder
from .recipe import MeasuredEffect, PretrainedRecipe, read_recipe

PACKAGE_FOLDER = Path(str(resources.files(__package__)))
RECIPES = "recipes"
BUNDLES = "bundled"
SOURCES = ("hub", "bundled")


def file_sha256(path: str | os.PathLike) -> str:
    """The sha256 of a file's bytes, as 64 hex digits."""
    digest = hashlib.sha256()
    with open(path, "rb") as file:
        for chunk in iter(lambda: file.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def relative_files(folder: Path) -> list[str]:
    """The relative POSIX paths of every file under ``folder``, sorted."""
    return sorted(path.relative_to(folder).as_posix() for path in folder.rglob("*") if path.is_file())


def folder_bytes(folder: Path) -> int:
    """The size of every file under ``folder`` together (0 if there is no such folder)."""
    return sum(path.stat().st_size for path in folder.rglob("*") if path.is_file())


class Registry(Mapping[str, PretrainedRecipe]):
    """The pretrained purifiers of one registry folder, by name (a read-only mapping of their recipes).

    Args:
        folder: holds ``recipes/<name>.json`` and ``bundled/<name>/``; default: the package's own.
    """

    def __init__(self, folder: str | os.PathLike = PACKAGE_FOLDER) -> None:
        self.folder = Path(folder)
        recipes = self.folder / RECIPES
        if not recipes.is_dir():
            raise FileNotFoundError(f"{recipes} not found: a registry folder holds recipes/<name>.json")
        self._entries: dict[str, PretrainedRecipe] = {}
        for path in sorted(recipes.glob("*.json")):
            recipe = read_recipe(path)
            if path.name != f"{recipe.name}.json":
                raise ValueError(f"{path}: the recipe named {recipe.name!r} must be stored as {recipe.name}.json")
            self._entries[recipe.name] = recipe

    def __getitem__(self, name: str) -> PretrainedRecipe:
        return self._entries[name]

    def __iter__(self) -> Iterator[str]:
        return iter(self._entries)

    def __len__(self) -> int:
        return len(self._entries)

    def __repr__(self) -> str:
        return f"Registry({str(self.folder)!r}: {', '.join(self.names()) or 'none'})"

    def names(self, pattern: str = "*", *, source: str | None = None) -> list[str]:
        """Sorted names matching the shell-style ``pattern``; ``source="hub"`` / ``"bundled"`` keeps those it offers."""
        if source is not None and source not in SOURCES:
            raise ValueError(f"source must be one of {SOURCES} or None, got {source!r}")
        return sorted(
            name for name, entry in self._entries.items()
            if fnmatch.fnmatch(name, pattern) and (source is None or source in entry.sources)
        )

    def unknown_name_message(self, name: str) -> str:
        """Why ``name`` is not found: the known names, and the closest one."""
        close = difflib.get_close_matches(name, self.names(), n=1)
        hint = f"; did you mean {close[0]!r}?" if close else ""
        return f"unknown pretrained purifier {name!r}{hint} known: {', '.join(self.names()) or 'none'}"

    def info(self, name: str) -> PretrainedRecipe:
        """The recipe of pretrained purifier ``name``; an unknown name raises ``ValueError`` listing the known ones."""
        if name not in self._entries:
            raise ValueError(self.unknown_name_message(name))
        return self._entries[name]

    def recipe_file(self, name: str) -> Path:
        """Where the recipe of ``name`` is stored."""
        return self.folder / RECIPES / f"{self.info(name).name}.json"

    def bundle_folder(self, name: str) -> Path:
        """Where the bundled copy of ``name`` is (or would be) stored."""
        return self.folder / BUNDLES / self.info(name).name

    def verified_bundle(self, name: str) -> Path:
        """The bundled copy of ``name``, once every file's sha256 matches its recipe.

        Raises ``FileNotFoundError`` when none is bundled or a file is missing, and ``ValueError`` when a
        file's content differs from the one the recipe records (a damaged or tampered installation).
        """
        entry, folder = self.info(name), self.bundle_folder(name)
        if entry.bundle is None:
            raise FileNotFoundError(f"no copy of {name} is bundled with this registry ({self.folder})")
        for path, expected in sorted(entry.bundle.items()):
            file = folder / path
            if not file.is_file():
                raise FileNotFoundError(f"the bundled copy of {name} is incomplete: {file} is missing")
            found = file_sha256(file)
            if found != expected:
                raise ValueError(
                    f"the bundled copy of {name} is damaged or was tampered with: {file} has sha256 {found}, "
                    f"its recipe {self.recipe_file(name)} records {expected}; nothing was loaded. "
                    "Reinstall dvae-transform (or regenerate the bundle with hub/publish.py --bundle)"
                )
        return folder

    def bundled_bytes(self) -> int:
        """The size of every bundled copy together."""
        return folder_bytes(self.folder / BUNDLES)

    def write_bundle(self, name: str, saved: str | os.PathLike, measured: MeasuredEffect) -> PretrainedRecipe:
        """Make the purifier saved in folder ``saved`` the bundled copy of ``name``; record its files and effect.

        The folder's files replace the old bundled copy as a whole, and the recipe file gains their sha256s
        (``bundle``) and ``measured``. Returns the updated recipe.
        """
        entry, saved = self.info(name), Path(saved)
        bundle: dict[str, str] = {}

        def write(staging: Path) -> None:
            shutil.copytree(saved, staging, dirs_exist_ok=True)
            bundle.update({path: file_sha256(staging / path) for path in relative_files(staging)})

        replace_folder(self.bundle_folder(name), write)
        updated = dataclasses.replace(entry, bundle=bundle, measured=measured)
        atomic_write(self.recipe_file(name), updated.to_json().encode())
        self._entries[name] = updated
        return updated


REGISTRY = Registry()


def list_pretrained(pattern: str = "*", *, source: str = "available") -> list[str]:
    """Sorted names of the official pretrained purifiers matching the shell-style ``pattern``.

    ``source="available"`` (default): those that load somewhere, bundled or published; ``"bundled"``: those
    whose copy ships with the package (they load offline); ``"hub"``: those published on the Hub at a pinned
    revision; ``"all"``: every recipe, also those not trained or published yet.
    """
    if source == "all":
        return REGISTRY.names(pattern)
    if source == "available":
        return sorted({*REGISTRY.names(pattern, source="bundled"), *REGISTRY.names(pattern, source="hub")})
    return REGISTRY.names(pattern, source=source)


def pretrained_info(name: str) -> PretrainedRecipe:
    """The recipe of an official pretrained purifier: repo, pinned revision, data, attacks, bundled files, measured
    effect."""
    return REGISTRY.info(name)
