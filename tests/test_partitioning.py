"""Partition rules, mesh construction and sharded training equal to single-device training."""

from __future__ import annotations

import logging

import jax
import numpy as np
import pytest
from jax.sharding import AbstractMesh, PartitionSpec as P

from multihost_worker import assert_same_training, start_worker, wait_workers
from spot_jax.methods import METHODS
from spot_jax.models import T5, get_config
from spot_jax.train import partitioning

REPLICATED = P()
ROWS_ON_MODEL = P("model", None)
COLUMNS_ON_MODEL = P(None, "model")


def expected_spec(path: str) -> P:
  """The T5X-style placement of each T5 param, written out independently of the regexes."""
  parts = path.split("/")
  if parts[-3:] == ["prompt", "prompt", "prompt"]:
    return REPLICATED
  if parts[-2:] == ["token_embedder", "embedding"]:
    return ROWS_ON_MODEL
  if parts[-1] == "scale" or parts[-1] == "rel_embedding":
    return REPLICATED
  module = parts[-2]
  if module in ("query", "key", "value", "wi_0", "wi_1", "logits_dense"):
    return COLUMNS_ON_MODEL
  if module in ("out", "wo"):
    return ROWS_ON_MODEL
  raise AssertionError(f"unexpected param {path}")


def tiny_param_shapes(prompt_length: int = 4, **overrides) -> dict:
  model = T5(get_config("tiny", **overrides), prompt_length=prompt_length)
  tokens = np.ones((1, 8), np.int32)
  return jax.eval_shape(model.init, jax.random.key(0), tokens, tokens)["params"]


def flat_specs(params, mesh=None) -> dict[str, P]:
  specs = partitioning.param_partition_specs(params, mesh)
  flat = jax.tree_util.tree_flatten_with_path(specs, is_leaf=lambda x: isinstance(x, P))[0]
  return {partitioning.param_path(path): spec for path, spec in flat}


def test_rules_give_t5x_specs_for_every_tiny_param():
  specs = flat_specs(tiny_param_shapes())
  # embedder; prompt, relpos, 2 x 9 per encoder layer, norm; relpos, 2 x 14 per decoder layer,
  # norm, logits.
  assert len(specs) == 1 + (1 + 1 + 2 * 9 + 1) + (1 + 2 * 14 + 1 + 1)
  for path, spec in specs.items():
    assert spec == expected_spec(path), path
  # A few written out in full.
  assert specs["token_embedder/embedding"] == P("model", None)
  assert specs["encoder/prompt/prompt/prompt"] == P()
  assert specs["encoder/layers_0/attention/query/kernel"] == P(None, "model")
  assert specs["encoder/layers_1/attention/out/kernel"] == P("model", None)
  assert specs["decoder/layers_0/encoder_decoder_attention/value/kernel"] == P(None, "model")
  assert specs["decoder/layers_1/self_attention/out/kernel"] == P("model", None)
  assert specs["decoder/layers_0/mlp/wi_1/kernel"] == P(None, "model")
  assert specs["decoder/layers_0/mlp/wo/kernel"] == P("model", None)
  assert specs["decoder/logits_dense/kernel"] == P(None, "model")
  assert specs["decoder/relpos_bias/rel_embedding"] == P()
  assert specs["decoder/layers_1/pre_cross_attention_layer_norm/scale"] == P()
  assert specs["encoder/encoder_norm/scale"] == P()


def test_specs_keep_the_tree_structure():
  params = tiny_param_shapes(prompt_length=0)
  specs = partitioning.param_partition_specs(params)
  assert (jax.tree.structure(specs, is_leaf=lambda x: isinstance(x, P))
          == jax.tree.structure(params))


def test_unmatched_param_names_are_listed():
  params = {"token_embedder": {"embedding": np.zeros((8, 4))},
            "encoder": {"adapter": {"kernel": np.zeros((4, 4))}, "gate": np.zeros(4)}}
  with pytest.raises(ValueError, match=r"2 param\(s\).*encoder/adapter/kernel.*encoder/gate"):
    partitioning.param_partition_specs(params)


