"""Hugging Face T5 1.1 checkpoints -> our T5X-named param tree and T5Config.

Reads a directory with `config.json` plus `model.safetensors`, a sharded
`model.safetensors.index.json`, `pytorch_model.bin` or `pytorch_model.bin.index.json`; or one of
those weight files directly (its `config.json` beside it). Neither torch nor transformers is
needed:

* safetensors are parsed here (8-byte little-endian header size, JSON header, raw data), so
  bfloat16 and float8 tensors load as `ml_dtypes` arrays.
* `pytorch_model.bin` (torch's zip format) is unpickled by a restricted unpickler that builds
  numpy arrays and knows only `collections.OrderedDict`, torch's tensor rebuild functions and
  its typed storage classes; any other global is refused, so no code in the pickle runs.
  Legacy (non-zip) torch files and plain pickles are refused unread.

Only T5 1.1 / LM-adapted models (`feed_forward_proj` gated-gelu, untied `lm_head`) are accepted.
Torch `Linear` weights [out, in] are transposed to kernels [in, out]; relative attention biases
[buckets, heads] become `rel_embedding` [heads, buckets].
"""

from __future__ import annotations

import collections
import dataclasses
import json
import math
import os
import pickle
import sys
import zipfile
from typing import Any, Mapping

import ml_dtypes
import numpy as np

from spot_jax.models.config import T5Config

CONFIG_NAME = "config.json"
SAFETENSORS_NAME = "model.safetensors"
SAFETENSORS_INDEX_NAME = "model.safetensors.index.json"
TORCH_NAME = "pytorch_model.bin"
TORCH_INDEX_NAME = "pytorch_model.bin.index.json"
WEIGHT_NAMES = (SAFETENSORS_NAME, SAFETENSORS_INDEX_NAME, TORCH_NAME, TORCH_INDEX_NAME)

# feed_forward_proj values that HF runs as gelu(x W_0, tanh approximation) * (x W_1), like ours.
GATED_GELU = ("gated-gelu", "gated-gelu_new", "gated-gelu_pytorch_tanh")
SUPPORTED_MODEL_TYPES = ("t5", "mt5")
# Names in HF files that carry no information of their own: copies of `shared.weight`, and a
# cross-attention bias HF never uses (it is in `_keys_to_ignore_on_load_unexpected`).
IGNORED_NAMES = frozenset({
    "encoder.embed_tokens.weight",
    "decoder.embed_tokens.weight",
    "decoder.block.0.layer.1.EncDecAttention.relative_attention_bias.weight",
})
SUPPORTED_HINT = ("only T5 1.1 / LM-adapted models (feed_forward_proj='gated-gelu', "
                  "tie_word_embeddings=false, a separate lm_head.weight) are supported")

SAFETENSORS_DTYPES: dict[str, np.dtype] = {
    "F64": np.dtype("<f8"), "F32": np.dtype("<f4"), "F16": np.dtype("<f2"),
    "BF16": np.dtype(ml_dtypes.bfloat16),
    "F8_E4M3": np.dtype(ml_dtypes.float8_e4m3fn), "F8_E5M2": np.dtype(ml_dtypes.float8_e5m2),
    "I64": np.dtype("<i8"), "I32": np.dtype("<i4"), "I16": np.dtype("<i2"), "I8": np.dtype("i1"),
    "U64": np.dtype("<u8"), "U32": np.dtype("<u4"), "U16": np.dtype("<u2"), "U8": np.dtype("u1"),
    "BOOL": np.dtype("bool"),
}
MAX_SAFETENSORS_HEADER = 100 * 1024 * 1024

TORCH_STORAGE_DTYPES: dict[str, np.dtype] = {
    "DoubleStorage": np.dtype("f8"), "FloatStorage": np.dtype("f4"),
    "HalfStorage": np.dtype("f2"), "BFloat16Storage": np.dtype(ml_dtypes.bfloat16),
    "LongStorage": np.dtype("i8"), "IntStorage": np.dtype("i4"), "ShortStorage": np.dtype("i2"),
    "CharStorage": np.dtype("i1"), "ByteStorage": np.dtype("u1"), "BoolStorage": np.dtype("bool"),
}


