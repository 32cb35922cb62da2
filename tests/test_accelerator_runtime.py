"""Start-up on accelerators: the persistent compilation cache, TensorFlow kept off the
devices, the backend logged and recorded in run.json."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import types
import warnings

import pytest

from spot_jax import runtime
from spot_jax.train import run_dir

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

CACHE_PROGRAM = """
import json, jax, jax.numpy as jnp
from spot_jax import runtime
events = []
jax.monitoring.register_event_listener(lambda name, **kw: events.append(name))
path = runtime.enable_compilation_cache()
jax.block_until_ready(jax.jit(lambda x: jnp.tanh(x @ x.T) * 3 + 1)(jnp.ones((32, 32))))
print(json.dumps({"path": path, "hits": events.count("/jax/compilation_cache/cache_hits")}))
"""


def _python(program: str, **env: str) -> dict:
  environment = dict(os.environ, JAX_PLATFORMS="cpu", TF_CPP_MIN_LOG_LEVEL="3", **env)
  environment.pop("JAX_COMPILATION_CACHE_DIR", None)
  done = subprocess.run([sys.executable, "-c", program], capture_output=True, text=True,
                        env=environment, timeout=240, cwd=ROOT)
  assert done.returncode == 0, done.stderr
  return json.loads(done.stdout.strip().splitlines()[-1])


def test_compilation_cache_is_hit_by_a_second_process(tmp_path):
  cache = str(tmp_path / "xla")
  first = _python(CACHE_PROGRAM, SPOT_JAX_COMPILATION_CACHE=cache)
  second = _python(CACHE_PROGRAM, SPOT_JAX_COMPILATION_CACHE=cache)
  assert first == {"path": cache, "hits": 0}
  assert second["path"] == cache and second["hits"] >= 1  # the product (and jnp.ones').
  off = _python(CACHE_PROGRAM, SPOT_JAX_COMPILATION_CACHE="0")
  assert off == {"path": None, "hits": 0}


def test_compilation_cache_dir_defaults_under_the_user_cache():
  assert runtime.compilation_cache_dir({"XDG_CACHE_HOME": "/c"}) == "/c/spot_jax/xla"
  assert runtime.compilation_cache_dir({"SPOT_JAX_COMPILATION_CACHE": "/x"}) == "/x"
  assert runtime.compilation_cache_dir({"SPOT_JAX_COMPILATION_CACHE": "off"}) is None


@pytest.mark.slow  # imports TensorFlow in a fresh process.
def test_tensorflow_imported_after_startup_sees_no_accelerator():
  program = """
import json
from spot_jax import runtime
runtime.configure_jax()
import seqio  # imports TensorFlow, as the trainer's data pipeline does.
import tensorflow as tf
print(json.dumps({"hidden": runtime.tensorflow_devices_hidden(),
                  "gpus": len(tf.config.get_visible_devices("GPU"))}))
"""
  assert _python(program) == {"hidden": True, "gpus": 0}


def test_hiding_asks_tensorflow_to_show_no_gpu_or_tpu(monkeypatch):
  calls = []
  fake = types.SimpleNamespace(config=types.SimpleNamespace(
      set_visible_devices=lambda devices, kind: calls.append((devices, kind))))
  monkeypatch.setitem(sys.modules, "tensorflow", fake)
  runtime.hide_accelerators_from_tensorflow()
  assert calls == [([], "GPU"), ([], "TPU")]
  assert runtime.tensorflow_devices_hidden()


def test_warns_when_the_system_shows_an_accelerator_but_jax_runs_on_cpu(monkeypatch):
  monkeypatch.setattr(runtime, "system_accelerators", lambda: ["/dev/nvidia0"])
  monkeypatch.delenv("JAX_PLATFORMS", raising=False)
  lines = []
  with pytest.warns(UserWarning, match=r"spot-jax\[cuda\]"):
    info = runtime.log_backend(lines.append)
  assert info["backend"] == "cpu" and "backend cpu" in lines[0]
  monkeypatch.setenv("JAX_PLATFORMS", "cpu")  # asked for the CPU: no warning.
  with warnings.catch_warnings():
    warnings.simplefilter("error")
    runtime.log_backend(lines.append)


@pytest.mark.slow  # a training process from the entry point (~40 s on 2 cores).
def test_train_entry_point_logs_and_records_the_backend_and_hides_tensorflow(tmp_path):
  model_dir, cache = tmp_path / "run", tmp_path / "xla"
  env = dict(os.environ, JAX_PLATFORMS="cpu", TF_CPP_MIN_LOG_LEVEL="3",
             SPOT_JAX_COMPILATION_CACHE=str(cache))
  args = ["--gin_file=models/tiny_byte.gin", "--gin_file=runs/prompt_train.gin",
          "--gin.MIXTURE_OR_TASK_NAME=synthetic_sentiment_a", "--gin.TRAIN_STEPS=2",
          "--gin.PROMPT_LENGTH=4", "--gin.BATCH_SIZE=4", "--gin.CHECKPOINT_PERIOD=2",
          "--gin.EVAL_PERIOD=0", "--gin.TASK_FEATURE_LENGTHS={'inputs': 16, 'targets': 4}",
          f"--gin.MODEL_DIR={model_dir}"]
  done = subprocess.run([sys.executable, "-m", "spot_jax.cli.main", "train", *args],
                        capture_output=True, text=True, env=env, timeout=400, cwd=ROOT)
  assert done.returncode == 0, done.stdout + done.stderr
  assert "backend cpu" in done.stdout
  recorded = run_dir.read_summary(str(model_dir)).runtime
  assert recorded["backend"] == "cpu" and recorded["device_count"] >= 1
  assert recorded["tensorflow_accelerators_hidden"] is True
  assert os.listdir(cache), "the compilation cache stayed empty"
