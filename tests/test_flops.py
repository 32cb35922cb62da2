"""The prompt-tuning FLOP formula equals the matrix products XLA compiles for the step."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import pytest

from hlo_util import dot_flops
from spot_jax.models import T5, get_config
from spot_jax.models.flops import prompt_tuning_step_flops
from spot_jax.models.prompts import get_prompt, with_prompt, without_prompt
from spot_jax.train.optimizer import prompt_adafactor
from spot_jax.train.step import init_train_state, make_train_step


def compiled(config, batch_size: int, input_length: int, target_length: int, prompt_length: int):
  model = T5(config, prompt_length)
  tokens = jnp.ones((batch_size, input_length), jnp.int32)
  targets = jnp.ones((batch_size, target_length), jnp.int32)
  params = model.init(jax.random.PRNGKey(0), tokens, targets)["params"]
  batch = {"encoder_input_tokens": tokens, "decoder_input_tokens": targets,
           "decoder_target_tokens": targets}
  optimizer = prompt_adafactor()
  state = init_train_state(with_prompt({}, get_prompt(params)), optimizer, seed=0)
  step = jax.jit(make_train_step(model, optimizer)).lower(state, without_prompt(params), batch)
  forward = jax.jit(lambda p: model.apply({"params": p}, *batch.values())).lower(params)
  return step.compile().as_text(), forward.compile().as_text()


@pytest.mark.parametrize("dropout_rate", [0.0, 0.1])
def test_formula_equals_compiled_dot_products(dropout_rate):
  config = get_config("tiny", vocab_size=72, emb_dim=24, num_heads=2, head_dim=10, mlp_dim=36,
                      num_encoder_layers=2, num_decoder_layers=3, dropout_rate=dropout_rate)
  step_hlo, forward_hlo = compiled(config, batch_size=3, input_length=7, target_length=5,
                                   prompt_length=4)
  flops = prompt_tuning_step_flops(config, 3, 7, 5, 4)
  assert dot_flops(forward_hlo) == flops.forward
  assert dot_flops(step_hlo) == flops.total


def test_small_shape_by_hand():
  """small, batch 32, 128 + 100 prompt tokens, 8 targets, every term written out."""
  flops = prompt_tuning_step_flops(get_config("small"), 32, 128, 8, 100)
  b, s, t, d, inner, f, h, v = 32, 228, 8, 512, 384, 1024, 6, 32128
  encoder_layer = 2 * b * s * d * (4 * inner + 3 * f) + 2 * b * h * s * s * 64 * 2
  decoder_layer = (2 * b * t * d * (6 * inner + 3 * f) + 2 * b * s * d * 2 * inner
                   + 2 * b * h * (t * t + t * s) * 64 * 2)
  assert flops.forward == 8 * encoder_layer + 8 * decoder_layer + 2 * b * t * d * v
  assert flops.forward == 362_197_024_768
  assert flops.forward < flops.backward < flops.forward * 1.2  # attention backward is 2x.
