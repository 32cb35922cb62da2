"""Reading and writing T5X checkpoints without T5X.

A T5X checkpoint directory (`checkpoint_<step>/`) holds a msgpack file named `checkpoint`
(flax serialization of `{'version': 3, 'optimizer': {'target': params, 'state': {'step',
'param_states'}}}`) in which small arrays are inline (msgpack ExtType) and large ones are
replaced by a tensorstore spec pointing at a zarr directory beside the file, named by the
leaf's dotted path (`target.encoder.layers_0.attention.query.kernel`).

Layouts read: `version` 1-3 with the `optimizer` wrapper, and the unversioned one with
`target`/`state` at the top level. Specs read: `kvstore: {driver: file|gfile|gcs, path}`
(path relative to the checkpoint dir, as T5X writes it) and the tensorstore<0.1.14 form
with a top-level `path`. Every problem with the input raises `CheckpointError`.
"""

from __future__ import annotations

import concurrent.futures
import difflib
import json
import math
import os
import posixpath
import re
import shutil
import uuid
from dataclasses import dataclass
from typing import Any, Iterator, Mapping

import ml_dtypes  # noqa: F401  (registers bfloat16 with numpy)
import msgpack
import numpy as np
import tensorstore as ts

VERSION = 3
CHECKPOINT_FILE = "checkpoint"
DEFAULT_INLINE_THRESHOLD = 2**14
COMPRESSIONS = ("gzip", "zstd", "none")

_EXT_NDARRAY, _EXT_NATIVE_COMPLEX, _EXT_NPSCALAR = 1, 2, 3
_CHUNKED_ARRAY_KEY = "__msgpack_chunked_array__"
_MAX_INLINE_BYTES = 2**30  # flax chunks msgpack leaves above this; we send them to zarr
_TARGET_CHUNK_BYTES = 64 * 2**20  # T5X's desired zarr chunk size
_DUMMY_BUCKET = "t5x-dummy-bucket"
_LOCAL_DRIVERS = ("file", "gfile")
_WRITABLE_DTYPES = frozenset({
    "bool", "int8", "int16", "int32", "int64", "uint8", "uint16", "uint32", "uint64",
    "float16", "bfloat16", "float32", "float64", "complex64", "complex128"})
_GCS_RETRIES = {"max_retries": 3, "initial_delay": "0.1s", "max_delay": "1s"}
_READ_THREADS = 16


class CheckpointError(ValueError):
  """A checkpoint that cannot be read or written; the message names the file and problem."""


# ----------------------------------------------------------------------------- lazy arrays


@dataclass(frozen=True)
class _ZarrRef:
  """Where one zarr-backed variable lives: `kvstore` is a resolved tensorstore kvstore spec."""

  name: str  # slash path inside the checkpoint, e.g. "target/token_embedder/embedding"
  checkpoint_file: str
  kvstore: Mapping[str, Any]
  stored_shape: tuple[int, ...] | None
  stored_dtype: np.dtype | None

  @property
  def where(self) -> str:
    if self.kvstore["driver"] == "gcs":
      return f"gs://{self.kvstore['bucket']}/{self.kvstore['path']}"
    return str(self.kvstore["path"])


class LazyArray:
  """A checkpoint leaf not read yet: `.shape`, `.dtype` (after any cast), `.load()`.

  Zarr-backed leaves touch no chunk data until `load()`; inline leaves hold their array.
  """

  __slots__ = ("name", "shape", "dtype", "_source", "_cast_to")

  def __init__(self, name: str, source: np.ndarray | _ZarrRef, shape: tuple[int, ...],
               stored_dtype: np.dtype, cast_to: np.dtype | None):
    self.name = name
    self.shape = tuple(int(d) for d in shape)
    self._source = source
    self._cast_to = cast_to if cast_to is not None and _is_floating(stored_dtype) else None
    self.dtype = self._cast_to if self._cast_to is not None else np.dtype(stored_dtype)

  @property
  def ndim(self) -> int:
    return len(self.shape)

  @property
  def size(self) -> int:
    return math.prod(self.shape)

  @property
  def is_inline(self) -> bool:
    """True when the value sits in the msgpack file rather than in a zarr directory."""
    return isinstance(self._source, np.ndarray)

  def load(self) -> np.ndarray:
    """Reads the array [shape] (cast to `dtype`)."""
    array = self._source if self.is_inline else _read_zarr(self._source)
    return _cast(array, self._cast_to)

  def __array__(self, dtype=None, copy=None) -> np.ndarray:
    array = self.load()
    return array if dtype is None else array.astype(dtype)

  def __repr__(self) -> str:
    where = "inline" if self.is_inline else self._source.where
    return f"LazyArray({self.name!r}, shape={self.shape}, dtype={self.dtype}, {where})"


