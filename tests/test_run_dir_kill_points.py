"""A run killed at ANY write into its MODEL_DIR is resumed by the same command, with no flag, and
ends bit-equal to an uninterrupted run (issue 24, item 2).

The in-process tests stop a run at the n-th write event (a file or directory created, opened
for writing, or renamed under MODEL_DIR), for every n from the first write on: the exception
stands in for SIGKILL at that moment (files written so far stay as they are). The subprocess
test kills a real `spot-jax train` with SIGKILL right after its first file appears.
"""

from __future__ import annotations

import builtins
import contextlib
import dataclasses
import os
import re
import signal
import subprocess
import sys
import threading
import time

import numpy as np
import pytest

from spot_jax.train import loop, run_dir
from spot_jax.train.loop import TrainConfig, train

TASK = "synthetic_sentiment_a"


class SimulatedKill(BaseException):
  """Stands for the process dying at a write (BaseException: no `except Exception` eats it)."""


def tiny_run(model_dir, **overrides) -> TrainConfig:
  fields = dict(model_dir=str(model_dir), task=TASK, model="tiny_byte",
                feature_lengths={"inputs": 48, "targets": 12}, train_steps=4, batch_size=8,
                prompt_length=4, checkpoint_period=2, eval_period=2, max_eval_examples=8,
                log_period=2, key_step=2)
  fields.update(overrides)
  return TrainConfig(**fields)


@contextlib.contextmanager
def writes_under(model_dir: str, kill_at: int | None, events: list[str]):
  """Records every write event under `model_dir` made by this thread in `events`; raises
  SimulatedKill just before the `kill_at`-th (1-based) when given."""
  root = os.path.realpath(model_dir)
  main = threading.get_ident()
  originals = {name: getattr(os, name) for name in ("replace", "rename", "mkdir", "open")}
  original_open = builtins.open

  def event(kind: str, path) -> None:
    try:
      path = os.path.realpath(os.fspath(path))
    except TypeError:  # a file descriptor.
      return
    if threading.get_ident() != main or not (path == root or path.startswith(root + os.sep)):
      return
    # Random temp names, and the timestamps in TensorBoard's and orbax's temporary names.
    name = re.sub(r"\.tmp[-_][^/]*|\d{9,}", "*", os.path.relpath(path, root))
    events.append(f"{kind} {name}")
    if kill_at is not None and len(events) == kill_at:
      raise SimulatedKill(events[-1])

  def wrap(name, kind, writes=lambda *a, **k: True, path_arg=0):
    def wrapped(*args, **kwargs):
      if writes(*args, **kwargs):
        event(kind, args[path_arg])
      return originals[name](*args, **kwargs)
    return wrapped

  def opens_for_writing(path, mode="r", *args, **kwargs) -> bool:
    return any(c in mode for c in "wax+")

  def os_open_writes(path, flags, *args, **kwargs) -> bool:
    return bool(flags & (os.O_WRONLY | os.O_RDWR | os.O_CREAT))

  def patched_open(file, mode="r", *args, **kwargs):
    if opens_for_writing(file, mode):
      event("open", file)
    return original_open(file, mode, *args, **kwargs)

  with pytest.MonkeyPatch.context() as patch:
    patch.setattr(os, "replace", wrap("replace", "replace", path_arg=1))  # the destination.
    patch.setattr(os, "rename", wrap("rename", "rename", path_arg=1))
    patch.setattr(os, "mkdir", wrap("mkdir", "mkdir"))
    patch.setattr(os, "open", wrap("open", "os.open", os_open_writes))
    patch.setattr(builtins, "open", patched_open)
    yield


def final_state(model_dir) -> tuple[dict[str, np.ndarray], dict]:
  """Every trainable leaf of the last checkpoint, and run.json's record of the run."""
  path = run_dir.checkpoint_dir(str(model_dir), 4)
  leaves = {name: np.load(os.path.join(path, name)) for name in sorted(os.listdir(path))}
  summary = run_dir.read_summary(str(model_dir))
  return leaves, dict(finished=summary.finished, steps_done=summary.steps_done,
                      best_step=summary.best_step, best_score=summary.best_score,
                      checkpoints=summary.checkpoints)


def assert_same_run(model_dir, reference) -> None:
  leaves, record = final_state(model_dir)
  expected_leaves, expected_record = reference
  assert set(leaves) == set(expected_leaves) and leaves
  for name, value in expected_leaves.items():
    np.testing.assert_array_equal(leaves[name], value, err_msg=name)
  assert record == expected_record


@pytest.fixture(scope="module")
def uninterrupted(tmp_path_factory):
  """The reference run, and the write events it makes (in order)."""
  model_dir = tmp_path_factory.mktemp("straight") / "run"
  events: list[str] = []
  with writes_under(str(model_dir), None, events):
    train(tiny_run(model_dir), gin_config="# the run's config\n")
  return final_state(model_dir), events


