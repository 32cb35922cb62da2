"""The run directory (MODEL_DIR) contract.

  MODEL_DIR/
    config.gin                      the operative gin config of the run
    run.json                        RunSummary: task, method and its settings, frozen-model
                                    identity, seeds, steps, metrics per checkpoint, best step, key
                                    (task-embedding) step
    numpy_checkpoints/checkpoint_{step}/<dotted.param.path>
                                    every trainable leaf as a plain .npy named by its dotted path;
                                    the prompt keeps T5X's `encoder.prompt.prompt.prompt` [L, embed]
    train_state/{step}/             orbax train state (prompt, optimizer, step, rng), last few
                                    (`spot_jax.train.checkpointer`; this module is numpy-only)
    data_state/{step}/host_{i}/     the tf.data iterator of each host at that step (resume
                                    without replaying the input pipeline, spot_jax.data.batches)
    metrics.jsonl, tensorboard/     training and evaluation metrics
    .lock                           fcntl.flock target: one writer at a time (`RunDirLock`)

Every file is written to a temporary name and renamed, so a run killed at any moment leaves
complete files only. run.json is written right after config.gin, before any state: a MODEL_DIR
killed at any later write names its run, and the same command resumes it (a start killed before
run.json left only config.gin and is restarted; tests/test_run_dir_kill_points.py).
"""

from __future__ import annotations

import contextlib
import dataclasses
import errno
import fcntl
import io
import json
import os
import re
import shutil
from typing import Any, Iterator

import numpy as np

from spot_jax.fileio import atomic_write_bytes

PROMPT_FILENAME = "encoder.prompt.prompt.prompt"
RUN_SUMMARY = "run.json"
CONFIG_GIN = "config.gin"
TRAIN_STATE_DIR = "train_state"
LOCK_FILE = ".lock"
# Everything a run writes in MODEL_DIR (what `remove_run` deletes; anything else is kept).
RUN_FILES = (RUN_SUMMARY, CONFIG_GIN, "metrics.jsonl", "numpy_checkpoints", TRAIN_STATE_DIR,
             "data_state", "tensorboard")


class RunDirError(ValueError):
  """MODEL_DIR holds something incompatible with the requested run."""


@dataclasses.dataclass
class RunSummary:
  """run.json: what a run is and what it produced (read by the library and the studies)."""

  task: str
  model: dict[str, Any]  # name, config (dict), fingerprint, checkpoint.
  prompt_length: int
  seed: int
  batch_size: int
  feature_lengths: dict[str, int]
  train_steps: int
  key_step: int
  eval_metric: str | None = None
  steps_done: int = 0
  checkpoints: dict[str, dict[str, dict[str, float]]] = dataclasses.field(default_factory=dict)
  best_step: int | None = None
  best_score: float | None = None
  # {task: {"step", "score"}}: each task of a mixture (MNLI: the mean of matched and
  # mismatched) keeps its own best step (`evaluation.scores.task_best_steps`).
  task_best_steps: dict[str, dict[str, Any]] = dataclasses.field(default_factory=dict)
  prompt_init: str = ""
  max_train_examples: int | None = None  # training used the first N examples (None: all).
  max_eval_examples: int | None = None  # evaluation used the first N examples (None: all).
  step_offset: int = 0  # Adafactor's absolute step of the first update.
  step_offset_source: str = ""  # checkpoint, named config '<name>', STEP_OFFSET, unknown...
  eval_mode: str = "greedy"  # how predictions were made (EVAL_MODE): greedy | rank_classification.
  finished: bool = False
  # Every other setting that changes the result (learning rate, dropout, prompt init and file
  # digest, key step, evaluation...): part of the identity, see `spot_jax.train.loop`.
  settings: dict[str, Any] = dataclasses.field(default_factory=dict)
  method: str = "prompt"  # the parameter-efficient method (`spot_jax.methods`).
  method_settings: dict[str, Any] = dataclasses.field(default_factory=dict)
  optimizer: dict[str, Any] = dataclasses.field(default_factory=dict)
  # The jax backend and devices the run last trained on (`spot_jax.runtime.describe_backend`).
  runtime: dict[str, Any] = dataclasses.field(default_factory=dict)

  def identity(self) -> dict[str, Any]:
    """What must match for a MODEL_DIR to be resumed by a run."""
    settings = {} if self.method == "prompt" else {"method_settings": self.method_settings}
    return {"task": self.task, "method": self.method, **settings,
            "model_config": self.model.get("config"),
            "model_fingerprint": self.model.get("fingerprint"),
            "prompt_length": self.prompt_length, "seed": self.seed,
            "batch_size": self.batch_size, "feature_lengths": self.feature_lengths,
            "max_train_examples": self.max_train_examples,
            "max_eval_examples": self.max_eval_examples, "eval_mode": self.eval_mode,
            "key_step": self.key_step, **{f"settings.{k}": v for k, v in self.settings.items()}}

  @property
  def key_prompt_step(self) -> int | None:
    """The step whose prompt is the task embedding, when it was reached."""
    return self.key_step if str(self.key_step) in self.checkpoints else None