class HFCheckpointError(ValueError):
  """An unreadable, unsafe or unsupported Hugging Face checkpoint; names the file and problem."""


# ----------------------------------------------------------------------------- entry point


def read_hf_checkpoint(path: str | os.PathLike, dtype: Any = None
                       ) -> tuple[dict[str, Any], T5Config]:
  """Reads an HF T5 1.1 checkpoint into (nested param dict of numpy arrays, T5Config).

  `path` is a directory (config.json + weights) or a weight file with config.json beside it.
  Arrays keep their stored dtype unless `dtype` (e.g. "float32", "bfloat16") is given.
  """
  config_path, weights_path = resolve_paths(path)
  config = read_hf_config(config_path)
  tensors = read_tensors(weights_path)
  params = hf_to_params(tensors, config, source=weights_path)
  if dtype is not None:
    target = _as_dtype(dtype, weights_path)
    params = _map_tree(lambda a: a.astype(target, copy=False), params)
  return params, config


def resolve_paths(path: str | os.PathLike) -> tuple[str, str]:
  """(config.json path, weights path) for a checkpoint directory or weight file."""
  path = os.fspath(path)
  if os.path.isdir(path):
    config_path = os.path.join(path, CONFIG_NAME)
    for name in WEIGHT_NAMES:
      if os.path.isfile(os.path.join(path, name)):
        weights_path = os.path.join(path, name)
        break
    else:
      raise HFCheckpointError(f"{path}: no weights found; expected one of {list(WEIGHT_NAMES)}")
  elif os.path.isfile(path):
    if os.path.basename(path) == CONFIG_NAME:
      return resolve_paths(os.path.dirname(path) or ".")
    weights_path = path
    config_path = os.path.join(os.path.dirname(path) or ".", CONFIG_NAME)
  else:
    raise HFCheckpointError(f"{path}: no such file or directory")
  if not os.path.isfile(config_path):
    raise HFCheckpointError(f"{config_path}: missing; a Hugging Face checkpoint needs its "
                            "config.json next to the weights")
  return config_path, weights_path


# ----------------------------------------------------------------------------- config


def read_hf_config(path: str | os.PathLike) -> T5Config:
  """T5Config from an HF `config.json`; refuses anything but T5 1.1 / LM-adapted models."""
  path = os.fspath(path)
  try:
    with open(path, "r", encoding="utf-8") as f:
      hf_config = json.load(f)
  except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
    raise HFCheckpointError(f"{path}: cannot read the config ({e})") from e
  if not isinstance(hf_config, dict):
    raise HFCheckpointError(f"{path}: config is not a JSON object")
  return config_from_hf(hf_config, source=path)


