"""Layers under nn.scan (T5X's scan_layers) against the unrolled stack, and both layouts
through T5X checkpoints."""

from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from spot_jax.checkpoints import t5x
from spot_jax.checkpoints.load import load_model
from spot_jax.models import T5, get_config
from spot_jax.models.init import init_frozen
from spot_jax.models.layout import to_scanned, to_unscanned
from spot_jax.models.prompts import with_prompt

CONFIG = get_config("tiny_byte", dropout_rate=0.0)  # a small vocabulary: quick to compile.


def _batch():
  rng = np.random.default_rng(0)
  inputs = jnp.asarray(rng.integers(2, 250, (2, 9)), jnp.int32).at[1, 6:].set(0)
  targets = jnp.asarray(rng.integers(2, 250, (2, 5)), jnp.int32).at[0, 4:].set(0)
  return inputs, jnp.pad(targets, ((0, 0), (1, 0)))[:, :-1], targets


def _loss_and_grads(config, frozen, prompt):
  inputs, decoder_inputs, targets = _batch()
  model = T5(config, prompt_length=prompt.shape[0])

  def loss(prompt, frozen):
    logits = model.apply({"params": with_prompt(frozen, prompt)}, inputs, decoder_inputs,
                         targets)
    return jnp.sum(jax.nn.log_softmax(logits) * jax.nn.one_hot(targets, logits.shape[-1])), logits

  (_, logits), grads = jax.value_and_grad(loss, argnums=(0, 1), has_aux=True)(prompt, frozen)
  return logits, grads


@pytest.mark.parametrize("remat_policy", [None, "minimal"])
def test_scanned_and_unscanned_give_equal_logits_and_gradients(remat_policy):
  frozen = init_frozen(CONFIG, 0)
  prompt = jax.random.normal(jax.random.PRNGKey(1), (3, CONFIG.emb_dim))
  scanned = CONFIG.replace(scan_layers=True, remat=remat_policy is not None,
                           remat_policy=remat_policy or "full")
  logits, (g_prompt, g_frozen) = _loss_and_grads(CONFIG, frozen, prompt)
  logits_s, (g_prompt_s, g_frozen_s) = _loss_and_grads(scanned, to_scanned(frozen), prompt)
  scale = lambda x: float(jnp.max(jnp.abs(x)))  # noqa: E731
  # Float32, the same products in another order: equal to a few ulps of the largest value.
  np.testing.assert_allclose(logits_s, logits, rtol=0, atol=1e-5 * scale(logits))
  np.testing.assert_allclose(g_prompt_s, g_prompt, rtol=0, atol=1e-5 * scale(g_prompt))
  for a, b in zip(jax.tree.leaves(to_unscanned(g_frozen_s)), jax.tree.leaves(g_frozen)):
    np.testing.assert_allclose(a, b, rtol=0, atol=1e-5 * scale(b) + 1e-12)


def test_scanned_decoding_equals_unscanned_decoding():
  frozen = init_frozen(CONFIG, 0)
  inputs, decoder_inputs, _ = _batch()

  def greedy_logits(config, params):
    model = T5(config)
    encoded, mask = model.apply({"params": params}, inputs, method=T5.encode)
    _, cache = model.apply({"params": params}, encoded, mask, decoder_inputs, 5,
                           method=T5.decode_step, mutable=["cache"])
    out = []
    for i in range(3):
      logits, cache = model.apply({"params": params, **cache}, encoded, mask,
                                  decoder_inputs[:, i:i + 1], 5, method=T5.decode_step,
                                  mutable=["cache"])
      out.append(logits)
    return jnp.concatenate(out, axis=1)

  unrolled = greedy_logits(CONFIG, frozen)
  scanned = greedy_logits(CONFIG.replace(scan_layers=True), to_scanned(frozen))
  np.testing.assert_allclose(scanned, unrolled, rtol=0,
                             atol=1e-5 * float(jnp.max(jnp.abs(unrolled))))


