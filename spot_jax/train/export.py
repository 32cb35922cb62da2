"""`spot-jax export --merged`: a run's LoRA or IA3 folded into its frozen T5 (or a full fine-tuning
run's weights) as a T5X checkpoint."""

from __future__ import annotations

import os

import jax
import numpy as np

from spot_jax import methods
from spot_jax.checkpoints import t5x
from spot_jax.train import full_checkpoints, run_dir
from spot_jax.train.config import TrainConfig
from spot_jax.train.loop import build_frozen_model


def export_merged(model_dir: str, output: str, step: int | None = None,
                  overwrite: bool = False) -> str:
  """Writes the frozen model with the run's trainables at `step` (default: the best step)
  folded in, as a T5X checkpoint at `output` (step = the run's step); returns `output`."""
  summary = run_dir.read_summary(model_dir)
  step = summary.best_step if step is None else step
  if step is None:
    raise run_dir.RunDirError(f"{model_dir} has no finished checkpoint; pass --step")
  method = methods.create(summary.method, **summary.method_settings)
  cfg = TrainConfig(model_dir=model_dir, task=summary.task, model=summary.model["name"],
                    initial_checkpoint=summary.model.get("checkpoint"), seed=summary.seed,
                    method=summary.method, prompt_length=summary.prompt_length)
  model, frozen, identity, _ = build_frozen_model(cfg, method)
  if identity["fingerprint"] != summary.model.get("fingerprint"):
    raise run_dir.RunDirError(f"The frozen model of {model_dir} ({summary.model}) no longer "
                              f"matches its checkpoint (fingerprint {identity['fingerprint']})")
  expected = method.init(jax.random.PRNGKey(0), model, frozen,
                         np.zeros((summary.prompt_length, model.config.emb_dim), np.float32)
                         if method.prompt_like else None)
  directory = run_dir.checkpoint_dir(model_dir, step)
  if method.full:  # already a T5X checkpoint of every weight; written again under `output`.
    loaded = full_checkpoints.load(directory)
  else:
    loaded = methods.unflatten(run_dir.load_trainables(directory,
                                                       sorted(methods.flatten(expected))))
  trainables = methods.check_trainables(loaded, expected, directory)
  merged = method.fold(jax.device_get(frozen), jax.device_get(trainables))
  t5x.write_checkpoint(output, merged, step=step, overwrite=overwrite)
  return os.fspath(output)
