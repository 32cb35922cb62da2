"""The library's values and files: checks of prompts [L, emb_dim], keys and trainable trees,
entry ids, and the .npy / .npz / JSON bytes written (one clear LibraryError for bad input)."""

from __future__ import annotations

import dataclasses
import hashlib
import io
import json
import os
import re
from typing import Any, Mapping

import numpy as np

from spot_jax import task_embedding
from spot_jax.library.identity import ModelIdentity
from spot_jax.library.similarity import LibraryError

ID_PATTERN = re.compile(r"[A-Za-z0-9_.-]{1,200}")


def as_prompt(array: Any, what: str, emb_dim: int | None = None) -> np.ndarray:
  """Checks a floating [L, embed] array (finite, embed == emb_dim) and returns it float32."""
  array = np.asarray(array)
  if array.dtype.kind != "f" and array.dtype.name != "bfloat16":
    raise LibraryError(f"{what} has dtype {array.dtype}; expected a float array [L, embed]")
  if array.ndim != 2 or 0 in array.shape:
    raise LibraryError(f"{what} has shape {array.shape}; expected a 2-D prompt [L, embed]")
  if emb_dim is not None and array.shape[1] != emb_dim:
    raise LibraryError(f"{what} has embedding dim {array.shape[1]} but the model's emb_dim is "
                       f"{emb_dim}; was it trained on another frozen model?")
  array = np.ascontiguousarray(array, dtype=np.float32)
  if not np.all(np.isfinite(array)):
    raise LibraryError(f"{what} contains NaN or infinite values")
  return array


def as_key(array: Any, what: str, model: ModelIdentity) -> np.ndarray:
  """A key of `model`'s kind as float32: a prompt [L, emb_dim], or a vector embedding [D] or
  [1, D] (returned [1, D], a one-token key) with D == model.key_dim when that is set."""
  if model.is_prompt:
    return as_prompt(array, what, model.emb_dim)
  array = np.asarray(array)
  if array.ndim == 1:
    array = array[None]
  if array.ndim != 2 or array.shape[0] != 1 or 0 in array.shape:
    raise LibraryError(f"{what} has shape {array.shape}; a {model.method} task embedding is a "
                       "vector [D] (or [1, D])")
  if model.key_dim and array.shape[1] != model.key_dim:
    raise LibraryError(f"{what} has size {array.shape[1]} but the {model.method} embeddings of "
                       f"{model.name} have size {model.key_dim}; was it made with other method "
                       "settings or another embedding kind?")
  return as_prompt(array, what)  # float, finite.


def as_tree(value: Any, what: str) -> dict[str, np.ndarray]:
  """Checks {dotted path: finite float array} (a run's trainables) and returns it float32."""
  if not isinstance(value, Mapping) or not value:
    raise LibraryError(f"{what} must map dotted parameter paths to arrays, got "
                       f"{type(value).__name__}")
  out = {}
  for name, array in task_embedding.flat_arrays(value).items():
    if not ID_PATTERN.fullmatch(name) or name[0] == ".":
      raise LibraryError(f"{what}: {name!r} is not a dotted parameter path")
    array = np.asarray(array)
    if not np.all(np.isfinite(array)):
      raise LibraryError(f"{what}: {name} contains NaN or infinite values")
    out[name] = np.ascontiguousarray(array, np.float32)
  return out


def with_width(model: ModelIdentity, prompt: np.ndarray) -> ModelIdentity:
  """`model` with emb_dim taken from a checked prompt [L, embed] when it was not given."""
  return model if model.emb_dim else dataclasses.replace(model, emb_dim=int(prompt.shape[1]))


def load_npy(path: str, what: str = "prompt") -> np.ndarray:
  """A plain .npy array; pickles are refused (never executed), corrupt files named."""
  try:
    with open(path, "rb") as f:
      array = np.load(f, allow_pickle=False)
  except FileNotFoundError:
    raise LibraryError(f"The {what} file {path!r} does not exist") from None
  except (ValueError, EOFError, OSError) as e:
    raise LibraryError(f"The {what} file {path!r} is not a readable plain .npy array ({e}); "
                       "truncated files and pickled object arrays are refused") from None
  if not isinstance(array, np.ndarray):
    raise LibraryError(f"The {what} file {path!r} is an .npz archive; expected one .npy array")
  return array


def check_entry_id(entry_id: str) -> str:
  if not isinstance(entry_id, str) or not ID_PATTERN.fullmatch(entry_id) or entry_id[0] == ".":
    raise LibraryError(f"Entry id {entry_id!r} is invalid: use 1-200 characters from "
                       "[A-Za-z0-9_.-], not starting with '.'")
  return entry_id


def default_entry_id(task: str, seed: int | None, value: np.ndarray | Mapping[str, Any]) -> str:
  """`<task>-<seed>-<first 10 hex digits of sha256(value bytes)>`, restricted to [A-Za-z0-9_.-]
  (a tree value: the digest of its sorted names and leaf bytes)."""
  hasher = hashlib.sha256()
  if isinstance(value, Mapping):
    for name, array in sorted(value.items()):
      hasher.update(name.encode() + b"\0" + np.ascontiguousarray(array, np.float32).tobytes())
  else:
    hasher.update(np.ascontiguousarray(value, np.float32).tobytes())
  digest = hasher.hexdigest()[:10]
  parts = [task] + ([f"s{seed}"] if seed is not None else []) + [digest]
  return re.sub(r"[^A-Za-z0-9_.-]", "_", "-".join(parts)).lstrip(".")[-200:]


def npy_bytes(array: np.ndarray) -> bytes:
  buffer = io.BytesIO()
  np.save(buffer, array, allow_pickle=False)
  return buffer.getvalue()


def npz_bytes(arrays: Mapping[str, np.ndarray]) -> bytes:
  buffer = io.BytesIO()
  np.savez(buffer, **arrays)
  return buffer.getvalue()


def json_bytes(data: Any, what: str) -> bytes:
  """`data` as indented JSON bytes; a LibraryError naming `what` when it is not JSON."""
  try:
    return json.dumps(data, indent=2, sort_keys=True, allow_nan=False).encode()
  except (TypeError, ValueError) as e:
    raise LibraryError(f"{what} is not JSON-serialisable with finite numbers ({e})") from None


def write_file(path: str, data: bytes) -> None:
  """Writes a new file (never overwrites) and fsyncs it."""
  os.makedirs(os.path.dirname(path), exist_ok=True)
  with open(path, "xb") as f:
    f.write(data)
    f.flush()
    os.fsync(f.fileno())
