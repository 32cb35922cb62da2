"""`lora`: low-rank updates of frozen kernels (Hu et al. 2021; HF PEFT `LoraConfig` defaults).

W x -> W x + (x A) B * alpha / rank on the dense layers whose T5X module path matches `targets`
(default: every attention query and value, PEFT's T5 default `["q", "v"]`). B starts at zero, so
step 0 is the frozen model. No LoRA dropout (PEFT's default `lora_dropout=0.0`).
"""

from __future__ import annotations

import dataclasses

import flax.linen as nn
import gin
import jax
import jax.numpy as jnp
from jax.sharding import PartitionSpec as P

from spot_jax.methods.base import Method, fold_modules
from spot_jax.models.layers import DenseSlot, MethodHooks

DEFAULT_TARGETS = r"attention/(query|value)$"


@gin.configurable(module="spot_jax.methods")
@dataclasses.dataclass(frozen=True)
class Lora(Method):
  """`lora_a` [in, rank], `lora_b` [rank, out] beside each targeted `kernel`."""

  name = "lora"
  rank: int = 8
  alpha: float = 8.0
  targets: str = DEFAULT_TARGETS

  trainable_leaves = ("lora_a", "lora_b")

  def hooks(self) -> MethodHooks:
    if self.rank < 1:
      raise ValueError(f"LoRA rank must be >= 1, got {self.rank}")
    return MethodHooks(dense=(LowRankUpdate(self.targets, self.rank, self.alpha),))

  @classmethod
  def follow_spec(cls, leaf, shape, kernel):
    """`lora_a` [in, r] splits like the kernel's input dim, `lora_b` [r, out] its output's."""
    return P(kernel.spec_in, None) if leaf == "lora_a" else P(None, kernel.spec_out)

  def fold(self, frozen, trainables):
    """kernel + A B * alpha / rank (PEFT `merge_and_unload`)."""
    scale = self.alpha / self.rank
    return fold_modules(frozen, trainables,
                        lambda _, kernel, t: kernel + (t["lora_a"] @ t["lora_b"]) * scale)


@dataclasses.dataclass(frozen=True)
class LowRankUpdate(DenseSlot):
  """y + (x A) B * alpha / rank (HF PEFT `lora.Linear.forward`): `lora_a` [in, rank]
  kaiming-uniform with a = sqrt(5) (PEFT's `reset_lora_parameters`), `lora_b` [rank, out]
  zero-initialised."""

  rank: int = 8
  alpha: float = 8.0
  name = "lora"

  def adjust_output(self, module, inputs: jax.Array, y: jax.Array) -> jax.Array:
    dtype = module.config.compute_dtype
    a = module.param("lora_a", nn.initializers.variance_scaling(1.0 / 3.0, "fan_in", "uniform"),
                     (inputs.shape[-1], self.rank), jnp.float32)
    b = module.param("lora_b", nn.initializers.zeros, (self.rank, module.features), jnp.float32)
    return y + (inputs @ a.astype(dtype)) @ b.astype(dtype) * (self.alpha / self.rank)
