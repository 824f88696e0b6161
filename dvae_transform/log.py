"""Library output: the package logger, and warnings attributed to the caller's code.

``logging.getLogger("dvae_transform")`` has a ``NullHandler`` (added in ``__init__``): fit summaries and
cache hits and misses are INFO records that an application shows by configuring logging.
"""

from __future__ import annotations

import logging
import os
import sys
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import torch
import torchvision

logger = logging.getLogger("dvae_transform")

# Frames that sit between a user's call and the code that warns: this package, and torch / torchvision,
# whose Module.__call__ and Compose call a transform.
_INTERNAL = tuple(
    str(Path(module.__file__).parent) + os.sep for module in (sys.modules[__package__], torch, torchvision)
)


def warn(message: str, category: type[Warning] = UserWarning) -> None:
    """``warnings.warn`` with the stack level of the first frame outside this package, torch and torchvision."""
    frame, level = sys._getframe(1), 2
    while frame.f_back is not None and frame.f_code.co_filename.startswith(_INTERNAL):
        frame, level = frame.f_back, level + 1
    warnings.warn(message, category, stacklevel=level)


def bar_options(show: bool) -> dict[str, bool]:
    """tqdm keywords for a bar shown when ``show``: off, or left to tqdm's defaults so that ``TQDM_DISABLE`` applies."""
    return {} if show else {"disable": True}


@contextmanager
def datasets_bars(show: bool) -> Iterator[None]:
    """``datasets``' progress bars off for the block unless ``show`` (as they were, afterwards)."""
    from datasets.utils import disable_progress_bars, enable_progress_bars, is_progress_bar_enabled

    if show or not is_progress_bar_enabled():
        yield
        return
    disable_progress_bars()
    try:
        yield
    finally:
        enable_progress_bars()
