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

import jax
import numpy as np
import optax

from spot_jax.checkpoints import t5x
from spot_jax.train import run_dir

MOMENTS = ("v_row", "v_col", "v")  # T5X's `_AdafactorParamState` and optax's FactoredState.


def is_t5x_checkpoint(directory: str) -> bool:
  return os.path.isfile(os.path.join(directory, t5x.CHECKPOINT_FILE))


def save(model_dir: str, step: int, params: Mapping[str, Any], absolute_step: int,
         opt_state: Any = None) -> str:
  """Writes the weights at the run's `step` as a T5X checkpoint (replacing one a resumed run
  redoes), with Adafactor's second moments as T5X's `state/param_states` when `opt_state`
  holds them; returns its directory."""
  directory = run_dir.checkpoint_dir(model_dir, step)
  state = None
  factored = _factored_state(opt_state)
  if factored is not None:
    state = {"param_states": jax.tree.map(
        lambda r, c, v: {"v_row": np.asarray(r, np.float32), "v_col": np.asarray(c, np.float32),
                         "v": np.asarray(v, np.float32)},
        factored.v_row, factored.v_col, factored.v)}
  t5x.write_checkpoint(directory, params, step=absolute_step, optimizer_state=state,
                       overwrite=True)
  return directory


def _factored_state(opt_state: Any) -> Any:
  """The optax FactoredState inside an (Adafactor) optimizer state, or None."""
  if isinstance(opt_state, optax.FactoredState):
    return opt_state
  if isinstance(opt_state, tuple):
    for part in opt_state:
      found = _factored_state(part)
      if found is not None:
        return found
  return None


def restore_moments(opt_state: Any, checkpoint: str) -> tuple[Any, bool]:
  """(`opt_state` with Adafactor's second moments read from a T5X checkpoint's
  `state/param_states`, whether any were there): T5X's RestoreCheckpointConfig restores them
  with the weights, and SPoT's model tuning keeps the pre-training states (Appendix C). The
  layouts agree (T5X `Adafactor.init_param_state` and optax `scale_by_factored_rms` drop the
  same dims); a moment of another shape is an error naming it."""
  factored = _factored_state(opt_state)
  if factored is None:
    return opt_state, False
  try:
    stored = t5x.read_checkpoint(checkpoint, subtree="state/param_states", dtype=np.float32)
  except t5x.CheckpointError:  # no optimizer state stored (e.g. exported weights only).
    return opt_state, False

  def pick(kind):
    def one(path, current):
      name = "/".join(str(getattr(k, "key", k)) for k in path)
      node = stored
      for part in name.split("/"):
        node = node.get(part) if isinstance(node, Mapping) else None
      value = None if not isinstance(node, Mapping) else node.get(kind)
      if value is None:
        raise t5x.CheckpointError(f"{checkpoint}: state/param_states has no {kind} for {name}")
      value = np.asarray(value, np.float32)
      if value.shape != tuple(np.shape(current)):
        raise t5x.CheckpointError(
            f"{checkpoint}: state/param_states/{name}/{kind} has shape {value.shape}, the "
            f"optimizer expects {tuple(np.shape(current))} (another factoring rule)")
      return value
    return one

  restored = factored._replace(**{kind: jax.tree_util.tree_map_with_path(
      pick(kind), getattr(factored, kind)) for kind in MOMENTS})
  return _replace_factored(opt_state, restored), True


def _replace_factored(opt_state: Any, new: Any) -> Any:
  if isinstance(opt_state, optax.FactoredState):
    return new
  if isinstance(opt_state, tuple):
    parts = [_replace_factored(p, new) for p in opt_state]
    return type(opt_state)(*parts) if hasattr(opt_state, "_fields") else tuple(parts)
  return opt_state


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
