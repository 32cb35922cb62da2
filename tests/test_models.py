"""The Flax T5 1.1: names, shapes, numerics of its parts, prompt semantics, dropout, remat."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import traverse_util

from spot_jax.models import CONFIGS, T5, get_config
from spot_jax.models import layers
from spot_jax.models.prompts import with_prompt

# Published T5 1.1 parameter counts (vocab 32128, untied logits), e.g. google/t5-v1_1-base.
PUBLISHED_PARAM_COUNTS = {
    "small": 76_961_152, "base": 247_577_856, "large": 783_150_080,
    "xl": 2_849_757_184, "xxl": 11_135_332_352,
}

SMALL = get_config("tiny", vocab_size=128, emb_dim=16, num_heads=2, head_dim=8, mlp_dim=32)


def init(config, prompt_length=0, seed=0):
  tokens = jnp.ones((1, 4), jnp.int32)
  return jax.jit(T5(config, prompt_length).init)(jax.random.PRNGKey(seed), tokens, tokens)["params"]


def logits_fn(config, prompt_length=0):
  """Jitted teacher-forced logits: (params, enc, dec_in, targets) -> [b, t, vocab]."""
  return jax.jit(T5(config, prompt_length).apply)


def batch(seed=0, vocab=128, enc_len=12, dec_len=5):
  rng = np.random.default_rng(seed)
  enc = rng.integers(2, vocab, (3, enc_len)).astype(np.int32)
  enc[1, 7:] = 0
  targets = rng.integers(2, vocab, (3, dec_len)).astype(np.int32)
  targets[2, 3:] = 0
  dec_in = np.pad(targets, ((0, 0), (1, 0)))[:, :-1]
  return jnp.asarray(enc), jnp.asarray(dec_in), jnp.asarray(targets)


@pytest.mark.parametrize("name", sorted(PUBLISHED_PARAM_COUNTS))
def test_named_configs_have_published_sizes(name):
  tokens = jnp.ones((1, 4), jnp.int32)
  shapes = jax.eval_shape(lambda: T5(CONFIGS[name]).init(jax.random.PRNGKey(0), tokens, tokens))
  count = sum(int(np.prod(s.shape)) for s in jax.tree_util.tree_leaves(shapes))
  assert count == PUBLISHED_PARAM_COUNTS[name]


def test_unknown_config_name_lists_valid_names():
  with pytest.raises(ValueError, match=r"Unknown model config 'bsae'.*'base'"):
    get_config("bsae")
  with pytest.raises(ValueError, match="Unknown T5Config field"):
    get_config("tiny", embed=3)


def test_parameter_names_equal_t5x():
  tokens = jnp.ones((1, 4), jnp.int32)
  shapes = jax.eval_shape(T5(SMALL, 3).init, jax.random.PRNGKey(0), tokens, tokens)["params"]
  names = set(traverse_util.flatten_dict(shapes, sep="/"))
  expected = {"token_embedder/embedding", "encoder/prompt/prompt/prompt",
              "encoder/relpos_bias/rel_embedding", "encoder/encoder_norm/scale",
              "decoder/relpos_bias/rel_embedding", "decoder/decoder_norm/scale",
              "decoder/logits_dense/kernel"}
  for i in range(2):
    expected |= {f"encoder/layers_{i}/{n}" for n in [
        "pre_attention_layer_norm/scale", "attention/query/kernel", "attention/key/kernel",
        "attention/value/kernel", "attention/out/kernel", "pre_mlp_layer_norm/scale",
        "mlp/wi_0/kernel", "mlp/wi_1/kernel", "mlp/wo/kernel"]}
    expected |= {f"decoder/layers_{i}/{n}" for n in [
        "pre_self_attention_layer_norm/scale", "self_attention/query/kernel",
        "self_attention/key/kernel", "self_attention/value/kernel", "self_attention/out/kernel",
        "pre_cross_attention_layer_norm/scale", "encoder_decoder_attention/query/kernel",
        "encoder_decoder_attention/key/kernel", "encoder_decoder_attention/value/kernel",
        "encoder_decoder_attention/out/kernel", "pre_mlp_layer_norm/scale", "mlp/wi_0/kernel",
        "mlp/wi_1/kernel", "mlp/wo/kernel"]}
  assert names == expected


def test_relative_position_buckets_hand_values():
  rel = np.array([-200, -20, -8, -1, 0, 1, 7, 8, 20, 200])
  bidirectional = layers.relative_position_bucket(rel, True, 32, 128)
  # Bidirectional: keys before the query in 0..15, after it 16..31, exact below 8, then
  # 8 + floor(log(n/8) / log(128/8) * 8). Causal: all 32 buckets for the past, exact below 16.
  np.testing.assert_array_equal(bidirectional, [15, 10, 8, 1, 0, 17, 23, 24, 26, 31])
  causal = layers.relative_position_bucket(rel, False, 32, 128)
  np.testing.assert_array_equal(causal, [31, 17, 8, 1, 0, 0, 0, 0, 0, 0])


def test_rms_norm_is_scale_only_in_float32():
  x = jnp.asarray([[3.0, -4.0, 0.0, 0.0]], jnp.bfloat16)
  norm = layers.RMSNorm(dtype=jnp.float32)
  y = norm.apply(norm.init(jax.random.PRNGKey(0), x), x)
  np.testing.assert_allclose(np.asarray(y), [[3 / 2.5, -4 / 2.5, 0, 0]], rtol=1e-5)


def test_padding_does_not_change_outputs():
  params = init(SMALL)
  enc, dec_in, targets = batch()
  apply = logits_fn(SMALL)
  logits = apply({"params": params}, enc, dec_in, targets)
  padded = jnp.pad(enc, ((0, 0), (0, 5)))
  logits_padded = apply({"params": params}, padded, dec_in, targets)
  valid = np.asarray(targets > 0)  # padded target positions are fully masked and not scored.
  np.testing.assert_allclose(logits[valid], logits_padded[valid], atol=1e-5)


def test_prompt_equals_prepended_token_embeddings():
  """A prompt whose rows are token embeddings acts exactly like those tokens prepended."""
  params = init(SMALL, prompt_length=4)
  enc, dec_in, targets = batch()
  enc = enc.at[1, 7:].set(5)  # no padding: prepending shifts positions identically.
  prefix = jnp.asarray([11, 12, 13, 14], jnp.int32)
  prompt = params["token_embedder"]["embedding"][prefix]
  apply_prompted = logits_fn(SMALL, prompt_length=4)
  prompted = apply_prompted({"params": with_prompt(params, prompt)}, enc, dec_in, targets)
  plain_params = dict(params, encoder={k: v for k, v in params["encoder"].items() if k != "prompt"})
  prepended = jnp.concatenate([jnp.broadcast_to(prefix, (3, 4)), enc], axis=1)
  plain = logits_fn(SMALL)({"params": plain_params}, prepended, dec_in, targets)
  np.testing.assert_allclose(prompted, plain, atol=1e-5)
  # And the prompt matters: another prompt gives other logits.
  other = apply_prompted({"params": with_prompt(params, prompt + 1.0)}, enc, dec_in, targets)
  assert float(jnp.abs(other - prompted).max()) > 1e-3


def test_decoder_is_causal():
  params = init(SMALL)
  enc, dec_in, _ = batch()
  apply = logits_fn(SMALL)
  logits = apply({"params": params}, enc, dec_in)
  changed = apply({"params": params}, enc, dec_in.at[:, 3].set(7))
  np.testing.assert_allclose(logits[:, :3], changed[:, :3], atol=1e-6)
  assert float(jnp.abs(logits[:, 3:] - changed[:, 3:]).max()) > 1e-4


def test_dropout_is_seeded_and_off_by_default():
  params = init(SMALL)
  enc, dec_in, targets = batch()
  apply = jax.jit(T5(SMALL).apply, static_argnames="enable_dropout")
  run = lambda seed: apply({"params": params}, enc, dec_in, targets, enable_dropout=True,
                           rngs={"dropout": jax.random.PRNGKey(seed)})
  np.testing.assert_array_equal(run(1), run(1))
  assert float(jnp.abs(run(1) - run(2)).max()) > 1e-3
  np.testing.assert_array_equal(apply({"params": params}, enc, dec_in, targets),
                                apply({"params": params}, enc, dec_in, targets))


def test_remat_and_bfloat16_compute():
  params = init(SMALL, prompt_length=2)
  enc, dec_in, targets = batch()

  def prompt_grad(config):
    def loss(prompt):
      logits = T5(config, 2).apply({"params": with_prompt(params, prompt)}, enc, dec_in, targets)
      return logits.sum()
    return jax.jit(jax.grad(loss))(params["encoder"]["prompt"]["prompt"]["prompt"])

  np.testing.assert_allclose(prompt_grad(SMALL), prompt_grad(SMALL.replace(remat=True)),
                             rtol=1e-5, atol=1e-5)
  bf16 = logits_fn(SMALL.replace(dtype="bfloat16"), 2)({"params": params}, enc, dec_in, targets)
  f32 = logits_fn(SMALL, 2)({"params": params}, enc, dec_in, targets)
  assert bf16.dtype == jnp.float32  # logits are always float32
  assert float(jnp.abs(bf16 - f32).max()) < 0.1 * float(jnp.abs(f32).max())