# ----------------------------------------------------------------------------- public API


def read_checkpoint(path: str | os.PathLike, *, subtree: str | None = "target", dtype=None,
                    lazy: bool = False) -> dict:
  """Reads a T5X checkpoint into a nested dict of np.ndarray (or `LazyArray` if `lazy`).

  `path` is the checkpoint dir or its `checkpoint` file. `subtree="target"` gives the params;
  None gives the normalized whole `{'target': ..., 'state': {'step', 'param_states', ...}}`;
  any other slash path selects inside that. `dtype` casts floating arrays (e.g. "bfloat16").
  """
  checkpoint_file, base_dir = _locate(path)
  cast_to = _as_float_dtype(dtype, checkpoint_file)
  state = _normalized_contents(checkpoint_file)
  node = _select(state, subtree, checkpoint_file)
  prefix = "" if subtree is None else subtree.strip("/")
  tree = _lazy_tree(node, prefix, checkpoint_file, base_dir, cast_to)
  return tree if lazy else _materialize(tree)


def read_variable(path: str | os.PathLike, name: str, *, dtype=None) -> np.ndarray:
  """Reads one variable [its shape] by slash path relative to `target`, e.g.
  "encoder/prompt/prompt/prompt"; only that variable's zarr is read."""
  checkpoint_file, base_dir = _locate(path)
  cast_to = _as_float_dtype(dtype, checkpoint_file)
  state = _normalized_contents(checkpoint_file)
  target = state["target"]
  key = name.strip("/")
  node = _find(target, key)
  if node is None and key.startswith("target/"):
    key = key[len("target/"):]
    node = _find(target, key)
  if node is None:
    names = [n for n, _ in _iter_leaves(target, "")]
    close = difflib.get_close_matches(key, names, n=5, cutoff=0.5)
    hint = f"; close names: {close}" if close else f"; it has {len(names)} variables"
    raise CheckpointError(f"{checkpoint_file}: no variable {name!r} under target{hint}")
  if isinstance(node, dict) and not _is_spec(node):
    raise CheckpointError(f"{checkpoint_file}: {name!r} is a group, not a variable; "
                          f"it holds {sorted(node)[:10]}")
  leaf = _lazy_tree(node, f"target/{key}", checkpoint_file, base_dir, cast_to)
  return leaf.load() if isinstance(leaf, LazyArray) else np.asarray(leaf)


def read_step(path: str | os.PathLike) -> int | None:
  """The training step in the checkpoint's optimizer state (`state/step`), None if absent."""
  checkpoint_file, base_dir = _locate(path)
  state = _normalized_contents(checkpoint_file)
  opt_state = state.get("state")
  if not isinstance(opt_state, dict) or opt_state.get("step") is None:
    return None
  step = _lazy_tree(opt_state["step"], "state/step", checkpoint_file, base_dir, None)
  value = np.asarray(step.load() if isinstance(step, LazyArray) else step)
  if value.size != 1 or not np.issubdtype(value.dtype, np.integer):
    raise CheckpointError(f"{checkpoint_file}: state/step is not an integer scalar "
                          f"(shape {value.shape}, dtype {value.dtype})")
  return int(value.reshape(()))


