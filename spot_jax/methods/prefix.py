"""`prefix`: P-tuning v2 (Liu et al. 2022) per-layer key and value prefixes.

Each encoder layer's self-attention (with `encoder`, the default) and each decoder layer's
self-attention (with `decoder`) gets `prefix_key` and `prefix_value` [length, heads, head_dim]
prepended to its projected keys and values. Every query attends to them (padding and causality
apply to the real tokens only); the relative position bias places them at the positions just
before the first token, as HF T5 does for a past key/value cache. No reparametrisation
(P-tuning v2 trains the prefixes directly).

`encoder=False, decoder=True` is HF PEFT's placement on T5 (peft 0.21, `PeftModel.get_prompt`
in peft/peft_model.py: a seq2seq model gets an `EncoderDecoderCache` whose cross-attention cache
is emptied, and `PeftModelForSeq2SeqLM.forward` hands it to the decoder only, since
`T5ForConditionalGeneration` runs its encoder without a cache); the logits then equal PEFT's
(tests/test_peft_parity.py). PEFT's layout also ties decoder layers: with L layers its table
holds 2L key/value slots per virtual token and decoder layer j reads slots 4j mod 2L and
4j + 1 mod 2L; ours are one free pair per layer (see docs/methods.md).
"""

from __future__ import annotations

import dataclasses

import gin
from jax.sharding import PartitionSpec as P

from spot_jax.methods.base import Method, MethodError
from spot_jax.models.layers import MethodHooks


@gin.configurable(module="spot_jax.methods")
@dataclasses.dataclass(frozen=True)
class Prefix(Method):
  """`prefix_key`, `prefix_value` [length, heads, head_dim] per targeted self-attention."""

  name = "prefix"
  default_learning_rate = 1e-2
  length: int = 20
  decoder: bool = False
  encoder: bool = True

  trainable_leaves = ("prefix_key", "prefix_value")

  @classmethod
  def follow_spec(cls, leaf, shape, kernel):
    """Prefixes [P, heads, head_dim] split heads like the attention's q/k/v kernels."""
    return P(None, kernel.heads_axis, None)

  def hooks(self) -> MethodHooks:
    if self.length < 1:
      raise ValueError(f"Prefix length must be >= 1, got {self.length}")
    if not (self.encoder or self.decoder):
      raise MethodError("Prefix with encoder=False and decoder=False has no prefixes; set "
                        "Prefix.encoder and/or Prefix.decoder to True (encoder=False, "
                        "decoder=True is HF PEFT's placement)")
    return MethodHooks(prefix_length=self.length, prefix_encoder=self.encoder,
                       prefix_decoder=self.decoder)