def write_summary(model_dir: str, summary: RunSummary) -> None:
  data = json.dumps(dataclasses.asdict(summary), indent=2, sort_keys=True).encode()
  atomic_write_bytes(os.path.join(model_dir, RUN_SUMMARY), data)


def read_summary(model_dir: str) -> RunSummary:
  path = os.path.join(model_dir, RUN_SUMMARY)
  try:
    with open(path) as f:
      return RunSummary(**json.load(f))
  except FileNotFoundError:
    raise RunDirError(f"{path} not found: {model_dir!r} is not a finished or started run") from None
  except (json.JSONDecodeError, TypeError) as e:
    raise RunDirError(f"{path} is not a valid run summary: {e}") from None


def prompt_path(model_dir: str, step: int) -> str:
  return os.path.join(model_dir, "numpy_checkpoints", f"checkpoint_{step}", PROMPT_FILENAME)


def checkpoint_dir(model_dir: str, step: int) -> str:
  return os.path.join(model_dir, "numpy_checkpoints", f"checkpoint_{step}")


def _npy_bytes(array: np.ndarray) -> bytes:
  buffer = io.BytesIO()
  np.save(buffer, np.asarray(array, np.float32), allow_pickle=False)
  return buffer.getvalue()


def save_trainables(model_dir: str, step: int, arrays: dict[str, np.ndarray]) -> str:
  """Writes each {dotted path: array} as a plain .npy in checkpoint_{step}/; returns the dir."""
  directory = checkpoint_dir(model_dir, step)
  for name in sorted(arrays):
    atomic_write_bytes(os.path.join(directory, name), _npy_bytes(arrays[name]))
  return directory


def load_trainables(directory: str, names: list[str]) -> dict[str, np.ndarray]:
  """{dotted path: array} for `names` from a numpy checkpoint directory (plain .npy only)."""
  out = {}
  for name in names:
    path = os.path.join(directory, name)
    try:
      with open(path, "rb") as f:
        out[name] = np.load(f, allow_pickle=False)
    except FileNotFoundError:
      present = sorted(os.listdir(directory)) if os.path.isdir(directory) else []
      raise RunDirError(f"{path} not found: {directory!r} is not a checkpoint of this method "
                        f"(it holds {present})") from None
    except ValueError as e:
      raise RunDirError(f"{path} is not a plain .npy array ({e})") from None
  return out


def save_prompt(model_dir: str, step: int, prompt: np.ndarray) -> str:
  """Writes the prompt [L, embed] as a .npy named as T5X prompt tuning does; returns the path."""
  path = prompt_path(model_dir, step)
  atomic_write_bytes(path, _npy_bytes(prompt))
  return path


def prompt_steps(model_dir: str) -> list[int]:
  """Steps with a complete numpy prompt checkpoint, ascending."""
  root = os.path.join(model_dir, "numpy_checkpoints")
  if not os.path.isdir(root):
    return []
  steps = [int(m.group(1)) for d in os.listdir(root)
           if (m := re.fullmatch(r"checkpoint_(\d+)", d))
           and os.path.exists(os.path.join(root, d, PROMPT_FILENAME))]
  return sorted(steps)


def checkpoint_names(directory: str) -> list[str]:
  """The trainable leaves (dotted paths) saved in a numpy checkpoint directory, sorted
  (temporary files of an interrupted write left out)."""
  if not os.path.isdir(directory):
    raise RunDirError(f"{directory} is not a numpy checkpoint directory")
  names = sorted(n for n in os.listdir(directory) if not n.startswith("."))
  if not names:
    raise RunDirError(f"{directory} holds no saved trainables")
  return names


def checkpoint_steps(model_dir: str) -> list[int]:
  """Steps with a non-empty numpy checkpoint (any method), ascending."""
  root = os.path.join(model_dir, "numpy_checkpoints")
  if not os.path.isdir(root):
    return []
  return sorted(int(m.group(1)) for d in os.listdir(root)
                if (m := re.fullmatch(r"checkpoint_(\d+)", d))
                and any(not n.startswith(".") for n in os.listdir(os.path.join(root, d))))