def write_checkpoint(path: str | os.PathLike, params: Mapping, *, step: int,
                     optimizer_state: Mapping | None = None,
                     inline_threshold: int = DEFAULT_INLINE_THRESHOLD,
                     compression: str = "gzip", overwrite: bool = False) -> None:
  """Writes a T5X checkpoint dir: msgpack `checkpoint` + one zarr dir per large array.

  Layout as T5X writes it: `{'version': 3, 'optimizer': {'target': params, 'state':
  {'step': int32 scalar, **optimizer_state}}}`; arrays with >= `inline_threshold` elements
  go to zarr dirs named by dotted path (`target.encoder...`), smaller ones inline.
  `optimizer_state` is T5X's `state` dict (e.g. `{'param_states': ...}`; a `step` in it
  must equal `step`). The write is atomic: built beside `path`, then renamed into place.
  """
  dest = os.path.abspath(os.fspath(path))
  compressor = _compressor(compression, dest)
  if _occupied(dest) and not overwrite:
    raise CheckpointError(f"{dest}: already exists; pass overwrite=True to replace it")
  if not isinstance(params, Mapping):
    raise CheckpointError(f"{dest}: params must be a nested dict of arrays, got "
                          f"{type(params).__name__}")
  optimizer = {"state": _state_for_write(optimizer_state, step, dest), "target": params}
  _validate_for_write(optimizer, "", dest)
  parent = os.path.dirname(dest)
  tmp = os.path.join(parent, f".{os.path.basename(dest)}.tmp-{uuid.uuid4().hex[:12]}")
  try:
    os.makedirs(parent, exist_ok=True)
    os.mkdir(tmp)
  except OSError as e:
    raise CheckpointError(f"{dest}: cannot create the checkpoint directory ({e})") from None
  try:
    encoded = _encode_tree(optimizer, "optimizer", tmp, inline_threshold, compressor, dest)
    blob = msgpack.packb({"version": VERSION, "optimizer": encoded}, use_bin_type=True)
    with open(os.path.join(tmp, CHECKPOINT_FILE), "wb") as f:
      f.write(blob)
      f.flush()
      os.fsync(f.fileno())
    _move_into_place(tmp, dest)
  except OSError as e:
    shutil.rmtree(tmp, ignore_errors=True)
    raise CheckpointError(f"{dest}: write failed ({e})") from None
  except BaseException:
    shutil.rmtree(tmp, ignore_errors=True)
    raise


# ----------------------------------------------------------------------------- locating / decoding


def _locate(path: str | os.PathLike) -> tuple[str, str]:
  """(msgpack file, directory its relative zarr paths start from) for a dir or file path."""
  p = os.fspath(path)
  if _is_gcs_path(p):
    p = p.rstrip("/")
    if p.endswith("/" + CHECKPOINT_FILE):
      return p, p[: -len(CHECKPOINT_FILE) - 1]
    return f"{p}/{CHECKPOINT_FILE}", p
  p = os.path.abspath(p)
  if not os.path.exists(p):
    raise CheckpointError(f"{p}: no such checkpoint file or directory")
  if os.path.isfile(p):
    return p, os.path.dirname(p)
  for candidate in (os.path.join(p, CHECKPOINT_FILE), os.path.join(p, "state", CHECKPOINT_FILE)):
    if os.path.isfile(candidate):
      return candidate, os.path.dirname(candidate)
  steps = sorted(d for d in os.listdir(p) if re.fullmatch(r"checkpoint_\d+", d))
  hint = f"; it holds checkpoint dirs {steps[-5:]}, pass one of those" if steps else ""
  raise CheckpointError(f"{os.path.join(p, CHECKPOINT_FILE)}: missing; "
                        f"{p} is not a T5X checkpoint directory{hint}")


def _read_bytes(checkpoint_file: str) -> bytes:
  if _is_gcs_path(checkpoint_file):
    bucket, key = _split_gcs(checkpoint_file)
    try:
      store = ts.KvStore.open({"driver": "gcs", "bucket": bucket},
                              context=_gcs_context()).result()
      result = store.read(key).result()
    except Exception as e:  # tensorstore raises ValueError/OSError variants
      raise CheckpointError(f"{checkpoint_file}: gcs access failed ({_short(e)})") from None
    if result.state != "value":
      raise CheckpointError(f"{checkpoint_file}: missing (gcs object not found)")
    return bytes(result.value)
  try:
    with open(checkpoint_file, "rb") as f:
      return f.read()
  except OSError as e:
    raise CheckpointError(f"{checkpoint_file}: cannot read ({e.strerror or e})") from None


