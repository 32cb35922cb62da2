"""`ia3`: learned rescaling of keys, values and MLP hidden activations (Liu et al. 2022, (IA)^3).

As HF PEFT's T5 default (`target_modules=["k", "v", "wo"]`, `feedforward_modules=["wo"]`): the
key and value projections' outputs are scaled by `ia3_scale` [heads*head_dim], and the MLP
hidden activations by `ia3_scale` [mlp] at the input of `wo`; all initialised to one, so step 0
is the frozen model.
"""

from __future__ import annotations

import dataclasses
import re

import flax.linen as nn
import gin
import jax
import jax.numpy as jnp
from jax.sharding import PartitionSpec as P

from spot_jax.methods.base import Method, fold_modules
from spot_jax.models.layers import DenseSlot, MethodHooks

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

  trainable_leaves = ("ia3_scale",)

  def hooks(self) -> MethodHooks:
    return MethodHooks(dense=(InputScale(self.input_targets), OutputScale(self.targets)))

  @classmethod
  def follow_spec(cls, leaf, shape, kernel):
    """An output `ia3_scale` [out] splits like the kernel's output dim, an input one [in]
    (it has the kernel's input size only) like its input dim."""
    if len(kernel.shape) == 2 and shape == (kernel.shape[0],) != (kernel.shape[1],):
      return P(kernel.spec_in)
    return P(kernel.spec_out)

  def fold(self, frozen, trainables):
    """Output scaling multiplies the kernel's columns, input scaling its rows (PEFT `merge`)."""
    def fold_one(path, kernel, leaves):
      scale = leaves["ia3_scale"]
      if self.input_targets and re.search(self.input_targets, path):
        return kernel * scale[:, None]
      return kernel * scale[None, :]
    return fold_modules(frozen, trainables, fold_one)


@dataclasses.dataclass(frozen=True)
class InputScale(DenseSlot):
  """(x * l) W, `ia3_scale` [in] initialised to one (PEFT `ia3.Linear.forward`, feed-forward
  targets)."""

  name = "ia3"

  def scale_input(self, module, x: jax.Array) -> jax.Array:
    scale = module.param("ia3_scale", nn.initializers.ones, (x.shape[-1],), jnp.float32)
    return x * scale.astype(x.dtype)


@dataclasses.dataclass(frozen=True)
class OutputScale(DenseSlot):
  """(x W) * l, `ia3_scale` [out] initialised to one (PEFT `ia3.Linear.forward`)."""

  name = "ia3"

  def adjust_output(self, module, inputs: jax.Array, y: jax.Array) -> jax.Array:
    scale = module.param("ia3_scale", nn.initializers.ones, (module.features,), jnp.float32)
    return y * scale.astype(module.config.compute_dtype)