def config_from_hf(hf_config: Mapping[str, Any], source: str = "config") -> T5Config:
  """Maps HF T5Config fields (d_model, d_kv, d_ff, ...) to ours."""
  model_type = hf_config.get("model_type", "t5")
  if model_type not in SUPPORTED_MODEL_TYPES:
    raise HFCheckpointError(f"{source}: model_type {model_type!r} is not T5; {SUPPORTED_HINT}")
  ffn = hf_config.get("feed_forward_proj", "relu")
  if ffn not in GATED_GELU:
    raise HFCheckpointError(
        f"{source}: feed_forward_proj={ffn!r} (original T5 uses 'relu'); {SUPPORTED_HINT}")
  if hf_config.get("tie_word_embeddings", True):
    raise HFCheckpointError(
        f"{source}: tie_word_embeddings is true (or absent, which means true), so the output "
        f"layer would reuse shared.weight scaled by d_model**-0.5; {SUPPORTED_HINT}")
  required = ("vocab_size", "d_model", "d_kv", "d_ff", "num_heads", "num_layers")
  missing = [k for k in required if k not in hf_config]
  if missing:
    raise HFCheckpointError(f"{source}: config lacks {missing}")
  num_layers = hf_config["num_layers"]
  num_decoder_layers = hf_config.get("num_decoder_layers")
  fields = dict(
      vocab_size=hf_config["vocab_size"], emb_dim=hf_config["d_model"],
      num_heads=hf_config["num_heads"], head_dim=hf_config["d_kv"], mlp_dim=hf_config["d_ff"],
      num_encoder_layers=num_layers,
      num_decoder_layers=num_layers if num_decoder_layers is None else num_decoder_layers,
      relative_attention_num_buckets=hf_config.get("relative_attention_num_buckets", 32),
      relative_attention_max_distance=hf_config.get("relative_attention_max_distance", 128))
  bad = {k: v for k, v in fields.items() if not isinstance(v, int) or isinstance(v, bool) or v <= 0}
  if bad:
    raise HFCheckpointError(f"{source}: expected positive integers, got {bad}")
  floats = dict(dropout_rate=hf_config.get("dropout_rate", 0.1),
                layer_norm_epsilon=hf_config.get("layer_norm_epsilon", 1e-6))
  bad = {k: v for k, v in floats.items() if not isinstance(v, (int, float)) or isinstance(v, bool)}
  if bad:
    raise HFCheckpointError(f"{source}: expected numbers, got {bad}")
  return T5Config(**fields, **{k: float(v) for k, v in floats.items()})


# ----------------------------------------------------------------------------- name mapping


def name_map(config: T5Config) -> dict[str, tuple[tuple[str, ...], bool, tuple[int, ...]]]:
  """HF name -> (our param path, transpose?, HF shape) for every tensor a T5 1.1 model has."""
  embed, inner, mlp = config.emb_dim, config.num_heads * config.head_dim, config.mlp_dim
  buckets_heads = (config.relative_attention_num_buckets, config.num_heads)
  out: dict[str, tuple[tuple[str, ...], bool, tuple[int, ...]]] = {
      "shared.weight": (("token_embedder", "embedding"), False, (config.vocab_size, embed)),
      "lm_head.weight": (("decoder", "logits_dense", "kernel"), True, (config.vocab_size, embed)),
      "encoder.final_layer_norm.weight": (("encoder", "encoder_norm", "scale"), False, (embed,)),
      "decoder.final_layer_norm.weight": (("decoder", "decoder_norm", "scale"), False, (embed,)),
      "encoder.block.0.layer.0.SelfAttention.relative_attention_bias.weight":
          (("encoder", "relpos_bias", "rel_embedding"), True, buckets_heads),
      "decoder.block.0.layer.0.SelfAttention.relative_attention_bias.weight":
          (("decoder", "relpos_bias", "rel_embedding"), True, buckets_heads),
  }

  def attention(hf_prefix: str, ours: tuple[str, ...]) -> None:
    for hf_name, our_name in (("q", "query"), ("k", "key"), ("v", "value")):
      out[f"{hf_prefix}.{hf_name}.weight"] = (ours + (our_name, "kernel"), True, (inner, embed))
    out[f"{hf_prefix}.o.weight"] = (ours + ("out", "kernel"), True, (embed, inner))

  def mlp_block(hf_prefix: str, ours: tuple[str, ...]) -> None:
    for name in ("wi_0", "wi_1"):
      out[f"{hf_prefix}.{name}.weight"] = (ours + (name, "kernel"), True, (mlp, embed))
    out[f"{hf_prefix}.wo.weight"] = (ours + ("wo", "kernel"), True, (embed, mlp))

  def norm(hf_name: str, ours: tuple[str, ...]) -> None:
    out[hf_name] = (ours + ("scale",), False, (embed,))

  for i in range(config.num_encoder_layers):
    hf, ours = f"encoder.block.{i}.layer", ("encoder", f"layers_{i}")
    norm(f"{hf}.0.layer_norm.weight", ours + ("pre_attention_layer_norm",))
    attention(f"{hf}.0.SelfAttention", ours + ("attention",))
    norm(f"{hf}.1.layer_norm.weight", ours + ("pre_mlp_layer_norm",))
    mlp_block(f"{hf}.1.DenseReluDense", ours + ("mlp",))
  for i in range(config.num_decoder_layers):
    hf, ours = f"decoder.block.{i}.layer", ("decoder", f"layers_{i}")
    norm(f"{hf}.0.layer_norm.weight", ours + ("pre_self_attention_layer_norm",))
    attention(f"{hf}.0.SelfAttention", ours + ("self_attention",))
    norm(f"{hf}.1.layer_norm.weight", ours + ("pre_cross_attention_layer_norm",))
    attention(f"{hf}.1.EncDecAttention", ours + ("encoder_decoder_attention",))
    norm(f"{hf}.2.layer_norm.weight", ours + ("pre_mlp_layer_norm",))
    mlp_block(f"{hf}.2.DenseReluDense", ours + ("mlp",))
  return out