def _decode(raw: bytes, checkpoint_file: str) -> Any:
  """msgpack bytes -> python tree with np.ndarray leaves for inline arrays."""
  if not raw:
    raise CheckpointError(f"{checkpoint_file}: empty file, not a T5X msgpack checkpoint")
  if raw[:1] == b"\x80" and len(raw) > 1 and 2 <= raw[1] <= 5:
    raise CheckpointError(f"{checkpoint_file}: is a Python pickle (protocol {raw[1]}); pickles "
                          "are refused (loading one can run arbitrary code)")
  if raw[:4] == b"PK\x03\x04":
    raise CheckpointError(f"{checkpoint_file}: is a zip archive (a PyTorch file?), "
                          "not a T5X msgpack checkpoint")
  try:
    contents = msgpack.unpackb(raw, ext_hook=_ext_hook, raw=False, strict_map_key=False)
  except Exception as e:  # msgpack raises ValueError, ExtraData, FormatError, StackError...
    raise CheckpointError(f"{checkpoint_file}: not a valid msgpack file "
                          f"(corrupt or truncated: {_short(e)})") from None
  return contents


def _ext_hook(code: int, data: bytes) -> Any:
  """Flax's msgpack extension types: ndarray, native complex, numpy scalar."""
  if code == _EXT_NDARRAY:
    return _decode_ndarray(data)
  if code == _EXT_NPSCALAR:
    return _decode_ndarray(data)[()]
  if code == _EXT_NATIVE_COMPLEX:
    real, imag = msgpack.unpackb(data)
    return complex(real, imag)
  raise ValueError(f"unknown msgpack extension type {code}")


def _decode_ndarray(data: bytes) -> np.ndarray:
  shape, dtype_name, buffer = msgpack.unpackb(data, raw=True)
  dtype = np.dtype(dtype_name.decode() if isinstance(dtype_name, bytes) else dtype_name)
  return np.frombuffer(buffer, dtype=dtype).reshape(shape).copy()


def _normalized_contents(checkpoint_file: str) -> dict:
  """The optimizer state dict `{'target': ..., 'state': ..., ...}` whatever the layout."""
  contents = _decode(_read_bytes(checkpoint_file), checkpoint_file)
  if not isinstance(contents, dict):
    raise CheckpointError(f"{checkpoint_file}: msgpack holds a {type(contents).__name__}, "
                          "not a T5X checkpoint dict")
  state = contents.get("optimizer") if isinstance(contents.get("optimizer"), dict) else contents
  if not isinstance(state.get("target"), dict):
    raise CheckpointError(f"{checkpoint_file}: not a T5X checkpoint: no 'optimizer/target' or "
                          f"'target' dict (top-level keys {sorted(map(str, contents))})")
  return _unchunk(state)


def _unchunk(node: Any) -> Any:
  """Rebuilds arrays flax split into `__msgpack_chunked_array__` dicts."""
  if not isinstance(node, dict):
    return node
  if _CHUNKED_ARRAY_KEY in node:
    shape = tuple(node["shape"][str(i)] for i in range(len(node["shape"])))
    chunks = [node["chunks"][str(i)] for i in range(len(node["chunks"]))]
    return np.concatenate([c.reshape(-1) for c in chunks]).reshape(shape)
  return {k: _unchunk(v) for k, v in node.items()}


# ----------------------------------------------------------------------------- tree walking


def _is_spec(node: Any) -> bool:
  """A tensorstore spec dict standing in for an array."""
  return (isinstance(node, dict) and isinstance(node.get("driver"), str)
          and ("kvstore" in node or "path" in node))


def _find(tree: dict, key: str) -> Any:
  node: Any = tree
  for part in key.split("/"):
    if not isinstance(node, dict) or _is_spec(node) or part not in node:
      return None
    node = node[part]
  return node


def _iter_leaves(node: Any, prefix: str) -> Iterator[tuple[str, Any]]:
  if isinstance(node, dict) and not _is_spec(node) and node:
    for k, v in node.items():
      yield from _iter_leaves(v, f"{prefix}/{k}" if prefix else str(k))
  else:
    yield prefix, node


def _select(state: dict, subtree: str | None, checkpoint_file: str) -> Any:
  if subtree is None:
    return state
  key = subtree.strip("/")
  node = _find(state, key) if key else state
  if node is None:
    names = [n for n, _ in _iter_leaves(state, "")]
    groups = sorted({n.rsplit("/", i)[0] for n in names for i in range(1, n.count("/") + 1)})
    close = difflib.get_close_matches(key, groups + names, n=5, cutoff=0.5)
    hint = f"; close names: {close}" if close else f"; top-level keys {sorted(state)}"
    raise CheckpointError(f"{checkpoint_file}: no subtree {subtree!r}{hint}")
  return node


