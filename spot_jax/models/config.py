"""T5 1.1 model configurations (published shapes) and lookup by name."""

from __future__ import annotations

import dataclasses
import difflib
from typing import Any

import jax.numpy as jnp


@dataclasses.dataclass(frozen=True)
class T5Config:
  """Shape and numerics of a T5 1.1 encoder-decoder.

  Attributes mirror T5X's `t5x/examples/t5/network.T5Config` so gin files read alike.
  """

  vocab_size: int = 32128
  emb_dim: int = 512
  num_heads: int = 6
  head_dim: int = 64
  mlp_dim: int = 1024
  num_encoder_layers: int = 8
  num_decoder_layers: int = 8
  relative_attention_num_buckets: int = 32
  relative_attention_max_distance: int = 128
  dropout_rate: float = 0.1
  layer_norm_epsilon: float = 1e-6
  dtype: str = "float32"  # compute dtype: float32 on CPU, bfloat16 on GPU/TPU.
  remat: bool = False  # rematerialise each layer in the backward pass.
  remat_policy: str = "full"  # with remat: full (save nothing) | minimal (T5X: keep the
  # products without batch dims, i.e. nothing activation-sized) | dots (keep every product).
  scan_layers: bool = False  # each stack as one nn.scan over its layers (T5X's scan_layers).

  @property
  def compute_dtype(self) -> Any:
    return jnp.dtype(self.dtype)

  def replace(self, **overrides: Any) -> "T5Config":
    unknown = sorted(set(overrides) - {f.name for f in dataclasses.fields(self)})
    if unknown:
      raise ValueError(f"Unknown T5Config field(s) {unknown}; valid fields: "
                       f"{[f.name for f in dataclasses.fields(self)]}")
    return dataclasses.replace(self, **overrides)

  def to_dict(self) -> dict[str, Any]:
    return dataclasses.asdict(self)


# Published T5 1.1 (and LM-adapted) shapes; `tiny` is for tests and the embedded default.
CONFIGS: dict[str, T5Config] = {
    "tiny": T5Config(emb_dim=64, num_heads=4, head_dim=16, mlp_dim=128,
                     num_encoder_layers=2, num_decoder_layers=2),
    # The tiny shape with a byte vocabulary (259 ids, padded to 384): the synthetic world.
    "tiny_byte": T5Config(vocab_size=384, emb_dim=64, num_heads=4, head_dim=16, mlp_dim=128,
                          num_encoder_layers=2, num_decoder_layers=2),
    # The tiny shape with the synthetic world's word vocabulary (431 ids, padded to 512):
    # the embedded demo's frozen model.
    "tiny_words": T5Config(vocab_size=512, emb_dim=64, num_heads=4, head_dim=16, mlp_dim=128,
                           num_encoder_layers=2, num_decoder_layers=2),
    "small": T5Config(emb_dim=512, num_heads=6, head_dim=64, mlp_dim=1024,
                      num_encoder_layers=8, num_decoder_layers=8),
    "base": T5Config(emb_dim=768, num_heads=12, head_dim=64, mlp_dim=2048,
                     num_encoder_layers=12, num_decoder_layers=12),
    "large": T5Config(emb_dim=1024, num_heads=16, head_dim=64, mlp_dim=2816,
                      num_encoder_layers=24, num_decoder_layers=24),
    "xl": T5Config(emb_dim=2048, num_heads=32, head_dim=64, mlp_dim=5120,
                   num_encoder_layers=24, num_decoder_layers=24),
    "xxl": T5Config(emb_dim=4096, num_heads=64, head_dim=64, mlp_dim=10240,
                    num_encoder_layers=24, num_decoder_layers=24),
}


# The step of the released T5X checkpoint each named config stands for: T5 1.1 LM-adapted
# (`gs://t5-data/pretrained_models/t5x/t5_1_1_lm100k_<size>/checkpoint_1100000`: 1M span-corruption
# steps, then 100K prefix-LM steps). T5X restores that step with the weights, so Adafactor's
# decay 1 - (t + 1)^-0.8 continues from it; a Hugging Face copy of the same weights carries no
# step, and this is where it comes from (`spot_jax.checkpoints.load.step_offset`). The test
# shapes have no released weights, hence no step.
RELEASED_CHECKPOINT_STEPS: dict[str, int] = {
    name: 1_100_000 for name in ("small", "base", "large", "xl", "xxl")}


def released_checkpoint_step(name: str) -> int | None:
  """The step of the released (LM-adapted) checkpoint of a named config; None when unknown."""
  return RELEASED_CHECKPOINT_STEPS.get(name)


def get_config(name: str, **overrides: Any) -> T5Config:
  """Returns the named config (tiny, tiny_byte, tiny_words, small, base, large, xl, xxl) with overrides."""
  if name not in CONFIGS:
    close = difflib.get_close_matches(name, CONFIGS, n=3, cutoff=0.3)
    hint = f" Did you mean {close}?" if close else ""
    raise ValueError(f"Unknown model config {name!r}; valid names: {sorted(CONFIGS)}.{hint}")
  return CONFIGS[name].replace(**overrides) if overrides else CONFIGS[name]