def hf_to_params(tensors: Mapping[str, np.ndarray], config: T5Config, source: str = "checkpoint"
                 ) -> dict[str, Any]:
  """Flat HF state dict -> nested T5X-named tree; one error lists all missing/extra/misshapen."""
  mapping = name_map(config)
  if "lm_head.weight" not in tensors and "shared.weight" in tensors:
    raise HFCheckpointError(f"{source}: no lm_head.weight, i.e. tied input/output embeddings; "
                            f"{SUPPORTED_HINT}")
  missing = sorted(set(mapping) - set(tensors))
  unexpected = sorted(set(tensors) - set(mapping) - IGNORED_NAMES)
  misshapen = [f"{name}: {tuple(tensors[name].shape)}, expected {mapping[name][2]}"
               for name in sorted(set(mapping) & set(tensors))
               if tuple(tensors[name].shape) != mapping[name][2]]
  if missing or unexpected or misshapen:
    problems = []
    if missing:
      problems.append(f"missing tensors {missing}")
    if unexpected:
      problems.append(f"unexpected tensors {unexpected}")
    if misshapen:
      problems.append(f"shapes not matching config.json {misshapen}")
    raise HFCheckpointError(f"{source}: not a T5 1.1 checkpoint matching its config: "
                            + "; ".join(problems))
  params: dict[str, Any] = {}
  for name, (path, transpose, _) in mapping.items():
    array = np.asarray(tensors[name])
    _set_path(params, path, np.ascontiguousarray(array.T) if transpose else array)
  return params


def _set_path(tree: dict[str, Any], path: tuple[str, ...], value: Any) -> None:
  for key in path[:-1]:
    tree = tree.setdefault(key, {})
  tree[path[-1]] = value


def _map_tree(fn: Any, tree: Any) -> Any:
  if isinstance(tree, dict):
    return {k: _map_tree(fn, v) for k, v in tree.items()}
  return fn(tree)


def _as_dtype(dtype: Any, source: str) -> np.dtype:
  if isinstance(dtype, str) and dtype in ("bfloat16", "bf16"):
    return np.dtype(ml_dtypes.bfloat16)
  try:
    return np.dtype(dtype)
  except TypeError as e:
    raise HFCheckpointError(f"{source}: unknown dtype {dtype!r}") from e


# ----------------------------------------------------------------------------- weight files


def read_tensors(path: str | os.PathLike) -> dict[str, np.ndarray]:
  """Flat {HF name: array} from a .safetensors, torch zip .bin, or a shard index .json."""
  path = os.fspath(path)
  if path.endswith(".index.json"):
    return read_sharded(path)
  if path.endswith(".safetensors"):
    return read_safetensors(path)
  return read_torch_zip(path)


