"""Reading Hugging Face T5 checkpoints: mapping, config, safe .bin unpickling, and errors."""

from __future__ import annotations

import builtins
import json
import os
import pickle
import shutil
import struct
import zipfile
from pathlib import Path
from typing import Any

import ml_dtypes
import numpy as np
import pytest
from safetensors.numpy import save_file

from spot_jax.checkpoints.hf import (HFCheckpointError, config_from_hf, read_hf_checkpoint,
                                     read_safetensors, read_tensors, read_torch_zip)
from spot_jax.models import T5Config

GOLDEN_DIR = Path(__file__).resolve().parent / "golden" / "hf_t5_tiny"
BF16 = np.dtype(ml_dtypes.bfloat16)
TINY = T5Config(vocab_size=256, emb_dim=32, num_heads=4, head_dim=8, mlp_dim=64,
                num_encoder_layers=2, num_decoder_layers=2, relative_attention_num_buckets=32,
                relative_attention_max_distance=128, dropout_rate=0.0, layer_norm_epsilon=1e-6)


def _flat(tree: dict[str, Any], prefix: str = "") -> dict[str, np.ndarray]:
  out = {}
  for key, value in tree.items():
    if isinstance(value, dict):
      out.update(_flat(value, f"{prefix}{key}/"))
    else:
      out[f"{prefix}{key}"] = value
  return out


def _assert_same_tree(a: dict[str, Any], b: dict[str, Any]) -> None:
  fa, fb = _flat(a), _flat(b)
  assert sorted(fa) == sorted(fb)
  for name in fa:
    assert fa[name].dtype == fb[name].dtype, name
    assert fa[name].shape == fb[name].shape, name
    np.testing.assert_array_equal(fa[name], fb[name], err_msg=name)


@pytest.fixture(scope="module")
def hf_tensors() -> dict[str, np.ndarray]:
  return read_safetensors(GOLDEN_DIR / "model.safetensors")


def _hf_config() -> dict[str, Any]:
  return json.loads((GOLDEN_DIR / "config.json").read_text())


def _write_checkpoint(folder: Path, tensors: dict[str, np.ndarray],
                      config: dict[str, Any] | None = None) -> Path:
  """A directory with config.json and tensors (cast to float32) in model.safetensors."""
  folder.mkdir(parents=True, exist_ok=True)
  (folder / "config.json").write_text(json.dumps(config or _hf_config()))
  save_file({k: np.asarray(v, np.float32) for k, v in tensors.items()},
            str(folder / "model.safetensors"))
  return folder


# ----------------------------------------------------------------------------- a torch zip writer


def _pickle_str(text: str) -> bytes:
  data = text.encode()
  return b"X" + struct.pack("<I", len(data)) + data


def _pickle_int(value: int) -> bytes:
  return b"J" + struct.pack("<i", value)


def _pickle_tuple(items: list[bytes]) -> bytes:
  return b"(" + b"".join(items) + b"t"


def _pickle_call(module: str, name: str, args: list[bytes]) -> bytes:
  return f"c{module}\n{name}\n".encode() + _pickle_tuple(args) + b"R"


def _torch_pickle(entries: dict[str, tuple[str, str, int, int, tuple, tuple]]) -> bytes:
  """Protocol-2 pickle as torch.save writes: name -> (storage class, key, numel, offset, size,
  stride), hand-assembled so that no torch is needed."""
  items = []
  for name, (storage, key, numel, offset, size, stride) in entries.items():
    persistent_id = _pickle_tuple([_pickle_str("storage"), f"ctorch\n{storage}\n".encode(),
                                   _pickle_str(key), _pickle_str("cpu"), _pickle_int(numel)])
    tensor = _pickle_call("torch._utils", "_rebuild_tensor_v2", [
        persistent_id + b"Q", _pickle_int(offset), _pickle_tuple([_pickle_int(d) for d in size]),
        _pickle_tuple([_pickle_int(s) for s in stride]), b"\x89",
        _pickle_call("collections", "OrderedDict", [])])
    items.append(_pickle_str(name) + tensor)
  return (b"\x80\x02" + _pickle_call("collections", "OrderedDict", []) + b"("
          + b"".join(items) + b"u.")


