"""Orbax train-state checkpoints under MODEL_DIR/train_state/{step}/ (for resume)."""

from __future__ import annotations

import os

import orbax.checkpoint as ocp

from spot_jax.train.run_dir import TRAIN_STATE_DIR
from spot_jax.train.step import TrainState


class TrainStateCheckpointer:
  """Orbax checkpoints of the full TrainState, keeping the last `max_to_keep`."""

  def __init__(self, model_dir: str, max_to_keep: int = 3):
    self.manager = ocp.CheckpointManager(
        os.path.abspath(os.path.join(model_dir, TRAIN_STATE_DIR)),
        options=ocp.CheckpointManagerOptions(max_to_keep=max_to_keep, create=True,
                                             enable_async_checkpointing=False))

  def save(self, state: TrainState) -> None:
    self.manager.save(int(state.step), args=ocp.args.StandardSave(state), force=True)
    self.manager.wait_until_finished()

  def latest_step(self) -> int | None:
    return self.manager.latest_step()

  def all_steps(self) -> list[int]:
    return sorted(self.manager.all_steps())

  def restore(self, template: TrainState, step: int | None = None) -> TrainState:
    """The state saved at `step` (default the latest); later saved steps are deleted (the run
    redoes them)."""
    step = self.manager.latest_step() if step is None else step
    for later in self.all_steps():
      if later > step:
        self.manager.delete(later)
    return self.manager.restore(step, args=ocp.args.StandardRestore(template))

  def close(self) -> None:
    self.manager.close()
