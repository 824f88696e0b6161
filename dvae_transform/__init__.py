"""dvae-transform: purify unlearnable examples with D-VAE (Yu et al., ICML 2024)."""

from .config import PRESETS, FitConfig
from .model import DVAE, DVAEOutput
from .transforms import DVAEPurify

__all__ = ["DVAE", "DVAEOutput", "DVAEPurify", "FitConfig", "PRESETS"]
__version__ = "0.1.0"