def _write_torch_zip(path: Path, data_pkl: bytes, storages: dict[str, bytes],
                     prefix: str = "archive") -> Path:
  with zipfile.ZipFile(path, "w", zipfile.ZIP_STORED) as archive:
    archive.writestr(f"{prefix}/data.pkl", data_pkl)
    archive.writestr(f"{prefix}/byteorder", "little")
    archive.writestr(f"{prefix}/version", "3\n")
    for key, raw in storages.items():
      archive.writestr(f"{prefix}/data/{key}", raw)
  return path


# ----------------------------------------------------------------------------- mapping and config


def test_safetensors_and_bin_readers_give_identical_trees():
  from_safetensors, config_a = read_hf_checkpoint(GOLDEN_DIR)
  from_bin, config_b = read_hf_checkpoint(GOLDEN_DIR / "pytorch_model.bin")
  assert config_a == config_b
  _assert_same_tree(from_safetensors, from_bin)
  assert _flat(from_safetensors)["token_embedder/embedding"].dtype == BF16  # kept as stored


def test_bin_tensors_equal_safetensors_tensors(hf_tensors):
  from_bin = read_torch_zip(GOLDEN_DIR / "pytorch_model.bin")
  for name, array in hf_tensors.items():
    np.testing.assert_array_equal(from_bin[name], array, err_msg=name)
    assert from_bin[name].dtype == array.dtype
  # torch's state dict repeats shared.weight under the embed_tokens names (ignored on mapping).
  np.testing.assert_array_equal(from_bin["encoder.embed_tokens.weight"],
                                hf_tensors["shared.weight"])


def test_every_mapped_array_equals_its_source_tensor(hf_tensors):
  params, _ = read_hf_checkpoint(GOLDEN_DIR)
  flat = _flat(params)
  expected = {
      "token_embedder/embedding": hf_tensors["shared.weight"],
      "decoder/logits_dense/kernel": hf_tensors["lm_head.weight"].T,
      "encoder/relpos_bias/rel_embedding":
          hf_tensors["encoder.block.0.layer.0.SelfAttention.relative_attention_bias.weight"].T,
      "decoder/relpos_bias/rel_embedding":
          hf_tensors["decoder.block.0.layer.0.SelfAttention.relative_attention_bias.weight"].T,
      "encoder/encoder_norm/scale": hf_tensors["encoder.final_layer_norm.weight"],
      "decoder/decoder_norm/scale": hf_tensors["decoder.final_layer_norm.weight"],
  }
  for i in range(2):
    enc, dec = f"encoder.block.{i}.layer", f"decoder.block.{i}.layer"
    expected.update({
        f"encoder/layers_{i}/pre_attention_layer_norm/scale":
            hf_tensors[f"{enc}.0.layer_norm.weight"],
        f"encoder/layers_{i}/pre_mlp_layer_norm/scale": hf_tensors[f"{enc}.1.layer_norm.weight"],
        f"decoder/layers_{i}/pre_self_attention_layer_norm/scale":
            hf_tensors[f"{dec}.0.layer_norm.weight"],
        f"decoder/layers_{i}/pre_cross_attention_layer_norm/scale":
            hf_tensors[f"{dec}.1.layer_norm.weight"],
        f"decoder/layers_{i}/pre_mlp_layer_norm/scale": hf_tensors[f"{dec}.2.layer_norm.weight"],
    })
    for hf_name, ours in (("q", "query"), ("k", "key"), ("v", "value"), ("o", "out")):
      expected[f"encoder/layers_{i}/attention/{ours}/kernel"] = \
          hf_tensors[f"{enc}.0.SelfAttention.{hf_name}.weight"].T
      expected[f"decoder/layers_{i}/self_attention/{ours}/kernel"] = \
          hf_tensors[f"{dec}.0.SelfAttention.{hf_name}.weight"].T
      expected[f"decoder/layers_{i}/encoder_decoder_attention/{ours}/kernel"] = \
          hf_tensors[f"{dec}.1.EncDecAttention.{hf_name}.weight"].T
    for name in ("wi_0", "wi_1", "wo"):
      expected[f"encoder/layers_{i}/mlp/{name}/kernel"] = \
          hf_tensors[f"{enc}.1.DenseReluDense.{name}.weight"].T
      expected[f"decoder/layers_{i}/mlp/{name}/kernel"] = \
          hf_tensors[f"{dec}.2.DenseReluDense.{name}.weight"].T
  assert sorted(flat) == sorted(expected)
  for name, array in expected.items():
    np.testing.assert_array_equal(flat[name], array, err_msg=name)
  assert flat["encoder/layers_0/attention/query/kernel"].shape == (32, 32)
  assert flat["encoder/layers_0/mlp/wi_0/kernel"].shape == (32, 64)
  assert flat["encoder/layers_0/mlp/wo/kernel"].shape == (64, 32)
  assert flat["encoder/relpos_bias/rel_embedding"].shape == (4, 32)
  assert flat["decoder/logits_dense/kernel"].shape == (32, 256)


