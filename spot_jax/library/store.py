"""The on-disk library: per trained run of any method, its value, its key and its metadata.

  ROOT/
    library.json                    {"format": "spot-jax prompt library", "version": 1}
    .lock                           fcntl.flock target serialising index updates
    entries/<id>/entry.json         Entry metadata (task, frozen model and method, steps,
                                    metrics, origin)
    entries/<id>/value.npy          prompt-like methods: the transferred prompt [L, embed]
                                    float32 (best checkpoint)
    entries/<id>/value/<dotted.path>  other methods: every trainable leaf of the best checkpoint
                                    as a plain .npy, named as in the run directory (the
                                    directory is a valid TrainConfig.init_from)
    entries/<id>/key.npy            the task embedding: the prompt [L, embed] at key_step, or
                                    the method's embedding [D] (spot_jax.task_embedding) as a
                                    one-token key [1, D], so every similarity metric applies
    entries/<id>/pooled.npz         the key pooled per form in POOLED_FORMS, each [embed] or [D]
    index/<identity-key>.npz        per (frozen model, method, embedding kind; ModelIdentity):
                                    ids [N] and one [N, width] matrix per pooled form, the rows
                                    retrieval ranks; a search never mixes identities

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
import json
import math
import os
import shutil
import tempfile
import time
from typing import Any, Iterator, Mapping

import numpy as np

from spot_jax.fileio import atomic_write_bytes, umask_mode
from spot_jax import task_embedding
from spot_jax.library import peft_import
from spot_jax.library.similarity import POOLED_FORMS, LibraryError, pool
from spot_jax.train import run_dir
from spot_jax.library.formats import (as_key, as_prompt, as_tree, check_entry_id,
                                      default_entry_id, json_bytes, load_npy, npy_bytes,
                                      npz_bytes, with_width, write_file)
from spot_jax.library.identity import Entry, ModelIdentity
from spot_jax.library.run_keys import run_checkpoint, run_key

FORMAT_NAME = "spot-jax prompt library"
FORMAT_VERSION = 1
LIBRARY_JSON = "library.json"
LOCK_FILE = ".lock"
ENTRIES_DIR = "entries"
INDEX_DIR = "index"
QUARANTINE_DIR = "quarantine"
STALE_SECONDS = 3600  # a temporary entry or trash directory older than this is a dead writer's.
ENTRY_JSON, VALUE_NPY, KEY_NPY, POOLED_NPZ = "entry.json", "value.npy", "key.npy", "pooled.npz"
VALUE_DIR = "value"  # the trainables of a non-prompt entry.
KEY_AT_BEST = "best"  # add_run_dir(key_step="best"): the key from the best step (TuPaTE).
PEFT_TENSOR = "prompt_embeddings"
PEFT_CONFIG = peft_import.PEFT_CONFIG

__all__ = ["Entry", "IndexUpdateError", "LibraryError", "ModelIdentity", "PromptLibrary"]


class IndexUpdateError(LibraryError):
  """The entry was written, but updating the index cache failed (it is rebuilt on next read)."""


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
      atomic_write_bytes(marker, json_bytes(
          {"format": FORMAT_NAME, "version": FORMAT_VERSION}, "library.json"))

  def discard_if_empty(self, remove_root: bool) -> bool:
    """Deletes this library when it holds no entry (what a failed first `add --create`
    leaves): its whole directory when `remove_root` (the command made it), else only the
    library's own files. Returns whether it did."""
    if any(not n.startswith(".tmp_") for n in os.listdir(self.entries_dir)):
      return False
    if remove_root:
      shutil.rmtree(self.root, ignore_errors=True)
      return True
    os.remove(os.path.join(self.root, LIBRARY_JSON))
    for name in (ENTRIES_DIR, INDEX_DIR):
      shutil.rmtree(os.path.join(self.root, name), ignore_errors=True)
    with contextlib.suppress(FileNotFoundError):
      os.remove(os.path.join(self.root, LOCK_FILE))
    return True

  # --------------------------------------------------------------------------- adding

  def add(self, *, task: str, value: np.ndarray | Mapping[str, Any], key: np.ndarray,
          model: ModelIdentity, run: str = "", seed: int | None = None,
          key_step: int | None = None, value_step: int | None = None,
          steps_done: int | None = None, metrics: Mapping[str, Any] | None = None,
          score: float | None = None, origin: Mapping[str, Any] | None = None,
          entry_id: str | None = None) -> Entry:
    """Adds an entry of `model`'s kind: a prompt `value` [L, embed] with its key [L, embed]
    (prompt-like methods), or the trainables `value` {dotted path: array} with the method's
    task embedding `key` [D] (other methods; `model.key_dim` is filled in from it).

    Everything is validated before anything is written; an existing id is refused.
    """
    if not isinstance(model, ModelIdentity):
      raise LibraryError(f"model must be a ModelIdentity, got {type(model).__name__}")
    if not isinstance(task, str) or not task:
      raise LibraryError("task must be a non-empty task name")
    if model.is_prompt:
      value = as_prompt(value, f"The value prompt of task {task!r}", model.emb_dim)
      key = as_prompt(key, f"The key prompt of task {task!r}", model.emb_dim)
      if value.shape != key.shape:
        raise LibraryError(f"Key shape {key.shape} differs from value shape {value.shape}; "
                           "both must be the same run's prompt [L, embed]")
    else:
      value = as_tree(value, f"The {model.method} value of task {task!r}")
      key = as_key(key, f"The key of task {task!r}", model)
      model = dataclasses.replace(model, key_dim=int(key.shape[1]))
    if score is not None and not math.isfinite(float(score)):
      raise LibraryError(f"score {score!r} is not a finite number")
    entry_id = check_entry_id(entry_id or default_entry_id(task, seed, value))
    entry = Entry(
        id=entry_id, task=task, model=model,
        prompt_length=int(value.shape[0]) if model.is_prompt else 0, run=str(run),
        seed=None if seed is None else int(seed),
        key_step=None if key_step is None else int(key_step),
        value_step=None if value_step is None else int(value_step),
        steps_done=None if steps_done is None else int(steps_done),
        metrics=dict(metrics or {}), score=None if score is None else float(score),
        origin=dict(origin or {"kind": "array"}),
        created=datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"))
    return self._write_entry(entry, value, key)

  def _write_entry(self, entry: Entry, value: np.ndarray | Mapping[str, np.ndarray],
                   key: np.ndarray) -> Entry:
    """Writes a validated entry into a temp dir, renames it into place, then indexes it."""
    pooled = {form: pool(key, form) for form in POOLED_FORMS}
    files = {ENTRY_JSON: json_bytes(entry.to_dict(), f"Metadata of entry {entry.id!r}"),
             KEY_NPY: npy_bytes(key), POOLED_NPZ: npz_bytes(pooled)}
    if isinstance(value, Mapping):
      files.update({os.path.join(VALUE_DIR, name): npy_bytes(array)
                    for name, array in value.items()})
    else:
      files[VALUE_NPY] = npy_bytes(value)
    final = self._entry_dir(entry.id)
    if os.path.exists(final):
      raise LibraryError(f"Entry {entry.id!r} already exists in {self.root} (same task, seed "
                         "and prompt bytes, or a reused id); remove it first or pass another "
                         "entry id")
    tmp = tempfile.mkdtemp(dir=self.entries_dir, prefix=".tmp-")
    try:
      os.chmod(tmp, umask_mode(0o777))  # mkdtemp makes 0700; entries follow the umask.
      for name, data in files.items():
        write_file(os.path.join(tmp, name), data)
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

  def add_run_dir(self, model_dir: str, *, key_step: int | str | None = None,
                  entry_id: str | None = None, embedding: str | None = None) -> Entry:
    """A finished run of any method: value = its best checkpoint (the prompt for prompt-like
    methods, else every trainable leaf), key = its task embedding at `key_step`
    (RunSummary.key_step unless given; "best": the best step, TuPaTE's other choice).
    `embedding`: the kind of a non-prompt method's key (spot_jax.task_embedding.EMBEDDING_KINDS,
    default layer_mean).
    """
    try:
      summary = run_dir.read_summary(model_dir)
    except run_dir.RunDirError as e:
      raise LibraryError(str(e)) from None
    if not summary.finished or summary.best_step is None:
      raise LibraryError(f"Run {model_dir} is not finished ({summary.steps_done}/"
                         f"{summary.train_steps} steps); finish it, or add its prompts with "
                         "add_npy")
    if key_step == KEY_AT_BEST:
      key_step = summary.best_step
    key_step = summary.key_step if key_step is None else int(key_step)
    model = ModelIdentity.from_run_summary(summary, embedding=embedding)
    steps = run_dir.prompt_steps(model_dir) if model.is_prompt else run_dir.checkpoint_steps(
        model_dir)
    for what, step in (("value (best)", summary.best_step), ("key", key_step)):
      if step not in steps:
        missing = (run_dir.prompt_path(model_dir, step) if model.is_prompt
                   else run_dir.checkpoint_dir(model_dir, step))
        raise LibraryError(f"Run {model_dir} has no {model.method} checkpoint for the {what} "
                           f"step {step} ({missing} missing); steps with checkpoints: {steps}. "
                           "Pass another key step (--key_step)")
    key = run_key(model_dir, key_step, model)
    if model.is_prompt:
      value = load_npy(run_dir.prompt_path(model_dir, summary.best_step), "value (best) prompt")
    else:
      value = run_checkpoint(model_dir, summary.best_step)
    run = os.path.abspath(model_dir)
    return self.add(
        task=summary.task, value=value, key=key, model=model, run=run, seed=summary.seed,
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
    model = with_width(model, as_prompt(value, f"The value prompt {value_path!r}"))
    origin = {"kind": "npy", "path": os.path.abspath(value_path),
              "key_path": None if key_path is None else os.path.abspath(key_path),
              "key": "value (no key file given)" if key_path is None else "file"}
    origin.update(meta.pop("origin", None) or {})
    return self.add(task=task, value=value, key=key, model=model, origin=origin, **meta)

  def add_peft(self, adapter_path: str, *, task: str, model: ModelIdentity,
               num_virtual_tokens: int | None = None, **meta: Any) -> Entry:
    """A PEFT prompt-tuning adapter (its directory or adapter_model.safetensors); LoRA, IA3
    and prefix adapters (peft_type in adapter_config.json) go to `_add_peft_method`.

    "prompt_embeddings" is [num_transformer_submodules * n, embed]; for seq2seq T5 the first
    n rows are the encoder prompt. n comes from `num_virtual_tokens`, else adapter_config.json.
    The key is the value (PEFT saves no early checkpoint).
    """
    config, tensors, path = peft_import.read_adapter(adapter_path)
    peft_type = config.get("peft_type")
    if peft_type in peft_import.TYPES:
      return self._add_peft_method(config, tensors, path, task=task, model=model, **meta)
    if peft_type not in (None, "PROMPT_TUNING"):
      raise LibraryError(f"{path}: a {peft_type} adapter; import PROMPT_TUNING, "
                         f"{', '.join(sorted(peft_import.TYPES))} adapters")
    if PEFT_TENSOR not in tensors:
      raise LibraryError(f"{path!r} has no {PEFT_TENSOR!r} tensor (found {sorted(tensors)}); "
                         "is it a prompt-tuning adapter?")
    rows = as_prompt(tensors[PEFT_TENSOR], f"{PEFT_TENSOR} in {path!r}", model.emb_dim or None)
    model = with_width(model, rows)
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

  def _add_peft_method(self, config: Mapping[str, Any], tensors: Mapping[str, np.ndarray],
                       weights: str, *, task: str, model: ModelIdentity, **meta: Any) -> Entry:
    """A PEFT LoRA, IA3 or prefix adapter (`spot_jax.library.peft_import`): value = the
    method's trainables, key = their layer-mean embedding (TuPaTE), identity = the method
    with the adapter's settings, so it is searched with runs of the same method and settings."""
    method, settings, value = peft_import.convert(config, tensors, weights, model.emb_dim)
    identity = dataclasses.replace(model, method=method,
                                   embedding=task_embedding.EMBEDDING_KINDS[0],
                                   method_settings=json.dumps(settings, sort_keys=True))
    try:
      key = task_embedding.layer_embedding(value, identity.embedding)
    except task_embedding.EmbeddingError as e:
      raise LibraryError(f"{weights}: {e}") from None
    origin = {"kind": "peft", "path": os.path.abspath(weights), "peft_method": method,
              "key": "layer_mean of the adapter (PEFT saves one checkpoint)"}
    origin.update(meta.pop("origin", None) or {})
    return self.add(task=task, value=value, key=key, model=identity, origin=origin, **meta)

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
        self.get(entry_id)
        self._pooled(entry_id)
        self.value(entry_id)
        self.key(entry_id)
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

  def value(self, entry_id: str) -> np.ndarray | dict[str, np.ndarray]:
    """What a transfer starts from: the prompt [L, embed] float32 (prompt-like methods), else
    the trainables {dotted path: array} (also a directory: `value_dir`)."""
    entry = self.get(entry_id)
    if entry.model.is_prompt:
      path = os.path.join(self._entry_dir(entry_id), VALUE_NPY)
      return as_prompt(load_npy(path, VALUE_NPY), path, entry.model.emb_dim)
    directory = self.value_dir(entry_id)
    try:
      names = run_dir.checkpoint_names(directory)
      arrays = run_dir.load_trainables(directory, names)
    except run_dir.RunDirError as e:
      raise LibraryError(f"Entry {entry_id!r} is corrupt: {e}; run `spot-jax library check "
                         f"--library {self.root} --repair`") from None
    return as_tree(arrays, f"The value of entry {entry_id!r}")

  def value_dir(self, entry_id: str) -> str:
    """The trainables directory of a non-prompt entry (usable as TrainConfig.init_from)."""
    return os.path.join(self._entry_dir(entry_id), VALUE_DIR)

  def key(self, entry_id: str) -> np.ndarray:
    """The task embedding float32: a prompt [L, embed], or a vector embedding as [1, D]."""
    entry = self.get(entry_id)
    path = os.path.join(self._entry_dir(entry_id), KEY_NPY)
    return as_key(load_npy(path, KEY_NPY), path, entry.model)

  def models(self) -> list[ModelIdentity]:
    """The frozen models of the entries, sorted by name then fingerprint."""
    found = {e.model for e in self.entries()}
    return sorted(found, key=lambda m: (m.name, m.fingerprint, m.emb_dim, m.method,
                                        m.embedding, m.method_settings))

  def resolve_model(self, text: str, *, method: str | None = None,
                    embedding: str | None = None) -> ModelIdentity:
    """The library's model whose fingerprint is, or starts with, `text` (else its name); with
    `method` (and `embedding`), only the identities of that method (and embedding kind)."""
    models = [m for m in self.models() if (method is None or m.method == method)
              and (embedding is None or m.embedding == embedding)]
    for matches in ([m for m in models if m.fingerprint == text],
                    [m for m in models if m.fingerprint.startswith(text)],
                    [m for m in models if m.name == text]):
      if len(matches) == 1:
        return matches[0]
      if len(matches) > 1:
        raise LibraryError(f"{text!r} matches several models: "
                           f"{', '.join(map(str, matches))}; give the full fingerprint, the "
                           "method (--method) or the embedding kind (--embedding)")
    raise LibraryError(f"No model {text!r} in {self.root}; models: "
                       f"{', '.join(map(str, models)) or 'none'}")

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
      return [], np.zeros((0, model.key_width), np.float32)
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
      return [], np.zeros((0, 0, model.key_width), np.float32)
    return entries, np.stack([self.key(e.id) for e in entries])

  def _only_model(self, models: list[ModelIdentity], model: ModelIdentity | None
                  ) -> ModelIdentity | None:
    if model is not None:
      return model
    if len(models) > 1:
      listing = "; ".join(str(m) for m in sorted(models, key=lambda m: (m.name, m.fingerprint)))
      raise LibraryError(f"{self.root} holds keys of {len(models)} frozen models or methods "
                         f"({listing}); they never mix in a search: pass model= (CLI: --model "
                         "FINGERPRINT, --method, --embedding)")
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
    if len(set(ids)) != n or any(m.shape != (n, model.key_width) for m in matrices.values()):
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
              **{f: np.asarray(matrices[f], np.float32).reshape(len(ids), model.key_width)
                 for f in POOLED_FORMS}}
    atomic_write_bytes(self._index_path(model), npz_bytes(arrays))

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
      if any(v.shape != (entry.model.key_width,) for v in pooled.values()):
        self.problems[entry.id] = (f"Entry {entry.id!r} is corrupt: its pooled keys do not have "
                                   f"the key width {entry.model.key_width}")
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

    `out` ending in .npz: one archive with `value/<id>` (prompts [L, embed]; trainables as
    `value/<id>/<dotted path>`), `key/<id>` arrays and `metadata` (a JSON list of the
    entries). Otherwise `out` becomes a new library holding
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
        value = self.value(e.id)
        if isinstance(value, Mapping):
          arrays.update({f"value/{e.id}/{name}": array for name, array in value.items()})
        else:
          arrays[f"value/{e.id}"] = value
        arrays[f"key/{e.id}"] = self.key(e.id)
      atomic_write_bytes(out, npz_bytes(arrays))
      return out
    target = PromptLibrary(out, create=True)
    for e in entries:
      target._write_entry(e, self.value(e.id), self.key(e.id))
    return out