def read_sharded(index_path: str) -> dict[str, np.ndarray]:
  """Reads every shard named in an HF `*.index.json` weight map and checks it is complete."""
  try:
    with open(index_path, "r", encoding="utf-8") as f:
      weight_map = json.load(f)["weight_map"]
  except (OSError, UnicodeDecodeError, json.JSONDecodeError, KeyError, TypeError) as e:
    raise HFCheckpointError(f"{index_path}: not a readable shard index with a weight_map ({e})"
                            ) from e
  if not isinstance(weight_map, dict):
    raise HFCheckpointError(f"{index_path}: weight_map is not a JSON object")
  folder = os.path.dirname(index_path)
  tensors: dict[str, np.ndarray] = {}
  for shard in sorted(set(weight_map.values())):
    if not isinstance(shard, str) or os.path.basename(shard) != shard:
      raise HFCheckpointError(f"{index_path}: shard name {shard!r} is not a plain file name")
    shard_path = os.path.join(folder, shard)
    if not os.path.isfile(shard_path):
      raise HFCheckpointError(f"{index_path}: shard {shard_path} does not exist")
    part = read_tensors(shard_path)
    absent = sorted(n for n, s in weight_map.items() if s == shard and n not in part)
    if absent:
      raise HFCheckpointError(f"{shard_path}: lacks tensors the index assigns to it: {absent}")
    tensors.update(part)
  return tensors


def read_safetensors(path: str | os.PathLike) -> dict[str, np.ndarray]:
  """{name: array} from a safetensors file, any dtype (bf16/fp8 as ml_dtypes); arrays copied."""
  path = os.fspath(path)
  try:
    size = os.path.getsize(path)
    with open(path, "rb") as f:
      prefix = f.read(8)
      if len(prefix) < 8:
        raise HFCheckpointError(f"{path}: truncated safetensors file ({size} bytes, no header)")
      header_len = int.from_bytes(prefix, "little")
      if header_len > min(size - 8, MAX_SAFETENSORS_HEADER):
        raise HFCheckpointError(f"{path}: header length {header_len} exceeds the file "
                                f"({size} bytes); truncated or not a safetensors file")
      header_bytes = f.read(header_len)
  except OSError as e:
    raise HFCheckpointError(f"{path}: cannot read ({e})") from e
  try:
    header = json.loads(header_bytes.decode("utf-8"))
  except (UnicodeDecodeError, json.JSONDecodeError) as e:
    raise HFCheckpointError(f"{path}: safetensors header is not valid JSON ({e})") from e
  if not isinstance(header, dict):
    raise HFCheckpointError(f"{path}: safetensors header is not a JSON object")
  header.pop("__metadata__", None)
  data_start = 8 + header_len
  data_len = size - data_start
  specs = {name: _safetensors_spec(path, name, spec, data_len) for name, spec in header.items()}
  if not specs:
    return {}
  data = np.memmap(path, dtype=np.uint8, mode="r", offset=data_start, shape=(data_len,)
                   ) if data_len else np.zeros((0,), np.uint8)
  tensors = {name: np.array(data[begin:end].view(dtype).reshape(shape))
             for name, (dtype, shape, begin, end) in specs.items()}
  del data
  return tensors