def test_param_tree_matches_model_init_structure():
  import jax
  from spot_jax.models import T5
  params, config = read_hf_checkpoint(GOLDEN_DIR, dtype="float32")
  tokens = np.ones((1, 4), np.int32)
  init = jax.eval_shape(lambda: T5(config).init(jax.random.PRNGKey(0), tokens, tokens))["params"]
  ours = {k: v.shape for k, v in _flat(params).items()}
  assert ours == {k: v.shape for k, v in _flat(dict(init)).items()}


def test_config_inference():
  _, config = read_hf_checkpoint(GOLDEN_DIR)
  assert config == TINY


def test_config_defaults_follow_hf():
  hf = {k: v for k, v in _hf_config().items()
        if k not in ("relative_attention_max_distance", "dropout_rate", "layer_norm_epsilon")}
  hf["num_decoder_layers"] = None
  hf["num_layers"] = 3
  config = config_from_hf(hf)
  assert config.num_encoder_layers == config.num_decoder_layers == 3
  assert config.relative_attention_max_distance == 128
  assert config.dropout_rate == 0.1 and config.layer_norm_epsilon == 1e-6


def test_dtype_cast():
  params, _ = read_hf_checkpoint(GOLDEN_DIR, dtype="float32")
  assert {a.dtype for a in _flat(params).values()} == {np.dtype(np.float32)}
  params, _ = read_hf_checkpoint(GOLDEN_DIR / "pytorch_model.bin", dtype="bfloat16")
  assert {a.dtype for a in _flat(params).values()} == {BF16}


def test_float32_safetensors_and_shards(tmp_path, hf_tensors):
  reference, _ = read_hf_checkpoint(GOLDEN_DIR, dtype="float32")
  single = _write_checkpoint(tmp_path / "single", hf_tensors)
  params, _ = read_hf_checkpoint(single)
  _assert_same_tree(params, reference)

  sharded = tmp_path / "sharded"
  sharded.mkdir()
  shutil.copy(GOLDEN_DIR / "config.json", sharded / "config.json")
  names = sorted(hf_tensors)
  shards = {"model-00001-of-00002.safetensors": names[::2],
            "model-00002-of-00002.safetensors": names[1::2]}
  for shard, shard_names in shards.items():
    save_file({n: hf_tensors[n].astype(np.float32) for n in shard_names}, str(sharded / shard))
  weight_map = {n: shard for shard, shard_names in shards.items() for n in shard_names}
  (sharded / "model.safetensors.index.json").write_text(json.dumps({"weight_map": weight_map}))
  params, _ = read_hf_checkpoint(sharded)
  _assert_same_tree(params, reference)

  weight_map[names[0]] = "model-00002-of-00002.safetensors"  # the index says shard 2; it is in 1
  (sharded / "model.safetensors.index.json").write_text(json.dumps({"weight_map": weight_map}))
  with pytest.raises(HFCheckpointError, match="lacks tensors the index assigns") as info:
    read_hf_checkpoint(sharded)
  assert names[0] in str(info.value)


# ----------------------------------------------------------------------------- torch zip details


