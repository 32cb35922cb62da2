"""Frozen weights drawn leaf by leaf (spot_jax.models.init): no whole-model init compiled."""

from __future__ import annotations

import logging

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import traverse_util

from spot_jax.models import T5, get_config
from spot_jax.models import init as init_lib
from spot_jax.models.layout import to_scanned
from spot_jax.train import partitioning


def _compiled_names(fn) -> list[str]:
  """Names of the computations XLA compiles while `fn()` runs (jax_log_compiles records)."""
  names: list[str] = []

  class Catch(logging.Handler):
    def emit(self, record):
      message = record.getMessage()
      if message.startswith("Compiling "):
        names.append(message.split()[1])

  handler = Catch(level=logging.DEBUG)
  loggers = [logging.getLogger(n) for n in ("jax._src.interpreters.pxla", "jax._src.dispatch")]
  for logger in loggers:
    logger.addHandler(handler)
  init_lib._sampler.cache_clear()
  jax.clear_caches()
  try:
    with jax.log_compiles(True):
      jax.block_until_ready(fn())
  finally:
    for logger in loggers:
      logger.removeHandler(handler)
  return names


def test_frozen_init_compiles_no_whole_model_init_and_no_more_for_deeper_models():
  shallow = _compiled_names(lambda: init_lib.init_frozen(get_config("tiny"), 0))
  deep = _compiled_names(lambda: init_lib.init_frozen(
      get_config("tiny", num_encoder_layers=6, num_decoder_layers=6), 0))
  assert shallow, "no compilation was logged: the test cannot see compilations"
  assert not [n for n in shallow + deep if "init" in n], shallow + deep
  # One small sampler per (initialiser, shape): the count does not grow with depth, as the
  # whole init's program would.
  assert len(deep) == len(shallow) <= 12, (shallow, deep)


def test_frozen_init_uses_each_module_initialiser():
  config = get_config("tiny")
  tokens = jnp.ones((1, 4), jnp.int32)
  reference = traverse_util.flatten_dict(
      T5(config).init(jax.random.PRNGKey(0), tokens, tokens)["params"], sep="/")
  ours = traverse_util.flatten_dict(init_lib.init_frozen(config, 0), sep="/")
  assert ours.keys() == reference.keys()
  for path, value in ours.items():
    want = np.asarray(reference[path])
    got = np.asarray(value)
    assert got.shape == want.shape and got.dtype == want.dtype, path
    if want.std() == 0:  # layer-norm scales: ones.
      np.testing.assert_array_equal(got, want, err_msg=path)
      continue
    # Same distribution: the spread within 12% (the smallest leaf, a 4 x 32 relative position
    # table, has 128 draws), the mean within 4 standard errors, the range inside the
    # initialiser's (truncated normals stay truncated).
    assert abs(got.std() / want.std() - 1) < 0.12, (path, got.std(), want.std())
    assert abs(got.mean() - want.mean()) < 4 * want.std() / np.sqrt(want.size) * 1.5, path
    if "mlp" in path or "logits_dense" in path:
      assert np.abs(got).max() <= 2.5 * want.std() * 1.2, path


def test_frozen_init_is_reproducible_and_seeded():
  config = get_config("tiny")
  a, b = init_lib.init_frozen(config, 3), init_lib.init_frozen(config, 3)
  c = init_lib.init_frozen(config, 4)
  for x, y, z in zip(jax.tree.leaves(a), jax.tree.leaves(b), jax.tree.leaves(c)):
    np.testing.assert_array_equal(x, y)
  kernel = lambda p: p["encoder"]["layers_0"]["mlp"]["wi_0"]["kernel"]  # noqa: E731
  assert not np.array_equal(kernel(a), kernel(c))


def test_frozen_init_gives_the_same_weights_in_both_layouts():
  config = get_config("tiny")
  unscanned = init_lib.init_frozen(config, 0)
  scanned = init_lib.init_frozen(config.replace(scan_layers=True), 0)
  assert jax.tree.structure(scanned) == jax.tree.structure(to_scanned(unscanned))
  for x, y in zip(jax.tree.leaves(scanned), jax.tree.leaves(to_scanned(unscanned))):
    np.testing.assert_array_equal(x, y)


def test_frozen_init_writes_each_leaf_into_its_sharding_and_dtype():
  config = get_config("tiny", scan_layers=True)
  mesh = partitioning.make_mesh(-1, 1)
  params = init_lib.init_frozen(config, 0, jnp.bfloat16,
                                lambda shapes: partitioning.param_shardings(shapes, mesh))
  want = partitioning.param_shardings(params, mesh)
  for leaf, sharding in zip(jax.tree.leaves(params), jax.tree.leaves(want)):
    assert leaf.sharding == sharding
    assert leaf.dtype == jnp.bfloat16


def test_frozen_init_names_an_unknown_leaf():
  with pytest.raises(ValueError, match="FROZEN_INITIALIZERS"):
    init_lib.initializer_for("encoder/layers_0/attention/rotary/kernel", get_config("tiny"))


def test_bf16_frozen_weights_change_logits_only_within_tolerance():
  """bfloat16 keeps 8 significant bits (relative rounding <= 2^-9 per weight); through 2+2
  layers the logits move by ~0.5% of their largest magnitude. Stated tolerance: 2%."""
  config = get_config("tiny_byte", dropout_rate=0.0)
  rng = np.random.default_rng(0)
  tokens = jnp.asarray(rng.integers(2, 300, (4, 24)), jnp.int32)
  targets = jnp.asarray(rng.integers(2, 300, (4, 6)), jnp.int32)
  model = T5(config)
  f32 = init_lib.init_frozen(config, 0)
  bf16 = init_lib.init_frozen(config, 0, jnp.bfloat16)
  assert {leaf.dtype for leaf in jax.tree.leaves(bf16)} == {jnp.dtype(jnp.bfloat16)}
  logits = model.apply({"params": f32}, tokens, targets, targets)
  logits_bf16 = model.apply({"params": bf16}, tokens, targets, targets)
  assert logits_bf16.dtype == jnp.float32
  change = float(jnp.max(jnp.abs(logits_bf16 - logits)))
  assert 0 < change <= 0.02 * float(jnp.max(jnp.abs(logits)))
