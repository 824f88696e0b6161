"""Items stored in shards, read one item at a time without loading whole shards.

A :class:`ShardReader` sees a sequence of *parts*, each a safetensors file holding an NCHW tensor
(cache shards, spool files) or a tensor already in memory, as one list of items. A file given with the
signature it had when its checksum was checked (:meth:`~dvae_transform.cache.store.TensorCache.verified_signature`)
is read only while it still has it: one changed on disk since is reported unreadable, never served. Files are read
through memory maps (``safetensors.safe_open``): an item costs its own bytes, so a shuffled pass over
a large set reads each item once, and only a few files are open at a time (a small LRU). A worker
process opens its own files.
"""

from __future__ import annotations

import os
from collections import OrderedDict
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError, safe_open

from ..cache.store import file_signature
from ..precision import decode
from ..validation import item_index

OPEN_FILES = 8
TENSOR = "images"
Signature = tuple[int, int, int, int]


class ShardReadError(LookupError):
    """A shard file is missing or unreadable."""


class ShardReader:
    """``parts`` (files or tensors of ``counts[i]`` items each) as one sequence of items, with ``labels``.

    ``order`` maps item ``i`` to its row in the concatenated parts (default: the identity).
    """

    def __init__(self, parts: Sequence[Path | torch.Tensor], counts: Sequence[int], labels: torch.Tensor, *,
                 order: torch.Tensor | None = None, tensor: str = TENSOR,
                 signatures: Sequence[Signature | None] | None = None) -> None:
        self.parts, self.labels, self.order, self.tensor = list(parts), labels, order, tensor
        self.signatures = list(signatures) if signatures is not None else [None] * len(self.parts)
        self.starts = torch.tensor([0, *counts]).cumsum(0)
        self._open: OrderedDict[int, Any] = OrderedDict()
        self._pid = os.getpid()

    def __len__(self) -> int:
        return len(self.labels)

    def __getstate__(self) -> dict[str, Any]:
        return {**self.__dict__, "_open": OrderedDict()}

    def replace(self, part: int, value: Path | torch.Tensor) -> None:
        """Serve part ``part`` from ``value`` (unchecked) from now on."""
        self.parts[part], self.signatures[part] = value, None
        self._open.pop(part, None)

    def part_of(self, row: int) -> int:
        """The part holding concatenated row ``row``."""
        return int(torch.searchsorted(self.starts, row, right=True)) - 1

    def _slice(self, part: int) -> Any:
        if self._pid != os.getpid():  # a forked worker: the parent's maps are not ours
            self._open, self._pid = OrderedDict(), os.getpid()
        if part in self._open:
            self._open.move_to_end(part)
            return self._open[part]
        path = self.parts[part]
        try:
            view = safe_open(path, "pt").get_slice(self.tensor)
        except (OSError, SafetensorError) as error:
            raise ShardReadError(f"cannot read shard file {path}: {error}") from error
        self._open[part] = view
        if len(self._open) > OPEN_FILES:
            self._open.popitem(last=False)
        return view

    def _check_unchanged(self, part: int) -> None:
        expected = self.signatures[part]
        if expected is None:
            return
        try:
            unchanged = file_signature(os.stat(self.parts[part])) == expected
        except OSError:
            unchanged = False
        if not unchanged:
            self._open.pop(part, None)
            raise ShardReadError(f"shard file {self.parts[part]} is gone or changed on disk since it was checked")

    def read_part(self, part: int, start: int, stop: int) -> torch.Tensor:
        """Rows ``start:stop`` of part ``part``."""
        value = self.parts[part]
        if isinstance(value, torch.Tensor):
            return value[start:stop]
        self._check_unchanged(part)
        try:
            return self._slice(part)[start:stop]
        except SafetensorError as error:
            raise ShardReadError(f"cannot read shard file {value}: {error}") from error

    def read_items(self, indices: Sequence[int]) -> tuple[torch.Tensor, torch.Tensor]:
        """Items ``indices`` as (stored images, int64 labels)."""
        chosen = torch.as_tensor([item_index(index, len(self)) for index in indices], dtype=torch.long)
        rows = chosen if self.order is None else self.order[chosen]
        images = []
        for row in rows.tolist():
            part = self.part_of(row)
            offset = row - int(self.starts[part])
            images.append(self.read_part(part, offset, offset + 1))
        if len({image.dtype for image in images}) > 1:  # parts of uint8 and of float images
            images = [decode(image) for image in images]
        return torch.cat(images), self.labels[chosen]