def _lazy_tree(node: Any, name: str, checkpoint_file: str, base_dir: str,
               cast_to: np.dtype | None) -> Any:
  """Replaces array leaves and specs by `LazyArray`s; other leaves (None, ints) stay."""
  if _is_spec(node):
    ref = _zarr_ref(node, name, checkpoint_file, base_dir)
    shape, stored = ref.stored_shape, ref.stored_dtype
    if shape is None or stored is None:
      shape, stored = _zarr_shape_dtype(ref)
    return LazyArray(name, ref, shape, stored, cast_to)
  if isinstance(node, dict):
    return {k: _lazy_tree(v, f"{name}/{k}" if name else str(k), checkpoint_file, base_dir,
                          cast_to) for k, v in node.items()}
  if isinstance(node, np.ndarray):
    return LazyArray(name, node, node.shape, node.dtype, cast_to)
  if isinstance(node, np.generic):
    return _cast(np.asarray(node), cast_to)[()]
  return node


def _materialize(tree: Any) -> Any:
  """Loads every `LazyArray` in the tree (zarr reads run concurrently)."""
  lazies = [leaf for _, leaf in _iter_leaves(tree, "") if isinstance(leaf, LazyArray)]
  zarr_backed = [leaf for leaf in lazies if not leaf.is_inline]
  loaded: dict[int, np.ndarray] = {}
  if zarr_backed:
    with concurrent.futures.ThreadPoolExecutor(min(_READ_THREADS, len(zarr_backed))) as pool:
      for leaf, array in zip(zarr_backed, pool.map(LazyArray.load, zarr_backed)):
        loaded[id(leaf)] = array

  def replace(node: Any) -> Any:
    if isinstance(node, LazyArray):
      return loaded[id(node)] if id(node) in loaded else node.load()
    if isinstance(node, dict):
      return {k: replace(v) for k, v in node.items()}
    return node

  return replace(tree)


# ----------------------------------------------------------------------------- zarr reading


def _zarr_ref(spec: dict, name: str, checkpoint_file: str, base_dir: str) -> _ZarrRef:
  """Resolves a spec's (relative) location against the checkpoint dir."""
  if spec["driver"] != "zarr":
    raise CheckpointError(f"{checkpoint_file}: variable {name}: unsupported tensorstore "
                          f"driver {spec['driver']!r} (T5X checkpoints use 'zarr')")
  kvstore = spec.get("kvstore", {"driver": "file"})
  if isinstance(kvstore, str):  # URL form, e.g. "file:///ckpt/target.x"
    scheme, _, rest = kvstore.partition("://")
    kvstore = {"driver": scheme, "path": rest}
  if not isinstance(kvstore, dict) or not isinstance(kvstore.get("driver", "file"), str):
    raise CheckpointError(f"{checkpoint_file}: variable {name}: malformed kvstore {kvstore!r}")
  driver = kvstore.get("driver", "file")
  rel = posixpath.join(str(kvstore.get("path", "")), str(spec.get("path", ""))).rstrip("/")
  if not rel:
    raise CheckpointError(f"{checkpoint_file}: variable {name}: spec has no path ({spec!r})")
  if driver not in _LOCAL_DRIVERS + ("gcs",):
    raise CheckpointError(f"{checkpoint_file}: variable {name}: unsupported kvstore driver "
                          f"{driver!r} (supported: file, gfile, gcs)")
  if _is_gcs_path(base_dir):
    bucket, prefix = _split_gcs(base_dir)
    resolved = {"driver": "gcs", "bucket": bucket, "path": posixpath.join(prefix, rel) + "/"}
  else:
    resolved = {"driver": "file", "path": _local_zarr_dir(rel, base_dir)}
    if driver == "gcs" and not os.path.isdir(resolved["path"]):
      bucket = kvstore.get("bucket")
      if bucket and bucket != _DUMMY_BUCKET:
        resolved = {"driver": "gcs", "bucket": bucket, "path": rel.lstrip("/") + "/"}
  metadata = spec.get("metadata") if isinstance(spec.get("metadata"), dict) else {}
  shape = metadata.get("shape")
  return _ZarrRef(name=name, checkpoint_file=checkpoint_file, kvstore=resolved,
                  stored_shape=tuple(shape) if isinstance(shape, list) else None,
                  stored_dtype=_zarr_dtype(metadata.get("dtype") or spec.get("dtype")))


