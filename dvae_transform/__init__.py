"""dvae-transform: purify unlearnable examples with D-VAE (Yu et al., ICML 2024)."""

from .config import PRESETS, FitConfig
from .data import PurifiedDataset
from .hub import list_pretrained, pretrained_info
from .model import DVAE, DVAEOutput
from .transforms import DVAEPurify

__all__ = [
    "DVAE",
    "DVAEOutput",
    "DVAEPurify",
    "FitConfig",
    "PRESETS",
    "PurifiedDataset",
    "list_pretrained",
    "pretrained_info",
]
__version__ = "0.1.0"