def test_torch_zip_dtypes_strides_offsets_and_shared_storage(tmp_path):
  f32 = np.arange(12, dtype="<f4")
  f16 = np.arange(6, dtype="<f2") / 4
  bf16 = (np.arange(8, dtype=np.float32) - 3.5).astype(BF16)
  i64 = np.array([-5, 7, 1 << 40], dtype="<i8")
  data_pkl = _torch_pickle({
      "matrix": ("FloatStorage", "0", 12, 0, (3, 4), (4, 1)),
      "transposed": ("FloatStorage", "0", 12, 0, (4, 3), (1, 4)),   # same storage, a view
      "tail": ("FloatStorage", "0", 12, 8, (2, 2), (2, 1)),          # storage offset
      "half": ("HalfStorage", "1", 6, 1, (5,), (1,)),
      "brain": ("BFloat16Storage", "2", 8, 0, (2, 2, 2), (4, 2, 1)),
      "longs": ("LongStorage", "3", 3, 0, (3,), (1,)),
      "empty": ("FloatStorage", "0", 12, 0, (0, 4), (4, 1)),
  })
  path = _write_torch_zip(tmp_path / "weights.bin", data_pkl, {
      "0": f32.tobytes(), "1": f16.tobytes(), "2": bf16.tobytes(), "3": i64.tobytes()},
      prefix="weights")
  tensors = read_torch_zip(path)
  np.testing.assert_array_equal(tensors["matrix"], f32.reshape(3, 4))
  np.testing.assert_array_equal(tensors["transposed"], f32.reshape(3, 4).T)
  np.testing.assert_array_equal(tensors["tail"], f32[8:].reshape(2, 2))
  np.testing.assert_array_equal(tensors["half"], f16[1:])
  assert tensors["brain"].dtype == BF16
  np.testing.assert_array_equal(tensors["brain"], bf16.reshape(2, 2, 2))
  np.testing.assert_array_equal(tensors["longs"], i64)
  assert tensors["empty"].shape == (0, 4)
  tensors["matrix"][0, 0] = 99.0  # arrays are independent copies
  assert tensors["transposed"][0, 0] == 0.0


def test_torch_zip_out_of_bounds_view_refused(tmp_path):
  data_pkl = _torch_pickle({"w": ("FloatStorage", "0", 4, 2, (2, 2), (2, 1))})
  path = _write_torch_zip(tmp_path / "pytorch_model.bin", data_pkl,
                          {"0": np.zeros(4, np.float32).tobytes()})
  with pytest.raises(HFCheckpointError, match="past its storage"):
    read_torch_zip(path)


def test_torch_zip_truncated_storage_refused(tmp_path):
  data_pkl = _torch_pickle({"w": ("FloatStorage", "0", 8, 0, (8,), (1,))})
  path = _write_torch_zip(tmp_path / "pytorch_model.bin", data_pkl,
                          {"0": np.zeros(3, np.float32).tobytes()})
  with pytest.raises(HFCheckpointError, match="truncated") as info:
    read_torch_zip(path)
  assert str(path) in str(info.value)


# ----------------------------------------------------------------------------- malicious pickles


class _RunsShell:
  """Unpickling this would run a shell command creating the sentinel file."""

  def __init__(self, sentinel: Path):
    self.sentinel = sentinel

  def __reduce__(self):
    return os.system, (f"touch {self.sentinel}",)


class _RunsExec:
  def __init__(self, sentinel: Path):
    self.sentinel = sentinel

  def __reduce__(self):
    return builtins.exec, (f"open({str(self.sentinel)!r}, 'w').close()",)


@pytest.mark.parametrize("payload_cls", [_RunsShell, _RunsExec])
def test_malicious_pickle_in_torch_zip_is_refused_unexecuted(tmp_path, payload_cls):
  sentinel = tmp_path / "pwned"
  evil = pickle.dumps({"shared.weight": payload_cls(sentinel)}, protocol=2)
  folder = tmp_path / "model"
  folder.mkdir()
  shutil.copy(GOLDEN_DIR / "config.json", folder / "config.json")
  path = _write_torch_zip(folder / "pytorch_model.bin", evil, {})
  with pytest.raises(HFCheckpointError, match="refusing to unpickle") as info:
    read_hf_checkpoint(folder)
  message = str(info.value)
  assert str(path) in message
  assert any(f"{module}.{name} from {path}" in message for module, name in (
      ("posix", "system"), ("nt", "system"), ("builtins", "exec"), ("__builtin__", "exec")))
  assert not sentinel.exists()


