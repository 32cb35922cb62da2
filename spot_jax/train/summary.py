"""A run's summary (run.json): built at the start of a run, and read back for a finished one."""

from __future__ import annotations

from typing import Any

from spot_jax import methods
from spot_jax.evaluation.evaluator import check_eval_mode
from spot_jax.train import run_dir
from spot_jax.train.config import TrainConfig, result_settings


def build_summary(cfg: TrainConfig, method: methods.Method, identity: dict[str, Any],
                  offset: tuple[int, str], optimizer_settings: dict[str, Any]
                  ) -> run_dir.RunSummary:
  """A fresh run's run.json content (nothing trained yet)."""
  summary = run_dir.RunSummary(
      task=cfg.task, model=identity,
      prompt_length=cfg.prompt_length if method.prompt_like else 0, seed=cfg.seed,
      batch_size=cfg.batch_size, feature_lengths=dict(cfg.feature_lengths),
      train_steps=cfg.train_steps, key_step=cfg.key_step, eval_metric=cfg.eval_metric,
      prompt_init=cfg.prompt_init if method.prompt_like else "",
      max_train_examples=cfg.max_train_examples, max_eval_examples=cfg.max_eval_examples,
      eval_mode=check_eval_mode(cfg.eval_mode), settings=result_settings(cfg),
      method=method.name, method_settings=method.settings(), optimizer=optimizer_settings)
  summary.step_offset, summary.step_offset_source = offset
  return summary


def finished_summary(cfg: TrainConfig, summary: run_dir.RunSummary
                     ) -> run_dir.RunSummary | None:
  """MODEL_DIR's summary when it holds this very run, finished with >= TRAIN_STEPS steps."""
  try:
    existing = run_dir.read_summary(cfg.model_dir)
  except run_dir.RunDirError:
    return None
  if (existing.finished and existing.steps_done >= cfg.train_steps
      and not run_dir.identity_diffs(existing, summary)):
    return existing
  return None