def _local_zarr_dir(rel: str, base_dir: str) -> str:
  """Relative paths start at the checkpoint dir; an absolute one that moved is looked up there."""
  if not os.path.isabs(rel):
    return os.path.join(base_dir, rel)
  if os.path.isdir(rel):
    return rel
  return os.path.join(base_dir, os.path.basename(rel))


def _zarr_dtype(name: Any) -> np.dtype | None:
  if not isinstance(name, str):
    return None
  try:
    return np.dtype(name)
  except TypeError:
    return None


def _zarr_shape_dtype(ref: _ZarrRef) -> tuple[tuple[int, ...], np.dtype]:
  """Shape and dtype from `.zarray` (only used when the msgpack spec lacks them)."""
  if ref.kvstore["driver"] == "file":
    meta = _zarray(ref)
    dtype = _zarr_dtype(meta.get("dtype"))
    if dtype is None:
      raise CheckpointError(f"{ref.checkpoint_file}: variable {ref.name}: unsupported zarr "
                            f"dtype {meta.get('dtype')!r} in {ref.where}")
    return tuple(meta["shape"]), dtype
  store = _open(ref)
  return tuple(store.shape), np.dtype(store.dtype.numpy_dtype)


def _zarray(ref: _ZarrRef) -> dict:
  path = os.path.join(ref.kvstore["path"], ".zarray")
  if not os.path.isdir(ref.kvstore["path"]):
    raise CheckpointError(f"{ref.checkpoint_file}: variable {ref.name}: zarr directory "
                          f"{ref.where} is missing")
  try:
    with open(path) as f:
      meta = json.load(f)
  except FileNotFoundError:
    raise CheckpointError(f"{ref.checkpoint_file}: variable {ref.name}: {path} is missing "
                          "(not a zarr array directory)") from None
  except (OSError, ValueError) as e:
    raise CheckpointError(f"{ref.checkpoint_file}: variable {ref.name}: unreadable zarr "
                          f"metadata {path} ({e})") from None
  if not isinstance(meta, dict) or not isinstance(meta.get("shape"), list):
    raise CheckpointError(f"{ref.checkpoint_file}: variable {ref.name}: malformed zarr "
                          f"metadata {path}")
  return meta


def _check_chunks(ref: _ZarrRef, meta: dict) -> None:
  """With no fill value every chunk must exist (tensorstore would silently read zeros)."""
  if meta.get("fill_value") is not None:
    return
  shape, chunks = meta["shape"], meta.get("chunks", meta["shape"])
  sep = meta.get("dimension_separator", ".")
  grid = [range(math.ceil(s / c)) if c else range(1) for s, c in zip(shape, chunks)]
  directory = ref.kvstore["path"]
  present = set(os.listdir(directory)) if sep == "." else None
  for index in np.ndindex(*[len(g) for g in grid]) if grid else [()]:
    key = sep.join(map(str, index)) if index else "0"
    found = key in present if present is not None else os.path.isfile(os.path.join(directory, key))
    if not found:
      raise CheckpointError(f"{ref.checkpoint_file}: variable {ref.name}: zarr chunk "
                            f"{os.path.join(directory, key)} is missing")


def _open(ref: _ZarrRef) -> Any:
  context = _gcs_context() if ref.kvstore["driver"] == "gcs" else None
  try:
    return ts.open({"driver": "zarr", "kvstore": dict(ref.kvstore)}, read=True,
                   context=context).result()
  except Exception as e:
    raise _ts_error(ref, e) from None


def _read_zarr(ref: _ZarrRef) -> np.ndarray:
  """Reads a whole zarr array [shape], checking the chunks are all there."""
  if ref.kvstore["driver"] == "file":
    _check_chunks(ref, _zarray(ref))
  store = _open(ref)
  if ref.stored_shape is not None and tuple(store.shape) != ref.stored_shape:
    raise CheckpointError(f"{ref.checkpoint_file}: variable {ref.name}: zarr {ref.where} has "
                          f"shape {tuple(store.shape)} but the checkpoint says {ref.stored_shape}")
  try:
    return np.asarray(store.read().result())
  except Exception as e:
    raise _ts_error(ref, e) from None


