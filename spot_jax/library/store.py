"""The on-disk prompt library: per trained prompt, its value, its key and its metadata.

  ROOT/
    library.json                    {"format": "spot-jax prompt library", "version": 1}
    .lock                           fcntl.flock target serialising index updates
    entries/<id>/entry.json         Entry metadata (task, frozen model, steps, metrics, origin)
    entries/<id>/value.npy          the transferred prompt [L, embed] float32 (best checkpoint)
    entries/<id>/key.npy            the task embedding [L, embed] float32 (prompt at key_step)
    entries/<id>/pooled.npz         the key pooled per form in POOLED_FORMS, each [embed]
    index/<model-key>.npz           per frozen model: ids [N] and one [N, embed] matrix per
                                    pooled form, the rows retrieval ranks

An entry is written completely into a temporary directory inside ROOT/entries and renamed
into place, so it appears whole or not at all and an existing id is never overwritten. The
entries are the truth; the index is a cache, updated under the lock and replaced atomically,
and rebuilt from the entries' pooled.npz whenever it is missing, unreadable or stale.

A corrupt entry (unreadable entry.json or pooled.npz) never breaks the library: readers skip it
and list it in `PromptLibrary.problems`; `remove` deletes it and `check(repair=True)` moves
every corrupt entry to ROOT/quarantine/ and deletes stale temporary directories of killed
writers. Files and directories are created with the process umask (a shared library stays
readable by the group when the umask says so).
"""

from __future__ import annotations

import contextlib
import dataclasses
import datetime
import errno
import fcntl
import hashlib
import io
import json
import math
import os
import re
import shutil
import tempfile
import time
from typing import Any, Iterator, Mapping

import numpy as np

from spot_jax.fileio import atomic_write_bytes, umask_mode
from spot_jax.library.similarity import POOLED_FORMS, LibraryError, pool
from spot_jax.train import run_dir

FORMAT_NAME = "spot-jax prompt library"
FORMAT_VERSION = 1
LIBRARY_JSON = "library.json"
LOCK_FILE = ".lock"
ENTRIES_DIR = "entries"
INDEX_DIR = "index"
QUARANTINE_DIR = "quarantine"
STALE_SECONDS = 3600  # a temporary entry or trash directory older than this is a dead writer's.
ENTRY_JSON, VALUE_NPY, KEY_NPY, POOLED_NPZ = "entry.json", "value.npy", "key.npy", "pooled.npz"
# Methods whose run directories hold `encoder.prompt.prompt.prompt` [L, embed] (spot_jax.methods).
PROMPT_LIKE_METHODS = ("prompt", "prompt_encoder")
ID_PATTERN = re.compile(r"[A-Za-z0-9_.-]{1,200}")
PEFT_WEIGHTS, PEFT_CONFIG, PEFT_TENSOR = (
    "adapter_model.safetensors", "adapter_config.json", "prompt_embeddings")

__all__ = ["Entry", "IndexUpdateError", "LibraryError", "ModelIdentity", "PromptLibrary"]


class IndexUpdateError(LibraryError):
  """The entry was written, but updating the index cache failed (it is rebuilt on next read)."""


@dataclasses.dataclass(frozen=True)
class ModelIdentity:
  """The frozen model an entry was trained on, and the method whose embeddings it holds;
  entries of different models or methods never mix (one index per identity)."""

  name: str
  emb_dim: int
  fingerprint: str
  method: str = "prompt"  # a prompt-like spot_jax.methods method (prompt, prompt_encoder).

  @classmethod
  def from_run_summary(cls, summary: run_dir.RunSummary | Mapping[str, Any]) -> ModelIdentity:
    """From RunSummary.model (name, config["emb_dim"], fingerprint), or run.json as a dict."""
    model = summary["model"] if isinstance(summary, Mapping) else summary.model
    method = (summary.get("method", "prompt") if isinstance(summary, Mapping)
              else summary.method)
    try:
      return cls(str(model["name"]), int(model["config"]["emb_dim"]), str(model["fingerprint"]),
                 str(method))
    except (KeyError, TypeError) as e:
      raise LibraryError(f"Run summary model {model!r} lacks name, config.emb_dim or "
                         f"fingerprint ({e})") from None

  @classmethod
  def from_dict(cls, data: Mapping[str, Any]) -> ModelIdentity:
    return cls(str(data["name"]), int(data["emb_dim"]), str(data["fingerprint"]),
               str(data.get("method", "prompt")))

  @property
  def index_key(self) -> str:
    """A filename-safe digest of the identity (fingerprints may hold any character); prompt
    entries keep the key they had before methods were recorded."""
    identity = dataclasses.asdict(self)
    if self.method == "prompt":
      del identity["method"]
    text = json.dumps(identity, sort_keys=True)
    return hashlib.sha256(text.encode()).hexdigest()[:16]

  def __str__(self) -> str:
    method = "" if self.method == "prompt" else f", method {self.method}"
    return f"{self.name} (emb_dim {self.emb_dim}, fingerprint {self.fingerprint}{method})"