def test_spec_with_more_dims_than_the_param_is_an_error():
  with pytest.raises(ValueError, match="more dims"):
    partitioning.param_partition_specs({"decoder": {"logits_dense": {"kernel": np.zeros(4)}}})


def test_indivisible_dims_fall_back_to_replicated(caplog):
  mesh = AbstractMesh((4, 2), ("data", "model"))
  params = tiny_param_shapes(vocab_size=33, num_heads=3, head_dim=5, mlp_dim=128)
  with caplog.at_level(logging.WARNING, logger=partitioning.__name__):
    specs = flat_specs(params, mesh)
  assert specs["token_embedder/embedding"] == P(None, None)  # 33 rows on 2 devices.
  assert specs["decoder/logits_dense/kernel"] == P(None, None)
  assert specs["encoder/layers_0/attention/query/kernel"] == P(None, None)  # 15 columns.
  assert specs["encoder/layers_0/attention/out/kernel"] == P(None, None)
  assert specs["encoder/layers_0/mlp/wi_0/kernel"] == P(None, "model")  # 128 divides.
  assert "token_embedder/embedding: dim 0 of size 33" in caplog.text
  divisible = flat_specs(tiny_param_shapes(), mesh)
  assert divisible == {path: expected_spec(path) for path in divisible}


def test_make_mesh_sizes_and_errors():
  mesh = partitioning.make_mesh()
  assert mesh.axis_names == ("data", "model")
  assert dict(mesh.shape) == {"data": jax.device_count(), "model": 1}
  fake_devices = [object()] * 8  # the size checks run before any device is touched.
  with pytest.raises(ValueError, match=r"data=3 x model=2 = 6 devices, but there are 8"):
    partitioning.make_mesh(3, 2, devices=fake_devices)
  with pytest.raises(ValueError, match="cannot be split"):
    partitioning.make_mesh(-1, 3, devices=fake_devices)
  with pytest.raises(ValueError, match="At most one"):
    partitioning.make_mesh(-1, -1, devices=fake_devices)
  with pytest.raises(ValueError, match="must be >= 1"):
    partitioning.make_mesh(0, 8, devices=fake_devices)
  with pytest.raises(ValueError, match="model=2"):
    partitioning.make_mesh(model=2, devices=jax.devices()[:1])


def test_single_process_helpers():
  assert partitioning.host_batch_size(8) == 8
  info = partitioning.host_shard_info()
  assert (info.index, info.num_shards) == (0, 1)
  mesh = partitioning.make_mesh()
  batch = partitioning.make_global_batch({"x": np.arange(6, dtype=np.int32).reshape(2, 3)}, mesh)
  np.testing.assert_array_equal(np.asarray(batch["x"]), np.arange(6).reshape(2, 3))
  assert batch["x"].sharding == partitioning.batch_sharding(mesh)
  params = {"token_embedder": {"embedding": np.ones((4, 2), np.float32)}}
  sharded = partitioning.shard_params(params, mesh)
  assert isinstance(sharded["token_embedder"]["embedding"], jax.Array)
  assert partitioning.replicate({"a": np.zeros(3)}, mesh)["a"].sharding.is_fully_replicated


