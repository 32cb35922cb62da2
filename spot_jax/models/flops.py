"""Matrix-multiply FLOPs of a prompt-tuning training step (for throughput and MFU figures).

A product of an [m, k] and a [k, n] matrix costs 2 m k n FLOPs. With batch b, encoder length
S = prompt + input tokens, decoder length T, width d, heads h of size d_h (inner = h d_h),
MLP width f (gated-GELU: two input kernels), vocabulary V:

  encoder layer   2 b S d (4 inner)          q, k, v, o projections
                + 2 b h S^2 d_h x 2          scores q k^T and the weighted sum of values
                + 2 b S d f x 3              wi_0, wi_1, wo
  decoder layer   2 b T d (4 inner)          self-attention projections
                + 2 b h T^2 d_h x 2          self-attention scores and values
                + 2 b T d (2 inner)          cross-attention q and o projections
                + 2 b S d (2 inner)          cross-attention k and v (of the encoder output)
                + 2 b h T S d_h x 2          cross-attention scores and values
                + 2 b T d f x 3              MLP
  logits          2 b T d V

Prompt tuning differentiates only the prompt, so the backward pass computes activation
gradients alone: one product per weight product (dx = dy W^T, same cost as the forward), and
two per activation-activation product (attention scores and values need both operands'
gradients). Weight gradients (the other half of a normal backward pass) are never computed, and
neither is the backward of what does not depend on the prompt: the first decoder layer's
self-attention block and its cross-attention query (2 b T d (5 inner) + 2 b h T^2 d_h x 4 +
2 b h T S d_h). Element-wise work (norms, softmax, GELU, dropout, the loss) is not counted.
`tests/test_flops.py` checks the total against the dot products in the compiled step.
"""

from __future__ import annotations

import dataclasses

from spot_jax.models.config import T5Config


@dataclasses.dataclass(frozen=True)
class StepFlops:
  """FLOPs of one step, split by kind; `weight` products have frozen-weight operands."""

  forward_weight: int
  forward_attention: int  # activation-activation products (scores, weighted values).
  backward: int

  @property
  def forward(self) -> int:
    return self.forward_weight + self.forward_attention

  @property
  def total(self) -> int:
    return self.forward + self.backward


def prompt_tuning_step_flops(config: T5Config, batch_size: int, input_length: int,
                             target_length: int, prompt_length: int) -> StepFlops:
  """FLOPs of one prompt-tuning step (forward + activation-gradient backward), see module doc."""
  b, d, f, v = batch_size, config.emb_dim, config.mlp_dim, config.vocab_size
  h, dh = config.num_heads, config.head_dim
  inner = h * dh
  s, t = prompt_length + input_length, target_length
  encoder_weight = 2 * b * s * d * (4 * inner + 3 * f)
  encoder_attention = 2 * b * h * s * s * dh * 2
  decoder_weight = 2 * b * t * d * (6 * inner + 3 * f) + 2 * b * s * d * 2 * inner
  decoder_attention = 2 * b * h * (t * t + t * s) * dh * 2
  logits = 2 * b * t * d * v
  forward_weight = (config.num_encoder_layers * encoder_weight
                    + config.num_decoder_layers * decoder_weight + logits)
  forward_attention = (config.num_encoder_layers * encoder_attention
                       + config.num_decoder_layers * decoder_attention)
  independent_of_prompt = 0
  if config.num_decoder_layers:
    independent_of_prompt = (2 * b * t * d * 5 * inner + 2 * b * h * t * t * dh * 4
                             + 2 * b * h * t * s * dh)
  return StepFlops(forward_weight=forward_weight, forward_attention=forward_attention,
                   backward=forward_weight + 2 * forward_attention - independent_of_prompt)