def _safetensors_spec(path: str, name: str, spec: Any, data_len: int
                      ) -> tuple[np.dtype, tuple[int, ...], int, int]:
  """Validated (dtype, shape, begin, end) of one header entry."""
  if not isinstance(spec, dict):
    raise HFCheckpointError(f"{path}: header entry {name!r} is not an object")
  dtype_name, shape, offsets = spec.get("dtype"), spec.get("shape"), spec.get("data_offsets")
  if dtype_name not in SAFETENSORS_DTYPES:
    raise HFCheckpointError(f"{path}: tensor {name!r} has unsupported dtype {dtype_name!r}")
  if (not isinstance(shape, list) or not all(isinstance(d, int) and d >= 0 for d in shape)
      or not isinstance(offsets, list) or len(offsets) != 2
      or not all(isinstance(o, int) for o in offsets)):
    raise HFCheckpointError(f"{path}: tensor {name!r} has a malformed shape/data_offsets {spec}")
  dtype = SAFETENSORS_DTYPES[dtype_name]
  begin, end = offsets
  nbytes = math.prod(shape) * dtype.itemsize
  if not 0 <= begin <= end or end - begin != nbytes:
    raise HFCheckpointError(f"{path}: tensor {name!r} offsets {offsets} do not hold "
                            f"{dtype_name}{shape} ({nbytes} bytes)")
  if end > data_len:
    raise HFCheckpointError(f"{path}: tensor {name!r} ends at byte {end} of the data but the "
                            f"file holds only {data_len}; the file is truncated")
  return dtype, tuple(shape), begin, end


# ----------------------------------------------------------------------------- torch .bin


@dataclasses.dataclass(frozen=True, slots=True)
class _StorageType:
  """Stands in for `torch.<X>Storage` in the pickle: carries only the name and numpy dtype."""

  name: str
  dtype: np.dtype


def _strided(path: str, storage: Any, offset: Any, size: Any, stride: Any) -> np.ndarray:
  """A copy of storage[offset + sum(i_k * stride_k)] over the index grid `size`."""
  if not isinstance(storage, np.ndarray) or storage.ndim != 1:
    raise HFCheckpointError(f"{path}: tensor rebuilt from something that is not a storage")
  ints = lambda xs: isinstance(xs, (tuple, list)) and all(
      isinstance(x, int) and not isinstance(x, bool) for x in xs)
  if (not isinstance(offset, int) or not ints(size) or not ints(stride)
      or len(size) != len(stride)):
    raise HFCheckpointError(f"{path}: malformed tensor metadata offset={offset!r} "
                            f"size={size!r} stride={stride!r}")
  size, stride = tuple(size), tuple(stride)
  if any(d < 0 for d in size) or any(s < 0 for s in stride) or offset < 0:
    raise HFCheckpointError(f"{path}: negative tensor size/stride/offset {size} {stride} {offset}")
  if math.prod(size) == 0:
    return np.zeros(size, storage.dtype)
  last = offset + sum((d - 1) * s for d, s in zip(size, stride))
  if last >= storage.shape[0]:
    raise HFCheckpointError(f"{path}: tensor of size {size} stride {stride} at offset {offset} "
                            f"reads past its storage of {storage.shape[0]} elements")
  item = storage.dtype.itemsize
  view = np.lib.stride_tricks.as_strided(storage[offset:], shape=size,
                                         strides=tuple(s * item for s in stride), writeable=False)
  return np.array(view)


