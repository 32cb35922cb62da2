"""`lora`: low-rank updates of frozen kernels (Hu et al. 2021; HF PEFT `LoraConfig` defaults).

W x -> W x + (x A) B * alpha / rank on the dense layers whose T5X module path matches `targets`
(default: every attention query and value, PEFT's T5 default `["q", "v"]`). B starts at zero, so
step 0 is the frozen model. No LoRA dropout (PEFT's default `lora_dropout=0.0`).
"""

from __future__ import annotations

import dataclasses

import gin

from spot_jax.methods.base import Method, fold_modules
from spot_jax.models.layers import MethodHooks

DEFAULT_TARGETS = r"attention/(query|value)$"


@gin.configurable(module="spot_jax.methods")
@dataclasses.dataclass(frozen=True)
class Lora(Method):
  """`lora_a` [in, rank], `lora_b` [rank, out] beside each targeted `kernel`."""

  name = "lora"
  rank: int = 8
  alpha: float = 8.0
  targets: str = DEFAULT_TARGETS

  def hooks(self) -> MethodHooks:
    if self.rank < 1:
      raise ValueError(f"LoRA rank must be >= 1, got {self.rank}")
    return MethodHooks(lora_rank=self.rank, lora_alpha=self.alpha, lora_targets=self.targets)

  def fold(self, frozen, trainables):
    """kernel + A B * alpha / rank (PEFT `merge_and_unload`)."""
    scale = self.alpha / self.rank
    return fold_modules(frozen, trainables,
                        lambda _, kernel, t: kernel + (t["lora_a"] @ t["lora_b"]) * scale)
