"""dvae-transform: purify unlearnable examples with D-VAE (Yu et al., ICML 2024)."""

import logging

from .config import PRESETS, FitConfig
from .metadata import __version__ as __version__
from .model import DVAE, DVAEOutput
from .pretrained.registry import list_pretrained, pretrained_info
from .purified_dataset import PurifiedDataset
from .shortcut import ShortcutReport, check_shortcut
from .transforms import DVAEPurify

logging.getLogger(__name__).addHandler(logging.NullHandler())  # library output is the application's to show

__all__ = [
    "DVAE",
    "DVAEOutput",
    "DVAEPurify",
    "FitConfig",
    "PRESETS",
    "PurifiedDataset",
    "ShortcutReport",
    "check_shortcut",
    "list_pretrained",
    "pretrained_info",
]
