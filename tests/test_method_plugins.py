"""Methods as plug-ins: the model names no method, a Method subclass registers itself, and a
method defined outside the package (one module + one gin file) trains through `spot-jax train`."""

import ast
import dataclasses
import json
import os
import subprocess
import sys
import textwrap

import numpy as np
import pytest

from conftest import PROJECT_ROOT
from spot_jax import methods
from spot_jax.models.layers import MethodHooks
from spot_jax.train import partitioning

MODELS = PROJECT_ROOT / "spot_jax" / "models"
PARAMETER_EFFICIENT = ("lora", "ia3", "bias", "prefix")  # methods that are not the input slot.

TOY_METHOD = '''
"""A toy method: a learned gate [1] scaling the output of every MLP `wo` layer."""
import dataclasses

import flax.linen as nn
import gin
import jax.numpy as jnp

from spot_jax.methods import Method
from spot_jax.models.layers import DenseSlot, MethodHooks


@dataclasses.dataclass(frozen=True)
class Gate(DenseSlot):
  name = "toy_gate"

  def adjust_output(self, module, inputs, y):
    gate = module.param("toy_gate", nn.initializers.ones, (1,), jnp.float32)
    return y * gate.astype(y.dtype)


@gin.configurable(module="toy")
@dataclasses.dataclass(frozen=True)
class ToyGate(Method):
  name = "toy_gate"
  trainable_leaves = ("toy_gate",)
  default_learning_rate = 0.1
  targets: str = r"mlp/wo$"

  def hooks(self):
    return MethodHooks(dense=(Gate(self.targets),))
'''
TOY_GIN = """\
import toy_gate_method
METHOD = 'toy_gate'
"""


def test_models_name_no_method():
  """The layers know generic slots (input, dense, key/value); no method is named in models/
  beyond the input slot's soft prompt, and no hook field belongs to a method."""
  for path in sorted(MODELS.glob("*.py")):
    tree = ast.parse(path.read_text())
    names = {n.id for n in ast.walk(tree) if isinstance(n, ast.Name)}
    names |= {n.attr for n in ast.walk(tree) if isinstance(n, ast.Attribute)}
    names |= {a.name for n in ast.walk(tree) if isinstance(n, (ast.FunctionDef, ast.ClassDef))
              for a in [n]}
    for method in ("lora", "ia3"):
      assert not any(method in name.lower() for name in names), (path.name, method)
    imports = [n.module for n in ast.walk(tree) if isinstance(n, ast.ImportFrom)]
    assert not any(m and m.startswith("spot_jax.methods") for m in imports), path.name
  fields = [f.name for f in dataclasses.fields(MethodHooks)]
  assert not [f for f in fields if f.split("_")[0] in ("lora", "ia3", "bias")], fields


@pytest.fixture
def registered_toy(tmp_path, monkeypatch):
  """The toy method imported from tmp_path (registering itself), unregistered afterwards."""
  (tmp_path / "toy_gate_method.py").write_text(TOY_METHOD)
  monkeypatch.syspath_prepend(str(tmp_path))
  import importlib
  module = importlib.import_module("toy_gate_method")
  yield module
  methods.REGISTRY.pop("toy_gate", None)
  sys.modules.pop("toy_gate_method", None)


def test_a_method_subclass_registers_itself_and_its_leaves_get_partition_rules(registered_toy):
  assert methods.method_class("toy_gate") is registered_toy.ToyGate
  rules = partitioning.partition_rules()
  path = "decoder/layers_0/mlp/wo/toy_gate"
  assert any(__import__("re").search(pattern, path) for pattern, _ in rules)
  assert partitioning.follow_spec(path, (1,), {}) == partitioning.P()
  assert "toy_gate" not in methods.prompt_like_methods()
  with pytest.raises(methods.MethodError, match="Method name 'lora' is taken by"):
    type("OtherLora", (methods.Method,), {"name": "lora", "__module__": "elsewhere"})


def test_built_in_methods_own_their_slots_partition_rules_and_prompt_likeness():
  assert methods.prompt_like_methods() == ("prompt", "prompt_encoder")
  assert set(methods.BUILT_IN) <= set(methods.METHODS.values())
  lora = methods.create("lora").hooks()
  assert [s.name for s in lora.dense] == ["lora"] and lora.per_layer() == ["lora"]
  assert methods.create("prompt", 5).hooks().per_layer() == []
  assert methods.create("prefix").hooks().per_layer() == ["key/value prefix"]


@pytest.mark.slow
def test_a_method_defined_outside_the_package_trains_through_spot_jax_train(tmp_path):
  """Two files add a method: its module and its gin file (whose `import` line registers it).
  `spot-jax train` in a fresh process trains it; its checkpoints hold its gates, moved."""
  (tmp_path / "toy_gate_method.py").write_text(TOY_METHOD)
  gin_file = tmp_path / "toy_gate.gin"
  gin_file.write_text(TOY_GIN)
  model_dir = tmp_path / "run"
  env = dict(os.environ, JAX_PLATFORMS="cpu",
             PYTHONPATH=os.pathsep.join([str(tmp_path), str(PROJECT_ROOT)]))
  done = subprocess.run(
      [sys.executable, "-m", "spot_jax.cli.main", "train", "--gin_file=models/tiny_byte.gin",
       "--gin_file=runs/prompt_train.gin", f"--gin_file={gin_file}",
       f"--gin.MODEL_DIR='{model_dir}'", "--gin.MIXTURE_OR_TASK_NAME='synthetic_sentiment_b'",
       "--gin.TRAIN_STEPS=4", "--gin.CHECKPOINT_PERIOD=2", "--gin.EVAL_PERIOD=0",
       "--gin.BATCH_SIZE=4", "--gin.TASK_FEATURE_LENGTHS={'inputs': 32, 'targets': 8}"],
      capture_output=True, text=True, cwd=PROJECT_ROOT, env=env, timeout=900)
  assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-3000:]
  summary = json.loads((model_dir / "run.json").read_text())
  assert summary["method"] == "toy_gate" and summary["steps_done"] == 4
  checkpoint = model_dir / "numpy_checkpoints" / "checkpoint_4"
  gates = sorted(f for f in os.listdir(checkpoint) if "toy_gate" in f)
  assert len(gates) == 4, os.listdir(checkpoint)  # tiny_byte: 2 encoder + 2 decoder layers' wo.
  values = [np.load(checkpoint / f) for f in gates]
  assert all(v.shape == (1,) for v in values) and any(v[0] != 1.0 for v in values)
