"""Adafactor's step offset for the frozen weights: checkpoint step, else the named config's."""

from __future__ import annotations

import json
import warnings
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import traverse_util
from safetensors.numpy import save_file

from spot_jax.checkpoints import t5x
from spot_jax.checkpoints.hf import name_map
from spot_jax.checkpoints.load import load_model, step_offset
from spot_jax.models import T5, config as config_lib, get_config
from tasks.lookup import register_all_tasks
from spot_jax.train import run_dir
from spot_jax.train.loop import TrainConfig, train

register_all_tasks()


def write_hf_checkpoint(folder: Path, model_name: str) -> Path:
  """A Hugging Face T5 1.1 directory (config.json + model.safetensors) of a named config's
  shape with random weights, written through the reader's own name map (inverted)."""
  config = get_config(model_name)
  tokens = jnp.ones((1, 4), jnp.int32)
  params = jax.device_get(T5(config).init(jax.random.PRNGKey(3), tokens, tokens)["params"])
  flat = traverse_util.flatten_dict(params)
  tensors = {}
  for hf_name, (path, transpose, _) in name_map(config).items():
    array = np.asarray(flat[path], np.float32)
    tensors[hf_name] = np.ascontiguousarray(array.T if transpose else array)
  folder.mkdir(parents=True)
  (folder / "config.json").write_text(json.dumps({
      "model_type": "t5", "feed_forward_proj": "gated-gelu", "tie_word_embeddings": False,
      "vocab_size": config.vocab_size, "d_model": config.emb_dim, "d_kv": config.head_dim,
      "d_ff": config.mlp_dim, "num_heads": config.num_heads,
      "num_layers": config.num_encoder_layers, "num_decoder_layers": config.num_decoder_layers,
      "relative_attention_num_buckets": config.relative_attention_num_buckets,
      "relative_attention_max_distance": config.relative_attention_max_distance,
      "layer_norm_epsilon": config.layer_norm_epsilon, "dropout_rate": 0.0}))
  save_file(tensors, str(folder / "model.safetensors"))
  return folder


@pytest.fixture(scope="module")
def hf_tiny_byte(tmp_path_factory) -> Path:
  return write_hf_checkpoint(tmp_path_factory.mktemp("hf") / "t5_tiny_byte", "tiny_byte")


def test_lm_adapted_configs_name_the_t5x_step():
  for name in ("small", "base", "large", "xl", "xxl"):
    assert config_lib.released_checkpoint_step(name) == 1_100_000
  assert config_lib.released_checkpoint_step("tiny") is None


def test_hf_lm_adapted_load_gets_1_100_000(hf_tiny_byte):
  loaded = load_model(hf_tiny_byte, config=get_config("tiny_byte"))
  assert loaded.step is None  # a Hugging Face checkpoint stores no step.
  with warnings.catch_warnings():
    warnings.simplefilter("error")
    assert step_offset(loaded, "base") == (1_100_000, "named config 'base'")


def test_t5x_step_wins_and_unknown_step_warns(tmp_path, hf_tiny_byte):
  config = get_config("tiny", vocab_size=64, emb_dim=8, num_heads=2, head_dim=4, mlp_dim=16)
  tokens = jnp.ones((1, 4), jnp.int32)
  params = jax.device_get(T5(config).init(jax.random.PRNGKey(0), tokens, tokens)["params"])
  t5x.write_checkpoint(tmp_path / "checkpoint_7", params, step=7)
  assert step_offset(load_model(tmp_path / "checkpoint_7"), "base") == (7, "checkpoint")
  with pytest.warns(UserWarning, match="STEP_OFFSET"):
    assert step_offset(load_model(hf_tiny_byte), "tiny_byte") == (0, "unknown")
  assert step_offset(None, "tiny") == (0, "no checkpoint")


def test_run_json_records_the_offset_and_limits_used(tmp_path, hf_tiny_byte, monkeypatch):
  """A run on Hugging Face weights of an LM-adapted named config uses and records its step;
  the training-set limits are recorded beside it."""
  monkeypatch.setitem(config_lib.RELEASED_CHECKPOINT_STEPS, "tiny_byte", 1_100_000)
  train(TrainConfig(model_dir=str(tmp_path), task="synthetic_sentiment_a", model="tiny_byte",
                    initial_checkpoint=str(hf_tiny_byte),
                    feature_lengths={"inputs": 32, "targets": 8}, train_steps=1, batch_size=4,
                    prompt_length=2, checkpoint_period=1, eval_period=0,
                    max_train_examples=8, max_eval_examples=4))
  summary = run_dir.read_summary(str(tmp_path))
  assert (summary.max_train_examples, summary.max_eval_examples) == (8, 4)
  assert (summary.step_offset, summary.step_offset_source) == (
      1_100_000, "named config 'tiny_byte'")
