"""Which copy of a purifier ``DVAEPurify.from_pretrained`` loads: a folder, a Hub repo or a bundled copy.

An official pretrained name (a recipe of the :class:`~.registry.Registry`) never strands a user:

================================================  ==========================================================
asked for                                         copy used, in order of preference
================================================  ==========================================================
a folder: a path (``Path``, or text starting       that folder
with ``.``, ``/`` or ``~``), or other existing
folder whose name is not an official one
a name, with ``revision=``                        the Hub repo at that revision (as for a repo id)
a name, offline (``HF_HUB_OFFLINE=1`` or          the bundled copy; if none is bundled, the Hub repo at the
``local_files_only=True``)                        pinned revision from the Hugging Face cache
a name, pinned revision, online                   the Hub repo at the pinned revision (the cache first); if
                                                  it cannot be loaded (Hub down, revision or repo missing),
                                                  the bundled copy
a name, no pinned revision (not published yet)    the bundled copy; if none is bundled, the repo's ``main``
an ``org/name`` repo id                           the Hub repo (``revision``, the cache, offline mode: as
                                                  everywhere in the Hugging Face ecosystem)
================================================  ==========================================================

An official name is never shadowed by a folder of that name in the working directory (the official copy is
loaded, with a warning saying how to load the folder: ``./name``).

A bundled copy is loaded only after every file's sha256 matches its recipe (a mismatch raises ``ValueError``,
nothing is loaded). The copy used is logged (``logging``, logger ``dvae_transform.pretrained.resolve``: INFO,
or WARNING when the Hub copy failed and the bundled one is used instead) and returned as a
:class:`LoadedFrom` (``DVAEPurify.source``).
"""

from __future__ import annotations

import dataclasses
import logging
import os
from collections.abc import Callable
from dataclasses import dataclass
from typing import TypeVar

from huggingface_hub import constants, is_offline_mode
from huggingface_hub.errors import HfHubHTTPError, LocalEntryNotFoundError

from ..weights import HubDownload
from .registry import REGISTRY, Registry

logger = logging.getLogger(__name__)
T = TypeVar("T")

FOLDER, HUB, BUNDLED = "folder", "hub", "bundled"
# What the Hub client raises when a repo, revision or file cannot be fetched (down, missing, refused, not cached).
_HUB_UNAVAILABLE = (HfHubHTTPError, LocalEntryNotFoundError)


@dataclass(frozen=True)
class LoadedFrom:
    """Where a purifier was loaded from.

    Attributes:
        kind: ``"folder"``, ``"hub"`` or ``"bundled"``.
        location: the folder (for a bundled copy too) or the Hub repo id.
        revision: the Hub revision asked for (``None``: the ``main`` branch).
        name: the official pretrained name, when one was asked for.
        reason: why this copy was used.
    """

    kind: str
    location: str
    revision: str | None = None
    name: str | None = None
    reason: str = ""

    def __str__(self) -> str:
        where = {
            FOLDER: f"the folder {self.location}",
            HUB: f"the Hub repo {self.location} at revision {self.revision or 'main'}",
            BUNDLED: f"the copy of {self.name} bundled with dvae-transform ({self.location})",
        }[self.kind]
        return f"{where}: {self.reason}" if self.reason else where


def plan_sources(
    name_or_path: str | os.PathLike, revision: str | None, *, registry: Registry, local_files_only: bool = False
) -> list[LoadedFrom]:
    """The copies to try, in order (see the module's table); only a Hub copy may be followed by another.

    An unknown name raises ``ValueError`` listing the known ones; a path that is not a folder ``FileNotFoundError``.
    """
    text = os.fspath(name_or_path)
    is_path = isinstance(name_or_path, os.PathLike) or text.startswith((".", "/", "~"))
    if not is_path and text in registry:
        if os.path.exists(text):
            logger.warning("%r is an official pretrained name: loading it, not the folder %s of the same name in the "
                           "working directory (load that one as %r)", text, os.path.abspath(text), f"./{text}")
        return _official_sources(text, revision, registry, local_files_only)
    if os.path.isdir(text):
        return [LoadedFrom(FOLDER, text, revision)]
    if is_path or os.path.exists(text):
        raise FileNotFoundError(f"{text} is not a folder holding a saved purifier")
    if text.count("/") != 1:
        raise ValueError(
            f"{text!r} is neither a local folder, an official pretrained name nor a Hub repo id of the form "
            "'org/name': "
            + registry.unknown_name_message(text)
        )
    return [LoadedFrom(HUB, text, revision)]


