"""`prefix`: P-tuning v2 (Liu et al. 2022) per-layer key and value prefixes.

Each encoder layer's self-attention (and with `decoder`, each decoder layer's self-attention)
gets `prefix_key` and `prefix_value` [length, heads, head_dim] prepended to its projected keys and
values. Every query attends to them (padding and causality apply to the real tokens only); the
relative position bias places them at the positions just before the first token, as HF T5 does
for a past key/value cache. No reparametrisation (P-tuning v2 trains the prefixes directly).
HF PEFT 0.21 prefix tuning on T5 ends up in the decoder's self-attention only (it builds
cross-attention entries but the cache drops them); `decoder=True` is the closest setting, with an
encoder prefix on top (see docs/methods.md).
"""

from __future__ import annotations

import dataclasses

import gin

from spot_jax.methods.base import Method
from spot_jax.models.layers import MethodHooks


@gin.configurable(module="spot_jax.methods")
@dataclasses.dataclass(frozen=True)
class Prefix(Method):
  """`prefix_key`, `prefix_value` [length, heads, head_dim] per targeted self-attention."""

  name = "prefix"
  default_learning_rate = 1e-2
  length: int = 20
  decoder: bool = False

  def hooks(self) -> MethodHooks:
    if self.length < 1:
      raise ValueError(f"Prefix length must be >= 1, got {self.length}")
    return MethodHooks(prefix_length=self.length, prefix_decoder=self.decoder)