def test_maybe_initialize_distributed_from_env(monkeypatch):
  for name in ("SPOT_JAX_COORDINATOR", "SPOT_JAX_NUM_PROCESSES", "SPOT_JAX_PROCESS_ID",
               "SPOT_JAX_DISTRIBUTED"):
    monkeypatch.delenv(name, raising=False)
  assert partitioning.maybe_initialize_distributed() is False
  monkeypatch.setenv("SPOT_JAX_COORDINATOR", "127.0.0.1:1234")
  with pytest.raises(ValueError, match="missing.*SPOT_JAX_NUM_PROCESSES"):
    partitioning.maybe_initialize_distributed()
  monkeypatch.setenv("SPOT_JAX_NUM_PROCESSES", "2")
  monkeypatch.setenv("SPOT_JAX_PROCESS_ID", "2")
  with pytest.raises(ValueError, match="< SPOT_JAX_NUM_PROCESSES"):
    partitioning.maybe_initialize_distributed()
  monkeypatch.setenv("SPOT_JAX_NUM_PROCESSES", "1")
  monkeypatch.setenv("SPOT_JAX_PROCESS_ID", "0")
  assert partitioning.maybe_initialize_distributed() is False  # one process: nothing to join.
  for name in ("SPOT_JAX_COORDINATOR", "SPOT_JAX_NUM_PROCESSES", "SPOT_JAX_PROCESS_ID"):
    monkeypatch.delenv(name)
  monkeypatch.setenv("SPOT_JAX_DISTRIBUTED", "yes")
  with pytest.raises(ValueError, match="expected 'auto'"):
    partitioning.maybe_initialize_distributed()


def test_follow_specs_split_trainables_like_their_frozen_kernels():
  frozen = {"decoder": {"layers_0": {"mlp": {"wo": {"kernel": np.zeros((36, 24))}}}}}
  spec = lambda path, shape: partitioning.follow_spec(path, shape, frozen)
  assert spec("encoder/layers_0/attention/query/lora_a", (24, 8)) == P(None, None)
  assert spec("encoder/layers_0/attention/query/lora_b", (8, 20)) == P(None, "model")
  assert spec("encoder/layers_0/attention/out/lora_a", (20, 8)) == P("model", None)
  assert spec("decoder/layers_0/mlp/wo/bias", (24,)) == P(None)
  assert spec("decoder/layers_0/mlp/wi_0/bias", (36,)) == P("model")
  assert spec("decoder/layers_0/mlp/wo/ia3_scale", (36,)) == P("model")  # input scaling [mlp].
  assert spec("decoder/layers_0/self_attention/value/ia3_scale", (20,)) == P("model")
  assert spec("encoder/layers_1/attention/prefix_key", (3, 4, 5)) == P(None, "model", None)
  assert spec("encoder/prompt/prompt/prompt", (4, 24)) == P()
  assert spec("encoder/prompt_encoder/hidden/kernel", (24, 200)) == P()
  mesh = AbstractMesh((4, 2), ("data", "model"))
  specs = partitioning.trainable_partition_specs(
      {"a": {"query": {"lora_b": np.zeros((8, 3))}}}, frozen, "follow", mesh)
  assert specs["a"]["query"]["lora_b"] == P(None, None)  # 3 is not divisible by 2.
  with pytest.raises(ValueError, match="trainable sharding 'spread'"):
    partitioning.trainable_partition_specs({}, frozen, "spread")


# ----------------------------------------------------------------------------- sharded training


def test_data_and_model_sharded_training_matches_one_device(tmp_path):
  """4 x 2 mesh of simulated CPU devices == 1 device: same losses, prompt (replicated) and every
  other parameter-efficient method's trainables (split like their frozen kernels: 'follow'),
  dropout on. Full fine-tuning: tests/test_model_tuning.py."""
  one, eight = tmp_path / "one.npz", tmp_path / "eight.npz"
  logs = [tmp_path / "one.log", tmp_path / "eight.log"]
  others = ",".join(name for name, cls in METHODS.items() if name != "prompt" and not cls.full)
  wait_workers([start_worker(one, 1, data=1, model=1, log=logs[0], methods=others),
                start_worker(eight, 8, data=4, model=2, log=logs[1], methods=others,
                             trainable_sharding="follow")], logs)
  reference, result = dict(np.load(one)), dict(np.load(eight))
  assert int(result["device_count"]) == 8 and result["mesh_shape"].tolist() == [4, 2]
  assert {"query_sharded", "embedding_sharded", "shard_contents", "mesh_errors"} <= set(
      result["checks"].tolist())
  assert_same_training(result, reference)
  assert {f"{name}:losses" for name in others.split(",")} <= set(result)