def _ts_error(ref: _ZarrRef, e: Exception) -> CheckpointError:
  if ref.kvstore["driver"] == "gcs":
    return CheckpointError(f"{ref.checkpoint_file}: variable {ref.name}: gcs access failed "
                           f"for {ref.where} ({_short(e)})")
  return CheckpointError(f"{ref.checkpoint_file}: variable {ref.name}: cannot read zarr "
                         f"{ref.where} ({_short(e)})")


def _gcs_context() -> Any:
  return ts.Context({"gcs_request_retries": _GCS_RETRIES})


def _is_gcs_path(path: str) -> bool:
  return path.startswith("gs://")


def _split_gcs(path: str) -> tuple[str, str]:
  bucket, _, key = path[len("gs://"):].partition("/")
  return bucket, key.rstrip("/")


def _short(e: BaseException) -> str:
  """First line of an error, without tensorstore's echoed spec."""
  text = str(e).split("[tensorstore_spec=")[0].strip().splitlines()
  line = text[0] if text else type(e).__name__
  return line if len(line) <= 300 else line[:297] + "..."


# ----------------------------------------------------------------------------- dtypes


def _is_floating(dtype: np.dtype) -> bool:
  dtype = np.dtype(dtype)
  return dtype.kind == "f" or (dtype.kind == "V" and dtype.name.startswith(
      ("bfloat16", "float8", "float6", "float4")))


def _as_float_dtype(dtype: Any, checkpoint_file: str) -> np.dtype | None:
  if dtype is None:
    return None
  try:
    resolved = np.dtype(dtype)
  except TypeError:
    raise CheckpointError(f"{checkpoint_file}: unknown dtype {dtype!r}") from None
  if not _is_floating(resolved):
    raise CheckpointError(f"{checkpoint_file}: dtype {dtype!r} is not a floating dtype; "
                          "only floating arrays are cast")
  return resolved


def _cast(array: np.ndarray, dtype: np.dtype | None) -> np.ndarray:
  if dtype is None or array.dtype == dtype or not _is_floating(array.dtype):
    return array
  return array.astype(dtype)


# ----------------------------------------------------------------------------- writing


def _occupied(dest: str) -> bool:
  """Anything at `dest` other than an empty directory."""
  if os.path.isdir(dest) and not os.path.islink(dest):
    return bool(os.listdir(dest))
  return os.path.lexists(dest)


def _compressor(compression: str | None, dest: str) -> dict | None:
  if compression in (None, "none"):
    return None
  if compression == "gzip":
    return {"id": "gzip", "level": 1}
  if compression == "zstd":
    return {"id": "zstd", "level": 3}
  raise CheckpointError(f"{dest}: unknown compression {compression!r}; use one of {COMPRESSIONS}")


def _state_for_write(optimizer_state: Mapping | None, step: int, dest: str) -> dict:
  """T5X's `state` dict: the given optimizer state plus `step` as an int32 scalar."""
  if isinstance(step, bool) or not isinstance(step, (int, np.integer)) or not 0 <= step < 2**31:
    raise CheckpointError(f"{dest}: step must be an int in [0, 2**31), got {step!r}")
  if optimizer_state is not None and not isinstance(optimizer_state, Mapping):
    raise CheckpointError(f"{dest}: optimizer_state must be a dict, got "
                          f"{type(optimizer_state).__name__}")
  state = dict(optimizer_state or {})
  if "step" in state:
    given = state["step"].load() if isinstance(state["step"], LazyArray) else state["step"]
    if np.asarray(given).size != 1 or int(np.asarray(given).reshape(())) != int(step):
      raise CheckpointError(f"{dest}: optimizer_state['step'] ({given!r}) differs from "
                            f"step={step}")
  state["step"] = np.asarray(step, np.int32)
  return state