@dataclasses.dataclass(frozen=True)
class Entry:
  """One library entry: a prompt trained on `task` with the frozen `model`."""

  id: str
  task: str
  model: ModelIdentity
  prompt_length: int
  run: str = ""
  seed: int | None = None
  key_step: int | None = None
  value_step: int | None = None
  steps_done: int | None = None
  metrics: dict = dataclasses.field(default_factory=dict)  # {task: {metric: value}} or flat.
  score: float | None = None  # the value checkpoint's selected validation score.
  origin: dict = dataclasses.field(default_factory=dict)  # {"kind": ..., "path": ...}.
  created: str = ""  # ISO time.

  def to_dict(self) -> dict[str, Any]:
    return dataclasses.asdict(self)

  @classmethod
  def from_dict(cls, data: Mapping[str, Any]) -> Entry:
    fields = {f.name for f in dataclasses.fields(cls)}
    values = {k: v for k, v in data.items() if k in fields}
    return cls(**{**values, "model": ModelIdentity.from_dict(data["model"])})


# ----------------------------------------------------------------------------- validation


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


check_prompt = as_prompt  # the name spot_jax/cli/retrieve_cmd.py imports.


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


def default_entry_id(task: str, seed: int | None, value: np.ndarray) -> str:
  """`<task>-<seed>-<first 10 hex digits of sha256(value bytes)>`, restricted to [A-Za-z0-9_.-]."""
  digest = hashlib.sha256(np.ascontiguousarray(value, np.float32).tobytes()).hexdigest()[:10]
  parts = [task] + ([f"s{seed}"] if seed is not None else []) + [digest]
  return re.sub(r"[^A-Za-z0-9_.-]", "_", "-".join(parts)).lstrip(".")[-200:]


def npy_bytes(array: np.ndarray) -> bytes:
  buffer = io.BytesIO()
  np.save(buffer, array, allow_pickle=False)
  return buffer.getvalue()


def _npz_bytes(arrays: Mapping[str, np.ndarray]) -> bytes:
  buffer = io.BytesIO()
  np.savez(buffer, **arrays)
  return buffer.getvalue()


def _json_bytes(data: Any, what: str) -> bytes:
  try:
    return json.dumps(data, indent=2, sort_keys=True, allow_nan=False).encode()
  except (TypeError, ValueError) as e:
    raise LibraryError(f"{what} is not JSON-serialisable with finite numbers ({e})") from None


def _write_file(path: str, data: bytes) -> None:
  with open(path, "xb") as f:
    f.write(data)
    f.flush()
    os.fsync(f.fileno())


# ----------------------------------------------------------------------------- the library