@pytest.mark.parametrize("payload_cls", [_RunsShell, _RunsExec])
def test_plain_pickle_file_is_refused_unexecuted(tmp_path, payload_cls):
  sentinel = tmp_path / "pwned"
  path = tmp_path / "pytorch_model.bin"
  path.write_bytes(pickle.dumps(payload_cls(sentinel), protocol=4))
  shutil.copy(GOLDEN_DIR / "config.json", tmp_path / "config.json")
  with pytest.raises(HFCheckpointError, match="pickle") as info:
    read_hf_checkpoint(tmp_path)
  assert str(path) in str(info.value) and "safetensors" in str(info.value)
  assert not sentinel.exists()


def test_other_torch_globals_refused(tmp_path):
  data_pkl = b"\x80\x02" + _pickle_call("torch.storage", "_load_from_bytes", [
      b"C\x00"]) + b"."
  path = _write_torch_zip(tmp_path / "pytorch_model.bin", data_pkl, {})
  with pytest.raises(HFCheckpointError, match="torch.storage._load_from_bytes"):
    read_torch_zip(path)


def test_state_dict_must_hold_tensors(tmp_path):
  path = _write_torch_zip(tmp_path / "pytorch_model.bin", pickle.dumps({"a": [1, 2]}, 2), {})
  with pytest.raises(HFCheckpointError, match="not named tensors"):
    read_torch_zip(path)
  path = _write_torch_zip(tmp_path / "list.bin", pickle.dumps([1, 2], 2), {})
  with pytest.raises(HFCheckpointError, match="not a state dict"):
    read_torch_zip(path)


def test_zip_without_data_pkl_refused(tmp_path):
  path = tmp_path / "pytorch_model.bin"
  with zipfile.ZipFile(path, "w") as archive:
    archive.writestr("something/else.txt", "hi")
  with pytest.raises(HFCheckpointError, match="data.pkl"):
    read_torch_zip(path)


# ----------------------------------------------------------------------------- unsupported models


@pytest.mark.parametrize("ffn", ["relu", "gelu", "gated-silu"])
def test_non_gated_gelu_refused(tmp_path, ffn):
  folder = tmp_path / "m"
  shutil.copytree(GOLDEN_DIR, folder)
  (folder / "config.json").write_text(json.dumps({**_hf_config(), "feed_forward_proj": ffn}))
  with pytest.raises(HFCheckpointError, match="T5 1.1 / LM-adapted") as info:
    read_hf_checkpoint(folder)
  assert ffn in str(info.value) and str(folder / "config.json") in str(info.value)


def test_tied_embeddings_refused(tmp_path, hf_tensors):
  config = {**_hf_config(), "tie_word_embeddings": True}
  folder = _write_checkpoint(tmp_path / "tied", hf_tensors, config)
  with pytest.raises(HFCheckpointError, match="tie_word_embeddings"):
    read_hf_checkpoint(folder)
  absent = {k: v for k, v in _hf_config().items() if k != "tie_word_embeddings"}
  (folder / "config.json").write_text(json.dumps(absent))
  with pytest.raises(HFCheckpointError, match="tie_word_embeddings"):
    read_hf_checkpoint(folder)


def test_missing_lm_head_refused_as_tied(tmp_path, hf_tensors):
  tensors = {k: v for k, v in hf_tensors.items() if k != "lm_head.weight"}
  folder = _write_checkpoint(tmp_path / "nohead", tensors)
  with pytest.raises(HFCheckpointError, match="no lm_head.weight.*T5 1.1"):
    read_hf_checkpoint(folder)


def test_other_model_type_refused():
  with pytest.raises(HFCheckpointError, match="model_type 'bart'"):
    config_from_hf({**_hf_config(), "model_type": "bart"}, source="cfg.json")


# ----------------------------------------------------------------------------- name and file errors


def test_missing_and_unexpected_tensors_listed_in_one_error(tmp_path, hf_tensors):
  tensors = dict(hf_tensors)
  del tensors["encoder.block.1.layer.1.DenseReluDense.wo.weight"]
  del tensors["decoder.block.0.layer.1.EncDecAttention.k.weight"]
  tensors["encoder.block.2.layer.0.layer_norm.weight"] = np.ones(32, np.float32)
  tensors["decoder.block.0.layer.0.SelfAttention.q.weight"] = np.ones((32, 16), np.float32)
  folder = _write_checkpoint(tmp_path / "bad", tensors)
  with pytest.raises(HFCheckpointError) as info:
    read_hf_checkpoint(folder)
  message = str(info.value)
  assert str(folder / "model.safetensors") in message
  assert "missing tensors" in message and "unexpected tensors" in message
  for name in ("encoder.block.1.layer.1.DenseReluDense.wo.weight",
               "decoder.block.0.layer.1.EncDecAttention.k.weight",
               "encoder.block.2.layer.0.layer_norm.weight",
               "decoder.block.0.layer.0.SelfAttention.q.weight: (32, 16), expected (32, 32)"):
    assert name in message


