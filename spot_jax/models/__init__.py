"""T5 1.1 in Flax: configs, layers, the encoder-decoder and its losses."""

from spot_jax.models.config import CONFIGS, T5Config, get_config
from spot_jax.models.t5 import T5

__all__ = ["CONFIGS", "T5", "T5Config", "get_config"]