class PromptLibrary:
  """A directory of prompt entries with a pooled-key index per frozen model."""

  def __init__(self, root: str, *, create: bool = False):
    self.root = os.path.abspath(os.path.expanduser(os.fspath(root)))
    self.problems: dict[str, str] = {}  # corrupt entry id -> what is wrong (see `check`).
    marker = os.path.join(self.root, LIBRARY_JSON)
    if os.path.exists(self.root) and not os.path.isdir(self.root):
      raise LibraryError(f"{self.root} is a file, not a prompt library directory; pass the "
                         "library's directory (or a new path with --create)")
    if not os.path.exists(marker):
      if not create:
        what = "does not exist" if not os.path.exists(self.root) else "has no library.json"
        raise LibraryError(f"Prompt library {self.root} {what}; pass create=True "
                           "(CLI: --create) to make a new one")
      self._create(marker)
    try:
      with open(marker) as f:
        header = json.load(f)
    except (OSError, json.JSONDecodeError) as e:
      raise LibraryError(f"{marker} is unreadable ({e})") from None
    if not isinstance(header, dict) or header.get("format") != FORMAT_NAME or header.get(
        "version") != FORMAT_VERSION:
      raise LibraryError(f"{marker} declares {header!r}; this code reads "
                         f"{FORMAT_NAME!r} version {FORMAT_VERSION}")
    self.entries_dir = os.path.join(self.root, ENTRIES_DIR)
    self.index_dir = os.path.join(self.root, INDEX_DIR)

  def __repr__(self) -> str:
    return f"PromptLibrary({self.root!r})"

  def _create(self, marker: str) -> None:
    """Creates the library atomically and idempotently: concurrent creators serialise on the
    lock file, and the first one writes library.json last."""
    os.makedirs(self.root, exist_ok=True)
    with self._locked():
      if os.path.exists(marker):
        return  # another process created it meanwhile.
      ours = {LOCK_FILE, ENTRIES_DIR, INDEX_DIR}
      foreign = [n for n in os.listdir(self.root) if n not in ours and not n.startswith(".tmp_")]
      if foreign:
        raise LibraryError(f"{self.root} is a non-empty directory without {LIBRARY_JSON} "
                           f"(holds {sorted(foreign)[:5]}); choose an empty or new directory "
                           "for a new library")
      os.makedirs(os.path.join(self.root, ENTRIES_DIR), exist_ok=True)
      os.makedirs(os.path.join(self.root, INDEX_DIR), exist_ok=True)
      atomic_write_bytes(marker, _json_bytes(
          {"format": FORMAT_NAME, "version": FORMAT_VERSION}, "library.json"))

  # --------------------------------------------------------------------------- adding

  def add(self, *, task: str, value: np.ndarray, key: np.ndarray, model: ModelIdentity,
          run: str = "", seed: int | None = None, key_step: int | None = None,
          value_step: int | None = None, steps_done: int | None = None,
          metrics: Mapping[str, Any] | None = None, score: float | None = None,
          origin: Mapping[str, Any] | None = None, entry_id: str | None = None) -> Entry:
    """Adds a prompt `value` [L, embed] with its task embedding `key` [L, embed].

    Everything is validated before anything is written; an existing id is refused.
    """
    if not isinstance(model, ModelIdentity):
      raise LibraryError(f"model must be a ModelIdentity, got {type(model).__name__}")
    if not isinstance(task, str) or not task:
      raise LibraryError("task must be a non-empty task name")
    value = as_prompt(value, f"The value prompt of task {task!r}", model.emb_dim)
    key = as_prompt(key, f"The key prompt of task {task!r}", model.emb_dim)
    if value.shape != key.shape:
      raise LibraryError(f"Key shape {key.shape} differs from value shape {value.shape}; "
                         "both must be the same run's prompt [L, embed]")
    if score is not None and not math.isfinite(float(score)):
      raise LibraryError(f"score {score!r} is not a finite number")
    entry_id = check_entry_id(entry_id or default_entry_id(task, seed, value))
    entry = Entry(
        id=entry_id, task=task, model=model, prompt_length=int(value.shape[0]), run=str(run),
        seed=None if seed is None else int(seed),
        key_step=None if key_step is None else int(key_step),
        value_step=None if value_step is None else int(value_step),
        steps_done=None if steps_done is None else int(steps_done),
        metrics=dict(metrics or {}), score=None if score is None else float(score),
        origin=dict(origin or {"kind": "array"}),
        created=datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"))
    return self._write_entry(entry, value, key)

  def _write_entry(self, entry: Entry, value: np.ndarray, key: np.ndarray) -> Entry:
    """Writes a validated entry into a temp dir, renames it into place, then indexes it."""
    pooled = {form: pool(key, form) for form in POOLED_FORMS}
    files = {ENTRY_JSON: _json_bytes(entry.to_dict(), f"Metadata of entry {entry.id!r}"),
             VALUE_NPY: npy_bytes(value), KEY_NPY: npy_bytes(key),
             POOLED_NPZ: _npz_bytes(pooled)}
    final = self._entry_dir(entry.id)
    if os.path.exists(final):
      raise LibraryError(f"Entry {entry.id!r} already exists in {self.root} (same task, seed "
                         "and prompt bytes, or a reused id); remove it first or pass another "
                         "entry id")
    tmp = tempfile.mkdtemp(dir=self.entries_dir, prefix=".tmp-")
    try:
      os.chmod(tmp, umask_mode(0o777))  # mkdtemp makes 0700; entries follow the umask.
      for name, data in files.items():
        _write_file(os.path.join(tmp, name), data)
      try:
        os.rename(tmp, final)  # atomic; fails on an existing non-empty directory.
      except OSError as e:
        if e.errno in (errno.EEXIST, errno.ENOTEMPTY):
          raise LibraryError(f"Entry {entry.id!r} already exists in {self.root}; remove it "
                             "first or pass another entry id") from None
        raise
    except BaseException:
      shutil.rmtree(tmp, ignore_errors=True)
      raise
    try:
      self._update_index(entry.model, entry.id, pooled)
    except OSError as e:
      raise IndexUpdateError(
          f"Entry {entry.id!r} was added to {self.root}, but updating the index failed "
          f"({e.strerror or e}); the index is rebuilt from the entries on the next read once "
          "that is fixed (e.g. disk space freed). Do not add the entry again.") from None
    return entry

  def add_run_dir(self, model_dir: str, *, key_step: int | None = None,
                  entry_id: str | None = None) -> Entry:
    """A finished run: value = its best-step prompt, key = its prompt at `key_step`

    (RunSummary.key_step unless given).
    """
    try:
      summary = run_dir.read_summary(model_dir)
    except run_dir.RunDirError as e:
      raise LibraryError(str(e)) from None
    if not summary.finished or summary.best_step is None:
      raise LibraryError(f"Run {model_dir} is not finished ({summary.steps_done}/"
                         f"{summary.train_steps} steps); finish it, or add its prompts with "
                         "add_npy")
    if summary.method not in PROMPT_LIKE_METHODS:
      raise LibraryError(f"Run {model_dir} trained method {summary.method!r}; the library holds "
                         f"prompt-like methods only ({', '.join(PROMPT_LIKE_METHODS)}): use its "
                         "numpy checkpoint with TrainConfig.init_from to transfer it")
    key_step = summary.key_step if key_step is None else int(key_step)
    steps = run_dir.prompt_steps(model_dir)
    prompts = {}
    for what, step in (("value (best)", summary.best_step), ("key", key_step)):
      if step not in steps:
        raise LibraryError(f"Run {model_dir} has no prompt checkpoint for the {what} step "
                           f"{step} ({run_dir.prompt_path(model_dir, step)} missing); steps "
                           f"with prompts: {steps}. Pass another key step (--key_step)")
      prompts[what] = load_npy(run_dir.prompt_path(model_dir, step), f"{what} prompt")
    run = os.path.abspath(model_dir)
    return self.add(
        task=summary.task, value=prompts["value (best)"], key=prompts["key"],
        model=ModelIdentity.from_run_summary(summary), run=run, seed=summary.seed,
        key_step=key_step, value_step=summary.best_step, steps_done=summary.steps_done,
        metrics=summary.checkpoints.get(str(summary.best_step), {}), score=summary.best_score,
        origin={"kind": "run_dir", "path": run, "eval_metric": summary.eval_metric},
        entry_id=entry_id)

  def add_npy(self, value_path: str, *, task: str, model: ModelIdentity,
              key_path: str | None = None, **meta: Any) -> Entry:
    """A T5X prompt-tuning numpy checkpoint (`.../encoder.prompt.prompt.prompt`).

    The key defaults to the value when no key file is given (recorded in origin["key"]).
    """
    value = load_npy(value_path, "value prompt")
    key = value if key_path is None else load_npy(key_path, "key prompt")
    origin = {"kind": "npy", "path": os.path.abspath(value_path),
              "key_path": None if key_path is None else os.path.abspath(key_path),
              "key": "value (no key file given)" if key_path is None else "file"}
    origin.update(meta.pop("origin", None) or {})
    return self.add(task=task, value=value, key=key, model=model, origin=origin, **meta)

  def add_peft(self, adapter_path: str, *, task: str, model: ModelIdentity,
               num_virtual_tokens: int | None = None, **meta: Any) -> Entry:
    """A PEFT prompt-tuning adapter (its directory or adapter_model.safetensors).

    "prompt_embeddings" is [num_transformer_submodules * n, embed]; for seq2seq T5 the first
    n rows are the encoder prompt. n comes from `num_virtual_tokens`, else adapter_config.json.
    The key is the value (PEFT saves no early checkpoint).
    """
    from safetensors.numpy import load_file
    path = (os.path.join(adapter_path, PEFT_WEIGHTS) if os.path.isdir(adapter_path)
            else adapter_path)
    config_path = os.path.join(os.path.dirname(path), PEFT_CONFIG)
    config = {}
    if os.path.exists(config_path):
      try:
        with open(config_path) as f:
          config = json.load(f)
      except (OSError, json.JSONDecodeError) as e:
        raise LibraryError(f"PEFT config {config_path} is unreadable ({e})") from None
      peft_type = config.get("peft_type")
      if peft_type not in (None, "PROMPT_TUNING"):
        raise LibraryError(f"{config_path} is a {peft_type} adapter; only PROMPT_TUNING "
                           "adapters hold a soft prompt")
    if not os.path.exists(path):
      raise LibraryError(f"PEFT adapter weights {path!r} do not exist")
    try:
      tensors = load_file(path)
    except Exception as e:  # safetensors raises its own error type for corrupt files.
      raise LibraryError(f"PEFT adapter weights {path!r} are not a readable safetensors "
                         f"file ({e})") from None
    if PEFT_TENSOR not in tensors:
      raise LibraryError(f"{path!r} has no {PEFT_TENSOR!r} tensor (found {sorted(tensors)}); "
                         "is it a prompt-tuning adapter?")
    rows = as_prompt(tensors[PEFT_TENSOR], f"{PEFT_TENSOR} in {path!r}", model.emb_dim)
    n = num_virtual_tokens if num_virtual_tokens is not None else config.get("num_virtual_tokens")
    if n is None:
      raise LibraryError(f"Cannot tell the encoder prompt length of {path!r}: no "
                         f"{PEFT_CONFIG} with num_virtual_tokens beside it; pass "
                         "num_virtual_tokens (CLI: --num_virtual_tokens)")
    if not 0 < int(n) <= rows.shape[0]:
      raise LibraryError(f"num_virtual_tokens {n} does not fit {PEFT_TENSOR} with "
                         f"{rows.shape[0]} rows in {path!r}")
    value = rows[: int(n)]
    origin = {"kind": "peft", "path": os.path.abspath(path), "num_virtual_tokens": int(n),
              "rows": int(rows.shape[0]), "key": "value (PEFT saves one prompt)"}
    origin.update(meta.pop("origin", None) or {})
    return self.add(task=task, value=value, key=value, model=model, origin=origin, **meta)

  # --------------------------------------------------------------------------- reading

  def _entry_dir(self, entry_id: str) -> str:
    return os.path.join(self.entries_dir, check_entry_id(entry_id))

  def ids(self) -> list[str]:
    """Entry ids, sorted (temp and trash directories excluded; corrupt entries included)."""
    return sorted(d for d in os.listdir(self.entries_dir) if not d.startswith("."))

  def get(self, entry_id: str) -> Entry:
    path = os.path.join(self._entry_dir(entry_id), ENTRY_JSON)
    try:
      with open(path) as f:
        data = json.load(f)
      entry = Entry.from_dict(data)
    except FileNotFoundError:
      if os.path.isdir(self._entry_dir(entry_id)):
        raise LibraryError(f"Entry {entry_id!r} is corrupt: {path} is missing; run `spot-jax "
                           f"library check --library {self.root} --repair`") from None
      raise LibraryError(f"No entry {entry_id!r} in {self.root}; see `spot-jax library list "
                         f"--library {self.root}`") from None
    except (json.JSONDecodeError, UnicodeDecodeError, KeyError, TypeError, ValueError,
            AttributeError) as e:
      raise LibraryError(f"Entry {entry_id!r} is corrupt: {path} is not valid entry metadata "
                         f"({type(e).__name__}: {e}); run `spot-jax library check --library "
                         f"{self.root} --repair`") from None
    if entry.id != entry_id:
      raise LibraryError(f"Entry {entry_id!r} is corrupt: {path} says id {entry.id!r}; run "
                         f"`spot-jax library check --library {self.root} --repair`")
    return entry

  def entries(self, *, model: ModelIdentity | None = None,
              task: str | None = None) -> list[Entry]:
    """Entries sorted by id, optionally only one frozen model's or one task's.

    Corrupt entries are skipped and recorded in `self.problems` (id -> what is wrong).
    """
    out = []
    for entry_id in self.ids():
      try:
        entry = self.get(entry_id)
      except LibraryError as e:
        if os.path.exists(self._entry_dir(entry_id)):
          self.problems[entry_id] = str(e)
        continue  # corrupt, or removed concurrently.
      if (model is None or entry.model == model) and (task is None or entry.task == task):
        out.append(entry)
    return out

  def _pooled(self, entry_id: str) -> dict[str, np.ndarray]:
    """The entry's pooled keys {form: [embed]}; a corrupt file is named (never unpickled)."""
    path = os.path.join(self._entry_dir(entry_id), POOLED_NPZ)
    try:
      with np.load(path, allow_pickle=False) as data:
        pooled = {f: np.asarray(data[f], np.float32) for f in POOLED_FORMS}
    except Exception as e:  # zip, header or key errors of a damaged file.
      reason = "missing" if isinstance(e, FileNotFoundError) else "not a readable .npz archive"
      raise LibraryError(f"Entry {entry_id!r} is corrupt: {path} is {reason} of the pooled "
                         f"keys {list(POOLED_FORMS)}; run `spot-jax library check --library "
                         f"{self.root} --repair`") from None
    if len({v.shape for v in pooled.values()}) != 1 or next(iter(pooled.values())).ndim != 1:
      raise LibraryError(f"Entry {entry_id!r} is corrupt: {path} holds pooled keys of shapes "
                         f"{ {k: v.shape for k, v in pooled.items()} }; run `spot-jax library "
                         f"check --library {self.root} --repair`")
    return pooled

  def check(self, repair: bool = False) -> dict[str, str]:
    """Every problem found ({entry id or path: what is wrong}): corrupt entries (metadata,
    value, key, pooled keys) and stale temporary directories of killed writers.

    With `repair`, corrupt entries move to ROOT/quarantine/<id> (nothing is deleted), stale
    temporary directories are deleted and the index is rebuilt.
    """
    problems: dict[str, str] = {}
    for entry_id in self.ids():
      try:
        entry = self.get(entry_id)
        self._pooled(entry_id)
        for name in (VALUE_NPY, KEY_NPY):
          path = os.path.join(self._entry_dir(entry_id), name)
          as_prompt(load_npy(path, name), path, entry.model.emb_dim)
      except LibraryError as e:
        problems[entry_id] = str(e)
    stale = self._stale_temporaries()
    problems.update({path: "stale temporary directory of a killed writer" for path in stale})
    if repair:
      with self._locked():
        for entry_id in [p for p in problems if p not in stale]:
          os.makedirs(os.path.join(self.root, QUARANTINE_DIR), exist_ok=True)
          target = os.path.join(self.root, QUARANTINE_DIR,
                                f"{entry_id}-{time.strftime('%Y%m%dT%H%M%S')}")
          os.rename(self._entry_dir(entry_id), target)
          problems[entry_id] += f" -> moved to {target}"
        self._rebuild_index()
    self.problems = {k: v for k, v in problems.items() if k not in stale} if not repair else {}
    return problems

  def _stale_temporaries(self, age: float = STALE_SECONDS) -> list[str]:
    """Temporary entry/trash directories and index temp files older than `age` seconds."""
    found = []
    for directory, prefixes in ((self.entries_dir, (".tmp-", ".trash-")),
                                (self.index_dir, (".tmp_",))):
      if not os.path.isdir(directory):
        continue
      for name in os.listdir(directory):
        path = os.path.join(directory, name)
        try:
          old = time.time() - os.path.getmtime(path) > age
        except OSError:
          continue
        if name.startswith(prefixes) and (old or name.startswith(".trash-")):
          found.append(path)
    return sorted(found)

  def _prompt(self, entry_id: str, name: str) -> np.ndarray:
    path = os.path.join(self._entry_dir(entry_id), name)
    if not os.path.exists(path):
      self.get(entry_id)  # a clear error for an unknown id.
    return as_prompt(load_npy(path, name), path)

  def value(self, entry_id: str) -> np.ndarray:
    """The transferred prompt [L, embed] float32."""
    return self._prompt(entry_id, VALUE_NPY)

  def key(self, entry_id: str) -> np.ndarray:
    """The task embedding [L, embed] float32."""
    return self._prompt(entry_id, KEY_NPY)

  def models(self) -> list[ModelIdentity]:
    """The frozen models of the entries, sorted by name then fingerprint."""
    found = {e.model for e in self.entries()}
    return sorted(found, key=lambda m: (m.name, m.fingerprint, m.emb_dim))

  def resolve_model(self, text: str) -> ModelIdentity:
    """The library's model whose fingerprint is, or starts with, `text` (else its name)."""
    models = self.models()
    for matches in ([m for m in models if m.fingerprint == text],
                    [m for m in models if m.fingerprint.startswith(text)],
                    [m for m in models if m.name == text]):
      if len(matches) == 1:
        return matches[0]
      if len(matches) > 1:
        raise LibraryError(f"{text!r} matches several models: "
                           f"{', '.join(map(str, matches))}; give the full fingerprint")
    raise LibraryError(f"No model {text!r} in {self.root}; models: "
                       f"{', '.join(map(str, models)) or 'none'}")

  find_model = resolve_model  # the name spot_jax/cli/retrieve_cmd.py calls.

  def remove(self, entry_id: str) -> None:
    """Removes an entry and its index rows (a corrupt entry too)."""
    try:
      model = self.get(entry_id).model
    except LibraryError:
      if not os.path.isdir(self._entry_dir(entry_id)):
        raise
      model = None  # corrupt: which index holds it is unknown, so every index is rebuilt.
    trash = os.path.join(self.entries_dir, f".trash-{entry_id}-{os.urandom(4).hex()}")
    os.rename(self._entry_dir(entry_id), trash)
    self.problems.pop(entry_id, None)
    if model is None:
      with self._locked():
        self._rebuild_index()
    else:
      self._update_index(model, entry_id)
    shutil.rmtree(trash, ignore_errors=True)

  # --------------------------------------------------------------------------- keys

  def pooled_keys(self, form: str, *, model: ModelIdentity | None = None
                  ) -> tuple[list[Entry], np.ndarray]:
    """(entries, pooled keys [N, embed] float32) of one model, read from the index.

    `model=None` is only allowed when the library holds a single frozen model.
    """
    if form not in POOLED_FORMS:
      raise LibraryError(f"Unknown pooled form {form!r}; valid forms: {', '.join(POOLED_FORMS)}")
    indexes = self._fresh_indexes()
    model = self._only_model(list(indexes), model)
    if model is None:
      return [], np.zeros((0, 0), np.float32)
    if model not in indexes:
      return [], np.zeros((0, model.emb_dim), np.float32)
    ids, matrices = indexes[model]
    return [self.get(i) for i in ids], matrices[form]

  def full_keys(self, *, model: ModelIdentity | None = None
                ) -> tuple[list[Entry], np.ndarray]:
    """(entries, keys [N, L, embed] float32) of one model; loads every key prompt."""
    if model is None:
      model = self._only_model(self.models(), None)
    if model is None:
      return [], np.zeros((0, 0, 0), np.float32)
    entries = self.entries(model=model)
    lengths = sorted({e.prompt_length for e in entries})
    if len(lengths) > 1:
      raise LibraryError(f"Entries of {model} have prompt lengths {lengths}; per-token metrics "
                         "need one length: use a pooled metric or a library per length")
    if not entries:
      return [], np.zeros((0, 0, model.emb_dim), np.float32)
    return entries, np.stack([self.key(e.id) for e in entries])

  def _only_model(self, models: list[ModelIdentity], model: ModelIdentity | None
                  ) -> ModelIdentity | None:
    if model is not None:
      return model
    if len(models) > 1:
      listing = "; ".join(str(m) for m in sorted(models, key=lambda m: (m.name, m.fingerprint)))
      raise LibraryError(f"{self.root} holds prompts of {len(models)} frozen models ({listing}); "
                         "they never mix in a search: pass model= (CLI: --model FINGERPRINT)")
    return models[0] if models else None

  # --------------------------------------------------------------------------- the index

  @contextlib.contextmanager
  def _locked(self) -> Iterator[None]:
    fd = os.open(os.path.join(self.root, LOCK_FILE), os.O_RDWR | os.O_CREAT, 0o644)
    try:
      fcntl.flock(fd, fcntl.LOCK_EX)
      yield
    finally:
      os.close(fd)  # releases the lock.

  def _index_path(self, model: ModelIdentity) -> str:
    return os.path.join(self.index_dir, f"{model.index_key}.npz")

  def _read_index_file(self, path: str
                       ) -> tuple[ModelIdentity, list[str], dict[str, np.ndarray]] | None:
    """(model, ids, {form: [N, embed]}) or None when missing or malformed."""
    try:
      with np.load(path, allow_pickle=False) as data:
        model = ModelIdentity.from_dict(json.loads(str(data["model"])))
        ids = [str(i) for i in data["ids"]]
        matrices = {f: np.asarray(data[f], np.float32) for f in POOLED_FORMS}
    except Exception:  # any unreadable or partial index is rebuilt from the entries.
      return None
    n = len(ids)
    if len(set(ids)) != n or any(m.shape != (n, model.emb_dim) for m in matrices.values()):
      return None
    return model, ids, matrices

  def _read_index(self, model: ModelIdentity) -> tuple[list[str], dict[str, np.ndarray]] | None:
    found = self._read_index_file(self._index_path(model))
    if found is None or found[0] != model:
      return None
    return found[1], found[2]

  def _write_index(self, model: ModelIdentity, ids: list[str],
                   matrices: Mapping[str, np.ndarray]) -> None:
    arrays = {"model": np.array(json.dumps(dataclasses.asdict(model))),
              "ids": np.array(ids, dtype=str).reshape(len(ids)),
              **{f: np.asarray(matrices[f], np.float32).reshape(len(ids), model.emb_dim)
                 for f in POOLED_FORMS}}
    atomic_write_bytes(self._index_path(model), _npz_bytes(arrays))

  def _update_index(self, model: ModelIdentity, entry_id: str,
                    pooled: Mapping[str, np.ndarray] | None = None) -> None:
    """Under the lock: drops `entry_id`'s row from `model`'s index, then appends `pooled` (one
    [embed] row per form) as its new row when given; rebuilds an unreadable index instead."""
    with self._locked():
      index = self._read_index(model)
      if index is None:
        self._rebuild_index()
        return
      ids, matrices = index
      keep = [i for i, existing in enumerate(ids) if existing != entry_id]
      new_ids = [ids[i] for i in keep] + ([entry_id] if pooled is not None else [])
      rows = {f: matrices[f][keep] for f in POOLED_FORMS}
      if pooled is not None:
        rows = {f: np.concatenate([rows[f], pooled[f][None]]) for f in POOLED_FORMS}
      self._write_index(model, new_ids, rows)

  def _all_indexes(self) -> dict[ModelIdentity, tuple[list[str], dict[str, np.ndarray]]] | None:
    """Every index file, or None if one is unreadable or misnamed."""
    out = {}
    names = os.listdir(self.index_dir) if os.path.isdir(self.index_dir) else []
    for name in names:
      if name.startswith("."):
        continue
      found = self._read_index_file(os.path.join(self.index_dir, name))
      if found is None or name != f"{found[0].index_key}.npz" or found[0] in out:
        return None
      out[found[0]] = (found[1], found[2])
    return out

  def _is_fresh(self, indexes: dict | None) -> bool:
    if indexes is None:
      return False
    indexed = [i for ids, _ in indexes.values() for i in ids]
    valid = {e.id for e in self.entries()} - set(self.problems)
    return len(indexed) == len(set(indexed)) and set(indexed) == valid

  def _fresh_indexes(self) -> dict[ModelIdentity, tuple[list[str], dict[str, np.ndarray]]]:
    """The index, rebuilt first when it does not list exactly the valid entries on disk.

    A library this process cannot write (read-only, another user's) gets the index built in
    memory instead."""
    indexes = self._all_indexes()
    if self._is_fresh(indexes):
      return indexes
    try:
      with self._locked():
        indexes = self._all_indexes()
        if not self._is_fresh(indexes):
          self._rebuild_index()
          indexes = self._all_indexes()
    except OSError as e:
      if e.errno not in (errno.EACCES, errno.EPERM, errno.EROFS):
        raise
      return self._index_from_entries()
    return indexes or {}

  def _index_from_entries(self) -> dict[ModelIdentity, tuple[list[str], dict[str, np.ndarray]]]:
    """{model: (ids, {form: [N, embed]})} from the valid entries' pooled.npz."""
    grouped: dict[ModelIdentity, tuple[list[str], dict[str, list[np.ndarray]]]] = {}
    for entry in self.entries():
      try:
        pooled = self._pooled(entry.id)
      except LibraryError as e:
        self.problems[entry.id] = str(e)
        continue
      if any(v.shape != (entry.model.emb_dim,) for v in pooled.values()):
        self.problems[entry.id] = (f"Entry {entry.id!r} is corrupt: its pooled keys do not have "
                                   f"the model's emb_dim {entry.model.emb_dim}")
        continue
      ids, rows = grouped.setdefault(entry.model, ([], {f: [] for f in POOLED_FORMS}))
      ids.append(entry.id)
      for f in POOLED_FORMS:
        rows[f].append(pooled[f])
    return {model: (ids, {f: np.stack(rows[f]) for f in POOLED_FORMS})
            for model, (ids, rows) in grouped.items()}

  def _rebuild_index(self) -> None:
    """Rewrites every model's index from the entries' pooled.npz (call under the lock)."""
    os.makedirs(self.index_dir, exist_ok=True)
    wanted = set()
    for model, (ids, matrices) in self._index_from_entries().items():
      self._write_index(model, ids, matrices)
      wanted.add(f"{model.index_key}.npz")
    for name in os.listdir(self.index_dir):
      if name not in wanted and not name.startswith(".tmp_"):
        path = os.path.join(self.index_dir, name)
        shutil.rmtree(path) if os.path.isdir(path) else os.remove(path)
    for path in self._stale_temporaries():
      shutil.rmtree(path, ignore_errors=True) if os.path.isdir(path) else os.remove(path)

  # --------------------------------------------------------------------------- export

  def export(self, out: str, entries: list[Entry] | None = None) -> str:
    """Writes the entries (default all) for sharing; returns `out`.

    `out` ending in .npz: one archive with `value/<id>`, `key/<id>` [L, embed] arrays and
    `metadata` (a JSON list of the entries). Otherwise `out` becomes a new library holding
    copies of the entries (ids and metadata kept).
    """
    entries = self.entries() if entries is None else entries
    out = os.path.expanduser(out)
    if os.path.exists(out) and (out.endswith(".npz") or not os.path.isdir(out)
                                or os.listdir(out)):
      raise LibraryError(f"{out} already exists; export writes a new .npz file or a new "
                         "library and never merges: choose a new path (or remove it first)")
    if out.endswith(".npz"):
      arrays = {"metadata": np.array(json.dumps([e.to_dict() for e in entries]))}
      for e in entries:
        arrays[f"value/{e.id}"], arrays[f"key/{e.id}"] = self.value(e.id), self.key(e.id)
      atomic_write_bytes(out, _npz_bytes(arrays))
      return out
    target = PromptLibrary(out, create=True)
    for e in entries:
      target._write_entry(e, self.value(e.id), self.key(e.id))
    return out
