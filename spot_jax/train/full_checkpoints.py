"""The checkpoints of a run that tunes every weight (`Method.full`, the `model` method).

They are T5X checkpoints (msgpack `checkpoint` + zarr arrays, `spot_jax.checkpoints.t5x`) in the
run's `numpy_checkpoints/checkpoint_{step}/`, where every other method writes its .npy files, so
a run's steps, best checkpoint and transfer plans read them the same way; their stored step is
the absolute one (the loaded checkpoint's step + the run's steps), as T5X stores it, so a run
that starts from one (INITIAL_CHECKPOINT_PATH) continues Adafactor's decay where it stopped.
`spot-jax model info`, `eval` and `export` read them like any T5X checkpoint. A copy of every
weight per checkpoint (1 GB for base, 44 GB for XXL in float32) is too much to keep at every
step, so only the latest and the best checkpoint stay (`prune`); resuming needs neither (it
restores the train state, `spot_jax.train.checkpointer`).
"""

from __future__ import annotations

import os
import shutil
from typing import Any, Mapping

import numpy as np

from spot_jax.checkpoints import t5x
from spot_jax.train import run_dir


def is_t5x_checkpoint(directory: str) -> bool:
  return os.path.isfile(os.path.join(directory, t5x.CHECKPOINT_FILE))


def save(model_dir: str, step: int, params: Mapping[str, Any], absolute_step: int) -> str:
  """Writes the weights at the run's `step` as a T5X checkpoint (replacing one a resumed run
  redoes); returns its directory."""
  directory = run_dir.checkpoint_dir(model_dir, step)
  t5x.write_checkpoint(directory, params, step=absolute_step, overwrite=True)
  return directory


def load(directory: str) -> dict[str, Any]:
  """The weights of a T5X checkpoint directory (float32 numpy), refusing anything else."""
  return t5x.read_checkpoint(load_path(directory), dtype=np.float32)


def stored_step(directory: str) -> tuple[int, str]:
  """(Adafactor's step offset for a run starting from this checkpoint, its source): the step
  it stores, as T5X restores it."""
  step = t5x.read_step(load_path(directory))
  return (0, "init_from without a step") if step is None else (int(step), "init_from checkpoint")


def load_path(directory: str) -> str:
  if not is_t5x_checkpoint(directory):
    raise run_dir.RunDirError(
        f"{directory} is not a T5X checkpoint (no {t5x.CHECKPOINT_FILE} file): the model method "
        "starts from the checkpoint of a model run, or from INITIAL_CHECKPOINT_PATH")
  return directory


def prune(model_dir: str, keep: set[int]) -> None:
  """Deletes the run's checkpoints at steps not in `keep` (the latest and the best)."""
  for step in run_dir.checkpoint_steps(model_dir):
    directory = run_dir.checkpoint_dir(model_dir, step)
    if step not in keep and is_t5x_checkpoint(directory):
      shutil.rmtree(directory)