def _validate_for_write(node: Any, name: str, dest: str) -> None:
  """Checks keys and leaf dtypes before anything touches the disk."""
  if isinstance(node, Mapping):
    for k, v in node.items():
      if not isinstance(k, str) or not k or "/" in k or "." in k:
        raise CheckpointError(f"{dest}: key {k!r} under {name or 'the root'!r} must be a "
                              "non-empty str without '/' or '.' (zarr dirs are named by "
                              "dotted path)")
      _validate_for_write(v, f"{name}/{k}" if name else k, dest)
    return
  if node is None or isinstance(node, LazyArray):
    return
  dtype = getattr(node, "dtype", None)
  if dtype is None:
    try:
      dtype = np.asarray(node).dtype
    except Exception as e:
      raise CheckpointError(f"{dest}: variable {name}: not an array ({e})") from None
  if np.dtype(dtype).name not in _WRITABLE_DTYPES:
    raise CheckpointError(f"{dest}: variable {name}: unsupported dtype {dtype} "
                          f"(supported: {sorted(_WRITABLE_DTYPES)})")


def _encode_tree(node: Any, name: str, tmp: str, inline_threshold: int,
                 compressor: dict | None, dest: str) -> Any:
  """Writes large leaves to zarr dirs in `tmp`; returns the msgpack-ready tree."""
  if isinstance(node, Mapping):
    return {k: _encode_tree(v, f"{name}/{k}" if name else k, tmp, inline_threshold,
                            compressor, dest) for k, v in sorted(node.items())}
  if node is None:
    return None
  array = node.load() if isinstance(node, LazyArray) else np.asarray(node)
  array = array.astype(array.dtype.newbyteorder("="), copy=False)
  to_zarr = (array.ndim > 0 and array.size > 0 and name != "optimizer/state/step"
             and (array.size >= inline_threshold or array.nbytes > _MAX_INLINE_BYTES))
  if not to_zarr:
    return msgpack.ExtType(_EXT_NDARRAY, _encode_ndarray(array))
  zarr_name = name.removeprefix("optimizer/").replace("/", ".")
  return _write_zarr(array, zarr_name, tmp, compressor, dest)


def _encode_ndarray(array: np.ndarray) -> bytes:
  """Flax's ndarray ext payload: msgpack (shape, dtype name, C-order bytes)."""
  return msgpack.packb((list(array.shape), array.dtype.name, array.tobytes("C")),
                       use_bin_type=True)


def _chunk_shape(shape: tuple[int, ...], itemsize: int,
                 target_bytes: int = _TARGET_CHUNK_BYTES) -> list[int]:
  """Halves the largest dimension until a chunk holds at most `target_bytes`."""
  chunks = list(shape)
  while math.prod(chunks) * itemsize > target_bytes and max(chunks) > 1:
    i = chunks.index(max(chunks))
    chunks[i] = (chunks[i] + 1) // 2
  return chunks


def _write_zarr(array: np.ndarray, zarr_name: str, tmp: str, compressor: dict | None,
                dest: str) -> dict:
  """Writes `array` to `tmp/zarr_name`; returns the relative spec T5X stores in msgpack."""
  metadata = {"chunks": _chunk_shape(array.shape, array.dtype.itemsize),
              "compressor": compressor, "shape": list(array.shape)}
  spec = {"driver": "zarr", "dtype": array.dtype.name,
          "kvstore": {"driver": "file", "path": os.path.join(tmp, zarr_name)},
          "metadata": metadata}
  try:
    store = ts.open(spec, create=True, open=False).result()
    store.write(array).result()
    with open(os.path.join(tmp, zarr_name, ".zarray")) as f:
      zarr_dtype = json.load(f)["dtype"]
  except Exception as e:
    raise CheckpointError(f"{dest}: variable {zarr_name}: zarr write failed "
                          f"({_short(e)})") from None
  return {"driver": "zarr", "dtype": array.dtype.name,
          "kvstore": {"driver": "file", "path": zarr_name},
          "metadata": {**metadata, "dtype": zarr_dtype}}


def _move_into_place(tmp: str, dest: str) -> None:
  """Renames the finished `tmp` dir to `dest`, replacing whatever is there last."""
  if not os.path.lexists(dest):
    os.rename(tmp, dest)
    return
  old_name = f".{os.path.basename(dest)}.old-{uuid.uuid4().hex[:12]}"
  old = os.path.join(os.path.dirname(dest), old_name)
  os.rename(dest, old)
  try:
    os.rename(tmp, dest)
  except BaseException:
    os.rename(old, dest)
    raise
  if os.path.isdir(old) and not os.path.islink(old):
    shutil.rmtree(old, ignore_errors=True)
  else:
    os.remove(old)