def _official_sources(name: str, revision: str | None, registry: Registry, local_only: bool) -> list[LoadedFrom]:
    entry = registry.info(name)
    if revision is not None:
        return [LoadedFrom(HUB, entry.repo_id, revision, name, "revision given")]
    hub = LoadedFrom(HUB, entry.repo_id, entry.revision, name, "its pinned revision")
    if entry.bundle is None:
        if entry.revision is None:
            logger.warning("%s: no revision is pinned and no copy is bundled; using the main branch of %s",
                           name, entry.repo_id)
            return [dataclasses.replace(hub, reason="not published (no pinned revision) and not bundled")]
        return [hub]
    bundled = LoadedFrom(BUNDLED, str(registry.bundle_folder(name)), None, name)
    if local_only:
        why = "offline mode (HF_HUB_OFFLINE=1)" if is_offline_mode() else "local_files_only=True"
        return [dataclasses.replace(bundled, reason=why)]
    if entry.revision is None:
        return [dataclasses.replace(bundled, reason="not published on the Hub yet")]
    return [hub, bundled]


def _not_cached_message(source: LoadedFrom, error: Exception, registry: Registry, hub: HubDownload) -> str:
    cache = os.fspath(hub.cache_dir) if hub.cache_dir is not None else constants.HF_HUB_CACHE
    missing = f"{source.location} (revision {source.revision or 'main'}) is not in the Hugging Face cache ({cache})"
    if source.name is not None:
        unbundled = "no copy is bundled with dvae-transform, and " if registry[source.name].bundle is None else ""
        missing = f"{source.name}: {unbundled}its Hub repo {missing}"
    if is_offline_mode():
        why = "offline mode is on (HF_HUB_OFFLINE=1): unset HF_HUB_OFFLINE and connect once to download it"
    elif hub.local_files_only:
        why = "local_files_only=True forbids downloading it"
    else:
        why = f"the Hub at {constants.ENDPOINT} could not be reached ({error.__cause__ or error})"
    return f"{missing}, and {why}"


def load_pretrained(
    name_or_path: str | os.PathLike,
    load: Callable[[str, HubDownload], T],
    hub: HubDownload,
    *,
    registry: Registry | None = None,
) -> tuple[T, LoadedFrom]:
    """``load(location, hub at its revision)`` applied to the first copy of ``name_or_path`` that loads, and that
    copy (``hub.revision``: the revision asked for).

    ``load`` reads a folder or a Hub repo id. A bundled copy is verified (sha256) first. When no copy is
    cached and the Hub cannot be reached, the ``LocalEntryNotFoundError`` names the repo and the reason
    (offline mode, ``local_files_only``, or the connection).
    """
    registry = REGISTRY if registry is None else registry
    offline = hub.local_files_only or is_offline_mode()
    *fallible, last = plan_sources(name_or_path, hub.revision, registry=registry, local_files_only=offline)
    for source in fallible:  # a Hub copy with a bundled copy behind it
        try:
            result = load(source.location, hub.at(source.revision))
        except _HUB_UNAVAILABLE as error:
            failure = f"{type(error).__name__}: {(str(error).splitlines() or [''])[0]}"
            last = dataclasses.replace(last, reason=f"the Hub copy could not be loaded ({failure})")
            logger.warning("%s: could not load %s at revision %s (%s); using the bundled copy %s",
                           source.name, source.location, source.revision, failure, last.location)
        else:
            logger.info("dvae-transform loaded %s", source)
            return result, source
    if last.kind == BUNDLED:
        registry.verified_bundle(last.name)
    try:
        result = load(last.location, hub.at(last.revision))
    except LocalEntryNotFoundError as error:  # a Hub copy that is neither reachable nor cached
        raise LocalEntryNotFoundError(_not_cached_message(last, error, registry, hub)) from error
    logger.info("dvae-transform loaded %s", last)
    return result, last