class _TorchUnpickler(pickle.Unpickler):
  """Unpickles a torch zip `data.pkl` into numpy arrays; refuses every other global."""

  def __init__(self, file: Any, archive: zipfile.ZipFile, prefix: str, path: str,
               byteorder: str):
    super().__init__(file, encoding="utf-8")
    self._archive, self._prefix, self._path, self._byteorder = archive, prefix, path, byteorder
    self._storages: dict[str, np.ndarray] = {}

  def find_class(self, module: str, name: str) -> Any:
    path = self._path
    if (module, name) == ("collections", "OrderedDict"):
      return collections.OrderedDict
    if module == "torch._utils" and name in ("_rebuild_tensor", "_rebuild_tensor_v2"):
      def rebuild(storage, offset, size, stride, *unused):
        return _strided(path, storage, offset, size, stride)
      return rebuild
    if (module, name) == ("torch._utils", "_rebuild_parameter"):
      def rebuild_parameter(data, *unused):
        if not isinstance(data, np.ndarray):
          raise HFCheckpointError(f"{path}: parameter rebuilt from a non-tensor")
        return data
      return rebuild_parameter
    if module == "torch" and name in TORCH_STORAGE_DTYPES:
      return _StorageType(name, TORCH_STORAGE_DTYPES[name])
    raise HFCheckpointError(f"refusing to unpickle {module}.{name} from {path}: only "
                            "tensors in (Ordered)dicts are allowed (convert it to safetensors)")

  def persistent_load(self, pid: Any) -> np.ndarray:
    if (not isinstance(pid, tuple) or len(pid) != 5 or pid[0] != "storage"
        or not isinstance(pid[1], _StorageType) or not isinstance(pid[2], str)
        or not isinstance(pid[4], int) or pid[4] < 0):
      raise HFCheckpointError(f"{self._path}: unsupported persistent id {pid!r} in the pickle")
    _, storage_type, key, _, numel = pid
    if key not in self._storages:
      member = f"{self._prefix}data/{key}"
      try:
        raw = self._archive.read(member)
      except KeyError as e:
        raise HFCheckpointError(f"{self._path}: storage {member} missing from the archive") from e
      dtype = TORCH_STORAGE_DTYPES[storage_type.name]
      if len(raw) < numel * dtype.itemsize:
        raise HFCheckpointError(f"{self._path}: storage {member} has {len(raw)} bytes, fewer "
                                f"than {numel} x {storage_type!r}; the file is truncated")
      array = np.frombuffer(raw, dtype=dtype, count=numel)
      if self._byteorder != sys.byteorder and dtype.itemsize > 1:
        array = array.byteswap()
      self._storages[key] = array
    storage = self._storages[key]
    if storage.dtype != TORCH_STORAGE_DTYPES[storage_type.name]:
      raise HFCheckpointError(f"{self._path}: storage {key} used as two dtypes")
    return storage


def read_torch_zip(path: str | os.PathLike) -> dict[str, np.ndarray]:
  """{name: array} from a `torch.save` zip archive, without running any pickled code."""
  path = os.fspath(path)
  if not os.path.isfile(path):
    raise HFCheckpointError(f"{path}: no such file")
  if not zipfile.is_zipfile(path):
    with open(path, "rb") as f:
      head = f.read(2)
    kind = ("a pickle (legacy torch.save format or a plain pickle)" if head[:1] == b"\x80"
            else "not a zip archive")
    raise HFCheckpointError(f"{path}: {kind}; only torch's zip format is read, and it is never "
                            "unpickled freely. Convert the checkpoint to safetensors.")
  try:
    with zipfile.ZipFile(path) as archive:
      pickles = [n for n in archive.namelist() if n.endswith("/data.pkl") and n.count("/") == 1]
      if len(pickles) != 1:
        raise HFCheckpointError(f"{path}: expected one <archive>/data.pkl in the zip, found "
                                f"{pickles}; not a torch checkpoint")
      prefix = pickles[0][: -len("data.pkl")]
      byteorder = "little"
      if f"{prefix}byteorder" in archive.namelist():
        byteorder = archive.read(f"{prefix}byteorder").decode("ascii", "replace").strip()
        if byteorder not in ("little", "big"):
          raise HFCheckpointError(f"{path}: unknown byteorder {byteorder!r}")
      with archive.open(pickles[0]) as pkl:
        result = _TorchUnpickler(pkl, archive, prefix, path, byteorder).load()
  except HFCheckpointError:
    raise
  except Exception as e:  # zip/pickle corruption of any kind: name the file, never pass through.
    raise HFCheckpointError(f"{path}: cannot read the torch archive ({type(e).__name__}: {e})"
                            ) from e
  return _check_state_dict(path, result)


def _check_state_dict(path: str, result: Any) -> dict[str, np.ndarray]:
  if not isinstance(result, Mapping):
    raise HFCheckpointError(f"{path}: holds a {type(result).__name__}, not a state dict")
  bad = [k for k, v in result.items() if not isinstance(k, str) or not isinstance(v, np.ndarray)]
  if bad:
    raise HFCheckpointError(f"{path}: state dict entries that are not named tensors: {bad[:10]}")
  return dict(result)

