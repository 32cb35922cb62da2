"""`library add --peft` with PEFT LoRA, IA3 and prefix adapters: PEFT names and layouts become
our trainables (those tests/test_peft_parity.py shows give PEFT's logits), keyed by their
layer-mean embedding; shape mismatches are refused. Adapters are written here (safetensors)."""

from __future__ import annotations

import json
import re

import numpy as np
import pytest
from safetensors.numpy import save_file

from conftest import PROJECT_ROOT
from spot_jax import methods, task_embedding
from spot_jax.library.similarity import LibraryError
from spot_jax.library.store import ModelIdentity, PromptLibrary

GOLDEN = PROJECT_ROOT / "tests" / "golden" / "peft_t5_tiny_golden.npz"
EMB = 32  # tests/golden/hf_t5_tiny: d_model 32, 4 heads of 8, 2 + 2 layers.
_MODULE = {("encoder", "attention"): (0, "SelfAttention"), ("encoder", "mlp"): (1, "DenseReluDense"),
           ("decoder", "self_attention"): (0, "SelfAttention"),
           ("decoder", "encoder_decoder_attention"): (1, "EncDecAttention"),
           ("decoder", "mlp"): (2, "DenseReluDense")}
_LINEAR = {"query": "q", "key": "k", "value": "v", "out": "o", "wo": "wo"}


def golden(method: str) -> dict[str, np.ndarray]:
  data = np.load(GOLDEN)
  return {k[len(method) + 1:]: data[k] for k in data.files if k.startswith(method + "/")}


def peft_name(module: str) -> str:
  """'decoder.layers_1.self_attention.query' -> PEFT's 'base_model.model.decoder.block.1.
  layer.0.SelfAttention.q'."""
  stack, layer, name, linear = re.fullmatch(r"(\w+)\.layers_(\d+)\.(\w+)\.(\w+)", module).groups()
  index, hf = _MODULE[stack, name]
  return f"base_model.model.{stack}.block.{layer}.layer.{index}.{hf}.{_LINEAR[linear]}"


def write_adapter(directory, config: dict, tensors: dict[str, np.ndarray]):
  directory.mkdir(parents=True)
  (directory / "adapter_config.json").write_text(json.dumps(config))
  save_file({k: np.ascontiguousarray(v, np.float32) for k, v in tensors.items()},
            str(directory / "adapter_model.safetensors"))
  return directory


def lora_adapter(directory, ours: dict[str, np.ndarray], rank: int = 4):
  tensors = {}
  for path, value in ours.items():
    module, leaf = path.rsplit(".", 1)
    name = "lora_A.weight" if leaf == "lora_a" else "lora_B.weight"
    tensors[f"{peft_name(module)}.{name}"] = value.T  # PEFT: [r, in] and [out, r].
  return write_adapter(directory, {"peft_type": "LORA", "r": rank, "lora_alpha": 8,
                                   "target_modules": ["q", "v"]}, tensors)


@pytest.fixture
def library(tmp_path):
  return PromptLibrary(str(tmp_path / "lib"), create=True)


MODEL = ModelIdentity("hf_t5_tiny", EMB, "fp")


def check_entry(entry, library, method, ours, settings):
  value = library.value(entry.id)
  assert set(value) == set(ours)
  for path, array in ours.items():
    np.testing.assert_array_equal(value[path], array, err_msg=path)
  assert (entry.model.method, entry.model.embedding) == (method, "layer_mean")
  assert json.loads(entry.model.method_settings) == settings
  key = library.key(entry.id)
  np.testing.assert_allclose(key[0], task_embedding.layer_embedding(ours, "layer_mean"))


def test_lora_adapter_becomes_our_lora_keyed_by_its_layer_mean(library, tmp_path):
  ours = golden("lora")
  entry = library.add_peft(str(lora_adapter(tmp_path / "lora", ours)), task="rte",
                           model=MODEL, seed=0)
  check_entry(entry, library, "lora", ours, methods.create("lora", rank=4, alpha=8.0).settings())


def test_ia3_adapter_becomes_our_ia3(library, tmp_path):
  ours = golden("ia3")
  tensors = {}
  for path, value in ours.items():
    module = path.rsplit(".", 1)[0]
    shaped = value[None, :] if module.endswith(".wo") else value[:, None]  # PEFT's ia3_l.
    tensors[f"{peft_name(module)}.ia3_l"] = shaped
  adapter = write_adapter(tmp_path / "ia3", {"peft_type": "IA3", "target_modules":
                                             ["k", "v", "wo"], "feedforward_modules": ["wo"]},
                          tensors)
  entry = library.add_peft(str(adapter), task="rte", model=MODEL)
  check_entry(entry, library, "ia3", ours, methods.create("ia3").settings())


def test_prefix_adapter_becomes_our_decoder_prefixes(library, tmp_path):
  """PEFT's table [P, 2 L d_model]: decoder layer j reads slots 4j and 4j + 1 mod 2L (with
  2 layers both read slots 0 and 1, as the golden cache shows)."""
  ours = golden("prefix")
  key0 = ours["decoder.layers_0.self_attention.prefix_key"]  # [3, 4, 8]
  value0 = ours["decoder.layers_0.self_attention.prefix_value"]
  unused = np.random.default_rng(0).standard_normal((2, 3, 4, 8))
  table = np.stack([key0, value0, *unused], axis=1).reshape(3, 4 * EMB)
  adapter = write_adapter(tmp_path / "prefix", {
      "peft_type": "PREFIX_TUNING", "num_virtual_tokens": 3, "num_layers": 2,
      "num_attention_heads": 4, "token_dim": EMB, "prefix_projection": False},
      {"prompt_embeddings": table})
  entry = library.add_peft(str(adapter), task="rte", model=MODEL)
  check_entry(entry, library, "prefix", ours,
              methods.create("prefix", length=3, encoder=False, decoder=True).settings())


def test_shape_mismatches_are_refused_with_the_tensor_named(library, tmp_path):
  ours = golden("lora")
  adapter = str(lora_adapter(tmp_path / "lora", ours))
  with pytest.raises(LibraryError, match=r"lora_A.weight has shape \(4, 32\), but rank 4 on a "
                                         r"model of width 64 needs \(4, 64\)"):
    library.add_peft(adapter, task="rte", model=ModelIdentity("other", 64, "fp"))
  wrong_rank = str(lora_adapter(tmp_path / "rank8", ours, rank=8))
  with pytest.raises(LibraryError, match="rank 8"):
    library.add_peft(wrong_rank, task="rte", model=MODEL)
  bad_prefix = write_adapter(tmp_path / "prefix", {
      "peft_type": "PREFIX_TUNING", "num_virtual_tokens": 3, "num_layers": 2,
      "num_attention_heads": 4, "token_dim": EMB}, {"prompt_embeddings": np.zeros((3, 100))})
  with pytest.raises(LibraryError, match=r"prompt_embeddings has shape \(3, 100\)"):
    library.add_peft(str(bad_prefix), task="rte", model=MODEL)
  mlp = write_adapter(tmp_path / "mlp_lora", {"peft_type": "LORA", "r": 4,
                                              "target_modules": ["wi_0"]}, {})
  with pytest.raises(LibraryError, match="not T5 attention projections"):
    library.add_peft(str(mlp), task="rte", model=MODEL)
  assert library.ids() == []