def test_duplicate_embeddings_and_unused_cross_attention_bias_ignored(tmp_path, hf_tensors):
  tensors = dict(hf_tensors)
  tensors["encoder.embed_tokens.weight"] = hf_tensors["shared.weight"]
  tensors["decoder.embed_tokens.weight"] = hf_tensors["shared.weight"]
  tensors["decoder.block.0.layer.1.EncDecAttention.relative_attention_bias.weight"] = \
      np.zeros((32, 4), np.float32)
  params, _ = read_hf_checkpoint(_write_checkpoint(tmp_path / "extra", tensors))
  reference, _ = read_hf_checkpoint(GOLDEN_DIR, dtype="float32")
  _assert_same_tree(params, reference)


def test_truncated_safetensors_refused(tmp_path):
  source = (GOLDEN_DIR / "model.safetensors").read_bytes()
  path = tmp_path / "model.safetensors"
  path.write_bytes(source[: len(source) - 100])
  with pytest.raises(HFCheckpointError, match="truncated") as info:
    read_safetensors(path)
  assert str(path) in str(info.value)
  path.write_bytes(source[:4])
  with pytest.raises(HFCheckpointError, match="truncated"):
    read_safetensors(path)
  path.write_bytes(source[:200])  # cut inside the JSON header
  with pytest.raises(HFCheckpointError, match="exceeds the file"):
    read_safetensors(path)


def test_corrupt_safetensors_header_refused(tmp_path):
  path = tmp_path / "model.safetensors"
  header = b"{not json"
  path.write_bytes(struct.pack("<Q", len(header)) + header)
  with pytest.raises(HFCheckpointError, match="not valid JSON"):
    read_safetensors(path)
  header = json.dumps({"w": {"dtype": "F32", "shape": [2, 2], "data_offsets": [0, 12]}}).encode()
  path.write_bytes(struct.pack("<Q", len(header)) + header + bytes(16))
  with pytest.raises(HFCheckpointError, match="do not hold"):
    read_safetensors(path)
  header = json.dumps({"w": {"dtype": "C64", "shape": [1], "data_offsets": [0, 8]}}).encode()
  path.write_bytes(struct.pack("<Q", len(header)) + header + bytes(8))
  with pytest.raises(HFCheckpointError, match="unsupported dtype"):
    read_safetensors(path)


def test_bfloat16_safetensors_read_without_library_support(tmp_path):
  values = np.array([[1.5, -2.0], [0.0, 3.25]], np.float32).astype(BF16)
  header = json.dumps({"__metadata__": {"format": "pt"},
                       "w": {"dtype": "BF16", "shape": [2, 2], "data_offsets": [0, 8]}}).encode()
  path = tmp_path / "x.safetensors"
  path.write_bytes(struct.pack("<Q", len(header)) + header + values.tobytes())
  tensors = read_tensors(path)
  assert tensors["w"].dtype == BF16
  np.testing.assert_array_equal(tensors["w"], values)


def test_missing_files_named(tmp_path):
  with pytest.raises(HFCheckpointError, match="no such file"):
    read_hf_checkpoint(tmp_path / "nope")
  (tmp_path / "config.json").write_text(json.dumps(_hf_config()))
  with pytest.raises(HFCheckpointError, match="no weights found"):
    read_hf_checkpoint(tmp_path)
  weights_only = tmp_path / "w"
  weights_only.mkdir()
  shutil.copy(GOLDEN_DIR / "model.safetensors", weights_only / "model.safetensors")
  with pytest.raises(HFCheckpointError, match="config.json: missing"):
    read_hf_checkpoint(weights_only)


def test_error_is_a_value_error():
  assert issubclass(HFCheckpointError, ValueError)