def test_scan_refuses_methods_with_per_layer_parameters():
  from spot_jax.methods import Lora
  hooks = Lora(rank=2, targets="attention/query").hooks()
  model = T5(CONFIG.replace(scan_layers=True), hooks=hooks)
  tokens = jnp.ones((1, 4), jnp.int32)
  with pytest.raises(ValueError, match=r"per-layer parameters of \['lora'\].*scan_layers=False"):
    jax.eval_shape(lambda: model.init(jax.random.PRNGKey(0), tokens, tokens))


def test_layout_conversion_round_trips_bit_equal():
  frozen = jax.device_get(init_frozen(CONFIG, 0))
  scanned = to_scanned(frozen)
  assert scanned["encoder"]["layers"]["mlp"]["wi_0"]["kernel"].shape == (
      CONFIG.emb_dim, CONFIG.num_encoder_layers, CONFIG.mlp_dim)
  assert scanned["decoder"]["layers"]["pre_mlp_layer_norm"]["scale"].shape == (
      CONFIG.emb_dim, CONFIG.num_decoder_layers)
  back = to_unscanned(scanned)
  assert jax.tree.structure(back) == jax.tree.structure(frozen)
  for a, b in zip(jax.tree.leaves(back), jax.tree.leaves(frozen)):
    np.testing.assert_array_equal(a, b)


def test_t5x_checkpoint_loads_into_both_layouts_and_writes_back_bit_equal(
    t5x_tiny_checkpoint, tmp_path):
  original = t5x.read_checkpoint(t5x_tiny_checkpoint)
  loaded = load_model(t5x_tiny_checkpoint)
  config = dataclasses.replace(loaded.config, dropout_rate=0.0)
  inputs, decoder_inputs, targets = _batch()
  logits = {}
  for scan in (False, True):
    params = to_scanned(loaded.params) if scan else loaded.params
    layout = config.replace(scan_layers=scan)
    logits[scan] = T5(layout).apply({"params": params}, inputs, decoder_inputs, targets)
    # Write in this layout, read back: bit-equal in the layout, and as the original.
    path = tmp_path / f"scan_{scan}"
    t5x.write_checkpoint(path, params, step=t5x.read_step(t5x_tiny_checkpoint))
    written = t5x.read_checkpoint(path)
    for a, b in zip(jax.tree.leaves(written), jax.tree.leaves(params)):
      np.testing.assert_array_equal(a, b)
    reread = load_model(path)  # a scanned checkpoint is read in the unscanned layout.
    for a, b in zip(jax.tree.leaves(to_unscanned(reread.params)),
                    jax.tree.leaves({k: v for k, v in original.items()
                                     if k in reread.params})):
      np.testing.assert_array_equal(a, b)
  np.testing.assert_allclose(logits[True], logits[False], rtol=0,
                             atol=1e-5 * float(jnp.max(jnp.abs(logits[False]))))


def test_trainer_is_unrolled_by_default_and_scans_on_request(tmp_path, monkeypatch):
  """Unrolled by default (the faster steady step on an H200); scan_layers=None scans on
  accelerators for the methods that can."""
  from spot_jax import methods
  from spot_jax.train.loop import TrainConfig, build_frozen_model
  default = TrainConfig(model_dir=str(tmp_path), task="unused", model="tiny_byte", prompt_length=4)
  cfg = dataclasses.replace(default, scan_layers=None)
  lora = methods.create("lora", 4)

  def layout(cfg, method=None):
    model, frozen, identity, _ = build_frozen_model(cfg, method)
    assert ("layers" in frozen["encoder"]) == model.config.scan_layers
    return model.config.scan_layers, identity["fingerprint"]

  on_cpu = layout(cfg)
  assert on_cpu[0] is False
  assert layout(dataclasses.replace(cfg, scan_layers=True)) == (True, on_cpu[1])
  monkeypatch.setattr(jax, "default_backend", lambda: "gpu")
  assert layout(default)[0] is False
  assert layout(cfg)[0] is True
  assert layout(cfg, lora)[0] is False  # per-layer parameters: unrolled.
