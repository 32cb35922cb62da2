"""load_model: T5X and Hugging Face checkpoints -> params + config, validated against configs."""

from __future__ import annotations

import json
import subprocess
import sys

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from spot_jax.checkpoints import t5x
from spot_jax.checkpoints.load import load_model
from spot_jax.models import T5, get_config

from conftest import PROJECT_ROOT

HF_GOLDEN = PROJECT_ROOT / "tests" / "golden" / "hf_t5_tiny"
FIXTURE_CONFIG = get_config("tiny", emb_dim=4, num_heads=2, head_dim=2, mlp_dim=8,
                            relative_attention_num_buckets=4, relative_attention_max_distance=8)


def test_t5x_fixture_loads_with_inferred_config_and_runs(t5x_tiny_checkpoint):
  loaded = load_model(t5x_tiny_checkpoint)
  assert loaded.step == 3
  assert loaded.config.replace(relative_attention_max_distance=8) == FIXTURE_CONFIG
  stored = t5x.read_checkpoint(t5x_tiny_checkpoint)
  np.testing.assert_array_equal(loaded.params["encoder"]["layers_1"]["mlp"]["wo"]["kernel"],
                                stored["encoder"]["layers_1"]["mlp"]["wo"]["kernel"])
  tokens = jnp.asarray([[5, 6, 7, 1]])
  logits = T5(FIXTURE_CONFIG).apply({"params": loaded.params}, tokens, tokens)
  assert logits.shape == (1, 4, 32128) and bool(jnp.isfinite(logits).all())


def test_shape_mismatch_names_the_file_and_variables(t5x_tiny_checkpoint):
  with pytest.raises(ValueError, match=r"checkpoint_3 does not match the model config: The "
                                       r"checkpoint has emb_dim 4, 2\+2 layers.*the config 768, "
                                       r"12\+12.*decoder_norm/scale: checkpoint \(4,\) "
                                       r"vs config \(768,\)"):
    load_model(t5x_tiny_checkpoint, config=get_config("base"))


def test_written_checkpoint_round_trips_through_load(tmp_path):
  config = get_config("tiny", vocab_size=64, emb_dim=8, num_heads=2, head_dim=4, mlp_dim=16)
  tokens = jnp.ones((1, 4), jnp.int32)
  params = jax.device_get(T5(config).init(jax.random.PRNGKey(0), tokens, tokens)["params"])
  t5x.write_checkpoint(tmp_path / "checkpoint_7", params, step=7)
  loaded = load_model(tmp_path / "checkpoint_7", config=config)
  assert loaded.step == 7 and loaded.config == config
  jax.tree_util.tree_map(np.testing.assert_array_equal, loaded.params, params)
  assert loaded.fingerprint == load_model(tmp_path / "checkpoint_7").fingerprint


def test_hugging_face_directory_loads():
  loaded = load_model(HF_GOLDEN)
  assert loaded.config.emb_dim == 32 and loaded.config.vocab_size == 256 and loaded.step is None
  by_file = load_model(HF_GOLDEN / "model.safetensors")
  assert by_file.fingerprint == loaded.fingerprint


def test_model_info_command(t5x_tiny_checkpoint):
  process = subprocess.run([sys.executable, "-m", "spot_jax.cli.main", "model", "info",
                            "--checkpoint", str(t5x_tiny_checkpoint)],
                           capture_output=True, text=True, timeout=120)
  assert process.returncode == 0, process.stderr
  info = json.loads(process.stdout)
  assert info["step"] == 3 and info["config"]["emb_dim"] == 4
  assert info["parameters"] == sum(int(np.prod(np.shape(x))) for x in jax.tree_util.tree_leaves(
      t5x.read_checkpoint(t5x_tiny_checkpoint)))
  bad = subprocess.run([sys.executable, "-m", "spot_jax.cli.main", "model", "info",
                        "--checkpoint", str(t5x_tiny_checkpoint), "--config", "bsae"],
                       capture_output=True, text=True, timeout=120)
  assert bad.returncode == 2 and "Unknown model config 'bsae'" in bad.stderr
  assert "Traceback" not in bad.stderr
