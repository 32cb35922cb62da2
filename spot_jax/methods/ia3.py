"""`ia3`: learned rescaling of keys, values and MLP hidden activations (Liu et al. 2022, (IA)^3).

As HF PEFT's T5 default (`target_modules=["k", "v", "wo"]`, `feedforward_modules=["wo"]`): the
key and value projections' outputs are scaled by `ia3_scale` [heads*head_dim], and the MLP
hidden activations by `ia3_scale` [mlp] at the input of `wo`; all initialised to one, so step 0
is the frozen model.
"""

from __future__ import annotations

import dataclasses

import gin

import re

from spot_jax.methods.base import Method, fold_modules
from spot_jax.models.layers import MethodHooks

DEFAULT_TARGETS = r"attention/(key|value)$"
DEFAULT_INPUT_TARGETS = r"mlp/wo$"


@gin.configurable(module="spot_jax.methods")
@dataclasses.dataclass(frozen=True)
class IA3(Method):
  """Output scaling on `targets`, input scaling on `input_targets` (regexes over module paths)."""

  name = "ia3"
  default_learning_rate = 3e-3
  targets: str = DEFAULT_TARGETS
  input_targets: str = DEFAULT_INPUT_TARGETS

  def hooks(self) -> MethodHooks:
    return MethodHooks(ia3_targets=self.targets, ia3_input_targets=self.input_targets)

  def fold(self, frozen, trainables):
    """Output scaling multiplies the kernel's columns, input scaling its rows (PEFT `merge`)."""
    def fold_one(path, kernel, leaves):
      scale = leaves["ia3_scale"]
      if self.input_targets and re.search(self.input_targets, path):
        return kernel * scale[:, None]
      return kernel * scale[None, :]
    return fold_modules(frozen, trainables, fold_one)