def latest_train_state_step(model_dir: str) -> int:
  """The newest train-state step saved in MODEL_DIR (0: none, a fresh run)."""
  root = os.path.join(model_dir, TRAIN_STATE_DIR)
  steps = [int(d) for d in os.listdir(root) if d.isdigit()] if os.path.isdir(root) else []
  return max(steps, default=0)


def identity_diffs(old: RunSummary, new: RunSummary) -> list[str]:
  """`key: old vs new` for every identity entry that differs (missing ones included)."""
  a, b = old.identity(), new.identity()
  return [f"{k}: {a.get(k, '<unset>')!r} in MODEL_DIR vs {b.get(k, '<unset>')!r} requested"
          for k in sorted(set(a) | set(b)) if a.get(k) != b.get(k)]


def start_summary(model_dir: str, summary: RunSummary) -> None:
  """Writes a fresh run's run.json (nothing trained yet) unless MODEL_DIR already holds this
  run's: the first write after config.gin, before any train state, so every later kill point
  leaves a MODEL_DIR whose identity `check_compatible` can read."""
  if not os.path.exists(os.path.join(model_dir, RUN_SUMMARY)):
    write_summary(model_dir, summary)


def check_compatible(model_dir: str, summary: RunSummary, overwrite: bool,
                     gin_config: str | None = None) -> None:
  """Refuses a MODEL_DIR holding another run: any setting that changes the result differs
  (`RunSummary.identity`), or its run.json is unreadable.

  A MODEL_DIR without run.json never recorded a step (run.json is written before any state,
  `start_summary`): when its config.gin is absent or equals `gin_config`, it is the same run
  killed while starting, and its partial files are removed so that it starts cleanly. With
  `overwrite`, the old run's files are removed instead (a corrupt run.json included).
  """
  if not os.path.exists(os.path.join(model_dir, RUN_SUMMARY)):
    if not _has_run_files(model_dir):
      return
    config_path = os.path.join(model_dir, CONFIG_GIN)
    old_config = None
    if os.path.exists(config_path):
      with open(config_path) as f:
        old_config = f.read()
    if overwrite or old_config is None or old_config == gin_config:
      remove_run(model_dir)  # a start killed before its first step: restart it cleanly.
      return
    diffs = [f"{os.path.join(model_dir, RUN_SUMMARY)} not found and its config.gin differs "
             "from the requested one"]
  else:
    try:
      diffs = identity_diffs(read_summary(model_dir), summary)
    except RunDirError as e:
      diffs = [str(e)]
  if not diffs:
    return
  if not overwrite:
    raise RunDirError(f"MODEL_DIR {model_dir} holds a different run ({'; '.join(diffs)}). "
                      "Use another MODEL_DIR, or pass --overwrite to delete that run.")
  remove_run(model_dir)


def _has_run_files(model_dir: str) -> bool:
  """Whether MODEL_DIR holds any file a run writes besides config.gin and the lock."""
  return any(os.path.exists(os.path.join(model_dir, name)) for name in RUN_FILES
             if name not in (CONFIG_GIN, RUN_SUMMARY))


def remove_run(model_dir: str) -> None:
  """Deletes a run's files from MODEL_DIR (anything else there is kept)."""
  for name in RUN_FILES:
    path = os.path.join(model_dir, name)
    if os.path.isdir(path):
      shutil.rmtree(path)
    elif os.path.exists(path):
      os.remove(path)


class RunDirInUseError(RunDirError):
  """Another process holds MODEL_DIR's lock."""


@contextlib.contextmanager
def locked(model_dir: str) -> Iterator[None]:
  """Holds an exclusive lock on MODEL_DIR (fcntl.flock on MODEL_DIR/.lock) for one writer.

  The kernel releases it when the holder exits or crashes, so a stale lock file never blocks.
  A second writer gets RunDirInUseError naming the holder's pid.
  """
  os.makedirs(model_dir, exist_ok=True)
  path = os.path.join(model_dir, LOCK_FILE)
  fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o666)
  try:
    try:
      fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError as e:
      if e.errno not in (errno.EWOULDBLOCK, errno.EAGAIN, errno.EACCES):
        raise
      holder = os.pread(fd, 32, 0).decode(errors="replace").strip() or "?"
      raise RunDirInUseError(
          f"MODEL_DIR {model_dir} is in use by another training process (pid {holder}); wait "
          "for it to finish, stop it, or use another MODEL_DIR") from None
    os.ftruncate(fd, 0)
    os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
    yield
  finally:
    os.close(fd)  # releases the lock.
