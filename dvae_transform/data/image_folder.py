"""Image folders, one sub-folder per class: their files listed, then read into one batch.

The one reader of class folders, for the command line's ``folder`` format (:mod:`.formats`) and the
benchmark's ``imagefolder`` dataset. torchvision's ``ImageFolder`` lists the files (its image extensions,
classes in sorted order); :func:`~dvae_transform.images.read_image_file` reads each one. 8-bit images stay
uint8, 16-bit and float ones become float32 in [0, 1]; gray images among colour ones become RGB, as
``ImageFolder``'s loader converts them.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import torch
from torchvision.datasets import ImageFolder
from torchvision.datasets.folder import IMG_EXTENSIONS
from torchvision.transforms.v2.functional import resize
from tqdm.auto import tqdm

from ..images import image_file_mode, read_image_file, to_float_images
from ..log import bar_options

GRAY_MODES = frozenset({"1", "L", "LA"})  # PIL modes of 8-bit gray images, alpha aside


@dataclass(frozen=True)
class ImageFolderFiles:
    """The class names and the ``(file, label)`` samples of an image folder, listed but not read."""

    root: Path
    classes: list[str]
    samples: list[tuple[str, int]]

    @property
    def labels(self) -> torch.Tensor:
        """Every sample's label, int64."""
        return torch.tensor([label for _, label in self.samples], dtype=torch.int64)

    def header_channels(self) -> int:
        """1 if every file's header says 8-bit gray (:data:`GRAY_MODES`), else 3: the channels, before reading."""
        return 1 if {image_file_mode(file) for file, _ in self.samples} <= GRAY_MODES else 3

    def read(
        self,
        indices: Sequence[int] | None = None,
        *,
        channels: int | None = None,
        size: int | None = None,
        progress: bool = False,
    ) -> torch.Tensor:
        """The images at ``indices`` (default: all) as one NCHW batch, uint8 or float32 in [0, 1].

        ``channels`` (default: the most any image has) gray images are expanded to; ``size`` resizes every
        image (antialiased, aspect ratio not kept) to ``size`` x ``size``, else all must share one size.
        Raises ``ValueError`` naming the file that cannot be read or does not fit.
        """
        files = [self.samples[index][0] for index in (range(len(self.samples)) if indices is None else indices)]
        bar = tqdm(files, desc="reading images", unit="img", **bar_options(progress))
        tensors = [_read(file, size) for file in bar]
        channels = max(tensor.shape[0] for tensor in tensors) if channels is None else channels
        tensors = _same_shape([tensor.expand(channels, -1, -1) if len(tensor) == 1 else tensor for tensor in tensors],
                              files)
        same_dtype = len({tensor.dtype for tensor in tensors}) == 1
        return torch.stack(tensors) if same_dtype else to_float_images(tensors, name=str(self.root))


def list_image_folder(path: str | os.PathLike) -> ImageFolderFiles:
    """The class sub-folders of ``path`` and their image files; ``ValueError`` if there are none."""
    path = Path(path)
    try:
        folder = ImageFolder(str(path), allow_empty=True)
    except FileNotFoundError:
        raise ValueError(f"{path}: no class sub-folders found; expected one sub-folder of images per class") from None
    if not folder.samples:
        raise ValueError(f"{path}: the class sub-folders {folder.classes} hold no image files "
                         f"(none with the extensions {', '.join(IMG_EXTENSIONS)})")
    return ImageFolderFiles(path, folder.classes, folder.samples)


def _read(file: str, size: int | None) -> torch.Tensor:
    """One file as a CHW tensor: uint8, or float32 in [0, 1] (checked, naming the file); resized to ``size``."""
    tensor = read_image_file(file)
    if tensor.dtype != torch.uint8:
        tensor = to_float_images(tensor, name=file)[0]
    if size is not None and tuple(tensor.shape[-2:]) != (size, size):
        tensor = resize(tensor, [size, size], antialias=True)
    return tensor


def _same_shape(tensors: list[torch.Tensor], files: list[str]) -> list[torch.Tensor]:
    """``tensors``, checked to share one shape; the first that does not is refused, naming its file."""
    shape = tensors[0].shape
    for tensor, file in zip(tensors, files):
        if tensor.shape != shape:
            raise ValueError(f"{file}: image has shape {tuple(tensor.shape)}, the others {tuple(shape)}; "
                             "all images must share one size and colour mode")
    return tensors