def kill_then_resume(model_dir, kill_at: int) -> str:
  """Runs until the kill_at-th write, then the same call again to the end; the killed event."""
  cfg = tiny_run(model_dir)
  with pytest.raises(SimulatedKill) as killed:
    with writes_under(str(model_dir), kill_at, []):
      train(cfg, gin_config="# the run's config\n")
  summary = train(cfg, gin_config="# the run's config\n")  # the same call, no flag.
  assert summary.finished and summary.steps_done == 4
  return str(killed.value)


def test_run_json_is_written_before_any_train_state(uninterrupted):
  _, events = uninterrupted
  first_summary = next(i for i, e in enumerate(events) if e.endswith(" run.json"))
  first_state = next(i for i, e in enumerate(events) if run_dir.TRAIN_STATE_DIR in e)
  first_checkpoint = next(i for i, e in enumerate(events) if "numpy_checkpoints" in e)
  assert first_summary < first_state and first_summary < first_checkpoint, events


def test_kill_before_run_json_and_before_first_state_then_same_command_resumes_bit_equal(
    uninterrupted, tmp_path):
  """The window of the issue: a kill after config.gin but before run.json, or before the first
  train state, used to leave a MODEL_DIR that the same command refused."""
  reference, events = uninterrupted
  before_summary = next(i for i, e in enumerate(events) if e.endswith(" run.json")) + 1
  before_state = next(i for i, e in enumerate(events) if run_dir.TRAIN_STATE_DIR in e) + 1
  for n in (before_summary, before_state):
    killed_at = kill_then_resume(tmp_path / f"kill_{n}", n)
    assert killed_at == events[n - 1]
    assert_same_run(tmp_path / f"kill_{n}", reference)


@pytest.mark.slow  # every write of a 4-step run (a few dozen kill points, two runs each).
def test_kill_at_every_write_then_same_command_resumes_bit_equal(uninterrupted, tmp_path):
  reference, events = uninterrupted
  assert len(events) > 10, events
  for n in range(1, len(events) + 1):
    assert kill_then_resume(tmp_path / f"kill_{n}", n) == events[n - 1]
    assert_same_run(tmp_path / f"kill_{n}", reference)


def test_start_killed_before_run_json_with_other_config_is_refused(tmp_path):
  """A MODEL_DIR whose start died before run.json is restarted only when its config.gin is the
  requested one; another run's partial start is refused, and --overwrite replaces it."""
  model_dir = tmp_path / "run"
  with pytest.raises(SimulatedKill):
    with writes_under(str(model_dir), 6, []):
      train(tiny_run(model_dir), gin_config="# run A\n")
  if os.path.exists(model_dir / run_dir.RUN_SUMMARY):
    os.remove(model_dir / run_dir.RUN_SUMMARY)  # as a version that wrote run.json later left it.
  (model_dir / run_dir.TRAIN_STATE_DIR).mkdir(exist_ok=True)
  with pytest.raises(run_dir.RunDirError, match="config.gin differs"):
    train(tiny_run(model_dir), gin_config="# run B\n")
  summary = train(dataclasses.replace(tiny_run(model_dir), overwrite=True),
                  gin_config="# run B\n")
  assert summary.finished


def test_sigkill_after_the_first_file_then_train_again_resumes(tmp_path):
  """The CLI path: `spot-jax train` SIGKILLed as soon as MODEL_DIR holds config.gin; the same
  command then trains the run to the end (it used to exit 2: 'holds a different run')."""
  model_dir = tmp_path / "run"
  args = ["train", "--gin_file=models/tiny_byte.gin", "--gin_file=runs/prompt_train.gin",
          f"--gin.MIXTURE_OR_TASK_NAME={TASK}", "--gin.TRAIN_STEPS=4", "--gin.PROMPT_LENGTH=4",
          "--gin.BATCH_SIZE=8", "--gin.CHECKPOINT_PERIOD=2", "--gin.EVAL_PERIOD=0",
          "--gin.TASK_FEATURE_LENGTHS={'inputs': 48, 'targets': 12}",
          f"--gin.MODEL_DIR={model_dir}"]
  env = dict(os.environ, JAX_PLATFORMS="cpu", TF_CPP_MIN_LOG_LEVEL="3")
  spot_jax = os.path.join(os.path.dirname(sys.executable), "spot-jax")
  victim = subprocess.Popen([spot_jax, *args], env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True)
  deadline = time.time() + 120
  while not (model_dir / run_dir.CONFIG_GIN).exists():
    assert victim.poll() is None, victim.stdout.read()
    assert time.time() < deadline, "the run never wrote config.gin"
    time.sleep(0.01)
  victim.send_signal(signal.SIGKILL)
  victim.wait()
  again = subprocess.run([spot_jax, *args], env=env, capture_output=True, text=True, timeout=180)
  assert again.returncode == 0, again.stdout + again.stderr
  summary = run_dir.read_summary(str(model_dir))
  assert summary.finished and summary.steps_done == 4
