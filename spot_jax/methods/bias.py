"""`bias`: bias terms added to the frozen dense layers and trained alone.

T5 1.1 has no biases, so unlike BERT BitFit (Ben Zaken et al. 2022), which tunes the biases the
pretrained model already has (including the layer norms'), this adds zero-initialised biases
[out] to the dense layers whose T5X module path matches `targets` (default: every dense layer
inside the encoder and decoder layers except the attention keys; not the logits). Step 0 is the
frozen model. A key bias b adds q.b to every logit of a query's row, which the softmax cancels:
its gradient is exactly zero, so it is left out (HF PEFT/BitFit models have key biases only
because their pretrained layers do).
"""

from __future__ import annotations

import dataclasses

import flax.linen as nn
import gin
import jax
import jax.numpy as jnp
from jax.sharding import PartitionSpec as P

from spot_jax.methods.base import Method
from spot_jax.models.layers import DenseSlot, MethodHooks

DEFAULT_TARGETS = r"layers_\d+/(\w*attention/(query|value|out)|mlp/\w+)$"


@gin.configurable(module="spot_jax.methods")
@dataclasses.dataclass(frozen=True)
class Bias(Method):
  """A `bias` [out] beside each targeted `kernel`."""

  name = "bias"
  targets: str = DEFAULT_TARGETS

  trainable_leaves = ("bias",)

  def hooks(self) -> MethodHooks:
    return MethodHooks(dense=(AddedBias(self.targets),))

  @classmethod
  def follow_spec(cls, leaf, shape, kernel):
    """`bias` [out] splits like the kernel's output dim."""
    return P(kernel.spec_out)


@dataclasses.dataclass(frozen=True)
class AddedBias(DenseSlot):
  """y + b, `bias` [out] zero-initialised."""

  name = "bias"

  def adjust_output(self, module, inputs: jax.Array, y: jax.Array) -> jax.Array:
    bias = module.param("bias", nn.initializers.zeros, (module.features,), jnp.float32)
    return y + bias.astype(module.config.compute_dtype)
